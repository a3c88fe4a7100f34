//! Tests for config loading and validation.

use super::*;

const HOST: HostInfo = HostInfo {
    numa_nodes: 1,
    cpus: 8,
    mem_mib: 16384,
    arch: GuestArch::X86_64,
};

fn parse(body: &str) -> Result<Loaded, ConfigError> {
    parse_str(Path::new("/etc/sandvm/test.toml"), body, &HOST)
}

fn err_of(body: &str) -> ConfigError {
    match parse(body) {
        Ok(l) => panic!("expected an error, got {:?}", l.config),
        Err(e) => e,
    }
}

fn minimal(extra: &str) -> String {
    format!("[hypervisor.qemu]\nkernel = \"vmlinuz\"\n{extra}\n")
}

#[test]
fn defaults_follow_kata() {
    let c = parse(&minimal("")).unwrap().config;
    assert_eq!(c.vcpus, 1);
    assert_eq!(c.memory_mib, 2048);
    assert_eq!(c.memory_slots, 10);
    assert_eq!(c.bridges, 1);
    assert_eq!(c.max_vcpus, 8, "0 means the host's CPUs");
    assert_eq!(c.max_memory_mib, 16384, "0 means the host's RAM");
    assert_eq!(c.machine_type, "q35");
    assert_eq!(c.qemu_path, PathBuf::from("/usr/bin/qemu-system-x86_64"));
    assert_eq!(c.block.driver, BlockDriver::VirtioScsi);
    assert_eq!(c.shared_fs.kind, SharedFs::VirtioFs);
    assert_eq!(c.accelerator, Accelerator::Auto);
    assert_eq!(c.entropy_source, PathBuf::from("/dev/urandom"));
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let c = parse(&minimal(
        "initrd = \"../build/initrd.img\"\nshared_fs = \"none\"",
    ))
    .unwrap()
    .config;
    assert_eq!(c.kernel, Some(PathBuf::from("/etc/sandvm/vmlinuz")));
    assert_eq!(
        c.initrd,
        Some(PathBuf::from("/etc/sandvm/../build/initrd.img"))
    );
}

#[test]
fn type_errors_name_the_key_and_line() {
    let e = err_of("[hypervisor.qemu]\nkernel = \"k\"\ndefault_vcpus = \"two\"\n");
    match &e {
        ConfigError::Syntax { key, line, .. } => {
            assert_eq!(key, "hypervisor.qemu.default_vcpus");
            assert_eq!(*line, 3);
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("/etc/sandvm/test.toml"));
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        ("default_vcpus = -1", "hypervisor.qemu.default_vcpus"),
        (
            "default_vcpus = 4\ndefault_maxvcpus = 2",
            "hypervisor.qemu.default_vcpus",
        ),
        (
            "default_memory = 4096\ndefault_maxmemory = 1024",
            "hypervisor.qemu.default_memory",
        ),
        ("default_bridges = 6", "hypervisor.qemu.default_bridges"),
        ("memory_slots = 300", "hypervisor.qemu.memory_slots"),
        ("memory_offset = -5", "hypervisor.qemu.memory_offset"),
        ("shared_fs = \"nfs\"", "hypervisor.qemu.shared_fs"),
        ("msize_9p = 4095", "hypervisor.qemu.msize_9p"),
        ("msize_9p = -1", "hypervisor.qemu.msize_9p"),
        ("msize_9p = 1048577", "hypervisor.qemu.msize_9p"),
        (
            "block_device_driver = \"ide\"",
            "hypervisor.qemu.block_device_driver",
        ),
        (
            "block_device_aio = \"posix\"",
            "hypervisor.qemu.block_device_aio",
        ),
        (
            "virtio_fs_cache = \"sometimes\"",
            "hypervisor.qemu.virtio_fs_cache",
        ),
        (
            "virtio_fs_queue_size = 1000",
            "hypervisor.qemu.virtio_fs_queue_size",
        ),
        ("hot_plug_vfio = \"usb\"", "hypervisor.qemu.hot_plug_vfio"),
        ("cold_plug_vfio = \"usb\"", "hypervisor.qemu.cold_plug_vfio"),
        ("accelerator = \"hvf\"", "hypervisor.qemu.accelerator"),
        ("guest_arch = \"mips\"", "hypervisor.qemu.guest_arch"),
        ("rootfs_type = \"btrfs\"", "hypervisor.qemu.rootfs_type"),
        (
            "machine_type = \"q35,accel=kvm\"",
            "hypervisor.qemu.machine_type",
        ),
        ("pcie_root_port = 40", "hypervisor.qemu.pcie_root_port"),
        (
            "seccompsandbox = \"on obsolete=deny\"",
            "hypervisor.qemu.seccompsandbox",
        ),
    ];
    for (body, key) in cases {
        let e = err_of(&minimal(body));
        match &e {
            ConfigError::Invalid { key: k, .. } => assert_eq!(k, key, "for {body:?}: {e}"),
            other => panic!("for {body:?}: {other:?}"),
        }
        assert!(e.to_string().contains(key), "{e}");
    }
}

