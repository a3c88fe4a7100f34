//! Pod networking, Kata's way (`tcfilter`): in the pod's network namespace
//! (CNI made its interfaces) the shim reads each interface, creates a tap
//! beside it, mirrors the two with tc (an ingress qdisc on each and a u32
//! filter whose mirred action redirects every frame to the other's egress),
//! hands the tap's fd to QEMU (a NIC with the interface's MAC), and asks the
//! agent for the same addresses and routes in the guest. Netlink is
//! rtnetlink's; every step runs on a thread of its own that entered the
//! namespace ([`netns`]), never on a tokio worker. A pod without a network
//! namespace (host network) gets no NIC.

pub mod guest;
pub mod netns;
pub mod scan;
pub mod tcfilter;

use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// An interface of the pod's namespace, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its name (the guest's NIC gets it too), e.g. `eth0`.
    pub name: String,
    /// Its index in the namespace.
    pub index: u32,
    /// Its MAC, `aa:bb:cc:dd:ee:ff` (the guest's NIC gets it too).
    pub mac: String,
    /// Its MTU.
    pub mtu: u32,
    /// Its addresses (IPv6 link-local ones left out), with prefix lengths.
    pub addrs: Vec<(IpAddr, u8)>,
    /// Its routes of the main table, but those the kernel derives from the
    /// addresses (protocol `kernel`).
    pub routes: Vec<RouteInfo>,
}

/// A route as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// Destination and prefix; `None` = default.
    pub dest: Option<(IpAddr, u8)>,
    /// Gateway.
    pub gateway: Option<IpAddr>,
    /// Preferred source.
    pub source: Option<IpAddr>,
    /// Scope.
    pub scope: u8,
    /// IPv6.
    pub v6: bool,
}

/// One endpoint wired to its tap.
#[derive(Debug)]
pub struct Wired {
    /// The endpoint.
    pub ep: Endpoint,
    /// The tap's name, in the namespace.
    pub tap: String,
    /// The tap's fd (QEMU gets a copy).
    pub fd: Arc<OwnedFd>,
}

/// A pod's network: its namespace and what the shim added to it.
#[derive(Debug)]
pub struct PodNetwork {
    /// The namespace (CNI's; the shim never removes it).
    pub netns: PathBuf,
    /// The wired endpoints.
    pub wired: Vec<Wired>,
}

/// Why the pod's network could not be set up or taken down.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The namespace file cannot be opened or entered.
    #[error("Cannot enter the network namespace {path}")]
    Enter {
        /// The namespace's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The thread that works in the namespace failed to run.
    #[error("The network namespace thread for {path} failed: {why}")]
    Thread {
        /// The namespace's path.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The netlink socket could not be opened.
    #[error("Cannot open a netlink socket in {path}")]
    Socket {
        /// The namespace's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A netlink request failed.
    #[error("Cannot {what}")]
    Netlink {
        /// What was asked, naming the interface.
        what: String,
        /// rtnetlink's error.
        #[source]
        source: rtnetlink::Error,
    },
    /// The tap could not be created.
    #[error("Cannot create tap {tap}")]
    Tap {
        /// Its name.
        tap: String,
        /// The runtime's error.
        #[source]
        source: Box<runtime::HypervisorError>,
    },
    /// The namespace has more interfaces than the shim wires.
    #[error("The network namespace {path} has {count} interfaces; at most {max} are wired")]
    TooMany {
        /// The namespace's path.
        path: PathBuf,
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// The pod's network namespace in `spec` (the path in `linux.namespaces`);
/// `None` for the host's network (no network namespace, or one without a
/// path: a new empty one, which has nothing to mirror).
pub fn netns_path(spec: &Spec) -> Option<PathBuf> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Network)?
        .path()
        .clone()
        .filter(|p| !p.as_os_str().is_empty())
}

impl PodNetwork {
    /// Reads the namespace at `netns` and wires a tap to each interface;
    /// all or nothing.
    pub async fn setup(netns: &Path) -> Result<PodNetwork, NetError> {
        let path = netns.to_path_buf();
        let wired = netns::run_in(&path, {
            let path = path.clone();
            move |h| async move {
                let eps = scan::endpoints(&h).await?;
                tcfilter::wire_all(&h, &path, eps).await
            }
        })
        .await?;
        for w in &wired {
            tracing::info!(
                netns = %path.display(), iface = %w.ep.name, mac = %w.ep.mac, tap = %w.tap,
                addrs = ?w.ep.addrs, "tap mirrored to the pod's interface"
            );
        }
        Ok(PodNetwork { netns: path, wired })
    }

    /// Removes the taps and the qdiscs (with their filters) from the
    /// namespace; a namespace already gone is fine (it took them along).
    pub async fn teardown(self) {
        let PodNetwork { netns, wired } = self;
        let pairs: Vec<(String, String)> = wired.into_iter().map(|w| (w.ep.name, w.tap)).collect(); // the fds are dropped here
        if !netns.exists() {
            return;
        }
        let r = netns::run_in(&netns, move |h| async move {
            for (iface, tap) in &pairs {
                tcfilter::unwire(&h, iface, tap).await;
            }
            Ok(())
        })
        .await;
        if let Err(e) = r {
            tracing::warn!(netns = %netns.display(), error = %e, "cannot clean the pod's network namespace");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ns: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": { "namespaces": ns }
        }))
        .unwrap()
    }

    #[test]
    fn the_pods_netns_comes_from_the_spec() {
        let s = spec(serde_json::json!([
            {"type": "pid"},
            {"type": "network", "path": "/var/run/netns/cni-1234"}
        ]));
        assert_eq!(
            netns_path(&s),
            Some(PathBuf::from("/var/run/netns/cni-1234"))
        );
        let host = spec(serde_json::json!([{"type": "pid"}, {"type": "ipc"}]));
        assert_eq!(netns_path(&host), None);
        let fresh = spec(serde_json::json!([{"type": "network"}]));
        assert_eq!(netns_path(&fresh), None);
        let none: Spec =
            serde_json::from_value(serde_json::json!({"ociVersion": "1.0.2"})).unwrap();
        assert_eq!(netns_path(&none), None);
    }
}
