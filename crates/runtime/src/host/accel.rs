//! Accelerator choice. `auto` uses KVM only after a probe guest proves that
//! a guest instruction runs under it; otherwise TCG, with a warning that says why.
//!
//! The probe runs QEMU as a sandbox would (q35, `-cpu host`) with a 64 KiB
//! firmware image whose reset vector writes to
//! `isa-debug-exit`; QEMU then exits with status 3. On hosts where
//! `/dev/kvm` opens but guests hang (nested virtualisation that does not
//! work), the deadline passes, the probe is killed and TCG is chosen.
//! The verdict is cached per boot (keyed by `/proc/sys/kernel/random/boot_id`
//! and the QEMU binary) in `<state root>/accel-probe.json`.

use crate::config::{Accel, Accelerator, GuestArch};
use crate::host::process;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// How long the probe guest may take before KVM is declared unusable.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(3);
/// Exit status of QEMU when the probe guest wrote 1 to isa-debug-exit.
const PROBE_OK_STATUS: i32 = 3;
const CACHE_FILE: &str = "accel-probe.json";

/// Why KVM cannot be used, or the accelerator the config asks for cannot.
#[derive(Debug, thiserror::Error)]
pub enum AccelError {
    /// `accelerator = "kvm"` for a guest of another arch.
    #[error("hypervisor.qemu.accelerator = \"kvm\" cannot run a {guest} guest on a {host} host")]
    ForeignArch {
        /// The guest's arch.
        guest: GuestArch,
        /// The host's arch.
        host: GuestArch,
    },
    /// /dev/kvm cannot be opened (`accelerator = "kvm"` needs it).
    #[error("hypervisor.qemu.accelerator: /dev/kvm: {0}")]
    NoKvm(#[source] std::io::Error),
    /// The probe could not run.
    #[error("cannot run the KVM probe with {qemu}: {source}")]
    Spawn {
        /// The QEMU binary.
        qemu: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The probe guest ended with the wrong status.
    #[error("probe guest exited with {status}: {stderr}")]
    ProbeFailed {
        /// Its exit status.
        status: String,
        /// QEMU's stderr.
        stderr: String,
    },
    /// The probe guest did not finish: KVM guests hang on this host.
    #[error("probe guest did not finish within {0:?} (KVM guests hang on this host)")]
    ProbeHung(Duration),
}

/// Why an accelerator was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The accelerator.
    pub accel: Accel,
    /// Why.
    pub reason: String,
}

#[derive(Serialize, Deserialize)]
struct Cache {
    boot_id: String,
    qemu: String,
    decision: Decision,
}

/// The probe firmware: 64 KiB of `hlt`, with `mov al,1; out 0xf4,al; hlt` at the reset vector.
pub fn probe_firmware() -> Vec<u8> {
    let mut fw = vec![0xF4u8; 64 * 1024];
    let reset = 0xFFF0;
    fw[reset..reset + 5].copy_from_slice(&[0xB0, 0x01, 0xE6, 0xF4, 0xF4]);
    fw
}

/// Whether /dev/kvm can be opened read-write.
pub fn kvm_openable() -> Result<(), AccelError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(|_| ())
        .map_err(AccelError::NoKvm)
}

/// Run the probe guest under KVM. Ok when it exits with the expected status in time.
pub async fn probe_kvm(qemu: &Path, scratch: &Path) -> Result<(), AccelError> {
    kvm_openable()?;
    let fw = scratch.join(format!(".kvm-probe-{}.bin", std::process::id()));
    std::fs::write(&fw, probe_firmware()).map_err(|source| AccelError::Spawn {
        qemu: format!("{} (writing {})", qemu.display(), fw.display()),
        source,
    })?;
    let result = run_probe(qemu, &fw).await;
    let _ = std::fs::remove_file(&fw);
    result
}

