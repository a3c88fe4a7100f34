//! Issue 6, memory backends and a locked-down QEMU, on real boots of the
//! test guest (TCG): hugepages, a file memory backend, the seccomp sandbox
//! with pvpanic, QEMU under a non-root uid, and no fd leaking into QEMU.
//! Each boot reaches SANDVM-GUEST-READY and ends with the leak check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sandvm_tests::*;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn boot(env: &Env, cfg: &Path, id: &str) -> i32 {
    env.boot(cfg, id);
    env.qemu_pid(id)
}

/// A field of /proc/<pid>/status, such as `Seccomp` or `Uid`.
fn status_field(pid: i32, field: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/meminfo"))
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";
const HUGEPAGES_DIR: &str = "/dev/hugepages";

/// Reserves 2 MiB hugepages and makes sure hugetlbfs is mounted at
/// /dev/hugepages; puts both back as they were on drop.
struct Hugepages {
    before: String,
    mounted_by_us: bool,
    created_dir: bool,
}

impl Hugepages {
    fn reserve(pages: u64) -> Hugepages {
        assert_eq!(
            meminfo("Hugepagesize"),
            2048,
            "the test expects 2 MiB hugepages"
        );
        let before = std::fs::read_to_string(NR_HUGEPAGES).unwrap();
        let mut h = Hugepages {
            before: before.clone(),
            mounted_by_us: false,
            created_dir: false,
        };
        let want = before.trim().parse::<u64>().unwrap() + pages;
        std::fs::write(NR_HUGEPAGES, want.to_string()).unwrap();
        let got = meminfo("HugePages_Free");
        assert!(
            got >= pages,
            "asked for {pages} more hugepages, {got} free (memory fragmented?)"
        );
        let mounted = std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(HUGEPAGES_DIR) && l.contains("hugetlbfs"));
        if !mounted {
            let p = Path::new(HUGEPAGES_DIR);
            if !p.exists() {
                std::fs::create_dir(p).unwrap();
                h.created_dir = true;
            }
            assert!(p.is_dir(), "{HUGEPAGES_DIR} exists and is not a folder");
            nix::mount::mount(
                Some("hugetlbfs"),
                p,
                Some("hugetlbfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .unwrap();
            h.mounted_by_us = true;
        }
        h
    }
}

impl Drop for Hugepages {
    fn drop(&mut self) {
        if self.mounted_by_us {
            let _ = nix::mount::umount(HUGEPAGES_DIR);
        }
        if self.created_dir {
            let _ = std::fs::remove_dir(HUGEPAGES_DIR);
        }
        let _ = std::fs::write(NR_HUGEPAGES, self.before.trim());
    }
}

#[test]
fn hugepages_back_guest_memory() {
    let env = Env::new("huge");
    // 256 MiB of guest memory is 128 pages; a few more for slack.
    let h = Hugepages::reserve(136);
    let free_before = meminfo("HugePages_Free");
    let cfg = env.config("h.toml", "enable_hugepages = true\n");
    let pid = boot(&env, &cfg, "h1");
    // Preallocated: QEMU holds all 128 pages while it runs.
    let used = free_before - meminfo("HugePages_Free");
    assert!(used >= 128, "QEMU uses {used} hugepages, expected 128");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(
        maps.contains(HUGEPAGES_DIR),
        "no mapping under {HUGEPAGES_DIR}"
    );
    assert_eq!(env.guest("h1", "echo $((6*7))"), "42");
    env.ok(&["stop", "h1"]);
    env.assert_clean();
    drop(h);
}

#[test]
fn file_mem_backend_maps_guest_memory_from_that_folder() {
    let env = Env::new("filemem");
    let dir = env.root.join("mem");
    std::fs::create_dir(&dir).unwrap();
    let cfg = env.config(
        "f.toml",
        &format!("file_mem_backend = \"{}\"\n", dir.display()),
    );
    let pid = boot(&env, &cfg, "f1");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps
        .lines()
        .find(|l| l.contains(dir.to_str().unwrap()))
        .unwrap_or_else(|| panic!("guest memory is not mapped from {}", dir.display()));
    // A shared mapping (share=on): the permissions column ends in 's'.
    let perms = line.split_whitespace().nth(1).unwrap();
    assert!(perms.ends_with('s'), "not a shared mapping: {line}");
    assert_eq!(env.guest("f1", "echo ok"), "ok");
    env.ok(&["stop", "f1"]);
    // QEMU unlinks its backing file at once: nothing is left in the folder.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    std::fs::remove_dir(&dir).unwrap();
    env.assert_clean();
}

#[tokio::test(flavor = "current_thread")]
async fn seccomp_sandbox_is_on_and_pvpanic_is_present() {
    let env = Env::new("seccomp");
    let dumps = env.root.join("dumps");
    std::fs::create_dir(&dumps).unwrap();
    let cfg = env.config(
        "s.toml",
        &format!(
            "seccompsandbox = \"on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny\"\n\
             guest_memory_dump_path = \"{}\"\n",
            dumps.display()
        ),
    );
    let pid = boot(&env, &cfg, "s1");
    assert_eq!(
        status_field(pid, "Seccomp"),
        "2",
        "QEMU is not in seccomp filter mode"
    );
    {
        let c = qmp::Client::connect(&env.root.join("s1/qmp.sock"))
            .await
            .unwrap();
        let names: Vec<String> = c
            .qom_list("/machine/peripheral")
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert!(names.iter().any(|n| n == "pvpanic0"), "{names:?}");
        let t = c
            .qom_get("/machine/peripheral/pvpanic0", "type")
            .await
            .unwrap();
        assert_eq!(t, "pvpanic", "{t}");
    }
    assert_eq!(env.guest("s1", "echo $((2+3))"), "5");
    env.ok(&["stop", "s1"]);
    std::fs::remove_dir_all(&dumps).unwrap();
    env.assert_clean();
}

#[test]
fn qemu_runs_as_a_non_root_uid_and_cannot_touch_the_state() {
    let env = Env::new("uid");
    let cfg = env.config(
        "u.toml",
        "qemu_uid = 65534\nqemu_gid = 65534\nqemu_groups = []\n",
    );
    let pid = boot(&env, &cfg, "u1");
    let uid: Vec<String> = status_field(pid, "Uid")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(uid, ["65534"; 4], "real, effective, saved and fs uid");
    let gid: Vec<String> = status_field(pid, "Gid")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(gid, ["65534"; 4]);
    assert_eq!(status_field(pid, "Groups"), "");
    let dir = env.root.join("u1");
    let m = std::fs::metadata(&dir).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (0, 65534, 0o1770),
        "the folder stays root's, sticky, open to QEMU's group"
    );
    // As QEMU's identity: state.json can be neither removed nor replaced, and
    // a symlink planted at the save's temporary name does not redirect a save.
    let as_qemu = |cmd: &str| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sh",
                "-c",
                cmd,
            ])
            .current_dir(&dir)
            .status()
            .unwrap()
            .success()
    };
    let state = std::fs::read(dir.join("state.json")).unwrap();
    assert!(
        !as_qemu("rm -f state.json"),
        "QEMU's uid removed state.json"
    );
    assert!(
        !as_qemu("echo x > n && mv -f n state.json"),
        "QEMU's uid replaced state.json"
    );
    assert_eq!(std::fs::read(dir.join("state.json")).unwrap(), state);
    let victim = env.root.join("victim");
    std::fs::write(&victim, b"untouched").unwrap();
    assert!(as_qemu(&format!(
        "ln -s {} .state.json.tmp",
        victim.display()
    )));
    env.ok(&["pause", "u1"]);
    env.ok(&["resume", "u1"]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
    std::fs::remove_file(&victim).unwrap();
    for f in [
        "qmp.sock",
        "console.sock",
        "console.log",
        "qemu.log",
        "qemu.pid",
    ] {
        let m = std::fs::metadata(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(m.uid(), 65534, "{f} is not QEMU's");
    }
    assert_eq!(env.guest("u1", "echo $((3*3))"), "9");
    env.ok(&["stop", "u1"]);
    env.assert_clean();
}

/// An fd the test process holds without close-on-exec never reaches QEMU.
#[tokio::test(flavor = "current_thread")]
async fn qemu_inherits_no_fd_it_was_not_given() {
    use runtime::{CreateOptions, Hypervisor};
    let env = Env::new("fds");
    let marker: PathBuf = env.root.join("marker-not-for-qemu");
    std::fs::write(&marker, b"x").unwrap();
    let c = std::ffi::CString::new(marker.to_str().unwrap()).unwrap();
    // SAFETY: open(2) on a NUL-terminated path; deliberately without O_CLOEXEC.
    #[allow(unsafe_code)]
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0);
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
    assert_eq!(
        flags & libc::FD_CLOEXEC,
        0,
        "the marker must be inheritable"
    );
    let ours = open_fds();
    assert!(
        ours.iter().any(|l| l.contains("marker-not-for-qemu")),
        "{ours:?}"
    );

    let cfg = runtime::config::load(&env.config("fd.toml", ""))
        .unwrap()
        .config;
    let pid;
    {
        let q = runtime::Qemu::new(runtime::StateRoot::new(&env.root), cfg);
        q.create_vm("fd1", CreateOptions::default()).await.unwrap();
        q.start_vm(Duration::from_secs(60)).await.unwrap();
        pid = q.get_pids()[0];
    }
    let mut theirs = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let n: i32 = e.file_name().to_string_lossy().parse().unwrap();
        let t = std::fs::read_link(e.path())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        theirs.push((n, t));
    }
    theirs.sort();
    assert!(
        !theirs
            .iter()
            .any(|(_, t)| t.contains("marker-not-for-qemu")),
        "QEMU inherited the marker: {theirs:?}"
    );
    // What we pass: stdin /dev/null, stdout and stderr the log, the QMP listener.
    let get = |n: i32| {
        theirs
            .iter()
            .find(|(m, _)| *m == n)
            .map(|(_, t)| t.clone())
            .unwrap_or_default()
    };
    assert_eq!(get(0), "/dev/null");
    assert!(
        get(1).ends_with("/fd1/qemu.log") && get(2).ends_with("/fd1/qemu.log"),
        "{theirs:?}"
    );
    assert!(get(3).starts_with("socket:"), "{theirs:?}");
    // Nothing else of the test process's open files, beyond what QEMU opens itself.
    for (n, t) in &theirs {
        if *n > 3 && t.starts_with('/') && !t.starts_with("/dev/") {
            assert!(
                !ours.iter().any(|l| l.ends_with(&format!("-> {t}"))),
                "QEMU fd {n} -> {t} is one of ours: {ours:?}"
            );
        }
    }
    env.wait_ready("fd1");
    // SAFETY: closing the fd this test opened.
    #[allow(unsafe_code)]
    unsafe {
        libc::close(fd);
    }
    env.ok(&["stop", "fd1"]);
    env.assert_clean();
}
