//! How a login was authenticated, and how recently: the authentication context every login
//! (session or refresh family) carries, and access tokens repeat as `amr`, `acr` and
//! `auth_time`. Privileged actions ask it whether a second factor was used recently enough
//! (step-up, RFC 9470).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;

/// A second factor, named by its method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecondFactorMethod {
    /// A time-based one-time password from an authenticator app (RFC 6238).
    Totp,
    /// One of the single-use recovery codes handed out when TOTP was confirmed.
    RecoveryCode,
    /// A passkey (WebAuthn) assertion, with user verification.
    Webauthn,
}

impl SecondFactorMethod {
    /// The name in the API and the stores (`totp`, `recovery_code`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Totp => "totp",
            Self::RecoveryCode => "recovery_code",
            Self::Webauthn => "webauthn",
        }
    }

    /// The method named by [`as_str`](Self::as_str); `None` for an unknown name.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Totp, Self::RecoveryCode, Self::Webauthn]
            .into_iter()
            .find(|m| m.as_str() == name)
    }

    /// Its Authentication Method Reference (RFC 8176). A recovery code is a one-time password
    /// as much as a TOTP code is; a passkey is a hardware-secured key (`hwk`).
    pub fn amr(self) -> &'static str {
        match self {
            Self::Totp | Self::RecoveryCode => "otp",
            Self::Webauthn => "hwk",
        }
    }
}

impl fmt::Display for SecondFactorMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a login began with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirstFactor {
    /// The account's password.
    #[default]
    Password,
    /// A passkey alone (passwordless): an assertion with user verification, which is two
    /// factors in one (the key, and the PIN or biometric that unlocked it).
    Passkey,
}

/// The assurance level a login has reached, as its `acr` value.
pub const ACR_PASSWORD: &str = "aal1";
/// The `acr` of a login that used a second factor besides the password.
pub const ACR_SECOND_FACTOR: &str = "aal2";

/// How a login was authenticated.
///
/// ```
/// use std::time::Duration;
/// use tessera_core::{AuthContext, SecondFactorMethod, Timestamp};
///
/// let login = Timestamp::from_unix_millis(1_000_000);
/// let password_only = AuthContext::password(login);
/// assert_eq!(password_only.amr(), ["pwd"]);
/// assert_eq!(password_only.acr(), "aal1");
///
/// let later = Timestamp::from_unix_millis(1_060_000);
/// let stepped_up = password_only.with_second_factor(SecondFactorMethod::Totp, later);
/// assert_eq!(stepped_up.amr(), ["pwd", "otp", "mfa"]);
/// assert_eq!(stepped_up.acr(), "aal2");
/// assert_eq!(stepped_up.auth_time, later);
///
/// let passwordless = AuthContext::passkey(login);
/// assert_eq!(passwordless.amr(), ["hwk", "user", "mfa"]);
/// assert_eq!(passwordless.acr(), "aal2");
/// let now = Timestamp::from_unix_millis(1_600_000);
/// assert!(stepped_up.second_factor_within(now, Duration::from_secs(600)));
/// assert!(!stepped_up.second_factor_within(now, Duration::from_secs(60)));
/// ```
///
/// Every way of authenticating sets both fields together (a password login; a login with a
/// second factor; a step-up), so with a second factor `auth_time` is also when it was used:
/// one timestamp serves both, which keeps a session (of which a node caches a great many) 8
/// bytes smaller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthContext {
    /// When the user last authenticated for this login: the login, or the latest step-up.
    pub auth_time: Timestamp,
    /// The second factor used at `auth_time`; `None` for a password-only login. A passwordless
    /// passkey login counts its passkey here too (it is multi-factor by itself).
    pub second_factor: Option<SecondFactorMethod>,
    /// What the login began with.
    pub first_factor: FirstFactor,
}

impl AuthContext {
    /// A login by password alone, at `at`.
    pub fn password(at: Timestamp) -> Self {
        Self {
            auth_time: at,
            second_factor: None,
            first_factor: FirstFactor::Password,
        }
    }

    /// A passwordless login by passkey (with user verification), at `at`.
    pub fn passkey(at: Timestamp) -> Self {
        Self {
            auth_time: at,
            second_factor: Some(SecondFactorMethod::Webauthn),
            first_factor: FirstFactor::Passkey,
        }
    }

    /// This context after `method` was used at `at` (a login challenge met, or a step-up): the
    /// user authenticated again then.
    pub fn with_second_factor(self, method: SecondFactorMethod, at: Timestamp) -> Self {
        Self {
            auth_time: at,
            second_factor: Some(method),
            first_factor: self.first_factor,
        }
    }

