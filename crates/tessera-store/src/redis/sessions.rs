//! Sessions in Redis: see the module documentation of [`super`] for the keys and why.

use std::collections::HashMap;

use ::redis::{cmd, pipe};
use async_trait::async_trait;
use serde_json::Value;
use tessera_core::store::SessionStore;
use tessera_core::{
    AuthContext, ClientInfo, CsrfToken, Session, SessionData, SessionHandle, StoreError, Timestamp,
    TokenHash, UserAgent, UserId,
};

use super::scripts::{
    SESSION_AUTH, SESSION_CREATE, SESSION_DATA, SESSION_DELETE, SESSION_EXPIRE, SESSION_TOUCH,
    SESSIONS_DELETE_OF_USER, SESSIONS_OF_USER, SWEEP_INDEX_PUT,
};
use super::{Conn, MAX_TTL_MS, RedisStore, call, corrupt};

/// How many expired sessions one sweep round trip looks at.
const SWEEP_BATCH: usize = 256;
/// Hex of a SHA-256: the width of the hash at the start of pointer values and index members.
const HASH_HEX: usize = 64;

impl RedisStore {
    /// How long a session's keys live after a write: the lifetime it has left on the caller's
    /// clock, plus the grace.
    fn session_ttl(&self, last_seen_at: Timestamp, expires_at: Timestamp) -> i64 {
        expires_at
            .unix_millis()
            .saturating_sub(last_seen_at.unix_millis())
            .max(0)
            .saturating_add(self.grace_ms)
            .clamp(1, MAX_TTL_MS)
    }

    /// The secret hash (hex) and user of the session `handle` names, if its pointer exists.
    async fn resolve_handle(
        &self,
        conn: &mut Conn,
        handle: &SessionHandle,
    ) -> Result<Option<(String, String)>, StoreError> {
        let value: Option<String> = call(
            "GET session handle",
            cmd("GET")
                .arg(self.keys.handle_pointer(handle.as_str()))
                .query_async(conn),
        )
        .await?;
        value.map(|v| split_hash(&v)).transpose()
    }

    /// Forgets the pointers and the sweep entry of sessions whose hash keys are gone.
    async fn forget_pointers(
        &self,
        conn: &mut Conn,
        user: &str,
        gone: &[(String, String)],
    ) -> Result<(), StoreError> {
        if gone.is_empty() {
            return Ok(());
        }
        let mut p = pipe();
        for (hash, handle) in gone {
            p.del(self.keys.secret_pointer(hash))
                .ignore()
                .del(self.keys.handle_pointer(handle))
                .ignore()
                .zrem(self.keys.session_expiry(), format!("{hash}{user}"))
                .ignore();
        }
        call("forget session pointers", p.query_async::<()>(conn)).await
    }
}

