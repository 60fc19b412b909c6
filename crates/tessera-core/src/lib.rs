//! Tessera's domain, free of I/O: accounts and password hashing, the three login models (server
//! sessions, JWT access tokens with rotating refresh tokens, and the hybrid of both), revocation,
//! signing keys, the audit log, the change feed that keeps nodes in step, the clock, and the store
//! traits that `tessera-store` implements.
//!
//! HTTP speaks only to the services here — [`Accounts`], [`Sessions`], [`Logins`],
//! [`Tokens`](token::Tokens) with its [`KeyRing`](token::KeyRing) and
//! [`Revocations`](token::Revocations) — and the [`Follower`](follower::Follower) applies what
//! other nodes announce; the services speak only to the store traits ([`UserStore`],
//! [`SessionStore`], [`KeyStore`], [`RefreshStore`], [`RevocationStore`], [`EventStore`]).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod account_mail;
pub mod accounts;
pub mod audit;
pub mod auth_context;
pub mod clock;
pub mod email;
pub mod error;
pub mod feed;
pub mod follower;
pub mod login_context;
pub mod logins;
pub mod mail;
pub mod mail_templates;
pub mod merge_patch;
pub mod passkey;
pub mod password;
pub mod request_id;
pub mod second_factor;
pub mod secret;
pub mod services;
pub mod session;
pub mod store;
pub mod throttle;
pub mod token;
pub mod user;
pub mod user_cache;

pub use account_mail::{AccountMail, AccountMailConfig};
pub use accounts::{Accounts, AccountsConfig, Registration, UnverifiedLogins};
pub use audit::{EventKind, NewEvent, SecurityEvent};
pub use auth_context::{AuthContext, FirstFactor, SecondFactorMethod};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use email::{AccountCode, CodePurpose, CodeVerified, EmailAddress, UserEmail};
pub use error::{Error, StoreError};
pub use feed::{Change, ChangeFeed, FeedEvent, LocalFeed};
pub use logins::{
    CompletedLogin, CurrentLogin, LoginAttempt, LoginInfo, LoginStep, Logins, PasskeyLoginAttempt,
    PendingLogin, SecondFactorAttempt, SessionLogin, TokenLogin,
};
pub use mail::{
    MailId, MailMessage, MailStore, MailTransport, Mailer, MailerConfig, QueuedMail, SendError,
};
pub use mail_templates::{MailKind, MailTemplates};
pub use passkey::{PasskeyConfig, Passkeys, StoredPasskey};
pub use password::{
    Argon2Params, DEFAULT_HASHING_NICENESS, HashingLimits, Password, PasswordHasher, PasswordPolicy,
};
pub use request_id::RequestId;
pub use second_factor::{
    FactorProof, LoginChallenge, Occasion, RecoveryCode, SecondFactorConfig, SecondFactorStatus,
    SecondFactors, TotpEnrolment, TotpFactor, TotpSecret,
};
pub use secret::{ChallengeSecret, CsrfToken, OneTimeCode, RefreshToken, SessionId, TokenHash};
pub use services::{BuildError, PasswordsConfig, Services, ServicesConfig};
pub use session::{
    ClientInfo, Session, SessionConfig, SessionData, SessionHandle, Sessions, UserAgent,
};
pub use store::{
    AllHealthy, AllStores, AttemptLimiter, ChallengeStore, EventStore, HealthCheck, KeyStore,
    MirroredRevocations, ProofReplayStore, RefreshStore, RevocationStore, SecondFactorStore,
    SessionStore, Stores, UserDeletion, UserStore,
};
pub use throttle::{Rate, Throttle, ThrottleConfig, ThrottleScope};
pub use token::key::{KeyStatus, SigningAlgorithm, StoredKey};
pub use token::refresh::{FamilyId, LoginModel, RefreshFamily, RefreshTokenRecord, Rotation};
pub use token::revoked::{AllowedToken, RevocationEntry, Revoked};
pub use user::{User, UserId, Username};
