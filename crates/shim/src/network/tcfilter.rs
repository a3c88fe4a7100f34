//! Kata's `tcfilter` model: a tap beside each interface of the pod's
//! namespace, an ingress qdisc on both, and on each a u32 filter that
//! matches every frame and redirects it (mirred) to the other's egress.
//! What the bridge sends to the interface goes to the guest, what the guest
//! sends goes out of the interface; the namespace's own stack sees neither.

use std::path::Path;
use std::sync::Arc;

use futures::TryStreamExt;
use rtnetlink::{Handle, LinkUnspec};

use super::{Endpoint, NetError, Wired};

/// Most interfaces of one namespace wired.
pub const MAX_ENDPOINTS: usize = 8;

/// The ingress qdisc's handle (`ffff:`), the filters' parent.
const INGRESS_PARENT: u32 = 0xffff_0000;

/// `protocol all` as tc wants it: ETH_P_ALL in network byte order.
fn eth_p_all() -> u16 {
    (libc::ETH_P_ALL as u16).to_be()
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Netlink { what, source }
}

/// The tap's name for the `i`th endpoint (Kata's is `tap<i>_kata`).
pub fn tap_name(i: usize) -> String {
    format!("tap{i}_sandvm")
}

async fn index_of(h: &Handle, name: &str) -> Result<Option<u32>, NetError> {
    let r = h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await;
    match r {
        Ok(l) => Ok(l.map(|l| l.header.index)),
        // no such device: ENODEV
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(source) => Err(NetError::Netlink {
            what: format!("find {name}"),
            source,
        }),
    }
}

async fn mirror(h: &Handle, from: (u32, &str), to: (u32, &str)) -> Result<(), NetError> {
    h.qdisc()
        .add(from.0 as i32)
        .ingress()
        .execute()
        .await
        .map_err(nl(format!("add an ingress qdisc to {}", from.1)))?;
    h.traffic_filter(from.0 as i32)
        .add()
        .parent(INGRESS_PARENT)
        .protocol(eth_p_all())
        .redirect(to.0)
        .map_err(nl(format!("build the filter {} -> {}", from.1, to.1)))?
        .execute()
        .await
        .map_err(nl(format!("add the mirred filter {} -> {}", from.1, to.1)))
}

/// Creates tap `tap` beside `ep` and mirrors the two; on a failure after
/// the tap was made, removes it and `ep`'s qdisc again (a link of that
/// name that was there before is never touched: the open fails first).
async fn wire(h: &Handle, ep: Endpoint, tap: String) -> Result<Wired, NetError> {
    let fd = runtime::tools::open_tap(&tap).map_err(|e| NetError::Tap {
        tap: tap.clone(),
        source: Box::new(e),
    })?;
    let wired = Wired {
        ep,
        tap,
        fd: Arc::new(fd),
    };
    match mirror_both(h, &wired).await {
        Ok(()) => Ok(wired),
        Err(e) => {
            unwire(h, &wired.ep.name, &wired.tap).await;
            Err(e)
        }
    }
}

async fn mirror_both(h: &Handle, wired: &Wired) -> Result<(), NetError> {
    let tap_index = index_of(h, &wired.tap)
        .await?
        .ok_or_else(|| NetError::Tap {
            tap: wired.tap.clone(),
            source: Box::new(runtime::HypervisorError::invalid(
                "tap",
                &wired.tap,
                "created but not listed",
            )),
        })?;
    let up = LinkUnspec::new_with_index(tap_index)
        .mtu(wired.ep.mtu)
        .up()
        .build();
    h.link().set(up).execute().await.map_err(nl(format!(
        "set {} up with mtu {}",
        wired.tap, wired.ep.mtu
    )))?;
    let veth = (wired.ep.index, wired.ep.name.as_str());
    let t = (tap_index, wired.tap.as_str());
    mirror(h, veth, t).await?;
    mirror(h, t, veth).await
}

/// Wires every endpoint; on a failure undoes what was done and returns it.
pub async fn wire_all(
    h: &Handle,
    netns: &Path,
    eps: Vec<Endpoint>,
) -> Result<Vec<Wired>, NetError> {
    if eps.len() > MAX_ENDPOINTS {
        return Err(NetError::TooMany {
            path: netns.to_path_buf(),
            count: eps.len(),
            max: MAX_ENDPOINTS,
        });
    }
    let mut done: Vec<Wired> = Vec::new();
    for (i, ep) in eps.into_iter().enumerate() {
        match wire(h, ep, tap_name(i)).await {
            Ok(w) => done.push(w),
            Err(e) => {
                for w in done.drain(..) {
                    unwire(h, &w.ep.name, &w.tap).await;
                }
                return Err(e);
            }
        }
    }
    Ok(done)
}

/// Removes the tap and the interface's ingress qdisc (its filters go with
/// it); what is already gone is fine, anything else is logged.
pub async fn unwire(h: &Handle, iface: &str, tap: &str) {
    match index_of(h, tap).await {
        Ok(Some(i)) => {
            if let Err(e) = h.link().del(i).execute().await {
                tracing::warn!(tap, error = %e, "cannot remove the tap");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(tap, error = %e, "cannot find the tap"),
    }
    match index_of(h, iface).await {
        Ok(Some(i)) => {
            let mut del = h.qdisc().del(i as i32);
            let m = del.message_mut();
            m.header.parent = rtnetlink::packet_route::tc::TcHandle::INGRESS;
            m.header.handle = INGRESS_PARENT.into();
            match del.execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e))
                    if e.raw_code() == -libc::EINVAL || e.raw_code() == -libc::ENOENT => {}
                Err(e) => tracing::warn!(iface, error = %e, "cannot remove the ingress qdisc"),
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(iface, error = %e, "cannot find the interface"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_protocol() {
        assert_eq!(tap_name(0), "tap0_sandvm");
        assert!(tap_name(MAX_ENDPOINTS).len() <= 15);
        assert_eq!(eth_p_all().to_ne_bytes(), [0, 3], "ETH_P_ALL, big-endian");
    }
}
