//! containerd-shim-sandvm-v2 under a real, private containerd (Debian's 1.6),
//! every container in a VM under TCG: what `ctr run` and `ctr task` do with
//! it, and that nothing is left afterwards. Pods are in `shim_pod.rs`,
//! faults in `shim_faults.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod shim_support;

use std::io::Read;
use std::os::fd::AsFd;
use std::process::Stdio;
use std::time::Duration;

use sandvm_tests::containerd::CTR_TIMEOUT;
use sandvm_tests::eventually;
use sandvm_tests::oci::TEST_IMAGE_MARKER;
use shim_support::{ShimEnv, guest_kernel_release, tail};

/// `ctr run --rm` in a VM: the guest's kernel, the image's root, the exit
/// status, stdin, stdout and stderr apart, env and cwd; the task's events.
#[test]
fn ctr_run_runs_in_a_vm() {
    let e = ShimEnv::start();

    let release = e.run_ok("c1", &[], &["uname", "-r"]);
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(release.trim(), guest_kernel_release());
    assert_ne!(release.trim(), host.trim(), "the host's kernel answered");

    let marker = e.run_ok("c2", &[], &["cat", "/etc/sandvm-image"]);
    assert_eq!(marker.trim(), TEST_IMAGE_MARKER);

    let out = e.run("c3", &[], &["sh", "-c", "exit 7"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = e.run_with_stdin("c4", &["cat"], b"hi through stdin\n");
    e.check(&out, "cat of stdin");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi through stdin\n");

    let out = e.run(
        "c5",
        &["--env", "GREETING=hello", "--cwd", "/tmp"],
        &["sh", "-c", "echo $GREETING; pwd; echo oops >&2"],
    );
    e.check(&out, "env and cwd");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n/tmp\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");

    // containerd heard the task's life from the shim
    for t in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ] {
        e.wait_topic("c3", t);
    }
    let exit =
        e.cd.events()
            .into_iter()
            .find(|ev| ev.topic == "/tasks/exit" && ev.body["container_id"] == "c3")
            .unwrap();
    assert_eq!(exit.body["exit_status"], 7);

    e.assert_clean();
}

/// The spec's user, groups, env and cwd reach the process: a spec file
/// (`ctr run --config`; ctr 1.6 has no `--user`) whose root is the image
/// mounted by `ctr images mount` (no rootfs mounts in the request: the
/// shim shares the spec's root folder as it is).
#[test]
fn the_specs_user_env_and_cwd_are_honoured() {
    let e = ShimEnv::start();
    let root = e.cd.dir().join("imgroot");
    std::fs::create_dir_all(&root).unwrap();
    let r = root.display().to_string();
    e.ctr_ok(&["images", "mount", e.img, &r]);

    let mut spec: serde_json::Value = serde_json::from_str(&e.ctr_ok(&["oci", "spec"])).unwrap();
    spec["root"] = serde_json::json!({"path": r, "readonly": true});
    let p = &mut spec["process"];
    p["args"] = serde_json::json!(["sh", "-c", "id -u; id -g; id -G; echo $GREETING; pwd"]);
    p["user"] = serde_json::json!({"uid": 1000, "gid": 1000, "additionalGids": [5]});
    p["env"] = serde_json::json!(["PATH=/bin:/usr/bin", "GREETING=from-the-spec"]);
    p["cwd"] = serde_json::json!("/tmp");
    let file = e.cd.dir().join("spec.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();

    let mut args = vec!["run".to_string(), "--rm".into()];
    args.extend(e.runtime_args());
    args.extend(["--config".into(), file.display().to_string(), "u1".into()]);
    let out = e.ctr(&args);
    e.check(&out, "ctr run --config");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1000\n1000\n1000 5\nfrom-the-spec\n/tmp\n"
    );

    e.ctr_ok(&["images", "unmount", &r]);
    e.assert_clean();
}

/// `ctr run -t` driven through a pty: the process has a terminal, its
/// size follows the client's (ResizePty), its exit status comes back.
#[test]
fn a_tty_works_and_follows_the_clients_size() {
    let e = ShimEnv::start();
    let ws = nix::pty::Winsize {
        ws_row: 33,
        ws_col: 101,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).unwrap();
    let slave = || Stdio::from(pty.slave.as_fd().try_clone_to_owned().unwrap());
    let mut child =
        e.cd.ctr_command()
            .args(e.run_args(
                &["--rm", "-t"],
                "t1",
                &["sh", "-c", "tty; stty size; exit 5"],
            ))
            .stdin(slave())
            .stdout(slave())
            .stderr(slave())
            .spawn()
            .unwrap();
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once every slave fd is closed (ctr exited)
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    });
    let done = eventually(CTR_TIMEOUT, || child.try_wait().unwrap().is_some());
    if !done {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let out = reader.join().unwrap();
    assert!(done, "ctr run -t hung; output so far: {out:?}");
    assert!(out.contains("/dev/pts/"), "no terminal: {out:?}");
    assert!(out.contains("33 101"), "the size did not follow: {out:?}");
    assert_eq!(status.code(), Some(5), "output: {out:?}");
    e.assert_clean();
}

