//! The binary's `start` and `delete` actions.
//!
//! - `start` (run by containerd in the bundle): picks the grouping id (the
//!   pod's sandbox id for a pod's container), spawns the shim server on the
//!   socket derived from it, and prints that address. A second container of
//!   a pod finds the socket in use: its server exits at once and the pod's
//!   shim serves it.
//! - `delete` (run by containerd after the shim died): reattaches to the
//!   sandbox through sandvm's state, stops the VM, unmounts everything the
//!   shim mounted and removes the share folder. Idempotent; always answers.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::SystemTime;

use containerd_shim::StartOpts;
use containerd_shim::api::DeleteResponse;
use containerd_shim_protos::protobuf::MessageField;
use runtime::{HypervisorError, Qemu, StateError, StateRoot, StopMode};
use tokio::io::AsyncReadExt;

use crate::bundle::{self, Record};
use crate::events::timestamp;
use crate::ids;
use crate::mounts;
use crate::share::{Share, blocking};

/// Exit status `delete` reports (128 + SIGKILL, as runc's shim does).
pub const DELETE_STATUS: u32 = 137;

/// Why `start` failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The bundle could not be read.
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
    /// Spawning or talking to the server failed.
    #[error("Cannot {what}")]
    Io {
        /// What was done.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server exited before it served.
    #[error("The shim server exited before it served ({status})")]
    ServerDied {
        /// Its exit status.
        status: std::process::ExitStatus,
    },
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> StartError {
    move |source| StartError::Io { what, source }
}

/// `start`: spawns (or finds) the shim server of the container's group and
/// returns its address.
pub async fn start(opts: StartOpts) -> Result<String, StartError> {
    let bundle = std::env::current_dir().map_err(io("find the bundle (working folder)"))?;
    let spec = bundle::read_spec(&bundle).await?;
    let group = bundle::grouping(&opts.id, spec.annotations().as_ref());
    let address = containerd_shim::socket_address(&opts.address, &opts.namespace, &group);
    let exe = std::env::current_exe().map_err(io("find the shim binary"))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.current_dir(&bundle)
        .args(["-namespace", &opts.namespace, "-id", &opts.id])
        .args(["-address", &opts.address, "-socket", &address])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0);
    if opts.debug {
        cmd.arg("-debug");
    }
    let mut child = cmd.spawn().map_err(io("spawn the shim server"))?;
    // The server closes its stdout once it serves (or exits).
    if let Some(mut out) = child.stdout.take() {
        let mut sink = Vec::new();
        out.read_to_end(&mut sink)
            .await
            .map_err(io("read the shim server's stdout"))?;
    }
    if let Some(status) = child.try_wait().map_err(io("wait for the shim server"))?
        && !status.success()
    {
        return Err(StartError::ServerDied { status });
    }
    tokio::fs::write(bundle.join("address"), &address)
        .await
        .map_err(io("write the bundle's address file"))?;
    tracing::info!(id = %opts.id, group, address, "shim started");
    Ok(address)
}

/// The bundle's record, or one rebuilt from its spec and the environment.
async fn record(ns: &str, id: &str, bundle: &Path) -> Option<Record> {
    match Record::read(bundle).await {
        Ok(Some(r)) => return Some(r),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "unreadable record; rebuilding it"),
    }
    let spec = bundle::read_spec(bundle)
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "no record and no spec"))
        .ok()?;
    let group = bundle::grouping(id, spec.annotations().as_ref());
    let root = StateRoot::from_env();
    let sid = ids::sandbox_id(ns, &group);
    Some(Record {
        share: Share::path_for(&root, &sid),
        state_root: root.path().to_path_buf(),
        sandbox_id: sid,
        guest_id: ids::guest_id(id),
    })
}

/// Stops sandbox `sid` unless a live shim holds it; returns QEMU's pid and
/// whether the sandbox is gone now.
async fn stop_sandbox(root: &StateRoot, sid: &str) -> (u32, bool) {
    match Qemu::attach(root.clone(), sid).await {
        Ok(vm) => {
            let pid = vm
                .record()
                .and_then(|r| r.pid)
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or(0);
            match vm.stop_with(StopMode::Force).await {
                Ok(r) => tracing::info!(sid, outcome = %r.outcome, "sandbox stopped"),
                Err(e) => tracing::warn!(sid, error = %e, "cannot stop the sandbox"),
            }
            (pid, true)
        }
        Err(HypervisorError::State(StateError::Busy { .. })) => {
            tracing::warn!(sid, "a live shim holds the sandbox; leaving it");
            (0, false)
        }
        Err(HypervisorError::State(StateError::NotFound { .. })) => (0, true),
        Err(e) => {
            tracing::warn!(sid, error = %e, "cannot reattach; killing what the state names");
            if let Err(e) = Qemu::force_cleanup(root, sid).await {
                tracing::warn!(sid, error = %e, "forced cleanup failed");
            }
            (0, true)
        }
    }
}

/// `delete`: cleans up after a dead shim (see the module's documentation).
pub async fn delete(ns: &str, id: &str, bundle: &Path) -> DeleteResponse {
    let mut pid = 0;
    if let Some(rec) = record(ns, id, bundle).await {
        let root = StateRoot::new(rec.state_root.clone());
        let (p, gone) = stop_sandbox(&root, &rec.sandbox_id).await;
        pid = p;
        if gone {
            let share = Share::at(rec.share.clone());
            if let Err(e) = blocking(move || share.destroy()).await {
                tracing::warn!(error = %e, "cannot clear the share folder");
            }
            remove_dead_socket(bundle).await;
        }
    }
    let rootfs: PathBuf = bundle.join("rootfs");
    if let Err(e) = blocking(move || mounts::umount_all(&rootfs)).await {
        tracing::warn!(error = %e, "cannot unmount the root filesystem");
    }
    tracing::info!(id, pid, "deleted");
    DeleteResponse {
        pid,
        exit_status: DELETE_STATUS,
        exited_at: MessageField::some(timestamp(SystemTime::now())),
        ..Default::default()
    }
}

/// Removes the dead shim's socket named by the bundle's `address` file,
/// unless something still listens on it.
async fn remove_dead_socket(bundle: &Path) {
    let Ok(address) = tokio::fs::read_to_string(bundle.join("address")).await else {
        return;
    };
    let path = address.trim().trim_start_matches("unix://").to_string();
    if path.is_empty() || tokio::net::UnixStream::connect(&path).await.is_ok() {
        return;
    }
    crate::service::remove_socket(&path).await;
}
