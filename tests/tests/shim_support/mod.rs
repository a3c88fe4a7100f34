//! What the shim's end-to-end tests share: a private containerd whose PATH
//! holds `containerd-shim-sandvm-v2` (built with the tests), the test image,
//! the shim's shipped config, and checks on what is left.

#![allow(dead_code)]

pub mod cri;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use sandvm_tests::containerd::{CTR_TIMEOUT, Containerd, Leftovers, Options, SANDVM};
use sandvm_tests::{eventually, processes_mentioning, repo};

/// The shim binary's name (containerd derives it from the runtime name).
pub const SHIM_BIN: &str = "containerd-shim-sandvm-v2";

/// How long cleanup that runs after `ctr` returned (the shim's exit,
/// containerd's cleanup) may take. A deadline, not a timing assertion.
pub const SETTLE: Duration = Duration::from_secs(60);

/// The folder holding the shim built with these tests (same profile), or a
/// failure that says how to build it.
pub fn shim_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    assert!(
        dir.join(SHIM_BIN).exists(),
        "{} is missing: run `make build` (make test builds it) or `cargo build -p sandvm-shim`",
        dir.join(SHIM_BIN).display()
    );
    dir
}

/// The shim's shipped config, after checking that what it names exists:
/// the guest with the agent (`make guest`) and virtiofsd (`make setup`).
pub fn shim_config() -> PathBuf {
    sandvm_tests::guest();
    sandvm_tests::qemu("qemu-system-x86_64");
    sandvm_tests::tool("virtiofsd");
    let agent = repo().join("build/guest/sandvm-agent");
    assert!(
        agent.exists(),
        "{} is missing: the guest has no agent; run `make guest`",
        agent.display()
    );
    repo().join("configs/sandvm-containerd.toml")
}

/// The shim's shipped config under TCG, written into `dir` (its relative
/// paths made absolute): `accelerator = "auto"` trusts a probe guest, which
/// runs under this host's KVM (PVM) while a stock guest kernel then stops on
/// an internal error; the tests run under TCG, as DESIGN.md says.
pub fn shim_config_tcg(dir: &Path) -> PathBuf {
    config_tcg(dir, &shim_config(), "sandvm-tcg.toml")
}

/// The shipped config `shipped` under TCG (see [`shim_config_tcg`]), written
/// into `dir` as `name`.
pub fn config_tcg(dir: &Path, shipped: &Path, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(shipped).unwrap();
    let root = format!("\"{}/", repo().display());
    let tcg = text
        .replace("\"../", &root)
        .replace("accelerator = \"auto\"", "accelerator = \"tcg\"");
    assert!(
        tcg.contains("accelerator = \"tcg\""),
        "{} does not say accelerator = \"auto\"",
        shipped.display()
    );
    write_file(dir, name, &tcg)
}

/// The 9p guest's kernel release (`make guest` builds the guest the
/// template config boots), or a failure that says to build it.
pub fn ninep_guest() -> String {
    let dir = repo().join("build/guest");
    for f in ["vmlinuz-9p", "initramfs-9p.cpio.gz", "kernel-version-9p"] {
        assert!(
            dir.join(f).exists(),
            "{} is missing: run `make guest`",
            dir.join(f).display()
        );
    }
    std::fs::read_to_string(dir.join("kernel-version-9p"))
        .unwrap()
        .trim()
        .to_string()
}

