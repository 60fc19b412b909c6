//! Passkeys (WebAuthn), by the `webauthn-rs` crate: registration, and assertions as a second
//! factor (login challenge, step-up) or alone (passwordless login).
//!
//! A ceremony has two steps: the server hands out options with a fresh challenge, the
//! authenticator answers. The state between them (the challenge, the credentials allowed) does
//! not go into a store: it is sealed with the master key (AES-256-GCM, bound to what the ceremony
//! is for and whose it is) and travels with the client as `ceremony`, so any node can finish
//! it. It lapses after [`CEREMONY_LIFETIME`] and works once: its id is recorded, on every node
//! and across restarts, in the store that refuses replayed DPoP proofs
//! ([`ProofReplayStore::first_use_durable`]).
//!
//! Credentials are public keys: stored as they are (no secret), with their signature counter,
//! which only moves forward (a counter that goes back means a cloned authenticator).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{
    AuthenticationResult, CreationChallengeResponse, DiscoverableAuthentication, DiscoverableKey,
    Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, RequestChallengeResponse, Url, Uuid, Webauthn, WebauthnBuilder,
};

use crate::clock::{Clock, Timestamp};
use crate::error::{Error, StoreError};
use crate::store::{ProofReplayStore, SecondFactorStore};
use crate::token::MasterKey;
use crate::user::{User, UserId};

/// How long a ceremony's options stay good: time to find the authenticator and unlock it.
pub const CEREMONY_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// The longest name a passkey may be given.
pub const MAX_NAME_CHARS: usize = 64;
/// The longest credential id kept (WebAuthn allows 1023 bytes; real authenticators use 16 to
/// about 250).
pub const MAX_CREDENTIAL_ID_LEN: usize = 1023;
/// The most passkeys one account may register.
pub const MAX_PASSKEYS: usize = 20;

/// Where passkeys are valid: the relying party. Without it, this server offers no passkeys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasskeyConfig {
    /// The relying party id: the domain passkeys are bound to (the host of the public URL, or a
    /// parent domain of it). It cannot change once passkeys are registered.
    pub rp_id: String,
    /// The name authenticators show.
    pub rp_name: String,
    /// The origins pages that use passkeys are served from: the public URL's origin first,
    /// then the trusted origins (each must be on `rp_id` or a subdomain of it).
    pub origins: Vec<String>,
}

impl PasskeyConfig {
    /// The relying party of a server at `public_url`: `rp_id` (default: its host), its origin,
    /// and those of `trusted_origins` on `rp_id`'s domain (a passkey is bound to one domain).
    /// `None` when no `rp_id` is given and the host is not a domain name (an IP address cannot
    /// be a relying party id).
    pub fn for_public_url(
        public_url: &str,
        rp_id: Option<&str>,
        rp_name: &str,
        trusted_origins: &[String],
    ) -> Option<Self> {
        let url = Url::parse(public_url).ok()?;
        let rp_id = match rp_id {
            Some(id) => id.trim().to_ascii_lowercase(),
            None => url.domain()?.to_ascii_lowercase(),
        };
        let mut origins = vec![url.origin().ascii_serialization()];
        for origin in trusted_origins {
            if let Ok(other) = Url::parse(origin)
                && other.domain().is_some_and(|d| on_domain(d, &rp_id))
            {
                let serialized = other.origin().ascii_serialization();
                if !origins.contains(&serialized) {
                    origins.push(serialized);
                }
            }
        }
        Some(Self {
            rp_id,
            rp_name: rp_name.to_owned(),
            origins,
        })
    }

