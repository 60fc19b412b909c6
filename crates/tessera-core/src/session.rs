//! The session model: state on the server, an opaque 256-bit id in a cookie, a synchronizer CSRF
//! token, idle and absolute expiry with sliding renewal, and a JSON document of session data.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::clock::{Clock, Timestamp};
use crate::error::Error;
use crate::feed::{ANNOUNCEMENT_LOSS_BOUND, Change, ChangeFeed};
use crate::merge_patch;
use crate::secret::{CsrfToken, SessionId, TokenHash};
use crate::store::{SessionStore, UserStore};
use crate::user::{User, UserId};
use crate::user_cache::{self, UserCache};

/// The public handle of a session (`ses_` + 128 random bits): listed to its owner, used to end it.
/// It authenticates nothing, unlike the secret [`SessionId`]. Deserializing checks the shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SessionHandle(String);

impl SessionHandle {
    const PREFIX: &str = "ses_";

    /// A new random handle; fails only if the system's random source does.
    pub fn generate() -> Result<Self, Error> {
        crate::secret::random_public_id(Self::PREFIX).map(Self)
    }

    /// Wraps a handle read back from the store, which holds only handles we generated: not
    /// checked again.
    pub fn from_stored(handle: String) -> Self {
        Self(handle)
    }

    /// The handle as stored and listed (`ses_…`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for SessionHandle {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::secret::deserialize_public_id(deserializer, Self::PREFIX).map(Self)
    }
}

impl fmt::Display for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a client told us about itself at login, shown when a user lists their sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The `User-Agent` header (`tessera-http` keeps its first 256 characters).
    pub user_agent: Option<String>,
    /// The client's address as text, as resolved behind any trusted proxies.
    pub ip: Option<String>,
}

/// A session as the store keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    /// The public handle, listed to the owner and used to end the session.
    pub handle: SessionHandle,
    /// The account logged in.
    pub user_id: UserId,
    /// SHA-256 of the cookie secret: the store never sees the secret itself.
    pub secret_hash: TokenHash,
    /// The synchronizer token every unsafe request (POST, PATCH, DELETE) of this session must carry.
    pub csrf_token: CsrfToken,
    /// When the user logged in.
    pub created_at: Timestamp,
    /// Last recorded activity; written at most once per `touch_interval`.
    pub last_seen_at: Timestamp,
    /// `min(last_seen_at + idle_timeout, absolute_expires_at)`: the sweep's index.
    pub expires_at: Timestamp,
    /// Login time plus `absolute_lifetime`: the session ends then however active.
    pub absolute_expires_at: Timestamp,
    /// What the client told us about itself at login.
    pub client: ClientInfo,
    /// A JSON object.
    pub data: Value,
    /// Incremented by every data write; the compare-and-swap token against lost updates.
    pub data_version: i64,
}

/// Session lifetimes and limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionConfig {
    /// A session unused for this long ends.
    pub idle_timeout: Duration,
    /// A session ends this long after login, however active.
    pub absolute_lifetime: Duration,
    /// Activity is written to the store at most once per interval (sliding renewal without a write
    /// on every request). The idle timeout is counted from the last write, so it may end up to this
    /// much earlier than `idle_timeout` after the last request, never later.
    pub touch_interval: Duration,
    /// Largest session data document, in bytes of compact JSON.
    pub max_data_bytes: usize,
    /// Memory for the near cache of sessions, in bytes (about 640 bytes a session with small
    /// data); 0 turns it off, so every request reads the store.
    pub near_cache_bytes: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_lifetime: Duration::from_secs(12 * 3600),
            touch_interval: Duration::from_secs(60),
            max_data_bytes: 64 * 1024,
            near_cache_bytes: NEAR_CACHE_CAPACITY_BYTES,
        }
    }
}

impl SessionConfig {
    /// Checks the values; an error names the field at fault.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.idle_timeout.is_zero() {
            return Err(("idle_timeout", "must be positive".into()));
        }
        if self.absolute_lifetime.is_zero() {
            return Err(("absolute_lifetime", "must be positive".into()));
        }
        if self.touch_interval >= self.idle_timeout {
            return Err(("touch_interval", "must be shorter than idle_timeout".into()));
        }
        if self.max_data_bytes < 2 {
            return Err(("max_data_bytes", "must be at least 2".into()));
        }
        Ok(())
    }
}

