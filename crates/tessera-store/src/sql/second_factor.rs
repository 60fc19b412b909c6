//! [`SecondFactorStore`](tessera_core::SecondFactorStore) in SQL.
//!
//! A transaction that writes a user's factor or recovery codes locks the user's row first
//! ([`Dialect::lock_user`](super::Dialect::lock_user)), as the writers of mailed codes do: one
//! order of locks, so two of them never wait on each other in a circle. Single-row changes
//! (using a time step, a recovery code, an attempt at a challenge) are one statement each, whose
//! condition makes them atomic.

use tessera_core::{
    LoginChallenge, StoreError, Timestamp, TokenHash, TotpFactor, UserAgent, UserId,
};

use super::{Columns, Db, Tx, rows, sql_count, sql_limit};

pub(crate) const TOTP_COLUMNS: &str = "user_id, sealed_secret, created_at, confirmed_at, last_step";

pub(crate) const CHALLENGE_COLUMNS: &str = "hash, user_id, model, user_not_before, user_agent, \
     ip, created_at, expires_at, attempts, dpop_jkt";

/// Locks the user's row in `tx`; `false` when there is no such user.
async fn lock_user<D: Db>(tx: &mut D::Tx, user: &UserId) -> Result<bool, StoreError> {
    Ok(tx
        .fetch_optional(D::DIALECT.lock_user, &[user.as_str().into()])
        .await?
        .is_some())
}

