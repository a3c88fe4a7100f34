//! How CreateSandbox mounts the shared folder (pure checks): virtio-fs, or
//! virtio-9p for a VM cloned from a template, whose memory is a private
//! copy-on-write map that vhost-user (virtio-fs) cannot share.

use std::ops::RangeInclusive;

use crate::error::AgentError;

/// msize of a 9p mount when the request leaves it at 0 (Kata's default).
pub const DEFAULT_MSIZE_9P: u32 = 8192;

/// The msize a request may ask for, in bytes.
pub const MSIZE_9P_RANGE: RangeInclusive<u32> = 4096..=1024 * 1024;

/// Longest mount tag (bytes), virtio-fs's limit (a 9p tag fits it too).
const MAX_TAG_LEN: usize = 36;

/// A checked shared-folder mount: what `mount(2)` is given besides the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMount {
    /// The mount source: the device's tag.
    pub tag: String,
    /// File system type: `virtiofs` or `9p`.
    pub fstype: &'static str,
    /// Mount options (`None` for virtio-fs).
    pub data: Option<String>,
}

impl SharedMount {
    /// What it is, for messages: `virtio-fs kataShared`.
    pub fn describe(&self) -> String {
        let kind = if self.fstype == "9p" {
            "virtio-9p"
        } else {
            "virtio-fs"
        };
        format!("{kind} {}", self.tag)
    }
}

/// Checks CreateSandbox's `shared_fs_tag`, `shared_fs_type` and `msize_9p`
/// and builds the mount: `""`/`"virtiofs"` is virtio-fs, `"9p"` is virtio-9p
/// with Kata's options (`trans=virtio,version=9p2000.L,cache=mmap,msize=N`).
/// An empty tag means no shared folder (`None`); the type and msize are
/// checked all the same.
pub fn shared_mount(
    tag: &str,
    fs_type: &str,
    msize_9p: u32,
) -> Result<Option<SharedMount>, AgentError> {
    let (fstype, data) = match fs_type {
        "" | "virtiofs" => ("virtiofs", None),
        "9p" => ("9p", Some(options_9p(msize_9p)?)),
        other => {
            return Err(AgentError::Invalid(format!(
                "Invalid shared_fs_type {other:?} (\"virtiofs\", \"9p\" or \"\")"
            )));
        }
    };
    if tag.is_empty() {
        return Ok(None);
    }
    check_tag(tag)?;
    Ok(Some(SharedMount {
        tag: tag.to_string(),
        fstype,
        data,
    }))
}

/// A (non-empty) mount tag: up to 36 bytes of letters, digits, `_`, `.` and `-`.
fn check_tag(tag: &str) -> Result<(), AgentError> {
    let ok = tag.len() <= MAX_TAG_LEN
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AgentError::Invalid(format!(
            "Invalid shared_fs_tag {tag:?} (1 to {MAX_TAG_LEN} bytes of letters, digits, _ . -)"
        )))
    }
}

/// Kata's 9p mount options for `msize` (0 = [`DEFAULT_MSIZE_9P`]).
fn options_9p(msize: u32) -> Result<String, AgentError> {
    let msize = if msize == 0 { DEFAULT_MSIZE_9P } else { msize };
    if !MSIZE_9P_RANGE.contains(&msize) {
        return Err(AgentError::Invalid(format!(
            "Invalid msize_9p {msize} ({}..={})",
            MSIZE_9P_RANGE.start(),
            MSIZE_9P_RANGE.end()
        )));
    }
    Ok(format!(
        "trans=virtio,version=9p2000.L,cache=mmap,msize={msize}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(tag: &str, ty: &str, msize: u32) -> String {
        shared_mount(tag, ty, msize).unwrap_err().to_string()
    }

    fn ok(tag: &str, ty: &str, msize: u32) -> SharedMount {
        shared_mount(tag, ty, msize).unwrap().expect("a mount")
    }

    #[test]
    fn virtio_fs_by_default_and_by_name() {
        for ty in ["", "virtiofs"] {
            let m = ok("kataShared", ty, 0);
            assert_eq!((m.fstype, m.data.as_deref()), ("virtiofs", None));
            assert_eq!(m.tag, "kataShared");
            assert_eq!(m.describe(), "virtio-fs kataShared");
        }
        // msize is ignored for virtio-fs, even a bad one
        assert!(shared_mount("kataShared", "virtiofs", 1).is_ok());
    }

    #[test]
    fn nine_p_has_katas_options() {
        let m = ok("kataShared", "9p", 0);
        assert_eq!(m.fstype, "9p");
        assert_eq!(
            m.data.as_deref(),
            Some("trans=virtio,version=9p2000.L,cache=mmap,msize=8192")
        );
        assert_eq!(m.describe(), "virtio-9p kataShared");
        for n in [4096, 512 * 1024, 1024 * 1024] {
            let d = ok("kataShared", "9p", n).data.unwrap_or_default();
            assert!(d.ends_with(&format!(",msize={n}")), "{d}");
        }
    }

    #[test]
    fn a_bad_msize_is_refused_by_name() {
        for n in [1, 4095, 1024 * 1024 + 1, u32::MAX] {
            let e = err("kataShared", "9p", n);
            assert!(e.contains("msize_9p") && e.contains(&n.to_string()), "{e}");
        }
    }

    #[test]
    fn an_unknown_type_is_refused_by_name() {
        for ty in ["9P", "virtio-fs", "nfs", "9p "] {
            let e = err("kataShared", ty, 0);
            assert!(e.contains("shared_fs_type") && e.contains(ty), "{e}");
        }
    }

    #[test]
    fn a_bad_tag_is_refused_by_name() {
        let long = "t".repeat(MAX_TAG_LEN + 1);
        for tag in ["a b", "a,b", "../x", long.as_str()] {
            assert!(err(tag, "9p", 0).contains("shared_fs_tag"), "{tag:?}");
        }
        ok(&"t".repeat(MAX_TAG_LEN), "9p", 0);
    }

    #[test]
    fn no_tag_is_no_mount_but_the_type_is_checked() {
        assert_eq!(shared_mount("", "", 0).unwrap(), None);
        assert_eq!(shared_mount("", "9p", 0).unwrap(), None);
        assert!(err("", "nfs", 0).contains("shared_fs_type"));
        assert!(err("", "9p", 1).contains("msize_9p"));
    }
}
