//! The id of the request being served, so that what one request caused can be found in every
//! place it left a trace: its response, its log lines, its audit events. The HTTP layer sets it
//! for the time a request is handled ([`RequestId::scope`]); the audit log reads it
//! ([`RequestId::current`]) when it records an event. Nothing here knows about HTTP.

use std::fmt;
use std::future::Future;

/// A request id: 1 to [`RequestId::MAX_LEN`] characters of `A-Z a-z 0-9 . _ : -`, either made
/// here ([`RequestId::random`]) or taken from a trusted proxy ([`RequestId::parse`]). It is held
/// inline (no allocation) and is `Copy`, so carrying it costs nothing on the hot path. Not a
/// secret.
///
/// ```
/// use tessera_core::RequestId;
///
/// let id = RequestId::parse(b"edge-7:req.42").expect("a well-formed id");
/// assert_eq!(id.as_str(), "edge-7:req.42");
/// // What could forge or break a log line is refused, not cleaned up.
/// assert!(RequestId::parse(b"42\nlevel=error").is_none());
/// assert!(RequestId::parse(&[b'x'; RequestId::MAX_LEN + 1]).is_none());
///
/// assert_eq!(RequestId::current(), None);
/// id.sync_scope(|| assert_eq!(RequestId::current(), Some(id)));
/// assert_eq!(RequestId::random().as_str().len(), 32);
/// ```
#[derive(Clone, Copy)]
pub struct RequestId {
    len: u8,
    bytes: [u8; RequestId::MAX_LEN],
}

tokio::task_local! {
    static CURRENT: RequestId;
}

/// Lower-case hexadecimal digits, for [`RequestId::random`].
const HEX: &[u8; 16] = b"0123456789abcdef";

impl RequestId {
    /// The longest id accepted from a proxy.
    pub const MAX_LEN: usize = 128;

    /// `text` as a request id, if it has the shape of one (see [`RequestId`]); `None` otherwise
    /// (empty, too long, or any other character: spaces, control characters, non-ASCII).
    pub fn parse(text: &[u8]) -> Option<Self> {
        if text.is_empty() || text.len() > Self::MAX_LEN {
            return None;
        }
        if !text
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        {
            return None;
        }
        let mut bytes = [0u8; Self::MAX_LEN];
        bytes[..text.len()].copy_from_slice(text);
        Some(Self {
            len: text.len() as u8,
            bytes,
        })
    }

    /// A fresh id: 128 bits from the operating system's random source, as 32 hexadecimal
    /// digits. Should that source fail (it does not on a working system), the id is made from
    /// the time and a counter instead: still unique within the process, never a failed request.
    pub fn random() -> Self {
        let mut random = [0u8; 16];
        if getrandom::fill(&mut random).is_err() {
            use std::sync::atomic::{AtomicU64, Ordering};
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            random[..8].copy_from_slice(&nanos.to_be_bytes());
            random[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        }
        let mut bytes = [0u8; Self::MAX_LEN];
        for (i, b) in random.iter().enumerate() {
            bytes[2 * i] = HEX[usize::from(b >> 4)];
            bytes[2 * i + 1] = HEX[usize::from(b & 0x0f)];
        }
        Self { len: 32, bytes }
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        // Only ASCII ever goes in (parse checks it, random writes hex digits).
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// The id's bytes (ASCII).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The id of the request being served by this task, if it is serving one.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|id| *id).ok()
    }

    /// Runs `future` as the handling of the request with this id: [`RequestId::current`] returns
    /// it whenever `future` is being polled.
    pub fn scope<F: Future>(self, future: F) -> tokio::task::futures::TaskLocalFuture<Self, F> {
        CURRENT.scope(self, future)
    }

    /// Runs `f` with [`RequestId::current`] returning this id (for the synchronous part of
    /// starting a request, before its future is polled).
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self, f)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RequestId").field(&self.as_str()).finish()
    }
}

impl PartialEq for RequestId {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for RequestId {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_ids_are_accepted() {
        for good in ["a", "req-1", "01HZX3.abc_def:42", &"x".repeat(128)] {
            let id = RequestId::parse(good.as_bytes()).expect(good);
            assert_eq!(id.as_str(), good);
        }
        for bad in [
            "",
            &"x".repeat(129),
            "has space",
            "crlf\r\nSet-Cookie: x",
            "tab\t",
            "slash/",
            "quote\"",
            "nul\0",
            "é",
        ] {
            assert!(RequestId::parse(bad.as_bytes()).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn random_ids_are_hex_and_differ() {
        let a = RequestId::random();
        let b = RequestId::random();
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(RequestId::parse(a.as_bytes()), Some(a));
    }

    #[tokio::test]
    async fn the_current_id_is_the_scope_s() {
        assert_eq!(RequestId::current(), None);
        let id = RequestId::parse(b"outer").unwrap();
        let seen = id.scope(async { RequestId::current() }).await;
        assert_eq!(seen, Some(id));
        assert_eq!(id.sync_scope(RequestId::current), Some(id));
        assert_eq!(RequestId::current(), None);
    }
}
