//! CPUs, memory and balloon queries.

use serde_json::json;

use super::{
    BalloonInfo, CpuInfoFast, HotpluggableCpu, MemoryDeviceInfo, MemorySizeSummary, decode,
};
use crate::client::Client;
use crate::error::Result;

impl Client {
    /// `query-hotpluggable-cpus`.
    pub async fn query_hotpluggable_cpus(&self) -> Result<Vec<HotpluggableCpu>> {
        let c = "query-hotpluggable-cpus";
        decode(c, self.execute(c, None).await?)
    }

    /// `query-cpus-fast`.
    pub async fn query_cpus_fast(&self) -> Result<Vec<CpuInfoFast>> {
        let c = "query-cpus-fast";
        decode(c, self.execute(c, None).await?)
    }

    /// `query-memory-devices`.
    pub async fn query_memory_devices(&self) -> Result<Vec<MemoryDeviceInfo>> {
        let c = "query-memory-devices";
        decode(c, self.execute(c, None).await?)
    }

    /// `query-memory-size-summary`.
    pub async fn query_memory_size_summary(&self) -> Result<MemorySizeSummary> {
        let c = "query-memory-size-summary";
        decode(c, self.execute(c, None).await?)
    }

    /// `balloon`: set the guest's target memory size in bytes.
    pub async fn balloon(&self, value: i64) -> Result<()> {
        self.execute("balloon", Some(json!({ "value": value })))
            .await
            .map(drop)
    }

    /// `query-balloon`.
    pub async fn query_balloon(&self) -> Result<BalloonInfo> {
        decode("query-balloon", self.execute("query-balloon", None).await?)
    }
}
