//! Flags and small options: [`Knobs`], `-rtc`, `-global`, `-sandbox`, `-incoming`, `-add-fd`.

use serde::{Deserialize, Serialize};

use crate::escape::OptList;

/// Boolean command-line switches. Each renders only when true.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Knobs {
    /// `-no-user-config`.
    pub no_user_config: bool,
    /// `-nodefaults`.
    pub nodefaults: bool,
    /// `-nographic`.
    pub nographic: bool,
    /// `-no-reboot`.
    pub no_reboot: bool,
    /// `-no-shutdown`.
    pub no_shutdown: bool,
    /// `-S`: start with the CPUs stopped.
    pub stopped: bool,
    /// `-vga none`.
    pub vga_none: bool,
    /// `-display none`.
    pub display_none: bool,
    /// `-daemonize`.
    pub daemonize: bool,
    /// `-serial none`.
    pub serial_none: bool,
    /// `-monitor none`.
    pub monitor_none: bool,
    /// `-parallel none`.
    pub parallel_none: bool,
}

impl Knobs {
    /// The arguments, in a fixed order.
    pub fn render(&self) -> Vec<(&'static str, Option<&'static str>)> {
        let all: [(bool, &'static str, Option<&'static str>); 12] = [
            (self.no_user_config, "-no-user-config", None),
            (self.nodefaults, "-nodefaults", None),
            (self.nographic, "-nographic", None),
            (self.no_reboot, "-no-reboot", None),
            (self.no_shutdown, "-no-shutdown", None),
            (self.stopped, "-S", None),
            (self.vga_none, "-vga", Some("none")),
            (self.display_none, "-display", Some("none")),
            (self.daemonize, "-daemonize", None),
            (self.serial_none, "-serial", Some("none")),
            (self.monitor_none, "-monitor", Some("none")),
            (self.parallel_none, "-parallel", Some("none")),
        ];
        all.into_iter()
            .filter(|(on, _, _)| *on)
            .map(|(_, flag, value)| (flag, value))
            .collect()
    }
}

/// `-rtc base=…`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RtcBase {
    /// `base=utc`.
    Utc,
    /// `base=localtime`.
    Localtime,
    /// `base=<date>`, such as `2006-06-17T16:01:21`.
    Date(String),
}

/// `-rtc clock=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RtcClock {
    /// `clock=host`.
    Host,
    /// `clock=rt`.
    Rt,
    /// `clock=vm`.
    Vm,
}

/// `-rtc driftfix=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RtcDriftfix {
    /// `driftfix=slew`.
    Slew,
    /// `driftfix=none`.
    None,
}

/// `-rtc base=utc,driftfix=slew,clock=host`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rtc {
    /// `base=`.
    pub base: RtcBase,
    /// `driftfix=`.
    pub driftfix: Option<RtcDriftfix>,
    /// `clock=`.
    pub clock: Option<RtcClock>,
}

impl Default for Rtc {
    /// Kata's choice: `base=utc,driftfix=slew,clock=host`.
    fn default() -> Self {
        Self {
            base: RtcBase::Utc,
            driftfix: Some(RtcDriftfix::Slew),
            clock: Some(RtcClock::Host),
        }
    }
}

impl Rtc {
    /// The `-rtc` value.
    pub fn render(&self) -> String {
        let base = match &self.base {
            RtcBase::Utc => "utc",
            RtcBase::Localtime => "localtime",
            RtcBase::Date(d) => d,
        };
        OptList::empty()
            .kv("base", base)
            .opt(
                "driftfix",
                self.driftfix.map(|d| match d {
                    RtcDriftfix::Slew => "slew",
                    RtcDriftfix::None => "none",
                }),
            )
            .opt(
                "clock",
                self.clock.map(|c| match c {
                    RtcClock::Host => "host",
                    RtcClock::Rt => "rt",
                    RtcClock::Vm => "vm",
                }),
            )
            .finish()
    }
}

/// `-global <driver>.<property>=<value>`.
///
/// QEMU reads this short form with `sscanf("%63[^.=].%63[^=]")` and takes the
/// value verbatim, so the value is not escaped; validation keeps the driver and
/// property names within QEMU's 63-byte limit and free of `.`/`=`/`,`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Global {
    /// Driver, such as `kvm-pit`.
    pub driver: String,
    /// Property, such as `lost_tick_policy`.
    pub property: String,
    /// Value, such as `discard`.
    pub value: String,
}

impl Global {
    /// A global property.
    pub fn new(
        driver: impl Into<String>,
        property: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        Self {
            driver: driver.into(),
            property: property.into(),
            value: value.into(),
        }
    }

