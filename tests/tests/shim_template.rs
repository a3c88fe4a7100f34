//! containerd-shim-sandvm-v2 with VM templating (the shipped
//! `configs/sandvm-containerd-template.toml` under TCG): with no template a
//! container's VM boots cold and the shim's log says why; once `sandvm
//! template create` made one, a container's VM is a clone (QEMU runs with
//! `-incoming`, its memory maps the template's file), its root comes over
//! virtio-9p, its clock is the host's; nothing is left afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod shim_support;

use sandvm_tests::oci::TEST_IMAGE_MARKER;
use sandvm_tests::{TemplateDir, eventually, finish};
use shim_support::{SETTLE, ShimEnv, create_template, ninep_guest, tail, template_config_tcg};

/// The command line and memory map of the one QEMU of the test's sandboxes.
fn qemu_of(e: &ShimEnv) -> (String, String) {
    let mut pids = Vec::new();
    assert!(
        eventually(SETTLE, || {
            pids = e.processes("qemu-system-x86_64");
            pids.len() == 1
        }),
        "QEMU processes: {pids:?}"
    );
    let cmd = std::fs::read(format!("/proc/{}/cmdline", pids[0])).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", pids[0])).unwrap();
    (String::from_utf8_lossy(&cmd).replace('\0', " "), maps)
}

#[test]
fn containers_run_in_clones_of_the_template() {
    let release = ninep_guest();
    let tp = TemplateDir::new("shim");
    let mut e = ShimEnv::start();
    e.config = template_config_tcg(e.cd.dir(), &tp.0);

    // No template yet: the VM boots cold, and the log says why.
    let out = e.run_ok("cold", &[], &["cat", "/etc/sandvm-image"]);
    assert_eq!(out.trim(), TEST_IMAGE_MARKER);
    let log = e.cd.log();
    assert!(
        log.contains("not cloning the VM template") && log.contains("template create"),
        "no fallback line in containerd's log:\n{}",
        tail(&log, 40)
    );
    e.assert_clean();

    create_template(&e.cd.sandvm_state_dir(), &e.config);
    let memory = tp.0.join("memory");
    let run = e.spawn_run("t1", &[], &["sleep", "600"]);
    e.wait_status("t1", "RUNNING");
    let (cmd, maps) = qemu_of(&e);
    assert!(cmd.contains("-incoming defer"), "{cmd}");
    assert!(
        maps.contains(&memory.display().to_string()),
        "QEMU does not map {}:\n{maps}",
        memory.display()
    );
    assert!(
        cmd.contains("virtio-9p-pci") && !cmd.contains("vhost-user-fs"),
        "{cmd}"
    );
    assert!(
        e.processes("virtiofsd").is_empty(),
        "a clone needs no virtiofsd"
    );

    // The container: the image's root over 9p, the 9p guest's kernel, and
    // the host's time (the template's clock was set on connect).
    let out = e.ctr_ok(&[
        "tasks",
        "exec",
        "--exec-id",
        "x1",
        "t1",
        "sh",
        "-c",
        "cat /etc/sandvm-image; uname -r; date +%s; grep -m1 ' 9p ' /proc/mounts",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[0], TEST_IMAGE_MARKER);
    assert_eq!(lines[1], release);
    // the share is a 9p mount with the shipped config's msize (the guest
    // would clamp one its transport cannot carry)
    assert!(
        lines[3].contains(" 9p ")
            && lines[3].contains("trans=virtio")
            && lines[3].contains("msize=262144"),
        "{out}"
    );
    let guest: i64 = lines[2].parse().unwrap();
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (host - guest).abs() < 120,
        "guest clock {guest}, host {host}: the clone's clock was not set"
    );
    let log = e.cd.log();
    assert!(
        log.contains("sandbox running") && log.contains("origin=\"template\""),
        "the shim did not log a template clone:\n{}",
        tail(&log, 40)
    );

    e.ctr_ok(&["tasks", "kill", "-s", "KILL", "t1"]);
    let out = finish(run, "ctr run t1");
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    e.assert_clean();
    // the template outlives its clones
    for f in ["memory", "state", "template.json"] {
        assert!(tp.0.join(f).is_file(), "{f} gone from the template");
    }
}
