//! The change feed over Redis pub/sub: `PUBLISH Pchanges <json>`; each subscriber holds its own
//! connection (RESP3, so messages arrive as pushes on a channel), and reports
//! [`FeedEvent::Lost`] when it breaks and [`FeedEvent::Gap`] once it listens again.
//!
//! On a cluster, `PUBLISH` reaches the subscribers of every node, so a subscriber listens on one
//! node of its choice. It leaves that node (`Lost`) when the connection breaks or the node no
//! longer sees a healthy cluster (it may be cut off from the others, whose messages would then
//! not reach it), and listens again on another node that does (`Gap`). The nodes to try are the
//! configured ones and those the cluster itself listed last.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, Msg, PushInfo, PushKind, cmd,
};
use async_trait::async_trait;
use tessera_core::StoreError;
use tessera_core::feed::{Change, ChangeFeed, FeedEvent};
use tokio::sync::mpsc;

use super::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT, RedisStore, call};

/// Events buffered for a subscriber that is slow to read them.
const BUFFER: usize = 1024;
/// The first wait before resubscribing; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often an idle subscription checks that Redis still answers (a connection can die
/// without closing, behind a network partition).
const PING_EVERY: Duration = Duration::from_secs(5);

#[async_trait]
impl ChangeFeed for RedisStore {
    async fn publish(&self, change: &Change) -> Result<(), StoreError> {
        let payload = serde_json::to_string(change)
            .map_err(|e| StoreError::Other(format!("change does not encode: {e}")))?;
        let mut conn = self.conn();
        let _receivers: i64 = call(
            "PUBLISH",
            cmd("PUBLISH")
                .arg(self.keys.changes())
                .arg(payload)
                .query_async(&mut conn),
        )
        .await?;
        Ok(())
    }

    /// Subscribes before returning (an error when Redis cannot be reached), then follows the
    /// channel in a task that ends when the receiver is dropped.
    async fn subscribe(&self) -> Result<mpsc::Receiver<FeedEvent>, StoreError> {
        let listener = Listener {
            source: self.feed_source.clone(),
            channel: self.keys.changes(),
        };
        let subscription = listener.subscribe().await?;
        let (events, receiver) = mpsc::channel(BUFFER);
        tokio::spawn(listener.follow(subscription, events));
        Ok(receiver)
    }
}

/// Where subscribers connect.
pub(super) enum FeedSource {
    /// The one Redis (RESP3).
    Single(Client),
    /// Any healthy node of a cluster.
    Cluster(ClusterNodes),
}

/// The nodes of a cluster a subscriber may listen on.
pub(super) struct ClusterNodes {
    /// The configured nodes (RESP3), also the template (credentials, TLS) for the others.
    seeds: Vec<ConnectionInfo>,
    /// The nodes the cluster listed when a subscriber last connected.
    known: Mutex<Vec<ConnectionInfo>>,
    /// Where the next attempt starts, so that a subscriber leaving a node tries another first
    /// and subscribers spread over the nodes.
    next: AtomicUsize,
}

impl ClusterNodes {
    pub(super) fn new(seeds: Vec<ConnectionInfo>) -> Self {
        Self {
            seeds,
            known: Mutex::new(Vec::new()),
            next: AtomicUsize::new(std::process::id() as usize),
        }
    }

    /// The nodes to try, in the order to try them.
    fn candidates(&self) -> Vec<ConnectionInfo> {
        let mut all: Vec<ConnectionInfo> = self
            .known
            .lock()
            .map(|known| known.clone())
            .unwrap_or_default();
        for seed in &self.seeds {
            if !all.iter().any(|n| n.addr() == seed.addr()) {
                all.push(seed.clone());
            }
        }
        if !all.is_empty() {
            let start = self.next.fetch_add(1, Ordering::Relaxed) % all.len();
            all.rotate_left(start);
        }
        all
    }

    /// Remembers the healthy nodes of a `CLUSTER NODES` reply, reached like `template`.
    fn learn(&self, template: &ConnectionInfo, listing: &str) {
        let nodes: Vec<ConnectionInfo> = listing
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_ascii_whitespace();
                let address = fields.nth(1)?;
                let flags = fields.next()?;
                if flags
                    .split(',')
                    .any(|f| matches!(f, "fail" | "fail?" | "noaddr" | "handshake"))
                {
                    return None;
                }
                let host_port = address.split(['@', ',']).next()?;
                let (host, port) = host_port.rsplit_once(':')?;
                let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
                if host.is_empty() {
                    return None;
                }
                Some(reached_like(template, host, port))
            })
            .collect();
        if !nodes.is_empty()
            && let Ok(mut known) = self.known.lock()
        {
            *known = nodes;
        }
    }
}

/// `template`'s settings (credentials, protocol, TLS) for the node at `host:port`.
fn reached_like(template: &ConnectionInfo, host: &str, port: u16) -> ConnectionInfo {
    let addr = match template.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host.to_owned(), port),
    };
    template.clone().set_addr(addr)
}

struct Listener {
    source: std::sync::Arc<FeedSource>,
    channel: String,
}

/// A live subscription: its connection, and where its messages arrive.
struct Subscription {
    conn: MultiplexedConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    /// On a cluster: the liveness check also asks whether the node sees a healthy cluster.
    cluster: bool,
}

enum Ended {
    /// The connection broke: resubscribe.
    Broken,
    /// The receiver was dropped: stop.
    Unsubscribed,
}

