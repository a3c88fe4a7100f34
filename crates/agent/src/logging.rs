//! tracing to the kernel log (`/dev/kmsg`, one record per event, with the
//! event's level as the record's priority), or to stderr when there is no
//! kmsg (a developer running the agent by hand). Through kmsg, warnings and
//! errors reach the console as kernel messages do; info and debug go to
//! `dmesg` only unless the kernel's console log level lets them through, so
//! the agent never garbles the test guest's console shell.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::Arc;

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// A kmsg record may hold about 1 KiB.
const MAX_RECORD: usize = 976;

/// Writes each formatted event as one kmsg record.
#[derive(Clone)]
struct Kmsg(Arc<File>);

/// One event's writer: buffers, then writes the record on drop.
struct Record {
    file: Arc<File>,
    prio: u8,
    buf: Vec<u8>,
}

impl Write for Record {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let mut line: String = text.trim_end().replace('\n', " ");
        if line.len() > MAX_RECORD {
            let mut cut = MAX_RECORD;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        let rec = format!("<{}>sandvm-agent: {line}\n", self.prio);
        let _ = (&*self.file).write_all(rec.as_bytes());
    }
}

impl<'a> MakeWriter<'a> for Kmsg {
    type Writer = Record;
    fn make_writer(&'a self) -> Record {
        Record {
            file: Arc::clone(&self.0),
            prio: 6,
            buf: vec![],
        }
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Record {
        let prio = match *meta.level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        Record {
            file: Arc::clone(&self.0),
            prio,
            buf: vec![],
        }
    }
}

/// Sets up logging with `filter` (e.g. `info`, `debug`, `sandvm_agent=trace`).
pub fn init(filter: &str) {
    let env = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env)
        .with_ansi(false)
        .with_target(false);
    match OpenOptions::new().write(true).open("/dev/kmsg") {
        Ok(f) => {
            // userspace kmsg writes are rate-limited (10 per 5 s) by default
            let _ = std::fs::write("/proc/sys/kernel/printk_devkmsg", "on");
            builder.without_time().with_writer(Kmsg(Arc::new(f))).init();
        }
        Err(_) => builder.with_writer(io::stderr).init(),
    }
}
