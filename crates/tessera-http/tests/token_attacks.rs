//! Attacks on bearer access tokens. Every forged, altered, misplaced or stale token gets the same
//! generic 401 with RFC 6750's `invalid_token` challenge, nothing is fetched from a URL a token
//! names, and the genuine token keeps working afterwards.
//!
//! Forgeries are built by hand (base64url, HMAC-SHA-256 and Ed25519 from aws-lc-rs), so nothing
//! here shares code with the verifier it attacks. Claim-level cases (expiry, `nbf`, `iss`, `aud`,
//! claim types) need a token signed by the server's own key: `Tokens::sign_for_tests`
//! (`test-util`) signs arbitrary claims.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_lc_rs::hmac;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, Ed25519KeyPair, KeyPair, RSA_PKCS1_2048_8192_SHA256,
    UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{Backend, Options, PASSWORD, TestApp};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use tessera_core::{Clock, Password, SigningAlgorithm, UserId, Username};

/// RFC 6750 §3.1: a presented token that failed.
const INVALID_TOKEN: &str = r#"Bearer realm="tessera", error="invalid_token""#;
/// RFC 6750 §3.1: no credentials at all, so no error code.
const NO_CREDENTIALS: &str = r#"Bearer realm="tessera""#;

/// The one body every refusal gets, whatever the reason.
fn generic_body() -> Value {
    json!({
        "type": "urn:tessera:problem:unauthenticated",
        "title": "Unauthorized",
        "status": 401,
        "detail": "authentication required",
    })
}

// ---------------------------------------------------------------------------------------------
// Crafting tokens

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn b64_json(value: &Value) -> String {
    b64(serde_json::to_vec(value).unwrap())
}

fn decode_segment(segment: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

fn split3(token: &str) -> (String, String, String) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWS: {token}");
    (parts[0].into(), parts[1].into(), parts[2].into())
}

/// A compact JWS with whatever header, claims and signature text the attacker likes.
fn compact(header: &Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{signature}", b64_json(header), b64_json(claims))
}

fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64_json(header), b64_json(claims));
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

fn eddsa(header: &Value, claims: &Value, key: &Ed25519KeyPair) -> String {
    let input = format!("{}.{}", b64_json(header), b64_json(claims));
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(signature.as_ref()))
}

fn without(mut value: Value, member: &str) -> Value {
    value.as_object_mut().unwrap().remove(member);
    value
}

fn merged(mut value: Value, extra: &Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        value[k] = v.clone();
    }
    value
}

/// The last character of an unpadded base64url text, changed only in its unused low bits: the
/// same bytes for a lenient decoder, a different token for a strict one.
fn with_noncanonical_last_char(text: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let unused_bits = match text.len() % 4 {
        2 => 4,
        3 => 2,
        _ => return None,
    };
    let last = *text.as_bytes().last()?;
    let index = ALPHABET.iter().position(|&c| c == last)?;
    let altered = index | ((1 << unused_bits) - 1);
    let mut out = text[..text.len() - 1].to_owned();
    out.push(ALPHABET[altered] as char);
    Some(out)
}

// DER, just enough to wrap a public key the ways libraries print it.

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    if content.len() < 0x80 {
        out.push(content.len() as u8);
    } else {
        let len = content.len().to_be_bytes();
        let len: Vec<u8> = len.iter().copied().skip_while(|&b| b == 0).collect();
        out.push(0x80 | len.len() as u8);
        out.extend_from_slice(&len);
    }
    out.extend_from_slice(content);
    out
}

fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let mut digits: Vec<u8> = bytes.iter().copied().skip_while(|&b| b == 0).collect();
    if digits.first().is_none_or(|&b| b & 0x80 != 0) {
        digits.insert(0, 0);
    }
    der(0x02, &digits)
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Ed25519 SubjectPublicKeyInfo: SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING { key } }.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// P-256 SubjectPublicKeyInfo up to the uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// AlgorithmIdentifier { rsaEncryption, NULL }.
const RSA_ALGORITHM_ID: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

