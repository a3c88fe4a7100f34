//! End-to-end lifecycle tests: real QEMU (TCG), the real test guest, the real CLI.
//! Each test ends with the leak check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sandvm_tests::*;
use std::time::Duration;

#[test]
fn initrd_boot_console_status_and_stop_from_separate_processes() {
    let env = Env::new("initrd");
    let cfg = env.config("c.toml", "");
    env.boot(&cfg, "a1");

    let st = json(&env.ok(&["status", "a1", "--json"]));
    assert_eq!(st["state"], "running");
    let pid = st["pid"].as_i64().unwrap() as i32;
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    // The guest computes; the pattern does not appear in what we sent.
    assert_eq!(env.guest("a1", "echo $((6*7))"), "42");
    assert_eq!(env.guest("a1", "nproc"), "1");
    // The raw --send/--expect form scripts use.
    let raw = env.ok(&[
        "console",
        "a1",
        "--send",
        "echo RESULT=$((6*7))",
        "--expect",
        "RESULT=42",
    ]);
    assert!(raw.contains("RESULT=42"), "{raw}");

    let list = json(&env.ok(&["list", "--json"]));
    assert_eq!(list[0]["id"], "a1");

    env.ok(&["stop", "a1"]);
    assert!(!process_alive(pid), "QEMU {pid} survived the stop");
    // Idempotent.
    env.ok(&["stop", "a1"]);
    env.assert_clean();
}

/// What the test guest's init prints when its ACPI power button is pressed.
const POWER_BUTTON: &str = "sandvm-init: ACPI power button: powering off";

#[test]
fn graceful_stop_is_a_powerdown_the_guest_answers_before_any_signal() {
    let env = Env::new("graceful");
    let cfg = env.config("g.toml", "");
    env.boot(&cfg, "g1");
    let pid = env.qemu_pid("g1");
    // Hold the console until QEMU closes it: what the guest says going down.
    let mut console =
        std::os::unix::net::UnixStream::connect(env.root.join("g1/console.sock")).unwrap();
    console
        .set_read_timeout(Some(Duration::from_secs(300)))
        .unwrap();
    let said = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut console, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    // A grace far beyond any boot here: a fallback to a signal is the
    // guest's failure, not the host's load.
    let r = json(&env.ok(&["stop", "g1", "--grace", "120", "--json"]));
    assert_eq!(
        r["outcome"], "graceful",
        "QEMU did not exit before a signal: {r}"
    );
    assert_eq!(r["shutdown"]["guest"], true, "not guest-initiated: {r}");
    assert_eq!(r["shutdown"]["reason"], "guest-shutdown", "{r}");
    let said = said.join().unwrap();
    assert!(
        said.contains(POWER_BUTTON),
        "the guest never saw the power button; its console:\n{said}"
    );
    assert!(!process_alive(pid));
    // A second stop finds nothing to stop, and says so.
    let again = json(&env.ok(&["stop", "g1", "--json"]));
    assert_eq!(again["outcome"], "not-running", "{again}");
    env.assert_clean();
}

#[test]
fn nvdimm_image_is_the_root_filesystem() {
    let env = Env::new("nvdimm");
    let g = guest();
    let cfg = env.config("n.toml", &format!("image = \"{}\"\n", g.rootfs.display()));
    env.boot(&cfg, "n1");
    let root = env.guest("n1", "awk '$2==\"/\"{print $1, $4}' /proc/mounts | tail -1");
    assert!(
        root.starts_with("/dev/pmem0p1 "),
        "root is not on pmem0p1: {root}"
    );
    assert!(root.contains("dax"), "root is not mounted with DAX: {root}");
    env.ok(&["stop", "n1", "--force"]);
    env.assert_clean();
}

