//! A store in process memory: for tests and single-process experiments. Nothing survives a restart.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use serde_json::Value;
mod code_table;
mod mail_queue;
mod session_table;

use code_table::CodeTable;
use mail_queue::MailQueue;
use session_table::{Refused, SessionTable};
use tessera_core::store::{
    ChallengeStore, EventStore, HealthCheck, KeyStore, RefreshStore, RevocationStore,
    SecondFactorStore, SessionStore, UserDeletion, UserStore,
};
use tessera_core::{
    AccountCode, AllowedToken, AuthContext, CodePurpose, CodeVerified, EmailAddress, FamilyId,
    KeyStatus, LoginChallenge, MailId, MailStore, NewEvent, QueuedMail, RefreshFamily,
    RefreshTokenRecord, RevocationEntry, Revoked, Rotation, SecurityEvent, Session, SessionHandle,
    StoreError, StoredKey, Timestamp, TokenHash, TotpFactor, User, UserId, Username,
};

/// Everything in memory, with the same indexes a database would keep: users by username (in
/// order, for paging) and by address key; sessions and refresh families by user (oldest first)
/// and by expiry, so a sweep costs what expired; refresh tokens by secret hash and by family;
/// live access tokens by family, by user and by expiry; mailed codes by hash, by account and by
/// expiry; queued mail by due time and by account.
///
/// Cloning is cheap and every clone sees the same data. The lock is held only for map updates,
/// never across an `.await`.
///
/// ```
/// use tessera_core::{Timestamp, User, UserId, UserStore, Username};
/// use tessera_store::MemoryStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryStore::new();
/// let now = Timestamp::from_unix_millis(1_700_000_000_000);
/// let alice = User {
///     id: UserId::generate()?,
///     username: Username::parse("Alice")?,
///     password_hash: "$argon2id$v=19$m=19456,t=2,p=1$…".into(),
///     roles: vec!["admin".into()],
///     disabled: false,
///     created_at: now,
///     updated_at: now,
///     not_before: now,
///     email: None,
/// };
/// store.create_user(&alice).await?;
///
/// // Usernames are normalized, so "ALICE" finds the same account.
/// let found = store.user_by_username(&Username::parse("ALICE")?).await?;
/// assert_eq!(found, Some(alice));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    /// Every call, read or write: lets tests prove a path asks no store at all.
    calls: Arc<std::sync::atomic::AtomicU64>,
    /// DPoP proofs seen lately.
    proofs: Arc<tessera_core::token::dpop::SeenProofs>,
}

#[derive(Default)]
struct Inner {
    users: HashMap<UserId, User>,
    /// Keyed by the normalized name, ordered as SQLite orders it (by bytes), so `list_users` can
    /// page from a cursor.
    user_by_name: BTreeMap<String, UserId>,
    /// Keyed by [`EmailAddress::key`]: unique, as `users_by_email_key` is in SQL.
    user_by_email: HashMap<String, UserId>,
    codes: CodeTable,
    mail: MailQueue,
    sessions: SessionTable,

    keys: HashMap<String, StoredKey>,

    families: HashMap<FamilyId, RefreshFamily>,
    /// Per user, `(created_at, id)`: iterates oldest first.
    families_by_user: HashMap<UserId, BTreeSet<(Timestamp, FamilyId)>>,
    /// `(deadline, id)` of every family, the deadline being whichever expiry comes first.
    families_by_expiry: BTreeSet<(Timestamp, FamilyId)>,
    refresh_tokens: HashMap<TokenHash, RefreshTokenRecord>,
    tokens_by_family: HashMap<FamilyId, HashSet<TokenHash>>,

    /// Each denylist entry and when it may be forgotten.
    revocations: HashMap<Revoked, Timestamp>,
    allowed: HashMap<String, AllowedToken>,
    allowed_by_family: HashMap<FamilyId, HashSet<String>>,
    allowed_by_user: HashMap<UserId, HashSet<String>>,
    allowed_by_expiry: BTreeSet<(Timestamp, String)>,

    /// Oldest first; ids strictly increase, so the order is also by id.
    events: Vec<SecurityEvent>,

    totp: HashMap<UserId, TotpFactor>,
    /// Registered passkeys, in the order they were added (listed oldest first).
    passkeys: Vec<tessera_core::StoredPasskey>,
    /// Each user's unused recovery codes.
    recovery_codes: HashMap<UserId, HashSet<TokenHash>>,
    challenges: HashMap<TokenHash, LoginChallenge>,
    /// `(expires_at, hash)` of every challenge, for the sweep.
    challenges_by_expiry: BTreeSet<(Timestamp, [u8; 32])>,
}

