//! The runtime embedded as a shim embeds it, with no CLI: one `Qemu` handle
//! shared by tasks (a wait, a hotplug and a health check at once), the VM's
//! end reported by the in-process supervisor (QEMU killed, a daemon dead, a
//! guest panic), devices cold-plugged before start, and annotations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use runtime::{
    CreateOptions, DeviceSpec, ExitReason, Hypervisor, HypervisorError, NetEndpoint, Placement,
    ProcessExit, Qemu, SandboxEvent, StateRoot,
};
use sandvm_tests::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A hang guard for the end of a VM (nothing is timed against it).
const EXIT_GUARD: Duration = Duration::from_secs(60);

fn load(path: &std::path::Path) -> runtime::HypervisorConfig {
    runtime::load_config(path).unwrap().config
}

/// Start sandbox `id` of `cfg` in this process and wait for its guest.
async fn boot(env: &Arc<Env>, cfg: &std::path::Path, id: &str) -> Arc<Qemu> {
    let vm = Arc::new(Qemu::new(StateRoot::new(&env.root), load(cfg)));
    vm.create_vm(id, CreateOptions::default()).await.unwrap();
    vm.start_vm(Duration::from_secs(120)).await.unwrap();
    ready(env, id).await;
    vm
}

async fn ready(env: &Arc<Env>, id: &str) {
    let (env, id) = (Arc::clone(env), id.to_string());
    tokio::task::spawn_blocking(move || env.wait_ready(&id))
        .await
        .unwrap();
}

/// A shell command in the guest (through the console), off the async threads.
async fn guest(env: &Arc<Env>, id: &str, cmd: &str) -> String {
    let (env, id, cmd) = (Arc::clone(env), id.to_string(), cmd.to_string());
    tokio::task::spawn_blocking(move || env.guest(&id, &cmd))
        .await
        .unwrap()
}

fn pid_of(vm: &Qemu, role: &str) -> i32 {
    vm.processes()
        .into_iter()
        .find(|(r, _)| r == role)
        .unwrap_or_else(|| panic!("no {role} in {:?}", vm.processes()))
        .1
}

