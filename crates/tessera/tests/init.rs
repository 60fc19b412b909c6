//! `tessera init` as people use it: on a terminal (a real pseudo-terminal, so the command sees a
//! TTY and asks), and from a script with flags. Every file it writes starts a server: one server
//! on the embedded store as written; several servers once the placeholders name this machine's
//! PostgreSQL and Redis (the test's own schema and key prefix).
//!
//! Needs PostgreSQL (`TESSERA_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`)
//! and Redis (`TESSERA_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`).

mod harness;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{NO_ENV, Node, every_init_answer, run, tessera};

fn postgres_url() -> String {
    std::env::var("TESSERA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn redis_url() -> String {
    std::env::var("TESSERA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A name no other run uses.
fn unique(tag: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!(
        "tessera_init_{tag}_{:012x}",
        hasher.finish() & 0xffff_ffff_ffff
    )
}

/// `tessera init ARGS` on a pseudo-terminal: standard input, output and error are the terminal,
/// as when a person runs it. [`Terminal::expect`] waits for text on the screen, [`Terminal::type_line`]
/// types an answer.
struct Terminal {
    master: std::fs::File,
    screen: Arc<Mutex<String>>,
    child: std::process::Child,
}

impl Terminal {
    fn run(dir: &Path, args: &[&str]) -> Self {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("open a pseudo-terminal");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname(&master, Vec::new()).expect("ptsname");
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().expect("a pts path is text"))
            .expect("open the terminal's other end");
        let child = tessera(dir, NO_ENV)
            .args(["init"])
            .args(args)
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .spawn()
            .expect("run tessera init");
        let master = std::fs::File::from(master);
        let screen = Arc::new(Mutex::new(String::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            // Reading fails (EIO) once the child has exited and the terminal has no other end.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            master,
            screen,
            child,
        }
    }

    /// Waits until `text` is on the screen after what earlier calls saw; fails after 20 s.
    fn expect(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            {
                let mut screen = self.screen.lock().unwrap();
                if let Some(at) = screen.find(text) {
                    screen.drain(..at + text.len());
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} never appeared; the screen shows:\n{}",
                self.screen.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn type_line(&mut self, line: &str) {
        self.master
            .write_all(format!("{line}\r").as_bytes())
            .expect("type on the terminal");
    }

    fn finish(mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(Instant::now() < deadline, "tessera init did not finish");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn init_asks_on_a_terminal_and_takes_the_defaults_for_empty_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut terminal = Terminal::run(dir.path(), &[]);
    terminal.expect("1. Must the login be shared across domains");
    terminal.type_line("perhaps");
    terminal.expect("please answer y or n");
    terminal.expect("1. Must the login");
    terminal.type_line("y");
    terminal.expect("2. How many servers will share it?");
    terminal.type_line("0");
    terminal.expect("please answer a number of servers");
    terminal.type_line("3");
    terminal.expect("3. Are the security needs high");
    terminal.type_line("");
    terminal.expect("recommended model: token");
    assert!(terminal.finish(), "init failed on a terminal");
    let written = std::fs::read_to_string(dir.path().join("tessera.toml")).unwrap();
    for expected in [
        "cross-domain or many clients: yes",
        "servers sharing it:           3",
        "high security needs:          no",
        "store = \"redis\"",
        "revocation = \"denylist\"",
        "docs/choosing.md",
    ] {
        assert!(
            written.contains(expected),
            "{expected:?} not in:\n{written}"
        );
    }
}

#[test]
fn init_flags_answer_for_scripts() {
    let dir = tempfile::tempdir().unwrap();
    // --yes: nothing is read, the defaults are one server and the session model.
    let out = run(dir.path(), &["init", "--yes"], NO_ENV);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("recommended model: session"));
    let written = std::fs::read_to_string(dir.path().join("tessera.toml")).unwrap();
    assert!(
        written.contains("database = \"sqlite://tessera.db\""),
        "{written}"
    );
    // Flags with open questions and nothing on standard input: refused, naming the flag.
    let out = run(
        dir.path(),
        &["init", "--force", "--cross-domain", "no"],
        NO_ENV,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--nodes N"), "{stderr}");
    // Bad values are refused by name and write nothing.
    for bad in [
        &["--nodes", "0"][..],
        &["--nodes", "many"],
        &["--cross-domain", "maybe"],
        &["--high-security", ""],
    ] {
        let out = run(
            dir.path(),
            &[&["init", "--force", "--yes"][..], bad].concat(),
            NO_ENV,
        );
        assert!(!out.status.success(), "{bad:?} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(bad[0]), "{bad:?}: {stderr}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("tessera.toml")).unwrap(),
        written
    );
}

/// The schema and key prefix a several-servers file is pointed at, removed afterwards.
struct Services {
    schema: String,
    prefix: String,
}

impl Drop for Services {
    fn drop(&mut self) {
        let (schema, prefix) = (self.schema.clone(), format!("{}*", self.prefix));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            use sqlx::{Connection, Executor};
            if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_url()).await {
                // The name is the test's own: letters, digits and underscores.
                let statement = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                let _ = conn.execute(sqlx::AssertSqlSafe(statement)).await;
            }
        });
        if let Ok(mut conn) = redis::Client::open(redis_url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&prefix)
                .query(&mut conn)
                .unwrap_or_default();
            for key in keys {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(key).query(&mut conn);
            }
        }
    }
}

#[test]
fn every_combination_of_answers_starts_a_server() {
    for answers in every_init_answer() {
        let dir = tempfile::tempdir().unwrap();
        let out = run(dir.path(), &answers, NO_ENV);
        assert!(
            out.status.success(),
            "{answers:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let written = std::fs::read_to_string(dir.path().join("tessera.toml")).unwrap();
        let config = ["--config", "tessera.toml"];
        if answers[4] == "1" {
            // As written: the embedded store, in the directory.
            let server = Node::start(dir.path(), &config, NO_ENV);
            assert!(dir.path().join("tessera.db").exists(), "{answers:?}");
            assert!(server.stop().success(), "{answers:?}");
            continue;
        }
        assert!(written.contains("PLACEHOLDER"), "{written}");
        assert!(written.contains("TESSERA_TOKENS__MASTER_KEY"), "{written}");
        // What an operator fills in: this machine's PostgreSQL and Redis, and a master key.
        let services = Services {
            schema: unique("s"),
            prefix: format!("{}:", unique("p")),
        };
        let env = [
            ("TESSERA_DATABASE", postgres_url()),
            ("TESSERA_POSTGRES__SCHEMA", services.schema.clone()),
            ("TESSERA_REDIS__URL", redis_url()),
            ("TESSERA_REDIS__PREFIX", services.prefix.clone()),
            (
                "TESSERA_TOKENS__MASTER_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into(),
            ),
        ];
        let first = Node::start(dir.path(), &config, &env);
        let second = Node::start(dir.path(), &config, &env);
        assert!(first.stop().success(), "{answers:?}");
        assert!(second.stop().success(), "{answers:?}");
        drop(services);
    }
}
