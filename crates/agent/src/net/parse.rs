//! Checks of UpdateInterface and UpdateRoutes (pure): the protocol's strings
//! become typed addresses, prefixes and MACs, or an error naming the field
//! and the value.

use std::net::IpAddr;

use sandvm_agent_protocol::agent::{IPAddress, IPFamily, Interface, Route};

use super::NetError;

/// Longest interface name (IFNAMSIZ without the NUL).
const MAX_IFNAME: usize = 15;

/// Smallest MTU Linux accepts for IPv4 (RFC 791).
const MIN_MTU: u64 = 68;

/// An address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length (at most 32 or 128).
    pub prefix: u8,
}

/// What UpdateInterface asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicPlan {
    /// The NIC's MAC (how it is found).
    pub mac: [u8; 6],
    /// Its new name, if any.
    pub name: Option<String>,
    /// Its new MTU, if any.
    pub mtu: Option<u32>,
    /// Every address it has afterwards.
    pub addrs: Vec<Cidr>,
}

/// One route of UpdateRoutes, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePlan {
    /// The destination; `None` = default.
    pub dest: Option<Cidr>,
    /// The gateway; `None` = on link.
    pub gateway: Option<IpAddr>,
    /// The guest NIC's name.
    pub device: String,
    /// Preferred source.
    pub source: Option<IpAddr>,
    /// rtnetlink scope.
    pub scope: u8,
    /// IPv6 (else IPv4).
    pub v6: bool,
}

fn invalid(field: &'static str, value: &str, why: impl Into<String>) -> NetError {
    NetError::Invalid {
        field,
        value: value.to_string(),
        why: why.into(),
    }
}

/// A MAC of six hex pairs, not multicast.
pub fn parse_mac(s: &str) -> Result<[u8; 6], NetError> {
    let bad = |why: &str| invalid("hw_addr", s, why);
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
        return Err(bad("expected six hex pairs like 02:00:00:00:00:01"));
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(&parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| bad("not hexadecimal"))?;
    }
    if mac[0] & 1 == 1 {
        return Err(bad("a multicast address"));
    }
    Ok(mac)
}

/// `aa:bb:..` of a MAC.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An interface name: 1 to 15 bytes, no `/`, `:`, whitespace or NUL.
pub fn check_ifname(field: &'static str, name: &str) -> Result<(), NetError> {
    if name.is_empty()
        || name.len() > MAX_IFNAME
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        return Err(invalid(
            field,
            name,
            format!("1 to {MAX_IFNAME} bytes without '/', ':' or spaces"),
        ));
    }
    Ok(())
}

fn parse_ip(field: &'static str, s: &str) -> Result<IpAddr, NetError> {
    s.parse()
        .map_err(|_| invalid(field, s, "not an IPv4 or IPv6 address"))
}

fn check_family(
    field: &'static str,
    s: &str,
    ip: IpAddr,
    family: IPFamily,
) -> Result<(), NetError> {
    let v6 = family == IPFamily::v6;
    if ip.is_ipv6() != v6 {
        return Err(invalid(
            field,
            s,
            format!("does not match family {family:?}"),
        ));
    }
    Ok(())
}

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn parse_prefix(field: &'static str, s: &str, ip: IpAddr) -> Result<u8, NetError> {
    let max = max_prefix(ip);
    match s.parse::<u8>() {
        Ok(p) if p <= max => Ok(p),
        _ => Err(invalid(field, s, format!("a prefix length 0..={max}"))),
    }
}

fn parse_address(a: &IPAddress) -> Result<Cidr, NetError> {
    let family = a.family.enum_value_or_default();
    let addr = parse_ip("ip_addresses.address", &a.address)?;
    check_family("ip_addresses.address", &a.address, addr, family)?;
    if addr.is_unspecified() || addr.is_multicast() {
        return Err(invalid(
            "ip_addresses.address",
            &a.address,
            "not a unicast address",
        ));
    }
    let prefix = parse_prefix("ip_addresses.mask", &a.mask, addr)?;
    Ok(Cidr { addr, prefix })
}

