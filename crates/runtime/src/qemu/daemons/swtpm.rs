//! swtpm: a TPM 2.0 emulator per sandbox (`enable_tpm`).
//!
//! ```text
//! start_vm ──mkdir <dir>/tpm (0700), bind <dir>/swtpm.sock──> spawn swtpm (setsid, fd 3 = listener)
//!          ──pid saved in state.json; no wait: QEMU's connect waits in the backlog
//!          ──QEMU: -chardev socket,path=swtpm.sock -tpmdev emulator -device tpm-tis
//! stop     ──after QEMU: swtpm ends by itself (--terminate), else SIGTERM, SIGKILL
//! ```
//! The TPM's state (`tpm2-00.permall`) lives in `<dir>/tpm/`, so it goes with
//! the sandbox folder.

use super::spawn;
use crate::error::{HypervisorError, Result};
use crate::plan::tpm::{TPM_LOG, TPM_SOCKET, TPM_STATE_DIR, swtpm_args};
use crate::qemu::core::Core;
use crate::qemu::record::Proc;
use crate::state::check_socket_path;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::time::Duration;
use tracing::info;

impl Core {
    /// Spawn the sandbox's swtpm, if it has a TPM, and record its pid. Its
    /// control socket is bound here, so QEMU can connect at once.
    pub(crate) fn start_tpm(&mut self) -> Result<()> {
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
        let listener = crate::qemu::launch::bind_listener(&sock)?;
        let pid = spawn(
            &bin,
            &swtpm_args(dir.path()),
            &dir.file(TPM_LOG),
            Some(listener.as_raw_fd()),
        )?;
        drop(listener);
        info!(pid, "swtpm spawned");
        if let Some(s) = self.state.as_mut() {
            s.tpm = Some(Proc::spawned(pid));
        }
        self.save()
    }

    /// Stop swtpm and reap it; with `--terminate` it usually ended with QEMU.
    pub(crate) async fn stop_tpm(&mut self) {
        if let Some(t) = self.state.as_mut().and_then(|s| s.tpm.as_mut()) {
            super::stop("swtpm", t, Some(Duration::from_millis(200))).await;
        }
    }
}
