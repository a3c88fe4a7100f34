//! Create: the container's root filesystem mounted at `<bundle>/rootfs` (as
//! runc's shim does), shared into the sandbox, and the container created by
//! the agent from the rewritten spec. Each step undoes itself on failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim_protos::api::CreateTaskRequest;
use oci_spec::runtime::Spec;
use sandvm_agent_protocol::agent::CreateContainerRequest;
use sandvm_agent_protocol::ctx;

use crate::bundle::Role;
use crate::container::{Container, Parts, watch_exit};
use crate::error::ShimError;
use crate::events::Events;
use crate::io;
use crate::mounts::{self, MountError};
use crate::process::Stdio;
use crate::sandbox::{CALL_TIMEOUT, Sandbox};
use crate::share::{Share, blocking};
use crate::spec::{self, MountPlan};

/// Mounts the request's root filesystem at `<bundle>/rootfs`; returns the
/// root folder and whether the shim mounted it. With no mounts in the
/// request (`ctr run --rootfs`), the spec's root is used as it is.
pub async fn mount_rootfs(
    req: &CreateTaskRequest,
    bundle: &Path,
    spec: &Spec,
) -> Result<(PathBuf, bool), ShimError> {
    if req.rootfs.is_empty() {
        let p = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .unwrap_or_else(|| PathBuf::from("rootfs"));
        let p = if p.is_absolute() { p } else { bundle.join(p) };
        return Ok((p, false));
    }
    let target = bundle.join("rootfs");
    tokio::fs::create_dir_all(&target)
        .await
        .map_err(|source| ShimError::Io {
            what: "create",
            path: target.display().to_string(),
            source,
        })?;
    for m in &req.rootfs {
        let (typ, src, opts, t) = (
            m.type_.clone(),
            m.source.clone(),
            m.options.clone(),
            target.clone(),
        );
        // containerd-shim's mount may change the working folder of the
        // thread it runs on (long overlay options): a thread of its own
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let r = containerd_shim::mount::mount_rootfs(
                (!typ.is_empty()).then_some(typ.as_str()),
                (!src.is_empty()).then_some(src.as_str()),
                &opts,
                &t,
            );
            let _ = tx.send(r);
        });
        let r = rx
            .await
            .unwrap_or_else(|_| Err(containerd_shim::Error::Other("mount thread died".into())));
        if let Err(source) = r {
            let t = target.clone();
            if let Err(e) = blocking(move || mounts::umount_all(&t)).await {
                tracing::warn!(error = %e, "cannot unmount a partly mounted root filesystem");
            }
            return Err(ShimError::Rootfs {
                target: target.display().to_string(),
                source,
            });
        }
    }
    Ok((target, true))
}

/// Fails early (before a VM boots) when a host bind mount's source is
/// missing or a mount cannot be planned.
pub async fn check_sources(spec: &Spec) -> Result<(), ShimError> {
    for p in spec::plan_mounts(spec)? {
        if let MountPlan::Share { source, .. } = p {
            tokio::fs::metadata(&source)
                .await
                .map_err(|e| ShimError::Io {
                    what: "find the bind mount source",
                    path: source.display().to_string(),
                    source: e,
                })?;
        }
    }
    Ok(())
}

/// Shares the root and the bind mounts; returns each mount's share-relative
/// source (for [`MountPlan::Share`] mounts). All or nothing.
fn share_container(
    share: &Share,
    gcid: &str,
    root: &Path,
    plans: &[MountPlan],
) -> Result<Vec<Option<String>>, MountError> {
    let r = (|| {
        // Shared writable even when the spec's root is read-only: the agent
        // creates the mount targets in it (CRI's pause container binds
        // /etc/resolv.conf, which an image may lack) and only then makes the
        // root read-only in the guest, in that order, as runc does.
        share.add_rootfs(gcid, root, false)?;
        let mut out = Vec::with_capacity(plans.len());
        for (i, p) in plans.iter().enumerate() {
            out.push(match p {
                MountPlan::Share {
                    source,
                    recursive,
                    readonly,
                } => Some(share.add_bind(gcid, i, source, *recursive, *readonly)?),
                _ => None,
            });
        }
        Ok(out)
    })();
    if r.is_err()
        && let Err(e) = share.remove_container(gcid)
    {
        tracing::warn!(gcid, error = %e, "cannot undo a partly shared container");
    }
    r
}

/// What [`create_container`] needs.
#[derive(Debug)]
pub struct NewContainer {
    /// containerd's id.
    pub id: String,
    /// The guest's id.
    pub gcid: String,
    /// The bundle.
    pub bundle: PathBuf,
    /// The spec.
    pub spec: Spec,
    /// Its role.
    pub role: Role,
    /// The init's standard I/O.
    pub stdio: Stdio,
    /// The root folder on the host.
    pub root: PathBuf,
    /// Whether the shim mounted it.
    pub rootfs_mounted: bool,
    /// What the shim recorded in the bundle for `delete`.
    pub record: crate::bundle::Record,
}

/// Opens the init's I/O, shares the container's files, has the agent create
/// it, and starts its I/O pumps and exit watcher.
pub async fn create_container(
    sb: &Arc<Sandbox>,
    events: &Arc<Events>,
    n: NewContainer,
) -> Result<Arc<Container>, ShimError> {
    let opened = io::open(&n.stdio).await?;
    let plans = spec::plan_mounts(&n.spec)?;
    let shared = {
        let (share, gcid, root, plans) = (
            sb.share.clone(),
            n.gcid.clone(),
            n.root.clone(),
            plans.clone(),
        );
        blocking(move || share_container(&share, &gcid, &root, &plans)).await?
    };
    let created = async {
        let json = spec::guest_spec(n.spec.clone(), &n.gcid, &plans, &shared)?;
        let req = CreateContainerRequest {
            container_id: n.gcid.clone(),
            oci_spec_json: json,
            ..Default::default()
        };
        sb.agent
            .create_container(ctx(CALL_TIMEOUT), &req)
            .await
            .map_err(ShimError::agent("CreateContainer"))
    }
    .await;
    if let Err(e) = created {
        let (share, gcid) = (sb.share.clone(), n.gcid.clone());
        if let Err(me) = blocking(move || share.remove_container(&gcid)).await {
            tracing::warn!(cid = %n.id, error = %me, "cannot unshare a container that failed");
        }
        return Err(e);
    }
    let c = Arc::new(Container::new(Parts {
        id: n.id,
        gcid: n.gcid,
        bundle: n.bundle,
        role: n.role,
        sandbox: Arc::clone(sb),
        stdio: n.stdio,
        rootfs_mounted: n.rootfs_mounted,
        events: Arc::clone(events),
    }));
    let output = io::start(&sb.agent, &c.gcid, &c.init, opened).await;
    watch_exit(Arc::clone(&c), Arc::clone(&c.init), output);
    tracing::info!(cid = %c.id, gcid = %c.gcid, sid = %sb.sid, "container created");
    Ok(c)
}
