//! The harness the integration tests of the `tessera` binary share (`mod harness;`):
//!
//! - [`tessera`], [`run`], [`run_with_input`] and [`add_user`]: the binary as a command, in a
//!   directory of the test's, with exactly the environment the test gives it (and `PATH`);
//! - [`Node`]: `tessera serve` as a child process, on a spare port or a fixed one, with its log
//!   kept, stopped gracefully (SIGTERM) or killed (SIGKILL), and killed when dropped;
//! - [`Redis`] and [`Postgres`]: throwaway backing services of a test's own, on spare ports, that
//!   it may stop and start again without disturbing the shared services other tests use;
//! - [`Passkey`]: a user's passkey (a software authenticator), answering passkey options as a
//!   browser on a given origin does.
//!
//! Everything is stopped and removed when its guard is dropped, on panic too. What a test sets
//! up (its configuration, its cluster, its gateway) stays in the test's own file. Each test
//! binary uses a part of this module only.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A TCP port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port()
}

/// The path of `program`, or a failure that says what to install.
fn require(program: &str, hint: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| panic!("the fault tests need `{program}` on PATH: {hint}"))
}

// ---------------------------------------------------------------------------------------------
// Redis

/// A `redis-server` child process that keeps nothing on disk: after a restart it is empty.
pub(crate) struct Redis {
    pub(crate) port: u16,
    binary: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    pub(crate) fn start() -> Self {
        let binary = require("redis-server", "install the redis-server package");
        let mut redis = Self {
            port: free_port(),
            binary,
            dir: tempfile::tempdir().expect("a directory for Redis"),
            child: None,
        };
        redis.resume();
        redis
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL): every connection to it drops at once.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty; returns once it answers PING.
    pub(crate) fn resume(&mut self) {
        assert!(self.child.is_none(), "Redis is running already");
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers_ping() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("redis-server on port {} exited: {status}", self.port);
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} does not answer",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers_ping(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut answer = [0u8; 7];
        stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// A PostgreSQL cluster of its own in a temporary directory, run as the `postgres` OS user
/// (PostgreSQL refuses to run as root), listening on 127.0.0.1 on a spare port.
pub(crate) struct Postgres {
    pub(crate) port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    running: bool,
}

impl Postgres {
    /// `initdb`, then start.
    pub(crate) fn start() -> Self {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().expect("a directory for PostgreSQL");
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .expect("run chown");
        assert!(
            status.success(),
            "chown to the postgres user failed (is there a `postgres` OS user?)"
        );
        let mut pg = Self {
            port: free_port(),
            bin,
            dir,
            running: false,
        };
        let data = pg.data_dir();
        pg.as_postgres(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            ],
        );
        pg.resume();
        pg
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the cluster again (after [`Postgres::stop`]); returns once it accepts connections.
    pub(crate) fn resume(&mut self) {
        assert!(!self.running, "PostgreSQL is running already");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off \
             -c max_connections=100 -c shared_buffers=16MB",
            self.port,
            self.dir.path().display()
        );
        let data = self.data_dir();
        let log = self.dir.path().join("postgres.log");
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        self.running = true;
    }

