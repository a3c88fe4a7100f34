//! Shared helpers for the end-to-end tests: locating QEMU, the guest and the
//! `sandvm` binary (a missing one fails with a message that says `make setup`
//! or `make guest`), a private state root per test, configs with absolute
//! paths, and the one leak check every test ends with.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod containerd;
pub mod cri;
pub mod oci;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The QEMU binary for an arch, or a failure that says `make setup`.
pub fn qemu(bin: &str) -> PathBuf {
    let p = PathBuf::from("/usr/bin").join(bin);
    assert!(p.exists(), "{} is missing: run `make setup`", p.display());
    p
}

/// A daemon `make setup` builds into tools/bin (virtiofsd, nydusd), or a failure that says so.
pub fn tool(name: &str) -> PathBuf {
    let p = repo().join("tools/bin").join(name);
    assert!(p.exists(), "{} is missing: run `make setup`", p.display());
    p
}

/// The test guest's assets, or a failure that says `make guest`.
pub struct Guest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub rootfs: PathBuf,
}

pub fn guest() -> Guest {
    let dir = repo().join("build/guest");
    let g = Guest {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initramfs.cpio.gz"),
        rootfs: dir.join("rootfs-dax.img"),
    };
    for p in [&g.kernel, &g.initrd, &g.rootfs] {
        assert!(
            p.exists(),
            "{} is missing: run `make setup` and `make guest`",
            p.display()
        );
    }
    g
}

/// The no-initrd guest kernel (every driver built in; `make guest` builds it
/// from Debian's kernel source, which `make setup` installs), or a failure
/// that says so.
pub fn noinitrd_kernel() -> PathBuf {
    let p = repo().join("build/guest/vmlinuz-noinitrd");
    assert!(
        p.exists(),
        "{} is missing: run `make setup` (the kernel source) and `make guest` (scripts/build-kernel.sh builds it)",
        p.display()
    );
    p
}

/// The `sandvm` binary built with these tests (same profile).
pub fn sandvm_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/sandvm
    let p = exe.parent().and_then(Path::parent).unwrap().join("sandvm");
    assert!(
        p.exists(),
        "{} is missing: run `make build` (make test builds it)",
        p.display()
    );
    p
}

/// A private state root under /tmp (short, so socket paths fit), removed on drop
/// after killing anything of this test that still runs.
pub struct Env {
    pub root: PathBuf,
}

