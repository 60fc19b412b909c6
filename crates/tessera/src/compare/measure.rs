//! What a client sees: a small HTTP/1.1 client over a plain `TcpStream` that counts every byte it
//! writes and reads (headers included), the load driver, and the login, logout and probe
//! requests of each model.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest wait for one answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a logout to be refused on a node before the sample counts as "not yet".
pub(crate) const REFUSAL_PATIENCE: Duration = Duration::from_secs(5);
/// The password of every account the comparison creates.
const PASSWORD: &str = "a throwaway passphrase for tessera compare";

const SESSION_COOKIE: &str = "__Host-tessera";
const HYBRID_ACCESS_COOKIE: &str = "__Host-tessera-at";
const HYBRID_REFRESH_COOKIE: &str = "__Host-tessera-rt";

/// The three login models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Model {
    Session,
    Token,
    Hybrid,
}

impl Model {
    pub(crate) const ALL: [Model; 3] = [Self::Session, Self::Token, Self::Hybrid];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Token => "token",
            Self::Hybrid => "hybrid",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 with byte counts

/// One request, written out as it goes on the wire.
pub(crate) struct Request {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<(&'static str, Vec<u8>)>,
}

impl Request {
    pub(crate) fn new(method: &'static str, path: &str) -> Self {
        Self {
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn json(mut self, body: &Value) -> Self {
        self.body = Some(("application/json", body.to_string().into_bytes()));
        self
    }

    fn form(mut self, fields: &[(&str, &str)]) -> Self {
        let text = fields
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.body = Some(("application/x-www-form-urlencoded", text.into_bytes()));
        self
    }

    /// The bytes on the wire: the request line, `Host`, the headers, and the body with its
    /// `Content-Type` and `Content-Length`. No `User-Agent` nor `Accept`: the least a client
    /// sends.
    pub(crate) fn encode(&self, addr: SocketAddr) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\nHost: {addr}\r\n", self.method, self.path);
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        let mut bytes = match &self.body {
            Some((content_type, body)) => {
                out.push_str(&format!(
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                ));
                let mut bytes = out.into_bytes();
                bytes.extend_from_slice(body);
                bytes
            }
            None => {
                out.push_str("\r\n");
                out.into_bytes()
            }
        };
        bytes.shrink_to_fit();
        bytes
    }
}

fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// An answer, with what the exchange cost on the wire.
pub(crate) struct Response {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    /// Bytes written for the request.
    pub(crate) sent: u64,
    /// Bytes read for the answer: status line, headers, body (with any chunk framing).
    pub(crate) received: u64,
}

impl Response {
    /// `name=value` of the cookie `name` the answer sets.
    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .filter_map(|(_, v)| v.split(';').next())
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }

    fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).context("the answer is not JSON")
    }
}

/// The server closed the connection before any byte of its answer.
#[derive(Debug)]
struct ClosedBeforeAnswer;

impl std::fmt::Display for ClosedBeforeAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the server closed the connection before answering")
    }
}

impl std::error::Error for ClosedBeforeAnswer {}

