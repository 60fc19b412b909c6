//! Passkeys in SQL: the part of [`SecondFactorStore`](tessera_core::SecondFactorStore) that
//! keeps registered WebAuthn credentials. Adding one locks the user's row first (as every
//! writer of a user's factors does), so the per-account limit holds under concurrent
//! registrations; the credential id is unique across every account.

use tessera_core::{StoreError, StoredPasskey, Timestamp, UserId};

use super::{Columns, Db, Tx, rows};

const COLUMNS: &str =
    "id, user_id, credential_id, name, credential, sign_count, created_at, last_used_at";

fn passkey(row: &impl Columns) -> Result<StoredPasskey, StoreError> {
    let count = row.int("sign_count")?;
    Ok(StoredPasskey {
        id: row.text("id")?,
        user_id: UserId::from_stored(row.text("user_id")?),
        credential_id: row.bytes("credential_id")?,
        name: row.text("name")?,
        credential: row.text("credential")?,
        sign_count: u32::try_from(count)
            .map_err(|_| rows::corrupt("passkey sign count", format!("{count} is out of range")))?,
        created_at: rows::millis(row, "created_at")?,
        last_used_at: rows::optional_millis(row, "last_used_at")?,
    })
}

pub(crate) async fn add_passkey<D: Db>(
    db: &D,
    passkey: &StoredPasskey,
    max: usize,
) -> Result<bool, StoreError> {
    let mut tx = db.begin().await?;
    if tx
        .fetch_optional(D::DIALECT.lock_user, &[passkey.user_id.as_str().into()])
        .await?
        .is_none()
    {
        return Ok(false);
    }
    let held = tx
        .fetch_optional(
            "SELECT COUNT(*) AS n FROM passkeys WHERE user_id = $1",
            &[passkey.user_id.as_str().into()],
        )
        .await?
        .map(|row| row.int("n"))
        .transpose()?
        .unwrap_or(0);
    if usize::try_from(held).unwrap_or(usize::MAX) >= max {
        return Ok(false);
    }
    // A credential id registered already (to anyone) writes nothing.
    let written = tx
        .execute(
            "INSERT INTO passkeys (id, user_id, credential_id, name, credential, sign_count, \
             created_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (credential_id) DO NOTHING",
            &[
                passkey.id.as_str().into(),
                passkey.user_id.as_str().into(),
                passkey.credential_id.as_slice().into(),
                passkey.name.as_str().into(),
                passkey.credential.as_str().into(),
                i64::from(passkey.sign_count).into(),
                passkey.created_at.into(),
                passkey.last_used_at.into(),
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(written > 0)
}

pub(crate) async fn passkeys_of<D: Db>(
    db: &D,
    user: &UserId,
) -> Result<Vec<StoredPasskey>, StoreError> {
    db.fetch_all(
        &format!("SELECT {COLUMNS} FROM passkeys WHERE user_id = $1 ORDER BY created_at, id"),
        &[user.as_str().into()],
    )
    .await?
    .iter()
    .map(passkey)
    .collect()
}

pub(crate) async fn passkey_by_credential<D: Db>(
    db: &D,
    credential_id: &[u8],
) -> Result<Option<StoredPasskey>, StoreError> {
    db.fetch_optional(
        &format!("SELECT {COLUMNS} FROM passkeys WHERE credential_id = $1"),
        &[credential_id.into()],
    )
    .await?
    .as_ref()
    .map(passkey)
    .transpose()
}

pub(crate) async fn passkey_used<D: Db>(
    db: &D,
    credential_id: &[u8],
    credential: &str,
    sign_count: u32,
    at: Timestamp,
) -> Result<bool, StoreError> {
    // One statement whose condition makes it atomic: of two uses with one counter value, the
    // second finds the counter moved (PostgreSQL re-checks the condition on the updated row).
    let changed = db
        .execute(
            "UPDATE passkeys SET credential = $2, sign_count = $3, last_used_at = $4 \
             WHERE credential_id = $1 AND (sign_count < $3 OR (sign_count = 0 AND $3 = 0))",
            &[
                credential_id.into(),
                credential.into(),
                i64::from(sign_count).into(),
                at.into(),
            ],
        )
        .await?;
    Ok(changed > 0)
}

pub(crate) async fn rename_passkey<D: Db>(
    db: &D,
    user: &UserId,
    id: &str,
    name: &str,
) -> Result<bool, StoreError> {
    let changed = db
        .execute(
            "UPDATE passkeys SET name = $3 WHERE user_id = $1 AND id = $2",
            &[user.as_str().into(), id.into(), name.into()],
        )
        .await?;
    Ok(changed > 0)
}

pub(crate) async fn delete_passkey<D: Db>(
    db: &D,
    user: &UserId,
    id: &str,
) -> Result<bool, StoreError> {
    let deleted = db
        .execute(
            "DELETE FROM passkeys WHERE user_id = $1 AND id = $2",
            &[user.as_str().into(), id.into()],
        )
        .await?;
    Ok(deleted > 0)
}

pub(crate) async fn delete_passkeys<D: Db>(db: &D, user: &UserId) -> Result<usize, StoreError> {
    let deleted = db
        .execute(
            "DELETE FROM passkeys WHERE user_id = $1",
            &[user.as_str().into()],
        )
        .await?;
    Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
}