/// A running task: `ctr task exec` (output, status, user), `ps`, `pause`
/// and `resume`, `metrics`, then `kill -s TERM` ends it and Wait returns
/// (the attached `ctr run` exits with the task's status).
#[test]
fn exec_ps_pause_metrics_and_kill_on_a_running_task() {
    let e = ShimEnv::start();
    // A bare `sleep` as its pid namespace's init ignores TERM (no handler),
    // under runc as here: the task traps it, as a real service would.
    let script = "trap 'echo bye; exit 0' TERM; echo started; sleep 1000 & wait";
    let run = e.spawn_run("k1", &[], &["sh", "-c", script]);
    e.wait_status("k1", "RUNNING");

    let out = e.cd.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        "k1",
        "sh",
        "-c",
        "echo from exec; echo to stderr >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from exec\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to stderr\n");
    let id = e.ctr_ok(&[
        "tasks",
        "exec",
        "--exec-id",
        "e2",
        "--user",
        "1000",
        "k1",
        "id",
        "-u",
    ]);
    assert_eq!(id.trim(), "1000");
    e.wait_topic("k1", "/tasks/exec-added");
    e.wait_topic("k1", "/tasks/exec-started");

    // ps: the init, its sleep, and a detached exec
    e.ctr_ok(&[
        "tasks",
        "exec",
        "--detach",
        "--exec-id",
        "e3",
        "k1",
        "sleep",
        "300",
    ]);
    let ok = eventually(Duration::from_secs(60), || {
        let ps = String::from_utf8_lossy(&e.cd.ctr(&["tasks", "ps", "k1"]).stdout).into_owned();
        ps.lines().skip(1).filter(|l| !l.trim().is_empty()).count() >= 3
    });
    assert!(ok, "ps: {}", e.ctr_ok(&["tasks", "ps", "k1"]));

    e.ctr_ok(&["tasks", "pause", "k1"]);
    assert_eq!(e.task_status("k1"), "PAUSED");
    e.ctr_ok(&["tasks", "resume", "k1"]);
    assert_eq!(e.task_status("k1"), "RUNNING");
    e.wait_topic("k1", "/tasks/paused");
    e.wait_topic("k1", "/tasks/resumed");

    let metrics = e.ctr_ok(&["tasks", "metrics", "k1"]);
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
    };
    assert!(value("pids.current") >= 3, "{metrics}");
    assert!(value("memory.usage") > 0, "{metrics}");
    assert!(value("cpu.usage_usec") > 0, "{metrics}");

    e.ctr_ok(&["tasks", "kill", "-s", "TERM", "k1"]);
    let out = sandvm_tests::finish(run, "ctr run k1");
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        tail(&e.cd.log(), 40)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "started\nbye\n");
    e.assert_clean();
}

