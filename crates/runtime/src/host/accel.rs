//! Accelerator choice. `auto` uses KVM only after a probe guest proves that
//! a guest instruction runs under it; otherwise TCG, with a warning that says why.
//!
//! The probe runs QEMU as a sandbox would (q35, `-cpu host`) with a 64 KiB
//! firmware image that goes from real mode through protected mode into long
//! mode with paging, as a guest kernel's boot does, then writes to
//! `isa-debug-exit`; QEMU then exits with status 3 (source: `kvm_probe.S`).
//! A real-mode-only probe is not enough: on a PVM host, KVM runs real mode
//! but a normal kernel hangs once it leaves it. On hosts where
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
/// The probe's version in the cache: a verdict of another probe is redone.
const PROBE_VERSION: u32 = 2;

/// The probe's code, from `kvm_probe.S`, placed at the firmware's start.
const PROBE_CODE: [u8; 0xB6] = [
    0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0x2E, 0x66, 0x0F, 0x01, 0x16, 0xB0, 0x00, 0x0F, 0x20, 0xC0, 0x66,
    0x83, 0xC8, 0x01, 0x0F, 0x22, 0xC0, 0x66, 0xEA, 0x1E, 0x00, 0xFF, 0xFF, 0x08, 0x00, 0x66, 0xB8,
    0x10, 0x00, 0x8E, 0xD8, 0x8E, 0xC0, 0x8E, 0xD0, 0xBF, 0x00, 0x10, 0x00, 0x00, 0x31, 0xC0, 0xB9,
    0x00, 0x0C, 0x00, 0x00, 0xF3, 0xAB, 0xC7, 0x05, 0x00, 0x10, 0x00, 0x00, 0x03, 0x20, 0x00, 0x00,
    0xC7, 0x05, 0x18, 0x20, 0x00, 0x00, 0x03, 0x30, 0x00, 0x00, 0xC7, 0x05, 0xF8, 0x3F, 0x00, 0x00,
    0x83, 0x00, 0xE0, 0xFF, 0x0F, 0x20, 0xE0, 0x83, 0xC8, 0x20, 0x0F, 0x22, 0xE0, 0xB8, 0x00, 0x10,
    0x00, 0x00, 0x0F, 0x22, 0xD8, 0xB9, 0x80, 0x00, 0x00, 0xC0, 0x0F, 0x32, 0x0D, 0x00, 0x01, 0x00,
    0x00, 0x0F, 0x30, 0x0F, 0x20, 0xC0, 0x0D, 0x00, 0x00, 0x00, 0x80, 0x0F, 0x22, 0xC0, 0xEA, 0x85,
    0x00, 0xFF, 0xFF, 0x18, 0x00, 0xB0, 0x01, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD, 0x8D, 0xB4, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x9A, 0xCF, 0x00,
    0xFF, 0xFF, 0x00, 0x00, 0x00, 0x92, 0xCF, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x9A, 0xAF, 0x00,
    0x1F, 0x00, 0x90, 0x00, 0xFF, 0xFF,
];
/// At the reset vector (0xFFF0): `jmp 0x0000` (rel16, wrapping to the start).
const RESET_JUMP: [u8; 3] = [0xE9, 0x0D, 0x00];

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
    #[serde(default)]
    probe: u32,
    boot_id: String,
    qemu: String,
    decision: Decision,
}

/// The probe firmware: 64 KiB of `hlt`, the probe's code at the start and a
/// jump to it at the reset vector.
pub fn probe_firmware() -> Vec<u8> {
    let mut fw = vec![0xF4u8; 64 * 1024];
    fw[..PROBE_CODE.len()].copy_from_slice(&PROBE_CODE);
    let reset = 0xFFF0;
    fw[reset..reset + RESET_JUMP.len()].copy_from_slice(&RESET_JUMP);
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
                && c.probe == PROBE_VERSION
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
                probe: PROBE_VERSION,
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
    fn firmware_jumps_from_the_reset_vector_to_the_probe() {
        let fw = probe_firmware();
        assert_eq!(fw.len(), 65536);
        assert_eq!(&fw[0xFFF0..0xFFF3], &RESET_JUMP);
        assert_eq!(&fw[..PROBE_CODE.len()], &PROBE_CODE);
    }

    /// The bytes are the assembled `kvm_probe.S` (binutils, which `make
    /// setup` installs with gcc).
    #[test]
    fn probe_code_matches_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/host/kvm_probe.S");
        let (obj, bin) = (dir.path().join("p.o"), dir.path().join("p.bin"));
        let run = |cmd: &mut std::process::Command| {
            let out = cmd
                .output()
                .unwrap_or_else(|e| panic!("{cmd:?}: {e} (binutils: run `make setup`)"));
            assert!(out.status.success(), "{cmd:?}: {out:?}");
        };
        run(std::process::Command::new("as")
            .arg("--32")
            .arg("-o")
            .arg(&obj)
            .arg(&src));
        run(std::process::Command::new("objcopy")
            .args(["-O", "binary"])
            .arg(&obj)
            .arg(&bin));
        let b = std::fs::read(&bin).unwrap();
        assert_eq!(b.len(), 65536);
        assert_eq!(&b[..PROBE_CODE.len()], &PROBE_CODE);
        assert_eq!(&b[0xFFF0..0xFFF3], &RESET_JUMP);
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
                "q35,accel=tcg",
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
