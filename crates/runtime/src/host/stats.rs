//! Resource use of a sandbox's processes, from procfs: CPU time, RSS and PSS
//! of QEMU and of every helper process (supervisor, daemons).

use serde::Serialize;

/// One process's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcStats {
    /// What the process is (`qemu`, `supervisor`, a daemon's name).
    pub role: String,
    /// Its pid.
    pub pid: i32,
    /// User plus system CPU time, milliseconds.
    pub cpu_ms: u64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Proportional set size, KiB (shared pages divided among their users).
    pub pss_kib: u64,
    /// Threads.
    pub threads: i64,
}

/// Read `pid`'s figures; `None` when it is gone or unreadable.
pub fn proc_stats(role: &str, pid: i32) -> Option<ProcStats> {
    let p = procfs::process::Process::new(pid).ok()?;
    let stat = p.stat().ok()?;
    let tps = procfs::ticks_per_second().max(1);
    let page_kib = procfs::page_size() / 1024;
    Some(ProcStats {
        role: role.to_string(),
        pid,
        cpu_ms: (stat.utime + stat.stime) * 1000 / tps,
        rss_kib: stat.rss * page_kib,
        pss_kib: pss_kib(pid).unwrap_or(0),
        threads: stat.num_threads,
    })
}

/// PSS from `/proc/PID/smaps_rollup`, KiB.
pub fn pss_kib(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_figures_match_proc() {
        let me = std::process::id() as i32;
        let s = proc_stats("self", me).unwrap();
        assert!(s.rss_kib > 0 && s.pss_kib > 0 && s.threads >= 1);
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let vmrss: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap();
        // The two reads are a moment apart: allow a little drift.
        assert!(s.rss_kib.abs_diff(vmrss) < 4096, "{} vs {vmrss}", s.rss_kib);
        assert!(proc_stats("gone", i32::MAX).is_none());
    }
}
