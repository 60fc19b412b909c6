//! Second factors: TOTP (RFC 6238) with single-use recovery codes, and passkeys (WebAuthn, see
//! [`crate::passkey`]), enrolled and removed by the user; the check shared by the login
//! challenge and step-up.
//!
//! The TOTP secret is sealed with the master key at rest (the store never sees it in the clear);
//! recovery codes are stored as SHA-256 hashes, like session ids (80 random bits each, so a hash
//! that cannot be reversed by guessing). A TOTP time step, once used, is refused again: the store
//! keeps the last used step per user and moves it forward atomically.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::audit::{Audit, EventKind};
use crate::auth_context::SecondFactorMethod;
use crate::clock::{Clock, Timestamp};
use crate::error::{Error, StoreError};
use crate::passkey::{CeremonyPurpose, Passkeys, StoredPasskey};
use crate::secret::TokenHash;
use crate::session::ClientInfo;
use crate::store::SecondFactorStore;
use crate::throttle::Throttle;
use crate::token::MasterKey;
use crate::token::refresh::LoginModel;
use crate::user::{User, UserId};

/// TOTP time step (RFC 6238 `X`), in seconds: what every authenticator app uses.
pub const TOTP_PERIOD_SECS: i64 = 30;
/// Digits of a TOTP code.
pub const TOTP_DIGITS: u32 = 6;
/// Steps of clock skew accepted either side of the current one (RFC 6238 §5.2).
const TOTP_SKEW_STEPS: i64 = 1;
/// Bytes of a TOTP secret: 160 bits, the length RFC 4226 recommends for HMAC-SHA1.
const TOTP_SECRET_LEN: usize = 20;
/// How many recovery codes a confirmation or a regeneration hands out.
pub const RECOVERY_CODES: usize = 10;
/// Random bytes of a recovery code: 80 bits, 16 base32 characters.
const RECOVERY_CODE_LEN: usize = 10;

/// The shared secret of a TOTP authenticator. `Debug` prints none of it.
#[derive(Clone)]
pub struct TotpSecret([u8; TOTP_SECRET_LEN]);

impl TotpSecret {
    /// A fresh secret from the OS CSPRNG.
    pub fn generate() -> Result<Self, Error> {
        crate::secret::random_bytes().map(Self)
    }

    /// A secret as an authenticator app reads it (base32, case and spaces ignored, padding
    /// allowed); `None` unless it is a 160-bit secret as [`TotpSecret::generate`] makes them.
    pub fn from_base32(text: &str) -> Option<Self> {
        let compact: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '=')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let bytes = data_encoding::BASE32_NOPAD
            .decode(compact.as_bytes())
            .ok()?;
        <[u8; TOTP_SECRET_LEN]>::try_from(bytes.as_slice())
            .ok()
            .map(Self)
    }

    /// The secret as authenticator apps take it: base32 without padding (RFC 4648).
    pub fn to_base32(&self) -> String {
        data_encoding::BASE32_NOPAD.encode(&self.0)
    }

    /// The six-digit code of time step `step`.
    pub fn code_at_step(&self, step: i64) -> String {
        format!("{:06}", hotp(&self.0, step, TOTP_DIGITS))
    }

    /// The code an authenticator shows at `at`.
    pub fn code_at(&self, at: Timestamp) -> String {
        self.code_at_step(time_step(at))
    }

    /// The time step whose code `code` is, among the current one and one either side at `now`;
    /// `None` when none matches. Every candidate is compared in constant time.
    pub fn matching_step(&self, code: &str, now: Timestamp) -> Option<i64> {
        if code.len() != TOTP_DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let current = time_step(now);
        let mut found = None;
        for step in current - TOTP_SKEW_STEPS..=current + TOTP_SKEW_STEPS {
            let expected = self.code_at_step(step);
            if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
                found = Some(step);
            }
        }
        found
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

/// The RFC 6238 time step of `at` (`T = floor(unix time / 30)`).
pub fn time_step(at: Timestamp) -> i64 {
    at.unix_seconds().div_euclid(TOTP_PERIOD_SECS)
}

/// HOTP (RFC 4226 §5.3): HMAC-SHA1 of the counter, dynamic truncation, `digits` decimal digits.
/// HMAC comes from aws-lc-rs; SHA-1 is what every authenticator app computes for TOTP, and it is
/// used here as a MAC, where its collision weakness does not apply.
fn hotp(key: &[u8], counter: i64, digits: u32) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    // The counter is an unsigned 8-byte big-endian number; steps before 1970 never occur.
    let tag = hmac::sign(&key, &counter.max(0).to_be_bytes());
    let mac = tag.as_ref();
    let offset = usize::from(mac.last().copied().unwrap_or(0) & 0x0f);
    let word = mac
        .get(offset..offset + 4)
        .and_then(|w| <[u8; 4]>::try_from(w).ok())
        .map_or(0, u32::from_be_bytes);
    (word & 0x7fff_ffff) % 10u32.pow(digits)
}

