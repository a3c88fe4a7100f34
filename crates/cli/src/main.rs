//! `sandvm`: a thin command line over the sandvm runtime.
//!
//! Exit codes (docs/cli.md): 0 success, 1 error, 2 usage, 3 config error,
//! 4 no such sandbox, 5 sandbox busy, 6 console expectation not met in time.

mod cable;
mod check;
mod commands;
mod console;
mod hotplug;
mod show;
mod snapshot;
mod stats;
mod template;

use clap::{Parser, Subcommand};
use runtime::StateRoot;
use std::path::PathBuf;
use std::process::ExitCode;

/// sandvm: Kata-style sandbox VMs on QEMU.
#[derive(Parser)]
#[command(name = "sandvm", version, about)]
struct Cli {
    /// State root (default: $SANDVM_STATE_DIR or /run/sandvm).
    #[arg(long, global = true, env = "SANDVM_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Log level or filter (default: $RUST_LOG, else warn).
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Hotplug and resize: resize-memory, resize-vcpus, hotplug, unplug, link, devices.
    #[command(flatten)]
    Hotplug(hotplug::HotplugCmd),
    /// Print the host's fingerprint: QEMU, KVM, hugepages, SELinux, seccomp, virtiofsd, state root.
    Check {
        /// Config whose QEMU and daemon paths to check.
        #[arg(long)]
        config: Option<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Print the QEMU command line a config renders to.
    Cmdline {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Sandbox id used in paths.
        #[arg(long, default_value = "cmdline")]
        id: String,
        /// Accelerator to render for (default: tcg unless the config says kvm).
        #[arg(long)]
        accel: Option<String>,
        /// One JSON array; argv[0] is the QEMU binary.
        #[arg(long)]
        json: bool,
    },
    /// Create a sandbox; prints its id.
    Create {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Sandbox id (default: generated).
        #[arg(long)]
        id: Option<String>,
        /// Host folder shared with the guest (virtio-fs or virtio-9p, tag kataShared;
        /// default: the sandbox's own shared/ folder).
        #[arg(long)]
        share: Option<PathBuf>,
        /// A Kata hypervisor annotation, `io.katacontainers.config.hypervisor.KEY=VALUE`
        /// (applied only when enable_annotations allows KEY); repeatable.
        #[arg(long = "annotation", value_name = "NAME=VALUE")]
        annotations: Vec<String>,
        /// Cold-plug a disk the guest sees at boot (`PATH`, `PATH:ro`, or
        /// `PATH:disposable`: writes go to a throwaway overlay, never to the
        /// image); repeatable.
        #[arg(long = "disk", value_name = "PATH[:ro|:disposable]")]
        disks: Vec<String>,
        /// Cold-plug a NIC on this tap the guest sees at boot (`TAP` or `TAP=MAC`); repeatable.
        #[arg(long = "tap", value_name = "TAP[=MAC]")]
        taps: Vec<String>,
    },
    /// Save a running sandbox into a new snapshot folder (guest memory,
    /// device and daemon state), then resume it or, with --stop, stop it.
    Save {
        /// Sandbox id.
        id: String,
        /// The snapshot folder to create.
        dir: PathBuf,
        /// Stop the sandbox once saved.
        #[arg(long)]
        stop: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore a snapshot as a new sandbox (prints its id).
    Restore {
        /// The snapshot folder.
        dir: PathBuf,
        /// The new sandbox's id (default: generated).
        #[arg(long)]
        id: Option<String>,
        /// Restore with this config (refused if it changes the VM; default:
        /// the snapshot's own).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Seconds QEMU may take to come up.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Wait until a sandbox's VM ends and print why (its exit status: 0 when
    /// the guest powered off, 1 otherwise).
    Wait {
        /// Sandbox id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// VM templating: build or remove the template of a config's [factory] template_path.
    Template {
        #[command(subcommand)]
        action: template::TemplateCmd,
    },
    /// Start a created sandbox.
    Start {
        /// Sandbox id.
        id: String,
        /// Seconds to wait for QMP.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Print the start timeline as one JSON line.
        #[arg(long)]
        json: bool,
        /// Return only once the guest is up: its ready line (a template
        /// clone: its shell answers), within `--wait-timeout` seconds.
        #[arg(long)]
        wait: bool,
        /// Seconds `--wait` waits for the guest.
        #[arg(long, default_value_t = 120, requires = "wait")]
        wait_timeout: u64,
    },
    /// Stop a sandbox and remove its state.
    Stop {
        /// Sandbox id.
        id: String,
        /// Kill at once; also cleans up a sandbox whose state is corrupt.
        #[arg(long)]
        force: bool,
        /// Seconds to wait after the ACPI powerdown before killing
        /// (default: the config's graceful_shutdown_timeout).
        #[arg(long)]
        grace: Option<u64>,
        /// Print how QEMU ended as one JSON line: `outcome` (graceful,
        /// terminated, killed, exited, not-running), `ms`, and `shutdown`
        /// (QEMU's SHUTDOWN event after the powerdown).
        #[arg(long)]
        json: bool,
    },
    /// Pause a running sandbox.
    Pause {
        /// Sandbox id.
        id: String,
    },
    /// Resume a paused sandbox.
    Resume {
        /// Sandbox id.
        id: String,
    },
    /// Show a sandbox's state.
    Status {
        /// Sandbox id.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// List sandboxes.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Attach to the console (Ctrl-] detaches), or send a line and expect output.
    Console {
        /// Sandbox id.
        id: String,
        /// Line to write.
        #[arg(long)]
        send: Option<String>,
        /// Regex to wait for; exit 0 when it matches.
        #[arg(long)]
        expect: Option<String>,
        /// Seconds to wait for --expect.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// CPU time, RSS and PSS of QEMU and every helper process, and the vCPU thread ids.
    Stats {
        /// Sandbox id.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Internal: watch a sandbox's QMP events (started by `start` and `run`).
    #[command(name = "__supervise", hide = true)]
    Supervise {
        /// Sandbox id.
        id: String,
    },
    /// Create, start, wait for the guest, print a timeline, stop.
    Run {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Keep the sandbox running.
        #[arg(long)]
        keep: bool,
        /// One JSON line.
        #[arg(long)]
        json: bool,
        /// Sandbox id (default: generated).
        #[arg(long)]
        id: Option<String>,
        /// Seconds to wait for the guest's ready line.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
}

fn init_logging(level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_level.as_deref());
    let root = cli
        .state_dir
        .clone()
        .map_or_else(StateRoot::from_env, StateRoot::new);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sandvm: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(commands::dispatch(cli.cmd, root)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sandvm: {}", commands::error_text(&e));
            ExitCode::from(commands::exit_code(&e))
        }
    }
}
