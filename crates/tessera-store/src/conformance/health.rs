//! The [`HealthCheck`] check.

use tessera_core::store::HealthCheck;

/// A fresh store answers `ping`.
pub async fn ping<S: HealthCheck>(store: S) {
    store.ping().await.expect("ping on a fresh store");
}
