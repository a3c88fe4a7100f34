//! `sandvm template create|delete`: VM templating (Kata's factory template).

use anyhow::Result;
use clap::Subcommand;
use runtime::StateRoot;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// What to do with the template of a config's `[factory] template_path`.
#[derive(Subcommand)]
pub enum TemplateCmd {
    /// Boot a template VM, wait for its guest, save it to template_path, stop it.
    Create {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Seconds to wait for the template guest to be ready.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// One JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Remove the template's files (running clones are not affected).
    Delete {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
    },
}

/// Run a `template` subcommand.
pub async fn run(cmd: TemplateCmd, root: StateRoot) -> Result<ExitCode> {
    match cmd {
        TemplateCmd::Create {
            config,
            timeout,
            json,
        } => {
            let cfg = crate::commands::load_config(&config)?;
            let t0 = std::time::Instant::now();
            let meta = runtime::factory::template::create(
                root,
                &cfg,
                crate::commands::READY_LINE,
                Duration::from_secs(timeout),
            )
            .await?;
            let ms = (t0.elapsed().as_secs_f64() * 1e4).round() / 10.0;
            let path = cfg.factory.template_path.display().to_string();
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "path": path, "memory_mib": meta.memory_mib,
                        "vcpus": meta.vcpus, "create_ms": ms,
                    })
                );
            } else {
                println!(
                    "template in {path} ({} MiB, {} vCPUs) made in {ms} ms",
                    meta.memory_mib, meta.vcpus
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TemplateCmd::Delete { config } => {
            let cfg = crate::commands::load_config(&config)?;
            let path = cfg.factory.template_path.display().to_string();
            if runtime::factory::template::delete(&cfg)? {
                println!("template in {path} deleted");
            } else {
                println!("no template in {path}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
