//! Memory backends and PCI topology as built from a config.

use super::bridges::*;
use super::memory::{HUGEPAGES_DIR, MEM_BACKEND_ID, SHM_DIR};
use super::*;
use crate::config::{GuestArch, HostInfo, SharedFs, parse_str};

const HOST: HostInfo = HostInfo {
    numa_nodes: 1,
    cpus: 8,
    mem_mib: 16384,
    arch: GuestArch::X86_64,
};

fn cfg(extra: &str) -> HypervisorConfig {
    cfg_fs("none", extra)
}

/// A config with `shared_fs = "<fs>"`.
fn cfg_fs(fs: &str, extra: &str) -> HypervisorConfig {
    let body = format!(
        "[hypervisor.qemu]\nkernel = \"/k\"\nshared_fs = \"{fs}\"\ndefault_memory = 512\n{extra}\n"
    );
    parse_str(Path::new("/etc/sandvm/t.toml"), &body, &HOST)
        .unwrap_or_else(|e| panic!("{e}\n{body}"))
        .config
}

fn built(c: &HypervisorConfig) -> Config {
    planned_for_test(c, Accel::Tcg, None)
}

fn mem(c: &HypervisorConfig) -> (Option<Object>, Option<String>) {
    let q = built(c);
    (
        q.objects.iter().find(|o| o.id() == MEM_BACKEND_ID).cloned(),
        q.machine.get("memory-backend").map(String::from),
    )
}

