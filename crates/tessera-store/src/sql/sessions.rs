//! [`SessionStore`](tessera_core::SessionStore) in SQL.

use serde_json::Value;
use tessera_core::{
    AuthContext, Session, SessionHandle, StoreError, Timestamp, TokenHash, UserAgent, UserId,
};

use super::{Columns, Db, json_error, rows, sql_count, sql_limit};

pub(crate) async fn create_session<D: Db>(db: &D, session: &Session) -> Result<(), StoreError> {
    let data = serde_json::to_string(&session.data).map_err(json_error)?;
    let ip = session.client.ip.map(|ip| ip.to_string());
    let auth = session.auth.to_stored();
    db.execute(
        D::DIALECT.insert_session,
        &[
            session.handle.as_str().into(),
            session.user_id.as_str().into(),
            session.secret_hash.as_bytes().as_slice().into(),
            session.csrf_token.as_bytes().as_slice().into(),
            session.created_at.into(),
            session.last_seen_at.into(),
            session.expires_at.into(),
            session.absolute_expires_at.into(),
            session
                .client
                .user_agent
                .as_ref()
                .map(UserAgent::as_str)
                .into(),
            ip.as_deref().into(),
            data.as_str().into(),
            session.data_version.into(),
            auth.as_str().into(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn session_by_secret<D: Db>(
    db: &D,
    secret_hash: &TokenHash,
) -> Result<Option<Session>, StoreError> {
    let columns = D::DIALECT.session_columns;
    db.fetch_optional(
        &format!("SELECT {columns} FROM sessions WHERE secret_hash = $1"),
        &[secret_hash.as_bytes().as_slice().into()],
    )
    .await?
    .as_ref()
    .map(rows::session)
    .transpose()
}

pub(crate) async fn touch_session<D: Db>(
    db: &D,
    handle: &SessionHandle,
    last_seen_at: Timestamp,
    expires_at: Timestamp,
) -> Result<bool, StoreError> {
    let changed = db
        .execute(
            "UPDATE sessions SET last_seen_at = $1, expires_at = $2 WHERE handle = $3",
            &[
                last_seen_at.into(),
                expires_at.into(),
                handle.as_str().into(),
            ],
        )
        .await?;
    Ok(changed > 0)
}

pub(crate) async fn replace_session_data<D: Db>(
    db: &D,
    handle: &SessionHandle,
    expected_version: i64,
    data: &Value,
) -> Result<bool, StoreError> {
    // One statement: the version check and the write cannot be split by another writer. (In
    // PostgreSQL a concurrent writer of the same row waits for this one to commit, then re-checks
    // the version against the row as it now is, and finds it moved on.)
    let data = serde_json::to_string(data).map_err(json_error)?;
    let changed = db
        .execute(
            D::DIALECT.replace_session_data,
            &[
                data.as_str().into(),
                handle.as_str().into(),
                expected_version.into(),
            ],
        )
        .await?;
    Ok(changed > 0)
}

pub(crate) async fn set_session_auth<D: Db>(
    db: &D,
    handle: &SessionHandle,
    auth: &AuthContext,
) -> Result<bool, StoreError> {
    let changed = db
        .execute(
            "UPDATE sessions SET auth_context = $1 WHERE handle = $2",
            &[auth.to_stored().as_str().into(), handle.as_str().into()],
        )
        .await?;
    Ok(changed > 0)
}

pub(crate) async fn delete_session<D: Db>(
    db: &D,
    handle: &SessionHandle,
) -> Result<bool, StoreError> {
    let deleted = db
        .execute(
            "DELETE FROM sessions WHERE handle = $1",
            &[handle.as_str().into()],
        )
        .await?;
    Ok(deleted > 0)
}

pub(crate) async fn session_owner<D: Db>(
    db: &D,
    handle: &SessionHandle,
) -> Result<Option<UserId>, StoreError> {
    db.fetch_optional(
        "SELECT user_id FROM sessions WHERE handle = $1",
        &[handle.as_str().into()],
    )
    .await?
    .map(|row| row.text("user_id").map(UserId::from_stored))
    .transpose()
}

pub(crate) async fn sessions_of_user<D: Db>(
    db: &D,
    user: &UserId,
) -> Result<Vec<Session>, StoreError> {
    let columns = D::DIALECT.session_columns;
    db.fetch_all(
        &format!("SELECT {columns} FROM sessions WHERE user_id = $1 ORDER BY created_at, handle"),
        &[user.as_str().into()],
    )
    .await?
    .iter()
    .map(rows::session)
    .collect()
}

pub(crate) async fn delete_sessions_of_user<D: Db>(
    db: &D,
    user: &UserId,
    keep: Option<&SessionHandle>,
) -> Result<usize, StoreError> {
    // One statement, so a session cannot slip in between a read and the delete.
    let deleted = db
        .execute(
            D::DIALECT.delete_sessions_of_user,
            &[user.as_str().into(), keep.map(SessionHandle::as_str).into()],
        )
        .await?;
    Ok(sql_count(deleted))
}

pub(crate) async fn delete_expired_sessions<D: Db>(
    db: &D,
    now: Timestamp,
    limit: usize,
) -> Result<usize, StoreError> {
    if limit == 0 {
        return Ok(0);
    }
    let deleted = db
        .execute(
            D::DIALECT.delete_expired_sessions,
            &[now.into(), sql_limit(limit).into()],
        )
        .await?;
    Ok(sql_count(deleted))
}
