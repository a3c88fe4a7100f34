//! `-netdev`.

use serde::{Deserialize, Serialize};

use crate::escape::OptList;

/// `hostfwd` protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// `tcp`.
    Tcp,
    /// `udp`.
    Udp,
}

/// One user-mode port forward: `hostfwd=tcp:<host_addr>:<host_port>-<guest_addr>:<guest_port>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFwd {
    /// Protocol.
    pub protocol: Protocol,
    /// Host address to bind (all when absent).
    pub host_addr: Option<String>,
    /// Host port.
    pub host_port: u16,
    /// Guest address (the first DHCP address when absent).
    pub guest_addr: Option<String>,
    /// Guest port.
    pub guest_port: u16,
}

impl HostFwd {
    /// The `hostfwd` value (unescaped).
    pub fn render(&self) -> String {
        let proto = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        format!(
            "{proto}:{}:{}-{}:{}",
            self.host_addr.as_deref().unwrap_or(""),
            self.host_port,
            self.guest_addr.as_deref().unwrap_or(""),
            self.guest_port
        )
    }
}

/// One `-netdev`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Netdev {
    /// `tap`: inherited tap fds (one → `fd=`, several → `fds=a:b`), or a named
    /// interface QEMU opens (`ifname=`, which cannot be combined with fds).
    Tap {
        /// Netdev id.
        id: String,
        /// Inherited tap queue fds.
        fds: Vec<i32>,
        /// `vhost=on`.
        vhost: bool,
        /// Inherited `/dev/vhost-net` fds, one per tap fd.
        vhostfds: Vec<i32>,
        /// Host interface name.
        ifname: Option<String>,
        /// `script=no,downscript=no`.
        script_none: bool,
    },
    /// `user`: slirp user-mode networking.
    User {
        /// Netdev id.
        id: String,
        /// Port forwards (repeated `hostfwd=` keys).
        hostfwds: Vec<HostFwd>,
        /// Guest network, such as `10.0.2.0/24`.
        net: Option<String>,
    },
    /// `socket` with an inherited fd.
    Socket {
        /// Netdev id.
        id: String,
        /// The socket fd.
        fd: i32,
    },
    /// `stream` over a Unix socket (such as passt).
    Stream {
        /// Netdev id.
        id: String,
        /// `server=on|off`.
        server: bool,
        /// Unix socket path.
        path: String,
    },
}

fn join_fds(fds: &[i32]) -> String {
    fds.iter().map(i32::to_string).collect::<Vec<_>>().join(":")
}

impl Netdev {
    /// The netdev id.
    pub fn id(&self) -> &str {
        match self {
            Netdev::Tap { id, .. }
            | Netdev::User { id, .. }
            | Netdev::Socket { id, .. }
            | Netdev::Stream { id, .. } => id,
        }
    }

    /// The backend name.
    pub fn backend(&self) -> &'static str {
        match self {
            Netdev::Tap { .. } => "tap",
            Netdev::User { .. } => "user",
            Netdev::Socket { .. } => "socket",
            Netdev::Stream { .. } => "stream",
        }
    }

    /// The `-netdev` value.
    pub fn render(&self) -> String {
        let head = OptList::new(self.backend()).kv("id", self.id());
        match self {
            Netdev::Tap {
                fds,
                vhost,
                vhostfds,
                ifname,
                script_none,
                ..
            } => {
                let l = match fds.len() {
                    0 => head,
                    1 => head.num("fd", fds[0]),
                    _ => head.kv("fds", join_fds(fds)),
                };
                let l = l.opt("ifname", ifname.as_deref());
                let l = if *script_none {
                    l.kv("script", "no").kv("downscript", "no")
                } else {
                    l
                };
                let l = l.on_if("vhost", *vhost);
                match vhostfds.len() {
                    0 => l,
                    1 if fds.len() <= 1 => l.num("vhostfd", vhostfds[0]),
                    _ => l.kv("vhostfds", join_fds(vhostfds)),
                }
            }
            Netdev::User { hostfwds, net, .. } => {
                let mut l = head.opt("net", net.as_deref());
                for h in hostfwds {
                    l = l.kv("hostfwd", h.render());
                }
                l
            }
            Netdev::Socket { fd, .. } => head.num("fd", fd),
            Netdev::Stream { server, path, .. } => head
                .flag("server", *server)
                .kv("addr.type", "unix")
                .kv("addr.path", path),
        }
        .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_single_and_multi_queue() {
        let t = Netdev::Tap {
            id: "net0".into(),
            fds: vec![3],
            vhost: true,
            vhostfds: vec![4],
            ifname: None,
            script_none: false,
        };
        assert_eq!(t.render(), "tap,id=net0,fd=3,vhost=on,vhostfd=4");
        let t = Netdev::Tap {
            id: "net0".into(),
            fds: vec![3, 4],
            vhost: true,
            vhostfds: vec![5, 6],
            ifname: None,
            script_none: false,
        };
        assert_eq!(t.render(), "tap,id=net0,fds=3:4,vhost=on,vhostfds=5:6");
        let t = Netdev::Tap {
            id: "net0".into(),
            fds: vec![],
            vhost: false,
            vhostfds: vec![],
            ifname: Some("tap0".into()),
            script_none: true,
        };
        assert_eq!(
            t.render(),
            "tap,id=net0,ifname=tap0,script=no,downscript=no"
        );
    }

    #[test]
    fn user_repeats_hostfwd() {
        let u = Netdev::User {
            id: "n0".into(),
            hostfwds: vec![
                HostFwd {
                    protocol: Protocol::Tcp,
                    host_addr: Some("127.0.0.1".into()),
                    host_port: 18080,
                    guest_addr: None,
                    guest_port: 8080,
                },
                HostFwd {
                    protocol: Protocol::Udp,
                    host_addr: None,
                    host_port: 5353,
                    guest_addr: Some("10.0.2.15".into()),
                    guest_port: 53,
                },
            ],
            net: Some("10.0.2.0/24".into()),
        };
        assert_eq!(
            u.render(),
            "user,id=n0,net=10.0.2.0/24,hostfwd=tcp:127.0.0.1:18080-:8080,hostfwd=udp::5353-10.0.2.15:53"
        );
    }

    #[test]
    fn socket_and_stream() {
        assert_eq!(
            Netdev::Socket {
                id: "s".into(),
                fd: 7
            }
            .render(),
            "socket,id=s,fd=7"
        );
        assert_eq!(
            Netdev::Stream {
                id: "p".into(),
                server: false,
                path: "/r/passt.sock".into()
            }
            .render(),
            "stream,id=p,server=off,addr.type=unix,addr.path=/r/passt.sock"
        );
    }
}
