//! `sandvm link A B`: join two running sandboxes with a cable, a
//! `socketpair(AF_UNIX, SOCK_DGRAM)` whose ends become a NIC in each
//! (docs/hotplug.md, "Cables"). Both sandboxes are attached (locked) for the
//! whole operation; when the second end fails, the first is unplugged again.

use anyhow::{Result, bail};
use runtime::tools::cable_socketpair;
use runtime::{DeviceSpec, Hypervisor, Qemu, StateRoot};
use serde_json::json;
use std::sync::Arc;

/// The first `cableN` free in both sandboxes.
fn free_id(a: &Qemu, b: &Qemu) -> String {
    (0u32..)
        .map(|n| format!("cable{n}"))
        .find(|id| {
            [a, b]
                .iter()
                .all(|q| q.hotplugged().is_none_or(|h| !h.id_taken(id)))
        })
        .unwrap_or_else(|| "cable".into())
}

/// Link sandboxes `a` and `b`; prints the device id (the same in both).
pub async fn link(
    root: StateRoot,
    a: &str,
    b: &str,
    [mac_a, mac_b]: [Option<String>; 2],
    dev: Option<String>,
    json: bool,
) -> Result<()> {
    if a == b {
        bail!("cannot link sandbox {a} to itself");
    }
    let qa = Qemu::attach(root.clone(), a).await?;
    let qb = Qemu::attach(root, b).await?;
    let id = dev.unwrap_or_else(|| free_id(&qa, &qb));
    let (end_a, end_b) = cable_socketpair()?;
    let ia = qa
        .hotplug_add_device(DeviceSpec::Cable {
            id: id.clone(),
            fd: Arc::new(end_a),
            mac: mac_a,
            peer: b.into(),
        })
        .await?;
    let added = qb
        .hotplug_add_device(DeviceSpec::Cable {
            id: id.clone(),
            fd: Arc::new(end_b),
            mac: mac_b,
            peer: a.into(),
        })
        .await;
    let ib = match added {
        Ok(i) => i,
        Err(e) => {
            if let Err(undo) = qa.hotplug_remove_device(&id).await {
                tracing::warn!(sandbox = a, id, error = %undo, "could not unplug the first end of the cable");
            }
            return Err(e.into());
        }
    };
    let (ma, mb) = (ia.mac.unwrap_or_default(), ib.mac.unwrap_or_default());
    drop((qa, qb));
    if json {
        println!(
            "{}",
            json!({"id": id, "a": {"sandbox": a, "mac": ma}, "b": {"sandbox": b, "mac": mb}})
        );
    } else {
        println!("{id}");
    }
    Ok(())
}
