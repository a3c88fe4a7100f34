//! Pod networking, Kata's way, through CRI: a pod on the test's own CNI
//! bridge (Debian's bridge + host-local plugins, a subnet and a bridge name
//! of this test) gets a tap in its network namespace, mirrored to CNI's veth
//! with tc, handed to QEMU as an fd; the agent gives the guest's NIC the
//! veth's MAC, addresses and routes. A TCP server in another network
//! namespace on the same bridge is reached from a container, and a server
//! in the container from there. Stopping and removing the pod leaves no
//! QEMU, shim, netns, tap or mount; the test removes its own bridge, peer
//! namespace and veth, and checks they are gone. VMs run under TCG.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod shim_support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use sandvm_tests::containerd::{CriRuntime, Options};
use sandvm_tests::cri::v1::{self, ContainerState, NamespaceMode};
use sandvm_tests::oci::{PAUSE_IMAGE, pause_image_archive, test_image_archive};
use sandvm_tests::{TemplateDir, eventually};
use shim_support::cri::{Cri, K8S_NS, TempDir, container_config, pod_config};
use shim_support::{
    SETTLE, SHIM_BIN, ShimEnv, create_template, ninep_guest, shim_config_tcg, template_config_tcg,
};

/// The port of the server in the peer namespace.
const PEER_PORT: u16 = 8080;
/// The port of the server in the container.
const POD_PORT: u16 = 8081;
/// Where libcni caches each attachment's result (containerd 1.6's CRI
/// plugin does not let a config move it).
const CNI_RESULTS: &str = "/var/lib/cni/results";
/// How long a connection may take (TCG on a loaded host); a deadline only.
const NET_DEADLINE: Duration = Duration::from_secs(120);

/// Runs `cmd` (a host tool), failing with its output, or with `make setup`
/// when the tool is missing.
fn run(cmd: &mut Command) -> String {
    let what = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}; run `make setup` (iproute2)"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) -> String {
    run(Command::new("ip").args(args))
}

/// The test's network: a bridge name and a /24 of its own (CNI creates the
/// bridge for the pod), and a peer namespace with a veth on that bridge.
/// Dropping it removes all three.
struct TestNet {
    bridge: String,
    /// `10.231.N`: the /24 without its last byte.
    prefix: String,
    peer_ns: String,
    host_veth: String,
    /// The pod's namespace, once known: removed on drop if the test failed
    /// before CRI removed it (the private containerd's cleanup does not
    /// run CNI).
    pod_ns: std::cell::RefCell<Option<PathBuf>>,
    /// The pod's id, once known: libcni's cached results for it
    /// (`/var/lib/cni/results`, which containerd 1.6 fixes) are removed on
    /// drop if CNI DEL did not run.
    pod_id: std::cell::RefCell<String>,
}

impl TestNet {
    /// The network of variant `k` (0 or 1) of this process's tests.
    fn new(k: u32) -> TestNet {
        let id = std::process::id() % 100_000;
        let n = (std::process::id() + k * 125) % 250;
        TestNet {
            bridge: format!("svbr{id}{k}"),
            prefix: format!("10.231.{n}"),
            peer_ns: format!("sandvm-peer-{id}-{k}"),
            host_veth: format!("svph{id}{k}"),
            pod_ns: std::cell::RefCell::new(None),
            pod_id: std::cell::RefCell::new(String::new()),
        }
    }

    fn peer_ip(&self) -> String {
        format!("{}.200", self.prefix)
    }

    fn gateway(&self) -> String {
        format!("{}.1", self.prefix)
    }

