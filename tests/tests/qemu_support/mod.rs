//! What the tests that start real QEMU paused share: the QMP listener
//! pre-bound on fd 3 as the runtime passes it, a QEMU that is killed and
//! reaped on drop, `quit`, and config and QOM helpers.

#![allow(dead_code)]

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use qemu_config::{Config, QmpMonitor, QmpSocket};
use runtime::config::{Accel, GuestArch, HostInfo, HypervisorConfig};
use sandvm_tests::Env;
use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

/// Bound on the QMP handshake and on each command: generous, for a loaded
/// 2-core machine. A failure guard only; nothing is timed.
pub const QMP_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on QEMU's exit after `quit` (a failure guard, not a measurement).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(120);
/// fd QEMU finds the QMP listener on (`-chardev socket,fd=3`), as the runtime does.
pub const QMP_FD: RawFd = 3;
pub const MIB: u64 = 1 << 20;

/// A running QEMU. Dropping it kills and reaps the process, so nothing is
/// left behind even when an assertion fails half-way.
pub struct Qemu {
    pub child: Option<tokio::process::Child>,
    pub pid: i32,
    pub log: PathBuf,
    pub argv: Vec<String>,
}

impl Qemu {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait for QEMU to exit and return its status; it is reaped then.
    pub async fn wait(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("QEMU already reaped");
        let status = tokio::time::timeout(EXIT_TIMEOUT, child.wait())
            .await
            .unwrap_or_else(|_| panic!("QEMU did not exit within {EXIT_TIMEOUT:?}"))
            .expect("wait for QEMU");
        self.child = None;
        status
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = child.start_kill();
        // Blocking reap of our own, just-killed child (teardown only).
        let _ = waitpid(Pid::from_raw(self.pid), None);
    }
}

/// In the child, before exec: the QMP listener goes on fd 3 (inheritable).
pub fn listener_on_fd3(fd: RawFd) -> std::io::Result<()> {
    if fd == QMP_FD {
        // dup2 onto itself would keep CLOEXEC: clear it instead.
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )?;
    } else {
        nix::unistd::dup2(fd, QMP_FD)?;
    }
    Ok(())
}

/// Start `bin` with `config`'s argv, the QMP listener bound at `sock` and
/// passed as fd 3, then connect to QMP at once (the connection waits in the
/// listen backlog: no polling). Fails with QEMU's own message if it rejects
/// the command line.
pub async fn start(bin: &Path, config: &Config, sock: &Path, log: &Path) -> (Qemu, qmp::Client) {
    if let Err(e) = config.validate() {
        panic!("rendered config is invalid: {e}\n{config:#?}");
    }
    let argv = config.to_args();
    let _ = std::fs::remove_file(sock);
    let listener = UnixListener::bind(sock).unwrap();
    let logf = std::fs::File::create(log).unwrap();
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(&argv)
        .stdin(Stdio::null())
        .stdout(logf.try_clone().unwrap())
        .stderr(logf);
    let fd = listener.as_raw_fd();
    // SAFETY: the closure only calls fcntl/dup2, which are async-signal-safe
    // and allocate nothing.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || listener_on_fd3(fd));
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}: run `make setup`", bin.display()));
    // QEMU has its copy; ours must go, so QEMU's exit resets the connection.
    drop(listener);
    let pid = child.id().unwrap() as i32;
    let mut q = Qemu {
        child: Some(child),
        pid,
        log: log.to_path_buf(),
        argv,
    };
    let opts = qmp::ClientOptions {
        handshake_timeout: QMP_TIMEOUT,
        command_timeout: Some(QMP_TIMEOUT),
        ..Default::default()
    };
    let connected = {
        let child = q.child.as_mut().unwrap();
        tokio::select! {
            r = qmp::Client::connect_with(sock, opts) => Ok(r),
            st = child.wait() => Err(st),
        }
    };
    match connected {
        Ok(Ok(c)) => (q, c),
        Ok(Err(e)) => panic!(
            "QMP on {} failed: {e}\nargv: {:?}\nQEMU log:\n{}",
            sock.display(),
            q.argv,
            q.log()
        ),
        Err(st) => {
            q.child = None;
            panic!(
                "{} rejected the argv ({st:?}): {}\nargv: {:?}",
                bin.display(),
                q.log(),
                q.argv
            )
        }
    }
}

/// `quit`, then QEMU must exit with status 0 and be reaped.
pub async fn quit(mut q: Qemu, client: qmp::Client) {
    client.quit().await.unwrap();
    let status = q.wait().await;
    assert!(status.success(), "QEMU exited with {status}:\n{}", q.log());
    assert_eq!(
        waitpid(Pid::from_raw(q.pid), Some(WaitPidFlag::WNOHANG)),
        Err(Errno::ECHILD),
        "QEMU (pid {}) is not reaped",
        q.pid
    );
}

/// Parse and check a Kata-style config the way the runtime does.
pub fn hypervisor_config(dir: &Path, toml: &str) -> HypervisorConfig {
    let host = HostInfo {
        numa_nodes: 1,
        cpus: 4,
        mem_mib: 4096,
        arch: GuestArch::X86_64,
    };
    runtime::config::parse_str(&dir.join("x.toml"), toml, &host)
        .unwrap_or_else(|e| panic!("config rejected: {e}\n{toml}"))
        .config
}

/// A sandbox folder and a kernel file that is never booted (QEMU is started
/// paused) under `env`'s root: `(folder, kernel)`.
pub fn paused_scratch(env: &Env) -> (PathBuf, PathBuf) {
    let dir = env.root.join("sb");
    std::fs::create_dir_all(&dir).unwrap();
    let kernel = env.root.join("unused-kernel");
    std::fs::write(&kernel, b"not booted: QEMU stays paused").unwrap();
    (dir, kernel)
}

/// The runtime's plan of `cfg` for a sandbox `acc` in `dir`, under TCG.
pub fn plan_tcg(cfg: &HypervisorConfig, dir: &Path) -> Config {
    runtime::tools::plan(
        cfg,
        "acc",
        "8b2f5a3e-0c1d-4e6f-9a7b-1c2d3e4f5a6b",
        dir,
        Accel::Tcg,
    )
    .unwrap()
}

/// The QMP monitors on the pre-bound fds, as the runtime renders them: the
/// command monitor on fd 3 and the supervisor's events monitor on fd 4.
/// This test passes QEMU one listener, so it keeps the command monitor only.
pub fn qmp_on_fd3(config: &mut Config) {
    assert_eq!(
        config.qmp,
        [
            QmpMonitor {
                id: "qmp".into(),
                socket: QmpSocket::Fd(QMP_FD),
                mode: Default::default(),
            },
            QmpMonitor {
                id: "events".into(),
                socket: QmpSocket::Fd(QMP_FD + 1),
                mode: Default::default(),
            }
        ],
        "the runtime's QMP monitors changed; update this test"
    );
    config.qmp.truncate(1);
}

/// Children of a QOM container, by name.
pub async fn qom_children(client: &qmp::Client, path: &str) -> BTreeSet<String> {
    client
        .qom_list(path)
        .await
        .unwrap_or_else(|e| panic!("qom-list {path}: {e}"))
        .into_iter()
        .filter(|p| p.prop_type.starts_with("child<"))
        .map(|p| p.name)
        .collect()
}