/// Every form of the server's public key an attacker might try as an HMAC secret, each checked
/// to really be that key (it verifies the genuine token).
fn public_key_forms(jwk: &Value, jwks_text: &str, genuine: &str) -> Vec<(String, Vec<u8>)> {
    let member = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
    let (h, p, s) = split3(genuine);
    let message = format!("{h}.{p}");
    let signature = URL_SAFE_NO_PAD.decode(&s).unwrap();
    let mut forms: Vec<(String, Vec<u8>)> = Vec::new();
    let (raw, spki, encoded_member) = match jwk["kty"].as_str().unwrap() {
        "OKP" => {
            let x = member("x");
            UnparsedPublicKey::new(&ED25519, &x)
                .verify(message.as_bytes(), &signature)
                .expect("the JWKS x member is the signing key");
            let spki = [&ED25519_SPKI_PREFIX[..], &x].concat();
            (x, spki, jwk["x"].as_str().unwrap().to_owned())
        }
        "EC" => {
            let point = [&[4u8][..], &member("x"), &member("y")].concat();
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
                .verify(message.as_bytes(), &signature)
                .expect("the JWKS x and y members are the signing key");
            let spki = [&P256_SPKI_PREFIX[..], &point].concat();
            forms.push(("x member, decoded".into(), member("x")));
            (point, spki, jwk["x"].as_str().unwrap().to_owned())
        }
        "RSA" => {
            let (n, e) = (member("n"), member("e"));
            let pkcs1 = der(0x30, &[der_uint(&n), der_uint(&e)].concat());
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &pkcs1)
                .verify(message.as_bytes(), &signature)
                .expect("the JWKS n and e members are the signing key");
            let bits = der(0x03, &[&[0u8][..], &pkcs1].concat());
            let spki = der(0x30, &[&RSA_ALGORITHM_ID[..], &bits].concat());
            let pkcs1_pem = pem("RSA PUBLIC KEY", &pkcs1);
            forms.push(("PKCS#1 DER".into(), pkcs1));
            forms.push((
                "PKCS#1 PEM without its final newline".into(),
                pkcs1_pem.trim_end().as_bytes().to_vec(),
            ));
            forms.push(("PKCS#1 PEM".into(), pkcs1_pem.into_bytes()));
            (n, spki, jwk["n"].as_str().unwrap().to_owned())
        }
        other => panic!("unexpected kty {other}"),
    };
    let spki_pem = pem("PUBLIC KEY", &spki);
    forms.push(("raw key bytes".into(), raw));
    forms.push(("SubjectPublicKeyInfo DER".into(), spki));
    forms.push((
        "PEM without its final newline".into(),
        spki_pem.trim_end().as_bytes().to_vec(),
    ));
    forms.push((
        "PEM with CRLF line ends".into(),
        spki_pem.replace('\n', "\r\n").into_bytes(),
    ));
    forms.push(("PEM".into(), spki_pem.into_bytes()));
    forms.push(("base64url key member".into(), encoded_member.into_bytes()));
    // The JWK exactly as served, re-serialized, and the whole JWKS document.
    let start = jwks_text.find("[{").expect("a JWKS with one key") + 1;
    let end = jwks_text.rfind("}]").expect("a JWKS with one key") + 1;
    forms.push((
        "JWK JSON as served".into(),
        jwks_text.as_bytes()[start..end].to_vec(),
    ));
    forms.push((
        "JWK JSON re-serialized".into(),
        serde_json::to_vec(jwk).unwrap(),
    ));
    forms.push(("JWKS document".into(), jwks_text.as_bytes().to_vec()));
    forms
}

// ---------------------------------------------------------------------------------------------
// Talking to the server

/// A server with a user, `alice`, and her genuine access token taken apart.
struct Victim {
    app: TestApp,
    token: String,
    refresh_token: String,
    header: Value,
    claims: Value,
    signature: String,
}

impl Victim {
    async fn spawn(algorithm: SigningAlgorithm) -> Self {
        Self::spawn_on(Backend::Memory, algorithm).await
    }

    async fn spawn_on(backend: Backend, algorithm: SigningAlgorithm) -> Self {
        let app = TestApp::spawn_with(
            backend,
            Options {
                algorithm,
                ..Options::default()
            },
        )
        .await;
        assert_eq!(
            app.register("alice", PASSWORD).await.status(),
            StatusCode::CREATED
        );
        let (token, refresh_token) = login(&app, "alice").await;
        let (h, p, signature) = split3(&token);
        let header = decode_segment(&h);
        assert_eq!(header["alg"], algorithm.as_str());
        assert_eq!(header["typ"], "at+jwt");
        let victim = Self {
            app,
            token,
            refresh_token,
            header,
            claims: decode_segment(&p),
            signature,
        };
        victim.still_accepted().await;
        victim
    }

    fn kid(&self) -> &str {
        self.header["kid"].as_str().unwrap()
    }

    /// The genuine token with its header changed; payload and signature kept.
    fn with_header(&self, change: impl FnOnce(&mut Value)) -> String {
        let mut header = self.header.clone();
        change(&mut header);
        compact(&header, &self.claims, &self.signature)
    }

    /// The genuine token with its claims changed; header and signature kept.
    fn with_claims(&self, change: impl FnOnce(&mut Value)) -> String {
        let mut claims = self.claims.clone();
        change(&mut claims);
        let (h, _, s) = split3(&self.token);
        format!("{h}.{}.{s}", b64_json(&claims))
    }

    async fn refused(&self, token: &str, case: &str) {
        refused(&self.app, &format!("Bearer {token}"), case).await;
    }

    async fn still_accepted(&self) {
        accepted(
            &self.app,
            &format!("Bearer {}", self.token),
            "the genuine token",
        )
        .await;
    }
}

/// Logs in with the token model: (access token, refresh token).
async fn login(app: &TestApp, username: &str) -> (String, String) {
    let r = app
        .request(Method::POST, "/v1/token")
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

async fn me(app: &TestApp, authorization: &str, case: &str) -> Response {
    let value = HeaderValue::from_str(authorization)
        .unwrap_or_else(|e| panic!("{case}: cannot send {authorization:?}: {e}"));
    app.request(Method::GET, "/v1/me")
        .header(AUTHORIZATION, value)
        .send()
        .await
        .unwrap()
}

/// `GET /v1/me` with this `Authorization` value is a generic 401 `invalid_token`.
async fn refused(app: &TestApp, authorization: &str, case: &str) {
    unauthorized(me(app, authorization, case).await, INVALID_TOKEN, case).await;
}

async fn accepted(app: &TestApp, authorization: &str, case: &str) -> Value {
    let r = me(app, authorization, case).await;
    assert_eq!(r.status(), StatusCode::OK, "{case}: should be accepted");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["auth"]["model"], "token", "{case}");
    body
}

