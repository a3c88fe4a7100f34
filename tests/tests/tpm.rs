//! TPM end to end: `enable_tpm` gives the real guest a TPM 2.0 (tpm-tis)
//! emulated by a per-sandbox swtpm whose state lives in the sandbox folder;
//! `stop` reaps swtpm. Real QEMU (TCG), the real CLI; ends with the leak check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sandvm_tests::*;
use std::time::Duration;

const SWTPM: &str = "/usr/bin/swtpm";

#[test]
fn guest_sees_a_tpm2_from_swtpm_and_stop_reaps_it() {
    assert!(
        std::path::Path::new(SWTPM).exists(),
        "{SWTPM} is missing: run `make setup`"
    );
    let env = Env::new("tpm");
    let cfg = env.config("t.toml", "enable_tpm = true\n");
    let id = "t1";
    assert_eq!(
        env.ok(&["create", "--config", cfg.to_str().unwrap(), "--id", id])
            .trim(),
        id
    );
    env.ok(&["start", id]);
    let dir = env.root.join(id);
    env.wait_ready(id);

    let st = json(&std::fs::read_to_string(dir.join("state.json")).unwrap());
    let pid = st["tpm"]["pid"]
        .as_i64()
        .expect("no swtpm pid in state.json") as i32;
    assert!(process_alive(pid), "swtpm runs");
    assert!(
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .unwrap()
            .ends_with("swtpm")
    );
    assert!(dir.join("tpm").is_dir(), "TPM state folder in the sandbox");

    assert_eq!(env.guest(id, "ls /sys/class/tpm"), "tpm0");
    assert_eq!(
        env.guest(id, "cat /sys/class/tpm/tpm0/tpm_version_major"),
        "2"
    );
    // The TPM's NVRAM is written to the sandbox's state folder.
    assert!(
        eventually(Duration::from_secs(10), || dir
            .join("tpm/tpm2-00.permall")
            .exists()),
        "no TPM state in {}",
        dir.join("tpm").display()
    );

    env.ok(&["stop", id]);
    assert!(!process_alive(pid), "stop reaps swtpm");
    env.assert_clean();
}

#[test]
fn enable_tpm_is_refused_off_x86() {
    let env = Env::new("tpmarch");
    let cfg = env.config("a.toml", "enable_tpm = true\nguest_arch = \"s390x\"\n");
    let out = env.sandvm(&["create", "--config", cfg.to_str().unwrap(), "--id", "a1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("enable_tpm"), "{err}");
    env.assert_clean();
}

#[test]
fn killing_swtpm_stops_the_sandbox_and_leaves_nothing() {
    let env = Env::new("tpmkill");
    let cfg = env.config("k.toml", "enable_tpm = true\n");
    let id = "k1";
    env.ok(&["create", "--config", cfg.to_str().unwrap(), "--id", id]);
    env.ok(&["start", id]);
    let log = env.root.join(id).join("console.log");
    assert!(eventually(Duration::from_secs(120), || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.contains(READY))
    }));
    let st = json(&std::fs::read_to_string(env.root.join(id).join("state.json")).unwrap());
    let pid = st["tpm"]["pid"].as_i64().unwrap() as i32;
    let qemu = st["pid"].as_i64().unwrap() as i32;
    assert!(
        st["supervisor_pid"].as_i64().is_some(),
        "a TPM sandbox is supervised"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The supervisor sees swtpm's exit (pidfd), ends QEMU and removes the sandbox.
    let gone = eventually(Duration::from_secs(60), || {
        !process_alive(qemu) && !env.root.join(id).exists()
    });
    assert!(gone, "sandbox still there after swtpm died");
    assert!(eventually(Duration::from_secs(10), || {
        processes_mentioning(&env.root).is_empty()
    }));
    env.assert_clean();
}

#[test]
fn a_missing_swtpm_is_named_at_create_and_leaves_nothing() {
    let env = Env::new("tpmmiss");
    let cfg = env.config(
        "m.toml",
        "enable_tpm = true\nswtpm_path = \"/nonexistent/swtpm\"\n",
    );
    let out = env.sandvm(&["create", "--config", cfg.to_str().unwrap(), "--id", "m1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("swtpm_path") && err.contains("/nonexistent/swtpm"),
        "{err}"
    );
    env.assert_clean();
}
