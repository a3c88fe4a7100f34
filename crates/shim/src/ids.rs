//! Ids: containerd's container and exec ids as sandvm and the agent need them.
//!
//! containerd's ids may be up to 76 characters and repeat across namespaces,
//! while sandvm's sandbox folders hold Unix sockets whose paths must fit in
//! 107 bytes. A sandbox id is therefore a short hash of `<namespace>/<grouping
//! id>` (the grouping id is the pod's sandbox id, or the container's own id):
//! the same inputs always give the same id, so the `delete` action recovers it
//! from the bundle alone.

use sha2::{Digest, Sha256};

/// Prefix of every sandbox id the shim makes.
pub const SANDBOX_ID_PREFIX: &str = "ctr-";

/// Hex digits of the hash kept in a sandbox id (64 bits).
const SANDBOX_HASH_HEX: usize = 16;

/// Longest id the agent accepts (Kata's rule, also its maximum).
const AGENT_MAX_ID: usize = 128;

/// The sandvm sandbox id for grouping id `group` in containerd namespace `ns`:
/// `ctr-` and 16 hex digits of sha256(`ns/group`).
pub fn sandbox_id(ns: &str, group: &str) -> String {
    let digest = Sha256::digest(format!("{ns}/{group}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{SANDBOX_ID_PREFIX}{}", &hex[..SANDBOX_HASH_HEX])
}

/// Whether the agent accepts `id` as it is: Kata's rule
/// `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`, at most 128 characters.
pub fn agent_accepts(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() >= 2
        && b.len() <= AGENT_MAX_ID
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// The id the guest knows a container or exec by: containerd's own when the
/// agent accepts it (it nearly always does), else a hash of it. Also the name
/// of the container's folder in the shared folder.
pub fn guest_id(id: &str) -> String {
    if agent_accepts(id) {
        return id.to_string();
    }
    let digest = Sha256::digest(id.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("h{}", &hex[..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_ids_are_short_stable_and_per_namespace() {
        let a = sandbox_id("default", "c1");
        assert_eq!(a, sandbox_id("default", "c1"));
        assert_ne!(a, sandbox_id("k8s.io", "c1"));
        assert_ne!(a, sandbox_id("default", "c2"));
        assert_eq!(a.len(), SANDBOX_ID_PREFIX.len() + SANDBOX_HASH_HEX);
        runtime::validate_id(&a).unwrap();
        let long = "x".repeat(76);
        runtime::validate_id(&sandbox_id(&"n".repeat(76), &long)).unwrap();
    }

    #[test]
    fn guest_ids_keep_good_ids_and_hash_others() {
        assert_eq!(guest_id("c1"), "c1");
        let cri = "a".repeat(64);
        assert_eq!(guest_id(&cri), cri);
        for odd in ["c", "_x", "a b", &"y".repeat(129)] {
            let g = guest_id(odd);
            assert!(agent_accepts(&g), "{g}");
            assert_ne!(g, odd);
            assert_eq!(g, guest_id(odd));
        }
    }
}
