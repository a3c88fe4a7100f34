//! Run state and lifecycle: status, stop, cont, powerdown, quit, version, kvm.

use std::time::Duration;

use serde_json::Value;

use super::{KvmInfo, StatusInfo, VersionInfo, decode};
use crate::client::{Client, DEFAULT_COMMAND_TIMEOUT};
use crate::error::{Error, Result};
use crate::events::{Event, PowerdownWait};

impl Client {
    /// `qmp_capabilities` (already sent by `connect`; QEMU rejects a second one).
    pub async fn qmp_capabilities(&self, enable: &[&str]) -> Result<()> {
        let args = (!enable.is_empty()).then(|| serde_json::json!({ "enable": enable }));
        self.execute("qmp_capabilities", args).await.map(drop)
    }

    /// `query-status`.
    pub async fn query_status(&self) -> Result<StatusInfo> {
        decode("query-status", self.execute("query-status", None).await?)
    }

    /// `stop`: pause all vCPUs.
    pub async fn stop(&self) -> Result<()> {
        self.execute("stop", None).await.map(drop)
    }

    /// `cont`: resume (or start a `-S` guest).
    pub async fn cont(&self) -> Result<()> {
        self.execute("cont", None).await.map(drop)
    }

    /// `system_powerdown`, then waits for `SHUTDOWN` or `POWERDOWN`.
    ///
    /// Bounded by the handle's timeout (or [`DEFAULT_COMMAND_TIMEOUT`] if it
    /// has none).
    pub async fn system_powerdown(&self, wait_for: PowerdownWait) -> Result<Event> {
        let name = wait_for.event_name();
        let timeout = self.default_timeout().unwrap_or(DEFAULT_COMMAND_TIMEOUT);
        self.execute_until("system_powerdown", None, |e| e.name == name, timeout)
            .await
            .map(|(_, ev)| ev)
    }

    /// `system_powerdown` with a caller-chosen bound on the wait.
    pub async fn system_powerdown_with_timeout(
        &self,
        wait_for: PowerdownWait,
        timeout: Duration,
    ) -> Result<Event> {
        let name = wait_for.event_name();
        self.execute_until("system_powerdown", None, |e| e.name == name, timeout)
            .await
            .map(|(_, ev)| ev)
    }

    /// `quit`: QEMU exits. A connection that closes before the reply
    /// arrives also counts as success.
    pub async fn quit(&self) -> Result<()> {
        match self.execute("quit", None).await {
            Ok(_) | Err(Error::Disconnected) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `query-version`.
    pub async fn query_version(&self) -> Result<VersionInfo> {
        decode("query-version", self.execute("query-version", None).await?)
    }

    /// `query-kvm`.
    pub async fn query_kvm(&self) -> Result<KvmInfo> {
        decode("query-kvm", self.execute("query-kvm", None).await?)
    }

    /// `query-pci`: list of PCI buses with their devices (raw).
    pub async fn query_pci(&self) -> Result<Vec<Value>> {
        decode("query-pci", self.execute("query-pci", None).await?)
    }

    /// `dump-guest-memory` with `paging`, `protocol` (`file:PATH` or `fd:NAME`)
    /// and optional `format` (`elf`, `kdump-zlib`, `win-dmp`, ...). Synchronous
    /// (`detach` false), so bounded by the handle's timeout.
    pub async fn dump_guest_memory(
        &self,
        paging: bool,
        protocol: &str,
        format: Option<&str>,
    ) -> Result<()> {
        let mut args = serde_json::json!({ "paging": paging, "protocol": protocol });
        if let (Some(f), Some(obj)) = (format, args.as_object_mut()) {
            obj.insert("format".into(), Value::String(f.to_string()));
        }
        self.execute("dump-guest-memory", Some(args))
            .await
            .map(drop)
    }
}
