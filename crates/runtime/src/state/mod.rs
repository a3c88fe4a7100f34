//! The state store: one folder per sandbox under the state root, its lock,
//! and its `state.json`, saved atomically and read once. What a backend
//! records in `state.json` is the backend's own type (for QEMU,
//! `qemu::record::QemuRecord`); the store only checks its `version`.
//!
//! ```text
//! <root>/<id>/            mode 0700
//!   state.json            written atomically (temp file, rename)
//!   qmp.sock console.sock console.log qemu.log qemu.pid
//! ```
//! A second process loads `state.json` and reattaches to the running VM.
//! Concurrent operations on one id are serialised by an exclusive,
//! non-blocking `flock` on the sandbox folder: one wins, the other gets
//! [`StateError::Busy`].

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Default state root.
pub const DEFAULT_STATE_ROOT: &str = "/run/sandvm";
/// Environment variable that overrides the state root.
pub const STATE_ROOT_ENV: &str = "SANDVM_STATE_DIR";
/// Version of the `state.json` layout this build writes and reads (2: the
/// QEMU backend's record, with the plan's layout and the agent channel).
pub const STATE_VERSION: u32 = 2;
/// Longest Unix socket path (sun_path is 108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;
/// Longest sandbox id.
pub const MAX_ID_LEN: usize = 64;

/// File names inside a sandbox folder.
pub mod files {
    /// The state file.
    pub const STATE: &str = "state.json";
    /// QMP socket.
    pub const QMP: &str = "qmp.sock";
    /// Console socket.
    pub const CONSOLE: &str = "console.sock";
    /// Console log.
    pub const CONSOLE_LOG: &str = "console.log";
    /// QEMU's stdout and stderr.
    pub const QEMU_LOG: &str = "qemu.log";
    /// QEMU's pidfile.
    pub const PIDFILE: &str = "qemu.pid";
    /// The supervisor's QMP monitor (events).
    pub const EVENTS: &str = "events.sock";
    /// The supervisor's log.
    pub const SUPERVISOR_LOG: &str = "supervisor.log";
    /// The detached supervisor's pid and start time, written at its spawn:
    /// what `stop --force` finds when `state.json` is corrupt.
    pub const SUPERVISOR_PID: &str = "supervisor.pid";
    /// The agent channel: a virtio-serial port's socket (QEMU serves it).
    pub const AGENT: &str = "agent.sock";
    /// Hybrid vsock: vhost-device-vsock's socket for the host side (`CONNECT <port>`).
    pub const VSOCK: &str = "vsock.sock";
    /// Hybrid vsock: vhost-device-vsock's vhost-user socket (QEMU connects).
    pub const VHOST_VSOCK: &str = "vhost-vsock.sock";
    /// vhost-device-vsock's log.
    pub const VSOCK_LOG: &str = "vhost-device-vsock.log";
    /// How the VM ended, written by its supervisor.
    pub const EXIT: &str = "exit.json";
    /// The extra monitor socket (`extra_monitor_socket`), QEMU binds it.
    pub const EXTRA_MONITOR: &str = "extra-mon.sock";
}

/// Errors of the state store.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateError {
    /// The id is not acceptable.
    #[error("Invalid sandbox id {id:?}: {reason}")]
    BadId {
        /// The id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A socket path would not fit in sun_path.
    #[error(
        "Socket path {path} is {len} bytes, over the limit of {MAX_SOCKET_PATH}; use a shorter --state-dir or id"
    )]
    SocketPathTooLong {
        /// The path.
        path: String,
        /// Its length.
        len: usize,
    },
    /// No such sandbox.
    #[error("No sandbox {id} under {root}")]
    NotFound {
        /// The id.
        id: String,
        /// The state root.
        root: String,
    },
    /// The sandbox already exists.
    #[error("Sandbox {id} already exists under {root}")]
    Exists {
        /// The id.
        id: String,
        /// The state root.
        root: String,
    },
    /// Another process holds the sandbox's lock.
    #[error("Sandbox {id} is busy: another sandvm process is operating on it")]
    Busy {
        /// The id.
        id: String,
    },
    /// state.json cannot be parsed, or is from another version.
    #[error("Corrupt state file {path}: {reason}; `sandvm stop --force` still cleans up")]
    Corrupt {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// An I/O error on a named path.
    #[error("State I/O on {path}: {reason}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        reason: String,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StateError + '_ {
    move |e| StateError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Check a sandbox id: 1 to 64 of `[A-Za-z0-9_.-]`, starting with a letter or digit.
pub fn validate_id(id: &str) -> Result<(), StateError> {
    let bad = |reason: &str| {
        Err(StateError::BadId {
            id: id.to_string(),
            reason: reason.to_string(),
        })
    };
    if id.is_empty() {
        return bad("empty");
    }
    if id.len() > MAX_ID_LEN {
        return bad("longer than 64 bytes");
    }
    if !id.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("must start with a letter or digit");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return bad("only letters, digits, '_', '.' and '-' are allowed");
    }
    Ok(())
}

