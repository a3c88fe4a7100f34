//! `-object`.

use serde::{Deserialize, Serialize};

use crate::escape::{OptList, mib};

/// One `-object`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Object {
    /// `memory-backend-ram`.
    MemoryBackendRam {
        /// Object id.
        id: String,
        /// Size in MiB.
        size_mib: u64,
        /// `share=on|off`.
        share: Option<bool>,
        /// `prealloc=on` when true.
        prealloc: bool,
    },
    /// `memory-backend-file` (shared memory for vhost-user, hugepages, nvdimm images).
    MemoryBackendFile {
        /// Object id.
        id: String,
        /// Size in MiB.
        size_mib: u64,
        /// `mem-path`: a file or a directory (such as `/dev/shm` or `/dev/hugepages`).
        mem_path: String,
        /// `share=on|off`.
        share: Option<bool>,
        /// `prealloc=on` when true.
        prealloc: bool,
        /// `readonly=on|off`.
        readonly: Option<bool>,
        /// `discard-data=on|off`.
        discard_data: Option<bool>,
        /// `align=<bytes>`.
        align: Option<u64>,
    },
    /// `memory-backend-memfd`.
    MemoryBackendMemfd {
        /// Object id.
        id: String,
        /// Size in MiB.
        size_mib: u64,
        /// `share=on|off`.
        share: Option<bool>,
        /// `hugetlb=on` when true.
        hugetlb: bool,
        /// `prealloc=on` when true.
        prealloc: bool,
    },
    /// `iothread`.
    Iothread {
        /// Object id.
        id: String,
    },
    /// `rng-random`.
    RngRandom {
        /// Object id.
        id: String,
        /// Entropy source, such as `/dev/urandom`.
        filename: String,
    },
    /// Any other QOM type: `<qom_type>,id=<id>,<props…>`.
    Other {
        /// QOM type name.
        qom_type: String,
        /// Object id.
        id: String,
        /// Properties, rendered in order.
        props: Vec<(String, String)>,
    },
}

/// What kind of object a reference expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A `memory-backend-*`.
    MemoryBackend,
    /// An `iothread`.
    Iothread,
    /// An `rng-*` backend.
    Rng,
    /// Something else.
    Other,
}

impl Object {
    /// The object id.
    pub fn id(&self) -> &str {
        match self {
            Object::MemoryBackendRam { id, .. }
            | Object::MemoryBackendFile { id, .. }
            | Object::MemoryBackendMemfd { id, .. }
            | Object::Iothread { id }
            | Object::RngRandom { id, .. }
            | Object::Other { id, .. } => id,
        }
    }

    /// The QOM type name.
    pub fn qom_type(&self) -> &str {
        match self {
            Object::MemoryBackendRam { .. } => "memory-backend-ram",
            Object::MemoryBackendFile { .. } => "memory-backend-file",
            Object::MemoryBackendMemfd { .. } => "memory-backend-memfd",
            Object::Iothread { .. } => "iothread",
            Object::RngRandom { .. } => "rng-random",
            Object::Other { qom_type, .. } => qom_type,
        }
    }

    /// The kind of object, for reference checks.
    pub fn kind(&self) -> ObjectKind {
        let t = self.qom_type();
        if t.starts_with("memory-backend-") {
            ObjectKind::MemoryBackend
        } else if t == "iothread" {
            ObjectKind::Iothread
        } else if t.starts_with("rng-") {
            ObjectKind::Rng
        } else {
            ObjectKind::Other
        }
    }

    /// The size of a memory backend in MiB.
    pub fn size_mib(&self) -> Option<u64> {
        match self {
            Object::MemoryBackendRam { size_mib, .. }
            | Object::MemoryBackendFile { size_mib, .. }
            | Object::MemoryBackendMemfd { size_mib, .. } => Some(*size_mib),
            // A backend given as properties: its `size=<N>M`.
            Object::Other { props, .. } if self.kind() == ObjectKind::MemoryBackend => props
                .iter()
                .find(|(k, _)| k == "size")
                .and_then(|(_, v)| v.strip_suffix('M'))
                .and_then(|v| v.parse().ok()),
            _ => None,
        }
    }

    /// The `-object` value.
    pub fn render(&self) -> String {
        let head = OptList::new(self.qom_type()).kv("id", self.id());
        match self {
            Object::MemoryBackendRam {
                size_mib,
                share,
                prealloc,
                ..
            } => head
                .kv("size", mib(*size_mib))
                .opt_flag("share", *share)
                .on_if("prealloc", *prealloc),
            Object::MemoryBackendFile {
                size_mib,
                mem_path,
                share,
                prealloc,
                readonly,
                discard_data,
                align,
                ..
            } => head
                .kv("size", mib(*size_mib))
                .kv("mem-path", mem_path)
                .opt_flag("share", *share)
                .on_if("prealloc", *prealloc)
                .opt_flag("readonly", *readonly)
                .opt_flag("discard-data", *discard_data)
                .opt_num("align", *align),
            Object::MemoryBackendMemfd {
                size_mib,
                share,
                hugetlb,
                prealloc,
                ..
            } => head
                .kv("size", mib(*size_mib))
                .opt_flag("share", *share)
                .on_if("hugetlb", *hugetlb)
                .on_if("prealloc", *prealloc),
            Object::Iothread { .. } => head,
            Object::RngRandom { filename, .. } => head.kv("filename", filename),
            Object::Other { props, .. } => head.pairs(props),
        }
        .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_backend_file_renders() {
        let o = Object::MemoryBackendFile {
            id: "mem0".into(),
            size_mib: 256,
            mem_path: "/img/a,b.img".into(),
            share: Some(true),
            prealloc: false,
            readonly: Some(true),
            discard_data: None,
            align: Some(2097152),
        };
        assert_eq!(
            o.render(),
            "memory-backend-file,id=mem0,size=256M,mem-path=/img/a,,b.img,share=on,readonly=on,align=2097152"
        );
        assert_eq!(o.kind(), ObjectKind::MemoryBackend);
        assert_eq!(o.size_mib(), Some(256));
    }

    #[test]
    fn other_objects_render() {
        assert_eq!(
            Object::MemoryBackendRam {
                id: "r".into(),
                size_mib: 1,
                share: None,
                prealloc: true
            }
            .render(),
            "memory-backend-ram,id=r,size=1M,prealloc=on"
        );
        assert_eq!(
            Object::MemoryBackendMemfd {
                id: "m".into(),
                size_mib: 2,
                share: Some(true),
                hugetlb: true,
                prealloc: false
            }
            .render(),
            "memory-backend-memfd,id=m,size=2M,share=on,hugetlb=on"
        );
        assert_eq!(
            Object::Iothread { id: "io0".into() }.render(),
            "iothread,id=io0"
        );
        let rng = Object::RngRandom {
            id: "rng0".into(),
            filename: "/dev/urandom".into(),
        };
        assert_eq!(rng.render(), "rng-random,id=rng0,filename=/dev/urandom");
        assert_eq!(rng.kind(), ObjectKind::Rng);
        let o = Object::Other {
            qom_type: "secret".into(),
            id: "s0".into(),
            props: vec![("data".into(), "a,b".into())],
        };
        assert_eq!(o.render(), "secret,id=s0,data=a,,b");
        assert_eq!(o.id(), "s0");
        assert_eq!(o.kind(), ObjectKind::Other);
    }
}
