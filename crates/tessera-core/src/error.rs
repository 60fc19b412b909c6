//! Errors of the domain and of the stores.

use thiserror::Error;

/// What a store can fail with. Stores never panic on bad data: they report it here.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A uniqueness rule was broken (a username that exists already).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backing service could not be reached or did not answer; callers fail closed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: data that does not decode, a failed migration.
    #[error("store error: {0}")]
    Other(String),
}

/// What a core service can fail with. `tessera-http` maps each variant to one problem document.
#[derive(Debug, Error)]
pub enum Error {
    /// Wrong username or password, or a disabled account: one answer for all of them.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// The current password given to change it is wrong (the caller is logged in, so this is not
    /// [`Error::InvalidCredentials`]; it spends the account's failed-attempt budget all the same).
    #[error("current_password is not correct")]
    WrongCurrentPassword,
    /// A refresh token that is unknown, rotated, revoked or expired. One answer for all.
    #[error("the refresh token is invalid, expired or revoked")]
    InvalidGrant,
    /// The refresh token belongs to a login bound to a DPoP key, and the request had no proof
    /// signed by that key.
    #[error("this refresh token is bound to a DPoP key: send a DPoP proof signed with it")]
    DpopKeyRequired,
    /// A DPoP proof came with the refresh token of a login made without DPoP: such a login stays
    /// a bearer login; binding one takes a login with a proof.
    #[error("this login was made without DPoP: log in with a DPoP proof to bind it to a key")]
    DpopNotBound,
    /// The login is used from a new network and user agent at once, and the server wants a
    /// second factor used within `max_age` before it goes on (`accounts.new_context =
    /// "step_up"`).
    #[error(
        "this login is used from a new network and user agent: a recent second factor is required"
    )]
    LoginMoved {
        /// How recent the second factor must be.
        max_age: std::time::Duration,
    },
    /// No valid credential was presented.
    #[error("authentication required")]
    Unauthenticated,
    /// A field of the request is not acceptable; the message says why (never echoing a secret).
    #[error("{field}: {message}")]
    Invalid {
        /// The request field at fault, as named in the API (`username`, `password`).
        field: &'static str,
        /// Why the value was refused, fit to show to the client.
        message: String,
    },
    /// The request conflicts with the current state (a username already taken).
    #[error("{0}")]
    Conflict(String),
    /// The password was right, but the account's email address is not verified yet and this
    /// server refuses such logins (`accounts.require_verified_email`).
    #[error("the account's email address is not verified yet")]
    EmailNotVerified,
    /// A mailed code that is unknown, used already, expired, or replaced by a newer one. One
    /// answer for all of them.
    #[error("the code is unknown, used already, expired, or replaced by a newer one")]
    InvalidCode,
    /// A second-factor code (TOTP or recovery code) that is wrong, already used, or for an
    /// account without a second factor. One answer for all of them.
    #[error("the second-factor code is not correct")]
    InvalidSecondFactor,
    /// A passkey's answer, given as a second factor (login challenge, step-up), that does not
    /// verify: another challenge or origin, no user verification, a used or expired ceremony, a
    /// passkey of another account. One answer for all of them.
    #[error("the passkey's answer does not verify")]
    PasskeyRefused,
    /// A login challenge that is unknown, already used, expired, or burnt by wrong codes. One
    /// answer for all: the client starts the login again.
    #[error("the login challenge is unknown, used, or expired; log in again")]
    InvalidChallenge,
    /// The caller is authenticated, but this action needs a second factor used more recently
    /// than `max_age` (RFC 9470 step-up): use it again at `POST /v1/account/step-up`.
    #[error("this action needs your second factor, used within the last {} s", max_age.as_secs())]
    StepUpRequired {
        /// How recently the second factor must have been used.
        max_age: std::time::Duration,
    },
    /// A browser login (session, hybrid) completed from another site: refused like a
    /// cross-site login.
    #[error("a cross-site request cannot complete a browser login")]
    CrossSite,
    /// This server offers no passkeys: its public URL has no domain name to bind them to.
    #[error("this server offers no passkeys: its public URL has no domain name to bind them to")]
    PasskeysUnavailable,
    /// This server sends no mail (no transport configured), so nothing that needs it can be done.
    #[error("this server sends no mail")]
    MailUnavailable,
    /// Registration is closed by configuration.
    #[error("registration is closed on this server")]
    RegistrationClosed,
    /// The result would exceed a configured size.
    #[error("{0}")]
    TooLarge(String),
    /// Too many login attempts from one address or against one account; the budget refills with
    /// time (no lockout).
    #[error("too many login attempts; try again in {} s", retry_after.as_secs().max(1))]
    Throttled {
        /// How long until the next attempt is allowed.
        retry_after: std::time::Duration,
        /// Whose budget ran out.
        scope: crate::throttle::ThrottleScope,
    },
    /// Too much work queued (password hashing); try again shortly.
    #[error("the server is busy; try again shortly")]
    Busy,
    /// A store failed; `tessera-http` answers 503 for [`StoreError::Unavailable`] and 500
    /// otherwise.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug or an environment failure; details are logged, never sent to clients.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            message: message.into(),
        }
    }
}