/// Checkpoint is not implemented, and says so (ctr 1.6 has no command
/// for Update, which answers the same way).
#[test]
fn checkpoint_is_refused_by_name() {
    let e = ShimEnv::start();
    let mut args = vec!["run".to_string(), "--detach".into()];
    args.extend(e.runtime_args());
    args.extend([e.img.to_string(), "n1".into(), "sleep".into(), "600".into()]);
    e.check(&e.ctr(&args), "ctr run --detach");
    e.wait_status("n1", "RUNNING");
    let out = e.cd.ctr(&["tasks", "checkpoint", "n1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Checkpoint is not implemented by sandvm"),
        "{err}"
    );
    assert_eq!(e.task_status("n1"), "RUNNING");
    e.ctr_ok(&["tasks", "kill", "-s", "KILL", "n1"]);
    e.wait_status("n1", "STOPPED");
    e.ctr_ok(&["tasks", "delete", "n1"]);
    e.ctr_ok(&["containers", "delete", "n1"]);
    e.assert_clean();
}

/// A Kata `configuration.toml` (its `[hypervisor.qemu]` with `[agent.kata]`,
/// `[runtime]` and `[image]` tables beside it) loads: the shim boots from it
/// and logs the other components' tables as ignored.
#[test]
fn a_kata_configuration_loads() {
    let e = ShimEnv::start();
    let repo = sandvm_tests::repo();
    let shipped = std::fs::read_to_string(&e.config).unwrap();
    let kata = shipped
        .replace("\"../", &format!("\"{}/", repo.display()))
        .replace("[factory]\nenable_template = false\n", "")
        + "\n[agent.kata]\nenable_debug = false\ndial_timeout = 45\n\
           \n[runtime]\ninternetworking_model = \"tcfilter\"\nsandbox_cgroup_only = true\n\
           \n[image]\nservice_offload = false\n";
    let file = shim_support::write_file(e.cd.dir(), "configuration.toml", &kata);
    let mut args = vec![
        "run".to_string(),
        "--rm".into(),
        "--runtime".into(),
        sandvm_tests::containerd::SANDVM.into(),
        "--runtime-config-path".into(),
        file.display().to_string(),
    ];
    args.extend([e.img.to_string(), "k1".into(), "uname".into(), "-r".into()]);
    let out = e.ctr(&args);
    e.check(&out, "ctr run with a Kata configuration.toml");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        guest_kernel_release()
    );
    let log = e.cd.log();
    for t in ["agent.kata", "runtime", "image"] {
        assert!(
            log.contains(&format!("Table [{t}] is not used by sandvm")),
            "no warning for [{t}]:\n{}",
            tail(&log, 40)
        );
    }
    e.assert_clean();
}

/// The agent over hybrid vsock (vhost-device-vsock) instead of
/// virtio-serial: the same container runs.
#[test]
fn the_agent_over_hybrid_vsock() {
    let e = ShimEnv::start();
    let daemon = sandvm_tests::tool("vhost-device-vsock");
    let repo = sandvm_tests::repo();
    let cfg = std::fs::read_to_string(&e.config)
        .unwrap()
        .replace("\"../", &format!("\"{}/", repo.display()))
        .replace(
            "agent_channel = \"virtio-serial\"",
            &format!(
                "agent_channel = \"hybrid-vsock\"\nvsock_daemon = \"{}\"",
                daemon.display()
            ),
        );
    assert!(cfg.contains("hybrid-vsock"), "the shipped config changed");
    let file = shim_support::write_file(e.cd.dir(), "hybrid.toml", &cfg);
    let mut args = vec![
        "run".to_string(),
        "--rm".into(),
        "--runtime".into(),
        sandvm_tests::containerd::SANDVM.into(),
        "--runtime-config-path".into(),
        file.display().to_string(),
    ];
    args.extend([e.img.to_string(), "h1".into(), "sh".into(), "-c".into()]);
    args.push("cat /etc/sandvm-image; exit 4".into());
    let out = e.ctr(&args);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{out:?}\n{}",
        tail(&e.cd.log(), 40)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        TEST_IMAGE_MARKER
    );
    assert!(
        e.cd.log().contains("hybrid vsock"),
        "the agent was not reached over hybrid vsock"
    );
    e.assert_clean();
}
