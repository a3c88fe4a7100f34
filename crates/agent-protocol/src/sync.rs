//! The session handshake of the virtio-serial channel.
//!
//! A virtio-serial port is one byte stream for the life of the VM: it has no
//! connections. The host may connect, die mid-call and reconnect, and bytes
//! of the old session (a half-written request, an unread reply) may still be
//! in flight. So every host connection starts with a handshake:
//!
//! ```text
//! host  -> guest   SANDVM-SYNC <nonce>\n
//! guest -> host    SANDVM-SYNC-OK <nonce>\n     (after it reset its session)
//! ```
//!
//! The guest discards everything until a sync line, then starts a fresh ttrpc
//! session; the host discards everything until the reply carrying its own
//! nonce, so stale bytes of an old session (which the port delivers before the
//! reply) never reach the new one. Inside a session, the guest also looks at
//! the first byte of every ttrpc frame: a frame starts with its 4-byte
//! big-endian length, which is at most [`MAX_FRAME_LEN`], so its first byte is
//! always 0, while a sync line starts with `S`. A sync line at a frame boundary
//! therefore starts a new session at once, even when the guest never saw the
//! host disconnect. See `docs/agent.md`.

/// What the host sends first: `SANDVM-SYNC <nonce>\n`.
pub const SYNC_PREFIX: &[u8] = b"SANDVM-SYNC ";

/// What the guest answers: `SANDVM-SYNC-OK <nonce>\n`.
pub const SYNC_OK_PREFIX: &[u8] = b"SANDVM-SYNC-OK ";

/// Longest nonce accepted.
pub const MAX_NONCE_LEN: usize = 64;

/// Size of a ttrpc frame header (length u32, stream id u32, type u8, flags u8).
pub const FRAME_HEADER_LEN: usize = 10;

/// Largest ttrpc frame payload (ttrpc's own limit, 4 MiB).
pub const MAX_FRAME_LEN: usize = 4 << 20;

/// The sync line for `nonce`.
pub fn sync_line(nonce: &str) -> Vec<u8> {
    [SYNC_PREFIX, nonce.as_bytes(), b"\n"].concat()
}

/// The reply line for `nonce`.
pub fn sync_ok_line(nonce: &str) -> Vec<u8> {
    [SYNC_OK_PREFIX, nonce.as_bytes(), b"\n"].concat()
}

fn valid_nonce(n: &[u8]) -> bool {
    !n.is_empty() && n.len() <= MAX_NONCE_LEN && n.iter().all(u8::is_ascii_alphanumeric)
}

/// Finds `<prefix><nonce>\n` lines in a byte stream, discarding everything
/// else; memory stays bounded whatever the stream holds.
#[derive(Debug)]
pub struct LineScanner {
    prefix: &'static [u8],
    buf: Vec<u8>,
}

impl LineScanner {
    /// A scanner for lines starting with `prefix` ([`SYNC_PREFIX`] or [`SYNC_OK_PREFIX`]).
    pub fn new(prefix: &'static [u8]) -> Self {
        Self {
            prefix,
            buf: Vec::new(),
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next well-formed line's nonce, if one is complete; the bytes
    /// before it are dropped. Call again to look for another.
    pub fn next_nonce(&mut self) -> Option<String> {
        loop {
            let Some(i) = find(&self.buf, self.prefix) else {
                // keep a possible partial prefix at the end, drop the rest
                let keep = self.buf.len().min(self.prefix.len() - 1);
                self.buf.drain(..self.buf.len() - keep);
                return None;
            };
            let start = i + self.prefix.len();
            match self.buf[start..].iter().position(|&b| b == b'\n') {
                Some(n) => {
                    let nonce = self.buf[start..start + n].to_vec();
                    if valid_nonce(&nonce) {
                        self.buf.drain(..start + n + 1);
                        return String::from_utf8(nonce).ok();
                    }
                    self.buf.drain(..i + 1);
                }
                None if self.buf.len() - start > MAX_NONCE_LEN => {
                    self.buf.drain(..i + 1);
                }
                None => {
                    self.buf.drain(..i);
                    return None;
                }
            }
        }
    }

    /// Takes the bytes after the last line returned (the start of the new
    /// session's stream), leaving the scanner empty.
    pub fn take_rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A fresh nonce: 16 hex digits, unique per call in this process and random
/// across processes (std's per-process random hash keys).
pub fn new_nonce() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_sync_line_after_garbage() {
        let mut s = LineScanner::new(SYNC_PREFIX);
        s.push(b"\0\0\0\x05garbage of an old session");
        assert_eq!(s.next_nonce(), None);
        s.push(b"SANDVM-SY");
        assert_eq!(s.next_nonce(), None);
        s.push(b"NC abc123\n\0\0\0\x01rest");
        assert_eq!(s.next_nonce().as_deref(), Some("abc123"));
        assert_eq!(s.take_rest(), b"\0\0\0\x01rest");
    }

    #[test]
    fn ok_lines_are_not_sync_lines() {
        let mut s = LineScanner::new(SYNC_PREFIX);
        s.push(&sync_ok_line("n1"));
        assert_eq!(s.next_nonce(), None);
        let mut ok = LineScanner::new(SYNC_OK_PREFIX);
        ok.push(b"stale reply bytes");
        ok.push(&sync_ok_line("old"));
        ok.push(&sync_ok_line("new"));
        assert_eq!(ok.next_nonce().as_deref(), Some("old"));
        assert_eq!(ok.next_nonce().as_deref(), Some("new"));
    }

    #[test]
    fn bad_or_overlong_nonces_are_skipped_and_memory_stays_bounded() {
        let mut s = LineScanner::new(SYNC_PREFIX);
        s.push(b"SANDVM-SYNC bad nonce!\n");
        assert_eq!(s.next_nonce(), None);
        s.push(b"SANDVM-SYNC ");
        s.push(&[b'a'; 200]);
        assert_eq!(s.next_nonce(), None);
        for _ in 0..1000 {
            s.push(&[0u8; 1000]);
            assert_eq!(s.next_nonce(), None);
        }
        assert!(s.buf.len() < 100, "buffer grew to {}", s.buf.len());
        s.push(&sync_line("good"));
        assert_eq!(s.next_nonce().as_deref(), Some("good"));
    }

    #[test]
    fn nonces_differ_and_are_valid() {
        let a = new_nonce();
        let b = new_nonce();
        assert_ne!(a, b);
        assert!(valid_nonce(a.as_bytes()));
        assert_eq!(sync_line(&a).len(), SYNC_PREFIX.len() + 17);
    }
}
