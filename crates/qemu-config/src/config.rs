//! [`Config`]: one QEMU invocation.

use serde::{Deserialize, Serialize};

use crate::boot::{FwCfg, Kernel, Pflash};
use crate::chardev::{Chardev, QmpMonitor, Serial, Tpmdev};
use crate::cpu::{Cpu, Smp};
use crate::device::Device;
use crate::drive::Drive;
use crate::error::ValidationError;
use crate::escape::OptList;
use crate::fsdev::Fsdev;
use crate::knobs::{AddFd, Global, Incoming, Knobs, Rtc, Sandbox};
use crate::machine::Machine;
use crate::memory::{Memory, NumaNode};
use crate::netdev::Netdev;
use crate::object::Object;

/// A typed model of one QEMU invocation. [`Config::validate`] checks it and
/// [`Config::to_args`] renders the argv (without the binary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// `-name <name>` (rendered `-name guest=<name>` when the name contains `=`).
    pub name: Option<String>,
    /// `-uuid`.
    pub uuid: Option<String>,
    /// `-machine`.
    pub machine: Machine,
    /// `-cpu`.
    pub cpu: Option<Cpu>,
    /// `-smp`.
    pub smp: Smp,
    /// `-m`.
    pub memory: Memory,
    /// `-numa node,…`.
    pub numa: Vec<NumaNode>,
    /// `-object`.
    pub objects: Vec<Object>,
    /// `-kernel`/`-initrd`/`-append`.
    pub kernel: Option<Kernel>,
    /// `-bios` (passed as a plain path).
    pub bios: Option<String>,
    /// `-drive if=pflash,…`.
    pub pflash: Vec<Pflash>,
    /// `-fw_cfg`.
    pub fw_cfg: Vec<FwCfg>,
    /// Boolean switches.
    pub knobs: Knobs,
    /// `-rtc`.
    pub rtc: Option<Rtc>,
    /// `-global`.
    pub globals: Vec<Global>,
    /// `-pidfile` (passed as a plain path).
    pub pidfile: Option<String>,
    /// `-sandbox`.
    pub sandbox: Option<Sandbox>,
    /// `-incoming`.
    pub incoming: Option<Incoming>,
    /// `-action event=action`, e.g. `("panic", "pause")`, in order.
    pub actions: Vec<(String, String)>,
    /// `-add-fd`.
    pub add_fds: Vec<AddFd>,
    /// QMP monitors (`-chardev socket` + `-mon mode=control`).
    pub qmp: Vec<QmpMonitor>,
    /// `-chardev`.
    pub chardevs: Vec<Chardev>,
    /// `-serial chardev:<id>`.
    pub serials: Vec<Serial>,
    /// `-tpmdev emulator`.
    pub tpmdevs: Vec<Tpmdev>,
    /// `-netdev`.
    pub netdevs: Vec<Netdev>,
    /// `-fsdev` (virtio-9p backends).
    pub fsdevs: Vec<Fsdev>,
    /// `-device`, in order (a bus must be provided before it is used).
    pub devices: Vec<Device>,
    /// `-drive` (cold-plugged disks).
    pub drives: Vec<Drive>,
    /// Appended last, unchecked except for newline/NUL.
    pub extra_args: Vec<String>,
}

