//! `sandvm stats`: resource use of a sandbox's processes.

use anyhow::Result;
use runtime::tools::proc_stats;
use runtime::{Hypervisor, Qemu, StateRoot};
use serde_json::json;
use std::process::ExitCode;

/// Print the figures of every live process of sandbox `id`.
pub async fn run(root: StateRoot, id: &str, as_json: bool) -> Result<ExitCode> {
    let q = Qemu::attach(root, id).await?;
    let procs: Vec<_> = q
        .processes()
        .iter()
        .filter_map(|(role, pid)| proc_stats(role, *pid))
        .collect();
    let vcpus = match q.get_thread_ids().await {
        Ok(t) => t.vcpus,
        Err(e) => {
            tracing::warn!(error = %e, "no vCPU thread ids");
            Vec::new()
        }
    };
    if as_json {
        let v = json!({
            "id": id,
            "processes": procs,
            "vcpu_threads": vcpus.iter().map(|(cpu, tid)| json!({"cpu": cpu, "thread_id": tid})).collect::<Vec<_>>(),
            "total_pss_kib": procs.iter().map(|p| p.pss_kib).sum::<u64>(),
        });
        println!("{v}");
    } else {
        println!(
            "{:<12} {:>8} {:>10} {:>10} {:>10} {:>8}",
            "ROLE", "PID", "CPU ms", "RSS KiB", "PSS KiB", "THREADS"
        );
        for p in &procs {
            println!(
                "{:<12} {:>8} {:>10} {:>10} {:>10} {:>8}",
                p.role, p.pid, p.cpu_ms, p.rss_kib, p.pss_kib, p.threads
            );
        }
        let tids: Vec<String> = vcpus.iter().map(|(c, t)| format!("{c}:{t}")).collect();
        println!("vCPU threads (cpu:tid): {}", tids.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}