/// Checks an UpdateInterface's interface.
pub fn nic_plan(i: &Interface) -> Result<NicPlan, NetError> {
    let mac = parse_mac(&i.hw_addr)?;
    let name = if i.name.is_empty() {
        None
    } else {
        check_ifname("name", &i.name)?;
        Some(i.name.clone())
    };
    let mtu = match i.mtu {
        0 => None,
        m if (MIN_MTU..=u64::from(u16::MAX)).contains(&m) => Some(m as u32),
        m => {
            return Err(invalid(
                "mtu",
                &m.to_string(),
                format!("0 (keep) or {MIN_MTU}..=65535"),
            ));
        }
    };
    let addrs = i
        .ip_addresses
        .iter()
        .map(parse_address)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NicPlan {
        mac,
        name,
        mtu,
        addrs,
    })
}

fn parse_dest(r: &Route, family: IPFamily) -> Result<Option<Cidr>, NetError> {
    if r.dest.is_empty() || r.dest == "default" {
        return Ok(None);
    }
    let (a, p) = r
        .dest
        .split_once('/')
        .ok_or_else(|| invalid("dest", &r.dest, "expected ADDRESS/PREFIX or \"default\""))?;
    let addr = parse_ip("dest", a)?;
    check_family("dest", &r.dest, addr, family)?;
    let prefix = parse_prefix("dest", p, addr)?;
    if prefix == 0 {
        return Ok(None);
    }
    Ok(Some(Cidr { addr, prefix }))
}

/// Checks one route of UpdateRoutes.
pub fn route_plan(r: &Route) -> Result<RoutePlan, NetError> {
    let family = r.family.enum_value_or_default();
    check_ifname("device", &r.device)?;
    let dest = parse_dest(r, family)?;
    let opt_ip = |field, s: &str| -> Result<Option<IpAddr>, NetError> {
        if s.is_empty() {
            return Ok(None);
        }
        let ip = parse_ip(field, s)?;
        check_family(field, s, ip, family)?;
        Ok(Some(ip))
    };
    let gateway = opt_ip("gateway", &r.gateway)?;
    let source = opt_ip("source", &r.source)?;
    let scope =
        u8::try_from(r.scope).map_err(|_| invalid("scope", &r.scope.to_string(), "0..=255"))?;
    Ok(RoutePlan {
        dest,
        gateway,
        device: r.device.clone(),
        source,
        scope,
        v6: family == IPFamily::v6,
    })
}

