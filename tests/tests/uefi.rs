//! UEFI: the test guest boots through OVMF (code read-only, a per-sandbox copy
//! of the vars), and the vars file named in the config is never written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sandvm_tests::*;
use std::path::Path;
use std::time::Duration;

const CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

#[test]
fn guest_boots_through_ovmf_and_the_vars_template_is_unchanged() {
    for f in [CODE, VARS] {
        assert!(
            Path::new(f).exists(),
            "{f} is missing: run `make setup` (Debian's ovmf)"
        );
    }
    let env = Env::new("uefi");
    // A private template, so the check cannot be fooled by another user of the system one.
    let vars = env.root.join("vars-template.fd");
    std::fs::copy(VARS, &vars).unwrap();
    let before = std::fs::read(&vars).unwrap();
    let cfg = env.config(
        "u.toml",
        &format!(
            "firmware = \"{CODE}\"\nfirmware_volume = \"{}\"\n",
            vars.display()
        ),
    );
    env.ok(&["create", "--config", cfg.to_str().unwrap(), "--id", "ue"]);
    env.ok(&["start", "ue"]);
    let log = env.root.join("ue/console.log");
    let ready = eventually(Duration::from_secs(240), || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.contains("SANDVM-GUEST-READY"))
    });
    assert!(
        ready,
        "no ready line through OVMF; qemu.log: {}",
        std::fs::read_to_string(env.root.join("ue/qemu.log")).unwrap_or_default()
    );
    // The guest booted through UEFI.
    assert_eq!(
        env.guest("ue", "test -d /sys/firmware/efi && echo efi || echo bios"),
        "efi"
    );
    let argv =
        json(&std::fs::read_to_string(env.root.join("ue/state.json")).unwrap())["argv"].clone();
    let argv: Vec<String> = serde_json::from_value(argv).unwrap();
    assert!(
        argv.iter()
            .any(|a| a.contains("if=pflash") && a.contains("efivars.fd")),
        "{argv:?}"
    );
    assert!(!argv.iter().any(|a| a == "-bios"), "{argv:?}");
    env.ok(&["stop", "ue"]);
    assert_eq!(
        std::fs::read(&vars).unwrap(),
        before,
        "the vars template was written"
    );
    std::fs::remove_file(&vars).unwrap();
    std::fs::remove_file(&cfg).unwrap();
    env.assert_clean();
}
