//! How the shared SQL code reaches a database: parameters, statements run on the pool or in a
//! transaction, and the few column types the schema uses.

use async_trait::async_trait;
use sqlx::query::Query;
use sqlx::{ColumnIndex, Database, Decode, Encode, Row, Type};
use tessera_core::{StoreError, Timestamp};

use super::Dialect;

/// A value bound to a statement's `$n` parameter: the column types the schema uses, no more.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Param<'a> {
    Text(&'a str),
    OptionalText(Option<&'a str>),
    Int(i64),
    OptionalInt(Option<i64>),
    Bytes(&'a [u8]),
    Flag(bool),
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(value: &'a str) -> Self {
        Self::Text(value)
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(value: Option<&'a str>) -> Self {
        Self::OptionalText(value)
    }
}

impl From<i64> for Param<'_> {
    fn from(value: i64) -> Self {
        Self::Int(value)
    }
}

impl From<Option<i64>> for Param<'_> {
    fn from(value: Option<i64>) -> Self {
        Self::OptionalInt(value)
    }
}

impl From<Timestamp> for Param<'_> {
    fn from(value: Timestamp) -> Self {
        Self::Int(value.unix_millis())
    }
}

impl From<Option<Timestamp>> for Param<'_> {
    fn from(value: Option<Timestamp>) -> Self {
        Self::OptionalInt(value.map(Timestamp::unix_millis))
    }
}

impl<'a> From<&'a [u8]> for Param<'a> {
    fn from(value: &'a [u8]) -> Self {
        Self::Bytes(value)
    }
}

impl From<bool> for Param<'_> {
    fn from(value: bool) -> Self {
        Self::Flag(value)
    }
}

/// `statement` with `params` bound to `$1`, `$2`, … in order.
///
/// Statements are built from constants only (never from input), which is what
/// [`sqlx::AssertSqlSafe`] asserts here.
pub(crate) fn query<'q, DB>(
    statement: &'q str,
    params: &[Param<'_>],
) -> Query<'q, DB, <DB as Database>::Arguments>
where
    DB: Database,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
    for<'a> &'a [u8]: Encode<'a, DB> + Type<DB>,
    for<'a> bool: Encode<'a, DB> + Type<DB>,
{
    params.iter().fold(
        sqlx::query(sqlx::AssertSqlSafe(statement)),
        |query, param| match *param {
            Param::Text(value) => query.bind(value),
            Param::OptionalText(value) => query.bind(value),
            Param::Int(value) => query.bind(value),
            Param::OptionalInt(value) => query.bind(value),
            Param::Bytes(value) => query.bind(value),
            Param::Flag(value) => query.bind(value),
        },
    )
}

/// A database the shared SQL stores run on: its dialect, and statements run on its pool.
#[async_trait]
pub(crate) trait Db: Send + Sync {
    type Row: Columns + Send;
    type Tx: Tx<Row = Self::Row>;

    /// The statements that differ from one dialect to the other.
    const DIALECT: &'static Dialect;

