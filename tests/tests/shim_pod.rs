//! Pods: containers carrying CRI's annotations (as containerd's CRI plugin
//! sets them; here through `ctr run --annotation`) share their sandbox's
//! shim and VM, each on its own root; host bind mounts reach them with the
//! spec's flags. The share folder's propagation is what lets a container
//! created after the VM started see its root.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod shim_support;

use shim_support::{SHIM_BIN, ShimEnv, write_file};

const TYPE: &str = "io.kubernetes.cri.container-type";
const SANDBOX: &str = "io.kubernetes.cri.sandbox-id";

/// `ctr run --detach` with the pod annotations and `flags`.
fn run_in_pod(e: &ShimEnv, pod: &str, kind: &str, id: &str, flags: &[&str], script: &str) {
    let t = format!("{TYPE}={kind}");
    let s = format!("{SANDBOX}={pod}");
    let mut f = vec!["--detach", "--annotation", &t, "--annotation", &s];
    f.extend_from_slice(flags);
    let out = e.ctr(&e.run_args(&f, id, &["sh", "-c", script]));
    e.check(&out, &format!("ctr run {id}"));
    e.wait_status(id, "RUNNING");
}

fn exec(e: &ShimEnv, id: &str, exec_id: &str, script: &str) -> std::process::Output {
    e.cd.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        exec_id,
        id,
        "sh",
        "-c",
        script,
    ])
}

fn task_pid(e: &ShimEnv, id: &str) -> String {
    let ls = e.ctr_ok(&["tasks", "list"]);
    ls.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_string()
}

/// Two containers of one pod: one shim, one QEMU, one pid for both; each its
/// own root (the second one's shared after the VM started, writable); a
/// read-write and a read-only host bind mount; deleting the member keeps the
/// VM, deleting the sandbox container ends it.
#[test]
fn pod_containers_share_one_vm_each_on_its_own_root() {
    let e = ShimEnv::start();
    run_in_pod(
        &e,
        "pod1",
        "sandbox",
        "pod1",
        &[],
        "echo sandbox > /whoami; exec sleep 1000",
    );
    assert_eq!(e.processes("qemu-system-x86_64").len(), 1);

    let rw = e.cd.dir().join("rw");
    let ro = e.cd.dir().join("ro");
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    write_file(&ro, "hello", "from the host\n");
    let m_rw = format!("type=bind,src={},dst=/data,options=rbind:rw", rw.display());
    let m_ro = format!("type=bind,src={},dst=/ro,options=rbind:ro", ro.display());
    run_in_pod(
        &e,
        "pod1",
        "container",
        "app1",
        &["--mount", &m_rw, "--mount", &m_ro],
        "echo member > /whoami; exec sleep 1000",
    );
    assert_eq!(e.processes("qemu-system-x86_64").len(), 1, "a second VM");
    assert_eq!(e.processes(SHIM_BIN).len(), 1, "a second shim");
    assert_eq!(task_pid(&e, "pod1"), task_pid(&e, "app1"));

    let who = |id| String::from_utf8_lossy(&exec(&e, id, "w", "cat /whoami").stdout).into_owned();
    assert_eq!(who("pod1"), "sandbox\n");
    assert_eq!(who("app1"), "member\n");
    let out = exec(
        &e,
        "app1",
        "x",
        "echo x > /new && cat /new /etc/sandvm-image",
    );
    e.check(&out, "writing in the member's root");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("x\n{}\n", sandvm_tests::oci::TEST_IMAGE_MARKER)
    );
    let out = exec(&e, "pod1", "y", "test ! -e /new");
    e.check(&out, "the sandbox's root is its own");

    let out = exec(&e, "app1", "d", "echo written > /data/out && cat /ro/hello");
    e.check(&out, "bind mounts");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from the host\n");
    assert_eq!(
        std::fs::read_to_string(rw.join("out")).unwrap(),
        "written\n"
    );
    let out = exec(&e, "app1", "r", "echo no > /ro/hello");
    assert!(!out.status.success(), "a read-only bind mount was written");
    assert_eq!(
        std::fs::read_to_string(ro.join("hello")).unwrap(),
        "from the host\n"
    );

    e.ctr_ok(&["tasks", "kill", "-s", "KILL", "app1"]);
    e.wait_status("app1", "STOPPED");
    e.ctr_ok(&["tasks", "delete", "app1"]);
    e.ctr_ok(&["containers", "delete", "app1"]);
    assert_eq!(e.task_status("pod1"), "RUNNING");
    assert_eq!(e.processes("qemu-system-x86_64").len(), 1);
    assert_eq!(who("pod1"), "sandbox\n");

    e.ctr_ok(&["tasks", "kill", "-s", "KILL", "pod1"]);
    e.wait_status("pod1", "STOPPED");
    e.ctr_ok(&["tasks", "delete", "pod1"]);
    e.ctr_ok(&["containers", "delete", "pod1"]);
    e.assert_clean();
}

/// The sandbox container's deletion tears the VM down; a member still
/// running then exits with a failure status, and is deleted cleanly.
#[test]
fn deleting_the_sandbox_container_ends_the_pod() {
    let e = ShimEnv::start();
    run_in_pod(&e, "pod2", "sandbox", "pod2", &[], "exec sleep 1000");
    run_in_pod(&e, "pod2", "container", "app2", &[], "exec sleep 1000");
    e.ctr_ok(&["tasks", "kill", "-s", "KILL", "pod2"]);
    e.wait_status("pod2", "STOPPED");
    e.ctr_ok(&["tasks", "delete", "pod2"]);
    e.wait_status("app2", "STOPPED");
    let exit =
        e.cd.events()
            .into_iter()
            .find(|ev| ev.topic == "/tasks/exit" && ev.body["container_id"] == "app2")
            .expect("no exit event for app2");
    // (0 would be left out of the JSON)
    assert!(
        exit.body["exit_status"].as_u64().unwrap_or(0) > 0,
        "{:?}",
        exit.body
    );
    assert!(e.processes("qemu-system-x86_64").is_empty());
    e.ctr_ok(&["tasks", "delete", "app2"]);
    e.ctr_ok(&["containers", "delete", "app2", "pod2"]);
    e.assert_clean();
}
