//! `-kernel`/`-initrd`/`-append`, `-bios`, pflash drives and `-fw_cfg`.

use serde::{Deserialize, Serialize};

use crate::escape::OptList;

/// Direct kernel boot.
///
/// QEMU takes `-kernel`, `-initrd` and `-append` as plain strings, not option
/// lists, so they are passed through unescaped (a `,` in a path stays a `,`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kernel {
    /// `-kernel <path>`.
    pub path: String,
    /// `-initrd <path>`.
    pub initrd: Option<String>,
    /// `-append <command line>`.
    pub append: Option<String>,
}

/// One firmware flash image: `-drive if=pflash,format=raw,unit=N,readonly=on|off,file=<path>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pflash {
    /// Image path (absolute).
    pub file: String,
    /// `readonly=on|off`.
    pub readonly: bool,
    /// Flash unit (0 for code, 1 for vars).
    pub unit: u32,
}

impl Pflash {
    /// The `-drive` value.
    pub fn render(&self) -> String {
        OptList::empty()
            .kv("if", "pflash")
            .kv("format", "raw")
            .num("unit", self.unit)
            .flag("readonly", self.readonly)
            .kv("file", &self.file)
            .finish()
    }
}

/// Where a `-fw_cfg` item's content comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FwCfgSource {
    /// `file=<path>`.
    File(String),
    /// `string=<value>`.
    String(String),
}

/// `-fw_cfg name=<name>,file=<path>` or `-fw_cfg name=<name>,string=<value>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwCfg {
    /// Item name, such as `opt/com.example/config` (at most 55 bytes).
    pub name: String,
    /// Content.
    pub source: FwCfgSource,
}

/// Longest `-fw_cfg` name QEMU accepts (`FW_CFG_MAX_FILE_PATH` - 1).
pub const FW_CFG_MAX_NAME: usize = 55;

impl FwCfg {
    /// The `-fw_cfg` value.
    pub fn render(&self) -> String {
        let l = OptList::empty().kv("name", &self.name);
        match &self.source {
            FwCfgSource::File(p) => l.kv("file", p),
            FwCfgSource::String(s) => l.kv("string", s),
        }
        .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pflash_renders() {
        let p = Pflash {
            file: "/fw/OVMF_CODE.fd".into(),
            readonly: true,
            unit: 0,
        };
        assert_eq!(
            p.render(),
            "if=pflash,format=raw,unit=0,readonly=on,file=/fw/OVMF_CODE.fd"
        );
    }

    #[test]
    fn fw_cfg_escapes_values() {
        let f = FwCfg {
            name: "opt/x".into(),
            source: FwCfgSource::String("a,b=c".into()),
        };
        assert_eq!(f.render(), "name=opt/x,string=a,,b=c");
        let f = FwCfg {
            name: "opt/y".into(),
            source: FwCfgSource::File("/p,q".into()),
        };
        assert_eq!(f.render(), "name=opt/y,file=/p,,q");
    }
}
