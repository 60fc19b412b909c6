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
//!
//! Building a node's services on one store, then registering an account and logging it in with a
//! server session:
//!
//! ```
//! use std::sync::Arc;
//!
//! use tessera_core::token::MasterKey;
//! use tessera_core::{
//!     Argon2Params, ClientInfo, LoginAttempt, LoginStep, Password, Services, ServicesConfig,
//!     Stores, SystemClock,
//! };
//! use tessera_store::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = ServicesConfig::default();
//! // Cheap hashing, for this example only (tessera-core's `test-util` feature); a server keeps
//! // the default cost.
//! config.passwords.argon2 = Argon2Params::insecure_fast_for_tests();
//! let (master_key, _bytes_to_keep) = MasterKey::generate()?;
//! let services = Services::build(
//!     Stores::from_one(MemoryStore::new()),
//!     Arc::new(SystemClock),
//!     master_key,
//!     config,
//! )
//! .await?;
//!
//! let password = Password::new("correct horse battery staple");
//! services.accounts.register("alice", &password, None).await?;
//! let step = services
//!     .logins
//!     .login_session(
//!         LoginAttempt {
//!             username: "Alice",
//!             password: &password,
//!             ip: None,
//!             client: ClientInfo::default(),
//!             device: None,
//!             dpop_jkt: None,
//!         },
//!         None,
//!     )
//!     .await?;
//! // An account with a second factor would get a challenge to complete with a code
//! // (`Logins::complete_second_factor`); alice has none.
//! let LoginStep::Done(login) = step else {
//!     panic!("alice has no second factor")
//! };
//!
//! // The cookie carries `login.secret`; the store holds only its hash.
//! let (session, user) = services
//!     .sessions
//!     .authenticate(&login.secret)
//!     .await?
//!     .expect("a live session");
//! assert_eq!(user.username.as_str(), "alice");
//! assert_eq!(session.handle, login.session.handle);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

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
