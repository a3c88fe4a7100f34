//! VM templating (Kata's `[factory] enable_template`): boot one template VM,
//! save its device state, then start clones from it that share its memory
//! copy-on-write. This is orchestration above the backend: it creates,
//! starts and saves a sandbox through the [`Hypervisor`] trait and the
//! [`Qemu`] handle; the plan renders the roles.
//!
//! ```text
//! template create: template VM, memory-backend-file <template_path>/memory share=on
//!                  ──guest ready──> stop ──x-ignore-shared──> migrate exec:cat>'<template_path>/state'
//!                  ──MIGRATION completed──> template VM ended; template.json written
//! clone start:     memory-backend-file <template_path>/memory share=off (private, copy-on-write)
//!                  -incoming defer ──x-ignore-shared──> migrate-incoming exec:cat '<template_path>/state'
//!                  ──MIGRATION completed──> cont
//! ```
//!
//! With `x-ignore-shared`, the template's RAM (shared, file-backed) is not
//! written to the state file at all; each clone maps the same file privately,
//! so pages it never writes stay shared between all clones.

use crate::config::{ConfigError, HypervisorConfig, SharedFs};
use crate::error::{HypervisorError, Result};
use crate::hypervisor::Hypervisor;
pub use crate::plan::template::{MEMORY_FILE, STATE_FILE};
use crate::qemu::{Qemu, StopMode};
use crate::state::StateRoot;
use crate::types::{CreateOptions, TemplateRole};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tracing::{info, warn};

/// What the template was built from, in `template_path`.
pub const META_FILE: &str = "template.json";
/// Layout version of `template.json`.
pub const META_VERSION: u32 = 1;

/// `template.json`: what the template was built from; a clone must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateMeta {
    /// Layout version ([`META_VERSION`]).
    pub version: u32,
    /// Boot memory, MiB (`default_memory`).
    pub memory_mib: u64,
    /// Boot vCPUs (`default_vcpus`).
    pub vcpus: u32,
    /// Maximum vCPUs (`default_maxvcpus`).
    pub max_vcpus: u32,
    /// Machine type.
    pub machine_type: String,
    /// Guest kernel (none: a whole-disk boot).
    pub kernel: Option<PathBuf>,
    /// Guest initrd.
    pub initrd: Option<PathBuf>,
    /// QEMU binary.
    pub qemu_path: PathBuf,
    /// `shared_fs`: the shared filesystem device the template VM has
    /// (`none` or `virtio-9p`). Absent in files written before sandvm
    /// templated 9p, all of which were built with `none`.
    #[serde(default = "no_shared_fs")]
    pub shared_fs: SharedFs,
    /// Unix time the template was made, seconds.
    pub created_unix: u64,
}

impl TemplateMeta {
    fn of(cfg: &HypervisorConfig) -> TemplateMeta {
        TemplateMeta {
            version: META_VERSION,
            memory_mib: cfg.memory_mib,
            vcpus: cfg.vcpus,
            max_vcpus: cfg.max_vcpus,
            machine_type: cfg.machine_type.clone(),
            kernel: cfg.kernel.clone(),
            initrd: cfg.initrd.clone(),
            qemu_path: cfg.qemu_path.clone(),
            shared_fs: cfg.shared_fs.kind,
            created_unix: crate::qemu::record::unix_now(),
        }
    }
}

/// The `shared_fs` of a `template.json` without one: templating refused
/// every shared filesystem when those files were written.
fn no_shared_fs() -> SharedFs {
    SharedFs::None
}

fn cfg_err(cfg: &HypervisorConfig, key: &str, reason: String) -> HypervisorError {
    HypervisorError::Config(ConfigError::Invalid {
        file: cfg.source.display().to_string(),
        key: key.to_string(),
        reason,
    })
}

