//! The session model: state on the server, an opaque 256-bit id in a cookie, a synchronizer CSRF
//! token, idle and absolute expiry with sliding renewal, and a JSON document of session data.

use std::collections::HashSet;
use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
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
///
/// Held inline as its 26 ASCII characters: a handle costs no allocation, which counts when a
/// store or a near cache holds a million sessions.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionHandle([u8; SessionHandle::LEN]);

impl SessionHandle {
    const PREFIX: &str = "ses_";
    const LEN: usize = Self::PREFIX.len() + crate::secret::PUBLIC_ID_ENCODED_LEN;

    /// A new random handle; fails only if the system's random source does.
    pub fn generate() -> Result<Self, Error> {
        let text = crate::secret::random_public_id(Self::PREFIX)?;
        Self::parse(&text)
            .ok_or_else(|| Error::Internal("a generated session handle is malformed".into()))
    }

    /// A handle from outside or read back from a store: `None` unless it has the shape of the
    /// handles we generate (the only ones a store holds).
    pub fn parse(text: &str) -> Option<Self> {
        if !crate::secret::is_public_id(text, Self::PREFIX) {
            return None;
        }
        text.as_bytes().try_into().ok().map(Self)
    }

    /// The handle as stored and listed (`ses_…`).
    pub fn as_str(&self) -> &str {
        // Built only from text `parse` accepted, which is ASCII: the fallback is never taken.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SessionHandle")
            .field(&self.as_str())
            .finish()
    }
}

impl Serialize for SessionHandle {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SessionHandle {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = crate::secret::deserialize_public_id(deserializer, Self::PREFIX)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom("malformed session handle"))
    }
}

impl fmt::Display for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client's `User-Agent` header, at most [`UserAgent::MAX_CHARS`] characters (longer ones are
/// cut). Most logins come from a handful of browsers sending the very same text, so equal user
/// agents share one allocation: a bounded table remembers the recent ones. A session holds a
/// thin pointer (the `Box` inside the `Arc`), 8 bytes instead of a `String`'s 24 and its copy.
#[derive(Clone, PartialEq, Eq)]
pub struct UserAgent(Arc<Box<str>>);

/// Distinct user agents the sharing table remembers. When it is full it starts over: the
/// sessions keep the text they hold, later logins share again. It bounds what a client sending
/// a new user agent with every login can make the table hold.
const SHARED_USER_AGENTS: usize = 4096;

/// An entry of the sharing table, found by the text it holds.
#[derive(PartialEq, Eq, Hash)]
struct SharedUserAgent(Arc<Box<str>>);

impl std::borrow::Borrow<str> for SharedUserAgent {
    fn borrow(&self) -> &str {
        &self.0
    }
}

static USER_AGENTS: std::sync::LazyLock<std::sync::Mutex<HashSet<SharedUserAgent>>> =
    std::sync::LazyLock::new(Default::default);

impl UserAgent {
    /// The longest user agent kept, in characters.
    pub const MAX_CHARS: usize = 256;

    /// The user agent `header` names, cut to [`UserAgent::MAX_CHARS`] characters; shares the
    /// text of an equal one seen recently.
    pub fn new(header: &str) -> Self {
        let text = match header.char_indices().nth(Self::MAX_CHARS) {
            Some((cut, _)) => &header[..cut],
            None => header,
        };
        // Only a cache of shared text: whatever a panicking holder left in it is still usable.
        let mut shared = USER_AGENTS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = shared.get(text) {
            return Self(Arc::clone(&known.0));
        }
        if shared.len() >= SHARED_USER_AGENTS {
            shared.clear();
        }
        let fresh = Arc::new(Box::<str>::from(text));
        shared.insert(SharedUserAgent(Arc::clone(&fresh)));
        Self(fresh)
    }

    /// The text, as the client sent it (cut to [`UserAgent::MAX_CHARS`] characters).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for UserAgent {
    fn from(header: &str) -> Self {
        Self::new(header)
    }
}

impl From<String> for UserAgent {
    fn from(header: String) -> Self {
        Self::new(&header)
    }
}

