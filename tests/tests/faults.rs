//! Faults and leaks: QEMU killed or frozen, the runtime killed in mid-start,
//! corrupt and unknown state files, read-only and full state folders, two
//! processes racing on one id, and 100 create/start/stop cycles. Every
//! scenario ends with the shared leak check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sandvm_tests::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn create_start(env: &Env, id: &str) {
    let cfg = env.config(&format!("{id}.toml"), "");
    env.ok(&["create", "--config", cfg.to_str().unwrap(), "--id", id]);
    env.ok(&["start", id]);
}

#[test]
fn qemu_killed_during_boot_then_stop_cleans_up() {
    let env = Env::new("fkboot");
    create_start(&env, "kb");
    // start returns at QMP ready: the guest is still booting.
    let pid = env.qemu_pid("kb");
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    assert!(eventually(Duration::from_secs(10), || !process_alive(pid)));
    env.ok(&["stop", "kb"]);
    env.assert_clean();
}

#[test]
fn frozen_qemu_times_out_qmp_and_stop_still_kills_it() {
    let env = Env::new("fstop");
    create_start(&env, "fz");
    let pid = env.qemu_pid("fz");
    kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    let out = env.sandvm(&["pause", "fz"]);
    assert!(!out.status.success(), "pause of a frozen QEMU must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("timed out"), "{err}");
    env.ok(&["stop", "fz", "--grace", "1"]);
    assert!(!process_alive(pid));
    env.assert_clean();
}

#[test]
fn runtime_killed_in_mid_start_then_stop_cleans_up() {
    let env = Env::new("fkrt");
    let cfg = env.config("r.toml", "");
    env.ok(&["create", "--config", cfg.to_str().unwrap(), "--id", "rt"]);
    let mut start = Command::new(sandvm_bin())
        .arg("--state-dir")
        .arg(&env.root)
        .args(["start", "rt"])
        .spawn()
        .unwrap();
    // Kill the runtime as soon as QEMU's pid is on disk, before QMP is up.
    let state = env.root.join("rt/state.json");
    let saw_pid = eventually(Duration::from_secs(30), || {
        std::fs::read(&state)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["pid"].is_i64())
    });
    start.kill().unwrap();
    start.wait().unwrap();
    assert!(saw_pid, "the runtime never recorded QEMU's pid");
    env.ok(&["stop", "rt", "--force"]);
    env.assert_clean();
}

#[test]
fn corrupt_state_is_a_clear_error_and_force_stop_cleans_up_by_pid() {
    let env = Env::new("fcorrupt");
    create_start(&env, "cs");
    let pid = env.qemu_pid("cs");
    let state = env.root.join("cs/state.json");
    let good = std::fs::read_to_string(&state).unwrap();
    std::fs::write(&state, "{ this is not json").unwrap();
    let out = env.sandvm(&["stop", "cs"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Corrupt state file") && err.contains("state.json"),
        "{err}"
    );
    // An unknown version is refused the same way.
    std::fs::write(&state, good.replace("\"version\": 1", "\"version\": 99")).unwrap();
    let err = String::from_utf8_lossy(&env.sandvm(&["stop", "cs"]).stderr).into_owned();
    assert!(err.contains("unknown version 99"), "{err}");
    env.ok(&["stop", "cs", "--force"]);
    assert!(!process_alive(pid));
    env.assert_clean();
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &Path, opts: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", at.display());
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn read_only_and_full_state_folders_fail_clearly_and_leave_nothing() {
    let env = Env::new("fstate");
    let cfg = env.config("c.toml", "");
    let c = cfg.to_str().unwrap();

    let ro = Mount::tmpfs(&env.root.join("ro"), "ro,size=1m");
    let out = Command::new(sandvm_bin())
        .arg("--state-dir")
        .arg(&ro.0)
        .args(["create", "--config", c, "--id", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&ro.0.display().to_string()) && err.contains("Read-only"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&ro.0).unwrap().count(), 0);
    drop(ro);

    // Full: room for the sandbox folder, none for its state.json.
    let full = Mount::tmpfs(&env.root.join("full"), "size=8k,nr_inodes=2");
    let out = Command::new(sandvm_bin())
        .arg("--state-dir")
        .arg(&full.0)
        .args(["create", "--config", c, "--id", "y"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("No space left") && err.contains("state.json"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&full.0)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    drop(full);
    env.assert_clean();
}

#[test]
fn two_processes_starting_one_id_one_wins() {
    let env = Env::new("frace");
    let cfg = env.config("c.toml", "");
    env.ok(&["create", "--config", cfg.to_str().unwrap(), "--id", "same"]);
    let spawn = || {
        Command::new(sandvm_bin())
            .arg("--state-dir")
            .arg(&env.root)
            .args(["start", "same"])
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    let oks = [&a, &b].iter().filter(|o| o.status.success()).count();
    assert_eq!(oks, 1, "exactly one start wins:\n{a:?}\n{b:?}");
    let loser = if a.status.success() { &b } else { &a };
    let err = String::from_utf8_lossy(&loser.stderr);
    assert!(err.contains("busy") || err.contains("is running"), "{err}");
    // Two stops at once: one stops it, the other is busy or finds nothing to stop.
    let stop = || {
        Command::new(sandvm_bin())
            .arg("--state-dir")
            .arg(&env.root)
            .args(["stop", "same", "--force"])
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(stop);
        let b = s.spawn(stop);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    for o in [&a, &b] {
        if !o.status.success() {
            assert_eq!(o.status.code(), Some(5), "{o:?}");
        }
    }
    assert!(a.status.success() || b.status.success());
    env.assert_clean();
}