    /// The WebAuthn relying party these settings describe; an error names what is wrong.
    pub fn build(&self) -> Result<Webauthn, String> {
        let parse = |o: &str| Url::parse(o).map_err(|e| format!("origin {o:?}: {e}"));
        let Some(first) = self.origins.first() else {
            return Err("passkeys need at least one origin".into());
        };
        let first = parse(first)?;
        let mut builder = WebauthnBuilder::new(&self.rp_id, &first)
            .map_err(|_| {
                format!(
                    "the passkey relying party id {:?} is not the domain of {first} or a parent of it",
                    self.rp_id
                )
            })?
            .rp_name(&self.rp_name)
            .timeout(CEREMONY_LIFETIME);
        for origin in &self.origins[1..] {
            let url = parse(origin)?;
            if !url.domain().is_some_and(|d| on_domain(d, &self.rp_id)) {
                return Err(format!(
                    "origin {origin} is not on the passkey relying party id {:?}",
                    self.rp_id
                ));
            }
            builder = builder.append_allowed_origin(&url);
        }
        builder
            .build()
            .map_err(|e| format!("the passkey relying party was refused: {e}"))
    }
}

/// Whether `host` is `domain` or one of its subdomains.
fn on_domain(host: &str, domain: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host == domain || host.ends_with(&format!(".{domain}"))
}

/// A registered passkey as the store keeps it.
#[derive(Clone, PartialEq)]
pub struct StoredPasskey {
    /// Its id in the API (`pky_…`).
    pub id: String,
    /// Whose it is.
    pub user_id: UserId,
    /// The credential id the authenticator names it by (unique across every account).
    pub credential_id: Vec<u8>,
    /// What the user called it.
    pub name: String,
    /// The credential (public key, algorithm, counter, flags) as `webauthn-rs` serializes it.
    pub credential: String,
    /// The authenticator's signature counter at its last use (0 for authenticators without one).
    pub sign_count: u32,
    /// When it was registered.
    pub created_at: Timestamp,
    /// When it was last used to log in or step up.
    pub last_used_at: Option<Timestamp>,
}

impl fmt::Debug for StoredPasskey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredPasskey")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("name", &self.name)
            .field("sign_count", &self.sign_count)
            .field("created_at", &self.created_at)
            .field("last_used_at", &self.last_used_at)
            .finish_non_exhaustive()
    }
}

impl StoredPasskey {
    fn passkey(&self) -> Result<Passkey, Error> {
        serde_json::from_str(&self.credential).map_err(|e| {
            Error::Store(StoreError::Other(format!(
                "passkey {} does not decode: {e}",
                self.id
            )))
        })
    }
}

/// What a ceremony is for: part of what its sealed state is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CeremonyPurpose {
    /// Registering a passkey on an account.
    Register,
    /// Completing a password login that waits for a second factor.
    SecondFactor,
    /// Stepping up a login.
    StepUp,
    /// Logging in with a passkey alone.
    Passwordless,
}

impl CeremonyPurpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::SecondFactor => "second-factor",
            Self::StepUp => "step-up",
            Self::Passwordless => "passwordless",
        }
    }
}

/// Options for the browser (`navigator.credentials.create` / `.get`) and the sealed ceremony
/// to send back with the authenticator's answer.
pub struct Ceremony<O> {
    /// The options, as WebAuthn's JSON form (`{"publicKey": …}`).
    pub options: O,
    /// The sealed state; opaque to the client.
    pub ceremony: String,
}

#[derive(Serialize, Deserialize)]
struct Sealed<S> {
    /// Random, names the ceremony for its single use.
    id: String,
    /// When it lapses, unix milliseconds.
    exp: i64,
    state: S,
}

/// The passkey service: the relying party, and where credentials and used ceremonies go.
#[derive(Clone)]
pub struct Passkeys {
    webauthn: Option<Arc<Webauthn>>,
    store: Arc<dyn SecondFactorStore>,
    used: Arc<dyn ProofReplayStore>,
    key: MasterKey,
    clock: Arc<dyn Clock>,
}

impl Passkeys {
    pub(crate) fn new(
        config: Option<&PasskeyConfig>,
        store: Arc<dyn SecondFactorStore>,
        used: Arc<dyn ProofReplayStore>,
        key: MasterKey,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        let webauthn = config.map(PasskeyConfig::build).transpose()?.map(Arc::new);
        Ok(Self {
            webauthn,
            store,
            used,
            key,
            clock,
        })
    }