/// One keep-alive connection to a node; reconnects when the server closed it.
pub(crate) struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            buf: Vec::with_capacity(8192),
        }
    }

    pub(crate) async fn send(&mut self, request: &Request) -> anyhow::Result<Response> {
        let bytes = request.encode(self.addr);
        self.send_raw(&bytes, request.method == "HEAD").await
    }

    /// Writes `bytes` (a whole request) and reads the answer.
    pub(crate) async fn send_raw(&mut self, bytes: &[u8], head: bool) -> anyhow::Result<Response> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(bytes, head)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                bail!("no answer from {} within {REQUEST_TIMEOUT:?}", self.addr)
            }
        }
    }

    async fn exchange(&mut self, bytes: &[u8], head: bool) -> anyhow::Result<Response> {
        let reused = self.stream.is_some();
        match self.exchange_once(bytes, head).await {
            // A kept-alive connection the server closed while it was idle (past its header
            // timeout, say) answers nothing at all: send again on a new connection.
            Err(e) if reused && e.downcast_ref::<ClosedBeforeAnswer>().is_some() => {
                self.stream = None;
                self.exchange_once(bytes, head).await
            }
            other => other,
        }
    }

    async fn exchange_once(&mut self, bytes: &[u8], head: bool) -> anyhow::Result<Response> {
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => {
                let stream = TcpStream::connect(self.addr)
                    .await
                    .with_context(|| format!("connecting to {}", self.addr))?;
                stream.set_nodelay(true)?;
                self.buf.clear();
                self.stream.insert(stream)
            }
        };
        if let Err(e) = stream.write_all(bytes).await {
            if matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) {
                return Err(ClosedBeforeAnswer.into());
            }
            return Err(e.into());
        }
        let sent = bytes.len() as u64;
        // The head.
        let (status, headers, head_len) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut slots);
            if let httparse::Status::Complete(len) = parsed.parse(&self.buf)? {
                let status = parsed.code.unwrap_or(0);
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                break (status, headers, len);
            }
            match read_more(stream, &mut self.buf).await {
                Ok(0) if self.buf.is_empty() => return Err(ClosedBeforeAnswer.into()),
                Ok(0) => bail!("the server closed the connection mid-answer"),
                Ok(_) => {}
                Err(e) if self.buf.is_empty() && is_reset(&e) => {
                    return Err(ClosedBeforeAnswer.into());
                }
                Err(e) => return Err(e),
            }
        };
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_ascii_lowercase())
        };
        let closes = header("connection").is_some_and(|v| v == "close");
        let mut received = head_len as u64;
        self.buf.drain(..head_len);
        let body = if head || status == 204 || status == 304 || (100..200).contains(&status) {
            Vec::new()
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let (body, framed) = read_chunked(stream, &mut self.buf).await?;
            received += framed;
            body
        } else if let Some(length) = header("content-length") {
            let length: usize = length.parse().context("a bad Content-Length")?;
            while self.buf.len() < length {
                if read_more(stream, &mut self.buf).await? == 0 {
                    bail!("the server closed the connection mid-body");
                }
            }
            received += length as u64;
            self.buf.drain(..length).collect()
        } else {
            while read_more(stream, &mut self.buf).await? > 0 {}
            received += self.buf.len() as u64;
            self.stream = None;
            std::mem::take(&mut self.buf)
        };
        if closes {
            self.stream = None;
        }
        Ok(Response {
            status,
            headers,
            body,
            sent,
            received,
        })
    }
}

