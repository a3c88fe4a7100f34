//! The read-only subcommands: `cmdline`, `status`, `list`, `console`.

use crate::commands::{load_config, shell_quote};
use anyhow::{Result, bail};
use runtime::config::{Accel, Accelerator};
use runtime::{Qemu, StateRoot, VmState, peek, tools::files};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// `sandvm cmdline`: the argv a sandbox of the config would get.
pub fn cmdline(
    root: &StateRoot,
    config: &Path,
    id: &str,
    accel: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let cfg = load_config(config)?;
    let accel = match accel {
        Some("kvm") => Accel::Kvm,
        Some("tcg") => Accel::Tcg,
        Some(o) => bail!("--accel must be kvm or tcg, not {o:?}"),
        None if cfg.accelerator == Accelerator::Kvm => Accel::Kvm,
        None => Accel::Tcg,
    };
    let argv = Qemu::render(&cfg, root, id, accel)?;
    if json {
        println!("{}", serde_json::to_string(&argv)?);
    } else {
        println!(
            "{}",
            argv.iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" \\\n    ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `sandvm status`.
pub fn status(root: &StateRoot, id: &str, json: bool) -> Result<ExitCode> {
    let st = peek(root, id)?;
    if json {
        let v = json!({
            "id": st.id, "state": st.state.to_string(), "pid": st.pid,
            "uuid": st.uuid, "accelerator": st.accelerator,
            "dir": root.sandbox_dir(id), "config": st.config,
            "ports": st.ports, "memory_mib": st.memory_mib,
            "agent": st.agent, "exit": st.exit, "annotations": st.annotations,
        });
        println!("{v}");
    } else {
        println!("id:          {}", st.id);
        println!("state:       {}", st.state);
        println!(
            "pid:         {}",
            st.pid.map_or("-".into(), |p| p.to_string())
        );
        println!("accelerator: {}", st.accelerator.as_deref().unwrap_or("-"));
        println!("dir:         {}", root.sandbox_dir(id).display());
        for p in &st.ports {
            println!(
                "port:        127.0.0.1:{} -> guest {} ({})",
                p.host,
                p.guest,
                p.protocol.as_str()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `sandvm list`.
pub fn list(root: &StateRoot, json: bool) -> Result<ExitCode> {
    let mut rows = Vec::new();
    for id in root.list()? {
        match peek(root, &id) {
            Ok(st) => rows.push(json!({"id": id, "state": st.state.to_string(), "pid": st.pid})),
            Err(e) => rows.push(json!({"id": id, "state": "unknown", "error": e.to_string()})),
        }
    }
    if json {
        println!("{}", serde_json::Value::Array(rows));
    } else {
        println!("{:<40} {:<10} PID", "ID", "STATE");
        for r in rows {
            println!(
                "{:<40} {:<10} {}",
                r["id"].as_str().unwrap_or("?"),
                r["state"].as_str().unwrap_or("?"),
                r["pid"].as_i64().map_or("-".into(), |p| p.to_string())
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `sandvm console`: interactive, or send a line and expect a pattern.
pub async fn console(
    root: &StateRoot,
    id: &str,
    send: Option<String>,
    expect: Option<String>,
    timeout: u64,
) -> Result<ExitCode> {
    let st = peek(root, id)?;
    if st.state != VmState::Running && st.state != VmState::Paused {
        bail!("sandbox {id} is {}; its console is not available", st.state);
    }
    let sock = root.sandbox_dir(id).join(files::CONSOLE);
    match (send, expect) {
        (None, None) => crate::console::interactive(&sock).await?,
        (send, expect) => {
            let out = crate::console::send_expect(
                &sock,
                send.as_deref(),
                expect.as_deref(),
                Duration::from_secs(timeout),
            )
            .await?;
            print!("{out}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
