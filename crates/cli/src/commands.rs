//! One function per subcommand, mapped onto the runtime.

use crate::Cmd;
use anyhow::{Context, Result};
use runtime::config;
use runtime::{
    DEFAULT_START_TIMEOUT, DeviceSpec, ExitReason, Hypervisor, HypervisorError, Qemu, StateError,
    StateRoot, StopMode, StopOutcome, Supervision, TemplateRole, factory,
};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The line the test guest prints when it is ready.
pub const READY_LINE: &str = "SANDVM-GUEST-READY";

/// The text of an error and its causes, as `{:#}` joins them (`a: b: c`),
/// without a cause whose text the message already ends with (errors that
/// print their source themselves, such as `QMP blockdev-add: QMP connection
/// closed`, would otherwise say it twice).
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if text.is_empty() {
            text = c;
        } else if !text.ends_with(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

/// Exit code for an error (docs/cli.md).
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(h) = cause.downcast_ref::<HypervisorError>() {
            return match h {
                HypervisorError::Config(_) => 3,
                HypervisorError::State(s) => state_code(s),
                _ => 1,
            };
        }
        if cause.downcast_ref::<config::ConfigError>().is_some() {
            return 3;
        }
        if let Some(s) = cause.downcast_ref::<StateError>() {
            return state_code(s);
        }
        if cause
            .downcast_ref::<crate::console::ExpectTimeout>()
            .is_some()
        {
            return 6;
        }
    }
    1
}

fn state_code(s: &StateError) -> u8 {
    match s {
        StateError::NotFound { .. } => 4,
        StateError::Busy { .. } => 5,
        _ => 1,
    }
}

/// Load a config, printing each unused key once as a warning.
pub fn load_config(path: &Path) -> Result<config::HypervisorConfig> {
    let loaded = config::load(path)?;
    for w in &loaded.warnings {
        tracing::warn!("{}: {w}", path.display());
    }
    Ok(loaded.config)
}

/// A fresh sandbox id.
pub fn new_id() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("sb-{}", &u[..12])
}

