//! File descriptor passing: `getfd`, `add-fd`, `remove-fd`, `closefd`.

use std::os::fd::AsFd;

use serde_json::{Map, Value, json};

use super::{AddFdInfo, decode};
use crate::client::Client;
use crate::error::Result;

impl Client {
    /// `getfd`: passes `fd` to QEMU under `fdname` (for `fd:NAME` users such
    /// as `netdev_add ... fd=NAME` or `migrate fd:NAME`).
    pub async fn getfd(&self, fdname: &str, fd: impl AsFd) -> Result<()> {
        self.execute_with_fds("getfd", Some(json!({ "fdname": fdname })), &[fd])
            .await
            .map(drop)
    }

    /// `closefd`: closes an fd received with `getfd`.
    pub async fn closefd(&self, fdname: &str) -> Result<()> {
        self.execute("closefd", Some(json!({ "fdname": fdname })))
            .await
            .map(drop)
    }

    /// `add-fd`: adds `fd` to fd set `fdset_id` (a new set when `None`).
    pub async fn add_fd(
        &self,
        fd: impl AsFd,
        fdset_id: Option<i64>,
        opaque: Option<&str>,
    ) -> Result<AddFdInfo> {
        let mut args = Map::new();
        if let Some(id) = fdset_id {
            args.insert("fdset-id".into(), id.into());
        }
        if let Some(o) = opaque {
            args.insert("opaque".into(), o.into());
        }
        let reply = self
            .execute_with_fds("add-fd", Some(Value::Object(args)), &[fd])
            .await?;
        decode("add-fd", reply)
    }

    /// `remove-fd`: removes `fd` (or the whole set when `None`) from `fdset_id`.
    pub async fn remove_fd(&self, fdset_id: i64, fd: Option<i64>) -> Result<()> {
        let mut args = json!({ "fdset-id": fdset_id });
        if let (Some(fd), Some(obj)) = (fd, args.as_object_mut()) {
            obj.insert("fd".into(), fd.into());
        }
        self.execute("remove-fd", Some(args)).await.map(drop)
    }

    /// `query-fdsets` (raw).
    pub async fn query_fdsets(&self) -> Result<Value> {
        self.execute("query-fdsets", None).await
    }
}