/// Check that a socket path fits in sun_path.
pub fn check_socket_path(path: &Path) -> Result<(), StateError> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(StateError::SocketPathTooLong {
            path: path.display().to_string(),
            len,
        });
    }
    Ok(())
}

/// The state root: `--state-dir`, else `$SANDVM_STATE_DIR`, else `/run/sandvm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRoot {
    root: PathBuf,
}

impl StateRoot {
    /// Use this folder as the root.
    pub fn new(root: impl Into<PathBuf>) -> StateRoot {
        let root = root.into();
        let root = std::path::absolute(&root).unwrap_or(root);
        StateRoot { root }
    }

    /// The root from the environment, or the default.
    pub fn from_env() -> StateRoot {
        StateRoot::new(
            std::env::var_os(STATE_ROOT_ENV)
                .map_or_else(|| PathBuf::from(DEFAULT_STATE_ROOT), PathBuf::from),
        )
    }

    /// The root folder.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// A sandbox's folder.
    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Bytes left for a sandbox id before the longest socket path overflows.
    pub fn socket_headroom(&self) -> isize {
        // "<root>/<id>/vhost-vsock.sock", the longest socket name
        MAX_SOCKET_PATH as isize
            - (self.root.as_os_str().len() + 2 + files::VHOST_VSOCK.len()) as isize
    }

    /// Ids of every sandbox folder that has a state file.
    pub fn list(&self) -> Result<Vec<String>, StateError> {
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.root)(e)),
        };
        let mut ids: Vec<String> = rd
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|id| validate_id(id).is_ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Create a new sandbox folder (mode 0700) and lock it.
    /// Fails with [`StateError::Exists`] if it is already there.
    pub fn create(&self, id: &str) -> Result<SandboxDir, StateError> {
        validate_id(id)?;
        let dir = self.sandbox_dir(id);
        for name in [
            files::QMP,
            files::CONSOLE,
            files::EVENTS,
            files::AGENT,
            files::VHOST_VSOCK,
            files::EXTRA_MONITOR,
        ] {
            check_socket_path(&dir.join(name))?;
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.root)
            .map_err(io(&self.root))?;
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StateError::Exists {
                    id: id.into(),
                    root: self.root.display().to_string(),
                });
            }
            Err(e) => return Err(io(&dir)(e)),
        }
        // mkdir honours the umask; make the mode exact.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
        match SandboxDir::lock(id, dir.clone()) {
            Ok(d) => Ok(d),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// Open and lock an existing sandbox folder.
    pub fn open(&self, id: &str) -> Result<SandboxDir, StateError> {
        validate_id(id)?;
        let dir = self.sandbox_dir(id);
        if !dir.is_dir() {
            return Err(StateError::NotFound {
                id: id.into(),
                root: self.root.display().to_string(),
            });
        }
        let d = SandboxDir::lock(id, dir)?;
        // The holder before us may have removed it while we waited for the lock.
        if !d.path().is_dir() {
            return Err(StateError::NotFound {
                id: id.into(),
                root: self.root.display().to_string(),
            });
        }
        Ok(d)
    }
}

/// A locked sandbox folder. The lock is released on drop.
#[derive(Debug)]
pub struct SandboxDir {
    id: String,
    dir: PathBuf,
    _lock: Flock<File>,
}

impl SandboxDir {
    fn lock(id: &str, dir: PathBuf) -> Result<SandboxDir, StateError> {
        let f = File::open(&dir).map_err(io(&dir))?;
        let lock = Flock::lock(f, FlockArg::LockExclusiveNonblock)
            .map_err(|_| StateError::Busy { id: id.to_string() })?;
        Ok(SandboxDir {
            id: id.to_string(),
            dir,
            _lock: lock,
        })
    }

