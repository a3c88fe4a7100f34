//! Fault handling against a real QEMU: kill, stop, cancellation, concurrency.
#![allow(missing_docs)]

mod common;

use std::time::Duration;

use common::{NONE, start};
use nix::sys::signal::Signal;
use qmp::Error;

const BOUND: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_50_in_flight_fails_all_with_disconnected() {
    let (qemu, client) = start(NONE).await;
    let closed = client.closed();
    // Stopped QEMU cannot answer: all 50 are surely in flight at the kill.
    qemu.signal(Signal::SIGSTOP);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let c = client.with_timeout(Some(BOUND));
            tokio::spawn(async move { c.query_status().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    qemu.signal(Signal::SIGKILL);
    for t in tasks {
        let r = tokio::time::timeout(BOUND, t)
            .await
            .expect("call finishes")
            .expect("task");
        assert_eq!(r, Err(Error::Disconnected));
    }
    assert_eq!(
        tokio::time::timeout(BOUND, closed).await.expect("closed"),
        Error::Disconnected
    );
    assert_eq!(client.query_status().await, Err(Error::Disconnected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_busy_gives_ok_or_disconnected() {
    let (qemu, client) = start(NONE).await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.query_status().await.map(|_| ()) })
        })
        .collect();
    qemu.signal(Signal::SIGKILL);
    for t in tasks {
        let r = tokio::time::timeout(BOUND, t)
            .await
            .expect("call finishes")
            .expect("task");
        assert!(matches!(r, Ok(()) | Err(Error::Disconnected)), "{r:?}");
    }
    tokio::time::timeout(BOUND, client.closed())
        .await
        .expect("closed");
    assert_eq!(
        client.execute("query-status", None).await,
        Err(Error::Disconnected)
    );
}

#[tokio::test]
async fn sigstop_times_out_then_works_after_sigcont() {
    let (qemu, client) = start(NONE).await;
    qemu.signal(Signal::SIGSTOP);
    let short = Duration::from_millis(200);
    assert_eq!(
        client
            .execute_with_timeout("query-status", None, short)
            .await,
        Err(Error::Timeout {
            command: "query-status".into()
        })
    );
    assert_eq!(
        client.with_timeout(Some(short)).query_kvm().await,
        Err(Error::Timeout {
            command: "query-kvm".into()
        })
    );
    qemu.signal(Signal::SIGCONT);
    // The late replies to the timed-out calls are discarded; new calls match.
    let client = client.with_timeout(Some(BOUND));
    assert!(client.query_status().await.unwrap().running);
    let v = client.query_version().await.unwrap();
    assert!(v.qemu.major >= 10);
    assert!(!client.query_kvm().await.unwrap().enabled);
    assert!(!client.is_closed());
}

#[tokio::test]
async fn dropped_futures_do_not_desync() {
    let (qemu, client) = start(NONE).await;
    qemu.signal(Signal::SIGSTOP);
    // Futures dropped after their command was queued.
    for i in 0..10 {
        let name = format!("x-dropped-{i}");
        let fut = client.execute(&name, None);
        let _ = tokio::time::timeout(Duration::from_millis(10), fut).await;
    }
    // Spawned tasks aborted while waiting.
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.query_status().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for h in &handles {
        h.abort();
    }
    qemu.signal(Signal::SIGCONT);
    for h in handles {
        assert!(h.await.unwrap_err().is_cancelled());
    }
    // Alternate commands with distinct reply shapes: any mix-up would fail.
    for i in 0..20 {
        let name = format!("x-after-{i}");
        match client.execute(&name, None).await {
            Err(Error::Qmp { desc, .. }) => assert!(desc.contains(&name), "{desc}"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(client.query_status().await.unwrap().running);
        assert!(client.query_version().await.unwrap().qemu.major >= 10);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_calls_each_get_their_own_reply() {
    let (_qemu, client) = start(NONE).await;
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move {
                let status = c.query_status().await?;
                // Unknown command names come back in the error text: an echo
                // that proves each reply went to the caller that asked.
                let name = format!("x-echo-{i}");
                let echo = c.execute(&name, None).await;
                let Err(Error::Qmp { desc, .. }) = echo else {
                    return Err(Error::Disconnected);
                };
                assert_eq!(desc, format!("The command {name} has not been found"));
                Ok::<_, Error>(status.running)
            })
        })
        .collect();
    for t in tasks {
        let running = tokio::time::timeout(BOUND, t)
            .await
            .expect("bounded")
            .expect("task")
            .expect("call ok");
        assert!(running);
    }
}
