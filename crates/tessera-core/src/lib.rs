//! Tessera's domain, free of I/O: accounts and password hashing, server-side sessions, CSRF tokens,
//! the clock, and the store traits that `tessera-store` implements.
//!
//! HTTP speaks only to the services here ([`Accounts`], [`Sessions`]); the services speak only to the
//! store traits ([`UserStore`], [`SessionStore`]).
#![forbid(unsafe_code)]

pub mod accounts;
pub mod clock;
pub mod error;
pub mod events;
pub mod feed;
pub mod logins;
pub mod merge_patch;
pub mod password;
pub mod secret;
pub mod services;
pub mod session;
pub mod store;
pub mod sync;
pub mod throttle;
pub mod token;
pub mod user;
pub mod user_cache;

pub use accounts::{Accounts, AccountsConfig, Registration};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error::{Error, StoreError};
pub use events::{EventKind, NewEvent, SecurityEvent};
pub use feed::{Change, ChangeFeed, FeedEvent, LocalFeed};
pub use logins::{CurrentLogin, LoginAttempt, LoginInfo, Logins, SessionLogin, TokenLogin};
pub use password::{Argon2Params, Password, PasswordHasher, PasswordPolicy};
pub use secret::{CsrfToken, RefreshToken, SessionId, TokenHash};
pub use services::{BuildError, PasswordsConfig, Services, ServicesConfig};
pub use session::{ClientInfo, Session, SessionConfig, SessionHandle, Sessions};
pub use store::{
    AllHealthy, AllStores, AttemptLimiter, EventStore, HealthCheck, KeyStore, MirroredRevocations,
    RefreshStore, RevocationStore, SessionStore, Stores, UserStore,
};
pub use throttle::{Rate, Throttle, ThrottleConfig, ThrottleScope};
pub use token::keyring::{KeyStatus, SigningAlgorithm, StoredKey};
pub use token::refresh::{FamilyId, LoginModel, RefreshFamily, RefreshTokenRecord, Rotation};
pub use token::revocation::{AllowedToken, RevocationEntry, Revoked};
pub use user::{User, UserId, Username};