    fn peer_ns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.peer_ns)
    }

    /// The CNI conflist: a bridge of this test (no gateway address on it,
    /// no masquerade: the host's forwarding and iptables stay as they are),
    /// host-local addresses kept in `ipam_dir`, a default route via `.1`.
    fn conflist(&self, ipam_dir: &Path) -> String {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "sandvm-test-net",
            "plugins": [{
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": false,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam_dir,
                    "ranges": [[{
                        "subnet": format!("{}.0/24", self.prefix),
                        "rangeStart": format!("{}.10", self.prefix),
                        "rangeEnd": format!("{}.99", self.prefix),
                        "gateway": self.gateway(),
                    }]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            }]
        })
        .to_string()
    }

    /// The peer namespace with a veth on the bridge (which must exist) and
    /// the address `.200`.
    fn attach_peer(&self) {
        let peer_end = format!("{}p", self.host_veth);
        ip(&["netns", "add", &self.peer_ns]);
        ip(&[
            "link",
            "add",
            &self.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            &peer_end,
            "netns",
            &self.peer_ns,
        ]);
        ip(&["link", "set", &self.host_veth, "master", &self.bridge, "up"]);
        let in_ns = |args: &[&str]| {
            let mut a = vec!["-n", self.peer_ns.as_str()];
            a.extend_from_slice(args);
            ip(&a)
        };
        in_ns(&["link", "set", "lo", "up"]);
        let cidr = format!("{}/24", self.peer_ip());
        in_ns(&["addr", "add", &cidr, "dev", &peer_end]);
        in_ns(&["link", "set", &peer_end, "up"]);
    }

    /// Removes the peer namespace, the veth and the bridge, and the pod's
    /// namespace if it is left (what is gone already is fine).
    fn remove(&self) {
        if let Some(p) = self.pod_ns.borrow().as_ref().filter(|p| p.exists()) {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(p);
        }
        let id = self.pod_id.borrow();
        if !id.is_empty()
            && let Ok(dir) = std::fs::read_dir(CNI_RESULTS)
        {
            for e in dir.flatten() {
                if e.file_name().to_string_lossy().contains(id.as_str()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        for args in [
            vec!["netns", "del", self.peer_ns.as_str()],
            vec!["link", "del", self.host_veth.as_str()],
            vec!["link", "del", self.bridge.as_str()],
        ] {
            let _ = Command::new("ip").args(&args).output();
        }
    }

    /// Whether a link of this name exists in the host's namespace.
    fn link_exists(name: &str) -> bool {
        Command::new("ip")
            .args(["link", "show", name])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Enters the network namespace at `ns` (this thread only).
fn enter(ns: &Path) {
    let f = std::fs::File::open(ns).unwrap_or_else(|e| panic!("{}: {e}", ns.display()));
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {}: {e}", ns.display()));
}

/// A TCP server in namespace `ns` at `addr` for one connection: it reads
/// the request to its end, answers `pong:<request>` and closes. The
/// request comes back on the channel once it is served; the call returns
/// once the server listens.
fn serve_once(ns: PathBuf, addr: SocketAddr) -> mpsc::Receiver<String> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        enter(&ns);
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        ready_tx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(NET_DEADLINE)).unwrap();
        let mut req = Vec::new();
        s.read_to_end(&mut req).unwrap();
        let req = String::from_utf8_lossy(&req).into_owned();
        s.write_all(format!("pong:{req}").as_bytes()).unwrap();
        let _ = s.shutdown(Shutdown::Both);
        let _ = tx.send(req);
    });
    ready_rx
        .recv_timeout(NET_DEADLINE)
        .expect("the peer's server did not start");
    rx
}

/// From namespace `ns`, connects to `addr` (retrying while it refuses:
/// the container's server may not listen yet), sends `msg`, closes its
/// side and returns what came back.
fn talk_from(ns: PathBuf, addr: SocketAddr, msg: &'static str) -> Result<String, String> {
    std::thread::spawn(move || {
        enter(&ns);
        let mut last = String::new();
        let mut s = None;
        let ok = eventually(NET_DEADLINE, || {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
                Ok(c) => {
                    s = Some(c);
                    true
                }
                Err(e) => {
                    last = e.to_string();
                    false
                }
            }
        });
        let mut s = s.filter(|_| ok).ok_or(format!("connect {addr}: {last}"))?;
        s.set_read_timeout(Some(NET_DEADLINE)).unwrap();
        s.write_all(msg.as_bytes()).map_err(|e| e.to_string())?;
        s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        let mut got = String::new();
        s.read_to_string(&mut got).map_err(|e| e.to_string())?;
        Ok(got)
    })
    .join()
    .unwrap()
}

