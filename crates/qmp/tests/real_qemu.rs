//! Typed helpers exercised against a real QEMU 10.
#![allow(missing_docs)]

mod common;

use std::io::Read;
use std::time::Duration;

use common::{NONE, Q35, connect_retry, start, start_prebound, start_server};
use qmp::commands::RunState;
use qmp::{Error, PowerdownWait};
use serde_json::{Map, Value, json};

const BOUND: Duration = Duration::from_secs(60);

fn props(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

async fn wait_event(
    rx: &mut tokio::sync::broadcast::Receiver<qmp::Event>,
    f: impl Fn(&qmp::Event) -> bool,
) -> qmp::Event {
    tokio::time::timeout(BOUND, async {
        loop {
            let ev = rx.recv().await.expect("event stream");
            if f(&ev) {
                return ev;
            }
        }
    })
    .await
    .expect("event within bound")
}

#[tokio::test]
async fn connect_by_path_greeting_and_version() {
    let (_qemu, sock) = start_server(NONE).await;
    let client = connect_retry(&sock).await;
    let g = client.greeting().clone();
    assert!(g.version.major >= 10, "{g:?}");
    assert!(g.capabilities.iter().any(|c| c == "oob"));
    assert!(client.oob_enabled());
    let v = client.query_version().await.unwrap();
    assert_eq!(v.qemu, g.version);
    assert_eq!(v.package, g.package);
    // A second qmp_capabilities is refused by QEMU with CommandNotFound.
    let err = client.qmp_capabilities(&[]).await.unwrap_err();
    assert!(
        matches!(err, Error::Qmp { ref class, .. } if class == "CommandNotFound"),
        "{err:?}"
    );
}

#[tokio::test]
async fn prebound_listener_fd_passed_to_qemu() {
    let (_qemu, client) = start_prebound(NONE).await;
    assert!(client.oob_enabled());
    assert!(client.query_status().await.unwrap().running);
}

#[tokio::test]
async fn status_stop_cont_and_errors() {
    let (_qemu, client) = start(NONE).await;
    let mut events = client.events();
    assert!(client.query_status().await.unwrap().running);
    client.stop().await.unwrap();
    wait_event(&mut events, |e| e.name == "STOP").await;
    let s = client.query_status().await.unwrap();
    assert_eq!(s.status, RunState::Paused);
    assert!(!s.running);
    client.cont().await.unwrap();
    let ev = wait_event(&mut events, |e| e.name == "RESUME").await;
    assert!(ev.timestamp.0 > 0);
    assert!(client.query_status().await.unwrap().running);

    let kvm = client.query_kvm().await.unwrap();
    assert!(!kvm.enabled);

    let err = client.execute("no-such-command", None).await.unwrap_err();
    assert_eq!(
        err,
        Error::Qmp {
            class: "CommandNotFound".into(),
            desc: "The command no-such-command has not been found".into()
        }
    );
    // The connection is still fine after an error reply.
    let raw = client.execute("query-status", None).await.unwrap();
    assert_eq!(raw["status"], "running");

    // Generic execute_until: stop completes on STOP.
    let (reply, ev) = client
        .execute_until("stop", None, |e| e.name == "STOP", BOUND)
        .await
        .unwrap();
    assert_eq!(reply, json!({}));
    assert_eq!(ev.name, "STOP");
}

#[tokio::test]
async fn objects_qom_chardev_netdev_blockdev() {
    let (_qemu, client) = start(NONE).await;
    client
        .object_add("iothread", "io0", props(json!({"poll-max-ns": 0})))
        .await
        .unwrap();
    assert_eq!(
        client.qom_get("/objects/io0", "poll-max-ns").await.unwrap(),
        json!(0)
    );
    client
        .qom_set("/objects/io0", "poll-max-ns", json!(1000))
        .await
        .unwrap();
    assert_eq!(
        client.qom_get("/objects/io0", "poll-max-ns").await.unwrap(),
        json!(1000)
    );
    let list = client.qom_list("/objects").await.unwrap();
    let io0 = list.iter().find(|p| p.name == "io0").expect("io0 listed");
    assert_eq!(io0.prop_type, "child<iothread>");
    client.object_del("io0").await.unwrap();
    assert!(matches!(
        client.qom_get("/objects/io0", "poll-max-ns").await,
        Err(Error::Qmp { .. })
    ));

    let r = client
        .chardev_add("c0", json!({"type": "null", "data": {}}))
        .await
        .unwrap();
    assert_eq!(r, json!({}));
    client.chardev_remove("c0").await.unwrap();
    assert!(matches!(
        client.chardev_remove("c0").await,
        Err(Error::Qmp { .. })
    ));

    client
        .netdev_add(json!({"type": "user", "id": "n0"}))
        .await
        .unwrap();
    client.netdev_del("n0").await.unwrap();

    client
        .blockdev_add(json!({"driver": "null-co", "node-name": "nb0", "size": 1048576}))
        .await
        .unwrap();
    let nodes = client
        .execute("query-named-block-nodes", None)
        .await
        .unwrap();
    assert!(
        nodes
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["node-name"] == "nb0")
    );
    client.blockdev_del("nb0").await.unwrap();
}

