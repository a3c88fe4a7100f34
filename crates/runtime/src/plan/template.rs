//! VM templating in the plan: a template's guest RAM is the template file,
//! shared; a clone maps the same file privately and waits for its device
//! state (`-incoming defer`). See [`crate::factory`] for the orchestration.

use super::memory::MEM_BACKEND_ID;
use crate::config::HypervisorConfig;
use crate::types::TemplateRole;
use qemu_config::{Config, Incoming, Object};

/// The guest memory file in `template_path`.
pub const MEMORY_FILE: &str = "memory";
/// The device state file in `template_path`.
pub const STATE_FILE: &str = "state";

/// Turn a sandbox's QEMU invocation into a template's or a clone's.
pub fn apply(qc: &mut Config, cfg: &HypervisorConfig, role: Option<TemplateRole>) {
    let Some(role) = role else {
        return;
    };
    qc.objects.retain(|o| o.id() != MEM_BACKEND_ID);
    qc.objects.insert(
        0,
        Object::MemoryBackendFile {
            id: MEM_BACKEND_ID.into(),
            size_mib: cfg.memory_mib,
            mem_path: cfg
                .factory
                .template_path
                .join(MEMORY_FILE)
                .display()
                .to_string(),
            share: Some(role == TemplateRole::Template),
            prealloc: false,
            readonly: None,
            discard_data: None,
            align: None,
        },
    );
    if qc.machine.get("memory-backend").is_none() {
        qc.machine = qc.machine.clone().memory_backend(MEM_BACKEND_ID);
    }
    if role == TemplateRole::Clone {
        qc.incoming = Some(Incoming::Defer);
    }
}