/// How many times a data patch is retried when another writer got in first.
const PATCH_ATTEMPTS: usize = 32;

/// The session service.
#[derive(Clone)]
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    users: Arc<UserCache>,
    clock: Arc<dyn Clock>,
    config: SessionConfig,
    patch_locks: Arc<[tokio::sync::Mutex<()>]>,
    cache: Arc<NearCache>,
    feed: Option<Arc<dyn ChangeFeed>>,
}

/// Sessions the near cache may hold by default, in bytes (about 100k sessions with small data).
const NEAR_CACHE_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Clone)]
struct SessionWeighter;

/// A session as read, and when it was read.
struct Cached {
    /// Shared with the requests it answers: a hit clones no field.
    session: Arc<Session>,
    fetched: Timestamp,
}

impl quick_cache::Weighter<TokenHash, Arc<Cached>> for SessionWeighter {
    fn weight(&self, _key: &TokenHash, cached: &Arc<Cached>) -> u64 {
        let s = &cached.session;
        // The data document dominates; its compact JSON length is a fair estimate of its memory.
        let data = if s.data.as_object().is_some_and(|o| o.is_empty()) {
            0
        } else {
            s.data.to_string().len() * 2
        };
        (std::mem::size_of::<Session>()
            + 96
            + s.handle.as_str().len()
            + s.user_id.as_str().len()
            + s.client.user_agent.as_ref().map_or(0, String::len)
            + s.client.ip.as_ref().map_or(0, String::len)
            + data) as u64
    }
}

/// The near cache: sessions by the hash of their id, so a repeated check costs a memory lookup.
/// An entry answers until the session's cached expiry (then the store is asked, since another
/// node may have renewed it) or until the change feed says the session changed (or, should that
/// announcement be lost, for at most [`ANNOUNCEMENT_LOSS_BOUND`]). Bounded by bytes
/// with an eviction policy (S3-FIFO); trusted only while the change feed is live.
struct NearCache {
    by_hash: quick_cache::sync::Cache<TokenHash, Arc<Cached>, SessionWeighter>,
    /// Off when configured with no memory: every lookup reads the store.
    enabled: bool,
    /// Which cached hash a public handle names, and whose it is: feed messages name sessions by
    /// handle, or a whole user. Pruned of entries the cache has evicted.
    index: std::sync::Mutex<HashMap<SessionHandle, (TokenHash, UserId)>>,
    distrusted: AtomicBool,
    /// Bumped by every eviction: a store read that began before an eviction must not be cached
    /// after it (it may hold what the eviction was about).
    generation: AtomicU64,
}

impl NearCache {
    fn new(capacity_bytes: u64) -> Self {
        let estimated_items = usize::try_from(capacity_bytes / 640)
            .unwrap_or(100_000)
            .max(16);
        Self {
            by_hash: quick_cache::sync::Cache::with_weighter(
                estimated_items,
                capacity_bytes,
                SessionWeighter,
            ),
            enabled: capacity_bytes > 0,
            index: std::sync::Mutex::new(HashMap::new()),
            distrusted: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        }
    }