async fn insert_recovery_codes<T: Tx>(
    tx: &mut T,
    user: &UserId,
    codes: &[TokenHash],
) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM recovery_codes WHERE user_id = $1",
        &[user.as_str().into()],
    )
    .await?;
    for code in codes {
        tx.execute(
            "INSERT INTO recovery_codes (hash, user_id) VALUES ($1, $2)",
            &[code.as_bytes().as_slice().into(), user.as_str().into()],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn put_pending_totp<D: Db>(
    db: &D,
    factor: &TotpFactor,
) -> Result<bool, StoreError> {
    let mut tx = db.begin().await?;
    if !lock_user::<D>(&mut tx, &factor.user_id).await? {
        return Ok(false);
    }
    // Replaces an unconfirmed factor; a confirmed one stays (the condition of the update).
    let written = tx
        .execute(
            "INSERT INTO totp_factors (user_id, sealed_secret, created_at, confirmed_at, last_step) \
             VALUES ($1, $2, $3, NULL, NULL) \
             ON CONFLICT (user_id) DO UPDATE SET sealed_secret = excluded.sealed_secret, \
             created_at = excluded.created_at, confirmed_at = NULL, last_step = NULL \
             WHERE totp_factors.confirmed_at IS NULL",
            &[
                factor.user_id.as_str().into(),
                factor.sealed_secret.as_slice().into(),
                factor.created_at.into(),
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(written > 0)
}

pub(crate) async fn totp_factor<D: Db>(
    db: &D,
    user: &UserId,
) -> Result<Option<TotpFactor>, StoreError> {
    db.fetch_optional(
        &format!("SELECT {TOTP_COLUMNS} FROM totp_factors WHERE user_id = $1"),
        &[user.as_str().into()],
    )
    .await?
    .as_ref()
    .map(rows::totp_factor)
    .transpose()
}

pub(crate) async fn confirm_totp<D: Db>(
    db: &D,
    user: &UserId,
    sealed_secret: &[u8],
    step: i64,
    recovery_codes: &[TokenHash],
    at: Timestamp,
) -> Result<bool, StoreError> {
    let mut tx = db.begin().await?;
    if !lock_user::<D>(&mut tx, user).await? {
        return Ok(false);
    }
    let confirmed = tx
        .execute(
            "UPDATE totp_factors SET confirmed_at = $2, last_step = $3 \
             WHERE user_id = $1 AND confirmed_at IS NULL AND sealed_secret = $4",
            &[
                user.as_str().into(),
                at.into(),
                step.into(),
                sealed_secret.into(),
            ],
        )
        .await?;
    if confirmed == 0 {
        return Ok(false);
    }
    insert_recovery_codes(&mut tx, user, recovery_codes).await?;
    tx.commit().await?;
    Ok(true)
}

pub(crate) async fn use_totp_step<D: Db>(
    db: &D,
    user: &UserId,
    step: i64,
) -> Result<bool, StoreError> {
    // One statement: of two requests with the same step, the second finds the condition false
    // (PostgreSQL re-checks it against the row the first one committed).
    let changed = db
        .execute(
            "UPDATE totp_factors SET last_step = $2 WHERE user_id = $1 \
             AND confirmed_at IS NOT NULL AND (last_step IS NULL OR last_step < $2)",
            &[user.as_str().into(), step.into()],
        )
        .await?;
    Ok(changed > 0)
}

pub(crate) async fn delete_totp<D: Db>(db: &D, user: &UserId) -> Result<bool, StoreError> {
    let mut tx = db.begin().await?;
    if !lock_user::<D>(&mut tx, user).await? {
        return Ok(false);
    }
    tx.execute(
        "DELETE FROM recovery_codes WHERE user_id = $1",
        &[user.as_str().into()],
    )
    .await?;
    let deleted = tx
        .execute(
            "DELETE FROM totp_factors WHERE user_id = $1",
            &[user.as_str().into()],
        )
        .await?;
    tx.commit().await?;
    Ok(deleted > 0)
}

pub(crate) async fn replace_recovery_codes<D: Db>(
    db: &D,
    user: &UserId,
    codes: &[TokenHash],
) -> Result<bool, StoreError> {
    let mut tx = db.begin().await?;
    if !lock_user::<D>(&mut tx, user).await? {
        return Ok(false);
    }
    let confirmed = tx
        .fetch_optional(
            "SELECT user_id FROM totp_factors WHERE user_id = $1 AND confirmed_at IS NOT NULL",
            &[user.as_str().into()],
        )
        .await?
        .is_some();
    if !confirmed {
        return Ok(false);
    }
    insert_recovery_codes(&mut tx, user, codes).await?;
    tx.commit().await?;
    Ok(true)
}

pub(crate) async fn spend_recovery_code<D: Db>(
    db: &D,
    user: &UserId,
    hash: &TokenHash,
) -> Result<Option<usize>, StoreError> {
    let deleted = db
        .execute(
            "DELETE FROM recovery_codes WHERE hash = $1 AND user_id = $2",
            &[hash.as_bytes().as_slice().into(), user.as_str().into()],
        )
        .await?;
    if deleted == 0 {
        return Ok(None);
    }
    recovery_codes_left(db, user).await.map(Some)
}

pub(crate) async fn recovery_codes_left<D: Db>(db: &D, user: &UserId) -> Result<usize, StoreError> {
    let count = db
        .fetch_optional(
            "SELECT COUNT(*) AS n FROM recovery_codes WHERE user_id = $1",
            &[user.as_str().into()],
        )
        .await?
        .map(|row| row.int("n"))
        .transpose()?
        .unwrap_or(0);
    Ok(usize::try_from(count).unwrap_or(0))
}

pub(crate) async fn create_challenge<D: Db>(
    db: &D,
    challenge: &LoginChallenge,
) -> Result<(), StoreError> {
    let ip = challenge.client.ip.map(|ip| ip.to_string());
    db.execute(
        "INSERT INTO login_challenges (hash, user_id, model, user_not_before, user_agent, ip, \
         created_at, expires_at, attempts, dpop_jkt) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            challenge.hash.as_bytes().as_slice().into(),
            challenge.user_id.as_str().into(),
            challenge.model.as_str().into(),
            challenge.user_not_before.into(),
            challenge
                .client
                .user_agent
                .as_ref()
                .map(UserAgent::as_str)
                .into(),
            ip.as_deref().into(),
            challenge.created_at.into(),
            challenge.expires_at.into(),
            i64::from(challenge.attempts).into(),
            challenge.dpop_jkt.as_deref().into(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn attempt_challenge<D: Db>(
    db: &D,
    hash: &TokenHash,
    now: Timestamp,
    max_attempts: u32,
) -> Result<Option<LoginChallenge>, StoreError> {
    let params = [
        hash.as_bytes().as_slice().into(),
        now.into(),
        i64::from(max_attempts).into(),
    ];
    // One statement, so concurrent attempts are counted one by one and never past the limit.
    let counted = db
        .fetch_optional(
            &format!(
                "UPDATE login_challenges SET attempts = attempts + 1 \
                 WHERE hash = $1 AND expires_at > $2 AND attempts < $3 \
                 RETURNING {CHALLENGE_COLUMNS}"
            ),
            &params,
        )
        .await?;
    match counted {
        Some(row) => rows::challenge(&row).map(Some),
        None => {
            db.execute(
                "DELETE FROM login_challenges WHERE hash = $1 \
                 AND (expires_at <= $2 OR attempts >= $3)",
                &params,
            )
            .await?;
            Ok(None)
        }
    }
}

pub(crate) async fn consume_challenge<D: Db>(db: &D, hash: &TokenHash) -> Result<bool, StoreError> {
    let deleted = db
        .execute(
            "DELETE FROM login_challenges WHERE hash = $1",
            &[hash.as_bytes().as_slice().into()],
        )
        .await?;
    Ok(deleted > 0)
}

pub(crate) async fn delete_expired_challenges<D: Db>(
    db: &D,
    now: Timestamp,
    limit: usize,
) -> Result<usize, StoreError> {
    if limit == 0 {
        return Ok(0);
    }
    let deleted = db
        .execute(
            "DELETE FROM login_challenges WHERE hash IN \
             (SELECT hash FROM login_challenges WHERE expires_at <= $1 LIMIT $2)",
            &[now.into(), sql_limit(limit).into()],
        )
        .await?;
    Ok(sql_count(deleted))
}
