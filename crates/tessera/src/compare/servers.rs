//! The servers `tessera compare` measures: `tessera serve` child processes of this very binary,
//! each with a configuration file of its own in a temporary directory, listening on a loopback
//! port the system picks. A [`Node`] is killed when dropped (on an error, a panic or Ctrl-C
//! too); a [`Backing`] holds the PostgreSQL schema and Redis key prefix three nodes share, and
//! removes both in [`Backing::cleanup`].

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;

/// How long a node may take to listen (a first start creates its signing keys).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of a node's log kept to explain a failure.
const LOG_LINES: usize = 40;

/// `tokens.revocation`, as the configuration spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Revocation {
    Denylist,
    Allowlist,
    None,
}

impl Revocation {
    pub(crate) const ALL: [Revocation; 3] = [Self::Denylist, Self::Allowlist, Self::None];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Denylist => "denylist",
            Self::Allowlist => "allowlist",
            Self::None => "none",
        }
    }
}

/// A TOML basic string holding `text`.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The configuration every measured node shares: loopback on a port the system picks, no login
/// throttling (the measurement logs in hundreds of times from one address), no cap on live
/// logins, and only the log lines that say where the node listens and what went wrong.
fn common_toml(revocation: Revocation) -> String {
    format!(
        r#"listen = "127.0.0.1:0"
public_url = "http://localhost:8080"

[accounts]
registration = "open"
max_logins_per_user = 0

[throttling]
per_account = {{ burst = 1000000, per_minute = 1000000 }}
per_ip = {{ burst = 1000000, per_minute = 1000000 }}
refresh_per_ip = {{ burst = 1000000, per_minute = 1000000 }}

[log]
filter = "warn,tessera=info"

[tokens]
revocation = "{}"
"#,
        revocation.as_str()
    )
}

/// One node on the embedded SQLite store, in `dir`.
pub(crate) fn sqlite_config(dir: &Path, revocation: Revocation) -> String {
    let db = dir.join("tessera.db");
    format!(
        "database = {}\n{}master_key_file = {}\n",
        toml_string(&format!("sqlite://{}", db.display())),
        common_toml(revocation),
        toml_string(&dir.join("tessera.key").display().to_string()),
    )
}

/// A node of the shared PostgreSQL + Redis setup.
pub(crate) fn cluster_config(backing: &Backing) -> String {
    format!(
        "database = {}\n{}master_key = {}\n\n[postgres]\nschema = {}\n\n[sessions]\nstore = \"redis\"\n\n[redis]\nurl = {}\nprefix = {}\n",
        toml_string(&backing.postgres_url),
        common_toml(Revocation::Denylist),
        toml_string(&backing.master_key),
        toml_string(&backing.schema),
        toml_string(&backing.redis_url),
        toml_string(&backing.prefix),
    )
}

/// A `tessera serve` child process, listening. Killed (SIGKILL) and reaped when dropped.
pub(crate) struct Node {
    child: Child,
    pub(crate) addr: SocketAddr,
    log: Arc<Mutex<VecDeque<String>>>,
}

/// A node started but not yet known to listen: start several, then [`Starting::ready`] each.
pub(crate) struct Starting {
    child: Option<Child>,
    log: Arc<Mutex<VecDeque<String>>>,
    listening: tokio::sync::mpsc::UnboundedReceiver<SocketAddr>,
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `tessera serve` with `config` written to `dir/tessera.toml`, in `dir`, without any
/// `TESSERA_…` variable of ours (they would override the file).
pub(crate) fn spawn(dir: &Path, config: &str) -> anyhow::Result<Starting> {
    let path = dir.join("tessera.toml");
    std::fs::write(&path, config)
        .with_context(|| format!("writing the configuration {}", path.display()))?;
    let exe = std::env::current_exe().context("finding the tessera binary")?;
    let mut command = Command::new(exe);
    command
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TESSERA_") {
            command.env_remove(key);
        }
    }
    let mut child = command.spawn().context("starting tessera serve")?;
    let log = Arc::new(Mutex::new(VecDeque::new()));
    let (tx, listening) = tokio::sync::mpsc::unbounded_channel();
    if let Some(stderr) = child.stderr.take() {
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            // Read to the end, so the node never blocks on a full pipe.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1)
                    && let Some(Ok(addr)) =
                        rest.split_whitespace().next().map(str::parse::<SocketAddr>)
                {
                    let _ = tx.send(addr);
                }
                if let Ok(mut log) = sink.lock() {
                    if log.len() == LOG_LINES {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            }
        });
    }
    Ok(Starting {
        child: Some(child),
        log,
        listening,
    })
}