/// Waits until CRI says its network is ready (it reads the conflist).
fn wait_network_ready(cri: &Cri) {
    let ready = || {
        let st = cri.call("Status", cri.rs().status(v1::StatusRequest::default()));
        st.status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.r#type == "NetworkReady" && c.status)
        })
    };
    assert!(
        eventually(SETTLE, ready),
        "CRI never saw the test's CNI conflist"
    );
}

/// The pod's IP and its network namespace's path (from the verbose
/// status: the pause container's spec).
fn pod_net(cri: &Cri, pod_id: &str) -> (String, PathBuf) {
    let req = v1::PodSandboxStatusRequest {
        pod_sandbox_id: pod_id.into(),
        verbose: true,
    };
    let r = cri.call("PodSandboxStatus", cri.rs().pod_sandbox_status(req));
    let ip = r
        .status
        .as_ref()
        .and_then(|s| s.network.as_ref())
        .map(|n| n.ip.clone())
        .unwrap_or_default();
    assert!(!ip.is_empty(), "the pod has no IP: {r:?}");
    let info: serde_json::Value =
        serde_json::from_str(r.info.get("info").expect("no verbose info")).unwrap();
    let ns = info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["type"] == "network"))
        .and_then(|n| n["path"].as_str())
        .unwrap_or_else(|| panic!("no network namespace path in {info}"));
    (ip, PathBuf::from(ns))
}

