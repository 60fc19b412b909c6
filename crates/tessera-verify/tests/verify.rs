//! The verifier against a stand-in Tessera on 127.0.0.1 (`support::FakeTessera`): a JWKS it can
//! change and count, and a revocation stream the test drives.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Header;
use serde_json::{Value, json};
use support::{
    AUDIENCE, CLIENT_ID, CLIENT_SECRET, FakeTessera, ISSUER, SigningKey, claims, eventually,
};
use tessera_verify::{
    BuildError, Clock, RevokedReason, StreamStatus, Verifier, VerifierBuilder, VerifyError,
};

const PATIENCE: Duration = Duration::from_secs(5);

/// A builder for the fake server, with the stream and short timings.
fn builder(fake: &FakeTessera) -> VerifierBuilder {
    Verifier::builder(ISSUER, AUDIENCE)
        .server_url(&fake.base)
        .service_credentials(CLIENT_ID, CLIENT_SECRET)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100))
}

async fn ready(builder: VerifierBuilder) -> Verifier {
    let verifier = builder.build().unwrap();
    tokio::time::timeout(PATIENCE, verifier.ready())
        .await
        .expect("the verifier became ready");
    verifier
}

/// A clock the test moves.
struct TestClock(AtomicI64);

impl TestClock {
    fn new() -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(support::now_millis())))
    }
    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now_unix_millis(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn with(mut claims: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

#[tokio::test]
async fn accepts_tessera_tokens_of_every_algorithm() {
    let (ed, es, rs) = (
        SigningKey::ed25519("k-ed"),
        SigningKey::es256("k-es"),
        SigningKey::rs256("k-rs"),
    );
    let fake = FakeTessera::start(&[&ed, &es, &rs]).await;
    let verifier = ready(builder(&fake)).await;
    for key in [&ed, &es, &rs] {
        let token = key.sign(&claims("usr_1", &format!("jti-{}", key.kid)));
        let verified = verifier.verify(&token).await.unwrap();
        assert_eq!(verified.subject(), "usr_1");
        assert_eq!(verified.key_id(), key.kid);
        assert!(verified.has_role("reader") && !verified.has_role("admin"));
        assert_eq!(verified.claims().model.as_deref(), Some("token"));
        assert_eq!(
            verified.claims().fid.as_deref(),
            Some(&*format!("fam_jti-{}", key.kid))
        );
    }
    let status = verifier.status();
    assert_eq!(status.stream, StreamStatus::Live);
    assert_eq!(status.keys, 3);
    assert_eq!(status.cached_tokens, 3);
    assert_eq!(status.jwks_fetches, 1);
}

#[tokio::test]
async fn refuses_headers_that_point_elsewhere_and_other_types() {
    let key = SigningKey::ed25519("k1");
    let fake = FakeTessera::start(&[&key]).await;
    let verifier = ready(builder(&fake)).await;
    let c = claims("usr_1", "j1");
    let check = |mutate: fn(&mut Header)| {
        let mut header = key.header();
        mutate(&mut header);
        key.sign_with(&header, &c)
    };

    type Case = (fn(&mut Header), VerifyError);
    let cases: [Case; 8] = [
        (
            |h| h.jku = Some("https://evil.example/jwks".into()),
            VerifyError::ForbiddenHeader("jku"),
        ),
        (
            |h| h.x5u = Some("https://evil.example/cert".into()),
            VerifyError::ForbiddenHeader("x5u"),
        ),
        (
            |h| h.x5c = Some(vec!["MIIB".into()]),
            VerifyError::ForbiddenHeader("x5c"),
        ),
        (
            |h| h.crit = Some(vec!["exp".into()]),
            VerifyError::ForbiddenHeader("crit"),
        ),
        (|h| h.kid = None, VerifyError::ForbiddenHeader("kid")),
        (|h| h.typ = None, VerifyError::WrongType),
        (|h| h.typ = Some("JWT".into()), VerifyError::WrongType),
        (
            |h| h.typ = Some("refresh+jwt".into()),
            VerifyError::WrongType,
        ),
    ];
    for (mutate, expected) in cases {
        assert_eq!(verifier.verify(&check(mutate)).await.unwrap_err(), expected);
    }
    // An embedded key, even the right one.
    let mut header = key.header();
    header.jwk = Some(serde_json::from_value(key.jwk.clone()).unwrap());
    assert_eq!(
        verifier
            .verify(&key.sign_with(&header, &c))
            .await
            .unwrap_err(),
        VerifyError::ForbiddenHeader("jwk")
    );
    // `typ` is case-insensitive, with or without `application/`.
    for typ in ["AT+JWT", "application/at+jwt", "Application/AT+JWT"] {
        let mut header = key.header();
        header.typ = Some(typ.into());
        assert!(
            verifier.verify(&key.sign_with(&header, &c)).await.is_ok(),
            "{typ}"
        );
    }
    assert_eq!(
        fake.jwks_fetches(),
        1,
        "no header made the verifier fetch anything"
    );
}

#[tokio::test]
async fn the_algorithm_comes_from_the_key() {
    let ed = SigningKey::ed25519("k-ed");
    let es = SigningKey::es256("k-es");
    let fake = FakeTessera::start(&[&ed]).await;
    let verifier = ready(builder(&fake)).await;
    let c = claims("usr_1", "j1");

    // An ES256 signature under the Ed25519 key's kid.
    let mut header = es.header();
    header.kid = Some("k-ed".into());
    assert_eq!(
        verifier
            .verify(&es.sign_with(&header, &c))
            .await
            .unwrap_err(),
        VerifyError::BadSignature
    );
    // HS256 with the public key as the shared secret (the classic confusion).
    let x = URL_SAFE_NO_PAD
        .decode(ed.jwk["x"].as_str().unwrap())
        .unwrap();
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some("k-ed".into());
    let forged =
        jsonwebtoken::encode(&header, &c, &jsonwebtoken::EncodingKey::from_secret(&x)).unwrap();
    assert_eq!(
        verifier.verify(&forged).await.unwrap_err(),
        VerifyError::BadSignature
    );
    // `alg: none`.
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt","kid":"k-ed"}"#);
    let payload = URL_SAFE_NO_PAD.encode(c.to_string());
    assert_eq!(
        verifier
            .verify(&format!("{none_header}.{payload}."))
            .await
            .unwrap_err(),
        VerifyError::Malformed
    );
    // A signature from another Ed25519 key under this kid.
    let other = SigningKey::ed25519("k-ed");
    assert_eq!(
        verifier.verify(&other.sign(&c)).await.unwrap_err(),
        VerifyError::BadSignature
    );
}

#[tokio::test]
async fn checks_the_claims() {
    let key = SigningKey::ed25519("k1");
    let fake = FakeTessera::start(&[&key]).await;
    let verifier = ready(builder(&fake).leeway(Duration::from_secs(5))).await;
    let now = support::now_secs();
    let base = claims("usr_1", "j1");
    let cases = [
        (
            json!({"iss": "https://other.test"}),
            VerifyError::WrongIssuer,
        ),
        (json!({"aud": "another-api"}), VerifyError::WrongAudience),
        (json!({"exp": now - 6}), VerifyError::Expired),
        (json!({"nbf": now + 7}), VerifyError::NotYetValid),
        (json!({"exp": null}), VerifyError::BadClaims),
        (json!({"nbf": null}), VerifyError::BadClaims),
        (json!({"iss": null}), VerifyError::BadClaims),
        (json!({"aud": null}), VerifyError::BadClaims),
        (json!({"sub": null}), VerifyError::BadClaims),
        (json!({"jti": null}), VerifyError::BadClaims),
        (json!({"exp": "tomorrow"}), VerifyError::BadClaims),
        (json!({"roles": "admin"}), VerifyError::BadClaims),
    ];
    for (i, (changes, expected)) in cases.into_iter().enumerate() {
        let token = key.sign(&with(
            with(base.clone(), json!({"jti": format!("c{i}")})),
            changes.clone(),
        ));
        assert_eq!(
            verifier.verify(&token).await.unwrap_err(),
            expected,
            "{changes}"
        );
    }
    // Within the leeway, and with claims this crate does not know, and without the optional
    // ones.
    let ok = [
        json!({"exp": now - 3, "jti": "ok1"}),
        json!({"nbf": now + 4, "jti": "ok2"}),
        json!({"jti": "ok3", "scope": "orders:read"}),
        json!({"jti": "ok4", "iat": null, "iat_ms": null, "fid": null, "client_id": null, "model": null, "roles": null}),
    ];
    for changes in ok {
        let token = key.sign(&with(base.clone(), changes.clone()));
        assert!(verifier.verify(&token).await.is_ok(), "{changes}");
    }
    // A token bound to a key (DPoP's `cnf.jkt`, or any other confirmation this crate cannot
    // check) is not a bearer token.
    for cnf in [json!({"jkt": "x"}), json!({"x5t#S256": "y"})] {
        let token = key.sign(&with(base.clone(), json!({"jti": "bound", "cnf": cnf})));
        assert_eq!(
            verifier.verify(&token).await.unwrap_err(),
            VerifyError::DpopRequired,
            "{cnf}"
        );
    }
}

#[tokio::test]
async fn refuses_oversized_and_malformed_tokens_before_parsing() {
    let key = SigningKey::ed25519("k1");
    let fake = FakeTessera::start(&[&key]).await;
    let verifier = ready(builder(&fake)).await;
    let token = key.sign(&claims("usr_1", "j1"));
    assert_eq!(
        verifier.verify("").await.unwrap_err(),
        VerifyError::BadLength
    );
    let long = key.sign(&with(
        claims("usr_1", "j2"),
        json!({"pad": "x".repeat(tessera_verify::MAX_TOKEN_BYTES)}),
    ));
    assert_eq!(
        verifier.verify(&long).await.unwrap_err(),
        VerifyError::BadLength
    );
    let (head, rest) = token.split_once('.').unwrap();
    for bad in [
        format!(" {token}"),
        format!("{token}\n"),
        format!("{head}.{rest}.x"),
        format!("{head}.x"),
        format!("{head}+.{rest}"),
        "a.b.c".to_owned(),
        "..".to_owned(),
    ] {
        assert_eq!(
            verifier.verify(&bad).await.unwrap_err(),
            VerifyError::Malformed,
            "{bad:?}"
        );
    }
    assert!(verifier.verify(&token).await.is_ok());
}

#[tokio::test]
async fn a_cached_token_is_still_checked_for_time_keys_and_revocations() {
    let (k1, k2) = (SigningKey::ed25519("k1"), SigningKey::ed25519("k2"));
    let fake = FakeTessera::start(&[&k1, &k2]).await;
    let verifier = ready(builder(&fake)).await;

    let token = k1.sign(&claims("usr_1", "j1"));
    verifier.verify(&token).await.unwrap();
    verifier.verify(&token).await.unwrap();
    assert_eq!(
        verifier.status().cached_tokens,
        1,
        "a repeated token is one entry"
    );

    // A revocation after the token was cached.
    let t2 = k1.sign(&claims("usr_2", "j2"));
    verifier.verify(&t2).await.unwrap();
    fake.revoke(
        json!({"kind": "token", "jti": "j2", "expires_at": support::now_millis() + 600_000}),
    );
    eventually(PATIENCE, || verifier.verify_offline(&t2).is_err())
        .await
        .unwrap();
    assert_eq!(
        verifier.verify_offline(&t2).unwrap_err(),
        VerifyError::Revoked(RevokedReason::Token)
    );

    // The key leaves the JWKS (seen on a refetch caused by an unknown kid): its cached tokens go.
    let t3 = k2.sign(&claims("usr_3", "j3"));
    verifier.verify(&t3).await.unwrap();
    fake.set_keys(&[&k1]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stranger = SigningKey::ed25519("k9").sign(&claims("usr_9", "j9"));
    assert_eq!(
        verifier.verify(&stranger).await.unwrap_err(),
        VerifyError::UnknownKey
    );
    assert_eq!(
        verifier.verify_offline(&t3).unwrap_err(),
        VerifyError::UnknownKey
    );
    // Published again (a JWKS that missed it once): its tokens are accepted again.
    fake.set_keys(&[&k1, &k2]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(verifier.verify(&t3).await.is_ok());

    // A key retired on the stream: refused from the cache at once.
    let t4 = k1.sign(&claims("usr_4", "j4"));
    verifier.verify(&t4).await.unwrap();
    fake.revoke(json!({"kind": "key_retired", "kid": "k1"}));
    eventually(PATIENCE, || verifier.verify_offline(&t4).is_err())
        .await
        .unwrap();
    assert_eq!(
        verifier.verify_offline(&t4).unwrap_err(),
        VerifyError::KeyRetired
    );
    // And it stays out even though the JWKS still lists it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = k1.sign(&claims("usr_5", "j5"));
    assert_eq!(
        verifier.verify(&fresh).await.unwrap_err(),
        VerifyError::KeyRetired
    );
}

#[tokio::test]
async fn a_cached_token_expires() {
    let key = SigningKey::ed25519("k1");
    let fake = FakeTessera::start(&[&key]).await;
    let clock = TestClock::new();
    let verifier = ready(builder(&fake).clock(clock.clone())).await;
    let token = key.sign(&claims("usr_1", "j1"));
    verifier.verify(&token).await.unwrap();
    // 600 s of validity and 5 s of leeway; the claims were made a moment before the clock.
    clock.advance(Duration::from_secs(603));
    assert!(verifier.verify_offline(&token).is_ok());
    clock.advance(Duration::from_secs(3));
    assert_eq!(
        verifier.verify_offline(&token).unwrap_err(),
        VerifyError::Expired
    );
    assert_eq!(verifier.status().cached_tokens, 1);
}

#[tokio::test]
async fn an_unknown_kid_refetches_at_most_once_per_interval() {
    let (k1, k2) = (SigningKey::ed25519("k1"), SigningKey::ed25519("k2"));
    let fake = FakeTessera::start(&[&k1]).await;
    let interval = Duration::from_millis(500);
    let verifier = ready(builder(&fake).jwks_refetch_interval(interval)).await;
    assert_eq!(fake.jwks_fetches(), 1);

    // A rotation right after the verifier fetched: the first token naming the new key waits for
    // the refetch its turn allows, and is accepted.
    fake.set_keys(&[&k2, &k1]);
    let rotated = k2.sign(&claims("usr_1", "j1"));
    let started = tokio::time::Instant::now();
    assert!(verifier.verify(&rotated).await.is_ok());
    assert!(started.elapsed() < interval + Duration::from_secs(1));
    assert_eq!(fake.jwks_fetches(), 2);

    // Made-up kids, many at once: they share one fetch.
    let forged: Vec<String> = (0..40)
        .map(|i| SigningKey::ed25519(&format!("nope-{i}")).sign(&claims("usr_1", "x")))
        .collect();
    let results = futures_util::future::join_all(forged.iter().map(|t| verifier.verify(t))).await;
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().err() == Some(&VerifyError::UnknownKey))
    );
    assert_eq!(fake.jwks_fetches(), 3, "forty callers, one fetch");

    // One after the other, for two seconds: one fetch per interval at most.
    let started = tokio::time::Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let t = &forged[i % forged.len()];
        assert_eq!(
            verifier.verify(t).await.unwrap_err(),
            VerifyError::UnknownKey
        );
        assert_eq!(
            verifier.verify_offline(t).unwrap_err(),
            VerifyError::UnknownKey
        );
        i += 1;
    }
    let fetches = fake.jwks_fetches() - 3;
    assert!((2..=5).contains(&fetches), "{fetches} fetches in 2 s");
    assert_eq!(verifier.status().jwks_fetches as usize, fake.jwks_fetches());
}

#[tokio::test]
async fn honours_the_jwks_max_age() {
    let key = SigningKey::ed25519("k1");
    let fake = FakeTessera::start(&[&key]).await;
    fake.set_cache_control("public, max-age=1");
    let verifier = ready(
        builder(&fake).jwks_max_age_bounds(Duration::from_millis(500), Duration::from_secs(60)),
    )
    .await;
    assert_eq!(fake.jwks_fetches(), 1);
    // The periodic refresh brings a new key without any token asking for it.
    let k2 = SigningKey::ed25519("k2");
    fake.set_keys(&[&k2]);
    eventually(Duration::from_secs(3), || {
        verifier.status().keys == 1 && fake.jwks_fetches() >= 2
    })
    .await
    .unwrap();
    let t = k2.sign(&claims("usr_1", "j1"));
    assert!(
        verifier.verify_offline(&t).is_ok(),
        "refreshed in the background"
    );
    // The minimum bound holds even when the server asks for less.
    fake.set_cache_control("no-store");
    let before = fake.jwks_fetches();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after = fake.jwks_fetches();
    assert!(after - before <= 3, "{} fetches in 1.2 s", after - before);
}

#[tokio::test]
async fn applies_every_kind_of_revocation_from_the_stream() {
    let key = SigningKey::ed25519("k1");
    let fake = FakeTessera::start(&[&key]).await;
    let far = support::now_millis() + 600_000;
    fake.set_snapshot(json!({
        "mode": "denylist",
        "tokens": [{"jti": "snap-j", "expires_at": far}],
        "families": [{"fid": "snap-f", "expires_at": far}],
        "users": [],
        "disabled_users": ["usr_off"],
        "retired_keys": [],
    }));
    let verifier = ready(builder(&fake)).await;
    let revoked = |reason| Err(VerifyError::Revoked(reason));

    assert_eq!(
        verifier
            .verify(&key.sign(&claims("usr_1", "snap-j")))
            .await
            .map(|_| ()),
        revoked(RevokedReason::Token)
    );
    let fam = key.sign(&with(claims("usr_1", "j-f"), json!({"fid": "snap-f"})));
    assert_eq!(
        verifier.verify(&fam).await.map(|_| ()),
        revoked(RevokedReason::Family)
    );
    let off = key.sign(&claims("usr_off", "j-off"));
    assert_eq!(
        verifier.verify(&off).await.map(|_| ()),
        revoked(RevokedReason::UserDisabled)
    );

    // Live changes, each refused within moments.
    let t1 = key.sign(&claims("usr_2", "j1"));
    let t2 = key.sign(&claims("usr_3", "j2"));
    let older = key.sign(&with(
        claims("usr_4", "j3"),
        json!({"iat_ms": support::now_millis() - 10}),
    ));
    let newer = key.sign(&with(
        claims("usr_4", "j4"),
        json!({"iat_ms": support::now_millis() + 10_000}),
    ));
    for t in [&t1, &t2, &older, &newer] {
        verifier.verify(t).await.unwrap();
    }
    fake.revoke(json!({"kind": "token", "jti": "j1", "expires_at": far}));
    fake.revoke(json!({"kind": "family", "fid": "fam_j2", "expires_at": far}));
    fake.revoke(json!({"kind": "user_not_before", "sub": "usr_4", "not_before": support::now_millis(), "expires_at": far}));
    fake.revoke(json!({"kind": "user_enabled", "sub": "usr_off"}));
    let took = eventually(PATIENCE, || verifier.verify_offline(&older).is_err())
        .await
        .unwrap();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(
        verifier.verify_offline(&t1).map(|_| ()),
        revoked(RevokedReason::Token)
    );
    assert_eq!(
        verifier.verify_offline(&t2).map(|_| ()),
        revoked(RevokedReason::Family)
    );
    assert_eq!(
        verifier.verify_offline(&older).map(|_| ()),
        revoked(RevokedReason::UserNotBefore)
    );
    assert!(
        verifier.verify_offline(&newer).is_ok(),
        "issued after the not-before"
    );
    assert!(verifier.verify(&off).await.is_ok(), "enabled again");
    fake.revoke(json!({"kind": "user_disabled", "sub": "usr_2"}));
    let t5 = key.sign(&claims("usr_2", "j5"));
    eventually(PATIENCE, || verifier.verify_offline(&t5).is_err())
        .await
        .unwrap();
    assert_eq!(
        verifier.verify_offline(&t5).map(|_| ()),
        revoked(RevokedReason::UserDisabled)
    );
    assert!(verifier.status().revocations >= 5);
}

#[tokio::test]
async fn fails_closed_after_the_grace_and_recovers_by_itself() {
    let key = SigningKey::ed25519("k1");
    let fake = FakeTessera::start(&[&key]).await;
    let grace = Duration::from_millis(400);
    let verifier = ready(builder(&fake).stream_grace(grace)).await;
    let token = key.sign(&claims("usr_1", "j1"));
    assert!(verifier.verify(&token).await.is_ok());

    fake.refuse_streams(true);
    fake.set_replay(false);
    fake.drop_streams();
    let lost = tokio::time::Instant::now();
    eventually(PATIENCE, || verifier.status().stream == StreamStatus::Grace)
        .await
        .unwrap();
    assert!(
        verifier.verify_offline(&token).is_ok(),
        "accepted during the grace"
    );
    let refused = eventually(PATIENCE, || {
        verifier.verify_offline(&token).err() == Some(VerifyError::StateUnavailable)
    })
    .await
    .unwrap();
    let after = lost.elapsed();
    assert!(
        after >= grace,
        "refused {after:?} after the loss, before the grace ended"
    );
    assert!(
        refused < grace + Duration::from_secs(1),
        "refused late: {refused:?}"
    );
    assert_eq!(verifier.status().stream, StreamStatus::Unavailable);
    assert!(VerifyError::StateUnavailable.is_unavailable());
    // A revocation made while the stream is down arrives with the snapshot on reconnection.
    fake.set_snapshot(
        json!({"tokens": [{"jti": "j2", "expires_at": support::now_millis() + 600_000}]}),
    );
    let revoked_meanwhile = key.sign(&claims("usr_2", "j2"));
    fake.refuse_streams(false);
    eventually(PATIENCE, || verifier.verify_offline(&token).is_ok())
        .await
        .expect("accepted again once the stream is back");
    assert_eq!(verifier.status().stream, StreamStatus::Live);
    assert_eq!(
        verifier.verify(&revoked_meanwhile).await.unwrap_err(),
        VerifyError::Revoked(RevokedReason::Token)
    );
}

#[tokio::test]
async fn a_silent_stream_counts_as_lost() {
    let key = SigningKey::ed25519("k1");
    let fake = FakeTessera::start(&[&key]).await;
    let verifier = ready(
        builder(&fake)
            .heartbeat_timeout(Duration::from_millis(300))
            .stream_grace(Duration::from_millis(200)),
    )
    .await;
    let token = key.sign(&claims("usr_1", "j1"));
    // Keep-alives keep it live.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        fake.comment("keep-alive");
    }
    assert_eq!(verifier.status().stream, StreamStatus::Live);
    assert_eq!(fake.stream_requests(), 1);
    // Silence, and the reconnections are refused: lost after 300 ms, refused 200 ms later.
    fake.refuse_streams(true);
    let start = tokio::time::Instant::now();
    let took = eventually(PATIENCE, || verifier.verify_offline(&token).is_err())
        .await
        .unwrap();
    assert!(took >= Duration::from_millis(500), "refused after {took:?}");
    assert!(took < Duration::from_millis(2500), "refused after {took:?}");
    assert_eq!(
        verifier.verify_offline(&token).unwrap_err(),
        VerifyError::StateUnavailable
    );
    assert!(start.elapsed() < PATIENCE);
}