/// Kata's rules for templating, each a clear error naming the key: no
/// virtio-fs (its daemon cannot see a clone's private copy-on-write memory;
/// virtio-9p, served inside QEMU, is fine), no file memory backend, an
/// initrd and no image, no hugepages; and a template path QEMU's `exec:`
/// can quote.
pub fn check_rules(cfg: &HypervisorConfig) -> Result<()> {
    let q = "hypervisor.qemu.";
    if cfg.shared_fs.kind.has_daemon() {
        return Err(cfg_err(
            cfg,
            &format!("{q}shared_fs"),
            format!(
                "VM templating cannot be used with {}: its daemon cannot see a clone's \
                 private memory (set shared_fs = \"virtio-9p\" or \"none\")",
                cfg.shared_fs.kind.name()
            ),
        ));
    }
    if cfg.file_mem_backend.is_some() {
        return Err(cfg_err(
            cfg,
            &format!("{q}file_mem_backend"),
            "VM templating cannot be used with file backed memory".into(),
        ));
    }
    if cfg.image.is_some() {
        return Err(cfg_err(
            cfg,
            &format!("{q}image"),
            "VM templating boots from an initrd only; remove image".into(),
        ));
    }
    if cfg.initrd.is_none() {
        return Err(cfg_err(
            cfg,
            &format!("{q}initrd"),
            "VM templating needs an initrd".into(),
        ));
    }
    if cfg.hugepages {
        return Err(cfg_err(
            cfg,
            &format!("{q}enable_hugepages"),
            "VM templating keeps guest memory in the template file, not on hugepages".into(),
        ));
    }
    let tp = cfg.factory.template_path.display().to_string();
    if tp.contains('\'') || tp.contains('\n') {
        return Err(cfg_err(
            cfg,
            "factory.template_path",
            format!("{tp:?} must not contain a quote or a newline"),
        ));
    }
    Ok(())
}

/// What a template folder holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// No template file at all.
    Nothing,
    /// A complete template. `template.json` is written last, once the state
    /// is saved, so its presence (with both other files) marks one.
    Complete(TemplateMeta),
    /// Files of a template whose making is running, was interrupted (QEMU
    /// or sandvm killed in mid-save) or that was damaged: what is wrong.
    Incomplete(String),
}

impl Found {
    /// Whether a complete template is there.
    pub fn is_complete(&self) -> bool {
        matches!(self, Found::Complete(_))
    }
}

/// Look at the template folder `tp`. Only a [`Found::Complete`] template may
/// be cloned; anything else there is reported, never trusted.
pub fn inspect(tp: &Path) -> Found {
    let present: Vec<&str> = [META_FILE, STATE_FILE, MEMORY_FILE]
        .into_iter()
        .filter(|f| tp.join(f).symlink_metadata().is_ok())
        .collect();
    if present.is_empty() {
        return Found::Nothing;
    }
    if !present.contains(&META_FILE) {
        return Found::Incomplete(format!(
            "{} without {META_FILE}: a `template create` is running or was interrupted",
            present.join(" and ")
        ));
    }
    let meta = match std::fs::read(tp.join(META_FILE))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<TemplateMeta>(&b).map_err(|e| e.to_string()))
    {
        Ok(m) => m,
        Err(e) => return Found::Incomplete(format!("{META_FILE} is unreadable: {e}")),
    };
    let missing: Vec<&str> = [STATE_FILE, MEMORY_FILE]
        .into_iter()
        .filter(|f| !tp.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        return Found::Incomplete(format!(
            "{META_FILE} without {} as a regular file",
            missing.join(" and ")
        ));
    }
    Found::Complete(meta)
}

/// The template's metadata, if a complete template is at the config's `template_path`.
pub fn load_meta(cfg: &HypervisorConfig) -> Option<TemplateMeta> {
    match inspect(&cfg.factory.template_path) {
        Found::Complete(m) => Some(m),
        _ => None,
    }
}

