//! `-drive` for cold-plugged disks.

use serde::{Deserialize, Serialize};

use crate::escape::OptList;

/// `-drive if=none,id=…,file=…,format=raw,aio=…,cache=…,cache.direct=…,cache.no-flush=…,snapshot=on,readonly=…`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drive {
    /// Drive id (what a device's `drive=` names).
    pub id: String,
    /// Image path (absolute, so QEMU never reads a `json:` or protocol prefix).
    pub file: String,
    /// Image format, such as `raw` or `qcow2`.
    pub format: String,
    /// `aio=threads|native|io_uring`.
    pub aio: Option<String>,
    /// `cache=writeback|none|writethrough|directsync|unsafe`: the legacy
    /// shorthand for the `cache.*` flags, so never with them.
    #[serde(default)]
    pub cache: Option<String>,
    /// `cache.direct=on|off` (O_DIRECT).
    pub cache_direct: Option<bool>,
    /// `cache.no-flush=on|off`.
    pub cache_no_flush: Option<bool>,
    /// `snapshot=on` when true: writes go to a temporary overlay QEMU
    /// creates (and unlinks at once), never to `file`.
    #[serde(default)]
    pub snapshot: bool,
    /// `readonly=on` when true.
    pub readonly: bool,
    /// `if=none` (a backend for a `-device`); false leaves the machine's default interface.
    pub if_none: bool,
}

impl Drive {
    /// A raw, writable `if=none` drive.
    pub fn raw(id: impl Into<String>, file: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            file: file.into(),
            format: "raw".into(),
            aio: None,
            cache: None,
            cache_direct: None,
            cache_no_flush: None,
            snapshot: false,
            readonly: false,
            if_none: true,
        }
    }

    /// The `-drive` value.
    pub fn render(&self) -> String {
        let l = if self.if_none {
            OptList::empty().kv("if", "none")
        } else {
            OptList::empty()
        };
        l.kv("id", &self.id)
            .kv("file", &self.file)
            .kv("format", &self.format)
            .opt("aio", self.aio.as_deref())
            .opt("cache", self.cache.as_deref())
            .opt_flag("cache.direct", self.cache_direct)
            .opt_flag("cache.no-flush", self.cache_no_flush)
            .on_if("snapshot", self.snapshot)
            .on_if("readonly", self.readonly)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_renders_and_escapes() {
        let mut d = Drive::raw("drive0", "/img/a,b=c.img");
        assert_eq!(
            d.render(),
            "if=none,id=drive0,file=/img/a,,b=c.img,format=raw"
        );
        d.aio = Some("threads".into());
        d.cache_direct = Some(true);
        d.cache_no_flush = Some(false);
        d.readonly = true;
        assert_eq!(
            d.render(),
            "if=none,id=drive0,file=/img/a,,b=c.img,format=raw,aio=threads,cache.direct=on,cache.no-flush=off,readonly=on"
        );
        d.if_none = false;
        assert!(d.render().starts_with("id=drive0,"));
    }

    #[test]
    fn a_disposable_drive_is_a_snapshot_with_unsafe_cache() {
        let d = Drive {
            snapshot: true,
            cache: Some("unsafe".into()),
            ..Drive::raw("drive0", "/img/a.img")
        };
        assert_eq!(
            d.render(),
            "if=none,id=drive0,file=/img/a.img,format=raw,cache=unsafe,snapshot=on"
        );
    }
}
