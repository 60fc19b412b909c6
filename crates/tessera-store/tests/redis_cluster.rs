//! The Redis store on a real Redis Cluster (three primaries, a replica each, started by each test
//! on free ports and killed when it ends): scripts run on every primary, even after they were
//! flushed; the change feed reaches every node and survives the death of the node it listens
//! on; and when a primary dies, calls that need it fail closed until its replica took over, and
//! no acknowledged revocation is lost.
//!
//! The conformance suite on a cluster is in `conformance_redis.rs`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tessera_core::feed::{Change, ChangeFeed, FeedEvent};
use tessera_core::store::{RevocationStore, SessionStore};
use tessera_core::{
    AllowedToken, ClientInfo, CsrfToken, FamilyId, RevocationEntry, Revoked, Session,
    SessionHandle, SessionId, StoreError, Timestamp, UserId,
};
use tessera_store::RedisStore;
use test_redis_cluster::RedisCluster;
use tokio::sync::mpsc::Receiver;

/// How long the cluster may take to notice a dead primary and promote its replica.
const FAILOVER: Duration = Duration::from_secs(30);

fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    Timestamp::from_unix_millis(i64::try_from(ms).unwrap())
}

fn session_of(user: &UserId) -> Session {
    let t = now();
    Session {
        handle: SessionHandle::generate().unwrap(),
        user_id: user.clone(),
        secret_hash: SessionId::generate().unwrap().hash(),
        csrf_token: CsrfToken::generate().unwrap(),
        created_at: t,
        last_seen_at: t,
        expires_at: t.saturating_add(Duration::from_secs(600)),
        absolute_expires_at: t.saturating_add(Duration::from_secs(3600)),
        client: ClientInfo::default(),
        data: json!({}).into(),
        data_version: 0,
        auth: tessera_core::AuthContext::password(t),
    }
}

/// Starts a cluster off the async workers (it takes a few seconds).
/// The tests of this file run one at a time, each on a cluster of its own: three clusters (18
/// servers) at once on two cores starve the nodes' heartbeats past the one-second node timeout,
/// and the clusters then fail over by themselves in the middle of a test.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start_cluster() -> (tokio::sync::MutexGuard<'static, ()>, RedisCluster) {
    let turn = ONE_AT_A_TIME.lock().await;
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("the cluster starts");
    (turn, cluster)
}

/// The per-user session index key, as the store names it: its slot is the user's.
fn user_key(prefix: &str, user: &UserId) -> String {
    format!("{prefix}{{u:{user}}}:sessions")
}

/// Users whose sessions live on each of the three primaries.
fn users_on_every_primary(cluster: &RedisCluster, prefix: &str) -> Vec<UserId> {
    let mut primaries = BTreeSet::new();
    let mut users = Vec::new();
    while primaries.len() < 3 {
        let user = UserId::generate().unwrap();
        if primaries.insert(cluster.primary_of(&user_key(prefix, &user))) {
            users.push(user);
        }
    }
    users
}

/// Every script runs on every primary, also after every node forgot its scripts (`SCRIPT
/// FLUSH`, as a replica that took over has never loaded them): `EVALSHA` meets `NOSCRIPT` and
/// the script is loaded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_run_on_every_primary_and_load_again_when_forgotten() {
    let (_turn, cluster) = start_cluster().await;
    let prefix = "scripts:";
    let store = RedisStore::connect(&cluster.cluster_url(), prefix)
        .await
        .unwrap();
    let users = users_on_every_primary(&cluster, prefix);
    for round in 0..2 {
        for user in &users {
            let session = session_of(user);
            store.create_session(&session).await.unwrap();
            assert!(
                store
                    .touch_session(
                        &session.handle,
                        now(),
                        now().saturating_add(Duration::from_secs(60))
                    )
                    .await
                    .unwrap(),
                "round {round}"
            );
            assert_eq!(store.sessions_of_user(user).await.unwrap().len(), 1);
            assert!(store.delete_session(&session.handle).await.unwrap());
        }
        store
            .add_revocation(&RevocationEntry {
                revoked: Revoked::Token {
                    jti: format!("j{round}"),
                },
                expires_at: now().saturating_add(Duration::from_secs(60)),
            })
            .await
            .unwrap();
        assert!(
            store
                .take_attempt(&format!("k{round}"), 1, 1, true)
                .await
                .unwrap()
                .is_ok()
        );
        for port in cluster.live_ports() {
            let _: String = cluster
                .query(port, redis::cmd("SCRIPT").arg("FLUSH"))
                .unwrap();
        }
    }
}

