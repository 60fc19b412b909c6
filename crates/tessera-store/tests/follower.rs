//! Two nodes sharing a store and a change feed: a revocation made on one reaches the other at
//! once; a node whose feed is lost stops trusting its state until it has re-read the store.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tessera_core::feed::{Change, ChangeFeed, FeedEvent, LocalFeed};
use tessera_core::token::{MasterKey, RevocationMode, Revocations, TokenConfig};
use tessera_core::{
    Clock, FamilyId, ManualClock, RevocationEntry, Revoked, Services, ServicesConfig,
    SigningAlgorithm, StoreError, Stores, UserId,
};
use tessera_store::{MemoryStore, SqliteStore};

/// A feed the test drives by hand: what it publishes is recorded, and the test decides what the
/// subscriber hears.
#[derive(Default)]
struct HandFeed {
    published: Mutex<Vec<Change>>,
    subscriber: Mutex<Option<tokio::sync::mpsc::Sender<FeedEvent>>>,
}

#[async_trait]
impl ChangeFeed for HandFeed {
    async fn publish(&self, change: &Change) -> Result<(), StoreError> {
        self.published.lock().unwrap().push(change.clone());
        Ok(())
    }

    async fn subscribe(&self) -> Result<tokio::sync::mpsc::Receiver<FeedEvent>, StoreError> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tx.send(FeedEvent::Gap).await.unwrap();
        *self.subscriber.lock().unwrap() = Some(tx);
        Ok(rx)
    }
}

impl HandFeed {
    async fn send(&self, event: FeedEvent) {
        let tx = self.subscriber.lock().unwrap().clone().expect("subscribed");
        tx.send(event).await.unwrap();
    }
}

/// Every node of a deployment shares the master key.
fn master_key() -> MasterKey {
    MasterKey::from_bytes(&[7u8; 32]).unwrap()
}

struct Node {
    revocations: Revocations,
}

/// A node as the server builds it, hearing the others through `feed`.
async fn node(stores: &Stores, feed: Arc<dyn ChangeFeed>, clock: &ManualClock) -> Node {
    let stores = Stores {
        feed,
        ..stores.clone()
    };
    let config = ServicesConfig {
        signing_algorithm: SigningAlgorithm::HS256,
        tokens: TokenConfig {
            revocation: RevocationMode::Denylist,
            ..TokenConfig::default()
        },
        ..ServicesConfig::default()
    };
    let services = Services::build(stores, Arc::new(clock.clone()), master_key(), config)
        .await
        .unwrap();
    services.spawn_follower();
    Node {
        revocations: services.tokens.revocations().clone(),
    }
}

fn family_revoked(node: &Node, family: &FamilyId, clock: &ManualClock) -> bool {
    let user = UserId::from_stored("usr_x".into());
    node.revocations
        .check("at_1", family, &user, clock.now(), clock.now())
        .is_some()
}

async fn eventually(mut condition: impl FnMut() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the condition never held");
}

