//! One test per row of the per-arch table in docs/architecture.md: every
//! value in the table is checked here, on the policy and on the built config.

use super::*;
use crate::config::{HostInfo, HypervisorConfig, parse_str};

use qemu_config::{Device, Object};
use std::path::Path;

const HOST: HostInfo = HostInfo {
    numa_nodes: 1,
    cpus: 8,
    mem_mib: 16384,
    arch: GuestArch::X86_64,
};

fn cfg(arch: &str, extra: &str) -> HypervisorConfig {
    let body = format!(
        "[hypervisor.qemu]\nkernel = \"/k\"\nguest_arch = \"{arch}\"\nshared_fs = \"none\"\n\
         default_memory = 512\ndefault_maxmemory = 1000\n{extra}\n"
    );
    parse_str(Path::new("/etc/sandvm/t.toml"), &body, &HOST)
        .unwrap_or_else(|e| panic!("{e}\n{body}"))
        .config
}

fn built(c: &HypervisorConfig, accel: Accel, image_size: Option<u64>) -> qemu_config::Config {
    crate::plan::planned_for_test(c, accel, image_size)
}

fn drivers(c: &qemu_config::Config) -> Vec<String> {
    c.devices.iter().map(|d| d.driver().to_string()).collect()
}

fn append(c: &qemu_config::Config) -> String {
    c.kernel
        .as_ref()
        .and_then(|k| k.append.clone())
        .unwrap_or_default()
}

#[test]
fn x86_64_q35_row() {
    let c = cfg("x86_64", "image = \"/img\"");
    let p = policy(&c, Accel::Kvm);
    let l = layout(&c);
    assert_eq!(p.machine.machine_type, "q35");
    assert_eq!(p.machine.accel.as_deref(), Some("kvm"));
    assert_eq!(p.machine.get("kernel_irqchip"), None);
    assert_eq!(p.cpu_model.as_deref(), Some("host"));
    assert_eq!(policy(&c, Accel::Tcg).cpu_model.as_deref(), Some("max"));
    let mut want = strs(x86_64::KERNEL_PARAMS);
    want.push(x86_64::NO_SWIOTLB.to_string());
    assert_eq!(p.kernel_params, want);
    assert_eq!(l.transport, Transport::Pci);
    assert_eq!(l.root_bus.as_deref(), Some("pcie.0"));
    assert!(l.bridges && l.rng);
    assert_eq!(l.maxmem_align_mib, 1);
    let q = built(&c, Accel::Kvm, Some(100 << 20));
    assert_eq!(q.machine.get("nvdimm"), Some("on"));
    let a = append(&q);
    assert!(
        a.contains("root=/dev/pmem0p1 rootflags=dax,data=ordered,errors=remount-ro ro"),
        "{a}"
    );
    assert!(drivers(&q).contains(&"virtio-rng-pci".to_string()));
    assert!(drivers(&q).contains(&"pci-bridge".to_string()));
    // maxmem = default_maxmemory + the nvdimm image (100 MiB), unaligned.
    assert_eq!(q.memory.maxmem_mib, Some(1100));

    // The IOMMU: split irqchip, the intel IOMMU kernel parameters, intel-iommu.
    let c = cfg("x86_64", "enable_iommu = true");
    let p = policy(&c, Accel::Kvm);
    assert_eq!(p.machine.get("kernel_irqchip"), Some("split"));
    assert!(
        p.kernel_params
            .ends_with(&strs(&["intel_iommu=on", "iommu=pt"]))
    );
    assert!(drivers(&built(&c, Accel::Kvm, None)).contains(&"intel-iommu".to_string()));
}

#[test]
fn x86_64_swiotlb_is_off_only_when_nothing_can_need_it() {
    let off = |extra: &str| {
        policy(&cfg("x86_64", extra), Accel::Tcg)
            .kernel_params
            .contains(&x86_64::NO_SWIOTLB.to_string())
    };
    assert!(off(""));
    assert!(off("machine_type = \"microvm\""));
    for needs in [
        "enable_iommu = true",
        "enable_iommu_platform = true",
        "hot_plug_vfio = \"root-port\"",
        "kernel_params = \"swiotlb=65536\"",
    ] {
        assert!(!off(needs), "{needs}");
    }
}

