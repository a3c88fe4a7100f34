//! vCPU hotplug: `query-hotpluggable-cpus` gives the free slots with the
//! socket, core and thread ids QEMU wants; `device_add` fills them, lowest
//! first. Unplug removes the CPUs this sandbox hot-added, newest first, each
//! waiting for `DEVICE_DELETED` (the guest ejects it through ACPI).

use super::{PluggedCpu, UNPLUG_TIMEOUT};
use crate::error::{HypervisorError, Result};
use crate::qemu::core::Core;
use qmp::commands::{CpuInstanceProperties, HotpluggableCpu};
use serde_json::{Map, Value, json};
use tracing::info;

/// The `device_add` properties of a CPU slot (topology ids only; QEMU
/// refuses `node-id` without NUMA).
pub fn cpu_props(p: &CpuInstanceProperties) -> Map<String, Value> {
    let mut m = Map::new();
    for (k, v) in [
        ("socket-id", p.socket_id),
        ("die-id", p.die_id),
        ("cluster-id", p.cluster_id),
        ("core-id", p.core_id),
        ("thread-id", p.thread_id),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), v.into());
        }
    }
    m
}

/// The device id of a CPU slot: `cpu-<socket>-<core>-<thread>`.
pub fn cpu_id(p: &CpuInstanceProperties) -> String {
    let mut id = String::from("cpu");
    for v in [p.socket_id, p.die_id, p.cluster_id, p.core_id, p.thread_id]
        .into_iter()
        .flatten()
    {
        id.push_str(&format!("-{v}"));
    }
    id
}

fn key(p: &CpuInstanceProperties) -> [i64; 5] {
    [p.socket_id, p.die_id, p.cluster_id, p.core_id, p.thread_id].map(|v| v.unwrap_or(0))
}

/// The free slots to fill to add `count` vCPUs, lowest topology first.
pub fn pick_free(cpus: &[HotpluggableCpu], count: usize) -> Vec<&HotpluggableCpu> {
    let mut free: Vec<&HotpluggableCpu> = cpus.iter().filter(|c| c.qom_path.is_none()).collect();
    free.sort_by_key(|c| key(&c.props));
    free.into_iter().take(count).collect()
}

/// `device_del` a CPU and wait until QEMU no longer lists it. The guest
/// ejects it through ACPI; QEMU 10 under TCG reports `DEVICE_DELETED` for
/// the CPU's `lapic` child but not always for the CPU itself, so each event
/// after the request triggers a look at `query-hotpluggable-cpus`.
pub async fn unplug_cpu(c: &qmp::Client, id: &str) -> qmp::Result<()> {
    let path = format!("/machine/peripheral/{id}");
    let mut events = c.events();
    match c.execute("device_del", Some(json!({ "id": id }))).await {
        // Gone already (an earlier unplug finished after its caller gave up).
        Err(qmp::Error::Qmp { class, .. }) if class == "DeviceNotFound" => return Ok(()),
        r => r?,
    };
    let deadline = tokio::time::Instant::now() + UNPLUG_TIMEOUT;
    loop {
        let present = c
            .query_hotpluggable_cpus()
            .await?
            .iter()
            .any(|s| s.qom_path.as_deref() == Some(path.as_str()));
        if !present {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => {
                return Err(qmp::Error::Timeout {
                    command: "device_del".into(),
                });
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                return Err(qmp::Error::Disconnected);
            }
            Ok(_) => {}
        }
    }
}