/// The generic 401, with this challenge.
async fn unauthorized(r: Response, challenge: &str, case: &str) {
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "{case}: should be refused"
    );
    assert_eq!(
        r.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some(challenge),
        "{case}"
    );
    assert_eq!(
        r.headers()["content-type"],
        "application/problem+json",
        "{case}"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, generic_body(), "{case}: the body must not tell why");
}

/// A listener that counts connections, standing in for an attacker's key server.
async fn key_server() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (url, hits)
}

/// Writes a request by hand (for what no HTTP client will send) and returns the status line.
async fn raw_status(app: &TestApp, authorization_line: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "GET /v1/me HTTP/1.1\r\nHost: {}\r\n{authorization_line}\r\nConnection: close\r\n\r\n",
        app.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// The attacks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_is_refused_in_every_spelling() {
    let v = Victim::spawn(SigningAlgorithm::EdDSA).await;
    for alg in ["none", "None", "NONE", "nOnE"] {
        for header in [
            merged(v.header.clone(), &json!({"alg": alg})),
            without(merged(v.header.clone(), &json!({"alg": alg})), "kid"),
            json!({"alg": alg}),
        ] {
            let unsigned = format!("{}.{}", b64_json(&header), b64_json(&v.claims));
            v.refused(
                &format!("{unsigned}."),
                &format!("{header}, empty signature"),
            )
            .await;
            v.refused(&unsigned, &format!("{header}, no signature segment"))
                .await;
            v.refused(
                &compact(&header, &v.claims, &v.signature),
                &format!("{header}, the original signature"),
            )
            .await;
        }
    }
    v.still_accepted().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripped_altered_and_spliced_tokens_are_refused() {
    let v = Victim::spawn(SigningAlgorithm::EdDSA).await;
    assert_eq!(
        v.app.register("bob", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let (bob, _) = login(&v.app, "bob").await;
    let (_, bob_p, bob_s) = split3(&bob);
    let bob_claims = decode_segment(&bob_p);
    let (h, p, s) = split3(&v.token);
    let mut flipped = URL_SAFE_NO_PAD.decode(&s).unwrap();
    flipped[0] ^= 1;
    let exp = v.claims["exp"].as_i64().unwrap();

    let mut cases = vec![
        ("signature stripped, trailing dot", format!("{h}.{p}.")),
        ("signature stripped, no dot", format!("{h}.{p}")),
        (
            "sub changed to another user",
            v.with_claims(|c| c["sub"] = bob_claims["sub"].clone()),
        ),
        (
            "roles [\"admin\"] added",
            v.with_claims(|c| c["roles"] = json!(["admin"])),
        ),
        (
            "exp extended by a year",
            v.with_claims(|c| c["exp"] = json!(exp + 365 * 24 * 3600)),
        ),
        (
            "fid of another login",
            v.with_claims(|c| c["fid"] = bob_claims["fid"].clone()),
        ),
        (
            "jti changed",
            v.with_claims(|c| c["jti"] = json!("at_forged")),
        ),
        ("the claims re-encoded unchanged", v.with_claims(|_| {})),
        (
            "another token's payload under this signature",
            format!("{h}.{bob_p}.{s}"),
        ),
        ("another token's signature", format!("{h}.{p}.{bob_s}")),
        (
            "a signature bit flipped",
            format!("{h}.{p}.{}", b64(&flipped)),
        ),
        (
            "the signature truncated",
            format!("{h}.{p}.{}", &s[..s.len() - 2]),
        ),
        ("the signature doubled", format!("{h}.{p}.{s}{s}")),
        ("an empty payload", format!("{h}..{s}")),
        ("an empty header", format!(".{p}.{s}")),
        ("the payload `{}`", format!("{h}.{}.{s}", b64(b"{}"))),
    ];
    if let Some(altered) = with_noncanonical_last_char(&s) {
        cases.push((
            "the signature's unused trailing bits set",
            format!("{h}.{p}.{altered}"),
        ));
    }
    if let Some(altered) = with_noncanonical_last_char(&p) {
        cases.push((
            "the payload's unused trailing bits set",
            format!("{h}.{altered}.{s}"),
        ));
    }
    for (case, token) in &cases {
        assert_ne!(token, &v.token, "{case}");
        v.refused(token, case).await;
    }
    v.still_accepted().await;
    accepted(&v.app, &format!("Bearer {bob}"), "bob's genuine token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_keyed_with_the_public_key_is_refused() {
    for algorithm in [
        SigningAlgorithm::EdDSA,
        SigningAlgorithm::ES256,
        SigningAlgorithm::RS256,
    ] {
        let v = Victim::spawn(algorithm).await;
        let jwks_text = v
            .app
            .request(Method::GET, "/.well-known/jwks.json")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let jwks: Value = serde_json::from_str(&jwks_text).unwrap();
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == v.kid())
            .expect("the signing key is published")
            .clone();
        for (form, secret) in public_key_forms(&jwk, &jwks_text, &v.token) {
            for header in [
                json!({"alg": "HS256", "typ": "at+jwt", "kid": v.kid()}),
                json!({"alg": "HS256", "typ": "at+jwt"}),
                json!({"alg": "HS256", "typ": "JWT", "kid": v.kid()}),
            ] {
                v.refused(
                    &hs256(&header, &v.claims, &secret),
                    &format!("{algorithm} key: HS256 keyed with its {form}, header {header}"),
                )
                .await;
            }
        }
        v.still_accepted().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_with_guessable_secrets_is_refused() {
    const COMMON_SECRETS: [&str; 6] = [
        "",
        "secret",
        "password",
        "tessera",
        "changeme",
        "your-256-bit-secret",
    ];
    // On a server that signs with EdDSA, and on one that signs with HS256 (its secret is random).
    for algorithm in [SigningAlgorithm::EdDSA, SigningAlgorithm::HS256] {
        let v = Victim::spawn(algorithm).await;
        for secret in COMMON_SECRETS {
            for header in [
                json!({"alg": "HS256", "typ": "at+jwt", "kid": v.kid()}),
                json!({"alg": "HS256", "typ": "at+jwt"}),
            ] {
                v.refused(
                    &hs256(&header, &v.claims, secret.as_bytes()),
                    &format!("{algorithm} server: HS256 with secret {secret:?}, header {header}"),
                )
                .await;
            }
        }
        v.still_accepted().await;
        if algorithm == SigningAlgorithm::HS256 {
            // A shared secret has no public part: nothing is published.
            let r = v
                .app
                .request(Method::GET, "/.well-known/jwks.json")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::NOT_FOUND);
            assert!(!r.text().await.unwrap().contains("\"k\""));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_keys_and_key_urls_are_refused_and_never_fetched() {
    let v = Victim::spawn(SigningAlgorithm::EdDSA).await;
    let (url, hits) = key_server().await;
    // The listener really counts: one connection of our own.
    drop(tokio::net::TcpStream::connect(url.trim_start_matches("http://")).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    let attacker = Ed25519KeyPair::generate().unwrap();
    let attacker_x = b64(attacker.public_key().as_ref());
    let okp_jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": attacker_x, "kid": v.kid(), "alg": "EdDSA", "use": "sig"});
    let oct_secret = b"an attacker-chosen HMAC secret!!";
    let oct_jwk = json!({"kty": "oct", "k": b64(oct_secret), "kid": v.kid(), "alg": "HS256"});
    let attacker_spki = [&ED25519_SPKI_PREFIX[..], attacker.public_key().as_ref()].concat();
    let ed_header = merged(v.header.clone(), &json!({"alg": "EdDSA"}));
    let hs_header = merged(v.header.clone(), &json!({"alg": "HS256"}));
    let ed = |extra: Value| eddsa(&merged(ed_header.clone(), &extra), &v.claims, &attacker);
    let ed_no_kid = |extra: Value| {
        eddsa(
            &without(merged(ed_header.clone(), &extra), "kid"),
            &v.claims,
            &attacker,
        )
    };
    let hs = |extra: Value| hs256(&merged(hs_header.clone(), &extra), &v.claims, oct_secret);

    let cases = [
        ("embedded Ed25519 jwk", ed(json!({"jwk": okp_jwk}))),
        (
            "embedded Ed25519 jwk, no kid",
            ed_no_kid(json!({"jwk": okp_jwk})),
        ),
        ("embedded oct jwk, HS256", hs(json!({"jwk": oct_jwk}))),
        (
            "embedded oct jwk, HS256, no kid",
            hs256(
                &without(merged(hs_header.clone(), &json!({"jwk": oct_jwk})), "kid"),
                &v.claims,
                oct_secret,
            ),
        ),
        ("jku, EdDSA", ed(json!({"jku": format!("{url}/jwks.json")}))),
        (
            "jku, EdDSA, no kid",
            ed_no_kid(json!({"jku": format!("{url}/jwks.json")})),
        ),
        ("jku, HS256", hs(json!({"jku": format!("{url}/jwks.json")}))),
        ("x5u", ed(json!({"x5u": format!("{url}/key.pem")}))),
        (
            "x5u, no kid",
            ed_no_kid(json!({"x5u": format!("{url}/key.pem")})),
        ),
        ("x5c", ed(json!({"x5c": [STANDARD.encode(&attacker_spki)]}))),
        (
            "x5c, no kid",
            ed_no_kid(json!({"x5c": [STANDARD.encode(&attacker_spki)]})),
        ),
        (
            "jwk, jku and x5u together",
            ed(json!({"jwk": okp_jwk, "jku": url, "x5u": url})),
        ),
        ("crit", ed(json!({"crit": ["exp"]}))),
        (
            "jku added, the genuine signature kept",
            v.with_header(|h| h["jku"] = json!(format!("{url}/jwks.json"))),
        ),
        (
            "x5u added, the genuine signature kept",
            v.with_header(|h| h["x5u"] = json!(format!("{url}/key.pem"))),
        ),
    ];
    for (case, token) in &cases {
        v.refused(token, case).await;
    }
    // The embedded-key forgeries are well signed: only the server's refusal stops them.
    let (h, p, s) = split3(&cases[0].1);
    UnparsedPublicKey::new(&ED25519, attacker.public_key().as_ref())
        .verify(
            format!("{h}.{p}").as_bytes(),
            &URL_SAFE_NO_PAD.decode(s).unwrap(),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the server connected to a URL a token named"
    );
    v.still_accepted().await;
}

async fn hostile_unknown_and_retired_kids_are_refused(backend: Backend) {
    let v = Victim::spawn_on(backend, SigningAlgorithm::EdDSA).await;
    let random: [u8; 16] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0x5a);
    let kids = [
        json!(""),
        json!("../../etc/passwd"),
        json!("../../../../../../dev/null"),
        json!("/dev/null"),
        json!("' OR 1=1 --"),
        json!("k_' UNION SELECT 'secret' --"),
        json!(format!("k_{}", b64(random))),
        json!(v.kid().to_uppercase()),
        json!(format!("{} ", v.kid())),
        json!(format!("{}\u{0}", v.kid())),
        json!(123),
        json!(null),
        json!([v.kid()]),
        json!({"kid": v.kid()}),
    ];
    for kid in &kids {
        v.refused(
            &v.with_header(|h| h["kid"] = kid.clone()),
            &format!("kid {kid}, the genuine signature"),
        )
        .await;
        // What a verifier that reads keys from files or SQL by kid would accept.
        for secret in [&b""[..], b"secret", b"\n"] {
            v.refused(
                &hs256(
                    &json!({"alg": "HS256", "typ": "at+jwt", "kid": kid}),
                    &v.claims,
                    secret,
                ),
                &format!(
                    "kid {kid}, HS256 with {:?}",
                    String::from_utf8_lossy(secret)
                ),
            )
            .await;
        }
    }
    v.refused(
        &v.with_header(|h| {
            h.as_object_mut().unwrap().remove("kid");
        }),
        "no kid",
    )
    .await;

    // A rotated key still verifies its own tokens, but not another key's signature under its kid.
    let old_kid = v.kid().to_owned();
    v.app.tokens.rotate_key(None).await.unwrap();
    let (fresh, _) = login(&v.app, "alice").await;
    let (fh, fp, fs) = split3(&fresh);
    let fresh_kid = decode_segment(&fh)["kid"].as_str().unwrap().to_owned();
    assert_ne!(fresh_kid, old_kid);
    v.still_accepted().await;
    let mut relabelled = decode_segment(&fh);
    relabelled["kid"] = json!(old_kid);
    v.refused(
        &format!("{}.{fp}.{fs}", b64_json(&relabelled)),
        "the new key's signature under the rotated kid",
    )
    .await;

    // Retired: its tokens stop at once, and its kid is no way in.
    assert!(v.app.tokens.retire_key(&old_kid, None).await.unwrap());
    v.refused(&v.token, "a token of the retired key").await;
    v.refused(
        &format!("{}.{fp}.{fs}", b64_json(&relabelled)),
        "the live key's signature under the retired kid",
    )
    .await;
    v.refused(
        &v.with_header(|h| h["kid"] = json!(fresh_kid)),
        "the retired key's signature under the live kid",
    )
    .await;
    accepted(
        &v.app,
        &format!("Bearer {fresh}"),
        "a token of the live key",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_unknown_and_retired_kids_are_refused_memory() {
    hostile_unknown_and_retired_kids_are_refused(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_unknown_and_retired_kids_are_refused_sqlite() {
    hostile_unknown_and_retired_kids_are_refused(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_alg_or_typ_on_a_genuine_signature_is_refused() {
    let cases: [(SigningAlgorithm, &[&str]); 3] = [
        (
            SigningAlgorithm::RS256,
            &[
                "PS256", "PS384", "PS512", "RS384", "RS512", "HS256", "ES256", "EdDSA",
            ],
        ),
        (
            SigningAlgorithm::EdDSA,
            &["ES256", "ES384", "HS256", "RS256", "PS256", "Ed25519"],
        ),
        (
            SigningAlgorithm::ES256,
            &["ES384", "HS256", "RS256", "PS256", "EdDSA"],
        ),
    ];
    for (algorithm, substitutes) in cases {
        let v = Victim::spawn(algorithm).await;
        for alg in substitutes {
            v.refused(
                &v.with_header(|h| h["alg"] = json!(alg)),
                &format!("{algorithm} key, header alg {alg}"),
            )
            .await;
        }
        for typ in [
            json!("JWT"),
            json!("jwt"),
            json!("refresh+jwt"),
            json!("at+jwt+refresh"),
            json!(""),
            json!(null),
        ] {
            v.refused(
                &v.with_header(|h| h["typ"] = typ.clone()),
                &format!("{algorithm} key, typ {typ}"),
            )
            .await;
        }
        v.refused(
            &v.with_header(|h| {
                h.as_object_mut().unwrap().remove("typ");
            }),
            &format!("{algorithm} key, no typ"),
        )
        .await;
        v.still_accepted().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_compact_serializations_are_refused() {
    let v = Victim::spawn(SigningAlgorithm::EdDSA).await;
    let t = v.token.clone();
    let (h, p, s) = split3(&t);
    let pad = |segment: &str| match segment.len() % 4 {
        0 => format!("{segment}="),
        n => format!("{segment}{}", "=".repeat(4 - n)),
    };
    let oversized = v.with_claims(|c| c["pad"] = json!("x".repeat(9000)));
    let mut cases = vec![
        ("two segments: header.payload", format!("{h}.{p}")),
        ("two segments: payload.signature", format!("{p}.{s}")),
        ("two segments: header.signature", format!("{h}.{s}")),
        ("four segments: a trailing dot", format!("{t}.")),
        ("four segments: a leading dot", format!(".{t}")),
        ("four segments: the signature twice", format!("{t}.{s}")),
        ("five segments", format!("{t}..")),
        ("only dots", "..".to_owned()),
        ("one segment", h.clone()),
        ("padding on the header", format!("{}.{p}.{s}", pad(&h))),
        ("padding on the payload", format!("{h}.{}.{s}", pad(&p))),
        ("padding on the signature", format!("{h}.{p}.{}", pad(&s))),
        (
            "padding on every segment",
            format!("{}.{}.{}", pad(&h), pad(&p), pad(&s)),
        ),
        ("'=' after the token", format!("{t}=")),
        ("a space inside", format!("{h}.{p} .{s}")),
        (
            "a space inside the signature",
            format!("{h}.{p}.{} {}", &s[..10], &s[10..]),
        ),
        ("a tab inside", format!("{h}.\t{p}.{s}")),
        ("a tab before", format!("\t{t}")),
        ("two tokens", format!("{t} {t}")),
        ("two tokens, comma", format!("{t},{t}")),
        ("quoted", format!("\"{t}\"")),
        ("percent-encoded dots", t.replace('.', "%2E")),
        ("upper-cased", t.to_uppercase()),
        ("more than 8 KiB", oversized),
        (
            "the flattened JSON serialization",
            json!({"protected": h, "payload": p, "signature": s}).to_string(),
        ),
    ];
    let standard_alphabet = t.replace('-', "+").replace('_', "/");
    if standard_alphabet != t {
        cases.push(("the standard base64 alphabet", standard_alphabet));
    }
    for (case, token) in &cases {
        v.refused(token, case).await;
    }

    // Bytes that are not visible ASCII.
    let mut non_ascii = format!("Bearer {h}.{p}.").into_bytes();
    non_ascii.extend_from_slice(&[0xc3, 0xa9]);
    non_ascii.extend_from_slice(s.as_bytes());
    let r = v
        .app
        .request(Method::GET, "/v1/me")
        .header(AUTHORIZATION, HeaderValue::from_bytes(&non_ascii).unwrap())
        .send()
        .await
        .unwrap();
    unauthorized(r, INVALID_TOKEN, "a non-ASCII byte inside").await;

    // Line breaks cannot travel in a header value: written by hand, the server refuses the request
    // whole; and the verifier refuses them wherever they come from.
    assert_eq!(
        raw_status(&v.app, &format!("Authorization: Bearer {t}")).await,
        "HTTP/1.1 200 OK",
        "the hand-written request works with the genuine token"
    );
    for (case, line) in [
        (
            "a bare LF inside",
            format!("Authorization: Bearer {h}.{p}\n.{s}"),
        ),
        (
            "a CR inside",
            format!("Authorization: Bearer {h}.{p}\r.{s}"),
        ),
        (
            "a folded line inside",
            format!("Authorization: Bearer {h}.{p}\r\n .{s}"),
        ),
    ] {
        let status = raw_status(&v.app, &line).await;
        assert!(
            status.starts_with("HTTP/1.1 400") || status.starts_with("HTTP/1.1 401"),
            "{case}: {status:?}"
        );
    }
    for token in [
        format!("{t}\n"),
        format!("\n{t}"),
        format!("{t}\r\n"),
        format!("{h}.{p}\n.{s}"),
        format!("{h}\n.{p}.{s}"),
        format!(" {t}"),
        format!("{t} "),
        format!("{t}\t"),
        format!("{t}\u{a0}"),
        format!("{t}\u{0}"),
    ] {
        assert!(
            v.app.tokens.verify(&token).is_err(),
            "the verifier accepted {token:?}"
        );
    }
    v.still_accepted().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive_and_strict() {
    let v = Victim::spawn(SigningAlgorithm::EdDSA).await;
    let t = v.token.clone();
    // RFC 7235 §2.1: auth schemes are case-insensitive.
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        accepted(&v.app, &format!("{scheme} {t}"), scheme).await;
    }
    // Whitespace after the token is not part of the field value (RFC 9110 §5.5): the server is
    // handed exactly the genuine credential.
    accepted(&v.app, &format!("Bearer {t} "), "a trailing space").await;
    accepted(&v.app, &format!("Bearer {t}\t"), "a trailing tab").await;
    let basic = |s: String| format!("Basic {}", STANDARD.encode(s));
    for (case, value) in [
        ("two spaces after the scheme", format!("Bearer  {t}")),
        ("three spaces after the scheme", format!("Bearer   {t}")),
        ("a tab after the scheme", format!("Bearer\t{t}")),
        ("no space after the scheme", format!("Bearer{t}")),
        ("a comma after the scheme", format!("Bearer, {t}")),
        ("the scheme alone", "Bearer".to_owned()),
        ("the scheme and a space", "Bearer ".to_owned()),
        ("a word after the token", format!("Bearer {t} extra")),
        ("two credentials", format!("Bearer {t}, Bearer {t}")),
        ("an auth-param", format!("Bearer token={t}")),
        ("the token alone", t.clone()),
        ("scheme Token", format!("Token {t}")),
        ("scheme JWT", format!("JWT {t}")),
        ("scheme Bearers", format!("Bearers {t}")),
        (
            "Basic with the password",
            basic(format!("alice:{PASSWORD}")),
        ),
        ("Basic with the token as user", basic(format!("{t}:"))),
        (
            "Basic with the token as password",
            basic(format!("alice:{t}")),
        ),
    ] {
        refused(&v.app, &value, case).await;
    }
    // The DPoP scheme promises a token bound to a key (RFC 9449): this one is not, and the
    // refusal says how to send it.
    let r = me(&v.app, &format!("DPoP {t}"), "scheme DPoP").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.starts_with("DPoP ") && challenge.contains("error=\"invalid_token\""),
        "{challenge}"
    );
    v.still_accepted().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_read_from_the_authorization_header_only() {
    let v = Victim::spawn(SigningAlgorithm::EdDSA).await;
    let app = &v.app;
    app.accounts
        .create("root", &Password::new(PASSWORD), vec!["admin".into()])
        .await
        .unwrap();
    let (admin, _) = login(app, "root").await;
    let form = "application/x-www-form-urlencoded";
    let key_count = || async { app.tokens.keyring().list().await.unwrap().len() };
    assert_eq!(key_count().await, 1);

    for token in [&v.token, &admin] {
        for (case, request) in [
            (
                "GET, query access_token",
                app.request(Method::GET, &format!("/v1/me?access_token={token}")),
            ),
            (
                "GET, form body access_token",
                app.request(Method::GET, "/v1/me")
                    .header("content-type", form)
                    .body(format!("access_token={token}")),
            ),
            (
                "GET, cookie access_token",
                app.request(Method::GET, "/v1/me")
                    .header("cookie", format!("access_token={token}")),
            ),
            (
                "GET, the token as the session cookie",
                app.request(Method::GET, "/v1/me")
                    .header("cookie", format!("{}={token}", common::COOKIE)),
            ),
            (
                "POST an admin route, query access_token",
                app.request(
                    Method::POST,
                    &format!("/v1/admin/keys/rotate?access_token={token}"),
                ),
            ),
            (
                "POST an admin route, form body access_token",
                app.request(Method::POST, "/v1/admin/keys/rotate")
                    .header("content-type", form)
                    .body(format!("access_token={token}")),
            ),
        ] {
            let r = request.send().await.unwrap();
            unauthorized(r, NO_CREDENTIALS, case).await;
        }
    }
    assert_eq!(key_count().await, 1, "no key was rotated");
    // The same admin token in the header does rotate: the refusals above were about where it was.
    let r = app
        .request(Method::POST, "/v1/admin/keys/rotate")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(key_count().await, 2);
    v.still_accepted().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_requests_need_no_csrf_token_and_cookie_routes_ignore_bearers() {
    let v = Victim::spawn(SigningAlgorithm::EdDSA).await;
    let app = &v.app;
    app.accounts
        .create("root", &Password::new(PASSWORD), vec!["admin".into()])
        .await
        .unwrap();
    let (admin, _) = login(app, "root").await;

    // A bearer request is judged by its token, not by CSRF rules: a non-admin gets 403 admin-only,
    // even without a CSRF token and with cross-site markers.
    let r = app
        .request(Method::POST, "/v1/admin/keys/rotate")
        .bearer_auth(&v.token)
        .header("origin", "https://evil.example")
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    let body = common::problem(r, StatusCode::FORBIDDEN).await;
    assert_eq!(body["type"], "urn:tessera:problem:admin-only");
    let r = app
        .request(Method::POST, "/v1/admin/keys/rotate")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "an admin bearer needs no CSRF token"
    );

    // Cookie-only routes ignore a bearer token: it neither authenticates nor skips the CSRF check.
    let r = app
        .request(Method::DELETE, "/v1/session")
        .bearer_auth(&v.token)
        .send()
        .await
        .unwrap();
    unauthorized(
        r,
        NO_CREDENTIALS,
        "DELETE /v1/session with a bearer token only",
    )
    .await;
    let r = app
        .request(Method::PATCH, "/v1/session/data")
        .bearer_auth(&v.token)
        .header("content-type", "application/merge-patch+json")
        .body("{\"a\":1}")
        .send()
        .await
        .unwrap();
    unauthorized(
        r,
        NO_CREDENTIALS,
        "PATCH /v1/session/data with a bearer token only",
    )
    .await;
    let browser = app.login("alice", PASSWORD).await;
    let r = app
        .as_browser(&browser, Method::DELETE, "/v1/session", false)
        .bearer_auth(&v.token)
        .send()
        .await
        .unwrap();
    let body = common::problem(r, StatusCode::FORBIDDEN).await;
    assert_eq!(body["type"], "urn:tessera:problem:csrf-token-missing");
    let r = app
        .as_browser(&browser, Method::GET, "/v1/session", false)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the session survived");
    let r = app
        .as_browser(&browser, Method::DELETE, "/v1/session", true)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    v.still_accepted().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_checked_on_tokens_the_server_signed() {
    let v = Victim::spawn(SigningAlgorithm::EdDSA).await;
    let now = v.app.clock.now().unix_seconds();
    let sign = |typ: Option<&str>, claims: &Value| v.app.tokens.sign_for_tests(typ, claims);
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = v.claims.clone();
        change(&mut claims);
        claims
    };

    // Controls: the hook signs what the server would, and the 5 s leeway is honoured.
    for (case, claims) in [
        ("the genuine claims re-signed", v.claims.clone()),
        (
            "exp 3 s ago, inside the leeway",
            with(&|c| c["exp"] = json!(now - 3)),
        ),
        (
            "nbf in 3 s, inside the leeway",
            with(&|c| c["nbf"] = json!(now + 3)),
        ),
    ] {
        accepted(
            &v.app,
            &format!("Bearer {}", sign(Some("at+jwt"), &claims)),
            case,
        )
        .await;
    }
    accepted(
        &v.app,
        &format!("Bearer {}", sign(Some("application/at+jwt"), &v.claims)),
        "typ application/at+jwt (RFC 9068)",
    )
    .await;

    let exp = v.claims["exp"].as_i64().unwrap();
    let origin = v.app.origin.clone();
    let cases: Vec<(&str, Value)> = vec![
        (
            "exp 6 s ago, past the leeway",
            with(&|c| c["exp"] = json!(now - 6)),
        ),
        ("exp an hour ago", with(&|c| c["exp"] = json!(now - 3600))),
        ("nbf in a minute", with(&|c| c["nbf"] = json!(now + 60))),
        (
            "nbf in a year",
            with(&|c| c["nbf"] = json!(now + 365 * 24 * 3600)),
        ),
        (
            "exp as a string",
            with(&|c| c["exp"] = json!(exp.to_string())),
        ),
        (
            "exp as a float",
            with(&|c| c["exp"] = json!(exp as f64 + 0.5)),
        ),
        (
            "exp as an integral float",
            with(&|c| c["exp"] = json!(exp as f64)),
        ),
        ("exp null", with(&|c| c["exp"] = Value::Null)),
        ("exp missing", without(v.claims.clone(), "exp")),
        (
            "nbf as a string",
            with(&|c| c["nbf"] = json!(now.to_string())),
        ),
        ("nbf missing", without(v.claims.clone(), "nbf")),
        ("iat missing", without(v.claims.clone(), "iat")),
        ("sub missing", without(v.claims.clone(), "sub")),
        ("sub of no user", with(&|c| c["sub"] = json!("usr_nobody"))),
        (
            "aud of another service",
            with(&|c| c["aud"] = json!("billing")),
        ),
        (
            "aud as a list without us",
            with(&|c| c["aud"] = json!(["billing"])),
        ),
        ("aud empty", with(&|c| c["aud"] = json!(""))),
        ("aud missing", without(v.claims.clone(), "aud")),
        (
            "iss of another server",
            with(&|c| c["iss"] = json!("https://evil.example")),
        ),
        (
            "iss with a trailing slash",
            with(&|c| c["iss"] = json!(format!("{origin}/"))),
        ),
        ("iss empty", with(&|c| c["iss"] = json!(""))),
        ("iss missing", without(v.claims.clone(), "iss")),
    ];
    for (case, claims) in &cases {
        v.refused(&sign(Some("at+jwt"), claims), case).await;
    }
    for typ in [
        Some("JWT"),
        Some("jwt"),
        Some("refresh+jwt"),
        Some(""),
        None,
    ] {
        v.refused(&sign(typ, &v.claims), &format!("typ {typ:?}, well signed"))
            .await;
    }

    // The admin role comes from the account, not from a claim, even a well-signed one.
    let admin_claims = with(&|c| c["roles"] = json!(["admin"]));
    let r = v
        .app
        .request(Method::POST, "/v1/admin/keys/rotate")
        .bearer_auth(sign(Some("at+jwt"), &admin_claims))
        .send()
        .await
        .unwrap();
    common::problem(r, StatusCode::FORBIDDEN).await;
    v.still_accepted().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_refused() {
    let v = Victim::spawn(SigningAlgorithm::EdDSA).await;
    let lifetime = v.claims["exp"].as_i64().unwrap() - v.claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 600);
    // expires_in 600 s, leeway 5 s: still good at 604 s, refused from 605 s.
    v.app.clock.advance(Duration::from_secs(604));
    v.still_accepted().await;
    v.app.clock.advance(Duration::from_secs(2));
    v.refused(&v.token, "600 s + 5 s leeway + 1 s after issue")
        .await;
    // Altering an expired token does not revive it.
    v.refused(
        &v.with_claims(|c| c["exp"] = json!(c["exp"].as_i64().unwrap() + 3600)),
        "an expired token with exp pushed out",
    )
    .await;
    let (fresh, _) = login(&v.app, "alice").await;
    accepted(&v.app, &format!("Bearer {fresh}"), "a fresh token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_and_other_instances_tokens_are_refused() {
    let a = Victim::spawn(SigningAlgorithm::EdDSA).await;
    let b = Victim::spawn(SigningAlgorithm::EdDSA).await;
    assert_ne!(a.kid(), b.kid());
    // B knows A's user too (as with a shared user directory), so only the key can refuse A's token.
    let mut twin = b
        .app
        .stores
        .users
        .user_by_username(&Username::parse("alice").unwrap())
        .await
        .unwrap()
        .unwrap();
    twin.id = UserId::parse(a.claims["sub"].as_str().unwrap()).unwrap();
    twin.username = Username::parse("alice-twin").unwrap();
    b.app.stores.users.create_user(&twin).await.unwrap();
    refused(
        &b.app,
        &format!("Bearer {}", a.token),
        "instance A's token at B",
    )
    .await;
    refused(
        &a.app,
        &format!("Bearer {}", b.token),
        "instance B's token at A",
    )
    .await;
    refused(
        &b.app,
        &format!("Bearer {}", a.with_header(|h| h["kid"] = json!(b.kid()))),
        "instance A's token relabelled with B's kid",
    )
    .await;

    for (case, token) in [
        ("the refresh token", a.refresh_token.clone()),
        (
            "the refresh token, dotted",
            format!("{}..", a.refresh_token),
        ),
        (
            "the refresh token as a JWT payload",
            compact(
                &a.header,
                &json!({"refresh_token": a.refresh_token}),
                &a.signature,
            ),
        ),
    ] {
        a.refused(&token, case).await;
    }
    // Presenting it as a bearer neither worked nor used it up.
    let r = a
        .app
        .request(Method::POST, "/v1/token/refresh")
        .json(&json!({"refresh_token": a.refresh_token}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    a.still_accepted().await;
    b.still_accepted().await;
}
