//! Hotplug and resize, each checked inside the running guest: virtio-mem,
//! pc-dimm, vCPUs, virtio-blk, scsi-hd, a NIC on a tap in a test network
//! namespace; reattach from other processes; rollback leaving the VM and
//! state.json unchanged. Real QEMU (TCG), the real guest, the real CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sandvm_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A config from `Env::config` with some of its default lines replaced.
fn config(env: &Env, name: &str, extra: &str, replace: &[(&str, &str)]) -> PathBuf {
    let p = env.config(name, extra);
    let mut text = std::fs::read_to_string(&p).unwrap();
    for (from, to) in replace {
        assert!(text.contains(from), "{from} not in the test config");
        text = text.replace(from, to);
    }
    std::fs::write(&p, text).unwrap();
    p
}

/// Run `cmd` in the guest once `cond` (a shell test) holds, waiting for it
/// inside the guest up to about 60 s (devices appear asynchronously).
fn guest_when(env: &Env, id: &str, cond: &str, cmd: &str) -> String {
    env.guest(
        id,
        &format!(
            "i=0; while ! {{ {cond}; }} && [ $i -lt 300 ]; do sleep 0.2; i=$((i+1)); done; {cmd}"
        ),
    )
}

fn mem_total_kib(env: &Env, id: &str) -> u64 {
    env.guest(id, "awk '/MemTotal/{print $2}' /proc/meminfo")
        .parse()
        .unwrap()
}

