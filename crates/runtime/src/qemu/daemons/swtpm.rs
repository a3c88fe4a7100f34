//! swtpm: a TPM 2.0 emulator per sandbox (`enable_tpm`).
//!
//! ```text
//! start_vm ──mkdir <dir>/tpm (0700), bind <dir>/swtpm.sock──> spawn swtpm (setsid, fd 3 = listener)
//!          ──pid saved in state.json; no wait: QEMU's connect waits in the backlog
//!          ──QEMU: -chardev socket,path=swtpm.sock -tpmdev emulator -device tpm-tis
//! stop     ──after QEMU: SIGTERM (then SIGKILL) and reap swtpm
//! ```
//!
//! The TPM's state (`tpm2-00.permall`) lives in `<dir>/tpm/`, so it goes with
//! the sandbox folder. swtpm runs with `--terminate`, so it also ends by
//! itself when QEMU closes its connection.

use super::{Qemu, TERM_GRACE, spawn};
use crate::config::HypervisorConfig;
use crate::hypervisor::{HypervisorError, Result};
use crate::process;
use crate::state::check_socket_path;
use qemu_config::{Chardev, Device, TpmTis, Tpmdev};
use serde::{Deserialize, Serialize};
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use tracing::{info, warn};

/// swtpm's control socket, in the sandbox folder.
pub const TPM_SOCKET: &str = "swtpm.sock";
/// The TPM state folder, in the sandbox folder.
pub const TPM_STATE_DIR: &str = "tpm";
/// swtpm's log, in the sandbox folder.
pub const TPM_LOG: &str = "swtpm.log";
/// Chardev id of the control socket.
pub const TPM_CHARDEV: &str = "chrtpm";
/// The `-tpmdev` id.
pub const TPMDEV_ID: &str = "tpm0";
/// The TPM front end's device id.
pub const TPM_DEVICE: &str = "tpm-tis0";
/// The fd swtpm gets its pre-bound control listener on.
const CTRL_FD: i32 = 3;

/// swtpm as `state.json` keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TpmState {
    /// swtpm's pid once started.
    #[serde(default)]
    pub pid: Option<i32>,
    /// swtpm's start time (clock ticks since boot), to tell a reused pid.
    #[serde(default)]
    pub start_ticks: Option<u64>,
}

/// swtpm's arguments for a sandbox in `dir`, with its control listener on fd 3.
pub fn args(dir: &Path) -> Vec<String> {
    vec![
        "socket".into(),
        "--tpm2".into(),
        "--tpmstate".into(),
        format!("dir={}", dir.join(TPM_STATE_DIR).display()),
        "--ctrl".into(),
        format!("type=unixio,fd={CTRL_FD}"),
        "--log".into(),
        // Appends, as the runtime's own redirect of stdout and stderr does.
        format!("file={},level=1", dir.join(TPM_LOG).display()),
        "--terminate".into(),
    ]
}

/// The chardev, tpmdev and `tpm-tis` device QEMU needs, when the TPM is on.
pub fn qemu_parts(cfg: &HypervisorConfig, dir: &Path) -> Option<(Chardev, Tpmdev, Device)> {
    cfg.extras.swtpm.as_ref()?;
    let chardev = Chardev::Socket {
        id: TPM_CHARDEV.into(),
        path: Some(dir.join(TPM_SOCKET).display().to_string()),
        fd: None,
        server: false,
        wait: false,
        logfile: None,
        logappend: None,
    };
    let tpmdev = Tpmdev {
        id: TPMDEV_ID.into(),
        chardev: TPM_CHARDEV.into(),
    };
    let dev = Device::TpmTis(TpmTis {
        id: TPM_DEVICE.into(),
        tpmdev: TPMDEV_ID.into(),
    });
    Some((chardev, tpmdev, dev))
}

impl Qemu {
    /// Spawn the sandbox's swtpm, if it has a TPM, and record its pid. Its
    /// control socket is bound here, so QEMU can connect at once.
    pub(in crate::qemu) fn start_tpm(&mut self) -> Result<()> {
        let (dir, st) = self.parts("start swtpm")?;
        let Some(bin) = st.config.extras.swtpm.clone() else {
            return Ok(());
        };
        let state_dir = dir.file(TPM_STATE_DIR);
        if !state_dir.is_dir() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&state_dir)
                .map_err(HypervisorError::io(state_dir.display()))?;
        }
        let sock = dir.file(TPM_SOCKET);
        check_socket_path(&sock)?;
        let listener = super::super::launch::bind_qmp(&sock)?;
        let pid = spawn(
            &bin,
            &args(dir.path()),
            &dir.file(TPM_LOG),
            Some(listener.as_raw_fd()),
        )?;
        drop(listener);
        info!(pid, "swtpm spawned");
        if let Some(s) = self.state.as_mut() {
            s.tpm = Some(TpmState {
                pid: Some(pid),
                start_ticks: process::start_ticks(pid),
            });
        }
        self.save()
    }

    /// swtpm's pid, if it runs.
    pub fn tpm_pid(&self) -> Option<i32> {
        let t = self.state.as_ref()?.tpm.as_ref()?;
        t.pid.filter(|p| process::alive(*p, t.start_ticks))
    }

    /// Stop swtpm (SIGTERM, then SIGKILL) and reap it.
    pub(in crate::qemu) async fn stop_tpm(&mut self) {
        let Some(pid) = self.tpm_pid() else {
            return;
        };
        // With --terminate it usually ends on its own once QEMU is gone.
        if !process::wait_exit(pid, std::time::Duration::from_millis(200)).await
            && !process::terminate(pid, TERM_GRACE).await
        {
            warn!(pid, "swtpm survived SIGKILL");
        }
        if let Some(t) = self.state.as_mut().and_then(|s| s.tpm.as_mut()) {
            t.pid = None;
        }
    }
}

