//! Outgoing mail: a queue kept in the store, so that a request never waits on the mail server,
//! a slow or failing server is retried with backoff, and nothing is lost across a restart.
//!
//! A request renders its message and [`Mailer::enqueue`]s it: the message is sealed with the
//! master key (the recipient and body, which may carry a code, are never stored in the clear) and
//! written to the queue. A worker on every node ([`Mailer::run`]) claims due mail with a lease
//! (a node that dies while sending leaves the mail to be claimed again when the lease ends),
//! hands it to a [`MailTransport`] (SMTP), deletes it once sent, and otherwise retries with
//! exponential backoff until the mail is no longer useful (its `not_after`, such as the expiry of
//! the code it carries) or the server refuses it for good.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::audit::{Audit, EventKind};
use crate::clock::{Clock, Timestamp};
use crate::error::{Error, StoreError};
use crate::token::MasterKey;
use crate::user::UserId;

/// A queued mail's id (`mail_` + 128 random bits); not a secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct MailId(String);

impl MailId {
    const PREFIX: &str = "mail_";

    /// A new random id.
    pub fn generate() -> Result<Self, Error> {
        crate::secret::random_public_id(Self::PREFIX).map(Self)
    }

    /// Wraps an id read back from the store.
    pub fn from_stored(id: String) -> Self {
        Self(id)
    }

    /// The id as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MailId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message ready to send: one recipient, a subject, a plain-text body and optionally an HTML
/// one. `Debug` shows neither the recipient nor the bodies (they may carry a code).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailMessage {
    /// The recipient's address.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body, sent as an alternative to the text one.
    pub html: Option<String>,
    /// The language of the message (a tag such as `en` or `zh`), sent as `Content-Language`.
    pub language: String,
}

impl fmt::Debug for MailMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailMessage")
            .field("subject", &self.subject)
            .field("language", &self.language)
            .finish_non_exhaustive()
    }
}

/// A queued mail as the store keeps it: the message sealed with the master key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedMail {
    /// The id; the associated data of the seal, so a sealed message cannot move to another row.
    pub id: MailId,
    /// The account it concerns, if any: its mail goes when the account is deleted.
    pub user_id: Option<UserId>,
    /// The [`MailMessage`] as JSON, sealed (AES-256-GCM) with the master key.
    pub sealed: Vec<u8>,
    /// When it was queued.
    pub created_at: Timestamp,
    /// Not sent after this: the mail is useless by then (the code it carries has expired).
    pub not_after: Timestamp,
    /// Delivery attempts begun so far (a claim counts as one).
    pub attempts: u32,
    /// When it may next be claimed: due now, after a backoff, or when a claim's lease ends.
    pub next_attempt_at: Timestamp,
    /// Why the last attempt failed, as the mail server said (no recipient, no body).
    pub last_error: Option<String>,
}

/// The mail queue.
#[async_trait]
pub trait MailStore: Send + Sync + 'static {
    /// Adds a mail to the queue.
    async fn enqueue_mail(&self, mail: &QueuedMail) -> Result<(), StoreError>;

    /// Claims up to `limit` mails whose `next_attempt_at` is at or before `now`, oldest first:
    /// atomically moves their `next_attempt_at` to `lease_until` and adds one to `attempts`, and
    /// returns them as updated. Of workers claiming at once (on any node), each mail goes to one.
    async fn claim_mail(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> Result<Vec<QueuedMail>, StoreError>;

    /// Removes a mail (sent, or given up); `false` when it was not there.
    async fn delete_mail(&self, id: &MailId) -> Result<bool, StoreError>;

    /// Puts a claimed mail back for a later attempt, with why this one failed; `false` when it
    /// is gone.
    async fn retry_mail(
        &self,
        id: &MailId,
        next_attempt_at: Timestamp,
        last_error: &str,
    ) -> Result<bool, StoreError>;

    /// How many mails wait in the queue (claimed ones included).
    async fn queued_mail(&self) -> Result<usize, StoreError>;
}