/// Checks every route; routes on link come first (a gateway must be
/// reachable before a route through it is added).
pub fn route_plans(routes: &[Route]) -> Result<Vec<RoutePlan>, NetError> {
    let mut out = routes
        .iter()
        .map(route_plan)
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by_key(|r| r.gateway.is_some());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(family: IPFamily, a: &str, m: &str) -> IPAddress {
        IPAddress {
            family: family.into(),
            address: a.into(),
            mask: m.into(),
            ..Default::default()
        }
    }

    fn nic(mac: &str, addrs: Vec<IPAddress>) -> Interface {
        Interface {
            name: "eth0".into(),
            hw_addr: mac.into(),
            mtu: 1500,
            ip_addresses: addrs,
            ..Default::default()
        }
    }

    #[test]
    fn a_good_interface_is_typed() {
        let i = nic(
            "0A:58:0a:58:00:05",
            vec![
                addr(IPFamily::v4, "10.88.0.5", "16"),
                addr(IPFamily::v6, "fd00::5", "64"),
            ],
        );
        let p = nic_plan(&i).unwrap();
        assert_eq!(p.mac, [0x0a, 0x58, 0x0a, 0x58, 0x00, 0x05]);
        assert_eq!(p.name.as_deref(), Some("eth0"));
        assert_eq!(p.mtu, Some(1500));
        assert_eq!(
            p.addrs,
            vec![
                Cidr {
                    addr: "10.88.0.5".parse().unwrap(),
                    prefix: 16
                },
                Cidr {
                    addr: "fd00::5".parse().unwrap(),
                    prefix: 64
                }
            ]
        );
        assert_eq!(format_mac(&p.mac), "0a:58:0a:58:00:05");
    }

    #[test]
    fn bad_interfaces_name_the_field_and_value() {
        let cases = [
            (nic("02:00:00:00:00", vec![]), "hw_addr", "02:00:00:00:00"),
            (nic("01:00:00:00:00:01", vec![]), "hw_addr", "multicast"),
            (nic("02:zz:00:00:00:01", vec![]), "hw_addr", "hexadecimal"),
            (
                nic(
                    "02:00:00:00:00:01",
                    vec![addr(IPFamily::v4, "10.88.0.300", "16")],
                ),
                "ip_addresses.address",
                "10.88.0.300",
            ),
            (
                nic(
                    "02:00:00:00:00:01",
                    vec![addr(IPFamily::v4, "10.88.0.5", "33")],
                ),
                "ip_addresses.mask",
                "\"33\"",
            ),
            (
                nic(
                    "02:00:00:00:00:01",
                    vec![addr(IPFamily::v6, "10.88.0.5", "16")],
                ),
                "ip_addresses.address",
                "family",
            ),
            (
                nic(
                    "02:00:00:00:00:01",
                    vec![addr(IPFamily::v4, "0.0.0.0", "8")],
                ),
                "ip_addresses.address",
                "unicast",
            ),
        ];
        for (i, field, needle) in cases {
            let e = nic_plan(&i).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains(needle), "{e}");
        }
        let mut i = nic("02:00:00:00:00:01", vec![]);
        i.mtu = 10;
        assert!(nic_plan(&i).unwrap_err().to_string().contains("mtu"));
        i.mtu = 0;
        i.name = "a/b".into();
        assert!(nic_plan(&i).unwrap_err().to_string().contains("name"));
        i.name = "x".repeat(16);
        assert!(nic_plan(&i).is_err());
        i.name.clear();
        let p = nic_plan(&i).unwrap();
        assert_eq!((p.name, p.mtu), (None, None));
    }

    fn route(dest: &str, gw: &str) -> Route {
        Route {
            dest: dest.into(),
            gateway: gw.into(),
            device: "eth0".into(),
            ..Default::default()
        }
    }

    #[test]
    fn routes_are_typed_and_ordered() {
        let rs = route_plans(&[route("default", "10.88.0.1"), route("10.89.0.0/16", "")]).unwrap();
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].gateway, None, "on-link first");
        assert_eq!(
            rs[0].dest,
            Some(Cidr {
                addr: "10.89.0.0".parse().unwrap(),
                prefix: 16
            })
        );
        assert_eq!(rs[1].dest, None);
        assert_eq!(rs[1].gateway, Some("10.88.0.1".parse().unwrap()));
        assert_eq!(route_plan(&route("", "10.0.0.1")).unwrap().dest, None);
        assert_eq!(
            route_plan(&route("0.0.0.0/0", "10.0.0.1")).unwrap().dest,
            None
        );
    }

    #[test]
    fn bad_routes_name_the_field() {
        for (r, field) in [
            (route("10.0.0.0", ""), "dest"),
            (route("10.0.0.0/40", ""), "dest"),
            (route("fd00::/64", ""), "dest"),
            (route("default", "gw"), "gateway"),
            (route("default", "fd00::1"), "gateway"),
        ] {
            let e = route_plan(&r).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
        let mut r = route("default", "10.0.0.1");
        r.device = String::new();
        assert!(route_plan(&r).unwrap_err().to_string().contains("device"));
        r.device = "eth0".into();
        r.scope = 256;
        assert!(route_plan(&r).unwrap_err().to_string().contains("scope"));
    }
}
