//! VM templating end to end: one template, five clones running at once, each
//! with its own guest; stopping them leaves the template usable. Real QEMU
//! (TCG), the real guest and CLI; each test ends with the leak check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sandvm_tests::*;
use std::path::Path;

fn clone(env: &Env, cfg: &Path, id: &str) {
    env.ok(&["create", "--config", cfg.to_str().unwrap(), "--id", id]);
    env.ok(&["start", id]);
}

#[test]
fn five_clones_run_at_once_independently_and_the_template_survives() {
    let env = Env::new("tmpl");
    let tp = TemplateDir::new("five");
    let cfg = template_config(&env, "t.toml", &tp.0, "");
    let c = cfg.to_str().unwrap();

    // No template yet: a clone is refused with a clear error.
    let out = env.sandvm(&["create", "--config", c, "--id", "early"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("template create"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    env.ok(&["template", "create", "--config", c]);
    for f in ["memory", "state", "template.json"] {
        assert!(tp.0.join(f).is_file(), "{f} missing in the template");
    }
    // x-ignore-shared: guest RAM is not in the state file.
    let state = std::fs::metadata(tp.0.join("state")).unwrap().len();
    let memory = std::fs::metadata(tp.0.join("memory")).unwrap().len();
    assert!(state < memory / 4, "state {state} bytes vs memory {memory}");
    // The template VM is gone.
    assert!(env.sandboxes().is_empty(), "{:?}", env.sandboxes());

    let ids: Vec<String> = (1..=5).map(|i| format!("c{i}")).collect();
    for id in &ids {
        clone(&env, &cfg, id);
    }
    // All five run at the same time, each from the template's memory file.
    for id in &ids {
        let st = json(&env.ok(&["status", id, "--json"]));
        assert_eq!(st["state"], "running", "{id}: {st}");
        let pid = st["pid"].as_i64().unwrap();
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        assert!(
            cmd.contains("share=off") && cmd.contains("-incoming defer"),
            "{cmd}"
        );
    }
    // Each reaches a guest shell.
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            env.guest(id, &format!("echo $(({i}+100))")),
            format!("{}", i + 100)
        );
    }
    // Independent: a file in one clone's tmpfs is not in another's.
    env.guest("c1", "echo mine > /tmp/only-in-c1");
    assert_eq!(env.guest("c1", "cat /tmp/only-in-c1"), "mine");
    for id in &ids[1..] {
        assert_eq!(
            env.guest(id, "test -e /tmp/only-in-c1 && echo present || echo absent"),
            "absent",
            "{id}"
        );
    }
    for id in &ids {
        env.ok(&["stop", id]);
    }
    // The template is still usable: a sixth clone boots from it.
    clone(&env, &cfg, "c6");
    assert_eq!(
        env.guest(
            "c6",
            "test -e /tmp/only-in-c1 && echo present || echo absent"
        ),
        "absent"
    );
    env.ok(&["stop", "c6"]);

    env.ok(&["template", "delete", "--config", c]);
    assert!(!tp.0.exists());
    env.assert_clean();
}

#[test]
fn kata_template_rules_are_clear_errors() {
    let env = Env::new("tmplrules");
    let tp = TemplateDir::new("rules");
    let g = guest();
    // Initrd only: an image is refused, naming the key.
    let cfg = template_config(
        &env,
        "img.toml",
        &tp.0,
        &format!("image = \"{}\"", g.rootfs.display()),
    );
    let out = env.sandvm(&["template", "create", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("hypervisor.qemu.image"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A template made for 512 MiB does not serve a 256 MiB config.
    std::fs::create_dir_all(&tp.0).unwrap();
    for f in ["memory", "state"] {
        std::fs::write(tp.0.join(f), b"").unwrap();
    }
    let small = template_config(&env, "small.toml", &tp.0, "");
    let loaded = runtime::config::load(&small).unwrap().config;
    let meta = serde_json::json!({
        "version": 1, "memory_mib": 512, "vcpus": 1, "max_vcpus": 2,
        "machine_type": loaded.machine_type, "kernel": loaded.kernel,
        "initrd": loaded.initrd, "qemu_path": loaded.qemu_path, "created_unix": 0,
    });
    std::fs::write(tp.0.join("template.json"), meta.to_string()).unwrap();
    let out = env.sandvm(&["create", "--config", small.to_str().unwrap(), "--id", "x"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("default_memory") && err.contains("512 MiB"),
        "{err}"
    );
    env.ok(&["template", "delete", "--config", small.to_str().unwrap()]);
    env.assert_clean();
}

/// PCI device id of a (transitional) virtio-9p device.
const VIRTIO_9P_PCI_ID: u64 = 0x1009;

#[test]
fn a_virtio_9p_template_migrates_and_each_clone_s_qemu_serves_its_own_share() {
    let env = Env::new("tmpl9p");
    let tp = TemplateDir::new("9p");
    let cfg = env.config_9p(
        "t9p.toml",
        &format!(
            "msize_9p = 65536\n[factory]\nenable_template = true\ntemplate_path = \"{}\"\n",
            tp.0.display()
        ),
    );
    let c = cfg.to_str().unwrap();
    // The template VM has the 9p device, unmounted: QEMU saves its state
    // (a mounted 9p export would block the migration).
    env.ok(&["template", "create", "--config", c]);
    let meta = json(&std::fs::read_to_string(tp.0.join("template.json")).unwrap());
    assert_eq!(meta["shared_fs"], "Virtio9p", "{meta}");
    assert!(env.sandboxes().is_empty(), "{:?}", env.sandboxes());

    // A clone with its own share, and one with the default share.
    let share = std::path::PathBuf::from(format!("/tmp/svt-9pshare-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&share);
    std::fs::create_dir_all(&share).unwrap();
    let s = share.to_str().unwrap();
    env.ok(&["create", "--config", c, "--id", "k1", "--share", s]);
    env.ok(&["start", "k1"]);
    clone(&env, &cfg, "k2");
    let fsdev = |share: &str| {
        format!(
            "-fsdev local,id=extra-9p-kataShared,path={share},security_model=none,multidevs=remap"
        )
    };
    let device =
        "-device virtio-9p-pci,id=virtio-9p0,fsdev=extra-9p-kataShared,mount_tag=kataShared";
    let k2_share = env.root.join("k2").join("shared");
    for (id, share) in [("k1", s), ("k2", k2_share.to_str().unwrap())] {
        let cmd = env.qemu_cmdline(id);
        assert!(cmd.contains(&fsdev(share)), "{id}: {cmd}");
        assert!(cmd.contains(device), "{id}: {cmd}");
        assert!(
            cmd.contains("share=off") && cmd.contains("-incoming defer"),
            "{id}: {cmd}"
        );
        assert!(!cmd.contains("vhost-user-fs"), "{id}: {cmd}");
        // QEMU built the device, on PCI, after the migration.
        let pci = env.pci_devices(id);
        let (_, dev) = pci
            .get("virtio-9p0")
            .unwrap_or_else(|| panic!("{id}: no virtio-9p0 in query-pci: {pci:?}"));
        assert_eq!(*dev, VIRTIO_9P_PCI_ID, "{id}");
        // The guest runs (its kernel has no 9p driver and ignores the device).
        assert_eq!(env.guest(id, "echo $((40+2))"), "42", "{id}");
    }
    // The guest sees the device the template's guest saw.
    assert_eq!(
        env.guest("k1", "grep -l 0x1009 /sys/bus/pci/devices/*/device | wc -l"),
        "1"
    );
    for id in ["k1", "k2"] {
        env.ok(&["stop", id]);
    }
    env.ok(&["template", "delete", "--config", c]);
    let _ = std::fs::remove_dir_all(&share);
    env.assert_clean();
}

#[test]
fn a_clone_of_a_template_with_another_shared_fs_is_refused_by_key() {
    let env = Env::new("tmpl9pmix");
    let tp = TemplateDir::new("9pmix");
    std::fs::create_dir_all(&tp.0).unwrap();
    for f in ["memory", "state"] {
        std::fs::write(tp.0.join(f), b"").unwrap();
    }
    // A template built with shared_fs = "none" (a template.json of before 9p).
    let none = template_config(&env, "none.toml", &tp.0, "");
    let loaded = runtime::config::load(&none).unwrap().config;
    let meta = serde_json::json!({
        "version": 1, "memory_mib": loaded.memory_mib, "vcpus": loaded.vcpus,
        "max_vcpus": loaded.max_vcpus, "machine_type": loaded.machine_type,
        "kernel": loaded.kernel, "initrd": loaded.initrd,
        "qemu_path": loaded.qemu_path, "created_unix": 0,
    });
    std::fs::write(tp.0.join("template.json"), meta.to_string()).unwrap();
    let p9 = env.config_9p(
        "p9.toml",
        &format!(
            "[factory]\nenable_template = true\ntemplate_path = \"{}\"\n",
            tp.0.display()
        ),
    );
    let out = env.sandvm(&["create", "--config", p9.to_str().unwrap(), "--id", "x"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hypervisor.qemu.shared_fs") && err.contains("virtio-9p"),
        "{err}"
    );
    env.ok(&["template", "delete", "--config", none.to_str().unwrap()]);
    env.assert_clean();
}
