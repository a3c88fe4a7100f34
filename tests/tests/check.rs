//! `sandvm check` and `sandvm cmdline`: the host fingerprint and the argv, as
//! scripts read them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sandvm_tests::*;

#[test]
fn check_reports_the_host_fingerprint() {
    let env = Env::new("check");
    let cfg = env.config("c.toml", "");
    let out = env.ok(&["check", "--json", "--config", cfg.to_str().unwrap()]);
    let r = json(&out);
    let v = r["qemu"]["parsed"]
        .as_array()
        .expect("a parsed QEMU version");
    assert!(
        v[0].as_u64().unwrap() >= 10,
        "make setup installs QEMU 10: {r}"
    );
    assert_eq!(r["qemu"]["supported"], true);
    let pick = r["kvm"]["auto_picks"].as_str().unwrap();
    assert!(pick == "kvm" || pick == "tcg", "{r}");
    assert!(
        !r["kvm"]["reason"].as_str().unwrap().is_empty(),
        "the choice says why: {r}"
    );
    assert_eq!(r["seccomp_sandbox"], true, "Debian's QEMU has seccomp: {r}");
    assert_eq!(r["too_old_for_config"].as_array().unwrap().len(), 0, "{r}");
    assert!(r["state_root"]["socket_headroom_bytes"].as_i64().unwrap() > 0);
    env.assert_clean();
}

#[test]
fn cmdline_prints_the_argv_as_json() {
    let env = Env::new("cmdline");
    let cfg = env.config("c.toml", "");
    let argv = json(&env.ok(&["cmdline", "--config", cfg.to_str().unwrap(), "--json"]));
    let argv: Vec<String> = serde_json::from_value(argv).unwrap();
    assert_eq!(argv[0], qemu("qemu-system-x86_64").display().to_string());
    let m = argv.iter().position(|a| a == "-machine").unwrap();
    assert!(argv[m + 1].starts_with("q35,accel=tcg"), "{argv:?}");
    assert!(
        argv.windows(2)
            .any(|w| w[0] == "-chardev" && w[1].contains("fd=3"))
    );
    env.assert_clean();
}