/// A recovery code as handed to the user once (`xxxx-xxxx-xxxx-xxxx`). `Debug` prints none of it.
#[derive(Clone)]
pub struct RecoveryCode(String);

impl RecoveryCode {
    fn generate() -> Result<(Self, TokenHash), Error> {
        let bytes: [u8; RECOVERY_CODE_LEN] = crate::secret::random_bytes()?;
        let text = data_encoding::BASE32_NOPAD
            .encode(&bytes)
            .to_ascii_lowercase();
        let grouped = text
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("-");
        Ok((Self(grouped), TokenHash::of(&bytes)))
    }

    /// The code as shown to the user.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hash a typed code is looked up by: dashes and spaces are ignored and case does not
    /// matter, so a code copied from a printout works. `None` when it cannot be a recovery code.
    pub fn hash_of_typed(typed: &str) -> Option<TokenHash> {
        let compact: String = typed
            .chars()
            .filter(|c| !matches!(c, '-' | ' '))
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if compact.len() != 16 {
            return None;
        }
        let bytes = data_encoding::BASE32_NOPAD
            .decode(compact.as_bytes())
            .ok()?;
        (bytes.len() == RECOVERY_CODE_LEN).then(|| TokenHash::of(&bytes))
    }
}

impl fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryCode(<redacted>)")
    }
}

/// A user's TOTP factor as the store keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct TotpFactor {
    /// Whose it is.
    pub user_id: UserId,
    /// The secret, sealed with the master key (the user id is the associated data, so a sealed
    /// secret cannot be moved to another account).
    pub sealed_secret: Vec<u8>,
    /// When enrolment began.
    pub created_at: Timestamp,
    /// When a first code confirmed it; until then it is not required at login.
    pub confirmed_at: Option<Timestamp>,
    /// The last time step a code was accepted for; codes of it and earlier steps are refused.
    pub last_step: Option<i64>,
}

/// A second-factor login challenge as the store keeps it: what a correct password earned, until
/// a code completes it.
#[derive(Clone, Debug, PartialEq)]
pub struct LoginChallenge {
    /// SHA-256 of the challenge secret: the store never sees the secret.
    pub hash: TokenHash,
    /// The account whose password was correct.
    pub user_id: UserId,
    /// The model the login asked for; completing it answers as that model's login does.
    pub model: LoginModel,
    /// The account's `not_before` when the password was checked: a change to the account
    /// (password, roles, disabling) before the code comes back voids the challenge.
    pub user_not_before: Timestamp,
    /// What the client told us about itself at login.
    pub client: ClientInfo,
    /// When the password was checked.
    pub created_at: Timestamp,
    /// When the challenge lapses.
    pub expires_at: Timestamp,
    /// Codes tried against it so far.
    pub attempts: u32,
    /// The thumbprint of the DPoP key the login was started with (token model), if any: the
    /// login completes only with a proof of that key, and its tokens are bound to it.
    pub dpop_jkt: Option<String>,
}

/// Second-factor settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecondFactorConfig {
    /// The issuer authenticator apps show beside the account name (`otpauth://totp/<issuer>:…`).
    pub totp_issuer: String,
    /// How long a login challenge waits for its code.
    pub challenge_lifetime: Duration,
    /// Codes a challenge takes before it is burnt (the login starts over).
    pub challenge_max_attempts: u32,
    /// Privileged actions of a user with a second factor need it used within this long.
    pub privileged_max_age: Duration,
    /// Whether the admin routes need a recent second factor even from admins who have none
    /// (they must enrol one first).
    pub admin_requires_second_factor: bool,
    /// What a login used from a new network and user agent at once must do.
    pub new_context: crate::login_context::NewContextPolicy,
    /// Where passkeys are valid; `None`: this server offers none.
    pub passkeys: Option<crate::passkey::PasskeyConfig>,
}

impl Default for SecondFactorConfig {
    fn default() -> Self {
        Self {
            totp_issuer: "Tessera".into(),
            challenge_lifetime: Duration::from_secs(5 * 60),
            challenge_max_attempts: 5,
            privileged_max_age: Duration::from_secs(10 * 60),
            admin_requires_second_factor: false,
            new_context: crate::login_context::NewContextPolicy::Record,
            passkeys: None,
        }
    }
}

