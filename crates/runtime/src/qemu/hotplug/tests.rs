//! The QMP each hotplug renders, and the state it records.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::config::{BlockDriver, HostInfo, HypervisorConfig, VfioPort};
use crate::plan::arch;
use serde_json::json;
use std::path::Path;

fn cfg(extra: &str) -> HypervisorConfig {
    let text = format!(
        "[hypervisor.qemu]\npath = \"/usr/bin/qemu-system-x86_64\"\nkernel = \"/k\"\n\
         default_memory = 256\ndefault_maxmemory = 1024\nshared_fs = \"none\"\n{extra}\n"
    );
    let host = HostInfo {
        numa_nodes: 1,
        cpus: 4,
        mem_mib: 8192,
        arch: crate::config::GuestArch::X86_64,
    };
    crate::config::parse_str(Path::new("/etc/t.toml"), &text, &host)
        .unwrap()
        .config
}

fn calls(p: &Plan) -> Vec<(String, Value)> {
    p.steps
        .iter()
        .map(|s| (s.call.execute.clone(), s.call.arguments.clone()))
        .collect()
}

#[test]
fn a_disposable_disk_is_refused_by_name_on_hotplug() {
    assert!(block::refuse_disposable(Path::new("/img/d.raw"), false).is_ok());
    let e = block::refuse_disposable(Path::new("/img/d.raw"), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("/img/d.raw as a disposable disk"), "{e}");
    assert!(e.contains("snapshot=on"), "{e}");
}

#[test]
fn virtio_blk_on_a_bridge_slot_with_aio_and_cache() {
    let c = cfg(
        "block_device_driver = \"virtio-blk\"\nblock_device_aio = \"threads\"\n\
         block_device_cache_set = true\nblock_device_cache_direct = true",
    );
    assert_eq!(c.block.driver, BlockDriver::VirtioBlk);
    let p = arch::layout(&c);
    let hp = HotplugState::default();
    let mut plan = block::plan(&c, &p, &hp, String::new(), Path::new("/img/d.raw"), true).unwrap();
    assert!(plan.needs_slot);
    assert_eq!(plan.record.id, "blk0");
    plan.place(&SlotAddr {
        bridge: "pci-bridge-0".into(),
        slot: 10,
    });
    let cache = json!({"direct": true, "no-flush": false});
    assert_eq!(
        calls(&plan),
        vec![
            (
                "blockdev-add".into(),
                json!({"driver": "raw", "node-name": "drive-blk0", "read-only": true, "cache": cache,
                       "file": {"driver": "file", "filename": "/img/d.raw", "aio": "threads", "cache": cache}})
            ),
            (
                "device_add".into(),
                json!({"driver": "virtio-blk-pci", "id": "blk0", "drive": "drive-blk0",
                       "bus": "pci-bridge-0", "addr": "a"})
            ),
        ]
    );
    assert_eq!(
        plan.steps[1].undo,
        Some(QmpCall::new("device_del", json!({"id": "blk0"})))
    );
}

#[test]
fn sector_sizes_go_on_hotplugged_disks() {
    for driver in ["virtio-blk", "virtio-scsi"] {
        let c = cfg(&format!(
            "block_device_driver = \"{driver}\"\nblock_device_logical_sector_size = 4096\n\
             block_device_physical_sector_size = 4096"
        ));
        let p = arch::layout(&c);
        let plan = block::plan(
            &c,
            &p,
            &HotplugState::default(),
            "d".into(),
            Path::new("/x"),
            false,
        )
        .unwrap();
        let dev = &plan.steps[1].call.arguments;
        assert_eq!(dev["logical_block_size"], 4096, "{driver}: {dev}");
        assert_eq!(dev["physical_block_size"], 4096, "{driver}: {dev}");
    }
    let plain = cfg("block_device_driver = \"virtio-blk\"");
    let plan = block::plan(
        &plain,
        &arch::layout(&plain),
        &HotplugState::default(),
        "d".into(),
        Path::new("/x"),
        false,
    )
    .unwrap();
    assert!(
        plan.steps[1]
            .call
            .arguments
            .get("logical_block_size")
            .is_none()
    );
}