#[tokio::test(flavor = "current_thread")]
async fn pause_and_resume_show_in_qmp() {
    let env = Env::new("pause");
    let cfg = env.config("p.toml", "");
    env.boot(&cfg, "p1");
    let qmp_path = env.root.join("p1/qmp.sock");

    env.ok(&["pause", "p1"]);
    {
        let c = qmp::Client::connect(&qmp_path).await.unwrap();
        let s = c.query_status().await.unwrap();
        assert!(!s.running, "{s:?}");
    }
    assert_eq!(
        json(&env.ok(&["status", "p1", "--json"]))["state"],
        "paused"
    );
    // Resuming twice is refused: it is not paused any more.
    env.ok(&["resume", "p1"]);
    {
        let c = qmp::Client::connect(&qmp_path).await.unwrap();
        assert!(c.query_status().await.unwrap().running);
    }
    let again = env.sandvm(&["resume", "p1"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("running"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    env.ok(&["stop", "p1"]);
    env.assert_clean();
}

#[test]
fn stop_after_qemu_was_killed_from_outside() {
    let env = Env::new("killed");
    let cfg = env.config("k.toml", "");
    env.boot(&cfg, "k1");
    let pid = json(&env.ok(&["status", "k1", "--json"]))["pid"]
        .as_i64()
        .unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(10), || !process_alive(pid)));
    assert_eq!(
        json(&env.ok(&["status", "k1", "--json"]))["state"],
        "stopped"
    );
    env.ok(&["stop", "k1"]);
    env.assert_clean();
}

#[test]
fn start_wait_returns_once_the_guest_is_up_or_says_why_not() {
    let env = Env::new("swait");
    let cfg = env.config("w.toml", "");
    let cfg = cfg.to_str().unwrap();
    env.ok(&["create", "--config", cfg, "--id", "w1"]);
    let t = json(&env.ok(&["start", "w1", "--wait", "--json"]));
    // Both present (an absent one compares as None, which any number beats).
    let ms = |k: &str| t[k].as_f64().unwrap_or_else(|| panic!("no {k} in {t}"));
    assert!(ms("guest_ready_ms") > ms("qmp_ready_ms"), "{t}");
    // The ready line it saw reached the console log too (QEMU's log of the
    // console may trail the socket a moment); a 0 s wait below proves the
    // wait itself.
    let log = env.root.join("w1/console.log");
    assert!(
        eventually(Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains(READY))
        }),
        "no {READY} in {}",
        log.display()
    );
    // The guest's shell answers at once.
    assert!(env.guest("w1", "echo W-$((40+2))").contains("W-42"));
    // A guest that is not up in time: a clear error, and the VM stays.
    env.ok(&["create", "--config", cfg, "--id", "w2"]);
    let out = env.sandvm(&["start", "w2", "--wait", "--wait-timeout", "0"]);
    assert!(!out.status.success(), "a 0 s wait cannot see the guest up");
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "w2 not up within 0s",
        READY,
        "still running",
        "sandvm stop w2",
    ] {
        assert!(err.contains(want), "{want:?} missing in: {err}");
    }
    assert_eq!(
        json(&env.ok(&["status", "w2", "--json"]))["state"],
        "running"
    );
    env.ok(&["stop", "w1"]);
    env.ok(&["stop", "w2"]);
    env.assert_clean();
}