/// Why a transport could not send a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// Worth trying again later: the server could not be reached, timed out, or answered 4xx.
    Temporary(String),
    /// The server refused this message for good (5xx: no such mailbox, a policy): not retried.
    Permanent(String),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Temporary(why) => write!(f, "temporary failure: {why}"),
            SendError::Permanent(why) => write!(f, "refused: {why}"),
        }
    }
}

/// Something that delivers a message (the SMTP client, in the server).
#[async_trait]
pub trait MailTransport: Send + Sync + 'static {
    /// Sends one message, or says why not.
    async fn send(&self, message: &MailMessage) -> Result<(), SendError>;
}

/// How the queue is worked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailerConfig {
    /// How often an idle worker looks for due mail (another node's, or a retry coming due).
    pub poll_interval: Duration,
    /// How long a claimed mail is left to one worker before another may take it again.
    pub lease: Duration,
    /// The wait after the first failure; each further failure doubles it, up to `max_backoff`.
    pub first_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// Mails claimed at once.
    pub batch: usize,
}

impl Default for MailerConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(2),
            lease: Duration::from_secs(120),
            first_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(600),
            batch: 16,
        }
    }
}

impl MailerConfig {
    /// The wait before the attempt after `attempts` failed ones: `first_backoff` doubled per
    /// failure beyond the first, at most `max_backoff`.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(20);
        self.first_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }
}

/// The mail queue and its worker.
#[derive(Clone)]
pub struct Mailer {
    store: Arc<dyn MailStore>,
    transport: Option<Arc<dyn MailTransport>>,
    key: MasterKey,
    clock: Arc<dyn Clock>,
    audit: Audit,
    config: MailerConfig,
    wake: Arc<Notify>,
}

