//! DPoP proofs seen lately, shared by every node: one `SET NX PX` per proof, so a proof replayed
//! to any node within its window finds the key there; Redis forgets it when the window ends.

use tessera_core::{StoreError, Timestamp};

use super::{RedisStore, call};

#[async_trait::async_trait]
impl tessera_core::ProofReplayStore for RedisStore {
    async fn first_use(
        &self,
        key: &[u8; 32],
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let ttl_ms = u64::try_from(expires_at.unix_millis().saturating_sub(now.unix_millis()))
            .unwrap_or(0)
            .max(1);
        let mut conn = self.conn();
        let set: Option<String> = call(
            "record a DPoP proof",
            redis::cmd("SET")
                .arg(self.keys.dpop_proof(key))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .query_async(&mut conn),
        )
        .await?;
        // `OK` when the key was set; nil when it was there already (a replay).
        Ok(set.is_some())
    }

    async fn purge_expired_proofs(&self, _now: Timestamp) -> Result<usize, StoreError> {
        // Every key carries its own expiry.
        Ok(0)
    }
}
