//! The accounts every request check needs (disabled flag, roles, the identity it returns), kept in
//! memory so that a check reads no store: an account is read once per node, then served from here
//! until the change feed says it changed (or, should that announcement be lost, for at most
//! [`ANNOUNCEMENT_LOSS_BOUND`]). Bounded by bytes, with an eviction policy (S3-FIFO), and never
//! trusted while the feed is lost (every lookup then reads the store).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::clock::{Clock, Timestamp};
use crate::error::StoreError;
use crate::feed::ANNOUNCEMENT_LOSS_BOUND;
use crate::store::UserStore;
use crate::user::{User, UserId};

/// Bytes the cache may hold by default (about 100k accounts).
pub const DEFAULT_CAPACITY_BYTES: u64 = 32 * 1024 * 1024;

#[derive(Clone)]
struct UserWeighter;

/// An account as read, or its absence, and when it was read.
#[derive(Clone)]
struct Entry {
    user: Option<Arc<User>>,
    fetched: Timestamp,
}

impl quick_cache::Weighter<UserId, Entry> for UserWeighter {
    fn weight(&self, key: &UserId, entry: &Entry) -> u64 {
        let user_bytes = entry.user.as_ref().map_or(0, |u| {
            std::mem::size_of::<User>()
                + u.id.as_str().len()
                + u.username.as_str().len()
                + u.password_hash.len()
                + u.roles.iter().map(|r| r.len() + 24).sum::<usize>()
                + u.email
                    .as_ref()
                    .map_or(0, |e| e.address.as_str().len() + e.address.key().len())
        });
        (80 + key.as_str().len() + user_bytes) as u64
    }
}

/// Accounts by id, read through to the store on a miss. A missing account is remembered too, so
/// tokens of a deleted account cannot make every request read the store.
pub struct UserCache {
    store: Arc<dyn UserStore>,
    clock: Arc<dyn Clock>,
    entries: quick_cache::sync::Cache<UserId, Entry, UserWeighter>,
    /// While the change feed is lost, nothing here is trusted or added.
    distrusted: AtomicBool,
    /// Bumped by every eviction: a store read that began before an eviction must not be cached
    /// after it (it may hold what the eviction was about).
    generation: AtomicU64,
    /// Serializes "check the generation, then insert" against "bump, then remove".
    writes: std::sync::Mutex<()>,
}

impl UserCache {
    /// An empty cache in front of `store`, holding at most about `capacity_bytes` of accounts.
    pub fn new(store: Arc<dyn UserStore>, clock: Arc<dyn Clock>, capacity_bytes: u64) -> Self {
        // quick_cache wants an estimate of the number of items to size its tables.
        let estimated_items = usize::try_from(capacity_bytes / 320)
            .unwrap_or(100_000)
            .max(16);
        Self {
            store,
            clock,
            entries: quick_cache::sync::Cache::with_weighter(
                estimated_items,
                capacity_bytes,
                UserWeighter,
            ),
            distrusted: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            writes: std::sync::Mutex::new(()),
        }
    }

    /// The account with this id: from memory when it was read before (and nothing said it
    /// changed since), else from the store.
    pub async fn get(&self, id: &UserId) -> Result<Option<Arc<User>>, StoreError> {
        let trusted = !self.distrusted.load(Ordering::SeqCst);
        let now = self.clock.now();
        if trusted
            && let Some(hit) = self.entries.get(id)
            && now.since(hit.fetched) < ANNOUNCEMENT_LOSS_BOUND
        {
            return Ok(hit.user);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let user = self.store.user_by_id(id).await?.map(Arc::new);
        if trusted {
            let _guard = self.writes.lock().unwrap_or_else(|e| e.into_inner());
            if !self.distrusted.load(Ordering::SeqCst)
                && self.generation.load(Ordering::SeqCst) == generation
            {
                let entry = Entry {
                    user: user.clone(),
                    fetched: now,
                };
                self.entries.insert(id.clone(), entry);
            }
        }
        Ok(user)
    }

    /// The account changed: the next lookup reads the store.
    pub fn evict(&self, id: &UserId) {
        let _guard = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.remove(id);
    }

    /// The change feed is lost: read through to the store until it is back.
    pub fn distrust(&self) {
        let _guard = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        self.distrusted.store(true, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
    }

    /// The change feed is back (and nothing older than now is kept): trust the cache again.
    pub fn trust(&self) {
        let _guard = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
        self.distrusted.store(false, Ordering::SeqCst);
    }

    /// The ids of every disabled account, from the store (not cached: for the revocation
    /// stream, read when the change feed resumes).
    pub async fn disabled_ids(&self) -> Result<Vec<UserId>, StoreError> {
        self.store.disabled_user_ids().await
    }

    /// How many accounts are held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no account is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
