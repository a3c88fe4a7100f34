//! Where a sandbox's VM comes from: a clone of the config's VM template
//! (`[factory] enable_template`, made by `sandvm template create`), or a
//! cold boot.
//!
//! A clone is chosen when the config enables templating and the template
//! matches the sandbox's config once its annotations are applied. When it
//! does not (no template yet, an incomplete one, a pod annotation that
//! changes the memory size), the sandbox boots cold, as Kata's factory
//! does, and the shim's log says why at `warn`.

use std::collections::BTreeMap;

use runtime::config::annotations;
use runtime::factory::template;
use runtime::{HypervisorConfig, TemplateRole};

/// How the sandbox's VM starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A cold boot: kernel, initrd, guest init, agent.
    Cold,
    /// A clone of the template: `-incoming`, its memory the template's
    /// file mapped copy-on-write; the guest and agent already running.
    Clone,
    /// A VM of the warm cache (`sandvm-vmcache`), running and paused.
    Cached,
}

impl Origin {
    /// The role the runtime is given for this origin.
    pub fn role(self) -> Option<TemplateRole> {
        match self {
            Origin::Cold | Origin::Cached => None,
            Origin::Clone => Some(TemplateRole::Clone),
        }
    }

    /// A word for logs and state.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Cold => "cold",
            Origin::Clone => "template",
            Origin::Cached => "cache",
        }
    }
}

/// The config the sandbox's VM is made from, and how it starts.
#[derive(Debug, Clone)]
pub struct VmSource {
    /// The config to hand the runtime (templating off for a cold boot).
    pub config: HypervisorConfig,
    /// Clone or cold.
    pub origin: Origin,
}

/// Chooses between the template and a cold boot for sandbox `sid`.
pub fn choose(sid: &str, cfg: &HypervisorConfig, ann: &BTreeMap<String, String>) -> VmSource {
    if !cfg.factory.enable_template {
        return VmSource {
            config: cfg.clone(),
            origin: Origin::Cold,
        };
    }
    // the template must match what this sandbox asks for, annotations included
    let checked = annotations::apply(cfg, ann)
        .map_err(runtime::HypervisorError::from)
        .and_then(|eff| template::check_clone(&eff));
    match checked {
        Ok(Some(TemplateRole::Clone)) => VmSource {
            config: cfg.clone(),
            origin: Origin::Clone,
        },
        other => {
            let why = match other {
                Err(e) => e.to_string(),
                Ok(r) => format!("the template check gave {r:?}"),
            };
            tracing::warn!(sid, reason = %why, "not cloning the VM template; booting cold");
            let mut config = cfg.clone();
            config.factory.enable_template = false;
            VmSource {
                config,
                origin: Origin::Cold,
            }
        }
    }
}