    /// The `-global` value.
    pub fn render(&self) -> String {
        format!("{}.{}={}", self.driver, self.property, self.value)
    }
}

/// A `-sandbox` policy for one syscall group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxAction {
    /// `allow`.
    Allow,
    /// `deny`.
    Deny,
    /// `children` (only for `elevateprivileges`).
    Children,
}

impl SandboxAction {
    fn as_str(self) -> &'static str {
        match self {
            SandboxAction::Allow => "allow",
            SandboxAction::Deny => "deny",
            SandboxAction::Children => "children",
        }
    }
}

/// `-sandbox on,obsolete=…,elevateprivileges=…,spawn=…,resourcecontrol=…` (seccomp).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    /// `obsolete=`.
    pub obsolete: Option<SandboxAction>,
    /// `elevateprivileges=`.
    pub elevate_privileges: Option<SandboxAction>,
    /// `spawn=`.
    pub spawn: Option<SandboxAction>,
    /// `resourcecontrol=`.
    pub resource_control: Option<SandboxAction>,
}

impl Default for Sandbox {
    /// Kata's policy: everything denied.
    fn default() -> Self {
        Self {
            obsolete: Some(SandboxAction::Deny),
            elevate_privileges: Some(SandboxAction::Deny),
            spawn: Some(SandboxAction::Deny),
            resource_control: Some(SandboxAction::Deny),
        }
    }
}

impl Sandbox {
    /// The `-sandbox` value.
    pub fn render(&self) -> String {
        OptList::new("on")
            .opt("obsolete", self.obsolete.map(SandboxAction::as_str))
            .opt(
                "elevateprivileges",
                self.elevate_privileges.map(SandboxAction::as_str),
            )
            .opt("spawn", self.spawn.map(SandboxAction::as_str))
            .opt(
                "resourcecontrol",
                self.resource_control.map(SandboxAction::as_str),
            )
            .finish()
    }
}

/// `-incoming`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Incoming {
    /// `-incoming defer`: wait for `migrate-incoming` over QMP.
    Defer,
    /// `-incoming <uri>`, such as `fd:4`, `unix:/path` or `exec:cat /state`.
    Uri(String),
}

impl Incoming {
    /// The `-incoming` value.
    pub fn render(&self) -> String {
        match self {
            Incoming::Defer => "defer".to_owned(),
            Incoming::Uri(u) => u.clone(),
        }
    }
}

/// `-add-fd fd=N,set=M,opaque=…`: put an inherited fd into an fd set (`/dev/fdset/M`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddFd {
    /// The inherited file descriptor.
    pub fd: i32,
    /// The fd set id.
    pub set: u32,
    /// Free-form description.
    pub opaque: Option<String>,
}

impl AddFd {
    /// The `-add-fd` value.
    pub fn render(&self) -> String {
        OptList::empty()
            .num("fd", self.fd)
            .num("set", self.set)
            .opt("opaque", self.opaque.as_deref())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_render_in_fixed_order() {
        let k = Knobs {
            nodefaults: true,
            stopped: true,
            vga_none: true,
            no_user_config: true,
            parallel_none: true,
            ..Knobs::default()
        };
        assert_eq!(
            k.render(),
            vec![
                ("-no-user-config", None),
                ("-nodefaults", None),
                ("-S", None),
                ("-vga", Some("none")),
                ("-parallel", Some("none")),
            ]
        );
        assert!(Knobs::default().render().is_empty());
    }

    #[test]
    fn rtc_default_is_katas() {
        assert_eq!(Rtc::default().render(), "base=utc,driftfix=slew,clock=host");
        let r = Rtc {
            base: RtcBase::Date("2006-06-17T16:01:21".into()),
            driftfix: None,
            clock: Some(RtcClock::Vm),
        };
        assert_eq!(r.render(), "base=2006-06-17T16:01:21,clock=vm");
    }

    #[test]
    fn global_sandbox_incoming_addfd() {
        assert_eq!(
            Global::new("kvm-pit", "lost_tick_policy", "discard").render(),
            "kvm-pit.lost_tick_policy=discard"
        );
        assert_eq!(
            Sandbox::default().render(),
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
        );
        assert_eq!(Incoming::Defer.render(), "defer");
        assert_eq!(Incoming::Uri("fd:4".into()).render(), "fd:4");
        let a = AddFd {
            fd: 5,
            set: 2,
            opaque: Some("rdonly:/a,b".into()),
        };
        assert_eq!(a.render(), "fd=5,set=2,opaque=rdonly:/a,,b");
    }
}