    fn index(&self) -> std::sync::MutexGuard<'_, HashMap<SessionHandle, (TokenHash, UserId)>> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, hash: &TokenHash, now: Timestamp) -> Option<Arc<Session>> {
        if !self.enabled || self.distrusted.load(Ordering::SeqCst) {
            return None;
        }
        let cached = self.by_hash.get(hash)?;
        (now < cached.session.expires_at && now.since(cached.fetched) < ANNOUNCEMENT_LOSS_BOUND)
            .then(|| Arc::clone(&cached.session))
    }

    fn insert(&self, session: &Arc<Session>, fetched: Timestamp, generation: u64) {
        if !self.enabled {
            return;
        }
        let mut index = self.index();
        if self.distrusted.load(Ordering::SeqCst)
            || self.generation.load(Ordering::SeqCst) != generation
        {
            return;
        }
        // Keep the index near the cache's size: forget handles whose session was evicted.
        if index.len() >= 2 * self.by_hash.len() + 1024 {
            index.retain(|_, (hash, _)| self.by_hash.contains_key(hash));
        }
        index.insert(
            session.handle.clone(),
            (session.secret_hash, session.user_id.clone()),
        );
        let cached = Cached {
            session: Arc::clone(session),
            fetched,
        };
        self.by_hash.insert(session.secret_hash, Arc::new(cached));
    }

    /// Records a renewal made on this node, if the session is still cached.
    fn renewed(&self, session: &Session) {
        let _index = self.index();
        if let Some(cached) = self.by_hash.get(&session.secret_hash) {
            let mut fresh = Session::clone(&cached.session);
            fresh.last_seen_at = session.last_seen_at;
            fresh.expires_at = session.expires_at;
            let renewed = Cached {
                session: Arc::new(fresh),
                fetched: cached.fetched,
            };
            self.by_hash.insert(session.secret_hash, Arc::new(renewed));
        }
    }

    fn remove_handle(&self, handle: &SessionHandle) {
        let mut index = self.index();
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some((hash, _)) = index.remove(handle) {
            self.by_hash.remove(&hash);
        }
    }

    /// Every cached session of `user` (a forced logout, a password change). Rare: a scan.
    fn remove_user(&self, user: &UserId) {
        let mut index = self.index();
        self.generation.fetch_add(1, Ordering::SeqCst);
        index.retain(|_, (hash, owner)| {
            if owner == user {
                self.by_hash.remove(hash);
                false
            } else {
                true
            }
        });
    }

    fn clear(&self, distrusted: bool) {
        let mut index = self.index();
        self.generation.fetch_add(1, Ordering::SeqCst);
        if distrusted {
            self.distrusted.store(true, Ordering::SeqCst);
        }
        index.clear();
        self.by_hash.clear();
        if !distrusted {
            self.distrusted.store(false, Ordering::SeqCst);
        }
    }
}

/// Locks that serialize data patches on this node, one per stripe of sessions.
const PATCH_STRIPES: usize = 64;