fn fail(env: &Env, args: &[&str]) -> String {
    let out = env.sandvm(args);
    assert!(
        !out.status.success(),
        "sandvm {args:?} should have failed; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A 16 MiB raw image with `marker` at byte 4096.
fn image(env: &Env, name: &str, marker: &str) -> PathBuf {
    let p = env.root.join(name);
    let mut data = vec![0u8; 16 << 20];
    data[4096..4096 + marker.len()].copy_from_slice(marker.as_bytes());
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn virtio_mem_grows_by_a_gib_and_shrinks_back() {
    let env = Env::new("hpvmem");
    let cfg = config(
        &env,
        "m.toml",
        "enable_virtio_mem = true",
        &[("default_maxmemory = 1024", "default_maxmemory = 1280")],
    );
    env.boot(&cfg, "m1");
    let devs = json(&env.ok(&["devices", "m1", "--json"]));
    assert_eq!(devs["virtio_mem"]["region_mib"], 1024, "{devs}");
    let before = mem_total_kib(&env, "m1");

    let r = json(&env.ok(&["resize-memory", "m1", "1280", "--json"]));
    assert_eq!(r["memory_mib"], 1280, "{r}");
    // The call returns once the device has plugged the memory; the guest
    // onlines the last block a moment later.
    let grown: u64 = guest_when(
        &env,
        "m1",
        &format!(
            "[ $(awk '/MemTotal/{{print $2}}' /proc/meminfo) -ge {} ]",
            before + 1000 * 1024
        ),
        "awk '/MemTotal/{print $2}' /proc/meminfo",
    )
    .parse()
    .unwrap();
    let delta = grown.saturating_sub(before) / 1024;
    assert!(
        (1000..=1030).contains(&delta),
        "MemTotal grew by {delta} MiB ({before} -> {grown} KiB), expected about 1024"
    );

    let r = json(&env.ok(&["resize-memory", "m1", "256", "--json"]));
    assert_eq!(r["memory_mib"], 256, "{r}");
    let shrunk = mem_total_kib(&env, "m1");
    assert!(
        shrunk + 1000 * 1024 <= grown,
        "MemTotal did not fall: {grown} -> {shrunk} KiB"
    );
    // Out of range: a clear error, nothing changes.
    let e = fail(&env, &["resize-memory", "m1", "4096"]);
    assert!(e.contains("default_maxmemory"), "{e}");
    env.ok(&["stop", "m1"]);
    env.assert_clean();
}

#[test]
fn pc_dimm_and_vcpus() {
    let env = Env::new("hpdimm");
    let cfg = config(
        &env,
        "d.toml",
        "",
        &[("default_maxvcpus = 2", "default_maxvcpus = 3")],
    );
    env.boot(&cfg, "d1");
    // pc-dimm: grow by one 128 MiB block.
    let before = mem_total_kib(&env, "d1");
    let r = json(&env.ok(&["resize-memory", "d1", "384", "--json"]));
    assert_eq!(r["memory_mib"], 384, "{r}");
    // The guest adds the dimm's memory when it handles the ACPI notification.
    let after: u64 = guest_when(
        &env,
        "d1",
        &format!("[ $(awk '/MemTotal/{{print $2}}' /proc/meminfo) -gt {before} ]"),
        "awk '/MemTotal/{print $2}' /proc/meminfo",
    )
    .parse()
    .unwrap();
    let delta = after.saturating_sub(before) / 1024;
    assert!(
        (120..=130).contains(&delta),
        "MemTotal grew by {delta} MiB ({before} -> {after} KiB), expected 128"
    );
    let e = fail(&env, &["resize-memory", "d1", "256"]);
    assert!(e.contains("only grows"), "{e}");
    let devs = json(&env.ok(&["devices", "d1", "--json"]));
    assert_eq!(devs["devices"][0]["driver"], "pc-dimm", "{devs}");

    // vCPUs 1 -> 3 -> 1.
    let online = "/sys/devices/system/cpu/online";
    assert_eq!(env.guest("d1", &format!("cat {online}")), "0");
    let r = json(&env.ok(&["resize-vcpus", "d1", "3", "--json"]));
    assert_eq!((r["old"].as_u64(), r["new"].as_u64()), (Some(1), Some(3)));
    assert_eq!(
        guest_when(
            &env,
            "d1",
            &format!("[ \"$(cat {online})\" = 0-2 ]"),
            &format!("cat {online}")
        ),
        "0-2"
    );
    let devs = json(&env.ok(&["devices", "d1", "--json"]));
    assert_eq!(devs["vcpus"].as_array().unwrap().len(), 2, "{devs}");
    let r = json(&env.ok(&["resize-vcpus", "d1", "1", "--json"]));
    assert_eq!((r["old"].as_u64(), r["new"].as_u64()), (Some(3), Some(1)));
    assert_eq!(
        guest_when(
            &env,
            "d1",
            &format!("[ \"$(cat {online})\" = 0 ]"),
            &format!("cat {online}")
        ),
        "0"
    );
    let e = fail(&env, &["resize-vcpus", "d1", "4"]);
    assert!(e.contains("default_maxvcpus"), "{e}");
    // Under TCG an unplugged vCPU's thread context is not returned: plugging
    // again past maxcpus would abort QEMU. It is refused, and QEMU lives on.
    let e = fail(&env, &["resize-vcpus", "d1", "2"]);
    assert!(e.contains("TCG"), "{e}");
    assert_eq!(
        json(&env.ok(&["status", "d1", "--json"]))["state"],
        "running"
    );
    assert_eq!(env.guest("d1", "echo $((2+3))"), "5");
    env.ok(&["stop", "d1"]);
    env.assert_clean();
}

/// What must not change when a hotplug fails: QEMU's PCI tree, its
/// peripherals, its block nodes, and state.json.
async fn snapshot(env: &Env, id: &str) -> (String, String, String, String) {
    let c = qmp::Client::connect(env.root.join(id).join("qmp.sock"))
        .await
        .unwrap();
    // The PCI tree as (bus, slot, id): BAR addresses change while the guest
    // assigns them, the devices do not.
    fn walk(devs: &serde_json::Value, out: &mut Vec<String>) {
        for d in devs.as_array().into_iter().flatten() {
            out.push(format!("{}:{}:{}", d["bus"], d["slot"], d["qdev_id"]));
            if let Some(b) = d.get("pci_bridge") {
                walk(&b["devices"], out);
            }
        }
    }
    let mut pci = Vec::new();
    for bus in c.query_pci().await.unwrap() {
        walk(&bus["devices"], &mut pci);
    }
    let pci = pci.join(",");
    let mut names: Vec<String> = c
        .qom_list("/machine/peripheral")
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    names.sort();
    let nodes = c.execute("query-named-block-nodes", None).await.unwrap();
    let mut nodes: Vec<String> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node-name"].as_str().unwrap_or("").to_string())
        .collect();
    nodes.sort();
    drop(c);
    let state = std::fs::read(env.root.join(id).join("state.json")).unwrap();
    (
        pci,
        names.join(","),
        nodes.join(","),
        String::from_utf8(state).unwrap(),
    )
}

/// Compare two snapshots part by part, naming what changed.
fn same(a: &(String, String, String, String), b: &(String, String, String, String), what: &str) {
    assert_eq!(a.0, b.0, "{what}: the PCI tree changed");
    assert_eq!(a.1, b.1, "{what}: /machine/peripheral changed");
    assert_eq!(a.2, b.2, "{what}: the block nodes changed");
    assert_eq!(a.3, b.3, "{what}: state.json changed");
}

#[tokio::test(flavor = "current_thread")]
async fn virtio_blk_reattach_and_rollback() {
    use runtime::StateRoot;
    use runtime::{DeviceSpec, Hypervisor};
    let env = Env::new("hpblk");
    let cfg = config(&env, "b.toml", "block_device_driver = \"virtio-blk\"", &[]);
    env.boot(&cfg, "b1");
    let img = image(&env, "disk.img", "SANDVM-DISK-MARKER");
    let s0 = snapshot(&env, "b1").await;

    // Rollback 1: a bad image path fails at blockdev-add; the slot is given back.
    let e = fail(&env, &["hotplug", "b1", "block", "/nonexistent/disk.img"]);
    assert!(e.contains("blockdev-add"), "{e}");
    same(
        &snapshot(&env, "b1").await,
        &s0,
        "bad path changed the VM or state",
    );
    // Rollback 2: device_add fails after blockdev-add (the id is taken by the
    // console): the block node is deleted again.
    let e = fail(
        &env,
        &[
            "hotplug",
            "b1",
            "block",
            img.to_str().unwrap(),
            "--id",
            "console0",
        ],
    );
    assert!(e.contains("device_add"), "{e}");
    same(
        &snapshot(&env, "b1").await,
        &s0,
        "failed device_add left something",
    );

    // Hotplug from this process through the library, then let go.
    {
        let q = runtime::Qemu::attach(StateRoot::new(&env.root), "b1")
            .await
            .unwrap();
        q.hotplug_add_device(DeviceSpec::Block {
            id: "disk1".into(),
            path: img.clone(),
            readonly: true,
            disposable: false,
        })
        .await
        .unwrap();
    }
    let devs = json(&env.ok(&["devices", "b1", "--json"]));
    assert_eq!(devs["devices"][0]["id"], "disk1", "{devs}");
    assert_eq!(devs["devices"][0]["driver"], "virtio-blk-pci", "{devs}");
    let marker = guest_when(
        &env,
        "b1",
        // The node can exist a moment before the disk's capacity is known.
        "[ -b /dev/vda ] && [ $(cat /sys/block/vda/size) -gt 0 ]",
        "dd if=/dev/vda bs=1 skip=4096 count=18 2>/dev/null",
    );
    assert_eq!(marker, "SANDVM-DISK-MARKER");

    // Unplug from another process (the CLI).
    env.ok(&["unplug", "b1", "disk1"]);
    assert_eq!(
        guest_when(
            &env,
            "b1",
            "[ ! -e /dev/vda ]",
            "ls /dev/vda 2>&1 | grep -c 'No such'"
        ),
        "1"
    );
    same(&snapshot(&env, "b1").await, &s0, "unplug left something");
    let e = fail(&env, &["unplug", "b1", "disk1"]);
    assert!(e.contains("No device disk1"), "{e}");

    // Rollback 3: a full bridge. Fill its 30 slots, then one more fails
    // before anything is touched.
    {
        let q = runtime::Qemu::attach(StateRoot::new(&env.root), "b1")
            .await
            .unwrap();
        for i in 0..30 {
            q.hotplug_add_device(DeviceSpec::Block {
                id: format!("f{i}"),
                path: img.clone(),
                readonly: true,
                disposable: false,
            })
            .await
            .unwrap();
        }
    }
    let s1 = snapshot(&env, "b1").await;
    let e = fail(&env, &["hotplug", "b1", "block", img.to_str().unwrap()]);
    assert!(e.contains("default_bridges"), "{e}");
    same(
        &snapshot(&env, "b1").await,
        &s1,
        "full bridge changed the VM or state",
    );

    env.ok(&["stop", "b1", "--force"]);
    env.assert_clean();
}

#[test]
fn scsi_hd_appears_and_goes() {
    let env = Env::new("hpscsi");
    let cfg = config(&env, "s.toml", "block_device_driver = \"virtio-scsi\"", &[]);
    env.boot(&cfg, "s1");
    let img = image(&env, "scsi.img", "SANDVM-SCSI-MARKER");
    assert_eq!(
        env.ok(&[
            "hotplug",
            "s1",
            "block",
            img.to_str().unwrap(),
            "--readonly"
        ])
        .trim(),
        "blk0"
    );
    let devs = json(&env.ok(&["devices", "s1", "--json"]));
    assert_eq!(devs["devices"][0]["driver"], "scsi-hd", "{devs}");
    let marker = guest_when(
        &env,
        "s1",
        // The node can exist a moment before the disk can be read.
        "[ -b /dev/sda ] && [ $(cat /sys/block/sda/size) -gt 0 ] && dd if=/dev/sda bs=1 skip=4096 count=18 2>/dev/null | grep -q SANDVM-SCSI-MARKER",
        "dd if=/dev/sda bs=1 skip=4096 count=18 2>/dev/null",
    );
    assert_eq!(
        marker,
        "SANDVM-SCSI-MARKER",
        "guest: {}",
        env.guest("s1", "cat /sys/block/sda/size; dmesg | tail -15")
    );
    env.ok(&["unplug", "s1", "blk0"]);
    assert_eq!(
        guest_when(
            &env,
            "s1",
            "[ ! -e /dev/sda ]",
            "ls /dev/sda 2>&1 | grep -c 'No such'"
        ),
        "1"
    );
    env.ok(&["stop", "s1"]);
    env.assert_clean();
}

/// A network namespace and a tap, removed on drop.
struct Net {
    ns: String,
    tap: String,
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.tap])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}: run `make setup`", args[0]));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn nic_on_a_tap_in_a_test_namespace() {
    for tool in ["/usr/sbin/ip", "/usr/bin/busybox"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: run `make setup`"
        );
    }
    let env = Env::new("hpnet");
    let cfg = config(&env, "n.toml", "", &[]);
    env.boot(&cfg, "n1");
    let pid = std::process::id();
    let net = Net {
        ns: format!("svt-ns-{pid}"),
        tap: format!("svt{}", pid % 100_000),
    };
    let (host_ip, guest_ip) = ("10.213.7.1", "10.213.7.2");
    sh(&["ip", "netns", "add", &net.ns]);
    sh(&["ip", "tuntap", "add", "dev", &net.tap, "mode", "tap"]);
    let mac = "02:5a:4e:00:00:07";
    let dev = env.ok(&[
        "hotplug", "n1", "net", &net.tap, "--mac", mac, "--id", "nic0",
    ]);
    assert_eq!(dev.trim(), "nic0");
    // QEMU holds the tap open; it keeps working after moving into the namespace.
    sh(&["ip", "link", "set", &net.tap, "netns", &net.ns]);
    let nsx = |cmd: &[&str]| {
        let mut v = vec!["ip", "netns", "exec", net.ns.as_str()];
        v.extend_from_slice(cmd);
        sh(&v)
    };
    nsx(&[
        "ip",
        "addr",
        "add",
        &format!("{host_ip}/30"),
        "dev",
        &net.tap,
    ]);
    nsx(&["ip", "link", "set", &net.tap, "up"]);
    nsx(&["ip", "link", "set", "lo", "up"]);

    let seen = guest_when(
        &env,
        "n1",
        "[ -e /sys/class/net/eth0 ]",
        "cat /sys/class/net/eth0/address",
    );
    assert_eq!(seen, mac);
    let ping = env.guest(
        "n1",
        &format!(
            "ip addr add {guest_ip}/30 dev eth0; ip link set eth0 up; \
             ping -c 3 -W 5 {host_ip} >/dev/null 2>&1; echo rc=$?"
        ),
    );
    assert_eq!(ping, "rc=0", "guest could not ping the namespace");
    let out = nsx(&["busybox", "ping", "-c", "3", "-W", "5", guest_ip]);
    assert!(out.contains("3 packets received"), "{out}");

    env.ok(&["unplug", "n1", "nic0"]);
    assert_eq!(
        guest_when(
            &env,
            "n1",
            "[ ! -e /sys/class/net/eth0 ]",
            "ls /sys/class/net | grep -c eth0"
        ),
        "0"
    );
    let devs = json(&env.ok(&["devices", "n1", "--json"]));
    assert!(devs["devices"].as_array().unwrap().is_empty(), "{devs}");
    env.ok(&["stop", "n1"]);
    drop(net);
    env.assert_clean();
}

