//! [`RefreshStore`](tessera_core::RefreshStore) in SQL, rotation included.

use tessera_core::{
    FamilyId, RefreshFamily, RefreshTokenRecord, Rotation, StoreError, Timestamp, TokenHash,
    UserAgent, UserId,
};

use super::{Columns, Db, Tx, rows, sql_count, sql_limit};

/// Family columns, qualified so that they can be joined with `refresh_tokens t`. The one name
/// both tables use, `generation`, is renamed, so rows are read by bare name either way.
pub(crate) const FAMILY_COLUMNS: &str = "f.id, f.user_id, f.model, f.created_at, f.last_used_at, \
     f.expires_at, f.absolute_expires_at, f.revoked_at, f.revoked_reason, f.user_agent, f.ip, \
     f.generation AS family_generation, f.dpop_jkt, f.auth_context";

/// Token columns, qualified like [`FAMILY_COLUMNS`].
pub(crate) const TOKEN_COLUMNS: &str =
    "t.hash, t.family_id, t.issued_at, t.rotated_at, t.generation AS token_generation";

async fn insert_refresh_token<T: Tx>(
    tx: &mut T,
    token: &RefreshTokenRecord,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO refresh_tokens (hash, family_id, issued_at, rotated_at, generation) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            token.hash.as_bytes().as_slice().into(),
            token.family_id.as_str().into(),
            token.issued_at.into(),
            token.rotated_at.into(),
            i64::from(token.generation).into(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn create_family<D: Db>(
    db: &D,
    family: &RefreshFamily,
    first: &RefreshTokenRecord,
) -> Result<(), StoreError> {
    if first.family_id != family.id {
        return Err(StoreError::Other(format!(
            "the first token of family {} names family {}",
            family.id, first.family_id
        )));
    }
    let ip = family.client.ip.map(|ip| ip.to_string());
    let auth = family.auth.to_stored();
    let mut tx = db.begin().await?;
    tx.execute(
        "INSERT INTO refresh_families (id, user_id, model, created_at, last_used_at, \
         expires_at, absolute_expires_at, revoked_at, revoked_reason, user_agent, ip, generation, \
         dpop_jkt, auth_context) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        &[
            family.id.as_str().into(),
            family.user_id.as_str().into(),
            family.model.as_str().into(),
            family.created_at.into(),
            family.last_used_at.into(),
            family.expires_at.into(),
            family.absolute_expires_at.into(),
            family.revoked_at.into(),
            family.revoked_reason.as_deref().into(),
            family
                .client
                .user_agent
                .as_ref()
                .map(UserAgent::as_str)
                .into(),
            ip.as_deref().into(),
            i64::from(family.generation).into(),
            family.dpop_jkt.as_deref().into(),
            auth.as_str().into(),
        ],
    )
    .await?;
    insert_refresh_token(&mut tx, first).await?;
    tx.commit().await
}

pub(crate) async fn refresh_token<D: Db>(
    db: &D,
    hash: &TokenHash,
) -> Result<Option<(RefreshTokenRecord, RefreshFamily)>, StoreError> {
    let Some(row) = db
        .fetch_optional(
            &format!(
                "SELECT {TOKEN_COLUMNS}, {FAMILY_COLUMNS} FROM refresh_tokens t \
                 JOIN refresh_families f ON f.id = t.family_id WHERE t.hash = $1"
            ),
            &[hash.as_bytes().as_slice().into()],
        )
        .await?
    else {
        return Ok(None);
    };
    Ok(Some((rows::refresh_token(&row)?, rows::family(&row)?)))
}

/// Marks `old` rotated and inserts `new` in its place, atomically: of concurrent callers with the
/// same `old`, exactly one rotates it and the others are told it was rotated already.
///
/// The write comes first. Its conditional UPDATE serializes the callers: in SQLite it takes the
/// database's write lock, so the others run after this transaction and find the token marked; in
/// PostgreSQL it locks the token's row, and the others, waiting on the lock, re-check
/// `rotated_at IS NULL` against the committed row and find it marked.
pub(crate) async fn rotate_refresh_token<D: Db>(
    db: &D,
    old: &TokenHash,
    new: &RefreshTokenRecord,
    now: Timestamp,
    family_expires_at: Timestamp,
) -> Result<Rotation, StoreError> {
    let mut tx = db.begin().await?;
    let rotated = tx
        .fetch_optional(
            "UPDATE refresh_tokens SET rotated_at = $1 WHERE hash = $2 AND rotated_at IS NULL \
             RETURNING family_id, generation",
            &[now.into(), old.as_bytes().as_slice().into()],
        )
        .await?;
    let Some(rotated) = rotated else {
        let row = tx
            .fetch_optional(
                "SELECT rotated_at FROM refresh_tokens WHERE hash = $1",
                &[old.as_bytes().as_slice().into()],
            )
            .await?;
        drop(tx);
        return match row {
            None => Ok(Rotation::Unknown),
            Some(row) => match rows::optional_millis(&row, "rotated_at")? {
                Some(at) => Ok(Rotation::AlreadyRotated { at }),
                // SQLite: cannot happen, we hold the write lock. PostgreSQL: only a token
                // inserted after the UPDATE looked, with this very hash.
                None => Err(StoreError::Other(
                    "refresh token neither rotated nor rotatable".into(),
                )),
            },
        };
    };
    let family_id = FamilyId::from_stored(rotated.text("family_id")?);
    let generation = rows::generation(&rotated, "generation")?;
    // Dropping the transaction (every early return below) rolls the rotation back.
    if new.family_id != family_id {
        return Err(StoreError::Other(format!(
            "a token of family {family_id} cannot rotate into family {}",
            new.family_id
        )));
    }
    if generation.checked_add(1) != Some(new.generation) {
        return Err(StoreError::Other(format!(
            "a token of generation {generation} cannot rotate into generation {}",
            new.generation
        )));
    }
    // The family moves on only from the token's generation and only while it is not revoked.
    // The row's lock (PostgreSQL) or the database's (SQLite) orders this against a concurrent
    // revocation or a sibling's rotation: whichever commits first wins, and the other sees it.
    let moved = tx
        .execute(
            "UPDATE refresh_families SET generation = $1, last_used_at = $2, expires_at = $3 \
             WHERE id = $4 AND generation = $5 AND revoked_at IS NULL",
            &[
                i64::from(new.generation).into(),
                now.into(),
                family_expires_at.into(),
                family_id.as_str().into(),
                i64::from(generation).into(),
            ],
        )
        .await?;
    if moved == 0 {
        let row = tx
            .fetch_optional(
                "SELECT revoked_at FROM refresh_families WHERE id = $1",
                &[family_id.as_str().into()],
            )
            .await?;
        drop(tx);
        return match row {
            None => Ok(Rotation::Unknown),
            Some(row) if rows::optional_millis(&row, "revoked_at")?.is_some() => {
                Ok(Rotation::Revoked)
            }
            Some(_) => Ok(Rotation::Superseded),
        };
    }
    insert_refresh_token(&mut tx, new).await?;
    tx.commit().await?;
    Ok(Rotation::Rotated)
}

pub(crate) async fn add_refresh_token<D: Db>(
    db: &D,
    new: &RefreshTokenRecord,
    now: Timestamp,
    family_expires_at: Timestamp,
) -> Result<bool, StoreError> {
    // The family's row first: the write (SQLite's lock, PostgreSQL's row lock) keeps a
    // revocation from slipping in before the insert.
    let mut tx = db.begin().await?;
    let moved = tx
        .execute(
            "UPDATE refresh_families SET last_used_at = $1, expires_at = $2 \
             WHERE id = $3 AND revoked_at IS NULL AND generation = $4",
            &[
                now.into(),
                family_expires_at.into(),
                new.family_id.as_str().into(),
                i64::from(new.generation).into(),
            ],
        )
        .await?;
    if moved == 0 {
        return Ok(false);
    }
    insert_refresh_token(&mut tx, new).await?;
    tx.commit().await?;
    Ok(true)
}

pub(crate) async fn revoke_family<D: Db>(
    db: &D,
    id: &FamilyId,
    at: Timestamp,
    reason: &str,
) -> Result<bool, StoreError> {
    let changed = db
        .execute(
            "UPDATE refresh_families SET revoked_at = $1, revoked_reason = $2 \
             WHERE id = $3 AND revoked_at IS NULL",
            &[at.into(), reason.into(), id.as_str().into()],
        )
        .await?;
    Ok(changed > 0)
}

pub(crate) async fn family<D: Db>(
    db: &D,
    id: &FamilyId,
) -> Result<Option<RefreshFamily>, StoreError> {
    db.fetch_optional(
        &format!("SELECT {FAMILY_COLUMNS} FROM refresh_families f WHERE f.id = $1"),
        &[id.as_str().into()],
    )
    .await?
    .as_ref()
    .map(rows::family)
    .transpose()
}

pub(crate) async fn families_of_user<D: Db>(
    db: &D,
    user: &UserId,
) -> Result<Vec<RefreshFamily>, StoreError> {
    db.fetch_all(
        &format!(
            "SELECT {FAMILY_COLUMNS} FROM refresh_families f WHERE f.user_id = $1 \
             ORDER BY f.created_at, f.id"
        ),
        &[user.as_str().into()],
    )
    .await?
    .iter()
    .map(rows::family)
    .collect()
}

pub(crate) async fn delete_expired_families<D: Db>(
    db: &D,
    now: Timestamp,
    limit: usize,
) -> Result<usize, StoreError> {
    if limit == 0 {
        return Ok(0);
    }
    // Tokens go by the foreign key's cascade; the count is the families'.
    let deleted = db
        .execute(
            D::DIALECT.delete_expired_families,
            &[now.into(), sql_limit(limit).into()],
        )
        .await?;
    Ok(sql_count(deleted))
}

pub(crate) async fn set_family_auth<D: Db>(
    db: &D,
    id: &FamilyId,
    auth: &tessera_core::AuthContext,
) -> Result<bool, StoreError> {
    let changed = db
        .execute(
            "UPDATE refresh_families SET auth_context = $1 WHERE id = $2 AND revoked_at IS NULL",
            &[auth.to_stored().as_str().into(), id.as_str().into()],
        )
        .await?;
    Ok(changed > 0)
}
