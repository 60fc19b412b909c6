//! Addresses and mailed codes ([`UserStore`](tessera_core::UserStore)'s email methods) in SQL.
//!
//! Every transaction that writes an account's codes locks the account's row first
//! ([`Dialect::lock_user`](super::Dialect::lock_user) or `lock_code_owner`), as `set_email` and
//! `delete_user` do by writing it: in PostgreSQL the writers of one account's codes queue on that
//! row, always taken before any code row, so two of them never wait on each other in a circle;
//! in SQLite the lock statement is a write, which takes the database's write lock up front.

use tessera_core::{
    AccountCode, CodePurpose, CodeVerified, EmailAddress, StoreError, Timestamp, TokenHash, User,
    UserId,
};

use super::{Columns, Db, Param, Tx, rows, sql_count, sql_limit};

/// What a broken uniqueness of `email_key` says: that the address is taken, never which one.
pub(crate) const ADDRESS_IN_USE: &str = "the email address is in use by another account";

/// A uniqueness conflict on `email_key` (the index `users_by_email_key`, or SQLite's
/// `users.email_key`) as [`ADDRESS_IN_USE`]; any other error as it is.
pub(crate) fn address_conflict(e: StoreError) -> StoreError {
    match e {
        StoreError::Conflict(message) if message.contains("email_key") => {
            StoreError::Conflict(ADDRESS_IN_USE.into())
        }
        e => e,
    }
}

pub(crate) async fn user_by_email<D: Db>(db: &D, key: &str) -> Result<Option<User>, StoreError> {
    let columns = D::DIALECT.user_columns;
    db.fetch_optional(
        &format!("SELECT {columns} FROM users WHERE email_key = $1"),
        &[key.into()],
    )
    .await?
    .as_ref()
    .map(rows::user)
    .transpose()
}

