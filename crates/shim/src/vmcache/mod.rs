//! The warm VM cache (Kata's `[factory] vm_cache_number`): `sandvm-vmcache`
//! keeps that many VMs of one config started, their agent answering, then
//! paused, and hands one to each shim that asks; it refills in the
//! background.
//!
//! ```text
//! sandvm-vmcache --config C      keeps N sandboxes `vmc-<hex>` of C, paused,
//!                                each with its share folder; listens on
//!                                C's vm_cache_endpoint
//! shim (config C, N > 0)  ──{"op":"take","config":C}──>  server
//!                         <──{"taken":{"id":"vmc-…"}}──  (drops its handle)
//! shim: attach to the sandbox, resume it, hot-plug the pod's NICs, set the
//!       guest clock, CreateSandbox: the sandbox is the shim's from here on
//! ```
//!
//! A shim that gets no VM (no server, an empty cache, another config, a pod
//! that sizes its VM by annotation) boots its own, and its log says why.

mod server;

pub use server::{CacheError, serve};

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Prefix of the ids of the cache's sandboxes (`sandvm list` shows them).
pub const CACHE_ID_PREFIX: &str = "vmc-";

/// How long a shim waits for the cache's answer (it boots its own after).
pub const TAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest request or reply line.
const MAX_LINE: usize = 4096;

/// A request to the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Hand over a ready VM of config `config` (the canonical path).
    Take {
        /// The config the shim loaded.
        config: PathBuf,
        /// The shim's state root: the cache's VMs live in the cache's, and
        /// a shim can only attach to one in its own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state_root: Option<PathBuf>,
    },
    /// What the cache holds.
    Status,
}

/// The cache's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    /// The sandbox now the caller's: attach to it by id.
    Taken {
        /// Its sandbox id.
        id: String,
    },
    /// What it holds.
    Status {
        /// Its config.
        config: PathBuf,
        /// `vm_cache_number`.
        number: usize,
        /// Ready (paused) sandboxes.
        ready: Vec<String>,
        /// Sandboxes being made.
        filling: usize,
    },
    /// Why not.
    Error {
        /// The reason.
        message: String,
    },
}

/// Why a shim got no VM from the cache.
#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    /// Nothing listens on the endpoint, or the exchange failed.
    #[error("VM cache {endpoint}: {source}")]
    Io {
        /// The endpoint.
        endpoint: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The cache did not answer in time.
    #[error("VM cache {endpoint}: no answer within {TAKE_TIMEOUT:?}")]
    Timeout {
        /// The endpoint.
        endpoint: String,
    },
    /// The answer is not one of ours.
    #[error("VM cache {endpoint}: unexpected answer {answer:?}")]
    Malformed {
        /// The endpoint.
        endpoint: String,
        /// What came.
        answer: String,
    },
    /// The cache refused.
    #[error("VM cache {endpoint}: {message}")]
    Refused {
        /// The endpoint.
        endpoint: String,
        /// Its reason.
        message: String,
    },
}

/// One request, one reply, on `endpoint`.
pub async fn call(endpoint: &Path, req: &Request) -> Result<Reply, TakeError> {
    let ep = endpoint.display().to_string();
    let io = |source| TakeError::Io {
        endpoint: ep.clone(),
        source,
    };
    let work = async {
        let mut s = UnixStream::connect(endpoint).await.map_err(io)?;
        let mut line = serde_json::to_vec(req).map_err(|e| io(e.into()))?;
        line.push(b'\n');
        s.write_all(&line).await.map_err(io)?;
        let mut answer = String::new();
        let mut r = BufReader::new(s).take(MAX_LINE as u64);
        r.read_line(&mut answer).await.map_err(io)?;
        serde_json::from_str::<Reply>(answer.trim()).map_err(|_| TakeError::Malformed {
            endpoint: ep.clone(),
            answer: answer.chars().take(200).collect(),
        })
    };
    tokio::time::timeout(TAKE_TIMEOUT, work)
        .await
        .map_err(|_| TakeError::Timeout {
            endpoint: ep.clone(),
        })?
}

/// Asks the cache at `endpoint` for a VM of `config` in state root
/// `root`: its sandbox id.
pub async fn take(endpoint: &Path, config: &Path, root: &Path) -> Result<String, TakeError> {
    let ep = endpoint.display().to_string();
    let req = Request::Take {
        config: config.to_path_buf(),
        state_root: Some(root.to_path_buf()),
    };
    match call(endpoint, &req).await? {
        Reply::Taken { id }
            if runtime::validate_id(&id).is_ok() && id.starts_with(CACHE_ID_PREFIX) =>
        {
            Ok(id)
        }
        Reply::Error { message } => Err(TakeError::Refused {
            endpoint: ep,
            message,
        }),
        other => Err(TakeError::Malformed {
            endpoint: ep,
            answer: format!("{other:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_format_is_one_json_object_per_line() {
        let r = Request::Take {
            config: "/etc/sandvm/c.toml".into(),
            state_root: Some("/run/sandvm".into()),
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"op":"take","config":"/etc/sandvm/c.toml","state_root":"/run/sandvm"}"#
        );
        let back: Request = serde_json::from_str(&s).unwrap();
        assert_eq!(back, r);
        let old: Request = serde_json::from_str(r#"{"op":"take","config":"/c"}"#).unwrap();
        assert_eq!(
            old,
            Request::Take {
                config: "/c".into(),
                state_root: None
            }
        );
        let t = serde_json::to_string(&Reply::Taken { id: "vmc-1".into() }).unwrap();
        assert_eq!(t, r#"{"taken":{"id":"vmc-1"}}"#);
        assert!(serde_json::from_str::<Reply>(r#"{"taken":{}}"#).is_err());
    }
}