#[test]
fn x86_64_microvm_row() {
    let c = cfg("x86_64", "machine_type = \"microvm\"\nimage = \"/img\"");
    let kvm = policy(&c, Accel::Kvm);
    for k in ["x-option-roms", "pit", "pic", "rtc", "isa-serial"] {
        assert_eq!(kvm.machine.get(k), Some("off"), "{k}");
    }
    let p = policy(&c, Accel::Tcg);
    let l = layout(&c);
    assert_eq!(p.machine.machine_type, "microvm");
    for k in ["x-option-roms", "rtc", "isa-serial"] {
        assert_eq!(p.machine.get(k), Some("off"), "{k}");
    }
    // Under TCG the guest needs the PIT (and its PIC) to calibrate timers.
    assert_eq!((p.machine.get("pit"), p.machine.get("pic")), (None, None));
    assert_eq!(l.transport, Transport::Mmio);
    assert_eq!(l.root_bus.as_deref(), None);
    assert!(!l.bridges && l.rng);
    assert!(!p.kernel_params.contains(&"pci=lastbus=0".to_string()));
    assert!(
        p.kernel_params
            .contains(&x86_64::TCG_MICROVM_TSC.to_string())
    );
    assert!(
        !kvm.kernel_params
            .contains(&x86_64::TCG_MICROVM_TSC.to_string())
    );
    assert_eq!(l.default_bios.as_deref(), Some(x86_64::QBOOT));
    let q = built(&c, Accel::Tcg, Some(100 << 20));
    assert_eq!(q.machine.get("nvdimm"), None, "no nvdimm on microvm");
    assert!(append(&q).contains("root=/dev/vda1 ro"));
    assert!(drivers(&q).contains(&"virtio-rng-device".to_string()));
    assert!(!drivers(&q).iter().any(|d| d.contains("bridge")));
}

#[test]
fn aarch64_row() {
    let c = cfg("aarch64", "image = \"/img\"\npcie_root_port = 2");
    let p = policy(&c, Accel::Kvm);
    let l = layout(&c);
    assert_eq!(p.machine.machine_type, "virt");
    assert_eq!(p.machine.get("gic-version"), Some("host"));
    assert_eq!(policy(&c, Accel::Tcg).machine.get("gic-version"), Some("3"));
    assert_eq!(p.cpu_model.as_deref(), Some("host"));
    assert_eq!(policy(&c, Accel::Tcg).cpu_model.as_deref(), Some("max"));
    assert_eq!(p.kernel_params, strs(&["iommu.passthrough=0"]));
    assert_eq!(l.transport, Transport::Pci);
    assert_eq!(l.root_bus.as_deref(), Some("pcie.0"));
    assert!(l.bridges && l.rng);
    assert!(l.nvdimm_root_params.is_none(), "no DAX on arm64");
    assert_eq!(l.maxmem_align_mib, 1);
    let q = built(&c, Accel::Kvm, Some(100 << 20));
    assert_eq!(q.machine.get("nvdimm"), None);
    assert!(append(&q).contains("root=/dev/vda1 ro"));
    assert_eq!(q.memory.maxmem_mib, Some(1000));
    let d = drivers(&q);
    assert!(d.contains(&"virtio-rng-pci".into()) && d.contains(&"pci-bridge".into()));
    assert_eq!(d.iter().filter(|x| *x == "pcie-root-port").count(), 2);
    // Exactly two pflash images, or none.
    let two = cfg("aarch64", "pflashes = [\"/a.fd\", \"/b.fd\"]");
    let q = built(&two, Accel::Tcg, None);
    assert_eq!(q.pflash.len(), 2);
    assert!(q.pflash[0].readonly && !q.pflash[1].readonly);
}

#[test]
fn aarch64_pflash_count_is_checked_by_key() {
    for (list, want) in [
        ("[\"/a.fd\"]", "two pflash images needed for arm64"),
        (
            "[\"/a\", \"/b\", \"/c\"]",
            "too many pflash images for arm64",
        ),
    ] {
        let body = format!(
            "[hypervisor.qemu]\nkernel = \"/k\"\nguest_arch = \"aarch64\"\npflashes = {list}\n"
        );
        let e = parse_str(Path::new("/t.toml"), &body, &HOST).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("hypervisor.qemu.pflashes") && m.contains(want),
            "{m}"
        );
    }
    // Other arches take any number (x86 OVMF uses one or two).
    cfg("x86_64", "pflashes = [\"/a.fd\"]");
}