impl Starting {
    /// Waits until the node says where it listens; fails with its last log lines if it stops or
    /// takes too long.
    pub(crate) async fn ready(mut self) -> anyhow::Result<Node> {
        let addr = tokio::time::timeout(START_TIMEOUT, self.listening.recv()).await;
        let log = Arc::clone(&self.log);
        let tail = move || {
            log.lock()
                .map(|l| l.iter().cloned().collect::<Vec<_>>().join("\n"))
                .unwrap_or_default()
        };
        match addr {
            Ok(Some(addr)) => match self.child.take() {
                Some(child) => Ok(Node {
                    child,
                    addr,
                    log: Arc::clone(&self.log),
                }),
                None => bail!("the node is gone"),
            },
            Ok(None) => bail!("tessera serve stopped before listening:\n{}", tail()),
            Err(_) => bail!(
                "tessera serve did not listen within {START_TIMEOUT:?}:\n{}",
                tail()
            ),
        }
    }
}

impl Node {
    /// The process id, for its memory figures.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The resident memory of the node (`VmRSS` of `/proc/PID/status`), in bytes; `None` where
    /// there is no such file.
    pub(crate) fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// The last lines the node logged.
    pub(crate) fn log_tail(&self) -> String {
        self.log
            .lock()
            .map(|l| l.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts one node in a fresh temporary directory; the directory goes with the node.
pub(crate) struct SqliteNode {
    pub(crate) node: Node,
    // Dropped after the node (fields drop in order): the node is killed before its files go.
    _dir: tempfile::TempDir,
}

impl SqliteNode {
    pub(crate) async fn start(revocation: Revocation) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tessera-compare-")
            .tempdir()
            .context("creating a temporary directory")?;
        let config = sqlite_config(dir.path(), revocation);
        let node = spawn(dir.path(), &config)?.ready().await?;
        Ok(Self { node, _dir: dir })
    }
}

/// Random hex digits, for names no other run uses.
fn random_hex() -> anyhow::Result<String> {
    let (_, bytes) = tessera_core::token::MasterKey::generate()?;
    Ok(bytes[..8].iter().map(|b| format!("{b:02x}")).collect())
}

/// What three nodes share: a fresh PostgreSQL schema and Redis key prefix of this run, and a
/// master key. [`Backing::cleanup`] drops the schema and deletes the keys.
pub(crate) struct Backing {
    pub(crate) postgres_url: String,
    pub(crate) redis_url: String,
    pub(crate) schema: String,
    pub(crate) prefix: String,
    master_key: String,
    /// The nodes' directory (their configuration files).
    pub(crate) dir: tempfile::TempDir,
}

impl Backing {
    /// Checks that PostgreSQL and Redis answer; `Err` says why not, for the report. `run_id`
    /// names the schema and the prefix (random when `None`).
    pub(crate) async fn probe(
        postgres_url: &str,
        redis_url: &str,
        run_id: Option<&str>,
    ) -> Result<Self, String> {
        use sqlx::Connection;
        if !(postgres_url.starts_with("postgres://") || postgres_url.starts_with("postgresql://")) {
            return Err(format!("{postgres_url:?} is not a postgres:// URL"));
        }
        if !(redis_url.starts_with("redis://") || redis_url.starts_with("rediss://")) {
            return Err(format!("{redis_url:?} is not a redis:// URL"));
        }
        match tokio::time::timeout(
            Duration::from_secs(5),
            sqlx::PgConnection::connect(postgres_url),
        )
        .await
        {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
            Ok(Err(e)) => {
                return Err(format!(
                    "PostgreSQL is not reachable at {} ({e})",
                    redact(postgres_url)
                ));
            }
            Err(_) => {
                return Err(format!(
                    "PostgreSQL at {} did not answer within 5 s",
                    redact(postgres_url)
                ));
            }
        }
        let url = redis_url.to_owned();
        let pong = tokio::task::spawn_blocking(move || -> redis::RedisResult<String> {
            let client = redis::Client::open(url.as_str())?;
            let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
            redis::cmd("PING").query(&mut conn)
        })
        .await;
        match pong {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(format!(
                    "Redis is not reachable at {} ({e})",
                    redact(redis_url)
                ));
            }
            Err(e) => return Err(format!("the Redis check failed: {e}")),
        }
        let make = || -> anyhow::Result<Self> {
            let id = match run_id {
                Some(id) => id.to_owned(),
                None => random_hex()?,
            };
            let (_, key) = tessera_core::token::MasterKey::generate()?;
            Ok(Self {
                postgres_url: postgres_url.to_owned(),
                redis_url: redis_url.to_owned(),
                schema: format!("tessera_compare_{id}"),
                prefix: format!("tessera-compare:{id}:"),
                master_key: base64::engine::general_purpose::STANDARD.encode(key),
                dir: tempfile::Builder::new()
                    .prefix("tessera-compare-")
                    .tempdir()?,
            })
        };
        make().map_err(|e| format!("{e:#}"))
    }

    /// Starts three nodes side by side and waits until each listens.
    pub(crate) async fn start_nodes(&self) -> anyhow::Result<Vec<Node>> {
        let config = cluster_config(self);
        let mut starting = Vec::new();
        for i in 0..3 {
            let dir = self.dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&dir)?;
            starting.push(spawn(&dir, &config)?);
        }
        let mut nodes = Vec::new();
        for s in starting {
            nodes.push(s.ready().await?);
        }
        Ok(nodes)
    }

