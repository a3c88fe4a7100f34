//! pvpanic: a guest that panics on purpose is dumped (ELF vmcore) by the
//! sandbox supervisor into guest_memory_dump_path, and stop cleans up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sandvm_tests::*;
use std::path::PathBuf;
use std::time::Duration;

#[test]
fn guest_panic_is_dumped_as_an_elf_vmcore() {
    let env = Env::new("pvpanic");
    let dumps = DumpDir(PathBuf::from(format!(
        "/tmp/svt-dumps-{}",
        std::process::id()
    )));
    let cfg = env.config(
        "p.toml",
        &format!("guest_memory_dump_path = \"{}\"\n", dumps.0.display()),
    );
    let c = cfg.to_str().unwrap();
    env.ok(&["create", "--config", c, "--id", "pp"]);
    env.ok(&["start", "pp"]);
    let st = json(&env.ok(&["status", "pp", "--json"]));
    let qemu_pid = st["pid"].as_i64().unwrap() as i32;
    env.wait_ready("pp");
    // The events monitor exists, and a supervisor holds it.
    assert!(env.root.join("pp/events.sock").exists());
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.root.join("pp/state.json")).unwrap()).unwrap();
    let sup = state["supervisor_pid"]
        .as_i64()
        .expect("a supervisor pid is recorded") as i32;
    assert!(std::path::Path::new(&format!("/proc/{sup}")).exists());

    // Panic the guest. Nothing comes back on the console.
    let _ = env.sandvm(&["console", "pp", "--send", "echo c > /proc/sysrq-trigger"]);

    let dir = dumps.0.join("pp");
    let dumped = eventually(Duration::from_secs(120), || {
        std::fs::read_dir(&dir).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("vmcore-"))
        }) && !process_alive(qemu_pid)
    });
    let sup_log = std::fs::read_to_string(env.root.join("pp/supervisor.log")).unwrap_or_default();
    assert!(
        dumped,
        "no vmcore in {} after the panic; supervisor log:\n{sup_log}",
        dir.display()
    );
    let core = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let bytes = std::fs::read(&core).unwrap();
    assert_eq!(
        &bytes[..4],
        b"\x7fELF",
        "{} is not an ELF file",
        core.display()
    );
    assert!(
        bytes.len() > 64 << 20,
        "the dump holds the guest's memory ({} bytes)",
        bytes.len()
    );
    assert!(sup_log.contains("guest panicked"), "{sup_log}");

    // QEMU ended after the dump; stop cleans up the rest, supervisor included.
    assert_eq!(
        json(&env.ok(&["status", "pp", "--json"]))["state"],
        "stopped"
    );
    env.ok(&["stop", "pp"]);
    assert!(!process_alive(sup));
    env.assert_clean();
}
