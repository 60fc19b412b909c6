//! Rows back into domain values, for both dialects. Whatever a row holds, decoding it is an error
//! at worst ([`StoreError::Other`]), never a panic: a damaged or hand-edited database must not take
//! the server down.

use std::fmt;

use tessera_core::{
    AllowedToken, AuthContext, ClientInfo, CsrfToken, EmailAddress, EventKind, FamilyId, KeyStatus,
    LoginChallenge, LoginModel, MailId, QueuedMail, RefreshFamily, RefreshTokenRecord,
    RevocationEntry, Revoked, SecurityEvent, Session, SessionHandle, SigningAlgorithm, StoreError,
    StoredKey, Timestamp, TokenHash, TotpFactor, User, UserAgent, UserEmail, UserId, Username,
};

use super::Columns;

/// The `kind` column of `revocations`, one per [`Revoked`] variant.
pub(crate) const REVOKED_TOKEN: &str = "token";
pub(crate) const REVOKED_FAMILY: &str = "family";
pub(crate) const REVOKED_USER_BEFORE: &str = "user_before";

pub(crate) fn corrupt(what: &str, detail: impl fmt::Display) -> StoreError {
    StoreError::Other(format!("stored {what} does not decode: {detail}"))
}

pub(crate) fn millis(row: &impl Columns, name: &str) -> Result<Timestamp, StoreError> {
    row.int(name).map(Timestamp::from_unix_millis)
}

pub(crate) fn optional_millis(
    row: &impl Columns,
    name: &str,
) -> Result<Option<Timestamp>, StoreError> {
    Ok(row.optional_int(name)?.map(Timestamp::from_unix_millis))
}

fn token_hash(row: &impl Columns, name: &str, what: &str) -> Result<TokenHash, StoreError> {
    TokenHash::from_slice(&row.bytes(name)?).ok_or_else(|| corrupt(what, "not 32 bytes"))
}

fn client(row: &impl Columns) -> Result<ClientInfo, StoreError> {
    let ip = match row.optional_text("ip")? {
        Some(text) => Some(
            text.parse()
                .map_err(|e| corrupt("client address", format!("{text:?}: {e}")))?,
        ),
        None => None,
    };
    Ok(ClientInfo {
        user_agent: row.optional_text("user_agent")?.map(UserAgent::from),
        ip,
    })
}

/// The `auth_context` column; a login stored before it existed was made by password at
/// `created_at`.
fn auth_context(row: &impl Columns, created_at: Timestamp) -> Result<AuthContext, StoreError> {
    match row.optional_text("auth_context")? {
        Some(text) => AuthContext::from_stored(&text)
            .ok_or_else(|| corrupt("authentication context", format!("{text:?}"))),
        None => Ok(AuthContext::password(created_at)),
    }
}

/// From `users`: the dialect's user columns, with `roles` as JSON text.
pub(crate) fn user(row: &impl Columns) -> Result<User, StoreError> {
    let roles = row.text("roles")?;
    // The key is derived from the address again: `email_key` is there for the index.
    let email = match row.optional_text("email")? {
        Some(address) => Some(UserEmail {
            address: EmailAddress::from_stored(address),
            verified: row.flag("email_verified")?,
        }),
        None => None,
    };
    Ok(User {
        id: UserId::from_stored(row.text("id")?),
        username: Username::from_stored(row.text("username")?),
        password_hash: row.text("password_hash")?,
        roles: serde_json::from_str(&roles).map_err(|e| corrupt("user roles", e))?,
        disabled: row.flag("disabled")?,
        created_at: millis(row, "created_at")?,
        updated_at: millis(row, "updated_at")?,
        not_before: millis(row, "not_before")?,
        email,
    })
}