    /// Drops the schema and deletes the keys under the prefix. Run after the nodes are gone.
    pub(crate) async fn cleanup(&self) -> anyhow::Result<()> {
        use sqlx::{Connection, Executor};
        let mut failures = Vec::new();
        let dropped = async {
            let mut conn = sqlx::PgConnection::connect(&self.postgres_url).await?;
            // The schema name is ours: tessera_compare_ and hex digits.
            let statement = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema);
            conn.execute(sqlx::AssertSqlSafe(statement)).await?;
            conn.close().await
        };
        if let Err(e) = tokio::time::timeout(Duration::from_secs(30), dropped)
            .await
            .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut))
        {
            failures.push(format!("dropping schema {}: {e}", self.schema));
        }
        let url = self.redis_url.clone();
        let pattern = format!("{}*", self.prefix);
        let deleted = tokio::task::spawn_blocking(move || -> redis::RedisResult<()> {
            let client = redis::Client::open(url.as_str())?;
            let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
            let mut cursor = String::from("0");
            loop {
                let (next, keys): (String, Vec<String>) = redis::cmd("SCAN")
                    .arg(&cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(&mut conn)?;
                if !keys.is_empty() {
                    let _: i64 = redis::cmd("DEL").arg(&keys).query(&mut conn)?;
                }
                if next == "0" {
                    return Ok(());
                }
                cursor = next;
            }
        })
        .await;
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("deleting the keys under {}: {e}", self.prefix)),
            Err(e) => failures.push(format!("deleting the keys under {}: {e}", self.prefix)),
        }
        if failures.is_empty() {
            Ok(())
        } else {
            bail!("cleaning up: {}", failures.join("; "))
        }
    }
}

/// A URL without its password, to print.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_string("a\nb"), r#""a\u000Ab""#);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@host/db"),
            "postgres://u:***@host/db"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn the_generated_configurations_are_valid() {
        let dir = std::path::Path::new("/tmp/x");
        for r in Revocation::ALL {
            crate::config::Config::from_toml_str(&sqlite_config(dir, r)).unwrap();
        }
    }
}
