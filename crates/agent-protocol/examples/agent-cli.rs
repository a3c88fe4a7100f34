//! A small host-side client of the sandvm agent, for trying the protocol by
//! hand against a booted guest (see docs/agent.md, "Trying it by hand").
//!
//! ```text
//! agent-cli ENDPOINT check
//! agent-cli ENDPOINT demo CID        # the whole container walk-through
//! agent-cli ENDPOINT hang CID        # start a container and block in WaitProcess
//! agent-cli ENDPOINT destroy
//! agent-cli ENDPOINT echo LINE       # echo mode: one line there and back
//! ENDPOINT: --serial PATH | --hybrid PATH[:PORT] | --vsock CID[:PORT]
//! ```
//!
//! `demo CID` expects a busybox root at `<shared>/CID/rootfs` on the host
//! (shared over virtio-fs with tag kataShared) and prints what each call gave.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sandvm_agent_protocol::agent::*;
use sandvm_agent_protocol::{
    AGENT_VSOCK_PORT, AgentClient, AgentEndpoint, SHARED_FS_TAG, ctx, wait_ready,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const T: Duration = Duration::from_secs(60);

fn endpoint(kind: &str, arg: &str) -> Result<AgentEndpoint> {
    let split = |s: &str| -> (String, u32) {
        match s.rsplit_once(':') {
            Some((a, p)) => (a.to_string(), p.parse().unwrap_or(AGENT_VSOCK_PORT)),
            None => (s.to_string(), AGENT_VSOCK_PORT),
        }
    };
    Ok(match kind {
        "--serial" => AgentEndpoint::Serial { path: arg.into() },
        "--hybrid" => {
            let (p, port) = split(arg);
            AgentEndpoint::HybridVsock {
                path: p.into(),
                port,
            }
        }
        "--vsock" => {
            let (cid, port) = split(arg);
            AgentEndpoint::Vsock {
                cid: cid.parse()?,
                port,
            }
        }
        _ => bail!("endpoint: --serial PATH | --hybrid PATH[:PORT] | --vsock CID[:PORT]"),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        bail!("usage: agent-cli ENDPOINT (check | demo CID | hang CID | destroy | echo LINE)");
    }
    let ep = endpoint(&args[0], &args[1])?;
    let cmd = args[2].as_str();
    let arg = args.get(3).cloned().unwrap_or_default();
    if cmd == "echo" {
        return echo(&ep, &arg).await;
    }
    let t0 = Instant::now();
    let c = wait_ready(&ep, Duration::from_secs(120)).await?;
    println!(
        "connected in {:?}: agent protocol v{} build {}",
        t0.elapsed(),
        c.versions.protocol,
        c.versions.build
    );
    match cmd {
        "check" => Ok(()),
        "demo" => demo(&c, &arg).await,
        "hang" => hang(&c, &arg).await,
        "destroy" => {
            c.agent
                .destroy_sandbox(ctx(T), &DestroySandboxRequest::new())
                .await?;
            println!("sandbox destroyed");
            Ok(())
        }
        _ => bail!("unknown command {cmd}"),
    }
}

/// Echo mode: one line there and back, over the raw channel.
async fn echo(ep: &AgentEndpoint, line: &str) -> Result<()> {
    let s = match ep {
        AgentEndpoint::Serial { path } => tokio::net::UnixStream::connect(path).await?,
        AgentEndpoint::HybridVsock { path, port } => {
            // the guest may not listen yet: retry CONNECT for a while
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let mut s = tokio::net::UnixStream::connect(path).await?;
                s.write_all(format!("CONNECT {port}\n").as_bytes()).await?;
                let mut b = [0u8; 1];
                let mut reply = String::new();
                while tokio::io::AsyncReadExt::read(&mut s, &mut b).await? == 1 && b[0] != b'\n' {
                    reply.push(b[0] as char);
                }
                if reply.starts_with("OK ") {
                    println!("hybrid vsock: {reply}");
                    break s;
                }
                if Instant::now() > deadline {
                    bail!("CONNECT {port}: {reply:?}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        AgentEndpoint::Vsock { .. } => bail!("echo over kernel vsock is not wired in this example"),
    };
    let (r, mut w) = tokio::io::split(s);
    w.write_all(format!("{line}\n").as_bytes()).await?;
    let mut got = String::new();
    tokio::time::timeout(T, BufReader::new(r).read_line(&mut got)).await??;
    println!("sent {line:?}, got back {:?}", got.trim_end());
    if got.trim_end() != line {
        bail!("echo mismatch");
    }
    Ok(())
}

/// A containerd-like default spec running `args`.
fn spec(args: &[&str], terminal: bool) -> Value {
    let caps = json!([
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE"
    ]);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": terminal, "args": args, "cwd": "/",
            "user": {"uid": 0, "gid": 0},
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "FOO=bar"],
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "demo-container",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755"]}
        ],
        "hooks": {"prestart": [{"path": "/usr/bin/host-hook-that-must-be-dropped"}]},
        "linux": {
            "cgroupsPath": "/default/host-cgroup-path-that-must-be-dropped",
            "resources": {"memory": {"limit": 268435456}, "pids": {"limit": 128}},
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

fn process(args: &[&str], terminal: bool, uid: u32, extra: Value) -> Vec<u8> {
    let mut p = spec(args, terminal)["process"].clone();
    p["user"] = json!({"uid": uid, "gid": uid, "additionalGids": if uid == 0 { json!([]) } else { json!([5]) }});
    if let (Some(o), Some(e)) = (p.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    serde_json::to_vec(&p).unwrap_or_default()
}

async fn create(c: &AgentClient, cid: &str, args: &[&str], terminal: bool) -> Result<()> {
    let req = CreateContainerRequest {
        container_id: cid.into(),
        oci_spec_json: serde_json::to_vec(&spec(args, terminal))?,
        ..Default::default()
    };
    c.agent
        .create_container(ctx(T), &req)
        .await
        .with_context(|| format!("CreateContainer {cid}"))?;
    c.agent
        .start_container(
            ctx(T),
            &StartContainerRequest {
                container_id: cid.into(),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("StartContainer {cid}"))?;
    Ok(())
}

/// Reads a stream to its end.
async fn read_all(c: &AgentClient, cid: &str, exec: &str, stderr: bool) -> Result<String> {
    let mut out = Vec::new();
    loop {
        let req = ReadStreamRequest {
            container_id: cid.into(),
            exec_id: exec.into(),
            len: 65536,
            ..Default::default()
        };
        let r = if stderr {
            c.agent.read_stderr(ctx(T), &req).await?
        } else {
            c.agent.read_stdout(ctx(T), &req).await?
        };
        if r.data.is_empty() {
            return Ok(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&r.data);
    }
}

async fn wait(c: &AgentClient, cid: &str, exec: &str) -> Result<i32> {
    let req = WaitProcessRequest {
        container_id: cid.into(),
        exec_id: exec.into(),
        ..Default::default()
    };
    Ok(c.agent.wait_process(ctx(T), &req).await?.status)
}

async fn remove(c: &AgentClient, cid: &str) -> Result<()> {
    let req = RemoveContainerRequest {
        container_id: cid.into(),
        ..Default::default()
    };
    c.agent
        .remove_container(ctx(T), &req)
        .await
        .with_context(|| format!("RemoveContainer {cid}"))?;
    Ok(())
}

/// Runs `args` as container `cid` to its end: (stdout, stderr, status).
async fn run_once(c: &AgentClient, cid: &str, args: &[&str]) -> Result<(String, String, i32)> {
    create(c, cid, args, false).await?;
    let out = read_all(c, cid, "", false).await?;
    let err = read_all(c, cid, "", true).await?;
    let status = wait(c, cid, "").await?;
    remove(c, cid).await?;
    Ok((out, err, status))
}

async fn exec(c: &AgentClient, cid: &str, id: &str, p: Vec<u8>) -> Result<()> {
    let req = ExecProcessRequest {
        container_id: cid.into(),
        exec_id: id.into(),
        process_json: p,
        ..Default::default()
    };
    c.agent
        .exec_process(ctx(T), &req)
        .await
        .with_context(|| format!("ExecProcess {id}"))?;
    Ok(())
}

async fn demo(c: &AgentClient, cid: &str) -> Result<()> {
    let req = CreateSandboxRequest {
        sandbox_id: "demo".into(),
        hostname: "demo-sandbox".into(),
        shared_fs_tag: SHARED_FS_TAG.into(),
        ..Default::default()
    };
    c.agent
        .create_sandbox(ctx(T), &req)
        .await
        .context("CreateSandbox")?;
    println!("CreateSandbox: ok (shared folder mounted)");
    let (out, _, st) = run_once(c, cid, &["uname", "-r"]).await?;
    println!("run `uname -r`: stdout {:?}, status {st}", out.trim());
    let (out, _, st) = run_once(
        c,
        cid,
        &[
            "sh",
            "-c",
            "cat /etc/marker; hostname; echo $FOO; echo err >&2; exit 7",
        ],
    )
    .await?;
    println!(
        "run `sh -c '...; exit 7'`: stdout {:?}, status {st}",
        out.trim()
    );
    let (out, _, st) = run_once(c, cid, &["sh", "-c", "cat /proc/self/status | grep -E '^(CapEff|NoNewPrivs|SigIgn)'; ls /dev; cat /proc/1/cmdline | tr '\\0' ' '; echo; ulimit -n; mount | grep -c . ; cat /proc/kcore | wc -c; echo x > /proc/sys/kernel/hostname || echo ro-ok"]).await?;
    println!(
        "run (caps, /dev, pid 1, rlimit, masks): status {st}\n{}",
        indent(&out)
    );
    create(
        c,
        cid,
        &[
            "sh",
            "-c",
            "tty; ls -l /dev/console | cut -c1-10; stty size",
        ],
        true,
    )
    .await?;
    let out = read_all(c, cid, "", false).await?.replace('\r', "");
    println!(
        "run with a TTY as init: {:?}, status {}",
        out.trim(),
        wait(c, cid, "").await?
    );
    remove(c, cid).await?;
    long_running(c, cid).await?;
    let bad = CreateContainerRequest {
        container_id: "../x".into(),
        oci_spec_json: b"{}".to_vec(),
        ..Default::default()
    };
    let e = c
        .agent
        .create_container(ctx(T), &bad)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    println!("CreateContainer with id \"../x\": {e}");
    let mut s = spec(&["true"], false);
    s["mounts"] =
        json!([{"destination": "/x", "type": "bind", "source": "/etc", "options": ["rbind"]}]);
    let bad = CreateContainerRequest {
        container_id: "c-bad".into(),
        oci_spec_json: serde_json::to_vec(&s)?,
        ..Default::default()
    };
    let e = c
        .agent
        .create_container(ctx(T), &bad)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    println!("CreateContainer binding guest /etc: {e}");
    c.agent
        .destroy_sandbox(ctx(T), &DestroySandboxRequest::new())
        .await?;
    println!("DestroySandbox: ok");
    Ok(())
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

async fn long_running(c: &AgentClient, cid: &str) -> Result<()> {
    create(
        c,
        cid,
        &["sh", "-c", "trap 'exit 3' TERM; while :; do sleep 1; done"],
        false,
    )
    .await?;
    let no_extra = json!({});
    exec(
        c,
        cid,
        "e1",
        process(
            &["sh", "-c", "echo $FOO; pwd; id; hostname"],
            false,
            1000,
            json!({"cwd": "/tmp"}),
        ),
    )
    .await?;
    println!(
        "exec as uid 1000 in /tmp: {:?}, status {}",
        read_all(c, cid, "e1", false).await?.trim(),
        wait(c, cid, "e1").await?
    );
    exec(c, cid, "e2", process(&["cat"], false, 0, no_extra.clone())).await?;
    let w = WriteStreamRequest {
        container_id: cid.into(),
        exec_id: "e2".into(),
        data: b"hello through stdin\n".to_vec(),
        ..Default::default()
    };
    c.agent.write_stdin(ctx(T), &w).await?;
    c.agent
        .close_stdin(
            ctx(T),
            &CloseStdinRequest {
                container_id: cid.into(),
                exec_id: "e2".into(),
                ..Default::default()
            },
        )
        .await?;
    println!(
        "exec cat with stdin: {:?}, status {}",
        read_all(c, cid, "e2", false).await?.trim(),
        wait(c, cid, "e2").await?
    );
    exec(
        c,
        cid,
        "e3",
        process(
            &["sh", "-c", "sleep 2; stty size; tty; echo tty-done"],
            true,
            0,
            no_extra,
        ),
    )
    .await?;
    let r = TtyWinResizeRequest {
        container_id: cid.into(),
        exec_id: "e3".into(),
        row: 33,
        column: 101,
        ..Default::default()
    };
    c.agent.tty_win_resize(ctx(T), &r).await?;
    println!(
        "exec with a TTY (resized to 33x101): {:?}, status {}",
        read_all(c, cid, "e3", false).await?.replace('\r', ""),
        wait(c, cid, "e3").await?
    );
    inspect(c, cid).await
}

/// ListProcesses, StatsContainer, Pause/Resume, SignalProcess, Remove.
async fn inspect(c: &AgentClient, cid: &str) -> Result<()> {
    let pids = c
        .agent
        .list_processes(
            ctx(T),
            &ListProcessesRequest {
                container_id: cid.into(),
                ..Default::default()
            },
        )
        .await?;
    println!("ListProcesses: {:?}", pids.pids);
    let st = c
        .agent
        .stats_container(
            ctx(T),
            &StatsContainerRequest {
                container_id: cid.into(),
                ..Default::default()
            },
        )
        .await?;
    println!(
        "StatsContainer: cpu {:?}\n  memory {:?}\n  pids {:?}",
        st.cpu.as_ref(),
        st.memory.as_ref(),
        st.pids.as_ref()
    );
    c.agent
        .pause_container(
            ctx(T),
            &PauseContainerRequest {
                container_id: cid.into(),
                ..Default::default()
            },
        )
        .await?;
    let e = exec(c, cid, "e4", process(&["true"], false, 0, json!({})))
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    println!("PauseContainer: ok; an exec while paused: {e}");
    c.agent
        .resume_container(
            ctx(T),
            &ResumeContainerRequest {
                container_id: cid.into(),
                ..Default::default()
            },
        )
        .await?;
    println!("ResumeContainer: ok");
    let sig = SignalProcessRequest {
        container_id: cid.into(),
        signal: 15,
        all: true,
        ..Default::default()
    };
    c.agent.signal_process(ctx(T), &sig).await?;
    println!(
        "SignalProcess TERM (all): init exited with {}",
        wait(c, cid, "").await?
    );
    remove(c, cid).await?;
    println!("RemoveContainer: ok");
    Ok(())
}

/// Starts a sleeping container and blocks in WaitProcess (to be killed).
async fn hang(c: &AgentClient, cid: &str) -> Result<()> {
    let req = CreateSandboxRequest {
        shared_fs_tag: SHARED_FS_TAG.into(),
        ..Default::default()
    };
    c.agent
        .create_sandbox(ctx(T), &req)
        .await
        .context("CreateSandbox")?;
    create(c, cid, &["sleep", "600"], false).await?;
    println!("container {cid} sleeping; now blocking in WaitProcess");
    let status = wait(c, cid, "").await?;
    println!("WaitProcess returned {status}");
    Ok(())
}
