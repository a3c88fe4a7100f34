//! The containerd-shim crate's `Shim`: the binary's actions and the server.

use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::{ExitSignal, Shim};
use containerd_shim::{Config, DeleteResponse, Flags, StartOpts};

use crate::actions;
use crate::error::chain;
use crate::events::Events;
use crate::logging;
use crate::service::{Service, remove_socket};
use crate::task::TaskService;

/// containerd's name for this runtime.
pub const RUNTIME_NAME: &str = "io.containerd.sandvm.v2";

/// The shim: the flags containerd ran it with, and the exit signal of its server.
pub struct SandvmShim {
    namespace: String,
    id: String,
    socket: String,
    exit: Arc<ExitSignal>,
}

impl std::fmt::Debug for SandvmShim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandvmShim")
            .field("namespace", &self.namespace)
            .field("id", &self.id)
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

/// The crate's configuration for this shim: no global reaper (the runtime
/// waits for QEMU and its daemons on pidfds and must keep their exits), and
/// no subreaper either (as Kata: orphans of the VM's daemons go to init),
/// and logging set up here.
pub fn shim_config() -> Config {
    Config {
        no_setup_logger: true,
        no_reaper: true,
        no_sub_reaper: true,
        ..Config::default()
    }
}

#[async_trait]
impl Shim for SandvmShim {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        logging::init(&args.action, args.debug);
        SandvmShim {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            socket: args.socket.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        actions::start(opts)
            .await
            .map_err(|e| containerd_shim::Error::Other(chain(&e)))
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = std::env::current_dir()
            .map_err(|e| containerd_shim::Error::Other(format!("Cannot find the bundle: {e}")))?;
        Ok(actions::delete(&self.namespace, &self.id, &bundle).await)
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
        remove_socket(&self.socket).await;
        tracing::info!("shim exits");
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        let events = Events::new(publisher, self.namespace.clone());
        let svc = Service::new(
            self.namespace.clone(),
            events,
            Arc::clone(&self.exit),
            self.socket.clone(),
        );
        TaskService::new(Arc::new(svc))
    }
}
