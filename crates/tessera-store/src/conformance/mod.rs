//! The conformance suite: every store implementation runs it, so a backend cannot quietly differ
//! from the contract written on the traits in `tessera_core::store`.
//!
//! One file per store trait holds that trait's checks; each check is a public function that takes
//! a fresh store. [`conformance_tests!`](crate::conformance_tests) declares one test per check, so
//! the checks run in parallel, each on a store of its own, and one failure hides none of the
//! others:
//!
//! ```
//! use tessera_store::MemoryStore;
//!
//! tessera_store::conformance_tests!(MemoryStore::new());
//! # fn main() {}
//! ```
//!
//! [`store_conformance`] and the per-trait `*_conformance` functions run the same checks one after
//! the other, on a fresh store from `make` each:
//!
//! ```
//! use tessera_store::MemoryStore;
//! use tessera_store::conformance::store_conformance;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // In a test: `#[tokio::test(flavor = "multi_thread")]`.
//! store_conformance(|| async { MemoryStore::new() }).await;
//! # }
//! ```
//!
//! Failures panic with a message naming the broken rule. Some checks spawn Tokio tasks, so run
//! the suite inside a Tokio runtime (a multi-threaded one exercises real contention).

pub mod challenges;
pub mod deletion;
pub mod email;
pub mod events;
pub mod health;
pub mod keys;
pub mod mail;
pub mod passkeys;
pub mod proofs;
pub mod refresh;
pub mod revocations;
pub mod second_factor;
pub mod sessions;
pub mod users;

use std::future::Future;

use tessera_core::store::{
    ChallengeStore, EventStore, HealthCheck, KeyStore, RefreshStore, RevocationStore,
    SecondFactorStore, SessionStore, UserStore,
};
use tessera_core::{MailStore, Timestamp, User, UserId, Username};

/// A moment in late 2023, so that every timestamp in the suite is a plausible one.
const T0: i64 = 1_700_000_000_000;
const HOUR: i64 = 3_600_000;
/// How many tasks race in the concurrency checks.
const RACERS: usize = 16;

/// Runs every check, each on a fresh store from `make`.
pub async fn store_conformance<S, F, Fut>(make: F)
where
    S: UserStore
        + SessionStore
        + KeyStore
        + RefreshStore
        + RevocationStore
        + EventStore
        + MailStore
        + tessera_core::ProofReplayStore
        + SecondFactorStore
        + ChallengeStore
        + HealthCheck,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    health::ping(make().await).await;
    second_factor_conformance(&make).await;
    challenge_conformance(&make).await;
    session_conformance(&make).await;
    email_conformance(&make).await;
    mail_conformance(&make).await;
    key_conformance(&make).await;
    refresh_conformance(&make).await;
    revocation_conformance(&make).await;
    event_conformance(&make).await;
    deletion_conformance(&make).await;
    proof_conformance(&make).await;
}

/// The checks of [`tessera_core::ProofReplayStore`].
pub async fn proof_conformance<S, F, Fut>(make: F)
where
    S: tessera_core::ProofReplayStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    proofs::proofs_are_first_used_once(make().await).await;
    proofs::proof_sweep(make().await).await;
    proofs::concurrent_first_use(make().await).await;
}

/// The [`UserStore::delete_user`] checks on a backend that holds the account and what hangs off
/// it, each on a fresh store from `make`.
pub async fn deletion_conformance<S, F, Fut>(make: F)
where
    S: deletion::ErasingStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    deletion::delete_user(make().await).await;
    deletion::delete_user_finishes_the_job(make().await).await;
}

/// The [`UserStore`] checks of addresses and mailed codes, each on a fresh store from `make`.
pub async fn email_conformance<S, F, Fut>(make: F)
where
    S: UserStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    email::emails_round_trip(make().await).await;
    email::addresses_are_unique(make().await).await;
    email::set_email_resets_verification(make().await).await;
    email::newer_code_voids_older(make().await).await;
    email::codes_work_once_before_they_expire(make().await).await;
    email::recovery_code_resets_the_password(make().await).await;
    email::verification_code_checks_the_address(make().await).await;
    email::code_sweep(make().await).await;
    email::concurrent_code_use(make().await).await;
    email::concurrent_code_writes(make().await).await;
}

