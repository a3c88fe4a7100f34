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