#[tokio::test]
async fn reconnects_with_last_event_id_and_misses_nothing() {
    let key = SigningKey::ed25519("k1");
    let fake = FakeTessera::start(&[&key]).await;
    let verifier = ready(builder(&fake).stream_grace(Duration::from_secs(30))).await;
    let far = support::now_millis() + 600_000;
    let tokens: Vec<String> = (0..4)
        .map(|i| key.sign(&claims("usr_1", &format!("j{i}"))))
        .collect();
    fake.revoke(json!({"kind": "token", "jti": "j0", "expires_at": far}));
    eventually(PATIENCE, || verifier.verify_offline(&tokens[0]).is_err())
        .await
        .unwrap();

    // Disconnected; three revocations happen meanwhile.
    fake.refuse_streams(true);
    fake.drop_streams();
    eventually(PATIENCE, || fake.stream_requests() >= 3)
        .await
        .unwrap();
    for jti in ["j1", "j2", "j3"] {
        fake.revoke(json!({"kind": "token", "jti": jti, "expires_at": far}));
    }
    assert!(
        verifier.verify_offline(&tokens[3]).is_ok(),
        "not heard of yet (grace)"
    );
    fake.refuse_streams(false);
    eventually(PATIENCE, || {
        tokens.iter().all(|t| verifier.verify_offline(t).is_err())
    })
    .await
    .expect("every revocation made while disconnected is applied");
    let ids = fake.last_event_ids();
    assert_eq!(ids[0], None, "the first connection has nothing to resume");
    assert!(
        ids.last().unwrap().as_deref() == Some("1"),
        "resumed after the last event applied: {ids:?}"
    );
    assert_eq!(
        verifier.status().last_event_id.as_deref(),
        Some("4"),
        "the replayed events' ids"
    );
    assert_eq!(
        verifier.status().snapshots,
        1,
        "replayed, not a new snapshot"
    );
    assert_eq!(verifier.status().stream, StreamStatus::Live);
}