impl SecondFactorConfig {
    /// Checks the values; an error names the field at fault.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.totp_issuer.trim().is_empty() || self.totp_issuer.contains(':') {
            return Err((
                "totp_issuer",
                "must be non-empty and must not contain ':'".into(),
            ));
        }
        if self.challenge_lifetime < Duration::from_secs(30) {
            return Err((
                "second_factor_challenge_lifetime",
                "must be at least 30 s".into(),
            ));
        }
        if self.challenge_max_attempts == 0 {
            return Err(("second_factor_max_attempts", "must be at least 1".into()));
        }
        if self.privileged_max_age.is_zero() {
            return Err(("privileged_max_age", "must be positive".into()));
        }
        if let Some(passkeys) = &self.passkeys {
            passkeys.build().map_err(|e| ("passkey_rp_id", e))?;
        }
        Ok(())
    }
}

/// What a user needs to add TOTP to an authenticator app. Shown once; `Debug` prints no secret.
pub struct TotpEnrolment {
    /// The secret, base32.
    pub secret: String,
    /// The `otpauth://` URI (for a QR code).
    pub otpauth_uri: String,
}

impl fmt::Debug for TotpEnrolment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpEnrolment(<redacted>)")
    }
}

/// A user's second factors, as they may see them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecondFactorStatus {
    /// Whether a confirmed TOTP factor is required at login.
    pub totp: bool,
    /// Whether an enrolment waits for its first code.
    pub totp_pending: bool,
    /// Unused recovery codes.
    pub recovery_codes_left: usize,
    /// Registered passkeys.
    pub passkeys: usize,
}

impl SecondFactorStatus {
    /// The methods a login challenge accepts (empty: no second factor).
    pub fn methods(&self) -> Vec<SecondFactorMethod> {
        let mut methods = Vec::new();
        if self.passkeys > 0 {
            methods.push(SecondFactorMethod::Webauthn);
        }
        if self.totp {
            methods.push(SecondFactorMethod::Totp);
            if self.recovery_codes_left > 0 {
                methods.push(SecondFactorMethod::RecoveryCode);
            }
        }
        methods
    }
}

/// What is shown as a second factor: a code, or a passkey's answer to a ceremony.
#[derive(Clone, Copy)]
pub enum FactorProof<'a> {
    /// A TOTP code or a recovery code; `method` says which (guessed from its shape when
    /// absent).
    Code {
        /// The code as typed.
        code: &'a str,
        /// Which kind of code it is.
        method: Option<SecondFactorMethod>,
    },
    /// An assertion of one of the account's passkeys.
    Passkey {
        /// The sealed ceremony that came with the options.
        ceremony: &'a str,
        /// The authenticator's answer (`PublicKeyCredential` as JSON).
        credential: &'a webauthn_rs::prelude::PublicKeyCredential,
    },
}

/// When a second factor is checked: a login waiting for it (named by its challenge, which a
/// passkey ceremony is bound to), or a step-up.
#[derive(Clone, Copy, Debug)]
pub enum Occasion<'a> {
    /// Completing the login whose challenge has this binding.
    Login(&'a str),
    /// A step-up of a login.
    StepUp,
}

impl Occasion<'_> {
    /// Its name in the audit log.
    pub fn during(&self) -> &'static str {
        match self {
            Self::Login(_) => "login",
            Self::StepUp => "step_up",
        }
    }

    fn ceremony(&self) -> (CeremonyPurpose, &str) {
        match self {
            Self::Login(binding) => (CeremonyPurpose::SecondFactor, binding),
            Self::StepUp => (CeremonyPurpose::StepUp, ""),
        }
    }
}

/// The second-factor service.
#[derive(Clone)]
pub struct SecondFactors {
    store: Arc<dyn SecondFactorStore>,
    passkeys: Passkeys,
    key: MasterKey,
    clock: Arc<dyn Clock>,
    throttle: Arc<Throttle>,
    audit: Audit,
    config: SecondFactorConfig,
}

/// The associated data a user's TOTP secret is sealed with.
fn seal_label(user: &UserId) -> String {
    format!("totp:{user}")
}

/// Percent-encodes everything but RFC 3986's unreserved characters (for the `otpauth` URI).
fn percent_encode(text: &str) -> String {
    use std::fmt::Write;
    text.bytes().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        out
    })
}

impl SecondFactors {
    /// Built by [`crate::Services::build`].
    pub(crate) fn new(
        store: Arc<dyn SecondFactorStore>,
        key: MasterKey,
        clock: Arc<dyn Clock>,
        throttle: Arc<Throttle>,
        audit: Audit,
        config: SecondFactorConfig,
        passkeys: Passkeys,
    ) -> Self {
        Self {
            store,
            passkeys,
            key,
            clock,
            throttle,
            audit,
            config,
        }
    }

    /// The settings this service runs with.
    pub fn config(&self) -> &SecondFactorConfig {
        &self.config
    }

    /// Passkeys: registration and the ceremonies.
    pub fn passkeys(&self) -> &Passkeys {
        &self.passkeys
    }

