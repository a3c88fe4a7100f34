//! The baseline the sandvm shim is measured against: a private containerd
//! (tests/src/containerd/) runs the busybox test image under runc, its
//! default runtime, through `ctr run --rm`. The sandvm shim's tests make the
//! same calls with `--runtime io.containerd.sandvm.v2`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;

use sandvm_tests::containerd::{CTR_TIMEOUT, Containerd, CriRuntime, Options, RUNC};
use sandvm_tests::oci::{TEST_IMAGE, TEST_IMAGE_MARKER, TEST_IMAGE_USER};

/// `ctr run --rm` under runc: output, exit status, the image's root, the
/// image's users; events published; nothing left afterwards.
#[test]
fn ctr_run_under_runc() {
    let cd = Containerd::start_default();
    let img = cd.import_test_image();

    let out = cd.ctr_ok(&["run", "--rm", "--runtime", RUNC, img, "c1", "echo", "hi"]);
    assert_eq!(out.trim(), "hi");

    let out = cd.ctr(&["run", "--rm", img, "c2", "sh", "-c", "exit 7"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = cd.ctr_ok(&["run", "--rm", img, "c3", "cat", "/etc/sandvm-image"]);
    assert_eq!(out.trim(), TEST_IMAGE_MARKER);

    let (uid, name) = TEST_IMAGE_USER;
    let out = cd.ctr_ok(&["run", "--rm", img, "c4", "id", name]);
    assert!(
        out.starts_with(&format!("uid={uid}({name}) gid={uid}({name})")),
        "id {name}: {out}"
    );

    // containerd published each task's life through the shim.
    let topics: Vec<String> = cd
        .events()
        .into_iter()
        .filter(|e| e.namespace == cd.namespace() && e.body["container_id"] == "c2")
        .map(|e| e.topic)
        .collect();
    for t in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ] {
        assert!(topics.iter().any(|x| x == t), "no {t} for c2: {topics:?}");
    }
    let exit = cd
        .events()
        .into_iter()
        .find(|e| e.topic == "/tasks/exit" && e.body["container_id"] == "c2")
        .unwrap();
    assert_eq!(exit.body["exit_status"], 7);

    cd.assert_clean();
}

/// A detached task left running is cleaned up by the harness: the leak check
/// sees it first, and the Drop of the private containerd removes it, its shim,
/// its mounts and its folder.
#[test]
fn harness_sees_and_removes_a_running_task() {
    let cd = Containerd::start_default();
    let img = cd.import_test_image();
    cd.ctr_ok(&["run", "--detach", img, "sleeper", "sleep", "600"]);

    let l = cd.leftovers();
    assert_eq!(l.tasks, vec![format!("{}/sleeper", cd.namespace())]);
    assert_eq!(l.containers, vec![format!("{}/sleeper", cd.namespace())]);
    assert!(
        l.processes
            .iter()
            .any(|(_, c)| c.contains("containerd-shim-runc-v2")),
        "no shim among {:?}",
        l.processes
    );
    assert_eq!(l.cgroup_processes.len(), 1, "{l:#?}");
    assert_eq!(l.mounts.len(), 1, "the rootfs overlay: {l:#?}");
    let shim_socket = cd.shim_socket(cd.namespace(), "sleeper");
    assert!(l.sockets.contains(&shim_socket), "{l:#?}");

    let dir = cd.dir().to_path_buf();
    let sleeper = l.cgroup_processes[0];
    let shims: Vec<i32> = l.processes.iter().map(|(p, _)| *p).collect();
    drop(cd);

    assert!(!dir.exists(), "{} is still there", dir.display());
    assert!(
        !shim_socket.exists(),
        "{} is still there",
        shim_socket.display()
    );
    for p in shims.iter().chain([&sleeper]) {
        assert!(!sandvm_tests::process_alive(*p), "pid {p} still runs");
    }
    assert!(sandvm_tests::containerd::mounts_under(&dir).is_empty());
}

/// containerd restarted under a running task: the task stays reachable and
/// stops cleanly (what the shim must also survive).
#[test]
fn task_survives_a_containerd_restart() {
    let mut cd = Containerd::start_default();
    let img = cd.import_test_image();
    cd.ctr_ok(&["run", "--detach", img, "t1", "sleep", "600"]);
    let before = cd.pid();
    cd.restart();
    assert_ne!(cd.pid(), before);
    let ps = cd.ctr_ok(&["tasks", "list"]);
    assert!(ps.contains("t1") && ps.contains("RUNNING"), "{ps}");
    // --force: SIGKILL, wait for the exit, delete.
    cd.ctr_ok(&["tasks", "delete", "--force", "t1"]);
    cd.ctr_ok(&["containers", "delete", "t1"]);
    cd.assert_clean();
}

/// With the CRI plugin on and sandvm's runtime handler registered, containerd
/// accepts the config, serves CRI on the same socket, and images imported into
/// `k8s.io` are there for it. (No pod is run here: under runc a pod fails in
/// runc's init on these hosts; the sandvm shim's CRI tests run pods.)
#[test]
fn cri_plugin_with_a_sandvm_handler() {
    let cd = Containerd::start(Options {
        cri: true,
        cri_runtimes: vec![CriRuntime::sandvm(Path::new(
            "/etc/sandvm/configuration.toml",
        ))],
        ..Options::default()
    });
    let plugins = cd.ctr_ok(&["plugins", "list"]);
    let cri = plugins
        .lines()
        .find(|l| l.contains("io.containerd.grpc.v1") && l.contains(" cri "))
        .unwrap_or_else(|| panic!("no CRI plugin listed:\n{plugins}"));
    assert!(cri.trim_end().ends_with("ok"), "CRI plugin: {cri}");
    let config = std::fs::read_to_string(cd.config_path()).unwrap();
    assert!(
        config.contains("runtime_type = \"io.containerd.sandvm.v2\""),
        "{config}"
    );

    cd.import_in("k8s.io", &sandvm_tests::oci::test_image_archive());
    let images = String::from_utf8_lossy(
        &cd.ctr_in("k8s.io", &["images", "list", "--quiet"], CTR_TIMEOUT)
            .stdout,
    )
    .into_owned();
    assert!(images.lines().any(|l| l == TEST_IMAGE), "{images}");
    cd.assert_clean();
}

/// A test that panics with a task running still leaves nothing: the drop runs
/// while the panic unwinds.
#[test]
fn cleanup_runs_when_a_test_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::thread::spawn(move || {
        let cd = Containerd::start_default();
        let img = cd.import_test_image();
        cd.ctr_ok(&["run", "--detach", img, "doomed", "sleep", "600"]);
        let l = cd.leftovers();
        tx.send((
            cd.dir().to_path_buf(),
            l,
            cd.shim_socket(cd.namespace(), "doomed"),
        ))
        .unwrap();
        panic!("a failing test");
    })
    .join();
    assert!(r.is_err());
    let (dir, l, socket) = rx.recv().unwrap();
    assert!(!dir.exists(), "{} is still there", dir.display());
    assert!(!socket.exists());
    for p in l
        .cgroup_processes
        .iter()
        .chain(l.processes.iter().map(|(p, _)| p))
    {
        assert!(!sandvm_tests::process_alive(*p), "pid {p} still runs");
    }
}
