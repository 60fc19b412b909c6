//! Resident memory per idle session, in the memory store and in the session near cache.
//!
//! Sessions are started through `Sessions::start` (as a login does) over a `MemoryStore`, each
//! with a freshly allocated `ClientInfo` as the HTTP layer builds one: a typical browser
//! User-Agent of 111 characters for nine logins in ten and one of a few others for the rest, an
//! IPv4 address, empty data. Then every session is checked once with `Sessions::find`, which
//! fills the near cache (its capacity raised so that it holds them all); a second pass checks
//! that every check is a cache hit, so the figure is of a cache that holds every session.
//!
//! What is reported is the growth of the process's resident set (`VmRSS`), divided by the number
//! of sessions: what the allocator really holds, slack and fragmentation included, not a sum of
//! `size_of`, with the allocator the server runs with (mimalloc). The cookie secrets the second phase needs are kept in a vector filled (and so made
//! resident) before the first reading, so they count in neither figure.
//!
//! ```sh
//! cargo bench -p tessera-store --bench session_memory                      # 1,000,000 sessions, 1,000 users
//! cargo bench -p tessera-store --bench session_memory -- --sessions 100000 --users 1
//! ```

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use tessera_core::store::UserStore;
use tessera_core::{
    ClientInfo, ManualClock, SessionConfig, SessionId, Sessions, Timestamp, User, UserAgent,
    UserId, Username,
};
use tessera_store::MemoryStore;

/// The allocator the server runs with: its size classes decide what a session really costs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What most logins send: a current desktop Chrome.
const COMMON_USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                                 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// The rest of the logins, in turn.
const OTHER_USER_AGENTS: [&str; 4] = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) \
     Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like \
     Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) \
     Chrome/131.0.0.0 Mobile Safari/537.36",
];

struct Args {
    sessions: usize,
    users: usize,
}

fn args() -> Args {
    let mut parsed = Args {
        sessions: 1_000_000,
        users: 1_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> usize {
            args.next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--sessions" => parsed.sessions = number("--sessions"),
            "--users" => parsed.users = number("--users").max(1),
            // `cargo bench` passes `--bench`; anything else is a mistake worth stopping on.
            "--bench" => {}
            other => panic!("unknown argument {other:?} (--sessions N, --users N)"),
        }
    }
    parsed
}

/// The process's resident set, in bytes.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

fn client(i: usize) -> ClientInfo {
    let user_agent = if i % 10 == 9 {
        OTHER_USER_AGENTS[(i / 10) % OTHER_USER_AGENTS.len()]
    } else {
        COMMON_USER_AGENT
    };
    // A fresh copy each time, as a request's header is.
    let header = user_agent.to_owned();
    let ip = Ipv4Addr::from(0xC633_6400_u32.wrapping_add(i as u32));
    ClientInfo {
        user_agent: Some(UserAgent::new(&header)),
        ip: Some(IpAddr::V4(ip)),
    }
}

struct Row {
    what: &'static str,
    before: u64,
    after: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Args { sessions: n, users } = args();
    let store = MemoryStore::new();
    let clock = ManualClock::starting_at_millis(1_700_000_000_000);
    let config = SessionConfig {
        // Room for every session with some to spare (the second pass below checks it holds them
        // all), as an operator would size it: the cache sizes its tables for about
        // `near_cache_bytes / 640` sessions up front, so a much larger figure would have it
        // reserve (and count here) tables for sessions that never come.
        near_cache_bytes: 1024 * n as u64,
        ..SessionConfig::default()
    };
    let sessions = Sessions::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        Arc::new(clock.clone()),
        config,
    );
    let now = Timestamp::from_unix_millis(1_700_000_000_000);
    let mut accounts = Vec::with_capacity(users);
    for u in 0..users {
        let user = User {
            id: UserId::generate().expect("OS randomness"),
            username: Username::parse(&format!("user{u}")).expect("a valid username"),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
                .into(),
            roles: Vec::new(),
            disabled: false,
            created_at: now,
            updated_at: now,
            not_before: now,
            email: None,
        };
        store.create_user(&user).await.expect("create_user");
        accounts.push(user);
    }
    let mut secrets = vec![SessionId::from_bytes([0; 32]); n];

    let before = resident_bytes();
    let started = Instant::now();
    for (i, secret) in secrets.iter_mut().enumerate() {
        let (id, _session) = sessions
            .start(&accounts[i % users], client(i))
            .await
            .expect("start");
        *secret = id;
    }
    let store_row = Row {
        what: "memory store",
        before,
        after: resident_bytes(),
    };
    eprintln!("started {n} sessions in {:.1?}", started.elapsed());

    let started = Instant::now();
    for secret in &secrets {
        let found = sessions.find(secret).await.expect("find");
        assert!(found.is_some(), "every session is live");
    }
    let cache_row = Row {
        what: "near cache",
        before: store_row.after,
        after: resident_bytes(),
    };
    eprintln!("checked {n} sessions in {:.1?}", started.elapsed());

    let calls = store.calls();
    for secret in &secrets {
        sessions.find(secret).await.expect("find");
    }
    assert_eq!(
        store.calls(),
        calls,
        "the near cache holds every session (a second check reads no store)"
    );

    println!("sessions: {n}, users: {users}");
    println!(
        "{:<14} {:>10} {:>14} {:>14} {:>12}",
        "where", "sessions", "RSS before", "RSS after", "B/session"
    );
    for row in [store_row, cache_row] {
        println!(
            "{:<14} {:>10} {:>14} {:>14} {:>12.0}",
            row.what,
            n,
            row.before,
            row.after,
            row.after.saturating_sub(row.before) as f64 / n as f64
        );
    }
}