/// `<hash hex><rest>` → (hash hex, rest).
fn split_hash(value: &str) -> Result<(String, String), StoreError> {
    match (value.get(..HASH_HEX), value.get(HASH_HEX..)) {
        (Some(hash), Some(rest))
            if !rest.is_empty() && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Ok((hash.to_owned(), rest.to_owned()))
        }
        _ => Err(corrupt("a session pointer or index entry")),
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A session as hash fields.
fn encode(session: &Session) -> Result<Vec<(&'static str, String)>, StoreError> {
    let data = serde_json::to_string(&session.data)
        .map_err(|e| StoreError::Other(format!("session data does not encode: {e}")))?;
    let mut fields = vec![
        ("handle", session.handle.as_str().to_owned()),
        ("user", session.user_id.as_str().to_owned()),
        ("secret", hex(session.secret_hash.as_bytes())),
        ("csrf", hex(session.csrf_token.as_bytes())),
        ("created", session.created_at.unix_millis().to_string()),
        ("seen", session.last_seen_at.unix_millis().to_string()),
        ("exp", session.expires_at.unix_millis().to_string()),
        ("abs", session.absolute_expires_at.unix_millis().to_string()),
        ("data", data),
        ("ver", session.data_version.to_string()),
        ("auth", session.auth.to_stored()),
    ];
    if let Some(ua) = &session.client.user_agent {
        fields.push(("ua", ua.as_str().to_owned()));
    }
    if let Some(ip) = &session.client.ip {
        fields.push(("ip", ip.to_string()));
    }
    Ok(fields)
}

fn decode(mut fields: HashMap<String, String>) -> Result<Session, StoreError> {
    let mut take = |name: &str| {
        fields
            .remove(name)
            .ok_or_else(|| corrupt(format!("a session without `{name}`")))
    };
    let time = |value: String, name: &str| {
        value
            .parse::<i64>()
            .map(Timestamp::from_unix_millis)
            .map_err(|_| corrupt(format!("session `{name}` {value:?}")))
    };
    let handle = take("handle")?;
    let handle = SessionHandle::parse(&handle)
        .ok_or_else(|| corrupt(format!("session handle {handle:?}")))?;
    let user_id = UserId::from_stored(take("user")?);
    let secret_hash = unhex::<32>(&take("secret")?)
        .map(TokenHash::from_bytes)
        .ok_or_else(|| corrupt("a session's secret hash"))?;
    let csrf_token = unhex::<32>(&take("csrf")?)
        .map(CsrfToken::from_bytes)
        .ok_or_else(|| corrupt("a session's CSRF token"))?;
    let created_at = time(take("created")?, "created")?;
    let last_seen_at = time(take("seen")?, "seen")?;
    let expires_at = time(take("exp")?, "exp")?;
    let absolute_expires_at = time(take("abs")?, "abs")?;
    let data: SessionData =
        serde_json::from_str(&take("data")?).map_err(|e| corrupt(format!("session data: {e}")))?;
    let version = take("ver")?;
    let data_version = version
        .parse::<i64>()
        .map_err(|_| corrupt(format!("session data version {version:?}")))?;
    let ip = match fields.remove("ip") {
        Some(text) => Some(
            text.parse()
                .map_err(|e| corrupt(format!("session client address {text:?}: {e}")))?,
        ),
        None => None,
    };
    let client = ClientInfo {
        user_agent: fields.remove("ua").map(UserAgent::from),
        ip,
    };
    // A session written before the field existed was made by password, at its creation.
    let auth = match fields.remove("auth") {
        Some(text) => AuthContext::from_stored(&text)
            .ok_or_else(|| corrupt(format!("session authentication context {text:?}")))?,
        None => AuthContext::password(created_at),
    };
    Ok(Session {
        handle,
        user_id,
        secret_hash,
        csrf_token,
        created_at,
        last_seen_at,
        expires_at,
        absolute_expires_at,
        client,
        data,
        data_version,
        auth,
    })
}

/// A flat field/value list (HGETALL's reply) as a map.
fn pairs(flat: Vec<String>) -> HashMap<String, String> {
    let mut map = HashMap::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        map.insert(k, v);
    }
    map
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create_session(&self, session: &Session) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let hash = hex(session.secret_hash.as_bytes());
        let user = session.user_id.as_str();
        let ttl = self.session_ttl(session.last_seen_at, session.expires_at);
        let fields = encode(session)?;
        let handle_key = self.keys.handle_pointer(session.handle.as_str());
        let secret_key = self.keys.secret_pointer(&hash);

        // The pointers first: `SET NX` claims the handle and the secret hash, so a clash is
        // found before anything else is written.
        let (handle_claimed, secret_claimed): (Option<String>, Option<String>) = call(
            "claim session handle and secret",
            pipe()
                .cmd("SET")
                .arg(&handle_key)
                .arg(format!("{hash}{user}"))
                .arg("NX")
                .arg("PX")
                .arg(ttl)
                .cmd("SET")
                .arg(&secret_key)
                .arg(user)
                .arg("NX")
                .arg("PX")
                .arg(ttl)
                .query_async(&mut conn),
        )
        .await?;
        if handle_claimed.is_none() || secret_claimed.is_none() {
            // A refused session leaves nothing behind: give back the half that was claimed.
            let mut undo = pipe();
            if handle_claimed.is_some() {
                undo.del(&handle_key).ignore();
            }
            if secret_claimed.is_some() {
                undo.del(&secret_key).ignore();
            }
            call("release session claim", undo.query_async::<()>(&mut conn)).await?;
            return Err(StoreError::Conflict(if handle_claimed.is_none() {
                format!("session handle {} exists", session.handle)
            } else {
                "session secret hash exists".into()
            }));
        }

        let mut p = pipe();
        let mut create = SESSION_CREATE
            .call()
            .key(self.keys.session(user, &hash))
            .key(self.keys.user_sessions(user))
            .arg(ttl)
            .arg(&hash);
        for (name, value) in &fields {
            create = create.arg(*name).arg(value);
        }
        create.add_to(&mut p);
        SWEEP_INDEX_PUT
            .call()
            .key(self.keys.session_expiry())
            .arg(session.expires_at.unix_millis())
            .arg(format!("{hash}{user}"))
            .arg(ttl)
            .add_to(&mut p);
        call("create session", p.query_async::<()>(&mut conn)).await
    }

    async fn session_by_secret(
        &self,
        secret_hash: &TokenHash,
    ) -> Result<Option<Session>, StoreError> {
        let mut conn = self.conn();
        let hash = hex(secret_hash.as_bytes());
        let user: Option<String> = call(
            "GET session pointer",
            cmd("GET")
                .arg(self.keys.secret_pointer(&hash))
                .query_async(&mut conn),
        )
        .await?;
        let Some(user) = user else {
            return Ok(None);
        };
        let fields: HashMap<String, String> = call(
            "HGETALL session",
            cmd("HGETALL")
                .arg(self.keys.session(&user, &hash))
                .query_async(&mut conn),
        )
        .await?;
        if fields.is_empty() {
            // A pointer left by a failure part-way, about to expire.
            return Ok(None);
        }
        decode(fields).map(Some)
    }

    async fn touch_session(
        &self,
        handle: &SessionHandle,
        last_seen_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let Some((hash, user)) = self.resolve_handle(&mut conn, handle).await? else {
            return Ok(false);
        };
        let ttl = self.session_ttl(last_seen_at, expires_at);
        let touched: i64 = call(
            "touch session",
            SESSION_TOUCH
                .call()
                .key(self.keys.session(&user, &hash))
                .key(self.keys.user_sessions(&user))
                .arg(handle.as_str())
                .arg(&hash)
                .arg(last_seen_at.unix_millis())
                .arg(expires_at.unix_millis())
                .arg(ttl)
                .run(&mut conn),
        )
        .await?;
        if touched == 0 {
            return Ok(false);
        }
        let mut p = pipe();
        p.pexpire(self.keys.secret_pointer(&hash), ttl)
            .ignore()
            .pexpire(self.keys.handle_pointer(handle.as_str()), ttl)
            .ignore();
        SWEEP_INDEX_PUT
            .call()
            .key(self.keys.session_expiry())
            .arg(expires_at.unix_millis())
            .arg(format!("{hash}{user}"))
            .arg(ttl)
            .add_to(&mut p);
        call("extend session pointers", p.query_async::<()>(&mut conn)).await?;
        Ok(true)
    }

    async fn replace_session_data(
        &self,
        handle: &SessionHandle,
        expected_version: i64,
        data: &Value,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let Some((hash, user)) = self.resolve_handle(&mut conn, handle).await? else {
            return Ok(false);
        };
        let Some(next_version) = expected_version.checked_add(1) else {
            return Ok(false);
        };
        let data = serde_json::to_string(data)
            .map_err(|e| StoreError::Other(format!("session data does not encode: {e}")))?;
        let replaced: i64 = call(
            "replace session data",
            SESSION_DATA
                .call()
                .key(self.keys.session(&user, &hash))
                .arg(handle.as_str())
                .arg(expected_version.to_string())
                .arg(next_version.to_string())
                .arg(data)
                .run(&mut conn),
        )
        .await?;
        Ok(replaced == 1)
    }

    async fn set_session_auth(
        &self,
        handle: &SessionHandle,
        auth: &AuthContext,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let Some((hash, user)) = self.resolve_handle(&mut conn, handle).await? else {
            return Ok(false);
        };
        let written: i64 = call(
            "set session auth",
            SESSION_AUTH
                .call()
                .key(self.keys.session(&user, &hash))
                .arg(handle.as_str())
                .arg(auth.to_stored())
                .run(&mut conn),
        )
        .await?;
        Ok(written == 1)
    }

    async fn delete_session(&self, handle: &SessionHandle) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let Some((hash, user)) = self.resolve_handle(&mut conn, handle).await? else {
            return Ok(false);
        };
        let deleted: i64 = self
            .run_revoking(
                "delete session",
                SESSION_DELETE
                    .call()
                    .key(self.keys.session(&user, &hash))
                    .key(self.keys.user_sessions(&user))
                    .arg(handle.as_str())
                    .arg(&hash),
            )
            .await?;
        // Pointers last, and even when the session was already gone: they point nowhere now.
        self.forget_pointers(&mut conn, &user, &[(hash, handle.as_str().to_owned())])
            .await?;
        Ok(deleted == 1)
    }

    async fn session_owner(&self, handle: &SessionHandle) -> Result<Option<UserId>, StoreError> {
        let mut conn = self.conn();
        let Some((hash, user)) = self.resolve_handle(&mut conn, handle).await? else {
            return Ok(None);
        };
        // The pointer outlives a session that expired: only a session still stored counts.
        let exists: bool = call(
            "EXISTS session",
            cmd("EXISTS")
                .arg(self.keys.session(&user, &hash))
                .query_async(&mut conn),
        )
        .await?;
        Ok(exists.then(|| UserId::from_stored(user)))
    }

    async fn sessions_of_user(&self, user: &UserId) -> Result<Vec<Session>, StoreError> {
        let mut conn = self.conn();
        let listed: Vec<Vec<String>> = call(
            "list sessions of user",
            SESSIONS_OF_USER
                .call()
                .key(self.keys.user_sessions(user.as_str()))
                .arg(self.keys.session_prefix(user.as_str()))
                .run(&mut conn),
        )
        .await?;
        let mut sessions = listed
            .into_iter()
            .map(|flat| decode(pairs(flat)))
            .collect::<Result<Vec<_>, _>>()?;
        // The index is ordered by expiry deadline; the contract's order is oldest first.
        sessions.sort_by(|a, b| (a.created_at, &a.handle).cmp(&(b.created_at, &b.handle)));
        Ok(sessions)
    }

    async fn delete_sessions_of_user(
        &self,
        user: &UserId,
        keep: Option<&SessionHandle>,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let flat: Vec<String> = self
            .run_revoking(
                "delete sessions of user",
                SESSIONS_DELETE_OF_USER
                    .call()
                    .key(self.keys.user_sessions(user.as_str()))
                    .arg(self.keys.session_prefix(user.as_str()))
                    .arg(keep.map_or("", SessionHandle::as_str)),
            )
            .await?;
        let gone: Vec<(String, String)> = flat
            .chunks_exact(2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect();
        self.forget_pointers(&mut conn, user.as_str(), &gone)
            .await?;
        Ok(gone.len())
    }

    async fn delete_expired_sessions(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let index = self.keys.session_expiry();
        let mut deleted = 0;
        while deleted < limit {
            let batch = (limit - deleted).min(SWEEP_BATCH);
            let candidates: Vec<String> = call(
                "find expired sessions",
                cmd("ZRANGEBYSCORE")
                    .arg(&index)
                    .arg("-inf")
                    .arg(now.unix_millis())
                    .arg("LIMIT")
                    .arg(0)
                    .arg(batch)
                    .query_async(&mut conn),
            )
            .await?;
            if candidates.is_empty() {
                break;
            }
            let mut sweep = pipe();
            let mut parsed = Vec::with_capacity(candidates.len());
            let mut cleanup = pipe();
            for member in candidates {
                let Ok((hash, user)) = split_hash(&member) else {
                    tracing::warn!("dropping a malformed entry of the session sweep index");
                    cleanup.zrem(&index, &member).ignore();
                    continue;
                };
                SESSION_EXPIRE
                    .call()
                    .key(self.keys.session(&user, &hash))
                    .key(self.keys.user_sessions(&user))
                    .arg(&hash)
                    .arg(now.unix_millis())
                    .add_to(&mut sweep);
                parsed.push((member, hash));
            }
            let outcomes: Vec<(i64, String)> = if parsed.is_empty() {
                Vec::new()
            } else {
                call("sweep sessions", sweep.query_async(&mut conn)).await?
            };
            for ((member, hash), (outcome, detail)) in parsed.iter().zip(outcomes) {
                match outcome {
                    1 => {
                        deleted += 1;
                        cleanup
                            .del(self.keys.secret_pointer(hash))
                            .ignore()
                            .del(self.keys.handle_pointer(&detail))
                            .ignore()
                            .zrem(&index, member)
                            .ignore();
                    }
                    // Not expired after all (touched since it was indexed): move it.
                    2 => {
                        cleanup
                            .cmd("ZADD")
                            .arg(&index)
                            .arg("XX")
                            .arg(detail)
                            .arg(member)
                            .ignore();
                    }
                    // Gone already (deleted, or expired by its TTL).
                    _ => {
                        cleanup.zrem(&index, member).ignore();
                    }
                }
            }
            call(
                "clean up swept sessions",
                cleanup.query_async::<()>(&mut conn),
            )
            .await?;
        }
        Ok(deleted)
    }
}
