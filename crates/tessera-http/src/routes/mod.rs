//! Route handlers, one module per group of the HTTP surface, and the JSON views they share.

pub mod account;
pub mod admin;
pub mod hybrid;
pub mod me;
pub mod ops;
pub mod pages;
pub mod passkey;
pub mod playground;
pub mod revocations;
pub mod second_factor;
pub mod session;
pub mod token;
pub mod users;
pub mod verify;

use serde::Serialize;
use tessera_core::{Session, Timestamp, User};
use utoipa::ToSchema;

/// A user as clients see it (never the password hash).
#[derive(Serialize, ToSchema)]
pub struct UserView {
    /// The user's id (`usr_…`); it never changes, so it is what other systems should store.
    #[schema(example = "usr_Nq1a4cVsb9yZx0dXxE3Z9A")]
    pub id: String,
    /// The name the user logs in with, as stored: NFKC-normalized and lower-cased, so `Alice`
    /// registers as `alice`.
    #[schema(example = "alice")]
    pub username: String,
    /// The roles an administrator granted; `admin` opens the `/v1/admin` routes.
    pub roles: Vec<String>,
    /// When the account was registered.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// The account's email address, as given; absent when it has none. Shown only to the user
    /// and to admins.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "alice@example.org")]
    pub email: Option<String>,
    /// Whether the address was shown to be the user's (a code mailed to it came back); absent
    /// when there is no address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.to_string(),
            username: u.username.to_string(),
            roles: u.roles.clone(),
            created_at: u.created_at,
            email: u.email.as_ref().map(|e| e.address.as_str().to_owned()),
            email_verified: u.email.as_ref().map(|e| e.verified),
        }
    }
}

/// The body of `POST /v1/users`: a username, a password, and an email address (required when
/// the server requires verified addresses).
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// The username to log in with: 1 to 64 letters, digits and `. _ - @ +` of one script,
    /// compared case-insensitively after Unicode normalization (NFKC).
    #[schema(example = "alice", min_length = 1, max_length = 64)]
    pub username: String,
    /// The password: with the default policy, 8 to 1,024 characters, not one of the most common
    /// passwords.
    #[schema(value_type = String, format = Password, example = "correct horse battery staple", min_length = 8, max_length = 1024)]
    pub password: tessera_core::Password,
    /// An email address for recovery mail: unique per server, unverified until the code mailed
    /// to it comes back.
    #[serde(default)]
    #[schema(example = "alice@example.org")]
    pub email: Option<String>,
}

/// A session as its owner sees it (never its secret).
#[derive(Serialize, ToSchema)]
pub struct SessionView {
    /// The session's public handle (`ses_…`), to end it by; it is not the cookie secret.
    #[schema(example = "ses_2jv0wD3bQy8iKc1yq9rX8g")]
    pub id: String,
    /// When the user logged in.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// The last recorded use of the session. It is written at most once per touch interval (a
    /// minute by default), so it may lag behind the latest request.
    #[schema(value_type = String, format = DateTime)]
    pub last_seen_at: Timestamp,
    /// When the session ends if unused (idle timeout), or at the absolute lifetime if sooner.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// When the session ends however active it is.
    #[schema(value_type = String, format = DateTime)]
    pub absolute_expires_at: Timestamp,
    /// The `User-Agent` the client sent at login, if any.
    pub user_agent: Option<String>,
    /// The client's address at login, if known.
    pub ip: Option<String>,
    /// How the user authenticated: at login, or at the latest step-up.
    pub authentication: second_factor::AuthenticationView,
}

impl From<&Session> for SessionView {
    fn from(s: &Session) -> Self {
        Self {
            id: s.handle.to_string(),
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            expires_at: s.expires_at,
            absolute_expires_at: s.absolute_expires_at,
            user_agent: s
                .client
                .user_agent
                .as_ref()
                .map(|ua| ua.as_str().to_owned()),
            ip: s.client.ip.map(|ip| ip.to_string()),
            authentication: (&s.auth).into(),
        }
    }
}

/// Username and password, for registration and every login route.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The account's username: 1 to 64 letters, digits and `. _ - @ +` of one script, compared
    /// case-insensitively after Unicode normalization (NFKC).
    #[schema(example = "alice", min_length = 1, max_length = 64)]
    pub username: String,
    /// The account's password: with the default policy, 8 to 1,024 characters, not one of the most
    /// common passwords.
    #[schema(value_type = String, format = Password, example = "correct horse battery staple", min_length = 8, max_length = 1024)]
    pub password: tessera_core::Password,
    /// The `device_token` an earlier token-model login returned (browsers hold it in the
    /// `__Host-tessera-device` cookie instead). A client that logged in to this account before
    /// keeps a failed-attempt budget of its own, so others guessing at the account cannot keep
    /// it out.
    #[serde(default)]
    pub device_token: Option<String>,
}

impl Credentials {
    /// The login attempt these credentials make, from `client`, which presents `device` (a
    /// device token from an earlier login) when it has one.
    pub(crate) fn attempt<'a>(
        &'a self,
        client: crate::extract::ClientMeta,
        device: Option<&'a str>,
    ) -> tessera_core::LoginAttempt<'a> {
        tessera_core::LoginAttempt {
            username: &self.username,
            password: &self.password,
            ip: client.ip,
            client: client.info,
            device: self.device_token.as_deref().or(device),
            dpop_jkt: None,
        }
    }
}

/// The device cookie a browser login sets (Secure, HttpOnly, SameSite=Strict, Path=/, a year):
/// see [`crate::extract::DEVICE_COOKIE`].
pub(crate) fn device_cookie(
    names: &crate::extract::CookieNames,
    token: String,
) -> axum_extra::extract::cookie::Cookie<'static> {
    use axum_extra::extract::cookie::{Cookie, SameSite};
    Cookie::build((names.device.clone(), token))
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .path("/")
        .max_age(time::Duration::days(365))
        .build()
}