    /// What second factors `user` has.
    pub async fn status(&self, user: &UserId) -> Result<SecondFactorStatus, Error> {
        let factor = self.store.totp_factor(user).await?;
        let totp = factor.as_ref().is_some_and(|f| f.confirmed_at.is_some());
        let recovery_codes_left = if totp {
            self.store.recovery_codes_left(user).await?
        } else {
            0
        };
        Ok(SecondFactorStatus {
            totp,
            totp_pending: factor.is_some() && !totp,
            recovery_codes_left,
            passkeys: self.usable_passkeys(user).await?,
        })
    }

    /// Whether `user` must present a second factor at login: a confirmed TOTP factor, or a
    /// passkey.
    pub async fn required(&self, user: &UserId) -> Result<bool, Error> {
        if self
            .store
            .totp_factor(user)
            .await?
            .is_some_and(|f| f.confirmed_at.is_some())
        {
            return Ok(true);
        }
        Ok(self.usable_passkeys(user).await? > 0)
    }

    /// How many passkeys `user` can use here: none on a server that offers no passkeys (its
    /// public URL has no domain), so that passkeys registered under another configuration do
    /// not ask for a second factor that cannot be given.
    async fn usable_passkeys(&self, user: &UserId) -> Result<usize, Error> {
        if self.passkeys.enabled() {
            self.passkeys.count(user).await
        } else {
            Ok(0)
        }
    }

    /// Registers a passkey (see [`Passkeys::register`]), audited.
    pub async fn register_passkey(
        &self,
        user: &User,
        ceremony: &str,
        credential: &webauthn_rs::prelude::RegisterPublicKeyCredential,
        name: Option<&str>,
    ) -> Result<StoredPasskey, Error> {
        let passkey = self
            .passkeys
            .register(user, ceremony, credential, name)
            .await?;
        self.audit
            .record(
                EventKind::SecondFactorEnrolled,
                Some(&user.id),
                json!({"method": SecondFactorMethod::Webauthn, "passkey": passkey.id}),
            )
            .await;
        Ok(passkey)
    }

    /// Removes one passkey of `user` (`by`: who did it), audited; `false` when there is no such
    /// passkey.
    pub async fn remove_passkey(
        &self,
        user: &UserId,
        id: &str,
        by: Option<&UserId>,
    ) -> Result<bool, Error> {
        let removed = self.passkeys.remove(user, id).await?;
        if removed {
            self.audit
                .record(
                    EventKind::SecondFactorRemoved,
                    Some(user),
                    json!({"method": SecondFactorMethod::Webauthn, "passkey": id, "by": by}),
                )
                .await;
        }
        Ok(removed)
    }

    /// Removes every passkey of `user` (an operator's rescue), audited; returns how many.
    pub async fn remove_passkeys(
        &self,
        user: &UserId,
        by: Option<&UserId>,
    ) -> Result<usize, Error> {
        let removed = self.passkeys.remove_all(user).await?;
        if removed > 0 {
            self.audit
                .record(
                    EventKind::SecondFactorRemoved,
                    Some(user),
                    json!({"method": SecondFactorMethod::Webauthn, "count": removed, "by": by}),
                )
                .await;
        }
        Ok(removed)
    }

    /// Starts TOTP enrolment: a new secret, stored sealed and unconfirmed (replacing an
    /// unconfirmed one). [`Error::Conflict`] when the user has confirmed TOTP already (remove it
    /// first).
    pub async fn begin_totp(&self, user: &User) -> Result<TotpEnrolment, Error> {
        let secret = TotpSecret::generate()?;
        let sealed_secret = self.key.seal(&seal_label(&user.id), &secret.0)?;
        let factor = TotpFactor {
            user_id: user.id.clone(),
            sealed_secret,
            created_at: self.clock.now(),
            confirmed_at: None,
            last_step: None,
        };
        if !self.store.put_pending_totp(&factor).await? {
            return Err(Error::Conflict(
                "TOTP is already set up for this account; remove it first to set it up again"
                    .into(),
            ));
        }
        let base32 = secret.to_base32();
        let issuer = percent_encode(&self.config.totp_issuer);
        let account = percent_encode(user.username.as_str());
        Ok(TotpEnrolment {
            otpauth_uri: format!(
                "otpauth://totp/{issuer}:{account}?secret={base32}&issuer={issuer}&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_PERIOD_SECS}"
            ),
            secret: base32,
        })
    }

