//! A private Redis Cluster for tests: six `redis-server` processes in cluster mode (three
//! primaries, one replica each) on free loopback ports, in a temporary directory, joined with
//! `redis-cli --cluster create`, and healthy (`cluster_state:ok` everywhere, every replica in
//! sync) before [`RedisCluster::start`] returns.
//!
//! Every process is killed when the [`RedisCluster`] is dropped, also when the test panicked, and
//! also when the test process itself ends without dropping it (a cluster kept in a `static`, a
//! test binary killed): beside each server a small watchdog process reads a pipe whose write end
//! only this process has, and kills the server (and removes its directory) at end-of-file.
//!
//! Ports: all twelve (client and cluster bus ports) are chosen by binding port 0 at once, so
//! clusters of parallel tests and test binaries never share one; a start that loses a port to
//! another process in the short moment between is retried on new ports.
//!
//! Needs `redis-server` and `redis-cli` 7 or later (`cluster-port`) on the `PATH`.

#![forbid(unsafe_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// How many primaries; each has one replica.
const PRIMARIES: usize = 3;
/// The cluster's node timeout: how long a primary may be unreachable before its replica takes
/// over (plus an election, about as long again).
pub const NODE_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a start, or a failover, may take before the test is failed.
const PATIENCE: Duration = Duration::from_secs(30);

/// One `redis-server` of the cluster, and its watchdog.
struct Server {
    port: u16,
    bus: u16,
    process: Option<Running>,
}

struct Running {
    server: Child,
    /// Kills `server` when its stdin closes; the pipe's write end is the other field.
    watchdog: Child,
    _pipe: ChildStdin,
}

impl Running {
    fn kill(mut self) {
        // The watchdog first, so it cannot signal a process id that is reused later, nor remove
        // the directory of a node that is to be restarted.
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// A running cluster; see the crate documentation.
pub struct RedisCluster {
    servers: Vec<Server>,
    dir: tempfile::TempDir,
}

/// A node as `CLUSTER NODES` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's client port.
    pub port: u16,
    /// The node's cluster id.
    pub id: String,
    /// Whether it is a primary (else a replica).
    pub primary: bool,
    /// For a replica, the id of its primary.
    pub primary_id: Option<String>,
    /// Whether the cluster flags it as failed.
    pub failed: bool,
    /// For a primary, the slot ranges it serves (inclusive).
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts a cluster and waits until it is healthy; panics (naming what failed) when it
    /// cannot.
    pub fn start() -> Self {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start() {
                Ok(cluster) => return cluster,
                // A port taken between choosing and binding it, most likely: new ports.
                Err(e) => last = e,
            }
        }
        panic!("cannot start a Redis Cluster: {last}");
    }