impl MemoryStore {
    /// An empty store: no users, sessions, keys or events.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many store calls were made so far (every method counts once or more).
    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // A panic while holding the lock may have left the indexes disagreeing with each other:
        // fail closed rather than answer from them.
        self.inner
            .lock()
            .map_err(|_| StoreError::Other("memory store lock poisoned".into()))
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl Inner {
    fn remove_challenge(&mut self, hash: &TokenHash) -> Option<LoginChallenge> {
        let removed = self.challenges.remove(hash)?;
        self.challenges_by_expiry
            .remove(&(removed.expires_at, *removed.hash.as_bytes()));
        Some(removed)
    }

    fn user_exists(&self, id: &UserId) -> Result<(), StoreError> {
        if self.users.contains_key(id) {
            Ok(())
        } else {
            // What the SQL stores' foreign key says: the owner must exist.
            Err(StoreError::Other(format!("no user {id}")))
        }
    }

    /// The code with this hash if it is of `purpose` and unexpired at `now`.
    fn usable_code(
        &self,
        hash: &TokenHash,
        purpose: CodePurpose,
        now: Timestamp,
    ) -> Option<AccountCode> {
        self.codes
            .get(hash)
            .filter(|code| code.purpose == purpose && code.expires_at > now)
            .cloned()
    }

    /// Moves a family's activity and idle expiry, keeping the expiry index in step.
    fn touch_family(&mut self, id: &FamilyId, now: Timestamp, expires_at: Timestamp) {
        let Some(family) = self.families.get_mut(id) else {
            return;
        };
        let old_deadline = deadline(family);
        family.last_used_at = now;
        family.expires_at = expires_at;
        let new_deadline = deadline(family);
        self.families_by_expiry.remove(&(old_deadline, id.clone()));
        self.families_by_expiry.insert((new_deadline, id.clone()));
    }

    fn insert_refresh_token(&mut self, token: &RefreshTokenRecord) {
        self.tokens_by_family
            .entry(token.family_id.clone())
            .or_default()
            .insert(token.hash);
        self.refresh_tokens.insert(token.hash, token.clone());
    }

    /// Removes a family and every token of it.
    fn remove_family(&mut self, id: &FamilyId) -> Option<RefreshFamily> {
        let family = self.families.remove(id)?;
        self.families_by_expiry
            .remove(&(deadline(&family), id.clone()));
        if let Some(of_user) = self.families_by_user.get_mut(&family.user_id) {
            of_user.remove(&(family.created_at, id.clone()));
            if of_user.is_empty() {
                self.families_by_user.remove(&family.user_id);
            }
        }
        for hash in self.tokens_by_family.remove(id).unwrap_or_default() {
            self.refresh_tokens.remove(&hash);
        }
        Some(family)
    }

    fn remove_allowed(&mut self, jti: &str) -> Option<AllowedToken> {
        let token = self.allowed.remove(jti)?;
        self.allowed_by_expiry
            .remove(&(token.expires_at, token.jti.clone()));
        remove_from_index(&mut self.allowed_by_family, &token.family_id, jti);
        remove_from_index(&mut self.allowed_by_user, &token.user_id, jti);
        Some(token)
    }

    fn remove_allowed_all(&mut self, jtis: Option<HashSet<String>>) -> usize {
        jtis.unwrap_or_default()
            .iter()
            .filter(|jti| self.remove_allowed(jti).is_some())
            .count()
    }
}

/// When a family ends: at whichever of its expiries comes first.
fn deadline(family: &RefreshFamily) -> Timestamp {
    family.expires_at.min(family.absolute_expires_at)
}

fn remove_from_index<K: Eq + std::hash::Hash>(
    index: &mut HashMap<K, HashSet<String>>,
    key: &K,
    jti: &str,
) {
    if let Some(set) = index.get_mut(key) {
        set.remove(jti);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

#[async_trait]
impl UserStore for MemoryStore {
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        if inner.user_by_name.contains_key(user.username.as_str()) {
            return Err(StoreError::Conflict(format!(
                "username {} is taken",
                user.username
            )));
        }
        if inner.users.contains_key(&user.id) {
            return Err(StoreError::Conflict(format!("user id {} exists", user.id)));
        }
        let key = user.email.as_ref().map(|email| email.address.key());
        if key.is_some_and(|key| inner.user_by_email.contains_key(key)) {
            return Err(address_in_use());
        }
        inner
            .user_by_name
            .insert(user.username.as_str().to_owned(), user.id.clone());
        if let Some(key) = key {
            inner.user_by_email.insert(key.to_owned(), user.id.clone());
        }
        inner.users.insert(user.id.clone(), user.clone());
        Ok(())
    }

    async fn user_by_id(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        Ok(self.lock()?.users.get(id).cloned())
    }

    async fn user_by_username(&self, username: &Username) -> Result<Option<User>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .user_by_name
            .get(username.as_str())
            .and_then(|id| inner.users.get(id))
            .cloned())
    }