/// The [`SecondFactorStore`] checks (TOTP, recovery codes, passkeys), each on a fresh store from
/// `make`.
pub async fn second_factor_conformance<S, F, Fut>(make: F)
where
    S: UserStore + SecondFactorStore + ChallengeStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    second_factor::totp_enrolment(make().await).await;
    second_factor::totp_steps_are_used_once(make().await).await;
    second_factor::concurrent_step_use(make().await).await;
    second_factor::recovery_codes_work_once(make().await).await;
    second_factor::concurrent_recovery_code_use(make().await).await;
    second_factor::second_factors_of_a_deleted_user(make().await).await;
    passkeys::passkeys_round_trip(make().await).await;
    passkeys::passkey_credential_ids_are_unique(make().await).await;
    passkeys::passkey_limit(make().await).await;
    passkeys::concurrent_passkey_adds(make().await).await;
    passkeys::concurrent_adds_of_one_credential(make().await).await;
    passkeys::passkey_counters_move_forward(make().await).await;
    passkeys::concurrent_passkey_use(make().await).await;
    passkeys::passkey_rename_and_delete(make().await).await;
    passkeys::passkeys_of_a_deleted_user(make().await).await;
}

/// The [`ChallengeStore`] checks, each on a fresh store from `make`.
pub async fn challenge_conformance<S, F, Fut>(make: F)
where
    S: UserStore + ChallengeStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    challenges::challenges(make().await).await;
    challenges::concurrent_challenge_use(make().await).await;
    challenges::challenge_sweep(make().await).await;
}

/// The [`MailStore`] checks, each on a fresh store from `make`.
pub async fn mail_conformance<S, F, Fut>(make: F)
where
    S: mail::MailQueueStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    mail::mail_round_trip(make().await).await;
    mail::claim_order(make().await).await;
    mail::claimed_mail_is_leased(make().await).await;
    mail::retry_mail(make().await).await;
    mail::delete_mail(make().await).await;
    mail::concurrent_claims(make().await).await;
}

/// The [`UserStore`] and [`SessionStore`] checks, each on a fresh store from `make`.
pub async fn session_conformance<S, F, Fut>(make: F)
where
    S: UserStore + SessionStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    users::users_round_trip(make().await).await;
    users::usernames_are_unique(make().await).await;
    users::password_hash_replacement(make().await).await;
    users::user_paging(make().await).await;
    users::user_paging_cursors(make().await).await;
    users::user_disabled(make().await).await;
    users::user_roles(make().await).await;
    users::rehash_and_not_before(make().await).await;
    sessions::sessions_by_secret(make().await).await;
    sessions::session_clashes(make().await).await;
    sessions::touch(make().await).await;
    sessions::data_compare_and_swap(make().await).await;
    sessions::concurrent_compare_and_swap(make().await).await;
    sessions::concurrent_patches_lose_nothing(make().await).await;
    sessions::delete(make().await).await;
    sessions::sessions_of_user(make().await).await;
    sessions::delete_sessions_of_user(make().await).await;
    sessions::sessions_of_a_deleted_user(make().await).await;
    sessions::sweep(make().await).await;
    sessions::sweep_follows_touch(make().await).await;
    sessions::data_round_trip(make().await).await;
    sessions::client_info_round_trip(make().await).await;
    sessions::sessions_need_a_user(make().await).await;
    sessions::session_owner(make().await).await;
    sessions::session_auth(make().await).await;
}

/// The [`KeyStore`] checks, each on a fresh store from `make`.
pub async fn key_conformance<S, F, Fut>(make: F)
where
    S: KeyStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    keys::keys_round_trip(make().await).await;
    keys::key_rotation(make().await).await;
    keys::key_retirement(make().await).await;
}

