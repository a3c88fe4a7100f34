//! The agent's networking calls against the real guest (no containerd): a
//! VM with a NIC on a tap of the test (cold-plugged with a MAC of the
//! test); `UpdateInterface` finds it by that MAC, renames it, sets its MTU
//! and address; `UpdateRoutes` adds a route through a gateway on it. Bad
//! input gets a clear status naming the culprit, and the agent goes on
//! serving. Under TCG.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use runtime::{AgentSocket, CreateOptions, Hypervisor, NetEndpoint, Qemu, StateRoot};
use sandvm_agent_protocol::agent::{
    IPAddress, IPFamily, Interface, Route, Routes, UpdateInterfaceRequest, UpdateRoutesRequest,
};
use sandvm_agent_protocol::agent_ttrpc::AgentServiceClient;
use sandvm_agent_protocol::{AgentEndpoint, ctx, ttrpc, wait_ready};
use sandvm_tests::*;

/// The NIC's MAC (locally administered).
const MAC: &str = "02:5a:00:00:00:07";
/// A deadline per call (the first waits for nothing: the NIC is there at boot).
const CALL: Duration = Duration::from_secs(60);

fn iface(mac: &str, name: &str, addr: &str, mask: &str) -> UpdateInterfaceRequest {
    UpdateInterfaceRequest {
        interface: Some(Interface {
            name: name.into(),
            hw_addr: mac.into(),
            mtu: 1400,
            ip_addresses: vec![IPAddress {
                family: IPFamily::v4.into(),
                address: addr.into(),
                mask: mask.into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

fn routes(dest: &str, gateway: &str, device: &str) -> UpdateRoutesRequest {
    UpdateRoutesRequest {
        routes: Some(Routes {
            routes: vec![Route {
                dest: dest.into(),
                gateway: gateway.into(),
                device: device.into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

/// The status code and message of a failed call.
fn status<T: std::fmt::Debug>(r: ttrpc::Result<T>) -> (ttrpc::Code, String) {
    match r {
        Err(ttrpc::Error::RpcStatus(s)) => (s.code(), s.message().to_string()),
        other => panic!("not a status: {other:?}"),
    }
}

async fn checks(a: &AgentServiceClient) {
    // Bad input first: nothing changes, each is named.
    let (code, msg) = status(
        a.update_interface(
            ctx(CALL),
            &iface("02:5a:00:00:00:07:01", "eth7", "10.234.0.5", "24"),
        )
        .await,
    );
    assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("hw_addr"), "{msg}");
    let (code, msg) = status(
        a.update_interface(ctx(CALL), &iface(MAC, "eth7", "10.234.0.500", "24"))
            .await,
    );
    assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("10.234.0.500"), "{msg}");
    let (code, msg) = status(
        a.update_interface(ctx(CALL), &iface(MAC, "eth7", "10.234.0.5", "40"))
            .await,
    );
    assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("mask"), "{msg}");
    let other = "02:5a:00:00:00:08";
    let (code, msg) = status(
        a.update_interface(ctx(CALL), &iface(other, "eth7", "10.234.0.5", "24"))
            .await,
    );
    assert_eq!(code, ttrpc::Code::NOT_FOUND, "{msg}");
    assert!(
        msg.contains(other) && msg.contains(MAC),
        "names the MAC and lists the NICs: {msg}"
    );

    // The NIC, found by its MAC.
    let got = a
        .update_interface(ctx(CALL), &iface(MAC, "eth7", "10.234.0.5", "24"))
        .await
        .expect("UpdateInterface");
    assert_eq!(
        (got.name.as_str(), got.mtu, got.hw_addr.as_str()),
        ("eth7", 1400, MAC)
    );
    assert_eq!(got.ip_addresses.len(), 1);
    assert_eq!(got.ip_addresses[0].address, "10.234.0.5");

    // Routes: one through a gateway on it; a device it does not have.
    let r = a
        .update_routes(ctx(CALL), &routes("10.235.0.0/16", "10.234.0.1", "eth7"))
        .await
        .expect("UpdateRoutes");
    assert_eq!(r.routes.len(), 1);
    let (code, msg) = status(
        a.update_routes(ctx(CALL), &routes("default", "10.234.0.1", "eth9"))
            .await,
    );
    assert_eq!(code, ttrpc::Code::NOT_FOUND, "{msg}");
    assert!(msg.contains("eth9") && msg.contains("eth7"), "{msg}");
    let (code, msg) = status(
        a.update_routes(ctx(CALL), &routes("10.235.0.0", "", "eth7"))
            .await,
    );
    assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("dest"), "{msg}");

    // Again, with another address: the old one goes (the reply says what is set).
    let got = a
        .update_interface(ctx(CALL), &iface(MAC, "eth7", "10.234.0.6", "24"))
        .await
        .expect("UpdateInterface again");
    assert_eq!(got.ip_addresses.len(), 1);
    assert_eq!(got.ip_addresses[0].address, "10.234.0.6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_sets_a_nic_found_by_its_mac_and_names_bad_input() {
    let env = Arc::new(Env::new("agnet"));
    let cfg = env.config("n.toml", "");
    let tap = format!("svag{}", std::process::id() % 100_000);
    let vm = Qemu::new(
        StateRoot::new(&env.root),
        runtime::load_config(&cfg).unwrap().config,
    );
    let opts = CreateOptions {
        network: vec![NetEndpoint::Tap {
            name: tap,
            mac: Some(MAC.into()),
        }],
        ..CreateOptions::default()
    };
    vm.create_vm("n1", opts).await.unwrap();
    vm.start_vm(Duration::from_secs(120)).await.unwrap();
    let AgentSocket::Serial { path } = vm.get_agent_socket().unwrap() else {
        panic!("not virtio-serial: {:?}", vm.get_agent_socket())
    };
    let c = wait_ready(&AgentEndpoint::Serial { path }, Duration::from_secs(180))
        .await
        .expect("the guest's agent");
    checks(&c.agent).await;
    vm.stop_vm(false).await.unwrap();
    env.assert_clean();
}
