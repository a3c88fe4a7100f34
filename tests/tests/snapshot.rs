//! Snapshots: a running sandbox saved to a folder and restored in a new QEMU
//! (`sandvm save` / `sandvm restore`), with the guest's processes, its
//! tmpfs, a hotplugged disk and a virtio-fs share carried over; and the
//! faults: QEMU killed during a save and during a restore, a changed config,
//! a damaged snapshot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sandvm_tests::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The last `TICK-<n>` the guest's counter printed on the console.
fn last_tick(log: &Path) -> u64 {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .rsplit("TICK-")
        .next()
        .and_then(|t| {
            t.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn start_counter(env: &Env, id: &str) {
    env.ok(&[
        "console",
        id,
        "--send",
        "(i=0; while :; do echo TICK-$i; i=$((i+1)); sleep 1; done) >/dev/hvc0 2>&1 &",
        "--expect",
        "TICK-2",
        "--timeout",
        "60",
    ]);
}

fn snapshot_dir(env: &Env, name: &str) -> PathBuf {
    env.root.join(format!("snap-{name}"))
}

#[test]
fn a_counter_a_tmpfs_file_and_a_hotplugged_disk_survive_save_and_restore() {
    let env = Env::new("snap");
    let cfg = env.config("s.toml", "block_device_driver = \"virtio-blk\"\n");
    env.boot(&cfg, "s1");
    let disk = env.root.join("d.img");
    let mut content = b"SNAPSHOT-DISK-5".to_vec();
    content.resize(4 << 20, 0);
    std::fs::write(&disk, content).unwrap();
    env.ok(&[
        "hotplug",
        "s1",
        "block",
        disk.to_str().unwrap(),
        "--id",
        "d1",
    ]);
    assert_eq!(
        env.guest("s1", "echo kept > /tmp/marker; cat /tmp/marker"),
        "kept"
    );
    start_counter(&env, "s1");
    let before = last_tick(&env.root.join("s1/console.log"));
    let snap = snapshot_dir(&env, "a");
    let info = json(&env.ok(&["save", "s1", snap.to_str().unwrap(), "--stop", "--json"]));
    assert!(info["state_bytes"].as_u64().unwrap() > 0, "{info}");
    assert!(!env.root.join("s1").exists(), "--stop removed the sandbox");
    assert!(snap.join("snapshot.json").is_file() && snap.join("state").is_file());

    env.ok(&["restore", snap.to_str().unwrap(), "--id", "s2"]);
    let log = env.root.join("s2/console.log");
    // The counter runs on from where it was: no restart at 0.
    assert!(
        eventually(Duration::from_secs(60), || last_tick(&log) > before),
        "no TICK after {before}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let first = std::fs::read_to_string(&log).unwrap();
    assert!(
        !first.contains("TICK-0\n"),
        "the counter restarted: {first}"
    );
    assert_eq!(env.guest("s2", "cat /tmp/marker"), "kept");
    assert_eq!(
        env.guest("s2", "head -c 15 /dev/vda"),
        "SNAPSHOT-DISK-5",
        "the hotplugged disk is there with its content"
    );
    let devs = json(&env.ok(&["devices", "s2", "--json"]));
    assert_eq!(devs["devices"][0]["id"], "d1", "{devs}");
    env.ok(&["stop", "s2"]);
    std::fs::remove_dir_all(&snap).unwrap();
    env.assert_clean();
}

#[test]
fn a_virtio_fs_share_works_after_a_restore() {
    let env = Env::new("snapfs");
    let share = env.root.join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("before.txt"), "before\n").unwrap();
    let cfg = env.config_shared("f.toml", "virtiofsd", "");
    let c = cfg.to_str().unwrap();
    env.ok(&[
        "create",
        "--config",
        c,
        "--id",
        "f1",
        "--share",
        share.to_str().unwrap(),
    ]);
    env.ok(&["start", "f1"]);
    env.wait_ready("f1");
    assert_eq!(
        env.guest(
            "f1",
            "mkdir -p /mnt/s && mount -t virtiofs kataShared /mnt/s && cat /mnt/s/before.txt"
        ),
        "before"
    );
    let snap = snapshot_dir(&env, "fs");
    env.ok(&["save", "f1", snap.to_str().unwrap(), "--stop"]);
    env.ok(&["restore", snap.to_str().unwrap(), "--id", "f2"]);
    // Written on the host after the restore, read in the guest.
    std::fs::write(share.join("after.txt"), "after\n").unwrap();
    assert_eq!(env.guest("f2", "cat /mnt/s/after.txt"), "after");
    assert_eq!(env.guest("f2", "cat /mnt/s/before.txt"), "before");
    env.ok(&["stop", "f2"]);
    std::fs::remove_dir_all(&snap).unwrap();
    std::fs::remove_dir_all(&share).unwrap();
    env.assert_clean();
}

/// Fill `mib` of the guest's memory with random bytes, so that saving and
/// loading it takes long enough to kill QEMU in the middle.
fn dirty_memory(env: &Env, id: &str, mib: u32) {
    env.guest(
        id,
        &format!("dd if=/dev/urandom of=/tmp/fill bs=1M count={mib} 2>/dev/null; echo done"),
    );
}

fn failed_with(out: &std::process::Output, what: &str) -> String {
    assert!(!out.status.success(), "{what} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn qemu_killed_during_a_save_leaves_nothing_that_looks_like_a_snapshot() {
    let env = Env::new("snapkill");
    let cfg = env.config("k.toml", "");
    env.boot(&cfg, "k1");
    dirty_memory(&env, "k1", 100);
    let pid = env.qemu_pid("k1");
    let snap = snapshot_dir(&env, "k");
    let save = env.spawn(&["save", "k1", snap.to_str().unwrap()]);
    // Kill QEMU once the stream has started.
    let partial = env.root.join(format!(".snap-k.partial-{}", save.id()));
    let started = eventually(Duration::from_secs(60), || {
        std::fs::metadata(partial.join("state")).is_ok_and(|m| m.len() > (1 << 20))
    });
    assert!(started, "the save never started streaming");
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let err = failed_with(&finish(save, "sandvm save"), "a save whose QEMU died");
    assert!(
        err.contains(&format!(
            "QEMU (pid {pid}) exited during the save of a snapshot"
        )),
        "{err}"
    );
    assert!(!snap.exists(), "a snapshot folder was left");
    assert!(!partial.exists(), "the partial snapshot was left");
    env.ok(&["stop", "k1"]);
    env.assert_clean();
}

#[test]
fn qemu_killed_during_a_restore_leaves_nothing() {
    let env = Env::new("snaprk");
    let cfg = env.config("r.toml", "");
    env.boot(&cfg, "r1");
    dirty_memory(&env, "r1", 100);
    let snap = snapshot_dir(&env, "r");
    env.ok(&["save", "r1", snap.to_str().unwrap(), "--stop"]);
    let restore = env.spawn(&["restore", snap.to_str().unwrap(), "--id", "r2"]);
    let state = env.root.join("r2/state.json");
    let mut pid = None;
    let found = eventually(Duration::from_secs(60), || {
        pid = std::fs::read(&state)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["pid"].as_i64());
        pid.is_some()
    });
    assert!(found, "the restore never started QEMU");
    kill(Pid::from_raw(pid.unwrap() as i32), Signal::SIGKILL).unwrap();
    let err = failed_with(
        &finish(restore, "sandvm restore"),
        "a restore whose QEMU died",
    );
    assert!(err.contains("QEMU"), "{err}");
    assert!(
        env.sandboxes().iter().all(|s| s.starts_with("snap-")),
        "{:?}",
        env.sandboxes()
    );
    // The snapshot itself is untouched: it restores.
    env.ok(&["restore", snap.to_str().unwrap(), "--id", "r3"]);
    env.ok(&["stop", "r3"]);
    std::fs::remove_dir_all(&snap).unwrap();
    env.assert_clean();
}

#[test]
fn a_changed_config_and_a_damaged_snapshot_are_refused_by_name() {
    let env = Env::new("snapbad");
    let cfg = env.config("b.toml", "");
    env.boot(&cfg, "b1");
    let snap = snapshot_dir(&env, "b");
    env.ok(&["save", "b1", snap.to_str().unwrap(), "--stop"]);
    let s = snap.to_str().unwrap();
    // Another memory size: refused, naming the key.
    let bigger = env.config("b2.toml", "").to_str().unwrap().to_string();
    let text = std::fs::read_to_string(&bigger)
        .unwrap()
        .replace("default_memory = 256", "default_memory = 384");
    std::fs::write(&bigger, text).unwrap();
    let err = failed_with(
        &env.sandvm(&["restore", s, "--config", &bigger]),
        "a restore with another memory size",
    );
    assert!(
        err.contains("hypervisor.qemu.default_memory") && err.contains("384"),
        "{err}"
    );
    // A damaged stream, and a snapshot without its metadata.
    let state = snap.join("state");
    let bytes = std::fs::read(&state).unwrap();
    std::fs::write(&state, &bytes[..bytes.len() / 2]).unwrap();
    let err = failed_with(
        &env.sandvm(&["restore", s]),
        "a restore of a damaged stream",
    );
    assert!(
        err.contains("damaged snapshot") && err.contains("state"),
        "{err}"
    );
    std::fs::write(&state, &bytes).unwrap();
    std::fs::remove_file(snap.join("snapshot.json")).unwrap();
    let err = failed_with(&env.sandvm(&["restore", s]), "a restore without metadata");
    assert!(err.contains("snapshot.json is missing"), "{err}");
    std::fs::remove_dir_all(&snap).unwrap();
    env.assert_clean();
}
