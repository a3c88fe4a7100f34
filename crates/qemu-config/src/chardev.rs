//! `-chardev`, QMP monitors (`-chardev` + `-mon`), `-serial` and `-tpmdev`.
//!
//! QEMU has no `fd` chardev backend: a socket chardev takes `fd=N` directly,
//! and a file chardev can use an fd passed with `-add-fd` through its
//! `/dev/fdset/N` path.

use serde::{Deserialize, Serialize};

use crate::escape::OptList;

/// One `-chardev`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Chardev {
    /// `socket`: a Unix socket given by `path` or by an inherited `fd` (exactly one).
    Socket {
        /// Chardev id.
        id: String,
        /// Unix socket path.
        path: Option<String>,
        /// Inherited socket fd (listening when `server`).
        fd: Option<i32>,
        /// `server=on|off`.
        server: bool,
        /// `wait=on|off` (rendered only for servers; QEMU rejects it for clients).
        wait: bool,
        /// `logfile=<path>`: copy all output there.
        logfile: Option<String>,
        /// `logappend=on|off`.
        logappend: Option<bool>,
    },
    /// `file`: write output to a file (`/dev/fdset/N` works with `-add-fd`).
    File {
        /// Chardev id.
        id: String,
        /// File path.
        path: String,
    },
    /// `stdio` (cannot be used with `-daemonize`).
    Stdio {
        /// Chardev id.
        id: String,
        /// `signal=on|off`: whether ^C reaches QEMU.
        signal: Option<bool>,
    },
    /// `pipe`: `<path>.in` / `<path>.out` FIFOs, or `<path>` itself.
    Pipe {
        /// Chardev id.
        id: String,
        /// FIFO path prefix.
        path: String,
    },
    /// `null`: discard output.
    Null {
        /// Chardev id.
        id: String,
    },
}

impl Chardev {
    /// The chardev id.
    pub fn id(&self) -> &str {
        match self {
            Chardev::Socket { id, .. }
            | Chardev::File { id, .. }
            | Chardev::Stdio { id, .. }
            | Chardev::Pipe { id, .. }
            | Chardev::Null { id } => id,
        }
    }

    /// The backend name.
    pub fn backend(&self) -> &'static str {
        match self {
            Chardev::Socket { .. } => "socket",
            Chardev::File { .. } => "file",
            Chardev::Stdio { .. } => "stdio",
            Chardev::Pipe { .. } => "pipe",
            Chardev::Null { .. } => "null",
        }
    }

    /// The `-chardev` value.
    pub fn render(&self) -> String {
        let head = OptList::new(self.backend()).kv("id", self.id());
        match self {
            Chardev::Socket {
                path,
                fd,
                server,
                wait,
                logfile,
                logappend,
                ..
            } => {
                let l = head
                    .opt("path", path.as_deref())
                    .opt_num("fd", *fd)
                    .flag("server", *server);
                let l = if *server { l.flag("wait", *wait) } else { l };
                l.opt("logfile", logfile.as_deref())
                    .opt_flag("logappend", *logappend)
            }
            Chardev::File { path, .. } | Chardev::Pipe { path, .. } => head.kv("path", path),
            Chardev::Stdio { signal, .. } => head.opt_flag("signal", *signal),
            Chardev::Null { .. } => head,
        }
        .finish()
    }
}

/// Where a QMP monitor listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QmpSocket {
    /// A Unix socket path QEMU binds.
    Path(String),
    /// An inherited, already bound (and ideally listening) Unix socket fd.
    Fd(i32),
}

/// What a monitor speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MonitorMode {
    /// QMP: `mode=control`.
    #[default]
    Control,
    /// QMP with pretty-printed JSON: `mode=control,pretty=on`.
    ControlPretty,
    /// The human monitor (HMP): `mode=readline`.
    Readline,
}

/// A monitor, QMP unless `mode` says otherwise:
/// `-chardev socket,id=<id>,…,server=on,wait=off` and
/// `-mon chardev=<id>,mode=control`. The id lives in the chardev namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QmpMonitor {
    /// Chardev id.
    pub id: String,
    /// Where to listen.
    pub socket: QmpSocket,
    /// What it speaks.
    #[serde(default)]
    pub mode: MonitorMode,
}

