//! [`KeyStore`](tessera_core::KeyStore) in SQL.

use tessera_core::{StoreError, StoredKey, Timestamp};

use super::{Db, rows};

/// The `signing_keys` columns [`rows::key`] reads.
pub(crate) const KEY_COLUMNS: &str =
    "kid, algorithm, status, sealed_private, public_jwk, created_at, rotated_at, retired_at";

pub(crate) async fn insert_key<D: Db>(db: &D, key: &StoredKey) -> Result<(), StoreError> {
    db.execute(
        &format!(
            "INSERT INTO signing_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ),
        &[
            key.kid.as_str().into(),
            key.algorithm.as_str().into(),
            key.status.as_str().into(),
            key.sealed_private.as_slice().into(),
            key.public_jwk.as_deref().into(),
            key.created_at.into(),
            key.rotated_at.into(),
            key.retired_at.into(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn keys<D: Db>(db: &D) -> Result<Vec<StoredKey>, StoreError> {
    db.fetch_all(
        &format!("SELECT {KEY_COLUMNS} FROM signing_keys ORDER BY created_at, kid"),
        &[],
    )
    .await?
    .iter()
    .map(rows::key)
    .collect()
}

pub(crate) async fn mark_key_rotated<D: Db>(
    db: &D,
    kid: &str,
    at: Timestamp,
) -> Result<bool, StoreError> {
    let changed = db
        .execute(
            "UPDATE signing_keys SET status = 'rotated', rotated_at = $1 \
             WHERE kid = $2 AND status = 'active'",
            &[at.into(), kid.into()],
        )
        .await?;
    Ok(changed > 0)
}

pub(crate) async fn mark_key_retired<D: Db>(
    db: &D,
    kid: &str,
    at: Timestamp,
) -> Result<bool, StoreError> {
    let changed = db
        .execute(
            "UPDATE signing_keys SET status = 'retired', retired_at = $1 \
             WHERE kid = $2 AND status <> 'retired'",
            &[at.into(), kid.into()],
        )
        .await?;
    Ok(changed > 0)
}
