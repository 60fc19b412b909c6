//! The one place the services are built: from the stores, a clock, the master key and the
//! configuration. The server, the HTTP tests and the benchmarks all build them here, so none of
//! them can run on wiring the others do not use.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::account_mail::{AccountMail, AccountMailConfig};
use crate::accounts::{Accounts, AccountsConfig};
use crate::audit::Audit;
use crate::clock::Clock;
use crate::error::Error;
use crate::follower::Follower;
use crate::logins::Logins;
use crate::mail::{MailTransport, Mailer, MailerConfig};
use crate::mail_templates::MailTemplates;
use crate::password::{Argon2Params, DEFAULT_HASHING_NICENESS, HashingLimits, PasswordHasher};
use crate::second_factor::SecondFactorConfig;
use crate::session::{SessionConfig, Sessions};
use crate::store::Stores;
use crate::throttle::{Throttle, ThrottleConfig};
use crate::token::key::SigningAlgorithm;
use crate::token::{KeyRing, MasterKey, Revocations, TokenConfig, Tokens};

/// How many expired sessions, families or revocations one sweep statement deletes.
const SWEEP_BATCH: usize = 1000;

/// Password hashing: the argon2 cost and how much of the machine it may take.
#[derive(Clone, Copy, Debug)]
pub struct PasswordsConfig {
    /// The argon2id cost of each new hash; older hashes are upgraded at the next login.
    pub argon2: Argon2Params,
    /// Hashes computed at once; 0: one per core.
    pub max_concurrent: usize,
    /// How long a login may wait for a hashing slot before it is refused as busy.
    pub queue_timeout: Duration,
    /// The niceness of the hashing threads (Linux): logins take the CPU that requests leave.
    pub niceness: i32,
}

impl Default for PasswordsConfig {
    fn default() -> Self {
        Self {
            argon2: Argon2Params::default(),
            max_concurrent: 0,
            queue_timeout: Duration::from_secs(10),
            niceness: DEFAULT_HASHING_NICENESS,
        }
    }
}

/// Everything the services are configured with.
#[derive(Clone, Debug)]
pub struct ServicesConfig {
    /// Registration and the password policy.
    pub accounts: AccountsConfig,
    /// The argon2 cost and the hashing concurrency.
    pub passwords: PasswordsConfig,
    /// Session lifetimes and limits.
    pub sessions: SessionConfig,
    /// Access and refresh token lifetimes, names and revocation mode.
    pub tokens: TokenConfig,
    /// The algorithm new signing keys use.
    pub signing_algorithm: SigningAlgorithm,
    /// The login-attempt budgets per client address and per account.
    pub throttle: ThrottleConfig,
    /// At most this many live logins per user (every model together); the oldest end first.
    /// 0: no cap.
    pub max_logins_per_user: usize,
    /// Recovery and verification mails: links, lifetimes, the application's name.
    pub account_mail: AccountMailConfig,
    /// How the mail queue is worked.
    pub mailer: MailerConfig,
    /// Second factors: the TOTP issuer, login challenges, and how recent a second factor
    /// privileged actions need.
    pub second_factor: SecondFactorConfig,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        Self {
            accounts: AccountsConfig::default(),
            passwords: PasswordsConfig::default(),
            sessions: SessionConfig::default(),
            tokens: TokenConfig::default(),
            signing_algorithm: SigningAlgorithm::EdDSA,
            throttle: ThrottleConfig::default(),
            max_logins_per_user: 0,
            account_mail: AccountMailConfig::default(),
            mailer: MailerConfig::default(),
            second_factor: SecondFactorConfig::default(),
        }
    }
}

/// Why the services could not be built.
#[derive(Debug, Error)]
pub enum BuildError {
    /// The password hasher refused its settings (argon2 parameters out of range).
    #[error("password hashing: {0}")]
    Passwords(Error),
    /// The signing keys could not be read or created: a store failure, or a master key that
    /// does not decrypt them.
    #[error("loading the signing keys: {0}")]
    Keys(Error),
    /// The revocation list could not be read from the store.
    #[error("loading the revocation list: {0}")]
    Revocations(Error),
    /// The passkey relying party was refused (an id that is not the domain of its origins).
    #[error("passkeys: {0}")]
    Passkeys(String),
}

