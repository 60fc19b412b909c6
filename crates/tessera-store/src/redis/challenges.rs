//! Login challenges in Redis, beside the sessions they lead to: one hash per challenge
//! (`P{ch}:<hash>`, `<hash>` the hex SHA-256 of its secret) that expires with it, and an index
//! by `expires_at` (`P{ch}:exp`) for the sweep. Counting an attempt, using one up and the sweep
//! are each one script, so concurrent requests cannot both take the last attempt or both log in.

use std::collections::HashMap;

use ::redis::cmd;
use async_trait::async_trait;
use tessera_core::store::ChallengeStore;
use tessera_core::{
    ClientInfo, LoginChallenge, LoginModel, StoreError, Timestamp, TokenHash, UserAgent, UserId,
};

use super::scripts::{CHALLENGE_ATTEMPT, CHALLENGE_CREATE, CHALLENGE_DELETE, CHALLENGE_SWEEP_ONE};
use super::sessions::hex;
use super::{MAX_TTL_MS, RedisStore, call, corrupt};

impl RedisStore {
    fn challenge_key(&self, hash: &str) -> String {
        format!("{}{{ch}}:{hash}", self.prefix())
    }

    fn challenge_index(&self) -> String {
        format!("{}{{ch}}:exp", self.prefix())
    }
}

fn decode(hash: &TokenHash, flat: Vec<String>) -> Result<LoginChallenge, StoreError> {
    let mut fields: HashMap<String, String> = HashMap::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        fields.insert(k, v);
    }
    let mut take = |name: &str| {
        fields
            .remove(name)
            .ok_or_else(|| corrupt(format!("a login challenge without `{name}`")))
    };
    let int = |value: String, name: &str| {
        value
            .parse::<i64>()
            .map_err(|_| corrupt(format!("login challenge `{name}` {value:?}")))
    };
    let user_id = UserId::from_stored(take("user")?);
    let model = take("model")?;
    let model = LoginModel::parse(&model)
        .ok_or_else(|| corrupt(format!("login challenge model {model:?}")))?;
    let user_not_before = Timestamp::from_unix_millis(int(take("nb")?, "nb")?);
    let created_at = Timestamp::from_unix_millis(int(take("created")?, "created")?);
    let expires_at = Timestamp::from_unix_millis(int(take("exp")?, "exp")?);
    let attempts = u32::try_from(int(take("attempts")?, "attempts")?)
        .map_err(|_| corrupt("login challenge attempts"))?;
    let ip = match fields.remove("ip") {
        Some(text) => Some(
            text.parse()
                .map_err(|e| corrupt(format!("login challenge address {text:?}: {e}")))?,
        ),
        None => None,
    };
    Ok(LoginChallenge {
        hash: *hash,
        user_id,
        model,
        user_not_before,
        client: ClientInfo {
            user_agent: fields.remove("ua").map(UserAgent::from),
            ip,
        },
        created_at,
        expires_at,
        attempts,
        dpop_jkt: fields.remove("jkt"),
    })
}

#[async_trait]
impl ChallengeStore for RedisStore {
    async fn create_challenge(&self, challenge: &LoginChallenge) -> Result<(), StoreError> {
        let hash = hex(challenge.hash.as_bytes());
        // The lifetime on the caller's clock, so Redis's clock need not agree; the sweep (by
        // `expires_at`) normally removes it first.
        let ttl = challenge
            .expires_at
            .unix_millis()
            .saturating_sub(challenge.created_at.unix_millis())
            .max(0)
            .saturating_add(self.grace_ms)
            .clamp(1, MAX_TTL_MS);
        let mut fields = vec![
            ("user", challenge.user_id.as_str().to_owned()),
            ("model", challenge.model.as_str().to_owned()),
            ("nb", challenge.user_not_before.unix_millis().to_string()),
            ("created", challenge.created_at.unix_millis().to_string()),
            ("exp", challenge.expires_at.unix_millis().to_string()),
            ("attempts", challenge.attempts.to_string()),
        ];
        if let Some(ua) = &challenge.client.user_agent {
            fields.push(("ua", ua.as_str().to_owned()));
        }
        if let Some(ip) = &challenge.client.ip {
            fields.push(("ip", ip.to_string()));
        }
        if let Some(jkt) = &challenge.dpop_jkt {
            fields.push(("jkt", jkt.clone()));
        }
        let mut script = CHALLENGE_CREATE
            .call()
            .key(self.challenge_key(&hash))
            .key(self.challenge_index())
            .arg(ttl)
            .arg(&hash)
            .arg(challenge.expires_at.unix_millis());
        for (name, value) in &fields {
            script = script.arg(*name).arg(value);
        }
        let mut conn = self.conn();
        let written: i64 = call("create login challenge", script.run(&mut conn)).await?;
        if written == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict("login challenge hash exists".into()))
        }
    }

    async fn attempt_challenge(
        &self,
        hash: &TokenHash,
        now: Timestamp,
        max_attempts: u32,
    ) -> Result<Option<LoginChallenge>, StoreError> {
        let hex_hash = hex(hash.as_bytes());
        let mut conn = self.conn();
        let fields: Option<Vec<String>> = call(
            "attempt login challenge",
            CHALLENGE_ATTEMPT
                .call()
                .key(self.challenge_key(&hex_hash))
                .key(self.challenge_index())
                .arg(now.unix_millis())
                .arg(max_attempts)
                .arg(&hex_hash)
                .run(&mut conn),
        )
        .await?;
        fields.map(|flat| decode(hash, flat)).transpose()
    }

    async fn consume_challenge(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        let hex_hash = hex(hash.as_bytes());
        let mut conn = self.conn();
        let gone: i64 = call(
            "consume login challenge",
            CHALLENGE_DELETE
                .call()
                .key(self.challenge_key(&hex_hash))
                .key(self.challenge_index())
                .arg(&hex_hash)
                .run(&mut conn),
        )
        .await?;
        Ok(gone == 1)
    }

    async fn delete_expired_challenges(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        let mut conn = self.conn();
        let expired: Vec<String> = call(
            "list expired login challenges",
            cmd("ZRANGE")
                .arg(self.challenge_index())
                .arg("-inf")
                .arg(now.unix_millis())
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut conn),
        )
        .await?;
        let mut swept = 0;
        // One script per challenge, each with its keys declared (a Redis Cluster routes by
        // them); a challenge refreshed meanwhile is left alone.
        for hash in expired {
            let gone: i64 = call(
                "sweep login challenge",
                CHALLENGE_SWEEP_ONE
                    .call()
                    .key(self.challenge_key(&hash))
                    .key(self.challenge_index())
                    .arg(&hash)
                    .arg(now.unix_millis())
                    .run(&mut conn),
            )
            .await?;
            swept += usize::try_from(gone).unwrap_or(0);
        }
        Ok(swept)
    }
}
