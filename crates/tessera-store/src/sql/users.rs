//! [`UserStore`](tessera_core::UserStore) in SQL.

use tessera_core::{
    EmailAddress, EventKind, StoreError, Timestamp, User, UserDeletion, UserId, Username,
};

use super::email::address_conflict;
use super::{Columns, Db, Param, Tx, json_error, rows, sql_limit};

pub(crate) async fn create_user<D: Db>(db: &D, user: &User) -> Result<(), StoreError> {
    let roles = serde_json::to_string(&user.roles).map_err(json_error)?;
    let address = user.email.as_ref().map(|email| &email.address);
    db.execute(
        D::DIALECT.insert_user,
        &[
            user.id.as_str().into(),
            user.username.as_str().into(),
            user.password_hash.as_str().into(),
            roles.as_str().into(),
            user.disabled.into(),
            user.created_at.into(),
            user.updated_at.into(),
            user.not_before.into(),
            address.map(EmailAddress::as_str).into(),
            address.map(EmailAddress::key).into(),
            user.email
                .as_ref()
                .is_some_and(|email| email.verified)
                .into(),
        ],
    )
    .await
    .map_err(address_conflict)?;
    Ok(())
}

pub(crate) async fn user_by_id<D: Db>(db: &D, id: &UserId) -> Result<Option<User>, StoreError> {
    let columns = D::DIALECT.user_columns;
    db.fetch_optional(
        &format!("SELECT {columns} FROM users WHERE id = $1"),
        &[id.as_str().into()],
    )
    .await?
    .as_ref()
    .map(rows::user)
    .transpose()
}

pub(crate) async fn user_by_username<D: Db>(
    db: &D,
    username: &Username,
) -> Result<Option<User>, StoreError> {
    let columns = D::DIALECT.user_columns;
    db.fetch_optional(
        &format!("SELECT {columns} FROM users WHERE username = $1"),
        &[username.as_str().into()],
    )
    .await?
    .as_ref()
    .map(rows::user)
    .transpose()
}

pub(crate) async fn set_password_hash<D: Db>(
    db: &D,
    id: &UserId,
    password_hash: &str,
    at: Timestamp,
) -> Result<bool, StoreError> {
    let changed = db
        .execute(
            "UPDATE users SET password_hash = $1, updated_at = $2, \
             not_before = CASE WHEN not_before >= $2 THEN not_before + 1 ELSE $2 END WHERE id = $3",
            &[password_hash.into(), at.into(), id.as_str().into()],
        )
        .await?;
    Ok(changed > 0)
}

pub(crate) async fn list_users<D: Db>(
    db: &D,
    after: Option<&Username>,
    limit: usize,
) -> Result<Vec<User>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let columns = D::DIALECT.user_columns;
    let order = D::DIALECT.username_order;
    let limit = sql_limit(limit);
    let rows = match after {
        Some(after) => {
            db.fetch_all(
                &format!(
                    "SELECT {columns} FROM users WHERE {order} > $1 ORDER BY {order} LIMIT $2"
                ),
                &[after.as_str().into(), limit.into()],
            )
            .await?
        }
        None => {
            db.fetch_all(
                &format!("SELECT {columns} FROM users ORDER BY {order} LIMIT $1"),
                &[limit.into()],
            )
            .await?
        }
    };
    rows.iter().map(rows::user).collect()
}

pub(crate) async fn disabled_user_ids<D: Db>(db: &D) -> Result<Vec<UserId>, StoreError> {
    db.fetch_all(D::DIALECT.disabled_user_ids, &[])
        .await?
        .iter()
        .map(|row| row.text("id").map(UserId::from_stored))
        .collect()
}

pub(crate) async fn set_user_disabled<D: Db>(
    db: &D,
    id: &UserId,
    disabled: bool,
    at: Timestamp,
) -> Result<bool, StoreError> {
    let changed = db
        .execute(
            "UPDATE users SET disabled = $1, updated_at = $2, \
             not_before = CASE WHEN not_before >= $2 THEN not_before + 1 ELSE $2 END WHERE id = $3",
            &[disabled.into(), at.into(), id.as_str().into()],
        )
        .await?;
    Ok(changed > 0)
}