    async fn set_password_hash(
        &self,
        id: &UserId,
        password_hash: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        let Some(user) = inner.users.get_mut(id) else {
            return Ok(false);
        };
        user.password_hash = password_hash.to_owned();
        user.updated_at = at;
        user.not_before = User::moved_not_before(user.not_before, at);
        Ok(true)
    }

    async fn list_users(
        &self,
        after: Option<&Username>,
        limit: usize,
    ) -> Result<Vec<User>, StoreError> {
        let inner = self.lock()?;
        let from = after.map_or(Bound::Unbounded, |after| Bound::Excluded(after.as_str()));
        Ok(inner
            .user_by_name
            .range::<str, _>((from, Bound::Unbounded))
            .take(limit)
            .filter_map(|(_, id)| inner.users.get(id))
            .cloned()
            .collect())
    }

    async fn disabled_user_ids(&self) -> Result<Vec<UserId>, StoreError> {
        let inner = self.lock()?;
        let mut ids: Vec<UserId> = inner
            .users
            .values()
            .filter(|u| u.disabled)
            .map(|u| u.id.clone())
            .collect();
        ids.sort();
        Ok(ids)
    }

    async fn set_user_disabled(
        &self,
        id: &UserId,
        disabled: bool,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        let Some(user) = inner.users.get_mut(id) else {
            return Ok(false);
        };
        user.disabled = disabled;
        user.updated_at = at;
        user.not_before = User::moved_not_before(user.not_before, at);
        Ok(true)
    }

    async fn set_user_roles(
        &self,
        id: &UserId,
        roles: &[String],
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        let Some(user) = inner.users.get_mut(id) else {
            return Ok(false);
        };
        user.roles = roles.to_vec();
        user.updated_at = at;
        user.not_before = User::moved_not_before(user.not_before, at);
        Ok(true)
    }

    async fn rehash_password(
        &self,
        id: &UserId,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        match inner.users.get_mut(id) {
            Some(user) if user.password_hash == old_hash => {
                user.password_hash = new_hash.to_owned();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn set_user_not_before(&self, id: &UserId, at: Timestamp) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        let Some(user) = inner.users.get_mut(id) else {
            return Ok(false);
        };
        user.not_before = User::moved_not_before(user.not_before, at);
        Ok(true)
    }

    async fn delete_user(&self, deletion: &UserDeletion) -> Result<bool, StoreError> {
        // One lock: every change below is seen together or not at all.
        let mut inner = self.lock()?;
        let id = &deletion.user;
        let removed = inner.users.remove(id);
        let existed = removed.is_some();
        if let Some(user) = removed {
            inner.user_by_name.remove(user.username.as_str());
            if let Some(email) = &user.email {
                inner.user_by_email.remove(email.address.key());
            }
        }
        inner.sessions.remove_of_user(id, None);
        inner.totp.remove(id);
        inner.passkeys.retain(|p| p.user_id != *id);
        inner.recovery_codes.remove(id);
        let challenges: Vec<TokenHash> = inner
            .challenges
            .values()
            .filter(|c| c.user_id == *id)
            .map(|c| c.hash)
            .collect();
        for hash in &challenges {
            inner.remove_challenge(hash);
        }
        inner.codes.remove_of_user(id, CodePurpose::Recovery);
        inner.codes.remove_of_user(id, CodePurpose::VerifyEmail);
        inner.mail.remove_of_user(id);
        let families: Vec<FamilyId> = inner
            .families_by_user
            .get(id)
            .into_iter()
            .flatten()
            .map(|(_, family)| family.clone())
            .collect();
        for family in &families {
            inner.remove_family(family);
        }
        let jtis = inner.allowed_by_user.remove(id);
        inner.remove_allowed_all(jtis);
        for event in &mut inner.events {
            if let Some(scrubbed) = deletion.scrub(event.user_id.as_ref(), &event.detail) {
                event.detail = scrubbed;
            }
        }
        if existed {
            let event_id = inner.events.last().map_or(1, |last| last.id + 1);
            let event = &deletion.event;
            inner.events.push(SecurityEvent {
                id: event_id,
                at: event.at,
                kind: event.kind,
                user_id: event.user_id.clone(),
                detail: event.detail.clone(),
            });
        }
        Ok(existed)
    }

    async fn user_by_email(&self, key: &str) -> Result<Option<User>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .user_by_email
            .get(key)
            .and_then(|id| inner.users.get(id))
            .cloned())
    }

