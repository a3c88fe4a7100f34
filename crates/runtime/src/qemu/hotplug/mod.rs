//! Hotplug and resize of a running sandbox: disks, NICs, vsock, VFIO,
//! vCPUs, pc-dimm and virtio-mem memory.
//!
//! Every device operation is a list of QMP [`Step`]s, each with the call
//! that undoes it. [`run_steps`] executes them in order; when one fails, the
//! undo calls of the steps already done run in reverse, so the VM is left as
//! it was (backend deleted, slot freed, fd closed). What a device needs for
//! its removal is saved in `state.json` ([`HotplugState`]), so a process that
//! reattaches later can unplug it.
//!
//! The sequences are pure functions of the config and the request
//! (`block.rs`, `net.rs`, `vsock.rs`, `vfio.rs`), unit-tested on the QMP they
//! render; `cpu.rs` and `memory.rs` read QEMU's answers as they go.

pub mod block;
pub mod cable;
pub mod cpu;
pub mod memory;
pub mod net;
pub mod vfio;
pub mod vsock;

use super::core::Core;
use crate::error::{HypervisorError, Result};
use crate::plan::pci::SlotAddr;
use crate::types::{DeviceInfo, DeviceKind, DeviceSpec, Placement, VmState};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::os::fd::OwnedFd;
use std::time::Duration;
use tracing::{info, warn};

/// How long an unplug waits for the guest to release a device (`DEVICE_DELETED`).
pub const UNPLUG_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest device id: `drive-<id>` must fit QEMU's 31-byte node names.
pub const MAX_DEVICE_ID: usize = 24;

/// One QMP call: what `execute` and `arguments` carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QmpCall {
    /// The command.
    pub execute: String,
    /// Its arguments.
    pub arguments: Value,
}

impl QmpCall {
    /// A call of `execute` with `arguments`.
    pub fn new(execute: &str, arguments: Value) -> QmpCall {
        QmpCall {
            execute: execute.to_string(),
            arguments,
        }
    }

    /// `device_add` with a driver, an id and more properties.
    pub fn device_add(driver: &str, id: &str, props: Map<String, Value>) -> QmpCall {
        let mut a = Map::new();
        a.insert("driver".into(), driver.into());
        a.insert("id".into(), id.into());
        for (k, v) in props {
            a.entry(k).or_insert(v);
        }
        QmpCall::new("device_add", Value::Object(a))
    }

    /// `object-add` with a type, an id and more properties.
    pub fn object_add(qom_type: &str, id: &str, props: Map<String, Value>) -> QmpCall {
        let mut a = Map::new();
        a.insert("qom-type".into(), qom_type.into());
        a.insert("id".into(), id.into());
        for (k, v) in props {
            a.entry(k).or_insert(v);
        }
        QmpCall::new("object-add", Value::Object(a))
    }
}

/// One step of a hotplug: a call, and the call that undoes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The call.
    pub call: QmpCall,
    /// What undoes it (`device_del` waits for `DEVICE_DELETED`).
    pub undo: Option<QmpCall>,
    /// The call passes the caller's fd (`getfd`).
    pub pass_fd: bool,
    /// The undo belongs in the removal sequence too (not for `getfd`, whose
    /// fd the netdev takes over).
    pub undo_on_remove: bool,
}

impl Step {
    /// A step undone by `undo`, also on removal.
    pub fn new(call: QmpCall, undo: Option<QmpCall>) -> Step {
        Step {
            call,
            undo,
            pass_fd: false,
            undo_on_remove: true,
        }
    }

    /// `device_add`, undone by `device_del`.
    pub fn device(driver: &str, id: &str, props: Map<String, Value>) -> Step {
        Step::new(
            QmpCall::device_add(driver, id, props),
            Some(QmpCall::new("device_del", json!({ "id": id }))),
        )
    }
}

