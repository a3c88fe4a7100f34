//! Faults and leaks: QEMU killed or frozen, the runtime killed in mid-start,
//! QEMU killed in the middle of a hotplug and of a template save or load,
//! corrupt and unknown state files, read-only and full state folders, two
//! processes racing on one id. Every scenario ends with the shared leak check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::unistd::{Pid, mkfifo};
use sandvm_tests::*;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn create_start(env: &Env, id: &str) {
    let cfg = env.config(&format!("{id}.toml"), "");
    env.ok(&["create", "--config", cfg.to_str().unwrap(), "--id", id]);
    env.ok(&["start", id]);
}

#[test]
fn qemu_killed_during_boot_then_stop_cleans_up() {
    let env = Env::new("fkboot");
    create_start(&env, "kb");
    // start returns at QMP ready: the guest is still booting.
    let pid = env.qemu_pid("kb");
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    assert!(eventually(Duration::from_secs(10), || !process_alive(pid)));
    env.ok(&["stop", "kb"]);
    env.assert_clean();
}

#[test]
fn frozen_qemu_times_out_qmp_and_stop_still_kills_it() {
    let env = Env::new("fstop");
    create_start(&env, "fz");
    let pid = env.qemu_pid("fz");
    kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    let out = env.sandvm(&["pause", "fz"]);
    assert!(!out.status.success(), "pause of a frozen QEMU must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("timed out"), "{err}");
    env.ok(&["stop", "fz", "--grace", "1"]);
    assert!(!process_alive(pid));
    env.assert_clean();
}

#[test]
fn runtime_killed_in_mid_start_then_stop_cleans_up() {
    let env = Env::new("fkrt");
    let cfg = env.config("r.toml", "");
    env.ok(&["create", "--config", cfg.to_str().unwrap(), "--id", "rt"]);
    let mut start = Command::new(sandvm_bin())
        .arg("--state-dir")
        .arg(&env.root)
        .args(["start", "rt"])
        .spawn()
        .unwrap();
    // Kill the runtime as soon as QEMU's pid is on disk, before QMP is up.
    let state = env.root.join("rt/state.json");
    let saw_pid = eventually(Duration::from_secs(30), || {
        std::fs::read(&state)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["pid"].is_i64())
    });
    start.kill().unwrap();
    start.wait().unwrap();
    assert!(saw_pid, "the runtime never recorded QEMU's pid");
    env.ok(&["stop", "rt", "--force"]);
    env.assert_clean();
}