/// QEMU's argv (NUL-separated in /proc) of process `pid`.
fn argv(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Runs `tc` or `ip` inside the namespace at `ns`.
fn in_netns(ns: &Path, args: &[&str]) -> String {
    let net = format!("--net={}", ns.display());
    let mut a = vec![net.as_str()];
    a.extend_from_slice(args);
    run(Command::new("nsenter").args(&a))
}

/// How the pod's VM comes up.
#[derive(Clone, Copy, PartialEq)]
enum Boot {
    /// A cold boot: the tap is cold-plugged.
    Cold,
    /// A clone of a template made before the pod: the tap is hot-plugged.
    Clone,
}

/// Whether process `pid` holds an fd on `/dev/net/tun` (a tap).
fn holds_tun(pid: i32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .any(|f| std::fs::read_link(f.path()).is_ok_and(|l| l == Path::new("/dev/net/tun")))
}

#[test]
fn cri_pod_on_a_cni_bridge_talks_through_the_tap() {
    pod_talks_through_the_tap(Boot::Cold);
}

/// The same with the template config: the pod's VM is a clone (QEMU runs
/// with `-incoming`, maps the template's memory), its NIC hot-plugged.
#[test]
fn cri_template_pod_is_a_clone_and_talks_through_the_tap() {
    pod_talks_through_the_tap(Boot::Clone);
}

fn pod_talks_through_the_tap(boot: Boot) {
    let tag = match boot {
        Boot::Cold => "cri-net",
        Boot::Clone => "cri-net-tmpl",
    };
    let conf_dir = TempDir::new(&format!("sandvm-{tag}"));
    let tp = TemplateDir::new(tag);
    let config = match boot {
        Boot::Cold => shim_config_tcg(&conf_dir.0),
        Boot::Clone => {
            ninep_guest();
            template_config_tcg(&conf_dir.0, &tp.0)
        }
    };
    assert!(
        Path::new("/usr/lib/cni/bridge").exists() && Path::new("/usr/lib/cni/host-local").exists(),
        "Debian's CNI plugins are missing in /usr/lib/cni: run `make setup`"
    );
    let net = TestNet::new(boot as u32);
    let e = ShimEnv::start_with(Options {
        cri: true,
        cri_runtimes: vec![CriRuntime::sandvm(&config)],
        cri_sandbox_image: Some(PAUSE_IMAGE.into()),
        ..Options::default()
    });
    let cni = e.cd.cni_conf_dir();
    std::fs::create_dir_all(&cni).unwrap();
    let conflist = net.conflist(&e.cd.dir().join("cni-ipam"));
    std::fs::write(cni.join("10-sandvm-test.conflist"), conflist).unwrap();
    e.cd.import_in(K8S_NS, &test_image_archive());
    e.cd.import_in(K8S_NS, &pause_image_archive(e.cd.dir()));
    if boot == Boot::Clone {
        create_template(&e.cd.sandvm_state_dir(), &config);
    }
    let cri = Cri::connect(&e);
    wait_network_ready(&cri);

    // The pod: CNI gives its namespace a veth on the bridge; the shim wires
    // a tap to it and boots the VM with the tap's fd.
    let log_dir = e.cd.dir().join("pod-logs");
    std::fs::create_dir_all(&log_dir).unwrap();
    let pod = pod_config(
        "netpod",
        "c3e1-cri-net-test-netpod",
        &log_dir.to_string_lossy(),
        NamespaceMode::Pod,
    );
    let req = v1::RunPodSandboxRequest {
        config: Some(pod.clone()),
        runtime_handler: "sandvm".into(),
    };
    let pod_id = cri
        .call("RunPodSandbox", cri.rs().run_pod_sandbox(req))
        .pod_sandbox_id;
    let (pod_ip, pod_ns) = pod_net(&cri, &pod_id);
    *net.pod_ns.borrow_mut() = Some(pod_ns.clone());
    *net.pod_id.borrow_mut() = pod_id.clone();
    assert!(pod_ip.starts_with(&format!("{}.", net.prefix)), "{pod_ip}");
    let qemu = e.processes("qemu-system-x86_64");
    assert_eq!(qemu.len(), 1, "one VM for the pod: {qemu:?}");
    let qargv = argv(qemu[0]);
    match boot {
        // cold-plugged: the tap's fd is on QEMU's command line
        Boot::Cold => assert!(
            qargv
                .iter()
                .any(|a| a.starts_with("tap,") && a.contains("fd=")),
            "no tap netdev on an fd: {qargv:?}"
        ),
        // hot-plugged into the running clone: QEMU holds a tap fd it got
        // over QMP
        Boot::Clone => assert!(holds_tun(qemu[0]), "the clone holds no tap fd: {qargv:?}"),
    }
    assert!(
        !qargv
            .iter()
            .any(|a| a.starts_with("user,") || a.contains("type=user")),
        "user-mode networking: {qargv:?}"
    );
    if boot == Boot::Clone {
        let memory = tp.0.join("memory").display().to_string();
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", qemu[0])).unwrap();
        assert!(
            qargv.iter().any(|a| a == "-incoming") && maps.contains(&memory),
            "not a clone of the template: {qargv:?}"
        );
    }
    // tc mirrors CNI's veth and the tap, each way.
    let veth_filters = in_netns(&pod_ns, &["tc", "filter", "show", "dev", "eth0", "ingress"]);
    assert!(
        veth_filters.contains("mirred") && veth_filters.contains("tap0_sandvm"),
        "{veth_filters}"
    );
    let tap_filters = in_netns(
        &pod_ns,
        &["tc", "filter", "show", "dev", "tap0_sandvm", "ingress"],
    );
    assert!(
        tap_filters.contains("mirred") && tap_filters.contains("eth0"),
        "{tap_filters}"
    );
    let veth = in_netns(&pod_ns, &["ip", "-o", "link", "show", "eth0"]);
    let veth_mac = veth
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {veth}"))
        .to_string();

    // The peer namespace on the same bridge, with a server.
    net.attach_peer();
    let peer_addr: SocketAddr = format!("{}:{PEER_PORT}", net.peer_ip()).parse().unwrap();
    let served = serve_once(net.peer_ns_path(), peer_addr);

    // A container whose command serves one connection on POD_PORT.
    let script = format!(
        "mkdir -p /tmp; echo hello-from-pod | nc -l -p {POD_PORT} > /tmp/got; exec sleep 1000"
    );
    let req = v1::CreateContainerRequest {
        pod_sandbox_id: pod_id.clone(),
        config: Some(container_config(
            "web",
            &["sh", "-c", &script],
            NamespaceMode::Pod,
        )),
        sandbox_config: Some(pod.clone()),
    };
    let cid = cri
        .call("CreateContainer", cri.rs().create_container(req))
        .container_id;
    let req = v1::StartContainerRequest {
        container_id: cid.clone(),
    };
    cri.call("StartContainer", cri.rs().start_container(req));
    cri.wait_container(&cid, ContainerState::ContainerRunning);

    // The guest's NIC: the veth's MAC, the pod's address, CNI's route.
    let (code, addr, _) = cri.exec_sync(&cid, &["ip", "addr", "show", "eth0"]);
    assert_eq!(code, 0, "{addr}");
    assert!(addr.contains(&format!("inet {pod_ip}/24")), "{addr}");
    assert!(
        addr.contains(veth_mac.trim()),
        "not the veth's MAC {veth_mac}: {addr}"
    );
    let (_, routes, _) = cri.exec_sync(&cid, &["ip", "route"]);
    assert!(
        routes.contains(&format!("default via {} dev eth0", net.gateway())),
        "{routes}"
    );

    // Container -> peer.
    let cmd = format!(
        "echo ping-from-pod | nc -w 60 {} {PEER_PORT}",
        net.peer_ip()
    );
    let (code, out, err) = cri.exec_sync(&cid, &["sh", "-c", &cmd]);
    assert_eq!(
        (code, out.as_str()),
        (0, "pong:ping-from-pod\n"),
        "stderr: {err}"
    );
    assert_eq!(
        served.recv_timeout(NET_DEADLINE).as_deref(),
        Ok("ping-from-pod\n")
    );

    // Peer -> container.
    let pod_addr: SocketAddr = format!("{pod_ip}:{POD_PORT}").parse().unwrap();
    let got = talk_from(net.peer_ns_path(), pod_addr, "ping-from-peer\n");
    assert_eq!(got.as_deref(), Ok("hello-from-pod\n"));
    let ok = eventually(SETTLE, || {
        cri.exec_sync(&cid, &["cat", "/tmp/got"]).1 == "ping-from-peer\n"
    });
    assert!(ok, "{:?}", cri.exec_sync(&cid, &["cat", "/tmp/got"]));

    // Stop and remove: the pod's namespace (with the tap) goes, and every
    // process of the pod.
    let req = v1::StopContainerRequest {
        container_id: cid.clone(),
        timeout: 0,
    };
    cri.call("StopContainer", cri.rs().stop_container(req));
    let req = v1::RemoveContainerRequest {
        container_id: cid.clone(),
    };
    cri.call("RemoveContainer", cri.rs().remove_container(req));
    let req = v1::StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    };
    cri.call("StopPodSandbox", cri.rs().stop_pod_sandbox(req));
    let req = v1::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    };
    cri.call("RemovePodSandbox", cri.rs().remove_pod_sandbox(req));
    let ok = eventually(SETTLE, || {
        e.processes("qemu-system-x86_64").is_empty() && e.processes(SHIM_BIN).is_empty()
    });
    assert!(ok, "QEMU or the shim still runs after RemovePodSandbox");
    assert!(!pod_ns.exists(), "{} is left", pod_ns.display());
    let cached: Vec<String> = std::fs::read_dir(CNI_RESULTS)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&pod_id))
        .collect();
    assert!(cached.is_empty(), "CNI results left: {cached:?}");
    e.assert_clean();

    // The test's own network goes too.
    net.remove();
    for link in [&net.bridge, &net.host_veth] {
        assert!(!TestNet::link_exists(link), "{link} is left");
    }
    assert!(!net.peer_ns_path().exists(), "{} is left", net.peer_ns);
}