#[tokio::test]
async fn a_replay_is_trusted_once_the_server_has_caught_up() {
    let key = SigningKey::ed25519("k1");
    let fake = FakeTessera::start(&[&key]).await;
    fake.set_announce_caught_up(false);
    let settle = Duration::from_secs(3);
    let verifier = ready(
        builder(&fake)
            .stream_grace(Duration::ZERO)
            .replay_settle(settle),
    )
    .await;
    let token = key.sign(&claims("usr_1", "j1"));
    let far = support::now_millis() + 600_000;
    fake.revoke(json!({"kind": "token", "jti": "other", "expires_at": far}));
    eventually(PATIENCE, || verifier.status().revocations == 1)
        .await
        .unwrap();

    // Resumed, the replay (empty here) written, and nothing said since: not yet known to be
    // current. A comment (a keep-alive) shows the replay is complete.
    fake.drop_streams();
    eventually(PATIENCE, || fake.open_streams() == 1)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        verifier.verify_offline(&token).unwrap_err(),
        VerifyError::StateUnavailable
    );
    fake.comment("keep-alive");
    let took = eventually(PATIENCE, || verifier.verify_offline(&token).is_ok())
        .await
        .unwrap();
    assert!(took < Duration::from_secs(1), "{took:?}");

    // Without a comment, a quiet spell after the replay does it.
    fake.drop_streams();
    eventually(PATIENCE, || {
        verifier.status().stream == StreamStatus::Unavailable
    })
    .await
    .unwrap();
    let lost = tokio::time::Instant::now();
    eventually(PATIENCE, || verifier.verify_offline(&token).is_ok())
        .await
        .unwrap();
    assert!(
        lost.elapsed() >= settle,
        "trusted {:?} after the loss",
        lost.elapsed()
    );
    assert_eq!(verifier.status().snapshots, 1, "resumed both times");
}