#[test]
fn file_mem_backend_is_a_shared_file_in_that_folder() {
    let (o, mb) = mem(&cfg("file_mem_backend = \"/var/lib/sandvm-mem\""));
    assert_eq!(mb.as_deref(), Some(MEM_BACKEND_ID));
    match o {
        Some(Object::MemoryBackendFile {
            mem_path,
            share,
            prealloc,
            size_mib,
            ..
        }) => {
            assert_eq!(mem_path, "/var/lib/sandvm-mem");
            assert_eq!(share, Some(true));
            assert!(!prealloc);
            assert_eq!(size_mib, 512);
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn hugepages_are_preallocated_and_win_over_a_file_backend() {
    let (o, _) = mem(&cfg("enable_hugepages = true"));
    match o {
        Some(Object::MemoryBackendFile {
            mem_path,
            share,
            prealloc,
            ..
        }) => {
            assert_eq!(mem_path, HUGEPAGES_DIR);
            assert!(prealloc);
            assert_eq!(
                share, None,
                "private unless another process maps guest memory"
            );
        }
        o => panic!("{o:?}"),
    }
    let (o, _) = mem(&cfg("enable_hugepages = true\nfile_mem_backend = \"/m\""));
    match o {
        Some(Object::MemoryBackendFile {
            mem_path, share, ..
        }) => {
            assert_eq!((mem_path.as_str(), share), (HUGEPAGES_DIR, Some(true)));
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn prealloc_alone_is_preallocated_ram_and_nothing_is_the_default() {
    let (o, mb) = mem(&cfg("enable_mem_prealloc = true"));
    assert!(
        matches!(
            o,
            Some(Object::MemoryBackendRam {
                prealloc: true,
                size_mib: 512,
                ..
            })
        ),
        "{o:?}"
    );
    assert_eq!(mb.as_deref(), Some(MEM_BACKEND_ID));
    assert_eq!(mem(&cfg("")), (None, None));
}

#[test]
fn virtio_fs_puts_shared_memory_on_dev_shm() {
    let mut c = cfg("");
    c.shared_fs.kind = SharedFs::VirtioFs;
    match memory::backend(&c, None) {
        Some(Object::MemoryBackendFile {
            mem_path, share, ..
        }) => {
            assert_eq!((mem_path.as_str(), share), (SHM_DIR, Some(true)));
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn bridges_sit_on_the_root_bus_with_chassis_shpc_and_addr() {
    let c = cfg("default_bridges = 3\npcie_root_port = 2");
    let q = built(&c);
    let bridges: Vec<&PciBridge> = q
        .devices
        .iter()
        .filter_map(|d| match d {
            Device::PciBridge(b) => Some(b),
            _ => None,
        })
        .collect();
    assert_eq!(bridges.len(), 3);
    for (i, b) in bridges.iter().enumerate() {
        assert_eq!(b.id, format!("pci-bridge-{i}"));
        assert_eq!(b.bus.as_deref(), Some("pcie.0"));
        assert_eq!(b.chassis_nr, i as u32 + 1);
        assert!(b.shpc);
        assert_eq!(b.addr, Some(format!("{:x}", 2 + i)));
    }
    let rps: Vec<&PcieRootPort> = q
        .devices
        .iter()
        .filter_map(|d| match d {
            Device::PcieRootPort(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(rps.len(), 2);
    assert_eq!(rps[1].chassis, ROOT_PORT_CHASSIS + 1);
    assert_eq!(rps[1].mem_reserve.as_deref(), Some(ROOT_PORT_MEM_RESERVE));
    assert_eq!(
        rps[1].pref64_reserve.as_deref(),
        Some(ROOT_PORT_PREF64_RESERVE)
    );
    assert_eq!(
        bridge_ids(&c, &arch::layout(&c)),
        ["pci-bridge-0", "pci-bridge-1", "pci-bridge-2"]
    );
    q.validate().unwrap();
}

#[test]
fn with_firmware_on_x86_bridges_nest_behind_root_ports() {
    let c = cfg("firmware = \"/usr/share/ovmf/OVMF.fd\"\ndefault_bridges = 2");
    let q = built(&c);
    let topo: Vec<(String, String, Option<String>)> = q
        .devices
        .iter()
        .filter_map(|d| match d {
            Device::PcieRootPort(r) => Some(("pcie-root-port".into(), r.id.clone(), r.bus.clone())),
            Device::PciePciBridge(b) => {
                Some(("pcie-pci-bridge".into(), b.id.clone(), b.bus.clone()))
            }
            Device::PciBridge(b) => Some(("pci-bridge".into(), b.id.clone(), b.bus.clone())),
            _ => None,
        })
        .collect();
    let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), Some(c.to_string()));
    assert_eq!(
        topo,
        [
            s("pcie-root-port", "pci-bridge-0-rp", "pcie.0"),
            s("pcie-pci-bridge", "pci-bridge-0", "pci-bridge-0-rp"),
            s("pcie-root-port", "pci-bridge-1-rp", "pcie.0"),
            s("pcie-pci-bridge", "pci-bridge-1", "pci-bridge-1-rp"),
        ]
    );
    q.validate().unwrap();
    // The hotplug buses are the pcie-pci-bridges, under the same ids.
    assert_eq!(
        bridge_ids(&c, &arch::layout(&c)),
        ["pci-bridge-0", "pci-bridge-1"]
    );
    // Not on other arches: aarch64 with firmware keeps plain bridges.
    let mut a = c.clone();
    a.guest_arch = GuestArch::Aarch64;
    a.machine_type = "virt".into();
    assert!(!nested(&a, &arch::layout(&a)));
}

#[test]
fn pvpanic_is_rendered_with_a_dump_path_on_x86() {
    let q = built(&cfg("guest_memory_dump_path = \"/var/crash\""));
    assert!(q.devices.iter().any(|d| d.driver() == "pvpanic"));
    assert!(
        !built(&cfg(""))
            .devices
            .iter()
            .any(|d| d.driver() == "pvpanic")
    );
}

/// Found by the `config_load` fuzzer's render check: `default_maxmemory` equal
/// to `default_memory` loaded, then rendered `slots=10` with `maxmem` equal to
/// the size, which qemu-config (and QEMU) refuse.
#[test]
fn no_hotplug_range_means_no_slots_and_no_maxmem() {
    let c = cfg("default_maxmemory = 512");
    let q = built(&c);
    assert_eq!(q.memory, Memory::new(512));
    q.validate().unwrap();
    // ppc64le rounds maxmem down to 256 MiB: 600 becomes 512, the boot size.
    let c = cfg("guest_arch = \"ppc64le\"\ndefault_maxmemory = 600");
    let q = built(&c);
    assert_eq!(q.memory, Memory::new(512));
    q.validate().unwrap();
    // With room, slots and maxmem as before.
    let q = built(&cfg("default_maxmemory = 1024"));
    assert_eq!(
        (q.memory.slots, q.memory.maxmem_mib),
        (Some(10), Some(1024))
    );
}

fn args_of(c: &HypervisorConfig) -> String {
    built(c).to_args().join(" ")
}

#[test]
fn a_guest_reboot_ends_the_vm_unless_allow_reboot() {
    let reboots = |extra: &str| {
        !built(&cfg(extra))
            .to_args()
            .iter()
            .any(|a| a == "-no-reboot")
    };
    assert!(!reboots(""), "-no-reboot is the default");
    assert!(!reboots("allow_reboot = false"));
    assert!(reboots("allow_reboot = true"));
}

#[test]
fn the_agent_channel_is_a_virtio_serial_port_by_default() {
    let a = args_of(&cfg(""));
    assert!(
        a.contains(
            "-chardev socket,id=charagent0,path=/run/sandvm/t/agent.sock,server=on,wait=off"
        ),
        "{a}"
    );
    assert!(
        a.contains("-device virtserialport,id=agent0,chardev=charagent0,name=agent.channel.0"),
        "{a}"
    );
    // With a legacy serial console, the port still gets a virtio-serial controller.
    let a = args_of(&cfg("use_legacy_serial = true"));
    assert!(a.contains("-device virtio-serial-pci,id=serial0"), "{a}");
    assert!(a.contains("name=agent.channel.0"), "{a}");
    let a = args_of(&cfg("agent_channel = \"none\""));
    assert!(!a.contains("agent"), "{a}");
}

#[test]
fn hybrid_vsock_connects_to_the_daemon_and_shares_guest_memory() {
    let c = cfg("agent_channel = \"hybrid-vsock\"\nvsock_daemon = \"/opt/vhost-device-vsock\"");
    let a = args_of(&c);
    assert!(
        a.contains("-chardev socket,id=charagent0,path=/run/sandvm/t/vhost-vsock.sock"),
        "{a}"
    );
    assert!(
        a.contains("-device vhost-user-vsock-pci,id=agent0,chardev=charagent0"),
        "{a}"
    );
    assert!(!a.contains("virtserialport"), "{a}");
    // vhost-user needs the guest's memory shared with the daemon.
    match mem(&c).0 {
        Some(Object::MemoryBackendFile {
            mem_path, share, ..
        }) => assert_eq!((mem_path.as_str(), share), (SHM_DIR, Some(true))),
        o => panic!("{o:?}"),
    }
    let args = agent::vsock_daemon_args(Path::new("/run/sandvm/t"));
    assert_eq!(
        args,
        [
            "--vm",
            "guest-cid=3,socket=/run/sandvm/t/vhost-vsock.sock,uds-path=/run/sandvm/t/vsock.sock"
        ]
    );
}

#[test]
fn kernel_vsock_gets_a_cid_from_the_uuid() {
    let a = args_of(&cfg("agent_channel = \"vsock\""));
    let cid = agent::vsock_cid("00000000-0000-0000-0000-000000000000");
    assert!(cid >= agent::MIN_GUEST_CID);
    assert_ne!(
        cid,
        agent::vsock_cid("00000000-0000-0000-0000-000000000001")
    );
    assert!(
        a.contains(&format!(
            "-device vhost-vsock-pci,id=agent0,guest-cid={cid}"
        )),
        "{a}"
    );
}

/// Off nvdimm (`disable_image_nvdimm`, or an arch or machine without one),
/// `image` is a read-only disk on every arch: one drive of the image file, one
/// virtio-blk device of the arch's transport on it and no other virtio-blk,
/// so it is the guest's `/dev/vda`, which `root=` names.
#[test]
fn an_image_off_nvdimm_is_the_disk_root_names_on_every_arch() {
    let image = "image = \"/img/root.img\"\n";
    for (extra, driver) in [
        ("disable_image_nvdimm = true", "virtio-blk-pci"),
        ("machine_type = \"microvm\"", "virtio-blk-device"),
        ("guest_arch = \"aarch64\"", "virtio-blk-pci"),
        (
            "guest_arch = \"ppc64le\"\ndisable_image_nvdimm = true",
            "virtio-blk-pci",
        ),
        ("guest_arch = \"s390x\"", "virtio-blk-ccw"),
    ] {
        let q = planned_for_test(&cfg(&format!("{image}{extra}")), Accel::Tcg, Some(64 << 20));
        let drives: Vec<_> = q
            .drives
            .iter()
            .filter(|d| d.file == "/img/root.img")
            .collect();
        assert_eq!(drives.len(), 1, "{extra}: {drives:?}");
        assert!(drives[0].readonly, "{extra}");
        let blks: Vec<_> = q
            .devices
            .iter()
            .filter_map(|d| match d {
                Device::VirtioBlk(b) => Some(b),
                _ => None,
            })
            .collect();
        assert_eq!(
            blks.len(),
            1,
            "{extra}: the root disk is the only virtio-blk"
        );
        assert_eq!(blks[0].drive, drives[0].id, "{extra}");
        assert_eq!(
            Device::VirtioBlk(blks[0].clone()).driver(),
            driver,
            "{extra}"
        );
        let append = q.kernel.as_ref().and_then(|k| k.append.clone()).unwrap();
        let words: Vec<&str> = append.split(' ').collect();
        for w in ["root=/dev/vda1", "ro", "rootfstype=ext4"] {
            assert!(words.contains(&w), "{extra}: {append}");
        }
        assert!(!append.contains("pmem"), "{extra}: {append}");
        assert_eq!(q.machine.get("nvdimm"), None, "{extra}");
        q.validate().unwrap();
    }
}

/// `extra_monitor_socket` (with `enable_debug`) adds a third monitor on a
/// path in the sandbox folder, speaking what the key says; none without it.
#[test]
fn the_extra_monitor_socket_is_a_monitor_in_the_sandbox_folder() {
    let base = planned_for_test(&cfg("enable_debug = true"), Accel::Tcg, None);
    assert_eq!(base.qmp.len(), 2);
    for (kind, mon) in [
        ("hmp", "chardev=extra-monitor,mode=readline"),
        ("qmp", "chardev=extra-monitor,mode=control"),
        ("qmp-pretty", "chardev=extra-monitor,mode=control,pretty=on"),
    ] {
        let c = cfg(&format!(
            "enable_debug = true\nextra_monitor_socket = \"{kind}\""
        ));
        let a = planned_for_test(&c, Accel::Tcg, None).to_args().join(" ");
        assert!(
            a.contains(&format!(
                "-chardev socket,id=extra-monitor,path=/run/sandvm/t/{},server=on,wait=off -mon {mon}",
                files::EXTRA_MONITOR
            )),
            "{kind}: {a}"
        );
    }
}

#[test]
fn an_image_off_nvdimm_is_a_read_only_first_disk() {
    let c = cfg("image = \"/img/root.img\"\ndisable_image_nvdimm = true");
    let q = planned_for_test(&c, Accel::Tcg, Some(64 << 20));
    let a = q.to_args().join(" ");
    assert!(
        a.contains(
            "-drive if=none,id=rootdisk,file=/img/root.img,format=raw,aio=io_uring,readonly=on"
        ),
        "{a}"
    );
    assert!(
        a.contains("-device virtio-blk-pci,id=rootdisk-dev,drive=rootdisk"),
        "{a}"
    );
    assert!(a.contains("root=/dev/vda1 ro"), "{a}");
    assert_eq!(q.machine.get("nvdimm"), None);
    q.validate().unwrap();
}

/// `block_device_*_sector_size` reach every cold-plugged disk, virtio-blk
/// and scsi-hd, but not the root image (its partition table is in 512-byte
/// sectors).
#[test]
fn sector_sizes_reach_cold_plugged_disks_not_the_root_image() {
    let sizes = "block_device_logical_sector_size = 512
block_device_physical_sector_size = 4096";
    for (driver, scsi, want) in [
        (
            "virtio-blk",
            None,
            "-device virtio-blk-pci,id=d0,bus=pci-bridge-0,addr=1,drive=drive-d0,logical_block_size=512,physical_block_size=4096",
        ),
        (
            "virtio-scsi",
            Some((0, 3)),
            "-device scsi-hd,id=d0,bus=scsi0.0,drive=drive-d0,scsi-id=0,lun=3,logical_block_size=512,physical_block_size=4096",
        ),
    ] {
        let c = cfg(&format!(
            "block_device_driver = \"{driver}\"\n{sizes}\nimage = \"/img/root.img\"\ndisable_image_nvdimm = true"
        ));
        let layout = Layout::new(&c, Some(64 << 20));
        let mut d = cold(
            "d0",
            coldplug::ColdSpec::Block {
                path: "/img/d0.img".into(),
                readonly: false,
                disposable: false,
            },
            scsi.is_none().then_some(1),
        );
        d.scsi = scsi;
        let a = cold_args(&c, &layout, &[d]);
        assert!(a.contains(want), "{a}");
        assert!(
            a.contains("-device virtio-blk-pci,id=rootdisk-dev,drive=rootdisk "),
            "{a}"
        );
        assert_eq!(a.matches("logical_block_size").count(), 1, "{a}");
    }
}

/// A disposable cold disk is `snapshot=on,cache=unsafe`, and the
/// `block_device_cache_*` keys stay off it (QEMU refuses `cache=` with them).
#[test]
fn a_disposable_cold_disk_is_a_snapshot_drive_with_unsafe_cache() {
    let c = cfg("block_device_cache_set = true\nblock_device_cache_direct = true");
    let layout = Layout::new(&c, None);
    let disk = |id: &str, disposable: bool| {
        cold(
            id,
            coldplug::ColdSpec::Block {
                path: format!("/img/{id}.img").into(),
                readonly: false,
                disposable,
            },
            Some(1),
        )
    };
    let a = cold_args(&c, &layout, &[disk("d0", true), disk("d1", false)]);
    assert!(
        a.contains("-drive if=none,id=drive-d0,file=/img/d0.img,format=raw,aio=io_uring,cache=unsafe,snapshot=on "),
        "{a}"
    );
    assert!(
        a.contains("-drive if=none,id=drive-d1,file=/img/d1.img,format=raw,aio=io_uring,cache.direct=on,cache.no-flush=off "),
        "{a}"
    );
}

/// `indep_iothreads = N` makes N iothreads at boot (Kata's names); with
/// `enable_iothreads`, a cold-plugged virtio-blk disk runs on the first.
#[test]
fn independent_iothreads_are_made_and_virtio_blk_disks_use_the_first() {
    let c =
        cfg("block_device_driver = \"virtio-blk\"\nenable_iothreads = true\nindep_iothreads = 2");
    let layout = Layout::new(&c, None);
    let d = cold(
        "d0",
        coldplug::ColdSpec::Block {
            path: "/img/d0.img".into(),
            readonly: false,
            disposable: false,
        },
        Some(1),
    );
    let a = cold_args(&c, &layout, &[d]);
    for want in [
        "-object iothread,id=indep_iothread_0",
        "-object iothread,id=indep_iothread_1",
        "-device virtio-blk-pci,id=d0,bus=pci-bridge-0,addr=1,drive=drive-d0,iothread=indep_iothread_0",
    ] {
        assert!(a.contains(want), "{want}: {a}");
    }
    // Without enable_iothreads the threads exist but disks stay off them (Kata).
    let off = cfg("indep_iothreads = 1");
    let a = planned_for_test(&off, Accel::Tcg, None).to_args().join(" ");
    assert!(a.contains("-object iothread,id=indep_iothread_0"), "{a}");
    assert!(!a.contains("iothread=indep"), "{a}");
}

/// The argv (joined) of `c` with the cold-plugged devices `cold`.
fn cold_args(c: &HypervisorConfig, layout: &Layout, cold: &[coldplug::ColdDevice]) -> String {
    let q = plan(&PlanInput {
        cfg: c,
        layout,
        accel: Accel::Tcg,
        id: "t",
        uuid: "00000000-0000-0000-0000-000000000000",
        dir: Path::new("/run/sandvm/t"),
        share: None,
        role: None,
        agent: None,
        cold,
        incoming: false,
    })
    .unwrap();
    q.to_args().join(" ")
}

fn cold(id: &str, spec: coldplug::ColdSpec, slot: Option<u32>) -> coldplug::ColdDevice {
    coldplug::ColdDevice {
        id: id.into(),
        kind: crate::types::DeviceKind::Block,
        driver: String::new(),
        slot: slot.map(|s| pci::SlotAddr {
            bridge: "pci-bridge-0".into(),
            slot: s,
        }),
        scsi: None,
        devno: None,
        spec,
    }
}

#[test]
fn cold_plugged_devices_are_rendered_on_their_slots_with_tap_fds_from_5() {
    let c = cfg("block_device_driver = \"virtio-blk\"");
    let layout = Layout::new(&c, None);
    let devices = [
        cold(
            "d0",
            coldplug::ColdSpec::Block {
                path: "/img/d0.img".into(),
                readonly: true,
                disposable: false,
            },
            Some(1),
        ),
        cold(
            "n0",
            coldplug::ColdSpec::Net {
                mac: "02:00:00:00:00:01".into(),
                tap: Some("tap0".into()),
                vhost: false,
            },
            Some(2),
        ),
        cold(
            "n1",
            coldplug::ColdSpec::Net {
                mac: "02:00:00:00:00:02".into(),
                tap: None,
                vhost: true,
            },
            Some(3),
        ),
        cold(
            "v0",
            coldplug::ColdSpec::Vfio {
                host: "0000:01:00.0".into(),
                root_port: None,
            },
            Some(4),
        ),
    ];
    let a = cold_args(&c, &layout, &devices);
    assert!(
        a.contains(
            "-drive if=none,id=drive-d0,file=/img/d0.img,format=raw,aio=io_uring,readonly=on"
        ),
        "{a}"
    );
    assert!(
        a.contains("-device virtio-blk-pci,id=d0,bus=pci-bridge-0,addr=1,drive=drive-d0"),
        "{a}"
    );
    assert!(a.contains("-netdev tap,id=netdev-n0,fd=5"), "{a}");
    assert!(a.contains("-netdev tap,id=netdev-n1,fd=6,vhost=on"), "{a}");
    assert!(
        a.contains("-device virtio-net-pci,id=n1,bus=pci-bridge-0,addr=3,netdev=netdev-n1,mac=02:00:00:00:00:02"),
        "{a}"
    );
    assert!(
        a.contains("-device vfio-pci,id=v0,bus=pci-bridge-0,addr=4,host=0000:01:00.0"),
        "{a}"
    );
    // Kata's PCI path: bridge 0 sits in root slot 2.
    assert_eq!(
        devices[1].placement(&layout),
        crate::types::Placement::Pci {
            path: "02/02".into()
        }
    );
}

#[test]
fn channels_take_fd_numbers_after_and_between_taps_each_in_its_own_fd_set() {
    let c = cfg("");
    let layout = Layout::new(&c, None);
    let chan = |id: &str, name: &str| coldplug::ColdDevice {
        kind: crate::types::DeviceKind::Channel,
        driver: "virtserialport".into(),
        ..cold(id, coldplug::ColdSpec::Channel { name: name.into() }, None)
    };
    let tap = cold(
        "n0",
        coldplug::ColdSpec::Net {
            mac: "02:00:00:00:00:01".into(),
            tap: None,
            vhost: false,
        },
        Some(2),
    );
    let devices = [chan("chan0", "extra.0"), tap, chan("chan1", "extra.1")];
    let a = cold_args(&c, &layout, &devices);
    for (fd, id, name) in [(5, "chan0", "extra.0"), (7, "chan1", "extra.1")] {
        let want = [
            format!("-add-fd fd={fd},set={fd},opaque=channel {name}"),
            format!("-chardev pipe,id=chardev-{id},path=/dev/fdset/{fd}"),
            format!("-device virtserialport,id={id},chardev=chardev-{id},name={name}"),
        ];
        for w in want {
            assert!(a.contains(&w), "{w} in {a}");
        }
    }
    assert!(a.contains("-netdev tap,id=netdev-n0,fd=6"), "{a}");
    // One virtio-serial controller (the console's) carries every port.
    assert_eq!(a.matches("-device virtio-serial").count(), 1, "{a}");
    assert!(coldplug::passes_fd(&devices[0].spec) && coldplug::passes_fd(&devices[1].spec));
}

#[test]
fn nested_bridges_add_the_root_port_to_the_pci_path() {
    let c = cfg("firmware = \"/usr/share/ovmf/OVMF.fd\"");
    let layout = Layout::new(&c, None);
    let s = pci::SlotAddr {
        bridge: "pci-bridge-0".into(),
        slot: 5,
    };
    assert_eq!(bridges::pci_path(&layout, &s), "02/00/05");
}

#[test]
fn an_image_without_a_kernel_is_the_boot_disk_and_no_kernel_is_loaded() {
    let body =
        "[hypervisor.qemu]\nimage = \"/disk.img\"\nshared_fs = \"none\"\ndefault_memory = 512\n";
    let c = parse_str(Path::new("/etc/sandvm/t.toml"), body, &HOST)
        .unwrap()
        .config;
    let q = planned_for_test(&c, Accel::Tcg, Some(64 << 20));
    assert!(q.kernel.is_none(), "{:?}", q.kernel);
    let args = q.to_args();
    for flag in ["-kernel", "-initrd", "-append"] {
        assert!(!args.iter().any(|a| a == flag), "{flag} in {args:?}");
    }
    // Not an nvdimm: a read-only virtio-blk disk the firmware boots first.
    assert!(!args.iter().any(|a| a.starts_with("nvdimm")), "{args:?}");
    let drive = args
        .iter()
        .find(|a| a.contains("file=/disk.img"))
        .unwrap_or_else(|| panic!("no drive for the image: {args:?}"));
    assert!(drive.contains("readonly=on"), "{drive}");
    let dev = args
        .iter()
        .find(|a| a.starts_with("virtio-blk-pci,") && a.contains("drive=rootdisk"))
        .unwrap_or_else(|| panic!("no boot disk: {args:?}"));
    assert!(dev.contains("bootindex=0"), "{dev}");
    // With a kernel, the same image is the nvdimm root and boots nothing.
    let with_kernel = cfg("image = \"/disk.img\"");
    let args = planned_for_test(&with_kernel, Accel::Tcg, Some(64 << 20)).to_args();
    assert!(!args.iter().any(|a| a.contains("bootindex")), "{args:?}");
}

#[test]
fn numa_nodes_split_memory_and_vcpus_and_bind_each_backend_to_its_host_nodes() {
    let c = cfg("enable_numa = true\nnuma_mapping = [\"0\", \"0\", \"0\"]\ndefault_maxvcpus = 4");
    let q = built(&c);
    let a = q.to_args().join(" ");
    for want in [
        "-object memory-backend-ram,id=numa-mem0,size=170M,host-nodes=0,policy=bind",
        "-object memory-backend-ram,id=numa-mem2,size=172M,host-nodes=0,policy=bind",
        "-numa node,nodeid=0,memdev=numa-mem0,cpus=0-1",
        "-numa node,nodeid=1,memdev=numa-mem1,cpus=2",
        "-numa node,nodeid=2,memdev=numa-mem2,cpus=3",
    ] {
        assert!(a.contains(want), "{want} in {a}");
    }
    assert!(!a.contains("memory-backend=dimm1"), "{a}");
    // Hugepages (and their prealloc) carry over to every node.
    let c = cfg("enable_numa = true\nnuma_mapping = [\"0\"]\nenable_hugepages = true");
    let a = built(&c).to_args().join(" ");
    assert!(
        a.contains("-object memory-backend-file,id=numa-mem0,size=512M,mem-path=/dev/hugepages,prealloc=on,host-nodes=0,policy=bind"),
        "{a}"
    );
}

/// The argv (joined) of `c` as a template VM, a clone or a cold boot, in
/// the sandbox folder `dir` with the share `share`.
fn role_args(
    c: &HypervisorConfig,
    dir: &str,
    share: Option<&Path>,
    role: Option<crate::types::TemplateRole>,
) -> Vec<String> {
    let layout = Layout::new(c, None);
    plan(&PlanInput {
        cfg: c,
        layout: &layout,
        accel: Accel::Tcg,
        id: "t",
        uuid: "00000000-0000-0000-0000-000000000000",
        dir: Path::new(dir),
        share,
        role,
        agent: c.agent.channel,
        cold: &[],
        incoming: false,
    })
    .unwrap()
    .to_args()
}

#[test]
fn virtio_9p_is_an_fsdev_on_the_share_and_a_device_with_kata_s_tag() {
    let c = cfg_fs("virtio-9p", "");
    let a = args_of(&c);
    assert!(
        a.contains(
            "-fsdev local,id=extra-9p-kataShared,path=/run/sandvm/t/shared,security_model=none,multidevs=remap"
        ),
        "{a}"
    );
    assert!(
        a.contains(
            "-device virtio-9p-pci,id=virtio-9p0,fsdev=extra-9p-kataShared,mount_tag=kataShared"
        ),
        "{a}"
    );
    // No daemon, no vhost-user socket, and guest memory stays private.
    assert!(
        !a.contains("vhost-user-fs") && !a.contains("fs.sock"),
        "{a}"
    );
    assert!(!a.contains("share=on"), "{a}");
    let given = role_args(&c, "/run/sandvm/t", Some(Path::new("/srv/a,b")), None).join(" ");
    assert!(
        given.contains("path=/srv/a,,b,security_model=none"),
        "{given}"
    );
}

#[test]
fn a_9p_template_and_its_clone_differ_only_in_the_fsdev_path() {
    use crate::types::TemplateRole;
    let c = cfg_fs("virtio-9p", "initrd = \"/i\"");
    let t = role_args(
        &c,
        "/run/sandvm/template-1",
        None,
        Some(TemplateRole::Template),
    );
    let k = role_args(
        &c,
        "/run/sandvm/clone-1",
        Some(Path::new("/srv/clone-share")),
        Some(TemplateRole::Clone),
    );
    let dev = |a: &[String]| -> Vec<String> {
        a.windows(2)
            .filter(|w| w[0] == "-device")
            .map(|w| w[1].clone())
            .collect()
    };
    assert_eq!(dev(&t), dev(&k), "the guest-visible devices");
    assert!(dev(&t).iter().any(|d| d.starts_with("virtio-9p-pci,")));
    let fsdev = |a: &[String]| -> String {
        a.windows(2)
            .find(|w| w[0] == "-fsdev")
            .map(|w| w[1].clone())
            .unwrap()
    };
    assert!(
        fsdev(&t).contains("path=/run/sandvm/template-1/shared,"),
        "{}",
        fsdev(&t)
    );
    assert!(
        fsdev(&k).contains("path=/srv/clone-share,"),
        "{}",
        fsdev(&k)
    );
}
