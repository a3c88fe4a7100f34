//! Endurance: 100 create/start/stop cycles in one process leak no fds and no
//! memory. Alone in its own test binary, so nothing else runs in the process
//! whose fds and RSS are measured.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sandvm_tests::*;
use std::time::Duration;

#[tokio::test(flavor = "current_thread")]
async fn hundred_cycles_leak_no_fds_or_memory() {
    use runtime::{CreateOptions, Hypervisor};
    use runtime::{Qemu, StopMode};
    let env = Env::new("fcycles");
    let cfg = runtime::config::load(&env.config("c.toml", ""))
        .unwrap()
        .config;
    let root = runtime::StateRoot::new(&env.root);
    let cycle = |i: usize| {
        let (root, cfg) = (root.clone(), cfg.clone());
        async move {
            let q = Qemu::new(root, cfg);
            q.create_vm(&format!("c{i}"), CreateOptions::default())
                .await
                .unwrap();
            q.start_vm(Duration::from_secs(60)).await.unwrap();
            q.stop_with(StopMode::Force).await.unwrap();
        }
    };
    // Warm up: the runtime's lazily created pieces (tokio drivers) exist after one cycle.
    cycle(0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (fds0, rss0) = (open_fds(), status_kib("self", "VmRSS"));
    for i in 1..=100 {
        cycle(i).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (fds1, rss1) = (open_fds(), status_kib("self", "VmRSS"));
    eprintln!(
        "100 cycles: fds {} -> {}, RSS {rss0} KiB -> {rss1} KiB",
        fds0.len(),
        fds1.len()
    );
    assert_eq!(fds0, fds1, "fds leaked over 100 cycles");
    assert!(
        rss1 < rss0 + 4096,
        "RSS grew from {rss0} KiB to {rss1} KiB over 100 cycles"
    );
    env.assert_clean();
}