    /// Stops the cluster at once (`-m immediate`: no clean shutdown, like a crash): every
    /// connection drops.
    pub(crate) fn stop(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        let data = self.data_dir();
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    /// Runs one of PostgreSQL's programs as the `postgres` user; panics with its output if it fails.
    fn as_postgres(&self, program: &str, args: &[&str]) {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run runuser");
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            self.running = false;
            let data = self.data_dir();
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .args([
                    "-D",
                    data.to_str().unwrap(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The newest `/usr/lib/postgresql/*/bin` holding `initdb` and `pg_ctl`.
fn postgres_bin() -> PathBuf {
    require("runuser", "it comes with util-linux");
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "the fault tests need PostgreSQL's server programs (initdb, pg_ctl) under \
             /usr/lib/postgresql/<version>/bin: install the postgresql package"
        )
    })
}

// ---------------------------------------------------------------------------------------------
// The tessera binary

/// No environment variables besides `PATH`: `&[]` for [`tessera`] and the functions built on it,
/// with a type.
pub(crate) const NO_ENV: &[(&str, &str)] = &[];

/// `tessera init` with every combination of answers given as flags: cross-domain yes or no,
/// one server or three, high security yes or no.
pub(crate) fn every_init_answer() -> Vec<[&'static str; 7]> {
    let mut all = Vec::new();
    for cross_domain in ["yes", "no"] {
        for nodes in ["1", "3"] {
            for high_security in ["yes", "no"] {
                all.push([
                    "init",
                    "--cross-domain",
                    cross_domain,
                    "--nodes",
                    nodes,
                    "--high-security",
                    high_security,
                ]);
            }
        }
    }
    all
}

/// `tessera` run in `dir` with a clean environment: `PATH` and exactly `env`.
pub(crate) fn tessera<K, V>(dir: &Path, env: &[(K, V)]) -> Command
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `tessera ARGS` to its end with nothing on standard input.
pub(crate) fn run<K, V>(dir: &Path, args: &[&str], env: &[(K, V)]) -> Output
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    tessera(dir, env)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tessera")
}

/// Runs `tessera ARGS` to its end with `input` on standard input. The command may exit before it
/// reads all of it (a refusal): a broken pipe is not an error.
pub(crate) fn run_with_input<K, V>(dir: &Path, args: &[&str], env: &[(K, V)], input: &str) -> Output
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut child = tessera(dir, env)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tessera");
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child.wait_with_output().expect("wait for tessera")
}

/// `tessera user add NAME [--admin]` with `password` on standard input; returns the new user's
/// id (what the command prints).
pub(crate) fn add_user<K, V>(
    dir: &Path,
    env: &[(K, V)],
    name: &str,
    admin: bool,
    password: &str,
) -> String
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut args = vec!["user", "add", name];
    if admin {
        args.push("--admin");
    }
    let out = run_with_input(dir, &args, env, &format!("{password}\n"));
    assert!(
        out.status.success(),
        "tessera user add {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

// ---------------------------------------------------------------------------------------------
// tessera serve

/// How long `tessera serve` may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `tessera serve` as a child process, listening; killed (SIGKILL) when dropped.
pub(crate) struct Node {
    child: Child,
    /// The address it listens on.
    pub(crate) addr: SocketAddr,
    /// `http://` (`https://` with TLS) and the address.
    pub(crate) base: String,
    log: Arc<Mutex<Vec<String>>>,
}

/// `tessera serve` started but not yet known to listen: start several, then wait for each with
/// [`Starting::ready`], and they start side by side.
pub(crate) struct Starting {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// The scheme (`http` or `https`) and the address it logged it listens on.
    listening: Receiver<(&'static str, SocketAddr)>,
}

impl Starting {
    /// Waits until the process logs that it listens; fails with its log if it does not.
    pub(crate) fn ready(mut self) -> Node {
        let Ok((scheme, addr)) = self.listening.recv_timeout(START_TIMEOUT) else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "tessera did not start:\n{}",
                self.log.lock().unwrap().join("\n")
            )
        };
        Node {
            child: self.child,
            addr,
            base: format!("{scheme}://{addr}"),
            log: self.log,
        }
    }
}

impl Node {
    /// Starts `tessera serve --listen 127.0.0.1:0 ARGS` in `dir` with exactly `env` (and
    /// `PATH`), and waits until it listens.
    pub(crate) fn start<K, V>(dir: &Path, args: &[&str], env: &[(K, V)]) -> Node
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        Self::spawn(dir, "127.0.0.1:0", args, env).ready()
    }

