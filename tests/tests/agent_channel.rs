//! The agent channel, end to end: a line the host writes on the channel
//! `get_agent_socket` names comes back from the guest (the guest agent in
//! echo mode, `sandvm.agent=echo`), over virtio-serial and over hybrid vsock
//! (vhost-device-vsock).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use runtime::{AgentSocket, CreateOptions, Hypervisor, Qemu, StateRoot};
use sandvm_tests::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// A guard on each wait (the guest may still be starting its agent).
const GUARD: Duration = Duration::from_secs(120);

async fn boot(env: &Arc<Env>, cfg: &std::path::Path, id: &str) -> Qemu {
    let vm = Qemu::new(
        StateRoot::new(&env.root),
        runtime::load_config(cfg).unwrap().config,
    );
    vm.create_vm(id, CreateOptions::default()).await.unwrap();
    vm.start_vm(Duration::from_secs(120)).await.unwrap();
    let (env, id) = (Arc::clone(env), id.to_string());
    tokio::task::spawn_blocking(move || env.wait_ready(&id))
        .await
        .unwrap();
    vm
}

/// Write `line` and read lines until it comes back; resend every 2 s (the
/// agent may open its end after the ready line).
async fn echo(stream: UnixStream, line: &str) -> String {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    let work = async {
        loop {
            w.write_all(format!("{line}\n").as_bytes()).await.unwrap();
            match tokio::time::timeout(Duration::from_secs(2), lines.next_line()).await {
                Ok(Ok(Some(got))) if got.trim() == line => return got,
                Ok(Ok(Some(_))) | Err(_) => continue,
                Ok(Ok(None)) => panic!("the channel closed"),
                Ok(Err(e)) => panic!("reading the channel: {e}"),
            }
        }
    };
    tokio::time::timeout(GUARD, work)
        .await
        .expect("no echo from the guest")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_comes_back_over_virtio_serial() {
    let env = Arc::new(Env::new("chser"));
    let cfg = env.config("s.toml", "kernel_params = \"sandvm.agent=echo\"\n");
    let vm = boot(&env, &cfg, "s1").await;
    let AgentSocket::Serial { path } = vm.get_agent_socket().unwrap() else {
        panic!("not virtio-serial: {:?}", vm.get_agent_socket())
    };
    let got = echo(
        UnixStream::connect(&path).await.unwrap(),
        "hello over virtio-serial",
    )
    .await;
    assert_eq!(got.trim(), "hello over virtio-serial");
    // A second connection after the first hung up works too.
    let got = echo(UnixStream::connect(&path).await.unwrap(), "and again").await;
    assert_eq!(got.trim(), "and again");
    vm.stop_vm(false).await.unwrap();
    env.assert_clean();
}

/// Connect to vhost-device-vsock's socket and ask for the guest's `port`,
/// until it answers `OK` (the guest listens once its agent runs).
async fn vsock_connect(path: &std::path::Path, port: u32) -> UnixStream {
    let work = async {
        loop {
            let mut s = UnixStream::connect(path).await.unwrap();
            s.write_all(format!("CONNECT {port}\n").as_bytes())
                .await
                .unwrap();
            let mut reader = BufReader::new(&mut s);
            let mut ok = String::new();
            let read =
                tokio::time::timeout(Duration::from_secs(2), reader.read_line(&mut ok)).await;
            if matches!(read, Ok(Ok(n)) if n > 0) && ok.starts_with("OK ") {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(GUARD, work)
        .await
        .expect("vhost-device-vsock never answered OK")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_comes_back_over_hybrid_vsock() {
    let env = Arc::new(Env::new("chvs"));
    let cfg = env.config(
        "v.toml",
        &format!(
            "kernel_params = \"sandvm.agent=echo\"\nagent_channel = \"hybrid-vsock\"\n\
             vsock_daemon = \"{}\"\n",
            tool("vhost-device-vsock").display()
        ),
    );
    let vm = boot(&env, &cfg, "v1").await;
    let AgentSocket::HybridVsock { path, port } = vm.get_agent_socket().unwrap() else {
        panic!("not hybrid vsock: {:?}", vm.get_agent_socket())
    };
    assert!(
        vm.processes()
            .iter()
            .any(|(r, _)| r == "vhost-device-vsock"),
        "{:?}",
        vm.processes()
    );
    let got = echo(vsock_connect(&path, port).await, "hello over hybrid vsock").await;
    assert_eq!(got.trim(), "hello over hybrid vsock");
    vm.stop_vm(false).await.unwrap();
    env.assert_clean();
}
