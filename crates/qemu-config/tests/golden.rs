//! Golden tests: full argv for realistic configurations, one per guest shape.

use qemu_config::*;

fn s(v: &str) -> String {
    v.to_owned()
}

fn argv(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| s(a)).collect()
}

fn base(machine: Machine, smp: Smp, memory: Memory) -> Config {
    let mut c = Config::new(machine, smp, memory);
    c.knobs = Knobs {
        no_user_config: true,
        nodefaults: true,
        nographic: true,
        no_reboot: true,
        vga_none: true,
        ..Knobs::default()
    };
    c
}

/// Kata's default x86_64 shape: nvdimm root image, hotplug-ready memory and CPUs,
/// bridges and root ports, console on a logged socket, QMP on an inherited fd.
pub fn kata_q35() -> Config {
    let mut c = base(
        Machine::new("q35").with_accel("tcg").nvdimm(true),
        Smp {
            cpus: 1,
            sockets: Some(4),
            dies: None,
            cores: Some(1),
            threads: Some(1),
            maxcpus: Some(4),
        },
        Memory {
            size_mib: 2048,
            slots: Some(10),
            maxmem_mib: Some(12288),
        },
    );
    c.name = Some(s("sandbox-4f6e"));
    c.uuid = Some(s("4f6e9a1c-2b3d-4e5f-8a9b-0c1d2e3f4a5b"));
    c.cpu = Some(Cpu::new("max"));
    c.objects = vec![
        Object::MemoryBackendFile {
            id: s("mem0"),
            size_mib: 256,
            mem_path: s("/usr/share/kata/kata-containers.img"),
            share: Some(true),
            prealloc: false,
            readonly: Some(true),
            discard_data: None,
            align: None,
        },
        Object::RngRandom {
            id: s("rng0"),
            filename: s("/dev/urandom"),
        },
    ];
    c.kernel = Some(Kernel {
        path: s("/usr/share/kata/vmlinuz"),
        initrd: Some(s("/usr/share/kata/initrd.img")),
        append: Some(s(
            "root=/dev/pmem0p1 rootflags=dax,data=ordered console=hvc0 quiet",
        )),
    });
    c.rtc = Some(Rtc::default());
    c.globals = vec![Global::new("kvm-pit", "lost_tick_policy", "discard")];
    c.pidfile = Some(s("/run/sandvm/4f6e/pid"));
    c.sandbox = Some(Sandbox::default());
    c.qmp = vec![QmpMonitor {
        id: s("qmp"),
        socket: QmpSocket::Fd(3),
        mode: Default::default(),
    }];
    c.chardevs = vec![Chardev::Socket {
        id: s("charconsole0"),
        path: Some(s("/run/sandvm/4f6e/console.sock")),
        fd: None,
        server: true,
        wait: false,
        logfile: Some(s("/run/sandvm/4f6e/console.log")),
        logappend: Some(true),
    }];
    c.devices = vec![
        PciBridge {
            id: s("pci-bridge-0"),
            bus: Some(s("pcie.0")),
            chassis_nr: 1,
            shpc: true,
            addr: Some(s("2")),
        }
        .into(),
        PcieRootPort {
            id: s("rp0"),
            bus: Some(s("pcie.0")),
            chassis: 0,
            slot: 0,
            multifunction: Some(false),
            addr: Some(s("3")),
            pref64_reserve: Some(s("2M")),
            mem_reserve: Some(s("4M")),
            ..Default::default()
        }
        .into(),
        PcieRootPort {
            id: s("rp1"),
            bus: Some(s("pcie.0")),
            chassis: 0,
            slot: 1,
            multifunction: Some(false),
            addr: Some(s("4")),
            pref64_reserve: Some(s("2M")),
            mem_reserve: Some(s("4M")),
            ..Default::default()
        }
        .into(),
        Nvdimm {
            id: s("nv0"),
            memdev: s("mem0"),
            unarmed: true,
        }
        .into(),
        VirtioSerial {
            id: s("serial0"),
            bus: Some(s("pci-bridge-0")),
            addr: Some(s("1")),
            romfile: Some(String::new()),
            ..Default::default()
        }
        .into(),
        VirtConsole {
            id: s("console0"),
            chardev: s("charconsole0"),
            name: None,
        }
        .into(),
        VirtioRng {
            id: s("rng-dev0"),
            rng: s("rng0"),
            bus: Some(s("pci-bridge-0")),
            addr: Some(s("2")),
            romfile: Some(String::new()),
            ..Default::default()
        }
        .into(),
        Pvpanic {
            id: s("pvpanic0"),
            ioport: None,
        }
        .into(),
    ];
    c
}

