//! Tessera's store implementations: [`MemoryStore`] (tests, single process, nothing persisted) and
//! [`SqliteStore`] (the embedded default). Both implement the store traits of `tessera-core`
//! ([`UserStore`](tessera_core::UserStore), [`SessionStore`](tessera_core::SessionStore),
//! [`HealthCheck`](tessera_core::HealthCheck)) and pass the same conformance suite
//! (`conformance`, behind the `conformance` feature), so a backend cannot quietly differ.
#![forbid(unsafe_code)]

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod memory;
pub mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;
