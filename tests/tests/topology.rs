//! Issue 6, configs and topology: every shipped config renders through
//! `sandvm cmdline`, and the real QEMU for its arch accepts that argv
//! (started paused, no guest code runs); the microvm config boots the test
//! guest through the CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sandvm_tests::*;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

const READY: &str = "SANDVM-GUEST-READY";
/// A failure guard on QMP, not a measurement.
const QMP_TIMEOUT: Duration = Duration::from_secs(120);

/// `sandvm cmdline --config <cfg> --json`, with the kernel, initrd and
/// append dropped (the non-x86 kernels are not built here; QEMU paused runs
/// no guest code) and `-S` added.
fn paused_argv(env: &Env, cfg: &Path, id: &str) -> Vec<String> {
    let out = env.ok(&[
        "cmdline",
        "--config",
        cfg.to_str().unwrap(),
        "--id",
        id,
        "--json",
    ]);
    let argv: Vec<String> = serde_json::from_str(out.trim()).unwrap();
    let mut kept = Vec::new();
    let mut it = argv.into_iter();
    while let Some(a) = it.next() {
        if matches!(a.as_str(), "-kernel" | "-initrd" | "-append") {
            it.next();
            continue;
        }
        kept.push(a);
    }
    kept.push("-S".into());
    kept
}

/// Start argv (argv[0] is QEMU) with the QMP listener on fd 3 and the events
/// listener on fd 4, as the runtime does; check QMP answers and the VM is
/// paused with the devices we rendered; then quit and reap.
async fn accepts_paused(env: &Env, argv: &[String], id: &str) {
    let dir = env.root.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("qmp.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let events = UnixListener::bind(dir.join("events.sock")).unwrap();
    let log = std::fs::File::create(env.root.join(format!("{id}.log"))).unwrap();
    let bin = qemu(Path::new(&argv[0]).file_name().unwrap().to_str().unwrap());
    let fds: [RawFd; 2] = [listener.as_raw_fd(), events.as_raw_fd()];
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // SAFETY: fcntl and dup2 only; async-signal-safe, no allocation.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            // Out of the way first, then onto 3 and 4 (dup2 clears CLOEXEC).
            let high = [
                nix::fcntl::fcntl(fds[0], nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(64))?,
                nix::fcntl::fcntl(fds[1], nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(64))?,
            ];
            nix::unistd::dup2(high[0], 3)?;
            nix::unistd::dup2(high[1], 4)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop((listener, events));
    let opts = qmp::ClientOptions {
        handshake_timeout: QMP_TIMEOUT,
        command_timeout: Some(QMP_TIMEOUT),
        ..Default::default()
    };
    let client = tokio::select! {
        r = qmp::Client::connect_with(&sock, opts) => r.unwrap(),
        st = child.wait() => panic!(
            "{} rejected {argv:?} ({st:?}):\n{}",
            bin.display(),
            std::fs::read_to_string(env.root.join(format!("{id}.log"))).unwrap_or_default()
        ),
    };
    let st = client.query_status().await.unwrap();
    assert!(!st.running, "{argv:?}");
    // Every device we rendered with an id is there.
    let have: Vec<String> = client
        .qom_list("/machine/peripheral")
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    let ids: Vec<&str> = argv
        .windows(2)
        .filter(|w| w[0] == "-device")
        .filter_map(|a| a[1].split(',').find_map(|kv| kv.strip_prefix("id=")))
        .collect();
    // The console at least has an id: a loop over nothing would prove nothing.
    assert!(ids.contains(&"console0"), "{argv:?}");
    for id in ids {
        assert!(have.iter().any(|h| h == id), "{id} missing in {have:?}");
    }
    client.quit().await.unwrap();
    let status = tokio::time::timeout(QMP_TIMEOUT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "current_thread")]
async fn every_shipped_config_renders_and_its_qemu_accepts_it_paused() {
    let env = Env::new("cfgs");
    for (name, must_have) in [
        ("qemu-x86_64.toml", "pci-bridge"),
        ("qemu-microvm.toml", "virtio-serial-device"),
        ("qemu-aarch64.toml", "pcie-root-port"),
        ("qemu-ppc64le.toml", "cap-cfpc=broken"),
        ("qemu-s390x.toml", "devno=fe.0.0000"),
    ] {
        let cfg = repo().join("configs").join(name);
        let id = name.trim_end_matches(".toml").replace('_', "-");
        let argv = paused_argv(&env, &cfg, &id);
        assert!(
            argv.iter().any(|a| a.contains(must_have)),
            "{name}: {argv:?}"
        );
        if name.contains("s390x") {
            assert!(
                !argv.iter().any(|a| a.starts_with("virtio-rng")),
                "{argv:?}"
            );
        }
        accepts_paused(&env, &argv, &id).await;
        std::fs::remove_dir_all(env.root.join(&id)).unwrap();
    }
    env.assert_clean();
}

#[test]
fn microvm_config_boots_the_test_guest() {
    let env = Env::new("microvm");
    let guest = repo().join("build/guest");
    let _ = sandvm_tests::guest();
    let text = std::fs::read_to_string(repo().join("configs/qemu-microvm.toml"))
        .unwrap()
        .replace("../build/guest/", &format!("{}/", guest.display()))
        .replace("accelerator = \"auto\"", "accelerator = \"tcg\"");
    let cfg = env.root.join("microvm.toml");
    std::fs::write(&cfg, text).unwrap();
    env.ok(&["create", "--config", cfg.to_str().unwrap(), "--id", "m1"]);
    env.ok(&["start", "m1"]);
    let log = env.root.join("m1/console.log");
    let ready = eventually(Duration::from_secs(180), || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.contains(READY))
    });
    assert!(
        ready,
        "guest never printed {READY}; console.log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let state = std::fs::read_to_string(env.root.join("m1/state.json")).unwrap();
    assert!(state.contains("microvm,"), "{state}");
    assert_eq!(env.guest("m1", "echo $((6*7))"), "42");
    env.ok(&["stop", "m1"]);
    env.assert_clean();
}