async fn next_event(events: &mut Receiver<FeedEvent>, within: Duration) -> FeedEvent {
    tokio::time::timeout(within, events.recv())
        .await
        .unwrap_or_else(|_| panic!("no feed event within {within:?}"))
        .expect("the feed ended")
}

/// The nodes on which `channel` has a subscriber.
fn subscribed_nodes(cluster: &RedisCluster, channel: &str) -> Vec<u16> {
    cluster
        .live_ports()
        .into_iter()
        .filter(|&port| {
            let (_, n): (String, i64) = cluster
                .query(port, redis::cmd("PUBSUB").arg("NUMSUB").arg(channel))
                .unwrap();
            n > 0
        })
        .collect()
}

/// A change published through one node reaches subscribers on others; when the node a
/// subscriber listens on dies, it hears `Lost` at once, then `Gap` once it listens on another
/// node, and changes flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_reaches_every_node_and_survives_the_death_of_its_node() {
    let (_turn, mut cluster) = start_cluster().await;
    let url = cluster.cluster_url();
    let one = RedisStore::connect(&url, "feed:").await.unwrap();
    let two = RedisStore::connect(&url, "feed:").await.unwrap();
    let mut heard_by_one = one.subscribe().await.unwrap();
    let mut heard_by_two = two.subscribe().await.unwrap();
    let wait = Duration::from_secs(10);
    assert_eq!(next_event(&mut heard_by_one, wait).await, FeedEvent::Gap);
    assert_eq!(next_event(&mut heard_by_two, wait).await, FeedEvent::Gap);
    two.publish(&Change::KeysChanged).await.unwrap();
    for events in [&mut heard_by_one, &mut heard_by_two] {
        assert_eq!(
            next_event(events, wait).await,
            FeedEvent::Change(Change::KeysChanged)
        );
    }

    // Kill the node the first subscriber listens on (the second may share it).
    let listening = subscribed_nodes(&cluster, "feed:changes");
    assert!(!listening.is_empty(), "someone listens");
    let victim = listening[0];
    cluster.kill(victim);
    let lost = Instant::now();
    let mut lost_ones = Vec::new();
    for (name, events) in [("one", &mut heard_by_one), ("two", &mut heard_by_two)] {
        // A subscriber on another node hears nothing of it, or (if its node saw the cluster
        // fail meanwhile) loses and finds the feed again too.
        match tokio::time::timeout(Duration::from_millis(500), events.recv()).await {
            Ok(Some(FeedEvent::Lost)) => lost_ones.push(name),
            Ok(other) => panic!("{name}: {other:?} after its node died"),
            Err(_) => {}
        }
    }
    assert!(
        !lost_ones.is_empty(),
        "the subscriber on the killed node hears Lost at once"
    );
    assert!(lost.elapsed() < Duration::from_secs(2));
    for (name, events) in [("one", &mut heard_by_one), ("two", &mut heard_by_two)] {
        if lost_ones.contains(&name) {
            assert_eq!(
                next_event(events, FAILOVER).await,
                FeedEvent::Gap,
                "{name} listens again on another node"
            );
        }
    }
    let now_listening = subscribed_nodes(&cluster, "feed:changes");
    assert!(
        !now_listening.is_empty() && !now_listening.contains(&victim),
        "listening on {now_listening:?}, not the dead {victim}"
    );

    // The channel's slot may have been on the dead primary: publish until it is served again.
    let user = UserId::generate().unwrap();
    let changed = Change::UserChanged { user };
    let deadline = Instant::now() + FAILOVER;
    while let Err(e) = one.publish(&changed).await {
        assert!(
            matches!(e, StoreError::Unavailable(_)),
            "a publish during the failover: {e:?}"
        );
        assert!(Instant::now() < deadline, "publish never recovered: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (name, events) in [("one", &mut heard_by_one), ("two", &mut heard_by_two)] {
        // A subscriber whose node saw the cluster fail for a moment may lose and find the feed
        // once more before the change: what matters is that it arrives after a Gap at worst.
        loop {
            match next_event(events, wait).await {
                FeedEvent::Change(change) => {
                    assert_eq!(change, changed, "{name}");
                    break;
                }
                FeedEvent::Lost | FeedEvent::Gap => {}
            }
        }
    }
}

