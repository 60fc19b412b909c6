//! [`MailStore`](tessera_core::MailStore) in SQL.

use tessera_core::{MailId, QueuedMail, StoreError, Timestamp, UserId};

use super::{Columns, Db, rows, sql_limit};

/// The `mail_queue` columns [`rows::mail`] reads.
pub(crate) const MAIL_COLUMNS: &str =
    "id, user_id, sealed, created_at, not_after, attempts, next_attempt_at, last_error";

pub(crate) async fn enqueue_mail<D: Db>(db: &D, mail: &QueuedMail) -> Result<(), StoreError> {
    db.execute(
        &format!("INSERT INTO mail_queue ({MAIL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
        &[
            mail.id.as_str().into(),
            mail.user_id.as_ref().map(UserId::as_str).into(),
            mail.sealed.as_slice().into(),
            mail.created_at.into(),
            mail.not_after.into(),
            i64::from(mail.attempts).into(),
            mail.next_attempt_at.into(),
            mail.last_error.as_deref().into(),
        ],
    )
    .await?;
    Ok(())
}

/// One statement ([`Dialect::claim_mail`](super::Dialect::claim_mail)): the due mails are
/// chosen and leased at once, so no two claimers get the same one.
pub(crate) async fn claim_mail<D: Db>(
    db: &D,
    now: Timestamp,
    lease_until: Timestamp,
    limit: usize,
) -> Result<Vec<QueuedMail>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut claimed = db
        .fetch_all(
            D::DIALECT.claim_mail,
            &[now.into(), lease_until.into(), sql_limit(limit).into()],
        )
        .await?
        .iter()
        .map(rows::mail)
        .collect::<Result<Vec<_>, _>>()?;
    // RETURNING has no order of its own.
    claimed.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(claimed)
}

pub(crate) async fn delete_mail<D: Db>(db: &D, id: &MailId) -> Result<bool, StoreError> {
    let deleted = db
        .execute(
            "DELETE FROM mail_queue WHERE id = $1",
            &[id.as_str().into()],
        )
        .await?;
    Ok(deleted > 0)
}

pub(crate) async fn retry_mail<D: Db>(
    db: &D,
    id: &MailId,
    next_attempt_at: Timestamp,
    last_error: &str,
) -> Result<bool, StoreError> {
    let changed = db
        .execute(
            "UPDATE mail_queue SET next_attempt_at = $1, last_error = $2 WHERE id = $3",
            &[
                next_attempt_at.into(),
                last_error.into(),
                id.as_str().into(),
            ],
        )
        .await?;
    Ok(changed > 0)
}

pub(crate) async fn queued_mail<D: Db>(db: &D) -> Result<usize, StoreError> {
    let row = db
        .fetch_optional("SELECT count(*) AS queued FROM mail_queue", &[])
        .await?
        .ok_or_else(|| StoreError::Other("count(*) returned no row".into()))?;
    let queued = row.int("queued")?;
    Ok(usize::try_from(queued).unwrap_or(0))
}