    /// Runs `statement`; how many rows it changed.
    async fn execute(&self, statement: &str, params: &[Param<'_>]) -> Result<u64, StoreError>;

    async fn fetch_optional(
        &self,
        statement: &str,
        params: &[Param<'_>],
    ) -> Result<Option<Self::Row>, StoreError>;

    async fn fetch_all(
        &self,
        statement: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<Self::Row>, StoreError>;

    /// A transaction at the database's default isolation (SQLite: serializable, one writer at
    /// a time; PostgreSQL: read committed, with row locks taken by writes). Dropped without
    /// [`Tx::commit`], it rolls back.
    async fn begin(&self) -> Result<Self::Tx, StoreError>;

    /// Deletes the revocations and allowlisted tokens that expired by `now`; how many in all.
    /// Not shared: PostgreSQL does it in one statement, SQLite cannot.
    async fn delete_expired_revocations(&self, now: Timestamp) -> Result<usize, StoreError>;
}

/// A transaction of a [`Db`].
#[async_trait]
pub(crate) trait Tx: Send {
    type Row: Columns + Send;

    /// Runs `statement`; how many rows it changed.
    async fn execute(&mut self, statement: &str, params: &[Param<'_>]) -> Result<u64, StoreError>;

    async fn fetch_optional(
        &mut self,
        statement: &str,
        params: &[Param<'_>],
    ) -> Result<Option<Self::Row>, StoreError>;

    async fn fetch_all(
        &mut self,
        statement: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<Self::Row>, StoreError>;

    async fn commit(self) -> Result<(), StoreError>;
}

/// How a database's errors read as [`StoreError`]s: which mean "unavailable", which "conflict".
pub(crate) trait StoreErrors {
    fn store_error(e: sqlx::Error) -> StoreError;
}

/// A row's columns by name, as the types the schema stores. A column missing or of another type
/// is an error, never a panic.
pub(crate) trait Columns {
    fn text(&self, name: &str) -> Result<String, StoreError>;
    fn optional_text(&self, name: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, name: &str) -> Result<i64, StoreError>;
    fn optional_int(&self, name: &str) -> Result<Option<i64>, StoreError>;
    fn bytes(&self, name: &str) -> Result<Vec<u8>, StoreError>;
    fn flag(&self, name: &str) -> Result<bool, StoreError>;
}

impl<R> Columns for R
where
    R: Row,
    R::Database: StoreErrors,
    for<'n> &'n str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, name: &str) -> Result<String, StoreError> {
        self.try_get(name).map_err(R::Database::store_error)
    }

    fn optional_text(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.try_get(name).map_err(R::Database::store_error)
    }

    fn int(&self, name: &str) -> Result<i64, StoreError> {
        self.try_get(name).map_err(R::Database::store_error)
    }

    fn optional_int(&self, name: &str) -> Result<Option<i64>, StoreError> {
        self.try_get(name).map_err(R::Database::store_error)
    }

    fn bytes(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.try_get(name).map_err(R::Database::store_error)
    }

    fn flag(&self, name: &str) -> Result<bool, StoreError> {
        self.try_get(name).map_err(R::Database::store_error)
    }
}

/// `impl Db` for a store whose sqlx pool is `self.pool`, and `impl Tx` for that driver's
/// transactions: running a statement is the same call for every driver, so it is written once.
/// What differs is given: the store, the sqlx database and row types, the dialect, and how the
/// store purges expired revocations (`delete_expired_revocations`). Errors are mapped by the
/// driver's [`StoreErrors`].
macro_rules! impl_db_on_pool {
    ($store:ty, $db:ty, $row:ty, $dialect:expr, { $($purge:tt)* }) => {
        #[async_trait::async_trait]
        impl $crate::sql::Db for $store {
            type Row = $row;
            type Tx = sqlx::Transaction<'static, $db>;

            const DIALECT: &'static $crate::sql::Dialect = $dialect;

            async fn execute(
                &self,
                statement: &str,
                params: &[$crate::sql::Param<'_>],
            ) -> Result<u64, tessera_core::StoreError> {
                let done = $crate::sql::query(statement, params)
                    .execute(&self.pool)
                    .await
                    .map_err(<$db as $crate::sql::StoreErrors>::store_error)?;
                Ok(done.rows_affected())
            }

            async fn fetch_optional(
                &self,
                statement: &str,
                params: &[$crate::sql::Param<'_>],
            ) -> Result<Option<$row>, tessera_core::StoreError> {
                $crate::sql::query(statement, params)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(<$db as $crate::sql::StoreErrors>::store_error)
            }

            async fn fetch_all(
                &self,
                statement: &str,
                params: &[$crate::sql::Param<'_>],
            ) -> Result<Vec<$row>, tessera_core::StoreError> {
                $crate::sql::query(statement, params)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(<$db as $crate::sql::StoreErrors>::store_error)
            }

            async fn begin(&self) -> Result<Self::Tx, tessera_core::StoreError> {
                self.pool
                    .begin()
                    .await
                    .map_err(<$db as $crate::sql::StoreErrors>::store_error)
            }

            $($purge)*
        }

        #[async_trait::async_trait]
        impl $crate::sql::Tx for sqlx::Transaction<'static, $db> {
            type Row = $row;

            async fn execute(
                &mut self,
                statement: &str,
                params: &[$crate::sql::Param<'_>],
            ) -> Result<u64, tessera_core::StoreError> {
                let done = $crate::sql::query(statement, params)
                    .execute(&mut **self)
                    .await
                    .map_err(<$db as $crate::sql::StoreErrors>::store_error)?;
                Ok(done.rows_affected())
            }

            async fn fetch_optional(
                &mut self,
                statement: &str,
                params: &[$crate::sql::Param<'_>],
            ) -> Result<Option<$row>, tessera_core::StoreError> {
                $crate::sql::query(statement, params)
                    .fetch_optional(&mut **self)
                    .await
                    .map_err(<$db as $crate::sql::StoreErrors>::store_error)
            }

            async fn fetch_all(
                &mut self,
                statement: &str,
                params: &[$crate::sql::Param<'_>],
            ) -> Result<Vec<$row>, tessera_core::StoreError> {
                $crate::sql::query(statement, params)
                    .fetch_all(&mut **self)
                    .await
                    .map_err(<$db as $crate::sql::StoreErrors>::store_error)
            }

            async fn commit(self) -> Result<(), tessera_core::StoreError> {
                sqlx::Transaction::commit(self)
                    .await
                    .map_err(<$db as $crate::sql::StoreErrors>::store_error)
            }
        }
    };
}
pub(crate) use impl_db_on_pool;
