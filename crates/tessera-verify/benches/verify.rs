//! The verify path of `tessera-verify`, per signing algorithm, set up as a resource service runs
//! it: a `Verifier` that fetched its JWKS over HTTP and applied a revocation snapshot from the
//! stream (a stand-in server on 127.0.0.1, the same one the tests use), holding 1,000 unrelated
//! entries of each kind (token, login, user) so the revocation lookups search real maps.
//!
//! - `cold`: a token whose signature must be checked: size and character checks, header and
//!   claims parsing, the signature, time and revocation checks, and the attempt to cache it. It
//!   runs on a verifier whose cache budget is too small to keep any token, so every call is a
//!   miss (pre-signing a pool would not work: a normal cache would hold them all after one pass).
//! - `cached`: the same token again: the cache lookup (foldhash of the token, then a comparison of
//!   the whole token), the key still in force, `exp`/`nbf`, the stream's state, and the three
//!   revocation lookups (jti, fid, sub).
//! - `baseline/hashmap_lookup_32B`: a std `HashMap` lookup of a 32-byte key (10,000 entries,
//!   cycling through 1,024 present keys), measured in the same run, so the rows above can be read
//!   as ratios on a noisy shared machine, as `docs/benchmarks.md` does for the server.
//!
//! Run with `cargo bench -p tessera-verify --bench verify`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use support::{AUDIENCE, CLIENT_ID, CLIENT_SECRET, FakeTessera, ISSUER, SigningKey};
use tessera_verify::Verifier;

const ENTRIES: usize = 1_000;
const BASELINE_ENTRIES: usize = 10_000;
const BASELINE_PROBES: usize = 1_024;

fn snapshot() -> serde_json::Value {
    let far = support::now_millis() + 3_600_000;
    json!({
        "mode": "denylist",
        "tokens": (0..ENTRIES).map(|i| json!({"jti": format!("jti_other_{i}"), "expires_at": far})).collect::<Vec<_>>(),
        "families": (0..ENTRIES).map(|i| json!({"fid": format!("fam_other_{i}"), "expires_at": far})).collect::<Vec<_>>(),
        "users": (0..ENTRIES).map(|i| json!({"sub": format!("usr_other_{i}"), "not_before": 1, "expires_at": far})).collect::<Vec<_>>(),
        "disabled_users": [],
        "retired_keys": [],
    })
}

fn build(rt: &tokio::runtime::Runtime, fake: &FakeTessera, cache_bytes: u64) -> Verifier {
    rt.block_on(async {
        let verifier = Verifier::builder(ISSUER, AUDIENCE)
            .server_url(&fake.base)
            .service_credentials(CLIENT_ID, CLIENT_SECRET)
            .cache_capacity_bytes(cache_bytes)
            .build()
            .expect("build the verifier");
        tokio::time::timeout(Duration::from_secs(10), verifier.ready())
            .await
            .expect("the verifier is ready");
        verifier
    })
}

fn bench_algorithm(c: &mut Criterion, rt: &tokio::runtime::Runtime, key: SigningKey) {
    let fake = rt.block_on(FakeTessera::start(&[&key]));
    fake.set_snapshot(snapshot());
    let token = key.sign(&support::claims("usr_bench", "jti_bench"));
    let cached = build(rt, &fake, 32 * 1024 * 1024);
    let uncached = build(rt, &fake, 1);
    cached.verify_offline(&token).expect("the token verifies");
    assert_eq!(cached.status().revocation_entries, 3 * ENTRIES);
    println!("{:?}: token {} bytes", key.algorithm, token.len());

    let mut group = c.benchmark_group(format!("verify/{:?}", key.algorithm));
    group.bench_function("cold", |b| {
        b.iter(|| uncached.verify_offline(black_box(&token)).is_ok())
    });
    group.bench_function("cached", |b| {
        b.iter(|| cached.verify_offline(black_box(&token)).is_ok())
    });
    group.finish();
    assert_eq!(
        uncached.status().cached_tokens,
        0,
        "the cold row never hit the cache"
    );
}

fn verify(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    bench_algorithm(c, &rt, SigningKey::ed25519("bench-ed"));
    bench_algorithm(c, &rt, SigningKey::es256("bench-es"));
    bench_algorithm(c, &rt, SigningKey::rs256("bench-rs"));

    let keys: Vec<[u8; 32]> = (0..BASELINE_ENTRIES as u64)
        .map(|i| {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
            k
        })
        .collect();
    let map: HashMap<[u8; 32], u64> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, i as u64))
        .collect();
    let mut i = 0;
    c.bench_function("baseline/hashmap_lookup_32B", |b| {
        b.iter(|| {
            i = (i + 1) % BASELINE_PROBES;
            black_box(map.get(black_box(&keys[i])))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = verify
}
criterion_main!(benches);