pub(crate) async fn set_user_roles<D: Db>(
    db: &D,
    id: &UserId,
    roles: &[String],
    at: Timestamp,
) -> Result<bool, StoreError> {
    let roles = serde_json::to_string(roles).map_err(json_error)?;
    let changed = db
        .execute(
            D::DIALECT.set_user_roles,
            &[roles.as_str().into(), at.into(), id.as_str().into()],
        )
        .await?;
    Ok(changed > 0)
}

pub(crate) async fn rehash_password<D: Db>(
    db: &D,
    id: &UserId,
    old_hash: &str,
    new_hash: &str,
) -> Result<bool, StoreError> {
    let changed = db
        .execute(
            "UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3",
            &[new_hash.into(), id.as_str().into(), old_hash.into()],
        )
        .await?;
    Ok(changed > 0)
}

pub(crate) async fn set_user_not_before<D: Db>(
    db: &D,
    id: &UserId,
    at: Timestamp,
) -> Result<bool, StoreError> {
    let changed = db
        .execute(
            "UPDATE users SET not_before = CASE WHEN not_before >= $1 THEN not_before + 1 ELSE $1 END \
             WHERE id = $2",
            &[at.into(), id.as_str().into()],
        )
        .await?;
    Ok(changed > 0)
}

/// See [`UserStore::delete_user`](tessera_core::UserStore::delete_user): one transaction. It
/// writes first (SQLite's deferred transactions must, to never fail on upgrading a read lock).
pub(crate) async fn delete_user<D: Db>(
    db: &D,
    deletion: &UserDeletion,
) -> Result<bool, StoreError> {
    let id: Param<'_> = deletion.user.as_str().into();
    let mut tx = db.begin().await?;
    // The row first, as every writer of the user's codes takes it (see `email`), so that none of
    // them and this wait on each other in a circle.
    tx.fetch_optional(D::DIALECT.lock_user, &[id]).await?;
    // The foreign keys would cascade from the user row; said outright, the rows also go when a
    // retry finds the user already gone.
    tx.execute("DELETE FROM sessions WHERE user_id = $1", &[id])
        .await?;
    tx.execute("DELETE FROM account_codes WHERE user_id = $1", &[id])
        .await?;
    tx.execute("DELETE FROM mail_queue WHERE user_id = $1", &[id])
        .await?;
    tx.execute(
        "DELETE FROM refresh_tokens WHERE family_id IN \
         (SELECT id FROM refresh_families WHERE user_id = $1)",
        &[id],
    )
    .await?;
    tx.execute("DELETE FROM refresh_families WHERE user_id = $1", &[id])
        .await?;
    tx.execute("DELETE FROM allowed_tokens WHERE user_id = $1", &[id])
        .await?;
    let existed = tx.execute("DELETE FROM users WHERE id = $1", &[id]).await? > 0;
    // The user's own events, and failed logins (which have no user) that may name the account.
    let columns = D::DIALECT.event_columns;
    let events = tx
        .fetch_all(
            &format!(
                "SELECT {columns} FROM security_events \
                 WHERE user_id = $1 OR (user_id IS NULL AND kind = $2)"
            ),
            &[id, EventKind::LoginFailed.as_str().into()],
        )
        .await?;
    for row in &events {
        let user_id = row.optional_text("user_id")?.map(UserId::from_stored);
        let detail: serde_json::Value = serde_json::from_str(&row.text("detail")?)
            .map_err(|e| StoreError::Other(format!("an audit event's detail is not JSON: {e}")))?;
        if let Some(scrubbed) = deletion.scrub(user_id.as_ref(), &detail) {
            let scrubbed = serde_json::to_string(&scrubbed).map_err(json_error)?;
            tx.execute(
                D::DIALECT.update_event_detail,
                &[scrubbed.as_str().into(), row.int("id")?.into()],
            )
            .await?;
        }
    }
    if existed {
        let event = &deletion.event;
        let detail = serde_json::to_string(&event.detail).map_err(json_error)?;
        tx.execute(
            D::DIALECT.insert_event,
            &[
                event.at.into(),
                event.kind.as_str().into(),
                event.user_id.as_ref().map(UserId::as_str).into(),
                detail.as_str().into(),
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(existed)
}