#[test]
fn numa_nodes_are_seen_by_the_guest_with_their_memory_and_vcpus() {
    let env = Env::new("numa");
    // Two guest nodes, both bound to host node 0 (this host has one node).
    let cfg = env.config(
        "numa.toml",
        "enable_numa = true\nnuma_mapping = [\"0\", \"0\"]\n",
    );
    // Both possible vCPUs online at boot, one per node.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("default_vcpus = 1", "default_vcpus = 2")).unwrap();
    env.boot(&cfg, "n1");
    let argv = std::fs::read_to_string(env.root.join("n1/state.json")).unwrap();
    assert!(
        argv.contains("host-nodes=0") && argv.contains("policy=bind"),
        "{argv}"
    );
    let seen = env.guest(
        "n1",
        "cd /sys/devices/system/node; echo nodes=$(ls -d node* | tr '\\n' ' '); \
         for n in node0 node1; do echo $n cpus=$(cat $n/cpulist) \
         kb=$(awk '/MemTotal/ {print $4}' $n/meminfo); done",
    );
    assert!(
        seen.lines().any(|l| l.trim() == "nodes=node0 node1"),
        "{seen}"
    );
    assert!(seen.contains("node0 cpus=0 "), "{seen}");
    assert!(seen.contains("node1 cpus=1 "), "{seen}");
    // Each node holds its half of the 256 MiB: at most 128 MiB, and most of
    // it (the kernel's own reservations come out of one or the other).
    for node in ["node0", "node1"] {
        let line = seen
            .lines()
            .find(|l| l.starts_with(node) && l.contains("kb="))
            .unwrap_or_else(|| panic!("no {node} line: {seen}"));
        let kb: u64 = line.rsplit("kb=").next().unwrap().trim().parse().unwrap();
        assert!((65_536..=131_072).contains(&kb), "{line}");
    }
    env.ok(&["stop", "n1"]);
    env.assert_clean();
}
