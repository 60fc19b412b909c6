//! A small W3C WebDriver client over reqwest: starts chromedriver on a free loopback port, opens one
//! headless Chromium with a fresh profile, and ends both when dropped, panics included.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";
pub(crate) const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How W3C WebDriver names an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub(crate) struct Chromium {
    http: reqwest::Client,
    driver: SocketAddr,
    session: Option<String>,
    /// The browser's own process, in case chromedriver cannot end it.
    browser_pid: Option<u32>,
    chromedriver: Child,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Starts chromedriver and a headless Chromium that logs network events (`performance_log`).
    /// Fails, never skips, when either is missing.
    pub(crate) async fn start() -> Self {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).is_file(),
                "{path} is missing: the browser tests need Debian's `{package}` package \
                 (.ci/run installs it; or `apt-get install chromium chromium-driver`)"
            );
        }
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().unwrap().port()
        };
        let chromedriver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut this = Self {
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            driver: SocketAddr::from(([127, 0, 0, 1], port)),
            session: None,
            browser_pid: None,
            chromedriver,
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = this
                .http
                .get(format!("http://{}/status", this.driver))
                .send()
                .await;
            if let Ok(r) = status
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                break;
            }
            if let Some(exit) = this.chromedriver.try_wait().unwrap() {
                panic!("{CHROMEDRIVER} exited at start: {exit}");
            }
            assert!(
                Instant::now() < deadline,
                "{CHROMEDRIVER} never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile_dir = this._profile.path().display().to_string();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "timeouts": {"script": 20_000, "pageLoad": 20_000},
            "goog:loggingPrefs": {"performance": "ALL"},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-quic", "--no-proxy-server",
                    format!("--user-data-dir={profile_dir}"),
                    // Only the two test sites resolve: the browser reaches nothing else.
                    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
                ],
                "perfLoggingPrefs": {"enableNetwork": true, "enablePage": false},
            },
        }}});
        let created = this
            .call(reqwest::Method::POST, "/session", Some(capabilities))
            .await
            .unwrap_or_else(|e| panic!("chromedriver could not start {CHROMIUM}: {e}"));
        this.session = Some(
            created["sessionId"]
                .as_str()
                .expect("a session id")
                .to_owned(),
        );
        this.browser_pid = created["capabilities"]["goog:processID"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok());
        this
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut rb = self
            .http
            .request(method.clone(), format!("http://{}{path}", self.driver));
        if let Some(body) = body {
            rb = rb.json(&body);
        }
        let response = rb
            .send()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status();
        let mut v: Value = response
            .json()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let value = v["value"].take();
        if !status.is_success() || value.get("error").is_some() {
            return Err(format!(
                "{method} {path} → {status}: {} {}",
                value["error"],
                value["message"].as_str().unwrap_or_default()
            ));
        }
        Ok(value)
    }

    /// A command on this browser session; a WebDriver error fails the test.
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let session = self.session.as_deref().expect("a session");
        self.call(method, &format!("/session/{session}{path}"), body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver: {e}"))
    }

    pub(crate) async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub(crate) async fn current_url(&self) -> String {
        let v = self.command(reqwest::Method::GET, "/url", None).await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the current page.
    pub(crate) async fn execute(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Like `execute`, for a script that calls its last argument with the result.
    pub(crate) async fn execute_async(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().expect("an element id").to_owned()
    }

    pub(crate) async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    pub(crate) async fn text(&self, css: &str) -> String {
        let id = self.element(css).await;
        let v = self
            .command(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Clears an input and types `text` into it.
    pub(crate) async fn fill(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// The cookies the browser would send to the current page's URL, as it stored them.
    pub(crate) async fn cookies(&self) -> Vec<Value> {
        let v = self.command(reqwest::Method::GET, "/cookie", None).await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// The cookies the browser holds for `url`, read in a second window so the current page (and
    /// its script's memory) stays as it is.
    pub(crate) async fn cookies_at(&self, url: &str) -> Vec<Value> {
        let original = self.command(reqwest::Method::GET, "/window", None).await;
        let opened = self
            .command(
                reqwest::Method::POST,
                "/window/new",
                Some(json!({"type": "tab"})),
            )
            .await;
        self.command(
            reqwest::Method::POST,
            "/window",
            Some(json!({"handle": opened["handle"]})),
        )
        .await;
        self.goto(url).await;
        let cookies = self.cookies().await;
        self.command(reqwest::Method::DELETE, "/window", None).await;
        self.command(
            reqwest::Method::POST,
            "/window",
            Some(json!({"handle": original})),
        )
        .await;
        cookies
    }

    /// Sets the browser window's size (so a screenshot shows more of the page).
    pub(crate) async fn set_window_size(&self, width: u32, height: u32) {
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// A PNG of the current page's viewport (WebDriver's screenshot, decoded from base64).
    pub(crate) async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let v = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("a base64 screenshot"))
            .expect("base64")
    }

    /// The DevTools network events since the last call (chromedriver's performance log), each as
    /// `{"method": …, "params": …}`.
    pub(crate) async fn network_events(&self) -> Vec<Value> {
        let v = self
            .command(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({"type": "performance"})),
            )
            .await;
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                let message: Value = serde_json::from_str(entry["message"].as_str()?).ok()?;
                Some(message["message"].clone())
            })
            .collect()
    }

    /// Polls `script` (an `execute` body) until it returns something other than null or false.
    pub(crate) async fn wait_for(&self, what: &str, script: &str, args: Value) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.execute(script, args.clone()).await;
            if !(v.is_null() || v == false) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Adds a virtual authenticator to the browser (WebDriver's WebAuthn extension): from then
    /// on `navigator.credentials` talks to it, with no prompt. `options` are the extension's
    /// (`protocol`, `transport`, `hasResidentKey`, `isUserVerified`, …). Returns its id.
    pub(crate) async fn add_virtual_authenticator(&self, options: Value) -> String {
        let v = self
            .command(
                reqwest::Method::POST,
                "/webauthn/authenticator",
                Some(options),
            )
            .await;
        v.as_str().expect("an authenticator id").to_owned()
    }

    /// The credentials a virtual authenticator holds (`credentialId`, `isResidentCredential`,
    /// `rpId`, `userHandle`, `signCount`, …).
    pub(crate) async fn authenticator_credentials(&self, authenticator: &str) -> Vec<Value> {
        let v = self
            .command(
                reqwest::Method::GET,
                &format!("/webauthn/authenticator/{authenticator}/credentials"),
                None,
            )
            .await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// Whether a virtual authenticator reports the user verified (as a PIN or fingerprint
    /// would) from now on.
    pub(crate) async fn set_user_verified(&self, authenticator: &str, verified: bool) {
        self.command(
            reqwest::Method::POST,
            &format!("/webauthn/authenticator/{authenticator}/uv"),
            Some(json!({"isUserVerified": verified})),
        )
        .await;
    }

    /// Takes a virtual authenticator away.
    pub(crate) async fn remove_virtual_authenticator(&self, authenticator: &str) {
        self.command(
            reqwest::Method::DELETE,
            &format!("/webauthn/authenticator/{authenticator}"),
            None,
        )
        .await;
    }

    /// Ends the WebDriver session with a blocking request, since `Drop` cannot await.
    fn end_session_blocking(&self) {
        let Some(session) = &self.session else { return };
        let Ok(mut stream) = TcpStream::connect_timeout(&self.driver, Duration::from_secs(2))
        else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let request = format!(
            "DELETE /session/{session} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.driver
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return;
        }
        // chromedriver answers once the browser has quit; it may keep the connection open, so
        // read up to the end of the body rather than to the end of the stream.
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    break;
                }
            }
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        self.end_session_blocking();
        // If chromedriver could not close it, end the browser it started (by its process id, and
        // only while that process is still chromedriver's child).
        if let Some(pid) = self.browser_pid
            && parent_of(pid) == Some(self.chromedriver.id())
        {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.chromedriver.kill();
        let _ = self.chromedriver.wait();
    }
}

/// The parent process id of `pid`, from /proc (field 4 of `stat`, after the command's parentheses).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(1)?.parse().ok()
}
