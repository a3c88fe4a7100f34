//! The TPM: swtpm's command line and the chardev, `-tpmdev emulator` and
//! `tpm-tis` device QEMU gets (`enable_tpm`, x86_64).

use crate::config::HypervisorConfig;
use qemu_config::{Chardev, Device, TpmTis, Tpmdev};
use std::path::Path;

/// swtpm's control socket, in the sandbox folder.
pub const TPM_SOCKET: &str = "swtpm.sock";
/// The TPM state folder, in the sandbox folder.
pub const TPM_STATE_DIR: &str = "tpm";
/// swtpm's log, in the sandbox folder.
pub const TPM_LOG: &str = "swtpm.log";
/// Chardev id of the control socket.
pub const TPM_CHARDEV: &str = "chrtpm";
/// The `-tpmdev` id.
pub const TPMDEV_ID: &str = "tpm0";
/// The TPM front end's device id.
pub const TPM_DEVICE: &str = "tpm-tis0";
/// The fd swtpm gets its pre-bound control listener on.
pub const CTRL_FD: i32 = 3;

/// swtpm's arguments for a sandbox in `dir`, with its control listener on fd 3.
/// With `--terminate` it ends by itself when QEMU closes its connection.
pub fn swtpm_args(dir: &Path) -> Vec<String> {
    vec![
        "socket".into(),
        "--tpm2".into(),
        "--tpmstate".into(),
        format!("dir={}", dir.join(TPM_STATE_DIR).display()),
        "--ctrl".into(),
        format!("type=unixio,fd={CTRL_FD}"),
        "--log".into(),
        // Appends, as the runtime's own redirect of stdout and stderr does.
        format!("file={},level=1", dir.join(TPM_LOG).display()),
        "--terminate".into(),
    ]
}

/// The chardev, tpmdev and `tpm-tis` device QEMU needs, when the TPM is on.
pub fn qemu_parts(cfg: &HypervisorConfig, dir: &Path) -> Option<(Chardev, Tpmdev, Device)> {
    cfg.extras.swtpm.as_ref()?;
    let chardev = Chardev::Socket {
        id: TPM_CHARDEV.into(),
        path: Some(dir.join(TPM_SOCKET).display().to_string()),
        fd: None,
        server: false,
        wait: false,
        logfile: None,
        logappend: None,
    };
    let tpmdev = Tpmdev {
        id: TPMDEV_ID.into(),
        chardev: TPM_CHARDEV.into(),
    };
    let dev = Device::TpmTis(TpmTis {
        id: TPM_DEVICE.into(),
        tpmdev: TPMDEV_ID.into(),
    });
    Some((chardev, tpmdev, dev))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::{ConfigError, GuestArch, HostInfo, parse_str};

    const HOST: HostInfo = HostInfo {
        numa_nodes: 1,
        cpus: 8,
        mem_mib: 16384,
        arch: GuestArch::X86_64,
    };

    fn cfg(extra: &str) -> std::result::Result<HypervisorConfig, ConfigError> {
        let body = format!("[hypervisor.qemu]\nkernel = \"/k\"\nshared_fs = \"none\"\n{extra}\n");
        parse_str(Path::new("/etc/sandvm/t.toml"), &body, &HOST).map(|l| l.config)
    }

    #[test]
    fn enable_tpm_defaults_to_debians_swtpm_and_resolves_a_relative_path() {
        assert_eq!(cfg("").unwrap().extras.swtpm, None);
        assert_eq!(
            cfg("enable_tpm = true").unwrap().extras.swtpm,
            Some("/usr/bin/swtpm".into())
        );
        assert_eq!(
            cfg("enable_tpm = true\nswtpm_path = \"bin/swtpm\"")
                .unwrap()
                .extras
                .swtpm,
            Some("/etc/sandvm/bin/swtpm".into())
        );
        // swtpm_path alone does not turn the TPM on.
        assert_eq!(cfg("swtpm_path = \"/x/swtpm\"").unwrap().extras.swtpm, None);
    }

    #[test]
    fn enable_tpm_off_x86_names_the_key() {
        let e = cfg("enable_tpm = true\nguest_arch = \"aarch64\"").unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { key, .. } if key == "hypervisor.qemu.enable_tpm"),
            "{e}"
        );
    }

    #[test]
    fn qemu_gets_the_chardev_the_emulator_backend_and_tpm_tis() {
        let c = cfg("enable_tpm = true").unwrap();
        let args = crate::plan::planned_for_test(&c, crate::config::Accel::Tcg, None)
            .to_args()
            .join(" ");
        assert!(
            args.contains("-chardev socket,id=chrtpm,path=/run/sandvm/t/swtpm.sock"),
            "{args}"
        );
        assert!(
            args.contains("-tpmdev emulator,id=tpm0,chardev=chrtpm"),
            "{args}"
        );
        assert!(
            args.contains("-device tpm-tis,id=tpm-tis0,tpmdev=tpm0"),
            "{args}"
        );
        let off = cfg("").unwrap();
        assert!(qemu_parts(&off, Path::new("/d")).is_none());
    }

    #[test]
    fn args_use_the_prebound_fd_and_the_sandbox_state_dir() {
        let a = swtpm_args(Path::new("/run/sandvm/x"));
        assert_eq!(a[0], "socket");
        assert!(a.contains(&"dir=/run/sandvm/x/tpm".to_string()));
        assert!(a.contains(&"type=unixio,fd=3".to_string()));
        assert!(a.contains(&"--tpm2".to_string()));
    }
}