impl Sessions {
    /// A session service over `store`; account checks go through a near cache of `users`. No
    /// change feed until [`with_feed`](Self::with_feed).
    pub fn new(
        store: Arc<dyn SessionStore>,
        users: Arc<dyn UserStore>,
        clock: Arc<dyn Clock>,
        config: SessionConfig,
    ) -> Self {
        Self {
            cache: Arc::new(NearCache::new(config.near_cache_bytes)),
            store,
            users: Arc::new(UserCache::new(
                users,
                Arc::clone(&clock),
                user_cache::DEFAULT_CAPACITY_BYTES,
            )),
            clock,
            config,
            patch_locks: (0..PATCH_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            feed: None,
        }
    }

    /// Publishes session changes on `feed`, so other nodes evict them from their near caches.
    pub fn with_feed(mut self, feed: Arc<dyn ChangeFeed>) -> Self {
        self.feed = Some(feed);
        // Nothing is heard until the follower has subscribed: no near cache until then.
        self.cache.clear(true);
        self.users.distrust();
        self
    }

    /// The accounts cache that every request check (any model) reads users from.
    pub fn users(&self) -> &UserCache {
        &self.users
    }

    /// The change feed is lost: stop answering from the near caches until it is back.
    pub fn feed_lost(&self) {
        self.cache.clear(true);
        self.users.distrust();
    }

    /// The change feed is back: the near caches start empty and may be trusted again.
    pub fn feed_resumed(&self) {
        self.cache.clear(false);
        self.users.trust();
    }

    /// Applies a change heard on the feed to the near caches.
    pub fn apply(&self, change: &Change) {
        match change {
            Change::SessionChanged { handle } => self.cache.remove_handle(handle),
            Change::UserSessionsChanged { user } => {
                self.cache.remove_user(user);
                self.users.evict(user);
            }
            Change::UserChanged { user } | Change::UserDisabled { user, .. } => {
                self.users.evict(user);
            }
            _ => {}
        }
    }

    /// Evicts locally, and tells the other nodes.
    async fn changed(&self, change: Change) {
        self.apply(&change);
        if let Some(feed) = &self.feed {
            crate::feed::publish_or_retry(feed, change, "session or account change").await;
        }
    }

    /// Tells every node that a user's sessions or account changed (forced logout, password
    /// change, roles).
    pub async fn user_changed(&self, user: &UserId) {
        self.changed(Change::UserSessionsChanged { user: user.clone() })
            .await;
    }

    /// Tells every node that an account was disabled or enabled.
    pub async fn user_disabled(&self, user: &UserId, disabled: bool) {
        self.changed(Change::UserDisabled {
            user: user.clone(),
            disabled,
        })
        .await;
    }

    /// The lifetimes and limits this service runs with.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Starts a new session for `user` with a fresh id: a session id a client brought is never
    /// adopted (no fixation).
    #[tracing::instrument(skip_all, fields(user = %user.id))]
    pub async fn start(
        &self,
        user: &User,
        client: ClientInfo,
    ) -> Result<(SessionId, Session), Error> {
        let now = self.clock.now();
        let secret = SessionId::generate()?;
        let absolute = now.saturating_add(self.config.absolute_lifetime);
        let session = Session {
            handle: SessionHandle::generate()?,
            user_id: user.id.clone(),
            secret_hash: secret.hash(),
            csrf_token: CsrfToken::generate()?,
            created_at: now,
            last_seen_at: now,
            expires_at: now.saturating_add(self.config.idle_timeout).min(absolute),
            absolute_expires_at: absolute,
            client,
            data: Value::Object(serde_json::Map::new()),
            data_version: 0,
        };
        self.store.create_session(&session).await?;
        tracing::info!(session = %session.handle, "session started");
        Ok((secret, session))
    }

    /// The live session for a cookie secret and its user, without recording activity (see
    /// [`Sessions::record_activity`]). Expired sessions are deleted on sight; a session of a missing
    /// or disabled user authenticates nothing.
    pub async fn find(
        &self,
        secret: &SessionId,
    ) -> Result<Option<(Arc<Session>, Arc<User>)>, Error> {
        let hash = secret.hash();
        let now = self.clock.now();
        let session = match self.cache.get(&hash, now) {
            Some(hit) => hit,
            None => {
                let generation = self.cache.generation.load(Ordering::SeqCst);
                let Some(session) = self.store.session_by_secret(&hash).await? else {
                    return Ok(None);
                };
                if now >= session.expires_at {
                    self.store.delete_session(&session.handle).await?;
                    return Ok(None);
                }
                let session = Arc::new(session);
                self.cache.insert(&session, now, generation);
                session
            }
        };
        match self.users.get(&session.user_id).await? {
            Some(user) if user.is_active() => Ok(Some((session, user))),
            _ => Ok(None),
        }
    }

    /// Slides the idle timeout of a session that was just used, writing at most once per
    /// `touch_interval`. `false` when the session disappeared meanwhile.
    pub async fn record_activity(&self, session: &mut Arc<Session>) -> Result<bool, Error> {
        let now = self.clock.now();
        if now.since(session.last_seen_at) < self.config.touch_interval {
            return Ok(true);
        }
        let expires_at = now
            .saturating_add(self.config.idle_timeout)
            .min(session.absolute_expires_at);
        if !self
            .store
            .touch_session(&session.handle, now, expires_at)
            .await?
        {
            return Ok(false);
        }
        // Copied only here, once per touch interval: every other hit shares the cached one.
        let renewed = Arc::make_mut(session);
        renewed.last_seen_at = now;
        renewed.expires_at = expires_at;
        self.cache.renewed(session);
        Ok(true)
    }

    /// [`Sessions::find`] and [`Sessions::record_activity`] together: a request authenticated by
    /// the cookie that needs no further check.
    pub async fn authenticate(
        &self,
        secret: &SessionId,
    ) -> Result<Option<(Arc<Session>, Arc<User>)>, Error> {
        let Some((mut session, user)) = self.find(secret).await? else {
            return Ok(None);
        };
        if !self.record_activity(&mut session).await? {
            return Ok(None);
        }
        Ok(Some((session, user)))
    }

    /// Ends the session a cookie secret names, if any. Used when a login replaces whatever
    /// session the browser had: `false` when there was none.
    pub async fn end_by_secret(&self, secret: &SessionId) -> Result<bool, Error> {
        match self.store.session_by_secret(&secret.hash()).await? {
            Some(session) => self.end(&session.handle).await,
            None => Ok(false),
        }
    }

    /// Ends a session (logout). `false` when it was already gone.
    #[tracing::instrument(skip_all, fields(session = %handle))]
    pub async fn end(&self, handle: &SessionHandle) -> Result<bool, Error> {
        let deleted = self.store.delete_session(handle).await;
        // Evict everywhere even when the store reported an error: the delete may have happened.
        self.changed(Change::SessionChanged {
            handle: handle.clone(),
        })
        .await;
        let gone = deleted?;
        if gone {
            tracing::info!("session ended");
        }
        Ok(gone)
    }

    /// Applies a JSON merge patch (RFC 7396) to the session data and returns the new document.
    /// Concurrent patches never lose each other's changes: each is applied to the latest version
    /// with a compare-and-swap. Patches of one session on this node take turns (a striped lock),
    /// so the compare-and-swap only retries against writers on other nodes.
    pub async fn patch_data(&self, secret: &SessionId, patch: &Value) -> Result<Value, Error> {
        let hash = secret.hash();
        let stripe = usize::from(hash.as_bytes()[0]) % self.patch_locks.len();
        let _turn = self.patch_locks[stripe].lock().await;
        for attempt in 0..PATCH_ATTEMPTS {
            if attempt > 0 {
                // Another node wrote in between: back off a little, with jitter.
                let jitter = u64::from(crate::secret::random_bytes::<1>()?[0]);
                tokio::time::sleep(Duration::from_micros(200 * attempt as u64 + jitter * 4)).await;
            }
            let Some(session) = self.store.session_by_secret(&hash).await? else {
                return Err(Error::Unauthenticated);
            };
            if self.clock.now() >= session.expires_at {
                return Err(Error::Unauthenticated);
            }
            let mut data = session.data.clone();
            merge_patch::apply(&mut data, patch);
            if !data.is_object() {
                return Err(Error::invalid(
                    "body",
                    "must be a JSON object (a merge patch of the session data)",
                ));
            }
            let size = serde_json::to_vec(&data)
                .map_err(|e| Error::Internal(e.to_string()))?
                .len();
            if size > self.config.max_data_bytes {
                return Err(Error::TooLarge(format!(
                    "session data would be {size} bytes; the limit is {} bytes",
                    self.config.max_data_bytes
                )));
            }
            if self
                .store
                .replace_session_data(&session.handle, session.data_version, &data)
                .await?
            {
                self.changed(Change::SessionChanged {
                    handle: session.handle.clone(),
                })
                .await;
                return Ok(data);
            }
        }
        Err(Error::Conflict(
            "the session data is being changed by many requests at once; try again".into(),
        ))
    }

    /// The sessions of a user that have not expired, oldest first.
    pub async fn of_user(&self, user: &UserId) -> Result<Vec<Session>, Error> {
        let now = self.clock.now();
        let mut sessions = self.store.sessions_of_user(user).await?;
        sessions.retain(|s| s.expires_at > now);
        Ok(sessions)
    }

    /// Deletes expired sessions in batches of `batch`; returns how many went. After each full
    /// batch it rests as long as the batch took: a sweep of many expired sessions then holds a
    /// core and the store's write lock at most half the time, and the requests beside it keep
    /// their latency (it takes twice as long, and expired sessions authenticate nothing meanwhile).
    pub async fn sweep(&self, batch: usize) -> Result<usize, Error> {
        let now = self.clock.now();
        let mut total = 0;
        loop {
            let started = std::time::Instant::now();
            let n = self.store.delete_expired_sessions(now, batch).await?;
            total += n;
            if n < batch {
                return Ok(total);
            }
            tokio::time::sleep(started.elapsed()).await;
        }
    }
}