#[test]
fn golden_kata_q35() {
    let c = kata_q35();
    assert_eq!(c.validate(), Ok(()));
    assert_eq!(
        c.to_args(),
        argv(&[
            "-name",
            "sandbox-4f6e",
            "-uuid",
            "4f6e9a1c-2b3d-4e5f-8a9b-0c1d2e3f4a5b",
            "-machine",
            "q35,accel=tcg,nvdimm=on",
            "-cpu",
            "max",
            "-smp",
            "1,sockets=4,cores=1,threads=1,maxcpus=4",
            "-m",
            "2048M,slots=10,maxmem=12288M",
            "-object",
            "memory-backend-file,id=mem0,size=256M,mem-path=/usr/share/kata/kata-containers.img,share=on,readonly=on",
            "-object",
            "rng-random,id=rng0,filename=/dev/urandom",
            "-kernel",
            "/usr/share/kata/vmlinuz",
            "-initrd",
            "/usr/share/kata/initrd.img",
            "-append",
            "root=/dev/pmem0p1 rootflags=dax,data=ordered console=hvc0 quiet",
            "-no-user-config",
            "-nodefaults",
            "-nographic",
            "-no-reboot",
            "-vga",
            "none",
            "-rtc",
            "base=utc,driftfix=slew,clock=host",
            "-global",
            "kvm-pit.lost_tick_policy=discard",
            "-pidfile",
            "/run/sandvm/4f6e/pid",
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
            "-chardev",
            "socket,id=qmp,fd=3,server=on,wait=off",
            "-mon",
            "chardev=qmp,mode=control",
            "-chardev",
            "socket,id=charconsole0,path=/run/sandvm/4f6e/console.sock,server=on,wait=off,logfile=/run/sandvm/4f6e/console.log,logappend=on",
            "-device",
            "pci-bridge,id=pci-bridge-0,bus=pcie.0,addr=2,chassis_nr=1,shpc=on",
            "-device",
            "pcie-root-port,id=rp0,bus=pcie.0,addr=3,chassis=0,slot=0,multifunction=off,mem-reserve=4M,pref64-reserve=2M",
            "-device",
            "pcie-root-port,id=rp1,bus=pcie.0,addr=4,chassis=0,slot=1,multifunction=off,mem-reserve=4M,pref64-reserve=2M",
            "-device",
            "nvdimm,id=nv0,memdev=mem0,unarmed=on",
            "-device",
            "virtio-serial-pci,id=serial0,bus=pci-bridge-0,addr=1,romfile=",
            "-device",
            "virtconsole,id=console0,chardev=charconsole0",
            "-device",
            "virtio-rng-pci,id=rng-dev0,bus=pci-bridge-0,addr=2,rng=rng0,romfile=",
            "-device",
            "pvpanic,id=pvpanic0",
        ])
    );
}

/// virtio-fs: guest RAM in a shared file so virtiofsd can map it.
pub fn virtio_fs() -> Config {
    let mut c = base(
        Machine::new("q35")
            .with_accel("tcg")
            .memory_backend("dimm1"),
        Smp::new(2),
        Memory::new(1024),
    );
    c.objects = vec![Object::MemoryBackendFile {
        id: s("dimm1"),
        size_mib: 1024,
        mem_path: s("/dev/shm"),
        share: Some(true),
        prealloc: false,
        readonly: None,
        discard_data: None,
        align: None,
    }];
    c.chardevs = vec![Chardev::Socket {
        id: s("char-fs0"),
        path: Some(s("/run/sandvm/4f6e/vhost-fs.sock")),
        fd: None,
        server: false,
        wait: false,
        logfile: None,
        logappend: None,
    }];
    c.devices = vec![
        VhostUserFs {
            id: s("fs0"),
            chardev: s("char-fs0"),
            tag: s("kataShared"),
            queue_size: Some(1024),
            bus: Some(s("pcie.0")),
            romfile: Some(String::new()),
            ..Default::default()
        }
        .into(),
    ];
    c
}

#[test]
fn golden_virtio_fs() {
    let c = virtio_fs();
    assert_eq!(c.validate(), Ok(()));
    assert_eq!(
        c.to_args(),
        argv(&[
            "-machine",
            "q35,accel=tcg,memory-backend=dimm1",
            "-smp",
            "2",
            "-m",
            "1024M",
            "-object",
            "memory-backend-file,id=dimm1,size=1024M,mem-path=/dev/shm,share=on",
            "-no-user-config",
            "-nodefaults",
            "-nographic",
            "-no-reboot",
            "-vga",
            "none",
            "-chardev",
            "socket,id=char-fs0,path=/run/sandvm/4f6e/vhost-fs.sock,server=off",
            "-device",
            "vhost-user-fs-pci,id=fs0,bus=pcie.0,chardev=char-fs0,tag=kataShared,queue-size=1024,romfile=",
        ])
    );
}

