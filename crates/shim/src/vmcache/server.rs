//! `sandvm-vmcache`: the server side of the warm VM cache (see the module
//! above). It owns each ready VM (its [`Qemu`] handle holds the sandbox's
//! lock) until a shim takes it; then it drops the handle and answers the id.

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use runtime::{
    CreateOptions, Hypervisor, HypervisorConfig, Qemu, StateRoot, StopMode, Supervision,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, Notify};

use super::{CACHE_ID_PREFIX, Reply, Request};
use crate::factory;
use crate::mounts::MountError;
use crate::sandbox::{AGENT_TIMEOUT, START_TIMEOUT, agent_endpoint, wait_agent};
use crate::share::{Share, blocking};

/// Pause after a VM of the cache failed to come up (doubling, at most
/// [`MAX_BACKOFF`]).
const BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Why the cache cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The config asks for no cache, or for more than the host holds.
    #[error("Config {path}: factory.vm_cache_number: {reason}")]
    Number {
        /// The config file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The endpoint cannot be served.
    #[error("VM cache endpoint {path}: {source}")]
    Endpoint {
        /// The socket path.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Another server answers on the endpoint.
    #[error("VM cache endpoint {path}: another sandvm-vmcache serves it")]
    InUse {
        /// The socket path.
        path: String,
    },
}

/// One VM of the cache, ready (its agent answered) and paused.
struct Ready {
    id: String,
    vm: Qemu,
}

#[derive(Default)]
struct Pool {
    ready: VecDeque<Ready>,
    filling: usize,
    stopping: bool,
}

struct Cache {
    root: StateRoot,
    cfg: HypervisorConfig,
    supervision: Supervision,
    number: usize,
    pool: Mutex<Pool>,
    wake: Notify,
}

/// Serves the cache of `cfg` until `shutdown` resolves; then stops every
/// VM it still holds, and every `vmc-` sandbox nobody holds (taken by a
/// shim that died before it attached), and removes its socket.
pub async fn serve(
    root: StateRoot,
    cfg: HypervisorConfig,
    supervision: Supervision,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CacheError> {
    let number = check_number(&cfg)?;
    let endpoint = cfg.factory.vm_cache_endpoint.clone();
    let listener = bind(&endpoint).await?;
    let cache = Arc::new(Cache {
        root,
        cfg,
        supervision,
        number,
        pool: Mutex::new(Pool::default()),
        wake: Notify::new(),
    });
    clear_stale(&cache).await;
    tracing::info!(endpoint = %endpoint.display(), number, "VM cache serving");
    let filler = tokio::spawn(fill(Arc::clone(&cache)));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            conn = listener.accept() => match conn {
                Ok((s, _)) => { tokio::spawn(answer(Arc::clone(&cache), s)); }
                Err(e) => tracing::warn!(error = %e, "VM cache: accept failed"),
            },
        }
    }
    drop(listener);
    let _ = tokio::fs::remove_file(&endpoint).await;
    cache.pool.lock().await.stopping = true;
    // a VM being made (a boot, or a backoff of up to a minute) is not
    // waited for: dropped, it is nobody's, and the sweep below stops it
    filler.abort();
    if let Err(e) = filler.await
        && !e.is_cancelled()
    {
        tracing::warn!(error = %e, "VM cache: the filler failed");
    }
    let held: Vec<Ready> = cache.pool.lock().await.ready.drain(..).collect();
    for r in held {
        discard(&cache.root, &r.id, Some(r.vm)).await;
    }
    // a VM taken but never attached (its shim died first) is nobody's
    clear_stale(&cache).await;
    tracing::info!("VM cache stopped");
    Ok(())
}

/// `vm_cache_number`, if the host's available memory holds that many VMs.
fn check_number(cfg: &HypervisorConfig) -> Result<usize, CacheError> {
    let path = cfg.source.display().to_string();
    let n = usize::try_from(cfg.factory.vm_cache_number).unwrap_or(usize::MAX);
    if n == 0 {
        return Err(CacheError::Number {
            path,
            reason: "is 0: this config asks for no VM cache".into(),
        });
    }
    let want = cfg.memory_mib.saturating_mul(n as u64);
    if let Some(avail) = available_mib()
        && want > avail
    {
        return Err(CacheError::Number {
            path,
            reason: format!(
                "{n} VMs of {} MiB need {want} MiB; the host has {avail} MiB available",
                cfg.memory_mib
            ),
        });
    }
    Ok(n)
}

