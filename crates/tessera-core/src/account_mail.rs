//! What accounts do by mail: recovery of a forgotten password, verification of an address, and
//! the notice that an address changed. Every mail goes through the queue ([`Mailer`]), so no
//! request waits on the mail server.
//!
//! Recovery and the unauthenticated resend of a verification code answer the same whether or
//! not the account exists: the request is checked and throttled (by the address of the client
//! and by what was typed, never by whether it names an account), then the work is handed to a
//! task and the caller answers at once. Looking the account up, making the code and queueing the
//! mail happen after the answer, so its timing tells nothing either.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::accounts::Accounts;
use crate::audit::{Audit, EventKind};
use crate::clock::Clock;
use crate::email::{AccountCode, CodePurpose, EmailAddress, UserEmail};
use crate::error::Error;
use crate::logins::Logins;
use crate::mail::Mailer;
use crate::mail_templates::{MailKind, MailTemplates};
use crate::password::{Password, Verification};
use crate::secret::OneTimeCode;
use crate::store::UserStore;
use crate::throttle::Throttle;
use crate::user::{User, UserId};

/// The longest account name or address a recovery or resend request may carry.
const MAX_IDENTIFIER_LEN: usize = 254;

/// How recovery and verification mails are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountMailConfig {
    /// The application's name, as mails call it.
    pub product_name: String,
    /// The page a recovery mail links to; `code=…` is added to its query.
    pub recovery_url: String,
    /// How long a recovery code works.
    pub recovery_lifetime: Duration,
    /// The page a verification mail links to; `code=…` is added to its query.
    pub verification_url: String,
    /// How long a verification code works.
    pub verification_lifetime: Duration,
}

impl Default for AccountMailConfig {
    fn default() -> Self {
        Self {
            product_name: "Tessera".into(),
            recovery_url: "http://localhost:8080/account/recovery".into(),
            recovery_lifetime: Duration::from_secs(15 * 60),
            verification_url: "http://localhost:8080/account/verify".into(),
            verification_lifetime: Duration::from_secs(48 * 3600),
        }
    }
}

/// Recovery, verification and address changes, by mail.
#[derive(Clone)]
pub struct AccountMail {
    users: Arc<dyn UserStore>,
    accounts: Accounts,
    logins: Logins,
    mailer: Mailer,
    templates: MailTemplates,
    audit: Audit,
    clock: Arc<dyn Clock>,
    config: Arc<AccountMailConfig>,
}

/// `url` with `code=CODE` added to its query (before any fragment).
fn link_with_code(url: &str, code: &str) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (url, None),
    };
    let separator = if base.contains('?') {
        if base.ends_with('?') || base.ends_with('&') {
            ""
        } else {
            "&"
        }
    } else {
        "?"
    };
    let mut link = format!("{base}{separator}code={code}");
    if let Some(fragment) = fragment {
        link.push('#');
        link.push_str(fragment);
    }
    link
}

/// An address shown in a notice to another mailbox: its first character and its domain.
fn masked(address: &EmailAddress) -> String {
    let (local, domain) = address
        .as_str()
        .rsplit_once('@')
        .unwrap_or((address.as_str(), ""));
    let first: String = local.chars().take(1).collect();
    format!("{first}•••@{domain}")
}