/// Run one subcommand.
pub async fn dispatch(cmd: Cmd, root: StateRoot) -> Result<ExitCode> {
    match cmd {
        Cmd::Check { config, json } => crate::check::run(&root, config.as_deref(), json).await,
        Cmd::Cmdline {
            config,
            id,
            accel,
            json,
        } => crate::show::cmdline(&root, &config, &id, accel.as_deref(), json),
        Cmd::Create {
            config,
            id,
            share,
            annotations,
            disks,
            taps,
        } => create(root, &config, id, share, &annotations, &disks, &taps).await,
        Cmd::Wait { id, json } => wait(root, &id, json).await,
        Cmd::Save {
            id,
            dir,
            stop,
            json,
        } => crate::snapshot::save(root, &id, &dir, stop, json).await,
        Cmd::Restore {
            dir,
            id,
            config,
            timeout,
            json,
        } => crate::snapshot::restore(root, &dir, id, config.as_deref(), timeout, json).await,
        Cmd::Start {
            id,
            timeout,
            json,
            wait,
            wait_timeout,
        } => {
            start(
                &root,
                &id,
                timeout,
                json,
                wait.then(|| Duration::from_secs(wait_timeout)),
            )
            .await
        }
        Cmd::Stop {
            id,
            force,
            grace,
            json,
        } => stop(&root, &id, force, grace, json).await,
        Cmd::Pause { id } => {
            Qemu::attach(root, &id).await?.pause_vm().await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Resume { id } => {
            Qemu::attach(root, &id).await?.resume_vm().await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { id, json } => crate::show::status(&root, &id, json),
        Cmd::List { json } => crate::show::list(&root, json),
        Cmd::Console {
            id,
            send,
            expect,
            timeout,
        } => crate::show::console(&root, &id, send, expect, timeout).await,
        Cmd::Template { action } => crate::template::run(action, root).await,
        Cmd::Hotplug(c) => crate::hotplug::run(c, root).await,
        Cmd::Stats { id, json } => crate::stats::run(root, &id, json).await,
        Cmd::Supervise { id } => {
            let exit = Qemu::supervise(root, &id).await?;
            tracing::info!(%exit, "supervisor exits");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run {
            config,
            keep,
            json,
            id,
            timeout,
        } => run(&root, &config, keep, json, id, timeout).await,
    }
}

/// `sandvm start`: start the VM (supervised by a detached helper); with
/// `wait`, return only once the guest is up.
async fn start(
    root: &StateRoot,
    id: &str,
    timeout: u64,
    json: bool,
    wait: Option<Duration>,
) -> Result<ExitCode> {
    let q = Qemu::attach(root.clone(), id)
        .await?
        .with_supervision(detached_supervisor(root)?);
    let t0 = Instant::now();
    let r = q.start_vm(Duration::from_secs(timeout)).await?;
    tracing::info!(
        spawn_ms = r.spawn_ms,
        qmp_ready_ms = r.qmp_ready_ms,
        "started"
    );
    let mut v = json!({
        "id": id, "spawn_ms": round(r.spawn_ms), "qmp_ready_ms": round(r.qmp_ready_ms),
    });
    if let Some(limit) = wait {
        // The guest's failure to come up is not the start's: the VM stays,
        // so its console can be read, and the error says how to end it.
        wait_guest(&q, limit).await.with_context(|| {
            format!(
                "guest of sandbox {id} not up within {}s (no {READY_LINE}); \
                 the sandbox is still running: see `sandvm console {id}`, end it with `sandvm stop {id}`",
                limit.as_secs()
            )
        })?;
        v["guest_ready_ms"] = json!(round(t0.elapsed().as_secs_f64() * 1e3));
    }
    if json {
        println!("{v}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Wait until the guest of `q` is up: its ready line, or for a template
/// clone (whose guest printed that line in the template) a shell answer.
async fn wait_guest(q: &Qemu, timeout: Duration) -> Result<()> {
    let console = q.get_vm_console()?;
    if q.record().and_then(|s| s.template) == Some(TemplateRole::Clone) {
        crate::console::send_expect(
            &console.socket,
            Some("echo SANDVM-CLONE-$((40+2))"),
            Some("SANDVM-CLONE-42"),
            timeout,
        )
        .await
        .map(drop)
    } else {
        crate::console::wait_ready(&console.socket, &console.log, READY_LINE, timeout).await
    }
}

/// How long `stop` waits for a sandbox another process holds (a detached
/// supervisor recording the exit of a QEMU that just died holds it briefly).
const STOP_BUSY_WAIT: Duration = Duration::from_secs(5);

/// Attach to `id`, waiting up to [`STOP_BUSY_WAIT`] while it is busy.
async fn attach_when_free(root: &StateRoot, id: &str) -> Result<Qemu, HypervisorError> {
    let deadline = Instant::now() + STOP_BUSY_WAIT;
    loop {
        match Qemu::attach(root.clone(), id).await {
            Err(HypervisorError::State(StateError::Busy { .. })) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

async fn stop(
    root: &StateRoot,
    id: &str,
    force: bool,
    grace: Option<u64>,
    json: bool,
) -> Result<ExitCode> {
    let v = match attach_when_free(root, id).await {
        Ok(q) => {
            let mode = match (force, grace) {
                (true, _) => StopMode::Force,
                (false, Some(g)) => StopMode::Graceful(Duration::from_secs(g)),
                (false, None) => q.graceful_mode(),
            };
            let r = q.stop_with(mode).await?;
            json!({ "id": id, "outcome": r.outcome, "ms": round(r.ms), "shutdown": r.shutdown })
        }
        Err(HypervisorError::State(StateError::NotFound { .. })) => {
            // Idempotent: nothing to stop.
            json!({ "id": id, "outcome": StopOutcome::NotRunning, "ms": 0.0, "shutdown": null })
        }
        Err(HypervisorError::State(e @ StateError::Corrupt { .. })) if force => {
            tracing::warn!("{e}; cleaning up by pid");
            Qemu::force_cleanup(root, id).await?;
            json!({ "id": id, "outcome": StopOutcome::Killed, "ms": null, "shutdown": null })
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        println!("{v}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(
    root: &StateRoot,
    config: &Path,
    keep: bool,
    json: bool,
    id: Option<String>,
    timeout: u64,
) -> Result<ExitCode> {
    let cfg = load_config(config)?;
    let id = id.unwrap_or_else(new_id);
    let opts = factory::create_options(&cfg)?;
    let q = Qemu::new(root.clone(), cfg).with_supervision(detached_supervisor(root)?);
    q.create_vm(&id, opts).await?;
    let t0 = Instant::now();
    let started = q.start_vm(DEFAULT_START_TIMEOUT).await;
    let report = match started {
        Ok(r) => r,
        Err(e) => return Err(e.into()),
    };
    let ready = wait_guest(&q, Duration::from_secs(timeout)).await;
    let guest_ready_ms = t0.elapsed().as_secs_f64() * 1e3;
    if let Err(e) = ready {
        let _ = q.stop_with(StopMode::Force).await;
        return Err(e).context(format!("guest of sandbox {id} did not print {READY_LINE}"));
    }
    let mut stop_ms = None;
    if !keep {
        let t1 = Instant::now();
        q.stop_with(q.graceful_mode()).await?;
        stop_ms = Some(t1.elapsed().as_secs_f64() * 1e3);
    }
    if json {
        let v = json!({
            "id": id, "spawn_ms": round(report.spawn_ms), "qmp_ready_ms": round(report.qmp_ready_ms),
            "guest_ready_ms": round(guest_ready_ms), "stop_ms": stop_ms.map(round), "kept": keep,
        });
        println!("{v}");
    } else {
        println!("sandbox {id}");
        println!("  spawn        {:>9.1} ms", report.spawn_ms);
        println!("  qmp ready    {:>9.1} ms", report.qmp_ready_ms);
        println!("  guest ready  {guest_ready_ms:>9.1} ms");
        match stop_ms {
            Some(s) => println!("  stopped in   {s:>9.1} ms"),
            None => println!("  kept running: sandvm console {id} / sandvm stop {id}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Supervision by a detached `sandvm __supervise ID`, which the runtime
/// starts as soon as QEMU's pid is saved: it watches the VM after this
/// command exits, records how it ended, and tears the sandbox down when a
/// daemon dies.
pub fn detached_supervisor(root: &StateRoot) -> Result<Supervision> {
    let program = std::env::current_exe().context("cannot find the sandvm binary")?;
    Ok(Supervision::sandvm_detached(program, root))
}

/// `sandvm create`: a sandbox of the config (a template clone when the
/// config enables templating), with annotations and cold-plugged devices.
#[allow(clippy::too_many_arguments)]
async fn create(
    root: StateRoot,
    config: &Path,
    id: Option<String>,
    share: Option<std::path::PathBuf>,
    annotations: &[String],
    disks: &[String],
    taps: &[String],
) -> Result<ExitCode> {
    let cfg = load_config(config)?;
    let id = id.unwrap_or_else(new_id);
    let mut opts = factory::create_options(&cfg)?;
    opts.share = share;
    for a in annotations {
        let (k, v) = a
            .split_once('=')
            .with_context(|| format!("--annotation {a:?}: expected NAME=VALUE"))?;
        opts.annotations.insert(k.to_string(), v.to_string());
    }
    for t in taps {
        let (tap, mac) = match t.split_once('=') {
            Some((tap, mac)) => (tap.to_string(), Some(mac.to_string())),
            None => (t.clone(), None),
        };
        opts.network
            .push(runtime::NetEndpoint::Tap { name: tap, mac });
    }
    let q = Qemu::new(root, cfg).with_supervision(Supervision::None);
    q.create_vm(&id, opts).await?;
    for d in disks {
        let (path, readonly, disposable) = disk_option(d);
        let dev = DeviceSpec::Block {
            id: String::new(),
            path: std::path::absolute(path)?,
            readonly,
            disposable,
        };
        if let Err(e) = q.add_device(dev).await {
            let _ = q.cleanup().await;
            return Err(e).context(format!("--disk {d}"));
        }
    }
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

/// A `--disk` value: `PATH`, `PATH:ro` or `PATH:disposable`, as
/// (path, read-only, disposable).
fn disk_option(d: &str) -> (&str, bool, bool) {
    if let Some(p) = d.strip_suffix(":ro") {
        (p, true, false)
    } else if let Some(p) = d.strip_suffix(":disposable") {
        (p, false, true)
    } else {
        (d, false, false)
    }
}

/// `sandvm wait`: until the VM ends; prints why.
async fn wait(root: StateRoot, id: &str, json: bool) -> Result<ExitCode> {
    // Without the sandbox's lock: a `stop` from another process goes on.
    let exit = Qemu::wait_for(&root, id).await?;
    if json {
        println!("{}", serde_json::to_string(&exit)?);
    } else {
        println!("{exit}");
    }
    Ok(match exit.reason {
        ExitReason::GuestPoweredOff | ExitReason::Stopped => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prints its source itself, as `HypervisorError::Qmp` does.
    #[derive(Debug, thiserror::Error)]
    #[error("QMP blockdev-add: {0}")]
    struct Step(#[source] std::io::Error);

    #[test]
    fn disk_options_are_read_only_or_disposable() {
        assert_eq!(disk_option("/a.img"), ("/a.img", false, false));
        assert_eq!(disk_option("/a.img:ro"), ("/a.img", true, false));
        assert_eq!(disk_option("/a.img:disposable"), ("/a.img", false, true));
    }

    #[test]
    fn error_text_says_each_cause_once() {
        let closed = || std::io::Error::other("QMP connection closed");
        let e = anyhow::Error::new(HypervisorError::QemuExited {
            pid: 42,
            op: "a device hotplug".into(),
            source: Box::new(HypervisorError::unsupported("hotplug", "the socket closed")),
        });
        assert_eq!(
            error_text(&e),
            "QEMU (pid 42) exited during a device hotplug: Cannot hotplug: the socket closed"
        );
        let e = anyhow::Error::new(Step(closed()));
        assert_eq!(
            error_text(&e),
            "QMP blockdev-add: QMP connection closed",
            "{e:#}"
        );
        let e = anyhow::Error::new(Step(closed())).context("hotplug of blk0");
        assert_eq!(
            error_text(&e),
            "hotplug of blk0: QMP blockdev-add: QMP connection closed"
        );
        assert_eq!(exit_code(&e), 1);
    }
}
