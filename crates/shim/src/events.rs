//! Task events published to containerd (its ttrpc events service), in the
//! order they happen; a failed publish is logged, never fatal.

use std::time::{SystemTime, UNIX_EPOCH};

use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{MessageDyn, MessageField};
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::context::Context;

use crate::process::Stdio;

/// A protobuf timestamp.
pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        ..Default::default()
    }
}

/// Publishes the shim's events in its namespace.
pub struct Events {
    publisher: RemotePublisher,
    namespace: String,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Events {
    /// Events through `publisher` in `namespace`.
    pub fn new(publisher: RemotePublisher, namespace: String) -> Events {
        Events {
            publisher,
            namespace,
        }
    }

    async fn send(&self, topic: &str, ev: Box<dyn MessageDyn>) {
        if let Err(e) = self
            .publisher
            .publish(Context::default(), topic, &self.namespace, ev)
            .await
        {
            tracing::warn!(topic, error = %e, "cannot publish an event");
        }
    }

    /// `/tasks/create`.
    pub async fn create(&self, cid: &str, bundle: &str, stdio: &Stdio, pid: u32) {
        let io = TaskIO {
            stdin: stdio.stdin.clone(),
            stdout: stdio.stdout.clone(),
            stderr: stdio.stderr.clone(),
            terminal: stdio.terminal,
            ..Default::default()
        };
        let ev = TaskCreate {
            container_id: cid.into(),
            bundle: bundle.into(),
            io: MessageField::some(io),
            pid,
            ..Default::default()
        };
        self.send(topics::TASK_CREATE_EVENT_TOPIC, Box::new(ev))
            .await;
    }

    /// `/tasks/start`.
    pub async fn start(&self, cid: &str, pid: u32) {
        let ev = TaskStart {
            container_id: cid.into(),
            pid,
            ..Default::default()
        };
        self.send(topics::TASK_START_EVENT_TOPIC, Box::new(ev))
            .await;
    }

    /// `/tasks/exit`: `id` is the exec id, or the container id for the init.
    pub async fn exit(&self, cid: &str, id: &str, pid: u32, status: u32, at: SystemTime) {
        let ev = TaskExit {
            container_id: cid.into(),
            id: id.into(),
            pid,
            exit_status: status,
            exited_at: MessageField::some(timestamp(at)),
            ..Default::default()
        };
        self.send(topics::TASK_EXIT_EVENT_TOPIC, Box::new(ev)).await;
    }

    /// `/tasks/delete`.
    pub async fn delete(&self, cid: &str, pid: u32, status: u32, at: SystemTime) {
        let ev = TaskDelete {
            container_id: cid.into(),
            id: cid.into(),
            pid,
            exit_status: status,
            exited_at: MessageField::some(timestamp(at)),
            ..Default::default()
        };
        self.send(topics::TASK_DELETE_EVENT_TOPIC, Box::new(ev))
            .await;
    }

    /// `/tasks/exec-added`.
    pub async fn exec_added(&self, cid: &str, exec_id: &str) {
        let ev = TaskExecAdded {
            container_id: cid.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.send(topics::TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(ev))
            .await;
    }

    /// `/tasks/exec-started`.
    pub async fn exec_started(&self, cid: &str, exec_id: &str, pid: u32) {
        let ev = TaskExecStarted {
            container_id: cid.into(),
            exec_id: exec_id.into(),
            pid,
            ..Default::default()
        };
        self.send(topics::TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(ev))
            .await;
    }

    /// `/tasks/paused`.
    pub async fn paused(&self, cid: &str) {
        let ev = TaskPaused {
            container_id: cid.into(),
            ..Default::default()
        };
        self.send(topics::TASK_PAUSED_EVENT_TOPIC, Box::new(ev))
            .await;
    }

    /// `/tasks/resumed`.
    pub async fn resumed(&self, cid: &str) {
        let ev = TaskResumed {
            container_id: cid.into(),
            ..Default::default()
        };
        self.send(topics::TASK_RESUMED_EVENT_TOPIC, Box::new(ev))
            .await;
    }
}
