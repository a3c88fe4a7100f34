//! The shim's pod networking on a real network namespace (no VM): a
//! namespace made here with a veth whose other end stays in the host's,
//! an address and a route in it; `PodNetwork::setup` reads them, wires a
//! tap with tc's ingress qdiscs and mirred filters each way, and
//! `teardown` removes the tap and the qdiscs. Needs root and iproute2
//! (`make setup`); everything made here is removed, even on a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;

use sandvm_shim::network::{PodNetwork, RouteInfo};

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip: {e}; run `make setup` (iproute2)"));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tc ARGS` inside namespace `ns`.
fn tc_in(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "tc"])
        .args(args)
        .output()
        .expect("ip netns exec tc");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// A namespace with `eth0` (a veth) addressed 10.232.N.5/24 and a route
/// to 10.233.0.0/16 via .1; removed on drop.
struct Ns {
    name: String,
    host_end: String,
}

impl Ns {
    fn new(tag: &str) -> Ns {
        let id = std::process::id() % 100_000;
        let ns = Ns {
            name: format!("sandvm-shimnet-{tag}-{id}"),
            host_end: format!("svsh{tag}{id}"),
        };
        let _ = Command::new("ip").args(["netns", "del", &ns.name]).output();
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link",
            "add",
            &ns.host_end,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns.name,
        ]);
        let n = |args: &[&str]| {
            let mut a = vec!["-n", ns.name.as_str()];
            a.extend_from_slice(args);
            ip(&a)
        };
        n(&["link", "set", "eth0", "mtu", "1400", "up"]);
        n(&[
            "addr",
            "add",
            &format!("10.232.{}.5/24", id % 250),
            "dev",
            "eth0",
        ]);
        n(&[
            "route",
            "add",
            "10.233.0.0/16",
            "via",
            &format!("10.232.{}.1", id % 250),
        ]);
        ns
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    fn links(&self) -> String {
        ip(&["-n", &self.name, "-o", "link"])
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_end])
            .output();
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_tap_is_mirrored_to_the_veth_and_removed() {
    let ns = Ns::new("a");
    let id = std::process::id() % 100_000;
    let rt = rt();
    let net = rt.block_on(PodNetwork::setup(&ns.path())).expect("setup");
    assert_eq!(net.wired.len(), 1, "{net:?}");
    let w = &net.wired[0];
    assert_eq!(
        (w.ep.name.as_str(), w.ep.mtu, w.tap.as_str()),
        ("eth0", 1400, "tap0_sandvm")
    );
    let mac = ip(&["-n", &ns.name, "-o", "link", "show", "eth0"]);
    assert!(mac.contains(&w.ep.mac), "{mac} vs {}", w.ep.mac);
    let want: IpAddr = format!("10.232.{}.5", id % 250).parse().unwrap();
    assert_eq!(w.ep.addrs, vec![(want, 24)]);
    assert_eq!(
        w.ep.routes,
        vec![RouteInfo {
            dest: Some(("10.233.0.0".parse().unwrap(), 16)),
            gateway: Some(format!("10.232.{}.1", id % 250).parse().unwrap()),
            source: None,
            scope: 0,
            v6: false,
        }],
        "the kernel's subnet route is left out"
    );
    // The tap: up, the veth's MTU; the filters each way.
    let tap = ip(&["-n", &ns.name, "-o", "link", "show", "tap0_sandvm"]);
    assert!(tap.contains("mtu 1400") && tap.contains("UP"), "{tap}");
    let f = tc_in(&ns.name, &["filter", "show", "dev", "eth0", "ingress"]);
    assert!(
        f.contains("protocol all") && f.contains("Egress Redirect to device tap0_sandvm"),
        "{f}"
    );
    let f = tc_in(
        &ns.name,
        &["filter", "show", "dev", "tap0_sandvm", "ingress"],
    );
    assert!(f.contains("Egress Redirect to device eth0"), "{f}");

    rt.block_on(net.teardown());
    assert!(!ns.links().contains("tap0_sandvm"), "{}", ns.links());
    let q = tc_in(&ns.name, &["qdisc", "show", "dev", "eth0"]);
    assert!(!q.contains("ingress"), "{q}");
}

#[test]
fn a_missing_namespace_is_named() {
    let rt = rt();
    let e = rt
        .block_on(PodNetwork::setup(std::path::Path::new(
            "/run/netns/sandvm-no-such-ns",
        )))
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("/run/netns/sandvm-no-such-ns"), "{msg}");
}

#[test]
fn a_failed_wiring_is_named_and_undone() {
    let ns = Ns::new("b");
    // a link that is not a tap holds the tap's name: TUNSETIFF fails
    ip(&[
        "-n",
        &ns.name,
        "link",
        "add",
        "tap0_sandvm",
        "type",
        "veth",
        "peer",
        "name",
        "svx0",
    ]);
    let rt = rt();
    let e = rt.block_on(PodNetwork::setup(&ns.path())).unwrap_err();
    let msg = sandvm_shim::error::chain(&e);
    assert!(msg.contains("tap0_sandvm"), "{msg}");
    let q = tc_in(&ns.name, &["qdisc", "show", "dev", "eth0"]);
    assert!(!q.contains("ingress"), "{q}");
    assert!(
        ns.links().contains("tap0_sandvm"),
        "the link that was there is kept: {}",
        ns.links()
    );
}
