//! Acceptance of issue 3, "Real QEMU accepts what we render".
//!
//! For each guest arch and machine, the runtime turns a Kata-style config into
//! a `qemu_config::Config` (`runtime::qemu::build::build`), exactly as it does
//! for a sandbox. The matching real QEMU is started paused (`-S`, TCG) with
//! that argv, the QMP listener pre-bound and passed as fd 3 like the runtime
//! does, and QMP then shows that QEMU built what the config says: vCPUs and
//! maxcpus, boot memory and maxmem, every device id (the full set), and the
//! PCI bridges and root ports on the PCI buses, and the root image off nvdimm
//! as a read-only disk, the only virtio-blk, which `root=` names. The kernel is left out (QEMU
//! runs no guest code under `-S`, and only x86 has a test kernel here).
//!
//! The escaping test passes paths and values containing `,` and `=` (kernel,
//! initrd, append, sandbox folder, drive file, device properties, `-name`,
//! `-fw_cfg`) and shows QEMU received each as one value, verbatim, with nothing
//! injected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod qemu_support;

use qemu_config::{
    Chardev, Device, Drive, FwCfg, FwCfgSource, Transport, VirtSerialPort, VirtioBlk,
};
use qemu_support::*;
use runtime::config::Accel;
use runtime::config::GuestArch;
use runtime::tools::files;
use sandvm_tests::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileTypeExt;

/// One arch and machine under test.
struct Case {
    tag: &'static str,
    arch: GuestArch,
    machine: &'static str,
    /// The machine has PCI bridges (`default_bridges`).
    bridges: bool,
    /// The root bus is PCIe (`pcie_root_port`).
    root_ports: bool,
    /// The machine has PCI at all (`query-pci` lists our devices).
    pci: bool,
    /// The machine answers `query-hotpluggable-cpus`.
    hotpluggable_cpus: bool,
}

/// A device of ours in `query-pci`.
#[derive(Debug)]
struct PciSeen {
    /// Slot on its bus.
    slot: u64,
    /// Whether QEMU lists a secondary bus behind it (a bridge or root port).
    bridge: bool,
}

/// Every device with a `qdev_id` on every PCI bus, behind bridges too.
fn pci_devices(buses: &[Value]) -> BTreeMap<String, PciSeen> {
    fn walk(devices: &Value, out: &mut BTreeMap<String, PciSeen>) {
        for d in devices.as_array().into_iter().flatten() {
            if let Some(id) = d["qdev_id"].as_str().filter(|s| !s.is_empty()) {
                let seen = PciSeen {
                    slot: d["slot"].as_u64().unwrap(),
                    bridge: d.get("pci_bridge").is_some(),
                };
                assert!(out.insert(id.to_string(), seen).is_none(), "{id} twice");
            }
            if let Some(b) = d.get("pci_bridge") {
                walk(&b["devices"], out);
            }
        }
    }
    let mut out = BTreeMap::new();
    for b in buses {
        walk(&b["devices"], &mut out);
    }
    out
}

/// Whether a device sits on PCI (its own function in `query-pci`).
fn is_pci(d: &Device) -> bool {
    let drv = d.driver();
    drv == "pci-bridge" || drv == "pcie-root-port" || drv.ends_with("-pci")
}