pub(crate) async fn set_email<D: Db>(
    db: &D,
    id: &UserId,
    email: Option<&EmailAddress>,
) -> Result<bool, StoreError> {
    let mut tx = db.begin().await?;
    // The only unique column this writes is `email_key`: any conflict is the address's.
    let changed = tx
        .execute(
            "UPDATE users SET email = $1, email_key = $2, email_verified = $3 WHERE id = $4",
            &[
                email.map(EmailAddress::as_str).into(),
                email.map(EmailAddress::key).into(),
                false.into(),
                id.as_str().into(),
            ],
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => StoreError::Conflict(ADDRESS_IN_USE.into()),
            e => e,
        })?;
    if changed == 0 {
        return Ok(false);
    }
    // Codes mailed to the old address, of both purposes: whoever reads that mailbox now must
    // not be able to verify or recover the account.
    tx.execute(
        "DELETE FROM account_codes WHERE user_id = $1",
        &[id.as_str().into()],
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

pub(crate) async fn create_code<D: Db>(db: &D, code: &AccountCode) -> Result<bool, StoreError> {
    let user: Param<'_> = code.user_id.as_str().into();
    let hash: Param<'_> = code.hash.as_bytes().as_slice().into();
    let mut tx = db.begin().await?;
    if tx
        .fetch_optional(D::DIALECT.lock_user, &[user])
        .await?
        .is_none()
    {
        return Ok(false);
    }
    // The insert first: a hash that exists is a conflict, whoever's code it is.
    tx.execute(
        "INSERT INTO account_codes (hash, user_id, purpose, email_key, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            hash,
            user,
            code.purpose.as_str().into(),
            code.email_key.as_str().into(),
            code.created_at.into(),
            code.expires_at.into(),
        ],
    )
    .await?;
    tx.execute(
        "DELETE FROM account_codes WHERE user_id = $1 AND purpose = $2 AND hash <> $3",
        &[user, code.purpose.as_str().into(), hash],
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// A code taken out of the table by [`take_code`]: whose it was and where it was mailed.
struct Taken {
    user: UserId,
    email_key: String,
}

/// Deletes the unexpired code of `purpose` with `hash`, with its account's row locked first (see
/// the module's comment), and says whose it was; `None` when there is no such code, or it
/// expired, or a concurrent use took it first. The caller's transaction goes on from there.
async fn take_code<T: Tx>(
    tx: &mut T,
    lock_code_owner: &str,
    hash: &TokenHash,
    purpose: CodePurpose,
    now: Timestamp,
) -> Result<Option<Taken>, StoreError> {
    let hash = hash.as_bytes().as_slice();
    if tx
        .fetch_optional(lock_code_owner, &[hash.into()])
        .await?
        .is_none()
    {
        return Ok(None);
    }
    // Of many uses of one code, the first to lock the account deletes it; the others, running
    // after it, find it gone.
    let Some(row) = tx
        .fetch_optional(
            "DELETE FROM account_codes WHERE hash = $1 AND purpose = $2 AND expires_at > $3 \
             RETURNING user_id, email_key",
            &[hash.into(), purpose.as_str().into(), now.into()],
        )
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(Taken {
        user: UserId::from_stored(row.text("user_id")?),
        email_key: row.text("email_key")?,
    }))
}

pub(crate) async fn use_recovery_code<D: Db>(
    db: &D,
    hash: &TokenHash,
    password_hash: &str,
    now: Timestamp,
) -> Result<Option<UserId>, StoreError> {
    let mut tx = db.begin().await?;
    let Some(taken) = take_code(
        &mut tx,
        D::DIALECT.lock_code_owner,
        hash,
        CodePurpose::Recovery,
        now,
    )
    .await?
    else {
        return Ok(None);
    };
    let user = taken.user.as_str();
    tx.execute(
        "DELETE FROM account_codes WHERE user_id = $1 AND purpose = $2",
        &[user.into(), CodePurpose::Recovery.as_str().into()],
    )
    .await?;
    // The code proves the mailbox it went to: the address is verified if it is still that one.
    let changed = tx
        .execute(
            "UPDATE users SET password_hash = $1, updated_at = $2, \
             not_before = CASE WHEN not_before >= $2 THEN not_before + 1 ELSE $2 END, \
             email_verified = CASE WHEN email_key = $3 THEN $4 ELSE email_verified END \
             WHERE id = $5",
            &[
                password_hash.into(),
                now.into(),
                taken.email_key.as_str().into(),
                true.into(),
                user.into(),
            ],
        )
        .await?;
    if changed == 0 {
        // The account is locked, so it cannot have gone since the code was read; say so rather
        // than half-use the code. Dropping the transaction rolls the deletion back.
        return Err(StoreError::Other(format!(
            "the account {user} of a recovery code is gone"
        )));
    }
    tx.commit().await?;
    Ok(Some(taken.user))
}

pub(crate) async fn use_verification_code<D: Db>(
    db: &D,
    hash: &TokenHash,
    now: Timestamp,
) -> Result<Option<CodeVerified>, StoreError> {
    let mut tx = db.begin().await?;
    let Some(taken) = take_code(
        &mut tx,
        D::DIALECT.lock_code_owner,
        hash,
        CodePurpose::VerifyEmail,
        now,
    )
    .await?
    else {
        return Ok(None);
    };
    let still_current = tx
        .execute(
            "UPDATE users SET email_verified = $1 WHERE id = $2 AND email_key = $3",
            &[
                true.into(),
                taken.user.as_str().into(),
                taken.email_key.as_str().into(),
            ],
        )
        .await?
        > 0;
    tx.commit().await?;
    Ok(Some(CodeVerified {
        user: taken.user,
        still_current,
    }))
}

pub(crate) async fn delete_expired_codes<D: Db>(
    db: &D,
    now: Timestamp,
    limit: usize,
) -> Result<usize, StoreError> {
    if limit == 0 {
        return Ok(0);
    }
    let deleted = db
        .execute(
            D::DIALECT.delete_expired_codes,
            &[now.into(), sql_limit(limit).into()],
        )
        .await?;
    Ok(sql_count(deleted))
}