/// A primary dies right after acknowledging revocations: calls that need it fail closed
/// (`Unavailable`) until its replica took over, then succeed; every acknowledged revocation is
/// still there. Revocations on the shard that has no replica left are refused (not
/// acknowledged) until the old primary is back as its replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_loses_no_acknowledged_revocation() {
    let (_turn, mut cluster) = start_cluster().await;
    let prefix = "failover:";
    let store = RedisStore::connect(&cluster.cluster_url(), prefix)
        .await
        .unwrap();
    // A user whose sessions share a primary with the revocations.
    let victim = cluster.primary_of(&format!("{prefix}{{rev}}:deny"));
    let user = loop {
        let user = UserId::generate().unwrap();
        if cluster.primary_of(&user_key(prefix, &user)) == victim {
            break user;
        }
    };
    let family = FamilyId::generate().unwrap();
    let expires_at = now().saturating_add(Duration::from_secs(600));
    let kept = session_of(&user);
    let ended = session_of(&user);
    let also_ended = session_of(&user);
    for s in [&kept, &ended, &also_ended] {
        store.create_session(s).await.unwrap();
    }
    store
        .allow_token(&AllowedToken {
            jti: "live".into(),
            family_id: family.clone(),
            user_id: user.clone(),
            expires_at,
        })
        .await
        .unwrap();
    store
        .allow_token(&AllowedToken {
            jti: "revoked".into(),
            family_id: FamilyId::generate().unwrap(),
            user_id: user.clone(),
            expires_at,
        })
        .await
        .unwrap();

    // Acknowledged revocations, and at once the primary dies.
    assert!(store.delete_session(&ended.handle).await.unwrap());
    store
        .add_revocation(&RevocationEntry {
            revoked: Revoked::Family { id: family.clone() },
            expires_at,
        })
        .await
        .unwrap();
    assert!(store.disallow_token("revoked").await.unwrap());
    cluster.kill(victim);

    // Fail closed until the replica took over.
    let deadline = Instant::now() + FAILOVER;
    let mut refused = 0;
    let sessions = loop {
        match store.sessions_of_user(&user).await {
            Ok(sessions) => break sessions,
            Err(StoreError::Unavailable(_)) => refused += 1,
            Err(e) => panic!("while the primary is down: {e:?} (not Unavailable)"),
        }
        assert!(Instant::now() < deadline, "the replica never took over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refused > 0, "a call needing the dead primary failed first");
    let handles: Vec<&SessionHandle> = sessions.iter().map(|s| &s.handle).collect();
    assert!(
        handles.contains(&&kept.handle) && handles.contains(&&also_ended.handle),
        "the live sessions survived the failover"
    );
    assert!(
        !handles.contains(&&ended.handle),
        "an acknowledged logout is not undone by a failover"
    );
    assert_eq!(
        store.session_by_secret(&ended.secret_hash).await.unwrap(),
        None
    );
    assert!(
        store
            .session_by_secret(&kept.secret_hash)
            .await
            .unwrap()
            .is_some(),
        "reads work again"
    );
    let denylist = store.revocations(now()).await.unwrap();
    assert!(
        denylist
            .iter()
            .any(|e| e.revoked == Revoked::Family { id: family.clone() }),
        "an acknowledged denylist entry survived: {denylist:?}"
    );
    let allowed: Vec<String> = store
        .allowed_tokens(now())
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.jti)
        .collect();
    assert_eq!(allowed, ["live"], "an acknowledged disallow survived");
    // New sessions need no replica.
    store.create_session(&session_of(&user)).await.unwrap();

    // The new primary has no replica yet: a revocation cannot be confirmed, so it is refused.
    let refused = store.delete_session(&also_ended.handle).await;
    assert!(
        matches!(&refused, Err(StoreError::Unavailable(why)) if why.contains("replicas confirmed")),
        "{refused:?}"
    );

    // The old primary comes back as the new one's replica: revocations are confirmed again.
    let restarted = tokio::task::spawn_blocking(move || {
        cluster.restart(victim);
        cluster.wait_until_healthy();
        cluster
    })
    .await
    .unwrap();
    let deadline = Instant::now() + FAILOVER;
    loop {
        match store
            .delete_sessions_of_user(&user, Some(&kept.handle))
            .await
        {
            Ok(_) => break,
            Err(StoreError::Unavailable(e)) => {
                assert!(
                    Instant::now() < deadline,
                    "revocations never recovered: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    let left: Vec<SessionHandle> = store
        .sessions_of_user(&user)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.handle)
        .collect();
    assert_eq!(left, std::slice::from_ref(&kept.handle));
    drop(restarted);
}