    /// Confirms TOTP with a first code from the app, and returns the recovery codes (shown
    /// once). Wrong codes spend the account's attempt budget. [`Error::Conflict`] when there is
    /// no enrolment waiting (never begun, or already confirmed).
    pub async fn confirm_totp(
        &self,
        user: &User,
        code: &str,
        ip: Option<IpAddr>,
    ) -> Result<Vec<RecoveryCode>, Error> {
        let Some(factor) = self
            .store
            .totp_factor(&user.id)
            .await?
            .filter(|f| f.confirmed_at.is_none())
        else {
            return Err(Error::Conflict(
                "no TOTP enrolment is waiting for confirmation; start one with POST /v1/account/totp"
                    .into(),
            ));
        };
        let step = self
            .guarded(user, ip, "confirmation", async || {
                let secret = self.open(&factor)?;
                Ok(secret.matching_step(code.trim(), self.clock.now()))
            })
            .await?;
        let (codes, hashes) = new_recovery_codes()?;
        if !self
            .store
            .confirm_totp(
                &user.id,
                &factor.sealed_secret,
                step,
                &hashes,
                self.clock.now(),
            )
            .await?
        {
            // Removed, replaced or confirmed by another request meanwhile.
            return Err(Error::Conflict(
                "the TOTP enrolment changed meanwhile; start again".into(),
            ));
        }
        self.audit
            .record(
                EventKind::SecondFactorEnrolled,
                Some(&user.id),
                json!({"method": SecondFactorMethod::Totp}),
            )
            .await;
        Ok(codes)
    }

    /// Removes TOTP (confirmed or not) and the recovery codes; `false` when there was none.
    pub async fn remove_totp(&self, user: &UserId, by: Option<&UserId>) -> Result<bool, Error> {
        let removed = self.store.delete_totp(user).await?;
        if removed {
            self.audit
                .record(
                    EventKind::SecondFactorRemoved,
                    Some(user),
                    json!({"method": SecondFactorMethod::Totp, "by": by}),
                )
                .await;
        }
        Ok(removed)
    }

    /// New recovery codes replace the old ones. [`Error::Conflict`] without confirmed TOTP.
    pub async fn regenerate_recovery_codes(
        &self,
        user: &UserId,
    ) -> Result<Vec<RecoveryCode>, Error> {
        let (codes, hashes) = new_recovery_codes()?;
        if !self.store.replace_recovery_codes(user, &hashes).await? {
            return Err(Error::Conflict(
                "recovery codes come with TOTP: set it up first".into(),
            ));
        }
        self.audit
            .record(EventKind::RecoveryCodesRegenerated, Some(user), json!({}))
            .await;
        Ok(codes)
    }

    /// Checks a second factor of `user` and uses it up: a TOTP code's time step, a recovery
    /// code, or a passkey ceremony. For a code, `method` says which it is; without it, six
    /// digits are a TOTP code and anything else a recovery code. Failures spend the address's
    /// and the account's attempt budgets (as wrong passwords do) and are audited; `occasion`
    /// says when it is checked (and is what a passkey ceremony must be bound to). Returns the
    /// method that matched.
    pub async fn verify(
        &self,
        user: &User,
        proof: FactorProof<'_>,
        ip: Option<IpAddr>,
        occasion: Occasion<'_>,
    ) -> Result<SecondFactorMethod, Error> {
        let during = occasion.during();
        let (code, method) = match proof {
            FactorProof::Code { code, method } => (code.trim(), method),
            FactorProof::Passkey {
                ceremony,
                credential,
            } => {
                let (purpose, binding) = occasion.ceremony();
                self.guarded(user, ip, during, async || {
                    Ok(self
                        .passkeys
                        .verify(&user.id, purpose, binding, ceremony, credential)
                        .await?
                        .then_some(()))
                })
                .await
                .map_err(|e| match e {
                    Error::InvalidSecondFactor => Error::PasskeyRefused,
                    e => e,
                })?;
                return Ok(SecondFactorMethod::Webauthn);
            }
        };
        let method = method.unwrap_or(
            if code.len() == TOTP_DIGITS as usize && code.bytes().all(|b| b.is_ascii_digit()) {
                SecondFactorMethod::Totp
            } else {
                SecondFactorMethod::RecoveryCode
            },
        );
        let used = self
            .guarded(user, ip, during, async || {
                let Some(factor) = self
                    .store
                    .totp_factor(&user.id)
                    .await?
                    .filter(|f| f.confirmed_at.is_some())
                else {
                    return Ok(None);
                };
                match method {
                    SecondFactorMethod::Totp => {
                        let secret = self.open(&factor)?;
                        let Some(step) = secret.matching_step(code, self.clock.now()) else {
                            return Ok(None);
                        };
                        // The step moves forward atomically: of two requests with one code,
                        // one wins; a code of a step used already is refused.
                        Ok(self
                            .store
                            .use_totp_step(&user.id, step)
                            .await?
                            .then_some(None))
                    }
                    SecondFactorMethod::RecoveryCode => {
                        let Some(hash) = RecoveryCode::hash_of_typed(code) else {
                            return Ok(None);
                        };
                        Ok(self
                            .store
                            .spend_recovery_code(&user.id, &hash)
                            .await?
                            .map(Some))
                    }
                    // A passkey is not a code.
                    SecondFactorMethod::Webauthn => Ok(None),
                }
            })
            .await?;
        if let Some(left) = used {
            self.audit
                .record(
                    EventKind::RecoveryCodeUsed,
                    Some(&user.id),
                    json!({"during": during, "left": left}),
                )
                .await;
        }
        Ok(method)
    }

