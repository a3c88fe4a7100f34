//! The OCI bundle containerd hands the shim: its `config.json`, the CRI
//! annotations that group containers into pods, and the shim's own record
//! (`sandvm.json`), which lets the `delete` action find the sandbox.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use runtime::StateRoot;
use serde::{Deserialize, Serialize};

use crate::share::Share;

/// CRI's annotation: `sandbox` (the pod's pause container) or `container`.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI's annotation: the pod's sandbox id.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// Prefix of the hypervisor annotations a sandbox may carry.
pub const HYPERVISOR_ANNOTATIONS: &str = "io.katacontainers.config.hypervisor.";

/// The shim's record in a bundle.
pub const RECORD_FILE: &str = "sandvm.json";

/// Largest config.json read (containerd's are a few KiB).
const MAX_SPEC: u64 = 4 << 20;

/// A bundle that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file of the bundle could not be read or written.
    #[error("Cannot {what} {path}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// config.json is not an OCI spec.
    #[error("{path} is not a valid OCI runtime spec")]
    Spec {
        /// The file.
        path: PathBuf,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
    /// config.json is too large.
    #[error("{path} is larger than {MAX_SPEC} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// sandvm.json is not the shim's record.
    #[error("{path} is not a sandvm shim record")]
    Record {
        /// The file.
        path: PathBuf,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
}

/// Reads `<bundle>/config.json`.
pub async fn read_spec(bundle: &Path) -> Result<Spec, BundleError> {
    let path = bundle.join("config.json");
    let io = |what| {
        let path = path.clone();
        move |source| BundleError::Io { what, path, source }
    };
    let meta = tokio::fs::metadata(&path).await.map_err(io("read"))?;
    if meta.len() > MAX_SPEC {
        return Err(BundleError::TooLarge { path });
    }
    let data = tokio::fs::read(&path).await.map_err(io("read"))?;
    serde_json::from_slice(&data).map_err(|source| BundleError::Spec { path, source })
}

/// A container's place in a pod, from its CRI annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A container of its own, or a pod's sandbox (pause) container: it
    /// brings its VM up and takes it down.
    Sandbox,
    /// A container of pod `.0`, which runs in that pod's VM.
    Member(String),
}

/// The role `annotations` give a container.
pub fn role(annotations: Option<&HashMap<String, String>>) -> Role {
    let get = |k| annotations.and_then(|a| a.get(k)).map(String::as_str);
    match (get(CONTAINER_TYPE), get(SANDBOX_ID)) {
        (Some("container"), Some(sb)) if !sb.is_empty() => Role::Member(sb.to_string()),
        _ => Role::Sandbox,
    }
}

/// The id that groups containers into one shim and one VM: the pod's
/// sandbox id for a member, the container's own id otherwise.
pub fn grouping(id: &str, annotations: Option<&HashMap<String, String>>) -> String {
    match role(annotations) {
        Role::Member(sb) => sb,
        Role::Sandbox => id.to_string(),
    }
}

/// The `io.katacontainers.config.hypervisor.*` annotations of a spec.
pub fn hypervisor_annotations(
    annotations: Option<&HashMap<String, String>>,
) -> std::collections::BTreeMap<String, String> {
    annotations
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(HYPERVISOR_ANNOTATIONS))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What the shim records in a bundle at create, for the `delete` action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The sandvm sandbox id.
    pub sandbox_id: String,
    /// The state root the sandbox lives under.
    pub state_root: PathBuf,
    /// The sandbox's share folder.
    pub share: PathBuf,
    /// The container's id in the guest (its folder in the share).
    pub guest_id: String,
}

impl Record {
    /// The same record for sandbox `id` of state root `root` (a VM from
    /// the warm cache keeps its own id).
    pub fn for_sandbox(&self, root: &StateRoot, id: &str) -> Record {
        Record {
            sandbox_id: id.to_string(),
            share: Share::path_for(root, id),
            ..self.clone()
        }
    }

    /// Writes it to `<bundle>/sandvm.json`.
    pub async fn write(&self, bundle: &Path) -> Result<(), BundleError> {
        let path = bundle.join(RECORD_FILE);
        let data = serde_json::to_vec_pretty(self).map_err(|source| BundleError::Record {
            path: path.clone(),
            source,
        })?;
        tokio::fs::write(&path, data)
            .await
            .map_err(|source| BundleError::Io {
                what: "write",
                path,
                source,
            })
    }

    /// Reads `<bundle>/sandvm.json`; `None` when there is none.
    pub async fn read(bundle: &Path) -> Result<Option<Record>, BundleError> {
        let path = bundle.join(RECORD_FILE);
        match tokio::fs::read(&path).await {
            Ok(d) => serde_json::from_slice(&d)
                .map(Some)
                .map_err(|source| BundleError::Record { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(BundleError::Io {
                what: "read",
                path,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pod_members_group_under_their_sandbox() {
        let member = ann(&[(CONTAINER_TYPE, "container"), (SANDBOX_ID, "pod1")]);
        assert_eq!(role(Some(&member)), Role::Member("pod1".into()));
        assert_eq!(grouping("c1", Some(&member)), "pod1");
        let pause = ann(&[(CONTAINER_TYPE, "sandbox"), (SANDBOX_ID, "pod1")]);
        assert_eq!(role(Some(&pause)), Role::Sandbox);
        assert_eq!(grouping("pod1", Some(&pause)), "pod1");
        assert_eq!(grouping("c2", None), "c2");
        let no_id = ann(&[(CONTAINER_TYPE, "container")]);
        assert_eq!(role(Some(&no_id)), Role::Sandbox);
    }

    #[test]
    fn only_hypervisor_annotations_are_passed() {
        let a = ann(&[
            ("io.katacontainers.config.hypervisor.default_memory", "256"),
            ("io.katacontainers.config.agent.x", "y"),
            ("other", "z"),
        ]);
        let h = hypervisor_annotations(Some(&a));
        assert_eq!(h.len(), 1);
        assert_eq!(
            h["io.katacontainers.config.hypervisor.default_memory"],
            "256"
        );
    }

    #[tokio::test]
    async fn records_round_trip_and_bad_specs_fail_clearly() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Record::read(d.path()).await.unwrap(), None);
        let r = Record {
            sandbox_id: "ctr-0123".into(),
            state_root: "/run/sandvm".into(),
            share: "/run/sandvm/.shim/ctr-0123".into(),
            guest_id: "c1".into(),
        };
        r.write(d.path()).await.unwrap();
        assert_eq!(Record::read(d.path()).await.unwrap(), Some(r));
        std::fs::write(d.path().join("config.json"), "{not json").unwrap();
        let e = read_spec(d.path()).await.unwrap_err();
        assert!(e.to_string().contains("config.json"), "{e}");
    }
}
