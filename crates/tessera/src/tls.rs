//! HTTPS on the public listener (`tls.cert`, `tls.key`): rustls on aws-lc-rs.
//!
//! The certificate and key are read at start (a bad one stops the server, naming the file), then
//! watched: when their contents change, and on SIGHUP, they are read again. A good pair is used
//! for every new connection from then on; connections already open keep the one they began with
//! and are never dropped. A bad pair is refused with a log line and the previous one stays.
//!
//! Optionally (`tls.redirect_listen`) a plain-HTTP listener answers every request with a redirect
//! to the same path on the https public URL, and serves nothing else.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

/// How often the certificate and key files are read to see whether they changed.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// How long changed files must stay as they are before they are loaded.
const SETTLE: Duration = Duration::from_millis(300);

/// How long a client may take to complete the TLS handshake before its connection is closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the HTTP server to take them.
const ACCEPT_QUEUE: usize = 128;

/// The certificate and key files.
#[derive(Clone, Debug)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
}

/// The server's TLS: its rustls configuration, and the certificate new handshakes get.
pub(crate) struct Tls {
    files: Files,
    current: Arc<CurrentCert>,
    /// A digest of the files the current certificate was read from.
    loaded: [u8; 32],
    config: Arc<ServerConfig>,
}

impl Tls {
    /// Reads the certificate chain (PEM, leaf first) and its private key (PEM: PKCS#8, PKCS#1 or
    /// SEC1). An error names the file and what is wrong with it.
    pub(crate) fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let files = Files {
            cert: cert.to_owned(),
            key: key.to_owned(),
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (cert_pem, key_pem) = files.read().map_err(anyhow::Error::msg)?;
        let certified =
            certified_key(&files, &cert_pem, &key_pem, &provider).map_err(anyhow::Error::msg)?;
        tracing::info!(
            cert = %files.cert.display(),
            fingerprint = %fingerprint(&certified),
            "TLS certificate loaded"
        );
        let current = Arc::new(CurrentCert(RwLock::new(Arc::new(certified))));
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("setting up TLS")?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            loaded: digest(&cert_pem, &key_pem),
            files,
            current,
            config: Arc::new(config),
        })
    }

    /// Watches the files (every second) and SIGHUP from now on; see the module documentation.
    pub(crate) fn spawn_reloader(&self) -> anyhow::Result<JoinHandle<()>> {
        use tokio::signal::unix::{SignalKind, signal};
        let hangup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
        let reloader = Reloader {
            files: self.files.clone(),
            current: Arc::clone(&self.current),
            provider: Arc::clone(self.config.crypto_provider()),
            loaded: self.loaded,
            last_error: None,
        };
        Ok(tokio::spawn(reloader.run(hangup)))
    }

    /// HTTPS on `listener`.
    pub(crate) fn listener(&self, listener: TcpListener) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (queue, accepted) = mpsc::channel(ACCEPT_QUEUE);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config));
        let task = tokio::spawn(accept_loop(listener, acceptor, queue));
        Ok(TlsListener {
            accepted,
            local,
            task,
        })
    }
}

impl Files {
    /// Both files' contents; an error names the file that cannot be read.
    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), String> {
        let read = |path: &Path, what: &str| {
            read_pem_file(path)
                .map_err(|e| format!("reading the TLS {what} {}: {e}", path.display()))
        };
        Ok((read(&self.cert, "certificate")?, read(&self.key, "key")?))
    }
}

/// The most a certificate chain or key file may hold: real ones are a few KiB.
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// A PEM file's contents: a regular file of at most [`MAX_PEM_FILE`] bytes. Opened without
/// blocking, so that a FIFO or device put at the path can neither hang the server (a FIFO blocks
/// its opener until a writer comes) nor fill its memory (`/dev/zero`).
fn read_pem_file(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if metadata.len() > MAX_PEM_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("larger than {MAX_PEM_FILE} bytes: not a certificate or key"),
        ));
    }
    let mut contents = Vec::new();
    file.take(MAX_PEM_FILE + 1).read_to_end(&mut contents)?;
    if contents.len() as u64 > MAX_PEM_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("larger than {MAX_PEM_FILE} bytes: not a certificate or key"),
        ));
    }
    Ok(contents)
}

/// The certificate and key in these PEM texts, checked to belong together. An error names the
/// file at fault; it never quotes the key.
fn certified_key(
    files: &Files,
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let cert = files.cert.display();
    let key = files.key.display();
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{cert}: not a PEM certificate file: {e}"))?;
    if chain.is_empty() {
        return Err(format!(
            "{cert}: no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)"
        ));
    }
    let private = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        format!("{key}: no private key in it (expected PEM: PKCS#8, PKCS#1 or SEC1): {e}")
    })?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| format!("{key}: the private key cannot be used: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err(
            format!("{key} is not the private key of the certificate in {cert}"),
        ),
        Err(e) => Err(format!("{cert}: the certificate cannot be read: {e}")),
    }
}

