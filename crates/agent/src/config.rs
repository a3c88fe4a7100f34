//! What the agent tells the launcher (`sandvm-agent __launch`): checked,
//! rewritten values only. The launcher trusts these; the agent built them
//! from what the host sent (see `spec.rs`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One launch: a container's init process, or a process exec'd into one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LaunchConfig {
    /// The container's cgroup directory (guest path); the process joins it.
    pub cgroup: PathBuf,
    /// Create a container, or join one.
    pub mode: LaunchMode,
    /// The process to run.
    pub process: ProcessConfig,
}

/// Create a container or exec into a running one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum LaunchMode {
    /// New namespaces, the root file system, then wait for the start signal.
    Create(ContainerConfig),
    /// Join the namespaces of the container whose init has this guest pid.
    Exec {
        /// The container init's pid (guest view).
        init_pid: i32,
        /// Namespaces to join (those the container has).
        namespaces: Namespaces,
    },
}

/// Which namespaces a container has of its own (never network or user).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Namespaces {
    /// PID namespace.
    pub pid: bool,
    /// IPC namespace.
    pub ipc: bool,
    /// UTS namespace (hostname).
    pub uts: bool,
    /// cgroup namespace.
    pub cgroup: bool,
}

/// The container's file system and namespaces.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerConfig {
    /// The root file system (guest path, inside the shared folder).
    pub rootfs: PathBuf,
    /// Remount the root read-only.
    pub readonly_root: bool,
    /// Namespaces besides mount (always new).
    pub namespaces: Namespaces,
    /// Hostname to set (needs a UTS namespace).
    pub hostname: Option<String>,
    /// Mounts, in spec order.
    pub mounts: Vec<MountConfig>,
    /// Device nodes to create under /dev (besides the standard ones).
    pub devices: Vec<DeviceConfig>,
    /// Paths to hide (OCI maskedPaths).
    pub masked_paths: Vec<PathBuf>,
    /// Paths to make read-only (OCI readonlyPaths).
    pub readonly_paths: Vec<PathBuf>,
}

/// One mount.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountConfig {
    /// Absolute path inside the container.
    pub destination: PathBuf,
    /// File system type (`bind` for bind mounts).
    pub fstype: String,
    /// Source: a checked guest path for bind mounts, a name otherwise.
    pub source: PathBuf,
    /// Mount flags (MS_*), without MS_BIND/MS_REC for binds (see `bind`).
    pub flags: u64,
    /// Propagation flags (MS_PRIVATE, MS_SLAVE, ... | MS_REC), applied after.
    pub propagation: u64,
    /// File-system data options (`mode=755`, `size=64k`, ...).
    pub data: String,
    /// 0 = not a bind mount, 1 = bind, 2 = recursive bind.
    pub bind: u8,
}

/// A device node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Path under /dev.
    pub path: PathBuf,
    /// `c`, `b` or `p`.
    pub kind: char,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// The process to exec.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ProcessConfig {
    /// argv; argv[0] is looked up in PATH when it has no `/`.
    pub args: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// Absolute working directory.
    pub cwd: PathBuf,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Extra groups from the spec (the user's groups from /etc/group are added).
    pub additional_gids: Vec<u32>,
    /// A user name to resolve in the container's /etc/passwd instead of uid/gid.
    pub username: Option<String>,
    /// umask, if set.
    pub umask: Option<u32>,
    /// `(RLIMIT_*, soft, hard)`.
    pub rlimits: Vec<(String, u64, u64)>,
    /// Capabilities; `None` leaves the launcher's (all of root's).
    pub capabilities: Option<Capabilities>,
    /// PR_SET_NO_NEW_PRIVS.
    pub no_new_privileges: bool,
    /// Give the process a pty from the container's devpts as stdio and
    /// controlling terminal (the master goes to the agent).
    pub terminal: bool,
    /// /proc/self/oom_score_adj.
    pub oom_score_adj: Option<i32>,
}

/// Capability sets, as `CAP_*` names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Bounding set.
    pub bounding: Vec<String>,
    /// Effective set.
    pub effective: Vec<String>,
    /// Permitted set.
    pub permitted: Vec<String>,
    /// Inheritable set.
    pub inheritable: Vec<String>,
    /// Ambient set.
    pub ambient: Vec<String>,
}

/// Messages from the launcher to the agent on the sync socket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum LauncherMsg {
    /// The container process exists (guest pid); the agent answers with one byte.
    Pid(i32),
    /// Create mode: the root is ready; waiting for the start signal.
    Ready,
    /// The pty master (opened in the container's devpts) comes with this
    /// message as SCM_RIGHTS.
    Pty,
    /// Something failed; the message says what.
    Error(String),
}
