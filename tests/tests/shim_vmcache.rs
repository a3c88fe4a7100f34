//! The warm VM cache (`[factory] vm_cache_number`, `sandvm-vmcache`) under
//! a real containerd with the shim: the cache fills, `sandvm list` shows
//! what it holds, a container's VM is taken from it (the shim's log says
//! which), the cache refills, and stopping the server leaves nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod shim_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sandvm_tests::oci::TEST_IMAGE_MARKER;
use sandvm_tests::{TemplateDir, eventually, json, sandvm_bin};
use shim_support::{ShimEnv, create_template, ninep_guest, shim_dir, tail, template_config_tcg};

/// How long the cache may take to make a VM (a cold boot under TCG).
const FILL: Duration = Duration::from_secs(240);

/// `sandvm list --json` of the shim's state root: (id, state, origin) rows.
fn list(state: &Path) -> Vec<(String, String, String)> {
    let out = Command::new(sandvm_bin())
        .arg("--state-dir")
        .arg(state)
        .args(["list", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    json(&String::from_utf8_lossy(&out.stdout))
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (s("id"), s("state"), s("origin"))
        })
        .filter(|(id, _, _)| id.starts_with("vmc-"))
        .collect()
}

/// The ids of the VMs the cache holds ready.
fn ready(state: &Path) -> Vec<String> {
    list(state)
        .into_iter()
        .filter(|(_, st, origin)| st == "paused" && origin == "cache")
        .map(|(id, _, _)| id)
        .collect()
}

fn start_cache(e: &ShimEnv) -> Child {
    let log = std::fs::File::create(e.cd.dir().join("vmcache.log")).unwrap();
    Command::new(shim_dir().join("sandvm-vmcache"))
        .arg("--config")
        .arg(&e.config)
        .arg("--state-dir")
        .arg(e.cd.sandvm_state_dir())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("cannot start sandvm-vmcache (make build)")
}

/// Takes a VM over the cache's socket as a shim would, and never attaches
/// to it; the reply line.
fn take_raw(sock: &Path, config: &Path) -> String {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    let req = serde_json::json!({"op": "take", "config": config.canonicalize().unwrap()});
    writeln!(s, "{req}").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    line
}

/// Makes the test's config (`e.config`) a copy with a cache of one VM,
/// its endpoint in containerd's folder: the endpoint.
fn with_cache(e: &mut ShimEnv) -> PathBuf {
    let sock = e.cd.dir().join("vmcache.sock");
    let text = std::fs::read_to_string(&e.config).unwrap();
    // the table's header line, not a comment that names it
    assert!(text.contains("\n[factory]\n"), "{}", e.config.display());
    let text = text.replacen(
        "\n[factory]\n",
        &format!(
            "\n[factory]\nvm_cache_number = 1\nvm_cache_endpoint = \"{}\"\n",
            sock.display()
        ),
        1,
    );
    e.config = e.cd.dir().join("sandvm-cache.toml");
    std::fs::write(&e.config, text).unwrap();
    sock
}

/// The one VM the cache holds ready, once it does; `what` names the
/// failure otherwise.
fn wait_ready(e: &ShimEnv, what: &str) -> Vec<String> {
    let state = e.cd.sandvm_state_dir();
    let mut ids = Vec::new();
    assert!(
        eventually(FILL, || {
            ids = ready(&state);
            ids.len() == 1
        }),
        "{what}: {:?}\n{}",
        list(&state),
        tail(&cache_log(e), 30)
    );
    ids
}

/// Stops the cache server with SIGTERM: it exits 0 and removes its socket.
fn stop_cache(e: &ShimEnv, mut server: Child, sock: &Path) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = server.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", cache_log(e));
    assert!(!sock.exists(), "the endpoint socket is left");
}

fn cache_log(e: &ShimEnv) -> String {
    std::fs::read_to_string(e.cd.dir().join("vmcache.log")).unwrap_or_default()
}

