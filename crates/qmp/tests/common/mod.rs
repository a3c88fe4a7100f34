//! Helpers for tests that run a real QEMU.
#![allow(dead_code, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use qmp::Client;
use tokio::net::UnixListener;

pub const QEMU: &str = "qemu-system-x86_64";

/// A QEMU child process that is killed and reaped on drop.
pub struct Qemu {
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Qemu {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("signal QEMU");
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.path("stderr")).unwrap_or_default()
    }

    /// Waits (bounded) for QEMU to exit by itself; returns whether it did.
    pub async fn wait_exit(&mut self, bound: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + bound;
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: tempfile::TempDir, args: &[String]) -> Qemu {
    let stderr = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
    let child = Command::new(QEMU)
        .args(["-nodefaults", "-nographic", "-display", "none"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn();
    match child {
        Ok(child) => Qemu { child, dir },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("{QEMU} not found: run `make setup` to install QEMU")
        }
        Err(e) => panic!("cannot start {QEMU}: {e}"),
    }
}

fn tempdir() -> tempfile::TempDir {
    // Short prefix in /tmp keeps socket paths well under 107 bytes.
    tempfile::Builder::new()
        .prefix("qmpt")
        .tempdir_in("/tmp")
        .expect("tempdir")
}

/// Starts QEMU connecting out to a listener we bound first (the runtime's
/// pre-bound model: no polling for a socket), and returns the connected client.
pub async fn start(args: &[&str]) -> (Qemu, Client) {
    let dir = tempdir();
    let sock = dir.path().join("qmp.sock");
    let listener = UnixListener::bind(&sock).expect("bind QMP listener");
    let mut all: Vec<String> = vec![
        "-chardev".into(),
        format!("socket,id=qmp,path={},server=off", sock.display()),
        "-mon".into(),
        "chardev=qmp,mode=control".into(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let mut qemu = spawn(dir, &all);
    let accepted = tokio::time::timeout(Duration::from_secs(30), listener.accept()).await;
    let stream = match accepted {
        Ok(Ok((s, _))) => s,
        other => {
            let exited = qemu.child.try_wait();
            panic!(
                "QEMU did not connect ({other:?}, exit: {exited:?}): {}",
                qemu.stderr()
            );
        }
    };
    let client = Client::from_stream(stream)
        .await
        .unwrap_or_else(|e| panic!("QMP handshake failed: {e}: {}", qemu.stderr()));
    (qemu, client)
}

/// Starts QEMU as a QMP server (`-qmp unix:PATH,server=on,wait=off`) and
/// returns it with the socket path (the caller connects).
pub async fn start_server(args: &[&str]) -> (Qemu, PathBuf) {
    let dir = tempdir();
    let sock = dir.path().join("qmp.sock");
    let mut all: Vec<String> = vec![
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", sock.display()),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let qemu = spawn(dir, &all);
    (qemu, sock)
}

/// Connects to a QMP server socket that QEMU may still be creating
/// (bounded retry: tests only; the runtime uses a pre-bound fd).
pub async fn connect_retry(path: &Path) -> Client {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match Client::connect(path).await {
            Ok(c) => return c,
            Err(qmp::Error::Connect { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("connect to {}: {e}", path.display()),
        }
    }
}

/// Arguments of a paused q35 TCG machine with the devices the tests use.
pub const Q35: &[&str] = &[
    "-M",
    "q35",
    "-accel",
    "tcg",
    "-S",
    "-m",
    "64M,slots=2,maxmem=256M",
    "-smp",
    "1,maxcpus=2",
    "-device",
    "virtio-balloon-pci,id=balloon0",
    "-device",
    "qemu-xhci,id=xhci",
];

pub const NONE: &[&str] = &["-M", "none"];

/// The runtime's model exactly: we bind the listener and QEMU inherits its
/// fd (`-chardev socket,id=qmp,fd=N,server=on,wait=off`), so the socket
/// exists before QEMU starts; we connect at once (the connection waits in
/// the listen backlog until QEMU accepts): no polling.
pub async fn start_prebound(args: &[&str]) -> (Qemu, Client) {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    use std::os::fd::AsRawFd;

    let dir = tempdir();
    let sock = dir.path().join("qmp.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let fd = listener.as_raw_fd();
    // Let QEMU inherit the listening socket (std keeps non-CLOEXEC fds).
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).expect("clear CLOEXEC");
    let mut all: Vec<String> = vec![
        "-chardev".into(),
        format!("socket,id=qmp,fd={fd},server=on,wait=off"),
        "-mon".into(),
        "chardev=qmp,mode=control".into(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let qemu = spawn(dir, &all);
    // QEMU has its own copy now.
    drop(listener);
    let client = tokio::time::timeout(Duration::from_secs(30), Client::connect(&sock))
        .await
        .unwrap_or_else(|_| panic!("QMP handshake timed out: {}", qemu.stderr()))
        .unwrap_or_else(|e| panic!("QMP handshake failed: {e}: {}", qemu.stderr()));
    (qemu, client)
}