    /// The `amr` values (RFC 8176): `pwd`, and with a second factor its method and `mfa`; a
    /// passwordless passkey login is `hwk` (the key) and `user` (verified by its PIN or
    /// biometric), which is `mfa` by itself. Static, so answering with them allocates nothing.
    pub fn amr(&self) -> &'static [&'static str] {
        use SecondFactorMethod::{RecoveryCode, Totp, Webauthn};
        match (self.first_factor, self.second_factor) {
            (FirstFactor::Password, None) => &["pwd"],
            (FirstFactor::Password, Some(Totp | RecoveryCode)) => &["pwd", "otp", "mfa"],
            (FirstFactor::Password, Some(Webauthn)) => &["pwd", "hwk", "mfa"],
            (FirstFactor::Passkey, None | Some(Webauthn)) => &["hwk", "user", "mfa"],
            (FirstFactor::Passkey, Some(Totp | RecoveryCode)) => &["hwk", "user", "otp", "mfa"],
        }
    }

    /// The `acr` value: [`ACR_SECOND_FACTOR`] with a second factor, else [`ACR_PASSWORD`].
    pub fn acr(&self) -> &'static str {
        if self.second_factor.is_some() {
            ACR_SECOND_FACTOR
        } else {
            ACR_PASSWORD
        }
    }

    /// When the second factor was used last, if ever in this login.
    pub fn second_factor_at(&self) -> Option<Timestamp> {
        self.second_factor.map(|_| self.auth_time)
    }

    /// Whether a second factor was used no longer than `max_age` before `now`.
    pub fn second_factor_within(&self, now: Timestamp, max_age: Duration) -> bool {
        self.second_factor_at()
            .is_some_and(|at| now.since(at) <= max_age)
    }

    /// The context an access token describes by its `amr` and `acr` claims, `auth_time` being
    /// its `auth_time` (or its issue time). The inverse of [`amr`](Self::amr) and
    /// [`acr`](Self::acr): a token of a passkey login says so as its login's session does. A
    /// token signed before `amr` existed, with `aal2`, reads as a TOTP code (it was the only
    /// second factor then).
    pub fn from_token(amr: Option<&[String]>, acr: Option<&str>, auth_time: Timestamp) -> Self {
        let has = |m: &str| amr.is_some_and(|amr| amr.iter().any(|a| a == m));
        let first_factor = if !has("pwd") && has("hwk") && has("user") {
            FirstFactor::Passkey
        } else {
            FirstFactor::Password
        };
        let second_factor = match acr {
            Some(ACR_SECOND_FACTOR) if has("otp") => Some(SecondFactorMethod::Totp),
            Some(ACR_SECOND_FACTOR) if has("hwk") => Some(SecondFactorMethod::Webauthn),
            Some(ACR_SECOND_FACTOR) => Some(SecondFactorMethod::Totp),
            _ => None,
        };
        Self {
            auth_time,
            second_factor,
            first_factor,
        }
    }

    /// The stored form: compact JSON of milliseconds and the method's name.
    pub fn to_stored(&self) -> String {
        let stored = Stored {
            auth_time: self.auth_time.unix_millis(),
            factor: self.second_factor,
            first: self.first_factor,
        };
        // A struct of numbers and a unit enum always encodes.
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// Reads [`to_stored`](Self::to_stored)'s form; `None` when it does not decode.
    pub fn from_stored(text: &str) -> Option<Self> {
        let stored: Stored = serde_json::from_str(text).ok()?;
        Some(Self {
            auth_time: Timestamp::from_unix_millis(stored.auth_time),
            second_factor: stored.factor,
            first_factor: stored.first,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    auth_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    factor: Option<SecondFactorMethod>,
    /// Absent for a password login (and every login stored before passkeys existed).
    #[serde(default, skip_serializing_if = "is_password")]
    first: FirstFactor,
}

fn is_password(first: &FirstFactor) -> bool {
    *first == FirstFactor::Password
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_describes_its_login_as_the_login_does() {
        let at = Timestamp::from_unix_millis(1_700_000_000_000);
        let later = at.saturating_add(Duration::from_secs(60));
        let password = AuthContext::password(at);
        let passkey = AuthContext::passkey(at);
        for context in [
            password,
            password.with_second_factor(SecondFactorMethod::Totp, later),
            password.with_second_factor(SecondFactorMethod::Webauthn, later),
            passkey,
            passkey.with_second_factor(SecondFactorMethod::Webauthn, later),
            passkey.with_second_factor(SecondFactorMethod::Totp, later),
        ] {
            let amr: Vec<String> = context.amr().iter().map(|m| (*m).to_owned()).collect();
            let read = AuthContext::from_token(Some(&amr), Some(context.acr()), context.auth_time);
            assert_eq!(read.amr(), context.amr(), "{context:?}");
            assert_eq!(read.acr(), context.acr(), "{context:?}");
            assert_eq!(read.first_factor, context.first_factor, "{context:?}");
        }
        // A recovery code is `otp` in a token, as a TOTP code is.
        let recovery = password.with_second_factor(SecondFactorMethod::RecoveryCode, later);
        let amr: Vec<String> = recovery.amr().iter().map(|m| (*m).to_owned()).collect();
        assert_eq!(
            AuthContext::from_token(Some(&amr), Some("aal2"), later).amr(),
            ["pwd", "otp", "mfa"]
        );
        // Tokens signed before `amr`: the password, and TOTP with `aal2`.
        assert_eq!(AuthContext::from_token(None, None, at), password);
        assert_eq!(
            AuthContext::from_token(None, Some("aal2"), at).amr(),
            ["pwd", "otp", "mfa"]
        );
    }

    #[test]
    fn the_stored_form_round_trips_and_refuses_what_it_does_not_know() {
        let at = Timestamp::from_unix_millis(1_700_000_000_123);
        let password = AuthContext::password(at);
        assert_eq!(
            AuthContext::from_stored(&password.to_stored()),
            Some(password)
        );
        let stepped = password.with_second_factor(
            SecondFactorMethod::RecoveryCode,
            at.saturating_add(Duration::from_secs(5)),
        );
        assert_eq!(
            AuthContext::from_stored(&stepped.to_stored()),
            Some(stepped)
        );
        let passkey = AuthContext::passkey(at);
        assert_eq!(
            AuthContext::from_stored(&passkey.to_stored()),
            Some(passkey)
        );
        assert_eq!(
            AuthContext::from_stored(r#"{"auth_time":1,"factor":"totp"}"#).map(|a| a.first_factor),
            Some(FirstFactor::Password),
            "a login stored before passkeys began with the password"
        );
        assert_eq!(
            AuthContext::from_stored(r#"{"auth_time":1,"factor":"sms"}"#),
            None
        );
        assert_eq!(AuthContext::from_stored("not json"), None);
    }
}
