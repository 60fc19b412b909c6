//! [`EventStore`](tessera_core::EventStore) in SQL.

use tessera_core::{NewEvent, SecurityEvent, StoreError, UserId};

use super::{Db, json_error, rows, sql_limit};

pub(crate) async fn record_event<D: Db>(db: &D, event: &NewEvent) -> Result<(), StoreError> {
    let detail = serde_json::to_string(&event.detail).map_err(json_error)?;
    db.execute(
        D::DIALECT.insert_event,
        &[
            event.at.into(),
            event.kind.as_str().into(),
            event.user_id.as_ref().map(UserId::as_str).into(),
            detail.as_str().into(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn events<D: Db>(
    db: &D,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<SecurityEvent>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let columns = D::DIALECT.event_columns;
    let limit = sql_limit(limit);
    let rows = match before {
        Some(before) => {
            db.fetch_all(
                &format!(
                    "SELECT {columns} FROM security_events WHERE id < $1 \
                     ORDER BY id DESC LIMIT $2"
                ),
                &[before.into(), limit.into()],
            )
            .await?
        }
        None => {
            db.fetch_all(
                &format!("SELECT {columns} FROM security_events ORDER BY id DESC LIMIT $1"),
                &[limit.into()],
            )
            .await?
        }
    };
    rows.iter().map(rows::event).collect()
}
