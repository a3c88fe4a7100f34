//! The last steps before exec: rlimits, session and terminal, user and
//! groups, capabilities, no_new_privileges, umask, cwd, environment.

use std::ffi::CString;
use std::fs;
use std::path::Path;
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use nix::sys::resource::{Resource, setrlimit};
use nix::unistd::{
    AccessFlags, Gid, Uid, access, chdir, execve, setgroups, setresgid, setresuid, setsid,
};

use crate::config::{Capabilities, ProcessConfig};
use crate::user;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Sets the process up and execs it; returns only on failure.
pub fn exec(p: &ProcessConfig) -> Result<(), String> {
    for (name, soft, hard) in &p.rlimits {
        let r = rlimit(name).ok_or_else(|| format!("unknown rlimit {name}"))?;
        setrlimit(r, *soft, *hard).map_err(|e| format!("setrlimit {name}: {e}"))?;
    }
    if let Some(adj) = p.oom_score_adj {
        fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| format!("oom_score_adj: {e}"))?;
    }
    setsid().map_err(|e| format!("setsid: {e}"))?;
    if p.terminal {
        set_controlling_tty()?;
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = fs::read_to_string("/etc/group").unwrap_or_default();
    let id = user::resolve(
        &passwd,
        &group,
        p.uid,
        p.gid,
        &p.additional_gids,
        p.username.as_deref(),
    )?;
    chdir(&p.cwd).map_err(|e| format!("chdir {}: {e}", p.cwd.display()))?;
    if let Some(c) = &p.capabilities {
        drop_bounding(c)?;
    }
    set_identity(&id, p.capabilities.is_some())?;
    if let Some(c) = &p.capabilities {
        set_caps(c)?;
    }
    if p.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    }
    if let Some(m) = p.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(m & 0o777));
    }
    let mut env: Vec<String> = p.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", id.home));
    }
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let prog = find_program(&p.args[0], path_var)
        .ok_or_else(|| format!("exec {:?}: not found in PATH", p.args[0]))?;
    let cstr = |s: &str| CString::new(s).map_err(|_| format!("NUL in {s:?}"));
    let argv: Vec<CString> = p.args.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?;
    let envp: Vec<CString> = env.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?;
    let path = cstr(&prog)?;
    reset_signals()?;
    let e = execve(&path, &argv, &envp)
        .err()
        .map_or_else(String::new, |e| e.to_string());
    Err(format!("exec {prog}: {e}"))
}

/// Default dispositions and an empty signal mask for the container's
/// process: ignored signals stay ignored across exec, and the launcher
/// inherits some (Rust's runtime ignores SIGPIPE; the agent, started with `&`
/// by a non-interactive shell, has SIGINT and SIGQUIT ignored).
#[allow(unsafe_code)]
fn reset_signals() -> Result<(), String> {
    use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, signal, sigprocmask};
    for sig in Signal::iterator().filter(|s| !matches!(s, Signal::SIGKILL | Signal::SIGSTOP)) {
        // SAFETY: SIG_DFL installs no handler code; we are single-threaded.
        unsafe { signal(sig, SigHandler::SigDfl) }.map_err(|e| format!("resetting {sig}: {e}"))?;
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(|e| format!("sigprocmask: {e}"))
}

#[allow(unsafe_code)]
fn set_controlling_tty() -> Result<(), String> {
    // SAFETY: TIOCSCTTY on stdin (the pty slave) with a plain int argument.
    let rc = unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
    if rc < 0 {
        return Err(format!("TIOCSCTTY: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn set_identity(id: &user::Identity, keep_caps: bool) -> Result<(), String> {
    if keep_caps {
        nix::sys::prctl::set_keepcaps(true).map_err(|e| format!("keepcaps: {e}"))?;
    }
    let groups: Vec<Gid> = id.groups.iter().map(|&g| Gid::from_raw(g)).collect();
    setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    let (g, u) = (Gid::from_raw(id.gid), Uid::from_raw(id.uid));
    setresgid(g, g, g).map_err(|e| format!("setgid {}: {e}", id.gid))?;
    setresuid(u, u, u).map_err(|e| format!("setuid {}: {e}", id.uid))?;
    if keep_caps {
        nix::sys::prctl::set_keepcaps(false).map_err(|e| format!("keepcaps: {e}"))?;
    }
    Ok(())
}

fn cap_set(names: &[String]) -> CapsHashSet {
    // names this kernel or the caps crate does not know are skipped (runc warns)
    names
        .iter()
        .filter_map(|n| Capability::from_str(n).ok())
        .collect()
}

fn drop_bounding(c: &Capabilities) -> Result<(), String> {
    let keep = cap_set(&c.bounding);
    let supported = caps::runtime::thread_all_supported();
    for cap in supported.difference(&keep) {
        caps::drop(None, CapSet::Bounding, *cap)
            .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
    }
    Ok(())
}

fn set_caps(c: &Capabilities) -> Result<(), String> {
    for (set, names, what) in [
        (CapSet::Inheritable, &c.inheritable, "inheritable"),
        (CapSet::Effective, &c.effective, "effective"),
        (CapSet::Permitted, &c.permitted, "permitted"),
    ] {
        caps::set(None, set, &cap_set(names))
            .map_err(|e| format!("setting the {what} capabilities: {e}"))?;
    }
    caps::clear(None, CapSet::Ambient)
        .map_err(|e| format!("clearing ambient capabilities: {e}"))?;
    for cap in cap_set(&c.ambient) {
        caps::raise(None, CapSet::Ambient, cap)
            .map_err(|e| format!("raising ambient {cap}: {e}"))?;
    }
    Ok(())
}

fn rlimit(name: &str) -> Option<Resource> {
    Some(match name {
        "RLIMIT_CPU" => Resource::RLIMIT_CPU,
        "RLIMIT_FSIZE" => Resource::RLIMIT_FSIZE,
        "RLIMIT_DATA" => Resource::RLIMIT_DATA,
        "RLIMIT_STACK" => Resource::RLIMIT_STACK,
        "RLIMIT_CORE" => Resource::RLIMIT_CORE,
        "RLIMIT_RSS" => Resource::RLIMIT_RSS,
        "RLIMIT_NPROC" => Resource::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => Resource::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => Resource::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => Resource::RLIMIT_AS,
        "RLIMIT_LOCKS" => Resource::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => Resource::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => Resource::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => Resource::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => Resource::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => Resource::RLIMIT_RTTIME,
        _ => return None,
    })
}

/// argv[0] itself when it has a `/`, else the first executable in PATH.
pub fn find_program(arg0: &str, path_var: &str) -> Option<String> {
    if arg0.contains('/') {
        return Some(arg0.to_string());
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(arg0))
        .find(|p| p.is_file() && access(p, AccessFlags::X_OK).is_ok())
        .map(|p| p.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_lookup_follows_path() {
        assert_eq!(find_program("/x/y", "").as_deref(), Some("/x/y"));
        assert_eq!(
            find_program("sh", "/nonexistent:/bin").as_deref(),
            Some("/bin/sh")
        );
        assert_eq!(find_program("no-such-program-here", "/bin:/usr/bin"), None);
    }

    #[test]
    fn rlimit_names_map() {
        assert!(rlimit("RLIMIT_NOFILE").is_some());
        assert!(rlimit("RLIMIT_BOGUS").is_none());
    }
}