#[test]
fn stop_waits_while_another_process_holds_the_sandbox_briefly() {
    let env = Env::new("busystop");
    let cfg = env.config("b.toml", "");
    env.ok(&["create", "--config", cfg.to_str().unwrap(), "--id", "b1"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // This process holds the sandbox, as a supervisor recording an exit does.
    let held = rt
        .block_on(runtime::Qemu::attach(
            runtime::StateRoot::new(&env.root),
            "b1",
        ))
        .unwrap();
    let stop = env.spawn(&["stop", "b1"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        env.root.join("b1").exists(),
        "stop went ahead while the sandbox was held"
    );
    drop(held);
    let out = finish(stop, "sandvm stop");
    assert!(out.status.success(), "{out:?}");
    env.assert_clean();
}

#[test]
fn run_prints_a_json_timeline_and_cleans_up() {
    let env = Env::new("run");
    let cfg = env.config("run.toml", "");
    let out = env.ok(&["run", "--config", cfg.to_str().unwrap(), "--json"]);
    let t = json(&out);
    for k in ["spawn_ms", "qmp_ready_ms", "guest_ready_ms", "stop_ms"] {
        assert!(t[k].as_f64().is_some_and(|v| v > 0.0), "{k} missing in {t}");
    }
    assert!(t["guest_ready_ms"].as_f64() > t["qmp_ready_ms"].as_f64());
    env.assert_clean();
}

#[test]
fn qemu_dying_in_mid_start_reports_its_stderr_and_leaves_nothing() {
    let env = Env::new("qdies");
    let cfg = env.config("bad.toml", "machine_accelerators = \"no-such-option=on\"\n");
    env.ok(&["create", "--config", cfg.to_str().unwrap(), "--id", "d1"]);
    let out = env.sandvm(&["start", "d1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("QEMU stderr") && err.contains("no-such-option"),
        "{err}"
    );
    env.assert_clean();
}

#[test]
fn config_errors_name_the_key_and_create_nothing() {
    let env = Env::new("cfgerr");
    let cfg = env.config("e.toml", "default_vcpus = \"many\"\n");
    let out = env.sandvm(&["create", "--config", cfg.to_str().unwrap(), "--id", "x"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hypervisor.qemu.default_vcpus"), "{err}");

    let cfg = env.config("m.toml", "image = \"/nonexistent/rootfs.img\"\n");
    let out = env.sandvm(&["create", "--config", cfg.to_str().unwrap(), "--id", "x"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hypervisor.qemu.image"));

    let bad_id = env.sandvm(&[
        "create",
        "--config",
        env.config("ok.toml", "").to_str().unwrap(),
        "--id",
        "../evil",
    ]);
    assert!(!bad_id.status.success());
    assert!(String::from_utf8_lossy(&bad_id.stderr).contains("Invalid sandbox id"));

    let missing = env.sandvm(&["start", "nope"]);
    assert_eq!(missing.status.code(), Some(4));
    env.assert_clean();
}

#[test]
fn socket_path_too_long_is_a_clear_error() {
    let env = Env::new("longpath");
    let deep = env.root.join("d".repeat(80));
    let cfg = env.config("c.toml", "");
    let out = std::process::Command::new(sandvm_bin())
        .arg("--state-dir")
        .arg(&deep)
        .args([
            "create",
            "--config",
            cfg.to_str().unwrap(),
            "--id",
            "a-rather-long-sandbox-id",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Socket path") && err.contains("107"), "{err}");
    assert!(!deep.exists());
    env.assert_clean();
}

#[test]
fn two_processes_on_one_id_one_wins() {
    let env = Env::new("race");
    let cfg = env.config("c.toml", "");
    let c = cfg.to_str().unwrap();
    let a = env.spawn(&["create", "--config", c, "--id", "same"]);
    let b = env.sandvm(&["create", "--config", c, "--id", "same"]);
    let a = finish(a, "sandvm create");
    let wins = [a.status.success(), b.status.success()]
        .iter()
        .filter(|x| **x)
        .count();
    assert_eq!(wins, 1, "exactly one create wins");
    // Whichever lost says why.
    let loser = if a.status.success() { &b } else { &a };
    let why = String::from_utf8_lossy(&loser.stderr);
    assert!(
        why.contains("already exists") || why.contains("busy"),
        "{why}"
    );
    env.ok(&["stop", "same"]);
    env.assert_clean();
}

/// How many times sandbox `id`'s guest has printed its ready line.
fn ready_lines(env: &Env, id: &str) -> usize {
    std::fs::read_to_string(env.root.join(id).join("console.log"))
        .unwrap_or_default()
        .matches(READY)
        .count()
}

#[test]
fn allow_reboot_restarts_the_guest_in_the_same_qemu() {
    let env = Env::new("reboot");
    let cfg = env.config("r.toml", "allow_reboot = true");
    env.boot(&cfg, "r1");
    let pid = env.qemu_pid("r1");
    // The console may close or stay silent while the guest goes down.
    let _ = env.sandvm(&["console", "r1", "--send", "reboot -f"]);
    let twice = eventually(Duration::from_secs(180), || ready_lines(&env, "r1") >= 2);
    assert!(
        twice,
        "the guest did not come up again:\n{}",
        std::fs::read_to_string(env.root.join("r1/console.log")).unwrap_or_default()
    );
    let st = json(&env.ok(&["status", "r1", "--json"]));
    assert_eq!(st["state"], "running", "{st}");
    assert_eq!(st["pid"].as_i64(), Some(pid as i64), "the same QEMU: {st}");
    assert!(process_alive(pid));
    // The restarted guest answers.
    assert_eq!(env.guest("r1", "echo $((6*7))"), "42");
    env.ok(&["stop", "r1"]);
    env.assert_clean();
}

#[test]
fn without_allow_reboot_a_guest_reboot_ends_the_vm() {
    let env = Env::new("noreboot");
    let cfg = env.config("n.toml", "");
    env.boot(&cfg, "n1");
    let pid = env.qemu_pid("n1");
    let _ = env.sandvm(&["console", "n1", "--send", "reboot -f"]);
    assert!(
        eventually(Duration::from_secs(60), || !process_alive(pid)),
        "QEMU still runs after the guest rebooted"
    );
    let stopped = eventually(Duration::from_secs(30), || {
        json(&env.ok(&["status", "n1", "--json"]))["exit"]["reason"] == "guest-reset"
    });
    let st = json(&env.ok(&["status", "n1", "--json"]));
    assert!(stopped, "{st}");
    assert_eq!(st["state"], "stopped", "{st}");
    assert_eq!(ready_lines(&env, "n1"), 1);
    env.ok(&["stop", "n1"]);
    env.assert_clean();
}