/// Every core service of one node, sharing one set of stores. Cheap to clone.
#[derive(Clone)]
pub struct Services {
    /// The stores every service reads and writes, and their health checks.
    pub stores: Stores,
    /// The time every service reads.
    pub clock: Arc<dyn Clock>,
    /// Registration, credentials and account administration.
    pub accounts: Accounts,
    /// Server sessions and the near caches of sessions and accounts.
    pub sessions: Sessions,
    /// Access and refresh tokens, signing keys and revocation.
    pub tokens: Arc<Tokens>,
    /// The login pipeline and every login of a user, in any model.
    pub logins: Logins,
    /// Recovery, address verification and address changes, by mail.
    pub account_mail: AccountMail,
    master_key: MasterKey,
    mailer_config: MailerConfig,
}

impl Services {
    /// Builds every service: loads the signing keys (creating the first one on a new store) and
    /// the revocation list. Starts no task: see [`Services::spawn_follower`] and
    /// [`Services::spawn_sweeper`].
    ///
    /// `master_key` must be the one the store's signing keys were sealed with: with another, the
    /// build fails with [`BuildError::Keys`] instead of starting with keys that verify nothing
    /// already issued. The argon2 parameters are taken as given (their minimum is enforced when
    /// the configuration is loaded, see [`Argon2Params::validate`]).
    ///
    /// The crate `tessera-store` has a runnable example that builds the services on its
    /// `MemoryStore`, registers an account and logs it in (its crate-level documentation).
    pub async fn build(
        stores: Stores,
        clock: Arc<dyn Clock>,
        master_key: MasterKey,
        config: ServicesConfig,
    ) -> Result<Self, BuildError> {
        let max_concurrent = match config.passwords.max_concurrent {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let hasher = PasswordHasher::new(
            config.passwords.argon2,
            HashingLimits {
                max_concurrent,
                queue_timeout: config.passwords.queue_timeout,
                niceness: config.passwords.niceness,
            },
        )
        .map_err(BuildError::Passwords)?;
        let require_verified_email = config.accounts.require_verified_email;
        let accounts = Accounts::new(stores.users.clone(), hasher, clock.clone(), config.accounts);
        let sessions = Sessions::new(
            stores.sessions.clone(),
            stores.users.clone(),
            clock.clone(),
            config.sessions,
        )
        .with_feed(stores.feed.clone());
        let mut token_config = config.tokens;
        // With verified addresses required, every token answers the question, even for an
        // account that has no address (created before the setting, or by an operator).
        token_config.email_verified_always |= require_verified_email;
        let keyring = KeyRing::load(
            stores.keys.clone(),
            master_key.clone(),
            clock.clone(),
            config.signing_algorithm,
            token_config.access_lifetime + token_config.leeway,
        )
        .await
        .map_err(BuildError::Keys)?
        .with_feed(stores.feed.clone())
        .await;
        let revocations = Revocations::load(
            stores.revocations.clone(),
            token_config.revocation,
            clock.now(),
        )
        .await
        .map_err(BuildError::Revocations)?
        .with_feed(stores.feed.clone(), clock.now());
        let tokens = Arc::new(Tokens::new(
            Arc::new(keyring),
            revocations,
            stores.refresh.clone(),
            stores.users.clone(),
            stores.events.clone(),
            stores.proofs.clone(),
            master_key.clone(),
            clock.clone(),
            token_config,
            crate::login_context::LoginContexts::new(
                config.second_factor.new_context,
                Audit::new(stores.events.clone(), clock.clone()),
            ),
            config.second_factor.privileged_max_age,
        ));
        let logins = Logins::new(
            accounts.clone(),
            sessions.clone(),
            tokens.clone(),
            Throttle::new(config.throttle, stores.limiter.clone()),
            &stores,
            clock.clone(),
            config.max_logins_per_user,
            master_key.clone(),
            config.second_factor,
        )
        .map_err(BuildError::Passkeys)?;
        let audit = Audit::new(stores.events.clone(), clock.clone());
        let mailer = Mailer::new(
            stores.mail.clone(),
            None,
            master_key.clone(),
            clock.clone(),
            audit.clone(),
            config.mailer,
        );
        let account_mail = AccountMail::new(
            stores.users.clone(),
            accounts.clone(),
            logins.clone(),
            mailer,
            MailTemplates::builtin(),
            audit,
            clock.clone(),
            config.account_mail,
        );
        Ok(Self {
            stores,
            clock,
            accounts,
            sessions,
            tokens,
            logins,
            account_mail,
            master_key,
            mailer_config: config.mailer,
        })
    }

    /// The same services sending mail through `transport` (the SMTP client), with `templates`
    /// (the operator's, or the built-in ones). Without this, nothing needing mail is offered.
    pub fn with_mail(
        mut self,
        transport: Arc<dyn MailTransport>,
        templates: MailTemplates,
    ) -> Self {
        let mailer = Mailer::new(
            self.stores.mail.clone(),
            Some(transport),
            self.master_key.clone(),
            self.clock.clone(),
            Audit::new(self.stores.events.clone(), self.clock.clone()),
            self.mailer_config,
        );
        self.account_mail = self.account_mail.with_mailer(mailer, templates);
        self
    }

    /// Starts working the mail queue (see [`Mailer::run`]); returns at once, doing nothing, when
    /// no transport is configured. Runs until aborted.
    pub fn spawn_mailer(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.account_mail.mailer().clone().run())
    }