/// MemAvailable of /proc/meminfo, MiB.
fn available_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Binds the endpoint; a socket nobody answers on is a stale one.
async fn bind(endpoint: &Path) -> Result<UnixListener, CacheError> {
    let path = endpoint.display().to_string();
    let err = |source| CacheError::Endpoint {
        path: path.clone(),
        source,
    };
    if UnixStream::connect(endpoint).await.is_ok() {
        return Err(CacheError::InUse { path });
    }
    use std::os::unix::fs::FileTypeExt;
    match tokio::fs::symlink_metadata(endpoint).await {
        // a stale socket goes; anything else there is not ours to remove
        Ok(m) if m.file_type().is_socket() => {
            tokio::fs::remove_file(endpoint).await.map_err(err)?
        }
        Ok(_) => {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is there",
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    if let Some(dir) = endpoint.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(err)?;
    }
    // created 0600 (no window with the umask's mode): only root may take VMs
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let l = UnixListener::bind(endpoint);
    nix::sys::stat::umask(old);
    l.map_err(err)
}

/// Cache sandboxes nobody holds (left by a server killed before it could
/// stop them, or taken by a shim that died before it attached): stopped,
/// their share folders cleared. One a live shim holds is the shim's.
async fn clear_stale(cache: &Cache) {
    let Ok(entries) = std::fs::read_dir(cache.root.path()) else {
        return;
    };
    for e in entries.flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        if !id.starts_with(CACHE_ID_PREFIX) {
            continue;
        }
        match Qemu::attach(cache.root.clone(), &id).await {
            Ok(vm) => {
                tracing::warn!(id, "VM cache: a cache sandbox nobody holds; stopping it");
                discard(&cache.root, &id, Some(vm)).await;
            }
            Err(e) => tracing::debug!(id, error = %e, "VM cache: leaving a sandbox someone holds"),
        }
    }
}

