//! sandvm-agent: the guest agent. Started by the guest's init (or as PID 1),
//! it serves the sandvm agent protocol (ttrpc) on the agent channel and runs
//! container processes. `sandvm-agent __launch` is its own launcher process
//! (see `launch`). See `docs/agent.md`.

mod cgroup;
mod cmdline;
mod config;
mod container;
mod error;
mod launch;
mod logging;
mod msg;
mod process;
mod reaper;
mod sandbox;
mod serial;
mod service;
mod spawn;
mod spec;
mod stream;
mod user;
mod validate;

use std::path::Path;
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
    let serial_path = Path::new("/dev/virtio-ports").join(AGENT_SERIAL_PORT_NAME);
    let serial = match opts.channel {
        Channel::Serial => {
            wait_for(&serial_path).await;
            true
        }
        Channel::Vsock => false,
        Channel::Auto => serial_path.exists(),
    };
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

/// The port may appear a little after the agent starts (virtio_console adds
/// ports asynchronously).
async fn wait_for(p: &Path) {
    for _ in 0..100 {
        if p.exists() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tracing::warn!(path = %p.display(), "agent port did not appear");
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
