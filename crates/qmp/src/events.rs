//! QMP events.

use serde_json::Value;

/// An asynchronous QMP event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Event name, e.g. `DEVICE_DELETED`.
    pub name: String,
    /// The `data` member, or `Value::Null` when absent.
    pub data: Value,
    /// Host time of the event as `(seconds, microseconds)`.
    pub timestamp: (i64, i64),
}

impl Event {
    /// Returns `data[key]` as a string, if present.
    pub fn data_str(&self, key: &str) -> Option<&str> {
        self.data.get(key).and_then(Value::as_str)
    }

    /// True for a `DEVICE_DELETED` event whose `data.device` or `data.path` is `id`.
    pub fn is_device_deleted(&self, id: &str) -> bool {
        self.name == "DEVICE_DELETED"
            && (self.data_str("device") == Some(id) || self.data_str("path") == Some(id))
    }
}

/// Which event [`crate::Client::system_powerdown`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerdownWait {
    /// Wait for `SHUTDOWN` (the guest acted on the ACPI request).
    Shutdown,
    /// Wait for `POWERDOWN` (QEMU delivered the request).
    Powerdown,
}

impl PowerdownWait {
    /// The event name awaited.
    pub fn event_name(self) -> &'static str {
        match self {
            PowerdownWait::Shutdown => "SHUTDOWN",
            PowerdownWait::Powerdown => "POWERDOWN",
        }
    }
}