/// Hugepages through a NUMA node (the older Kata spelling of shared memory).
pub fn hugepages() -> Config {
    let mut c = base(
        Machine::new("q35").with_accel("tcg"),
        Smp::new(1),
        Memory::new(512),
    );
    c.objects = vec![Object::MemoryBackendFile {
        id: s("dimm1"),
        size_mib: 512,
        mem_path: s("/dev/hugepages"),
        share: Some(true),
        prealloc: true,
        readonly: None,
        discard_data: None,
        align: None,
    }];
    c.numa = vec![NumaNode {
        nodeid: None,
        memdev: Some(s("dimm1")),
        cpus: None,
    }];
    c
}

#[test]
fn golden_hugepages() {
    let c = hugepages();
    assert_eq!(c.validate(), Ok(()));
    assert_eq!(
        c.to_args(),
        argv(&[
            "-machine",
            "q35,accel=tcg",
            "-smp",
            "1",
            "-m",
            "512M",
            "-object",
            "memory-backend-file,id=dimm1,size=512M,mem-path=/dev/hugepages,share=on,prealloc=on",
            "-numa",
            "node,memdev=dimm1",
            "-no-user-config",
            "-nodefaults",
            "-nographic",
            "-no-reboot",
            "-vga",
            "none",
        ])
    );
}

/// microvm: no firmware tables, no legacy devices, virtio-mmio everywhere.
pub fn microvm() -> Config {
    let mut c = base(
        Machine::new("microvm")
            .with_accel("tcg")
            .x_option_roms(false)
            .pit(false)
            .pic(false)
            .rtc(false)
            .isa_serial(false),
        Smp::new(1),
        Memory::new(256),
    );
    c.bios = Some(s("/usr/share/qemu/qboot.rom"));
    c.kernel = Some(Kernel {
        path: s("/boot/vmlinuz"),
        initrd: None,
        append: Some(s("console=hvc0")),
    });
    c.objects = vec![Object::RngRandom {
        id: s("rng0"),
        filename: s("/dev/urandom"),
    }];
    c.chardevs = vec![Chardev::Null { id: s("con0") }];
    c.drives = vec![Drive {
        readonly: true,
        aio: Some(s("threads")),
        ..Drive::raw("drive0", "/var/lib/sandvm/rootfs.img")
    }];
    c.netdevs = vec![Netdev::User {
        id: s("net0"),
        hostfwds: vec![HostFwd {
            protocol: Protocol::Tcp,
            host_addr: Some(s("127.0.0.1")),
            host_port: 18080,
            guest_addr: None,
            guest_port: 8080,
        }],
        net: None,
    }];
    c.devices = vec![
        VirtioSerial {
            transport: Transport::Mmio,
            id: s("serial0"),
            ..Default::default()
        }
        .into(),
        VirtConsole {
            id: s("console0"),
            chardev: s("con0"),
            name: None,
        }
        .into(),
        VirtioBlk {
            transport: Transport::Mmio,
            id: s("blk0"),
            drive: s("drive0"),
            ..Default::default()
        }
        .into(),
        VirtioNet {
            transport: Transport::Mmio,
            id: s("nic0"),
            netdev: s("net0"),
            mac: Some(s("52:54:00:12:34:56")),
            ..Default::default()
        }
        .into(),
        VirtioRng {
            transport: Transport::Mmio,
            id: s("rng-dev0"),
            rng: s("rng0"),
            ..Default::default()
        }
        .into(),
    ];
    c
}

