//! The verified-token cache: a repeated token skips parsing and the signature check.
//!
//! Keyed by the token itself and hashed with foldhash (seeded at random per process): hashing a
//! 500-byte token costs tens of nanoseconds where a SHA-256 costs hundreds, and a hit compares the
//! whole token, so a hash collision can only cost a miss, never a wrong answer. Flooding the map
//! with colliding keys is not a concern: only tokens whose signature verified are ever inserted.
//! Bounded by an estimate of bytes held, with quick_cache's eviction policy (S3-FIFO-like:
//! entries seen once leave first).

use quick_cache::Weighter;
use quick_cache::sync::{Cache, DefaultLifecycle};

use crate::claims::VerifiedToken;

/// Bytes per entry beyond the token and the claims: the map slot, the `Arc`, the key object.
const ENTRY_OVERHEAD: u64 = 160;
/// A typical entry, to size the map up front.
const TYPICAL_ENTRY: u64 = 1_024;

#[derive(Clone, Copy)]
struct ByBytes;

impl Weighter<Box<str>, VerifiedToken> for ByBytes {
    fn weight(&self, token: &Box<str>, verified: &VerifiedToken) -> u64 {
        let claims = verified.claims().approximate_size() as u64;
        token.len() as u64 + claims + ENTRY_OVERHEAD
    }
}

pub(crate) struct TokenCache {
    map: Cache<
        Box<str>,
        VerifiedToken,
        ByBytes,
        foldhash::fast::RandomState,
        DefaultLifecycle<Box<str>, VerifiedToken>,
    >,
}

impl TokenCache {
    pub(crate) fn new(capacity_bytes: u64) -> Self {
        let items = usize::try_from((capacity_bytes / TYPICAL_ENTRY).max(16)).unwrap_or(usize::MAX);
        Self {
            map: Cache::with(
                items,
                capacity_bytes.max(1),
                ByBytes,
                foldhash::fast::RandomState::default(),
                DefaultLifecycle::default(),
            ),
        }
    }

    #[inline]
    pub(crate) fn get(&self, token: &str) -> Option<VerifiedToken> {
        self.map.get(token)
    }

    pub(crate) fn insert(&self, token: &str, verified: VerifiedToken) {
        self.map.insert(token.into(), verified);
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn weight(&self) -> u64 {
        self.map.weight()
    }
}