    async fn set_email(
        &self,
        id: &UserId,
        email: Option<&EmailAddress>,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        let Some(user) = inner.users.get(id) else {
            return Ok(false);
        };
        let old_key = user.email.as_ref().map(|e| e.address.key().to_owned());
        if let Some(email) = email
            && inner
                .user_by_email
                .get(email.key())
                .is_some_and(|owner| owner != id)
        {
            return Err(address_in_use());
        }
        if let Some(old_key) = old_key {
            inner.user_by_email.remove(&old_key);
        }
        if let Some(email) = email {
            inner
                .user_by_email
                .insert(email.key().to_owned(), id.clone());
        }
        if let Some(user) = inner.users.get_mut(id) {
            user.email = email.map(|address| tessera_core::UserEmail {
                address: address.clone(),
                verified: false,
            });
        }
        // Codes mailed to the old address, of both purposes: whoever reads that mailbox now
        // must not be able to verify or recover the account.
        inner.codes.remove_of_user(id, CodePurpose::VerifyEmail);
        inner.codes.remove_of_user(id, CodePurpose::Recovery);
        Ok(true)
    }

    async fn create_code(&self, code: &AccountCode) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        if !inner.users.contains_key(&code.user_id) {
            return Ok(false);
        }
        if inner.codes.contains(&code.hash) {
            return Err(StoreError::Conflict("account code hash exists".into()));
        }
        inner.codes.remove_of_user(&code.user_id, code.purpose);
        inner.codes.insert(code.clone());
        Ok(true)
    }

    async fn use_recovery_code(
        &self,
        hash: &TokenHash,
        password_hash: &str,
        now: Timestamp,
    ) -> Result<Option<UserId>, StoreError> {
        let mut inner = self.lock()?;
        let Some(code) = inner.usable_code(hash, CodePurpose::Recovery, now) else {
            return Ok(None);
        };
        let Some(user) = inner.users.get_mut(&code.user_id) else {
            return Ok(None);
        };
        user.password_hash = password_hash.to_owned();
        user.updated_at = now;
        user.not_before = User::moved_not_before(user.not_before, now);
        if let Some(email) = &mut user.email
            && email.address.key() == code.email_key
        {
            email.verified = true;
        }
        inner
            .codes
            .remove_of_user(&code.user_id, CodePurpose::Recovery);
        Ok(Some(code.user_id))
    }

    async fn use_verification_code(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Result<Option<CodeVerified>, StoreError> {
        let mut inner = self.lock()?;
        let Some(code) = inner.usable_code(hash, CodePurpose::VerifyEmail, now) else {
            return Ok(None);
        };
        inner.codes.remove(hash);
        let email = inner
            .users
            .get_mut(&code.user_id)
            .and_then(|user| user.email.as_mut())
            .filter(|email| email.address.key() == code.email_key);
        let still_current = email.is_some();
        if let Some(email) = email {
            email.verified = true;
        }
        Ok(Some(CodeVerified {
            user: code.user_id,
            still_current,
        }))
    }

    async fn delete_expired_codes(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        Ok(self.lock()?.codes.remove_expired(now, limit))
    }
}

/// What a second account with an address's key hears: that the address is taken, not which.
fn address_in_use() -> StoreError {
    StoreError::Conflict("the email address is in use by another account".into())
}