fn revocation(id: &str, clock: &ManualClock) -> RevocationEntry {
    RevocationEntry {
        revoked: Revoked::Family {
            id: FamilyId::from_stored(id.into()),
        },
        expires_at: clock.now().saturating_add(Duration::from_secs(600)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_node_reaches_the_other() {
    let clock = ManualClock::starting_now();
    let stores = Stores::from_one(MemoryStore::new());
    let feed: Arc<dyn ChangeFeed> = Arc::new(LocalFeed::new());
    let a = node(&stores, feed.clone(), &clock).await;
    let b = node(&stores, feed.clone(), &clock).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    a.revocations
        .revoke(revocation("fam_1", &clock))
        .await
        .unwrap();
    let family = FamilyId::from_stored("fam_1".into());
    assert!(family_revoked(&a, &family, &clock));
    eventually(|| family_revoked(&b, &family, &clock)).await;
}

/// Two processes on one SQLite file (here: two stores, each with a pool and a feed of its own, as
/// a server and the command line have): a revocation made through one reaches the other through
/// the file's change feed, not by a re-read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_another_process_on_the_same_sqlite_file() {
    let clock = ManualClock::starting_now();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tessera.db");
    let first = SqliteStore::open(&path).await.unwrap();
    let second = SqliteStore::open(&path).await.unwrap();
    let a = node(
        &Stores::from_one(first.clone()),
        Arc::new(first.clone()),
        &clock,
    )
    .await;
    let b = node(
        &Stores::from_one(second.clone()),
        Arc::new(second.clone()),
        &clock,
    )
    .await;
    // Both follow the feed before the change is made.
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.revocations
        .revoke(revocation("fam_sqlite", &clock))
        .await
        .unwrap();
    let family = FamilyId::from_stored("fam_sqlite".into());
    assert!(family_revoked(&a, &family, &clock));
    eventually(|| family_revoked(&b, &family, &clock)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_the_feed_trusts_its_state_only_after_re_reading_the_store() {
    let clock = ManualClock::starting_now();
    let stores = Stores::from_one(MemoryStore::new());
    let feed = Arc::new(HandFeed::default());
    let b = node(&stores, feed.clone(), &clock).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(b.revocations.trusted(clock.now()));

    // The feed breaks; meanwhile another node revokes (it writes the store; B hears nothing).
    feed.send(FeedEvent::Lost).await;
    let other = Revocations::load(
        stores.revocations.clone(),
        RevocationMode::Denylist,
        clock.now(),
    )
    .await
    .unwrap();
    other.revoke(revocation("fam_2", &clock)).await.unwrap();
    let family = FamilyId::from_stored("fam_2".into());
    // Trust lapses shortly after the loss unless the store is re-read…
    eventually(|| {
        !b.revocations
            .trusted(clock.now().saturating_add(Duration::from_millis(300)))
    })
    .await;
    // …and the follower re-reads it while the feed is lost, which picks the revocation up.
    eventually(|| family_revoked(&b, &family, &clock)).await;

    // The feed comes back: a gap, a full re-read, and full trust again.
    feed.send(FeedEvent::Gap).await;
    eventually(|| {
        b.revocations
            .trusted(clock.now().saturating_add(Duration::from_secs(3600)))
    })
    .await;
    assert!(family_revoked(&b, &family, &clock));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_and_key_changes_are_published() {
    let clock = ManualClock::starting_now();
    let stores = Stores::from_one(MemoryStore::new());
    let feed = Arc::new(HandFeed::default());
    let b = node(&stores, feed.clone(), &clock).await;
    b.revocations
        .revoke(revocation("fam_3", &clock))
        .await
        .unwrap();
    let published = feed.published.lock().unwrap().clone();
    assert!(
        published.iter().any(
            |c| matches!(c, Change::FamilyRevoked { family, .. } if family.as_str() == "fam_3")
        )
    );
}

/// A feed whose publishes fail a few times before they go through.
struct FlakyFeed {
    inner: HandFeed,
    failures_left: Mutex<usize>,
}

#[async_trait]
impl ChangeFeed for FlakyFeed {
    async fn publish(&self, change: &Change) -> Result<(), StoreError> {
        {
            let mut left = self.failures_left.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return Err(StoreError::Unavailable("broken pipe".into()));
            }
        }
        self.inner.publish(change).await
    }

    async fn subscribe(&self) -> Result<tokio::sync::mpsc::Receiver<FeedEvent>, StoreError> {
        self.inner.subscribe().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_that_fails_is_retried_until_it_goes_through() {
    let clock = ManualClock::starting_now();
    let stores = Stores::from_one(MemoryStore::new());
    let feed = Arc::new(FlakyFeed {
        inner: HandFeed::default(),
        failures_left: Mutex::new(3),
    });
    let b = node(&stores, feed.clone(), &clock).await;
    b.revocations
        .revoke(revocation("fam_4", &clock))
        .await
        .unwrap();
    eventually(|| {
        feed.inner.published.lock().unwrap().iter().any(
            |c| matches!(c, Change::FamilyRevoked { family, .. } if family.as_str() == "fam_4"),
        )
    })
    .await;
}

/// A revocation whose announcement was lost for good (written by another node that then failed
/// to publish) is picked up by the periodic re-read, although the feed stays healthy.
#[tokio::test(start_paused = true)]
async fn a_lost_announcement_is_picked_up_by_the_periodic_re_read() {
    let clock = ManualClock::starting_now();
    let stores = Stores::from_one(MemoryStore::new());
    let feed = Arc::new(HandFeed::default());
    let b = node(&stores, feed.clone(), &clock).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let silent = Revocations::load(
        stores.revocations.clone(),
        RevocationMode::Denylist,
        clock.now(),
    )
    .await
    .unwrap();
    silent.revoke(revocation("fam_5", &clock)).await.unwrap();
    let family = FamilyId::from_stored("fam_5".into());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!family_revoked(&b, &family, &clock), "nobody announced it");
    tokio::time::sleep(tessera_core::feed::ANNOUNCEMENT_LOSS_BOUND).await;
    eventually(|| family_revoked(&b, &family, &clock)).await;
    assert!(b.revocations.trusted(clock.now()), "the feed never broke");
}

/// The periodic re-read merges with what arrived meanwhile: a revocation heard on the feed after
/// the store was read (here: one the store does not show yet) is not dropped by the re-read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_read_never_drops_a_newer_revocation() {
    let clock = ManualClock::starting_now();
    let stores = Stores::from_one(MemoryStore::new());
    let feed = Arc::new(HandFeed::default());
    let b = node(&stores, feed.clone(), &clock).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let family = FamilyId::generate().unwrap();
    feed.send(FeedEvent::Change(Change::FamilyRevoked {
        family: family.clone(),
        expires_at: clock.now().saturating_add(Duration::from_secs(600)),
    }))
    .await;
    eventually(|| family_revoked(&b, &family, &clock)).await;
    b.revocations.resync(clock.now()).await.unwrap();
    assert!(
        family_revoked(&b, &family, &clock),
        "the re-read dropped a revocation newer than what it read"
    );
    // What has expired does go.
    clock.advance(Duration::from_secs(601));
    b.revocations.resync(clock.now()).await.unwrap();
    assert!(!family_revoked(&b, &family, &clock));
}

/// A store left with no active key (its last one retired by hand) does not leave the retired key
/// verifying on a node that reloads: what verifies follows the store, and the node fails closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_key_stops_verifying_even_when_no_active_key_is_left() {
    let clock = ManualClock::starting_now();
    let stores = Stores::from_one(MemoryStore::new());
    let services = Services::build(
        stores.clone(),
        Arc::new(clock.clone()),
        master_key(),
        ServicesConfig::default(),
    )
    .await
    .unwrap();
    let ring = services.tokens.keyring();
    let kid = ring.signing_key().kid.clone();
    assert!(ring.verification_key(&kid).is_some());
    assert!(
        stores
            .keys
            .mark_key_retired(&kid, clock.now())
            .await
            .unwrap()
    );
    ring.reload().await.unwrap();
    assert!(
        ring.verification_key(&kid).is_none(),
        "a key retired in the store still verifies"
    );
}

/// Keys that can be made unreadable, as a store that cannot be reached.
struct FlakyKeys {
    inner: MemoryStore,
    broken: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl tessera_core::KeyStore for FlakyKeys {
    async fn insert_key(&self, key: &tessera_core::StoredKey) -> Result<(), StoreError> {
        self.inner.insert_key(key).await
    }

    async fn keys(&self) -> Result<Vec<tessera_core::StoredKey>, StoreError> {
        if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Unavailable("keys unreachable".into()));
        }
        self.inner.keys().await
    }

    async fn mark_key_rotated(
        &self,
        kid: &str,
        at: tessera_core::Timestamp,
    ) -> Result<bool, StoreError> {
        self.inner.mark_key_rotated(kid, at).await
    }

    async fn mark_key_retired(
        &self,
        kid: &str,
        at: tessera_core::Timestamp,
    ) -> Result<bool, StoreError> {
        self.inner.mark_key_retired(kid, at).await
    }
}

/// After the feed was lost, a node trusts its state again only once it has re-read the keys too:
/// a key retired while it was not listening must not go on verifying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_gap_the_keys_are_re_read_before_the_state_is_trusted() {
    use tessera_core::KeyStore as _;
    let clock = ManualClock::starting_now();
    let memory = MemoryStore::new();
    let keys = Arc::new(FlakyKeys {
        inner: memory.clone(),
        broken: false.into(),
    });
    let stores = Stores {
        keys: keys.clone(),
        ..Stores::from_one(memory)
    };
    let feed = Arc::new(HandFeed::default());
    let b = node(&stores, feed.clone(), &clock).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let later = || clock.now().saturating_add(Duration::from_secs(3600));
    assert!(b.revocations.trusted(later()));

    feed.send(FeedEvent::Lost).await;
    eventually(|| !b.revocations.trusted(later())).await;
    // The feed comes back, but the keys cannot be read: still not trusted.
    keys.broken.store(true, std::sync::atomic::Ordering::SeqCst);
    feed.send(FeedEvent::Gap).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !b.revocations.trusted(later()),
        "trusted again without having re-read the keys"
    );
    // Once they can be read, the gap is finished.
    keys.broken
        .store(false, std::sync::atomic::Ordering::SeqCst);
    eventually(|| b.revocations.trusted(later())).await;
    assert!(!keys.keys().await.unwrap().is_empty());
}