fn kill(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// The guest's sysfs path of a PCI device at Kata PCI path `a/b` (bridge in
/// root slot `a`, device in slot `b` of the bridge's bus).
fn pci_path_pattern(path: &str) -> (String, String) {
    let (a, b) = path.split_once('/').unwrap();
    (format!("0000:00:{a}.0/"), format!(":{b}.0/"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_a_hotplug_and_a_check_share_one_sandbox_then_a_kill_is_reported() {
    let env = Arc::new(Env::new("emb"));
    let cfg = env.config("e.toml", "block_device_driver = \"virtio-blk\"\n");
    let vm = boot(&env, &cfg, "e1").await;
    let mut events = vm.events();
    let waiter = tokio::spawn({
        let vm = Arc::clone(&vm);
        async move { vm.wait_vm().await }
    });
    let disk = env.root.join("d.img");
    let mut content = b"EMBED-DISK-42".to_vec();
    content.resize(1 << 20, 0);
    std::fs::write(&disk, content).unwrap();
    // The hotplug and the health check run at once on the one handle.
    let plug = tokio::spawn({
        let vm = Arc::clone(&vm);
        let disk = disk.clone();
        async move {
            vm.hotplug_add_device(DeviceSpec::Block {
                id: "d1".into(),
                path: disk,
                readonly: true,
                disposable: false,
            })
            .await
        }
    });
    let (checked, plugged) = tokio::join!(vm.check(), plug);
    checked.unwrap();
    let info = plugged.unwrap().unwrap();
    let Placement::Pci { path } = &info.placement else {
        panic!("{info:?}")
    };
    let (root_slot, dev_slot) = pci_path_pattern(path);
    let seen = guest(
        &env,
        "e1",
        "for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /dev/vda ] && break; sleep 1; done; \
         readlink -f /sys/block/vda; head -c 13 /dev/vda; echo",
    )
    .await;
    assert!(
        seen.contains(&root_slot) && seen.contains(&dev_slot),
        "placement {path} vs {seen}"
    );
    assert!(seen.contains("EMBED-DISK-42"), "{seen}");
    assert!(!waiter.is_finished(), "the VM runs");
    assert_eq!(vm.get_total_memory(), 256);

    let t0 = Instant::now();
    kill(pid_of(&vm, "qemu"));
    let exit = tokio::time::timeout(EXIT_GUARD, waiter)
        .await
        .expect("wait_vm never returned")
        .unwrap()
        .unwrap();
    println!("wait_vm returned {:?} after the kill", t0.elapsed());
    assert_eq!(exit.reason, ExitReason::QemuExited, "{exit}");
    assert_eq!(exit.qemu, Some(ProcessExit::Signal(9)), "{exit}");
    let mut saw_exit = false;
    while let Ok(ev) = events.try_recv() {
        saw_exit |= matches!(ev, SandboxEvent::Exited(ref e) if *e == exit);
    }
    assert!(saw_exit, "no Exited event");
    // check() says the VM ended; a second waiter gets the same answer.
    assert!(matches!(
        vm.check().await,
        Err(HypervisorError::VmEnded { .. })
    ));
    assert_eq!(vm.wait_vm().await.unwrap(), exit);
    vm.stop_vm(false).await.unwrap();
    env.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_virtiofsd_is_reported_and_the_sandbox_torn_down() {
    let env = Arc::new(Env::new("embfs"));
    let cfg = env.config_shared("f.toml", "virtiofsd", "");
    let vm = boot(&env, &cfg, "f1").await;
    vm.check().await.unwrap();
    let daemon = pid_of(&vm, "virtiofsd");
    kill(daemon);
    let exit = tokio::time::timeout(EXIT_GUARD, vm.wait_vm())
        .await
        .expect("wait_vm never returned")
        .unwrap();
    assert_eq!(
        exit.reason,
        ExitReason::DaemonDied {
            daemon: "virtiofsd".into(),
            pid: daemon
        },
        "{exit}"
    );
    // Torn down already: no stop needed.
    assert!(env.sandboxes().is_empty(), "{:?}", env.sandboxes());
    env.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_panic_fails_check_writes_a_dump_and_is_the_exit_reason() {
    let env = Arc::new(Env::new("embpanic"));
    let dumps = DumpDir::new("embpanic");
    let cfg = env.config(
        "p.toml",
        &format!("guest_memory_dump_path = \"{}\"\n", dumps.0.display()),
    );
    let vm = boot(&env, &cfg, "p1").await;
    vm.check().await.unwrap();
    let panic_env = Arc::clone(&env);
    // The console command never returns: the guest dies under it.
    let _ = tokio::task::spawn_blocking(move || {
        panic_env.sandvm(&[
            "console",
            "p1",
            "--send",
            "echo c > /proc/sysrq-trigger",
            "--expect",
            "never-printed",
            "--timeout",
            "5",
        ])
    })
    .await;
    let exit = tokio::time::timeout(Duration::from_secs(600), vm.wait_vm())
        .await
        .expect("wait_vm never returned")
        .unwrap();
    let ExitReason::GuestPanicked { dump: Some(file) } = &exit.reason else {
        panic!("{exit}")
    };
    let head = std::fs::read(file).unwrap();
    assert_eq!(&head[..4], b"\x7fELF", "{}", file.display());
    assert!(matches!(
        vm.check().await,
        Err(HypervisorError::VmEnded { .. })
    ));
    vm.stop_vm(false).await.unwrap();
    env.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_plugged_disk_and_nic_are_there_at_boot() {
    let env = Arc::new(Env::new("embcold"));
    let cfg = env.config("c.toml", "block_device_driver = \"virtio-blk\"\n");
    let vm = Arc::new(Qemu::new(StateRoot::new(&env.root), load(&cfg)));
    let tap = format!("svc{}", std::process::id() % 100_000);
    let opts = CreateOptions {
        network: vec![NetEndpoint::Tap {
            name: tap.clone(),
            mac: Some("02:5a:00:00:be:ef".into()),
        }],
        ..Default::default()
    };
    vm.create_vm("c1", opts).await.unwrap();
    let disk = env.root.join("cold.img");
    let mut content = b"COLD-DISK-7".to_vec();
    content.resize(1 << 20, 0);
    std::fs::write(&disk, content).unwrap();
    let info = vm
        .add_device(DeviceSpec::Block {
            id: "cold0".into(),
            path: disk,
            readonly: true,
            disposable: false,
        })
        .await
        .unwrap();
    let Placement::Pci { path } = &info.placement else {
        panic!("{info:?}")
    };
    let (root_slot, dev_slot) = pci_path_pattern(path);
    // A hotplug before start is refused; a cold plug after start too.
    assert!(matches!(
        vm.hotplug_add_device(DeviceSpec::Vsock {
            id: String::new(),
            guest_cid: 9
        })
        .await,
        Err(HypervisorError::WrongState { .. })
    ));
    vm.start_vm(Duration::from_secs(120)).await.unwrap();
    ready(&env, "c1").await;
    let seen = guest(
        &env,
        "c1",
        "readlink -f /sys/block/vda; head -c 11 /dev/vda; echo; cat /sys/class/net/eth0/address",
    )
    .await;
    assert!(seen.contains("COLD-DISK-7"), "{seen}");
    assert!(seen.contains("02:5a:00:00:be:ef"), "{seen}");
    assert!(
        seen.contains(&root_slot) && seen.contains(&dev_slot),
        "placement {path} vs {seen}"
    );
    assert!(matches!(
        vm.add_device(DeviceSpec::Block {
            id: "late".into(),
            path: env.root.join("cold.img"),
            readonly: true,
            disposable: false,
        })
        .await,
        Err(HypervisorError::WrongState { .. })
    ));
    // A cold-plugged disk unplugs like a hotplugged one.
    vm.hotplug_remove_device("cold0").await.unwrap();
    vm.stop_vm(false).await.unwrap();
    assert!(
        !std::path::Path::new("/sys/class/net").join(&tap).exists(),
        "tap {tap} left"
    );
    env.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotations_apply_only_when_allowed() {
    let env = Arc::new(Env::new("embann"));
    let cfg = env.config(
        "a.toml",
        "enable_annotations = [\"default_memory\", \"path\"]\n\
         valid_hypervisor_paths = [\"/usr/bin/qemu-system-*\"]\n",
    );
    let p = "io.katacontainers.config.hypervisor.";
    let create = |id: &str, k: &str, v: &str| {
        let vm = Qemu::new(StateRoot::new(&env.root), load(&cfg));
        let opts = CreateOptions {
            annotations: [(format!("{p}{k}"), v.to_string())].into(),
            ..Default::default()
        };
        let id = id.to_string();
        async move { vm.create_vm(&id, opts).await.map(|()| vm) }
    };
    for (k, v) in [("default_vcpus", "2"), ("path", "/tmp/evil-qemu")] {
        let e = create("bad", k, v).await.expect_err("refused");
        assert!(e.to_string().contains(&format!("{p}{k}")), "{k}: {e}");
    }
    assert!(env.sandboxes().is_empty());
    let vm = Arc::new(create("a1", "default_memory", "384").await.unwrap());
    vm.start_vm(Duration::from_secs(120)).await.unwrap();
    ready(&env, "a1").await;
    assert_eq!(vm.hypervisor_config().memory_mib, 384);
    let kib: u64 = guest(&env, "a1", "grep MemTotal /proc/meminfo")
        .await
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    // The file says 256 MiB; the guest has (nearly) 384.
    assert!(kib > 300 * 1024 && kib <= 384 * 1024, "MemTotal {kib} KiB");
    vm.stop_vm(false).await.unwrap();
    env.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_channels_on_caller_fds_carry_bytes_both_ways() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let env = Arc::new(Env::new("embchan"));
    let cfg = env.config("ch.toml", "");
    let vm = Arc::new(Qemu::new(StateRoot::new(&env.root), load(&cfg)));
    vm.create_vm("ch1", CreateOptions::default()).await.unwrap();
    let channel = |name: &str, end: UnixStream| DeviceSpec::Channel {
        id: String::new(),
        name: name.into(),
        fd: Arc::new(std::os::fd::OwnedFd::from(end)),
    };
    // Two channels, so the second's fd number and fd set follow the first's.
    let (ours0, theirs0) = UnixStream::pair().unwrap();
    let (ours1, theirs1) = UnixStream::pair().unwrap();
    let info = vm.add_device(channel("extra.0", theirs0)).await.unwrap();
    assert_eq!(info.driver, "virtserialport", "{info:?}");
    vm.add_device(channel("extra.1", theirs1)).await.unwrap();
    // A bad name, a taken one and the agent's are refused by name.
    for bad in ["../x", "extra.0", "agent.channel.0", ""] {
        let (_, t) = UnixStream::pair().unwrap();
        let e = vm
            .add_device(channel(bad, t))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("channel name"), "{bad}: {e}");
    }
    vm.start_vm(Duration::from_secs(120)).await.unwrap();
    ready(&env, "ch1").await;
    let (_, t) = UnixStream::pair().unwrap();
    let e = vm.hotplug_add_device(channel("late", t)).await.unwrap_err();
    assert!(e.to_string().contains("cold-plugged"), "{e}");
    // Guest to host on extra.0.
    ours0
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // No udev in the test guest: find each port by its name in sysfs.
    let port = |name: &str| {
        format!(
            "$(for p in /sys/class/virtio-ports/*; do \
               [ \"$(cat $p/name)\" = {name} ] && echo /dev/${{p##*/}}; done)"
        )
    };
    let cmd = format!(
        "echo FROM-GUEST-$((6*7)) > {} && echo sent",
        port("extra.0")
    );
    let seen = guest(&env, "ch1", &cmd).await;
    assert!(seen.contains("sent"), "{seen}");
    let mut line = String::new();
    let mut r0 = BufReader::new(ours0.try_clone().unwrap());
    tokio::task::spawn_blocking(move || {
        r0.read_line(&mut line).unwrap();
        line
    })
    .await
    .map(|l| assert_eq!(l.trim(), "FROM-GUEST-42"))
    .unwrap();
    // Host to guest on extra.1.
    (&ours1).write_all(b"FROM-HOST-7\n").unwrap();
    let seen = guest(&env, "ch1", &format!("head -n1 {}", port("extra.1"))).await;
    assert!(seen.contains("FROM-HOST-7"), "{seen}");
    vm.stop_vm(false).await.unwrap();
    // QEMU held the only other end: it is gone with QEMU.
    ours1
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let n = std::io::Read::read_to_end(&mut &ours1, &mut rest).unwrap();
    assert_eq!(n, 0, "EOF once QEMU is gone: {rest:?}");
    env.assert_clean();
}
