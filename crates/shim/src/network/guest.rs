//! What the agent is asked for (Kata's UpdateInterface and UpdateRoutes),
//! from what was read in the pod's namespace.

use sandvm_agent_protocol::agent::{IPAddress, IPFamily, Interface, Route, Routes};

use super::Endpoint;

fn family(v6: bool) -> IPFamily {
    if v6 { IPFamily::v6 } else { IPFamily::v4 }
}

/// The guest NIC for `ep`: found by its MAC, named, sized and addressed as
/// the namespace's interface.
pub fn interface(ep: &Endpoint) -> Interface {
    Interface {
        device: ep.name.clone(),
        name: ep.name.clone(),
        hw_addr: ep.mac.clone(),
        mtu: u64::from(ep.mtu),
        ip_addresses: ep
            .addrs
            .iter()
            .map(|(ip, prefix)| IPAddress {
                family: family(ip.is_ipv6()).into(),
                address: ip.to_string(),
                mask: prefix.to_string(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The routes of every endpoint, on the guest NIC of the same name.
pub fn routes(eps: &[&Endpoint]) -> Routes {
    let routes = eps
        .iter()
        .flat_map(|ep| {
            ep.routes.iter().map(|r| Route {
                dest: r
                    .dest
                    .map(|(ip, p)| format!("{ip}/{p}"))
                    .unwrap_or_else(|| "default".into()),
                gateway: r.gateway.map(|g| g.to_string()).unwrap_or_default(),
                device: ep.name.clone(),
                source: r.source.map(|s| s.to_string()).unwrap_or_default(),
                scope: u32::from(r.scope),
                family: family(r.v6).into(),
                ..Default::default()
            })
        })
        .collect();
    Routes {
        routes,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::RouteInfo;

    #[test]
    fn the_guest_gets_what_the_namespace_has() {
        let ep = Endpoint {
            name: "eth0".into(),
            index: 2,
            mac: "0a:58:0a:63:00:05".into(),
            mtu: 1500,
            addrs: vec![("10.99.0.5".parse().unwrap(), 16)],
            routes: vec![
                RouteInfo {
                    dest: None,
                    gateway: Some("10.99.0.1".parse().unwrap()),
                    source: None,
                    scope: 0,
                    v6: false,
                },
                RouteInfo {
                    dest: Some(("10.100.0.0".parse().unwrap(), 16)),
                    gateway: None,
                    source: Some("10.99.0.5".parse().unwrap()),
                    scope: 253,
                    v6: false,
                },
            ],
        };
        let i = interface(&ep);
        assert_eq!(
            (i.name.as_str(), i.hw_addr.as_str(), i.mtu),
            ("eth0", "0a:58:0a:63:00:05", 1500)
        );
        assert_eq!(i.ip_addresses.len(), 1);
        assert_eq!(
            (
                i.ip_addresses[0].address.as_str(),
                i.ip_addresses[0].mask.as_str()
            ),
            ("10.99.0.5", "16")
        );
        assert_eq!(
            i.ip_addresses[0].family.enum_value_or_default(),
            IPFamily::v4
        );
        let r = routes(&[&ep]).routes;
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].dest.as_str(), r[0].gateway.as_str()),
            ("default", "10.99.0.1")
        );
        assert_eq!(
            (
                r[1].dest.as_str(),
                r[1].source.as_str(),
                r[1].scope,
                r[1].device.as_str()
            ),
            ("10.100.0.0/16", "10.99.0.5", 253, "eth0")
        );
    }
}
