//! Hotplug of block nodes, devices, netdevs, chardevs and QOM objects.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::client::{Client, DEFAULT_COMMAND_TIMEOUT};
use crate::error::Result;
use crate::events::Event;

fn with_props(mut head: Map<String, Value>, props: Map<String, Value>) -> Value {
    for (k, v) in props {
        head.entry(k).or_insert(v);
    }
    Value::Object(head)
}

impl Client {
    /// `blockdev-add` with the full `BlockdevOptions` object (must include
    /// `driver` and `node-name`).
    pub async fn blockdev_add(&self, options: Value) -> Result<()> {
        self.execute("blockdev-add", Some(options)).await.map(drop)
    }

    /// `blockdev-del`.
    pub async fn blockdev_del(&self, node_name: &str) -> Result<()> {
        self.execute("blockdev-del", Some(json!({ "node-name": node_name })))
            .await
            .map(drop)
    }

    /// `device_add` with `driver`, `id` and free-form properties
    /// (`bus`, `addr`, `netdev`, ...). `driver`/`id` win over same-named props.
    pub async fn device_add(
        &self,
        driver: &str,
        id: &str,
        props: Map<String, Value>,
    ) -> Result<()> {
        let mut head = Map::new();
        head.insert("driver".into(), driver.into());
        head.insert("id".into(), id.into());
        self.execute("device_add", Some(with_props(head, props)))
            .await
            .map(drop)
    }

    /// `device_del`, then waits for `DEVICE_DELETED` with `data.device == id`
    /// (or `data.path == id`). Bounded by the handle's timeout (or
    /// [`DEFAULT_COMMAND_TIMEOUT`]).
    pub async fn device_del(&self, id: &str) -> Result<Event> {
        let timeout = self.default_timeout().unwrap_or(DEFAULT_COMMAND_TIMEOUT);
        self.device_del_with_timeout(id, timeout).await
    }

    /// `device_del` with a caller-chosen bound on the wait for `DEVICE_DELETED`.
    pub async fn device_del_with_timeout(&self, id: &str, timeout: Duration) -> Result<Event> {
        self.execute_until(
            "device_del",
            Some(json!({ "id": id })),
            |e| e.is_device_deleted(id),
            timeout,
        )
        .await
        .map(|(_, ev)| ev)
    }

    /// `netdev_add` with the full `Netdev` object (`type`, `id`, ...).
    pub async fn netdev_add(&self, netdev: Value) -> Result<()> {
        self.execute("netdev_add", Some(netdev)).await.map(drop)
    }

    /// `netdev_del`.
    pub async fn netdev_del(&self, id: &str) -> Result<()> {
        self.execute("netdev_del", Some(json!({ "id": id })))
            .await
            .map(drop)
    }

    /// `chardev-add` with `id` and a `ChardevBackend` object, e.g.
    /// `{"type":"socket","data":{...}}`. Returns the raw `ChardevReturn`.
    pub async fn chardev_add(&self, id: &str, backend: Value) -> Result<Value> {
        self.execute("chardev-add", Some(json!({ "id": id, "backend": backend })))
            .await
    }

    /// `chardev-remove`.
    pub async fn chardev_remove(&self, id: &str) -> Result<()> {
        self.execute("chardev-remove", Some(json!({ "id": id })))
            .await
            .map(drop)
    }

    /// `object-add` with `qom-type`, `id` and properties flattened beside them.
    pub async fn object_add(
        &self,
        qom_type: &str,
        id: &str,
        props: Map<String, Value>,
    ) -> Result<()> {
        let mut head = Map::new();
        head.insert("qom-type".into(), qom_type.into());
        head.insert("id".into(), id.into());
        self.execute("object-add", Some(with_props(head, props)))
            .await
            .map(drop)
    }

    /// `object-del`.
    pub async fn object_del(&self, id: &str) -> Result<()> {
        self.execute("object-del", Some(json!({ "id": id })))
            .await
            .map(drop)
    }
}
