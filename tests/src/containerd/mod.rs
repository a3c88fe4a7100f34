//! A private containerd per test.
//!
//! [`Containerd::start`] runs Debian's `containerd` with a generated config
//! (version 2) whose root, state, gRPC, ttrpc and debug sockets all live in a
//! short private folder under `/tmp` (`/tmp/sctd-<pid>-<n>`), with a namespace of
//! its own (`sv<pid>-<n>`) so that runc's state (`/run/containerd/runc/<ns>`) and
//! the cgroups (`/<ns>/<id>`) of parallel tests never meet. The CRI plugin is off
//! unless [`Options::cri`] asks for it; [`Options::cri_runtimes`] adds runtime
//! handlers (sandvm's: [`CriRuntime::sandvm`]). Unneeded plugins are disabled;
//! the snapshotter is overlayfs.
//!
//! `ctr` runs through [`Containerd::ctr`], which always passes `--address` and
//! the namespace, with a deadline. A `ctr events` subscriber runs beside
//! containerd for the whole test: [`Containerd::events`] gives what containerd
//! published (task create/start/exit/delete...), and the container ids it saw let
//! the cleanup and the leak check find every shim socket.
//!
//! Dropping a [`Containerd`] deletes its tasks and containers, stops containerd,
//! kills any `containerd-shim*` (and any other process) whose command line
//! mentions the private folder and every process left in the namespace's
//! cgroups, unmounts everything under the folder (from `/proc/self/mountinfo`),
//! removes the shim sockets and runc state of its containers, and removes the
//! folder. [`Containerd::leftovers`] lists what is left for a test to assert on
//! ([`Containerd::assert_clean`]).
//!
//! The system containerd (`/run/containerd/containerd.sock`) is never used.
//! Shims are found on containerd's PATH: [`Options::path`] puts the caller's
//! folders first (where `containerd-shim-sandvm-v2` is built).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::oci::{TEST_IMAGE, test_image_archive};

mod cleanup;
mod config;
mod host;

pub use cleanup::Leftovers;
pub use config::{CriRuntime, Options};
pub use host::mounts_under;

/// containerd's runtime name for runc, its default.
pub const RUNC: &str = "io.containerd.runc.v2";

/// sandvm's runtime name: containerd runs `containerd-shim-sandvm-v2` from its PATH.
pub const SANDVM: &str = "io.containerd.sandvm.v2";

/// How long containerd may take to boot (it takes well under a second).
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long containerd, `ctr events` or a killed process may take to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The default deadline of one `ctr` command: long enough for a VM booting
/// under TCG on a loaded 2-core host. A deadline, never a timing assertion.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(300);

/// The deadline of each `ctr` call the cleanup makes.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the shims of every containerd put their sockets (containerd 1.6 fixes
/// it): `<this>/<sha256 of "<grpc address>/<namespace>/<container id>">`.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

/// runc's state root under the runc shim (its default; per namespace below it).
const RUNC_ROOT: &str = "/run/containerd/runc";

/// The folders containerd's PATH holds after the caller's.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One event containerd published, as `ctr events` printed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The namespace it happened in.
    pub namespace: String,
    /// Its topic, e.g. `/tasks/exit`.
    pub topic: String,
    /// Its body, as JSON.
    pub body: serde_json::Value,
}

/// A child process with a thread waiting for its exit.
struct Daemon {
    pid: i32,
    exited: mpsc::Receiver<ExitStatus>,
}

impl Daemon {
    fn new(mut child: Child) -> Daemon {
        let pid = child.id() as i32;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = tx.send(status);
            }
        });
        Daemon { pid, exited: rx }
    }

    /// TERM, then KILL after [`STOP_TIMEOUT`]; returns how it exited.
    fn stop(&self) -> Option<ExitStatus> {
        if let Ok(s) = self.exited.try_recv() {
            return Some(s);
        }
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGTERM);
        if let Ok(s) = self.exited.recv_timeout(STOP_TIMEOUT) {
            return Some(s);
        }
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        self.exited.recv_timeout(STOP_TIMEOUT).ok()
    }
}