impl Core {
    /// Resize to `n` vCPUs; returns (old, new).
    pub(crate) async fn hp_resize_vcpus(&mut self, n: u32) -> Result<(u32, u32)> {
        self.require_running("resize vCPUs")?;
        let max = self.config.max_vcpus;
        if n == 0 || n > max {
            return Err(HypervisorError::OutOfRange {
                what: format!("resize to {n} vCPUs"),
                reason: format!("must be 1 to default_maxvcpus ({max})"),
            });
        }
        let c = self.qmp().await?.clone();
        let count = |c: qmp::Client| async move {
            c.query_cpus_fast()
                .await
                .map(|v| v.len() as u32)
                .map_err(HypervisorError::qmp("query-cpus-fast"))
        };
        let old = count(c.clone()).await?;
        if n > old {
            self.add_vcpus(&c, (n - old) as usize).await?;
        } else if n < old {
            self.remove_vcpus(&c, (old - n) as usize).await?;
        }
        let new = count(c).await?;
        info!(old, new, "vCPUs resized");
        Ok((old, new))
    }

    /// Plug `want` vCPUs into free slots; on a failure, unplug this call's.
    async fn add_vcpus(&mut self, c: &qmp::Client, want: usize) -> Result<()> {
        let max = self.config.max_vcpus;
        let slots = c
            .query_hotpluggable_cpus()
            .await
            .map_err(HypervisorError::qmp("query-hotpluggable-cpus"))?;
        // QEMU's multi-threaded TCG gives each vCPU thread a translation
        // context out of maxcpus, and an unplugged vCPU never returns its
        // context: plugging a vCPU again past that count aborts QEMU
        // (tcg_register_thread). Refuse instead. KVM has no such limit.
        let st = self.record_mut("resize vCPUs")?;
        let tcg = st.accelerator.as_deref() == Some("tcg");
        let started = st.config.vcpus as usize + st.hotplug.vcpus_ever_added as usize;
        if tcg && started + want > max as usize {
            return Err(HypervisorError::OutOfRange {
                what: format!("add {want} vCPUs under TCG"),
                reason: format!(
                    "QEMU's multi-threaded TCG has {max} vCPU thread contexts and {started} were used (unplugged vCPUs do not return theirs); under KVM this limit does not apply"
                ),
            });
        }
        let free = pick_free(&slots, want);
        if free.len() < want {
            return Err(HypervisorError::OutOfRange {
                what: format!("add {want} vCPUs"),
                reason: format!("QEMU has only {} free CPU slots", free.len()),
            });
        }
        let mut added: Vec<PluggedCpu> = Vec::new();
        for slot in free {
            let id = cpu_id(&slot.props);
            let props = cpu_props(&slot.props);
            if let Err(e) = c.device_add(&slot.cpu_type, &id, props.clone()).await {
                // Undo this call's CPUs, newest first.
                for a in added.iter().rev() {
                    if let Err(e) = unplug_cpu(c, &a.id).await {
                        tracing::warn!(id = %a.id, error = %e, "rollback of a vCPU failed");
                    }
                }
                return Err(HypervisorError::Qmp {
                    op: "device_add (vCPU)",
                    source: e,
                });
            }
            added.push(PluggedCpu { id, props });
        }
        let st = self.record_mut("resize vCPUs")?;
        st.hotplug.vcpus_ever_added += added.len() as u32;
        st.hotplug.vcpus.extend(added);
        self.save()
    }

    /// Unplug the `remove` newest hot-added vCPUs.
    async fn remove_vcpus(&mut self, c: &qmp::Client, remove: usize) -> Result<()> {
        let have = self.state.as_ref().map_or(0, |s| s.hotplug.vcpus.len());
        if remove > have {
            return Err(HypervisorError::OutOfRange {
                what: format!("remove {remove} vCPUs"),
                reason: format!("only {have} were hot-added (boot vCPUs stay)"),
            });
        }
        for _ in 0..remove {
            let Some(cpu) = self
                .state
                .as_ref()
                .and_then(|s| s.hotplug.vcpus.last())
                .cloned()
            else {
                break;
            };
            if let Err(e) = unplug_cpu(c, &cpu.id).await {
                self.save()?;
                return Err(HypervisorError::Qmp {
                    op: "device_del (vCPU)",
                    source: e,
                });
            }
            self.record_mut("resize vCPUs")?.hotplug.vcpus.pop();
        }
        self.save()
    }
}