/// At `create`: with `enable_template`, check the rules and that a template
/// exists and matches the config. Returns the sandbox's role.
pub fn check_clone(cfg: &HypervisorConfig) -> Result<Option<TemplateRole>> {
    if !cfg.factory.enable_template {
        return Ok(None);
    }
    check_rules(cfg)?;
    let tp = &cfg.factory.template_path;
    let meta = match inspect(tp) {
        Found::Complete(meta) => meta,
        Found::Nothing => {
            return Err(cfg_err(
                cfg,
                "factory.template_path",
                format!(
                    "no template in {}; build one with `sandvm template create --config {}`",
                    tp.display(),
                    cfg.source.display()
                ),
            ));
        }
        Found::Incomplete(why) => {
            return Err(cfg_err(
                cfg,
                "factory.template_path",
                format!(
                    "the template in {} is incomplete ({why}); rebuild it: \
                     `sandvm template delete --config {c}` then `sandvm template create --config {c}`",
                    tp.display(),
                    c = cfg.source.display()
                ),
            ));
        }
    };
    let want = TemplateMeta::of(cfg);
    let mismatch = |key: &str, t: String, c: String| {
        Err(cfg_err(
            cfg,
            key,
            format!(
                "the template in {} was built with {t}, the config asks for {c}; \
                 rebuild it (`sandvm template delete` then `sandvm template create`)",
                tp.display()
            ),
        ))
    };
    let q = "hypervisor.qemu.";
    if meta.memory_mib != want.memory_mib {
        return mismatch(
            &format!("{q}default_memory"),
            format!("{} MiB", meta.memory_mib),
            format!("{} MiB", want.memory_mib),
        );
    }
    if meta.vcpus != want.vcpus {
        return mismatch(
            &format!("{q}default_vcpus"),
            format!("{} vCPUs", meta.vcpus),
            format!("{} vCPUs", want.vcpus),
        );
    }
    if meta.max_vcpus != want.max_vcpus {
        return mismatch(
            &format!("{q}default_maxvcpus"),
            format!("{} max vCPUs", meta.max_vcpus),
            format!("{} max vCPUs", want.max_vcpus),
        );
    }
    if meta.shared_fs != want.shared_fs {
        return mismatch(
            &format!("{q}shared_fs"),
            format!("shared_fs = {:?}", meta.shared_fs.name()),
            format!("shared_fs = {:?}", want.shared_fs.name()),
        );
    }
    let same_boot = meta.machine_type == want.machine_type
        && meta.kernel == want.kernel
        && meta.initrd == want.initrd
        && meta.qemu_path == want.qemu_path;
    if !same_boot {
        return mismatch(
            &format!("{q}kernel"),
            format!(
                "{} {} {}",
                meta.qemu_path.display(),
                meta.machine_type,
                shown(&meta.kernel)
            ),
            format!(
                "{} {} {}",
                want.qemu_path.display(),
                want.machine_type,
                shown(&want.kernel)
            ),
        );
    }
    Ok(Some(TemplateRole::Clone))
}

/// A kernel path for a message; `(no kernel)` for a whole-disk boot.
fn shown(kernel: &Option<PathBuf>) -> String {
    kernel
        .as_ref()
        .map_or_else(|| "(no kernel)".to_string(), |k| k.display().to_string())
}

/// The options that create a sandbox of `cfg`: a clone of the template
/// when the config enables templating (checked against the template), a
/// cold boot otherwise.
pub fn create_options(cfg: &HypervisorConfig) -> Result<CreateOptions> {
    Ok(CreateOptions {
        template: check_clone(cfg)?,
        ..Default::default()
    })
}

/// Wait until the guest printed `line` on its console (in the log already, or on the socket).
pub async fn wait_console_line(
    sock: &Path,
    log: &Path,
    line: &str,
    timeout: Duration,
) -> Result<()> {
    let work = async {
        // Connect first, then read the log: what came before is in the log,
        // what comes after arrives on the socket.
        let mut s = tokio::net::UnixStream::connect(sock)
            .await
            .map_err(HypervisorError::io(sock.display()))?;
        let mut seen = tokio::fs::read_to_string(log).await.unwrap_or_default();
        let mut chunk = [0u8; 4096];
        while !seen.contains(line) {
            let n = s
                .read(&mut chunk)
                .await
                .map_err(HypervisorError::io(sock.display()))?;
            if n == 0 {
                return Err(HypervisorError::Io {
                    what: format!(
                        "console {} closed before the guest printed {line}",
                        sock.display()
                    ),
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                });
            }
            seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
        Ok(())
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| HypervisorError::Timeout {
            op: "waiting for the template guest to be ready",
            after: timeout,
        })?
}

fn warn_if_not_tmpfs(tp: &Path) {
    if let Ok(fs) = nix::sys::statfs::statfs(tp)
        && fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC
    {
        warn!(path = %tp.display(), "template_path is not on tmpfs: the template's memory is a disk file");
    }
}

fn remove_files(tp: &Path) -> bool {
    let mut any = false;
    for f in [META_FILE, STATE_FILE, MEMORY_FILE] {
        any |= std::fs::remove_file(tp.join(f)).is_ok();
    }
    any
}

/// `sandvm template create`: build the template in the config's `template_path`.
/// The template VM runs as a sandbox under `root` until its state is saved.
pub async fn create(
    root: StateRoot,
    cfg: &HypervisorConfig,
    ready_line: &str,
    timeout: Duration,
) -> Result<TemplateMeta> {
    check_rules(cfg)?;
    cfg.check_assets()?;
    let tp = cfg.factory.template_path.clone();
    let there = match inspect(&tp) {
        Found::Nothing => None,
        Found::Complete(_) => Some(format!("a template already exists in {}", tp.display())),
        Found::Incomplete(why) => Some(format!(
            "an incomplete template is in {} ({why})",
            tp.display()
        )),
    };
    if let Some(there) = there {
        return Err(cfg_err(
            cfg,
            "factory.template_path",
            format!(
                "{there}; `sandvm template delete --config {}` first",
                cfg.source.display()
            ),
        ));
    }
    std::fs::create_dir_all(&tp).map_err(HypervisorError::io(tp.display()))?;
    warn_if_not_tmpfs(&tp);
    let mut tcfg = cfg.clone();
    tcfg.factory.enable_template = false;
    let id = format!(
        "template-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let q = Qemu::new(root, tcfg);
    let opts = CreateOptions {
        template: Some(TemplateRole::Template),
        ..Default::default()
    };
    q.create_vm(&id, opts).await?;
    let built = async {
        q.start_vm(timeout).await?;
        let console = q.get_vm_console()?;
        wait_console_line(&console.socket, &console.log, ready_line, timeout).await?;
        q.save_device_state(&tp.join(STATE_FILE), "the save of the template", timeout)
            .await
    }
    .await;
    // The template VM has done its job either way (its memory stays in the file).
    if let Err(e) = q.stop_with(StopMode::Force).await {
        warn!(id, error = %e, "stopping the template VM");
    }
    if let Err(e) = built {
        remove_files(&tp);
        return Err(e);
    }
    let meta = TemplateMeta::of(cfg);
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| HypervisorError::Io {
        what: tp.join(META_FILE).display().to_string(),
        source: e.into(),
    })?;
    let tmp = tp.join(".template.json.tmp");
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, tp.join(META_FILE)))
        .map_err(HypervisorError::io(tp.join(META_FILE).display()))?;
    info!(path = %tp.display(), "template created");
    Ok(meta)
}