/// A device hotplugged into a running sandbox, as saved in `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluggedDevice {
    /// The QEMU device id.
    pub id: String,
    /// What it is.
    pub kind: DeviceKind,
    /// The QEMU driver.
    pub driver: String,
    /// Its bridge slot, when it holds one.
    #[serde(default)]
    pub slot: Option<SlotAddr>,
    /// What it was made from (path, tap, mac, size, cid, host), for display.
    #[serde(default)]
    pub info: Map<String, Value>,
    /// Where the guest finds it.
    #[serde(default)]
    pub placement: Option<Placement>,
    /// The calls that remove it, in order (`device_del` first).
    pub remove: Vec<QmpCall>,
    /// The calls that added it, in order, for a restore to replay them
    /// (empty for a cold-plugged device: it is on the command line).
    #[serde(default)]
    pub add: Vec<Replay>,
}

/// One call of a device's hotplug, as a restore replays it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replay {
    /// The call.
    pub call: QmpCall,
    /// It passes the device's fd (`getfd`): a tap is opened again by name.
    #[serde(default)]
    pub pass_fd: bool,
}

impl Replay {
    /// The replay of a plan's steps.
    pub fn of(steps: &[Step]) -> Vec<Replay> {
        steps
            .iter()
            .map(|s| Replay {
                call: s.call.clone(),
                pass_fd: s.pass_fd,
            })
            .collect()
    }
}

/// A hot-added vCPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluggedCpu {
    /// Device id.
    pub id: String,
    /// The topology properties it was added with.
    pub props: Map<String, Value>,
}

/// The virtio-mem device of a sandbox with `enable_virtio_mem`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VirtioMemState {
    /// Device id.
    pub id: String,
    /// Memory backend id.
    pub memdev: String,
    /// Backend size, MiB: the most it can add.
    pub region_mib: u64,
    /// Last requested size, MiB.
    pub requested_mib: u64,
    /// Size reached when last resized, MiB.
    pub size_mib: u64,
    /// Its bridge slot (none on CCW).
    #[serde(default)]
    pub slot: Option<SlotAddr>,
}

/// Everything hotplugged into a sandbox (`state.json`'s `hotplug`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HotplugState {
    /// Devices, in the order they were added.
    #[serde(default)]
    pub devices: Vec<PluggedDevice>,
    /// Hot-added vCPUs, in the order they were added.
    #[serde(default)]
    pub vcpus: Vec<PluggedCpu>,
    /// The virtio-mem device, once set up.
    #[serde(default)]
    pub virtio_mem: Option<VirtioMemState>,
    /// vCPUs hot-added over the VM's life, unplugged ones included (each
    /// used a TCG thread context; see `hp_resize_vcpus`).
    #[serde(default)]
    pub vcpus_ever_added: u32,
}

impl HotplugState {
    /// The device with this id.
    pub fn find(&self, id: &str) -> Option<&PluggedDevice> {
        self.devices.iter().find(|d| d.id == id)
    }

    /// Memory added by pc-dimms, MiB.
    pub fn dimm_mib(&self) -> u64 {
        self.devices
            .iter()
            .filter(|d| d.kind == DeviceKind::Dimm)
            .filter_map(|d| d.info.get("size_mib").and_then(Value::as_u64))
            .sum()
    }

    /// Whether an id is taken by anything this state knows.
    pub fn id_taken(&self, id: &str) -> bool {
        self.find(id).is_some()
            || self.vcpus.iter().any(|c| c.id == id)
            || self.virtio_mem.as_ref().is_some_and(|m| m.id == id)
    }

    /// The lowest SCSI index (target * 256 + LUN) no disk uses.
    pub fn next_scsi_index(&self) -> u32 {
        let used: Vec<u64> = self
            .devices
            .iter()
            .filter_map(|d| d.info.get("scsi_index").and_then(Value::as_u64))
            .collect();
        (0u32..)
            .find(|i| !used.contains(&u64::from(*i)))
            .unwrap_or_default()
    }

    /// A free id `<prefix><n>`.
    pub fn next_id(&self, prefix: &str) -> String {
        (0u32..)
            .map(|n| format!("{prefix}{n}"))
            .find(|id| !self.id_taken(id))
            .unwrap_or_else(|| prefix.to_string())
    }
}

