//! Revocations in Redis. Every node holds all of them in memory anyway, so they share one hash tag
//! (`{rev}`, one cluster slot) and each change is one atomic script: the denylist is a zset of
//! entries scored by expiry (`ZADD GT` keeps the later of two), the allowlist a hash of records
//! with an expiry index and per-family and per-user sets, kept exact together.

use std::collections::HashMap;

use ::redis::cmd;
use async_trait::async_trait;
use tessera_core::store::RevocationStore;
use tessera_core::{
    AllowedToken, FamilyId, RevocationEntry, Revoked, StoreError, Timestamp, UserId,
};

use super::scripts::{ALLOW_ADD, ALLOW_REMOVE, ALLOW_REMOVE_SET, DENY_ADD, PURGE};
use super::{MAX_TTL_MS, RedisStore, call, corrupt};

/// How many expired allowlist tokens one purge script removes.
const PURGE_BATCH: usize = 1000;
/// How many allowlist records one `HSCAN` asks for.
const SCAN_COUNT: usize = 1000;

/// A denylist entry as a zset member: the kind, then what it names. The user's entries put the
/// fixed-format `before` first, so the user id (whatever it holds) is simply the rest.
fn member(revoked: &Revoked) -> String {
    match revoked {
        Revoked::Token { jti } => format!("t:{jti}"),
        Revoked::Family { id } => format!("f:{id}"),
        Revoked::UserBefore { user, before } => format!("u:{}:{user}", before.unix_millis()),
    }
}

fn revoked(member: &str) -> Result<Revoked, StoreError> {
    let bad = || corrupt(format!("denylist entry {member:?}"));
    let (kind, rest) = member.split_once(':').ok_or_else(bad)?;
    match kind {
        "t" => Ok(Revoked::Token { jti: rest.into() }),
        "f" => Ok(Revoked::Family {
            id: FamilyId::from_stored(rest.into()),
        }),
        "u" => {
            let (before, user) = rest.split_once(':').ok_or_else(bad)?;
            Ok(Revoked::UserBefore {
                user: UserId::from_stored(user.into()),
                before: Timestamp::from_unix_millis(before.parse().map_err(|_| bad())?),
            })
        }
        _ => Err(bad()),
    }
}

/// A zset score back to milliseconds (scores are doubles; these were written from i64s).
fn score_millis(score: f64) -> Timestamp {
    #[allow(clippy::cast_possible_truncation)]
    Timestamp::from_unix_millis(score as i64)
}

impl RedisStore {
    async fn remove_allowed_set(&self, set: String) -> Result<usize, StoreError> {
        let removed: i64 = self
            .run_revoking(
                "disallow tokens",
                ALLOW_REMOVE_SET
                    .call()
                    .key(self.keys.allowlist())
                    .key(self.keys.allow_expiry())
                    .key(set)
                    .arg(self.keys.allow_base()),
            )
            .await?;
        Ok(usize::try_from(removed).unwrap_or(0))
    }
}

#[async_trait]
impl RevocationStore for RedisStore {
    async fn add_revocation(&self, entry: &RevocationEntry) -> Result<(), StoreError> {
        self.run_revoking(
            "add revocation",
            DENY_ADD
                .call()
                .key(self.keys.denylist())
                .arg(entry.expires_at.unix_millis())
                .arg(member(&entry.revoked))
                .arg(self.grace_ms)
                .arg(MAX_TTL_MS),
        )
        .await
    }

    async fn revocations(&self, now: Timestamp) -> Result<Vec<RevocationEntry>, StoreError> {
        let mut conn = self.conn();
        let rows: Vec<(String, f64)> = call(
            "list revocations",
            cmd("ZRANGEBYSCORE")
                .arg(self.keys.denylist())
                .arg(format!("({}", now.unix_millis()))
                .arg("+inf")
                .arg("WITHSCORES")
                .query_async(&mut conn),
        )
        .await?;
        rows.into_iter()
            .map(|(member, score)| {
                Ok(RevocationEntry {
                    revoked: revoked(&member)?,
                    expires_at: score_millis(score),
                })
            })
            .collect()
    }

