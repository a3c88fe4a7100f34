//! Migration (used for save/restore and templating).

use serde_json::{Value, json};

use super::{MigrationCapabilityStatus, MigrationInfo};
use crate::client::Client;
use crate::error::Result;

impl Client {
    /// `migrate-set-capabilities` with `(capability, state)` pairs.
    pub async fn migrate_set_capabilities(&self, capabilities: &[(&str, bool)]) -> Result<()> {
        let caps: Vec<MigrationCapabilityStatus> = capabilities
            .iter()
            .map(|&(c, s)| MigrationCapabilityStatus {
                capability: c.to_string(),
                state: s,
            })
            .collect();
        self.execute(
            "migrate-set-capabilities",
            Some(json!({ "capabilities": caps })),
        )
        .await
        .map(drop)
    }

    /// `migrate` to `uri` (e.g. `file:PATH`, `exec:CMD`, `unix:PATH`).
    /// Returns once migration has started; poll [`Client::query_migrate`]
    /// or wait for the `MIGRATION` event.
    pub async fn migrate(&self, uri: &str) -> Result<()> {
        self.execute("migrate", Some(json!({ "uri": uri })))
            .await
            .map(drop)
    }

    /// `migrate-incoming` from `uri` (QEMU must run with `-incoming defer`).
    pub async fn migrate_incoming(&self, uri: &str) -> Result<()> {
        self.execute("migrate-incoming", Some(json!({ "uri": uri })))
            .await
            .map(drop)
    }

    /// `query-migrate`.
    pub async fn query_migrate(&self) -> Result<MigrationInfo> {
        let raw = self.execute("query-migrate", None).await?;
        let field = |k: &str| raw.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(MigrationInfo {
            status: field("status"),
            error_desc: field("error-desc"),
            raw,
        })
    }
}
