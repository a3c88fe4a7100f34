//! Hotplug and resize subcommands: `resize-memory`, `resize-vcpus`,
//! `hotplug`, `unplug`, `devices`. Each attaches to the sandbox through its
//! saved state, does one operation and lets go (lock and QMP connection).

use anyhow::Result;
use clap::Subcommand;
use runtime::{DeviceSpec, Hypervisor, Qemu, StateRoot};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// The hotplug subcommands (flattened into the top level).
#[derive(Subcommand)]
pub enum HotplugCmd {
    /// Resize guest memory to MIB in all (virtio-mem grows and shrinks; pc-dimm only grows).
    ResizeMemory {
        /// Sandbox id.
        id: String,
        /// Target guest memory, MiB.
        mib: u64,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Resize to N vCPUs (hot-added CPUs can be removed again; boot CPUs stay).
    ResizeVcpus {
        /// Sandbox id.
        id: String,
        /// Target vCPU count.
        n: u32,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Hotplug a device; prints its id.
    Hotplug {
        /// Sandbox id.
        id: String,
        /// What to plug.
        #[command(subcommand)]
        what: Plug,
    },
    /// Unplug a hotplugged device.
    Unplug {
        /// Sandbox id.
        id: String,
        /// Device id (see `sandvm devices`).
        dev: String,
    },
    /// Join two running sandboxes with a cable: a NIC in each, on the two
    /// ends of a socketpair (no host network); prints the device id.
    Link {
        /// First sandbox id.
        a: String,
        /// Second sandbox id.
        b: String,
        /// MAC address of A's NIC (default: random, locally administered).
        #[arg(long)]
        mac_a: Option<String>,
        /// MAC address of B's NIC (default: random, locally administered).
        #[arg(long)]
        mac_b: Option<String>,
        /// Device id in both sandboxes (default: cableN, the first free).
        #[arg(long = "id")]
        dev: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// List what was hotplugged into a sandbox.
    Devices {
        /// Sandbox id.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// What `sandvm hotplug` plugs.
#[derive(Subcommand)]
pub enum Plug {
    /// A disk image (virtio-blk, scsi-hd or nvdimm, per block_device_driver).
    Block {
        /// Image file or block device.
        path: PathBuf,
        /// Device id (default: blkN).
        #[arg(long = "id")]
        dev: Option<String>,
        /// Read-only.
        #[arg(long)]
        readonly: bool,
        /// Disposable (writes thrown away): refused on hotplug, where
        /// blockdev-add has no snapshot=on; use `create --disk PATH:disposable`.
        #[arg(long)]
        disposable: bool,
    },
    /// A NIC on a tap device (opened by name; created if missing).
    Net {
        /// Tap name.
        tap: String,
        /// Device id (default: netN).
        #[arg(long = "id")]
        dev: Option<String>,
        /// MAC address (default: random, locally administered).
        #[arg(long)]
        mac: Option<String>,
    },
    /// vhost-vsock with a guest CID (needs /dev/vhost-vsock).
    Vsock {
        /// Guest context id (at least 3).
        cid: u32,
        /// Device id (default: vsockN).
        #[arg(long = "id")]
        dev: Option<String>,
    },
    /// A host PCI device through VFIO (untested on hardware).
    Vfio {
        /// Host PCI address (0000:01:00.0) or /sys/bus/pci/devices/... path.
        host: String,
        /// Device id (default: vfioN).
        #[arg(long = "id")]
        dev: Option<String>,
    },
}

/// Run one hotplug subcommand.
pub async fn run(cmd: HotplugCmd, root: StateRoot) -> Result<ExitCode> {
    match cmd {
        HotplugCmd::ResizeMemory { id, mib, json } => {
            let q = Qemu::attach(root, &id).await?;
            let r = q.resize_memory(mib).await?;
            drop(q);
            let reached = r.total_mib;
            if json {
                println!(
                    "{}",
                    json!({"requested_mib": mib, "memory_mib": reached, "device": r.device})
                );
            } else {
                println!("memory: {reached} MiB (requested {mib} MiB)");
            }
        }
        HotplugCmd::ResizeVcpus { id, n, json } => {
            let q = Qemu::attach(root, &id).await?;
            let (old, new) = q.resize_vcpus(n).await?;
            drop(q);
            if json {
                println!("{}", json!({"old": old, "new": new}));
            } else {
                println!("vcpus: {old} -> {new}");
            }
        }
        HotplugCmd::Hotplug { id, what } => {
            let spec = match what {
                Plug::Block {
                    path,
                    dev,
                    readonly,
                    disposable,
                } => DeviceSpec::Block {
                    id: dev.unwrap_or_default(),
                    path: std::path::absolute(&path).unwrap_or(path),
                    readonly,
                    disposable,
                },
                Plug::Net { tap, dev, mac } => DeviceSpec::Net {
                    id: dev.unwrap_or_default(),
                    tap,
                    mac,
                },
                Plug::Vsock { cid, dev } => DeviceSpec::Vsock {
                    id: dev.unwrap_or_default(),
                    guest_cid: cid,
                },
                Plug::Vfio { host, dev } => DeviceSpec::Vfio {
                    id: dev.unwrap_or_default(),
                    host,
                },
            };
            let q = Qemu::attach(root, &id).await?;
            let info = q.hotplug_add_device(spec).await?;
            drop(q);
            println!("{}", info.id);
        }
        HotplugCmd::Link {
            a,
            b,
            mac_a,
            mac_b,
            dev,
            json,
        } => crate::cable::link(root, &a, &b, [mac_a, mac_b], dev, json).await?,
        HotplugCmd::Unplug { id, dev } => {
            let q = Qemu::attach(root, &id).await?;
            q.hotplug_remove_device(&dev).await?;
        }
        HotplugCmd::Devices { id, json } => devices(&root, &id, json)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `sandvm devices`: what was hot- or cold-plugged, with slots and details.
fn devices(root: &StateRoot, id: &str, json: bool) -> Result<()> {
    let st = runtime::peek_record(root, id)?;
    let hp = &st.hotplug;
    if json {
        println!("{}", serde_json::to_string(hp)?);
    } else {
        println!(
            "{:<16} {:<8} {:<16} {:<20} DETAILS",
            "ID", "KIND", "DRIVER", "SLOT"
        );
        for d in &hp.devices {
            let slot = d
                .slot
                .as_ref()
                .map_or("-".into(), |s| format!("{}:{}", s.bridge, s.addr()));
            let details: Vec<String> = d
                .info
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), String::from)))
                .collect();
            println!(
                "{:<16} {:<8} {:<16} {:<20} {}",
                d.id,
                d.kind.to_string(),
                d.driver,
                slot,
                details.join(" ")
            );
        }
        for c in &hp.vcpus {
            println!("{:<16} {:<8} {:<16} {:<20} -", c.id, "vcpu", "", "-");
        }
        if let Some(m) = &hp.virtio_mem {
            let slot = m
                .slot
                .as_ref()
                .map_or("-".into(), |s| format!("{}:{}", s.bridge, s.addr()));
            println!(
                "{:<16} {:<8} {:<16} {:<20} region_mib={} requested_mib={} size_mib={}",
                m.id, "memory", "virtio-mem", slot, m.region_mib, m.requested_mib, m.size_mib
            );
        }
    }
    Ok(())
}
