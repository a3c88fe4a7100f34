//! Migration to and from files: a template's device state is saved with
//! `migrate` (shared RAM left out, `x-ignore-shared`), a clone loads it
//! with `migrate-incoming` and resumes.

use super::core::Core;
use crate::error::{HypervisorError, Result};
use crate::plan::template::STATE_FILE;
use crate::types::TemplateRole;
use std::path::Path;
use std::time::Duration;
use tracing::info;

/// Migration capability that leaves shared RAM out of the stream.
pub const IGNORE_SHARED: &str = "x-ignore-shared";

fn is_migration_end(e: &qmp::Event) -> bool {
    e.name == "MIGRATION"
        && matches!(
            e.data_str("status"),
            Some("completed" | "failed" | "cancelled")
        )
}

/// What a migration carries of guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ram {
    /// Every page (a snapshot).
    All,
    /// Private RAM only; shared file-backed RAM stays in its file (a template).
    IgnoreShared,
}

/// Run a migration command and wait for its `MIGRATION` event (the `events`
/// capability is on), subscribed before the command is sent.
pub async fn migrate(
    client: &qmp::Client,
    cmd: &'static str,
    uri: &str,
    ram: Ram,
    timeout: Duration,
) -> Result<()> {
    client
        .migrate_set_capabilities(&[(IGNORE_SHARED, ram == Ram::IgnoreShared), ("events", true)])
        .await
        .map_err(HypervisorError::qmp("migrate-set-capabilities"))?;
    let (_, ev) = client
        .execute_until(
            cmd,
            Some(serde_json::json!({ "uri": uri })),
            is_migration_end,
            timeout,
        )
        .await
        .map_err(HypervisorError::qmp(cmd))?;
    match ev.data_str("status") {
        Some("completed") => Ok(()),
        other => {
            let desc = client
                .query_migrate()
                .await
                .ok()
                .and_then(|i| i.error_desc)
                .unwrap_or_default();
            Err(HypervisorError::Migration {
                op: cmd,
                uri: uri.to_string(),
                status: other.unwrap_or("ended").to_string(),
                desc,
            })
        }
    }
}

/// The `exec:` URI that writes a migration stream to `path` (no quote in it:
/// the config's template path is checked for that).
pub fn save_uri(path: &Path) -> String {
    format!("exec:cat>'{}'", path.display())
}

/// The `exec:` URI that reads a migration stream from `path`.
pub fn load_uri(path: &Path) -> String {
    format!("exec:cat '{}'", path.display())
}

impl Core {
    /// For a clone, right after QMP is up: load the template's device state and resume.
    pub(crate) async fn restore_clone(
        &self,
        client: &qmp::Client,
        timeout: Duration,
    ) -> Result<()> {
        let Some(st) = self.state.as_ref() else {
            return Ok(());
        };
        if st.template != Some(TemplateRole::Clone) {
            return Ok(());
        }
        let state = st.config.factory.template_path.join(STATE_FILE);
        migrate(
            client,
            "migrate-incoming",
            &load_uri(&state),
            Ram::IgnoreShared,
            timeout,
        )
        .await?;
        client.cont().await.map_err(HypervisorError::qmp("cont"))?;
        info!(id = %st.id, template = %state.display(), "clone restored from the template");
        Ok(())
    }

    /// Pause the guest and save its device state to `path` (shared RAM by
    /// reference, which a template's file-backed memory is). The VM stays paused.
    pub(crate) async fn save_device_state(&mut self, path: &Path, timeout: Duration) -> Result<()> {
        self.require_running("save the device state")?;
        let client = self.qmp().await?.clone();
        client.stop().await.map_err(HypervisorError::qmp("stop"))?;
        self.set_state(crate::types::VmState::Paused)?;
        migrate(
            &client,
            "migrate",
            &save_uri(path),
            Ram::IgnoreShared,
            timeout,
        )
        .await
    }
}