impl Env {
    pub fn new(tag: &str) -> Env {
        let root = PathBuf::from(format!("/tmp/svt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        Env { root }
    }

    /// Run `sandvm --state-dir <root> ARGS`.
    pub fn sandvm(&self, args: &[&str]) -> Output {
        Command::new(sandvm_bin())
            .arg("--state-dir")
            .arg(&self.root)
            .args(args)
            .output()
            .unwrap()
    }

    /// Start `sandvm --state-dir <root> ARGS` as a child, its output piped;
    /// collect it with [`finish`].
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new(sandvm_bin())
            .arg("--state-dir")
            .arg(&self.root)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.sandvm(args);
        assert!(
            out.status.success(),
            "sandvm {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run a shell command in a sandbox's guest through `sandvm console` and
    /// return its output. Markers computed by the guest's shell frame the output,
    /// so an echo of the command line itself can never be taken for it.
    pub fn guest(&self, id: &str, cmd: &str) -> String {
        let n = 1000 + (std::process::id() % 1000);
        let send = format!("echo B-$(({n}+1))-; {cmd}; echo E-$(({n}+2))-");
        let (b, e) = (format!("B-{}-", n + 1), format!("E-{}-", n + 2));
        let pattern = format!("(?s){b}.*{e}");
        let out = self.ok(&[
            "console",
            id,
            "--send",
            &send,
            "--expect",
            &pattern,
            "--timeout",
            "60",
        ]);
        let start = out.find(&b).map(|i| i + b.len()).unwrap();
        let end = out[start..].find(&e).map(|i| i + start).unwrap();
        out[start..end].replace('\r', "").trim().to_string()
    }

    /// Write a config file into the root; `extra` lines are appended to [hypervisor.qemu].
    pub fn config(&self, name: &str, extra: &str) -> PathBuf {
        self.config_fs(name, "shared_fs = \"none\"\n", extra)
    }

    /// As [`Env::config`] with `shared_fs = "virtio-9p"` (served by QEMU, no daemon).
    pub fn config_9p(&self, name: &str, extra: &str) -> PathBuf {
        self.config_fs(name, "shared_fs = \"virtio-9p\"\n", extra)
    }

    /// The PCI devices with a qdev id of sandbox `id`'s QEMU, behind bridges
    /// too, from QMP `query-pci`: id → (slot, PCI device id).
    pub fn pci_devices(&self, id: &str) -> std::collections::BTreeMap<String, (u64, u64)> {
        fn walk(
            devs: &serde_json::Value,
            out: &mut std::collections::BTreeMap<String, (u64, u64)>,
        ) {
            for d in devs.as_array().into_iter().flatten() {
                if let Some(q) = d["qdev_id"].as_str().filter(|s| !s.is_empty()) {
                    let slot = d["slot"].as_u64().unwrap_or(u64::MAX);
                    let dev = d["id"]["device"].as_u64().unwrap_or(0);
                    out.insert(q.to_string(), (slot, dev));
                }
                if let Some(b) = d.get("pci_bridge") {
                    walk(&b["devices"], out);
                }
            }
        }
        let sock = self.root.join(id).join("qmp.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let buses = rt.block_on(async {
            let c = qmp::Client::connect(&sock).await.unwrap();
            c.query_pci().await.unwrap()
        });
        let mut out = std::collections::BTreeMap::new();
        for b in &buses {
            walk(&b["devices"], &mut out);
        }
        out
    }

    /// QEMU's command line of sandbox `id` (from /proc), arguments joined by spaces.
    pub fn qemu_cmdline(&self, id: &str) -> String {
        let cmd = std::fs::read(format!("/proc/{}/cmdline", self.qemu_pid(id))).unwrap();
        String::from_utf8_lossy(&cmd).replace('\0', " ")
    }

    /// As [`Env::config`] with a shared filesystem served by one of the
    /// project's daemons (`virtiofsd` or `nydusd`, from `make setup`).
    pub fn config_shared(&self, name: &str, daemon: &str, extra: &str) -> PathBuf {
        let kind = if daemon == "nydusd" {
            "virtio-fs-nydus"
        } else {
            "virtio-fs"
        };
        let fs = format!(
            "shared_fs = \"{kind}\"\nvirtio_fs_daemon = \"{}\"\n",
            tool(daemon).display()
        );
        self.config_fs(name, &fs, extra)
    }

    fn config_fs(&self, name: &str, fs: &str, extra: &str) -> PathBuf {
        let g = guest();
        let body = format!(
            "[hypervisor.qemu]\npath = \"{}\"\nkernel = \"{}\"\ninitrd = \"{}\"\n\
             default_vcpus = 1\ndefault_maxvcpus = 2\ndefault_memory = 256\ndefault_maxmemory = 1024\n\
             {fs}block_device_aio = \"threads\"\naccelerator = \"tcg\"\n{extra}\n",
            qemu("qemu-system-x86_64").display(),
            g.kernel.display(),
            g.initrd.display(),
        );
        let p = self.root.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    /// Wait (up to 180 s: TCG on a loaded 2-core host) until sandbox `id`'s
    /// guest has printed its ready line.
    pub fn wait_ready(&self, id: &str) {
        let log = self.root.join(id).join("console.log");
        let ready = eventually(Duration::from_secs(180), || {
            std::fs::read_to_string(&log).is_ok_and(|s| s.contains(READY))
        });
        assert!(
            ready,
            "guest of {id} never printed {READY}; console.log:\n{}\nqemu.log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            std::fs::read_to_string(self.root.join(id).join("qemu.log")).unwrap_or_default()
        );
    }

    /// Create sandbox `id` from `cfg` and start it through the CLI, then wait
    /// for its guest's ready line.
    pub fn boot(&self, cfg: &Path, id: &str) {
        let cfg = cfg.to_str().unwrap();
        assert_eq!(self.ok(&["create", "--config", cfg, "--id", id]).trim(), id);
        self.ok(&["start", id]);
        self.wait_ready(id);
    }

    /// The pid of sandbox `id`'s QEMU, from `sandvm status`.
    pub fn qemu_pid(&self, id: &str) -> i32 {
        json(&self.ok(&["status", id, "--json"]))["pid"]
            .as_i64()
            .unwrap() as i32
    }

    /// The sandbox folders left under the root.
    pub fn sandboxes(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The leak check: no process whose command line mentions this root (no
    /// QEMU, supervisor, virtiofsd or nydusd), no sandbox folder and no socket under it.
    pub fn assert_clean(&self) {
        let procs = processes_mentioning(&self.root);
        let daemons: Vec<_> = procs
            .iter()
            .filter(|(_, c)| c.contains("virtiofsd") || c.contains("nydusd"))
            .collect();
        assert!(
            daemons.is_empty(),
            "shared-fs daemons left behind: {daemons:?}"
        );
        assert!(procs.is_empty(), "processes left behind: {procs:?}");
        assert!(
            self.sandboxes().is_empty(),
            "state folders left: {:?}",
            self.sandboxes()
        );
        let sockets: Vec<_> = walk(&self.root)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "sock"))
            .collect();
        assert!(sockets.is_empty(), "sockets left: {sockets:?}");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for (pid, _) in processes_mentioning(&self.root) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Live (non-zombie) processes whose command line contains `needle`.
pub fn processes_mentioning(needle: &Path) -> Vec<(i32, String)> {
    let needle = needle.to_string_lossy().into_owned();
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
            .unwrap_or(true);
        if cmd.contains(&needle) && !zombie {
            out.push((pid, cmd));
        }
    }
    out
}

/// The line the test guest prints when it is ready.
pub const READY: &str = "SANDVM-GUEST-READY";

/// Whether `pid` runs (and is not a zombie).
pub fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rfind(')').is_some_and(|i| !s[i + 2..].starts_with('Z')))
        .unwrap_or(false)
}

/// A field of /proc/PID/status in KiB (e.g. `VmRSS`), for `self` or a pid.
pub fn status_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Open fds of this process and what each points to (for leak checks).
pub fn open_fds() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let target = std::fs::read_link(e.path())
                        .map(|t| t.display().to_string())
                        .unwrap_or_default();
                    format!("{} -> {target}", e.file_name().to_string_lossy())
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Wait for a child from [`Env::spawn`] and return its output, at most
/// 180 s: a command that hangs is killed and fails the test (`what` names it).
pub fn finish(child: std::process::Child, what: &str) -> Output {
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(180)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{what} hung: no exit after 180 s");
        }
    }
}

/// A template folder on tmpfs, removed on drop.
pub struct TemplateDir(pub PathBuf);

impl TemplateDir {
    pub fn new(tag: &str) -> TemplateDir {
        let p = PathBuf::from(format!("/dev/shm/svt-tmpl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TemplateDir(p)
    }
}

impl Drop for TemplateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A folder outside the state root (for dumps), removed on drop.
pub struct DumpDir(pub PathBuf);

impl DumpDir {
    pub fn new(tag: &str) -> DumpDir {
        DumpDir(PathBuf::from(format!(
            "/tmp/svt-{tag}-dumps-{}",
            std::process::id()
        )))
    }
}

impl Drop for DumpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A config from [`Env::config`] with VM templating on, its template in `tp`.
pub fn template_config(env: &Env, name: &str, tp: &Path, extra: &str) -> PathBuf {
    env.config(
        name,
        &format!(
            "{extra}\n[factory]\nenable_template = true\ntemplate_path = \"{}\"\n",
            tp.display()
        ),
    )
}

/// Parse a JSON stdout.
pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Wait until `f` holds, checking on each tick, at most `timeout`.
/// For conditions that have no event to wait on (another process's state).
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}