#[test]
fn hotplugged_virtio_blk_runs_on_the_first_independent_iothread() {
    let c =
        cfg("block_device_driver = \"virtio-blk\"\nenable_iothreads = true\nindep_iothreads = 2");
    let p = arch::layout(&c);
    let plan = block::plan(
        &c,
        &p,
        &HotplugState::default(),
        "d".into(),
        Path::new("/x"),
        false,
    )
    .unwrap();
    assert_eq!(plan.steps[1].call.arguments["iothread"], "indep_iothread_0");
    let scsi = cfg("enable_iothreads = true\nindep_iothreads = 2");
    let plan = block::plan(
        &scsi,
        &arch::layout(&scsi),
        &HotplugState::default(),
        "d".into(),
        Path::new("/x"),
        false,
    )
    .unwrap();
    assert!(plan.steps[1].call.arguments.get("iothread").is_none());
}

#[test]
fn scsi_hd_takes_the_first_free_lun_and_no_slot() {
    let c = cfg("block_device_driver = \"virtio-scsi\"");
    assert_eq!(c.block.driver, BlockDriver::VirtioScsi);
    let p = arch::layout(&c);
    let mut hp = HotplugState::default();
    let mut info = Map::new();
    info.insert("scsi_index".into(), 0.into());
    hp.devices.push(PluggedDevice {
        placement: None,
        id: "blk0".into(),
        kind: DeviceKind::Block,
        driver: "scsi-hd".into(),
        slot: None,
        info,
        remove: Vec::new(),
        add: Vec::new(),
    });
    let plan = block::plan(&c, &p, &hp, "d9".into(), Path::new("/x"), false).unwrap();
    assert!(!plan.needs_slot);
    let dev = &plan.steps[1].call.arguments;
    assert_eq!(dev["driver"], "scsi-hd");
    assert_eq!(dev["bus"], "scsi0.0");
    assert_eq!(
        (dev["scsi-id"].clone(), dev["lun"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(block::scsi_id_lun(257), (1, 1));
    // No cache keys without block_device_cache_set.
    assert!(plan.steps[0].call.arguments.get("cache").is_none());
}

#[test]
fn ccw_and_mmio() {
    let c = cfg("guest_arch = \"s390x\"\nblock_device_driver = \"virtio-blk-ccw\"");
    let p = arch::layout(&c);
    let plan = block::plan(
        &c,
        &p,
        &HotplugState::default(),
        "d".into(),
        Path::new("/x"),
        false,
    )
    .unwrap();
    assert!(!plan.needs_slot);
    assert_eq!(plan.steps[1].call.arguments["driver"], "virtio-blk-ccw");
    let m = cfg("machine_type = \"microvm\"\nblock_device_driver = \"virtio-blk\"");
    let p = arch::layout(&m);
    let e = block::plan(
        &m,
        &p,
        &HotplugState::default(),
        "d".into(),
        Path::new("/x"),
        false,
    )
    .unwrap_err();
    assert!(e.to_string().contains("microvm"), "{e}");
}

#[test]
fn nvdimm_image() {
    let c = cfg("block_device_driver = \"nvdimm\"");
    let p = arch::layout(&c);
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("i.img");
    std::fs::write(&img, vec![0u8; 5 << 20]).unwrap();
    let plan = block::plan(&c, &p, &HotplugState::default(), "nv1".into(), &img, true).unwrap();
    assert_eq!(plan.record.kind, DeviceKind::Nvdimm);
    let (o, d) = (&plan.steps[0].call.arguments, &plan.steps[1].call.arguments);
    assert_eq!(o["qom-type"], "memory-backend-file");
    assert_eq!(o["size"], json!(4u64 << 20));
    assert_eq!(o["readonly"], true);
    assert_eq!(d["driver"], "nvdimm");
    assert_eq!(d["memdev"], "mem-nv1");
    assert_eq!(d["unarmed"], true);
}

#[test]
fn net_sequence_passes_the_fd_and_removal_mirrors_it() {
    let steps = net::steps(
        "net0",
        "02:00:00:00:00:01",
        net::NetBackend::Tap { vhost: false },
        false,
    );
    let names: Vec<&str> = steps.iter().map(|s| s.call.execute.as_str()).collect();
    assert_eq!(names, ["getfd", "netdev_add", "device_add"]);
    assert!(steps[0].pass_fd && !steps[0].undo_on_remove);
    assert_eq!(steps[0].call.arguments, json!({"fdname": "fd-net0"}));
    assert_eq!(
        steps[1].call.arguments,
        json!({"type": "tap", "id": "netdev-net0", "fd": "fd-net0", "vhost": false})
    );
    assert_eq!(
        steps[2].call.arguments,
        json!({"driver": "virtio-net-pci", "id": "net0", "netdev": "netdev-net0", "mac": "02:00:00:00:00:01"})
    );
    // The removal list (what run_steps returns): device_del then netdev_del, no closefd.
    let removal: Vec<QmpCall> = steps
        .iter()
        .rev()
        .filter(|s| s.undo_on_remove)
        .filter_map(|s| s.undo.clone())
        .collect();
    assert_eq!(
        removal,
        vec![
            QmpCall::new("device_del", json!({"id": "net0"})),
            QmpCall::new("netdev_del", json!({"id": "netdev-net0"})),
        ]
    );
}

#[test]
fn macs() {
    for _ in 0..50 {
        let m = net::random_mac();
        let b0 = u8::from_str_radix(&m[..2], 16).unwrap();
        assert_eq!(b0 & 1, 0, "unicast: {m}");
        assert_eq!(b0 & 2, 2, "locally administered: {m}");
        assert_eq!(net::parse_mac(&m).unwrap(), m);
    }
    assert_eq!(
        net::parse_mac("02:AA:bb:00:00:01").unwrap(),
        "02:aa:bb:00:00:01"
    );
    for bad in [
        "01:00:00:00:00:00",
        "02:00:00:00:00",
        "zz:00:00:00:00:00",
        "",
    ] {
        assert!(net::parse_mac(bad).is_err(), "{bad}");
    }
    assert!(net::validate_ifname("tap0").is_ok());
    for bad in ["", "a/b", "sixteen-chars-xx", "a b"] {
        assert!(net::validate_ifname(bad).is_err(), "{bad}");
    }
}

#[test]
fn vsock_is_refused_before_anything_without_the_host_device() {
    let c = cfg("");
    let p = arch::layout(&c);
    let e = vsock::check_host(Path::new("/nonexistent/vhost-vsock")).unwrap_err();
    assert!(e.to_string().contains("vhost-vsock is missing"), "{e}");
    let plan = vsock::plan_unchecked(&p, &HotplugState::default(), String::new(), 7).unwrap();
    assert!(plan.needs_slot);
    assert_eq!(
        calls(&plan),
        vec![(
            "device_add".into(),
            json!({"driver": "vhost-vsock-pci", "id": "vsock0", "guest-cid": 7})
        )]
    );
    assert!(vsock::plan_unchecked(&p, &HotplugState::default(), String::new(), 2).is_err());
}

#[test]
fn vfio_per_hot_plug_vfio() {
    let hp = HotplugState::default();
    // Bridge port: a slot.
    let mut c = cfg("");
    c.hot_plug_vfio = VfioPort::BridgePort;
    let p = arch::layout(&c);
    let mut plan = vfio::plan(&c, &p, &hp, "gpu".into(), "0000:01:00.0").unwrap();
    assert!(plan.needs_slot);
    plan.place(&SlotAddr {
        bridge: "pci-bridge-0".into(),
        slot: 1,
    });
    assert_eq!(
        calls(&plan),
        vec![(
            "device_add".into(),
            json!({"driver": "vfio-pci", "id": "gpu", "host": "0000:01:00.0", "bus": "pci-bridge-0", "addr": "1"})
        )]
    );
    // Root port: the first free one, then an error naming the key.
    c.hot_plug_vfio = VfioPort::RootPort;
    c.pcie_root_ports = 1;
    let plan = vfio::plan(&c, &p, &hp, "v0".into(), "01:00.1").unwrap();
    assert!(!plan.needs_slot);
    assert_eq!(plan.steps[0].call.arguments["bus"], "rp0");
    let mut used = hp.clone();
    let mut rec = plan.record.clone();
    rec.remove = vec![QmpCall::new("device_del", json!({"id": "v0"}))];
    used.devices.push(rec);
    let e = vfio::plan(&c, &p, &used, "v1".into(), "01:00.2").unwrap_err();
    assert!(e.to_string().contains("pcie_root_port"), "{e}");
    // No port: the root bus; a sysfs path works too; junk is refused.
    c.hot_plug_vfio = VfioPort::NoPort;
    let plan = vfio::plan(
        &c,
        &p,
        &hp,
        "v2".into(),
        "/sys/bus/pci/devices/0000:02:00.0",
    )
    .unwrap();
    assert_eq!(
        plan.steps[0].call.arguments,
        json!({"driver": "vfio-pci", "id": "v2", "sysfsdev": "/sys/bus/pci/devices/0000:02:00.0", "bus": "pcie.0"})
    );
    assert!(vfio::plan(&c, &p, &hp, "v3".into(), "nonsense").is_err());
}

#[test]
fn virtio_mem_region_and_backend_policy() {
    let mut c = cfg("enable_virtio_mem = true");
    c.max_memory_mib = 1538;
    let p = arch::layout(&c);
    // (1538 - 256) rounded down to 4 MiB.
    assert_eq!(
        memory::virtio_mem_region_mib(&c, &crate::plan::Layout::new(&c, None)),
        1280
    );
    let steps = memory::virtio_mem_steps(&c, None, &p, 1280);
    assert_eq!(
        steps[0].call.arguments,
        json!({"qom-type": "memory-backend-ram", "id": "vmem0-mem", "size": 1280u64 << 20})
    );
    assert_eq!(
        steps[1].call.arguments,
        json!({"driver": "virtio-mem-pci", "id": "vmem0", "memdev": "vmem0-mem", "requested-size": 0})
    );
    let s = cfg("enable_virtio_mem = true\nguest_arch = \"s390x\"");
    let ps = arch::layout(&s);
    assert_eq!(
        memory::virtio_mem_steps(&s, None, &ps, 8)[1].call.arguments["driver"],
        "virtio-mem-ccw"
    );
    // Hugepages: a file backend on /dev/hugepages, preallocated when asked.
    let h = cfg("enable_hugepages = true");
    let (t, props) = memory::backend(&h, None, 128, true);
    assert_eq!(t, "memory-backend-file");
    assert_eq!(props["mem-path"], "/dev/hugepages");
    assert_eq!(props["prealloc"], true);
    assert!(props.get("share").is_none());
    assert_eq!(
        memory::memory_block_mib(crate::config::GuestArch::X86_64),
        128
    );
}

#[test]
fn overcommit_advice_only_for_enomem() {
    let e = qmp::Error::Qmp {
        class: "GenericError".into(),
        desc: "cannot set up guest memory 'vmem0-mem': Cannot allocate memory".into(),
    };
    assert!(overcommit_help(&e).unwrap().contains("overcommit_memory"));
    let other = qmp::Error::Qmp {
        class: "GenericError".into(),
        desc: "Duplicate ID".into(),
    };
    assert!(overcommit_help(&other).is_none());
}

#[test]
fn ids_state_and_json_defaults() {
    assert!(validate_device_id("blk-1.a_b").is_ok());
    for bad in ["", "1abc", "a b", "a/b", &"x".repeat(25)] {
        assert!(validate_device_id(bad).is_err(), "{bad}");
    }
    let mut hp = HotplugState::default();
    hp.vcpus.push(PluggedCpu {
        id: "blk0".into(),
        props: Map::new(),
    });
    assert_eq!(hp.next_id("blk"), "blk1");
    // Older state files have no hotplug record.
    let empty: HotplugState = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, HotplugState::default());
}

#[test]
fn cpu_slots_lowest_first_with_topology_ids() {
    use qmp::commands::{CpuInstanceProperties, HotpluggableCpu};
    let slot = |s: i64, plugged: bool| HotpluggableCpu {
        cpu_type: "max-x86_64-cpu".into(),
        vcpus_count: 1,
        props: CpuInstanceProperties {
            node_id: Some(0),
            socket_id: Some(s),
            core_id: Some(0),
            thread_id: Some(0),
            ..Default::default()
        },
        qom_path: plugged.then(|| "/machine/unattached/device[0]".to_string()),
    };
    let all = vec![slot(2, false), slot(1, false), slot(0, true)];
    let picked = cpu::pick_free(&all, 2);
    assert_eq!(picked.len(), 2);
    assert_eq!(picked[0].props.socket_id, Some(1));
    assert_eq!(cpu::cpu_id(&picked[0].props), "cpu-1-0-0");
    assert_eq!(
        Value::Object(cpu::cpu_props(&picked[1].props)),
        json!({"socket-id": 2, "core-id": 0, "thread-id": 0})
    );
}