/// The [`RefreshStore`] checks, each on a fresh store from `make`.
pub async fn refresh_conformance<S, F, Fut>(make: F)
where
    S: UserStore + RefreshStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    refresh::families_round_trip(make().await).await;
    refresh::family_clashes(make().await).await;
    refresh::rotation(make().await).await;
    refresh::one_branch(make().await).await;
    refresh::concurrent_branches(make().await).await;
    refresh::concurrent_rotation(make().await).await;
    refresh::rotation_refusals(make().await).await;
    refresh::add_token(make().await).await;
    refresh::revoke_family(make().await).await;
    refresh::families_of_user(make().await).await;
    refresh::family_sweep(make().await).await;
    refresh::family_sweep_follows_refresh(make().await).await;
    refresh::family_auth(make().await).await;
}

/// The [`RevocationStore`] checks, each on a fresh store from `make`.
pub async fn revocation_conformance<S, F, Fut>(make: F)
where
    S: RevocationStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    revocations::denylist(make().await).await;
    revocations::denylist_twice(make().await).await;
    revocations::allowlist(make().await).await;
    revocations::purge(make().await).await;
}

/// The [`EventStore`] checks, each on a fresh store from `make`.
pub async fn event_conformance<S, F, Fut>(make: F)
where
    S: EventStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    events::events_round_trip(make().await).await;
    events::event_paging(make().await).await;
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

fn user(name: &str) -> User {
    User {
        id: UserId::generate().expect("OS randomness"),
        username: Username::parse(name).expect("valid username"),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${name}"),
        roles: Vec::new(),
        disabled: false,
        created_at: at(T0),
        updated_at: at(T0),
        not_before: at(T0),
        email: None,
    }
}

async fn with_user<S: UserStore>(store: &S, name: &str) -> User {
    let user = user(name);
    store.create_user(&user).await.expect("create_user");
    user
}

/// Declares one `#[tokio::test]` per conformance check: each runs on a fresh store of its own, in
/// parallel with the others, and a failure names its check. Invoke it in a module of its own per
/// backend: the tests are named after the checks.
///
/// The store is an expression, evaluated (`.await` allowed) once per test:
///
/// ```
/// # use tessera_store::{MemoryStore, SqliteStore};
/// mod memory {
///     tessera_store::conformance_tests!(tessera_store::MemoryStore::new());
/// }
/// mod sqlite {
///     tessera_store::conformance_tests!(tessera_store::SqliteStore::open_in_memory().await.unwrap());
/// }
/// # fn main() {}
/// ```
///
/// A backend that holds only some of the stores names the groups it runs (`health`, `users`,
/// `email`, `sessions`, `keys`, `refresh`, `revocations`, `events`, `mail`, `deletion`, `proofs`,
/// `second_factor` (TOTP, recovery codes and passkeys), `challenges`; all of them by default):
/// `conformance_tests!([sessions, revocations] make_store().await)`. When every test needs setup
/// and teardown around its store, give a body instead, in which `check` runs the test's check on
/// the store it is given:
///
/// ```
/// # async fn fresh_schema() -> String { String::new() }
/// # async fn drop_schema(_: String) {}
/// tessera_store::conformance_tests!(|check| {
///     let schema = fresh_schema().await;
///     check(tessera_store::MemoryStore::new()).await;
///     drop_schema(schema).await;
/// });
/// # fn main() {}
/// ```
///
/// The tests use `#[tokio::test]` on a multi-threaded runtime, so the crate invoking this needs
/// `tokio` with the `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! conformance_tests {
    ([] $($run:tt)+) => {};
    ([$group:ident $(, $more:ident)*] $($run:tt)+) => {
        $crate::__conformance_group!($group $($run)+);
        $crate::conformance_tests!([$($more),*] $($run)+);
    };
    ($($run:tt)+) => {
        $crate::conformance_tests!(
            [health, users, email, sessions, keys, refresh, revocations, events, mail, deletion, proofs, second_factor, challenges] $($run)+
        );
    };
}