    /// Runs a code check under the attempt budgets: spent up front (so guesses sent at once
    /// cannot all pass), given back unless the code was wrong. `check` answers `None` for a
    /// wrong code.
    async fn guarded<T>(
        &self,
        user: &User,
        ip: Option<IpAddr>,
        during: &'static str,
        check: impl AsyncFnOnce() -> Result<Option<T>, Error>,
    ) -> Result<T, Error> {
        self.throttle.spend_address(ip).await?;
        let account = user.username.as_str();
        self.throttle.spend_account(account, None).await?;
        let outcome = check().await;
        if !matches!(outcome, Ok(None)) {
            self.throttle.refund_account(account, None).await?;
        }
        match outcome? {
            Some(value) => Ok(value),
            None => {
                metrics::counter!("tessera_second_factor_failures_total").increment(1);
                self.audit
                    .record(
                        EventKind::SecondFactorFailed,
                        Some(&user.id),
                        json!({"during": during, "ip": ip}),
                    )
                    .await;
                Err(Error::InvalidSecondFactor)
            }
        }
    }

    fn open(&self, factor: &TotpFactor) -> Result<TotpSecret, Error> {
        let plain = self
            .key
            .open(&seal_label(&factor.user_id), &factor.sealed_secret)
            .map_err(|_| {
                Error::Store(StoreError::Other(format!(
                    "the TOTP secret of {} cannot be unsealed with this master key",
                    factor.user_id
                )))
            })?;
        <[u8; TOTP_SECRET_LEN]>::try_from(plain.as_slice())
            .map(TotpSecret)
            .map_err(|_| Error::Internal("a stored TOTP secret has the wrong length".into()))
    }
}

