//! Properties of a refresh family under any interleaving of refreshes (of any token it ever
//! handed out, replays included), time passing (inside and past the reuse grace) and revocation:
//! the family goes on along one branch, a revoked family never refreshes, and reuse past the grace
//! ends the login.

mod support;

use std::time::Duration;

use proptest::prelude::*;
use tessera_core::token::TokenConfig;
use tessera_core::{
    ClientInfo, Clock, LoginModel, ManualClock, RefreshStore, RefreshToken, ServicesConfig,
    SigningAlgorithm, Stores,
};
use tessera_store::MemoryStore;

#[derive(Clone, Debug)]
enum Op {
    /// Refresh with the n-th token handed out so far (modulo their number).
    Refresh(usize),
    /// Let this many milliseconds pass.
    Advance(u64),
    /// Revoke the family (a logout).
    Revoke,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<usize>().prop_map(Op::Refresh),
        3 => (0u64..8_000).prop_map(Op::Advance),
        1 => Just(Op::Revoke),
    ]
}

const GRACE: Duration = Duration::from_secs(5);

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let memory = MemoryStore::new();
    let clock = ManualClock::starting_at_millis(1_700_000_000_000);
    let config = ServicesConfig {
        tokens: TokenConfig {
            reuse_grace: GRACE,
            ..TokenConfig::default()
        },
        signing_algorithm: SigningAlgorithm::HS256,
        ..ServicesConfig::default()
    };
    let services = support::services(Stores::from_one(memory.clone()), &clock, config).await;
    let user = support::create_alice(&services.accounts).await;
    let first = services
        .tokens
        .issue(&user, LoginModel::Token, ClientInfo::default())
        .await
        .unwrap();
    let family = first.family_id.clone();
    let mut handed_out: Vec<RefreshToken> = vec![first.refresh_token];
    for op in ops {
        match op {
            Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
            Op::Revoke => {
                services
                    .tokens
                    .revoke_family(&family, "logout")
                    .await
                    .unwrap();
            }
            Op::Refresh(n) => {
                let token = handed_out[n % handed_out.len()].clone();
                let (record, before) = memory
                    .refresh_token(&token.hash())
                    .await
                    .unwrap()
                    .expect("every handed-out token is stored");
                let now = clock.now();
                let outcome = services.tokens.refresh(&token).await;
                let after = memory.family(&family).await.unwrap().unwrap();
                match outcome {
                    Ok(pair) => {
                        prop_assert!(before.revoked_at.is_none(), "a revoked family refreshed");
                        let inside_grace =
                            record.rotated_at.is_some_and(|at| now.since(at) <= GRACE);
                        prop_assert!(
                            record.is_current(&before) || inside_grace,
                            "refreshed with a token that was neither current nor inside the grace: {record:?} in {before:?}"
                        );
                        handed_out.push(pair.refresh_token);
                    }
                    Err(_) => {
                        // Presenting a token whose branch ended, past the grace, ends the login.
                        let ended_branch =
                            record.rotated_at.is_some_and(|at| now.since(at) > GRACE)
                                || (record.rotated_at.is_none() && !record.is_current(&before));
                        if before.is_live(now) && ended_branch {
                            prop_assert!(
                                after.revoked_at.is_some(),
                                "reuse of {record:?} did not end the login"
                            );
                        }
                    }
                }
            }
        }
        // One branch: of each generation, at most one token was ever rotated, and the family is
        // at the newest generation handed out.
        let mut rotated_per_generation = std::collections::HashMap::<u32, usize>::new();
        let mut newest = 0;
        for token in &handed_out {
            let (record, _) = memory.refresh_token(&token.hash()).await.unwrap().unwrap();
            newest = newest.max(record.generation);
            if record.rotated_at.is_some() {
                *rotated_per_generation.entry(record.generation).or_default() += 1;
            }
        }
        prop_assert!(
            rotated_per_generation.values().all(|n| *n <= 1),
            "two tokens of one generation were rotated: two branches went on ({rotated_per_generation:?})"
        );
        let family_now = memory.family(&family).await.unwrap().unwrap();
        prop_assert_eq!(family_now.generation, newest);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn a_family_goes_on_along_one_branch(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(run(ops))?;
    }
}
