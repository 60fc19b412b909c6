//! Tessera's store implementations:
//!
//! - [`MemoryStore`]: tests and single processes; nothing persisted.
//! - [`SqliteStore`]: the embedded default, one file.
//! - [`PostgresStore`]: many nodes sharing one database; its LISTEN/NOTIFY is a change feed.
//! - [`RedisStore`]: sessions, revocations, login-attempt budgets and a pub/sub change feed for
//!   many nodes, beside PostgreSQL for the rest.
//!
//! SQLite and PostgreSQL share one implementation of the store traits (`sql`), each supplying only
//! the statements its dialect spells differently.
//!
//! The first three implement every store trait ([`AllStores`](tessera_core::AllStores)), so each
//! can back a whole server through [`Stores::from_one`](tessera_core::Stores::from_one). All pass
//! the same conformance suite (`conformance`, behind the `conformance` feature; one test per check
//! through `conformance_tests!`) for what they hold, so a backend cannot quietly differ.
#![forbid(unsafe_code)]

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod memory;
pub mod postgres;
pub mod redis;
mod sql;
pub mod sqlite;

pub use self::redis::RedisStore;
pub use memory::MemoryStore;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
