//! Building the services over real stores, as the server does, for the store crate's service-level
//! tests: cheap password hashing (one hashing slot, so races stay deterministic) and a fresh
//! master key.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tessera_core::token::MasterKey;
use tessera_core::{
    Accounts, Argon2Params, ManualClock, Password, PasswordsConfig, Services, ServicesConfig,
    Stores, User,
};

/// Password hashing cheap enough for tests.
pub(crate) fn fast_passwords() -> PasswordsConfig {
    PasswordsConfig {
        argon2: Argon2Params::insecure_fast_for_tests(),
        max_concurrent: 1,
        queue_timeout: Duration::from_secs(5),
        ..PasswordsConfig::default()
    }
}

/// `Services::build` over `stores` on `clock`, with `config` but fast password hashing.
pub(crate) async fn services(
    stores: Stores,
    clock: &ManualClock,
    config: ServicesConfig,
) -> Services {
    Services::build(
        stores,
        Arc::new(clock.clone()),
        MasterKey::generate().unwrap().0,
        ServicesConfig {
            passwords: fast_passwords(),
            ..config
        },
    )
    .await
    .unwrap()
}

/// Creates the account `alice` (no roles), as the tests that need one user do.
pub(crate) async fn create_alice(accounts: &Accounts) -> User {
    accounts
        .create(
            "alice",
            &Password::new("correct horse battery staple"),
            vec![],
        )
        .await
        .unwrap()
}
