//! Tessera's store implementations: [`MemoryStore`] (tests, single process, nothing persisted) and
//! [`SqliteStore`] (the embedded default). Both implement every store trait of `tessera-core`
//! ([`AllStores`](tessera_core::AllStores): users, sessions, signing keys, refresh families,
//! revocations, security events, health), so either can back a whole server through
//! [`Stores::from_one`](tessera_core::Stores::from_one), and both pass the same conformance suite
//! (`conformance`, behind the `conformance` feature), so a backend cannot quietly differ.
#![forbid(unsafe_code)]

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod memory;
pub mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;
