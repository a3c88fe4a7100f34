//! Faults under containerd: QEMU killed under a running task, the shim
//! killed (containerd's cleanup runs the shim's `delete`), containerd
//! restarted under a running task, and 50 `ctr run --rm` in a row. Each ends
//! with nothing left: no QEMU, daemon, shim, mount, socket or sandbox folder.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod shim_support;

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sandvm_tests::containerd::mounts_under;
use sandvm_tests::{eventually, process_alive};
use shim_support::{SETTLE, SHIM_BIN, ShimEnv};

fn sigkill(pid: i32) {
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
}

/// QEMU SIGKILLed under a running task: the task exits with a failure
/// status (the attached `ctr run` returns it), everything is torn down.
#[test]
fn qemu_killed_under_a_running_task() {
    let e = ShimEnv::start();
    let run = e.spawn_run("q1", &[], &["sleep", "1000"]);
    e.wait_status("q1", "RUNNING");
    let qemu = e.processes("qemu-system-x86_64");
    assert_eq!(qemu.len(), 1, "{qemu:?}");
    let daemons = e.processes("virtiofsd");
    assert!(!daemons.is_empty());
    sigkill(qemu[0]);
    let out = sandvm_tests::finish(run, "ctr run q1");
    assert!(!out.status.success(), "ctr run succeeded: {out:?}");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    e.wait_topic("q1", "/tasks/exit");
    for p in qemu.iter().chain(&daemons) {
        assert!(eventually(SETTLE, || !process_alive(*p)), "pid {p} runs");
    }
    e.assert_clean();
}

/// virtiofsd SIGKILLed under a running task: the runtime ends the VM (a
/// daemon it needs died), the task exits with a failure status.
#[test]
fn virtiofsd_killed_under_a_running_task() {
    let e = ShimEnv::start();
    let run = e.spawn_run("v1", &[], &["sleep", "1000"]);
    e.wait_status("v1", "RUNNING");
    let daemons = e.processes("virtiofsd");
    let qemu = e.processes("qemu-system-x86_64");
    assert!(
        !daemons.is_empty() && qemu.len() == 1,
        "{daemons:?} {qemu:?}"
    );
    for p in &daemons {
        let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
    }
    let out = sandvm_tests::finish(run, "ctr run v1");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(eventually(SETTLE, || !process_alive(qemu[0])), "QEMU runs");
    e.assert_clean();
}

/// The shim SIGKILLed under a running task: containerd runs the shim's
/// `delete`, which reattaches to the sandbox and stops it; the task exits
/// 137 and goes; nothing is left once the container is deleted.
#[test]
fn a_killed_shim_is_cleaned_up_by_delete() {
    let e = ShimEnv::start();
    let mut args = vec!["run".to_string(), "--detach".into()];
    args.extend(e.runtime_args());
    args.extend([
        e.img.to_string(),
        "s1".into(),
        "sleep".into(),
        "1000".into(),
    ]);
    e.check(&e.ctr(&args), "ctr run --detach");
    e.wait_status("s1", "RUNNING");
    let shims = e.processes(SHIM_BIN);
    let qemu = e.processes("qemu-system-x86_64");
    assert_eq!((shims.len(), qemu.len()), (1, 1), "{shims:?} {qemu:?}");
    let share = mounts_under(e.cd.dir())
        .into_iter()
        .filter(|m| m.to_string_lossy().contains("/.shim/"))
        .count();
    assert!(share > 0, "no share mounts while the task runs");

    sigkill(shims[0]);
    let gone = eventually(SETTLE, || e.task_status("s1").is_empty());
    assert!(gone, "task s1 is still listed: {}", e.task_status("s1"));
    assert!(eventually(SETTLE, || !process_alive(qemu[0])), "QEMU runs");
    e.wait_topic("s1", "/tasks/exit");
    let exit =
        e.cd.events()
            .into_iter()
            .find(|ev| ev.topic == "/tasks/exit" && ev.body["container_id"] == "s1")
            .unwrap();
    assert_eq!(exit.body["exit_status"], 137, "{:?}", exit.body);
    e.ctr_ok(&["containers", "delete", "s1"]);
    e.assert_clean();
}