impl QmpMonitor {
    /// The `-chardev` value.
    pub fn render_chardev(&self) -> String {
        let l = OptList::new("socket").kv("id", &self.id);
        match &self.socket {
            QmpSocket::Path(p) => l.kv("path", p),
            QmpSocket::Fd(fd) => l.num("fd", fd),
        }
        .flag("server", true)
        .flag("wait", false)
        .finish()
    }

    /// The `-mon` value.
    pub fn render_mon(&self) -> String {
        let mode = match self.mode {
            MonitorMode::Control | MonitorMode::ControlPretty => "control",
            MonitorMode::Readline => "readline",
        };
        OptList::empty()
            .kv("chardev", &self.id)
            .kv("mode", mode)
            .on_if("pretty", self.mode == MonitorMode::ControlPretty)
            .finish()
    }
}

/// `-serial chardev:<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Serial {
    /// The chardev id.
    pub chardev: String,
}

impl Serial {
    /// The `-serial` value.
    pub fn render(&self) -> String {
        format!("chardev:{}", self.chardev)
    }
}

/// A TPM backend: `-tpmdev emulator,id=<id>,chardev=<chardev>` (swtpm).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tpmdev {
    /// Tpmdev id.
    pub id: String,
    /// Chardev connected to swtpm's control socket.
    pub chardev: String,
}

impl Tpmdev {
    /// The `-tpmdev` value.
    pub fn render(&self) -> String {
        OptList::new("emulator")
            .kv("id", &self.id)
            .kv("chardev", &self.chardev)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_chardev_renders() {
        let c = Chardev::Socket {
            id: "charconsole0".into(),
            path: Some("/run/s,x/console.sock".into()),
            fd: None,
            server: true,
            wait: false,
            logfile: Some("/run/s/console.log".into()),
            logappend: Some(true),
        };
        assert_eq!(
            c.render(),
            "socket,id=charconsole0,path=/run/s,,x/console.sock,server=on,wait=off,logfile=/run/s/console.log,logappend=on"
        );
        let client = Chardev::Socket {
            id: "c".into(),
            path: Some("/v.sock".into()),
            fd: None,
            server: false,
            wait: true,
            logfile: None,
            logappend: None,
        };
        assert_eq!(client.render(), "socket,id=c,path=/v.sock,server=off");
    }

    #[test]
    fn other_chardevs_render() {
        assert_eq!(
            Chardev::File {
                id: "f".into(),
                path: "/dev/fdset/1".into()
            }
            .render(),
            "file,id=f,path=/dev/fdset/1"
        );
        assert_eq!(
            Chardev::Stdio {
                id: "s".into(),
                signal: Some(false)
            }
            .render(),
            "stdio,id=s,signal=off"
        );
        assert_eq!(
            Chardev::Pipe {
                id: "p".into(),
                path: "/tmp/p".into()
            }
            .render(),
            "pipe,id=p,path=/tmp/p"
        );
        assert_eq!(Chardev::Null { id: "n".into() }.render(), "null,id=n");
        assert_eq!(Chardev::Null { id: "n".into() }.id(), "n");
    }

    #[test]
    fn qmp_serial_tpmdev_render() {
        let q = QmpMonitor {
            id: "qmp".into(),
            socket: QmpSocket::Fd(3),
            mode: Default::default(),
        };
        assert_eq!(q.render_chardev(), "socket,id=qmp,fd=3,server=on,wait=off");
        assert_eq!(q.render_mon(), "chardev=qmp,mode=control");
        let pretty = QmpMonitor {
            mode: MonitorMode::ControlPretty,
            ..q.clone()
        };
        assert_eq!(pretty.render_mon(), "chardev=qmp,mode=control,pretty=on");
        let hmp = QmpMonitor {
            mode: MonitorMode::Readline,
            ..q.clone()
        };
        assert_eq!(hmp.render_mon(), "chardev=qmp,mode=readline");
        let q = QmpMonitor {
            id: "qmp".into(),
            socket: QmpSocket::Path("/r/qmp.sock".into()),
            mode: Default::default(),
        };
        assert_eq!(
            q.render_chardev(),
            "socket,id=qmp,path=/r/qmp.sock,server=on,wait=off"
        );
        assert_eq!(
            Serial {
                chardev: "ser0".into()
            }
            .render(),
            "chardev:ser0"
        );
        assert_eq!(
            Tpmdev {
                id: "tpm0".into(),
                chardev: "chrtpm".into()
            }
            .render(),
            "emulator,id=tpm0,chardev=chrtpm"
        );
    }
}
