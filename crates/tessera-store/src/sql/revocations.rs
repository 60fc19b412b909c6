//! [`RevocationStore`](tessera_core::RevocationStore) in SQL.

use tessera_core::{AllowedToken, FamilyId, RevocationEntry, StoreError, Timestamp, UserId};

use super::{Db, rows, sql_count};

pub(crate) async fn add_revocation<D: Db>(
    db: &D,
    entry: &RevocationEntry,
) -> Result<(), StoreError> {
    let (kind, subject, before) = rows::revocation_columns(&entry.revoked);
    // Recorded twice, an entry lasts as long as the later of the two asks.
    db.execute(
        D::DIALECT.add_revocation,
        &[
            kind.into(),
            subject.into(),
            before.into(),
            entry.expires_at.into(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn revocations<D: Db>(
    db: &D,
    now: Timestamp,
) -> Result<Vec<RevocationEntry>, StoreError> {
    db.fetch_all(
        "SELECT kind, subject, before, expires_at FROM revocations WHERE expires_at > $1 \
         ORDER BY expires_at, kind, subject, before",
        &[now.into()],
    )
    .await?
    .iter()
    .map(rows::revocation)
    .collect()
}

pub(crate) async fn allow_token<D: Db>(db: &D, token: &AllowedToken) -> Result<(), StoreError> {
    // Recorded again, a jti takes the new record's place.
    db.execute(
        "INSERT INTO allowed_tokens (jti, family_id, user_id, expires_at) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (jti) DO UPDATE SET family_id = excluded.family_id, \
         user_id = excluded.user_id, expires_at = excluded.expires_at",
        &[
            token.jti.as_str().into(),
            token.family_id.as_str().into(),
            token.user_id.as_str().into(),
            token.expires_at.into(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn allowed_tokens<D: Db>(
    db: &D,
    now: Timestamp,
) -> Result<Vec<AllowedToken>, StoreError> {
    db.fetch_all(
        "SELECT jti, family_id, user_id, expires_at FROM allowed_tokens \
         WHERE expires_at > $1 ORDER BY expires_at, jti",
        &[now.into()],
    )
    .await?
    .iter()
    .map(rows::allowed)
    .collect()
}

pub(crate) async fn disallow_token<D: Db>(db: &D, jti: &str) -> Result<bool, StoreError> {
    let deleted = db
        .execute("DELETE FROM allowed_tokens WHERE jti = $1", &[jti.into()])
        .await?;
    Ok(deleted > 0)
}

pub(crate) async fn disallow_family<D: Db>(db: &D, id: &FamilyId) -> Result<usize, StoreError> {
    let deleted = db
        .execute(
            "DELETE FROM allowed_tokens WHERE family_id = $1",
            &[id.as_str().into()],
        )
        .await?;
    Ok(sql_count(deleted))
}

pub(crate) async fn disallow_user<D: Db>(db: &D, user: &UserId) -> Result<usize, StoreError> {
    let deleted = db
        .execute(
            "DELETE FROM allowed_tokens WHERE user_id = $1",
            &[user.as_str().into()],
        )
        .await?;
    Ok(sql_count(deleted))
}