/// From `sessions`: the dialect's session columns, with `data` as JSON text.
pub(crate) fn session(row: &impl Columns) -> Result<Session, StoreError> {
    let csrf_token = row.bytes("csrf_token")?;
    let data = row.text("data")?;
    let handle = row.text("handle")?;
    Ok(Session {
        handle: SessionHandle::parse(&handle)
            .ok_or_else(|| corrupt("session handle", format!("{handle:?}")))?,
        user_id: UserId::from_stored(row.text("user_id")?),
        secret_hash: token_hash(row, "secret_hash", "session secret hash")?,
        csrf_token: <[u8; 32]>::try_from(csrf_token.as_slice())
            .map(CsrfToken::from_bytes)
            .map_err(|_| corrupt("session CSRF token", "not 32 bytes"))?,
        created_at: millis(row, "created_at")?,
        last_seen_at: millis(row, "last_seen_at")?,
        expires_at: millis(row, "expires_at")?,
        absolute_expires_at: millis(row, "absolute_expires_at")?,
        client: client(row)?,
        data: serde_json::from_str(&data).map_err(|e| corrupt("session data", e))?,
        data_version: row.int("data_version")?,
        auth: auth_context(row, millis(row, "created_at")?)?,
    })
}

/// From `signing_keys`: [`KEY_COLUMNS`](super::keys::KEY_COLUMNS).
pub(crate) fn key(row: &impl Columns) -> Result<StoredKey, StoreError> {
    let algorithm = row.text("algorithm")?;
    let status = row.text("status")?;
    Ok(StoredKey {
        kid: row.text("kid")?,
        algorithm: SigningAlgorithm::parse(&algorithm)
            .ok_or_else(|| corrupt("key algorithm", format!("unknown algorithm {algorithm:?}")))?,
        status: KeyStatus::parse(&status)
            .ok_or_else(|| corrupt("key status", format!("unknown status {status:?}")))?,
        sealed_private: row.bytes("sealed_private")?,
        public_jwk: row.optional_text("public_jwk")?,
        created_at: millis(row, "created_at")?,
        rotated_at: optional_millis(row, "rotated_at")?,
        retired_at: optional_millis(row, "retired_at")?,
    })
}

/// From `refresh_families f`: [`FAMILY_COLUMNS`](super::refresh::FAMILY_COLUMNS).
pub(crate) fn family(row: &impl Columns) -> Result<RefreshFamily, StoreError> {
    let model = row.text("model")?;
    Ok(RefreshFamily {
        id: FamilyId::from_stored(row.text("id")?),
        user_id: UserId::from_stored(row.text("user_id")?),
        model: LoginModel::parse(&model)
            .ok_or_else(|| corrupt("family login model", format!("unknown model {model:?}")))?,
        created_at: millis(row, "created_at")?,
        last_used_at: millis(row, "last_used_at")?,
        expires_at: millis(row, "expires_at")?,
        absolute_expires_at: millis(row, "absolute_expires_at")?,
        revoked_at: optional_millis(row, "revoked_at")?,
        revoked_reason: row.optional_text("revoked_reason")?,
        client: client(row)?,
        generation: generation(row, "family_generation")?,
        dpop_jkt: row.optional_text("dpop_jkt")?,
        auth: auth_context(row, millis(row, "created_at")?)?,
    })
}

/// From `login_challenges`: [`CHALLENGE_COLUMNS`](super::second_factor::CHALLENGE_COLUMNS).
pub(crate) fn challenge(row: &impl Columns) -> Result<LoginChallenge, StoreError> {
    let model = row.text("model")?;
    Ok(LoginChallenge {
        hash: token_hash(row, "hash", "challenge hash")?,
        user_id: UserId::from_stored(row.text("user_id")?),
        model: LoginModel::parse(&model)
            .ok_or_else(|| corrupt("challenge login model", format!("unknown model {model:?}")))?,
        user_not_before: millis(row, "user_not_before")?,
        client: client(row)?,
        created_at: millis(row, "created_at")?,
        expires_at: millis(row, "expires_at")?,
        attempts: u32::try_from(row.int("attempts")?)
            .map_err(|e| corrupt("challenge attempts", e))?,
        dpop_jkt: row.optional_text("dpop_jkt")?,
    })
}

/// From `totp_factors`: [`TOTP_COLUMNS`](super::second_factor::TOTP_COLUMNS).
pub(crate) fn totp_factor(row: &impl Columns) -> Result<TotpFactor, StoreError> {
    Ok(TotpFactor {
        user_id: UserId::from_stored(row.text("user_id")?),
        sealed_secret: row.bytes("sealed_secret")?,
        created_at: millis(row, "created_at")?,
        confirmed_at: optional_millis(row, "confirmed_at")?,
        last_step: row.optional_int("last_step")?,
    })
}

