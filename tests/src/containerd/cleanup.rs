//! What a test leaves behind, and the cleanup when a private containerd is dropped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::host::{
    cgroup_mounts, cgroup_procs, is_socket, mounts_under, read_dir_paths, remove_cgroup, walk,
};
use super::{Containerd, RUNC_ROOT, STOP_TIMEOUT, tail};
use crate::{eventually, processes_mentioning};

/// What a test left behind in (or because of) its private containerd.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Leftovers {
    /// Processes whose command line mentions the private folder (shims, QEMU,
    /// daemons), other than containerd itself and its `ctr events`.
    pub processes: Vec<(i32, String)>,
    /// Processes still in the cgroups of the private namespace or of a
    /// container seen in it (a container's own processes).
    pub cgroup_processes: Vec<i32>,
    /// Mount points under the private folder.
    pub mounts: Vec<PathBuf>,
    /// Unix sockets under the private folder (other than containerd's own) and
    /// shim sockets in `/run/containerd/s` of containers seen in this containerd.
    pub sockets: Vec<PathBuf>,
    /// Containers containerd still knows (`namespace/id`).
    pub containers: Vec<String>,
    /// Tasks containerd still knows (`namespace/id`).
    pub tasks: Vec<String>,
    /// Active (not committed) snapshots (`namespace/key`).
    pub snapshots: Vec<String>,
    /// Task bundles and work folders of the v2 runtime, runc state folders.
    pub folders: Vec<PathBuf>,
    /// sandvm sandbox folders under `SANDVM_STATE_DIR`.
    pub sandboxes: Vec<PathBuf>,
}

impl Leftovers {
    /// Nothing is left.
    pub fn is_empty(&self) -> bool {
        *self == Leftovers::default()
    }
}

impl Containerd {
    /// What is left: see [`Leftovers`]. Asks containerd, while it runs, for
    /// its containers, tasks and active snapshots in every namespace.
    pub fn leftovers(&self) -> Leftovers {
        let mine: Vec<i32> = [&self.containerd, &self.events]
            .into_iter()
            .flatten()
            .map(|d| d.pid)
            .collect();
        let own_sockets = [self.address(), self.ttrpc_address(), self.debug_address()];
        let seen = self.containers_seen();
        let mut l = Leftovers {
            processes: processes_mentioning(&self.dir_prefix())
                .into_iter()
                .filter(|(p, _)| !mine.contains(p))
                .collect(),
            cgroup_processes: self.cgroup_processes(&seen),
            mounts: mounts_under(&self.dir),
            sockets: walk(&self.dir)
                .into_iter()
                .filter(|p| is_socket(p) && !own_sockets.contains(p))
                .collect(),
            sandboxes: read_dir_paths(&self.sandvm_state_dir()),
            ..Leftovers::default()
        };
        for (ns, id) in &seen {
            let s = self.shim_socket(ns, id);
            if s.exists() {
                l.sockets.push(s);
            }
        }
        for (ns, id) in &seen {
            for base in [
                self.dir.join("state/io.containerd.runtime.v2.task"),
                self.dir.join("root/io.containerd.runtime.v2.task"),
                PathBuf::from(RUNC_ROOT),
            ] {
                let p = base.join(ns).join(id);
                if p.exists() {
                    l.folders.push(p);
                }
            }
        }
        if self.containerd.is_some() {
            for ns in self.namespaces() {
                let q = |args: &[&str]| -> Vec<String> {
                    self.ctr_lines(&ns, args)
                        .into_iter()
                        .map(|s| format!("{ns}/{s}"))
                        .collect()
                };
                l.containers.extend(q(&["containers", "list", "--quiet"]));
                l.tasks.extend(q(&["tasks", "list", "--quiet"]));
                l.snapshots.extend(
                    q(&["snapshots", "list"])
                        .into_iter()
                        .filter(|s| s.split_whitespace().last() == Some("Active"))
                        .map(|s| s.split_whitespace().next().unwrap_or_default().to_string()),
                );
            }
        }
        l
    }

    /// Fail the test, listing them, unless nothing is left.
    pub fn assert_clean(&self) {
        let l = self.leftovers();
        assert!(
            l.is_empty(),
            "left behind by the test: {l:#?}\ncontainerd's log (last lines):\n{}",
            tail(&self.log(), 40)
        );
    }

    /// The cgroup folders of the private namespace and of every container seen
    /// (`<mount>/<namespace>` and `<mount>/<namespace>/<id>` in each hierarchy).
    fn cgroup_dirs(&self, seen: &BTreeSet<(String, String)>) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for m in cgroup_mounts() {
            let own = m.join(&self.namespace);
            if own.is_dir() {
                out.push(own);
            }
            for (ns, id) in seen {
                let p = m.join(ns).join(id);
                if ns != &self.namespace && p.is_dir() {
                    out.push(p);
                }
            }
        }
        out
    }

    /// The processes in [`Containerd::cgroup_dirs`], each once.
    fn cgroup_processes(&self, seen: &BTreeSet<(String, String)>) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .cgroup_dirs(seen)
            .iter()
            .flat_map(|d| cgroup_procs(d))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Delete every task and container while containerd runs (bounded).
    fn delete_all(&self) {
        for ns in self.namespaces() {
            for id in self.ctr_lines(&ns, &["tasks", "list", "--quiet"]) {
                self.ctr_lines(&ns, &["tasks", "delete", "--force", &id]);
            }
            for id in self.ctr_lines(&ns, &["containers", "list", "--quiet"]) {
                self.ctr_lines(&ns, &["containers", "delete", &id]);
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let seen = self.containers_seen();
        if self.containerd.is_some() {
            self.delete_all();
        }
        if let Some(d) = self.events.take() {
            d.stop();
        }
        if let Some(d) = self.containerd.take() {
            d.stop();
        }
        // Shims (their command line names the gRPC address), QEMU and daemons
        // under the folder, then whatever still runs in the containers' cgroups.
        let mut pids: Vec<i32> = processes_mentioning(&self.dir_prefix())
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let cgroups = self.cgroup_dirs(&seen);
        pids.extend(self.cgroup_processes(&seen));
        for p in &pids {
            let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
        }
        // Not our children: no exit to wait on, so a bounded wait for /proc.
        eventually(STOP_TIMEOUT, || {
            pids.iter().all(|p| !crate::process_alive(*p))
        });
        for d in cgroups.iter().rev() {
            remove_cgroup(d);
        }
        let mut mounts = mounts_under(&self.dir);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        for m in &mounts {
            if nix::mount::umount(m).is_err() {
                let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        for (ns, id) in &seen {
            let _ = std::fs::remove_file(self.shim_socket(ns, id));
            let _ = std::fs::remove_dir_all(Path::new(RUNC_ROOT).join(ns).join(id));
        }
        let _ = std::fs::remove_dir(Path::new(RUNC_ROOT).join(&self.namespace));
        // Never remove through a mount: a bind mount could reach host files.
        let left = mounts_under(&self.dir);
        if left.is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!(
                "containerd test folder {} kept: still mounted: {left:?}",
                self.dir.display()
            );
        }
    }
}