impl AccountMail {
    /// Built by [`crate::Services::build`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        users: Arc<dyn UserStore>,
        accounts: Accounts,
        logins: Logins,
        mailer: Mailer,
        templates: MailTemplates,
        audit: Audit,
        clock: Arc<dyn Clock>,
        config: AccountMailConfig,
    ) -> Self {
        Self {
            users,
            accounts,
            logins,
            mailer,
            templates,
            audit,
            clock,
            config: Arc::new(config),
        }
    }

    /// The same service with another queue worker and templates (the server's SMTP transport
    /// and the operator's templates).
    pub(crate) fn with_mailer(mut self, mailer: Mailer, templates: MailTemplates) -> Self {
        self.mailer = mailer;
        self.templates = templates;
        self
    }

    /// The queue.
    pub fn mailer(&self) -> &Mailer {
        &self.mailer
    }

    /// The templates, and the languages they are offered in.
    pub fn templates(&self) -> &MailTemplates {
        &self.templates
    }

    /// The settings.
    pub fn config(&self) -> &AccountMailConfig {
        &self.config
    }

    fn throttle(&self) -> &Throttle {
        self.logins.throttle()
    }

    fn require_mail(&self) -> Result<(), Error> {
        if self.mailer.enabled() {
            Ok(())
        } else {
            Err(Error::MailUnavailable)
        }
    }

    /// Checks the account name or address a request typed, and spends the budgets of the client
    /// and of what it typed. Done the same way whatever it names.
    async fn admit(
        &self,
        field: &'static str,
        identifier: &str,
        ip: Option<IpAddr>,
    ) -> Result<String, Error> {
        self.require_mail()?;
        let identifier = identifier.trim();
        if identifier.is_empty() {
            return Err(Error::invalid(field, "must not be empty"));
        }
        if identifier.len() > MAX_IDENTIFIER_LEN {
            return Err(Error::invalid(
                field,
                format!("must be at most {MAX_IDENTIFIER_LEN} bytes long"),
            ));
        }
        self.throttle().spend_address(ip).await?;
        self.throttle().spend_mail(identifier).await?;
        Ok(identifier.to_owned())
    }

    /// The account an identifier names: an address when it has an `@` and some account has it,
    /// else a username.
    async fn find(&self, identifier: &str) -> Result<Option<User>, Error> {
        if identifier.contains('@')
            && let Some(user) = self.accounts.user_by_email(identifier).await?
        {
            return Ok(Some(user));
        }
        self.accounts.user_by_name(identifier).await
    }

    /// Asks for a recovery mail for the account named by `identifier` (a username or an
    /// address). Answers `Ok` the same way whether or not there is such an account; the mail, if
    /// any, is made after the answer. Errors only for what does not depend on the account: an
    /// empty or overlong identifier, a spent budget, no mail on this server.
    pub async fn request_recovery(
        &self,
        identifier: &str,
        language: String,
        ip: Option<IpAddr>,
    ) -> Result<(), Error> {
        let identifier = self.admit("username", identifier, ip).await?;
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.send_recovery(&identifier, &language).await {
                tracing::warn!(error = %e, "could not queue a recovery mail");
            }
        });
        Ok(())
    }

    async fn send_recovery(&self, identifier: &str, language: &str) -> Result<(), Error> {
        let Some(user) = self.find(identifier).await? else {
            return Ok(());
        };
        let Some(email) = user.email.clone().filter(|_| user.is_active()) else {
            return Ok(());
        };
        // Also per account, whatever name or address reached it; silently, so it tells nothing.
        if self.throttle().spend_mail(user.id.as_str()).await.is_err() {
            tracing::info!(user = %user.id, "recovery mail not sent: too many asked for this account");
            return Ok(());
        }
        let lifetime = self.config.recovery_lifetime;
        let Some(id) = self
            .send_code(
                &user,
                &email.address,
                MailKind::Recovery,
                language,
                lifetime,
                json!({"expires_minutes": lifetime.as_secs().div_ceil(60)}),
            )
            .await?
        else {
            return Ok(());
        };
        self.audit
            .record(
                EventKind::RecoveryRequested,
                Some(&user.id),
                json!({"mail": id, "language": language}),
            )
            .await;
        Ok(())
    }

    /// A new code for `user`, voiding the older ones of the same purpose; `None` when the
    /// account is gone.
    async fn new_code(
        &self,
        user: &UserId,
        purpose: CodePurpose,
        address: &EmailAddress,
        lifetime: Duration,
    ) -> Result<Option<OneTimeCode>, Error> {
        let code = OneTimeCode::generate()?;
        let now = self.clock.now();
        let stored = self
            .users
            .create_code(&AccountCode {
                hash: code.hash(),
                user_id: user.clone(),
                purpose,
                email_key: address.key().to_owned(),
                created_at: now,
                expires_at: now.saturating_add(lifetime),
            })
            .await?;
        Ok(stored.then_some(code))
    }

    /// Makes a code for `kind`'s purpose (voiding the account's older ones) and queues the mail
    /// that carries it to `address`. The template gets `code` and `link` (the purpose's page with
    /// `code=`), `extra`, and what [`AccountMail::queue`] adds. `None` when the account is gone.
    async fn send_code(
        &self,
        user: &User,
        address: &EmailAddress,
        kind: MailKind,
        language: &str,
        lifetime: Duration,
        extra: serde_json::Value,
    ) -> Result<Option<crate::mail::MailId>, Error> {
        let (purpose, page) = match kind {
            MailKind::Recovery => (CodePurpose::Recovery, &self.config.recovery_url),
            _ => (CodePurpose::VerifyEmail, &self.config.verification_url),
        };
        let Some(code) = self.new_code(&user.id, purpose, address, lifetime).await? else {
            return Ok(None);
        };
        let code = code.encode();
        let mut vars = json!({"link": link_with_code(page, &code), "code": code});
        if let (Some(vars), serde_json::Value::Object(extra)) = (vars.as_object_mut(), extra) {
            vars.extend(extra);
        }
        let not_after = self.clock.now().saturating_add(lifetime);
        self.queue(user, kind, language, address, vars, not_after)
            .await
            .map(Some)
    }

    /// Renders `kind` with `vars` plus `product` and `username`, and queues it to `address`,
    /// not to be sent after `not_after`.
    async fn queue(
        &self,
        user: &User,
        kind: MailKind,
        language: &str,
        address: &EmailAddress,
        mut vars: serde_json::Value,
        not_after: crate::clock::Timestamp,
    ) -> Result<crate::mail::MailId, Error> {
        if let Some(vars) = vars.as_object_mut() {
            vars.insert("product".into(), self.config.product_name.clone().into());
            vars.insert("username".into(), user.username.as_str().into());
        }
        let message = self
            .templates
            .render(kind, language, address.as_str(), &vars)?;
        self.mailer
            .enqueue(Some(&user.id), &message, not_after)
            .await
    }

    /// Sets a new password with a recovery code: the code works once; every login of the account
    /// ends, on every node, and every access token issued until now is refused. The new password
    /// meets the same rules as at registration (checked before the code is spent).
    #[tracing::instrument(skip_all)]
    pub async fn complete_recovery(
        &self,
        code: &str,
        new_password: &Password,
        ip: Option<IpAddr>,
    ) -> Result<UserId, Error> {
        // A guess at a code is a guess like a login: the client's budget.
        self.throttle().spend_address(ip).await?;
        let Some(code) = OneTimeCode::parse(code.trim()) else {
            self.refused(CodePurpose::Recovery, ip).await;
            return Err(Error::InvalidCode);
        };
        self.accounts
            .check_new_password(new_password, "new_password")?;
        let hash = self.accounts.hash_password(new_password).await?;
        let Some(user) = self
            .users
            .use_recovery_code(&code.hash(), &hash, self.clock.now())
            .await?
        else {
            self.refused(CodePurpose::Recovery, ip).await;
            return Err(Error::InvalidCode);
        };
        let ended = self
            .logins
            .end_everything(&user, "account recovered")
            .await?;
        self.audit
            .record(
                EventKind::AccountRecovered,
                Some(&user),
                json!({"logins": ended, "ip": ip}),
            )
            .await;
        Ok(user)
    }

    async fn refused(&self, purpose: CodePurpose, ip: Option<IpAddr>) {
        self.audit
            .record(
                EventKind::CodeRefused,
                None,
                json!({"purpose": purpose, "ip": ip}),
            )
            .await;
    }

    /// Queues a verification code for the account's address (after registration, a change of
    /// address, or a resend). `by`: the admin who asked, if one did. Does nothing for an account
    /// without an address or whose address is verified already.
    pub async fn send_verification(
        &self,
        user: &User,
        language: &str,
        by: Option<&UserId>,
    ) -> Result<(), Error> {
        self.require_mail()?;
        let Some(email) = user.email.as_ref().filter(|e| !e.verified) else {
            return Ok(());
        };
        let lifetime = self.config.verification_lifetime;
        let Some(id) = self
            .send_code(
                user,
                &email.address,
                MailKind::VerifyEmail,
                language,
                lifetime,
                json!({
                    "expires_hours": lifetime.as_secs().div_ceil(3600),
                    "address": email.address.as_str(),
                }),
            )
            .await?
        else {
            return Ok(());
        };
        self.audit
            .record(
                EventKind::VerificationSent,
                Some(&user.id),
                json!({"mail": id, "by": by, "language": language}),
            )
            .await;
        Ok(())
    }

    /// Spends a mail of `email`'s budget before an account is registered with it (the
    /// registration sends it a verification mail): [`Error::Throttled`] when the address had
    /// its share, so registering and deleting accounts cannot flood a mailbox. Nothing is spent
    /// when this server sends no mail, or for an address that does not parse (registration
    /// refuses it).
    pub async fn admit_registration(&self, email: Option<&str>) -> Result<(), Error> {
        if !self.mailer.enabled() {
            return Ok(());
        }
        if let Some(address) = email.and_then(|e| EmailAddress::parse(e).ok()) {
            self.throttle().spend_mail(address.key()).await?;
        }
        Ok(())
    }

    /// Asks for a new verification code without being logged in (an account whose logins are
    /// refused until its address is verified). Answers the same whether or not there is such an
    /// account, as [`AccountMail::request_recovery`] does.
    pub async fn request_verification(
        &self,
        identifier: &str,
        language: String,
        ip: Option<IpAddr>,
    ) -> Result<(), Error> {
        let identifier = self.admit("username", identifier, ip).await?;
        let this = self.clone();
        tokio::spawn(async move {
            let sent = async {
                let Some(user) = this.find(&identifier).await? else {
                    return Ok(());
                };
                if !user.is_active() || this.throttle().spend_mail(user.id.as_str()).await.is_err()
                {
                    return Ok(());
                }
                this.send_verification(&user, &language, None).await
            };
            if let Err(e) = sent.await {
                tracing::warn!(error = %e, "could not queue a verification mail");
            }
        });
        Ok(())
    }

    /// Marks the account's current address verified without mail: an operator vouching for it
    /// (`tessera user email … --verified`, or the first admin of a server that requires
    /// verified addresses). Goes through a code like any verification, so it holds only while
    /// the account still has that address. `false` when the account has no address or is gone.
    pub async fn verify_by_operator(&self, user: &User) -> Result<bool, Error> {
        let Some(email) = &user.email else {
            return Ok(false);
        };
        let Some(code) = self
            .new_code(
                &user.id,
                CodePurpose::VerifyEmail,
                &email.address,
                Duration::from_secs(60),
            )
            .await?
        else {
            return Ok(false);
        };
        Ok(self
            .use_verification_code(&code, json!({"by": "operator"}))
            .await?
            .is_some())
    }

    /// Uses a verification code; when it verified the account's address, tells every node and
    /// records it with `detail`. The account, or `None` when the code did nothing.
    async fn use_verification_code(
        &self,
        code: &OneTimeCode,
        detail: serde_json::Value,
    ) -> Result<Option<UserId>, Error> {
        match self
            .users
            .use_verification_code(&code.hash(), self.clock.now())
            .await?
        {
            Some(done) if done.still_current => {
                self.logins.account_changed(&done.user).await;
                self.audit
                    .record(EventKind::EmailVerified, Some(&done.user), detail)
                    .await;
                Ok(Some(done.user))
            }
            _ => Ok(None),
        }
    }

    /// Sets (or with `None` removes) an account's address as an operator, without the password
    /// or a notice; it starts unverified. `false` when the account is gone.
    pub async fn set_email_by_operator(
        &self,
        user: &UserId,
        email: Option<&str>,
    ) -> Result<bool, Error> {
        let email = email.map(EmailAddress::parse).transpose()?;
        if !self.accounts.set_email(user, email.as_ref()).await? {
            return Ok(false);
        }
        self.logins.account_changed(user).await;
        self.audit
            .record(
                EventKind::EmailChanged,
                Some(user),
                json!({"removed": email.is_none(), "by": "operator"}),
            )
            .await;
        Ok(true)
    }

    /// Marks an address verified with the code mailed to it. [`Error::InvalidCode`] for an
    /// unknown, used, expired or replaced code, or one mailed to an address the account no
    /// longer has.
    pub async fn verify_email(&self, code: &str, ip: Option<IpAddr>) -> Result<UserId, Error> {
        self.throttle().spend_address(ip).await?;
        let Some(code) = OneTimeCode::parse(code.trim()) else {
            self.refused(CodePurpose::VerifyEmail, ip).await;
            return Err(Error::InvalidCode);
        };
        match self.use_verification_code(&code, json!({"ip": ip})).await? {
            Some(user) => Ok(user),
            None => {
                self.refused(CodePurpose::VerifyEmail, ip).await;
                Err(Error::InvalidCode)
            }
        }
    }

    /// Changes (or with `None` removes) the caller's address, after checking the current
    /// password: the new address starts unverified and gets a verification code, and the old one
    /// gets a notice. Removing is refused when verified addresses are required.
    #[tracing::instrument(skip_all, fields(user = %user.id))]
    pub async fn change_email(
        &self,
        user: &User,
        current_password: &Password,
        new: Option<&str>,
        language: &str,
        ip: Option<IpAddr>,
    ) -> Result<User, Error> {
        let new = new.map(EmailAddress::parse).transpose()?;
        if new.is_none() && self.accounts.config().require_verified_email {
            return Err(Error::invalid(
                "email",
                "cannot be removed: this server requires every account to have one",
            ));
        }
        if new.is_some() && self.accounts.config().require_verified_email {
            // The new address is useless if it cannot be verified.
            self.require_mail()?;
        }
        let throttle = self.throttle();
        throttle.spend_address(ip).await?;
        let name = user.username.as_str();
        throttle.spend_account(name, None).await?;
        let fresh = self
            .accounts
            .user(&user.id)
            .await
            .and_then(|u| u.filter(User::is_active).ok_or(Error::Unauthenticated));
        let checked = match fresh {
            Ok(fresh) => match self
                .accounts
                .verify_password(&fresh, current_password)
                .await
            {
                Ok(Verification::Valid { .. }) => Ok(fresh),
                Ok(Verification::Invalid) => Err(Error::WrongCurrentPassword),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if !matches!(checked, Err(Error::WrongCurrentPassword)) {
            throttle.refund_account(name, None).await?;
        }
        let before = checked?;
        let old = before.email.clone();
        // The same address (compared by key), or none before and after: nothing to do, and a
        // verified address stays verified.
        if old.as_ref().map(|e| &e.address) == new.as_ref() {
            return Ok(before);
        }
        // Each address gets few mails, whoever makes it get them: a new address its
        // verification mail, the old one its notice. A change that would send past the new
        // address's budget is refused before anything changes.
        if let Some(new) = &new
            && self.mailer.enabled()
        {
            throttle.spend_mail(new.key()).await?;
        }
        if !self.accounts.set_email(&before.id, new.as_ref()).await? {
            return Err(Error::Unauthenticated);
        }
        self.logins.account_changed(&before.id).await;
        self.audit
            .record(
                EventKind::EmailChanged,
                Some(&before.id),
                json!({"removed": new.is_none(), "had_address": old.is_some(), "ip": ip}),
            )
            .await;
        // The account as it now is: what the store just wrote, without reading it back.
        let after = User {
            email: new.clone().map(|address| UserEmail {
                address,
                verified: false,
            }),
            ..before
        };
        if self.mailer.enabled() {
            if let Some(old) = &old {
                if throttle.spend_mail(old.address.key()).await.is_ok() {
                    self.notify_change(&after, &old.address, new.as_ref(), language)
                        .await?;
                } else {
                    tracing::info!(user = %after.id, "change notice not sent: too many mails to that address");
                }
            }
            self.send_verification(&after, language, None).await?;
        }
        Ok(after)
    }

    async fn notify_change(
        &self,
        user: &User,
        old: &EmailAddress,
        new: Option<&EmailAddress>,
        language: &str,
    ) -> Result<(), Error> {
        let vars = json!({
            "new_address": new.map(masked).unwrap_or_default(),
            "removed": new.is_none(),
            "at": self.clock.now().to_rfc3339(),
        });
        // A notice stays useful for a while, not forever.
        let not_after = self
            .clock
            .now()
            .saturating_add(Duration::from_secs(7 * 86400));
        self.queue(user, MailKind::EmailChanged, language, old, vars, not_after)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_joins_the_query() {
        assert_eq!(
            link_with_code("https://a.example/r", "C"),
            "https://a.example/r?code=C"
        );
        assert_eq!(
            link_with_code("https://a.example/r?lang=zh", "C"),
            "https://a.example/r?lang=zh&code=C"
        );
        assert_eq!(
            link_with_code("https://a.example/r?", "C"),
            "https://a.example/r?code=C"
        );
        assert_eq!(
            link_with_code("https://a.example/app#/reset", "C"),
            "https://a.example/app?code=C#/reset"
        );
    }

    #[test]
    fn notices_mask_the_new_address() {
        let address = EmailAddress::parse("alice@example.org").unwrap();
        assert_eq!(masked(&address), "a•••@example.org");
    }
}
