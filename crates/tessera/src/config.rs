//! Configuration: defaults < `tessera.toml` (or `--config FILE`) < environment `TESSERA_…`
//! (`__` for nesting) < command-line flags. A bad value is reported with where it came from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};
use tessera_core::token::{RevocationMode, TokenConfig};
use tessera_core::{
    AccountsConfig, Argon2Params, PasswordPolicy, Registration, SessionConfig, SigningAlgorithm,
};

/// Read when `--config` is not given and the file exists in the working directory.
pub(crate) const DEFAULT_FILE: &str = "tessera.toml";
/// How errors and `tessera config check` name the source of a default value.
pub(crate) const DEFAULTS: &str = "defaults";
/// How errors and `tessera config check` name the source of a value given as a flag.
pub(crate) const FLAGS: &str = "command-line flags";

/// A provider under a name of ours: figment names a serialized value by its Rust type, which
/// says nothing to an operator reading where a value came from.
pub(crate) struct Named<P> {
    pub(crate) name: &'static str,
    pub(crate) provider: P,
}

impl<P: Provider> Provider for Named<P> {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.provider.data()
    }

    fn profile(&self) -> Option<Profile> {
        self.provider.profile()
    }
}

pub(crate) fn defaults() -> Named<Serialized<Config>> {
    Named {
        name: DEFAULTS,
        provider: Serialized::defaults(Config::default()),
    }
}

/// The whole configuration. Every field has a default, so an empty file is a valid configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// `sqlite://PATH` (the embedded default) or `memory` (nothing survives a restart).
    pub database: String,
    /// The URL clients reach this server at; its origin is trusted for cookie requests.
    pub public_url: String,
    pub accounts: AccountsSection,
    pub http: HttpSection,
    pub tls: TlsSection,
    pub sessions: SessionsSection,
    pub passwords: PasswordsSection,
    pub tokens: TokensSection,
    pub throttling: ThrottlingSection,
    pub postgres: PostgresSection,
    pub redis: RedisSection,
    pub log: LogSection,
    pub verify: VerifySection,
    /// Outgoing mail: recovery and verification codes, notices.
    pub email: EmailSection,
    /// The playground page at `/`: `playground = true|false`, or a `[playground]` table.
    pub playground: PlaygroundSection,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database: "sqlite://tessera.db".into(),
            public_url: "http://localhost:8080".into(),
            accounts: AccountsSection::default(),
            http: HttpSection::default(),
            tls: TlsSection::default(),
            sessions: SessionsSection::default(),
            passwords: PasswordsSection::default(),
            tokens: TokensSection::default(),
            throttling: ThrottlingSection::default(),
            postgres: PostgresSection::default(),
            redis: RedisSection::default(),
            log: LogSection::default(),
            verify: VerifySection::default(),
            email: EmailSection::default(),
            playground: PlaygroundSection::default(),
        }
    }
}

/// The playground: `playground = true` or `false` (the switch alone), or a table
/// `[playground] enabled = …, attacker_listen = "127.0.0.1:8081"`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct PlaygroundSection {
    /// `None`: on when `listen` is a loopback address, off otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Where the attacker page for the cross-site demonstrations is served: a loopback address.
    /// `None`: `127.0.0.1`, the port after `listen`'s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attacker_listen: Option<SocketAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaygroundTable {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    attacker_listen: Option<SocketAddr>,
}

impl<'de> Deserialize<'de> for PlaygroundSection {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = PlaygroundSection;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false, or a table with `enabled` and `attacker_listen`")
            }

            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(PlaygroundSection {
                    enabled: Some(v),
                    attacker_listen: None,
                })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                let table = PlaygroundTable::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(PlaygroundSection {
                    enabled: table.enabled,
                    attacker_listen: table.attacker_listen,
                })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AccountsSection {
    /// `open` (anyone may register) or `closed`.
    pub registration: Registration,
    /// Live logins (sessions, token and hybrid logins) per user; the oldest end first. 0: no cap.
    pub max_logins_per_user: usize,
    /// Every account must have an email address it proved is its own: registration asks for
    /// one, and a login before it is verified gets what `unverified_logins` says. Needs
    /// `email.smtp_url`.
    pub require_verified_email: bool,
    /// With `require_verified_email`: `refuse` (the default) or `allow` logins of accounts whose
    /// address is not verified yet (`email_verified: false` in `/v1/me` and access tokens).
    pub unverified_logins: tessera_core::UnverifiedLogins,
    /// The page a recovery mail links to, with `code=…` added to its query. Default: the
    /// built-in page, `<public_url><http.mount>/account/recovery`.
    pub recovery_url: Option<String>,
    /// How long a recovery code works.
    #[serde(with = "humantime_serde")]
    pub recovery_lifetime: Duration,
    /// The page a verification mail links to, with `code=…` added to its query. Default: the
    /// built-in page, `<public_url><http.mount>/account/verify`.
    pub verification_url: Option<String>,
    /// How long a verification code works.
    #[serde(with = "humantime_serde")]
    pub verification_lifetime: Duration,
    /// Privileged actions (admin routes, password and email changes, removing a second factor,
    /// new recovery codes) of a user with a second factor need it used within this long; else
    /// 401 `insufficient_user_authentication` (step up at `POST /v1/account/step-up`).
    #[serde(with = "humantime_serde")]
    pub privileged_max_age: Duration,
    /// Whether admin routes need a recent second factor from every admin, even one who has
    /// none yet (who must set one up first).
    pub admin_requires_second_factor: bool,
    /// A login (session, or refresh family at refresh) used from a new network and a new user
    /// agent at once: `record` (audit log only, the default) or `step_up` (it must show a second
    /// factor used within `privileged_max_age`; without one, the user logs in again).
    pub new_context: tessera_core::login_context::NewContextPolicy,
    /// How long a login challenge (password right, second factor awaited) waits for its code.
    #[serde(with = "humantime_serde")]
    pub second_factor_challenge_lifetime: Duration,
    /// Wrong codes a login challenge takes before it is burnt (the login starts over).
    pub second_factor_max_attempts: u32,
    /// The issuer authenticator apps show beside the username (`otpauth://totp/<issuer>:…`).
    /// Default: the host of `public_url`.
    pub totp_issuer: Option<String>,
    /// The domain passkeys are bound to (the WebAuthn relying party id): the host of
    /// `public_url`, or a parent domain of it so that passkeys work on its other subdomains too.
    /// Default: the host of `public_url`; with an IP address there, no passkeys are offered.
    /// Cannot change once passkeys are registered (they would stop working).
    pub passkey_rp_id: Option<String>,
}