    /// Whether this server offers passkeys (it has a relying party).
    pub fn enabled(&self) -> bool {
        self.webauthn.is_some()
    }

    fn rp(&self) -> Result<&Webauthn, Error> {
        self.webauthn.as_deref().ok_or(Error::PasskeysUnavailable)
    }

    /// The user's passkeys, oldest first.
    pub async fn list(&self, user: &UserId) -> Result<Vec<StoredPasskey>, Error> {
        Ok(self.store.passkeys_of(user).await?)
    }

    /// How many passkeys the user has.
    pub async fn count(&self, user: &UserId) -> Result<usize, Error> {
        Ok(self.store.passkeys_of(user).await?.len())
    }

    /// Options to register a new passkey on `user`'s account (its passkeys are excluded, so an
    /// authenticator does not register twice). Asks for a discoverable credential where the
    /// authenticator can make one, so the passkey also works without the username.
    pub async fn registration_options(
        &self,
        user: &User,
    ) -> Result<Ceremony<CreationChallengeResponse>, Error> {
        let rp = self.rp()?;
        let existing = self.store.passkeys_of(&user.id).await?;
        if existing.len() >= MAX_PASSKEYS {
            return Err(Error::Conflict(format!(
                "an account holds at most {MAX_PASSKEYS} passkeys; remove one first"
            )));
        }
        let exclude = existing
            .iter()
            .map(|p| p.credential_id.clone())
            .collect::<Vec<_>>();
        let (mut options, state) = rp
            .start_passkey_registration(
                user_handle(&user.id)?,
                user.username.as_str(),
                user.username.as_str(),
                Some(exclude),
            )
            .map_err(|e| Error::Internal(format!("starting a passkey registration: {e}")))?;
        // A passkey that the authenticator keeps (discoverable) also logs in without a
        // username; "preferred" lets security keys with little room decline.
        if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
            selection.resident_key = Some(webauthn_rs_proto::ResidentKeyRequirement::Preferred);
        }
        let ceremony = self.seal(CeremonyPurpose::Register, user.id.as_str(), &state)?;
        Ok(Ceremony { options, ceremony })
    }

    /// Finishes a registration: checks the authenticator's answer against the ceremony, and
    /// stores the passkey under `name`.
    pub async fn register(
        &self,
        user: &User,
        ceremony: &str,
        credential: &RegisterPublicKeyCredential,
        name: Option<&str>,
    ) -> Result<StoredPasskey, Error> {
        let rp = self.rp()?;
        let name = passkey_name(name)?;
        if credential.type_ != "public-key" {
            return Err(Error::invalid(
                "credential",
                "the credential's type must be \"public-key\"",
            ));
        }
        let state: PasskeyRegistration = self
            .open(CeremonyPurpose::Register, user.id.as_str(), ceremony)
            .await?;
        let passkey = rp
            .finish_passkey_registration(credential, &state)
            .map_err(|e| {
                Error::invalid(
                    "credential",
                    format!("the authenticator's answer was refused: {e}"),
                )
            })?;
        if !(1..=MAX_CREDENTIAL_ID_LEN).contains(&passkey.cred_id().len()) {
            return Err(Error::invalid(
                "credential",
                format!(
                    "the authenticator's credential id must be 1 to {MAX_CREDENTIAL_ID_LEN} bytes long"
                ),
            ));
        }
        let stored = StoredPasskey {
            id: crate::secret::random_public_id("pky_")?,
            user_id: user.id.clone(),
            credential_id: passkey.cred_id().to_vec(),
            name,
            credential: encode(&passkey)?,
            sign_count: 0,
            created_at: self.clock.now(),
            last_used_at: None,
        };
        if !self.store.add_passkey(&stored, MAX_PASSKEYS).await? {
            return Err(Error::Conflict(
                "this passkey is registered already, or the account holds as many as it may".into(),
            ));
        }
        Ok(stored)
    }

    /// Options to assert one of `user`'s passkeys, for `purpose` (a second factor at login,
    /// bound to the login's challenge by `binding`; or a step-up). [`Error::Conflict`] when the
    /// user has none.
    pub async fn assertion_options(
        &self,
        user: &UserId,
        purpose: CeremonyPurpose,
        binding: &str,
    ) -> Result<Ceremony<RequestChallengeResponse>, Error> {
        let rp = self.rp()?;
        let passkeys = self
            .store
            .passkeys_of(user)
            .await?
            .iter()
            .map(StoredPasskey::passkey)
            .collect::<Result<Vec<_>, _>>()?;
        if passkeys.is_empty() {
            return Err(Error::Conflict("this account has no passkey".into()));
        }
        let (options, state) = rp
            .start_passkey_authentication(&passkeys)
            .map_err(|e| Error::Internal(format!("starting a passkey assertion: {e}")))?;
        let ceremony = self.seal(purpose, &bound(user, binding), &state)?;
        Ok(Ceremony { options, ceremony })
    }

    /// Checks an assertion of one of `user`'s passkeys against a ceremony from
    /// [`assertion_options`](Self::assertion_options) with the same `purpose` and `binding`,
    /// and records the use. `Ok(false)` for an assertion that does not verify (a wrong key, a
    /// signature counter that went back); the ceremony is used up either way.
    pub async fn verify(
        &self,
        user: &UserId,
        purpose: CeremonyPurpose,
        binding: &str,
        ceremony: &str,
        credential: &PublicKeyCredential,
    ) -> Result<bool, Error> {
        let rp = self.rp()?;
        let Some(state) = self
            .open_for_answer::<PasskeyAuthentication>(
                purpose,
                &bound(user, binding),
                ceremony,
                credential,
            )
            .await?
        else {
            return Ok(false);
        };
        let Ok(result) = rp.finish_passkey_authentication(credential, &state) else {
            return Ok(false);
        };
        let Some(stored) = self.store.passkey_by_credential(result.cred_id()).await? else {
            return Ok(false);
        };
        if stored.user_id != *user {
            return Ok(false);
        }
        self.record_use(stored, &result).await
    }

    /// Options for a passwordless login: no account named, the authenticator offers the
    /// passkeys it keeps for this site.
    pub fn passwordless_options(&self) -> Result<Ceremony<RequestChallengeResponse>, Error> {
        let rp = self.rp()?;
        let (mut options, state) = rp
            .start_discoverable_authentication()
            .map_err(|e| Error::Internal(format!("starting a passkey login: {e}")))?;
        // A button that asks for a passkey, not the autofill of a username field: the page
        // passes `mediation: "conditional"` itself when it wants that.
        options.mediation = None;
        let ceremony = self.seal(CeremonyPurpose::Passwordless, "", &state)?;
        Ok(Ceremony { options, ceremony })
    }

    /// Checks a passwordless assertion: the account is the one the passkey was registered to
    /// (its user handle must agree). `Ok(None)` when it does not verify.
    pub async fn verify_passwordless(
        &self,
        ceremony: &str,
        credential: &PublicKeyCredential,
    ) -> Result<Option<UserId>, Error> {
        let rp = self.rp()?;
        let Some(state) = self
            .open_for_answer::<DiscoverableAuthentication>(
                CeremonyPurpose::Passwordless,
                "",
                ceremony,
                credential,
            )
            .await?
        else {
            return Ok(None);
        };
        let Ok((handle, credential_id)) = rp.identify_discoverable_authentication(credential)
        else {
            return Ok(None);
        };
        let Some(stored) = self.store.passkey_by_credential(credential_id).await? else {
            return Ok(None);
        };
        if user_handle(&stored.user_id).ok() != Some(handle) {
            return Ok(None);
        }
        let passkey = stored.passkey()?;
        let key = DiscoverableKey::from(&passkey);
        let Ok(result) = rp.finish_discoverable_authentication_v2(credential, state, &key) else {
            return Ok(None);
        };
        let user = stored.user_id.clone();
        Ok(self.record_use(stored, &result).await?.then_some(user))
    }

    /// Records a verified assertion: the counter moves forward (a concurrent use with a later
    /// counter wins; one whose counter is not ahead of the stored one is refused).
    async fn record_use(
        &self,
        stored: StoredPasskey,
        result: &AuthenticationResult,
    ) -> Result<bool, Error> {
        let mut passkey = stored.passkey()?;
        passkey.update_credential(result);
        Ok(self
            .store
            .passkey_used(
                &stored.credential_id,
                &encode(&passkey)?,
                result.counter(),
                self.clock.now(),
            )
            .await?)
    }

    /// Renames a passkey of `user`; `false` when there is no such passkey.
    pub async fn rename(&self, user: &UserId, id: &str, name: &str) -> Result<bool, Error> {
        if name.trim().is_empty() {
            return Err(Error::invalid("name", "a passkey's name cannot be empty"));
        }
        let name = passkey_name(Some(name))?;
        Ok(self.store.rename_passkey(user, id, &name).await?)
    }

    /// Removes one passkey of `user`; `false` when there is no such passkey.
    pub async fn remove(&self, user: &UserId, id: &str) -> Result<bool, Error> {
        Ok(self.store.delete_passkey(user, id).await?)
    }

    /// Removes every passkey of `user` (an operator's rescue); returns how many.
    pub async fn remove_all(&self, user: &UserId) -> Result<usize, Error> {
        Ok(self.store.delete_passkeys(user).await?)
    }

    fn seal<S: Serialize>(
        &self,
        purpose: CeremonyPurpose,
        owner: &str,
        state: &S,
    ) -> Result<String, Error> {
        let id: [u8; 16] = crate::secret::random_bytes()?;
        let sealed = Sealed {
            id: URL_SAFE_NO_PAD.encode(id),
            exp: self
                .clock
                .now()
                .saturating_add(CEREMONY_LIFETIME)
                .unix_millis(),
            state,
        };
        let plain = serde_json::to_vec(&sealed)
            .map_err(|e| Error::Internal(format!("encoding a passkey ceremony: {e}")))?;
        let sealed = self.key.seal(&label(purpose, owner), &plain)?;
        Ok(URL_SAFE_NO_PAD.encode(sealed))
    }

    /// The state of the ceremony an assertion answers, used up; `None` when the answer is not
    /// a passkey's or the ceremony is refused (see [`open`](Self::open)): the answer does not
    /// verify.
    async fn open_for_answer<S: DeserializeOwned>(
        &self,
        purpose: CeremonyPurpose,
        owner: &str,
        ceremony: &str,
        credential: &PublicKeyCredential,
    ) -> Result<Option<S>, Error> {
        if credential.type_ != "public-key" {
            return Ok(None);
        }
        match self.open(purpose, owner, ceremony).await {
            Ok(state) => Ok(Some(state)),
            Err(Error::Invalid { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens a ceremony and uses it up. [`Error::Invalid`] (field `ceremony`) when it is not
    /// one this server sealed for `purpose` and `owner`, has lapsed, or was used.
    async fn open<S: DeserializeOwned>(
        &self,
        purpose: CeremonyPurpose,
        owner: &str,
        ceremony: &str,
    ) -> Result<S, Error> {
        let refused = || {
            Error::invalid(
                "ceremony",
                "the passkey ceremony is unknown, expired or used; ask for new options",
            )
        };
        let sealed = URL_SAFE_NO_PAD
            .decode(ceremony.trim())
            .map_err(|_| refused())?;
        let plain = self
            .key
            .open(&label(purpose, owner), &sealed)
            .map_err(|_| refused())?;
        let opened: Sealed<S> = serde_json::from_slice(&plain).map_err(|_| refused())?;
        let now = self.clock.now();
        let expires = Timestamp::from_unix_millis(opened.exp);
        if expires <= now {
            return Err(refused());
        }
        let name: [u8; 32] = Sha256::new()
            .chain_update(b"tessera webauthn ceremony\0")
            .chain_update(opened.id.as_bytes())
            .finalize()
            .into();
        if !self.used.first_use_durable(&name, expires, now).await? {
            return Err(refused());
        }
        Ok(opened.state)
    }
}

/// The associated data a ceremony is sealed with: what it is for and whose it is.
fn label(purpose: CeremonyPurpose, owner: &str) -> String {
    format!("webauthn {} {owner}", purpose.as_str())
}

fn bound(user: &UserId, binding: &str) -> String {
    format!("{user} {binding}")
}

/// The WebAuthn user handle of an account: the 128 random bits of its id (no personal data).
pub fn user_handle(user: &UserId) -> Result<Uuid, Error> {
    let bytes = user
        .as_str()
        .strip_prefix("usr_")
        .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
        .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| Error::Internal(format!("user id {user} has no 128-bit body")))?;
    Ok(Uuid::from_bytes(bytes))
}

fn passkey_name(name: Option<&str>) -> Result<String, Error> {
    let name = name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or("Passkey");
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "name",
            format!(
                "a passkey's name has at most {MAX_NAME_CHARS} characters and no control characters"
            ),
        ));
    }
    Ok(name.to_owned())
}