#[async_trait]
impl MailStore for MemoryStore {
    async fn enqueue_mail(&self, mail: &QueuedMail) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        if let Some(user) = &mail.user_id {
            inner.user_exists(user)?;
        }
        if inner.mail.contains(&mail.id) {
            return Err(StoreError::Conflict(format!("mail {} exists", mail.id)));
        }
        inner.mail.insert(mail.clone());
        Ok(())
    }

    async fn claim_mail(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> Result<Vec<QueuedMail>, StoreError> {
        Ok(self.lock()?.mail.claim(now, lease_until, limit))
    }

    async fn delete_mail(&self, id: &MailId) -> Result<bool, StoreError> {
        Ok(self.lock()?.mail.remove(id).is_some())
    }

    async fn retry_mail(
        &self,
        id: &MailId,
        next_attempt_at: Timestamp,
        last_error: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.lock()?.mail.retry(id, next_attempt_at, last_error))
    }

    async fn queued_mail(&self) -> Result<usize, StoreError> {
        Ok(self.lock()?.mail.len())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create_session(&self, session: &Session) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        inner.user_exists(&session.user_id)?;
        inner
            .sessions
            .insert(session.clone())
            .map_err(|refused| match refused {
                Refused::HandleTaken => {
                    StoreError::Conflict(format!("session handle {} exists", session.handle))
                }
                Refused::SecretTaken => StoreError::Conflict("session secret hash exists".into()),
                Refused::Full => {
                    StoreError::Other("the memory store holds all the sessions it can".into())
                }
            })
    }

    async fn session_by_secret(
        &self,
        secret_hash: &TokenHash,
    ) -> Result<Option<Session>, StoreError> {
        Ok(self.lock()?.sessions.by_secret(secret_hash).cloned())
    }

    async fn session_owner(&self, handle: &SessionHandle) -> Result<Option<UserId>, StoreError> {
        Ok(self
            .lock()?
            .sessions
            .by_handle(handle)
            .map(|s| s.user_id.clone()))
    }

    async fn set_session_auth(
        &self,
        handle: &SessionHandle,
        auth: &AuthContext,
    ) -> Result<bool, StoreError> {
        Ok(self.lock()?.sessions.set_auth(handle, auth))
    }

    async fn touch_session(
        &self,
        handle: &SessionHandle,
        last_seen_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        Ok(self
            .lock()?
            .sessions
            .touch(handle, last_seen_at, expires_at))
    }

    async fn replace_session_data(
        &self,
        handle: &SessionHandle,
        expected_version: i64,
        data: &Value,
    ) -> Result<bool, StoreError> {
        Ok(self
            .lock()?
            .sessions
            .replace_data(handle, expected_version, data))
    }

    async fn delete_session(&self, handle: &SessionHandle) -> Result<bool, StoreError> {
        Ok(self.lock()?.sessions.remove(handle).is_some())
    }

    async fn sessions_of_user(&self, user: &UserId) -> Result<Vec<Session>, StoreError> {
        Ok(self.lock()?.sessions.of_user(user))
    }

    async fn delete_sessions_of_user(
        &self,
        user: &UserId,
        keep: Option<&SessionHandle>,
    ) -> Result<usize, StoreError> {
        Ok(self.lock()?.sessions.remove_of_user(user, keep))
    }

    async fn delete_expired_sessions(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        Ok(self.lock()?.sessions.remove_expired(now, limit))
    }
}

#[async_trait]
impl tessera_core::ProofReplayStore for MemoryStore {
    async fn first_use(
        &self,
        key: &[u8; 32],
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.proofs.first_use(key, expires_at, now).await
    }

    async fn purge_expired_proofs(&self, now: Timestamp) -> Result<usize, StoreError> {
        self.proofs.purge_expired_proofs(now).await
    }
}