/// The shipped template config (`configs/sandvm-containerd-template.toml`)
/// under TCG, written into `dir`, its template in `tp`.
pub fn template_config_tcg(dir: &Path, tp: &Path) -> PathBuf {
    let shipped = repo().join("configs/sandvm-containerd-template.toml");
    let p = config_tcg(dir, &shipped, "sandvm-template-tcg.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    let line = "template_path = \"/dev/shm/sandvm-containerd-template\"";
    assert!(text.contains(line), "{} lacks {line}", shipped.display());
    let text = text.replace(line, &format!("template_path = \"{}\"", tp.display()));
    write_file(dir, "sandvm-template-tcg.toml", &text)
}

/// `sandvm template create --config config` in the state root `state`
/// (the shim's: containerd's `SANDVM_STATE_DIR`).
pub fn create_template(state: &Path, config: &Path) {
    let out = Command::new(sandvm_tests::sandvm_bin())
        .arg("--state-dir")
        .arg(state)
        .args(["template", "create", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "template create failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The guest kernel's release (`make guest` records it).
pub fn guest_kernel_release() -> String {
    let p = repo().join("build/guest/kernel-version");
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}: run `make guest`", p.display()))
        .trim()
        .to_string()
}

/// A private containerd that can run sandvm containers, with the test image.
pub struct ShimEnv {
    /// The containerd.
    pub cd: Containerd,
    /// The test image's name.
    pub img: &'static str,
    /// The config containers run with: the shipped one under TCG
    /// ([`shim_config_tcg`]), in the containerd's folder.
    pub config: PathBuf,
}

impl ShimEnv {
    /// A private containerd (no CRI) with the shim on its PATH.
    pub fn start() -> ShimEnv {
        ShimEnv::start_with(Options::default())
    }

    /// As [`ShimEnv::start`] with `opts` (its PATH gets the shim first).
    pub fn start_with(mut opts: Options) -> ShimEnv {
        opts.path.insert(0, shim_dir());
        let cd = Containerd::start(opts);
        let config = shim_config_tcg(cd.dir());
        let img = cd.import_test_image();
        ShimEnv { cd, img, config }
    }

    /// `--runtime io.containerd.sandvm.v2 --runtime-config-path <config>`.
    pub fn runtime_args(&self) -> Vec<String> {
        vec![
            "--runtime".into(),
            SANDVM.into(),
            "--runtime-config-path".into(),
            self.config.display().to_string(),
        ]
    }

    /// `ctr run <runtime args> FLAGS IMG ID CMD...` as an argument list.
    pub fn run_args(&self, flags: &[&str], id: &str, cmd: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec!["run".into()];
        a.extend(self.runtime_args());
        a.extend(flags.iter().map(|s| s.to_string()));
        a.push(self.img.into());
        a.push(id.into());
        a.extend(cmd.iter().map(|s| s.to_string()));
        a
    }

    /// Runs `ctr ARGS` and returns its output.
    pub fn ctr(&self, args: &[String]) -> Output {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cd.ctr(&a)
    }

    /// `ctr run --rm` of `cmd` in a new container; its output.
    pub fn run(&self, id: &str, flags: &[&str], cmd: &[&str]) -> Output {
        let mut f = vec!["--rm"];
        f.extend_from_slice(flags);
        self.ctr(&self.run_args(&f, id, cmd))
    }

    /// As [`ShimEnv::run`], requiring success; its stdout.
    pub fn run_ok(&self, id: &str, flags: &[&str], cmd: &[&str]) -> String {
        let out = self.run(id, flags, cmd);
        self.check(&out, &format!("ctr run {id} {cmd:?}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Fails with the output and containerd's log unless `out` succeeded.
    pub fn check(&self, out: &Output, what: &str) {
        assert!(
            out.status.success(),
            "{what} failed ({}):\nstdout: {}\nstderr: {}\ncontainerd's log (last lines):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.cd.log(), 60)
        );
    }

    /// `ctr ARGS` in the test's namespace, requiring success; its stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.cd.ctr(args);
        self.check(&out, &format!("ctr {args:?}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `ctr run` (attached, `--rm`) as a child whose stdin, stdout
    /// and stderr are pipes.
    pub fn spawn_run(&self, id: &str, flags: &[&str], cmd: &[&str]) -> Child {
        let mut f = vec!["--rm"];
        f.extend_from_slice(flags);
        self.cd
            .ctr_command()
            .args(self.run_args(&f, id, cmd))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot spawn ctr run")
    }

    /// `ctr run` with `input` on its stdin; its output.
    pub fn run_with_stdin(&self, id: &str, cmd: &[&str], input: &[u8]) -> Output {
        let mut child = self.spawn_run(id, &[], cmd);
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
        drop(stdin);
        sandvm_tests::finish(child, &format!("ctr run {id}"))
    }

    /// The status `ctr task ls` shows for task `id` ("" when it lists none).
    pub fn task_status(&self, id: &str) -> String {
        let out = self.cd.ctr(&["tasks", "list"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.first() == Some(&id)).then(|| f.last().unwrap_or(&"").to_string())
            })
            .next()
            .unwrap_or_default()
    }

    /// Waits (bounded by [`CTR_TIMEOUT`]: a VM may boot slowly) until task
    /// `id` shows `status`.
    pub fn wait_status(&self, id: &str, status: &str) {
        let ok = eventually(CTR_TIMEOUT, || self.task_status(id) == status);
        assert!(
            ok,
            "task {id} never showed {status} (now {:?}); containerd's log:\n{}",
            self.task_status(id),
            tail(&self.cd.log(), 60)
        );
    }

    /// Processes of this containerd's sandboxes whose command is `name`
    /// (`qemu-system-x86_64`, `virtiofsd`, `containerd-shim-sandvm-v2`).
    pub fn processes(&self, name: &str) -> Vec<i32> {
        processes_mentioning(&PathBuf::from(format!("{}/", self.cd.dir().display())))
            .into_iter()
            .filter(|(_, cmd)| {
                cmd.split_whitespace()
                    .next()
                    .is_some_and(|a| a.rsplit('/').next() == Some(name))
            })
            .map(|(p, _)| p)
            .collect()
    }

    /// What is left, except the runtime's accelerator probe cache (a file
    /// of the state root, kept on purpose across sandboxes).
    pub fn leftovers(&self) -> Leftovers {
        let mut l = self.cd.leftovers();
        l.sandboxes.retain(|p| !p.ends_with("accel-probe.json"));
        l
    }

    /// Waits (bounded) until nothing is left, then fails listing what is.
    pub fn assert_clean(&self) {
        eventually(SETTLE, || self.leftovers().is_empty());
        let l = self.leftovers();
        assert!(
            l.is_empty(),
            "left behind by the test: {l:#?}\ncontainerd's log (last lines):\n{}",
            tail(&self.cd.log(), 60)
        );
    }

    /// As [`ShimEnv::assert_clean`], but containers may stay (a failed
    /// `ctr run --rm` leaves its container record).
    pub fn assert_clean_except_containers(&self) {
        let left = || {
            let mut l = self.leftovers();
            l.containers.clear();
            l.snapshots.clear();
            l
        };
        eventually(SETTLE, || left().is_empty());
        let l = left();
        assert!(
            l.is_empty(),
            "left behind: {l:#?}\ncontainerd's log (last lines):\n{}",
            tail(&self.cd.log(), 60)
        );
    }

    /// The events containerd published for container `id` in the test's
    /// namespace: their topics, in order.
    pub fn topics(&self, id: &str) -> Vec<String> {
        self.cd
            .events()
            .into_iter()
            .filter(|e| e.namespace == self.cd.namespace() && e.body["container_id"] == id)
            .map(|e| e.topic)
            .collect()
    }

    /// Waits (bounded) until containerd published `topic` for `id`.
    pub fn wait_topic(&self, id: &str, topic: &str) {
        let ok = eventually(SETTLE, || self.topics(id).iter().any(|t| t == topic));
        assert!(ok, "no {topic} for {id}: {:?}", self.topics(id));
    }
}

/// A file of `dir` with `text`, for mounts and specs.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `cmd` to completion; its output (for host tools).
pub fn host(cmd: &mut Command) -> Output {
    cmd.output().expect("cannot run a host command")
}
