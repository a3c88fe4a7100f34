//! Logging: `tracing` to the shim's log, as containerd sets it up. The
//! server and `start` write to the `log` FIFO containerd reads in the bundle
//! (its lines land in containerd's own log); never to `start`'s stdout or
//! stderr, which containerd reads together as the shim's address. `delete`
//! writes to stderr (containerd logs it as the cleanup's warnings).
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
/// no FIFO to write to, the server's and `start`'s logs are dropped.
pub fn init(action: &str, debug: bool) {
    let default = if debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(default));
    let writer = if action == "delete" {
        BoxMakeWriter::new(std::io::stderr)
    } else {
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(LOG_FIFO)
        {
            Ok(f) => BoxMakeWriter::new(Mutex::new(f)),
            Err(_) => BoxMakeWriter::new(std::io::sink),
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}
