//! The access-token verify path, per signing algorithm, on services built as the server builds
//! them (`Services::build`, a token from `Tokens::issue`):
//!
//! - `cold`: a token whose signature is checked every time: the same services built a second time
//!   over the same store with the verified-token cache off (`verify_cache_bytes = 0`). Pre-signing
//!   a pool and cycling through it would not work: the cache holds 100 000 entries, so after one
//!   pass every token would be a cache hit.
//! - `cached`: the same token again on one `Tokens`: SHA-256 of the token, a cache lookup, the
//!   key's window, `exp`/`nbf`, and the denylist lookups.
//! - `cache_key_sha256`: one part of `cached` alone, the SHA-256 of the token that keys the cache.
//! - `baseline/hashmap_lookup_32B`: a std `HashMap` lookup of a 32-byte key, measured in the same
//!   run, so the other rows can be read as ratios on a noisy shared machine.
//! - `dpop/…`: a request with a DPoP-bound EdDSA token (RFC 9449), as the server checks it: the
//!   cached token check, then the proof (`ES256` or `EdDSA` client key: its signature, claims and
//!   the token hash) and its record in the replay store (the memory store's, as with SQLite),
//!   beside `dpop/bearer_same_path`, the bearer check of the same token through the same async
//!   call. A fresh proof per iteration is made outside the timed part.
//!
//! Run with `cargo bench -p tessera-store --bench verify`. It lives in `tessera-store` so that it
//! sets up with the real `MemoryStore` (verification itself reads no store: the key ring and the
//! revocation list are in memory).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tessera_core::store::UserStore;
use tessera_core::token::{MasterKey, RevocationMode, TokenConfig};
use tessera_core::{
    ClientInfo, FamilyId, LoginModel, RevocationEntry, Revoked, Services, ServicesConfig,
    SigningAlgorithm, Stores, SystemClock, TokenHash, User, UserId, Username,
};
use tessera_store::MemoryStore;

/// Unrelated denylist entries of each kind, so the per-request revocation lookups search
/// non-empty maps (an empty `HashMap` answers without hashing).
const DENYLIST_ENTRIES: usize = 1_000;

/// Entries in the baseline map, and how many of them the lookups cycle through.
const BASELINE_ENTRIES: usize = 10_000;
const BASELINE_PROBES: usize = 1_024;

/// What a server holds for one signing algorithm, twice (with and without the verified-token
/// cache), and an access token it issued.
struct Setup {
    cached: Services,
    uncached: Services,
    token: String,
}

/// Services over `store`, as the server builds them.
async fn services(
    store: &MemoryStore,
    master_key: &[u8; 32],
    algorithm: SigningAlgorithm,
    verify_cache_bytes: Option<u64>,
) -> Services {
    let defaults = TokenConfig::default();
    let config = ServicesConfig {
        tokens: TokenConfig {
            issuer: "https://auth.example.com".into(),
            revocation: RevocationMode::Denylist,
            verify_cache_bytes: verify_cache_bytes.unwrap_or(defaults.verify_cache_bytes),
            ..defaults
        },
        signing_algorithm: algorithm,
        ..ServicesConfig::default()
    };
    Services::build(
        Stores::from_one(store.clone()),
        Arc::new(SystemClock),
        MasterKey::from_bytes(master_key).unwrap(),
        config,
    )
    .await
    .unwrap()
}