#[test]
fn golden_microvm() {
    let c = microvm();
    assert_eq!(c.validate(), Ok(()));
    assert_eq!(
        c.to_args(),
        argv(&[
            "-machine",
            "microvm,accel=tcg,x-option-roms=off,pit=off,pic=off,rtc=off,isa-serial=off",
            "-smp",
            "1",
            "-m",
            "256M",
            "-object",
            "rng-random,id=rng0,filename=/dev/urandom",
            "-kernel",
            "/boot/vmlinuz",
            "-append",
            "console=hvc0",
            "-bios",
            "/usr/share/qemu/qboot.rom",
            "-no-user-config",
            "-nodefaults",
            "-nographic",
            "-no-reboot",
            "-vga",
            "none",
            "-chardev",
            "null,id=con0",
            "-netdev",
            "user,id=net0,hostfwd=tcp:127.0.0.1:18080-:8080",
            "-drive",
            "if=none,id=drive0,file=/var/lib/sandvm/rootfs.img,format=raw,aio=threads,readonly=on",
            "-device",
            "virtio-serial-device,id=serial0",
            "-device",
            "virtconsole,id=console0,chardev=con0",
            "-device",
            "virtio-blk-device,id=blk0,drive=drive0",
            "-device",
            "virtio-net-device,id=nic0,netdev=net0,mac=52:54:00:12:34:56",
            "-device",
            "virtio-rng-device,id=rng-dev0,rng=rng0",
        ])
    );
}

/// aarch64 virt with GICv3.
pub fn aarch64_virt() -> Config {
    let mut c = base(
        Machine::new("virt").with_accel("tcg").gic_version("3"),
        Smp::new(2),
        Memory::new(512),
    );
    c.cpu = Some(Cpu::new("cortex-a57"));
    c.devices = vec![
        PcieRootPort {
            id: s("rp0"),
            bus: Some(s("pcie.0")),
            chassis: 1,
            slot: 0,
            ..Default::default()
        }
        .into(),
        VirtioBalloon {
            id: s("balloon0"),
            bus: Some(s("rp0")),
            free_page_reporting: true,
            deflate_on_oom: true,
            ..Default::default()
        }
        .into(),
    ];
    c
}

#[test]
fn golden_aarch64_virt() {
    let c = aarch64_virt();
    assert_eq!(c.validate(), Ok(()));
    assert_eq!(
        c.to_args(),
        argv(&[
            "-machine",
            "virt,accel=tcg,gic-version=3",
            "-cpu",
            "cortex-a57",
            "-smp",
            "2",
            "-m",
            "512M",
            "-no-user-config",
            "-nodefaults",
            "-nographic",
            "-no-reboot",
            "-vga",
            "none",
            "-device",
            "pcie-root-port,id=rp0,bus=pcie.0,chassis=1,slot=0",
            "-device",
            "virtio-balloon-pci,id=balloon0,bus=rp0,free-page-reporting=on,deflate-on-oom=on",
        ])
    );
}

/// ppc64le pseries with the Spectre/Meltdown capabilities Kata sets.
pub fn ppc64le_pseries() -> Config {
    let mut c = base(
        Machine::new("pseries")
            .with_accel("tcg")
            .cap("cfpc", "broken")
            .cap("sbbc", "broken")
            .cap("ibs", "broken")
            .cap("large-decr", "off")
            .cap("ccf-assist", "off"),
        Smp::new(1),
        Memory::new(1024),
    );
    c.devices = vec![
        PciBridge {
            id: s("pci-bridge-0"),
            bus: Some(s("pci.0")),
            chassis_nr: 1,
            shpc: false,
            addr: None,
        }
        .into(),
        VirtioScsi {
            id: s("scsi0"),
            bus: Some(s("pci-bridge-0")),
            disable_modern: true,
            ..Default::default()
        }
        .into(),
    ];
    c
}

#[test]
fn golden_ppc64le_pseries() {
    let c = ppc64le_pseries();
    assert_eq!(c.validate(), Ok(()));
    assert_eq!(
        c.to_args(),
        argv(&[
            "-machine",
            "pseries,accel=tcg,cap-cfpc=broken,cap-sbbc=broken,cap-ibs=broken,cap-large-decr=off,cap-ccf-assist=off",
            "-smp",
            "1",
            "-m",
            "1024M",
            "-no-user-config",
            "-nodefaults",
            "-nographic",
            "-no-reboot",
            "-vga",
            "none",
            "-device",
            "pci-bridge,id=pci-bridge-0,bus=pci.0,chassis_nr=1,shpc=off",
            "-device",
            "virtio-scsi-pci,id=scsi0,bus=pci-bridge-0,disable-modern=on",
        ])
    );
}

