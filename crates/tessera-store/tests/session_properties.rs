//! Properties of server sessions under any interleaving of logins, requests, time passing,
//! logouts and disabling the account, served through the near cache as on a server: an ended,
//! expired or disabled session never authenticates, and a live one always does.

mod support;

use std::time::Duration;

use proptest::prelude::*;
use tessera_core::{
    ClientInfo, Clock, ManualClock, ServicesConfig, SessionConfig, SessionId, Timestamp,
};
use tessera_store::MemoryStore;

#[derive(Clone, Debug)]
enum Op {
    /// A new login.
    Start,
    /// A request with the n-th session (modulo their number).
    Request(usize),
    /// Logout of the n-th session.
    End(usize),
    /// Let this many seconds pass.
    Advance(u64),
    /// Disable (true) or enable (false) the account.
    Disable(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Start),
        6 => any::<usize>().prop_map(Op::Request),
        1 => any::<usize>().prop_map(Op::End),
        3 => (0u64..300).prop_map(Op::Advance),
        1 => any::<bool>().prop_map(Op::Disable),
    ]
}

const IDLE: Duration = Duration::from_secs(600);
const ABSOLUTE: Duration = Duration::from_secs(900);
const TOUCH: Duration = Duration::from_secs(60);

/// What the test knows of a session.
struct Known {
    secret: SessionId,
    created: Timestamp,
    /// The last request it authenticated.
    last_ok: Timestamp,
    ended: bool,
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let memory = MemoryStore::new();
    let clock = ManualClock::starting_at_millis(1_700_000_000_000);
    let config = ServicesConfig {
        sessions: SessionConfig {
            idle_timeout: IDLE,
            absolute_lifetime: ABSOLUTE,
            touch_interval: TOUCH,
            max_data_bytes: 1024,
            ..SessionConfig::default()
        },
        ..ServicesConfig::default()
    };
    let services = support::services(tessera_core::Stores::from_one(memory), &clock, config).await;
    let follower = services.spawn_follower();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let user = support::create_alice(&services.accounts).await;
    let mut sessions: Vec<Known> = Vec::new();
    let mut disabled = false;
    for op in ops {
        let now = clock.now();
        match op {
            Op::Start => {
                if !disabled {
                    let (secret, session) = services
                        .sessions
                        .start(&user, ClientInfo::default())
                        .await
                        .unwrap();
                    sessions.push(Known {
                        secret,
                        created: session.created_at,
                        last_ok: session.created_at,
                        ended: false,
                    });
                }
            }
            Op::Advance(seconds) => clock.advance(Duration::from_secs(seconds)),
            Op::Disable(to) => {
                services
                    .logins
                    .set_disabled(&user.id, to, None)
                    .await
                    .unwrap();
                if to {
                    // Disabling ends every login.
                    for known in &mut sessions {
                        known.ended = true;
                    }
                }
                disabled = to;
            }
            Op::End(n) if !sessions.is_empty() => {
                let i = n % sessions.len();
                if let Some((session, _)) =
                    services.sessions.find(&sessions[i].secret).await.unwrap()
                {
                    services.sessions.end(&session.handle).await.unwrap();
                }
                sessions[i].ended = true;
            }
            Op::End(_) => {}
            Op::Request(n) if !sessions.is_empty() => {
                let i = n % sessions.len();
                let known = &sessions[i];
                let authenticated = services
                    .sessions
                    .authenticate(&known.secret)
                    .await
                    .unwrap()
                    .is_some();
                let past_absolute = now >= known.created.saturating_add(ABSOLUTE);
                let past_idle = now >= known.last_ok.saturating_add(IDLE);
                if known.ended || disabled || past_absolute || past_idle {
                    prop_assert!(
                        !authenticated,
                        "a session that is ended ({}), disabled ({disabled}), past its lifetime \
                         ({past_absolute}) or idle ({past_idle}) authenticated",
                        known.ended
                    );
                }
                let surely_live = !known.ended
                    && !disabled
                    && now < known.created.saturating_add(ABSOLUTE)
                    && now < known.last_ok.saturating_add(IDLE - TOUCH);
                if surely_live {
                    prop_assert!(authenticated, "a live session was refused");
                }
                if authenticated {
                    sessions[i].last_ok = now;
                } else {
                    // A session refused once never comes back.
                    sessions[i].ended = true;
                }
            }
            Op::Request(_) => {}
        }
    }
    follower.abort();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn sessions_end_when_they_should_and_only_then(ops in proptest::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(run(ops))?;
    }
}