    async fn allow_token(&self, token: &AllowedToken) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let record = serde_json::to_string(&(
            token.family_id.as_str(),
            token.user_id.as_str(),
            token.expires_at.unix_millis(),
        ))
        .map_err(|e| StoreError::Other(format!("allowlist record does not encode: {e}")))?;
        call(
            "allow token",
            ALLOW_ADD
                .call()
                .key(self.keys.allowlist())
                .key(self.keys.allow_expiry())
                .key(self.keys.allow_family(token.family_id.as_str()))
                .key(self.keys.allow_user(token.user_id.as_str()))
                .arg(&token.jti)
                .arg(record)
                .arg(token.expires_at.unix_millis())
                .arg(self.grace_ms)
                .arg(MAX_TTL_MS)
                .arg(self.keys.allow_base())
                .run::<()>(&mut conn),
        )
        .await
    }

    async fn allowed_tokens(&self, now: Timestamp) -> Result<Vec<AllowedToken>, StoreError> {
        // A walk over the records, a page per round trip: read at startup and after a gap only.
        let mut conn = self.conn();
        let key = self.keys.allowlist();
        let mut found: HashMap<String, AllowedToken> = HashMap::new();
        let mut cursor = String::from("0");
        loop {
            let (next, page): (String, Vec<(String, String)>) = call(
                "scan allowlist",
                cmd("HSCAN")
                    .arg(&key)
                    .arg(&cursor)
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .query_async(&mut conn),
            )
            .await?;
            for (jti, record) in page {
                let (family, user, expires_at): (String, String, i64) =
                    serde_json::from_str(&record)
                        .map_err(|e| corrupt(format!("allowlist record of {jti:?}: {e}")))?;
                if expires_at > now.unix_millis() {
                    // HSCAN may return a record twice: keyed by jti, it is listed once.
                    found.insert(
                        jti.clone(),
                        AllowedToken {
                            jti,
                            family_id: FamilyId::from_stored(family),
                            user_id: UserId::from_stored(user),
                            expires_at: Timestamp::from_unix_millis(expires_at),
                        },
                    );
                }
            }
            if next == "0" {
                break;
            }
            cursor = next;
        }
        Ok(found.into_values().collect())
    }

    async fn disallow_token(&self, jti: &str) -> Result<bool, StoreError> {
        let removed: i64 = self
            .run_revoking(
                "disallow token",
                ALLOW_REMOVE
                    .call()
                    .key(self.keys.allowlist())
                    .key(self.keys.allow_expiry())
                    .arg(jti)
                    .arg(self.keys.allow_base()),
            )
            .await?;
        Ok(removed == 1)
    }

    async fn disallow_family(&self, id: &FamilyId) -> Result<usize, StoreError> {
        self.remove_allowed_set(self.keys.allow_family(id.as_str()))
            .await
    }

    async fn disallow_user(&self, user: &UserId) -> Result<usize, StoreError> {
        self.remove_allowed_set(self.keys.allow_user(user.as_str()))
            .await
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let mut purged = 0;
        loop {
            let (entries, removed, looked_at): (usize, usize, usize) = call(
                "purge revocations",
                PURGE
                    .call()
                    .key(self.keys.denylist())
                    .key(self.keys.allowlist())
                    .key(self.keys.allow_expiry())
                    .arg(now.unix_millis())
                    .arg(self.keys.allow_base())
                    .arg(PURGE_BATCH)
                    .run(&mut conn),
            )
            .await?;
            purged += entries + removed;
            if looked_at < PURGE_BATCH {
                return Ok(purged);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denylist_members_round_trip() {
        for entry in [
            Revoked::Token {
                jti: "a:b:c ünï".into(),
            },
            Revoked::Family {
                id: FamilyId::from_stored("fam_x:y".into()),
            },
            Revoked::UserBefore {
                user: UserId::from_stored("usr_:{odd}".into()),
                before: Timestamp::from_unix_millis(-5),
            },
        ] {
            assert_eq!(revoked(&member(&entry)).unwrap(), entry);
        }
        assert!(revoked("x:1").is_err());
        assert!(revoked("u:notanumber:usr").is_err());
    }
}