/// SHA-256 of the two files, to notice a change without keeping the key's text around.
fn digest(cert_pem: &[u8], key_pem: &[u8]) -> [u8; 32] {
    use aws_lc_rs::digest::{Context, SHA256};
    let mut context = Context::new(&SHA256);
    for part in [cert_pem, key_pem] {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// The SHA-256 fingerprint of the leaf certificate, as `openssl x509 -fingerprint -sha256`
/// prints it: what an operator compares to tell which certificate is served.
fn fingerprint(certified: &CertifiedKey) -> String {
    let Some(leaf) = certified.cert.first() else {
        return String::new();
    };
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf.as_ref());
    hash.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The certificate every new handshake gets; replaced by the reloader.
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

impl CurrentCert {
    fn replace(&self, certified: CertifiedKey) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
    }
}

struct Reloader {
    files: Files,
    current: Arc<CurrentCert>,
    provider: Arc<CryptoProvider>,
    /// The digest of the files last tried (loaded or refused): a refused pair is reported once,
    /// not every second.
    loaded: [u8; 32],
    /// The last failure to read the files, reported once.
    last_error: Option<String>,
}

impl Reloader {
    /// Both files, read off the runtime's threads.
    async fn read(&self) -> Result<(Vec<u8>, Vec<u8>), String> {
        let files = self.files.clone();
        tokio::task::spawn_blocking(move || files.read())
            .await
            .unwrap_or_else(|e| Err(format!("reading the TLS files: {e}")))
    }

    async fn run(mut self, mut hangup: tokio::signal::unix::Signal) {
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let asked = tokio::select! {
                _ = tick.tick() => false,
                _ = hangup.recv() => true,
            };
            self.check(asked).await;
        }
    }

    /// Reads the files and, when they changed or `asked` (SIGHUP), puts their certificate in
    /// use, or reports why not.
    async fn check(&mut self, asked: bool) {
        let (cert_pem, key_pem) = match self.read().await {
            Ok(pems) => pems,
            Err(e) => {
                if asked || self.last_error.as_ref() != Some(&e) {
                    tracing::error!(error = %e, "cannot reload the TLS certificate; still serving the previous one");
                }
                self.last_error = Some(e);
                return;
            }
        };
        self.last_error = None;
        let seen = digest(&cert_pem, &key_pem);
        if !asked {
            if seen == self.loaded {
                return;
            }
            // Files are rarely replaced together (a renewal writes the certificate, then the key):
            // act on a pair only once it has stopped changing, so that the moment between the two
            // writes is neither loaded nor reported as a mismatch.
            tokio::time::sleep(SETTLE).await;
            match self.read().await {
                Ok((cert, key)) if digest(&cert, &key) == seen => {}
                _ => return,
            }
        }
        self.loaded = seen;
        let reason = if asked { "SIGHUP" } else { "the files changed" };
        match certified_key(&self.files, &cert_pem, &key_pem, &self.provider) {
            Ok(certified) => {
                let fingerprint = fingerprint(&certified);
                self.current.replace(certified);
                tracing::info!(
                    cert = %self.files.cert.display(),
                    %fingerprint,
                    reason,
                    "TLS certificate reloaded; new connections use it"
                );
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    reason,
                    "refused to reload the TLS certificate; still serving the previous one"
                );
            }
        }
    }
}

/// The public listener with TLS: connections are handshaken in tasks of their own (a slow
/// client delays nobody else) and handed to the HTTP server once secure.
pub(crate) struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(connection) => connection,
            // The accepting task is gone (it ends only with this listener): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl TlsListener {
    /// Serves `app` until `shutdown` completes, then finishes the requests in flight, as
    /// [`tessera_http::serve`] does for plain HTTP; handlers see the client's socket address.
    pub(crate) async fn serve(
        self,
        app: Router,
        header_timeout: Duration,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let listener = self.tap_io(set_nodelay as fn(&mut TlsStream<TcpStream>));
        tessera_http::serve(listener, app, header_timeout, shutdown).await
    }
}

/// TLS records are written whole: sending them at once beats waiting for more (Nagle).
fn set_nodelay(stream: &mut TlsStream<TcpStream>) {
    let _ = stream.get_ref().0.set_nodelay(true);
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    queue: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = queue.closed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(connection) => connection,
            Err(e) => {
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                ) {
                    // Out of file descriptors, most likely: wait for some to be freed.
                    tracing::error!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(secure)) => {
                    let _ = queue.send((secure, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// The plain-HTTP listener's only answer: `308 Permanent Redirect` to the same path and query
/// on `public_origin` (the https public URL's origin), whatever the method, host or body. The
/// request's `Host` is never used: the redirect cannot be pointed elsewhere.
pub(crate) fn redirect_router(public_origin: String) -> Router {
    let public_origin: Arc<str> = public_origin.into();
    Router::new().fallback(move |uri: Uri| {
        let public_origin = Arc::clone(&public_origin);
        async move { redirect(&public_origin, &uri) }
    })
}

fn redirect(public_origin: &str, uri: &Uri) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    // An absolute-form request target (`GET http://host/x`) still has its path here; anything
    // that is not a path is sent to the root.
    let path = if path.starts_with('/') { path } else { "/" };
    match HeaderValue::try_from(format!("{public_origin}{path}")) {
        Ok(location) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => tessera_http::ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "the request target cannot be redirected",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.pem");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        )
        .unwrap();
        let err = read_pem_file(&fifo).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let err = read_pem_file(Path::new("/dev/zero")).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'A'; 2 * 1024 * 1024]).unwrap();
        let err = read_pem_file(&big).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
        let small = dir.path().join("small.pem");
        std::fs::write(&small, b"-----BEGIN CERTIFICATE-----\n").unwrap();
        assert_eq!(read_pem_file(&small).unwrap().len(), 28);
    }

    #[test]
    fn redirects_keep_path_and_query_and_ignore_the_host() {
        let go = |target: &str| {
            let response = redirect("https://auth.example.com", &target.parse().unwrap());
            assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
            response.headers()[header::LOCATION]
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(go("/"), "https://auth.example.com/");
        assert_eq!(
            go("/v1/me?x=1&y=%20"),
            "https://auth.example.com/v1/me?x=1&y=%20"
        );
        assert_eq!(
            go("http://evil.example/steal?a=b"),
            "https://auth.example.com/steal?a=b"
        );
        assert_eq!(go("*"), "https://auth.example.com/");
    }
}
