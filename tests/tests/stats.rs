//! `sandvm stats`: the figures exist, are plausible, and agree with /proc.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sandvm_tests::*;
use std::time::Duration;

#[test]
fn stats_agree_with_proc() {
    let env = Env::new("stats");
    let cfg = env.config("s.toml", "");
    env.ok(&["create", "--config", cfg.to_str().unwrap(), "--id", "st"]);
    env.ok(&["start", "st"]);
    let log = env.root.join("st/console.log");
    assert!(eventually(Duration::from_secs(120), || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.contains("SANDVM-GUEST-READY"))
    }));
    let pid = json(&env.ok(&["status", "st", "--json"]))["pid"]
        .as_i64()
        .unwrap();
    let s = json(&env.ok(&["stats", "st", "--json"]));
    let qemu = &s["processes"][0];
    assert_eq!(qemu["role"], "qemu");
    assert_eq!(qemu["pid"].as_i64(), Some(pid));
    assert!(
        qemu["cpu_ms"].as_u64().unwrap() > 0,
        "a booted guest used CPU: {s}"
    );
    let rss = qemu["rss_kib"].as_u64().unwrap();
    let proc_rss = status_kib(&pid.to_string(), "VmRSS");
    // Read a moment apart while the guest idles: agree within 10%.
    assert!(
        rss.abs_diff(proc_rss) * 10 < proc_rss,
        "stats RSS {rss} KiB vs /proc {proc_rss} KiB"
    );
    let pss = qemu["pss_kib"].as_u64().unwrap();
    assert!(
        pss > 0 && pss <= rss + 1024,
        "PSS {pss} KiB vs RSS {rss} KiB"
    );
    assert!(qemu["threads"].as_i64().unwrap() >= 2);
    let vcpus = s["vcpu_threads"].as_array().unwrap();
    assert_eq!(vcpus.len(), 1, "{s}");
    let tid = vcpus[0]["thread_id"].as_i64().unwrap();
    assert!(
        std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists(),
        "vCPU thread {tid} is a thread of QEMU {pid}"
    );
    // QEMU and the detached supervisor the CLI starts.
    let procs = s["processes"].as_array().unwrap();
    assert!(procs.iter().any(|p| p["role"] == "supervisor"), "{s}");
    let sum: u64 = procs.iter().map(|p| p["pss_kib"].as_u64().unwrap()).sum();
    assert_eq!(s["total_pss_kib"].as_u64(), Some(sum));
    env.ok(&["stop", "st"]);
    env.assert_clean();
}