/// The checks of each group, for [`conformance_tests!`]: a check missing here would not run.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_group {
    (health $($run:tt)+) => {
        $crate::__conformance_checks!(health [ping] $($run)+);
    };
    (users $($run:tt)+) => {
        $crate::__conformance_checks!(users [users_round_trip, usernames_are_unique, password_hash_replacement, user_paging, user_paging_cursors, user_disabled, user_roles, rehash_and_not_before] $($run)+);
    };
    (email $($run:tt)+) => {
        $crate::__conformance_checks!(email [emails_round_trip, addresses_are_unique, set_email_resets_verification, newer_code_voids_older, codes_work_once_before_they_expire, recovery_code_resets_the_password, verification_code_checks_the_address, code_sweep, concurrent_code_use, concurrent_code_writes] $($run)+);
    };
    (mail $($run:tt)+) => {
        $crate::__conformance_checks!(mail [mail_round_trip, claim_order, claimed_mail_is_leased, retry_mail, delete_mail, concurrent_claims] $($run)+);
    };
    (sessions $($run:tt)+) => {
        $crate::__conformance_checks!(sessions [sessions_by_secret, session_clashes, touch, data_compare_and_swap, concurrent_compare_and_swap, concurrent_patches_lose_nothing, delete, sessions_of_user, delete_sessions_of_user, sessions_of_a_deleted_user, sweep, sweep_follows_touch, data_round_trip, client_info_round_trip, sessions_need_a_user, session_owner, session_auth] $($run)+);
    };
    (keys $($run:tt)+) => {
        $crate::__conformance_checks!(keys [keys_round_trip, key_rotation, key_retirement] $($run)+);
    };
    (refresh $($run:tt)+) => {
        $crate::__conformance_checks!(refresh [families_round_trip, family_clashes, rotation, one_branch, concurrent_branches, concurrent_rotation, rotation_refusals, add_token, revoke_family, families_of_user, family_sweep, family_sweep_follows_refresh, family_auth] $($run)+);
    };
    (revocations $($run:tt)+) => {
        $crate::__conformance_checks!(revocations [denylist, denylist_twice, allowlist, purge] $($run)+);
    };
    (events $($run:tt)+) => {
        $crate::__conformance_checks!(events [events_round_trip, event_paging] $($run)+);
    };
    (proofs $($run:tt)+) => {
        $crate::__conformance_checks!(proofs [proofs_are_first_used_once, proof_sweep, concurrent_first_use] $($run)+);
    };
    (second_factor $($run:tt)+) => {
        $crate::__conformance_checks!(second_factor [totp_enrolment, totp_steps_are_used_once, concurrent_step_use, recovery_codes_work_once, concurrent_recovery_code_use, second_factors_of_a_deleted_user] $($run)+);
        $crate::__conformance_checks!(passkeys [passkeys_round_trip, passkey_credential_ids_are_unique, passkey_limit, concurrent_passkey_adds, concurrent_adds_of_one_credential, passkey_counters_move_forward, concurrent_passkey_use, passkey_rename_and_delete, passkeys_of_a_deleted_user] $($run)+);
    };
    (challenges $($run:tt)+) => {
        $crate::__conformance_checks!(challenges [challenges, concurrent_challenge_use, challenge_sweep] $($run)+);
    };
    (deletion $($run:tt)+) => {
        $crate::__conformance_checks!(deletion [delete_user, delete_user_finishes_the_job] $($run)+);
    };
}

/// One test per check of a group, for [`conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_checks {
    ($group:ident [$($check:ident),+] |$with:ident| $body:block) => {
        $(
            // Multi-threaded, so the concurrency checks race for real.
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                use $crate::conformance::$group::$check as $with;
                $body
            }
        )+
    };
    ($group:ident [$($check:ident),+] $store:expr) => {
        $crate::__conformance_checks!($group [$($check),+] |check| {
            check($store).await;
        });
    };
}