#[tokio::test]
async fn fd_passing_getfd_add_fd_and_migrate() {
    let (qemu, client) = start(NONE).await;
    client
        .migrate_set_capabilities(&[("events", true)])
        .await
        .unwrap();
    let caps = client
        .execute("query-migrate-capabilities", None)
        .await
        .unwrap();
    assert!(
        caps.as_array()
            .unwrap()
            .iter()
            .any(|c| c["capability"] == "events" && c["state"] == true)
    );

    // add-fd / query-fdsets / remove-fd
    let f = std::fs::File::create(qemu.path("fdset-file")).unwrap();
    let info = client.add_fd(&f, None, Some("my-opaque")).await.unwrap();
    let sets = client.query_fdsets().await.unwrap();
    let set = sets
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["fdset-id"] == info.fdset_id)
        .expect("fdset listed");
    assert_eq!(set["fds"][0]["opaque"], "my-opaque");
    assert_eq!(set["fds"][0]["fd"], info.fd);
    let info2 = client.add_fd(&f, Some(info.fdset_id), None).await.unwrap();
    assert_eq!(info2.fdset_id, info.fdset_id);
    client
        .remove_fd(info.fdset_id, Some(info.fd))
        .await
        .unwrap();
    client.remove_fd(info.fdset_id, None).await.unwrap();

    // getfd then migrate to that fd: proves QEMU got a working descriptor.
    let mig = qemu.path("mig.bin");
    let out = std::fs::File::create(&mig).unwrap();
    client.getfd("migfd", &out).await.unwrap();
    drop(out);
    let mut events = client.events();
    assert_eq!(client.query_migrate().await.unwrap().status, None);
    client.migrate("fd:migfd").await.unwrap();
    wait_event(&mut events, |e| {
        e.name == "MIGRATION" && e.data["status"] == "completed"
    })
    .await;
    let m = client.query_migrate().await.unwrap();
    assert_eq!(m.status.as_deref(), Some("completed"), "{:?}", m.raw);
    let mut head = [0u8; 4];
    std::fs::File::open(&mig)
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    assert_eq!(&head, b"QEVM");

    // getfd + closefd
    let f2 = std::fs::File::open(&mig).unwrap();
    client.getfd("other", &f2).await.unwrap();
    client.closefd("other").await.unwrap();
    assert!(matches!(
        client.closefd("other").await,
        Err(Error::Qmp { .. })
    ));
}

#[tokio::test]
async fn migrate_to_file_and_incoming() {
    let (src, client) = start(NONE).await;
    let file = src.path("state.mig");
    let uri = format!("file:{}", file.display());
    client
        .migrate_set_capabilities(&[("events", true)])
        .await
        .unwrap();
    let mut events = client.events();
    client.migrate(&uri).await.unwrap();
    wait_event(&mut events, |e| {
        e.name == "MIGRATION" && e.data["status"] == "completed"
    })
    .await;

    let (_dst, dst_client) = start(&["-M", "none", "-incoming", "defer"]).await;
    assert_eq!(
        dst_client.query_status().await.unwrap().status,
        RunState::Inmigrate
    );
    dst_client
        .migrate_set_capabilities(&[("events", true)])
        .await
        .unwrap();
    let mut dst_events = dst_client.events();
    dst_client.migrate_incoming(&uri).await.unwrap();
    wait_event(&mut dst_events, |e| {
        e.name == "MIGRATION" && e.data["status"] == "completed"
    })
    .await;
    let m = dst_client.query_migrate().await.unwrap();
    assert_eq!(m.status.as_deref(), Some("completed"));
}