fn encode(passkey: &Passkey) -> Result<String, Error> {
    serde_json::to_string(passkey).map_err(|e| Error::Internal(format!("encoding a passkey: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relying_party_comes_from_the_public_url() {
        let config = PasskeyConfig::for_public_url(
            "https://auth.example.com/base",
            None,
            "Example",
            &[
                "https://app.example.com".into(),
                "https://evil.example.org".into(),
            ],
        )
        .unwrap();
        assert_eq!(config.rp_id, "auth.example.com");
        // app.example.com is not on auth.example.com: left out.
        assert_eq!(config.origins, ["https://auth.example.com"]);
        assert!(config.build().is_ok());
        let parent = PasskeyConfig {
            rp_id: "example.com".into(),
            ..config.clone()
        };
        assert!(parent.build().is_ok());
        let wrong = PasskeyConfig {
            rp_id: "example.org".into(),
            ..config
        };
        assert!(wrong.build().is_err());
        assert!(PasskeyConfig::for_public_url("http://127.0.0.1:8080", None, "x", &[]).is_none());
        let local = PasskeyConfig::for_public_url("http://localhost:8080", None, "x", &[]).unwrap();
        // A parent domain lets the other subdomains' trusted origins in.
        let shared = PasskeyConfig::for_public_url(
            "https://auth.example.com",
            Some("Example.com"),
            "x",
            &[
                "https://app.example.com".into(),
                "https://example.org".into(),
            ],
        )
        .unwrap();
        assert_eq!(shared.rp_id, "example.com");
        assert_eq!(
            shared.origins,
            ["https://auth.example.com", "https://app.example.com"]
        );
        assert!(shared.build().is_ok());
        assert_eq!(local.rp_id, "localhost");
        assert!(local.build().is_ok());
    }

    #[test]
    fn the_user_handle_is_the_ids_random_bits() {
        let id = UserId::generate().unwrap();
        let handle = user_handle(&id).unwrap();
        assert_eq!(
            format!("usr_{}", URL_SAFE_NO_PAD.encode(handle.as_bytes())),
            id.as_str()
        );
    }

    #[test]
    fn names_are_bounded() {
        assert_eq!(passkey_name(None).unwrap(), "Passkey");
        assert_eq!(passkey_name(Some("  Laptop ")).unwrap(), "Laptop");
        assert!(passkey_name(Some(&"x".repeat(65))).is_err());
        assert!(passkey_name(Some("a\nb")).is_err());
    }
}