/// Keeps the pool full, one VM at a time.
async fn fill(cache: Arc<Cache>) {
    let mut backoff = BACKOFF;
    loop {
        {
            let mut p = cache.pool.lock().await;
            if p.stopping {
                return;
            }
            if p.ready.len() + p.filling >= cache.number {
                drop(p);
                cache.wake.notified().await;
                continue;
            }
            p.filling += 1;
        }
        let id = format!("{CACHE_ID_PREFIX}{}", &uuid_hex()[..12]);
        let made = make(&cache, &id).await;
        let mut p = cache.pool.lock().await;
        p.filling -= 1;
        match made {
            Ok(vm) => {
                backoff = BACKOFF;
                tracing::info!(id, ready = p.ready.len() + 1, "VM cache: a VM is ready");
                p.ready.push_back(Ready { id, vm });
            }
            Err(e) => {
                tracing::warn!(id, error = %e, "VM cache: a VM failed to come up");
                drop(p);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// 32 random hex digits.
fn uuid_hex() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Makes VM `id`: its share folder, the VM (a template clone when the
/// config has one), its agent answering once, then paused. Nothing is left
/// when it fails.
async fn make(cache: &Cache, id: &str) -> Result<Qemu, String> {
    let path = Share::path_for(&cache.root, id);
    let share = blocking(move || Share::create(path))
        .await
        .map_err(|e: MountError| e.to_string())?;
    let src = factory::choose(id, &cache.cfg, &Default::default());
    let vm = Qemu::new(cache.root.clone(), src.config).with_supervision(cache.supervision.clone());
    let up = async {
        let opts = CreateOptions {
            share: Some(share.shared()),
            template: src.origin.role(),
            ..CreateOptions::default()
        };
        vm.create_vm(id, opts).await.map_err(|e| e.to_string())?;
        vm.start_vm(START_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let ep = agent_endpoint(vm.get_agent_socket().map_err(|e| e.to_string())?);
        let client = wait_agent(&ep, AGENT_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        drop(client);
        vm.pause_vm().await.map_err(|e| e.to_string())
    }
    .await;
    match up {
        Ok(()) => Ok(vm),
        Err(e) => {
            discard(&cache.root, id, Some(vm)).await;
            Err(e)
        }
    }
}

/// Stops VM `id` (if there is one) and clears its share folder.
async fn discard(root: &StateRoot, id: &str, vm: Option<Qemu>) {
    if let Some(vm) = vm
        && let Err(e) = vm.stop_with(StopMode::Force).await
    {
        tracing::warn!(id, error = %e, "VM cache: cannot stop a VM");
    }
    let share = Share::at(Share::path_for(root, id));
    if let Err(e) = blocking(move || share.destroy()).await {
        tracing::warn!(id, error = %e, "VM cache: cannot clear a share folder");
    }
}

/// Answers one connection: one request line, one reply line. A VM taken
/// goes back to the pool when its id cannot be written: nobody would ever
/// hold it otherwise.
async fn answer(cache: Arc<Cache>, s: UnixStream) {
    let (r, mut w) = s.into_split();
    let mut line = String::new();
    let mut r = BufReader::new(r).take(4096);
    let (reply, taken) =
        match tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line)).await {
            Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim()) {
                Ok(req) => handle(&cache, req).await,
                Err(e) => (
                    Reply::Error {
                        message: format!("bad request: {e}"),
                    },
                    None,
                ),
            },
            _ => return,
        };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    // the handle's lock goes before the id: the shim attaches on reading it
    let taken = taken.map(|Ready { id, vm }| {
        drop(vm);
        id
    });
    match (w.write_all(&out).await, taken) {
        (Ok(()), Some(id)) => tracing::info!(id, "VM cache: VM taken"),
        (Err(e), Some(id)) => {
            tracing::warn!(id, error = %e, "VM cache: cannot hand a VM over");
            give_back(&cache, id).await;
        }
        (Err(e), None) => tracing::warn!(error = %e, "VM cache: cannot answer"),
        (Ok(()), None) => {}
    }
}

/// Takes back VM `id`, whose id never reached a shim: into the pool, or
/// stopped when the pool has been refilled meanwhile (it never holds more
/// than its number). One a shim holds after all is the shim's.
async fn give_back(cache: &Cache, id: String) {
    let vm = match Qemu::attach(cache.root.clone(), &id).await {
        Ok(vm) => vm,
        Err(e) => {
            tracing::warn!(id, error = %e, "VM cache: cannot take a VM back");
            return;
        }
    };
    let mut p = cache.pool.lock().await;
    if !p.stopping && p.ready.len() + p.filling < cache.number {
        p.ready.push_front(Ready { id, vm });
        return;
    }
    drop(p);
    discard(&cache.root, &id, Some(vm)).await;
}

/// The reply to `req`, and the VM it hands over, still held.
async fn handle(cache: &Cache, req: Request) -> (Reply, Option<Ready>) {
    match req {
        Request::Status => {
            let p = cache.pool.lock().await;
            let reply = Reply::Status {
                config: cache.cfg.source.clone(),
                number: cache.number,
                ready: p.ready.iter().map(|r| r.id.clone()).collect(),
                filling: p.filling,
            };
            (reply, None)
        }
        Request::Take { config, state_root } => take(cache, &config, state_root.as_deref()).await,
    }
}

async fn take(cache: &Cache, config: &Path, root: Option<&Path>) -> (Reply, Option<Ready>) {
    if canonical(config) != canonical(&cache.cfg.source) {
        let message = format!(
            "this cache serves {}, not {}",
            cache.cfg.source.display(),
            config.display()
        );
        return (Reply::Error { message }, None);
    }
    if let Some(root) = root
        && canonical(root) != canonical(cache.root.path())
    {
        let message = format!(
            "this cache's VMs are in state root {}, not {}",
            cache.root.path().display(),
            root.display()
        );
        return (Reply::Error { message }, None);
    }
    let got = cache.pool.lock().await.ready.pop_front();
    cache.wake.notify_one();
    match got {
        Some(r) => (Reply::Taken { id: r.id.clone() }, Some(r)),
        None => (
            Reply::Error {
                message: "no VM ready yet (the cache is refilling)".into(),
            },
            None,
        ),
    }
}

/// `p` with links resolved, or as given when it cannot be.
fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}