/// One rendered option: a flag, a flag with a value, or a raw extra argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Arg {
    /// `-flag`.
    Flag(&'static str),
    /// `-flag value`.
    Opt(&'static str, String),
    /// An extra argument, verbatim.
    Extra(String),
}

impl Config {
    /// A config with this machine, CPUs and memory, and nothing else.
    pub fn new(machine: Machine, smp: Smp, memory: Memory) -> Self {
        Self {
            name: None,
            uuid: None,
            machine,
            cpu: None,
            smp,
            memory,
            numa: Vec::new(),
            objects: Vec::new(),
            kernel: None,
            bios: None,
            pflash: Vec::new(),
            fw_cfg: Vec::new(),
            knobs: Knobs::default(),
            rtc: None,
            globals: Vec::new(),
            pidfile: None,
            sandbox: None,
            incoming: None,
            actions: Vec::new(),
            add_fds: Vec::new(),
            qmp: Vec::new(),
            chardevs: Vec::new(),
            serials: Vec::new(),
            tpmdevs: Vec::new(),
            netdevs: Vec::new(),
            fsdevs: Vec::new(),
            devices: Vec::new(),
            drives: Vec::new(),
            extra_args: Vec::new(),
        }
    }

    /// Check the config; see [`ValidationError`] for what is checked.
    pub fn validate(&self) -> Result<(), ValidationError> {
        crate::validate::validate(self)
    }

    /// The argv, without the binary.
    pub fn to_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        for arg in self.args() {
            match arg {
                Arg::Flag(f) => out.push(f.to_owned()),
                Arg::Opt(f, v) => {
                    out.push(f.to_owned());
                    out.push(v);
                }
                Arg::Extra(v) => out.push(v),
            }
        }
        out
    }

    /// The options in render order.
    pub(crate) fn args(&self) -> Vec<Arg> {
        use Arg::{Extra, Flag, Opt};
        let mut a = Vec::new();
        if let Some(name) = &self.name {
            let v = if name.contains('=') {
                OptList::empty().kv("guest", name).finish()
            } else {
                crate::escape::escape(name)
            };
            a.push(Opt("-name", v));
        }
        if let Some(uuid) = &self.uuid {
            a.push(Opt("-uuid", uuid.clone()));
        }
        a.push(Opt("-machine", self.machine.render()));
        if let Some(cpu) = &self.cpu {
            a.push(Opt("-cpu", cpu.render()));
        }
        a.push(Opt("-smp", self.smp.render()));
        a.push(Opt("-m", self.memory.render()));
        a.extend(self.objects.iter().map(|o| Opt("-object", o.render())));
        a.extend(self.numa.iter().map(|n| Opt("-numa", n.render())));
        if let Some(k) = &self.kernel {
            a.push(Opt("-kernel", k.path.clone()));
            if let Some(initrd) = &k.initrd {
                a.push(Opt("-initrd", initrd.clone()));
            }
            if let Some(append) = &k.append {
                a.push(Opt("-append", append.clone()));
            }
        }
        if let Some(bios) = &self.bios {
            a.push(Opt("-bios", bios.clone()));
        }
        a.extend(self.pflash.iter().map(|p| Opt("-drive", p.render())));
        a.extend(self.fw_cfg.iter().map(|f| Opt("-fw_cfg", f.render())));
        for (flag, value) in self.knobs.render() {
            match value {
                Some(v) => a.push(Opt(flag, v.to_owned())),
                None => a.push(Flag(flag)),
            }
        }
        if let Some(rtc) = &self.rtc {
            a.push(Opt("-rtc", rtc.render()));
        }
        a.extend(self.globals.iter().map(|g| Opt("-global", g.render())));
        if let Some(p) = &self.pidfile {
            a.push(Opt("-pidfile", p.clone()));
        }
        if let Some(s) = &self.sandbox {
            a.push(Opt("-sandbox", s.render()));
        }
        a.extend(
            self.actions
                .iter()
                .map(|(event, action)| Opt("-action", OptList::empty().kv(event, action).finish())),
        );
        a.extend(self.add_fds.iter().map(|f| Opt("-add-fd", f.render())));
        for q in &self.qmp {
            a.push(Opt("-chardev", q.render_chardev()));
            a.push(Opt("-mon", q.render_mon()));
        }
        a.extend(self.chardevs.iter().map(|c| Opt("-chardev", c.render())));
        a.extend(self.serials.iter().map(|s| Opt("-serial", s.render())));
        a.extend(self.tpmdevs.iter().map(|t| Opt("-tpmdev", t.render())));
        a.extend(self.netdevs.iter().map(|n| Opt("-netdev", n.render())));
        a.extend(self.fsdevs.iter().map(|f| Opt("-fsdev", f.render())));
        a.extend(self.drives.iter().map(|d| Opt("-drive", d.render())));
        a.extend(self.devices.iter().map(|d| Opt("-device", d.render())));
        if let Some(i) = &self.incoming {
            a.push(Opt("-incoming", i.render()));
        }
        a.extend(self.extra_args.iter().cloned().map(Extra));
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> Config {
        Config::new(Machine::new("q35"), Smp::new(1), Memory::new(256))
    }

    #[test]
    fn minimal_config_renders() {
        assert_eq!(
            minimal().to_args(),
            ["-machine", "q35", "-smp", "1", "-m", "256M"]
        );
        assert_eq!(minimal().validate(), Ok(()));
    }

    #[test]
    fn name_is_escaped_and_guest_keyed_when_needed() {
        let mut c = minimal();
        c.name = Some("sandbox-a,b".into());
        assert_eq!(c.to_args()[..2], ["-name", "sandbox-a,,b"]);
        c.name = Some("a=b".into());
        assert_eq!(c.to_args()[..2], ["-name", "guest=a=b"]);
    }

    #[test]
    fn plain_string_options_are_not_escaped() {
        let mut c = minimal();
        c.kernel = Some(Kernel {
            path: "/k,x=y/vmlinuz".into(),
            initrd: Some("/i,1".into()),
            append: Some("console=hvc0 a=b,c".into()),
        });
        c.bios = Some("/b,1".into());
        c.pidfile = Some("/p,1".into());
        c.incoming = Some(Incoming::Defer);
        c.extra_args = vec!["-trace".into(), "qmp_*".into()];
        let args = c.to_args();
        assert_eq!(
            args[6..],
            [
                "-kernel",
                "/k,x=y/vmlinuz",
                "-initrd",
                "/i,1",
                "-append",
                "console=hvc0 a=b,c",
                "-bios",
                "/b,1",
                "-pidfile",
                "/p,1",
                "-incoming",
                "defer",
                "-trace",
                "qmp_*"
            ]
        );
    }

    #[test]
    fn serde_round_trip() {
        let mut c = minimal();
        c.qmp.push(QmpMonitor {
            id: "qmp".into(),
            socket: crate::chardev::QmpSocket::Fd(3),
            mode: Default::default(),
        });
        let json = serde_json::to_string(&c).unwrap();
        let back: Config = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
    }
}