async fn run_probe(qemu: &Path, fw: &Path) -> Result<(), AccelError> {
    let mut child = tokio::process::Command::new(qemu)
        .args([
            "-machine",
            "q35,accel=kvm",
            "-cpu",
            "host",
            "-nodefaults",
            "-nographic",
            "-no-user-config",
        ])
        .args([
            "-display",
            "none",
            "-m",
            "16",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
        ])
        .arg("-bios")
        .arg(fw)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| AccelError::Spawn {
            qemu: qemu.display().to_string(),
            source,
        })?;
    match tokio::time::timeout(PROBE_DEADLINE, child.wait()).await {
        Ok(Ok(st)) if st.code() == Some(PROBE_OK_STATUS) => Ok(()),
        Ok(Ok(st)) => {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = e.read_to_string(&mut err).await;
            }
            Err(AccelError::ProbeFailed {
                status: st.to_string(),
                stderr: err.trim().to_string(),
            })
        }
        Ok(Err(source)) => Err(AccelError::Spawn {
            qemu: qemu.display().to_string(),
            source,
        }),
        Err(_) => {
            if let Some(pid) = child.id() {
                process::signal(pid as i32, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.wait().await;
            Err(AccelError::ProbeHung(PROBE_DEADLINE))
        }
    }
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Decide the accelerator for `policy`. `cache_dir` holds the per-boot verdict.
pub async fn decide(
    policy: Accelerator,
    arch: GuestArch,
    qemu: &Path,
    cache_dir: &Path,
) -> Result<Decision, AccelError> {
    let host_arch = GuestArch::host();
    match policy {
        Accelerator::Tcg => Ok(Decision {
            accel: Accel::Tcg,
            reason: "accelerator = \"tcg\"".into(),
        }),
        Accelerator::Kvm => {
            if arch != host_arch {
                return Err(AccelError::ForeignArch {
                    guest: arch,
                    host: host_arch,
                });
            }
            kvm_openable()?;
            Ok(Decision {
                accel: Accel::Kvm,
                reason: "accelerator = \"kvm\"".into(),
            })
        }
        Accelerator::Auto => {
            if arch != host_arch {
                return Ok(Decision {
                    accel: Accel::Tcg,
                    reason: format!("{arch} guest on a {host_arch} host"),
                });
            }
            let key = qemu.display().to_string();
            let boot = boot_id();
            let cache = cache_dir.join(CACHE_FILE);
            if let Some(c) = std::fs::read(&cache)
                .ok()
                .and_then(|b| serde_json::from_slice::<Cache>(&b).ok())
                && c.boot_id == boot
                && c.qemu == key
            {
                return Ok(c.decision);
            }
            let decision = match probe_kvm(qemu, cache_dir).await {
                Ok(()) => Decision {
                    accel: Accel::Kvm,
                    reason: "KVM probe guest ran".into(),
                },
                Err(why) => {
                    tracing::warn!(%why, "KVM is not usable; falling back to TCG");
                    Decision {
                        accel: Accel::Tcg,
                        reason: why.to_string(),
                    }
                }
            };
            let c = Cache {
                boot_id: boot,
                qemu: key,
                decision: decision.clone(),
            };
            if let Ok(json) = serde_json::to_vec(&c) {
                let tmp = cache_dir.join(format!(".{CACHE_FILE}.{}", std::process::id()));
                if std::fs::write(&tmp, json).is_ok() {
                    let _ = std::fs::rename(&tmp, &cache);
                }
            }
            Ok(decision)
        }
    }
}

/// Probe without the cache (for `sandvm check`).
pub async fn probe_uncached(arch: GuestArch, qemu: &Path, scratch: &Path) -> Decision {
    if arch != GuestArch::host() {
        return Decision {
            accel: Accel::Tcg,
            reason: format!("{arch} guest on a {} host", GuestArch::host()),
        };
    }
    match probe_kvm(qemu, scratch).await {
        Ok(()) => Decision {
            accel: Accel::Kvm,
            reason: "KVM probe guest ran".into(),
        },
        Err(reason) => Decision {
            accel: Accel::Tcg,
            reason: reason.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_has_the_probe_at_the_reset_vector() {
        let fw = probe_firmware();
        assert_eq!(fw.len(), 65536);
        assert_eq!(&fw[0xFFF0..0xFFF5], &[0xB0, 0x01, 0xE6, 0xF4, 0xF4]);
    }

    /// The probe itself is proven under TCG: the same firmware, the same exit status.
    #[tokio::test]
    async fn probe_firmware_runs_under_tcg() {
        let qemu = Path::new("/usr/bin/qemu-system-x86_64");
        assert!(
            qemu.exists(),
            "qemu-system-x86_64 is missing: run `make setup`"
        );
        let dir = tempfile::tempdir().unwrap();
        let fw = dir.path().join("fw.bin");
        std::fs::write(&fw, probe_firmware()).unwrap();
        let st = tokio::process::Command::new(qemu)
            .args([
                "-machine",
                "pc,accel=tcg",
                "-nodefaults",
                "-nographic",
                "-no-user-config",
            ])
            .args([
                "-display",
                "none",
                "-m",
                "16",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=0x04",
            ])
            .arg("-bios")
            .arg(&fw)
            .kill_on_drop(true)
            .status()
            .await
            .unwrap();
        assert_eq!(st.code(), Some(PROBE_OK_STATUS));
    }

    #[tokio::test]
    async fn forced_tcg_needs_no_probe() {
        let d = decide(
            Accelerator::Tcg,
            GuestArch::X86_64,
            Path::new("/nonexistent"),
            Path::new("/nonexistent"),
        )
        .await
        .unwrap();
        assert_eq!(d.accel, Accel::Tcg);
        let d = decide(
            Accelerator::Auto,
            GuestArch::S390x,
            Path::new("/nonexistent"),
            Path::new("/nonexistent"),
        )
        .await
        .unwrap();
        assert_eq!(d.accel, Accel::Tcg);
    }
}