    /// The sandbox id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A file in the folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Write `state.json` atomically: a fresh temp file, then a rename over it.
    ///
    /// No fsync: the file describes live processes (QEMU, its daemons), which
    /// a power loss or kernel crash ends too, and the state root is normally
    /// a tmpfs (`/run`). Against a crash of this process, which is what
    /// matters, the rename alone is atomic. On a disk-backed root two fsyncs
    /// cost 5-12 ms per save, on the start path between spawn and QMP.
    pub fn save<T: Serialize>(&self, state: &T) -> Result<(), StateError> {
        let path = self.file(files::STATE);
        let tmp = self.file(".state.json.tmp");
        let json = serde_json::to_vec_pretty(state).map_err(|e| StateError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let write = || -> std::io::Result<()> {
            // A fresh file, never through whatever sits at the temporary name:
            // with `qemu_uid`, QEMU may create files in this folder, and a
            // symlink it planted there must not redirect a write made as root.
            match std::fs::remove_file(&tmp) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&json)?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(&path)(e)
        })
    }

    /// Read `state.json`.
    pub fn load<T: DeserializeOwned>(&self) -> Result<T, StateError> {
        read_state(&self.file(files::STATE))
    }

    /// Every pid a state file names (any field called `pid`, at any depth),
    /// even in a corrupt or foreign-version file, and the pidfile's: what
    /// `stop --force` checks and kills when the state cannot be loaded.
    pub fn salvage_pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        if let Some(v) = std::fs::read(self.file(files::STATE))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        {
            collect_pids(&v, &mut pids);
        }
        if let Some(p) = std::fs::read_to_string(self.file(files::PIDFILE))
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            pids.push(p);
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Remove the folder and everything in it. Consumes the lock. A file a
    /// dying process writes in the meantime (`ENOTEMPTY`) is removed on a
    /// second pass.
    pub fn remove(self) -> Result<(), StateError> {
        let mut last = None;
        for _ in 0..3 {
            match std::fs::remove_dir_all(&self.dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => last = Some(e),
                Err(e) => return Err(io(&self.dir)(e)),
            }
        }
        match last {
            Some(e) => Err(io(&self.dir)(e)),
            None => Ok(()),
        }
    }
}

/// Read a `state.json` (of this layout version) without any lock.
pub fn read_state<T: DeserializeOwned>(path: &Path) -> Result<T, StateError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let corrupt = |reason: String| StateError::Corrupt {
        path: path.display().to_string(),
        reason,
    };
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    match v.get("version").and_then(|v| v.as_u64()) {
        Some(n) if n == STATE_VERSION as u64 => {}
        Some(n) => {
            return Err(corrupt(format!(
                "unknown version {n}; this sandvm reads version {STATE_VERSION}"
            )));
        }
        None => return Err(corrupt("no version field".into())),
    }
    serde_json::from_value(v).map_err(|e| corrupt(e.to_string()))
}

fn collect_pids(v: &serde_json::Value, out: &mut Vec<i32>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v.as_i64()) {
                    ("pid", Some(p)) if p > 1 && p <= i64::from(i32::MAX) => out.push(p as i32),
                    _ => collect_pids(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_pids(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        for ok in ["a", "sandbox-1", "A.b_c-9", &"x".repeat(64)] {
            validate_id(ok).unwrap();
        }
        for bad in [
            "",
            "-a",
            ".hidden",
            "a/b",
            "../x",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            let e = validate_id(bad).unwrap_err();
            assert!(e.to_string().contains("Invalid sandbox id"), "{e}");
        }
    }

    #[test]
    fn long_socket_paths_are_rejected_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("d".repeat(90));
        let root = StateRoot::new(&deep);
        let e = root.create("sandbox-with-a-long-id").unwrap_err();
        match &e {
            StateError::SocketPathTooLong { path, len } => {
                assert!(path.ends_with(".sock"));
                assert!(*len > MAX_SOCKET_PATH);
            }
            other => panic!("{other:?}"),
        }
        assert!(!deep.exists(), "nothing is created on error");
        assert!(root.socket_headroom() < 0);
    }

    #[test]
    fn create_lock_exists_and_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let root = StateRoot::new(tmp.path());
        let d = root.create("one").unwrap();
        let mode = std::fs::metadata(d.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(matches!(root.create("one"), Err(StateError::Exists { .. })));
        assert!(matches!(root.open("one"), Err(StateError::Busy { .. })));
        d.remove().unwrap();
        assert!(matches!(root.open("one"), Err(StateError::NotFound { .. })));
        assert!(root.list().unwrap().is_empty());
    }

    #[test]
    fn corrupt_and_unknown_version_states_are_clear_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let root = StateRoot::new(tmp.path());
        let d = root.create("c").unwrap();
        std::fs::write(d.file(files::STATE), b"{not json").unwrap();
        assert!(matches!(
            d.load::<serde_json::Value>(),
            Err(StateError::Corrupt { .. })
        ));
        std::fs::write(
            d.file(files::STATE),
            br#"{"version": 99, "pid": 4242, "fs": {"pid": 4343}, "tpm": {"pid": null}}"#,
        )
        .unwrap();
        let e = d.load::<serde_json::Value>().unwrap_err();
        assert!(e.to_string().contains("unknown version 99"), "{e}");
        assert_eq!(d.salvage_pids(), vec![4242, 4343]);
    }
}
