//! Work inside a network namespace: a thread of its own enters it
//! (`setns`, which changes only the calling thread) and runs a small
//! current-thread runtime with a netlink connection opened there, so a
//! tokio worker of the shim never changes namespace.

use std::future::Future;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use rtnetlink::Handle;

use super::NetError;

fn enter(path: &Path) -> Result<(), NetError> {
    let io = |source| NetError::Enter {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| io(e.into()))
}

fn work<T, F, Fut>(path: &Path, f: F) -> Result<T, NetError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, NetError>>,
{
    enter(path)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| NetError::Thread {
            path: path.to_path_buf(),
            why: format!("no runtime: {e}"),
        })?;
    rt.block_on(async {
        // the socket belongs to the namespace the thread is in now
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| NetError::Socket {
            path: path.to_path_buf(),
            source,
        })?;
        let task = tokio::spawn(conn);
        let r = f(handle).await;
        task.abort();
        r
    })
}

/// Runs `f` with a netlink handle of the namespace at `path`, on a thread
/// that entered it; the thread ends with `f`.
pub async fn run_in<T, F, Fut>(path: &Path, f: F) -> Result<T, NetError>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetError>>,
{
    let p: PathBuf = path.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("sandvm-netns".into())
        .spawn(move || {
            let _ = tx.send(work(&p, f));
        });
    if let Err(e) = spawned {
        return Err(NetError::Thread {
            path: path.to_path_buf(),
            why: e.to_string(),
        });
    }
    rx.await.unwrap_or_else(|_| {
        Err(NetError::Thread {
            path: path.to_path_buf(),
            why: "it panicked".into(),
        })
    })
}
