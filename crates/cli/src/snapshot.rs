//! `sandvm save` and `sandvm restore`: snapshots of running sandboxes.

use crate::commands::{detached_supervisor, load_config, new_id};
use anyhow::Result;
use runtime::{Hypervisor, Qemu, StateRoot};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// `sandvm save`.
pub async fn save(
    root: StateRoot,
    id: &str,
    dir: &Path,
    stop: bool,
    json: bool,
) -> Result<ExitCode> {
    let q = Qemu::attach(root, id).await?;
    let info = q.save_vm(&std::path::absolute(dir)?, stop).await?;
    if json {
        println!("{}", serde_json::to_string(&info)?);
    } else {
        println!(
            "snapshot of {id} in {} ({} MiB of state for {} MiB of memory, {:.0} ms)",
            info.path.display(),
            info.state_bytes >> 20,
            info.memory_mib,
            info.ms
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `sandvm restore`: the snapshot as a new sandbox, with the detached supervisor.
pub async fn restore(
    root: StateRoot,
    dir: &Path,
    id: Option<String>,
    config: Option<&Path>,
    timeout: u64,
    json: bool,
) -> Result<ExitCode> {
    let opts = runtime::RestoreOptions {
        id: id.unwrap_or_else(new_id),
        config: config.map(load_config).transpose()?,
        timeout: Some(Duration::from_secs(timeout)),
        supervision: detached_supervisor(&root)?,
    };
    let (_q, report) = Qemu::restore(root.clone(), &std::path::absolute(dir)?, opts).await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.id);
    }
    Ok(ExitCode::SUCCESS)
}
