//! `sandvm-vmcache --config FILE [--state-dir DIR]`: the warm VM cache of one
//! config (Kata's `kata-runtime factory init` with `vm_cache_number`). It
//! keeps `[factory] vm_cache_number` VMs ready and paused, hands one to each
//! shim that asks on `vm_cache_endpoint`, refills in the background, and
//! stops what it holds on SIGTERM or SIGINT. Its VMs are sandboxes of the
//! state root (`vmc-…`, shown by `sandvm list`), supervised by a detached
//! `sandvm __supervise`, so a shim that takes one runs it as its own.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use runtime::{StateRoot, Supervision};
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "usage: sandvm-vmcache --config FILE [--state-dir DIR]";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SANDVM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sandvm-vmcache: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run() -> Result<()> {
    let (mut config, mut state) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => config = args.next().map(PathBuf::from),
            "--state-dir" => state = args.next().map(PathBuf::from),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let config = config.context(USAGE)?;
    let root = state.map_or_else(StateRoot::from_env, StateRoot::new);
    let cfg = sandvm_shim::config::load(&config).await?;
    // the handlers exist before the server binds or sweeps: a SIGTERM from
    // then on is a clean stop, never the default death
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let shutdown = async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    };
    let supervision = supervisor(&root)?;
    sandvm_shim::vmcache::serve(root, cfg, supervision, shutdown).await?;
    Ok(())
}

/// `sandvm __supervise`, the `sandvm` binary next to this one (or on PATH).
fn supervisor(root: &StateRoot) -> Result<Supervision> {
    let here = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("sandvm")));
    let program = match here.filter(|p| p.exists()) {
        Some(p) => p,
        None => std::env::var_os("PATH")
            .and_then(|path| {
                std::env::split_paths(&path)
                    .map(|d| d.join("sandvm"))
                    .find(|p| p.exists())
            })
            .context("the sandvm binary (its VMs' supervisor) is neither next to sandvm-vmcache nor on PATH")?,
    };
    Ok(Supervision::sandvm_detached(program, root))
}