/// `sandvm template delete`: remove the template's files (and its folder when
/// empty). Running clones keep their mappings. True when there was one.
pub fn delete(cfg: &HypervisorConfig) -> Result<bool> {
    let tp = &cfg.factory.template_path;
    let had = remove_files(tp);
    let _ = std::fs::remove_file(tp.join(".template.json.tmp"));
    let _ = std::fs::remove_dir(tp);
    Ok(had)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HostInfo, parse_str};

    fn cfg(extra: &str, factory: &str) -> HypervisorConfig {
        cfg_fs("none", extra, factory)
    }

    /// A config with `shared_fs = "<fs>"`.
    fn cfg_fs(fs: &str, extra: &str, factory: &str) -> HypervisorConfig {
        let text = format!(
            "[hypervisor.qemu]\npath = \"/bin/true\"\nkernel = \"/k\"\ninitrd = \"/i\"\n\
             shared_fs = \"{fs}\"\ndefault_memory = 256\n{extra}\n[factory]\n{factory}\n"
        );
        let host = HostInfo {
            numa_nodes: 1,
            cpus: 2,
            mem_mib: 4096,
            arch: crate::config::GuestArch::X86_64,
        };
        parse_str(Path::new("/c.toml"), &text, &host)
            .unwrap()
            .config
    }

    #[test]
    fn kata_rules_name_the_key() {
        check_rules(&cfg("", "")).unwrap();
        let e = check_rules(&cfg("image = \"/img\"", "")).unwrap_err();
        assert!(e.to_string().contains("hypervisor.qemu.image"), "{e}");
        let e = check_rules(&cfg("enable_hugepages = true", "")).unwrap_err();
        assert!(e.to_string().contains("enable_hugepages"), "{e}");
        let e = check_rules(&cfg("", "template_path = \"/tmp/it's\"")).unwrap_err();
        assert!(e.to_string().contains("factory.template_path"), "{e}");
    }

    #[test]
    fn virtio_9p_templates_virtio_fs_does_not() {
        // The factory check refuses virtio-fs with enable_template at parse
        // time; check_rules also guards configs built without it (template create).
        check_rules(&cfg_fs("virtio-9p", "", "")).unwrap();
        for fs in ["virtio-fs", "virtio-fs-nydus"] {
            let c = cfg_fs(fs, "", "");
            let e = check_rules(&c).unwrap_err().to_string();
            assert!(
                e.contains("hypervisor.qemu.shared_fs")
                    && e.contains(fs)
                    && e.contains("shared_fs = \"virtio-9p\" or \"none\""),
                "{e}"
            );
        }
    }

    #[test]
    fn a_clone_needs_the_template_s_shared_fs() {
        let tmp = tempfile::tempdir().unwrap();
        let f = format!(
            "enable_template = true\ntemplate_path = \"{}\"",
            tmp.path().display()
        );
        let none = cfg("", &f);
        let p9 = cfg_fs("virtio-9p", "", &f);
        std::fs::write(tmp.path().join(STATE_FILE), b"x").unwrap();
        std::fs::write(tmp.path().join(MEMORY_FILE), b"x").unwrap();
        let meta = serde_json::to_vec(&TemplateMeta::of(&none)).unwrap();
        std::fs::write(tmp.path().join(META_FILE), meta).unwrap();
        let e = check_clone(&p9).unwrap_err().to_string();
        assert!(
            e.contains("hypervisor.qemu.shared_fs")
                && e.contains("shared_fs = \"none\"")
                && e.contains("shared_fs = \"virtio-9p\""),
            "{e}"
        );
        let meta = serde_json::to_vec(&TemplateMeta::of(&p9)).unwrap();
        std::fs::write(tmp.path().join(META_FILE), meta).unwrap();
        assert_eq!(check_clone(&p9).unwrap(), Some(TemplateRole::Clone));
        assert!(check_clone(&none).is_err());
        // A template.json of before 9p (no shared_fs) was built with none.
        let mut old = serde_json::to_value(TemplateMeta::of(&none)).unwrap();
        old.as_object_mut().unwrap().remove("shared_fs");
        std::fs::write(tmp.path().join(META_FILE), old.to_string()).unwrap();
        assert_eq!(check_clone(&none).unwrap(), Some(TemplateRole::Clone));
        assert!(check_clone(&p9).is_err());
    }

    #[test]
    fn partial_templates_are_reported_never_trusted() {
        let tmp = tempfile::tempdir().unwrap();
        let tp = tmp.path();
        let c = cfg(
            "",
            &format!(
                "enable_template = true\ntemplate_path = \"{}\"",
                tp.display()
            ),
        );
        assert_eq!(inspect(tp), Found::Nothing);
        // A save cut short: part of the state, no template.json.
        std::fs::write(tp.join(STATE_FILE), b"half a stream").unwrap();
        let Found::Incomplete(why) = inspect(tp) else {
            panic!("{:?}", inspect(tp))
        };
        assert!(why.contains(STATE_FILE) && why.contains(META_FILE), "{why}");
        let e = check_clone(&c).unwrap_err().to_string();
        assert!(
            e.contains("incomplete") && e.contains("template delete"),
            "{e}"
        );
        std::fs::write(tp.join(META_FILE), b"{").unwrap();
        assert!(matches!(inspect(tp), Found::Incomplete(w) if w.contains("unreadable")));
        let meta = serde_json::to_vec(&TemplateMeta::of(&c)).unwrap();
        std::fs::write(tp.join(META_FILE), meta).unwrap();
        assert!(matches!(inspect(tp), Found::Incomplete(w) if w.contains(MEMORY_FILE)));
        std::fs::write(tp.join(MEMORY_FILE), b"x").unwrap();
        assert!(matches!(inspect(tp), Found::Complete(_)));
        assert_eq!(check_clone(&c).unwrap(), Some(TemplateRole::Clone));
    }

    #[test]
    fn clones_need_a_matching_template() {
        let tmp = tempfile::tempdir().unwrap();
        let f = format!(
            "enable_template = true\ntemplate_path = \"{}\"",
            tmp.path().display()
        );
        let c = cfg("", &f);
        let e = check_clone(&c).unwrap_err();
        assert!(e.to_string().contains("template create"), "{e}");
        std::fs::write(tmp.path().join(STATE_FILE), b"x").unwrap();
        std::fs::write(tmp.path().join(MEMORY_FILE), b"x").unwrap();
        let mut meta = TemplateMeta::of(&c);
        meta.memory_mib = 512;
        std::fs::write(
            tmp.path().join(META_FILE),
            serde_json::to_vec(&meta).unwrap(),
        )
        .unwrap();
        let e = check_clone(&c).unwrap_err();
        assert!(
            e.to_string().contains("default_memory") && e.to_string().contains("512 MiB"),
            "{e}"
        );
        meta.memory_mib = 256;
        std::fs::write(
            tmp.path().join(META_FILE),
            serde_json::to_vec(&meta).unwrap(),
        )
        .unwrap();
        assert_eq!(check_clone(&c).unwrap(), Some(TemplateRole::Clone));
        assert!(delete(&c).unwrap());
        assert!(!tmp.path().exists());
        assert!(!delete(&c).unwrap());
    }
}