#[test]
fn corrupt_state_is_a_clear_error_and_force_stop_cleans_up_by_pid() {
    let env = Env::new("fcorrupt");
    create_start(&env, "cs");
    let pid = env.qemu_pid("cs");
    let state = env.root.join("cs/state.json");
    let good = std::fs::read_to_string(&state).unwrap();
    std::fs::write(&state, "{ this is not json").unwrap();
    let out = env.sandvm(&["stop", "cs"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Corrupt state file") && err.contains("state.json"),
        "{err}"
    );
    // An unknown version is refused the same way.
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["version"] = 99.into();
    std::fs::write(&state, v.to_string()).unwrap();
    let err = String::from_utf8_lossy(&env.sandvm(&["stop", "cs"]).stderr).into_owned();
    assert!(err.contains("unknown version 99"), "{err}");
    env.ok(&["stop", "cs", "--force"]);
    assert!(!process_alive(pid));
    env.assert_clean();
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &Path, opts: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", at.display());
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn read_only_and_full_state_folders_fail_clearly_and_leave_nothing() {
    let env = Env::new("fstate");
    let cfg = env.config("c.toml", "");
    let c = cfg.to_str().unwrap();

    let ro = Mount::tmpfs(&env.root.join("ro"), "ro,size=1m");
    let out = Command::new(sandvm_bin())
        .arg("--state-dir")
        .arg(&ro.0)
        .args(["create", "--config", c, "--id", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&ro.0.display().to_string()) && err.contains("Read-only"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&ro.0).unwrap().count(), 0);
    drop(ro);

    // Full: room for the sandbox folder, none for its state.json.
    let full = Mount::tmpfs(&env.root.join("full"), "size=8k,nr_inodes=2");
    let out = Command::new(sandvm_bin())
        .arg("--state-dir")
        .arg(&full.0)
        .args(["create", "--config", c, "--id", "y"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("No space left") && err.contains("state.json"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&full.0)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    drop(full);
    env.assert_clean();
}

#[test]
fn two_processes_starting_one_id_one_wins() {
    let env = Env::new("frace");
    let cfg = env.config("c.toml", "");
    env.ok(&["create", "--config", cfg.to_str().unwrap(), "--id", "same"]);
    let spawn = || {
        Command::new(sandvm_bin())
            .arg("--state-dir")
            .arg(&env.root)
            .args(["start", "same"])
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    let oks = [&a, &b].iter().filter(|o| o.status.success()).count();
    assert_eq!(oks, 1, "exactly one start wins:\n{a:?}\n{b:?}");
    let loser = if a.status.success() { &b } else { &a };
    let err = String::from_utf8_lossy(&loser.stderr);
    assert!(err.contains("busy") || err.contains("is running"), "{err}");
    // Two stops at once: one stops it, the other is busy or finds nothing to stop.
    let stop = || {
        Command::new(sandvm_bin())
            .arg("--state-dir")
            .arg(&env.root)
            .args(["stop", "same", "--force"])
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(stop);
        let b = s.spawn(stop);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    for o in [&a, &b] {
        if !o.status.success() {
            assert_eq!(o.status.code(), Some(5), "{o:?}");
        }
    }
    assert!(a.status.success() || b.status.success());
    env.assert_clean();
}

/// A named pipe at `path`. Opening a FIFO blocks until the other end opens:
/// the tests below use that to hold QEMU inside an operation, so that it is
/// certainly in flight when QEMU is killed, without any timing.
fn fifo(path: &Path) {
    mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR).unwrap_or_else(|e| {
        panic!(
            "mkfifo {}: {e} (EEXIST: QEMU got there first)",
            path.display()
        )
    });
}

/// What the main thread of `pid` sleeps in (`/proc/PID/wchan`).
fn wchan(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default()
}

/// Processes that have `path` open.
fn holders(path: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == path))
        {
            out.push(pid);
        }
    }
    out
}

/// A failed command's stderr, after checking it failed with `code` and did not panic.
fn failed(out: &Output, code: i32, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: {}\nstdout: {}\nstderr: {err}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!err.contains("panicked"), "{what} panicked: {err}");
    eprintln!("{what}: {}", err.trim());
    err
}

#[test]
fn qemu_killed_during_a_block_hotplug_fails_it_clearly_and_stop_cleans_up() {
    let env = Env::new("fkhpblk");
    let cfg = env.config("h.toml", "block_device_driver = \"virtio-blk\"");
    env.boot(&cfg, "hb");
    let pid = env.qemu_pid("hb");
    // The image is a FIFO: QEMU opens it read-only inside blockdev-add and
    // sleeps there, main loop and all, until a writer comes (none will).
    let img = env.root.join("disk.fifo");
    fifo(&img);
    let hp = env.spawn(&[
        "hotplug",
        "hb",
        "block",
        img.to_str().unwrap(),
        "--readonly",
        "--id",
        "disk0",
    ]);
    let in_flight = eventually(Duration::from_secs(60), || wchan(pid) == "wait_for_partner");
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let out = finish(hp, "sandvm hotplug");
    assert!(
        in_flight,
        "QEMU never blocked in blockdev-add (wchan {:?}); hotplug: {out:?}",
        wchan(pid)
    );
    let err = failed(&out, 1, "hotplug while QEMU is killed");
    assert!(
        err.contains(&format!("QEMU (pid {pid}) exited during a device hotplug"))
            && err.contains("blockdev-add"),
        "{err}"
    );
    // Nothing was recorded (no device, no bridge slot taken) and nobody
    // holds the image any more.
    let devs = json(&env.ok(&["devices", "hb", "--json"]));
    assert!(devs["devices"].as_array().unwrap().is_empty(), "{devs}");
    let st = json(&std::fs::read_to_string(env.root.join("hb/state.json")).unwrap());
    for b in st["pci"]["bridges"].as_array().unwrap() {
        assert!(b["taken"].as_object().unwrap().is_empty(), "{b}");
    }
    assert!(holders(&img).is_empty(), "{:?}", holders(&img));
    assert_eq!(
        json(&env.ok(&["status", "hb", "--json"]))["state"],
        "stopped"
    );
    env.ok(&["stop", "hb"]);
    env.assert_clean();
}

#[tokio::test(flavor = "current_thread")]
async fn qemu_killed_during_a_nic_hotplug_leaves_no_tap_and_no_fd() {
    use runtime::{DeviceSpec, Hypervisor, HypervisorError};
    let env = Env::new("fkhpnet");
    let cfg = env.config("n.toml", "");
    env.boot(&cfg, "hn");
    let pid = env.qemu_pid("hn");
    // A tap the hotplug itself creates (no such interface yet): it lives as
    // long as an fd on it is open.
    let tap = format!("svk{}", std::process::id() % 100_000);
    let tap_exists = || Path::new("/sys/class/net").join(&tap).exists();
    assert!(!tap_exists(), "{tap} exists already");
    let tun_fds = || {
        open_fds()
            .into_iter()
            .filter(|f| f.ends_with("/dev/net/tun"))
            .collect::<Vec<_>>()
    };
    let q = runtime::Qemu::attach(runtime::StateRoot::new(&env.root), "hn")
        .await
        .unwrap();
    // Connected while QEMU runs; then frozen, so the hotplug's first QMP
    // call (getfd, passing the tap) is sent and certainly not answered.
    q.check().await.unwrap();
    kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    let plug = q.hotplug_add_device(DeviceSpec::Net {
        id: "nic0".into(),
        tap: tap.clone(),
        mac: None,
    });
    let killer = async {
        // The hotplug opens the tap right before its QMP calls.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !tap_exists() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seen = tap_exists();
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        seen
    };
    let (r, seen) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(plug, killer)
    })
    .await
    .expect("the hotplug hung after QEMU was killed");
    assert!(seen, "the hotplug never opened {tap}");
    let e = r.expect_err("the hotplug succeeded on a killed QEMU");
    assert!(
        matches!(&e, HypervisorError::QemuExited { pid: p, .. } if *p == pid),
        "{e:?}"
    );
    let text = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(text.contains("getfd"), "{text}");
    drop(q);
    // The tap went with the last fd on it; none is left in this process.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while (tap_exists() || !tun_fds().is_empty()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!tap_exists(), "tap {tap} left behind");
    assert!(tun_fds().is_empty(), "tap fds left open: {:?}", tun_fds());
    env.ok(&["stop", "hn"]);
    env.assert_clean();
}

