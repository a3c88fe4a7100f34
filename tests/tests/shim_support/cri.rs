//! A CRI client for the tests (runtime.v1 over gRPC on the private
//! containerd's socket), each call with a deadline, and a folder that goes
//! with the test.

use std::future::Future;
use std::path::PathBuf;

use sandvm_tests::containerd::CTR_TIMEOUT;
use sandvm_tests::cri::v1::{self, ContainerState, NamespaceMode};
use sandvm_tests::cri::{ImageServiceClient, RuntimeServiceClient};
use sandvm_tests::eventually;
use sandvm_tests::oci::TEST_IMAGE;
use tonic::transport::Channel;

use super::{SETTLE, ShimEnv, tail};

/// containerd's namespace for CRI's images, containers and tasks.
pub const K8S_NS: &str = "k8s.io";

/// A CRI client on the private containerd's socket, each call with a
/// deadline ([`CTR_TIMEOUT`]: a VM boots slowly under TCG).
pub struct Cri<'a> {
    e: &'a ShimEnv,
    rt: tokio::runtime::Runtime,
    rs: RuntimeServiceClient<Channel>,
    /// The image service.
    pub is: ImageServiceClient<Channel>,
}

impl<'a> Cri<'a> {
    pub fn connect(e: &'a ShimEnv) -> Cri<'a> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (rs, is) = rt
            .block_on(sandvm_tests::cri::connect(&e.cd.address()))
            .unwrap_or_else(|err| {
                panic!(
                    "cannot connect to CRI on {}: {err}",
                    e.cd.address().display()
                )
            });
        Cri { e, rt, rs, is }
    }

    /// Run one call; a gRPC error or a hang fails the test with containerd's log.
    pub fn call<T, F>(&self, what: &str, f: F) -> T
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match self
            .rt
            .block_on(async { tokio::time::timeout(CTR_TIMEOUT, f).await })
        {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) => panic!(
                "CRI {what} failed: {:?}: {}\ncontainerd's log (last lines):\n{}",
                s.code(),
                s.message(),
                tail(&self.e.cd.log(), 60)
            ),
            Err(_) => panic!(
                "CRI {what} hung: no answer after {CTR_TIMEOUT:?}\ncontainerd's log (last lines):\n{}",
                tail(&self.e.cd.log(), 60)
            ),
        }
    }

    pub fn rs(&self) -> RuntimeServiceClient<Channel> {
        self.rs.clone()
    }

    pub fn container_status(&self, id: &str) -> v1::ContainerStatus {
        let req = v1::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        let mut rs = self.rs();
        self.call("ContainerStatus", rs.container_status(req))
            .status
            .expect("ContainerStatus has no status")
    }

    pub fn pod_status(&self, id: &str) -> v1::PodSandboxStatus {
        let req = v1::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        };
        let mut rs = self.rs();
        self.call("PodSandboxStatus", rs.pod_sandbox_status(req))
            .status
            .expect("PodSandboxStatus has no status")
    }

    /// ExecSync of `cmd` in container `id`: (exit code, stdout, stderr).
    pub fn exec_sync(&self, id: &str, cmd: &[&str]) -> (i32, String, String) {
        let req = v1::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 120,
        };
        let mut rs = self.rs();
        let r = self.call("ExecSync", rs.exec_sync(req));
        (
            r.exit_code,
            String::from_utf8_lossy(&r.stdout).into_owned(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
        )
    }

    /// Waits (bounded) until container `id` shows `state`.
    pub fn wait_container(&self, id: &str, state: ContainerState) -> v1::ContainerStatus {
        let ok = eventually(SETTLE, || self.container_status(id).state == state as i32);
        let s = self.container_status(id);
        assert!(ok, "container {id} never reached {state:?}: {s:?}");
        s
    }
}

/// A folder removed when the test ends, even by a panic: the handler's
/// config must be named before containerd (and its private folder) starts.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pod's namespaces: `network` (`Node` for a host-network pod, `Pod`
/// for one on CNI), the pod's IPC, a PID namespace per container.
pub fn namespaces(network: NamespaceMode) -> Option<v1::NamespaceOption> {
    Some(v1::NamespaceOption {
        network: network as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    })
}

/// Pod `name` (uid `uid`), its logs in `log_dir`, on `network`.
pub fn pod_config(
    name: &str,
    uid: &str,
    log_dir: &str,
    network: NamespaceMode,
) -> v1::PodSandboxConfig {
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.into(),
        linux: Some(v1::LinuxPodSandboxConfig {
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: namespaces(network),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Container `name` of the test image running `command`, its log
/// `<name>.log`, in a pod on `network`.
pub fn container_config(
    name: &str,
    command: &[&str],
    network: NamespaceMode,
) -> v1::ContainerConfig {
    v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(v1::ImageSpec {
            image: TEST_IMAGE.into(),
            ..Default::default()
        }),
        command: command.iter().map(|a| a.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(v1::LinuxContainerConfig {
            security_context: Some(v1::LinuxContainerSecurityContext {
                namespace_options: namespaces(network),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