#[async_trait]
impl HealthCheck for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.lock().map(drop)
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn insert_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        if inner.keys.contains_key(&key.kid) {
            return Err(StoreError::Conflict(format!("key {} exists", key.kid)));
        }
        inner.keys.insert(key.kid.clone(), key.clone());
        Ok(())
    }

    async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let inner = self.lock()?;
        let mut keys: Vec<StoredKey> = inner.keys.values().cloned().collect();
        // A handful of keys: sorting on read is cheaper than keeping an index.
        keys.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
        Ok(keys)
    }

    async fn mark_key_rotated(&self, kid: &str, at: Timestamp) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        match inner.keys.get_mut(kid) {
            Some(key) if key.status == KeyStatus::Active => {
                key.status = KeyStatus::Rotated;
                key.rotated_at = Some(at);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn mark_key_retired(&self, kid: &str, at: Timestamp) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        match inner.keys.get_mut(kid) {
            Some(key) if key.status != KeyStatus::Retired => {
                key.status = KeyStatus::Retired;
                key.retired_at = Some(at);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl RefreshStore for MemoryStore {
    async fn set_family_auth(&self, id: &FamilyId, auth: &AuthContext) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        match inner.families.get_mut(id) {
            Some(family) if family.revoked_at.is_none() => {
                family.auth = *auth;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn create_family(
        &self,
        family: &RefreshFamily,
        first: &RefreshTokenRecord,
    ) -> Result<(), StoreError> {
        if first.family_id != family.id {
            return Err(first_token_elsewhere(family, first));
        }
        let mut inner = self.lock()?;
        inner.user_exists(&family.user_id)?;
        if inner.families.contains_key(&family.id) {
            return Err(StoreError::Conflict(format!(
                "refresh family {} exists",
                family.id
            )));
        }
        if inner.refresh_tokens.contains_key(&first.hash) {
            return Err(StoreError::Conflict("refresh token hash exists".into()));
        }
        inner
            .families_by_user
            .entry(family.user_id.clone())
            .or_default()
            .insert((family.created_at, family.id.clone()));
        inner
            .families_by_expiry
            .insert((deadline(family), family.id.clone()));
        inner.families.insert(family.id.clone(), family.clone());
        inner.insert_refresh_token(first);
        Ok(())
    }

    async fn refresh_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(RefreshTokenRecord, RefreshFamily)>, StoreError> {
        let inner = self.lock()?;
        Ok(inner.refresh_tokens.get(hash).and_then(|token| {
            inner
                .families
                .get(&token.family_id)
                .map(|family| (token.clone(), family.clone()))
        }))
    }

    async fn rotate_refresh_token(
        &self,
        old: &TokenHash,
        new: &RefreshTokenRecord,
        now: Timestamp,
        family_expires_at: Timestamp,
    ) -> Result<Rotation, StoreError> {
        let mut inner = self.lock()?;
        let Some(token) = inner.refresh_tokens.get(old) else {
            return Ok(Rotation::Unknown);
        };
        if let Some(at) = token.rotated_at {
            return Ok(Rotation::AlreadyRotated { at });
        }
        let Some(family) = inner.families.get(&token.family_id) else {
            return Ok(Rotation::Unknown);
        };
        if new.family_id != token.family_id {
            return Err(new_token_elsewhere(&token.family_id, new));
        }
        if family.revoked_at.is_some() {
            return Ok(Rotation::Revoked);
        }
        if family.generation != token.generation {
            return Ok(Rotation::Superseded);
        }
        if token.generation.checked_add(1) != Some(new.generation) {
            return Err(next_generation_expected(token.generation, new));
        }
        if inner.refresh_tokens.contains_key(&new.hash) {
            return Err(StoreError::Conflict("refresh token hash exists".into()));
        }
        // Every check passed: from here on nothing fails, so nothing is half done.
        if let Some(token) = inner.refresh_tokens.get_mut(old) {
            token.rotated_at = Some(now);
        }
        inner.insert_refresh_token(new);
        if let Some(family) = inner.families.get_mut(&new.family_id) {
            family.generation = new.generation;
        }
        inner.touch_family(&new.family_id, now, family_expires_at);
        Ok(Rotation::Rotated)
    }

    async fn add_refresh_token(
        &self,
        new: &RefreshTokenRecord,
        now: Timestamp,
        family_expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        match inner.families.get(&new.family_id) {
            Some(family) if family.revoked_at.is_none() && family.generation == new.generation => {}
            _ => return Ok(false),
        }
        if inner.refresh_tokens.contains_key(&new.hash) {
            return Err(StoreError::Conflict("refresh token hash exists".into()));
        }
        inner.insert_refresh_token(new);
        inner.touch_family(&new.family_id, now, family_expires_at);
        Ok(true)
    }

    async fn revoke_family(
        &self,
        id: &FamilyId,
        at: Timestamp,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        match inner.families.get_mut(id) {
            Some(family) if family.revoked_at.is_none() => {
                family.revoked_at = Some(at);
                family.revoked_reason = Some(reason.to_owned());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn family(&self, id: &FamilyId) -> Result<Option<RefreshFamily>, StoreError> {
        Ok(self.lock()?.families.get(id).cloned())
    }

    async fn families_of_user(&self, user: &UserId) -> Result<Vec<RefreshFamily>, StoreError> {
        let inner = self.lock()?;
        let Some(of_user) = inner.families_by_user.get(user) else {
            return Ok(Vec::new());
        };
        Ok(of_user
            .iter()
            .filter_map(|(_, id)| inner.families.get(id))
            .cloned()
            .collect())
    }

    async fn delete_expired_families(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut inner = self.lock()?;
        let expired: Vec<FamilyId> = inner
            .families_by_expiry
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect();
        for id in &expired {
            inner.remove_family(id);
        }
        Ok(expired.len())
    }
}

fn first_token_elsewhere(family: &RefreshFamily, first: &RefreshTokenRecord) -> StoreError {
    StoreError::Other(format!(
        "the first token of family {} names family {}",
        family.id, first.family_id
    ))
}

fn new_token_elsewhere(family: &FamilyId, new: &RefreshTokenRecord) -> StoreError {
    StoreError::Other(format!(
        "a token of family {family} cannot rotate into family {}",
        new.family_id
    ))
}

fn next_generation_expected(generation: u32, new: &RefreshTokenRecord) -> StoreError {
    StoreError::Other(format!(
        "a token of generation {generation} rotates into generation {}, not {}",
        generation.saturating_add(1),
        new.generation
    ))
}

#[async_trait]
impl RevocationStore for MemoryStore {
    async fn add_revocation(&self, entry: &RevocationEntry) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        // Recorded twice, an entry lasts as long as the later of the two asks.
        inner
            .revocations
            .entry(entry.revoked.clone())
            .and_modify(|expires_at| *expires_at = (*expires_at).max(entry.expires_at))
            .or_insert(entry.expires_at);
        Ok(())
    }

    async fn revocations(&self, now: Timestamp) -> Result<Vec<RevocationEntry>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .revocations
            .iter()
            .filter(|(_, expires_at)| **expires_at > now)
            .map(|(revoked, expires_at)| RevocationEntry {
                revoked: revoked.clone(),
                expires_at: *expires_at,
            })
            .collect())
    }

    async fn allow_token(&self, token: &AllowedToken) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        // Recorded again, a jti takes the new record's place.
        inner.remove_allowed(&token.jti);
        inner
            .allowed_by_family
            .entry(token.family_id.clone())
            .or_default()
            .insert(token.jti.clone());
        inner
            .allowed_by_user
            .entry(token.user_id.clone())
            .or_default()
            .insert(token.jti.clone());
        inner
            .allowed_by_expiry
            .insert((token.expires_at, token.jti.clone()));
        inner.allowed.insert(token.jti.clone(), token.clone());
        Ok(())
    }

    async fn allowed_tokens(&self, now: Timestamp) -> Result<Vec<AllowedToken>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .allowed_by_expiry
            .iter()
            .skip_while(|(expires_at, _)| *expires_at <= now)
            .filter_map(|(_, jti)| inner.allowed.get(jti))
            .cloned()
            .collect())
    }

    async fn disallow_token(&self, jti: &str) -> Result<bool, StoreError> {
        Ok(self.lock()?.remove_allowed(jti).is_some())
    }

    async fn disallow_family(&self, id: &FamilyId) -> Result<usize, StoreError> {
        let mut inner = self.lock()?;
        let jtis = inner.allowed_by_family.remove(id);
        Ok(inner.remove_allowed_all(jtis))
    }

    async fn disallow_user(&self, user: &UserId) -> Result<usize, StoreError> {
        let mut inner = self.lock()?;
        let jtis = inner.allowed_by_user.remove(user);
        Ok(inner.remove_allowed_all(jtis))
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<usize, StoreError> {
        let mut inner = self.lock()?;
        let before = inner.revocations.len();
        inner.revocations.retain(|_, expires_at| *expires_at > now);
        let revocations = before - inner.revocations.len();
        let expired: Vec<String> = inner
            .allowed_by_expiry
            .iter()
            .take_while(|(expires_at, _)| *expires_at <= now)
            .map(|(_, jti)| jti.clone())
            .collect();
        for jti in &expired {
            inner.remove_allowed(jti);
        }
        Ok(revocations + expired.len())
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn record_event(&self, event: &NewEvent) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let id = inner.events.last().map_or(1, |last| last.id + 1);
        inner.events.push(SecurityEvent {
            id,
            at: event.at,
            kind: event.kind,
            user_id: event.user_id.clone(),
            detail: event.detail.clone(),
        });
        Ok(())
    }

    async fn events(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<SecurityEvent>, StoreError> {
        let inner = self.lock()?;
        let end = before.map_or(inner.events.len(), |before| {
            inner.events.partition_point(|event| event.id < before)
        });
        Ok(inner.events[..end]
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl SecondFactorStore for MemoryStore {
    async fn put_pending_totp(&self, factor: &TotpFactor) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        if !inner.users.contains_key(&factor.user_id) {
            return Ok(false);
        }
        if inner
            .totp
            .get(&factor.user_id)
            .is_some_and(|f| f.confirmed_at.is_some())
        {
            return Ok(false);
        }
        let pending = TotpFactor {
            confirmed_at: None,
            last_step: None,
            ..factor.clone()
        };
        inner.totp.insert(factor.user_id.clone(), pending);
        Ok(true)
    }

    async fn totp_factor(&self, user: &UserId) -> Result<Option<TotpFactor>, StoreError> {
        Ok(self.lock()?.totp.get(user).cloned())
    }

    async fn confirm_totp(
        &self,
        user: &UserId,
        sealed_secret: &[u8],
        step: i64,
        recovery_codes: &[TokenHash],
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        match inner.totp.get_mut(user) {
            Some(factor)
                if factor.confirmed_at.is_none() && factor.sealed_secret == sealed_secret =>
            {
                factor.confirmed_at = Some(at);
                factor.last_step = Some(step);
            }
            _ => return Ok(false),
        }
        inner
            .recovery_codes
            .insert(user.clone(), recovery_codes.iter().copied().collect());
        Ok(true)
    }

    async fn use_totp_step(&self, user: &UserId, step: i64) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        match inner.totp.get_mut(user) {
            Some(factor)
                if factor.confirmed_at.is_some() && factor.last_step.is_none_or(|l| l < step) =>
            {
                factor.last_step = Some(step);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete_totp(&self, user: &UserId) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        inner.recovery_codes.remove(user);
        Ok(inner.totp.remove(user).is_some())
    }

    async fn replace_recovery_codes(
        &self,
        user: &UserId,
        codes: &[TokenHash],
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        if inner
            .totp
            .get(user)
            .is_none_or(|f| f.confirmed_at.is_none())
        {
            return Ok(false);
        }
        inner
            .recovery_codes
            .insert(user.clone(), codes.iter().copied().collect());
        Ok(true)
    }

    async fn spend_recovery_code(
        &self,
        user: &UserId,
        hash: &TokenHash,
    ) -> Result<Option<usize>, StoreError> {
        let mut inner = self.lock()?;
        let Some(codes) = inner.recovery_codes.get_mut(user) else {
            return Ok(None);
        };
        Ok(codes.remove(hash).then_some(codes.len()))
    }

    async fn recovery_codes_left(&self, user: &UserId) -> Result<usize, StoreError> {
        Ok(self
            .lock()?
            .recovery_codes
            .get(user)
            .map_or(0, HashSet::len))
    }

    async fn add_passkey(
        &self,
        passkey: &tessera_core::StoredPasskey,
        max: usize,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        if !inner.users.contains_key(&passkey.user_id)
            || inner
                .passkeys
                .iter()
                .any(|p| p.credential_id == passkey.credential_id)
            || inner
                .passkeys
                .iter()
                .filter(|p| p.user_id == passkey.user_id)
                .count()
                >= max
        {
            return Ok(false);
        }
        inner.passkeys.push(passkey.clone());
        Ok(true)
    }

    async fn passkeys_of(
        &self,
        user: &UserId,
    ) -> Result<Vec<tessera_core::StoredPasskey>, StoreError> {
        let mut passkeys: Vec<_> = self
            .lock()?
            .passkeys
            .iter()
            .filter(|p| p.user_id == *user)
            .cloned()
            .collect();
        // Oldest first, as SQL orders them: the order they were added in need not be that.
        passkeys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(passkeys)
    }

    async fn passkey_by_credential(
        &self,
        credential_id: &[u8],
    ) -> Result<Option<tessera_core::StoredPasskey>, StoreError> {
        Ok(self
            .lock()?
            .passkeys
            .iter()
            .find(|p| p.credential_id == credential_id)
            .cloned())
    }

    async fn passkey_used(
        &self,
        credential_id: &[u8],
        credential: &str,
        sign_count: u32,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        match inner
            .passkeys
            .iter_mut()
            .find(|p| p.credential_id == credential_id)
        {
            Some(p) if sign_count > p.sign_count || (sign_count == 0 && p.sign_count == 0) => {
                p.credential = credential.to_owned();
                p.sign_count = sign_count;
                p.last_used_at = Some(at);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn rename_passkey(
        &self,
        user: &UserId,
        id: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        match inner
            .passkeys
            .iter_mut()
            .find(|p| p.user_id == *user && p.id == id)
        {
            Some(p) => {
                p.name = name.to_owned();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn delete_passkey(&self, user: &UserId, id: &str) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        let before = inner.passkeys.len();
        inner
            .passkeys
            .retain(|p| !(p.user_id == *user && p.id == id));
        Ok(inner.passkeys.len() < before)
    }

    async fn delete_passkeys(&self, user: &UserId) -> Result<usize, StoreError> {
        let mut inner = self.lock()?;
        let before = inner.passkeys.len();
        inner.passkeys.retain(|p| p.user_id != *user);
        Ok(before - inner.passkeys.len())
    }
}

#[async_trait]
impl ChallengeStore for MemoryStore {
    async fn create_challenge(&self, challenge: &LoginChallenge) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        inner.user_exists(&challenge.user_id)?;
        if inner.challenges.contains_key(&challenge.hash) {
            return Err(StoreError::Conflict("challenge hash exists".into()));
        }
        inner
            .challenges_by_expiry
            .insert((challenge.expires_at, *challenge.hash.as_bytes()));
        inner.challenges.insert(challenge.hash, challenge.clone());
        Ok(())
    }

    async fn attempt_challenge(
        &self,
        hash: &TokenHash,
        now: Timestamp,
        max_attempts: u32,
    ) -> Result<Option<LoginChallenge>, StoreError> {
        let mut inner = self.lock()?;
        match inner.challenges.get_mut(hash) {
            Some(challenge) if now < challenge.expires_at && challenge.attempts < max_attempts => {
                challenge.attempts += 1;
                Ok(Some(challenge.clone()))
            }
            Some(_) => {
                inner.remove_challenge(hash);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn consume_challenge(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        Ok(self.lock()?.remove_challenge(hash).is_some())
    }

    async fn delete_expired_challenges(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut inner = self.lock()?;
        let expired: Vec<TokenHash> = inner
            .challenges_by_expiry
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .map(|(_, hash)| TokenHash::from_bytes(*hash))
            .collect();
        for hash in &expired {
            inner.remove_challenge(hash);
        }
        Ok(expired.len())
    }
}
