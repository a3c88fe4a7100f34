//! Fuzz config loading: any text must load or give an error that names a key
//! (or the file, for syntax errors), never a panic. A config that loads must
//! also build into a QEMU command line that qemu-config accepts, under KVM and
//! under TCG: what validation lets through must not fail later at `create`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime::config::{Accel, ConfigError, GuestArch, HostInfo, parse_str};
use std::path::Path;

const HOST: HostInfo = HostInfo {
    numa_nodes: 1,
    cpus: 4,
    mem_mib: 8192,
    arch: GuestArch::X86_64,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_str(Path::new("/fuzz/config.toml"), text, &HOST) {
        Ok(loaded) => {
            let cfg = &loaded.config;
            let _ = cfg.check_supported();
            for accel in [Accel::Kvm, Accel::Tcg] {
                let planned = runtime::tools::plan(
                    cfg,
                    "fuzz",
                    "00000000-0000-0000-0000-000000000000",
                    Path::new("/run/sandvm/fuzz"),
                    accel,
                );
                let qc = match planned {
                    Ok(qc) => qc,
                    Err(e) => panic!("loaded, but the QEMU config is invalid under {accel:?}: {e}"),
                };
                assert!(qc.to_args().iter().all(|a| !a.contains('\0')));
            }
        }
        Err(ConfigError::Invalid { key, .. }) => assert!(!key.is_empty()),
        Err(e) => assert!(e.to_string().contains("/fuzz/config.toml")),
    }
});