/// The folder of the template VM `template create` is running, once there.
fn template_vm(env: &Env) -> Option<PathBuf> {
    env.sandboxes()
        .into_iter()
        .find(|s| s.starts_with("template-"))
        .map(|s| env.root.join(s))
}

/// The QEMU pid a sandbox folder's state.json records.
fn recorded_pid(dir: &Path) -> Option<i32> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).ok()?).ok()?;
    v["pid"].as_i64().map(|p| p as i32)
}

#[test]
fn qemu_killed_while_saving_a_template_leaves_nothing_a_clone_trusts() {
    let env = Env::new("fktsave");
    let tp = TemplateDir::new("fksave");
    let cfg = template_config(&env, "t.toml", &tp.0, "");
    let c = cfg.to_str().unwrap();
    let state = tp.0.join("state");
    let create = env.spawn(&["template", "create", "--config", c]);
    // The template VM's folder appears after create checked the template
    // path, seconds before the guest is up and its state is saved: the
    // state file becomes a FIFO. QEMU's `sh -c cat>'<tp>/state'` will block
    // opening it, and QEMU stalls mid-stream once the pipe to it is full.
    let vm = eventually(Duration::from_secs(60), || template_vm(&env).is_some());
    assert!(vm, "no template VM appeared");
    fifo(&state);
    let saving = eventually(Duration::from_secs(180), || {
        !processes_mentioning(&state).is_empty()
    });
    let pid = template_vm(&env).and_then(|d| recorded_pid(&d));
    assert!(saving, "the save never started");
    let pid = pid.expect("no QEMU pid for the template VM");
    // Take the first 64 KiB of the stream (what a `cat` to a real file would
    // have written when QEMU died), then kill QEMU in mid-migration.
    let mut partial = vec![0u8; 64 << 10];
    let mut r = std::fs::File::open(&state).unwrap();
    r.read_exact(&mut partial).unwrap();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    drop(r);
    let out = finish(create, "sandvm template create");
    let err = failed(&out, 1, "template create while QEMU is killed");
    assert!(
        err.contains(&format!(
            "QEMU (pid {pid}) exited during the save of the template"
        )) && err.contains("migrate"),
        "{err}"
    );
    // Nothing is left: no template file, no template VM, no helper.
    for f in ["state", "memory", "template.json"] {
        assert!(
            tp.0.join(f).symlink_metadata().is_err(),
            "{f} left in the template folder"
        );
    }
    assert!(env.sandboxes().is_empty(), "{:?}", env.sandboxes());
    assert!(
        eventually(Duration::from_secs(10), || processes_mentioning(&tp.0)
            .is_empty()),
        "{:?}",
        processes_mentioning(&tp.0)
    );
    // Had the state been a regular file, the part of it written could stay
    // (a `cat` that opened it late). A clone refuses such a template and a
    // new create asks for it to be deleted, both naming the problem.
    std::fs::write(&state, &partial).unwrap();
    let out = env.sandvm(&["create", "--config", c, "--id", "early"]);
    let err = failed(&out, 3, "clone of a partial template");
    assert!(
        err.contains("incomplete") && err.contains("template delete"),
        "{err}"
    );
    let out = env.sandvm(&["template", "create", "--config", c]);
    let err = failed(&out, 3, "template create over a partial template");
    assert!(
        err.contains("incomplete template") && err.contains("template delete"),
        "{err}"
    );
    env.ok(&["template", "delete", "--config", c]);
    // A new template can be made, and a clone of it boots.
    env.ok(&["template", "create", "--config", c]);
    env.ok(&["create", "--config", c, "--id", "cl"]);
    env.ok(&["start", "cl"]);
    assert_eq!(env.guest("cl", "echo $((40+2))"), "42");
    env.ok(&["stop", "cl"]);
    env.ok(&["template", "delete", "--config", c]);
    env.assert_clean();
}