#[tokio::test]
async fn an_undecodable_revocation_starts_over_from_a_snapshot() {
    let key = SigningKey::ed25519("k1");
    let fake = FakeTessera::start(&[&key]).await;
    let verifier = ready(builder(&fake).stream_grace(Duration::from_secs(30))).await;
    fake.publish("revocation", r#"{"kind":"something_new","x":1}"#.into());
    eventually(PATIENCE, || fake.stream_requests() >= 2)
        .await
        .unwrap();
    eventually(PATIENCE, || verifier.status().snapshots >= 2)
        .await
        .unwrap();
    assert_eq!(
        fake.last_event_ids()[1],
        None,
        "no Last-Event-ID after a change that could not be applied"
    );
    // Unknown event names are skipped.
    fake.publish("heartbeat-v2", "{}".into());
    fake.revoke(
        json!({"kind": "token", "jti": "j1", "expires_at": support::now_millis() + 600_000}),
    );
    let token = key.sign(&claims("usr_1", "j1"));
    eventually(PATIENCE, || verifier.verify_offline(&token).is_err())
        .await
        .unwrap();
    assert_eq!(fake.stream_requests(), 2);
}

#[tokio::test]
async fn refuses_until_the_first_snapshot_and_with_wrong_credentials() {
    let key = SigningKey::ed25519("k1");
    let fake = FakeTessera::start(&[&key]).await;
    let verifier = Verifier::builder(ISSUER, AUDIENCE)
        .server_url(&fake.base)
        .service_credentials(CLIENT_ID, "wrong secret")
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(50))
        .build()
        .unwrap();
    let token = key.sign(&claims("usr_1", "j1"));
    eventually(PATIENCE, || fake.stream_requests() >= 2)
        .await
        .unwrap();
    assert_eq!(verifier.status().stream, StreamStatus::Connecting);
    assert_eq!(
        verifier.verify(&token).await.unwrap_err(),
        VerifyError::StateUnavailable
    );
    assert_eq!(verifier.status().stream_connections, 0);
}