async fn setup(algorithm: SigningAlgorithm) -> Setup {
    let store = MemoryStore::new();
    let master_key = [7u8; 32];
    let cached = services(&store, &master_key, algorithm, None).await;
    let tokens = &cached.tokens;
    let clock = &cached.clock;
    let now = clock.now();
    let user = User {
        id: UserId::generate().unwrap(),
        username: Username::parse("bench-user").unwrap(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$not-used-here".into(),
        roles: vec!["user".into()],
        disabled: false,
        created_at: now,
        updated_at: now,
        not_before: now,
        email: None,
    };
    store.create_user(&user).await.unwrap();

    let until = now.saturating_add(Duration::from_secs(3600));
    for i in 0..DENYLIST_ENTRIES {
        let entries = [
            Revoked::Token {
                jti: format!("at_unrelated_{i:06}"),
            },
            Revoked::Family {
                id: FamilyId::generate().unwrap(),
            },
            Revoked::UserBefore {
                user: UserId::generate().unwrap(),
                before: now,
            },
        ];
        for revoked in entries {
            tokens
                .revocations()
                .revoke(RevocationEntry {
                    revoked,
                    expires_at: until,
                })
                .await
                .unwrap();
        }
    }

    let pair = tokens
        .issue(&user, LoginModel::Token, ClientInfo::default())
        .await
        .unwrap();
    // Built after the revocations are stored, so it loads the same list.
    let uncached = services(&store, &master_key, algorithm, Some(0)).await;
    // As on a server, the follower keeps each node's revocation state trusted; it runs on the
    // runtime's worker thread while the benchmark runs on the main one.
    cached.spawn_follower();
    uncached.spawn_follower();
    tokio::time::sleep(Duration::from_millis(100)).await;
    Setup {
        cached,
        uncached,
        token: pair.access_token,
    }
}

fn verify(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("verify");

    // The reference row first, then each algorithm.
    let mut map = HashMap::with_capacity(BASELINE_ENTRIES);
    let keys: Vec<TokenHash> = (0..BASELINE_ENTRIES)
        .map(|i| TokenHash::of(format!("key-{i}").as_bytes()))
        .collect();
    for (i, key) in keys.iter().enumerate() {
        map.insert(*key, i as u64);
    }
    let probes: Vec<TokenHash> = keys
        .iter()
        .step_by(BASELINE_ENTRIES / BASELINE_PROBES)
        .take(BASELINE_PROBES)
        .copied()
        .collect();
    let mut next = 0usize;
    group.bench_function("baseline/hashmap_lookup_32B", |b| {
        b.iter(|| {
            next = (next + 1) % BASELINE_PROBES;
            black_box(map.get(black_box(&probes[next])))
        })
    });

    for algorithm in [
        SigningAlgorithm::EdDSA,
        SigningAlgorithm::ES256,
        SigningAlgorithm::RS256,
        SigningAlgorithm::HS256,
    ] {
        let setup = rt.block_on(setup(algorithm));
        let token = setup.token.as_str();
        eprintln!("{algorithm}: access token is {} bytes", token.len());

        let uncached = &setup.uncached.tokens;
        group.bench_function(format!("{algorithm}/cold"), |b| {
            b.iter(|| {
                uncached
                    .verify(black_box(token))
                    .expect("the issued token verifies")
            })
        });

        let tokens = &setup.cached.tokens;
        tokens.verify(token).expect("the issued token verifies");
        group.bench_function(format!("{algorithm}/cached"), |b| {
            b.iter(|| {
                tokens
                    .verify(black_box(token))
                    .expect("the issued token verifies")
            })
        });

        // Part of `cold`, alone: the Ed25519 signature check itself (aws-lc), without parsing
        // the token. What bounds a never-seen token's cost.
        if algorithm == SigningAlgorithm::EdDSA {
            use base64::Engine;
            use base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let jwks = serde_json::to_value(tokens.keyring().jwks()).unwrap();
            let x = URL_SAFE_NO_PAD
                .decode(jwks["keys"][0]["x"].as_str().unwrap())
                .unwrap();
            let (message, signature) = token.rsplit_once('.').unwrap();
            let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
            let key =
                aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, x);
            group.bench_function(format!("{algorithm}/signature_only"), |b| {
                b.iter(|| {
                    key.verify(black_box(message.as_bytes()), black_box(&signature))
                        .expect("the signature verifies")
                })
            });
        }

        // Part of `cached`, alone: the cache key is SHA-256 of the whole token, so a hit costs
        // time in proportion to the token's length.
        group.bench_function(format!("{algorithm}/cache_key_sha256"), |b| {
            b.iter(|| TokenHash::of(black_box(token).as_bytes()))
        });
    }
    dpop(&rt, &mut group);
    group.finish();
}

/// The `dpop/…` rows.
fn dpop(
    rt: &tokio::runtime::Runtime,
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
) {
    use criterion::BatchSize;
    use tessera_dpop::ProofKey;

    const URL: &str = "https://auth.example.com/v1/me";
    let setup = rt.block_on(setup(SigningAlgorithm::EdDSA));
    let tokens = &setup.cached.tokens;
    for (name, key) in [
        ("es256", ProofKey::generate_es256().unwrap()),
        ("eddsa", ProofKey::generate_ed25519().unwrap()),
    ] {
        let user = rt
            .block_on(tokens.introspect(&setup.token))
            .unwrap()
            .sub
            .unwrap();
        let user = rt
            .block_on(setup.cached.accounts.user(&UserId::parse(&user).unwrap()))
            .unwrap()
            .unwrap();
        let pair = rt
            .block_on(tokens.issue_with(
                &user,
                LoginModel::Token,
                ClientInfo::default(),
                tessera_core::AuthContext::password(tokens.now()),
                Some(key.thumbprint()),
            ))
            .unwrap();
        let token = pair.access_token.as_str();
        tokens.verify(token).expect("the bound token verifies");
        group.bench_function(format!("dpop/{name}_proof_and_record"), |b| {
            b.iter_batched(
                || key.proof("GET", URL, Some(token), None).unwrap(),
                |proof| {
                    rt.block_on(async {
                        let claims = tokens.verify(black_box(token)).expect("verifies");
                        let checked = tokens
                            .dpop()
                            .check(&proof, "GET", URL, Some(token))
                            .await
                            .expect("the proof is good");
                        assert_eq!(
                            Some(checked.thumbprint.as_str()),
                            claims.claims().cnf.as_ref().map(|c| c.jkt.as_str())
                        );
                    })
                },
                BatchSize::SmallInput,
            )
        });
    }
    let token = setup.token.as_str();
    group.bench_function("dpop/bearer_same_path", |b| {
        b.iter(|| {
            rt.block_on(async {
                tokens
                    .verify(black_box(token))
                    .expect("the issued token verifies")
            })
        })
    });
}

criterion_group! {
    name = benches;
    // 16 rows × (1 s warm-up + 3 s measurement) plus setup: about a minute and a quarter.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = verify
}
criterion_main!(benches);