/// swtpm's pid as recorded in a sandbox's `state.json` (read without the lock).
fn recorded(dir: &Path) -> Option<TpmState> {
    let bytes = std::fs::read(dir.join(crate::state::files::STATE)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    serde_json::from_value(v.get("tpm")?.clone()).ok()
}

/// Resolves with swtpm's pid when the sandbox's recorded swtpm exits; never
/// without one.
pub async fn wait_exit(dir: &Path) -> i32 {
    let Some((pid, ticks)) = recorded(dir).and_then(|t| Some((t.pid?, t.start_ticks))) else {
        return std::future::pending().await;
    };
    if process::alive(pid, ticks) {
        process::wait_exit(pid, super::FOREVER).await;
    }
    pid
}

/// What the supervisor does when swtpm dies: the guest has lost its TPM, so
/// log it, end QEMU and clean the sandbox up, as for the shared-fs daemon.
pub async fn on_exit(client: &qmp::Client, dir: &Path, id: &str, pid: i32) {
    tracing::error!(
        id,
        pid,
        log = %dir.join(TPM_LOG).display(),
        "swtpm exited; stopping the sandbox"
    );
    let _ = client.quit().await;
    let Some(root) = dir.parent().map(crate::state::StateRoot::new) else {
        return;
    };
    match Qemu::attach(root, id).await {
        Ok(mut q) => {
            // This process is the supervisor: do not wait for ourselves.
            if let Some(st) = q.state.as_mut() {
                st.supervisor_pid = None;
            }
            if let Err(e) = q.stop_with(super::StopMode::WaitOnly(TERM_GRACE)).await {
                warn!(id, error = %e, "cleanup after swtpm's exit");
            }
        }
        // Busy: a `stop` is under way and cleans up; NotFound: already gone.
        Err(e) => info!(id, reason = %e, "sandbox not cleaned up by the supervisor"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, GuestArch, HostInfo, parse_str};

    const HOST: HostInfo = HostInfo {
        cpus: 8,
        mem_mib: 16384,
        arch: GuestArch::X86_64,
    };

    fn cfg(extra: &str) -> std::result::Result<HypervisorConfig, ConfigError> {
        let body = format!("[hypervisor.qemu]\nkernel = \"/k\"\nshared_fs = \"none\"\n{extra}\n");
        parse_str(Path::new("/etc/sandvm/t.toml"), &body, &HOST).map(|l| l.config)
    }

    #[test]
    fn enable_tpm_defaults_to_debians_swtpm_and_resolves_a_relative_path() {
        assert_eq!(cfg("").unwrap().extras.swtpm, None);
        assert_eq!(
            cfg("enable_tpm = true").unwrap().extras.swtpm,
            Some("/usr/bin/swtpm".into())
        );
        assert_eq!(
            cfg("enable_tpm = true\nswtpm_path = \"bin/swtpm\"")
                .unwrap()
                .extras
                .swtpm,
            Some("/etc/sandvm/bin/swtpm".into())
        );
        // swtpm_path alone does not turn the TPM on.
        assert_eq!(cfg("swtpm_path = \"/x/swtpm\"").unwrap().extras.swtpm, None);
    }

    #[test]
    fn enable_tpm_off_x86_names_the_key() {
        let e = cfg("enable_tpm = true\nguest_arch = \"aarch64\"").unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { key, .. } if key == "hypervisor.qemu.enable_tpm"),
            "{e}"
        );
    }

    #[test]
    fn qemu_gets_the_chardev_the_emulator_backend_and_tpm_tis() {
        let c = cfg("enable_tpm = true").unwrap();
        let args = crate::qemu::build::build(&crate::qemu::build::BuildInput {
            cfg: &c,
            id: "t",
            uuid: "00000000-0000-0000-0000-000000000000",
            dir: Path::new("/run/sandvm/t"),
            accel: crate::qemu::arch::Accel::Tcg,
            image_size: None,
        })
        .to_args()
        .join(" ");
        assert!(
            args.contains("-chardev socket,id=chrtpm,path=/run/sandvm/t/swtpm.sock"),
            "{args}"
        );
        assert!(
            args.contains("-tpmdev emulator,id=tpm0,chardev=chrtpm"),
            "{args}"
        );
        assert!(
            args.contains("-device tpm-tis,id=tpm-tis0,tpmdev=tpm0"),
            "{args}"
        );
        let off = cfg("").unwrap();
        assert!(qemu_parts(&off, Path::new("/d")).is_none());
    }

    #[test]
    fn args_use_the_prebound_fd_and_the_sandbox_state_dir() {
        let a = args(Path::new("/run/sandvm/x"));
        assert_eq!(a[0], "socket");
        assert!(a.contains(&"dir=/run/sandvm/x/tpm".to_string()));
        assert!(a.contains(&"type=unixio,fd=3".to_string()));
        assert!(a.contains(&"--tpm2".to_string()));
    }
}