#[tokio::test]
async fn without_the_stream_only_keys_are_followed() {
    let key = SigningKey::ed25519("k1");
    let fake = FakeTessera::start(&[&key]).await;
    let verifier = ready(
        Verifier::builder(ISSUER, AUDIENCE)
            .server_url(&fake.base)
            .without_revocation_stream(),
    )
    .await;
    assert_eq!(verifier.status().stream, StreamStatus::Disabled);
    assert!(
        verifier
            .verify(&key.sign(&claims("usr_1", "j1")))
            .await
            .is_ok()
    );
    assert_eq!(fake.stream_requests(), 0);
}

#[tokio::test]
async fn keys_unavailable_until_the_jwks_is_fetched() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let verifier = Verifier::builder(ISSUER, AUDIENCE)
        .server_url(&closed)
        .without_revocation_stream()
        .build()
        .unwrap();
    let token = SigningKey::ed25519("k1").sign(&claims("usr_1", "j1"));
    eventually(PATIENCE, || verifier.status().jwks_fetch_failures >= 1)
        .await
        .unwrap();
    // The fetch just failed: answered at once, not after waiting for the next one.
    let started = tokio::time::Instant::now();
    let err = verifier.verify(&token).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(err, VerifyError::KeysUnavailable);
    assert!(err.is_unavailable());
    assert!(!verifier.status().keys_loaded);
}