#[test]
fn qemu_killed_while_a_clone_loads_the_template_fails_the_start_and_spares_the_template() {
    let env = Env::new("fktload");
    let tp = TemplateDir::new("fkload");
    let cfg = template_config(&env, "t.toml", &tp.0, "");
    let c = cfg.to_str().unwrap();
    env.ok(&["template", "create", "--config", c]);
    env.ok(&["create", "--config", c, "--id", "cl"]);
    // After create checked the template, its state becomes a FIFO: QEMU's
    // `cat '<tp>/state'` (migrate-incoming) blocks opening it, and gets only
    // the part of the state the test feeds it.
    let state = tp.0.join("state");
    let real = std::fs::read(&state).unwrap();
    std::fs::remove_file(&state).unwrap();
    fifo(&state);
    let start = env.spawn(&["start", "cl"]);
    // Opening a FIFO to write without blocking succeeds once a reader is there.
    let mut w = None;
    let loading = eventually(Duration::from_secs(60), || {
        w = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&state)
            .ok();
        w.is_some()
    });
    let pid = recorded_pid(&env.root.join("cl"));
    assert!(loading, "the clone never started loading the template");
    let pid = pid.expect("no QEMU pid for the clone");
    let mut w = w.unwrap();
    // Back to blocking writes: feed the first 64 KiB, so QEMU is in the middle of the load.
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&w),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .unwrap();
    w.write_all(&real[..64 << 10]).unwrap();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    drop(w);
    let out = finish(start, "sandvm start of a clone");
    let err = failed(&out, 1, "clone start while QEMU is killed");
    assert!(
        err.contains(&format!(
            "QEMU (pid {pid}) exited during the load of the template's state"
        )) && err.contains("migrate-incoming"),
        "{err}"
    );
    // The failed start cleaned up after itself; stop finds nothing to do.
    assert!(env.sandboxes().is_empty(), "{:?}", env.sandboxes());
    env.ok(&["stop", "cl"]);
    assert!(
        eventually(Duration::from_secs(10), || processes_mentioning(&tp.0)
            .is_empty()),
        "{:?}",
        processes_mentioning(&tp.0)
    );
    // The template is untouched by the clone: with its state back, a clone boots.
    std::fs::remove_file(&state).unwrap();
    std::fs::write(&state, &real).unwrap();
    env.ok(&["create", "--config", c, "--id", "cl2"]);
    env.ok(&["start", "cl2"]);
    assert_eq!(env.guest("cl2", "echo $((40+2))"), "42");
    env.ok(&["stop", "cl2"]);
    env.ok(&["template", "delete", "--config", c]);
    env.assert_clean();
}