impl fmt::Debug for UserAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for UserAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a client told us about itself at login, shown when a user lists their sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The `User-Agent` header.
    pub user_agent: Option<UserAgent>,
    /// The client's address, as resolved behind any trusted proxies.
    pub ip: Option<IpAddr>,
}

/// A session's data: a JSON object. Most sessions have none, and then it costs one word (an empty
/// [`Value`] takes 32 bytes).
#[derive(Clone, Default, PartialEq)]
pub struct SessionData(Option<Box<Value>>);

impl SessionData {
    /// The data `value` holds; an empty object is the same as no data.
    pub fn new(value: Value) -> Self {
        match value {
            Value::Object(map) if map.is_empty() => Self(None),
            other => Self(Some(Box::new(other))),
        }
    }

    /// Whether this is the empty object.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The document, as a JSON value (`{}` when empty).
    pub fn to_value(&self) -> Value {
        match &self.0 {
            Some(value) => Value::clone(value),
            None => Value::Object(serde_json::Map::new()),
        }
    }
}

impl From<Value> for SessionData {
    fn from(value: Value) -> Self {
        Self::new(value)
    }
}

impl PartialEq<Value> for SessionData {
    fn eq(&self, other: &Value) -> bool {
        match &self.0 {
            Some(value) => **value == *other,
            None => other.as_object().is_some_and(serde_json::Map::is_empty),
        }
    }
}

impl fmt::Debug for SessionData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_value(), f)
    }
}

impl Serialize for SessionData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(value) => value.serialize(serializer),
            None => serde_json::Map::new().serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for SessionData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Self::new)
    }
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
    /// What the application keeps in the session: a JSON object, changed only through
    /// [`Sessions::patch_data`] (JSON Merge Patch) and bounded by
    /// [`SessionConfig::max_data_bytes`].
    pub data: SessionData,
    /// Incremented by every data write; the compare-and-swap token against lost updates.
    pub data_version: i64,
    /// How the user authenticated: at login, or at the latest step-up.
    pub auth: crate::auth_context::AuthContext,
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
    /// Memory for the near cache of sessions, in bytes (about 280 bytes an idle session, plus its
    /// User-Agent and twice its data's JSON); 0 turns it off, so every request reads the store.
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

/// Sessions the near cache may hold by default, in bytes: about 170,000 idle browser sessions (an
/// idle one weighs 280 bytes plus its User-Agent, about 390, while the `session_memory` bench of
/// `tessera-store` measures under 300 bytes of memory per cached session, since equal User-Agents
/// share their text), fewer with data.
const NEAR_CACHE_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Clone)]
struct SessionWeighter;

/// A session as read, and when it was read.
#[derive(Clone)]
struct Cached {
    /// Shared with the requests it answers: a hit clones no field.
    session: Arc<Session>,
    fetched: Timestamp,
}

/// What a cached session costs besides the `Session` itself: its `Arc` and the allocator's
/// header, the cache's slot and table entry, and the handle index's entry (measured by the
/// `session_memory` bench of `tessera-store`). The user id is the cached account's, so it is not
/// counted; the user agent is counted although it is usually shared, since its sharing table
/// starts over when full (a client sending a new one with every login empties it) and the cache
/// must stay within its bytes then too.
const CACHED_SESSION_OVERHEAD: usize = 96;

impl quick_cache::Weighter<u64, Cached> for SessionWeighter {
    fn weight(&self, _key: &u64, cached: &Cached) -> u64 {
        let s = &cached.session;
        // The data document dominates; its compact JSON length is a fair estimate of its memory.
        let data = if s.data.is_empty() {
            0
        } else {
            s.data.to_value().to_string().len() * 2
        };
        let user_agent = s
            .client
            .user_agent
            .as_ref()
            .map_or(0, |ua| ua.as_str().len());
        (std::mem::size_of::<Session>() + CACHED_SESSION_OVERHEAD + user_agent + data) as u64
    }
}

