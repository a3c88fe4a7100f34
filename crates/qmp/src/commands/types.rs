//! Typed replies of QMP commands.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::QemuVersion;

/// VM run state (`RunState` in the QMP schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// QEMU is running under a debugger.
    Debug,
    /// Waiting for an incoming migration.
    Inmigrate,
    /// An internal error stopped the VM.
    InternalError,
    /// An I/O error stopped the VM.
    IoError,
    /// Paused by the user.
    Paused,
    /// Paused after migration finished.
    Postmigrate,
    /// Not started yet (`-S`).
    Prelaunch,
    /// Paused to finish migration.
    FinishMigrate,
    /// Restoring a snapshot.
    RestoreVm,
    /// Running.
    Running,
    /// Saving a snapshot.
    SaveVm,
    /// Shut down (with `-no-shutdown`).
    Shutdown,
    /// Suspended (ACPI S3).
    Suspended,
    /// Stopped by a watchdog.
    Watchdog,
    /// The guest panicked.
    GuestPanicked,
    /// COLO state.
    Colo,
    /// A state this client does not know.
    #[serde(other)]
    Other,
}

/// Reply of `query-status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// Run state.
    pub status: RunState,
    /// Whether vCPUs are running.
    pub running: bool,
}

/// Reply of `query-version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// QEMU version triple.
    pub qemu: QemuVersion,
    /// Package string.
    pub package: String,
}

/// Reply of `query-kvm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmInfo {
    /// KVM is in use.
    pub enabled: bool,
    /// KVM is available.
    pub present: bool,
}

/// CPU topology properties (`CpuInstanceProperties`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CpuInstanceProperties {
    /// NUMA node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<i64>,
    /// Socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_id: Option<i64>,
    /// Die.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub die_id: Option<i64>,
    /// Cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<i64>,
    /// Core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core_id: Option<i64>,
    /// Thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<i64>,
}

/// One entry of `query-hotpluggable-cpus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct HotpluggableCpu {
    /// CPU type (driver name for `device_add`).
    #[serde(rename = "type")]
    pub cpu_type: String,
    /// vCPUs this entry stands for.
    pub vcpus_count: i64,
    /// Topology properties to pass to `device_add`.
    pub props: CpuInstanceProperties,
    /// QOM path when plugged; `None` for a free slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qom_path: Option<String>,
}

/// One entry of `query-cpus-fast`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CpuInfoFast {
    /// CPU index.
    pub cpu_index: i64,
    /// QOM path.
    pub qom_path: String,
    /// Host thread id of the vCPU.
    pub thread_id: i64,
    /// Topology properties.
    #[serde(default)]
    pub props: Option<CpuInstanceProperties>,
    /// Target architecture, e.g. `x86_64`.
    pub target: String,
}

/// One entry of `query-memory-devices`: the union tag and its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryDeviceInfo {
    /// Kind: `dimm`, `nvdimm`, `virtio-mem`, `virtio-pmem`, `sgx-epc`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Kind-specific data (id, addr, size, memdev, ...).
    pub data: Value,
}

/// Reply of `query-memory-size-summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MemorySizeSummary {
    /// Boot memory in bytes.
    pub base_memory: u64,
    /// Hotplugged memory in bytes, when the machine supports it.
    #[serde(default)]
    pub plugged_memory: Option<u64>,
}

/// One property from `qom-list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ObjectPropertyInfo {
    /// Property name.
    pub name: String,
    /// Property type, e.g. `child<foo>`, `link<bar>`, `bool`.
    #[serde(rename = "type")]
    pub prop_type: String,
    /// Description, if any.
    #[serde(default)]
    pub description: Option<String>,
    /// Default value, if any.
    #[serde(default)]
    pub default_value: Option<Value>,
}

/// Reply of `query-migrate`: the status, plus the raw reply for the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationInfo {
    /// `none`, `setup`, `active`, `completed`, `failed`, ... (`None` before
    /// any migration).
    pub status: Option<String>,
    /// Error description when `status` is `failed`.
    pub error_desc: Option<String>,
    /// The whole reply.
    pub raw: Value,
}

/// Reply of `query-balloon`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonInfo {
    /// Current guest memory size in bytes.
    pub actual: i64,
}

/// Reply of `add-fd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AddFdInfo {
    /// The fd set the fd went into.
    pub fdset_id: i64,
    /// The fd number inside QEMU (use as `/dev/fdset/N` path).
    pub fd: i64,
}

/// Migration capability toggles for `migrate-set-capabilities`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationCapabilityStatus {
    /// Capability name, e.g. `x-ignore-shared`, `postcopy-ram`.
    pub capability: String,
    /// Enabled or not.
    pub state: bool,
}