impl Mailer {
    /// A mailer over `store`; without a `transport`, this node queues no mail
    /// ([`Mailer::enabled`] is false) and sends none.
    pub fn new(
        store: Arc<dyn MailStore>,
        transport: Option<Arc<dyn MailTransport>>,
        key: MasterKey,
        clock: Arc<dyn Clock>,
        audit: Audit,
        config: MailerConfig,
    ) -> Self {
        Self {
            store,
            transport,
            key,
            clock,
            audit,
            config,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Whether this node can send mail (a transport is configured).
    pub fn enabled(&self) -> bool {
        self.transport.is_some()
    }

    /// Seals and queues a message; the worker sends it soon. Not sent after `not_after`.
    pub async fn enqueue(
        &self,
        user: Option<&UserId>,
        message: &MailMessage,
        not_after: Timestamp,
    ) -> Result<MailId, Error> {
        let id = MailId::generate()?;
        let json = serde_json::to_vec(message)
            .map_err(|e| Error::Internal(format!("encoding a mail: {e}")))?;
        let sealed = self.key.seal(id.as_str(), &json)?;
        let now = self.clock.now();
        self.store
            .enqueue_mail(&QueuedMail {
                id: id.clone(),
                user_id: user.cloned(),
                sealed,
                created_at: now,
                not_after,
                attempts: 0,
                next_attempt_at: now,
                last_error: None,
            })
            .await?;
        self.wake.notify_one();
        Ok(id)
    }

    /// How many mails wait in the queue.
    pub async fn queued(&self) -> Result<usize, Error> {
        Ok(self.store.queued_mail().await?)
    }

    /// Works the queue until aborted: delivers what is due, then sleeps until mail is queued on
    /// this node or the poll interval passes. Does nothing without a transport.
    pub async fn run(self) {
        if self.transport.is_none() {
            return;
        }
        loop {
            match self.deliver_due().await {
                // A full batch: there may be more due right away.
                Ok(n) if n >= self.config.batch => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "working the mail queue failed; will retry"),
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }

    /// One pass: claims the mail due now and tries each once. Returns how many were claimed.
    pub async fn deliver_due(&self) -> Result<usize, Error> {
        let Some(transport) = &self.transport else {
            return Ok(0);
        };
        let now = self.clock.now();
        let claimed = self
            .store
            .claim_mail(
                now,
                now.saturating_add(self.config.lease),
                self.config.batch,
            )
            .await?;
        let count = claimed.len();
        for mail in claimed {
            self.attempt(transport.as_ref(), mail).await?;
        }
        Ok(count)
    }

    async fn attempt(&self, transport: &dyn MailTransport, mail: QueuedMail) -> Result<(), Error> {
        let now = self.clock.now();
        if now > mail.not_after {
            self.store.delete_mail(&mail.id).await?;
            metrics::counter!("tessera_mails_total", "outcome" => "expired").increment(1);
            tracing::warn!(mail = %mail.id, attempts = mail.attempts - 1, "mail given up: no longer useful");
            self.audit
                .record(
                    EventKind::MailAbandoned,
                    mail.user_id.as_ref(),
                    serde_json::json!({"mail": mail.id, "attempts": mail.attempts - 1, "reason": "expired", "last_error": mail.last_error}),
                )
                .await;
            return Ok(());
        }
        let message = match self
            .key
            .open(mail.id.as_str(), &mail.sealed)
            .ok()
            .and_then(|json| serde_json::from_slice::<MailMessage>(&json).ok())
        {
            Some(message) => message,
            None => {
                // Sealed with another master key, or damaged: it can never be sent.
                self.store.delete_mail(&mail.id).await?;
                metrics::counter!("tessera_mails_total", "outcome" => "unreadable").increment(1);
                tracing::error!(mail = %mail.id, "a queued mail cannot be opened with this master key; dropped");
                self.audit
                    .record(
                        EventKind::MailAbandoned,
                        mail.user_id.as_ref(),
                        serde_json::json!({"mail": mail.id, "attempts": mail.attempts, "reason": "cannot be unsealed"}),
                    )
                    .await;
                return Ok(());
            }
        };
        match transport.send(&message).await {
            Ok(()) => {
                self.store.delete_mail(&mail.id).await?;
                metrics::counter!("tessera_mails_total", "outcome" => "sent").increment(1);
                tracing::info!(mail = %mail.id, attempts = mail.attempts, "mail sent");
                self.audit
                    .record(
                        EventKind::MailSent,
                        mail.user_id.as_ref(),
                        serde_json::json!({"mail": mail.id, "attempts": mail.attempts, "subject": message.subject}),
                    )
                    .await;
            }
            Err(SendError::Permanent(why)) => {
                self.store.delete_mail(&mail.id).await?;
                metrics::counter!("tessera_mails_total", "outcome" => "refused").increment(1);
                tracing::warn!(mail = %mail.id, error = %why, "mail refused by the mail server; not retried");
                self.audit
                    .record(
                        EventKind::MailAbandoned,
                        mail.user_id.as_ref(),
                        serde_json::json!({"mail": mail.id, "attempts": mail.attempts, "reason": "refused", "last_error": why}),
                    )
                    .await;
            }
            Err(SendError::Temporary(why)) => {
                let wait = self.config.backoff(mail.attempts);
                self.store
                    .retry_mail(&mail.id, self.clock.now().saturating_add(wait), &why)
                    .await?;
                metrics::counter!("tessera_mails_total", "outcome" => "retry").increment(1);
                tracing::warn!(mail = %mail.id, attempts = mail.attempts, retry_in = ?wait, error = %why, "sending a mail failed; will retry");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = MailerConfig::default();
        assert_eq!(config.backoff(1), Duration::from_secs(5));
        assert_eq!(config.backoff(2), Duration::from_secs(10));
        assert_eq!(config.backoff(3), Duration::from_secs(20));
        assert_eq!(config.backoff(8), Duration::from_secs(600));
        assert_eq!(config.backoff(u32::MAX), Duration::from_secs(600));
    }

    #[test]
    fn debug_shows_no_recipient_or_body() {
        let message = MailMessage {
            to: "alice@example.org".into(),
            subject: "Reset".into(),
            text: "code SECRET".into(),
            html: Some("<p>code SECRET</p>".into()),
            language: "en".into(),
        };
        let shown = format!("{message:?}");
        assert!(
            !shown.contains("alice") && !shown.contains("SECRET"),
            "{shown}"
        );
    }
}
