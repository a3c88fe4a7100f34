//! `sandvm check`: the host's fingerprint.

use anyhow::Result;
use runtime::accel;
use runtime::config::{GuestArch, HypervisorConfig};
use runtime::state::StateRoot;
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
    tokio::process::Command::new(qemu)
        .args([
            "-sandbox",
            "on",
            "-machine",
            "none",
            "-nodefaults",
            "-display",
            "none",
            "-S",
            "-no-user-config",
        ])
        .args(["-qmp", "stdio"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false)
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
    let kvm_open = accel::kvm_openable();
    let scratch = std::env::temp_dir();
    let probe = accel::probe_uncached(arch, &qemu, &scratch).await;
    let seccomp = qemu_has_seccomp(&qemu).await;
    let virtiofsd = cfg
        .as_ref()
        .and_then(|c| c.shared_fs.daemon.clone())
        .unwrap_or_else(|| PathBuf::from(runtime::config::DEFAULT_VIRTIO_FS_DAEMON));
    let report = json!({
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