#[tokio::test]
async fn the_builder_demands_an_explicit_choice_and_keeps_secrets_out_of_debug() {
    let b = Verifier::builder(ISSUER, AUDIENCE).server_url("http://127.0.0.1:1");
    assert!(matches!(b.build(), Err(BuildError::RevocationChoice)));
    let b = Verifier::builder(ISSUER, AUDIENCE).without_revocation_stream();
    assert!(matches!(b.build(), Err(BuildError::NoJwksUrl)));
    let b = Verifier::builder(ISSUER, AUDIENCE)
        .jwks_url("ftp://x/jwks")
        .without_revocation_stream();
    assert!(matches!(b.build(), Err(BuildError::BadUrl { .. })));
    let b = Verifier::builder(ISSUER, AUDIENCE)
        .jwks_url("http://127.0.0.1:1/jwks")
        .service_credentials(CLIENT_ID, CLIENT_SECRET);
    assert!(matches!(b.build(), Err(BuildError::NoStreamUrl)));

    let b = Verifier::builder(ISSUER, AUDIENCE)
        .server_url("http://127.0.0.1:1")
        .service_credentials(CLIENT_ID, CLIENT_SECRET);
    let debug = format!("{b:?}");
    let verifier = b.build().unwrap();
    let debug = format!(
        "{debug} {verifier:?} {:?}",
        tessera_verify::ServiceCredentials::new(CLIENT_ID, CLIENT_SECRET)
    );
    assert!(!debug.contains(CLIENT_SECRET), "{debug}");
    assert!(debug.contains(CLIENT_ID));
}

#[test]
fn building_outside_a_runtime_is_an_error() {
    let b = Verifier::builder(ISSUER, AUDIENCE)
        .server_url("http://127.0.0.1:1")
        .without_revocation_stream();
    assert!(matches!(b.build(), Err(BuildError::NoRuntime)));
}
