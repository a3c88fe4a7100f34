//! Filesystem backends for virtio-9p: `-fsdev local,...`.

use crate::escape::OptList;
use serde::{Deserialize, Serialize};

/// How a `local` fsdev maps guest file ownership and modes to the host
/// (`security_model=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecurityModel {
    /// `none`: files are created as QEMU's user, ownership changes are ignored.
    None,
    /// `passthrough`: guest ownership and modes are set on the host files.
    Passthrough,
    /// `mapped-xattr`: ownership and modes kept in extended attributes.
    MappedXattr,
    /// `mapped-file`: ownership and modes kept in hidden files.
    MappedFile,
}

impl SecurityModel {
    /// QEMU's name.
    pub fn name(self) -> &'static str {
        match self {
            SecurityModel::None => "none",
            SecurityModel::Passthrough => "passthrough",
            SecurityModel::MappedXattr => "mapped-xattr",
            SecurityModel::MappedFile => "mapped-file",
        }
    }
}

/// What a `local` fsdev does with files of other host devices below the
/// shared folder (`multidevs=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Multidevs {
    /// `remap`: inode numbers are remapped so they stay unique in the guest.
    Remap,
    /// `forbid`: access to other devices' files fails.
    Forbid,
    /// `warn`: allowed, with a warning (QEMU's default).
    Warn,
}

impl Multidevs {
    /// QEMU's name.
    pub fn name(self) -> &'static str {
        match self {
            Multidevs::Remap => "remap",
            Multidevs::Forbid => "forbid",
            Multidevs::Warn => "warn",
        }
    }
}

/// A host folder a virtio-9p device serves:
/// `-fsdev local,id=<id>,path=<path>,security_model=<m>[,multidevs=<m>][,readonly=on]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fsdev {
    /// Fsdev id (a virtio-9p device's `fsdev=`).
    pub id: String,
    /// The host folder.
    pub path: String,
    /// `security_model=`.
    pub security_model: SecurityModel,
    /// `multidevs=`; QEMU's default (`warn`) when `None`.
    pub multidevs: Option<Multidevs>,
    /// `readonly=on` when true.
    pub readonly: bool,
}

impl Fsdev {
    /// The `-fsdev` value.
    pub fn render(&self) -> String {
        OptList::new("local")
            .kv("id", &self.id)
            .kv("path", &self.path)
            .kv("security_model", self.security_model.name())
            .opt("multidevs", self.multidevs.map(Multidevs::name))
            .on_if("readonly", self.readonly)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_fsdev_renders_escaped() {
        let f = Fsdev {
            id: "fsdev0".into(),
            path: "/run/a,b/shared".into(),
            security_model: SecurityModel::None,
            multidevs: Some(Multidevs::Remap),
            readonly: false,
        };
        assert_eq!(
            f.render(),
            "local,id=fsdev0,path=/run/a,,b/shared,security_model=none,multidevs=remap"
        );
    }
}
