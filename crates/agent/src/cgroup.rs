//! One cgroup v2 per container under `/sys/fs/cgroup/sandvm/`: its processes
//! (ListProcesses, SignalProcess all), its numbers (StatsContainer), freezing
//! (Pause/Resume) and killing everything at removal (cgroup.kill).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{MsFlags, mount};
use tokio::time::{Instant, sleep};

use crate::spec::Limits;

/// Where cgroup v2 is mounted in the guest.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The parent of the containers' cgroups.
pub const PARENT: &str = "sandvm";

/// Controllers turned on for the containers (those the kernel has).
const CONTROLLERS: [&str; 4] = ["cpu", "memory", "pids", "io"];

/// How long freezing or emptying a cgroup may take.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Step between looks at `cgroup.events` while waiting for a state.
const SETTLE_STEP: Duration = Duration::from_millis(10);

/// Mounts cgroup2 if needed, enables the controllers, makes the parent.
/// Blocking (startup only).
pub fn init() -> io::Result<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    if !root.join("cgroup.controllers").exists() {
        std::fs::create_dir_all(root)?;
        let none: Option<&str> = None;
        mount(
            Some("cgroup2"),
            root,
            Some("cgroup2"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            none,
        )?;
    }
    let parent = root.join(PARENT);
    std::fs::create_dir_all(&parent)?;
    let have = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    for c in CONTROLLERS
        .iter()
        .filter(|c| have.split_whitespace().any(|h| h == **c))
    {
        for dir in [root, parent.as_path()] {
            if let Err(e) = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}")) {
                tracing::warn!(controller = c, dir = %dir.display(), error = %e, "cannot enable cgroup controller");
            }
        }
    }
    Ok(parent)
}

/// Numbers of one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// cpu.stat usage_usec, user_usec, system_usec.
    pub cpu: (u64, u64, u64),
    /// memory.current.
    pub memory: u64,
    /// memory.max (0 = max).
    pub memory_limit: u64,
    /// memory.stat anon and file.
    pub anon_file: (u64, u64),
    /// pids.current and pids.max (0 = max).
    pub pids: (u64, u64),
}

/// A container's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    /// Its directory.
    pub path: PathBuf,
}

impl Cgroup {
    /// Makes `<parent>/<cid>` and writes the limits.
    pub async fn create(parent: &Path, cid: &str, limits: &Limits) -> io::Result<Self> {
        let path = parent.join(cid);
        tokio::fs::create_dir(&path).await?;
        let cg = Self { path };
        let mut writes = vec![];
        if let Some(m) = limits.memory {
            writes.push(("memory.max", m.to_string()));
        }
        if let Some(p) = limits.pids {
            writes.push(("pids.max", p.to_string()));
        }
        if let Some((q, p)) = limits.cpu {
            writes.push(("cpu.max", format!("{q} {p}")));
        }
        for (file, v) in writes {
            if let Err(e) = tokio::fs::write(cg.path.join(file), &v).await {
                tracing::warn!(cid, file, error = %e, "cannot set cgroup limit");
            }
        }
        Ok(cg)
    }

    /// Every pid in the cgroup and below.
    pub async fn pids(&self) -> Vec<i32> {
        let mut out = vec![];
        let mut dirs = vec![self.path.clone()];
        while let Some(d) = dirs.pop() {
            if let Ok(text) = tokio::fs::read_to_string(d.join("cgroup.procs")).await {
                out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
            if let Ok(mut rd) = tokio::fs::read_dir(&d).await {
                while let Ok(Some(e)) = rd.next_entry().await {
                    if e.file_type().await.map(|t| t.is_dir()).unwrap_or(false) {
                        dirs.push(e.path());
                    }
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// Freezes or thaws, waiting until the kernel says it is done.
    pub async fn freeze(&self, on: bool) -> io::Result<()> {
        tokio::fs::write(self.path.join("cgroup.freeze"), if on { "1" } else { "0" }).await?;
        let want = if on { "frozen 1" } else { "frozen 0" };
        self.wait_event(want).await
    }

    /// Asked to be frozen (a process joining it now would stop at once).
    pub async fn frozen(&self) -> bool {
        let f = tokio::fs::read_to_string(self.path.join("cgroup.freeze")).await;
        f.map(|v| v.trim() == "1").unwrap_or(false)
    }

    /// Kills every process (cgroup.kill).
    pub async fn kill(&self) -> io::Result<()> {
        tokio::fs::write(self.path.join("cgroup.kill"), "1").await
    }

    /// Waits until `cgroup.events` has the line `want`.
    async fn wait_event(&self, want: &str) -> io::Result<()> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let ev = tokio::fs::read_to_string(self.path.join("cgroup.events")).await?;
            if ev.lines().any(|l| l.trim() == want) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("cgroup {} never reached {want:?}", self.path.display()),
                ));
            }
            sleep(SETTLE_STEP).await;
        }
    }

    /// Kills what is left, waits until the cgroup is empty and removes it.
    pub async fn remove(&self) -> io::Result<()> {
        if !self.path.exists() {
            return Ok(());
        }
        let _ = self.freeze(false).await;
        self.kill().await?;
        self.wait_event("populated 0").await?;
        tokio::fs::remove_dir(&self.path).await
    }

    /// Reads the numbers.
    pub async fn stats(&self) -> Stats {
        let read = |f: &'static str| {
            let p = self.path.join(f);
            async move { tokio::fs::read_to_string(p).await.unwrap_or_default() }
        };
        let cpu = read("cpu.stat").await;
        let mem_stat = read("memory.stat").await;
        Stats {
            cpu: (
                kv(&cpu, "usage_usec"),
                kv(&cpu, "user_usec"),
                kv(&cpu, "system_usec"),
            ),
            memory: num(&read("memory.current").await),
            memory_limit: num(&read("memory.max").await),
            anon_file: (kv(&mem_stat, "anon"), kv(&mem_stat, "file")),
            pids: (
                num(&read("pids.current").await),
                num(&read("pids.max").await),
            ),
        }
    }
}

/// `key value` lines (cpu.stat, memory.stat).
fn kv(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.split_once(' ')
                .filter(|(k, _)| *k == key)
                .and_then(|(_, v)| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A single number; `max` and junk are 0.
fn num(text: &str) -> u64 {
    text.trim().parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgroup_files() {
        let cpu = "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\nnr_periods 0\n";
        assert_eq!(
            (
                kv(cpu, "usage_usec"),
                kv(cpu, "system_usec"),
                kv(cpu, "nope")
            ),
            (1234, 234, 0)
        );
        assert_eq!((num("4096\n"), num("max\n")), (4096, 0));
    }
}
