//! `-cpu` and `-smp`.

use serde::{Deserialize, Serialize};

use crate::escape::OptList;

/// `-cpu <model>,<feature>,…`.
///
/// QEMU splits CPU features on `,` without escaping, so a feature may not
/// contain a comma (validation rejects it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cpu {
    /// CPU model, such as `host`, `max` or `cortex-a57`.
    pub model: String,
    /// Features, appended verbatim: `+vmx`, `-foo`, `pmu=off`.
    pub features: Vec<String>,
}

impl Cpu {
    /// A CPU model with no features.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            features: Vec::new(),
        }
    }

    /// The `-cpu` value.
    pub fn render(&self) -> String {
        let mut s = self.model.clone();
        for f in &self.features {
            s.push(',');
            s.push_str(f);
        }
        s
    }
}

/// `-smp <cpus>,sockets=…,dies=…,cores=…,threads=…,maxcpus=…`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Smp {
    /// Boot CPUs (at least 1).
    pub cpus: u32,
    /// Sockets.
    pub sockets: Option<u32>,
    /// Dies per socket (x86 only).
    pub dies: Option<u32>,
    /// Cores per die.
    pub cores: Option<u32>,
    /// Threads per core.
    pub threads: Option<u32>,
    /// Maximum (hotpluggable) CPUs.
    pub maxcpus: Option<u32>,
}

impl Smp {
    /// `cpus` boot CPUs and nothing else.
    pub fn new(cpus: u32) -> Self {
        Self {
            cpus,
            sockets: None,
            dies: None,
            cores: None,
            threads: None,
            maxcpus: None,
        }
    }

    /// The `-smp` value.
    pub fn render(&self) -> String {
        OptList::new(&self.cpus.to_string())
            .opt_num("sockets", self.sockets)
            .opt_num("dies", self.dies)
            .opt_num("cores", self.cores)
            .opt_num("threads", self.threads)
            .opt_num("maxcpus", self.maxcpus)
            .finish()
    }
}

impl Default for Smp {
    /// One CPU.
    fn default() -> Self {
        Self::new(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_features_appended() {
        let c = Cpu {
            model: "host".into(),
            features: vec!["+vmx".into(), "-foo".into(), "pmu=off".into()],
        };
        assert_eq!(c.render(), "host,+vmx,-foo,pmu=off");
        assert_eq!(Cpu::new("max").render(), "max");
    }

    #[test]
    fn smp_renders_given_fields() {
        let s = Smp {
            cpus: 1,
            sockets: Some(4),
            dies: None,
            cores: Some(1),
            threads: Some(1),
            maxcpus: Some(4),
        };
        assert_eq!(s.render(), "1,sockets=4,cores=1,threads=1,maxcpus=4");
        assert_eq!(Smp::default().render(), "1");
    }
}