    /// Starts following the change feed: what other nodes change (revocations, keys, sessions,
    /// accounts) reaches this node's caches. Runs until aborted.
    pub fn spawn_follower(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(
            Follower {
                revocations: self.tokens.revocations().clone(),
                keyring: self.tokens.keyring().clone(),
                sessions: self.sessions.clone(),
                clock: self.clock.clone(),
            }
            .run(self.stores.feed.clone()),
        )
    }

    /// Starts the periodic upkeep (see [`Services::sweep`]), every `interval`. Runs until aborted.
    pub fn spawn_sweeper(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let services = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                services.sweep().await;
            }
        })
    }

    /// One pass of upkeep: deletes expired sessions, refresh families and revocations, picks up
    /// signing keys rotated by another process (`tessera keys rotate`), and re-reads the
    /// revocations to heal what the feed could not carry (a publish that failed after the store
    /// write). Failures are logged and retried on the next pass.
    pub async fn sweep(&self) {
        match self.sessions.sweep(SWEEP_BATCH).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "expired sessions swept"),
            Err(e) => tracing::warn!(error = %e, "session sweep failed; will retry"),
        }
        match self.tokens.sweep(SWEEP_BATCH).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "expired token state swept"),
            Err(e) => tracing::warn!(error = %e, "token sweep failed; will retry"),
        }
        match self
            .stores
            .users
            .delete_expired_codes(self.clock.now(), SWEEP_BATCH)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "expired mailed codes swept"),
            Err(e) => tracing::warn!(error = %e, "code sweep failed; will retry"),
        }
        match self.tokens.dpop().sweep().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "expired DPoP proofs forgotten"),
            Err(e) => tracing::warn!(error = %e, "DPoP proof sweep failed; will retry"),
        }
        match self
            .stores
            .challenges
            .delete_expired_challenges(self.clock.now(), SWEEP_BATCH)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "expired login challenges swept"),
            Err(e) => tracing::warn!(error = %e, "challenge sweep failed; will retry"),
        }
        if let Err(e) = self.tokens.keyring().reload().await {
            tracing::warn!(error = %e, "reloading the signing keys failed; will retry");
        }
        if let Err(e) = self.tokens.revocations().resync(self.tokens.now()).await {
            tracing::warn!(error = %e, "re-reading the revocations failed; will retry");
        }
    }
}
