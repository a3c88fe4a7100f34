//! Kubernetes' way in: containerd's CRI plugin with sandvm's runtime handler,
//! driven by a real CRI client (runtime.v1 over gRPC, `sandvm_tests::cri`),
//! as a kubelet would. A host-network pod (no CNI) of two containers runs
//! in one VM; ExecSync, streaming Exec (WebSocket), ContainerStatus, the
//! lists and the pod's status answer; a pod annotation sizes the VM;
//! stopping and removing the pod leaves nothing. VMs run under TCG.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod shim_support;

use std::collections::HashMap;

use sandvm_tests::containerd::{CTR_TIMEOUT, CriRuntime, Options};
use sandvm_tests::cri::v1::{self, ContainerState, NamespaceMode, PodSandboxState};
use sandvm_tests::eventually;
use sandvm_tests::oci::{PAUSE_IMAGE, TEST_IMAGE, pause_image_archive, test_image_archive};
use shim_support::cri::{
    Cri, K8S_NS, TempDir, container_config as shared_container_config,
    pod_config as shared_pod_config,
};
use shim_support::{SETTLE, SHIM_BIN, ShimEnv, guest_kernel_release, shim_config_tcg};

/// The pod's VM memory, MiB, by annotation (the shipped config says 512).
const POD_MEMORY_MIB: u64 = 768;

/// The annotation that sizes the pod's VM (the handler passes
/// `io.katacontainers.*`; the config's `enable_annotations` allows it).
const MEMORY_ANNOTATION: &str = "io.katacontainers.config.hypervisor.default_memory";

fn pod_config(log_dir: &str) -> v1::PodSandboxConfig {
    v1::PodSandboxConfig {
        labels: HashMap::from([("app".into(), "cri-test".into())]),
        annotations: HashMap::from([(MEMORY_ANNOTATION.into(), POD_MEMORY_MIB.to_string())]),
        ..shared_pod_config(
            "pod1",
            "b7f2a4c6-cri-test-pod1",
            log_dir,
            NamespaceMode::Node,
        )
    }
}

fn container_config(name: &str, script: &str, readonly_root: bool) -> v1::ContainerConfig {
    let mut c = shared_container_config(name, &["sh", "-c", script], NamespaceMode::Node);
    c.labels = HashMap::from([("name".into(), name.into())]);
    if let Some(sc) = c.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.readonly_rootfs = readonly_root;
    }
    c
}

/// What a streaming Exec gave: its output and its v4 status (JSON).
#[derive(Debug, Default)]
struct Streamed {
    stdout: String,
    stderr: String,
    status: String,
}

impl Streamed {
    /// The exit code the status says: 0 for `Success`, else the
    /// `ExitCode` cause of a `NonZeroExitCode` failure.
    fn exit_code(&self) -> i32 {
        let v: serde_json::Value = serde_json::from_str(&self.status)
            .unwrap_or_else(|e| panic!("status {:?}: {e}", self.status));
        if v["status"] == "Success" {
            return 0;
        }
        v["details"]["causes"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["reason"] == "ExitCode"))
            .and_then(|c| c["message"].as_str()?.parse().ok())
            .unwrap_or_else(|| panic!("no exit code in status {v}"))
    }
}

/// Attach to an Exec's `url` over WebSocket with the `v4.channel.k8s.io`
/// protocol (what kubectl's WebSocket executor speaks): every binary message
/// starts with its channel (1 stdout, 2 stderr, 3 the status), until the
/// server closes. The socket has a read deadline, so a hang fails.
fn stream_exec(url: &str) -> Streamed {
    use tungstenite::client::IntoClientRequest;
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut req = ws_url.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.channel.k8s.io".parse().unwrap(),
    );
    let host = ws_url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let tcp = std::net::TcpStream::connect(&host)
        .unwrap_or_else(|e| panic!("cannot reach the streaming server {host}: {e}"));
    tcp.set_read_timeout(Some(CTR_TIMEOUT)).unwrap();
    let (mut ws, resp) = tungstenite::client(req, tcp)
        .unwrap_or_else(|e| panic!("WebSocket handshake with {url} failed: {e}"));
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok()),
        Some("v4.channel.k8s.io")
    );
    let mut s = Streamed::default();
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Binary(b)) if !b.is_empty() => {
                let text = String::from_utf8_lossy(&b[1..]).into_owned();
                match b[0] {
                    1 => s.stdout.push_str(&text),
                    2 => s.stderr.push_str(&text),
                    3 => s.status.push_str(&text),
                    c => panic!("data on channel {c}: {text:?}"),
                }
            }
            Ok(tungstenite::Message::Close(_))
            | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("reading the Exec stream {url}: {e} (so far {s:?})"),
        }
    }
    s
}