/// A running private containerd; see the module's documentation.
pub struct Containerd {
    dir: PathBuf,
    namespace: String,
    opts: Options,
    containerd: Option<Daemon>,
    events: Option<Daemon>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Containerd {
    /// Start a private containerd (runc only, no CRI) and wait until it serves.
    pub fn start_default() -> Containerd {
        Containerd::start(Options::default())
    }

    /// Start a private containerd as `opts` says and wait until it serves
    /// (its "successfully booted" log line) and its event stream is subscribed.
    /// A missing containerd, ctr or runc fails with a message that says `make setup`.
    pub fn start(opts: Options) -> Containerd {
        for bin in ["containerd", "ctr", "runc", "containerd-shim-runc-v2"] {
            system_bin(bin);
        }
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let dir = PathBuf::from(format!("/tmp/sctd-{pid}-{n}"));
        // A folder left by an earlier process of the same pid: never remove
        // through a mount.
        let stale = mounts_under(&dir);
        assert!(
            stale.is_empty(),
            "{} is still mounted: {stale:?}",
            dir.display()
        );
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut cd = Containerd {
            dir,
            namespace: format!("sv{pid}-{n}"),
            opts,
            containerd: None,
            events: None,
        };
        for s in [cd.address(), cd.ttrpc_address(), cd.debug_address()] {
            assert!(
                s.as_os_str().len() <= 107,
                "socket path {} is longer than 107 bytes",
                s.display()
            );
        }
        std::fs::write(cd.config_path(), cd.config_toml()).unwrap();
        std::fs::create_dir_all(cd.cni_conf_dir()).unwrap();
        cd.launch();
        cd
    }

    /// The private folder: config, log, root, state and sockets.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// containerd's gRPC socket: what `ctr --address` and a CRI client use.
    pub fn address(&self) -> PathBuf {
        self.dir.join("c.sock")
    }

    /// containerd's ttrpc socket (shims publish events on it).
    pub fn ttrpc_address(&self) -> PathBuf {
        self.dir.join("t.sock")
    }

    /// containerd's debug socket.
    pub fn debug_address(&self) -> PathBuf {
        self.dir.join("d.sock")
    }

    /// The generated config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// The namespace [`Containerd::ctr`] uses, private to this containerd.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `SANDVM_STATE_DIR` as containerd's shims see it.
    pub fn sandvm_state_dir(&self) -> PathBuf {
        self.opts
            .env
            .iter()
            .find(|(k, _)| k == "SANDVM_STATE_DIR")
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_else(|| self.dir.join("sv"))
    }

    /// containerd's pid, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.containerd.as_ref().map(|d| d.pid)
    }

    /// containerd's log so far (its stderr, shims' logs included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// Spawn containerd and `ctr events`, and wait until both are ready.
    fn launch(&mut self) {
        let mut cmd = Command::new(system_bin("containerd"));
        cmd.arg("--config")
            .arg(self.config_path())
            .env("PATH", self.path_env())
            .env("SANDVM_STATE_DIR", self.sandvm_state_dir())
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("cannot spawn containerd");
        let stderr = child.stderr.take().expect("containerd's stderr is piped");
        let (tx, rx) = mpsc::channel();
        copy_lines(stderr, self.dir.join("containerd.log"), move |line| {
            if line.contains("containerd successfully booted") {
                let _ = tx.send(());
            }
        });
        self.containerd = Some(Daemon::new(child));
        if rx.recv_timeout(BOOT_TIMEOUT).is_err() {
            panic!(
                "containerd did not boot within {BOOT_TIMEOUT:?} (it exited or hung); its log:\n{}",
                self.log()
            );
        }
        self.subscribe_events();
    }

    /// Start `ctr events` (all namespaces) into `events.log`, and wait until it
    /// is subscribed: it has printed the creation of the private namespace, or
    /// the update of a label this sets on it (bounded: a label is set again every 200 ms, up to 30 s).
    fn subscribe_events(&mut self) {
        let mut child = Command::new(system_bin("ctr"))
            .arg("--address")
            .arg(self.address())
            .arg("events")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot spawn ctr events");
        let stdout = child.stdout.take().expect("ctr events' stdout is piped");
        let (tx, rx) = mpsc::channel();
        let ns = self.namespace.clone();
        copy_lines(stdout, self.dir.join("events.log"), move |line| {
            // ctr publishes namespace events in its own namespace ("default").
            let ours = parse_event(line)
                .is_some_and(|e| e.topic.starts_with("/namespaces/") && e.body["name"] == ns);
            if ours {
                let _ = tx.send(());
            }
        });
        self.events = Some(Daemon::new(child));
        let end = Instant::now() + Duration::from_secs(30);
        let mut i = 0;
        loop {
            let verb = if i == 0 { "create" } else { "label" };
            let mut args = vec!["namespaces", verb, &self.namespace];
            let label = format!("sandvm.test/subscribed={i}");
            if i > 0 {
                args.push(&label);
            }
            let out = self.ctr_in("", &args, CLEANUP_TIMEOUT);
            // A restarted containerd already has the namespace.
            if i == 0 && !out.status.success() {
                i += 1;
                continue;
            }
            if rx.recv_timeout(Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < end,
                "ctr events never saw an event of namespace {}",
                self.namespace
            );
            i += 1;
        }
    }