#[test]
fn an_image_without_a_kernel_is_a_whole_disk_boot_on_q35_only() {
    let c = parse("[hypervisor.qemu]\nimage = \"disk.img\"\nshared_fs = \"none\"\n")
        .unwrap()
        .config;
    assert!(c.disk_boot());
    assert_eq!(c.kernel, None);
    assert_eq!(c.image, Some(PathBuf::from("/etc/sandvm/disk.img")));
    // What cannot apply without a kernel is refused by name.
    for (extra, key) in [
        ("initrd = \"i.img\"", "hypervisor.qemu.initrd"),
        ("kernel_params = \"quiet\"", "hypervisor.qemu.kernel_params"),
        ("rootfs_type = \"xfs\"", "hypervisor.qemu.rootfs_type"),
        ("machine_type = \"microvm\"", "hypervisor.qemu.kernel"),
        ("guest_arch = \"aarch64\"", "hypervisor.qemu.kernel"),
    ] {
        let e = err_of(&format!(
            "[hypervisor.qemu]\nimage = \"disk.img\"\nshared_fs = \"none\"\n{extra}\n"
        ));
        assert!(
            matches!(&e, ConfigError::Invalid { key: k, .. } if k == key),
            "{extra}: {e}"
        );
    }
}

#[test]
fn kernel_is_required() {
    let e = err_of("[hypervisor.qemu]\nshared_fs = \"none\"\n");
    assert!(
        matches!(&e, ConfigError::Invalid { key, .. } if key == "hypervisor.qemu.kernel"),
        "{e}"
    );
}

#[test]
fn allowlists_are_enforced() {
    let e = err_of(&minimal(
        "path = \"/opt/evil/qemu\"\nvalid_hypervisor_paths = [\"/usr/bin/qemu-*\"]",
    ));
    assert!(
        matches!(&e, ConfigError::Invalid { key, reason, .. }
        if key == "hypervisor.qemu.path" && reason.contains("valid_hypervisor_paths")),
        "{e}"
    );
    let ok = parse(&minimal(
        "path = \"/usr/bin/qemu-system-x86_64\"\nvalid_hypervisor_paths = [\"/usr/bin/qemu-*\"]\nshared_fs=\"none\"",
    ));
    assert!(ok.is_ok());
    let e = err_of(&minimal(
        "entropy_source = \"/dev/random\"\nvalid_entropy_sources = [\"/dev/urandom\"]",
    ));
    assert!(
        matches!(&e, ConfigError::Invalid { key, .. } if key == "hypervisor.qemu.entropy_source"),
        "{e}"
    );
    let e = err_of(&minimal(
        "shared_fs = \"virtio-fs\"\nvirtio_fs_daemon = \"/tmp/vfsd\"\nvalid_virtio_fs_daemon_paths = [\"/usr/libexec/*\"]",
    ));
    assert!(
        matches!(&e, ConfigError::Invalid { key, .. } if key == "hypervisor.qemu.virtio_fs_daemon"),
        "{e}"
    );
    let e = err_of(&minimal(
        "file_mem_backend = \"/mnt/x\"\nvalid_file_mem_backends = [\"/dev/shm\"]",
    ));
    assert!(
        matches!(&e, ConfigError::Invalid { key, .. } if key == "hypervisor.qemu.file_mem_backend"),
        "{e}"
    );
}

