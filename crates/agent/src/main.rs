//! sandvm-agent: the guest agent. Started by the guest's init (or as PID 1),
//! it serves the sandvm agent protocol (ttrpc) on the agent channel and runs
//! container processes. `sandvm-agent __launch` is its own launcher process
//! (see `launch`). See `docs/agent.md`.

mod cgroup;
mod clock;
mod cmdline;
mod config;
mod container;
mod error;
mod launch;
mod logging;
mod msg;
mod net;
mod process;
mod reaper;
mod sandbox;
mod serial;
mod service;
mod shared_fs;
mod spawn;
mod spec;
mod stream;
mod user;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use sandvm_agent_protocol::{AGENT_SERIAL_PORT_NAME, agent_ttrpc, health_ttrpc};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use ttrpc::r#async::Server;
use ttrpc::r#async::transport::Listener;

use crate::cmdline::{Channel, Mode, Options};

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("__launch") {
        launch::main();
    }
    ensure_std_fds();
    let opts = cmdline::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    logging::init(&opts.log);
    for w in &opts.warnings {
        tracing::warn!("kernel command line: {w}");
    }
    if opts.mode == Mode::Off {
        tracing::info!("sandvm.agent=off: not serving");
        return Ok(());
    }
    become_reaper();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(opts))
}

/// fds 0-2 open (to /dev/null if the init closed them), so no pipe of ours
/// ever lands on them.
fn ensure_std_fds() {
    for fd in 0..3 {
        if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err() {
            let _ = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map(std::mem::forget::<std::fs::File>);
        }
    }
}

fn become_reaper() {
    if std::process::id() == 1 {
        return; // PID 1 reaps every orphan anyway
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "PR_SET_CHILD_SUBREAPER failed: orphans of containers go to init");
    }
}

async fn run(opts: Options) -> Result<()> {
    let serial_path = match opts.channel {
        Channel::Serial => {
            wait_until(|| serial_port().is_some(), "the agent's virtio-serial port").await;
            serial_port()
        }
        Channel::Vsock => None,
        Channel::Auto => {
            let what = "an agent channel (virtio-serial port or vsock device)";
            wait_until(|| serial_port().is_some() || vsock_device(), what).await;
            serial_port()
        }
    };
    let serial = serial_path.is_some();
    let serial_path = serial_path.unwrap_or_default();
    tracing::info!(
        version = sandvm_agent_protocol::BUILD_VERSION,
        protocol = sandvm_agent_protocol::PROTOCOL_VERSION,
        mode = ?opts.mode,
        channel = if serial { "virtio-serial" } else { "vsock" },
        "sandvm-agent starting"
    );
    match (opts.mode, serial) {
        (Mode::Echo, true) => serial::echo(serial::Port::open(&serial_path)?)
            .await
            .context("serial echo"),
        (Mode::Echo, false) => vsock_echo(opts.vsock_port).await,
        (_, _) => serve(serial.then_some(serial_path.as_path()), opts.vsock_port).await,
    }
}

/// The agent's virtio-serial port: `/dev/virtio-ports/<name>` where udev
/// made it, else the `/dev/vportNpM` whose sysfs `name` matches (the test
/// guest has no udev).
fn serial_port() -> Option<PathBuf> {
    let link = Path::new("/dev/virtio-ports").join(AGENT_SERIAL_PORT_NAME);
    if link.exists() {
        return Some(link);
    }
    std::fs::read_dir("/sys/class/virtio-ports")
        .ok()?
        .flatten()
        .find_map(|e| {
            let name = std::fs::read_to_string(e.path().join("name")).ok()?;
            let dev = Path::new("/dev").join(e.file_name());
            (name.trim() == AGENT_SERIAL_PORT_NAME && dev.exists()).then_some(dev)
        })
}

/// A virtio vsock device is bound to its driver.
fn vsock_device() -> bool {
    std::fs::read_dir("/sys/bus/virtio/drivers/vmw_vsock_virtio_transport")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("virtio"))
        })
        .unwrap_or(false)
}

/// Waits until `ready()`: ports and devices appear asynchronously after the
/// modules load, and a guest may have no channel at all (then the agent idles
/// quietly). No event to wait on here short of a uevent listener: look every
/// 50 ms for 5 s, then every 2 s.
async fn wait_until(ready: impl Fn() -> bool, what: &str) {
    let mut n = 0u32;
    while !ready() {
        if n == 100 {
            tracing::info!("waiting for {what}");
        }
        let step = if n < 100 { 50 } else { 2000 };
        tokio::time::sleep(std::time::Duration::from_millis(step)).await;
        n = n.saturating_add(1);
    }
}

async fn serve(serial: Option<&Path>, vsock_port: u32) -> Result<()> {
    let reaper = reaper::Reaper::new();
    reaper.start().context("SIGCHLD handler")?;
    let cg = tokio::task::spawn_blocking(cgroup::init)
        .await?
        .context("setting up cgroup v2")?;
    let sb = Arc::new(sandbox::Sandbox::new(reaper, cg));
    let svc = service::Service::new(sb);
    let listener = match serial {
        Some(path) => {
            let port =
                serial::Port::open(path).with_context(|| format!("opening {}", path.display()))?;
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                if let Err(e) = serial::relay(port, tx).await {
                    tracing::error!(error = %e, "serial relay ended");
                }
            });
            let sessions = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|s| (Ok(s), rx))
            });
            Listener::new(sessions)
        }
        None => Listener::bind(format!("vsock://-1:{vsock_port}"))
            .with_context(|| format!("listening on vsock port {vsock_port}"))?,
    };
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(health_ttrpc::create_health(Arc::new(svc.clone())))
        .register_service(agent_ttrpc::create_agent_service(Arc::new(svc)));
    server.start().await.context("starting the ttrpc server")?;
    tracing::info!("serving");
    std::future::pending::<()>().await;
    bail!("unreachable")
}

async fn vsock_echo(port: u32) -> Result<()> {
    let mut l = Listener::bind(format!("vsock://-1:{port}"))
        .with_context(|| format!("listening on vsock port {port}"))?;
    tracing::info!(port, "echo on vsock");
    while let Some(conn) = l.next().await {
        let Ok(conn) = conn else { continue };
        tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(conn);
            let mut lines = BufReader::new(r);
            let mut line = Vec::new();
            while matches!(lines.read_until(b'\n', &mut line).await, Ok(n) if n > 0) {
                if w.write_all(&line).await.is_err() {
                    break;
                }
                line.clear();
            }
        });
    }
    Ok(())
}
