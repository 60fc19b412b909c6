//! The store traits. `tessera-store` implements them (memory, SQLite and PostgreSQL hold
//! everything; Redis holds sessions, revocations, login-attempt budgets and the change feed beside
//! one of them); every implementation passes the same conformance suite for what it holds.
//!
//! Stores are plain persistence: they enforce uniqueness and atomicity, never policy (expiry rules,
//! password rules and CSRF live in the services).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::audit::{NewEvent, SecurityEvent};
use crate::auth_context::AuthContext;
use crate::clock::Timestamp;
use crate::email::{AccountCode, CodeVerified, EmailAddress};
use crate::error::StoreError;
use crate::mail::MailStore;
use crate::passkey::StoredPasskey;
use crate::second_factor::{LoginChallenge, TotpFactor};
use crate::secret::TokenHash;
use crate::session::{Session, SessionHandle};
use crate::token::key::StoredKey;
use crate::token::refresh::{FamilyId, RefreshFamily, RefreshTokenRecord, Rotation};
use crate::token::revoked::{AllowedToken, RevocationEntry};
use crate::user::{User, UserId, Username};

/// Accounts.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Inserts a new user; [`StoreError::Conflict`] when the username exists.
    async fn create_user(&self, user: &User) -> Result<(), StoreError>;

    /// The account with this id, disabled or not; `None` when there is none.
    async fn user_by_id(&self, id: &UserId) -> Result<Option<User>, StoreError>;

    /// The account with this (already normalized) username; `None` when there is none.
    async fn user_by_username(&self, username: &Username) -> Result<Option<User>, StoreError>;

    /// Replaces a user's password hash (a password change), sets `updated_at` to `at` and moves
    /// `not_before` ([`User::moved_not_before`]); `false` when there is no such user.
    async fn set_password_hash(
        &self,
        id: &UserId,
        password_hash: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Up to `limit` users ordered by username (byte order, so the cursor and the order agree on
    /// every backend), after `after` (exclusive) when given: the paging cursor of the admin list.
    async fn list_users(
        &self,
        after: Option<&Username>,
        limit: usize,
    ) -> Result<Vec<User>, StoreError>;

    /// The ids of every disabled account (few: what the revocation stream tells resource servers).
    async fn disabled_user_ids(&self) -> Result<Vec<UserId>, StoreError>;

    /// Sets `disabled` and `updated_at` to `at`, and moves `not_before`
    /// ([`User::moved_not_before`]); `false` when there is no such user.
    async fn set_user_disabled(
        &self,
        id: &UserId,
        disabled: bool,
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Replaces the roles, sets `updated_at` to `at` and moves `not_before`
    /// ([`User::moved_not_before`]); `false` when there is no such user.
    async fn set_user_roles(
        &self,
        id: &UserId,
        roles: &[String],
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Replaces the password hash with `new_hash` only if it is still `old_hash` (a rehash with
    /// new parameters after a login): a password changed meanwhile is never reverted. Moves
    /// neither `updated_at` nor `not_before`: the password is the same. `false` when the hash
    /// changed or there is no such user.
    async fn rehash_password(
        &self,
        id: &UserId,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool, StoreError>;

    /// Moves `not_before` ([`User::moved_not_before`]: to `at`, or a millisecond on when it is
    /// already there; never back): every login whose check began before it is void (a forced
    /// logout). `false` when there is no such user.
    async fn set_user_not_before(&self, id: &UserId, at: Timestamp) -> Result<bool, StoreError>;

    /// Erases an account (see [`UserDeletion`]). In one transaction where the backend has them
    /// (SQL), or under one lock (memory): deletes the user row (credentials, roles) and every
    /// row of that user the backend holds besides — sessions with their data, refresh families
    /// with their tokens, live access tokens of allowlist mode, mailed codes and queued mail — removes the username from the
    /// audit log ([`UserDeletion::scrub`]) and appends [`UserDeletion::event`]. Either all of it
    /// happens or none of it. Safe to repeat: when the user is already gone it still removes
    /// whatever of theirs remains and scrubs the log, appends no event, and answers `false`.
    async fn delete_user(&self, deletion: &UserDeletion) -> Result<bool, StoreError>;

    /// The account whose address has this comparison key ([`EmailAddress::key`]); `None` when
    /// there is none.
    async fn user_by_email(&self, key: &str) -> Result<Option<User>, StoreError>;

    /// Sets the account's address (unverified), or removes it with `None`, and deletes every
    /// unused code of the account, recovery codes too: they were mailed to the old address, and
    /// whoever reads that mailbox must not keep a way into the account. Moves neither
    /// `updated_at` nor `not_before`: an address is not a credential. [`StoreError::Conflict`]
    /// when another account has an address with the same key; `false` when there is no such
    /// user.
    async fn set_email(
        &self,
        id: &UserId,
        email: Option<&EmailAddress>,
    ) -> Result<bool, StoreError>;

    /// Stores a mailed code and deletes every other code of the same account and purpose, in
    /// one step: a newer request voids the older codes. [`StoreError::Conflict`] on a hash that
    /// exists (it never does: codes are 256 random bits); `false` when the user is gone.
    async fn create_code(&self, code: &AccountCode) -> Result<bool, StoreError>;

    /// Uses a recovery code, at most once, in one transaction: if a
    /// [`CodePurpose::Recovery`](crate::CodePurpose::Recovery) code with this hash exists and
    /// `expires_at` is after `now`, deletes it (and every other recovery code of the account),
    /// replaces the password hash, sets `updated_at` to `now`, moves `not_before`
    /// ([`User::moved_not_before`]), and marks the address verified when the code went to the
    /// account's current address. Returns the account; `None` (nothing changed) for an unknown,
    /// used, expired or replaced code.
    async fn use_recovery_code(
        &self,
        hash: &crate::secret::TokenHash,
        password_hash: &str,
        now: Timestamp,
    ) -> Result<Option<UserId>, StoreError>;

    /// Uses a verification code, at most once, in one transaction: if a
    /// [`CodePurpose::VerifyEmail`](crate::CodePurpose::VerifyEmail) code with this hash exists
    /// and `expires_at` is after `now`, deletes it, and marks the account's address verified if
    /// it is still the one the code was mailed to. `None` (nothing changed) for an unknown, used,
    /// expired or replaced code.
    async fn use_verification_code(
        &self,
        hash: &crate::secret::TokenHash,
        now: Timestamp,
    ) -> Result<Option<CodeVerified>, StoreError>;

    /// Deletes up to `limit` codes whose `expires_at` is at or before `now`; returns how many
    /// went.
    async fn delete_expired_codes(&self, now: Timestamp, limit: usize)
    -> Result<usize, StoreError>;
}

/// What [`UserStore::delete_user`] erases, and what the audit log keeps of it.
#[derive(Clone, Debug, PartialEq)]
pub struct UserDeletion {
    /// The account to erase.
    pub user: UserId,
    /// Its username, to remove from the audit log: the store may no longer have it to read.
    pub username: Username,
    /// The `account_deleted` event to append, naming the user by id only.
    pub event: NewEvent,
}

impl UserDeletion {
    /// The detail of an audit event with the deleted account's username taken out, or `None`
    /// when there is nothing of it to take out. Events of the user (`user_id`) lose any
    /// `username` they hold; failed logins (which have no user id) lose the attempted username
    /// when it names this account (the same account after normalization, as a login reads it)
    /// and say that it was erased.
    pub fn scrub(&self, user_id: Option<&UserId>, detail: &Value) -> Option<Value> {
        let attempted = detail.get("username")?.as_str()?;
        let names_this_account = user_id == Some(&self.user)
            || (user_id.is_none()
                && Username::parse(attempted).is_ok_and(|name| name == self.username));
        if !names_this_account {
            return None;
        }
        let mut scrubbed = detail.clone();
        if let Some(fields) = scrubbed.as_object_mut() {
            fields.remove("username");
            fields.insert("username_erased".into(), Value::Bool(true));
        }
        Some(scrubbed)
    }
}

/// Server-side sessions, looked up by the hash of their secret, indexed by user and by expiry.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Inserts a session. Its handle and secret hash are fresh random values: a clash is a
    /// [`StoreError::Conflict`].
    async fn create_session(&self, session: &Session) -> Result<(), StoreError>;

    /// The session whose secret hashes to `secret_hash`, whether or not it has expired (the service
    /// decides that).
    async fn session_by_secret(
        &self,
        secret_hash: &TokenHash,
    ) -> Result<Option<Session>, StoreError>;

    /// Whose session `handle` names, expired or not; `None` when there is no such session (an
    /// operator ending one login by its handle).
    async fn session_owner(&self, handle: &SessionHandle) -> Result<Option<UserId>, StoreError>;

    /// Records activity: sets `last_seen_at` and `expires_at`. `false` when the session is gone.
    async fn touch_session(
        &self,
        handle: &SessionHandle,
        last_seen_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Replaces the session data if its version is still `expected_version`, and increments the
    /// version. `false` when the version moved on (someone else wrote) or the session is gone.
    async fn replace_session_data(
        &self,
        handle: &SessionHandle,
        expected_version: i64,
        data: &Value,
    ) -> Result<bool, StoreError>;

    /// Replaces how the session was authenticated (a step-up); `false` when the session is
    /// gone.
    async fn set_session_auth(
        &self,
        handle: &SessionHandle,
        auth: &AuthContext,
    ) -> Result<bool, StoreError>;

    /// Deletes one session; `false` when it did not exist.
    async fn delete_session(&self, handle: &SessionHandle) -> Result<bool, StoreError>;

    /// Every session of a user (expired ones included until swept), oldest first.
    async fn sessions_of_user(&self, user: &UserId) -> Result<Vec<Session>, StoreError>;

    /// Deletes every session of a user except `keep`; returns how many went.
    async fn delete_sessions_of_user(
        &self,
        user: &UserId,
        keep: Option<&SessionHandle>,
    ) -> Result<usize, StoreError>;

    /// Deletes up to `limit` sessions whose `expires_at` is at or before `now`, returning how many
    /// went. Implementations use an index on `expires_at`, so the cost follows what expired.
    async fn delete_expired_sessions(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError>;
}

/// Second factors: TOTP with its recovery codes. Held with the accounts (SQL or memory): a
/// user's factor rows go when the user is deleted.
#[async_trait]
pub trait SecondFactorStore: Send + Sync + 'static {
    /// Stores an unconfirmed TOTP factor, replacing an unconfirmed one of the same user. `false`
    /// (nothing written) when the user has a confirmed one, or is gone.
    async fn put_pending_totp(&self, factor: &TotpFactor) -> Result<bool, StoreError>;

    /// The user's TOTP factor, confirmed or not.
    async fn totp_factor(&self, user: &UserId) -> Result<Option<TotpFactor>, StoreError>;

    /// Confirms the user's unconfirmed factor in one step: sets `confirmed_at`, records `step`
    /// as the last used one, and replaces the user's recovery codes with `recovery_codes`.
    /// `false` (nothing written) when there is no unconfirmed factor, or when it is not the one
    /// whose code was checked (`sealed_secret`: a new enrolment replaced it meanwhile).
    async fn confirm_totp(
        &self,
        user: &UserId,
        sealed_secret: &[u8],
        step: i64,
        recovery_codes: &[TokenHash],
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Records the use of time step `step` of the user's confirmed factor, only if it is later
    /// than the last used one, in one atomic step: of many concurrent callers with the same
    /// step exactly one gets `true`. `false` for a step used already (or an earlier one), or
    /// without a confirmed factor.
    async fn use_totp_step(&self, user: &UserId, step: i64) -> Result<bool, StoreError>;

    /// Deletes the user's TOTP factor and recovery codes; `false` when there was no factor.
    async fn delete_totp(&self, user: &UserId) -> Result<bool, StoreError>;

    /// Replaces the user's recovery codes; `false` (nothing written) without a confirmed factor.
    async fn replace_recovery_codes(
        &self,
        user: &UserId,
        codes: &[TokenHash],
    ) -> Result<bool, StoreError>;

    /// Uses one recovery code of the user, at most once: deletes it if it exists and answers
    /// how many are left; `None` for an unknown or used code. Of concurrent callers with one
    /// code, exactly one gets `Some`.
    async fn spend_recovery_code(
        &self,
        user: &UserId,
        hash: &TokenHash,
    ) -> Result<Option<usize>, StoreError>;

    /// How many unused recovery codes the user has.
    async fn recovery_codes_left(&self, user: &UserId) -> Result<usize, StoreError>;

    /// Registers a passkey, in one step: `false` (nothing written) when its credential id is
    /// registered already (to any account), the user is gone, or the user has `max` passkeys.
    async fn add_passkey(&self, passkey: &StoredPasskey, max: usize) -> Result<bool, StoreError>;

    /// The user's passkeys, oldest first.
    async fn passkeys_of(&self, user: &UserId) -> Result<Vec<StoredPasskey>, StoreError>;

    /// The passkey with this credential id, whoever's it is.
    async fn passkey_by_credential(
        &self,
        credential_id: &[u8],
    ) -> Result<Option<StoredPasskey>, StoreError>;

    /// Records a use of a passkey: its new credential state, signature counter and time, in one
    /// atomic step, only if `sign_count` is ahead of the stored counter or both are 0 (an
    /// authenticator without a counter). `false` (nothing written) otherwise, or when the
    /// passkey is gone: of two uses with one counter value, one gets `true`.
    async fn passkey_used(
        &self,
        credential_id: &[u8],
        credential: &str,
        sign_count: u32,
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Renames one passkey of the user; `false` when the user has no passkey with this id.
    async fn rename_passkey(&self, user: &UserId, id: &str, name: &str)
    -> Result<bool, StoreError>;

    /// Deletes one passkey of the user; `false` when the user has no passkey with this id.
    async fn delete_passkey(&self, user: &UserId, id: &str) -> Result<bool, StoreError>;

    /// Deletes every passkey of the user; returns how many.
    async fn delete_passkeys(&self, user: &UserId) -> Result<usize, StoreError>;
}

/// Login challenges: a correct password waiting for its second factor. Short-lived state, like
/// a session: held with the accounts (SQL, memory), or in Redis beside the sessions.
#[async_trait]
pub trait ChallengeStore: Send + Sync + 'static {
    /// Stores a login challenge. [`StoreError::Conflict`] on a hash that exists (it never
    /// does: 256 random bits).
    async fn create_challenge(&self, challenge: &LoginChallenge) -> Result<(), StoreError>;

    /// Counts one attempt at a challenge, atomically: if it exists, `expires_at` is after `now`
    /// and it has had fewer than `max_attempts`, adds one to `attempts` and returns it as
    /// updated. Otherwise `None`, and a challenge that is spent or expired is deleted.
    async fn attempt_challenge(
        &self,
        hash: &TokenHash,
        now: Timestamp,
        max_attempts: u32,
    ) -> Result<Option<LoginChallenge>, StoreError>;

    /// Deletes a challenge (it was met); `true` only for the one caller that deleted it.
    async fn consume_challenge(&self, hash: &TokenHash) -> Result<bool, StoreError>;

    /// Deletes up to `limit` challenges whose `expires_at` is at or before `now`; how many went.
    async fn delete_expired_challenges(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError>;
}

/// Readiness: can the store be reached right now?
#[async_trait]
pub trait HealthCheck: Send + Sync + 'static {
    /// A cheap round trip to the backend; an error makes the node report itself not ready.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Signing keys. Private parts arrive sealed (encrypted with the master key); the store never sees
/// them in the clear.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Inserts a key; [`StoreError::Conflict`] when the kid exists.
    async fn insert_key(&self, key: &StoredKey) -> Result<(), StoreError>;

    /// Every key, oldest first, whatever its status.
    async fn keys(&self) -> Result<Vec<StoredKey>, StoreError>;

    /// Moves an `Active` key to `Rotated` at `at` (it stops signing, keeps verifying for a while).
    /// `false` when the key does not exist or is not active.
    async fn mark_key_rotated(&self, kid: &str, at: Timestamp) -> Result<bool, StoreError>;

    /// Moves a key that is not yet retired to `Retired` at `at`: tokens it signed stop verifying.
    /// `false` when the key does not exist or is already retired.
    async fn mark_key_retired(&self, kid: &str, at: Timestamp) -> Result<bool, StoreError>;
}

/// Refresh-token families and their tokens, looked up by the hash of the token secret.
#[async_trait]
pub trait RefreshStore: Send + Sync + 'static {
    /// Inserts a family and its first token atomically.
    async fn create_family(
        &self,
        family: &RefreshFamily,
        first: &RefreshTokenRecord,
    ) -> Result<(), StoreError>;

    /// A token and its family, whatever their state (the service decides).
    async fn refresh_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(RefreshTokenRecord, RefreshFamily)>, StoreError>;

    /// Atomically: if the token `old` exists and is not rotated, its family is not revoked and is
    /// still at `old`'s generation, marks `old` rotated at `now`, inserts `new` (same family, the
    /// next generation), moves the family to that generation and sets its `last_used_at = now`
    /// and `expires_at`. Of many concurrent callers with the same `old`, or with tokens of the
    /// same generation, exactly one gets [`Rotation::Rotated`]; a revocation that commits first
    /// makes it [`Rotation::Revoked`]. Nothing is written unless it is `Rotated`.
    async fn rotate_refresh_token(
        &self,
        old: &TokenHash,
        new: &RefreshTokenRecord,
        now: Timestamp,
        family_expires_at: Timestamp,
    ) -> Result<Rotation, StoreError>;

    /// Adds a token to its family without rotating another (a concurrent refresh inside the grace
    /// window), and moves the family's `last_used_at`/`expires_at`. `false` when the family is
    /// gone, revoked, or no longer at `new.generation` (it moved on meanwhile): a token is only
    /// ever added beside the current generation, never to a branch that has ended.
    async fn add_refresh_token(
        &self,
        new: &RefreshTokenRecord,
        now: Timestamp,
        family_expires_at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Marks a family revoked (its tokens stop refreshing). `false` when it does not exist or was
    /// already revoked.
    async fn revoke_family(
        &self,
        id: &FamilyId,
        at: Timestamp,
        reason: &str,
    ) -> Result<bool, StoreError>;

    /// Replaces how the family's login was authenticated (a step-up); its next tokens carry it.
    /// `false` when the family is gone or revoked.
    async fn set_family_auth(&self, id: &FamilyId, auth: &AuthContext) -> Result<bool, StoreError>;

    /// One family by id, revoked and expired ones included until swept (the caller asks
    /// [`RefreshFamily::is_live`]).
    async fn family(&self, id: &FamilyId) -> Result<Option<RefreshFamily>, StoreError>;

    /// Every family of a user, revoked and expired ones included until swept, oldest first.
    async fn families_of_user(&self, user: &UserId) -> Result<Vec<RefreshFamily>, StoreError>;

    /// Deletes up to `limit` families (with their tokens) whose `expires_at` or
    /// `absolute_expires_at` is at or before `now`; returns how many went.
    async fn delete_expired_families(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError>;
}

/// Revocations of access tokens (denylist), and live access tokens (allowlist mode).
#[async_trait]
pub trait RevocationStore: Send + Sync + 'static {
    /// Records a denylist entry; recording the same one twice is not an error.
    async fn add_revocation(&self, entry: &RevocationEntry) -> Result<(), StoreError>;

    /// Entries whose `expires_at` is after `now`.
    async fn revocations(&self, now: Timestamp) -> Result<Vec<RevocationEntry>, StoreError>;

    /// Records a live access token (allowlist mode).
    async fn allow_token(&self, token: &AllowedToken) -> Result<(), StoreError>;

    /// Live access tokens whose `expires_at` is after `now`.
    async fn allowed_tokens(&self, now: Timestamp) -> Result<Vec<AllowedToken>, StoreError>;

    /// Removes one live access token; `false` when it was not there.
    async fn disallow_token(&self, jti: &str) -> Result<bool, StoreError>;

    /// Removes every live access token of a family; returns how many.
    async fn disallow_family(&self, id: &FamilyId) -> Result<usize, StoreError>;

    /// Removes every live access token of a user; returns how many.
    async fn disallow_user(&self, user: &UserId) -> Result<usize, StoreError>;

    /// Deletes denylist entries and allowlist tokens whose `expires_at` is at or before `now`.
    async fn purge_expired(&self, now: Timestamp) -> Result<usize, StoreError>;
}

/// DPoP proofs seen lately, so that a proof replayed to any node within its window is refused.
/// A proof is named by [`tessera_dpop::VerifiedProof::replay_key`] (a hash, never the proof).
///
/// ```
/// # use tessera_core::{ProofReplayStore, Timestamp};
/// # async fn demo(store: &dyn ProofReplayStore) -> Result<(), tessera_core::StoreError> {
/// let now = Timestamp::from_unix_millis(1_764_400_000_000);
/// let until = Timestamp::from_unix_millis(1_764_400_065_000);
/// assert!(store.first_use(&[7; 32], until, now).await?);
/// assert!(!store.first_use(&[7; 32], until, now).await?, "the second use is a replay");
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// #     demo(&tessera_core::token::dpop::SeenProofs::default()).await.unwrap();
/// # });
/// ```
#[async_trait]
pub trait ProofReplayStore: Send + Sync + 'static {
    /// Records `key` until `expires_at`, atomically across every node: `true` when it was not
    /// recorded (or its record had expired by `now`), `false` when it is a replay.
    async fn first_use(
        &self,
        key: &[u8; 32],
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Forgets records that expired at or before `now`; returns how many (an estimate where the
    /// store expires them by itself).
    async fn purge_expired_proofs(&self, now: Timestamp) -> Result<usize, StoreError>;

    /// [`first_use`](Self::first_use), recorded where it outlives the process and is seen by
    /// every process on the same store: for what stays usable longer than a DPoP proof (a
    /// passkey ceremony, five minutes), which a restart must not make usable again. Stores whose
    /// `first_use` is durable already (a database, Redis) need not override it; one that keeps
    /// DPoP proofs in memory for speed (SQLite) writes these to disk.
    async fn first_use_durable(
        &self,
        key: &[u8; 32],
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.first_use(key, expires_at, now).await
    }
}

/// The audit trail.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends an event; the store assigns its id (increasing).
    async fn record_event(&self, event: &NewEvent) -> Result<(), StoreError>;

    /// Up to `limit` events, newest first, with an id below `before` when given.
    async fn events(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<SecurityEvent>, StoreError>;
}

/// The stores a server runs on. One backend may serve them all ([`Stores::from_one`]), or each may
/// have its own (users in PostgreSQL, sessions in Redis).
#[derive(Clone)]
pub struct Stores {
    /// Accounts.
    pub users: Arc<dyn UserStore>,
    /// Server sessions.
    pub sessions: Arc<dyn SessionStore>,
    /// Signing keys, sealed with the master key.
    pub keys: Arc<dyn KeyStore>,
    /// Refresh-token families and their tokens.
    pub refresh: Arc<dyn RefreshStore>,
    /// The denylist (and the live tokens of allowlist mode).
    pub revocations: Arc<dyn RevocationStore>,
    /// The audit log.
    pub events: Arc<dyn EventStore>,
    /// The outgoing mail queue.
    pub mail: Arc<dyn MailStore>,
    /// DPoP proofs seen lately (replay detection): in process for one node; the database or
    /// Redis for many.
    pub proofs: Arc<dyn ProofReplayStore>,
    /// Second factors (TOTP, recovery codes).
    pub second_factors: Arc<dyn SecondFactorStore>,
    /// Login challenges waiting for a second factor: the database, or Redis with the sessions.
    pub challenges: Arc<dyn ChallengeStore>,
    /// The readiness check; with several backends, an [`AllHealthy`] over all of them.
    pub health: Arc<dyn HealthCheck>,
    /// How changes reach every node: in process for a single node; Redis pub/sub or PostgreSQL
    /// LISTEN/NOTIFY for many.
    pub feed: Arc<dyn crate::feed::ChangeFeed>,
    /// Login-attempt budgets shared by every node (Redis); `None`: each node keeps its own.
    pub limiter: Option<Arc<dyn AttemptLimiter>>,
}

/// A backend that holds everything, and so can back a whole server through
/// [`Stores::from_one`]. Implemented for every type that implements each store trait (and
/// `Clone`); there is nothing to implement by hand.
pub trait AllStores:
    UserStore
    + SessionStore
    + KeyStore
    + RefreshStore
    + RevocationStore
    + EventStore
    + MailStore
    + ProofReplayStore
    + SecondFactorStore
    + ChallengeStore
    + HealthCheck
    + Clone
{
}

impl<S> AllStores for S where
    S: UserStore
        + SessionStore
        + KeyStore
        + RefreshStore
        + RevocationStore
        + EventStore
        + MailStore
        + ProofReplayStore
        + SecondFactorStore
        + ChallengeStore
        + HealthCheck
        + Clone
{
}

impl Stores {
    /// Every store from one backend, with the in-process change feed (one node).
    pub fn from_one<S: AllStores>(store: S) -> Self {
        Self {
            users: Arc::new(store.clone()),
            sessions: Arc::new(store.clone()),
            keys: Arc::new(store.clone()),
            refresh: Arc::new(store.clone()),
            revocations: Arc::new(store.clone()),
            events: Arc::new(store.clone()),
            mail: Arc::new(store.clone()),
            proofs: Arc::new(store.clone()),
            second_factors: Arc::new(store.clone()),
            challenges: Arc::new(store.clone()),
            health: Arc::new(store),
            feed: Arc::new(crate::feed::LocalFeed::new()),
            limiter: None,
        }
    }
}

/// Login-attempt budgets shared by every node (GCRA), so a limit holds across the cluster.
#[async_trait]
pub trait AttemptLimiter: Send + Sync + 'static {
    /// Whether an attempt of `key` may go ahead now (`burst` attempts at once, `per_minute`
    /// regained each minute), and, when it may and `spend` is set, spends it. `Ok(Ok(()))` when
    /// allowed, `Ok(Err(wait))` when over the limit.
    async fn take_attempt(
        &self,
        key: &str,
        burst: u32,
        per_minute: u32,
        spend: bool,
    ) -> Result<Result<(), std::time::Duration>, StoreError>;

    /// Gives back one attempt of `key` spent by [`AttemptLimiter::take_attempt`] at the same
    /// `per_minute`: the attempt turned out not to count.
    async fn refund_attempt(&self, key: &str, per_minute: u32) -> Result<(), StoreError>;
}

/// Ready only when every part is: several stores behind one readiness check.
pub struct AllHealthy(pub Vec<Arc<dyn HealthCheck>>);

#[async_trait]
impl HealthCheck for AllHealthy {
    async fn ping(&self) -> Result<(), StoreError> {
        for part in &self.0 {
            part.ping().await?;
        }
        Ok(())
    }
}

/// Revocations in a fast store (Redis) with every denylist entry also written to a durable one
/// (the database) first. A fast store that comes back empty (Redis keeps nothing on disk) then
/// forgets no revocation: the union of both is read back. Live tokens of allowlist mode stay in
/// the fast store only — losing them refuses tokens, which is safe.
pub struct MirroredRevocations {
    /// The store every call goes to (Redis); it alone holds allowlist tokens, and when it is
    /// down reads fail closed.
    pub fast: Arc<dyn RevocationStore>,
    /// The copy of the denylist that survives a fast store losing its data (the database):
    /// written first, read back together with the fast store's entries.
    pub durable: Arc<dyn RevocationStore>,
}

#[async_trait]
impl RevocationStore for MirroredRevocations {
    async fn add_revocation(&self, entry: &RevocationEntry) -> Result<(), StoreError> {
        self.durable.add_revocation(entry).await?;
        self.fast.add_revocation(entry).await
    }

    async fn revocations(&self, now: Timestamp) -> Result<Vec<RevocationEntry>, StoreError> {
        // The fast store answers for liveness: when it is down, this fails (and callers fail
        // closed) even though the durable copy could answer.
        let mut all = self.fast.revocations(now).await?;
        all.extend(self.durable.revocations(now).await?);
        Ok(all)
    }

    async fn allow_token(&self, token: &AllowedToken) -> Result<(), StoreError> {
        self.fast.allow_token(token).await
    }

    async fn allowed_tokens(&self, now: Timestamp) -> Result<Vec<AllowedToken>, StoreError> {
        self.fast.allowed_tokens(now).await
    }

    async fn disallow_token(&self, jti: &str) -> Result<bool, StoreError> {
        self.fast.disallow_token(jti).await
    }

    async fn disallow_family(&self, id: &FamilyId) -> Result<usize, StoreError> {
        self.fast.disallow_family(id).await
    }

    async fn disallow_user(&self, user: &UserId) -> Result<usize, StoreError> {
        self.fast.disallow_user(user).await
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<usize, StoreError> {
        Ok(self.durable.purge_expired(now).await? + self.fast.purge_expired(now).await?)
    }
}
