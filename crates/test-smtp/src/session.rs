//! One SMTP connection (RFC 5321), with STARTTLS (RFC 3207) and AUTH PLAIN / LOGIN (RFC 4954,
//! 4616).

use std::io;
use std::sync::Arc;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::Message;
use crate::server::{FailMode, Shared, TlsMode};

/// The longest command line taken (RFC 5321 allows 512 octets; RFC 4954 lets AUTH lines be
/// longer). A longer one ends the connection.
const MAX_COMMAND_LINE: usize = 4096;
/// Message lines are read in pieces of at most this much; a message may have longer lines.
const MAX_DATA_CHUNK: usize = 8192;
/// Recipients taken per message (RFC 5321 §4.5.3.1.8 asks for at least 100).
const MAX_RECIPIENTS: usize = 100;
/// Refused commands after which the server hangs up.
const MAX_ERRORS: u32 = 20;
/// The name the server gives itself.
const HOSTNAME: &str = "test-smtp.localhost";

/// Serves one accepted connection until the client quits or goes away.
pub(crate) async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    // I/O errors end the connection; there is no one to tell.
    let _ = serve_inner(stream, &shared).await;
}

async fn serve_inner(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    let acceptor = shared.acceptor.as_ref();
    match (shared.options.tls, acceptor) {
        (TlsMode::Implicit, Some(acceptor)) => {
            let stream = handshake(acceptor, stream, shared).await?;
            Session::new(shared, true).run(stream, true).await?;
        }
        (TlsMode::StartTls, Some(acceptor)) => {
            if let Some(stream) = Session::new(shared, false).run(stream, true).await? {
                let stream = handshake(acceptor, stream, shared).await?;
                // RFC 3207 §4.2: everything known before TLS is forgotten; no new greeting.
                Session::new(shared, true).run(stream, false).await?;
            }
        }
        _ => {
            Session::new(shared, false).run(stream, true).await?;
        }
    }
    Ok(())
}

/// The TLS handshake, bounded by the idle timeout (a client that never says hello).
async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    shared: &Shared,
) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    tokio::time::timeout(shared.options.idle_timeout, acceptor.accept(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// A reply: one or more lines under one code.
type Reply = String;

fn multiline(code: u16, lines: &[&str]) -> Reply {
    let mut reply = String::new();
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        reply.push_str(&format!("{code}{sep}{line}\r\n"));
    }
    reply
}

/// The state of one (plain or TLS) leg of a connection.
struct Session<'a> {
    shared: &'a Shared,
    tls: bool,
    greeted: bool,
    authenticated_as: Option<String>,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
    errors: u32,
}

/// What a command leads to.
enum Next {
    Continue,
    Quit,
    StartTls,
}

/// A line read from the client.
enum Line {
    /// A whole line, without its line end.
    Complete(String),
    /// Longer than allowed.
    TooLong,
    /// The client closed the connection, or was silent too long.
    Gone,
}

impl<'a> Session<'a> {
    fn new(shared: &'a Shared, tls: bool) -> Self {
        Self {
            shared,
            tls,
            greeted: false,
            authenticated_as: None,
            mail_from: None,
            rcpt_to: Vec::new(),
            errors: 0,
        }
    }