impl Default for AccountsSection {
    fn default() -> Self {
        Self {
            registration: Registration::Open,
            max_logins_per_user: 100,
            require_verified_email: false,
            unverified_logins: tessera_core::UnverifiedLogins::Refuse,
            recovery_url: None,
            recovery_lifetime: Duration::from_secs(15 * 60),
            verification_url: None,
            verification_lifetime: Duration::from_secs(48 * 3600),
            privileged_max_age: Duration::from_secs(10 * 60),
            admin_requires_second_factor: false,
            new_context: tessera_core::login_context::NewContextPolicy::Record,
            second_factor_challenge_lifetime: Duration::from_secs(5 * 60),
            second_factor_max_attempts: 5,
            totp_issuer: None,
            passkey_rp_id: None,
        }
    }
}

/// `[email]`: the SMTP server mail goes out through.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct EmailSection {
    /// `smtp://[user[:password]@]host[:port]` (STARTTLS when the server offers it) or
    /// `smtps://…` (TLS from the start). Unset: no mail, so no recovery or verification.
    pub smtp_url: Option<String>,
    /// The SMTP password, when the URL names a user but not the password. Prefer the
    /// environment (`TESSERA_EMAIL__SMTP_PASSWORD`).
    pub smtp_password: Option<String>,
    /// The sender: `no-reply@example.org` or `Example <no-reply@example.org>`.
    pub from: Option<String>,
    /// A directory of templates replacing the built-in ones (`<lang>/<kind>.subject.txt`,
    /// `.txt`, `.html`); see docs/email-templates.md.
    pub templates_dir: Option<PathBuf>,
    /// The application's name, as mails call it. Default: the host of `public_url`.
    pub product_name: Option<String>,
    /// A PEM file of certificates to trust for the SMTP server's TLS besides the system's (a
    /// private certificate authority).
    pub ca_file: Option<PathBuf>,
    /// Longest a delivery attempt may take, from connecting to the server's last answer.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for EmailSection {
    fn default() -> Self {
        Self {
            smtp_url: None,
            smtp_password: None,
            from: None,
            templates_dir: None,
            product_name: None,
            ca_file: None,
            timeout: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for EmailSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSection")
            .field("smtp_url", &self.smtp_url.as_ref().map(|_| "<redacted>"))
            .field(
                "smtp_password",
                &self.smtp_password.as_ref().map(|_| "<redacted>"),
            )
            .field("from", &self.from)
            .field("templates_dir", &self.templates_dir)
            .field("product_name", &self.product_name)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A rate: `burst` attempts at once, `per_minute` regained each minute.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateSection {
    pub burst: u32,
    pub per_minute: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ThrottlingSection {
    /// Failed login attempts per account (any address).
    pub per_account: RateSection,
    /// Login, registration and password-change attempts per client address.
    pub per_ip: RateSection,
    /// Refreshes (token and hybrid) per client address.
    pub refresh_per_ip: RateSection,
    /// Recovery and verification mails asked for one account or address.
    pub mail_per_account: RateSection,
    /// The prefix length that makes one IPv6 client (every address of the network shares a
    /// budget).
    pub ipv6_prefix: u8,
}

impl Default for ThrottlingSection {
    fn default() -> Self {
        let d = tessera_core::ThrottleConfig::default();
        Self {
            per_account: RateSection {
                burst: d.per_account.burst,
                per_minute: d.per_account.per_minute,
            },
            per_ip: RateSection {
                burst: d.per_ip.burst,
                per_minute: d.per_ip.per_minute,
            },
            refresh_per_ip: RateSection {
                burst: d.refresh_per_ip.burst,
                per_minute: d.refresh_per_ip.per_minute,
            },
            mail_per_account: RateSection {
                burst: d.mail_per_account.burst,
                per_minute: d.mail_per_account.per_minute,
            },
            ipv6_prefix: d.ipv6_prefix,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HttpSection {
    /// Other origins allowed to call with credentials (CORS) and to make cookie-authenticated
    /// unsafe requests. Exact origins, never a wildcard.
    pub trusted_origins: Vec<String>,
    /// Reverse proxies (addresses or CIDR networks) whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Longest time to receive a request's head (the request line and headers) once it has
    /// begun, or the first request after a TLS handshake; past it the connection is closed.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Longest time to receive a request body.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Longest time for a whole request; past it the answer is a 503.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// After SIGINT/SIGTERM, how long requests in flight may take to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Where operators reach `/metrics`: a separate listener, never the public port. Off unless
    /// set; keep it on loopback or a private network.
    pub management_listen: Option<SocketAddr>,
    /// The path the routes are served under (`/auth`: `/auth/v1/session/login`, …), for a
    /// server behind a proxy that forwards one path to it, or routes mounted in an application's
    /// own router. Empty: at the root. The playground is served at the root only.
    pub mount: String,
    /// The base of the cookies' names: `tessera` gives `__Host-tessera` (the session),
    /// `__Host-tessera-at` and `__Host-tessera-rt` (hybrid), `__Host-tessera-device`. Change it
    /// when two deployments share a host name (cookies do not tell ports apart).
    pub cookie_name: String,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            trusted_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            body_limit: 64 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            management_listen: None,
            mount: String::new(),
            cookie_name: "tessera".into(),
        }
    }
}

/// HTTPS served by Tessera itself on `listen`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TlsSection {
    /// PEM file with the certificate chain, leaf first. With `key`, `listen` serves HTTPS; both
    /// files are read again when they change and on SIGHUP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// A plain-HTTP listener (e.g. `0.0.0.0:80`) that only redirects to the https `public_url`,
    /// same path and query. Off unless set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_listen: Option<SocketAddr>,
}

impl TlsSection {
    /// The certificate and key files, when TLS is on.
    pub(crate) fn files(&self) -> Option<(&Path, &Path)> {
        Some((self.cert.as_deref()?, self.key.as_deref()?))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SessionsSection {
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub absolute_lifetime: Duration,
    #[serde(with = "humantime_serde")]
    pub touch_interval: Duration,
    pub max_data_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Memory for the near cache of sessions, in bytes; 0 turns it off (every request reads the
    /// store).
    pub near_cache_bytes: u64,
    /// `database` (the default) or `redis` (with `redis.url`): where sessions live. With Redis,
    /// revocations, login throttling and the change feed live there too.
    pub store: SessionStoreKind,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SessionStoreKind {
    #[default]
    Database,
    Redis,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RedisSection {
    /// `redis://host:port/db`, or `redis+cluster://host:port[,host:port…]` for a Redis Cluster;
    /// `sessions.store = "redis"` needs it or `cluster_urls`.
    pub url: Option<String>,
    /// A Redis Cluster: some of its nodes, `redis://[user:password@]host:port` each (the others
    /// are found through them). Instead of `url`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_urls: Vec<String>,
    /// Every key starts with this, so several deployments (or test runs) can share a server.
    pub prefix: String,
    /// How many replicas must confirm a write that ends or revokes something before it is
    /// acknowledged (Redis `WAIT`); default 1 on a cluster, 0 on one Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_acks: Option<u32>,
}

impl Default for RedisSection {
    fn default() -> Self {
        Self {
            url: None,
            cluster_urls: Vec::new(),
            prefix: "tessera:".into(),
            replica_acks: None,
        }
    }
}

/// Where the Redis store connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RedisTarget {
    /// `redis.url`: one Redis, or a Redis Cluster when `cluster` (a `redis+cluster://` URL).
    Url { url: String, cluster: bool },
    /// A Redis Cluster, through these nodes (`redis.cluster_urls`).
    ClusterNodes(Vec<String>),
}

impl RedisTarget {
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(
            self,
            RedisTarget::Url { cluster: true, .. } | RedisTarget::ClusterNodes(_)
        )
    }
}

impl RedisSection {
    /// Where to connect; `Err((key, why))` for a missing or bad value. No message repeats a URL:
    /// it may hold a password.
    pub(crate) fn target(&self) -> Result<RedisTarget, (&'static str, String)> {
        let plain = |url: &str| url.starts_with("redis://") || url.starts_with("rediss://");
        let cluster =
            |url: &str| url.starts_with("redis+cluster://") || url.starts_with("rediss+cluster://");
        match (&self.url, self.cluster_urls.is_empty()) {
            (Some(_), false) => Err((
                "redis.cluster_urls",
                "set either redis.url or redis.cluster_urls, not both".into(),
            )),
            (None, false) => {
                if let Some(i) = self.cluster_urls.iter().position(|u| !plain(u)) {
                    return Err((
                        "redis.cluster_urls",
                        format!("entry {} is not a redis:// or rediss:// URL", i + 1),
                    ));
                }
                Ok(RedisTarget::ClusterNodes(self.cluster_urls.clone()))
            }
            (Some(url), true) if plain(url) => Ok(RedisTarget::Url {
                url: url.clone(),
                cluster: false,
            }),
            (Some(url), true) if cluster(url) => {
                let hosts = url.split_once("://").map_or("", |(_, rest)| rest);
                let hosts = hosts.rsplit_once('@').map_or(hosts, |(_, hosts)| hosts);
                let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
                if hosts
                    .split(',')
                    .any(|h| h.is_empty() || h.contains(['/', '?', '#']))
                {
                    return Err((
                        "redis.url",
                        "a redis+cluster:// URL lists host:port[,host:port…] and nothing after"
                            .into(),
                    ));
                }
                Ok(RedisTarget::Url {
                    url: url.clone(),
                    cluster: true,
                })
            }
            (Some(_), true) => Err((
                "redis.url",
                "not a redis://, rediss:// or redis+cluster:// URL".into(),
            )),
            (None, true) => Err((
                "redis.url",
                "sessions.store = \"redis\" needs redis.url or redis.cluster_urls".into(),
            )),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PostgresSection {
    /// The schema Tessera's tables live in (created when missing); default: the connection's
    /// search path (usually `public`).
    pub schema: Option<String>,
}

impl Default for SessionsSection {
    fn default() -> Self {
        let core = SessionConfig::default();
        Self {
            idle_timeout: core.idle_timeout,
            absolute_lifetime: core.absolute_lifetime,
            touch_interval: core.touch_interval,
            max_data_bytes: core.max_data_bytes,
            sweep_interval: Duration::from_secs(60),
            near_cache_bytes: core.near_cache_bytes,
            store: SessionStoreKind::Database,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PasswordsSection {
    pub min_length: usize,
    pub max_length: usize,
    pub refuse_common: bool,
    pub argon2: Argon2Params,
    /// Password hashes computed at once; 0 means one per CPU.
    pub max_concurrent: usize,
    /// How long a login may wait for a hashing slot before a 503.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// The niceness (0–19) of the hashing threads on Linux; 0 keeps the server's priority.
    pub niceness: i32,
}

impl Default for PasswordsSection {
    fn default() -> Self {
        let policy = PasswordPolicy::default();
        Self {
            min_length: policy.min_length,
            max_length: policy.max_length,
            refuse_common: policy.refuse_common,
            argon2: Argon2Params::default(),
            max_concurrent: 0,
            queue_timeout: Duration::from_secs(10),
            niceness: tessera_core::DEFAULT_HASHING_NICENESS,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TokensSection {
    /// `EdDSA` (default), `ES256`, `RS256`, or `HS256` (one service only: no JWKS).
    pub algorithm: SigningAlgorithm,
    /// `iss` of access tokens; default: `public_url`.
    pub issuer: Option<String>,
    /// `aud` of access tokens: what resource servers check.
    pub audience: String,
    /// `client_id` of access tokens (RFC 9068).
    pub client_id: String,
    #[serde(with = "humantime_serde")]
    pub access_lifetime: Duration,
    #[serde(with = "humantime_serde")]
    pub refresh_idle_lifetime: Duration,
    #[serde(with = "humantime_serde")]
    pub refresh_absolute_lifetime: Duration,
    /// A rotated refresh token presented again within this window is a concurrent refresh, not
    /// theft.
    #[serde(with = "humantime_serde")]
    pub reuse_grace: Duration,
    /// `denylist` (default), `allowlist` or `none`.
    pub revocation: RevocationMode,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// The key that seals signing keys at rest: 32 bytes of base64. Prefer the environment
    /// (`TESSERA_TOKENS__MASTER_KEY`) or `master_key_file`.
    pub master_key: Option<String>,
    /// Where the master key lives when `master_key` is not set; created (mode 0600) on first
    /// start. Ignored with `database = "memory"`, which uses a throwaway key.
    pub master_key_file: PathBuf,
    /// Resource servers allowed to introspect tokens with HTTP Basic: id = secret.
    pub introspection_clients: std::collections::BTreeMap<String, String>,
    /// Memory for verified access tokens, in bytes (about 450 bytes a token); 0 turns the cache
    /// off, so every request pays the signature check.
    pub verify_cache_bytes: u64,
    /// Every token login and refresh must come with a DPoP proof (RFC 9449): no bearer tokens
    /// are issued, so a copied token is useless without the client's private key.
    pub require_dpop: bool,
    /// DPoP proofs must carry a recent server nonce (`DPoP-Nonce`), so a proof made in advance
    /// cannot be used later.
    pub dpop_nonce: bool,
    /// How old a DPoP proof may be (and how long its id is remembered to refuse a replay).
    #[serde(with = "humantime_serde")]
    pub dpop_proof_max_age: Duration,
}

impl std::fmt::Debug for TokensSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokensSection")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("access_lifetime", &self.access_lifetime)
            .field("revocation", &self.revocation)
            .field("require_dpop", &self.require_dpop)
            .field("dpop_nonce", &self.dpop_nonce)
            .field(
                "master_key",
                &self.master_key.as_ref().map(|_| "<redacted>"),
            )
            .field("master_key_file", &self.master_key_file)
            .field(
                "introspection_clients",
                &self.introspection_clients.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Default for TokensSection {
    fn default() -> Self {
        let core = TokenConfig::default();
        Self {
            algorithm: SigningAlgorithm::EdDSA,
            issuer: None,
            audience: core.audience,
            client_id: core.client_id,
            access_lifetime: core.access_lifetime,
            refresh_idle_lifetime: core.refresh_idle_lifetime,
            refresh_absolute_lifetime: core.refresh_absolute_lifetime,
            reuse_grace: core.reuse_grace,
            revocation: core.revocation,
            leeway: core.leeway,
            master_key: None,
            master_key_file: PathBuf::from("tessera.key"),
            introspection_clients: Default::default(),
            verify_cache_bytes: core.verify_cache_bytes,
            require_dpop: core.dpop.required,
            dpop_nonce: core.dpop.nonce,
            dpop_proof_max_age: core.dpop.proof_max_age,
        }
    }
}

/// Forward-auth (`GET /v1/verify`) for reverse proxies.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct VerifySection {
    /// Where a browser without a valid credential is sent (an absolute http(s) URL), with
    /// `return_to` set to the page it asked for. Unset: browsers get a 401 like API clients.
    pub login_url: Option<String>,
    /// Route rules: `[[verify.rules]] prefix = "/admin" role = "admin"`, or `public = true`;
    /// optionally `host = "app.example.com"` and `second_factor_max_age = "10m"`. A path without
    /// a rule needs a login.
    pub rules: Vec<VerifyRuleSection>,
}

/// One route rule: requests under `prefix` need `role`, or nothing when `public`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyRuleSection {
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default)]
    pub public: bool,
    /// Only for requests whose `X-Forwarded-Host` is this host (any port unless one is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The caller must also have used a second factor within this long (`"10m"`); with a role,
    /// or alone for any logged-in user.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub second_factor_max_age: Option<Duration>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogSection {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `tessera=debug,info`.
    pub filter: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// Where the database lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Database {
    Sqlite(PathBuf),
    /// A connection URL; several nodes share it.
    Postgres(String),
    Memory,
}

/// Values given on the command line; they override everything else.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
}

impl Config {
    /// Loads the configuration. Without `--config`, `./tessera.toml` is read when it exists.
    pub(crate) fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Self> {
        Self::extract(Self::figment(file, overrides)?)
    }

    /// The configuration a file with this text gives, on its own: defaults, then the text.
    pub(crate) fn from_toml_str(text: &str) -> anyhow::Result<Self> {
        Self::extract(Figment::from(defaults()).merge(Toml::string(text)))
    }

    /// The configuration `figment` gives, checked.
    pub(crate) fn extract(figment: Figment) -> anyhow::Result<Self> {
        let config: Config = figment
            .extract()
            .map_err(|e| anyhow::anyhow!(describe(e)))?;
        config.validate(&figment)?;
        Ok(config)
    }

    /// Every source merged, in order: defaults, the file, the environment, the flags. Each value
    /// keeps the name of its source (figment's metadata).
    pub(crate) fn figment(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Figment> {
        let mut figment = Figment::from(defaults());
        match file {
            Some(path) => {
                if !path.is_file() {
                    bail!("configuration file {} does not exist", path.display());
                }
                figment = figment.merge(Toml::file_exact(path));
            }
            None if Path::new(DEFAULT_FILE).is_file() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_FILE));
            }
            None => {}
        }
        Ok(figment
            .merge(Env::prefixed("TESSERA_").split("__"))
            .merge(Named {
                name: FLAGS,
                provider: Serialized::defaults(overrides).profile(Profile::Default),
            }))
    }

    /// Checks what types alone cannot; each error names the key and where its value came from.
    fn validate(&self, figment: &Figment) -> anyhow::Result<()> {
        let source = |key: &str| -> String {
            figment
                .find_metadata(key)
                .map(|m| match &m.source {
                    Some(src) => format!("{} {src}", m.name),
                    None => m.name.to_string(),
                })
                .unwrap_or_else(|| DEFAULTS.into())
        };
        let fail = |key: &str, why: String| -> anyhow::Error {
            anyhow::anyhow!("invalid configuration: {key} (from {}): {why}", source(key))
        };
        self.database().map_err(|e| fail("database", e))?;
        let mount = tessera_http::state::check_mount(&self.http.mount)
            .map_err(|e| fail("http.mount", e))?;
        if !mount.is_empty() && self.playground.enabled == Some(true) {
            return Err(fail(
                "playground",
                format!(
                    "the playground is served at the root only, not under http.mount = {mount:?}: turn it off"
                ),
            ));
        }
        tessera_http::extract::CookieNames::new(&self.http.cookie_name)
            .map_err(|e| fail("http.cookie_name", e))?;
        if self.sessions.store == SessionStoreKind::Redis {
            let target = self.redis.target().map_err(|(key, why)| fail(key, why))?;
            if target.is_cluster() && self.redis.prefix.contains(['{', '}']) {
                return Err(fail(
                    "redis.prefix",
                    "must not contain { or } with a Redis Cluster (they would change the hash \
                     tags that keep each script in one slot)"
                        .into(),
                ));
            }
        }
        if let Some(schema) = &self.postgres.schema
            && (schema.is_empty()
                || schema.len() > 63
                || !schema
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                || schema.starts_with(|c: char| c.is_ascii_digit()))
        {
            return Err(fail(
                "postgres.schema",
                "must be 1-63 of lower-case letters, digits and _, not starting with a digit"
                    .into(),
            ));
        }
        tessera_http::origin_of(&self.public_url).map_err(|e| fail("public_url", e))?;
        for o in &self.http.trusted_origins {
            tessera_http::origin_of(o).map_err(|e| fail("http.trusted_origins", e))?;
        }
        if self.http.body_limit < 1024 {
            return Err(fail(
                "http.body_limit",
                "must be at least 1024 bytes".into(),
            ));
        }
        self.session_config()
            .validate()
            .map_err(|(key, e)| fail(&format!("sessions.{key}"), e))?;
        if self.sessions.sweep_interval.is_zero() {
            return Err(fail("sessions.sweep_interval", "must be positive".into()));
        }
        self.accounts_config()
            .validate()
            .map_err(|(key, e)| fail(&format!("passwords.{key}"), e))?;
        for (key, value) in [
            ("http.request_timeout", self.http.request_timeout),
            ("http.body_timeout", self.http.body_timeout),
            ("http.header_timeout", self.http.header_timeout),
        ] {
            if value.is_zero() {
                return Err(fail(key, "must be positive".into()));
            }
        }
        self.passwords
            .argon2
            .validate()
            .map_err(|e| fail("passwords.argon2", e))?;
        if !(0..=19).contains(&self.passwords.niceness) {
            return Err(fail(
                "passwords.niceness",
                format!("{} is not a niceness from 0 to 19", self.passwords.niceness),
            ));
        }
        self.token_config()
            .validate()
            .map_err(|(key, e)| fail(&format!("tokens.{key}"), e))?;
        if let Some(issuer) = &self.tokens.issuer {
            tessera_http::origin_of(issuer).map_err(|e| fail("tokens.issuer", e))?;
        }
        if let Some(key) = &self.tokens.master_key {
            tessera_core::token::MasterKey::parse_base64(key)
                .map_err(|e| fail("tokens.master_key", e))?;
        }
        for (id, secret) in &self.tokens.introspection_clients {
            if id.is_empty() || id.contains(':') {
                return Err(fail(
                    "tokens.introspection_clients",
                    format!("client id {id:?} must be non-empty and contain no ':'"),
                ));
            }
            if secret.len() < 16 {
                return Err(fail(
                    "tokens.introspection_clients",
                    format!("the secret of client {id:?} must be at least 16 characters"),
                ));
            }
        }
        for (key, rate) in [
            ("throttling.per_account", self.throttling.per_account),
            ("throttling.per_ip", self.throttling.per_ip),
            ("throttling.refresh_per_ip", self.throttling.refresh_per_ip),
        ] {
            if rate.burst == 0 || rate.per_minute == 0 {
                return Err(fail(key, "burst and per_minute must be at least 1".into()));
            }
        }
        if !(1..=128).contains(&self.throttling.ipv6_prefix) {
            return Err(fail(
                "throttling.ipv6_prefix",
                "must be a prefix length from 1 to 128".into(),
            ));
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => {
                return Err(fail("tls.key", "tls.cert is set: set tls.key too".into()));
            }
            (None, Some(_)) => {
                return Err(fail("tls.cert", "tls.key is set: set tls.cert too".into()));
            }
            (Some(_), Some(_)) if !self.public_url.starts_with("https://") => {
                return Err(fail(
                    "public_url",
                    format!(
                        "{:?} must be the https:// URL clients use when tls.cert and tls.key are set",
                        self.public_url
                    ),
                ));
            }
            (None, None) if self.tls.redirect_listen.is_some() => {
                return Err(fail(
                    "tls.redirect_listen",
                    "redirects to https need tls.cert and tls.key".into(),
                ));
            }
            _ => {}
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.filter)
            .map_err(|e| fail("log.filter", e.to_string()))?;
        self.verify_config().map_err(|e| fail(e.key, e.message))?;
        self.validate_email().map_err(|(key, why)| fail(key, why))?;
        self.second_factor_config()
            .validate()
            .map_err(|(key, why)| fail(&format!("accounts.{key}"), why))?;
        for (key, value, min, max) in [
            (
                "accounts.privileged_max_age",
                self.accounts.privileged_max_age,
                Duration::from_secs(30),
                Duration::from_secs(24 * 3600),
            ),
            (
                "accounts.second_factor_challenge_lifetime",
                self.accounts.second_factor_challenge_lifetime,
                Duration::from_secs(30),
                Duration::from_secs(3600),
            ),
        ] {
            if value < min || value > max {
                return Err(fail(
                    key,
                    format!(
                        "{} is out of range: from {} to {}",
                        humantime_serde::re::humantime::format_duration(value),
                        humantime_serde::re::humantime::format_duration(min),
                        humantime_serde::re::humantime::format_duration(max)
                    ),
                ));
            }
        }
        if !(1..=20).contains(&self.accounts.second_factor_max_attempts) {
            return Err(fail(
                "accounts.second_factor_max_attempts",
                "must be from 1 to 20".into(),
            ));
        }
        if let Some(at) = self.playground.attacker_listen
            && !at.ip().is_loopback()
        {
            return Err(fail(
                "playground.attacker_listen",
                format!(
                    "{at} is not a loopback address: the attacker page is a demonstration for this \
                     machine only (use 127.0.0.1:PORT or [::1]:PORT)"
                ),
            ));
        }
        Ok(())
    }

    /// The `[email]` keys and the mail-related `[accounts]` keys: the key at fault and why.
    fn validate_email(&self) -> Result<(), (&'static str, String)> {
        for (key, url) in [
            ("accounts.recovery_url", &self.accounts.recovery_url),
            ("accounts.verification_url", &self.accounts.verification_url),
        ] {
            if let Some(url) = url {
                tessera_http::origin_of(url).map_err(|e| (key, e))?;
            }
        }
        for (key, value, min, max) in [
            (
                "accounts.recovery_lifetime",
                self.accounts.recovery_lifetime,
                Duration::from_secs(60),
                Duration::from_secs(24 * 3600),
            ),
            (
                "accounts.verification_lifetime",
                self.accounts.verification_lifetime,
                Duration::from_secs(60),
                Duration::from_secs(30 * 24 * 3600),
            ),
        ] {
            if value < min || value > max {
                return Err((
                    key,
                    format!(
                        "{} is out of range: from {} to {}",
                        humantime_serde::re::humantime::format_duration(value),
                        humantime_serde::re::humantime::format_duration(min),
                        humantime_serde::re::humantime::format_duration(max)
                    ),
                ));
            }
        }
        if self.email.timeout.is_zero() {
            return Err(("email.timeout", "must be positive".into()));
        }
        if self.throttling.mail_per_account.burst == 0
            || self.throttling.mail_per_account.per_minute == 0
        {
            return Err((
                "throttling.mail_per_account",
                "burst and per_minute must be at least 1".into(),
            ));
        }
        match &self.email.smtp_url {
            None => {
                if self.accounts.require_verified_email {
                    return Err((
                        "accounts.require_verified_email",
                        "needs mail to send the codes: set email.smtp_url and email.from".into(),
                    ));
                }
            }
            Some(_) => {
                crate::mail::transport(&self.email)?;
            }
        }
        if let Some(dir) = &self.email.templates_dir {
            crate::mail::templates(dir).map_err(|why| ("email.templates_dir", why))?;
        }
        Ok(())
    }

    /// Whether the playground is served: as configured, else only on a loopback listener.
    pub(crate) fn playground_enabled(&self) -> bool {
        self.playground
            .enabled
            .unwrap_or_else(|| self.listen.ip().is_loopback() && self.http.mount.is_empty())
    }

    /// Where the playground's attacker page listens: as configured, else `127.0.0.1` on the port
    /// after `listen`'s (an ephemeral port when `listen`'s is 0 or the last).
    pub(crate) fn attacker_listen(&self) -> SocketAddr {
        self.playground.attacker_listen.unwrap_or_else(|| {
            let port = match self.listen.port() {
                0 | u16::MAX => 0,
                p => p + 1,
            };
            SocketAddr::from(([127, 0, 0, 1], port))
        })
    }

    pub(crate) fn database(&self) -> Result<Database, String> {
        let url = self.database.trim();
        if url == "memory" {
            return Ok(Database::Memory);
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Database::Postgres(url.to_owned()));
        }
        match url.strip_prefix("sqlite://") {
            Some(path) if !path.is_empty() => Ok(Database::Sqlite(PathBuf::from(path))),
            // The value is not repeated: a connection string that is not a URL (`host=… password=…`)
            // cannot be redacted reliably.
            _ => Err(
                "not a supported database URL: use sqlite://PATH, postgres://… or memory".into(),
            ),
        }
    }

    /// What the core services are built with.
    pub(crate) fn services_config(&self) -> tessera_core::ServicesConfig {
        tessera_core::ServicesConfig {
            accounts: self.accounts_config(),
            passwords: tessera_core::PasswordsConfig {
                argon2: self.passwords.argon2,
                max_concurrent: self.passwords.max_concurrent,
                queue_timeout: self.passwords.queue_timeout,
                niceness: self.passwords.niceness,
            },
            sessions: self.session_config(),
            tokens: self.token_config(),
            signing_algorithm: self.tokens.algorithm,
            throttle: tessera_core::ThrottleConfig {
                per_account: tessera_core::Rate {
                    burst: self.throttling.per_account.burst,
                    per_minute: self.throttling.per_account.per_minute,
                },
                per_ip: tessera_core::Rate {
                    burst: self.throttling.per_ip.burst,
                    per_minute: self.throttling.per_ip.per_minute,
                },
                refresh_per_ip: tessera_core::Rate {
                    burst: self.throttling.refresh_per_ip.burst,
                    per_minute: self.throttling.refresh_per_ip.per_minute,
                },
                mail_per_account: tessera_core::Rate {
                    burst: self.throttling.mail_per_account.burst,
                    per_minute: self.throttling.mail_per_account.per_minute,
                },
                ipv6_prefix: self.throttling.ipv6_prefix,
            },
            max_logins_per_user: self.accounts.max_logins_per_user,
            account_mail: self.account_mail_config(),
            mailer: tessera_core::MailerConfig::default(),
            second_factor: self.second_factor_config(),
        }
    }

    /// Second factors: the TOTP issuer, login challenges, and step-up.
    pub(crate) fn second_factor_config(&self) -> tessera_core::SecondFactorConfig {
        tessera_core::SecondFactorConfig {
            totp_issuer: self
                .accounts
                .totp_issuer
                .clone()
                .unwrap_or_else(|| self.public_host()),
            challenge_lifetime: self.accounts.second_factor_challenge_lifetime,
            challenge_max_attempts: self.accounts.second_factor_max_attempts,
            privileged_max_age: self.accounts.privileged_max_age,
            admin_requires_second_factor: self.accounts.admin_requires_second_factor,
            new_context: self.accounts.new_context,
            passkeys: self.passkey_config(),
        }
    }

    /// Where passkeys are valid: `public_url`'s origin and the trusted origins on the relying
    /// party's domain. `None` when `public_url`'s host is an IP address and no
    /// `accounts.passkey_rp_id` is set.
    fn passkey_config(&self) -> Option<tessera_core::PasskeyConfig> {
        let name = self
            .accounts
            .totp_issuer
            .clone()
            .unwrap_or_else(|| self.public_host());
        tessera_core::PasskeyConfig::for_public_url(
            &self.public_url,
            self.accounts.passkey_rp_id.as_deref(),
            &name,
            &self.http.trusted_origins,
        )
    }

    /// The host of `public_url` (what names this server to a person).
    fn public_host(&self) -> String {
        self.public_url
            .split_once("://")
            .map_or(self.public_url.as_str(), |(_, rest)| rest)
            .split(['/', ':'])
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// How recovery and verification mails are made.
    pub(crate) fn account_mail_config(&self) -> tessera_core::AccountMailConfig {
        let base = self.base_url();
        tessera_core::AccountMailConfig {
            product_name: self.email.product_name.clone().unwrap_or_else(|| {
                self.public_url
                    .split_once("://")
                    .map_or(self.public_url.as_str(), |(_, rest)| rest)
                    .split(['/', ':'])
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            }),
            recovery_url: self
                .accounts
                .recovery_url
                .clone()
                .unwrap_or_else(|| format!("{base}/account/recovery")),
            recovery_lifetime: self.accounts.recovery_lifetime,
            verification_url: self
                .accounts
                .verification_url
                .clone()
                .unwrap_or_else(|| format!("{base}/account/verify")),
            verification_lifetime: self.accounts.verification_lifetime,
        }
    }

    pub(crate) fn session_config(&self) -> SessionConfig {
        SessionConfig {
            idle_timeout: self.sessions.idle_timeout,
            absolute_lifetime: self.sessions.absolute_lifetime,
            touch_interval: self.sessions.touch_interval,
            max_data_bytes: self.sessions.max_data_bytes,
            near_cache_bytes: self.sessions.near_cache_bytes,
        }
    }

    pub(crate) fn accounts_config(&self) -> AccountsConfig {
        AccountsConfig {
            registration: self.accounts.registration,
            password_policy: PasswordPolicy {
                min_length: self.passwords.min_length,
                max_length: self.passwords.max_length,
                refuse_common: self.passwords.refuse_common,
            },
            require_verified_email: self.accounts.require_verified_email,
            unverified_logins: self.accounts.unverified_logins,
        }
    }

    /// Where the routes are: the public URL, followed by `http.mount`.
    pub(crate) fn base_url(&self) -> String {
        let mount = tessera_http::state::check_mount(&self.http.mount).unwrap_or_default();
        format!("{}{mount}", self.public_url.trim_end_matches('/'))
    }

    pub(crate) fn token_config(&self) -> TokenConfig {
        TokenConfig {
            issuer: self
                .tokens
                .issuer
                .clone()
                .unwrap_or_else(|| self.base_url()),
            audience: self.tokens.audience.clone(),
            client_id: self.tokens.client_id.clone(),
            access_lifetime: self.tokens.access_lifetime,
            refresh_idle_lifetime: self.tokens.refresh_idle_lifetime,
            refresh_absolute_lifetime: self.tokens.refresh_absolute_lifetime,
            reuse_grace: self.tokens.reuse_grace,
            revocation: self.tokens.revocation,
            leeway: self.tokens.leeway,
            verify_cache_bytes: self.tokens.verify_cache_bytes,
            email_verified_always: self.accounts.require_verified_email,
            dpop: tessera_core::token::DpopConfig {
                required: self.tokens.require_dpop,
                nonce: self.tokens.dpop_nonce,
                proof_max_age: self.tokens.dpop_proof_max_age,
            },
        }
    }

    /// The forward-auth rules, checked: a rule is either public or needs a role.
    pub(crate) fn verify_config(
        &self,
    ) -> Result<
        tessera_http::forward_auth::VerifyConfig,
        tessera_http::forward_auth::VerifyConfigError,
    > {
        use tessera_http::forward_auth::{Access, RouteRule, VerifyConfig, VerifyConfigError};
        let mut rules = Vec::with_capacity(self.verify.rules.len());
        for (i, rule) in self.verify.rules.iter().enumerate() {
            let access = match (&rule.role, rule.public) {
                (Some(role), false) => Access::Role(role.clone()),
                (None, true) => Access::Public,
                (None, false) if rule.second_factor_max_age.is_some() => Access::LoggedIn,
                (Some(_), true) => {
                    return Err(VerifyConfigError {
                        key: "verify.rules",
                        message: format!(
                            "rule {} (prefix {:?}): role and public = true exclude each other",
                            i + 1,
                            rule.prefix
                        ),
                    });
                }
                (None, false) => {
                    return Err(VerifyConfigError {
                        key: "verify.rules",
                        message: format!(
                            "rule {} (prefix {:?}): needs role = \"…\", public = true or \
                             second_factor_max_age (a path without a rule already needs a login)",
                            i + 1,
                            rule.prefix
                        ),
                    });
                }
            };
            rules.push(RouteRule {
                prefix: rule.prefix.clone(),
                host: rule.host.clone(),
                access,
                second_factor_max_age: rule.second_factor_max_age,
            });
        }
        VerifyConfig::new(rules, self.verify.login_url.clone())
    }

    pub(crate) fn http_config(&self) -> tessera_http::HttpConfig {
        tessera_http::HttpConfig {
            public_url: self.public_url.clone(),
            trusted_origins: self.http.trusted_origins.clone(),
            body_limit: self.http.body_limit,
            timeouts: tessera_http::Timeouts {
                body: self.http.body_timeout,
                request: self.http.request_timeout,
            },
            trusted_proxies: self.http.trusted_proxies.clone(),
            introspection_clients: self
                .tokens
                .introspection_clients
                .iter()
                .map(|(id, secret)| tessera_http::IntrospectionClient {
                    id: id.clone(),
                    secret: secret.clone(),
                })
                .collect(),
            // `load` has refused an invalid configuration; one built by hand that is invalid
            // refuses every check rather than letting requests through.
            verify: self.verify_config().unwrap_or_else(|e| {
                tessera_http::forward_auth::VerifyConfig::refusing(e.to_string())
            }),
            // `serve` fills in the attacker page's origin once its listener is bound.
            playground: self
                .playground_enabled()
                .then(tessera_http::PlaygroundConfig::default),
            cookie_name: self.http.cookie_name.clone(),
            mount: self.http.mount.clone(),
        }
    }
}

/// figment's errors, one per line, each with the key and the source of the bad value.
fn describe(errors: figment::Error) -> String {
    let lines: Vec<String> = errors
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                String::new()
            } else {
                format!("{}: ", e.path.join("."))
            };
            let from = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(src) => format!(" (from {} {src})", m.name),
                    None => format!(" (from {})", m.name),
                })
                .unwrap_or_default();
            let kind = if crate::config_check::may_hold_secret(&e.path) {
                without_value(e.kind)
            } else {
                e.kind
            };
            format!("{key}{}{from}", without_source_lines(&kind.to_string()))
        })
        .collect();
    format!("invalid configuration:\n  {}", lines.join("\n  "))
}

/// `kind` without the value it quotes: for keys that may hold a secret (a password in a URL, a
/// key), whose rejected value must not reach a terminal or a log.
fn without_value(kind: figment::error::Kind) -> figment::error::Kind {
    use figment::error::{Actual, Kind};
    let hide = |actual: Actual| match actual {
        Actual::Str(_) => Actual::Other("a string (not shown: it may hold a secret)".into()),
        Actual::Char(_) => Actual::Other("a character".into()),
        Actual::Bytes(_) => Actual::Other("bytes".into()),
        other => other,
    };
    match kind {
        Kind::InvalidType(actual, expected) => Kind::InvalidType(hide(actual), expected),
        Kind::InvalidValue(actual, expected) => Kind::InvalidValue(hide(actual), expected),
        Kind::Message(_) => {
            Kind::Message("not a valid value (not shown: it may hold a secret)".into())
        }
        other => other,
    }
}

/// A parse error's message without the lines of the file it quotes (`2 | master_key = "…`): the
/// line and column it names are enough to find it, and the line may hold a secret.
fn without_source_lines(message: &str) -> String {
    let quoted = |line: &str| {
        let rest = line
            .trim_start()
            .trim_start_matches(|c: char| c.is_ascii_digit());
        rest.trim_start().starts_with('|')
    };
    let kept: Vec<&str> = message.lines().filter(|l| !quoted(l)).collect();
    kept.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_never_repeat_a_secret() {
        let check = |toml: &str| format!("{:#}", Config::from_toml_str(toml).unwrap_err());
        for (toml, secret) in [
            ("[tokens]\nmaster_key = \"SEKRIT\n", "SEKRIT"),
            (
                "[tokens]\nmaster_key = 12\n[redis]\ncluster_urls = \"redis://:SEKRIT@h:1\"\n",
                "SEKRIT",
            ),
            (
                "[tokens]\nintrospection_clients = \"api=SEKRIT\"\n",
                "SEKRIT",
            ),
            ("database = \"host=h password=SEKRIT\"\n", "SEKRIT"),
        ] {
            let message = check(toml);
            assert!(!message.contains(secret), "{toml:?} gave {message}");
        }
        // A key that holds no secret still says what it found.
        assert!(check("[accounts]\nregistration = 12\n").contains("12"));
    }

    #[test]
    fn redis_cluster_settings_name_the_key_and_never_the_password() {
        let redis = |rest: &str| {
            Config::from_toml_str(&format!("[sessions]\nstore = \"redis\"\n[redis]\n{rest}"))
        };
        let config =
            redis("cluster_urls = [\"redis://127.0.0.1:7000\", \"redis://127.0.0.1:7001\"]")
                .unwrap();
        assert_eq!(
            config.redis.target().unwrap(),
            RedisTarget::ClusterNodes(vec![
                "redis://127.0.0.1:7000".into(),
                "redis://127.0.0.1:7001".into()
            ])
        );
        let config = redis("url = \"redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001\"").unwrap();
        assert!(config.redis.target().unwrap().is_cluster());
        let config = redis("url = \"redis://127.0.0.1:6379/2\"").unwrap();
        assert!(!config.redis.target().unwrap().is_cluster());
        for (rest, key) in [
            ("url = \"http://:hunter2@h:1\"", "redis.url"),
            ("url = \"redis+cluster://:hunter2@h:1,,h:2\"", "redis.url"),
            ("url = \"redis+cluster://:hunter2@h:1/3\"", "redis.url"),
            (
                "cluster_urls = [\"redis://h:1\", \"tcp://:hunter2@h:2\"]",
                "redis.cluster_urls",
            ),
            (
                "url = \"redis://:hunter2@h:1\"\ncluster_urls = [\"redis://h:1\"]",
                "redis.cluster_urls",
            ),
            (
                "cluster_urls = [\"redis://:hunter2@h:1\"]\nprefix = \"{t}:\"",
                "redis.prefix",
            ),
            ("replica_acks = -1", "replica_acks"),
        ] {
            let err = redis(rest).unwrap_err().to_string();
            assert!(err.contains(key), "{rest}: {err}");
            assert!(!err.contains("hunter2"), "{rest}: {err}");
        }
    }

    #[test]
    fn the_playground_is_on_for_a_loopback_listener_by_default() {
        let config = Config::from_toml_str("").unwrap();
        assert!(config.playground_enabled());
        assert_eq!(
            config.attacker_listen(),
            SocketAddr::from(([127, 0, 0, 1], 8081))
        );
        assert!(config.http_config().playground.is_some());
        let config = Config::from_toml_str("listen = \"[::1]:9000\"").unwrap();
        assert!(config.playground_enabled());
        let config = Config::from_toml_str("listen = \"0.0.0.0:8080\"").unwrap();
        assert!(!config.playground_enabled());
        assert!(config.http_config().playground.is_none());
        let config = Config::from_toml_str("listen = \"127.0.0.1:0\"").unwrap();
        assert_eq!(config.attacker_listen().port(), 0);
    }

    #[test]
    fn playground_takes_a_switch_or_a_table() {
        let config = Config::from_toml_str("playground = false").unwrap();
        assert!(!config.playground_enabled());
        let config = Config::from_toml_str("listen = \"0.0.0.0:8080\"\nplayground = true").unwrap();
        assert!(config.playground_enabled());
        let config = Config::from_toml_str(
            "listen = \"0.0.0.0:8080\"\n[playground]\nenabled = true\nattacker_listen = \"127.0.0.1:9001\"",
        )
        .unwrap();
        assert!(config.playground_enabled());
        assert_eq!(
            config.attacker_listen(),
            SocketAddr::from(([127, 0, 0, 1], 9001))
        );
        // A table without `enabled` keeps the loopback default.
        let config =
            Config::from_toml_str("[playground]\nattacker_listen = \"[::1]:9001\"").unwrap();
        assert!(config.playground_enabled());
    }

    #[test]
    fn bad_playground_settings_name_the_key() {
        let err = Config::from_toml_str("[playground]\nattacker_listen = \"0.0.0.0:9001\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("playground.attacker_listen"), "{err}");
        assert!(err.contains("loopback"), "{err}");
        let err = Config::from_toml_str("[playground]\nattacker_listen = \"10.0.0.1:9001\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("playground.attacker_listen"), "{err}");
        let err = Config::from_toml_str("[playground]\nenable = true")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("playground") && err.contains("enable"),
            "{err}"
        );
        let err = Config::from_toml_str("playground = \"yes\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("playground"), "{err}");
        // Both forms at once is not TOML.
        assert!(Config::from_toml_str("playground = true\n[playground]\nenabled = true").is_err());
    }

    #[test]
    fn tls_settings_must_fit_together() {
        let config = Config::from_toml_str(
            "public_url = \"https://auth.example.com\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nredirect_listen = \"0.0.0.0:80\"",
        )
        .unwrap();
        assert_eq!(
            config.tls.files(),
            Some((Path::new("c.pem"), Path::new("k.pem")))
        );
        assert!(Config::from_toml_str("").unwrap().tls.files().is_none());
        for (text, key) in [
            (
                "public_url = \"https://a.example\"\n[tls]\ncert = \"c.pem\"",
                "tls.key",
            ),
            (
                "public_url = \"https://a.example\"\n[tls]\nkey = \"k.pem\"",
                "tls.cert",
            ),
            // Cookies, CSRF origins and HSTS follow the public URL: it must say https.
            ("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"", "public_url"),
            (
                "[tls]\nredirect_listen = \"127.0.0.1:80\"",
                "tls.redirect_listen",
            ),
        ] {
            let err = Config::from_toml_str(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
