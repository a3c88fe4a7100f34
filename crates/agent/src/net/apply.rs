//! The checked plans applied with rtnetlink: the NIC found by its MAC,
//! renamed, its MTU set, its addresses made exactly the plan's, brought up;
//! routes added or replaced in the main table.

use std::net::IpAddr;
use std::time::Duration;

use futures::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use sandvm_agent_protocol::agent::{IPAddress, IPFamily, Interface, Route};

use super::NetError;
use super::parse::{Cidr, NicPlan, RoutePlan, format_mac};

/// How long a NIC may take to appear (its driver probing after boot or a
/// hotplug); checked every [`NIC_POLL`].
const NIC_WAIT: Duration = Duration::from_secs(10);
const NIC_POLL: Duration = Duration::from_millis(100);

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Netlink { what, source }
}

/// A netlink connection of this network namespace, its task spawned.
fn connect() -> Result<Handle, NetError> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|source| NetError::Socket { source })?;
    tokio::spawn(conn);
    Ok(handle)
}

fn mac_of(l: &LinkMessage) -> Option<&[u8]> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(m) => Some(m.as_slice()),
        _ => None,
    })
}

fn name_of(l: &LinkMessage) -> String {
    l.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

async fn links(h: &Handle) -> Result<Vec<LinkMessage>, NetError> {
    h.link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("list links"))
}

/// The link whose MAC is `mac`, waiting up to [`NIC_WAIT`] for it.
async fn find_by_mac(h: &Handle, mac: &[u8; 6]) -> Result<LinkMessage, NetError> {
    let start = tokio::time::Instant::now();
    loop {
        let all = links(h).await?;
        if let Some(l) = all.iter().find(|l| mac_of(l) == Some(mac.as_slice())) {
            return Ok(l.clone());
        }
        if start.elapsed() >= NIC_WAIT {
            let present = all
                .iter()
                .filter_map(|l| Some(format!("{} {}", name_of(l), format_mac(mac_of(l)?))))
                .collect();
            return Err(NetError::NoNic {
                mac: format_mac(mac),
                present,
            });
        }
        tokio::time::sleep(NIC_POLL).await;
    }
}

fn cidr_of(a: &AddressMessage) -> Option<Cidr> {
    a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Address(ip) => Some(Cidr {
            addr: *ip,
            prefix: a.header.prefix_len,
        }),
        _ => None,
    })
}

fn is_link_local_v6(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// Makes the addresses of link `index` exactly `want` (IPv6 link-local
/// addresses, which the kernel makes, stay).
async fn set_addresses(h: &Handle, index: u32, want: &[Cidr]) -> Result<(), NetError> {
    let have: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl("list addresses"))?;
    for a in have {
        let Some(c) = cidr_of(&a) else { continue };
        if want.contains(&c) || is_link_local_v6(&c.addr) {
            continue;
        }
        h.address()
            .del(a)
            .execute()
            .await
            .map_err(nl(format!("remove address {}/{}", c.addr, c.prefix)))?;
    }
    for c in want {
        h.address()
            .add(index, c.addr, c.prefix)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("add address {}/{}", c.addr, c.prefix)))?;
    }
    Ok(())
}

/// UpdateInterface: returns the interface as it is afterwards.
pub async fn update_interface(p: &NicPlan) -> Result<Interface, NetError> {
    let h = connect()?;
    let link = find_by_mac(&h, &p.mac).await?;
    let index = link.header.index;
    let mut name = name_of(&link);
    if let Some(n) = p.name.as_ref().filter(|n| **n != name) {
        // a rename needs the link down
        let down = LinkUnspec::new_with_index(index).down().build();
        h.link()
            .set(down)
            .execute()
            .await
            .map_err(nl(format!("set {name} down")))?;
        let msg = LinkUnspec::new_with_index(index).name(n.clone()).build();
        h.link()
            .set(msg)
            .execute()
            .await
            .map_err(nl(format!("rename {name} to {n}")))?;
        name = n.clone();
    }
    let mut b = LinkUnspec::new_with_index(index).up();
    if let Some(mtu) = p.mtu {
        b = b.mtu(mtu);
    }
    h.link()
        .set(b.build())
        .execute()
        .await
        .map_err(nl(format!("set {name} up (mtu {:?})", p.mtu)))?;
    set_addresses(&h, index, &p.addrs).await?;
    let link = h
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await
        .map_err(nl(format!("read {name}")))?
        .ok_or_else(|| NetError::NoNic {
            mac: format_mac(&p.mac),
            present: Vec::new(),
        })?;
    Ok(describe(&link, &p.addrs))
}

fn describe(link: &LinkMessage, addrs: &[Cidr]) -> Interface {
    let mtu = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(u64::from(*m)),
        _ => None,
    });
    let up = link.header.flags.contains(LinkFlags::Up);
    tracing::info!(nic = %name_of(link), up, ?mtu, "interface updated");
    Interface {
        name: name_of(link),
        hw_addr: mac_of(link).map(format_mac).unwrap_or_default(),
        mtu: mtu.unwrap_or_default(),
        ip_addresses: addrs
            .iter()
            .map(|c| IPAddress {
                family: (if c.addr.is_ipv6() {
                    IPFamily::v6
                } else {
                    IPFamily::v4
                })
                .into(),
                address: c.addr.to_string(),
                mask: c.prefix.to_string(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

async fn index_of(h: &Handle, name: &str) -> Result<u32, NetError> {
    let all = links(h).await?;
    all.iter()
        .find(|l| name_of(l) == name)
        .map(|l| l.header.index)
        .ok_or_else(|| NetError::NoDevice {
            name: name.to_string(),
            present: all.iter().map(name_of).collect(),
        })
}

async fn add_route(h: &Handle, r: &RoutePlan, index: u32) -> Result<(), NetError> {
    // rtnetlink does not export its builder's error type: its text is kept
    let bad = |e: &dyn std::fmt::Display| NetError::Route {
        route: describe_route(r),
        why: e.to_string(),
    };
    let mut b = RouteMessageBuilder::<IpAddr>::new();
    b.get_mut().header.address_family = if r.v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    if let Some(d) = r.dest {
        b = b
            .destination_prefix(d.addr, d.prefix)
            .map_err(|e| bad(&e))?;
    }
    if let Some(g) = r.gateway {
        b = b.gateway(g).map_err(|e| bad(&e))?;
    }
    if let Some(s) = r.source {
        b = b.pref_source(s).map_err(|e| bad(&e))?;
    }
    let msg = b
        .output_interface(index)
        .scope(RouteScope::from(r.scope))
        .build();
    h.route()
        .add(msg)
        .replace()
        .execute()
        .await
        .map_err(nl(format!("add route {}", describe_route(r))))
}

fn describe_route(r: &RoutePlan) -> String {
    let dest = r
        .dest
        .map(|d| format!("{}/{}", d.addr, d.prefix))
        .unwrap_or_else(|| "default".into());
    match r.gateway {
        Some(g) => format!("{dest} via {g} dev {}", r.device),
        None => format!("{dest} dev {}", r.device),
    }
}

/// UpdateRoutes: each route added or replaced, in the plans' order; returns
/// them as applied.
pub async fn update_routes(plans: &[RoutePlan], given: &[Route]) -> Result<Vec<Route>, NetError> {
    let h = connect()?;
    for r in plans {
        let index = index_of(&h, &r.device).await?;
        add_route(&h, r, index).await?;
        tracing::info!(route = %describe_route(r), "route set");
    }
    Ok(given.to_vec())
}
