//! Shared filesystems end to end: virtiofsd and nydusd serve a host folder to
//! the real guest (tag kataShared); the supervisor stops a sandbox whose
//! daemon dies. Real QEMU (TCG), the real CLI; each test ends with the leak check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sandvm_tests::*;
use std::path::Path;
use std::time::Duration;

const READY: &str = "SANDVM-GUEST-READY";

fn boot(env: &Env, cfg: &Path, id: &str, share: Option<&Path>) {
    let cfg = cfg.to_str().unwrap();
    let mut args = vec!["create", "--config", cfg, "--id", id];
    if let Some(s) = share {
        args.extend(["--share", s.to_str().unwrap()]);
    }
    assert_eq!(env.ok(&args).trim(), id);
    env.ok(&["start", id]);
    let log = env.root.join(id).join("console.log");
    let ready = eventually(Duration::from_secs(120), || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.contains(READY))
    });
    assert!(
        ready,
        "guest never printed {READY}; console.log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// The daemon recorded in the sandbox's state.json.
fn daemon_pid(env: &Env, id: &str) -> i32 {
    let st = json(&std::fs::read_to_string(env.root.join(id).join("state.json")).unwrap());
    st["fs"]["pid"]
        .as_i64()
        .expect("no daemon pid in state.json") as i32
}

/// Host writes, guest reads; guest writes, host reads. `sub` is where the
/// share appears under the guest's mount (nydusd mounts it at /containers).
fn round_trip(env: &Env, id: &str, share: &Path, sub: &str) {
    std::fs::write(share.join("from-host.txt"), "written by the host\n").unwrap();
    let out = env.guest(
        id,
        "mkdir -p /mnt/s && mount -t virtiofs kataShared /mnt/s && echo mounted",
    );
    assert_eq!(out, "mounted");
    let dir = format!("/mnt/s{sub}");
    assert_eq!(
        env.guest(id, &format!("cat {dir}/from-host.txt")),
        "written by the host"
    );
    assert_eq!(
        env.guest(
            id,
            &format!("echo written by the guest > {dir}/from-guest.txt && sync && echo ok")
        ),
        "ok"
    );
    assert_eq!(
        std::fs::read_to_string(share.join("from-guest.txt")).unwrap(),
        "written by the guest\n"
    );
    let mounts = env.guest(id, "grep kataShared /proc/mounts | cut -d' ' -f3");
    assert_eq!(mounts, "virtiofs");
}

#[test]
fn virtiofsd_shares_a_host_folder_both_ways() {
    let env = Env::new("vfsd");
    let share = env.root.join("share-v");
    std::fs::create_dir(&share).unwrap();
    let cfg = env.config_shared("v.toml", "virtiofsd", "");
    boot(&env, &cfg, "v1", Some(&share));
    let pid = daemon_pid(&env, "v1");
    assert!(process_alive(pid));
    let log = std::fs::read_to_string(env.root.join("v1/virtiofsd.log")).unwrap();
    assert!(log.contains("Client connected"), "{log}");
    round_trip(&env, "v1", &share, "");
    env.ok(&["stop", "v1"]);
    assert!(!process_alive(pid), "stop reaps virtiofsd");
    std::fs::remove_dir_all(&share).unwrap();
    env.assert_clean();
}

#[test]
fn nydusd_passthrough_shares_a_host_folder_both_ways() {
    let env = Env::new("nydus");
    let cfg = env.config_shared("n.toml", "nydusd", "");
    // Without --share the sandbox's own shared/ folder is shared.
    boot(&env, &cfg, "n1", None);
    let pid = daemon_pid(&env, "n1");
    let share = env.root.join("n1/shared");
    assert!(share.is_dir());
    round_trip(&env, "n1", &share, "/containers");
    env.ok(&["stop", "n1"]);
    assert!(!process_alive(pid), "stop reaps nydusd");
    env.assert_clean();
}

#[test]
fn killing_virtiofsd_stops_the_sandbox_and_leaves_nothing() {
    let env = Env::new("vfskill");
    let cfg = env.config_shared("k.toml", "virtiofsd", "");
    boot(&env, &cfg, "k1", None);
    let pid = daemon_pid(&env, "k1");
    let qemu = json(&env.ok(&["status", "k1", "--json"]))["pid"]
        .as_i64()
        .unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The supervisor sees the daemon's exit (pidfd), ends QEMU and removes the sandbox.
    let gone = eventually(Duration::from_secs(60), || {
        !process_alive(qemu) && !env.root.join("k1").exists()
    });
    assert!(gone, "sandbox still there after virtiofsd died");
    let st = env.sandvm(&["status", "k1"]);
    assert_eq!(st.status.code(), Some(4), "the sandbox is gone");
    assert!(eventually(Duration::from_secs(10), || {
        processes_mentioning(&env.root).is_empty()
    }));
    env.assert_clean();
}

#[test]
fn share_must_be_a_folder_and_create_leaves_nothing() {
    let env = Env::new("vfsbad");
    let cfg = env.config_shared("b.toml", "virtiofsd", "");
    let out = env.sandvm(&[
        "create",
        "--config",
        cfg.to_str().unwrap(),
        "--id",
        "b1",
        "--share",
        "/nonexistent/share",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/share"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.assert_clean();
}

#[test]
fn virtio_9p_cold_boot_has_qemu_s_9p_device_on_the_share_and_no_daemon() {
    let env = Env::new("fs9p");
    let share = env.root.join("share9p");
    std::fs::create_dir(&share).unwrap();
    let cfg = env.config_9p("9p.toml", "");
    boot(&env, &cfg, "p", Some(&share));
    let cmd = env.qemu_cmdline("p");
    assert!(
        cmd.contains(&format!(
            "-fsdev local,id=extra-9p-kataShared,path={},security_model=none,multidevs=remap",
            share.display()
        )),
        "{cmd}"
    );
    assert!(
        cmd.contains(
            "-device virtio-9p-pci,id=virtio-9p0,fsdev=extra-9p-kataShared,mount_tag=kataShared"
        ),
        "{cmd}"
    );
    // Served inside QEMU: no daemon, no vhost-user socket, private memory.
    assert!(
        !cmd.contains("vhost-user-fs") && !cmd.contains("share=on"),
        "{cmd}"
    );
    let st = json(&std::fs::read_to_string(env.root.join("p").join("state.json")).unwrap());
    assert_eq!(st["fs"]["kind"], "virtio9p", "{st}");
    assert!(st["fs"]["pid"].is_null(), "{st}");
    assert!(!env.root.join("p").join("fs.sock").exists());
    let pci = env.pci_devices("p");
    assert_eq!(pci.get("virtio-9p0").map(|d| d.1), Some(0x1009), "{pci:?}");
    assert_eq!(env.guest("p", "echo $((40+2))"), "42");
    env.ok(&["stop", "p"]);
    std::fs::remove_dir(&share).unwrap();
    env.assert_clean();
}
