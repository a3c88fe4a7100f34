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

/// How a sandbox came to be, for `list`: `cache` for a VM the warm cache
/// holds ready (paused, id `vmc-…`), `cache-taken` for one a shim took
/// (or one the cache is still making: any other state),
/// `clone` for a template clone, `template` for a template VM, `-` otherwise.
fn origin(id: &str, state: VmState, role: Option<runtime::TemplateRole>) -> &'static str {
    match (id.starts_with("vmc-"), state, role) {
        (true, VmState::Paused, _) => "cache",
        (true, _, _) => "cache-taken",
        (_, _, Some(runtime::TemplateRole::Clone)) => "clone",
        (_, _, Some(runtime::TemplateRole::Template)) => "template",
        _ => "-",
    }
}

/// `sandvm list`.
pub fn list(root: &StateRoot, json: bool) -> Result<ExitCode> {
    let mut rows = Vec::new();
    for id in root.list()? {
        match peek(root, &id) {
            Ok(st) => {
                let rec = runtime::peek_record(root, &id).ok();
                let role = origin(&id, st.state, rec.as_ref().and_then(|r| r.template));
                let mib = rec.map(|r| r.config.memory_mib);
                rows.push(
                    json!({"id": id, "state": st.state.to_string(), "pid": st.pid,
                    "origin": role, "memory_mib": mib}),
                );
            }
            Err(e) => rows.push(json!({"id": id, "state": "unknown", "error": e.to_string()})),
        }
    }
    if json {
        println!("{}", serde_json::Value::Array(rows));
    } else {
        println!(
            "{:<40} {:<10} {:<10} {:>8} PID",
            "ID", "STATE", "ORIGIN", "MIB"
        );
        for r in rows {
            println!(
                "{:<40} {:<10} {:<10} {:>8} {}",
                r["id"].as_str().unwrap_or("?"),
                r["state"].as_str().unwrap_or("?"),
                r["origin"].as_str().unwrap_or("-"),
                r["memory_mib"]
                    .as_u64()
                    .map_or("-".into(), |m| m.to_string()),
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