/// containerd restarted under a running task: the shim stays, containerd
/// finds it again (the bundle's address), the task answers exec and stops
/// cleanly.
#[test]
fn a_task_survives_a_containerd_restart() {
    let mut e = ShimEnv::start();
    let mut args = vec!["run".to_string(), "--detach".into()];
    args.extend(e.runtime_args());
    args.extend([
        e.img.to_string(),
        "r1".into(),
        "sleep".into(),
        "1000".into(),
    ]);
    e.check(&e.ctr(&args), "ctr run --detach");
    e.wait_status("r1", "RUNNING");
    let shim = e.processes(SHIM_BIN);
    let before = e.cd.pid();
    e.cd.restart();
    assert_ne!(e.cd.pid(), before);
    assert_eq!(e.processes(SHIM_BIN), shim, "the shim was replaced");
    assert_eq!(e.task_status("r1"), "RUNNING");
    let out = e.ctr_ok(&[
        "tasks",
        "exec",
        "--exec-id",
        "x1",
        "r1",
        "echo",
        "still here",
    ]);
    assert_eq!(out, "still here\n");
    e.ctr_ok(&["tasks", "kill", "-s", "KILL", "r1"]);
    e.wait_status("r1", "STOPPED");
    e.ctr_ok(&["tasks", "delete", "r1"]);
    e.ctr_ok(&["containers", "delete", "r1"]);
    e.assert_clean();
}

/// What must not grow across many runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    /// containerd's open fds.
    containerd_fds: usize,
    /// Mount points under the private folder (bundles' roots, share folders).
    mounts: usize,
    /// Zombies of QEMU, virtiofsd and shims, host-wide.
    zombies: usize,
}

fn counts(e: &ShimEnv) -> Counts {
    let pid = e.cd.pid().unwrap();
    let containerd_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let mounts = mounts_under(e.cd.dir()).len();
    let mut zombies = 0;
    for d in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(d.path().join("stat")) else {
            continue;
        };
        let (Some(a), Some(b)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[a + 1..b];
        let ours = ["qemu-system-x86", "virtiofsd", "containerd-shim"]
            .iter()
            .any(|n| comm.starts_with(n));
        if ours && stat[b + 2..].starts_with('Z') {
            zombies += 1;
        }
    }
    Counts {
        containerd_fds,
        mounts,
        zombies,
    }
}

/// 50 `ctr run --rm` in a row (after one to warm up): each leaves nothing,
/// and containerd's fds, the mounts and the processes do not grow.
#[test]
fn fifty_runs_leave_nothing_growing() {
    let e = ShimEnv::start();
    assert_eq!(e.run_ok("w0", &[], &["echo", "warm"]), "warm\n");
    e.assert_clean();
    let before = counts(&e);
    for i in 1..=50 {
        let id = format!("n{i}");
        assert_eq!(e.run_ok(&id, &[], &["echo", &id]), format!("{id}\n"));
    }
    e.assert_clean();
    // what the last runs' cleanup (shim exit, containerd's delete) may still hold
    let settled = eventually(SETTLE, || {
        let now = counts(&e);
        now.containerd_fds <= before.containerd_fds
            && now.mounts <= before.mounts
            && now.zombies <= before.zombies
    });
    let after = counts(&e);
    assert!(settled, "grew: before {before:?}, after {after:?}");
    assert!(
        eventually(Duration::from_secs(5), || e.processes(SHIM_BIN).is_empty()),
        "a shim is left"
    );
}

/// A create that fails leaves nothing: a bind mount whose host source is
/// missing (the shim refuses it before a VM boots), and a mount the agent
/// refuses (its check of the spec fails after the root was shared). Each
/// error names its cause; no mount, VM or folder stays.
#[test]
fn a_failed_create_leaves_no_mount_and_no_vm() {
    let e = ShimEnv::start();
    let missing = e.cd.dir().join("no-such-folder");
    let m = format!(
        "type=bind,src={},dst=/x,options=rbind:ro",
        missing.display()
    );
    let out = e.run("f1", &["--mount", &m], &["true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bind mount source") && err.contains("no-such-folder"),
        "{err}"
    );
    assert!(!e.cd.log().contains("booting the sandbox"), "a VM booted");
    e.assert_clean_except_containers();

    let m = "type=ext4,src=/dev/vda,dst=/x,options=ro";
    let out = e.run("f2", &["--mount", m], &["true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CreateContainer") && err.contains("ext4"),
        "{err}"
    );
    e.assert_clean_except_containers();
    for id in ["f1", "f2"] {
        let _ = e.cd.ctr(&["containers", "delete", id]);
    }
    e.assert_clean();
}