fn new_recovery_codes() -> Result<(Vec<RecoveryCode>, Vec<TokenHash>), Error> {
    (0..RECOVERY_CODES)
        .map(|_| RecoveryCode::generate())
        .collect::<Result<Vec<_>, _>>()
        .map(|pairs| pairs.into_iter().unzip())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1: the seed is the ASCII "12345678901234567890".
    const RFC_SEED: &[u8; 20] = b"12345678901234567890";

    #[test]
    fn rfc_6238_appendix_b_sha1_vectors() {
        let vectors: [(i64, u32); 6] = [
            (59, 94_287_082),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ];
        for (unix, expected) in vectors {
            let step = time_step(Timestamp::from_unix_millis(unix * 1000));
            assert_eq!(hotp(RFC_SEED, step, 8), expected, "T = {unix}");
            // Six digits are the last six of the eight.
            let secret = TotpSecret(*RFC_SEED);
            assert_eq!(
                secret.code_at(Timestamp::from_unix_millis(unix * 1000)),
                format!("{:06}", expected % 1_000_000)
            );
        }
    }

    #[test]
    fn rfc_4226_appendix_d_hotp_vectors() {
        let expected = [
            755_224, 287_082, 359_152, 969_429, 338_314, 254_676, 287_922, 162_583, 399_871,
            520_489,
        ];
        for (counter, code) in expected.into_iter().enumerate() {
            assert_eq!(hotp(RFC_SEED, counter as i64, 6), code, "counter {counter}");
        }
    }

    #[test]
    fn one_step_of_skew_is_accepted_two_are_not() {
        let secret = TotpSecret(*RFC_SEED);
        let now = Timestamp::from_unix_millis(1_111_111_111_000);
        let step = time_step(now);
        assert_eq!(secret.matching_step(&secret.code_at(now), now), Some(step));
        for skew in [-1, 1] {
            let code = secret.code_at_step(step + skew);
            assert_eq!(secret.matching_step(&code, now), Some(step + skew));
        }
        for skew in [-2, 2] {
            let code = secret.code_at_step(step + skew);
            assert_eq!(secret.matching_step(&code, now), None, "skew {skew}");
        }
        assert_eq!(secret.matching_step("12345", now), None);
        assert_eq!(secret.matching_step("abcdef", now), None);
    }

    #[test]
    fn secrets_and_codes_are_redacted_and_well_formed() {
        let secret = TotpSecret::generate().unwrap();
        assert_eq!(format!("{secret:?}"), "TotpSecret(<redacted>)");
        assert_eq!(secret.to_base32().len(), 32);
        let read = TotpSecret::from_base32(&secret.to_base32().to_ascii_lowercase()).unwrap();
        assert_eq!(read.code_at_step(7), secret.code_at_step(7));
        assert!(TotpSecret::from_base32("JBSWY3DP").is_none());
        let (code, hash) = RecoveryCode::generate().unwrap();
        assert_eq!(format!("{code:?}"), "RecoveryCode(<redacted>)");
        assert_eq!(code.as_str().len(), 19);
        assert_eq!(RecoveryCode::hash_of_typed(code.as_str()), Some(hash));
        let sloppy = code.as_str().replace('-', " ").to_ascii_uppercase();
        assert_eq!(RecoveryCode::hash_of_typed(&sloppy), Some(hash));
        assert_eq!(RecoveryCode::hash_of_typed("123456"), None);
        assert_eq!(RecoveryCode::hash_of_typed("1111-1111-1111-1111"), None);
    }

    /// A store of one user's factor and codes, in memory: what the service needs of
    /// [`SecondFactorStore`], so its rules can be tested here, on a manual clock.
    #[derive(Default)]
    struct OneUser {
        factor: std::sync::Mutex<Option<TotpFactor>>,
        codes: std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
    }

    #[async_trait::async_trait]
    impl SecondFactorStore for OneUser {
        async fn put_pending_totp(&self, factor: &TotpFactor) -> Result<bool, StoreError> {
            let mut slot = self.factor.lock().unwrap();
            if slot.as_ref().is_some_and(|f| f.confirmed_at.is_some()) {
                return Ok(false);
            }
            *slot = Some(factor.clone());
            Ok(true)
        }
        async fn totp_factor(&self, _: &UserId) -> Result<Option<TotpFactor>, StoreError> {
            Ok(self.factor.lock().unwrap().clone())
        }
        async fn confirm_totp(
            &self,
            _: &UserId,
            sealed_secret: &[u8],
            step: i64,
            codes: &[TokenHash],
            at: Timestamp,
        ) -> Result<bool, StoreError> {
            let mut slot = self.factor.lock().unwrap();
            let Some(factor) = slot
                .as_mut()
                .filter(|f| f.confirmed_at.is_none() && f.sealed_secret == sealed_secret)
            else {
                return Ok(false);
            };
            factor.confirmed_at = Some(at);
            factor.last_step = Some(step);
            *self.codes.lock().unwrap() = codes.iter().map(|h| *h.as_bytes()).collect();
            Ok(true)
        }
        async fn use_totp_step(&self, _: &UserId, step: i64) -> Result<bool, StoreError> {
            let mut slot = self.factor.lock().unwrap();
            match slot.as_mut() {
                Some(f) if f.confirmed_at.is_some() && f.last_step.is_none_or(|l| l < step) => {
                    f.last_step = Some(step);
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
        async fn delete_totp(&self, _: &UserId) -> Result<bool, StoreError> {
            self.codes.lock().unwrap().clear();
            Ok(self.factor.lock().unwrap().take().is_some())
        }
        async fn replace_recovery_codes(
            &self,
            _: &UserId,
            codes: &[TokenHash],
        ) -> Result<bool, StoreError> {
            *self.codes.lock().unwrap() = codes.iter().map(|h| *h.as_bytes()).collect();
            Ok(true)
        }
        async fn spend_recovery_code(
            &self,
            _: &UserId,
            hash: &TokenHash,
        ) -> Result<Option<usize>, StoreError> {
            let mut codes = self.codes.lock().unwrap();
            Ok(codes.remove(hash.as_bytes()).then_some(codes.len()))
        }
        async fn recovery_codes_left(&self, _: &UserId) -> Result<usize, StoreError> {
            Ok(self.codes.lock().unwrap().len())
        }
        // Passkeys are tested against the real stores (tessera-store's conformance) and end to
        // end (tessera-http's passkey tests); this user has none.
        async fn add_passkey(&self, _: &StoredPasskey, _: usize) -> Result<bool, StoreError> {
            Ok(false)
        }
        async fn passkeys_of(&self, _: &UserId) -> Result<Vec<StoredPasskey>, StoreError> {
            Ok(Vec::new())
        }
        async fn passkey_by_credential(
            &self,
            _: &[u8],
        ) -> Result<Option<StoredPasskey>, StoreError> {
            Ok(None)
        }
        async fn passkey_used(
            &self,
            _: &[u8],
            _: &str,
            _: u32,
            _: Timestamp,
        ) -> Result<bool, StoreError> {
            Ok(false)
        }
        async fn rename_passkey(&self, _: &UserId, _: &str, _: &str) -> Result<bool, StoreError> {
            Ok(false)
        }
        async fn delete_passkey(&self, _: &UserId, _: &str) -> Result<bool, StoreError> {
            Ok(false)
        }
        async fn delete_passkeys(&self, _: &UserId) -> Result<usize, StoreError> {
            Ok(0)
        }
    }

    struct NoEvents;

    #[async_trait::async_trait]
    impl crate::store::EventStore for NoEvents {
        async fn record_event(&self, _: &crate::audit::NewEvent) -> Result<(), StoreError> {
            Ok(())
        }
        async fn events(
            &self,
            _: Option<i64>,
            _: usize,
        ) -> Result<Vec<crate::audit::SecurityEvent>, StoreError> {
            Ok(Vec::new())
        }
    }

    /// The code check on a manual clock: a code works in its step and one step either side,
    /// once; a recovery code works once; a wrong code is refused.
    #[tokio::test]
    async fn codes_are_checked_on_the_injected_clock_and_work_once() {
        let clock = crate::clock::ManualClock::starting_at_millis(1_700_000_000_000);
        let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
        let (key, _) = MasterKey::generate().unwrap();
        let store: Arc<dyn SecondFactorStore> = Arc::new(OneUser::default());
        let passkeys = Passkeys::new(
            None,
            Arc::clone(&store),
            Arc::new(crate::token::dpop::SeenProofs::default()),
            key.clone(),
            Arc::clone(&clock_dyn),
        )
        .unwrap();
        let service = SecondFactors::new(
            store,
            key,
            Arc::clone(&clock_dyn),
            Arc::new(Throttle::new(
                crate::throttle::ThrottleConfig::default(),
                None,
            )),
            Audit::new(Arc::new(NoEvents), clock_dyn),
            SecondFactorConfig::default(),
            passkeys,
        );
        let user = User {
            id: UserId::generate().unwrap(),
            username: crate::user::Username::parse("alice").unwrap(),
            password_hash: String::new(),
            roles: Vec::new(),
            disabled: false,
            created_at: clock.now(),
            updated_at: clock.now(),
            not_before: clock.now(),
            email: None,
        };
        let enrolment = service.begin_totp(&user).await.unwrap();
        let secret = TotpSecret::from_base32(&enrolment.secret).unwrap();
        assert!(
            !service.required(&user.id).await.unwrap(),
            "not before confirmation"
        );
        let codes = service
            .confirm_totp(&user, &secret.code_at(clock.now()), None)
            .await
            .unwrap();
        assert_eq!(codes.len(), RECOVERY_CODES);
        assert!(service.required(&user.id).await.unwrap());
        let verify = async |code: &str| {
            service
                .verify(
                    &user,
                    FactorProof::Code { code, method: None },
                    None,
                    Occasion::StepUp,
                )
                .await
        };

        // The confirming code's step is used.
        assert!(matches!(
            verify(&secret.code_at(clock.now())).await,
            Err(Error::InvalidSecondFactor)
        ));
        // The next step's code is accepted a step early, once.
        let next = clock.now().saturating_add(Duration::from_secs(30));
        assert_eq!(
            verify(&secret.code_at(next)).await.unwrap(),
            SecondFactorMethod::Totp
        );
        assert!(verify(&secret.code_at(next)).await.is_err(), "reused");
        // Two steps ahead: refused, even though that step is unused.
        clock.advance(Duration::from_secs(90));
        let two_ahead = clock.now().saturating_add(Duration::from_secs(60));
        assert!(verify(&secret.code_at(two_ahead)).await.is_err());
        // Two steps behind: refused; one step behind: accepted (that step is unused).
        let two_behind = clock.now().saturating_sub(Duration::from_secs(60));
        assert!(verify(&secret.code_at(two_behind)).await.is_err());
        let one_behind = clock.now().saturating_sub(Duration::from_secs(30));
        assert!(verify(&secret.code_at(one_behind)).await.is_ok());
        assert!(verify("000000x").await.is_err());

        // A recovery code works once, typed any way.
        let typed = codes[3].as_str().replace('-', " ").to_uppercase();
        assert_eq!(
            verify(&typed).await.unwrap(),
            SecondFactorMethod::RecoveryCode
        );
        assert!(verify(codes[3].as_str()).await.is_err(), "used");
        assert_eq!(
            service.status(&user.id).await.unwrap().recovery_codes_left,
            RECOVERY_CODES - 1
        );
        // Told it is a TOTP code, a recovery code is refused.
        assert!(
            service
                .verify(
                    &user,
                    FactorProof::Code {
                        code: codes[4].as_str(),
                        method: Some(SecondFactorMethod::Totp)
                    },
                    None,
                    Occasion::StepUp,
                )
                .await
                .is_err()
        );
    }

    #[test]
    fn the_otpauth_label_is_percent_encoded() {
        assert_eq!(percent_encode("Acme Corp"), "Acme%20Corp");
        assert_eq!(percent_encode("alice@example.org"), "alice%40example.org");
    }
}