/// s390x: virtio-ccw devices with explicit device numbers.
pub fn s390x_ccw() -> Config {
    let mut c = base(
        Machine::new("s390-ccw-virtio").with_accel("tcg"),
        Smp::new(1),
        Memory::new(512),
    );
    c.knobs.vga_none = false;
    c.objects = vec![Object::Iothread { id: s("io0") }];
    c.drives = vec![Drive::raw("drive0", "/var/lib/sandvm/disk.img")];
    c.chardevs = vec![Chardev::Socket {
        id: s("charconsole0"),
        path: Some(s("/run/sandvm/s/console.sock")),
        fd: None,
        server: true,
        wait: false,
        logfile: None,
        logappend: None,
    }];
    c.devices = vec![
        VirtioSerial {
            transport: Transport::Ccw,
            id: s("serial0"),
            devno: Some(s("fe.0.0001")),
            ..Default::default()
        }
        .into(),
        VirtConsole {
            id: s("console0"),
            chardev: s("charconsole0"),
            name: None,
        }
        .into(),
        VirtioBlk {
            transport: Transport::Ccw,
            id: s("blk0"),
            drive: s("drive0"),
            iothread: Some(s("io0")),
            devno: Some(s("fe.0.0002")),
            ..Default::default()
        }
        .into(),
        VhostVsock {
            transport: Transport::Ccw,
            id: s("vsock0"),
            guest_cid: 3,
            devno: Some(s("fe.0.0003")),
            ..Default::default()
        }
        .into(),
    ];
    c
}

#[test]
fn golden_s390x_ccw() {
    let c = s390x_ccw();
    assert_eq!(c.validate(), Ok(()));
    assert_eq!(
        c.to_args(),
        argv(&[
            "-machine",
            "s390-ccw-virtio,accel=tcg",
            "-smp",
            "1",
            "-m",
            "512M",
            "-object",
            "iothread,id=io0",
            "-no-user-config",
            "-nodefaults",
            "-nographic",
            "-no-reboot",
            "-chardev",
            "socket,id=charconsole0,path=/run/sandvm/s/console.sock,server=on,wait=off",
            "-drive",
            "if=none,id=drive0,file=/var/lib/sandvm/disk.img,format=raw",
            "-device",
            "virtio-serial-ccw,id=serial0,devno=fe.0.0001",
            "-device",
            "virtconsole,id=console0,chardev=charconsole0",
            "-device",
            "virtio-blk-ccw,id=blk0,drive=drive0,iothread=io0,devno=fe.0.0002",
            "-device",
            "vhost-vsock-ccw,id=vsock0,guest-cid=3,devno=fe.0.0003",
        ])
    );
}

/// Commas and `=` in free-form values are escaped in option lists and kept
/// verbatim in plain-string options.
#[test]
fn golden_escaping() {
    let mut c = Config::new(Machine::new("q35"), Smp::new(1), Memory::new(128));
    c.kernel = Some(Kernel {
        path: s("/boot/a,b=c/vmlinuz"),
        initrd: None,
        append: None,
    });
    c.fw_cfg = vec![FwCfg {
        name: s("opt/x"),
        source: FwCfgSource::String(s("k=v,drive=evil")),
    }];
    c.drives = vec![Drive::raw("d0", "/img/x,file=/etc/shadow")];
    c.chardevs = vec![Chardev::Socket {
        id: s("vfs"),
        path: Some(s("/run/a,server=off/fs.sock")),
        fd: None,
        server: false,
        wait: false,
        logfile: None,
        logappend: None,
    }];
    c.devices = vec![
        VirtioBlk {
            id: s("blk0"),
            drive: s("d0"),
            serial: Some(s("ser,ial=1")),
            ..Default::default()
        }
        .into(),
        VhostUserFs {
            id: s("fs0"),
            chardev: s("vfs"),
            tag: s("a,b=c"),
            ..Default::default()
        }
        .into(),
    ];
    assert_eq!(c.validate(), Ok(()));
    assert_eq!(
        c.to_args(),
        argv(&[
            "-machine",
            "q35",
            "-smp",
            "1",
            "-m",
            "128M",
            "-kernel",
            "/boot/a,b=c/vmlinuz",
            "-fw_cfg",
            "name=opt/x,string=k=v,,drive=evil",
            "-chardev",
            "socket,id=vfs,path=/run/a,,server=off/fs.sock,server=off",
            "-drive",
            "if=none,id=d0,file=/img/x,,file=/etc/shadow,format=raw",
            "-device",
            "virtio-blk-pci,id=blk0,drive=d0,serial=ser,,ial=1",
            "-device",
            "vhost-user-fs-pci,id=fs0,chardev=vfs,tag=a,,b=c",
        ])
    );

    c.devices.push(
        VirtioRng {
            id: s("rng,0"),
            rng: s("r"),
            ..Default::default()
        }
        .into(),
    );
    assert_eq!(
        c.validate(),
        Err(ValidationError::InvalidId {
            family: "device",
            id: s("rng,0")
        })
    );
}