impl Listener {
    async fn subscribe(&self) -> Result<Subscription, StoreError> {
        match &*self.source {
            FeedSource::Single(client) => self.subscribe_on(client, false).await,
            FeedSource::Cluster(nodes) => {
                let mut last = None;
                for node in nodes.candidates() {
                    match self.subscribe_on_cluster_node(nodes, node).await {
                        Ok(subscription) => return Ok(subscription),
                        Err(e) => {
                            tracing::debug!(error = %e, "a Redis Cluster node cannot carry the change feed");
                            last = Some(e);
                        }
                    }
                }
                Err(last.unwrap_or_else(|| {
                    StoreError::Unavailable("no Redis Cluster node to subscribe to".into())
                }))
            }
        }
    }

    /// Subscribes on `node` if it sees a healthy cluster, and learns the cluster's nodes from it.
    async fn subscribe_on_cluster_node(
        &self,
        nodes: &ClusterNodes,
        node: ConnectionInfo,
    ) -> Result<Subscription, StoreError> {
        let client = Client::open(node.clone())
            .map_err(|e| StoreError::Other(format!("Redis feed client: {:?}", e.kind())))?;
        let mut subscription = self.subscribe_on(&client, true).await?;
        cluster_healthy(&mut subscription.conn).await?;
        let listing: String = call(
            "CLUSTER NODES",
            cmd("CLUSTER")
                .arg("NODES")
                .query_async(&mut subscription.conn),
        )
        .await?;
        nodes.learn(&node, &listing);
        Ok(subscription)
    }

    async fn subscribe_on(
        &self,
        client: &Client,
        cluster: bool,
    ) -> Result<Subscription, StoreError> {
        let (push_sender, pushes) = mpsc::unbounded_channel();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_push_sender(push_sender);
        let mut conn = call(
            "connect for the change feed",
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await?;
        call("SUBSCRIBE", conn.subscribe(&self.channel)).await?;
        Ok(Subscription {
            conn,
            pushes,
            cluster,
        })
    }

    async fn follow(self, mut subscription: Subscription, events: mpsc::Sender<FeedEvent>) {
        // Nothing was heard before subscribing.
        if events.send(FeedEvent::Gap).await.is_err() {
            return;
        }
        loop {
            if let Ended::Unsubscribed = self.listen(&mut subscription, &events).await {
                return;
            }
            tracing::warn!(channel = %self.channel, "the Redis change feed broke; resubscribing");
            if events.send(FeedEvent::Lost).await.is_err() {
                return;
            }
            let Some(again) = self.resubscribe(&events).await else {
                return;
            };
            subscription = again;
            tracing::info!(channel = %self.channel, "the Redis change feed is back");
            // Changes published while we were away are lost: say so.
            if events.send(FeedEvent::Gap).await.is_err() {
                return;
            }
        }
    }

    /// Forwards changes until the subscription breaks or the receiver goes away.
    async fn listen(
        &self,
        subscription: &mut Subscription,
        events: &mpsc::Sender<FeedEvent>,
    ) -> Ended {
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        loop {
            tokio::select! {
                () = events.closed() => return Ended::Unsubscribed,
                push = subscription.pushes.recv() => {
                    let Some(push) = push else {
                        return Ended::Broken;
                    };
                    match push.kind {
                        PushKind::Disconnection => return Ended::Broken,
                        PushKind::Message => {
                            // A message this node cannot read (a newer node's change, during a
                            // rolling upgrade) may have been a revocation: re-read everything.
                            let event = decode(push).map_or(FeedEvent::Gap, FeedEvent::Change);
                            if events.send(event).await.is_err() {
                                return Ended::Unsubscribed;
                            }
                        }
                        // Subscription confirmations and the like.
                        _ => {}
                    }
                }
                _ = ping.tick() => {
                    let alive = if subscription.cluster {
                        cluster_healthy(&mut subscription.conn).await
                    } else {
                        call("PING", cmd("PING").query_async::<String>(&mut subscription.conn))
                            .await
                            .map(drop)
                    };
                    if let Err(e) = alive {
                        tracing::warn!(error = %e, "the Redis change feed does not answer");
                        return Ended::Broken;
                    }
                }
            }
        }
    }

    /// Tries again, backing off, until subscribed; `None` when the receiver went away meanwhile.
    async fn resubscribe(&self, events: &mpsc::Sender<FeedEvent>) -> Option<Subscription> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            tokio::select! {
                () = events.closed() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
            match self.subscribe().await {
                Ok(subscription) => return Some(subscription),
                Err(e) => {
                    tracing::debug!(error = %e, ?backoff, "resubscribing to the Redis change feed failed");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// Whether the node behind `conn` sees a healthy cluster (`cluster_state:ok`): a node cut off
/// from the majority says `fail`, and would not hear what is published on the other side.
async fn cluster_healthy(conn: &mut MultiplexedConnection) -> Result<(), StoreError> {
    let info: String = call("CLUSTER INFO", cmd("CLUSTER").arg("INFO").query_async(conn)).await?;
    if info.lines().any(|line| line.trim() == "cluster_state:ok") {
        Ok(())
    } else {
        Err(StoreError::Unavailable(
            "this Redis Cluster node does not see a healthy cluster".into(),
        ))
    }
}

/// A message's change; `None` (logged) for anything that is not one.
fn decode(push: PushInfo) -> Option<Change> {
    let msg = Msg::from_push_info(push)?;
    match serde_json::from_slice(msg.get_payload_bytes()) {
        Ok(change) => Some(change),
        Err(e) => {
            tracing::warn!(error = %e, "a message on the Redis change feed does not decode; treating it as a gap");
            None
        }
    }
}
