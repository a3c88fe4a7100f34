//! `sandvm check`: the host's fingerprint.

use anyhow::Result;
use runtime::StateRoot;
use runtime::config::{GuestArch, HypervisorConfig};
use runtime::tools::{kvm_openable, probe_accel};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// QEMU's version as (major, minor, micro), from `qemu --version`.
pub async fn qemu_version(qemu: &Path) -> Result<(String, Option<(u32, u32, u32)>), String> {
    let out = tokio::process::Command::new(qemu)
        .arg("--version")
        .output()
        .await
        .map_err(|e| format!("{}: {e} (run `make setup`)", qemu.display()))?;
    let text = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let parsed = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .and_then(|v| {
            let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
            Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
        });
    Ok((text, parsed))
}

fn hugepages() -> Value {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mounted = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(" hugetlbfs "));
    json!({"total": field("HugePages_Total:"), "free": field("HugePages_Free:"), "size_kib": field("Hugepagesize:"), "hugetlbfs_mounted": mounted})
}

fn selinux_state() -> &'static str {
    match selinux_mode() {
        Some(true) => "enforcing",
        Some(false) => "permissive",
        None => "disabled",
    }
}

fn selinux_mode() -> Option<bool> {
    let v = std::fs::read_to_string("/sys/fs/selinux/enforce").ok()?;
    Some(v.trim() == "1")
}

async fn qemu_has_seccomp(qemu: &Path) -> bool {
    // `-sandbox` is parsed before `-version` exits: an error means no seccomp.
    let probe = tokio::process::Command::new(qemu)
        .args(["-sandbox", "on", "-version"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    matches!(tokio::time::timeout(std::time::Duration::from_secs(10), probe).await, Ok(Ok(s)) if s.success())
}

/// Configured features whose QEMU support came after `v`, each as
/// "feature (key) needs QEMU >= X.Y". Empty when all are supported.
pub fn too_old(cfg: &HypervisorConfig, v: (u32, u32, u32)) -> Vec<String> {
    let needs: [(bool, &str, &str, (u32, u32)); 4] = [
        (
            true,
            "sandvm's QMP and memory-backend handling",
            "hypervisor.qemu.path",
            (5, 0),
        ),
        (
            cfg.virtio_mem,
            "virtio-mem",
            "hypervisor.qemu.enable_virtio_mem",
            (5, 1),
        ),
        (
            cfg.reclaim_guest_freed_memory,
            "virtio-balloon free page reporting",
            "hypervisor.qemu.reclaim_guest_freed_memory",
            (5, 1),
        ),
        (
            cfg.guest_memory_dump_path.is_some(),
            "-action panic=pause (dump on guest panic)",
            "hypervisor.qemu.guest_memory_dump_path",
            (6, 0),
        ),
    ];
    needs
        .iter()
        .filter(|(on, _, _, min)| *on && (v.0, v.1) < *min)
        .map(|(_, what, key, min)| {
            format!(
                "{what} ({key}) needs QEMU >= {}.{}, found {}.{}.{}",
                min.0, min.1, v.0, v.1, v.2
            )
        })
        .collect()
}

/// Print the fingerprint.
pub async fn run(root: &StateRoot, config: Option<&Path>, json_out: bool) -> Result<ExitCode> {
    let cfg: Option<HypervisorConfig> = config.map(crate::commands::load_config).transpose()?;
    let arch = cfg.as_ref().map_or(GuestArch::host(), |c| c.guest_arch);
    let qemu = cfg.as_ref().map_or_else(
        || PathBuf::from("/usr/bin").join(arch.qemu_binary()),
        |c| c.qemu_path.clone(),
    );
    let (version_text, version) = match qemu_version(&qemu).await {
        Ok(v) => v,
        Err(e) => (e, None),
    };
    let kvm_open = kvm_openable().map_err(|e| e.to_string());
    let scratch = std::env::temp_dir();
    let probe = probe_accel(arch, &qemu, &scratch).await;
    let seccomp = qemu_has_seccomp(&qemu).await;
    let virtiofsd = cfg
        .as_ref()
        .and_then(|c| c.shared_fs.daemon.clone())
        .unwrap_or_else(|| PathBuf::from(runtime::config::DEFAULT_VIRTIO_FS_DAEMON));
    let too_old = match (&cfg, version) {
        (Some(c), Some(v)) => too_old(c, v),
        _ => Vec::new(),
    };
    let report = json!({
        "too_old_for_config": too_old,
        "qemu": {"path": qemu, "version": version_text, "parsed": version.map(|(a, b, c)| json!([a, b, c])), "supported": version.is_some_and(|v| v.0 >= 5)},
        "kvm": {"dev_kvm": kvm_open.is_ok(), "dev_kvm_error": kvm_open.err(), "auto_picks": probe.accel.as_str(), "reason": probe.reason},
        "hugepages": hugepages(),
        "selinux": selinux_state(),
        "seccomp_sandbox": seccomp,
        "virtiofsd": {"path": virtiofsd, "present": virtiofsd.exists()},
        "state_root": {"path": root.path(), "socket_headroom_bytes": root.socket_headroom()},
    });
    if json_out {
        println!("{report}");
    } else {
        println!(
            "qemu:            {} ({})",
            qemu.display(),
            report["qemu"]["version"].as_str().unwrap_or("?")
        );
        for t in &too_old {
            println!("too old:         {t}");
        }
        println!(
            "kvm:             /dev/kvm {}; auto picks {} ({})",
            if report["kvm"]["dev_kvm"] == true {
                "opens"
            } else {
                "unusable"
            },
            probe.accel.as_str(),
            probe.reason
        );
        println!("hugepages:       {}", report["hugepages"]);
        println!(
            "selinux:         {}",
            report["selinux"].as_str().unwrap_or("?")
        );
        println!(
            "seccomp sandbox: {}",
            if seccomp {
                "supported by QEMU"
            } else {
                "not supported"
            }
        );
        println!(
            "virtiofsd:       {} ({})",
            virtiofsd.display(),
            if virtiofsd.exists() {
                "present"
            } else {
                "missing"
            }
        );
        println!(
            "state root:      {} ({} bytes of socket-path headroom for an id)",
            root.path().display(),
            root.socket_headroom()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_old_names_the_feature_and_key() {
        let text = "[hypervisor.qemu]\nkernel = \"k\"\nshared_fs = \"none\"\nenable_virtio_mem = true\nguest_memory_dump_path = \"/var/crash\"\n";
        let host = runtime::config::HostInfo {
            numa_nodes: 1,
            cpus: 2,
            mem_mib: 4096,
            arch: GuestArch::X86_64,
        };
        let cfg = runtime::config::parse_str(Path::new("/c.toml"), text, &host)
            .unwrap()
            .config;
        let old = too_old(&cfg, (5, 0, 0));
        assert_eq!(old.len(), 2, "{old:?}");
        assert!(
            old[0].contains("virtio-mem")
                && old[0].contains("enable_virtio_mem")
                && old[0].contains(">= 5.1")
        );
        assert!(old[1].contains("guest_memory_dump_path") && old[1].contains(">= 6.0"));
        assert!(too_old(&cfg, (10, 0, 2)).is_empty());
        assert_eq!(
            too_old(&cfg, (4, 2, 0)).len(),
            3,
            "below sandvm's own minimum too"
        );
    }
}