    /// [`Node::start`] on 127.0.0.1:`port`: a restart on the same port comes back at the same
    /// address.
    pub(crate) fn start_on<K, V>(dir: &Path, port: u16, args: &[&str], env: &[(K, V)]) -> Node
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        Self::spawn(dir, &format!("127.0.0.1:{port}"), args, env).ready()
    }

    /// Starts `tessera serve --listen LISTEN ARGS` without waiting for it to listen.
    pub(crate) fn spawn<K, V>(dir: &Path, listen: &str, args: &[&str], env: &[(K, V)]) -> Starting
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut child = tessera(dir, env)
            .args(["serve", "--listen", listen])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tessera serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, listening) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                for scheme in ["http", "https"] {
                    if let Some(addr) = line.split(&format!("listening on {scheme}://")).nth(1) {
                        // The address ends at a space, or at the quote closing a JSON log
                        // line's message.
                        let addr = addr
                            .split(|c: char| c.is_whitespace() || c == '"')
                            .next()
                            .unwrap_or("");
                        if let Ok(addr) = addr.parse::<SocketAddr>() {
                            let _ = tx.send((scheme, addr));
                        }
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        Starting {
            child,
            log,
            listening,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Whether the process is still running.
    pub(crate) fn alive(&mut self) -> bool {
        self.child.try_wait().expect("poll tessera").is_none()
    }

    /// Sends `signal` (`-TERM`, `-INT`, … as `kill` takes it) to the process.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} tessera failed: {status}");
    }

    /// Waits up to `limit` for the process to exit by itself; fails if it does not.
    pub(crate) fn wait(mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll tessera") {
                return status;
            }
            assert!(Instant::now() < deadline, "tessera did not stop in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The graceful stop: SIGTERM, then waits up to 15 s for the process to exit.
    pub(crate) fn stop(self) -> ExitStatus {
        self.signal("-TERM");
        self.wait(Duration::from_secs(15))
    }

    /// SIGKILL, and reaps the process: every connection drops at once. Does nothing if it has
    /// exited already.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILL, and fails unless the process was still running: no shutdown, no flush, no
    /// checkpoint.
    pub(crate) fn kill9(mut self) {
        self.child.kill().expect("SIGKILL tessera");
        let status = self.child.wait().expect("reap tessera");
        assert!(!status.success(), "tessera was not killed: {status}");
    }

    /// Everything the process wrote to standard error so far.
    pub(crate) fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The last `lines` lines of [`Node::log_text`].
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let log = self.log.lock().unwrap();
        log[log.len().saturating_sub(lines)..].join("\n")
    }

    /// Fails if the node panicked at some point (a panic in a background task does not end the
    /// process, but it is a crash all the same).
    pub(crate) fn assert_no_panic(&self) {
        let log = self.log_text();
        assert!(!log.contains("panicked"), "tessera panicked:\n{log}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Passkeys

/// A user's passkey: webauthn-authenticator-rs's software authenticator (a P-256 key made and
/// used in process, which reports the user verified, as a PIN or a fingerprint would), answering
/// as a browser on `origin` does.
pub(crate) struct Passkey {
    key: webauthn_authenticator_rs::softpasskey::SoftPasskey,
    origin: webauthn_rs::prelude::Url,
}

impl Passkey {
    /// A new authenticator, holding no credential yet, for pages on `origin`.
    pub(crate) fn new(origin: &str) -> Self {
        Self {
            key: webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true),
            origin: webauthn_rs::prelude::Url::parse(origin).expect("an origin"),
        }
    }

    /// What `navigator.credentials.create` answers to `options` (`{"publicKey": …}`), as JSON.
    pub(crate) fn create(&mut self, options: &serde_json::Value) -> serde_json::Value {
        use webauthn_authenticator_rs::WebauthnAuthenticator;
        let options = serde_json::from_value(options.clone()).expect("creation options");
        let credential = self
            .key
            .do_registration(self.origin.clone(), options)
            .expect("the authenticator registers");
        serde_json::to_value(credential).unwrap()
    }

    /// What `navigator.credentials.get` answers to `options` (`{"publicKey": …}`), as JSON.
    pub(crate) fn get(&mut self, options: &serde_json::Value) -> serde_json::Value {
        let origin = self.origin.clone();
        self.get_on(&origin, options)
    }

    /// What `navigator.credentials.get` answers to `options` on a page of another origin (a
    /// phishing page on the same host, say): an answer the server must refuse.
    pub(crate) fn get_on(
        &mut self,
        origin: &webauthn_rs::prelude::Url,
        options: &serde_json::Value,
    ) -> serde_json::Value {
        use webauthn_authenticator_rs::WebauthnAuthenticator;
        let options = serde_json::from_value(options.clone()).expect("request options");
        let credential = self
            .key
            .do_authentication(origin.clone(), options)
            .expect("the authenticator asserts");
        serde_json::to_value(credential).unwrap()
    }

    /// What a discoverable passkey answers to passwordless options, which name no credential.
    /// The software authenticator keeps no list of its credentials, so the caller names the
    /// one it registered (`credential_id`, the registration answer's `id`), and the answer
    /// carries the account's user handle (`user_handle`, the registration options'
    /// `publicKey.user.id`), as a discoverable passkey's does. The handle is not signed by
    /// the authenticator: the server checks it against the credential's account.
    pub(crate) fn get_discoverable(
        &mut self,
        options: &serde_json::Value,
        credential_id: &serde_json::Value,
        user_handle: &serde_json::Value,
    ) -> serde_json::Value {
        let origin = self.origin.clone();
        self.get_discoverable_on(&origin, options, credential_id, user_handle)
    }

    /// [`Passkey::get_discoverable`] on a page of another origin.
    pub(crate) fn get_discoverable_on(
        &mut self,
        origin: &webauthn_rs::prelude::Url,
        options: &serde_json::Value,
        credential_id: &serde_json::Value,
        user_handle: &serde_json::Value,
    ) -> serde_json::Value {
        let mut options = options.clone();
        options["publicKey"]["allowCredentials"] =
            serde_json::json!([{"type": "public-key", "id": credential_id}]);
        let mut answer = self.get_on(origin, &options);
        answer["response"]["userHandle"] = user_handle.clone();
        answer
    }
}

// ---------------------------------------------------------------------------------------------
// The shared PostgreSQL and Redis (`TESSERA_TEST_POSTGRES_URL`, default
// `postgres://postgres@127.0.0.1:5432/test`; `TESSERA_TEST_REDIS_URL`, default
// `redis://127.0.0.1:6379`)

pub(crate) fn postgres_url() -> String {
    std::env::var("TESSERA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub(crate) fn redis_url() -> String {
    std::env::var("TESSERA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A PostgreSQL schema and Redis prefix of a test's own on the shared services (named after
/// `tag`, the process and the time), and a master key for its nodes; the schema is dropped and
/// the keys deleted when it is dropped.
pub(crate) struct Shared {
    pub(crate) schema: String,
    pub(crate) prefix: String,
    pub(crate) master_key: String,
}

impl Shared {
    pub(crate) fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let id = format!("{}_{nanos}", std::process::id());
        let key: Vec<u8> = nanos
            .to_le_bytes()
            .iter()
            .chain(&(u128::from(std::process::id()) << 64 | 0x5eed).to_le_bytes())
            .copied()
            .collect();
        Self {
            schema: format!("tessera_{tag}_{id}"),
            prefix: format!("tessera-{tag}:{id}:"),
            master_key: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key),
        }
    }

    /// The environment of a node on these services (PostgreSQL, sessions in Redis).
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TESSERA_DATABASE", postgres_url()),
            ("TESSERA_POSTGRES__SCHEMA", self.schema.clone()),
            ("TESSERA_SESSIONS__STORE", "redis".into()),
            ("TESSERA_REDIS__URL", redis_url()),
            ("TESSERA_REDIS__PREFIX", self.prefix.clone()),
            ("TESSERA_TOKENS__MASTER_KEY", self.master_key.clone()),
        ]
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let schema = self.schema.clone();
        let prefix = self.prefix.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(client) = redis::Client::open(redis_url())
                && let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2))
            {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{prefix}*"))
                    .query(&mut conn)
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&keys).query(&mut conn);
                }
            }
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(async {
                    let mut conn =
                        <sqlx::PgConnection as sqlx::Connection>::connect(&postgres_url()).await?;
                    sqlx::Executor::execute(
                        &mut conn,
                        sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")),
                    )
                    .await?;
                    sqlx::Connection::close(conn).await
                })
        })
        .join();
    }
}