/// Whether reading failed because the peer reset the connection.
fn is_reset(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset)
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<usize> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// A chunked body: the data, and how many bytes it took on the wire.
async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<(Vec<u8>, u64)> {
    let mut body = Vec::new();
    let mut framed = 0u64;
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if read_more(stream, buf).await? == 0 {
                bail!("the server closed the connection mid-chunk");
            }
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).context("a bad chunk size")?;
        // The size line, the data and its CRLF (for the last chunk: the final CRLF).
        let need = line_end + 2 + size + 2;
        while buf.len() < need {
            if read_more(stream, buf).await? == 0 {
                bail!("the server closed the connection mid-chunk");
            }
        }
        body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
        buf.drain(..need);
        framed += need as u64;
        if size == 0 {
            return Ok((body, framed));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Accounts and logins

/// Creates the account `username` (registration is open on the measured nodes).
pub(crate) async fn register(conn: &mut Conn, username: &str) -> anyhow::Result<()> {
    let r = conn
        .send(&Request::new("POST", "/v1/users").json(&serde_json::json!({
            "username": username,
            "password": PASSWORD,
        })))
        .await?;
    if r.status != 201 {
        bail!(
            "registering {username}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    Ok(())
}

/// A live login of one model, with what a client keeps of it.
#[derive(Clone)]
pub(crate) struct Login {
    pub(crate) model: Model,
    /// The header that authenticates a request: `Cookie` or `Authorization`.
    auth: (&'static str, String),
    /// Session and hybrid: the CSRF token unsafe requests carry.
    csrf: Option<String>,
    /// Token: the refresh token. Hybrid: both cookies, for refresh and logout.
    refresh: Option<String>,
    /// Seconds until the access token expires (token and hybrid).
    pub(crate) expires_in: Option<u64>,
}

/// Logs in; returns the login and the exchange (for its size and its time).
pub(crate) async fn login(
    conn: &mut Conn,
    model: Model,
    username: &str,
) -> anyhow::Result<(Login, Response)> {
    let path = match model {
        Model::Session => "/v1/session/login",
        Model::Token => "/v1/token",
        Model::Hybrid => "/v1/hybrid/login",
    };
    let r = conn
        .send(&Request::new("POST", path).json(&serde_json::json!({
            "username": username,
            "password": PASSWORD,
        })))
        .await?;
    if r.status != 200 {
        bail!(
            "{} login: {} {}",
            model.as_str(),
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    let body = r.json()?;
    let text = |key: &str| -> anyhow::Result<String> {
        body[key]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no {key} in the {} login answer", model.as_str()))
    };
    let cookie = |name: &str| -> anyhow::Result<String> {
        r.set_cookie(name)
            .with_context(|| format!("no {name} cookie in the {} login answer", model.as_str()))
    };
    let login = match model {
        Model::Session => Login {
            model,
            auth: ("Cookie", cookie(SESSION_COOKIE)?),
            csrf: Some(text("csrf_token")?),
            refresh: None,
            expires_in: None,
        },
        Model::Token => Login {
            model,
            auth: ("Authorization", format!("Bearer {}", text("access_token")?)),
            csrf: None,
            refresh: Some(text("refresh_token")?),
            expires_in: body["expires_in"].as_u64(),
        },
        Model::Hybrid => {
            let access = cookie(HYBRID_ACCESS_COOKIE)?;
            let refresh = cookie(HYBRID_REFRESH_COOKIE)?;
            Login {
                model,
                auth: ("Cookie", access.clone()),
                csrf: Some(text("csrf_token")?),
                refresh: Some(format!("{access}; {refresh}")),
                expires_in: body["expires_in"].as_u64(),
            }
        }
    };
    Ok((login, r))
}

impl Login {
    /// `GET path` with the credential.
    pub(crate) fn get(&self, path: &str) -> Request {
        Request::new("GET", path).header(self.auth.0, self.auth.1.clone())
    }

    /// The logout of the model: the session deleted, the token model's refresh token revoked
    /// (which ends the whole login), the hybrid login ended.
    pub(crate) fn logout(&self) -> Request {
        match self.model {
            Model::Session => Request::new("DELETE", "/v1/session")
                .header(self.auth.0, self.auth.1.clone())
                .header("X-CSRF-Token", self.csrf.clone().unwrap_or_default()),
            Model::Token => Request::new("POST", "/v1/token/revoke").form(&[
                ("token", self.refresh.as_deref().unwrap_or_default()),
                ("token_type_hint", "refresh_token"),
            ]),
            Model::Hybrid => Request::new("DELETE", "/v1/hybrid/session")
                .header("Cookie", self.refresh.clone().unwrap_or_default())
                .header("X-CSRF-Token", self.csrf.clone().unwrap_or_default()),
        }
    }

    /// The logout's name, as the report says it.
    pub(crate) fn logout_name(model: Model) -> &'static str {
        match model {
            Model::Session => "DELETE /v1/session",
            Model::Token => "POST /v1/token/revoke (refresh token)",
            Model::Hybrid => "DELETE /v1/hybrid/session",
        }
    }

    /// A refresh with the refresh credential; `None` for the session model, which has none.
    pub(crate) fn refresh(&self) -> Option<(&'static str, Request)> {
        match self.model {
            Model::Session => None,
            Model::Token => Some((
                "POST /v1/token/refresh",
                Request::new("POST", "/v1/token/refresh").form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", self.refresh.as_deref().unwrap_or_default()),
                ]),
            )),
            Model::Hybrid => Some((
                "POST /v1/hybrid/refresh",
                Request::new("POST", "/v1/hybrid/refresh")
                    .header("Cookie", self.refresh.clone().unwrap_or_default())
                    .header("X-CSRF-Token", self.csrf.clone().unwrap_or_default()),
            )),
        }
    }
}

/// Logs out; fails unless the server says it did.
pub(crate) async fn logout(conn: &mut Conn, login: &Login) -> anyhow::Result<()> {
    let r = conn.send(&login.logout()).await?;
    if !(r.status == 200 || r.status == 204) {
        bail!(
            "{} logout: {} {}",
            login.model.as_str(),
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Figures

/// Percentiles of a set of samples (milliseconds).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Summary {
    pub(crate) median: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl Summary {
    pub(crate) fn of(mut samples: Vec<f64>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i]
        };
        Some(Self {
            median: at(0.5),
            p99: at(0.99),
            max: samples[samples.len() - 1],
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The load run's result.
pub(crate) struct Throughput {
    pub(crate) requests: u64,
    pub(crate) failures: u64,
    pub(crate) per_second: f64,
    pub(crate) latency: Summary,
}

/// `connections` keep-alive connections send `request` back to back for `duration`; every
/// answer but a 200 counts as a failure.
pub(crate) async fn throughput(
    addr: SocketAddr,
    request: &Request,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    let bytes: Arc<[u8]> = request.encode(addr).into();
    // Warm up: each connection opened, each cache filled.
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut conn = Conn::new(addr);
        conn.send_raw(&bytes, false).await?;
        conns.push(conn);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for mut conn in conns {
        let bytes = Arc::clone(&bytes);
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            let mut failures = 0u64;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let r = conn.send_raw(&bytes, false).await?;
                latencies.push(ms(sent.elapsed()));
                if r.status != 200 {
                    failures += 1;
                }
            }
            anyhow::Ok((latencies, failures))
        });
    }
    let mut all = Vec::new();
    let mut failures = 0;
    while let Some(done) = tasks.join_next().await {
        let (latencies, failed) = done.context("a load task stopped")??;
        all.extend(latencies);
        failures += failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = all.len() as u64;
    Ok(Throughput {
        requests,
        failures,
        per_second: if elapsed > 0.0 {
            requests as f64 / elapsed
        } else {
            0.0
        },
        latency: Summary::of(all).unwrap_or_default(),
    })
}

/// `n` logins one after another on one connection: each one's time.
pub(crate) async fn login_times(
    addr: SocketAddr,
    model: Model,
    username: &str,
    n: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut conn = Conn::new(addr);
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        login(&mut conn, model, username).await?;
        times.push(ms(started.elapsed()));
    }
    Ok(times)
}

/// Sends `request` until the answer is a 401; the time from `since`, or `None` if it is still
/// accepted after [`REFUSAL_PATIENCE`]. Any answer but 200 and 401 is an error.
pub(crate) async fn refused_after(
    conn: &mut Conn,
    request: &[u8],
    since: Instant,
) -> anyhow::Result<Option<f64>> {
    loop {
        let r = conn.send_raw(request, false).await?;
        match r.status {
            401 => return Ok(Some(ms(since.elapsed()))),
            200 => {}
            other => bail!("a probe after logout answered {other}"),
        }
        if since.elapsed() > REFUSAL_PATIENCE {
            return Ok(None);
        }
    }
}

/// Sends `request` until it is accepted (a login made on one node reaching another).
pub(crate) async fn accepted(conn: &mut Conn, request: &[u8]) -> anyhow::Result<()> {
    let since = Instant::now();
    loop {
        let r = conn.send_raw(request, false).await?;
        if r.status == 200 {
            return Ok(());
        }
        if since.elapsed() > REFUSAL_PATIENCE {
            bail!(
                "a fresh login was still refused (status {}) after {REFUSAL_PATIENCE:?}",
                r.status
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_written_as_expected() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let r = Request::new("POST", "/v1/token/refresh").form(&[("a", "b c/+")]);
        assert_eq!(
            String::from_utf8(r.encode(addr)).unwrap(),
            "POST /v1/token/refresh HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 13\r\n\r\na=b%20c%2F%2B"
        );
        let r = Request::new("GET", "/v1/me").header("Cookie", "x=y");
        assert_eq!(
            String::from_utf8(r.encode(addr)).unwrap(),
            "GET /v1/me HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nCookie: x=y\r\n\r\n"
        );
    }

    #[test]
    fn summaries() {
        assert!(Summary::of(vec![]).is_none());
        let s = Summary::of((1..=100).map(f64::from).collect()).unwrap();
        assert_eq!((s.median, s.p99, s.max), (50.0, 99.0, 100.0));
        let s = Summary::of(vec![3.0]).unwrap();
        assert_eq!((s.median, s.p99), (3.0, 3.0));
    }

    /// A chunked answer over a real socket: the body, and every byte counted.
    #[tokio::test]
    async fn chunked_answers_are_read_and_counted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(answer).await.unwrap();
        });
        let mut conn = Conn::new(addr);
        let r = conn.send(&Request::new("GET", "/")).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"abcde");
        assert_eq!(r.received, answer.len() as u64);
        assert_eq!(r.sent, Request::new("GET", "/").encode(addr).len() as u64);
    }
}