    /// Stop containerd (TERM, then KILL) and start it again with the same config
    /// and folder: running tasks and their shims stay.
    pub fn restart(&mut self) {
        if let Some(d) = self.events.take() {
            d.stop();
        }
        if let Some(d) = self.containerd.take() {
            d.stop();
        }
        self.launch();
    }

    /// A `ctr` command with `--address` and this containerd's namespace, for
    /// callers that need stdin, a pty or a child (see [`Containerd::ctr`]).
    pub fn ctr_command(&self) -> Command {
        self.ctr_command_in(&self.namespace)
    }

    /// As [`Containerd::ctr_command`] in another namespace (`k8s.io` for CRI).
    pub fn ctr_command_in(&self, namespace: &str) -> Command {
        let mut c = Command::new(system_bin("ctr"));
        c.arg("--address").arg(self.address());
        if !namespace.is_empty() {
            c.arg("--namespace").arg(namespace);
        }
        c.stdin(Stdio::null());
        c
    }

    /// Run `ctr ARGS` in this containerd's namespace and return its output;
    /// one that runs past [`CTR_TIMEOUT`] is killed and fails the test.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_in(&self.namespace, args, CTR_TIMEOUT)
    }

    /// Run `ctr ARGS` and require success; returns its stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed ({}):\nstdout: {}\nstderr: {}\ncontainerd's log (last lines):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 40)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run `ctr ARGS` in `namespace` ("" for none) with a deadline; one that
    /// cannot run or hangs fails the test.
    pub fn ctr_in(&self, namespace: &str, args: &[&str], timeout: Duration) -> Output {
        self.try_ctr_in(namespace, args, timeout)
            .unwrap_or_else(|e| {
                panic!(
                    "{e}\ncontainerd's log (last lines):\n{}",
                    tail(&self.log(), 40)
                )
            })
    }

    /// As [`Containerd::ctr_in`], with an error instead of a panic (for the
    /// cleanup, which must not panic while a failed test unwinds).
    fn try_ctr_in(
        &self,
        namespace: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<Output, String> {
        let child = self
            .ctr_command_in(namespace)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot spawn ctr: {e}"))?;
        wait_output(child, timeout, &format!("ctr {args:?}"))
    }

    /// The stdout lines of `ctr ARGS` in `namespace`, trimmed, empty ones left
    /// out; none when `ctr` fails (containerd stopped, a hang). For the cleanup.
    fn ctr_lines(&self, namespace: &str, args: &[&str]) -> Vec<String> {
        self.try_ctr_in(namespace, args, CLEANUP_TIMEOUT)
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Import an OCI or Docker image archive into this containerd's namespace;
    /// returns `ctr image import`'s output.
    pub fn import(&self, archive: &Path) -> String {
        self.import_in(&self.namespace, archive)
    }

    /// As [`Containerd::import`] into another namespace (`k8s.io` for CRI).
    pub fn import_in(&self, namespace: &str, archive: &Path) -> String {
        let a = archive.to_string_lossy();
        let out = self.ctr_in(namespace, &["images", "import", &a], CTR_TIMEOUT);
        assert!(
            out.status.success(),
            "ctr images import {a} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Build (when needed) and import the busybox test image; returns its name,
    /// [`TEST_IMAGE`], after checking that containerd lists it.
    pub fn import_test_image(&self) -> &'static str {
        self.import(&test_image_archive());
        let names = self.ctr_ok(&["images", "list", "--quiet"]);
        assert!(
            names.lines().any(|l| l.trim() == TEST_IMAGE),
            "{TEST_IMAGE} is not listed after the import: {names}"
        );
        TEST_IMAGE
    }

    /// Every event containerd has published since it started (all namespaces).
    pub fn events(&self) -> Vec<Event> {
        std::fs::read_to_string(self.dir.join("events.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(parse_event)
            .collect()
    }

    /// Every (namespace, container id) containerd has created.
    pub fn containers_seen(&self) -> BTreeSet<(String, String)> {
        self.events()
            .into_iter()
            .filter(|e| e.topic == "/containers/create")
            .filter_map(|e| Some((e.namespace, e.body.get("id")?.as_str()?.to_string())))
            .collect()
    }

    /// The socket a shim of this containerd listens on for container `id` in
    /// `namespace` (containerd 1.6 puts it in `/run/containerd/s`).
    pub fn shim_socket(&self, namespace: &str, id: &str) -> PathBuf {
        let key = format!("{}/{namespace}/{id}", self.address().display());
        PathBuf::from(SHIM_SOCKET_DIR).join(sha256_hex(key.as_bytes()))
    }

    /// The namespaces containerd knows.
    fn namespaces(&self) -> Vec<String> {
        self.ctr_lines("", &["namespaces", "list", "--quiet"])
    }

    /// This folder as a prefix of paths in command lines: with its trailing
    /// `/`, so that `/tmp/sctd-1-1` never matches `/tmp/sctd-1-10`.
    fn dir_prefix(&self) -> PathBuf {
        PathBuf::from(format!("{}/", self.dir.display()))
    }
}

/// A system binary containerd's tests need, or a failure that says `make setup`.
pub fn system_bin(name: &str) -> PathBuf {
    SYSTEM_PATH
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} is missing: run `make setup` (it installs containerd, runc and the CNI plugins)"))
}

/// Copy `from` line by line into the file `to` (appending), calling `on_line`
/// with each line, on a thread of its own until EOF.
fn copy_lines(
    from: impl std::io::Read + Send + 'static,
    to: PathBuf,
    mut on_line: impl FnMut(&str) + Send + 'static,
) {
    std::thread::spawn(move || {
        let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&to)
        else {
            return;
        };
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(f, "{line}");
            on_line(&line);
        }
    });
}

/// Wait for `child`'s output, at most `timeout`; past it the child is killed
/// and the error names `what`.
fn wait_output(child: Child, timeout: Duration, what: &str) -> Result<Output, String> {
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.map_err(|e| format!("{what}: {e}")),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            Err(format!("{what} hung: no exit after {timeout:?}"))
        }
    }
}

