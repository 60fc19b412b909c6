//! `tessera serve` with `tls.cert` and `tls.key`: HTTPS with HSTS, certificates reloaded (files
//! replaced, SIGHUP) without dropping open connections, bad certificates refused at start and at
//! reload, and the plain-HTTP redirect listener. The certificates are made by the test (rcgen),
//! signed by a CA of its own that the clients trust.

mod harness;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{Node, free_port};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

/// How long a test waits for something the server logs before failing.
const PATIENCE: Duration = Duration::from_secs(30);

/// A test CA and the certificates it signs.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate (for `localhost` and 127.0.0.1) with its key.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Tessera test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { ca }
    }

    fn ca_der(&self) -> Vec<u8> {
        self.ca.der().to_vec()
    }

    fn leaf(&self, name: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// Where the server reads its certificate and key.
struct Files {
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn in_dir(dir: &Path) -> Self {
        Self {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    /// Replaces both files as a deployment tool would: each written aside, then renamed over
    /// the old one.
    fn install(&self, cert_pem: &str, key_pem: &str) {
        for (path, text) in [(&self.key, key_pem), (&self.cert, cert_pem)] {
            let aside = path.with_extension("new");
            std::fs::write(&aside, text).unwrap();
            std::fs::rename(&aside, path).unwrap();
        }
    }
}

/// The environment of a TLS server on `port` with these files and in-memory storage.
fn tls_env(files: &Files, port: u16, extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("TESSERA_DATABASE".to_owned(), "memory".to_owned()),
        ("TESSERA_PLAYGROUND".to_owned(), "false".to_owned()),
        (
            "TESSERA_PUBLIC_URL".to_owned(),
            format!("https://localhost:{port}"),
        ),
        (
            "TESSERA_TLS__CERT".to_owned(),
            files.cert.display().to_string(),
        ),
        (
            "TESSERA_TLS__KEY".to_owned(),
            files.key.display().to_string(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    env
}

/// A reqwest client that trusts only the test CA and reaches `localhost` on loopback.
fn https_client(pki: &Pki, node: &Node) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&pki.ca_der()).unwrap()])
        .resolve("localhost", node.addr)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Waits until the server's log has a line containing every one of `needles`; returns it.
fn wait_for_log(node: &Node, needles: &[&str]) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(line) = node
            .log_text()
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needles:?}:\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many log lines contain `needle`.
fn count_log(node: &Node, needle: &str) -> usize {
    node.log_text()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// An HTTP/1.1 keep-alive connection over TLS, driven by hand, so the test knows it is one and
/// the same connection throughout.
struct Connection {
    stream: TlsStream<TcpStream>,
}

impl Connection {
    async fn open(pki: &Pki, node: &Node) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(pki.ca_der())).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(node.addr).await.unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        Self { stream }
    }

    /// The certificate the server presented for this connection.
    fn peer_certificate(&self) -> Vec<u8> {
        let (_, session) = self.stream.get_ref();
        session.peer_certificates().unwrap()[0].to_vec()
    }

    /// `GET path` on this connection; the status and the body.
    async fn get(&mut self, path: &str) -> (u16, String) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        self.stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = response.parse(&buf).unwrap() {
                let status = response.code.unwrap();
                let length: usize = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                    .expect("a Content-Length");
                assert!(
                    !response.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("connection") && h.value == b"close"
                    }),
                    "the server closes the connection"
                );
                while buf.len() < head + length {
                    self.read_more(&mut buf).await;
                }
                let body = String::from_utf8_lossy(&buf[head..head + length]).into_owned();
                return (status, body);
            }
            self.read_more(&mut buf).await;
        }
    }

    async fn read_more(&mut self, buf: &mut Vec<u8>) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, self.stream.read(&mut chunk))
            .await
            .expect("the server answers")
            .unwrap();
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_served_with_hsts() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let files = Files::in_dir(dir.path());
    let leaf = pki.leaf("first");
    files.install(&leaf.cert_pem, &leaf.key_pem);
    let port = free_port();
    let node = Node::start_on(dir.path(), port, &[], &tls_env(&files, port, &[]));
    assert!(node.base.starts_with("https://"), "{}", node.base);
    let client = https_client(&pki, &node);

    let r = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let hsts = r
        .headers()
        .get("strict-transport-security")
        .expect("HSTS on an https response")
        .to_str()
        .unwrap();
    assert!(hsts.starts_with("max-age="), "{hsts}");
    // Problem documents too.
    let r = client
        .get(format!("https://localhost:{port}/no/such/path"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.headers().contains_key("strict-transport-security"));

    // Handlers still see the client's socket address: the login records it.
    let base = format!("https://localhost:{port}");
    let password = "correct horse battery staple";
    let r = client
        .post(format!("{base}/v1/users"))
        .json(&serde_json::json!({"username": "alice", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let pair: serde_json::Value = client
        .post(format!("{base}/v1/token"))
        .json(&serde_json::json!({"username": "alice", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let logins = client
        .get(format!("{base}/v1/sessions"))
        .bearer_auth(pair["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(logins.contains(r#""ip":"127.0.0.1""#), "{logins}");

    // Plain HTTP on the TLS port gets no answer from the API.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let attempt = plain
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    assert!(
        attempt.is_err(),
        "plain HTTP was answered: {:?}",
        attempt.map(|r| r.status())
    );
    node.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_reloaded_without_dropping_connections() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let files = Files::in_dir(dir.path());
    let first = pki.leaf("first");
    files.install(&first.cert_pem, &first.key_pem);
    let port = free_port();
    let node = Node::start_on(dir.path(), port, &[], &tls_env(&files, port, &[]));

    let mut kept = Connection::open(&pki, &node).await;
    assert_eq!(kept.peer_certificate(), first.der);
    assert_eq!(kept.get("/healthz").await.0, 200);

    // The files are replaced: new connections get the new certificate; the open one goes on.
    let second = pki.leaf("second");
    files.install(&second.cert_pem, &second.key_pem);
    wait_for_log(&node, &["TLS certificate reloaded", "the files changed"]);
    assert_eq!(kept.get("/healthz").await.0, 200);
    let fresh = Connection::open(&pki, &node).await;
    assert_eq!(fresh.peer_certificate(), second.der);
    assert_eq!(kept.peer_certificate(), first.der);

    // SIGHUP reloads too, and still drops nobody.
    node.signal("-HUP");
    wait_for_log(&node, &["TLS certificate reloaded", "SIGHUP"]);
    assert_eq!(kept.get("/healthz").await.0, 200);
    let mut after_hup = Connection::open(&pki, &node).await;
    assert_eq!(after_hup.peer_certificate(), second.der);
    assert_eq!(after_hup.get("/healthz").await.0, 200);

    // A broken certificate file is refused, naming the file; the previous one stays in use.
    std::fs::write(
        &files.cert,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n",
    )
    .unwrap();
    let refusal = wait_for_log(&node, &["refused to reload the TLS certificate"]);
    assert!(refusal.contains("cert.pem"), "{refusal}");
    assert!(refusal.contains("ERROR"), "{refusal}");
    let fresh = Connection::open(&pki, &node).await;
    assert_eq!(fresh.peer_certificate(), second.der);
    assert_eq!(kept.get("/healthz").await.0, 200);

    // A certificate with someone else's key: refused, naming the key file.
    let third = pki.leaf("third");
    let mismatches_before = count_log(&node, "is not the private key of the certificate");
    files.install(&third.cert_pem, &first.key_pem);
    let mismatch = wait_for_log(&node, &["is not the private key of the certificate"]);
    assert!(mismatch.contains("key.pem"), "{mismatch}");
    assert!(
        !mismatch.contains("PRIVATE KEY"),
        "the key is never logged: {mismatch}"
    );
    // The refusal is reported once, not every second.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        count_log(&node, "is not the private key of the certificate") - mismatches_before,
        1
    );
    let fresh = Connection::open(&pki, &node).await;
    assert_eq!(fresh.peer_certificate(), second.der);

    // Mended: the third certificate with its own key is taken.
    files.install(&third.cert_pem, &third.key_pem);
    wait_for_log(&node, &["TLS certificate reloaded", "the files changed"]);
    let deadline = Instant::now() + PATIENCE;
    while Connection::open(&pki, &node).await.peer_certificate() != third.der {
        assert!(
            Instant::now() < deadline,
            "the third certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(kept.get("/healthz").await.0, 200);
    assert_eq!(kept.peer_certificate(), first.der);
    node.assert_no_panic();

    // A graceful stop does not wait on the idle connection still open.
    node.signal("-TERM");
    wait_for_log(&node, &["tessera::serve: stopped"]);
    let log = node.log_text();
    assert!(
        !log.contains("shutdown grace period"),
        "the stop waited for the grace period:\n{log}"
    );
    drop(kept);
    assert!(node.wait(Duration::from_secs(15)).success());
}

#[test]
fn a_bad_certificate_or_key_at_start_stops_the_server_naming_the_file() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let files = Files::in_dir(dir.path());
    let good = pki.leaf("good");
    let other = pki.leaf("other");
    let cases: [(&str, &str, &str); 4] = [
        ("not a certificate\n", &good.key_pem, "cert.pem"),
        (&good.cert_pem, "no key here\n", "key.pem"),
        // A key, but not the certificate's.
        (&good.cert_pem, &other.key_pem, "key.pem"),
        // A key where the certificate should be.
        (&good.key_pem, &good.key_pem, "cert.pem"),
    ];
    for (cert, key, named) in cases {
        files.install(cert, key);
        let env = tls_env(&files, free_port(), &[]);
        let out = harness::run(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(named), "{named} is not named: {stderr}");
        assert!(!stderr.contains("listening on"), "{stderr}");
        assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
    }
    // A missing file is named too.
    std::fs::remove_file(&files.key).unwrap();
    let env = tls_env(&files, free_port(), &[]);
    let out = harness::run(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("key.pem"), "{stderr}");
    // And TLS with an http public URL is a configuration error.
    files.install(&good.cert_pem, &good.key_pem);
    let mut env = tls_env(&files, free_port(), &[]);
    env.retain(|(k, _)| k != "TESSERA_PUBLIC_URL");
    let out = harness::run(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("public_url"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redirect_listener_sends_plain_http_to_https() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let files = Files::in_dir(dir.path());
    let leaf = pki.leaf("redirect");
    files.install(&leaf.cert_pem, &leaf.key_pem);
    let port = free_port();
    let redirect_port = free_port();
    let env = tls_env(
        &files,
        port,
        &[(
            "TESSERA_TLS__REDIRECT_LISTEN",
            format!("127.0.0.1:{redirect_port}"),
        )],
    );
    let node = Node::start_on(dir.path(), port, &[], &env);
    wait_for_log(&node, &["redirecting plain HTTP"]);
    let plain = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{redirect_port}");
    for (method, path) in [
        (reqwest::Method::GET, "/healthz"),
        (reqwest::Method::GET, "/v1/me?x=1&y=two"),
        (reqwest::Method::POST, "/v1/session/login"),
        (reqwest::Method::HEAD, "/"),
    ] {
        let r = plain
            .request(method.clone(), format!("{base}{path}"))
            .header("host", "evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::PERMANENT_REDIRECT,
            "{method} {path}"
        );
        assert_eq!(
            r.headers()["location"],
            format!("https://localhost:{port}{path}").as_str(),
            "{method} {path}"
        );
    }
    // Following it reaches the API over HTTPS.
    let r = https_client(&pki, &node)
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    node.assert_no_panic();
}
