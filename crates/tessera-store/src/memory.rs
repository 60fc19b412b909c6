//! A store in process memory: for tests and single-process experiments. Nothing survives a restart.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use serde_json::Value;
use tessera_core::store::{HealthCheck, SessionStore, UserStore};
use tessera_core::{
    Session, SessionHandle, StoreError, Timestamp, TokenHash, User, UserId, Username,
};

/// Users and sessions in memory, with the same indexes a database would keep: sessions by secret
/// hash, by user (oldest first) and by expiry, so the sweep costs what expired.
///
/// Cloning is cheap and every clone sees the same data. The lock is held only for map updates,
/// never across an `.await`.
///
/// ```
/// use tessera_core::{Timestamp, User, UserId, UserStore, Username};
/// use tessera_store::MemoryStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryStore::new();
/// let now = Timestamp::from_unix_millis(1_700_000_000_000);
/// let alice = User {
///     id: UserId::generate()?,
///     username: Username::parse("Alice")?,
///     password_hash: "$argon2id$v=19$m=19456,t=2,p=1$…".into(),
///     roles: vec!["admin".into()],
///     disabled: false,
///     created_at: now,
///     updated_at: now,
/// };
/// store.create_user(&alice).await?;
///
/// // Usernames are normalized, so "ALICE" finds the same account.
/// let found = store.user_by_username(&Username::parse("ALICE")?).await?;
/// assert_eq!(found, Some(alice));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    users: HashMap<UserId, User>,
    user_by_name: HashMap<Username, UserId>,
    sessions: HashMap<SessionHandle, Session>,
    session_by_secret: HashMap<TokenHash, SessionHandle>,
    /// Per user, `(created_at, handle)`: iterates oldest first.
    sessions_by_user: HashMap<UserId, BTreeSet<(Timestamp, SessionHandle)>>,
    /// `(expires_at, handle)` of every session: the sweep walks only the expired prefix.
    sessions_by_expiry: BTreeSet<(Timestamp, SessionHandle)>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        // A panic while holding the lock may have left the indexes disagreeing with each other:
        // fail closed rather than answer from them.
        self.inner
            .lock()
            .map_err(|_| StoreError::Other("memory store lock poisoned".into()))
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl Inner {
    fn remove_session(&mut self, handle: &SessionHandle) -> Option<Session> {
        let session = self.sessions.remove(handle)?;
        self.session_by_secret.remove(&session.secret_hash);
        self.sessions_by_expiry
            .remove(&(session.expires_at, session.handle.clone()));
        if let Some(of_user) = self.sessions_by_user.get_mut(&session.user_id) {
            of_user.remove(&(session.created_at, session.handle.clone()));
            if of_user.is_empty() {
                self.sessions_by_user.remove(&session.user_id);
            }
        }
        Some(session)
    }
}

#[async_trait]
impl UserStore for MemoryStore {
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        if inner.user_by_name.contains_key(&user.username) {
            return Err(StoreError::Conflict(format!(
                "username {} is taken",
                user.username
            )));
        }
        if inner.users.contains_key(&user.id) {
            return Err(StoreError::Conflict(format!("user id {} exists", user.id)));
        }
        inner
            .user_by_name
            .insert(user.username.clone(), user.id.clone());
        inner.users.insert(user.id.clone(), user.clone());
        Ok(())
    }

    async fn user_by_id(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        Ok(self.lock()?.users.get(id).cloned())
    }

    async fn user_by_username(&self, username: &Username) -> Result<Option<User>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .user_by_name
            .get(username)
            .and_then(|id| inner.users.get(id))
            .cloned())
    }

    async fn set_password_hash(
        &self,
        id: &UserId,
        password_hash: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        let Some(user) = inner.users.get_mut(id) else {
            return Ok(false);
        };
        user.password_hash = password_hash.to_owned();
        user.updated_at = at;
        Ok(true)
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create_session(&self, session: &Session) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        if inner.sessions.contains_key(&session.handle) {
            return Err(StoreError::Conflict(format!(
                "session handle {} exists",
                session.handle
            )));
        }
        if inner.session_by_secret.contains_key(&session.secret_hash) {
            return Err(StoreError::Conflict("session secret hash exists".into()));
        }
        inner
            .session_by_secret
            .insert(session.secret_hash, session.handle.clone());
        inner
            .sessions_by_user
            .entry(session.user_id.clone())
            .or_default()
            .insert((session.created_at, session.handle.clone()));
        inner
            .sessions_by_expiry
            .insert((session.expires_at, session.handle.clone()));
        inner
            .sessions
            .insert(session.handle.clone(), session.clone());
        Ok(())
    }

    async fn session_by_secret(
        &self,
        secret_hash: &TokenHash,
    ) -> Result<Option<Session>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .session_by_secret
            .get(secret_hash)
            .and_then(|handle| inner.sessions.get(handle))
            .cloned())
    }

    async fn touch_session(
        &self,
        handle: &SessionHandle,
        last_seen_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        let Some(session) = inner.sessions.get_mut(handle) else {
            return Ok(false);
        };
        let old_expiry = std::mem::replace(&mut session.expires_at, expires_at);
        session.last_seen_at = last_seen_at;
        inner
            .sessions_by_expiry
            .remove(&(old_expiry, handle.clone()));
        inner
            .sessions_by_expiry
            .insert((expires_at, handle.clone()));
        Ok(true)
    }

    async fn replace_session_data(
        &self,
        handle: &SessionHandle,
        expected_version: i64,
        data: &Value,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        match inner.sessions.get_mut(handle) {
            Some(session) if session.data_version == expected_version => {
                session.data = data.clone();
                session.data_version += 1;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete_session(&self, handle: &SessionHandle) -> Result<bool, StoreError> {
        Ok(self.lock()?.remove_session(handle).is_some())
    }

    async fn sessions_of_user(&self, user: &UserId) -> Result<Vec<Session>, StoreError> {
        let inner = self.lock()?;
        let Some(of_user) = inner.sessions_by_user.get(user) else {
            return Ok(Vec::new());
        };
        Ok(of_user
            .iter()
            .filter_map(|(_, handle)| inner.sessions.get(handle))
            .cloned()
            .collect())
    }

    async fn delete_expired_sessions(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut inner = self.lock()?;
        let expired: Vec<SessionHandle> = inner
            .sessions_by_expiry
            .iter()
            .take_while(|(expires_at, _)| *expires_at <= now)
            .take(limit)
            .map(|(_, handle)| handle.clone())
            .collect();
        for handle in &expired {
            inner.remove_session(handle);
        }
        Ok(expired.len())
    }
}

#[async_trait]
impl HealthCheck for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.lock().map(drop)
    }
}