#[test]
fn ppc64le_row() {
    let c = cfg("ppc64le", "image = \"/img\"");
    let p = policy(&c, Accel::Kvm);
    let l = layout(&c);
    assert_eq!(p.machine.machine_type, "pseries");
    for (k, v) in ppc64le::CAPS {
        assert_eq!(p.machine.get(&format!("cap-{k}")), Some(*v), "cap-{k}");
    }
    assert_eq!(p.cpu_model.as_deref(), Some("host"));
    assert_eq!(
        policy(&c, Accel::Tcg).cpu_model,
        None,
        "TCG: QEMU's default POWER model"
    );
    assert_eq!(p.kernel_params, strs(ppc64le::KERNEL_PARAMS));
    assert_eq!(l.transport, Transport::Pci);
    assert_eq!(l.root_bus.as_deref(), Some("pci.0"));
    assert!(l.bridges && l.rng);
    assert_eq!(l.maxmem_align_mib, 256);
    let q = built(&c, Accel::Kvm, Some(100 << 20));
    assert_eq!(q.machine.get("nvdimm"), Some("on"));
    let a = append(&q);
    assert!(
        a.contains("root=/dev/pmem0p1 rootflags=data=ordered,errors=remount-ro ro"),
        "{a}"
    );
    assert!(!a.contains("dax"), "{a}");
    // 1000 + 100 MiB = 1100, rounded down to 256 MiB: 1024.
    assert_eq!(q.memory.maxmem_mib, Some(1024));
    let d = drivers(&q);
    assert!(d.contains(&"virtio-rng-pci".into()) && d.contains(&"pci-bridge".into()));
    assert!(
        !d.contains(&"pcie-root-port".into()),
        "no root ports on pseries"
    );
}

#[test]
fn s390x_row() {
    let c = cfg(
        "s390x",
        "image = \"/img\"\nreclaim_guest_freed_memory = true",
    );
    let p = policy(&c, Accel::Kvm);
    let l = layout(&c);
    assert_eq!(p.machine.machine_type, "s390-ccw-virtio");
    assert_eq!(p.cpu_model.as_deref(), Some("host"));
    assert!(p.kernel_params.is_empty());
    assert_eq!(l.transport, Transport::Ccw);
    assert_eq!(l.root_bus.as_deref(), None);
    assert!(!l.bridges && !l.rng);
    assert!(l.nvdimm_root_params.is_none());
    assert_eq!(l.maxmem_align_mib, 1);
    let q = built(&c, Accel::Kvm, Some(100 << 20));
    assert_eq!(q.machine.get("nvdimm"), None, "never nvdimm");
    assert!(append(&q).contains("root=/dev/vda1 ro"));
    let d = drivers(&q);
    assert!(
        !d.iter().any(|x| x.starts_with("virtio-rng")),
        "no RNG: {d:?}"
    );
    assert!(!d.iter().any(|x| x.contains("bridge")));
    // Every CCW device has a devno, fe.0.XXXX, distinct and in order.
    let devnos: Vec<String> = q
        .devices
        .iter()
        .filter_map(|d| match d {
            Device::VirtioSerial(s) => s.devno.clone(),
            Device::VirtioBlk(b) => b.devno.clone(),
            Device::VirtioScsi(s) => s.devno.clone(),
            Device::VirtioBalloon(b) => b.devno.clone(),
            _ => None,
        })
        .collect();
    // The console's virtio-serial, the root disk, the SCSI controller, the balloon.
    assert_eq!(devnos, ["fe.0.0000", "fe.0.0001", "fe.0.0002", "fe.0.0003"]);
    assert!(
        d.iter()
            .filter(|x| x.starts_with("virtio-"))
            .all(|x| x.ends_with("-ccw")),
        "{d:?}"
    );
}

#[test]
fn memory_topology_is_kata_s() {
    let c = cfg(
        "x86_64",
        "default_vcpus = 2\ndefault_maxvcpus = 4\nmemory_offset = 24\nmemory_slots = 7",
    );
    let q = built(&c, Accel::Tcg, None);
    assert_eq!(
        (
            q.smp.cpus,
            q.smp.sockets,
            q.smp.cores,
            q.smp.threads,
            q.smp.maxcpus
        ),
        (2, Some(4), Some(1), Some(1), Some(4))
    );
    assert_eq!(
        (q.memory.size_mib, q.memory.slots, q.memory.maxmem_mib),
        (512, Some(7), Some(1024))
    );
    // No memory backend unless asked.
    assert!(!q.objects.iter().any(|o| matches!(
        o,
        Object::MemoryBackendFile { .. } | Object::MemoryBackendRam { .. }
    )));
}