#[test]
fn missing_table_and_unreadable_file() {
    assert!(matches!(
        err_of("[runtime]\nx = 1\n"),
        ConfigError::NoQemuTable { .. }
    ));
    let e = load(Path::new("/nonexistent/sandvm.toml")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/sandvm.toml"), "{e}");
}

#[test]
fn check_assets_names_the_missing_one() {
    let c = parse(&minimal("path = \"/bin/sh\"\nshared_fs = \"none\""))
        .unwrap()
        .config;
    let e = c.check_assets().unwrap_err();
    assert!(
        matches!(&e, ConfigError::Invalid { key, .. } if key == "hypervisor.qemu.kernel"),
        "{e}"
    );
    assert!(e.to_string().contains("make setup"));
}

#[test]
fn kata_style_file_loads_with_warnings() {
    let body = r#"
[hypervisor.qemu]
path = "/usr/bin/qemu-system-x86_64"
kernel = "/usr/share/kata-containers/vmlinux.container"
image = "/usr/share/kata-containers/kata-containers.img"
machine_type = "q35"
rootfs_type = "ext4"
confidential_guest = false
enable_annotations = ["enable_iommu"]
kernel_params = ""
firmware = ""
machine_accelerators = ""
cpu_features = "pmu=off"
default_vcpus = 1
default_maxvcpus = 0
default_bridges = 1
default_memory = 2048
memory_slots = 10
default_maxmemory = 0
disable_block_device_use = false
shared_fs = "virtio-fs"
virtio_fs_daemon = "/usr/libexec/virtiofsd"
valid_virtio_fs_daemon_paths = ["/usr/libexec/virtiofsd"]
virtio_fs_cache_size = 0
virtio_fs_queue_size = 1024
virtio_fs_extra_args = ["--thread-pool-size=1", "--announce-submounts"]
virtio_fs_cache = "auto"
block_device_driver = "virtio-scsi"
block_device_aio = "io_uring"
enable_iothreads = false
valid_hypervisor_paths = ["/usr/bin/qemu-system-x86_64"]
valid_entropy_sources = ["/dev/urandom","/dev/random",""]
disable_selinux = false
disable_guest_selinux = true

[factory]
enable_template = false
template_path = "/run/vc/vm/template"
vm_cache_number = 0

[agent.kata]
dial_timeout = 45

[runtime]
enable_debug = false
internetworking_model = "tcfilter"
"#;
    let l = parse(body).unwrap();
    assert_eq!(l.config.cpu_features, vec!["pmu=off"]);
    assert_eq!(l.config.shared_fs.extra_args.len(), 2);
    // Kata keys sandvm does not implement pass at their inert values
    // (confidential_guest = false, vm_cache_number = 0...) without a word;
    // only the other components' tables are warned about.
    let names: Vec<String> = l.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        names,
        [
            "Table [agent.kata] is not used by sandvm; ignored",
            "Table [runtime] is not used by sandvm; ignored",
        ]
    );
    let on = body.replace("confidential_guest = false", "confidential_guest = true");
    match err_of(&on) {
        ConfigError::Refused { key, refusal, .. } => {
            assert_eq!(key, "hypervisor.qemu.confidential_guest");
            assert_eq!(refusal, Refusal::Security);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn features_not_built_yet_are_refused_by_key() {
    // virtio-fs (the default) and templating are built now.
    let c = parse(&minimal("")).unwrap().config;
    c.check_supported().unwrap();
    // virtio-mem and VFIO hotplug are built too (qemu::hotplug).
    for body in ["enable_virtio_mem = true", "hot_plug_vfio = \"root-port\""] {
        let c = parse(&minimal(body)).unwrap().config;
        c.check_supported().unwrap();
    }
    for (body, key) in [
        (
            "shared_fs = \"none\"\nrootless = true",
            "hypervisor.qemu.rootless",
        ),
        (
            "shared_fs = \"none\"\ncold_plug_vfio = \"root-port\"",
            "hypervisor.qemu.cold_plug_vfio",
        ),
    ] {
        let e = parse(&minimal(body))
            .unwrap()
            .config
            .check_supported()
            .unwrap_err();
        assert!(e.to_string().contains(key), "{body}: {e}");
    }
    assert!(
        parse(&minimal("shared_fs = \"none\""))
            .unwrap()
            .config
            .check_supported()
            .is_ok()
    );
}

#[test]
fn templating_with_virtio_fs_or_a_file_backend_is_rejected_with_kata_s_message() {
    const MSG: &str = "VM templating has been enabled with either virtio-fs or file backed memory and this configuration will not work";
    for extra in [
        "shared_fs = \"virtio-fs\"",
        "shared_fs = \"virtio-fs-nydus\"",
        "shared_fs = \"none\"\nfile_mem_backend = \"/dev/shm\"",
    ] {
        let e = err_of(&format!(
            "{}\n[factory]\nenable_template = true\n",
            minimal(extra)
        ));
        let m = e.to_string();
        assert!(
            m.contains("factory.enable_template") && m.contains(MSG),
            "{extra}: {m}"
        );
    }
    // Without templating, both are fine.
    parse(&minimal("file_mem_backend = \"/dev/shm\"")).unwrap();
}

#[test]
fn virtio_9p_has_no_daemon_and_kata_s_default_msize() {
    let c = parse(&minimal("shared_fs = \"virtio-9p\"")).unwrap().config;
    assert_eq!(c.shared_fs.kind, SharedFs::Virtio9p);
    assert_eq!(c.shared_fs.msize_9p, DEFAULT_MSIZE_9P);
    assert_eq!(c.shared_fs.daemon, None);
    c.check_supported().unwrap();
    for (v, want) in [
        ("0", 8192),
        ("4096", 4096),
        ("262144", 262144),
        ("1048576", 1048576),
    ] {
        let c = parse(&minimal(&format!(
            "shared_fs = \"virtio-9p\"\nmsize_9p = {v}"
        )))
        .unwrap()
        .config;
        assert_eq!(c.shared_fs.msize_9p, want, "msize_9p = {v}");
    }
    let e = err_of(&minimal("shared_fs = \"virtio-9p\"\nmsize_9p = 100")).to_string();
    assert!(
        e.contains("hypervisor.qemu.msize_9p") && e.contains("4096") && e.contains("1048576"),
        "{e}"
    );
    // valid_virtio_fs_daemon_paths guards a daemon 9p does not have.
    parse(&minimal(
        "shared_fs = \"virtio-9p\"\nvalid_virtio_fs_daemon_paths = [\"/nowhere\"]",
    ))
    .unwrap();
}

#[test]
fn the_vm_cache_keys_are_read_with_kata_s_defaults() {
    let c = parse(&minimal("")).unwrap().config;
    assert_eq!(c.factory.vm_cache_number, 0);
    assert_eq!(
        c.factory.vm_cache_endpoint,
        PathBuf::from("/var/run/kata-containers/cache.sock")
    );
    let c = parse(&format!(
        "{}\n[factory]\nvm_cache_number = 3\nvm_cache_endpoint = \"/run/c.sock\"\n",
        minimal("")
    ))
    .unwrap()
    .config;
    assert_eq!(c.factory.vm_cache_number, 3);
    assert_eq!(c.factory.vm_cache_endpoint, PathBuf::from("/run/c.sock"));
    let e = err_of(&format!(
        "{}\n[factory]\nvm_cache_number = -1\n",
        minimal("")
    ));
    assert!(e.to_string().contains("factory.vm_cache_number"), "{e}");
}

#[test]
fn templating_with_virtio_9p_or_none_is_accepted() {
    for fs in ["virtio-9p", "none"] {
        let c = parse(&format!(
            "{}\n[factory]\nenable_template = true\n",
            minimal(&format!("initrd = \"i\"\nshared_fs = \"{fs}\""))
        ))
        .unwrap()
        .config;
        assert!(c.factory.enable_template, "{fs}");
    }
    let e = err_of(&format!(
        "{}\n[factory]\nenable_template = true\n",
        minimal("shared_fs = \"virtio-fs\"")
    ))
    .to_string();
    assert!(e.contains("virtio-9p"), "the refusal points at 9p: {e}");
}

#[test]
fn keys_the_shared_fs_does_not_use_are_warned_not_dropped() {
    let warned = |body: &str| -> Vec<String> {
        parse(&minimal(body))
            .unwrap()
            .warnings
            .iter()
            .map(|w| w.to_string())
            .filter(|w| w.contains("does nothing"))
            .collect()
    };
    // Kata's defaults (and unset-like values) are quiet whatever shared_fs is.
    let kata_defaults = "virtio_fs_daemon = \"/usr/libexec/virtiofsd\"\nvirtio_fs_cache = \"auto\"\n\
                         virtio_fs_queue_size = 1024\nvirtio_fs_extra_args = []\nmsize_9p = 8192";
    for fs in ["virtio-9p", "none", "virtio-fs"] {
        let w = warned(&format!("shared_fs = \"{fs}\"\n{kata_defaults}"));
        assert!(w.is_empty(), "{fs}: {w:?}");
    }
    let w = warned(
        "shared_fs = \"virtio-9p\"\nvirtio_fs_extra_args = [\"-o\", \"announce_submounts\"]\n\
         virtio_fs_cache = \"never\"\nmsize_9p = 65536",
    );
    assert_eq!(
        w,
        [
            "Key hypervisor.qemu.virtio_fs_cache is set but does nothing with shared_fs = \"virtio-9p\"; ignored",
            "Key hypervisor.qemu.virtio_fs_extra_args is set but does nothing with shared_fs = \"virtio-9p\"; ignored",
        ]
    );
    let w = warned("shared_fs = \"virtio-fs\"\nmsize_9p = 65536");
    assert_eq!(
        w,
        [
            "Key hypervisor.qemu.msize_9p is set but does nothing with shared_fs = \"virtio-fs\"; ignored"
        ]
    );
}

#[test]
fn vhost_user_store_without_hugepages_is_rejected_with_kata_s_message() {
    let e = err_of(&minimal("enable_vhost_user_store = true"));
    let m = e.to_string();
    assert!(
        m.contains("hypervisor.qemu.enable_vhost_user_store")
            && m.contains(
                "Vhost-user-blk/scsi is enabled without HugePages. This configuration will not work"
            ),
        "{m}"
    );
    let c = parse(&minimal(
        "enable_vhost_user_store = true\nenable_hugepages = true\nshared_fs = \"none\"",
    ))
    .unwrap()
    .config;
    assert!(c.vhost_user_store);
    let e = c.check_supported().unwrap_err().to_string();
    assert!(e.contains("enable_vhost_user_store"), "{e}");
}

#[test]
fn qemu_identity_keys() {
    let c = parse(&minimal(
        "qemu_uid = 65534\nqemu_gid = 65534\nqemu_groups = [36, 107]",
    ))
    .unwrap()
    .config;
    assert_eq!(
        c.qemu_user,
        Some(QemuUser {
            uid: 65534,
            gid: 65534,
            groups: vec![36, 107]
        })
    );
    assert_eq!(parse(&minimal("")).unwrap().config.qemu_user, None);
    for (extra, key) in [
        ("qemu_uid = 1000", "hypervisor.qemu.qemu_gid"),
        ("qemu_gid = 1000", "hypervisor.qemu.qemu_uid"),
        ("qemu_groups = [1]", "hypervisor.qemu.qemu_groups"),
        ("qemu_uid = -1\nqemu_gid = 1", "hypervisor.qemu.qemu_uid"),
        (
            "qemu_uid = 1\nqemu_gid = 1\nqemu_groups = [4294967296]",
            "hypervisor.qemu.qemu_groups[0]",
        ),
        ("selinux_label = \"a\\nb\"", "hypervisor.qemu.selinux_label"),
    ] {
        let m = err_of(&minimal(extra)).to_string();
        assert!(m.contains(key), "{extra}: {m}");
    }
    // rootless = true (a generated user) stays refused, pointing at qemu_uid.
    let c = parse(&minimal("rootless = true\nshared_fs = \"none\""))
        .unwrap()
        .config;
    let e = c.check_supported().unwrap_err().to_string();
    assert!(
        e.contains("hypervisor.qemu.rootless") && e.contains("qemu_uid"),
        "{e}"
    );
}

#[test]
fn kata_own_config_with_placeholders_substituted_loads() {
    let text = include_str!("testdata/kata-configuration-qemu.toml");
    let l = parse_str(
        Path::new("/etc/kata-containers/configuration.toml"),
        text,
        &HOST,
    )
    .unwrap();
    let c = &l.config;
    assert_eq!(c.machine_type, "q35");
    assert_eq!(c.memory_mib, 2048);
    assert_eq!(
        c.max_vcpus, HOST.cpus,
        "default_maxvcpus = 0 is the host's CPUs"
    );
    assert_eq!(c.shared_fs.kind, SharedFs::VirtioFs);
    assert_eq!(c.block.aio, "io_uring");
    assert_eq!(c.firmware, None, "an empty path means none");
    let w: Vec<String> = l.warnings.iter().map(|w| w.to_string()).collect();
    // enable_annotations is read now (see config::annotations).
    assert!(!w.iter().any(|x| x.contains("enable_annotations")), "{w:?}");
    // The keys sandvm does not implement are at their inert values there
    // (vhost_user_store_path, disable_guest_selinux = true...): not warned.
    for quiet in ["vhost_user", "disable_guest_selinux"] {
        assert!(!w.iter().any(|x| x.contains(quiet)), "{w:?}");
    }
    for unused in ["[agent.kata]", "[runtime]"] {
        assert_eq!(
            w.iter().filter(|x| x.contains(unused)).count(),
            1,
            "one warning for {unused}: {w:?}"
        );
    }
    assert!(
        !w.iter()
            .any(|x| x.contains("qemu.kernel ") || x.contains("qemu.path ")),
        "{w:?}"
    );
}

/// What a file of `testdata/bad/` declares in its leading comments.
struct Expect {
    /// `# expect-key: K`: the dotted key the error must name.
    key: String,
    /// `# expect-line: N`: a syntax error, on this line.
    line: Option<usize>,
    /// `# expect-refusal: security | not-implemented | unknown`: a key sandvm
    /// refuses (a [`ConfigError::Refused`] for this reason, or a
    /// [`ConfigError::UnknownKey`]).
    refusal: Option<String>,
}

/// The `# expect-refusal:` word for a refused key.
fn refusal_word(e: &ConfigError) -> Option<&'static str> {
    match e {
        ConfigError::Refused {
            refusal: Refusal::Security,
            ..
        } => Some("security"),
        ConfigError::Refused {
            refusal: Refusal::NotImplemented,
            ..
        } => Some("not-implemented"),
        ConfigError::UnknownKey { .. } => Some("unknown"),
        _ => None,
    }
}

fn expectation(text: &str) -> Option<Expect> {
    let field = |name: &str| {
        text.lines()
            .take_while(|l| l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    Some(Expect {
        key: field("# expect-key:")?,
        line: field("# expect-line:").map(|n| n.parse().expect("expect-line is a number")),
        refusal: field("# expect-refusal:"),
    })
}

#[test]
fn bad_config_corpus_is_refused_naming_each_key() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config/testdata/bad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "only {} bad configs", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let Some(want) = expectation(&text) else {
            failures.push(format!("{name}: no `# expect-key:` line"));
            continue;
        };
        let file = Path::new("/etc/sandvm/bad").join(&name);
        let got = std::panic::catch_unwind(|| parse_str(&file, &text, &HOST));
        let e = match got {
            Err(_) => {
                failures.push(format!("{name}: panicked"));
                continue;
            }
            Ok(Ok(_)) => {
                failures.push(format!("{name}: accepted"));
                continue;
            }
            Ok(Err(e)) => e,
        };
        let msg = e.to_string();
        let problem = match (&e, want.line) {
            (ConfigError::Refused { key, .. } | ConfigError::UnknownKey { key, .. }, None)
                if *key == want.key && want.refusal.as_deref() == refusal_word(&e) =>
            {
                None
            }
            (ConfigError::Invalid { key, .. }, None)
                if *key == want.key && want.refusal.is_none() =>
            {
                None
            }
            (ConfigError::Syntax { key, line, .. }, Some(l)) if *key == want.key && *line == l => {
                None
            }
            (ConfigError::NoQemuTable { .. }, None) if msg.contains(&want.key) => None,
            _ => Some(format!(
                "{name}: want key {} (line {:?}, refusal {:?}), got {e:?}",
                want.key, want.line, want.refusal
            )),
        };
        failures.extend(problem);
        if !msg.contains(&want.key) || !msg.contains(&file.display().to_string()) {
            failures.push(format!(
                "{name}: message does not name the key and file: {msg}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn versioned_and_per_arch_machine_types() {
    for (arch, m) in [
        ("x86_64", "q35"),
        ("x86_64", "pc-q35-9.2"),
        ("x86_64", "microvm"),
        ("aarch64", "virt"),
        ("aarch64", "virt-10.0"),
        ("ppc64le", "pseries-9.1"),
        ("s390x", "s390-ccw-virtio-10.0"),
    ] {
        let c = parse(&minimal(&format!(
            "guest_arch = \"{arch}\"\nmachine_type = \"{m}\""
        )))
        .unwrap_or_else(|e| panic!("{arch} {m}: {e}"))
        .config;
        assert_eq!(c.machine_type, m);
    }
    for (arch, m) in [
        ("x86_64", "pc"),
        ("x86_64", "pc-q35-"),
        ("x86_64", "pc-i440fx-9.2"),
        ("aarch64", "q35"),
        ("aarch64", "virtual"),
        ("s390x", "pseries"),
    ] {
        let e = err_of(&minimal(&format!(
            "guest_arch = \"{arch}\"\nmachine_type = \"{m}\""
        )));
        assert!(
            matches!(&e, ConfigError::Invalid { key, .. } if key == "hypervisor.qemu.machine_type"),
            "{arch} {m}: {e}"
        );
    }
}

#[test]
fn memory_keys_are_bounded_so_maxmem_cannot_overflow() {
    let max = MAX_MEMORY_MIB as i64;
    let c = parse(&minimal(&format!(
        "default_maxmemory = {max}\nmemory_offset = {max}"
    )))
    .unwrap()
    .config;
    assert!(c.max_memory_mib.checked_add(c.memory_offset_mib).is_some());
    for key in ["default_memory", "default_maxmemory", "memory_offset"] {
        let e = err_of(&minimal(&format!("{key} = {}", max + 1)));
        assert!(
            matches!(&e, ConfigError::Invalid { key: k, .. } if *k == format!("hypervisor.qemu.{key}")),
            "{key}: {e}"
        );
    }
}

#[test]
fn kernel_params_split_at_any_whitespace_and_keep_quotes() {
    let c = parse(&minimal(
        "kernel_params = \"\"\"\n  console=hvc0\n\tinit=\"/bin/sh -x\"\n\"\"\"",
    ))
    .unwrap()
    .config;
    assert_eq!(c.kernel_params, ["console=hvc0", "init=\"/bin/sh", "-x\""]);
}

#[test]
fn repeated_host_ports_and_fw_cfg_names_are_refused_but_any_port_may_repeat() {
    let c = parse(&minimal(
        "port_map = [{ guest = 80 }, { guest = 81 }, { guest = 53, host = 5353, protocol = \"udp\" }, { guest = 54, host = 5353 }]",
    ))
    .unwrap()
    .config;
    assert_eq!(c.extras.port_map.len(), 4);
    let e = err_of(&minimal(
        "port_map = [{ guest = 53, host = 5353, protocol = \"both\" }, { guest = 54, host = 5353, protocol = \"udp\" }]",
    ));
    assert!(e.to_string().contains("hypervisor.qemu.port_map[1]"), "{e}");
}

#[test]
fn pflash_counts_per_machine() {
    for ok in [
        "pflashes = [\"/a.fd\", \"/b.fd\"]",
        "firmware = \"/code.fd\"\nfirmware_volume = \"/vars.fd\"",
        "guest_arch = \"aarch64\"\npflashes = [\"/a.fd\", \"/b.fd\"]",
        "guest_arch = \"s390x\"\npflashes = []",
    ] {
        parse(&minimal(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        "pflashes = [\"/a.fd\", \"/b.fd\", \"/c.fd\"]",
        "guest_arch = \"s390x\"\npflashes = [\"/a.fd\"]",
    ] {
        let e = err_of(&minimal(bad));
        assert!(
            matches!(&e, ConfigError::Invalid { key, .. } if key == "hypervisor.qemu.pflashes"),
            "{bad}: {e}"
        );
    }
}

/// Found by the `config_load` fuzzer: a `machine_accelerators` option name
/// QEMU cannot parse loaded, then failed qemu-config's check at `create`.
#[test]
fn machine_option_names_are_checked_at_load() {
    let e = err_of(&minimal("machine_accelerators = \"nvdimm)=on\u{1400}\""));
    assert!(
        matches!(&e, ConfigError::Invalid { key, .. } if key == "hypervisor.qemu.machine_accelerators"),
        "{e}"
    );
    let c = parse(&minimal(
        "machine_accelerators = \"nvdimm=on, kernel_irqchip=split,hmat\"",
    ))
    .unwrap()
    .config;
    assert_eq!(
        c.machine_accelerators,
        ["nvdimm=on", "kernel_irqchip=split", "hmat"]
    );
}

#[test]
fn shipped_configs_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            parse_str(&path, &text, &HOST).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 8, "{n} configs");
}

#[test]
fn numa_nodes_follow_the_mapping_or_the_host_and_bad_mappings_are_refused_by_key() {
    let two_host_nodes = HostInfo {
        numa_nodes: 0b11,
        ..HOST
    };
    let with = |extra: &str, host: &HostInfo| {
        parse_str(Path::new("/etc/sandvm/test.toml"), &minimal(extra), host)
    };
    assert!(parse(&minimal("")).unwrap().config.numa.is_empty());
    let c = with("enable_numa = true", &two_host_nodes).unwrap().config;
    assert_eq!(c.numa, vec![0b01, 0b10], "one guest node per host node");
    let c = with(
        "enable_numa = true\nnuma_mapping = [\"0\", \"0-1\"]",
        &two_host_nodes,
    )
    .unwrap()
    .config;
    assert_eq!(c.numa, vec![0b01, 0b11]);
    let cases = [
        (
            "numa_mapping = [\"0\"]",
            "hypervisor.qemu.numa_mapping",
            "enable_numa",
        ),
        (
            "enable_numa = true\nnuma_mapping = [\"0\", \"1\"]",
            "hypervisor.qemu.numa_mapping[1]",
            "not online",
        ),
        (
            "enable_numa = true\nnuma_mapping = [\"x\"]",
            "hypervisor.qemu.numa_mapping[0]",
            "node number",
        ),
        (
            "enable_numa = true\ndefault_maxvcpus = 1\nnuma_mapping = [\"0\", \"0\"]",
            "hypervisor.qemu.numa_mapping",
            "vCPUs",
        ),
        (
            "enable_numa = true\n[factory]\nenable_template = true",
            "hypervisor.qemu.enable_numa",
            "template",
        ),
    ];
    for (extra, key, why) in cases {
        let body = if extra.contains("[factory]") {
            format!("[hypervisor.qemu]\nkernel = \"vmlinuz\"\nshared_fs = \"none\"\n{extra}\n")
        } else {
            minimal(extra)
        };
        match parse(&body) {
            Err(ConfigError::Invalid { key: k, reason, .. }) => {
                assert_eq!(k, key, "{extra}");
                assert!(reason.contains(why), "{extra}: {reason}");
            }
            other => panic!("{extra}: {other:?}"),
        }
    }
}