/// From `refresh_tokens t`: [`TOKEN_COLUMNS`](super::refresh::TOKEN_COLUMNS).
pub(crate) fn refresh_token(row: &impl Columns) -> Result<RefreshTokenRecord, StoreError> {
    Ok(RefreshTokenRecord {
        hash: token_hash(row, "hash", "refresh token hash")?,
        family_id: FamilyId::from_stored(row.text("family_id")?),
        issued_at: millis(row, "issued_at")?,
        rotated_at: optional_millis(row, "rotated_at")?,
        generation: generation(row, "token_generation")?,
    })
}

/// A family's or a token's generation: a count of rotations, never negative.
pub(crate) fn generation(row: &impl Columns, name: &str) -> Result<u32, StoreError> {
    let value = row.int(name)?;
    u32::try_from(value)
        .map_err(|_| corrupt("refresh generation", format!("{value} is out of range")))
}

/// `(kind, subject, before)` as the `revocations` table keeps them.
pub(crate) fn revocation_columns(revoked: &Revoked) -> (&'static str, &str, Option<i64>) {
    match revoked {
        Revoked::Token { jti } => (REVOKED_TOKEN, jti.as_str(), None),
        Revoked::Family { id } => (REVOKED_FAMILY, id.as_str(), None),
        Revoked::UserBefore { user, before } => (
            REVOKED_USER_BEFORE,
            user.as_str(),
            Some(before.unix_millis()),
        ),
    }
}

/// From `revocations`: `kind, subject, before, expires_at`.
pub(crate) fn revocation(row: &impl Columns) -> Result<RevocationEntry, StoreError> {
    let kind = row.text("kind")?;
    let subject = row.text("subject")?;
    let before = optional_millis(row, "before")?;
    let revoked = match (kind.as_str(), before) {
        (REVOKED_TOKEN, None) => Revoked::Token { jti: subject },
        (REVOKED_FAMILY, None) => Revoked::Family {
            id: FamilyId::from_stored(subject),
        },
        (REVOKED_USER_BEFORE, Some(before)) => Revoked::UserBefore {
            user: UserId::from_stored(subject),
            before,
        },
        (kind, before) => {
            return Err(corrupt(
                "revocation",
                format!("kind {kind:?} with before {before:?}"),
            ));
        }
    };
    Ok(RevocationEntry {
        revoked,
        expires_at: millis(row, "expires_at")?,
    })
}

/// From `allowed_tokens`: `jti, family_id, user_id, expires_at`.
pub(crate) fn allowed(row: &impl Columns) -> Result<AllowedToken, StoreError> {
    Ok(AllowedToken {
        jti: row.text("jti")?,
        family_id: FamilyId::from_stored(row.text("family_id")?),
        user_id: UserId::from_stored(row.text("user_id")?),
        expires_at: millis(row, "expires_at")?,
    })
}

/// From `security_events`: the dialect's event columns, with `detail` as JSON text.
pub(crate) fn event(row: &impl Columns) -> Result<SecurityEvent, StoreError> {
    let kind = row.text("kind")?;
    let detail = row.text("detail")?;
    Ok(SecurityEvent {
        id: row.int("id")?,
        at: millis(row, "at")?,
        kind: EventKind::parse(&kind)
            .ok_or_else(|| corrupt("event kind", format!("unknown kind {kind:?}")))?,
        user_id: row.optional_text("user_id")?.map(UserId::from_stored),
        detail: serde_json::from_str(&detail).map_err(|e| corrupt("event detail", e))?,
    })
}

/// From `mail_queue`: [`MAIL_COLUMNS`](super::mail::MAIL_COLUMNS).
pub(crate) fn mail(row: &impl Columns) -> Result<QueuedMail, StoreError> {
    let attempts = row.int("attempts")?;
    Ok(QueuedMail {
        id: MailId::from_stored(row.text("id")?),
        user_id: row.optional_text("user_id")?.map(UserId::from_stored),
        sealed: row.bytes("sealed")?,
        created_at: millis(row, "created_at")?,
        not_after: millis(row, "not_after")?,
        attempts: u32::try_from(attempts)
            .map_err(|_| corrupt("mail attempts", format!("{attempts} is out of range")))?,
        next_attempt_at: millis(row, "next_attempt_at")?,
        last_error: row.optional_text("last_error")?,
    })
}
