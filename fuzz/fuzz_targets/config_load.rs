//! Fuzz config loading: any text must load or give an error that names a key
//! (or the file, for syntax errors), never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime::config::{ConfigError, GuestArch, HostInfo, parse_str};
use std::path::Path;

const HOST: HostInfo = HostInfo { cpus: 4, mem_mib: 8192, arch: GuestArch::X86_64 };

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_str(Path::new("/fuzz/config.toml"), text, &HOST) {
        Ok(loaded) => {
            let _ = loaded.config.check_supported();
        }
        Err(ConfigError::Invalid { key, .. }) => assert!(!key.is_empty()),
        Err(e) => assert!(e.to_string().contains("/fuzz/config.toml")),
    }
});
