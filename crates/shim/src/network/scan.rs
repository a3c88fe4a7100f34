//! Reading the pod's namespace: each interface with a MAC (not `lo`), its
//! MTU, addresses and main-table routes.

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};

use super::{Endpoint, NetError, RouteInfo};

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Netlink { what, source }
}

/// `aa:bb:..` of a MAC.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The name, MAC and MTU of a link that is an interface to wire.
pub fn link_info(l: &LinkMessage) -> Option<(String, String, u32)> {
    let mut name = None;
    let mut mac = None;
    let mut mtu = 1500;
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(m) if m.len() == 6 && m.iter().any(|b| *b != 0) => {
                mac = Some(format_mac(m))
            }
            LinkAttribute::Mtu(m) => mtu = *m,
            _ => {}
        }
    }
    let name = name.filter(|n| n != "lo")?;
    Some((name, mac?, mtu))
}

fn is_link_local_v6(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// An address of interest: (address, prefix), IPv6 link-local left out.
pub fn address_info(a: &AddressMessage) -> Option<(IpAddr, u8)> {
    let ip = a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    })?;
    (!is_link_local_v6(&ip)).then_some((ip, a.header.prefix_len))
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A route of interest for interface `index`: a unicast route of the main
/// table through it, not one the kernel derives from an address, not an
/// IPv6 link-local or multicast one.
pub fn route_info(r: &RouteMessage, index: u32) -> Option<RouteInfo> {
    let h = &r.header;
    let table = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(h.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN)
        || h.kind != RouteType::Unicast
        || h.protocol == RouteProtocol::Kernel
    {
        return None;
    }
    let (mut oif, mut dest, mut gateway, mut source) = (None, None, None, None);
    for a in &r.attributes {
        match a {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Destination(d) => dest = ip_of(d),
            RouteAttribute::Gateway(g) => gateway = ip_of(g),
            RouteAttribute::PrefSource(s) => source = ip_of(s),
            _ => {}
        }
    }
    if oif != Some(index) {
        return None;
    }
    let dest = match dest {
        Some(ip) if h.destination_prefix_length > 0 => {
            if is_link_local_v6(&ip) || ip.is_multicast() {
                return None;
            }
            Some((ip, h.destination_prefix_length))
        }
        _ => None,
    };
    Some(RouteInfo {
        dest,
        gateway,
        source,
        scope: u8::from(h.scope),
        v6: matches!(
            h.address_family,
            rtnetlink::packet_route::AddressFamily::Inet6
        ),
    })
}

async fn routes(h: &Handle) -> Result<Vec<RouteMessage>, NetError> {
    let mut all = Vec::new();
    for v in [IpVersion::V4, IpVersion::V6] {
        let msg = match v {
            IpVersion::V4 => RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            IpVersion::V6 => RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        };
        let mut got: Vec<RouteMessage> = h
            .route()
            .get(msg)
            .execute()
            .try_collect()
            .await
            .map_err(nl("list routes"))?;
        all.append(&mut got);
    }
    Ok(all)
}

/// Every interface to wire, in index order.
pub async fn endpoints(h: &Handle) -> Result<Vec<Endpoint>, NetError> {
    let links: Vec<LinkMessage> = h
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("list links"))?;
    let addrs: Vec<AddressMessage> = h
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("list addresses"))?;
    let routes = routes(h).await?;
    let mut out = Vec::new();
    for l in &links {
        let Some((name, mac, mtu)) = link_info(l) else {
            continue;
        };
        let index = l.header.index;
        out.push(Endpoint {
            name,
            index,
            mac,
            mtu,
            addrs: addrs
                .iter()
                .filter(|a| a.header.index == index)
                .filter_map(address_info)
                .collect(),
            routes: routes.iter().filter_map(|r| route_info(r, index)).collect(),
        });
    }
    out.sort_by_key(|e| e.index);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::route::RouteScope;
    use std::net::Ipv4Addr;

    fn link(name: &str, mac: &[u8]) -> LinkMessage {
        let mut l = LinkMessage::default();
        l.header.index = 3;
        l.attributes = vec![
            LinkAttribute::IfName(name.into()),
            LinkAttribute::Address(mac.to_vec()),
            LinkAttribute::Mtu(1450),
        ];
        l
    }

    #[test]
    fn links_with_a_mac_are_wired_but_lo() {
        let mac = [0x0a, 0x58, 0x0a, 0x58, 0, 5];
        assert_eq!(
            link_info(&link("eth0", &mac)),
            Some(("eth0".into(), "0a:58:0a:58:00:05".into(), 1450))
        );
        assert_eq!(link_info(&link("lo", &[0; 6])), None);
        assert_eq!(link_info(&link("lo", &mac)), None);
        assert_eq!(link_info(&link("tunl0", &[1, 2, 3, 4])), None);
    }

    fn route(dest: Option<(Ipv4Addr, u8)>, gw: Option<Ipv4Addr>, oif: u32) -> RouteMessage {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new().output_interface(oif);
        if let Some((d, p)) = dest {
            b = b.destination_prefix(d, p);
        }
        if let Some(g) = gw {
            b = b.gateway(g);
        }
        b.build()
    }

    #[test]
    fn routes_of_the_interface_are_read_but_the_kernels() {
        let gw = Ipv4Addr::new(10, 99, 0, 1);
        let def = route_info(&route(None, Some(gw), 3), 3).unwrap();
        assert_eq!(def.dest, None);
        assert_eq!(def.gateway, Some(IpAddr::V4(gw)));
        assert!(!def.v6);
        let net = route(Some((Ipv4Addr::new(10, 100, 0, 0), 16)), None, 3);
        let got = route_info(&net, 3).unwrap();
        assert_eq!(
            got.dest,
            Some((IpAddr::V4(Ipv4Addr::new(10, 100, 0, 0)), 16))
        );
        assert_eq!(got.scope, u8::from(RouteScope::Universe));
        assert_eq!(route_info(&net, 4), None, "another interface's");
        let mut kernel = route(Some((Ipv4Addr::new(10, 99, 0, 0), 16)), None, 3);
        kernel.header.protocol = RouteProtocol::Kernel;
        assert_eq!(route_info(&kernel, 3), None);
        let mut local = route(Some((Ipv4Addr::new(10, 99, 0, 5), 32)), None, 3);
        local.header.table = 255;
        assert_eq!(route_info(&local, 3), None);
    }
}
