//! The server: options, the listener and its connections.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::session;
use crate::{Inbox, TestCertificate};

/// How the server does TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain SMTP only; `STARTTLS` is not offered.
    #[default]
    None,
    /// Plain SMTP that offers `STARTTLS` (RFC 3207). When AUTH is required too, it is offered
    /// only once the connection is encrypted.
    StartTls,
    /// TLS from the first byte (smtps, RFC 8314).
    Implicit,
}

/// A user name and password the server requires (`AUTH PLAIN` or `AUTH LOGIN`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

/// What the server answers in place of success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailReply {
    /// `451 4.3.0 try again later`: a temporary failure.
    TryLater,
    /// `550 5.1.1 no such user`: a permanent failure.
    NoSuchUser,
}

impl FailReply {
    pub(crate) fn reply(self) -> &'static str {
        match self {
            FailReply::TryLater => "451 4.3.0 try again later",
            FailReply::NoSuchUser => "550 5.1.1 no such user",
        }
    }
}

/// Whether, and where, the server refuses mail; switched at run time with
/// [`SmtpServer::set_fail_mode`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailMode {
    /// Accept mail.
    #[default]
    Off,
    /// Answer every `RCPT TO` with this.
    Rcpt(FailReply),
    /// Take the message after `DATA`, then answer with this instead of accepting it.
    Data(FailReply),
}

/// How a server behaves. `Clone`: a test restarts a server with the same options to keep its
/// inbox and certificate.
#[derive(Clone, Debug)]
pub struct SmtpOptions {
    /// TLS: none, STARTTLS or implicit.
    pub tls: TlsMode,
    /// When set, mail is refused (530) until the client authenticates with this login.
    pub auth: Option<Login>,
    /// Whether mail is refused at the start.
    pub fail: FailMode,
    /// Where accepted messages go.
    pub inbox: Inbox,
    /// The certificate presented when TLS is on.
    pub certificate: TestCertificate,
    /// The largest message accepted (advertised as `SIZE`); larger ones get 552.
    pub max_message_size: usize,
    /// A client silent for this long is disconnected (421).
    pub idle_timeout: Duration,
}

impl Default for SmtpOptions {
    fn default() -> Self {
        Self {
            tls: TlsMode::None,
            auth: None,
            fail: FailMode::Off,
            inbox: Inbox::new(),
            certificate: TestCertificate::generate(),
            max_message_size: 1024 * 1024,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl SmtpOptions {
    /// Offers STARTTLS.
    pub fn starttls(mut self) -> Self {
        self.tls = TlsMode::StartTls;
        self
    }

    /// Speaks TLS from the start (smtps).
    pub fn implicit_tls(mut self) -> Self {
        self.tls = TlsMode::Implicit;
        self
    }

    /// Requires AUTH with this user name and password before `MAIL`.
    pub fn require_auth(mut self, username: &str, password: &str) -> Self {
        self.auth = Some(Login {
            username: username.to_owned(),
            password: password.to_owned(),
        });
        self
    }

    /// Delivers into this inbox.
    pub fn inbox(mut self, inbox: &Inbox) -> Self {
        self.inbox = inbox.clone();
        self
    }
}

/// What every connection of one server shares.
pub(crate) struct Shared {
    pub(crate) options: SmtpOptions,
    pub(crate) acceptor: Option<tokio_rustls::TlsAcceptor>,
    pub(crate) fail: watch::Sender<FailMode>,
}

/// A running SMTP server on 127.0.0.1. Dropping it stops it too, without waiting.
#[derive(Debug)]
pub struct SmtpServer {
    addr: SocketAddr,
    options: SmtpOptions,
    shared: Arc<Shared>,
    running: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl SmtpServer {
    /// Starts a server on a spare port of 127.0.0.1.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start(options: SmtpOptions) -> SmtpServer {
        Self::start_on(0, options)
            .await
            .expect("binding a spare port on 127.0.0.1")
    }

    /// Starts a server on 127.0.0.1:`port`: a stopped server brought back on the port its
    /// clients know. Fails if the port is taken.
    pub async fn start_on(port: u16, options: SmtpOptions) -> io::Result<SmtpServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
        let addr = listener.local_addr()?;
        let acceptor = match options.tls {
            TlsMode::None => None,
            TlsMode::StartTls | TlsMode::Implicit => Some(options.certificate.acceptor()),
        };
        let shared = Arc::new(Shared {
            fail: watch::Sender::new(options.fail),
            options: options.clone(),
            acceptor,
        });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept(listener, Arc::clone(&shared), stopped));
        Ok(SmtpServer {
            addr,
            options,
            shared,
            running: Mutex::new(Some((stop, task))),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The options it was started with (to start it again after [`SmtpServer::stop`]).
    pub fn options(&self) -> &SmtpOptions {
        &self.options
    }

    /// Its inbox.
    pub fn inbox(&self) -> &Inbox {
        &self.options.inbox
    }

    /// The certificate it presents over TLS.
    pub fn certificate(&self) -> &TestCertificate {
        &self.options.certificate
    }

    /// Refuses mail from now on as `mode` says (or accepts it again with [`FailMode::Off`]);
    /// applies to commands received after the call, on open connections too.
    pub fn set_fail_mode(&self, mode: FailMode) {
        self.shared.fail.send_replace(mode);
    }

    /// Closes the listener and every open connection, and waits until they are closed.
    /// Does nothing the second time.
    pub async fn stop(&self) {
        let running = self.running.lock().expect("not poisoned").take();
        if let Some((stop, task)) = running {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some((_, task)) = self.running.get_mut().expect("not poisoned").take() {
            task.abort();
        }
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(session::serve(stream, Arc::clone(&shared)));
                }
                // Out of file descriptors, or a connection reset before it was accepted.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}