async fn accepts(case: Case) {
    let env = Env::new(&format!("acc-{}", case.tag));
    let (dir, kernel) = paused_scratch(&env);
    // The root image off nvdimm: a read-only disk that root= must name.
    let image = env.root.join("root.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(4 * MIB)
        .unwrap();
    let bin = qemu(case.arch.qemu_binary());

    let mut toml = format!(
        "[hypervisor.qemu]\npath = \"{}\"\nkernel = \"{}\"\nguest_arch = \"{}\"\n\
         machine_type = \"{}\"\ndefault_vcpus = 2\ndefault_maxvcpus = 4\n\
         default_memory = 256\ndefault_maxmemory = 1024\nshared_fs = \"none\"\n\
         accelerator = \"tcg\"\nblock_device_driver = \"virtio-scsi\"\n\
         reclaim_guest_freed_memory = true\nimage = \"{}\"\ndisable_image_nvdimm = true\n",
        bin.display(),
        kernel.display(),
        case.arch,
        case.machine,
        image.display(),
    );
    if case.bridges {
        toml.push_str("default_bridges = 2\n");
    }
    if case.root_ports {
        toml.push_str("pcie_root_port = 2\n");
    }
    let cfg = hypervisor_config(&env.root, &toml);
    assert_eq!(cfg.guest_arch, case.arch);
    assert_eq!(cfg.qemu_path, bin);

    let mut config = plan_tcg(&cfg, &dir);
    qmp_on_fd3(&mut config);
    let append = config
        .kernel
        .as_ref()
        .and_then(|k| k.append.clone())
        .unwrap_or_default();
    // QEMU stays paused and runs no guest code: no kernel (none exists for the
    // other arches here). microvm boots qboot, which the runtime sets as -bios.
    config.kernel = None;
    config.knobs.stopped = true;

    let (q, client) = start(
        &bin,
        &config,
        &dir.join(files::QMP),
        &env.root.join("qemu.log"),
    )
    .await;
    let ctx = format!("{} {}: argv {:?}", case.arch, case.machine, q.argv);

    let status = client.query_status().await.unwrap();
    assert_eq!(status.status, qmp::commands::RunState::Prelaunch, "{ctx}");
    assert!(!status.running, "{ctx}");

    // vCPUs: 2 running of at most 4.
    assert_eq!((cfg.vcpus, cfg.max_vcpus), (2, 4));
    let cpus = client.query_cpus_fast().await.unwrap();
    assert_eq!(cpus.len(), 2, "{ctx}: {cpus:?}");
    let smp = client.qom_get("/machine", "smp").await.unwrap();
    assert_eq!(smp["cpus"], 2, "{ctx}: {smp}");
    assert_eq!(smp["maxcpus"], 4, "{ctx}: {smp}");
    if case.hotpluggable_cpus {
        // One entry per slot, each one vCPU (sockets=4,cores=1,threads=1).
        let slots = client.query_hotpluggable_cpus().await.unwrap();
        assert_eq!(slots.len(), 4, "{ctx}: {slots:?}");
        assert!(slots.iter().all(|s| s.vcpus_count == 1), "{ctx}: {slots:?}");
        let plugged = slots.iter().filter(|s| s.qom_path.is_some()).count();
        assert_eq!(plugged, 2, "{ctx}: {slots:?}");
    } else {
        let e = client.query_hotpluggable_cpus().await.unwrap_err();
        assert!(e.to_string().contains("hot-plugging CPUs"), "{ctx}: {e}");
    }

    // Memory: 256 MiB boot memory, maxmem 1024 MiB, the rendered slots.
    let summary = client.query_memory_size_summary().await.unwrap();
    assert_eq!(summary.base_memory, 256 * MIB, "{ctx}");
    assert_eq!(config.memory.maxmem_mib, Some(1024), "{ctx}");
    let mem = client.qom_get("/machine", "memory").await.unwrap();
    assert_eq!(mem["size"], 256 * MIB, "{ctx}: {mem}");
    assert_eq!(mem["max-size"], 1024 * MIB, "{ctx}: {mem}");
    assert_eq!(
        mem["slots"],
        json!(config.memory.slots.unwrap()),
        "{ctx}: {mem}"
    );

    // Devices: exactly the ids we rendered, none anonymous.
    let want: BTreeSet<String> = config
        .devices
        .iter()
        .filter_map(|d| d.id().map(String::from))
        .collect();
    assert_eq!(
        want.len(),
        config.devices.len(),
        "{ctx}: a device without id"
    );
    assert!(
        want.contains("serial0") && want.contains("console0"),
        "{ctx}"
    );
    if case.bridges {
        assert!(
            want.contains("pci-bridge-0") && want.contains("pci-bridge-1"),
            "{ctx}"
        );
    }
    if case.root_ports {
        assert!(want.contains("rp0") && want.contains("rp1"), "{ctx}");
    }
    // The root disk: the only virtio-blk (so the guest's vda), read-only on
    // the image, and root= names it.
    let blks: Vec<&str> = config
        .devices
        .iter()
        .filter(|d| d.driver().starts_with("virtio-blk"))
        .filter_map(|d| d.id())
        .collect();
    assert_eq!(blks, ["rootdisk-dev"], "{ctx}");
    assert!(
        append.split(" ").any(|w| w == "root=/dev/vda1"),
        "{ctx}: {append}"
    );
    let blocks = client.execute("query-block", None).await.unwrap();
    let root = blocks
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["device"] == "rootdisk")
        .unwrap_or_else(|| panic!("{ctx}: no rootdisk in {blocks}"));
    assert_eq!(root["inserted"]["ro"], true, "{ctx}: {root}");
    assert_eq!(
        root["inserted"]["file"],
        image.display().to_string(),
        "{ctx}: {root}"
    );
    assert_eq!(
        qom_children(&client, "/machine/peripheral").await,
        want,
        "{ctx}"
    );
    assert_eq!(
        qom_children(&client, "/machine/peripheral-anon").await,
        BTreeSet::new(),
        "{ctx}"
    );

    // PCI: every PCI device of ours, bridges and root ports included, on the buses.
    let pci_want: BTreeSet<String> = config
        .devices
        .iter()
        .filter(|d| is_pci(d))
        .filter_map(|d| d.id().map(String::from))
        .collect();
    if case.pci {
        assert!(!pci_want.is_empty(), "{ctx}");
        let buses = client.query_pci().await.unwrap();
        let seen = pci_devices(&buses);
        let ids: BTreeSet<String> = seen.keys().cloned().collect();
        assert_eq!(ids, pci_want, "{ctx}: {buses:?}");
        // Bridges and root ports: bridges in QEMU, at the slot we asked for.
        for d in &config.devices {
            let (id, addr) = match d {
                Device::PciBridge(b) => (&b.id, b.addr.as_deref()),
                Device::PcieRootPort(r) => (&r.id, r.addr.as_deref()),
                _ => continue,
            };
            let s = &seen[id.as_str()];
            assert!(s.bridge, "{ctx}: {id} is no bridge in {buses:?}");
            if let Some(a) = addr {
                let slot = u64::from_str_radix(a.split('.').next().unwrap(), 16).unwrap();
                assert_eq!(s.slot, slot, "{ctx}: {id}");
            }
        }
    } else {
        assert!(
            pci_want.is_empty(),
            "{ctx}: PCI devices on a PCI-less machine"
        );
        let t = if case.arch == GuestArch::S390x {
            Transport::Ccw
        } else {
            Transport::Mmio
        };
        let want_suffix = t.pick("-pci", "-ccw", "-device");
        for d in &config.devices {
            let drv = d.driver();
            assert!(
                !drv.starts_with("virtio-") || drv.ends_with(want_suffix),
                "{ctx}: {drv} on a {t:?} machine"
            );
        }
    }

    quit(q, client).await;
    let left = processes_mentioning(&env.root);
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn x86_64_q35_accepts_rendered_argv() {
    accepts(Case {
        tag: "q35",
        arch: GuestArch::X86_64,
        machine: "q35",
        bridges: true,
        root_ports: true,
        pci: true,
        hotpluggable_cpus: true,
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn x86_64_microvm_accepts_rendered_argv() {
    accepts(Case {
        tag: "microvm",
        arch: GuestArch::X86_64,
        machine: "microvm",
        bridges: false,
        root_ports: false,
        pci: false,
        hotpluggable_cpus: false,
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn aarch64_virt_accepts_rendered_argv() {
    accepts(Case {
        tag: "virt",
        arch: GuestArch::Aarch64,
        machine: "virt",
        bridges: true,
        root_ports: true,
        pci: true,
        hotpluggable_cpus: false,
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn ppc64le_pseries_accepts_rendered_argv() {
    accepts(Case {
        tag: "pseries",
        arch: GuestArch::Ppc64le,
        machine: "pseries",
        bridges: true,
        root_ports: false,
        pci: true,
        hotpluggable_cpus: true,
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn s390x_ccw_accepts_rendered_argv() {
    accepts(Case {
        tag: "s390x",
        arch: GuestArch::S390x,
        machine: "s390-ccw-virtio",
        bridges: false,
        root_ports: false,
        pci: false,
        hotpluggable_cpus: true,
    })
    .await;
}

/// Paths and values with `,` and `=` reach QEMU as one value each, verbatim;
/// none can inject an option.
#[tokio::test(flavor = "current_thread")]
async fn commas_and_equals_reach_qemu_verbatim() {
    let env = Env::new("acc-esc");
    let g = guest();
    // The sandbox folder itself: pidfile, console socket and log live in it.
    let dir = env.root.join("sb,x=y");
    std::fs::create_dir_all(&dir).unwrap();
    let kernel = env.root.join("ker,nel=x");
    let initrd = env.root.join("init,rd=y");
    std::fs::copy(&g.kernel, &kernel).unwrap();
    std::fs::copy(&g.initrd, &initrd).unwrap();
    // A drive whose path would, if split, turn the disk read-only.
    let disk = env.root.join("disk,readonly=on,x=y.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(4 * MIB)
        .unwrap();
    let bin = qemu("qemu-system-x86_64");

    let toml = format!(
        "[hypervisor.qemu]\npath = \"{}\"\nkernel = \"{}\"\ninitrd = \"{}\"\n\
         kernel_params = \"sandvm.esc=a,b=c\"\nguest_arch = \"x86_64\"\n\
         machine_type = \"q35\"\ndefault_vcpus = 1\ndefault_maxvcpus = 2\n\
         default_memory = 256\ndefault_maxmemory = 1024\ndefault_bridges = 1\n\
         pcie_root_port = 1\nshared_fs = \"none\"\naccelerator = \"tcg\"\n",
        bin.display(),
        kernel.display(),
        initrd.display(),
    );
    let cfg = hypervisor_config(&env.root, &toml);
    let mut config =         // The id goes into -name: `sandbox-e,x=y` (rendered `guest=sandbox-e,,x=y`).
runtime::tools::plan(&cfg, "e,x=y", "8b2f5a3e-0c1d-4e6f-9a7b-1c2d3e4f5a6b", &dir, Accel::Tcg).unwrap();
    qmp_on_fd3(&mut config);
    config.knobs.stopped = true;
    let k = config.kernel.clone().unwrap();
    assert_eq!(k.path, kernel.display().to_string());
    assert_eq!(
        k.initrd.as_deref(),
        Some(initrd.display().to_string().as_str())
    );
    let append = k.append.unwrap();
    assert!(append.contains("sandvm.esc=a,b=c"), "{append}");

    let disk_s = disk.display().to_string();
    config.drives.push(Drive::raw("drive-esc", &disk_s));
    config.devices.push(
        VirtioBlk {
            transport: Transport::Pci,
            id: "blk-esc".into(),
            drive: "drive-esc".into(),
            bus: Some("rp0".into()),
            serial: Some("s,n=1".into()),
            ..Default::default()
        }
        .into(),
    );
    config.chardevs.push(Chardev::Null {
        id: "chr-esc".into(),
    });
    // `nr=5` would pick the port number if it were split off.
    config.devices.push(
        VirtSerialPort {
            id: "port-esc".into(),
            chardev: "chr-esc".into(),
            name: Some("org.sandvm,nr=5".into()),
        }
        .into(),
    );
    // The control: the same name passed unescaped (as a raw extra argument)
    // is split by QEMU, and the port takes the injected number. This shows the
    // checks below would catch an injection.
    config.extra_args.extend(
        [
            "-chardev",
            "null,id=chr-raw",
            "-device",
            "virtserialport,id=port-raw,chardev=chr-raw,name=org.sandvm,nr=5",
        ]
        .map(String::from),
    );
    // A string item that, split, would also name a missing file: QEMU would
    // refuse to start ("file" and "string" are exclusive, and the file is absent).
    config.fw_cfg.push(FwCfg {
        name: "opt/sandvm/esc".into(),
        source: FwCfgSource::String("a,file=/nonexistent,b=c".into()),
    });

    let (q, client) = start(
        &bin,
        &config,
        &env.root.join(files::QMP),
        &env.root.join("qemu.log"),
    )
    .await;
    let ctx = format!("argv {:?}", q.argv);

    // Plain-string options: exactly the paths and command line we gave.
    let got = |v: Value| v.as_str().map(String::from);
    assert_eq!(
        got(client.qom_get("/machine", "kernel").await.unwrap()),
        Some(kernel.display().to_string()),
        "{ctx}"
    );
    assert_eq!(
        got(client.qom_get("/machine", "initrd").await.unwrap()),
        Some(initrd.display().to_string()),
        "{ctx}"
    );
    assert_eq!(
        got(client.qom_get("/machine", "append").await.unwrap()),
        Some(append.clone()),
        "{ctx}"
    );

    // -name: one value.
    let name = client.execute("query-name", None).await.unwrap();
    assert_eq!(name["name"], "sandbox-e,x=y", "{ctx}");

    // The drive: the whole path, and not read-only.
    let blocks = client.execute("query-block", None).await.unwrap();
    let b = blocks
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["device"] == "drive-esc")
        .unwrap_or_else(|| panic!("{ctx}: no drive-esc in {blocks}"));
    assert_eq!(b["inserted"]["file"], disk_s.as_str(), "{ctx}: {b}");
    assert_eq!(b["inserted"]["ro"], false, "{ctx}: {b}");
    let serial = client
        .qom_get("/machine/peripheral/blk-esc", "serial")
        .await
        .unwrap();
    assert_eq!(serial, "s,n=1", "{ctx}");

    // The serial port: its whole name, and the port number QEMU chose (after
    // the console's 0 and the agent channel's 1), not an injected 5.
    let port = "/machine/peripheral/port-esc";
    assert_eq!(
        client.qom_get(port, "name").await.unwrap(),
        "org.sandvm,nr=5",
        "{ctx}"
    );
    assert_eq!(client.qom_get(port, "nr").await.unwrap(), 2, "{ctx}");
    let raw = "/machine/peripheral/port-raw";
    assert_eq!(
        client.qom_get(raw, "name").await.unwrap(),
        "org.sandvm",
        "{ctx}"
    );
    assert_eq!(client.qom_get(raw, "nr").await.unwrap(), 5, "{ctx}");

    // The sandbox folder: pidfile, console and agent sockets and the log at
    // exactly their paths, nothing at a path cut at the comma.
    let pidfile = std::fs::read_to_string(dir.join(files::PIDFILE)).unwrap();
    assert_eq!(pidfile.trim(), q.pid.to_string(), "{ctx}");
    let sock = std::fs::metadata(dir.join(files::CONSOLE)).unwrap();
    assert!(sock.file_type().is_socket(), "{ctx}");
    assert!(dir.join(files::CONSOLE_LOG).is_file(), "{ctx}");
    let mut in_dir: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    in_dir.sort();
    assert_eq!(
        in_dir,
        [
            files::AGENT,
            files::CONSOLE_LOG,
            files::CONSOLE,
            files::PIDFILE
        ],
        "{ctx}"
    );
    let mut in_root: Vec<String> = std::fs::read_dir(&env.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    in_root.sort();
    assert_eq!(
        in_root,
        [
            "disk,readonly=on,x=y.img",
            "init,rd=y",
            "ker,nel=x",
            files::QEMU_LOG,
            files::QMP,
            "sb,x=y",
        ],
        "{ctx}"
    );

    quit(q, client).await;
    let left = processes_mentioning(&env.root);
    assert!(left.is_empty(), "processes left behind: {left:?}");
}