/// QEMU's argv (NUL-separated in /proc) of process `pid`.
fn argv(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The value of `-m` in an argv, e.g. `768M,slots=10,maxmem=4096M`.
fn memory_arg(argv: &[String]) -> String {
    argv.iter()
        .position(|a| a == "-m")
        .and_then(|i| argv.get(i + 1))
        .cloned()
        .unwrap_or_else(|| panic!("no -m in QEMU's argv {argv:?}"))
}

/// A pod of two containers through CRI: one VM, ExecSync in each, a
/// read-only root, a streaming Exec, their statuses and exit codes, the
/// lists and the pod's status, the memory annotation on the VM, then stop
/// and remove, and nothing left.
#[test]
fn cri_pod_of_two_containers_in_one_vm() {
    let conf_dir = TempDir::new("sandvm-cri");
    let config = shim_config_tcg(&conf_dir.0);
    let e = ShimEnv::start_with(Options {
        cri: true,
        cri_runtimes: vec![CriRuntime::sandvm(&config)],
        cri_sandbox_image: Some(PAUSE_IMAGE.into()),
        ..Options::default()
    });
    e.cd.import_in(K8S_NS, &test_image_archive());
    e.cd.import_in(K8S_NS, &pause_image_archive(e.cd.dir()));
    let cri = Cri::connect(&e);

    let v = cri.call("Version", cri.rs().version(v1::VersionRequest::default()));
    assert_eq!(v.runtime_api_version, "v1", "{v:?}");
    for image in [TEST_IMAGE, PAUSE_IMAGE] {
        let req = v1::ImageStatusRequest {
            image: Some(v1::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        };
        let mut is = cri.is.clone();
        let st = cri.call("ImageStatus", is.image_status(req));
        assert!(
            st.image.is_some(),
            "CRI does not see {image} after `ctr -n {K8S_NS} images import`"
        );
    }

    // The pod: its sandbox container boots the VM.
    let log_dir = e.cd.dir().join("pod-logs");
    std::fs::create_dir_all(&log_dir).unwrap();
    let pod = pod_config(&log_dir.to_string_lossy());
    let req = v1::RunPodSandboxRequest {
        config: Some(pod.clone()),
        runtime_handler: "sandvm".into(),
    };
    let pod_id = cri
        .call("RunPodSandbox", cri.rs().run_pod_sandbox(req))
        .pod_sandbox_id;
    let qemu = e.processes("qemu-system-x86_64");
    assert_eq!(qemu.len(), 1, "one VM for the pod: {qemu:?}");
    let qemu_argv = argv(qemu[0]);
    assert_eq!(
        memory_arg(&qemu_argv).split(',').next().unwrap_or_default(),
        format!("{POD_MEMORY_MIB}M"),
        "the pod's {MEMORY_ANNOTATION} did not size the VM: {qemu_argv:?}"
    );

    // Two containers in it.
    let mut ids = Vec::new();
    for (name, script, readonly_root) in [
        ("c1", "echo started c1; exec sleep 1000", true),
        (
            "c2",
            "trap 'echo got TERM; exit 42' TERM; echo started c2; while :; do sleep 1; done",
            false,
        ),
    ] {
        let req = v1::CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(container_config(name, script, readonly_root)),
            sandbox_config: Some(pod.clone()),
        };
        let id = cri
            .call("CreateContainer", cri.rs().create_container(req))
            .container_id;
        assert_eq!(
            cri.container_status(&id).state,
            ContainerState::ContainerCreated as i32
        );
        let req = v1::StartContainerRequest {
            container_id: id.clone(),
        };
        cri.call("StartContainer", cri.rs().start_container(req));
        cri.wait_container(&id, ContainerState::ContainerRunning);
        ids.push(id);
    }
    let (c1, c2) = (ids[0].clone(), ids[1].clone());
    assert_eq!(
        e.processes("qemu-system-x86_64"),
        qemu,
        "the pod's containers are not in its one VM"
    );
    assert_eq!(e.processes(SHIM_BIN).len(), 1, "one shim for the pod");

    // ExecSync in each: output, stderr, exit status; the guest's kernel.
    let release = guest_kernel_release();
    for (id, name) in [(&c1, "c1"), (&c2, "c2")] {
        let script = format!("echo hi from {name}; echo oops >&2; exit 3");
        let (code, out, err) = cri.exec_sync(id, &["sh", "-c", &script]);
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (3, format!("hi from {name}\n").as_str(), "oops\n")
        );
        let (code, out, _) = cri.exec_sync(id, &["uname", "-r"]);
        assert_eq!((code, out.trim()), (0, release.as_str()), "not in the VM");
    }
    // c1's root is read-only (readonly_rootfs), c2's is not.
    let write = ["sh", "-c", "echo x > /probe"];
    let (code, _, err) = cri.exec_sync(&c1, &write);
    assert_ne!(code, 0, "c1's read-only root was written");
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(cri.exec_sync(&c2, &write).0, 0);

    // Exec (streaming): the URL of containerd's streaming server, spoken
    // to over WebSocket (channel.k8s.io v4): stdout, stderr, exit code.
    let req = v1::ExecRequest {
        container_id: c2.clone(),
        cmd: ["sh", "-c", "echo streamed; echo to-stderr >&2; exit 5"]
            .map(String::from)
            .to_vec(),
        tty: false,
        stdin: false,
        stdout: true,
        stderr: true,
    };
    let url = cri.call("Exec", cri.rs().exec(req)).url;
    let s = stream_exec(&url);
    assert_eq!(s.stdout, "streamed\n", "{s:?}");
    assert_eq!(s.stderr, "to-stderr\n", "{s:?}");
    assert_eq!(s.exit_code(), 5, "{s:?}");

    // The annotation's memory, as the guest sees it (MemTotal, kB).
    let (_, meminfo, _) = cri.exec_sync(&c1, &["cat", "/proc/meminfo"]);
    let total: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no MemTotal in {meminfo}"));
    assert!(
        total > 640 * 1024 && total <= POD_MEMORY_MIB * 1024,
        "MemTotal {total} kB in a {POD_MEMORY_MIB} MiB VM"
    );

    // Their output reached CRI's log files.
    for (name, started) in [("c1", "started c1"), ("c2", "started c2")] {
        let p = log_dir.join(format!("{name}.log"));
        let ok = eventually(SETTLE, || {
            std::fs::read_to_string(&p).is_ok_and(|s| s.contains(started))
        });
        assert!(ok, "{}: {:?}", p.display(), std::fs::read_to_string(&p));
    }

    // The lists and the pod's status.
    let pods = cri
        .call(
            "ListPodSandbox",
            cri.rs()
                .list_pod_sandbox(v1::ListPodSandboxRequest::default()),
        )
        .items;
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(pods[0].id, pod_id);
    assert_eq!(pods[0].runtime_handler, "sandvm");
    assert_eq!(pods[0].state, PodSandboxState::SandboxReady as i32);
    let st = cri.pod_status(&pod_id);
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32, "{st:?}");
    assert_eq!(st.metadata.as_ref().map(|m| m.name.as_str()), Some("pod1"));
    assert_eq!(
        st.annotations.get(MEMORY_ANNOTATION),
        Some(&POD_MEMORY_MIB.to_string())
    );
    let ns = st
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref())
        .map(|o| o.network);
    assert_eq!(ns, Some(NamespaceMode::Node as i32), "{st:?}");
    let filter = v1::ContainerFilter {
        pod_sandbox_id: pod_id.clone(),
        ..Default::default()
    };
    let req = v1::ListContainersRequest {
        filter: Some(filter),
    };
    let mut listed: Vec<(String, i32)> = cri
        .call("ListContainers", cri.rs().list_containers(req))
        .containers
        .into_iter()
        .map(|c| (c.id, c.state))
        .collect();
    listed.sort();
    let mut want = vec![
        (c1.clone(), ContainerState::ContainerRunning as i32),
        (c2.clone(), ContainerState::ContainerRunning as i32),
    ];
    want.sort();
    assert_eq!(listed, want);

    // c2 stops on TERM with its own code; c1 ignores TERM (pid 1), so its
    // stop ends in KILL: 137.
    let stop = |id: &str, timeout: i64| {
        let req = v1::StopContainerRequest {
            container_id: id.into(),
            timeout,
        };
        cri.call("StopContainer", cri.rs().stop_container(req));
    };
    stop(&c2, 60);
    let s = cri.wait_container(&c2, ContainerState::ContainerExited);
    assert_eq!(s.exit_code, 42, "{s:?}");
    assert_eq!(
        cri.container_status(&c1).state,
        ContainerState::ContainerRunning as i32
    );
    stop(&c1, 0);
    let s = cri.wait_container(&c1, ContainerState::ContainerExited);
    assert_eq!(s.exit_code, 137, "{s:?}");
    assert_eq!(
        e.processes("qemu-system-x86_64"),
        qemu,
        "the pod's VM ended with its containers"
    );
    for id in [&c1, &c2] {
        let req = v1::RemoveContainerRequest {
            container_id: id.clone(),
        };
        cri.call("RemoveContainer", cri.rs().remove_container(req));
    }
    let req = v1::ListContainersRequest::default();
    let left = cri
        .call("ListContainers", cri.rs().list_containers(req))
        .containers;
    assert!(left.is_empty(), "{left:?}");

    // The pod: stopped (its VM ends), then removed.
    let req = v1::StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    };
    cri.call("StopPodSandbox", cri.rs().stop_pod_sandbox(req));
    assert_eq!(
        cri.pod_status(&pod_id).state,
        PodSandboxState::SandboxNotready as i32
    );
    let ok = eventually(SETTLE, || e.processes("qemu-system-x86_64").is_empty());
    assert!(ok, "the pod's VM still runs after StopPodSandbox");
    let req = v1::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    };
    cri.call("RemovePodSandbox", cri.rs().remove_pod_sandbox(req));
    let pods = cri
        .call(
            "ListPodSandbox",
            cri.rs()
                .list_pod_sandbox(v1::ListPodSandboxRequest::default()),
        )
        .items;
    assert!(pods.is_empty(), "{pods:?}");

    // Nothing left: no QEMU, virtiofsd or shim, no mount, task, container,
    // socket or sandbox folder; CRI's own folders for the pod are gone.
    e.assert_clean();
    for base in ["root", "state"] {
        let p =
            e.cd.dir()
                .join(base)
                .join("io.containerd.grpc.v1.cri/sandboxes")
                .join(&pod_id);
        assert!(!p.exists(), "{} is left", p.display());
    }
}
