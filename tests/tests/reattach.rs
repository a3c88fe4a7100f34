//! Reattach: the library starts a sandbox in this process, then separate CLI
//! processes find it through its saved state. Alone in its own test binary,
//! so the count of this process's open fds is not disturbed by other tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sandvm_tests::*;
use std::time::Duration;

#[tokio::test(flavor = "current_thread")]
async fn library_start_then_cli_reattaches() {
    use runtime::{CreateOptions, Hypervisor};
    let env = Env::new("reattach");
    let cfg_path = env.config("r.toml", "");
    let cfg = runtime::config::load(&cfg_path).unwrap().config;
    let fds_before = open_fds();
    {
        let q = runtime::Qemu::new(runtime::StateRoot::new(&env.root), cfg);
        q.create_vm("r1", CreateOptions::default()).await.unwrap();
        let rep = q.start_vm(Duration::from_secs(30)).await.unwrap();
        assert!(rep.qmp_ready_ms >= rep.spawn_ms);
        assert_eq!(q.get_pids().len(), 1);
        let tids = q.get_thread_ids().await.unwrap();
        assert_eq!(tids.vcpus.len(), 1);
        // Dropping the handle releases the lock; the VM keeps running.
    }
    let log = env.root.join("r1/console.log");
    assert!(eventually(Duration::from_secs(120), || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.contains(READY))
    }));
    assert_eq!(
        json(&env.ok(&["status", "r1", "--json"]))["state"],
        "running"
    );
    assert_eq!(env.guest("r1", "echo $((1+1))"), "2");
    env.ok(&["stop", "r1"]);
    env.assert_clean();
    // Let the runtime's background tasks (the QMP reader and writer) see that
    // their handle is gone and finish.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fds_after = open_fds();
    assert_eq!(
        fds_after.len(),
        fds_before.len(),
        "the runtime leaked fds in the test process: before {fds_before:?}, after {fds_after:?}"
    );
}
