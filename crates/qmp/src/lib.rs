//! Async QMP (QEMU Machine Protocol) client on tokio.
//!
//! One [`Client`] drives one QMP connection. Commands carry a unique `id` and
//! many tasks may have commands in flight at once. A caller writes its
//! command straight to the socket; a reader task matches each reply to its
//! caller. Events go out over a broadcast channel
//! ([`Client::events`]). When the connection drops, every pending command fails
//! with [`Error::Disconnected`] and [`Client::closed`] resolves.
//!
//! See `docs/qmp.md` for ordering guarantees, the error model, fd passing and
//! cancellation semantics.

mod client;
pub mod commands;
mod error;
mod events;
pub mod protocol;
mod reader;
mod writer;

pub use client::{
    Client, ClientOptions, DEFAULT_COMMAND_TIMEOUT, DEFAULT_EVENT_CAPACITY,
    DEFAULT_HANDSHAKE_TIMEOUT,
};
pub use error::{Error, Result};
pub use events::{Event, PowerdownWait};
pub use protocol::{Greeting, Message, ProtocolError, QemuVersion, parse_message};

/// Largest QMP message (one line) accepted from QEMU: 16 MiB.
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// Oldest QEMU release the client accepts, as `(major, minor)`.
pub const MIN_QEMU_VERSION: (u64, u64) = (5, 0);