/// Check a device id the caller chose: QEMU's id syntax, and short enough
/// for the node names derived from it.
pub fn validate_device_id(id: &str) -> Result<()> {
    let bad = |why: &str| Err(HypervisorError::invalid("device id", id, why));
    if id.is_empty() {
        return bad("empty");
    }
    if id.len() > MAX_DEVICE_ID {
        return bad("longer than 24 bytes");
    }
    if !id.as_bytes()[0].is_ascii_alphabetic() {
        return bad("must start with a letter");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return bad("only letters, digits, '-', '.' and '_' are allowed");
    }
    Ok(())
}

/// Run one call; `device_del` waits for the guest to release the device.
pub(crate) async fn exec(
    c: &qmp::Client,
    call: &QmpCall,
    fd: Option<&OwnedFd>,
) -> qmp::Result<Value> {
    let args = Some(call.arguments.clone());
    match (call.execute.as_str(), fd) {
        ("device_del", _) => {
            let id = call.arguments["id"].as_str().unwrap_or_default();
            c.device_del_with_timeout(id, UNPLUG_TIMEOUT)
                .await
                .map(|_| Value::Null)
        }
        (_, Some(fd)) => c.execute_with_fds(&call.execute, args, &[fd]).await,
        (name, None) => c.execute(name, args).await,
    }
}

/// The QMP error of a failed step, naming the command.
pub(crate) fn step_error(call: &QmpCall, e: qmp::Error) -> HypervisorError {
    let op: &'static str = match call.execute.as_str() {
        "blockdev-add" => "blockdev-add",
        "device_add" => "device_add",
        "netdev_add" => "netdev_add",
        "object-add" => "object-add",
        "getfd" => "getfd",
        "device_del" => "device_del",
        _ => "hotplug",
    };
    HypervisorError::Qmp { op, source: e }
}

/// Run the undo calls in reverse order, logging (not returning) failures.
async fn undo_all(c: &qmp::Client, undos: &[QmpCall]) {
    for u in undos.iter().rev() {
        if let Err(e) = exec(c, u, None).await {
            warn!(call = %u.execute, args = %u.arguments, error = %e, "rollback step failed");
        }
    }
}

/// Run `steps` in order. On a failure, undo the steps done, in reverse, and
/// return the error. On success, return the removal sequence.
pub async fn run_steps(
    c: &qmp::Client,
    steps: &[Step],
    fd: Option<&OwnedFd>,
) -> Result<Vec<QmpCall>> {
    let mut undos: Vec<QmpCall> = Vec::new();
    for s in steps {
        let r = exec(c, &s.call, if s.pass_fd { fd } else { None }).await;
        if let Err(e) = r {
            undo_all(c, &undos).await;
            return Err(step_error(&s.call, e));
        }
        if let Some(u) = &s.undo {
            undos.push(u.clone());
        }
    }
    Ok(steps
        .iter()
        .rev()
        .filter(|s| s.undo_on_remove)
        .filter_map(|s| s.undo.clone())
        .collect())
}

/// Where a hotplugged PCI device goes: a bridge slot (allocated by the
/// caller), or no bus (CCW: QEMU picks).
pub fn bus_props(slot: Option<&SlotAddr>) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(s) = slot {
        m.insert("bus".into(), s.bridge.clone().into());
        m.insert("addr".into(), s.addr().into());
    }
    m
}

/// A device plan: the steps, what to record, and whether it needs a slot.
#[derive(Debug)]
pub struct Plan {
    /// The record (without `remove`, filled from the steps).
    pub record: PluggedDevice,
    /// The steps.
    pub steps: Vec<Step>,
    /// An fd the `getfd` step passes.
    pub fd: Option<OwnedFd>,
    /// The device goes on a bridge slot (allocated when the plan runs).
    pub needs_slot: bool,
}

impl Core {
    /// The hotplug record of the sandbox.
    pub(crate) fn hotplugged(&self) -> Option<&HotplugState> {
        self.state.as_ref().map(|s| &s.hotplug)
    }