#[test]
fn containers_take_warm_vms_from_the_cache_and_it_refills() {
    let mut e = ShimEnv::start();
    let sock = with_cache(&mut e);
    let state = e.cd.sandvm_state_dir();

    let server = start_cache(&e);
    let first = wait_ready(&e, "the cache never held a ready VM");

    // the container's VM is the cached one: the shim says so, and the VM
    // it ran in is gone with it
    let out = e.run_ok("w1", &[], &["cat", "/etc/sandvm-image"]);
    assert_eq!(out.trim(), TEST_IMAGE_MARKER);
    let log = e.cd.log();
    assert!(
        log.contains("took a VM from the cache")
            && log.contains(&first[0])
            && log.contains("origin=\"cache\"")
            && !log.contains("booting one"),
        "the shim did not take {} from the cache:\n{}",
        first[0],
        tail(&log, 40)
    );
    assert!(
        eventually(Duration::from_secs(60), || !list(&state)
            .iter()
            .any(|(id, _, _)| *id == first[0])),
        "the taken VM outlived its container: {:?}",
        list(&state)
    );

    // the shim stopped the VM it attached to: its end is a stop, not an
    // unexplained death
    let log = e.cd.log();
    assert!(
        !log.contains("the sandbox VM ended"),
        "the shim took its own stop of the cached VM for a death:\n{}",
        tail(&log, 40)
    );

    // the cache refilled with a new VM
    let again = wait_ready(&e, "the cache did not refill");
    assert_ne!(again, first);

    // a VM taken by a client that never attaches to it (a shim that died
    // in between) is nobody's: the server's stop must take it too
    let reply = take_raw(&sock, &e.config);
    assert!(reply.contains(&again[0]), "{reply}");
    assert!(
        list(&state).iter().any(|(id, _, _)| *id == again[0]),
        "{:?}",
        list(&state)
    );

    // the server stops what it holds, and the orphan
    stop_cache(&e, server, &sock);
    e.assert_clean();
}

/// With the template config, the cache's VMs are template clones: a
/// container runs in one (its root over 9p), and nothing is left.
#[test]
fn a_cache_of_template_clones_serves_a_container() {
    ninep_guest();
    let tp = TemplateDir::new("vmcache");
    let mut e = ShimEnv::start();
    e.config = template_config_tcg(e.cd.dir(), &tp.0);
    let sock = with_cache(&mut e);
    let state = e.cd.sandvm_state_dir();
    create_template(&state, &e.config);

    let server = start_cache(&e);
    let ids = wait_ready(&e, "the cache never held a ready VM");
    let qemu = e.processes("qemu-system-x86_64");
    assert_eq!(qemu.len(), 1, "{qemu:?}");
    let cmd = std::fs::read(format!("/proc/{}/cmdline", qemu[0])).unwrap();
    let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
    assert!(
        cmd.contains("-incoming defer") && cmd.contains(&ids[0]),
        "{cmd}"
    );

    let out = e.run_ok(
        "c1",
        &[],
        &[
            "sh",
            "-c",
            "cat /etc/sandvm-image; grep -c ' 9p ' /proc/mounts",
        ],
    );
    assert_eq!(out, format!("{TEST_IMAGE_MARKER}\n1\n"));
    let log = e.cd.log();
    assert!(
        log.contains(&ids[0]) && log.contains("origin=\"cache\"") && !log.contains("booting one"),
        "the container did not run in the cached clone {}:\n{}",
        ids[0],
        tail(&log, 40)
    );
    stop_cache(&e, server, &sock);
    e.assert_clean();
}

/// A cached VM killed while it waits (paused) is no pod's end: the shim
/// finds it dead, stops what is left of it and boots its own VM; the
/// container runs, and nothing is left.
#[test]
fn a_cached_vm_killed_while_paused_gives_way_to_a_cold_boot() {
    let mut e = ShimEnv::start();
    let sock = with_cache(&mut e);
    let state = e.cd.sandvm_state_dir();
    let server = start_cache(&e);
    let ids = wait_ready(&e, "the cache never held a ready VM");
    let qemu = e.processes("qemu-system-x86_64");
    assert_eq!(qemu.len(), 1, "{qemu:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(qemu[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(30), || !e
            .processes("qemu-system-x86_64")
            .contains(&qemu[0])),
        "QEMU {} outlived SIGKILL",
        qemu[0]
    );

    let out = e.run_ok("k1", &[], &["cat", "/etc/sandvm-image"]);
    assert_eq!(out.trim(), TEST_IMAGE_MARKER);
    let log = e.cd.log();
    assert!(
        log.contains(&ids[0]) && log.contains("booting one") && log.contains("origin=\"cold\""),
        "the shim did not fall back from the dead cached VM {}:\n{}",
        ids[0],
        tail(&log, 40)
    );
    assert!(
        eventually(Duration::from_secs(60), || !list(&state)
            .iter()
            .any(|(id, _, _)| *id == ids[0])),
        "the dead cached VM is left: {:?}",
        list(&state)
    );
    stop_cache(&e, server, &sock);
    e.assert_clean();
}
