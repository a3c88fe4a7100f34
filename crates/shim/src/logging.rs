//! Logging: `tracing` to the shim's log, as containerd sets it up. The
//! server writes to the `log` FIFO containerd reads in the bundle (its lines
//! land in containerd's own log); `start` and `delete` write to stderr.
//! `-debug` gives debug level; `SANDVM_SHIM_LOG` (a `RUST_LOG`-style filter)
//! overrides. The FIFO is non-blocking: when containerd does not read, log
//! lines are dropped rather than the shim blocked.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// The environment variable with the log filter.
pub const LOG_ENV: &str = "SANDVM_SHIM_LOG";

/// The FIFO containerd reads the shim's log from, in the bundle.
pub const LOG_FIFO: &str = "log";

/// Sets up logging for `action` (`""` for the server). Never fails: with
/// no FIFO the log goes to stderr.
pub fn init(action: &str, debug: bool) {
    let default = if debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(default));
    let fifo = if action.is_empty() {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(LOG_FIFO)
            .ok()
    } else {
        None
    };
    let writer = match fifo {
        Some(f) => BoxMakeWriter::new(Mutex::new(f)),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}