    /// Hotplug a device ([`crate::Hypervisor::hotplug_add_device`]).
    pub(crate) async fn hp_add(&mut self, dev: DeviceSpec) -> Result<DeviceInfo> {
        self.require_running("hotplug a device")?;
        let cfg = self.config.clone();
        let st = self.record_mut("hotplug a device")?;
        let (hp, layout) = (st.hotplug.clone(), st.layout.clone());
        let arch = &layout.arch;
        let mut plan = match dev {
            DeviceSpec::Block {
                id,
                path,
                readonly,
                disposable,
            } => {
                block::refuse_disposable(&path, disposable)?;
                block::plan(&cfg, arch, &hp, id, &path, readonly)?
            }
            DeviceSpec::Net { id, tap, mac } => net::plan_tap(&cfg, arch, &hp, id, &tap, mac)?,
            DeviceSpec::NetFd { id, fd, mac } => net::plan_fd(&cfg, arch, &hp, id, fd, mac)?,
            DeviceSpec::Cable { id, fd, mac, peer } => cable::plan(arch, &hp, id, fd, mac, &peer)?,
            DeviceSpec::Vsock { id, guest_cid } => vsock::plan(arch, &hp, id, guest_cid)?,
            DeviceSpec::Vfio { id, host } => vfio::plan(&cfg, arch, &hp, id, &host)?,
            DeviceSpec::Channel { .. } => {
                return Err(HypervisorError::unsupported(
                    "hotplug a channel",
                    "extra channels are cold-plugged: add it between create and start",
                ));
            }
            DeviceSpec::AgentChannel { .. } => {
                return Err(HypervisorError::unsupported(
                    "hotplug an agent channel",
                    "the agent channel is cold-plugged (add_device before start)",
                ));
            }
        };
        let id = plan.record.id.clone();
        if hp.id_taken(&id) {
            return Err(HypervisorError::DeviceIdInUse {
                id,
                sandbox: self.id().to_string(),
            });
        }
        // A bridge slot, when the plan asked for one.
        let st = self.record_mut("hotplug a device")?;
        let slot = if plan.needs_slot {
            let s = st.pci.allocate(&id)?;
            plan.place(&s);
            Some(s)
        } else {
            None
        };
        let c = match self.qmp().await {
            Ok(c) => c.clone(),
            Err(e) => {
                self.release_slot(&id);
                return Err(e);
            }
        };
        let removal = match run_steps(&c, &plan.steps, plan.fd.as_ref()).await {
            Ok(r) => r,
            Err(e) => {
                self.release_slot(&id);
                return Err(e);
            }
        };
        drop(plan.fd.take());
        let mut record = plan.record;
        record.slot = slot;
        record.remove = removal.clone();
        record.add = Replay::of(&plan.steps);
        if record.kind == DeviceKind::Nvdimm {
            let earlier = hp
                .devices
                .iter()
                .filter(|d| d.kind == DeviceKind::Nvdimm)
                .count()
                + usize::from(layout.image_on_nvdimm);
            record.info.insert("nvdimm_index".into(), earlier.into());
        }
        record.placement = Some(placement(&layout, &record));
        let info = DeviceInfo {
            id: id.clone(),
            kind: record.kind,
            driver: record.driver.clone(),
            placement: record.placement.clone().unwrap_or(Placement::Auto),
            mac: record
                .info
                .get("mac")
                .and_then(Value::as_str)
                .map(String::from),
        };
        self.record_mut("hotplug a device")?
            .hotplug
            .devices
            .push(record);
        if let Err(e) = self.save() {
            // Not persisted: take it out again, so no process is left
            // believing in a device it cannot see.
            undo_all(&c, &removal.iter().rev().cloned().collect::<Vec<_>>()).await;
            self.forget(&id);
            return Err(e);
        }
        info!(id, placement = %info.placement, "device hotplugged");
        Ok(info)
    }

    fn release_slot(&mut self, id: &str) {
        if let Some(st) = self.state.as_mut() {
            st.pci.release(id);
        }
    }

    fn forget(&mut self, id: &str) {
        if let Some(st) = self.state.as_mut() {
            st.pci.release(id);
            st.hotplug.devices.retain(|d| d.id != id);
        }
    }