#[tokio::test]
async fn powerdown_and_quit() {
    let (mut qemu, client) = start(NONE).await;
    let ev = client
        .system_powerdown(PowerdownWait::Powerdown)
        .await
        .unwrap();
    assert_eq!(ev.name, "POWERDOWN");
    let closed = client.closed();
    let mut events = client.events();
    client.quit().await.unwrap();
    let shutdown = wait_event(&mut events, |e| e.name == "SHUTDOWN").await;
    assert_eq!(shutdown.data["reason"], "host-qmp-quit");
    let reason = tokio::time::timeout(BOUND, closed)
        .await
        .expect("closed resolves");
    assert_eq!(reason, Error::Disconnected);
    assert!(client.is_closed());
    assert_eq!(client.query_status().await, Err(Error::Disconnected));
    // The event stream ends too.
    assert!(matches!(
        tokio::time::timeout(BOUND, events.recv())
            .await
            .expect("bounded"),
        Err(tokio::sync::broadcast::error::RecvError::Closed)
    ));
    assert!(qemu.wait_exit(BOUND).await, "QEMU exits after quit");
}

#[tokio::test]
async fn q35_cpus_memory_balloon_dump_pci() {
    let (qemu, client) = start(Q35).await;
    assert_eq!(
        client.query_status().await.unwrap().status,
        RunState::Prelaunch
    );

    let hp = client.query_hotpluggable_cpus().await.unwrap();
    assert_eq!(hp.len(), 2);
    assert_eq!(hp.iter().filter(|c| c.qom_path.is_some()).count(), 1);
    assert!(
        hp.iter()
            .all(|c| c.vcpus_count == 1 && c.props.core_id.is_some())
    );
    assert!(hp[0].cpu_type.ends_with("-x86_64-cpu"));

    let cpus = client.query_cpus_fast().await.unwrap();
    assert_eq!(cpus.len(), 1);
    assert_eq!(cpus[0].cpu_index, 0);
    assert_eq!(cpus[0].target, "x86_64");
    assert!(cpus[0].thread_id > 0);
    assert_eq!(cpus[0].props.as_ref().and_then(|p| p.socket_id), Some(0));

    let summary = client.query_memory_size_summary().await.unwrap();
    assert_eq!(summary.base_memory, 64 << 20);
    assert_eq!(summary.plugged_memory, Some(0));

    assert!(client.query_memory_devices().await.unwrap().is_empty());
    client
        .object_add(
            "memory-backend-ram",
            "mem1",
            props(json!({"size": 128u64 << 20})),
        )
        .await
        .unwrap();
    client
        .device_add("pc-dimm", "dimm1", props(json!({"memdev": "mem1"})))
        .await
        .unwrap();
    let devs = client.query_memory_devices().await.unwrap();
    assert_eq!(devs.len(), 1);
    assert_eq!(devs[0].kind, "dimm");
    assert_eq!(devs[0].data["id"], "dimm1");
    assert_eq!(
        client
            .query_memory_size_summary()
            .await
            .unwrap()
            .plugged_memory,
        Some(128 << 20)
    );

    client.balloon(32 << 20).await.unwrap();
    // Paused guest: nothing inflated yet; actual is boot plus plugged memory.
    assert_eq!(
        client.query_balloon().await.unwrap().actual,
        (64 + 128) << 20
    );

    let pci = client.query_pci().await.unwrap();
    let devices = pci[0]["devices"].as_array().unwrap();
    assert!(devices.iter().any(|d| d["qdev_id"] == "balloon0"));

    let dump = qemu.path("dump.elf");
    client
        .dump_guest_memory(false, &format!("file:{}", dump.display()), Some("elf"))
        .await
        .unwrap();
    let mut head = [0u8; 4];
    std::fs::File::open(&dump)
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    assert_eq!(&head, b"\x7fELF");
}

#[tokio::test]
async fn q35_device_add_del_waits_for_device_deleted() {
    let (_qemu, client) = start(Q35).await;
    // USB unplug completes in QEMU without guest cooperation, so a paused
    // guest still yields DEVICE_DELETED (PCIe unplug would need the guest).
    client
        .device_add("usb-kbd", "kbd0", props(json!({"bus": "xhci.0"})))
        .await
        .unwrap();
    let path = client
        .qom_get("/machine/peripheral/kbd0", "type")
        .await
        .unwrap();
    assert_eq!(path, "usb-kbd");
    let ev = client.device_del("kbd0").await.unwrap();
    assert_eq!(ev.name, "DEVICE_DELETED");
    assert_eq!(ev.data["device"], "kbd0");
    assert!(matches!(
        client.device_del("kbd0").await,
        Err(Error::Qmp { ref class, .. }) if class == "DeviceNotFound"
    ));

    // The same by QOM path.
    client
        .device_add("usb-tablet", "tab0", Map::new())
        .await
        .unwrap();
    let ev = client.device_del("/machine/peripheral/tab0").await.unwrap();
    assert_eq!(ev.data["path"], "/machine/peripheral/tab0");

    let ev = client
        .system_powerdown(PowerdownWait::Powerdown)
        .await
        .unwrap();
    assert_eq!(ev.name, "POWERDOWN");
}
