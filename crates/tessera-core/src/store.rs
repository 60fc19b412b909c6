//! The store traits. `tessera-store` implements them (memory, SQLite, and later PostgreSQL and
//! Redis); every implementation passes the same conformance suite (`tessera_store::conformance`).
//!
//! Stores are plain persistence: they enforce uniqueness and atomicity, never policy (expiry rules,
//! password rules and CSRF live in the services).

use async_trait::async_trait;
use serde_json::Value;

use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::secret::TokenHash;
use crate::session::{Session, SessionHandle};
use crate::user::{User, UserId, Username};

/// Accounts.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Inserts a new user; [`StoreError::Conflict`] when the username exists.
    async fn create_user(&self, user: &User) -> Result<(), StoreError>;

    async fn user_by_id(&self, id: &UserId) -> Result<Option<User>, StoreError>;

    async fn user_by_username(&self, username: &Username) -> Result<Option<User>, StoreError>;

    /// Replaces a user's password hash; `false` when there is no such user.
    async fn set_password_hash(
        &self,
        id: &UserId,
        password_hash: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError>;
}

/// Server-side sessions, looked up by the hash of their secret, indexed by user and by expiry.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Inserts a session. Its handle and secret hash are fresh random values: a clash is a
    /// [`StoreError::Conflict`].
    async fn create_session(&self, session: &Session) -> Result<(), StoreError>;

    /// The session whose secret hashes to `secret_hash`, whether or not it has expired (the service
    /// decides that).
    async fn session_by_secret(
        &self,
        secret_hash: &TokenHash,
    ) -> Result<Option<Session>, StoreError>;

    /// Records activity: sets `last_seen_at` and `expires_at`. `false` when the session is gone.
    async fn touch_session(
        &self,
        handle: &SessionHandle,
        last_seen_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Replaces the session data if its version is still `expected_version`, and increments the
    /// version. `false` when the version moved on (someone else wrote) or the session is gone.
    async fn replace_session_data(
        &self,
        handle: &SessionHandle,
        expected_version: i64,
        data: &Value,
    ) -> Result<bool, StoreError>;

    /// Deletes one session; `false` when it did not exist.
    async fn delete_session(&self, handle: &SessionHandle) -> Result<bool, StoreError>;

    /// Every session of a user (expired ones included until swept), oldest first.
    async fn sessions_of_user(&self, user: &UserId) -> Result<Vec<Session>, StoreError>;

    /// Deletes up to `limit` sessions whose `expires_at` is at or before `now`, returning how many
    /// went. Implementations use an index on `expires_at`, so the cost follows what expired.
    async fn delete_expired_sessions(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError>;
}

/// Readiness: can the store be reached right now?
#[async_trait]
pub trait HealthCheck: Send + Sync + 'static {
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The stores a server runs on. One backend may serve them all ([`Stores::from_one`]), or later a
/// different one each (users in PostgreSQL, sessions in Redis).
#[derive(Clone)]
pub struct Stores {
    pub users: std::sync::Arc<dyn UserStore>,
    pub sessions: std::sync::Arc<dyn SessionStore>,
    pub health: std::sync::Arc<dyn HealthCheck>,
}

impl Stores {
    /// Every store from one backend.
    pub fn from_one<S>(store: S) -> Self
    where
        S: UserStore + SessionStore + HealthCheck + Clone,
    {
        Self {
            users: std::sync::Arc::new(store.clone()),
            sessions: std::sync::Arc::new(store.clone()),
            health: std::sync::Arc::new(store),
        }
    }
}