    /// Runs the dialogue; returns the stream when the client asked for STARTTLS.
    async fn run<S>(mut self, stream: S, greet: bool) -> io::Result<Option<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut io = BufReader::new(stream);
        if greet {
            send(&mut io, &format!("220 {HOSTNAME} ESMTP test-smtp\r\n")).await?;
        }
        loop {
            let line = match self.read_line(&mut io).await? {
                Line::Complete(line) => line,
                Line::TooLong => {
                    send(&mut io, "500 5.5.2 line too long\r\n").await?;
                    return Ok(None);
                }
                Line::Gone => return Ok(None),
            };
            let (verb, arg) = match line.split_once(' ') {
                Some((verb, arg)) => (verb.to_ascii_uppercase(), arg.trim()),
                None => (line.trim().to_ascii_uppercase(), ""),
            };
            match self.command(&mut io, &verb, arg).await? {
                Next::Continue => {}
                Next::Quit => return Ok(None),
                Next::StartTls => {
                    // Commands sent before the handshake would be taken as if sent over TLS
                    // (the STARTTLS injection attack): hang up instead.
                    if !io.buffer().is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(io.into_inner()));
                }
            }
            if self.errors >= MAX_ERRORS {
                send(&mut io, "421 4.7.0 too many errors, closing\r\n").await?;
                return Ok(None);
            }
        }
    }

    async fn command<S>(&mut self, io: &mut BufReader<S>, verb: &str, arg: &str) -> io::Result<Next>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let options = &self.shared.options;
        let reply = match verb {
            "EHLO" if arg.is_empty() => self.refuse("501 5.5.4 syntax: EHLO domain"),
            "EHLO" => {
                self.greeted = true;
                self.reset();
                let size = format!("SIZE {}", options.max_message_size);
                let mut lines = vec![HOSTNAME, &size, "8BITMIME", "SMTPUTF8", "PIPELINING"];
                if self.offers_starttls() {
                    lines.push("STARTTLS");
                }
                if self.offers_auth() {
                    lines.push("AUTH PLAIN LOGIN");
                }
                lines.push("ENHANCEDSTATUSCODES");
                multiline(250, &lines)
            }
            "HELO" if arg.is_empty() => self.refuse("501 5.5.4 syntax: HELO domain"),
            "HELO" => {
                self.greeted = true;
                self.reset();
                format!("250 {HOSTNAME}\r\n")
            }
            "STARTTLS" if !arg.is_empty() => self.refuse("501 5.5.4 STARTTLS takes no argument"),
            "STARTTLS" if !self.offers_starttls() => {
                self.refuse("503 5.5.1 STARTTLS not available")
            }
            "STARTTLS" => {
                send(io, "220 2.0.0 ready to start TLS\r\n").await?;
                return Ok(Next::StartTls);
            }
            "AUTH" => self.auth(io, arg).await?,
            "MAIL" => self.mail(arg),
            "RCPT" => self.rcpt(arg),
            "DATA" if !arg.is_empty() => self.refuse("501 5.5.4 DATA takes no argument"),
            "DATA" if self.mail_from.is_none() => self.refuse("503 5.5.1 MAIL first"),
            "DATA" if self.rcpt_to.is_empty() => self.refuse("503 5.5.1 RCPT first"),
            "DATA" => {
                send(io, "354 end data with <CR><LF>.<CR><LF>\r\n").await?;
                match self.data(io).await? {
                    Some(reply) => reply,
                    None => return Ok(Next::Quit),
                }
            }
            "RSET" => {
                self.reset();
                "250 2.0.0 OK\r\n".to_owned()
            }
            "NOOP" => "250 2.0.0 OK\r\n".to_owned(),
            "QUIT" => {
                send(io, "221 2.0.0 bye\r\n").await?;
                return Ok(Next::Quit);
            }
            "VRFY" | "EXPN" | "HELP" | "TURN" | "ETRN" | "BDAT" => {
                self.refuse("502 5.5.1 command not implemented")
            }
            _ => self.refuse("500 5.5.2 command not recognized"),
        };
        send(io, &reply).await?;
        Ok(Next::Continue)
    }

    fn refuse(&mut self, reply: &str) -> Reply {
        self.errors += 1;
        format!("{reply}\r\n")
    }

    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpt_to.clear();
    }

    fn offers_starttls(&self) -> bool {
        self.shared.options.tls == TlsMode::StartTls && !self.tls
    }

    /// AUTH is offered when required, and with STARTTLS only once the connection is encrypted.
    fn offers_auth(&self) -> bool {
        self.shared.options.auth.is_some()
            && (self.tls || self.shared.options.tls != TlsMode::StartTls)
    }

    async fn auth<S>(&mut self, io: &mut BufReader<S>, arg: &str) -> io::Result<Reply>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(login) = self.shared.options.auth.clone() else {
            return Ok(self.refuse("503 5.5.1 AUTH not available"));
        };
        if !self.greeted {
            return Ok(self.refuse("503 5.5.1 EHLO first"));
        }
        if !self.offers_auth() {
            return Ok(self.refuse("538 5.7.11 encryption required (STARTTLS first)"));
        }
        if self.authenticated_as.is_some() {
            return Ok(self.refuse("503 5.5.1 already authenticated"));
        }
        if self.mail_from.is_some() {
            return Ok(self.refuse("503 5.5.1 AUTH not allowed during a mail transaction"));
        }
        let (mechanism, initial) = match arg.split_once(' ') {
            Some((mechanism, initial)) => (mechanism.to_ascii_uppercase(), Some(initial.trim())),
            None => (arg.to_ascii_uppercase(), None),
        };
        let (username, password) = match mechanism.as_str() {
            "PLAIN" => {
                let response = match initial {
                    // "=" is an empty initial response (RFC 4954 §4).
                    Some(initial) => initial.to_owned(),
                    None => match self.challenge(io, "").await? {
                        Some(response) => response,
                        None => return Ok(self.refuse("501 5.5.2 AUTH cancelled")),
                    },
                };
                let Some(decoded) = decode_base64(&response) else {
                    return Ok(self.refuse("501 5.5.2 cannot decode the response"));
                };
                // authzid NUL authcid NUL passwd (RFC 4616).
                let mut fields = decoded.split('\0');
                match (fields.next(), fields.next(), fields.next(), fields.next()) {
                    (Some(_authzid), Some(user), Some(pass), None) => {
                        (user.to_owned(), pass.to_owned())
                    }
                    _ => return Ok(self.refuse("501 5.5.2 malformed PLAIN response")),
                }
            }
            "LOGIN" => {
                let username = match initial {
                    Some(initial) => Some(initial.to_owned()),
                    // "Username:"
                    None => self.challenge(io, "VXNlcm5hbWU6").await?,
                };
                let Some(username) = username.as_deref().and_then(decode_base64) else {
                    return Ok(self.refuse("501 5.5.2 AUTH cancelled or undecodable"));
                };
                // "Password:"
                let password = self.challenge(io, "UGFzc3dvcmQ6").await?;
                let Some(password) = password.as_deref().and_then(decode_base64) else {
                    return Ok(self.refuse("501 5.5.2 AUTH cancelled or undecodable"));
                };
                (username, password)
            }
            _ => return Ok(self.refuse("504 5.5.4 unrecognized authentication type")),
        };
        if username == login.username && password == login.password {
            self.authenticated_as = Some(username);
            Ok("235 2.7.0 authentication successful\r\n".to_owned())
        } else {
            Ok(self.refuse("535 5.7.8 authentication credentials invalid"))
        }
    }

    /// Sends a 334 challenge and reads the answer; `None` when the client cancels (`*`) or
    /// goes away.
    async fn challenge<S>(
        &mut self,
        io: &mut BufReader<S>,
        text: &str,
    ) -> io::Result<Option<String>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        send(io, &format!("334 {text}\r\n")).await?;
        Ok(match self.read_line(io).await? {
            Line::Complete(line) if line.trim() != "*" => Some(line.trim().to_owned()),
            _ => None,
        })
    }

    fn mail(&mut self, arg: &str) -> Reply {
        if !self.greeted {
            return self.refuse("503 5.5.1 EHLO first");
        }
        if self.shared.options.auth.is_some() && self.authenticated_as.is_none() {
            return self.refuse("530 5.7.0 authentication required");
        }
        if self.mail_from.is_some() {
            return self.refuse("503 5.5.1 nested MAIL command");
        }
        let Some((path, params)) = strip_keyword(arg, "FROM:").and_then(parse_path) else {
            return self.refuse("501 5.5.4 syntax: MAIL FROM:<address>");
        };
        for param in params.split_whitespace() {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key.to_ascii_uppercase().as_str() {
                "SIZE" => match value.parse::<usize>() {
                    Ok(size) if size > self.shared.options.max_message_size => {
                        return self.refuse("552 5.3.4 message too big");
                    }
                    Ok(_) => {}
                    Err(_) => return self.refuse("501 5.5.4 bad SIZE"),
                },
                "BODY" if ["7BIT", "8BITMIME"].contains(&value.to_ascii_uppercase().as_str()) => {}
                "SMTPUTF8" if value.is_empty() => {}
                _ => return self.refuse("555 5.5.4 parameter not recognized"),
            }
        }
        self.mail_from = Some(path);
        "250 2.1.0 OK\r\n".to_owned()
    }

    fn rcpt(&mut self, arg: &str) -> Reply {
        if self.mail_from.is_none() {
            return self.refuse("503 5.5.1 MAIL first");
        }
        let Some((path, params)) = strip_keyword(arg, "TO:").and_then(parse_path) else {
            return self.refuse("501 5.5.4 syntax: RCPT TO:<address>");
        };
        if path.is_empty() {
            return self.refuse("501 5.1.3 empty recipient");
        }
        if !params.trim().is_empty() {
            return self.refuse("555 5.5.4 parameter not recognized");
        }
        if let FailMode::Rcpt(fail) = *self.shared.fail.borrow() {
            return format!("{}\r\n", fail.reply());
        }
        if self.rcpt_to.len() >= MAX_RECIPIENTS {
            return "452 4.5.3 too many recipients\r\n".to_owned();
        }
        self.rcpt_to.push(path);
        "250 2.1.5 OK\r\n".to_owned()
    }

    /// Reads the message after 354. `None` when the client went away before its end.
    async fn data<S>(&mut self, io: &mut BufReader<S>) -> io::Result<Option<Reply>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let limit = self.shared.options.max_message_size;
        let mut data: Vec<u8> = Vec::new();
        let mut too_big = false;
        let mut at_line_start = true;
        let mut chunk = Vec::new();
        loop {
            chunk.clear();
            let read = tokio::time::timeout(
                self.shared.options.idle_timeout,
                (&mut *io)
                    .take(MAX_DATA_CHUNK as u64)
                    .read_until(b'\n', &mut chunk),
            )
            .await;
            match read {
                Ok(Ok(0)) | Err(_) => return Ok(None),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
            }
            let mut piece = &chunk[..];
            if at_line_start {
                if piece == b".\r\n" || piece == b".\n" {
                    break;
                }
                // Dot-unstuffing (RFC 5321 §4.5.2).
                if piece.first() == Some(&b'.') {
                    piece = &piece[1..];
                }
            }
            at_line_start = chunk.ends_with(b"\n");
            if data.len() + piece.len() > limit {
                too_big = true;
            } else if !too_big {
                data.extend_from_slice(piece);
            }
        }
        let mail_from = self.mail_from.take().unwrap_or_default();
        let rcpt_to = std::mem::take(&mut self.rcpt_to);
        if too_big {
            return Ok(Some("552 5.3.4 message too big\r\n".to_owned()));
        }
        if let FailMode::Data(fail) = *self.shared.fail.borrow() {
            return Ok(Some(format!("{}\r\n", fail.reply())));
        }
        self.shared.options.inbox.push(Message {
            mail_from,
            rcpt_to,
            data: String::from_utf8_lossy(&data).into_owned(),
            authenticated_as: self.authenticated_as.clone(),
            tls: self.tls,
        });
        Ok(Some("250 2.0.0 OK queued\r\n".to_owned()))
    }

    async fn read_line<S>(&mut self, io: &mut BufReader<S>) -> io::Result<Line>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut line = Vec::new();
        let read = tokio::time::timeout(
            self.shared.options.idle_timeout,
            (&mut *io)
                .take(MAX_COMMAND_LINE as u64)
                .read_until(b'\n', &mut line),
        )
        .await;
        match read {
            Err(_) => {
                send(io, "421 4.4.2 idle too long, closing\r\n").await?;
                Ok(Line::Gone)
            }
            Ok(Ok(0)) => Ok(Line::Gone),
            Ok(Ok(_)) if !line.ends_with(b"\n") => {
                if line.len() >= MAX_COMMAND_LINE {
                    Ok(Line::TooLong)
                } else {
                    // The connection closed in the middle of a line.
                    Ok(Line::Gone)
                }
            }
            Ok(Ok(_)) => {
                let text = String::from_utf8_lossy(&line);
                Ok(Line::Complete(
                    text.trim_end_matches(['\r', '\n']).to_owned(),
                ))
            }
            Ok(Err(e)) => Err(e),
        }
    }
}

async fn send<S>(io: &mut BufReader<S>, reply: &str) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let stream = io.get_mut();
    stream.write_all(reply.as_bytes()).await?;
    stream.flush().await
}

/// `FROM:` or `TO:` (any case, spaces allowed after the colon) stripped from `arg`.
fn strip_keyword<'a>(arg: &'a str, keyword: &str) -> Option<&'a str> {
    let head = arg.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| arg[keyword.len()..].trim_start())
}

/// `<path> params` → the path without brackets, and the parameters.
fn parse_path(rest: &str) -> Option<(String, &str)> {
    let inner = rest.strip_prefix('<')?;
    let end = inner.find('>')?;
    let path = &inner[..end];
    if path.contains(char::is_whitespace) {
        return None;
    }
    Some((path.to_owned(), &inner[end + 1..]))
}

fn decode_base64(text: &str) -> Option<String> {
    if text == "=" {
        return Some(String::new());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    String::from_utf8(bytes).ok()
}