fn sha256(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", p.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// `create --disk PATH:disposable`: the guest writes to the disk and reads its
/// write back, the image file never changes, nothing is left behind; a
/// disposable hotplug and a snapshot of the sandbox are refused by name.
#[test]
fn a_disposable_disk_takes_writes_that_never_reach_the_image() {
    let env = Env::new("scratch");
    let cfg = env.config("d.toml", "");
    let img = image(&env, "scratch.img", "SANDVM-ORIGINAL-DATA");
    let before = sha256(&img);
    let disk = format!("{}:disposable", img.display());
    let cfg = cfg.to_str().unwrap();
    env.ok(&["create", "--config", cfg, "--id", "d1", "--disk", &disk]);
    env.ok(&["start", "d1"]);
    env.wait_ready("d1");
    let argv = std::fs::read(format!("/proc/{}/cmdline", env.qemu_pid("d1"))).unwrap();
    let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
    assert!(argv.contains("cache=unsafe,snapshot=on"), "{argv}");
    let read = "dd if=/dev/sda bs=1 skip=4096 count=20 2>/dev/null";
    // The default block_device_driver is virtio-scsi: the disk is sda.
    assert_eq!(
        guest_when(&env, "d1", "[ -b /dev/sda ]", read),
        "SANDVM-ORIGINAL-DATA"
    );
    let write = "printf SANDVM-SCRATCH-WRITE | dd of=/dev/sda bs=1 seek=4096 conv=notrunc 2>/dev/null; sync; echo 3 > /proc/sys/vm/drop_caches";
    assert_eq!(
        env.guest("d1", &format!("{write}; {read}")),
        "SANDVM-SCRATCH-WRITE"
    );
    assert_eq!(
        sha256(&img),
        before,
        "a write reached the image while running"
    );
    // Hotplug has no snapshot=on: refused, naming the option.
    let err = fail(
        &env,
        &[
            "hotplug",
            "d1",
            "block",
            img.to_str().unwrap(),
            "--disposable",
        ],
    );
    assert!(err.contains("as a disposable disk"), "{err}");
    // A snapshot cannot carry the overlay: refused by name, nothing written.
    let snap = env.root.join("d-snap");
    let err = fail(&env, &["save", "d1", snap.to_str().unwrap()]);
    assert!(
        err.contains("disposable disk") && err.contains(img.to_str().unwrap()),
        "{err}"
    );
    assert!(!snap.exists(), "a refused save left {}", snap.display());
    env.ok(&["stop", "d1"]);
    assert_eq!(sha256(&img), before, "the image changed");
    std::fs::remove_file(&img).unwrap();
    std::fs::remove_file(env.root.join("d.toml")).unwrap();
    env.assert_clean();
    let left: Vec<_> = std::fs::read_dir(&env.root).unwrap().flatten().collect();
    assert!(left.is_empty(), "left in the state root: {left:?}");
}