    /// Unplug a device ([`crate::Hypervisor::hotplug_remove_device`]); before
    /// start, take a cold-plugged device out.
    pub(crate) async fn hp_remove(&mut self, id: &str) -> Result<()> {
        let no_such = |core: &Core| HypervisorError::NoSuchDevice {
            id: id.to_string(),
            sandbox: core.id().to_string(),
        };
        if self.state.as_ref().map(|s| s.state) == Some(VmState::Created) {
            if !self
                .state
                .as_ref()
                .is_some_and(|s| s.cold.iter().any(|d| d.id == id))
            {
                return Err(no_such(self));
            }
            self.forget_cold(id);
            return self.save();
        }
        self.require_running("unplug a device")?;
        let Some(dev) = self.hotplugged().and_then(|h| h.find(id)).cloned() else {
            return Err(no_such(self));
        };
        if dev.kind == DeviceKind::Dimm {
            return Err(HypervisorError::unsupported(
                format!("unplug {id}"),
                "pc-dimm memory cannot be unplugged (enable_virtio_mem to shrink memory)",
            ));
        }
        let c = self.qmp().await?.clone();
        let mut calls = dev.remove.iter();
        // The device itself first: if the guest keeps it, nothing changes.
        if let Some(first) = calls.next() {
            exec(&c, first, None)
                .await
                .map_err(|e| step_error(first, e))?;
        }
        for call in calls {
            if let Err(e) = exec(&c, call, None).await {
                warn!(id, call = %call.execute, error = %e, "cleanup after unplug failed");
            }
        }
        self.forget(id);
        self.save()?;
        info!(id, "device unplugged");
        Ok(())
    }
}

/// Where the guest finds a hotplugged device.
fn placement(layout: &crate::plan::Layout, d: &PluggedDevice) -> Placement {
    if let Some(s) = &d.slot {
        return Placement::Pci {
            path: crate::plan::bridges::pci_path(layout, s),
        };
    }
    if let Some(i) = d.info.get("scsi_index").and_then(Value::as_u64) {
        let (id, lun) = block::scsi_id_lun(i as u32);
        return Placement::Scsi { id, lun };
    }
    if d.kind == DeviceKind::Nvdimm {
        let index = d
            .info
            .get("nvdimm_index")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        return Placement::Nvdimm {
            index: index as u32,
        };
    }
    if let Some(rp) = d.info.get("root_port").and_then(Value::as_str) {
        return Placement::Pci {
            path: rp.to_string(),
        };
    }
    Placement::Auto
}

impl PluggedDevice {
    /// A record with only an id (for plans whose record is not kept).
    pub(crate) fn placeholder(id: &str) -> PluggedDevice {
        PluggedDevice {
            id: id.to_string(),
            kind: DeviceKind::Dimm,
            driver: String::new(),
            slot: None,
            info: Map::new(),
            placement: None,
            remove: Vec::new(),
            add: Vec::new(),
        }
    }
}

impl Plan {
    /// Put the plan's devices on `slot` (fills `bus` and `addr` of the
    /// `device_add` whose id is the record's).
    pub(crate) fn place(&mut self, slot: &SlotAddr) {
        let id = self.record.id.clone();
        for s in &mut self.steps {
            if s.call.execute == "device_add"
                && s.call.arguments["id"] == id
                && let Some(a) = s.call.arguments.as_object_mut()
            {
                a.extend(bus_props(Some(slot)));
            }
        }
    }
}

/// The explanation Kata gives when the host refuses to back guest memory.
pub fn overcommit_help(e: &qmp::Error) -> Option<String> {
    let msg = e.to_string();
    if !msg.contains("Cannot allocate memory") {
        return None;
    }
    let now = std::fs::read_to_string("/proc/sys/vm/overcommit_memory")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    Some(format!(
        "the host refused to back the memory (vm.overcommit_memory is {now}); \
         allow overcommit with `echo 1 > /proc/sys/vm/overcommit_memory`, or lower default_maxmemory"
    ))
}

#[cfg(test)]
mod tests;
