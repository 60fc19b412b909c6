//! `tessera serve` under a path (`http.mount`) and with cookies of another name
//! (`http.cookie_name`): every route under the path, the cookies under the new names (and the
//! default names ignored), problem documents outside the path, and invalid values refused at
//! start naming the key.

mod harness;

use harness::{NO_ENV, Node, add_user, run};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The value of the cookie `name` among a response's `Set-Cookie` headers, with its attributes.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_under_a_path_with_cookies_of_another_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tessera.toml"),
        "database = \"sqlite://tessera.db\"\n[http]\nmount = \"/auth/\"\ncookie_name = \"shop\"\n",
    )
    .unwrap();
    add_user(dir.path(), NO_ENV, "alice", false, PASSWORD);
    let node = Node::start(dir.path(), &[], NO_ENV);
    let c = client();

    assert_eq!(
        c.get(node.url("/auth/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // Outside the path: a problem document, not Tessera's routes.
    for path in ["/healthz", "/v1/me", "/", "/authx/healthz"] {
        let outside = c.get(node.url(path)).send().await.unwrap();
        assert_eq!(outside.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            outside.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    // The playground is off under a mount (it is served at the root only).
    assert_eq!(
        c.get(node.url("/auth/")).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let doc: Value = c
        .get(node.url("/auth/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["servers"][0]["url"], "/auth");
    assert_eq!(
        doc["components"]["securitySchemes"]["session_cookie"]["name"],
        "__Host-shop"
    );

    // A session login sets __Host-shop, with Path=/ whatever the mount.
    let login = c
        .post(node.url("/auth/v1/session/login"))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = set_cookie(&login, "__Host-shop").expect("the session cookie");
    assert!(
        cookie.contains("Path=/;") || cookie.ends_with("Path=/"),
        "{cookie}"
    );
    assert!(set_cookie(&login, "__Host-tessera").is_none());
    assert!(set_cookie(&login, "__Host-shop-device").is_some());
    let pair = cookie.split(';').next().unwrap().to_owned();
    let me = c
        .get(node.url("/auth/v1/me"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    // The same secret under the default name is not this server's cookie.
    let value = pair.split_once('=').unwrap().1;
    let default_name = c
        .get(node.url("/auth/v1/me"))
        .header("cookie", format!("__Host-tessera={value}"))
        .send()
        .await
        .unwrap();
    assert_eq!(default_name.status(), StatusCode::UNAUTHORIZED);

    // Hybrid: both cookies under the new name.
    let hybrid = c
        .post(node.url("/auth/v1/hybrid/login"))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(hybrid.status(), StatusCode::OK);
    assert!(set_cookie(&hybrid, "__Host-shop-at").is_some());
    assert!(set_cookie(&hybrid, "__Host-shop-rt").is_some());

    // Access tokens name the public URL with the path as their issuer.
    let token: Value = c
        .post(node.url("/auth/v1/token"))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().unwrap();
    let me = c
        .get(node.url("/auth/v1/me"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(access.split('.').nth(1).unwrap())
        .unwrap();
    let claims: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(claims["iss"], "http://localhost:8080/auth");
    node.assert_no_panic();
}

#[test]
fn invalid_mount_or_cookie_name_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (toml, key) in [
        ("[http]\nmount = \"auth\"\n", "http.mount"),
        ("[http]\nmount = \"/a/../b\"\n", "http.mount"),
        ("[http]\nmount = \"/a b\"\n", "http.mount"),
        ("[http]\ncookie_name = \"a;b\"\n", "http.cookie_name"),
        ("[http]\ncookie_name = \"\"\n", "http.cookie_name"),
        (
            "playground = true\n[http]\nmount = \"/auth\"\n",
            "playground",
        ),
    ] {
        std::fs::write(
            dir.path().join("tessera.toml"),
            format!("database = \"memory\"\n{toml}"),
        )
        .unwrap();
        let out = run(dir.path(), &["config", "check"], NO_ENV);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{toml}");
        assert!(err.contains(key), "{toml}: {err}");
    }
}