    fn try_start() -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("redis-cluster-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let ports = free_ports(4 * PRIMARIES);
        let (client_ports, bus_ports) = ports.split_at(2 * PRIMARIES);
        let mut cluster = Self {
            servers: Vec::new(),
            dir,
        };
        for (&port, &bus) in client_ports.iter().zip(bus_ports) {
            let process = spawn_server(cluster.dir.path(), port, bus)?;
            cluster.servers.push(Server {
                port,
                bus,
                process: Some(process),
            });
        }
        for server in &mut cluster.servers {
            wait_for_ping(server, cluster.dir.path())?;
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in client_ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let created = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("redis-cli does not run (is it installed?): {e}"))?;
        if !created.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&created.stdout),
                String::from_utf8_lossy(&created.stderr)
            ));
        }
        cluster.wait_until_healthy_within(PATIENCE)?;
        Ok(cluster)
    }

    /// Every node's client port, primaries and replicas, killed ones included.
    pub fn ports(&self) -> Vec<u16> {
        self.servers.iter().map(|s| s.port).collect()
    }

    /// `redis://127.0.0.1:PORT` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.ports()
            .into_iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,…` naming every node.
    pub fn cluster_url(&self) -> String {
        let hosts: Vec<String> = self
            .ports()
            .into_iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The ports of the nodes still running.
    pub fn live_ports(&self) -> Vec<u16> {
        self.servers
            .iter()
            .filter(|s| s.process.is_some())
            .map(|s| s.port)
            .collect()
    }

    /// Runs `cmd` on the node at `port`.
    pub fn query<T: redis::FromRedisValue>(
        &self,
        port: u16,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        cmd.query(&mut conn)
    }

    /// The nodes as the first live node that answers lists them.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        for port in self.live_ports() {
            if let Ok(listing) = self.query::<String>(port, redis::cmd("CLUSTER").arg("NODES")) {
                return parse_nodes(&listing);
            }
        }
        panic!("no node of the Redis Cluster answers CLUSTER NODES");
    }

    /// The slot of `key` (its hash tag's, if it has one).
    pub fn slot_of(&self, key: &str) -> u16 {
        let port = self.live_ports()[0];
        self.query(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
            .expect("CLUSTER KEYSLOT")
    }

    /// The port of the primary that serves `key`'s slot now.
    pub fn primary_of(&self, key: &str) -> u16 {
        let slot = self.slot_of(key);
        self.nodes()
            .into_iter()
            .find(|n| {
                n.primary && !n.failed && n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
            })
            .unwrap_or_else(|| panic!("no live primary serves slot {slot}"))
            .port
    }

    /// The port of the replica of the primary at `port`.
    pub fn replica_of(&self, port: u16) -> u16 {
        let nodes = self.nodes();
        let primary = nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"));
        nodes
            .iter()
            .find(|n| n.primary_id.as_deref() == Some(primary.id.as_str()))
            .unwrap_or_else(|| panic!("the node on port {port} has no replica"))
            .port
    }

    /// Kills the node at `port` with SIGKILL: no goodbye to its clients or the cluster.
    pub fn kill(&mut self, port: u16) {
        let server = self
            .servers
            .iter_mut()
            .find(|s| s.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"));
        if let Some(process) = server.process.take() {
            process.kill();
        }
    }

    /// Starts the node at `port` again after [`RedisCluster::kill`], with its cluster
    /// configuration: a primary that was failed over comes back as a replica of the node that
    /// took over. Call [`RedisCluster::wait_until_healthy`] to wait until it is in sync.
    pub fn restart(&mut self, port: u16) {
        let dir = self.dir.path().to_owned();
        let server = self
            .servers
            .iter_mut()
            .find(|s| s.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"));
        assert!(
            server.process.is_none(),
            "the node on port {port} is running"
        );
        let process = spawn_server(&dir, port, server.bus)
            .unwrap_or_else(|e| panic!("cannot restart the node on port {port}: {e}"));
        server.process = Some(process);
        if let Err(e) = wait_for_ping(server, &dir) {
            panic!("the node on port {port} does not come back: {e}");
        }
    }

    /// Waits until every live node says `cluster_state:ok`, every slot is served by a live
    /// primary, and every live replica is in sync with its primary: after a start, or after a
    /// primary was killed and its replica took over. Panics after 30 s.
    pub fn wait_until_healthy(&self) {
        if let Err(e) = self.wait_until_healthy_within(PATIENCE) {
            panic!("the Redis Cluster did not become healthy: {e}");
        }
    }

    fn wait_until_healthy_within(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let why = match self.health() {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            if Instant::now() > deadline {
                return Err(format!("after {limit:?}: {why}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `Ok` when healthy, else what is not yet.
    fn health(&self) -> Result<(), String> {
        let live = self.live_ports();
        for &port in &live {
            let info: String = self
                .query(port, redis::cmd("CLUSTER").arg("INFO"))
                .map_err(|e| format!("node {port}: {e}"))?;
            if !info.lines().any(|l| l.trim() == "cluster_state:ok") {
                return Err(format!("node {port} does not say cluster_state:ok"));
            }
            let listing: String = self
                .query(port, redis::cmd("CLUSTER").arg("NODES"))
                .map_err(|e| format!("node {port}: {e}"))?;
            let nodes = parse_nodes(&listing);
            if nodes.len() < self.servers.len() {
                return Err(format!(
                    "node {port} knows {} of {} nodes",
                    nodes.len(),
                    self.servers.len()
                ));
            }
            let served: u32 = nodes
                .iter()
                .filter(|n| n.primary && !n.failed && live.contains(&n.port))
                .flat_map(|n| n.slots.iter().map(|&(a, b)| u32::from(b - a) + 1))
                .sum();
            if served != 16384 {
                return Err(format!(
                    "node {port} sees {served} of 16384 slots served by live primaries"
                ));
            }
            if nodes.iter().any(|n| !n.primary && n.primary_id.is_none()) {
                return Err(format!("node {port} lists a node without a role yet"));
            }
            let replication: String = self
                .query(port, redis::cmd("INFO").arg("replication"))
                .map_err(|e| format!("node {port}: {e}"))?;
            if replication.lines().any(|l| l.trim() == "role:slave")
                && !replication
                    .lines()
                    .any(|l| l.trim() == "master_link_status:up")
            {
                return Err(format!("replica {port} is not in sync with its primary"));
            }
            // A primary counts a replica for `WAIT` only once it has put it online, which after a
            // (diskless) full sync waits for the replica's first acknowledgement, up to a second
            // after the replica itself says its link is up.
            if replication.lines().any(|l| l.trim() == "role:master") {
                let me = nodes.iter().find(|n| n.port == port).map(|n| n.id.clone());
                let replicas = nodes
                    .iter()
                    .filter(|n| {
                        !n.primary && !n.failed && live.contains(&n.port) && n.primary_id == me
                    })
                    .count();
                let online = replication
                    .lines()
                    .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                    .count();
                if online < replicas {
                    return Err(format!(
                        "primary {port} has {online} of its {replicas} replicas online"
                    ));
                }
                if replicas > 0 {
                    self.replication_acknowledged(port, &nodes, replicas)?;
                }
            }
        }
        Ok(())
    }

    /// A write on the primary at `port` is confirmed by its `replicas` (`WAIT`), as the store's
    /// revoking writes must be: right after the cluster forms, roles and links still settle for a
    /// moment after every node already says it is healthy.
    fn replication_acknowledged(
        &self,
        port: u16,
        nodes: &[NodeInfo],
        replicas: usize,
    ) -> Result<(), String> {
        let Some(me) = nodes.iter().find(|n| n.port == port) else {
            return Err(format!("primary {port} is not listed"));
        };
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .map_err(|e| format!("primary {port}: {e}"))?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .map_err(|e| format!("primary {port}: {e}"))?;
        // A key of one of its slots (about one candidate in three is).
        let mut key = None;
        for i in 0..1000u32 {
            let candidate = format!("test-redis-cluster:ready:{i}");
            let slot: u16 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(&candidate)
                .query(&mut conn)
                .map_err(|e| format!("primary {port}: {e}"))?;
            if me.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)) {
                key = Some(candidate);
                break;
            }
        }
        let key = key.ok_or_else(|| format!("primary {port}: no key of its slots found"))?;
        let confirmed: i64 = redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg("1")
            .arg("PX")
            .arg(10_000)
            .ignore()
            .cmd("WAIT")
            .arg(replicas)
            .arg(200)
            .query::<(i64,)>(&mut conn)
            .map(|(n,)| n)
            .map_err(|e| format!("primary {port}: {e}"))?;
        if confirmed < replicas as i64 {
            return Err(format!(
                "primary {port}: {confirmed} of {replicas} replicas confirmed a write"
            ));
        }
        Ok(())
    }

    /// The last lines of the log of the node at `port`, for a failure message.
    pub fn log_tail(&self, port: u16, lines: usize) -> String {
        let log = self.dir.path().join(port.to_string()).join("redis.log");
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            if let Some(process) = server.process.take() {
                process.kill();
            }
        }
    }
}

/// `n` distinct free loopback ports: bound at once, then released for the servers.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

/// Starts a node in `dir/PORT` (its cluster configuration and log), and its watchdog.
fn spawn_server(dir: &Path, port: u16, bus: u16) -> Result<Running, String> {
    let node_dir = dir.join(port.to_string());
    std::fs::create_dir_all(&node_dir).map_err(|e| format!("node directory: {e}"))?;
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--cluster-port",
            &bus.to_string(),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            &NODE_TIMEOUT.as_millis().to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--maxmemory-policy",
            "noeviction",
            "--logfile",
            "redis.log",
        ])
        .arg("--dir")
        .arg(&node_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("redis-server does not start (is it installed?): {e}"))?;
    // At end-of-file (this process ended, whichever way): kill the server, remove its
    // directory, and the cluster's directory once it is empty.
    let script = format!(
        "cat >/dev/null; kill -9 {} 2>/dev/null; rm -rf '{}'; rmdir '{}' 2>/dev/null",
        server.id(),
        node_dir.display(),
        dir.display()
    );
    let watchdog = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut watchdog = match watchdog {
        Ok(watchdog) => watchdog,
        Err(e) => {
            let _ = server.kill();
            let _ = server.wait();
            return Err(format!("the watchdog does not start: {e}"));
        }
    };
    let Some(pipe) = watchdog.stdin.take() else {
        let _ = server.kill();
        let _ = watchdog.kill();
        return Err("the watchdog has no stdin".into());
    };
    Ok(Running {
        server,
        watchdog,
        _pipe: pipe,
    })
}

fn wait_for_ping(server: &mut Server, dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let url = format!("redis://127.0.0.1:{}", server.port);
    loop {
        if let Ok(client) = redis::Client::open(url.as_str())
            && let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200))
            && redis::cmd("PING").query::<String>(&mut conn).is_ok()
        {
            return Ok(());
        }
        if let Some(process) = &mut server.process
            && let Ok(Some(status)) = process.server.try_wait()
        {
            let log = std::fs::read_to_string(dir.join(server.port.to_string()).join("redis.log"))
                .unwrap_or_default();
            return Err(format!(
                "redis-server on port {} exited ({status}): {log}",
                server.port
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "redis-server on port {} does not answer",
                server.port
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Parses `CLUSTER NODES`.
fn parse_nodes(listing: &str) -> Vec<NodeInfo> {
    listing
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let port = fields[1]
                .split(['@', ','])
                .next()?
                .rsplit_once(':')?
                .1
                .parse()
                .ok()?;
            let flags: Vec<&str> = fields[2].split(',').collect();
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|a| (a, a)),
                })
                .collect();
            Some(NodeInfo {
                port,
                id: fields[0].to_owned(),
                primary: flags.contains(&"master"),
                primary_id: (fields[3] != "-").then(|| fields[3].to_owned()),
                failed: flags.iter().any(|f| *f == "fail" || *f == "fail?"),
                slots,
            })
        })
        .collect()
}
