//! Throwaway backing services and `tessera serve` nodes for the fault tests: a Redis and a
//! PostgreSQL cluster of their own, on spare ports, that a test may stop and start again without
//! disturbing the shared services other tests use. Everything is stopped and removed when its
//! guard is dropped, on panic too.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
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
    pub port: u16,
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
    pub port: u16,
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
// Tessera

/// The master key every node of a test shares (base64 of 32 bytes).
pub(crate) const MASTER_KEY: &str = "dGVzc2VyYS1mYXVsdHMtbWFzdGVyLWtleS0zMi1ieXQ=";

/// `tessera serve` as a child process.
pub(crate) struct Node {
    child: Child,
    pub base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// Starts `tessera serve --listen 127.0.0.1:0` in `dir` with `args` and exactly `env`, and
    /// waits until it listens.
    pub(crate) fn start(dir: &Path, args: &[&str], env: &[(String, String)]) -> Node {
        let mut cmd = tessera(dir, env);
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start tessera");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(addr.split_whitespace().next().unwrap_or("").to_owned());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                let _ = child.wait();
                panic!("tessera did not start:\n{}", log.lock().unwrap().join("\n"))
            });
        Node {
            child,
            base: format!("http://{addr}"),
            log,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Whether the process is still running.
    pub(crate) fn alive(&mut self) -> bool {
        self.child.try_wait().expect("poll tessera").is_none()
    }

    /// SIGKILL: no shutdown, no flush, no checkpoint.
    pub(crate) fn kill9(mut self) {
        self.child.kill().expect("SIGKILL tessera");
        let status = self.child.wait().expect("reap tessera");
        assert!(!status.success(), "tessera was not killed: {status}");
    }

    pub(crate) fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tessera(dir: &Path, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// `tessera user add NAME [--admin]` with `password` on standard input.
pub(crate) fn add_user(
    dir: &Path,
    env: &[(String, String)],
    name: &str,
    admin: bool,
    password: &str,
) {
    let mut cmd = tessera(dir, env);
    cmd.args(["user", "add", name]);
    if admin {
        cmd.arg("--admin");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tessera user add");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out: Output = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "tessera user add {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
