//! The agent's options, from the kernel command line.

/// What the agent serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The ttrpc agent protocol (default).
    Ttrpc,
    /// A line echo responder (`sandvm.agent=echo`), for channel tests.
    Echo,
    /// Nothing (`sandvm.agent=off`; the init does not even start the agent).
    Off,
}

/// Which channel to serve on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The virtio-serial port if it exists, else vsock.
    Auto,
    /// `sandvm.agent_channel=serial`.
    Serial,
    /// `sandvm.agent_channel=vsock`.
    Vsock,
}

/// Options read from `/proc/cmdline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `sandvm.agent=ttrpc|echo|off`.
    pub mode: Mode,
    /// `sandvm.agent_channel=serial|vsock`.
    pub channel: Channel,
    /// `sandvm.agent_log=` a tracing filter (default `info,ttrpc=off`: ttrpc
    /// logs a dropped session's unsent reply as an error, which would reach
    /// the console; any explicit filter shows ttrpc's logs again).
    pub log: String,
    /// `sandvm.agent_vsock_port=` (default 1024).
    pub vsock_port: u32,
    /// Unknown values, for a warning once logging is up.
    pub warnings: Vec<String>,
}

/// The default log filter.
pub const DEFAULT_LOG: &str = "info,ttrpc=off";

/// Parses a kernel command line.
pub fn parse(cmdline: &str) -> Options {
    let mut o = Options {
        mode: Mode::Ttrpc,
        channel: Channel::Auto,
        log: DEFAULT_LOG.to_string(),
        vsock_port: sandvm_agent_protocol::AGENT_VSOCK_PORT,
        warnings: vec![],
    };
    for w in cmdline.split_whitespace() {
        let Some((k, v)) = w.split_once('=') else {
            continue;
        };
        match (k, v) {
            ("sandvm.agent", "ttrpc" | "on") => o.mode = Mode::Ttrpc,
            ("sandvm.agent", "echo") => o.mode = Mode::Echo,
            ("sandvm.agent", "off") => o.mode = Mode::Off,
            ("sandvm.agent_channel", "serial") => o.channel = Channel::Serial,
            ("sandvm.agent_channel", "vsock") => o.channel = Channel::Vsock,
            ("sandvm.agent_channel", "auto") => o.channel = Channel::Auto,
            ("sandvm.agent_log", level) => o.log = level.to_string(),
            ("sandvm.agent_vsock_port", p) => match p.parse() {
                Ok(p) => o.vsock_port = p,
                Err(_) => o.warnings.push(format!("bad {w}")),
            },
            ("sandvm.agent" | "sandvm.agent_channel", _) => {
                o.warnings.push(format!("unknown value in {w}"))
            }
            _ => {}
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let d = parse("console=hvc0 quiet");
        assert_eq!(
            (d.mode, d.channel, d.log.as_str(), d.vsock_port),
            (Mode::Ttrpc, Channel::Auto, DEFAULT_LOG, 1024)
        );
        let o = parse(
            "sandvm.agent=echo sandvm.agent_channel=vsock sandvm.agent_log=debug sandvm.agent_vsock_port=2000",
        );
        assert_eq!(
            (o.mode, o.channel, o.log.as_str(), o.vsock_port),
            (Mode::Echo, Channel::Vsock, "debug", 2000)
        );
        assert_eq!(parse("sandvm.agent=off").mode, Mode::Off);
        let w = parse("sandvm.agent=bogus sandvm.agent_channel=tcp");
        assert_eq!(w.warnings.len(), 2);
        assert_eq!(w.mode, Mode::Ttrpc);
    }
}
