//! `sandvm check` and `sandvm cmdline`: the host fingerprint and the argv, as
//! scripts read them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sandvm_tests::*;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long the oracle gives the test guest to boot under KVM: seconds
/// where KVM works, a hang where it does not (as on a PVM host).
const KVM_BOOT_DEADLINE: Duration = Duration::from_secs(20);

/// Whether the test guest's own kernel boots to its ready line under KVM on
/// this host. The test's oracle, independent of the runtime's probe (a small
/// firmware that enters long mode, with a 3 s deadline): the real thing.
fn kvm_boots_the_guest(dir: &std::path::Path) -> bool {
    let g = guest();
    let console = dir.join("kvm-oracle.log");
    let mut child = Command::new(qemu("qemu-system-x86_64"))
        .args(["-machine", "q35,accel=kvm", "-cpu", "host", "-m", "256"])
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-no-user-config",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(&g.kernel)
        .arg("-initrd")
        .arg(&g.initrd)
        .args(["-append", "console=ttyS0 panic=1", "-serial"])
        .arg(format!("file:{}", console.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run qemu-system-x86_64 (make setup)");
    let booted = eventually(KVM_BOOT_DEADLINE, || {
        std::fs::read_to_string(&console).is_ok_and(|s| s.contains(READY))
    });
    let _ = child.kill();
    let _ = child.wait();
    booted
}

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
    // What this host must pick, from facts gathered here, apart from the CLI:
    // KVM only when /dev/kvm opens and a KVM guest really runs on it (here the
    // host's KVM is PVM, which may fail a stock guest).
    let dev_kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    assert_eq!(r["kvm"]["dev_kvm"], dev_kvm, "{r}");
    let must = if dev_kvm && kvm_boots_the_guest(&env.root) {
        "kvm"
    } else {
        "tcg"
    };
    assert_eq!(r["kvm"]["auto_picks"], must, "{r}");
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

/// A Kata key that would change the guest's security is refused before
/// anything starts, naming the key, the value and the file; so is a key
/// sandvm does not know. Nothing is left behind.
#[test]
fn a_confidential_guest_or_an_unknown_key_is_refused_by_name() {
    let env = Env::new("refused");
    for (extra, want) in [
        (
            "confidential_guest = true",
            "hypervisor.qemu.confidential_guest = true",
        ),
        (
            "virtio_fs_cache_size = 1024",
            "hypervisor.qemu.virtio_fs_cache_size = 1024",
        ),
        ("defualt_memory = 512", "hypervisor.qemu.defualt_memory"),
    ] {
        let cfg = env.config("c.toml", extra);
        for args in [
            vec!["cmdline", "--config", cfg.to_str().unwrap()],
            vec!["create", "--id", "r1", "--config", cfg.to_str().unwrap()],
        ] {
            let out = env.sandvm(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?} accepted {extra}");
            assert!(err.contains(want), "{args:?}: {err}");
            assert!(err.contains(cfg.to_str().unwrap()), "{args:?}: {err}");
        }
        assert!(env.sandboxes().is_empty(), "{extra}: {:?}", env.sandboxes());
    }
    env.assert_clean();
}
