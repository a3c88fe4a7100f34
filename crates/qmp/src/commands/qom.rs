//! QOM property access.

use serde_json::{Value, json};

use super::{ObjectPropertyInfo, decode};
use crate::client::Client;
use crate::error::Result;

impl Client {
    /// `qom-get`.
    pub async fn qom_get(&self, path: &str, property: &str) -> Result<Value> {
        self.execute(
            "qom-get",
            Some(json!({ "path": path, "property": property })),
        )
        .await
    }

    /// `qom-set`.
    pub async fn qom_set(&self, path: &str, property: &str, value: Value) -> Result<()> {
        self.execute(
            "qom-set",
            Some(json!({ "path": path, "property": property, "value": value })),
        )
        .await
        .map(drop)
    }

    /// `qom-list`.
    pub async fn qom_list(&self, path: &str) -> Result<Vec<ObjectPropertyInfo>> {
        decode(
            "qom-list",
            self.execute("qom-list", Some(json!({ "path": path })))
                .await?,
        )
    }
}
