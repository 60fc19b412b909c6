//! What the SQLite and PostgreSQL stores share: every store trait implemented once, over a
//! [`Db`] that runs statements, with the statements that differ between the two supplied per
//! dialect in a [`Dialect`].
//!
//! Both dialects take `$1`, `$2`, … parameters (SQLite reads `$n` as the n-th), so a statement
//! that reads the same in both is written once, here. A fix to how a store behaves belongs here;
//! `sqlite.rs` and `postgres/` hold only connecting, migrating, error mapping and the statements
//! whose text differs.

mod db;
pub(crate) mod email;
pub(crate) mod events;
pub(crate) mod keys;
pub(crate) mod mail;
pub(crate) mod passkeys;
pub(crate) mod refresh;
pub(crate) mod revocations;
pub(crate) mod rows;
pub(crate) mod second_factor;
pub(crate) mod sessions;
mod stores;
pub(crate) mod users;

pub(crate) use self::db::{Columns, Db, Param, StoreErrors, Tx, impl_db_on_pool, query};
pub(crate) use self::stores::impl_store_traits;

use tessera_core::StoreError;

/// The statements whose text differs between the dialects. Each says what it must do; the
/// parameters are bound in the order given.
#[derive(Debug)]
pub(crate) struct Dialect {
    /// The `users` columns [`rows::user`] reads, `roles` as JSON text.
    pub user_columns: &'static str,
    /// The `sessions` columns [`rows::session`] reads, `data` as JSON text.
    pub session_columns: &'static str,
    /// The `security_events` columns [`rows::event`] reads, `detail` as JSON text.
    pub event_columns: &'static str,
    /// Orders usernames by their bytes, as the memory store's `str` order does, and can use the
    /// unique index on `username`.
    pub username_order: &'static str,
    /// Inserts a user: id, username, password hash, roles (JSON text), disabled, created, updated,
    /// not before, email, email key, email verified.
    pub insert_user: &'static str,
    /// Locks a user's row until the transaction ends, against every other transaction that
    /// writes the user's codes (they all take this lock first), and returns its `id`; no row when
    /// there is no such user: id. PostgreSQL: a row lock; SQLite: a write that changes nothing,
    /// which takes the database's write lock.
    pub lock_user: &'static str,
    /// [`lock_user`](Self::lock_user) for the owner of the code with this hash; no row when
    /// there is no such code: hash.
    pub lock_code_owner: &'static str,
    /// Deletes up to a limit of the codes expired by now, through the expiry index: now, limit.
    pub delete_expired_codes: &'static str,
    /// Leases up to a limit of the mails due by now, in one statement: moves their
    /// `next_attempt_at` to the lease's end, adds one to `attempts`, and returns them as updated
    /// ([`MAIL_COLUMNS`](mail::MAIL_COLUMNS)). The due mails are taken by `next_attempt_at`, then
    /// `created_at`, then `id`, from `mail_queue_by_due`: now, lease until, limit.
    pub claim_mail: &'static str,
    /// Replaces a user's roles: roles (JSON text), updated at, id.
    pub set_user_roles: &'static str,
    /// The ids of the disabled users, `id`, in order.
    pub disabled_user_ids: &'static str,
    /// Inserts a session: handle, user, secret hash, CSRF token, created, last seen, expires,
    /// absolute expiry, user agent, IP, data (JSON text), data version, authentication context
    /// (its stored form).
    pub insert_session: &'static str,
    /// Replaces a session's data if its version is still the one expected, bumping the version:
    /// data (JSON text), handle, expected version.
    pub replace_session_data: &'static str,
    /// Deletes a user's sessions but the one to keep (NULL: none), in one statement: user, keep.
    pub delete_sessions_of_user: &'static str,
    /// Deletes up to a limit of the sessions expired by now, through the expiry index: now, limit.
    pub delete_expired_sessions: &'static str,
    /// Deletes up to a limit of the families whose idle or absolute expiry passed by now, through
    /// `refresh_families_by_expiry`: now, limit.
    pub delete_expired_families: &'static str,
    /// Records a revocation, or makes an existing one last until the later expiry: kind, subject,
    /// before, expires at.
    pub add_revocation: &'static str,
    /// Records a security event: at, kind, user, detail (JSON text).
    pub insert_event: &'static str,
    /// Replaces a security event's detail: detail (JSON text), id.
    pub update_event_detail: &'static str,
}

pub(crate) fn json_error(e: serde_json::Error) -> StoreError {
    StoreError::Other(format!("cannot encode JSON: {e}"))
}

/// `usize` limits as SQL wants them: anything beyond `i64::MAX` means "no limit" anyway.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

pub(crate) fn sql_count(rows: u64) -> usize {
    usize::try_from(rows).unwrap_or(usize::MAX)
}
