//! Typed helpers for the QMP commands the runtime uses.
//!
//! Each helper sends exactly the arguments documented in the QEMU 10 QMP
//! reference and uses the client's default timeout.

mod devices;
mod fds;
mod machine;
mod migration;
mod qom;
mod types;
mod vm;

pub use types::*;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};

/// Decodes a reply into `T`, naming `command` on failure.
pub(crate) fn decode<T: DeserializeOwned>(command: &str, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| Error::Decode {
        command: command.to_string(),
        message: e.to_string(),
    })
}