/// The near cache's key for a secret hash: its first 8 bytes. A SHA-256 digest spreads them as
/// well as the whole 32, and the cache's slot is 24 bytes smaller; a session found under the key
/// is checked against the whole hash, so two secrets that share the 8 bytes cost a miss, never a
/// wrong session.
fn cache_key(hash: &TokenHash) -> u64 {
    let [a, b, c, d, e, f, g, h, ..] = *hash.as_bytes();
    u64::from_le_bytes([a, b, c, d, e, f, g, h])
}

/// The near cache: sessions by the hash of their id, so a repeated check costs a memory lookup.
/// An entry answers until the session's cached expiry (then the store is asked, since another
/// node may have renewed it) or until the change feed says the session changed (or, should that
/// announcement be lost, for at most [`ANNOUNCEMENT_LOSS_BOUND`]). Bounded by bytes
/// with an eviction policy (S3-FIFO); trusted only while the change feed is live.
struct NearCache {
    /// Off when configured with no memory: every lookup reads the store.
    enabled: bool,
    by_hash: quick_cache::sync::Cache<u64, Cached, SessionWeighter>,
    /// Feed messages name sessions by handle: the cache key of every cached session, placed by a
    /// hash of its handle and recognised by the handle of the session cached under it, so an
    /// entry costs 8 bytes. Entries whose session was evicted are dropped before the table grows.
    /// Every change to `by_hash` is made holding this lock, so what it names stays put while it
    /// is held.
    by_handle: std::sync::Mutex<hashbrown::HashTable<u64>>,
    handle_hasher: std::hash::RandomState,
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
            by_handle: std::sync::Mutex::new(hashbrown::HashTable::new()),
            handle_hasher: std::hash::RandomState::new(),
            distrusted: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        }
    }

    fn index(&self) -> std::sync::MutexGuard<'_, hashbrown::HashTable<u64>> {
        self.by_handle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn handle_hash(&self, handle: &SessionHandle) -> u64 {
        self.handle_hasher.hash_one(handle)
    }

    /// Whether the session cached under `key` is the one `handle` names. A peek: it does not
    /// count as a use of the entry.
    fn names(&self, key: u64, handle: &SessionHandle) -> bool {
        self.by_hash
            .peek(&key)
            .is_some_and(|cached| cached.session.handle == *handle)
    }

    /// Where the entry for `key` belongs in the handle index, to move it when the table grows.
    /// Only entries whose session is cached are moved (see `insert`).
    fn rehash(&self, key: u64) -> u64 {
        self.by_hash
            .peek(&key)
            .map_or(0, |cached| self.handle_hash(&cached.session.handle))
    }

    fn get(&self, hash: &TokenHash, now: Timestamp) -> Option<Arc<Session>> {
        if !self.enabled || self.distrusted.load(Ordering::SeqCst) {
            return None;
        }
        let cached = self.by_hash.get(&cache_key(hash))?;
        (cached.session.secret_hash == *hash
            && now < cached.session.expires_at
            && now.since(cached.fetched) < ANNOUNCEMENT_LOSS_BOUND)
            .then_some(cached.session)
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
        let key = cache_key(&session.secret_hash);
        let hash = self.handle_hash(&session.handle);
        if index
            .find(hash, |&k| k == key && self.names(k, &session.handle))
            .is_none()
        {
            if index.len() == index.capacity() {
                // Growing moves every entry, which needs its session: forget the evicted ones
                // first, and make room for as many again, so the next sweep is as far off.
                index.retain(|&mut k| self.by_hash.contains_key(&k));
                let room = index.len().max(1024);
                index.reserve(room, |&k| self.rehash(k));
            }
            index.insert_unique(hash, key, |&k| self.rehash(k));
        }
        let cached = Cached {
            session: Arc::clone(session),
            fetched,
        };
        self.by_hash.insert(key, cached);
    }

    /// Records a renewal made on this node, if the session is still cached.
    fn renewed(&self, session: &Session) {
        let _index = self.index();
        let key = cache_key(&session.secret_hash);
        if let Some(cached) = self.by_hash.get(&key)
            && cached.session.secret_hash == session.secret_hash
        {
            let mut fresh = Session::clone(&cached.session);
            fresh.last_seen_at = session.last_seen_at;
            fresh.expires_at = session.expires_at;
            let renewed = Cached {
                session: Arc::new(fresh),
                fetched: cached.fetched,
            };
            self.by_hash.insert(key, renewed);
        }
    }

    fn remove_handle(&self, handle: &SessionHandle) {
        let mut index = self.index();
        self.generation.fetch_add(1, Ordering::SeqCst);
        let hash = self.handle_hash(handle);
        // The same session may be indexed twice (an entry left from before it was evicted and
        // read again): every one goes.
        while let Ok(entry) = index.find_entry(hash, |&k| self.names(k, handle)) {
            let (key, _) = entry.remove();
            self.by_hash.remove(&key);
        }
    }

    /// Every cached session of `user` (a forced logout, a password change). Rare: a scan. Their
    /// handle index entries go when the table next grows.
    fn remove_user(&self, user: &UserId) {
        let _index = self.index();
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.by_hash
            .retain(|_, cached| cached.session.user_id != *user);
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

    /// Tells every node that an account changed without touching its logins (its address, or
    /// whether that is verified): their copies of the account are read again.
    pub async fn account_changed(&self, user: &UserId) {
        self.changed(Change::UserChanged { user: user.clone() })
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
    pub async fn start(
        &self,
        user: &User,
        client: ClientInfo,
    ) -> Result<(SessionId, Session), Error> {
        let auth = crate::auth_context::AuthContext::password(self.clock.now());
        self.start_with(user, client, auth).await
    }

    /// [`Sessions::start`] for a login authenticated as `auth` says (with a second factor).
    #[tracing::instrument(skip_all, fields(user = %user.id))]
    pub async fn start_with(
        &self,
        user: &User,
        client: ClientInfo,
        auth: crate::auth_context::AuthContext,
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
            data: SessionData::default(),
            data_version: 0,
            auth,
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
        let (session, user) = match self.cache.get(&hash, now) {
            Some(hit) => {
                let user = self.users.get(&hit.user_id).await?;
                (hit, user)
            }
            None => {
                let generation = self.cache.generation.load(Ordering::SeqCst);
                let Some(mut session) = self.store.session_by_secret(&hash).await? else {
                    return Ok(None);
                };
                if now >= session.expires_at {
                    self.store.delete_session(&session.handle).await?;
                    return Ok(None);
                }
                let user = self.users.get(&session.user_id).await?;
                // A store read makes a copy of the user id for each session; the cached session
                // holds the account's own instead, one for all of the user's sessions.
                if let Some(user) = &user
                    && user.id == session.user_id
                {
                    session.user_id = user.id.clone();
                }
                let session = Arc::new(session);
                self.cache.insert(&session, now, generation);
                (session, user)
            }
        };
        match user {
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

    /// Whose session `handle` names (read from the store); `None` when there is no such session.
    pub async fn owner(&self, handle: &SessionHandle) -> Result<Option<UserId>, Error> {
        Ok(self.store.session_owner(handle).await?)
    }

    /// Records how the session's user authenticated again (a step-up), on every node. `false`
    /// when the session is gone.
    pub async fn set_auth(
        &self,
        handle: &SessionHandle,
        auth: &crate::auth_context::AuthContext,
    ) -> Result<bool, Error> {
        let written = self.store.set_session_auth(handle, auth).await;
        // Every node reads the session again: a privileged check must see the step-up at once.
        self.changed(Change::SessionChanged {
            handle: handle.clone(),
        })
        .await;
        Ok(written?)
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
        self.update_data(secret, |data| merge_patch::apply(data, patch))
            .await
    }

    /// Changes the session data with `change` and returns the new document, under the same rule
    /// as [`Sessions::patch_data`]: `change` is applied to the latest stored version and written
    /// with a compare-and-swap, so a concurrent writer's change is never lost. `change` may
    /// therefore run more than once (each time on the newer version): it must not have other
    /// effects. The result must be a JSON object within `sessions.max_data_bytes`.
    pub async fn update_data(
        &self,
        secret: &SessionId,
        mut change: impl FnMut(&mut Value),
    ) -> Result<Value, Error> {
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
            let mut data = session.data.to_value();
            change(&mut data);
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

    /// Deletes every session of a user (with its data and the per-user index), expired or not,
    /// and tells every node to drop them and the cached account; returns how many went. Called
    /// again, it finds none.
    pub async fn end_all_of_user(&self, user: &UserId) -> Result<usize, Error> {
        let deleted = self.store.delete_sessions_of_user(user, None).await;
        // Evict everywhere even when the store reported an error: some may have gone.
        self.user_changed(user).await;
        Ok(deleted?)
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

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);

    /// A session whose secret hash is `hash`, expiring an hour after `T0`.
    fn session(hash: [u8; 32], user: &UserId) -> Arc<Session> {
        let hour = Duration::from_secs(3600);
        Arc::new(Session {
            handle: SessionHandle::generate().unwrap(),
            user_id: user.clone(),
            secret_hash: TokenHash::from_bytes(hash),
            csrf_token: CsrfToken::generate().unwrap(),
            created_at: T0,
            last_seen_at: T0,
            expires_at: T0.saturating_add(hour),
            absolute_expires_at: T0.saturating_add(hour),
            client: ClientInfo::default(),
            data: SessionData::default(),
            data_version: 0,
            auth: crate::auth_context::AuthContext::password(T0),
        })
    }

    #[test]
    fn an_idle_session_stays_small() {
        // What a million sessions cost in a store or a near cache starts here: the handle inline,
        // the user id and user agent thin shared pointers, empty data one word; the
        // authentication context (step-up) 16 bytes.
        assert!(
            size_of::<Session>() <= 200,
            "a Session takes {} bytes",
            size_of::<Session>()
        );
    }

    #[test]
    fn handles_keep_their_text_and_refuse_other_shapes() {
        let handle = SessionHandle::generate().unwrap();
        assert!(handle.as_str().starts_with("ses_"));
        assert_eq!(SessionHandle::parse(handle.as_str()), Some(handle.clone()));
        assert_eq!(
            format!("{handle:?}"),
            format!("SessionHandle({:?})", handle.as_str())
        );
        let json = serde_json::to_string(&handle).unwrap();
        assert_eq!(json, format!("\"{handle}\""));
        assert_eq!(
            serde_json::from_str::<SessionHandle>(&json).unwrap(),
            handle
        );
        let text = handle.as_str();
        for bad in [
            "",
            "ses_",
            &text[..25],
            &format!("{text}A"),
            &text.replace("ses_", "usr_"),
            &format!("ses_{}é", &text[4..25]),
        ] {
            assert_eq!(SessionHandle::parse(bad), None, "{bad:?} parsed");
            assert!(serde_json::from_value::<SessionHandle>(Value::from(bad)).is_err());
        }
    }

    #[test]
    fn equal_user_agents_share_their_text_and_long_ones_are_cut() {
        let header = format!("Mozilla/5.0 (test {})", line!());
        // Another test empties the shared table on purpose; between two of its clears, equal
        // text is one allocation.
        let shared = (0..100).any(|_| {
            let (a, b) = (UserAgent::new(&header), UserAgent::new(&header.clone()));
            assert_eq!(a.as_str(), header);
            Arc::ptr_eq(&a.0, &b.0)
        });
        assert!(shared, "equal text was never one allocation");

        let long = "é".repeat(UserAgent::MAX_CHARS + 10);
        let cut = UserAgent::new(&long);
        assert_eq!(cut.as_str().chars().count(), UserAgent::MAX_CHARS);
        assert!(long.starts_with(cut.as_str()));
    }

    #[test]
    fn the_user_agent_table_stays_bounded() {
        for i in 0..2 * SHARED_USER_AGENTS {
            UserAgent::new(&format!("bot/{i}"));
        }
        let held = USER_AGENTS.lock().unwrap().len();
        assert!(held <= SHARED_USER_AGENTS, "{held} user agents held");
    }

    #[test]
    fn empty_data_is_the_empty_object() {
        let empty = SessionData::new(serde_json::json!({}));
        assert!(empty.is_empty());
        assert_eq!(empty, SessionData::default());
        assert_eq!(empty, serde_json::json!({}));
        assert_eq!(serde_json::to_string(&empty).unwrap(), "{}");
        assert_eq!(empty.to_value(), serde_json::json!({}));

        let some = SessionData::new(serde_json::json!({"cart": [1, 2]}));
        assert!(!some.is_empty());
        assert_eq!(some, serde_json::json!({"cart": [1, 2]}));
        assert_ne!(some, serde_json::json!({}));
        let json = serde_json::to_string(&some).unwrap();
        assert_eq!(serde_json::from_str::<SessionData>(&json).unwrap(), some);
        assert_eq!(serde_json::from_str::<SessionData>("{}").unwrap(), empty);
    }

    #[test]
    fn secrets_sharing_the_cache_key_never_answer_for_each_other() {
        let cache = NearCache::new(1 << 20);
        let user = UserId::generate().unwrap();
        let mut other = [7u8; 32];
        other[31] = 8;
        let (a, b) = (session([7; 32], &user), session(other, &user));
        assert_eq!(cache_key(&a.secret_hash), cache_key(&b.secret_hash));

        cache.insert(&a, T0, 0);
        assert!(cache.get(&a.secret_hash, T0).is_some());
        assert!(
            cache.get(&b.secret_hash, T0).is_none(),
            "the whole hash must match"
        );
        cache.insert(&b, T0, 0);
        assert_eq!(cache.get(&b.secret_hash, T0).unwrap().handle, b.handle);
        assert!(cache.get(&a.secret_hash, T0).is_none());

        // The handle that lost the key removes nothing of the other session.
        cache.remove_handle(&a.handle);
        assert!(cache.get(&b.secret_hash, T0).is_some());
        cache.remove_handle(&b.handle);
        assert!(cache.get(&b.secret_hash, T0).is_none());
    }

    #[test]
    fn handles_find_their_sessions_through_evictions_and_growth() {
        // Room for a few hundred sessions, and thousands inserted: most are evicted, their
        // handle entries left behind until the table would grow.
        let cache = NearCache::new(64 * 1024);
        let user = UserId::generate().unwrap();
        let mut all = Vec::new();
        for i in 0..20_000u32 {
            let mut hash = [0u8; 32];
            hash[..4].copy_from_slice(&i.to_le_bytes());
            hash[31] = 1;
            let s = session(hash, &user);
            cache.insert(&s, T0, 0);
            all.push(s);
        }
        let live = all
            .iter()
            .filter(|s| cache.get(&s.secret_hash, T0).is_some())
            .count();
        assert!(live > 0 && live < all.len(), "{live} cached");
        let indexed = cache.index().len();
        // The table is swept when full and then given as much room again (rounded up to a power
        // of two): a few times the live sessions, not every session ever inserted.
        assert!(
            indexed <= 4 * live + 4096,
            "the handle index holds {indexed} entries for {live} sessions"
        );

        // A session evicted and read again is indexed twice; ending it removes it all the same.
        let again = &all[0];
        cache.insert(again, T0, 0);
        assert!(cache.get(&again.secret_hash, T0).is_some());
        for s in &all {
            if cache.get(&s.secret_hash, T0).is_some() {
                cache.remove_handle(&s.handle);
                assert!(
                    cache.get(&s.secret_hash, T0).is_none(),
                    "{:?} still cached after its handle was removed",
                    s.handle
                );
            }
        }
    }

    #[test]
    fn removing_a_user_removes_only_their_sessions() {
        let cache = NearCache::new(1 << 20);
        let (alice, bob) = (UserId::generate().unwrap(), UserId::generate().unwrap());
        let a = session([1; 32], &alice);
        let b = session([2; 32], &bob);
        cache.insert(&a, T0, 0);
        cache.insert(&b, T0, 0);
        cache.remove_user(&alice);
        assert!(cache.get(&a.secret_hash, T0).is_none());
        assert!(cache.get(&b.secret_hash, T0).is_some());
    }
}
