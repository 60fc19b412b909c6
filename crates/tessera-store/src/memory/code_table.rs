//! The memory store's mailed codes, found by hash, by account and purpose, and by expiry: the
//! indexes `account_codes` has in SQL.

use std::collections::{BTreeSet, HashMap, HashSet};

use tessera_core::{AccountCode, CodePurpose, Timestamp, TokenHash, UserId};

#[derive(Default)]
pub(super) struct CodeTable {
    codes: HashMap<TokenHash, AccountCode>,
    by_user: HashMap<(UserId, CodePurpose), HashSet<TokenHash>>,
    /// `(expires_at, hash)`: the sweep walks only the expired prefix. Bytes, as `TokenHash` has
    /// no order.
    by_expiry: BTreeSet<(Timestamp, [u8; 32])>,
}

impl CodeTable {
    pub(super) fn contains(&self, hash: &TokenHash) -> bool {
        self.codes.contains_key(hash)
    }

    pub(super) fn get(&self, hash: &TokenHash) -> Option<&AccountCode> {
        self.codes.get(hash)
    }

    /// Adds a code whose hash is not in the table yet.
    pub(super) fn insert(&mut self, code: AccountCode) {
        self.by_user
            .entry((code.user_id.clone(), code.purpose))
            .or_default()
            .insert(code.hash);
        self.by_expiry
            .insert((code.expires_at, *code.hash.as_bytes()));
        self.codes.insert(code.hash, code);
    }

    pub(super) fn remove(&mut self, hash: &TokenHash) -> Option<AccountCode> {
        let code = self.codes.remove(hash)?;
        self.by_expiry
            .remove(&(code.expires_at, *code.hash.as_bytes()));
        let key = (code.user_id.clone(), code.purpose);
        if let Some(hashes) = self.by_user.get_mut(&key) {
            hashes.remove(hash);
            if hashes.is_empty() {
                self.by_user.remove(&key);
            }
        }
        Some(code)
    }

    /// Removes every code of `user` for `purpose`.
    pub(super) fn remove_of_user(&mut self, user: &UserId, purpose: CodePurpose) {
        let hashes = self
            .by_user
            .remove(&(user.clone(), purpose))
            .unwrap_or_default();
        for hash in &hashes {
            self.remove(hash);
        }
    }

    /// Removes up to `limit` codes whose `expires_at` is at or before `now`; how many went.
    pub(super) fn remove_expired(&mut self, now: Timestamp, limit: usize) -> usize {
        let expired: Vec<TokenHash> = self
            .by_expiry
            .iter()
            .take_while(|(expires_at, _)| *expires_at <= now)
            .take(limit)
            .map(|(_, hash)| TokenHash::from_bytes(*hash))
            .collect();
        for hash in &expired {
            self.remove(hash);
        }
        expired.len()
    }
}