/// One line of `ctr events`: `<date> <time> <zone> <zone name> <namespace> <topic> <json>`.
fn parse_event(line: &str) -> Option<Event> {
    let toks: Vec<&str> = line.split_whitespace().collect();
    let t = toks.iter().position(|s| s.starts_with('/'))?;
    let namespace = if t >= 1 { toks[t - 1] } else { "" };
    let topic = toks[t];
    let at = line.find(&format!(" {topic} "))? + topic.len() + 2;
    Some(Event {
        namespace: namespace.to_string(),
        topic: topic.to_string(),
        body: serde_json::from_str(line[at..].trim()).unwrap_or(serde_json::Value::Null),
    })
}

/// The sha256 of `data` in hex, from coreutils' sha256sum.
fn sha256_hex(data: &[u8]) -> String {
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("cannot run sha256sum");
    c.stdin
        .take()
        .expect("sha256sum's stdin is piped")
        .write_all(data)
        .expect("cannot write to sha256sum");
    let out = c.wait_with_output().expect("sha256sum failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The last `n` lines of `s`.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "no-such-tool is missing: run `make setup`")]
    fn a_missing_binary_says_make_setup() {
        system_bin("no-such-tool");
    }

    #[test]
    fn parses_ctr_events_lines() {
        let e = parse_event(
            "2026-12-02 06:51:11.9 +0000 UTC sv1-0 /containers/create {\"id\":\"c1\",\"image\":\"x\"}",
        )
        .unwrap();
        assert_eq!(e.namespace, "sv1-0");
        assert_eq!(e.topic, "/containers/create");
        assert_eq!(e.body["id"], "c1");
        assert!(parse_event("garbage").is_none());
    }
}
