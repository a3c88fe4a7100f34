//! The QMP client: connection setup, pipelined execution, events, closing.

use std::collections::HashMap;
use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::AbortHandle;

use crate::error::{Error, Result};
use crate::events::Event;
use crate::protocol::{Greeting, Message, ProtocolError, encode_command, parse_message};
use crate::reader::{self, LineReader, ReadError};
use crate::writer::{SendError, Writer};
use crate::{MAX_MESSAGE_SIZE, MIN_QEMU_VERSION};

/// Default per-command timeout ([`ClientOptions::command_timeout`]).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time allowed for greeting plus `qmp_capabilities`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default capacity of the event broadcast channel.
pub const DEFAULT_EVENT_CAPACITY: usize = 1024;

/// Connection options.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Timeout applied to every command that is not given its own
    /// (`None`: wait until the reply or the connection closes).
    pub command_timeout: Option<Duration>,
    /// Time allowed to receive the greeting and finish negotiation.
    pub handshake_timeout: Duration,
    /// Events buffered per subscriber before it lags.
    pub event_capacity: usize,
    /// Enable out-of-band execution when QEMU offers it.
    pub enable_oob: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            command_timeout: Some(DEFAULT_COMMAND_TIMEOUT),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            enable_oob: true,
        }
    }
}

type Reply = Result<Value>;

struct State {
    pending: HashMap<u64, oneshot::Sender<Reply>>,
    closed: bool,
    events: Option<broadcast::Sender<Event>>,
}

/// State shared by the client handles, the reader task and the flusher.
pub(crate) struct Shared {
    state: Mutex<State>,
    closed_tx: watch::Sender<Option<Error>>,
    /// The socket's write side. Closing the connection (the last handle
    /// dropped, EOF, or a protocol error) shuts the socket down at once, even
    /// when the runtime is not polling the reader task: QEMU serves one
    /// monitor client at a time, and a peer must not block writing to us.
    writer: Writer,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands a reply to the caller waiting on `id`, if any.
    pub(crate) fn complete(&self, id: Option<&Value>, reply: Reply) {
        let Some(num) = id.and_then(Value::as_u64) else {
            tracing::warn!(?id, ?reply, "QMP reply without a usable id, discarded");
            return;
        };
        let tx = self.lock().pending.remove(&num);
        match tx {
            // The caller may have given up in the meantime; that is fine.
            Some(tx) => drop(tx.send(reply)),
            None => tracing::debug!(id = num, "late QMP reply discarded"),
        }
    }

    /// Marks the connection closed and fails every pending command.
    ///
    /// Pending commands get `reason`; later commands get `Disconnected`.
    pub(crate) fn close(&self, reason: Error) {
        let (pending, events) = {
            let mut st = self.lock();
            if st.closed {
                return;
            }
            st.closed = true;
            (std::mem::take(&mut st.pending), st.events.take())
        };
        tracing::debug!(reason = %reason, pending = pending.len(), "QMP connection closed");
        for (_, tx) in pending {
            let _ = tx.send(Err(reason.clone()));
        }
        drop(events);
        self.writer.close();
        let _ = nix::sys::socket::shutdown(self.writer.raw_fd(), nix::sys::socket::Shutdown::Both);
        self.closed_tx.send_replace(Some(reason));
    }

    /// A receiver that turns `Some(reason)` once the connection is closed.
    pub(crate) fn closed_watch(&self) -> watch::Receiver<Option<Error>> {
        self.closed_tx.subscribe()
    }

    /// The socket's write side.
    pub(crate) fn writer(&self) -> &Writer {
        &self.writer
    }

    fn remove(&self, id: u64) {
        self.lock().pending.remove(&id);
    }
}

struct Inner {
    shared: Arc<Shared>,
    next_id: AtomicU64,
    greeting: Greeting,
    oob: bool,
    /// Serialises fd-passing commands until each has its reply, so QEMU
    /// pairs every fd with the right `getfd` / `add-fd`.
    fd_lock: tokio::sync::Mutex<()>,
    reader: AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
        self.shared.close(Error::Disconnected);
    }
}

/// A QMP connection. Cheap to clone; all clones share one connection.
///
/// The connection stays open while any clone exists (or until QEMU closes it).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    timeout: Option<Duration>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("greeting", &self.inner.greeting)
            .field("oob", &self.inner.oob)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Removes a pending entry when the call future is dropped before its reply.
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.remove(self.id);
        }
    }
}

impl Client {
    /// Connects to the QMP Unix socket at `path` and negotiates capabilities.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self> {
        Self::connect_with(path, ClientOptions::default()).await
    }

    /// Like [`Client::connect`], with options.
    pub async fn connect_with(path: impl AsRef<Path>, options: ClientOptions) -> Result<Self> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| Error::Connect {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        Self::from_stream_with(stream, options).await
    }

    /// Takes over an already connected stream (e.g. accepted from a
    /// pre-bound listener), reads the greeting and negotiates capabilities.
    pub async fn from_stream(stream: UnixStream) -> Result<Self> {
        Self::from_stream_with(stream, ClientOptions::default()).await
    }

    /// Like [`Client::from_stream`], with options.
    pub async fn from_stream_with(stream: UnixStream, options: ClientOptions) -> Result<Self> {
        let deadline = tokio::time::Instant::now() + options.handshake_timeout;
        let (read_half, write_half) = stream.into_split();
        let mut lines = LineReader::new(read_half, MAX_MESSAGE_SIZE);
        let greeting = tokio::time::timeout_at(deadline, read_greeting(&mut lines))
            .await
            .map_err(|_| Error::Timeout {
                command: "greeting".into(),
            })??;
        let v = greeting.version;
        if (v.major, v.minor) < MIN_QEMU_VERSION {
            return Err(Error::UnsupportedVersion {
                major: v.major,
                minor: v.minor,
                micro: v.micro,
            });
        }
        tracing::debug!(version = ?v, capabilities = ?greeting.capabilities, "QMP greeting");

        let (events_tx, _) = broadcast::channel(options.event_capacity.max(1));
        let (closed_tx, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pending: HashMap::new(),
                closed: false,
                events: Some(events_tx.clone()),
            }),
            closed_tx,
            writer: Writer::new(write_half),
        });
        let reader = tokio::spawn(reader::run(lines, shared.clone(), events_tx)).abort_handle();

        let oob = options.enable_oob && greeting.capabilities.iter().any(|c| c == "oob");
        let client = Client {
            inner: Arc::new(Inner {
                shared,
                next_id: AtomicU64::new(1),
                greeting,
                oob,
                fd_lock: tokio::sync::Mutex::new(()),
                reader,
            }),
            timeout: options.command_timeout,
        };
        let args = oob.then(|| json!({"enable": ["oob"]}));
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        client
            .call(
                "qmp_capabilities",
                args.as_ref(),
                Vec::new(),
                Some(remaining),
                false,
            )
            .await?;
        Ok(client)
    }

    /// The greeting QEMU sent.
    pub fn greeting(&self) -> &Greeting {
        &self.inner.greeting
    }

    /// Whether out-of-band execution was negotiated.
    pub fn oob_enabled(&self) -> bool {
        self.inner.oob
    }

    /// The timeout this handle applies to commands.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// A handle on the same connection whose commands use `timeout`
    /// (`None`: no timeout).
    pub fn with_timeout(&self, timeout: Option<Duration>) -> Client {
        Client {
            inner: self.inner.clone(),
            timeout,
        }
    }

    /// Subscribes to events. Only events arriving after this call are seen.
    ///
    /// The receiver reports `Closed` once the connection has closed.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        match &self.inner.shared.lock().events {
            Some(tx) => tx.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    /// True once the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.lock().closed
    }

    /// Resolves when the connection closes, with the reason
    /// ([`Error::Disconnected`] or [`Error::Protocol`]).
    pub fn closed(&self) -> impl Future<Output = Error> + Send + 'static {
        let mut rx = self.inner.shared.closed_tx.subscribe();
        async move {
            match rx.wait_for(Option::is_some).await {
                Ok(r) => r.clone().unwrap_or(Error::Disconnected),
                Err(_) => Error::Disconnected,
            }
        }
    }

    /// Executes a command and returns its `return` value.
    pub async fn execute(&self, name: &str, arguments: Option<Value>) -> Result<Value> {
        self.call(name, arguments.as_ref(), Vec::new(), self.timeout, false)
            .await
    }

    /// Executes a command with its own timeout.
    pub async fn execute_with_timeout(
        &self,
        name: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value> {
        self.call(name, arguments.as_ref(), Vec::new(), Some(timeout), false)
            .await
    }

    /// Executes a command out of band (`exec-oob`). Only commands that QEMU
    /// marks `allow-oob` accept this; the reply may overtake in-band replies.
    /// Falls back to in-band when OOB was not negotiated.
    pub async fn execute_oob(&self, name: &str, arguments: Option<Value>) -> Result<Value> {
        self.call(
            name,
            arguments.as_ref(),
            Vec::new(),
            self.timeout,
            self.inner.oob,
        )
        .await
    }

    /// Executes a command while passing `fds` with `SCM_RIGHTS`.
    ///
    /// The fds are duplicated; the caller keeps its own. Fd-passing commands
    /// are serialised among themselves (each waits for its reply before the
    /// next is sent); other commands keep flowing.
    pub async fn execute_with_fds(
        &self,
        name: &str,
        arguments: Option<Value>,
        fds: &[impl AsFd],
    ) -> Result<Value> {
        let owned = fds
            .iter()
            .map(|f| {
                f.as_fd()
                    .try_clone_to_owned()
                    .map_err(|e| Error::InvalidArgument {
                        name: "fd".into(),
                        message: e.to_string(),
                    })
            })
            .collect::<Result<Vec<OwnedFd>>>()?;
        let _serial = self.inner.fd_lock.lock().await;
        self.call(name, arguments.as_ref(), owned, self.timeout, false)
            .await
    }

    /// Executes a command, then waits for the first event accepted by
    /// `filter`. The subscription starts before the command is sent, so an
    /// event that arrives before the reply is not missed. `timeout` bounds
    /// the whole operation.
    pub async fn execute_until(
        &self,
        name: &str,
        arguments: Option<Value>,
        filter: impl Fn(&Event) -> bool,
        timeout: Duration,
    ) -> Result<(Value, Event)> {
        let mut events = self.events();
        let closed = self.closed();
        let work = async {
            let reply = self
                .call(name, arguments.as_ref(), Vec::new(), None, false)
                .await?;
            tokio::pin!(closed);
            loop {
                tokio::select! {
                    ev = events.recv() => match ev {
                        Ok(ev) if filter(&ev) => return Ok((reply, ev)),
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(command = name, skipped = n, "event subscriber lagged");
                        }
                        Err(broadcast::error::RecvError::Closed) => return Err(Error::Disconnected),
                    },
                    _ = &mut closed => {
                        // Drain events that arrived before the close.
                        while let Ok(ev) = events.try_recv() {
                            if filter(&ev) {
                                return Ok((reply, ev));
                            }
                        }
                        return Err(Error::Disconnected);
                    }
                }
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| Error::Timeout {
                command: name.to_string(),
            })?
    }

    /// The connection's shared state (for the crate's tests).
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    pub(crate) fn default_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Sends one command and waits for its reply.
    async fn call(
        &self,
        name: &str,
        arguments: Option<&Value>,
        fds: Vec<OwnedFd>,
        timeout: Option<Duration>,
        oob: bool,
    ) -> Result<Value> {
        let shared_arc = &self.inner.shared;
        let shared = &**shared_arc;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut bytes = Vec::with_capacity(64);
        encode_command(&mut bytes, name, arguments, id, oob);
        let (tx, rx) = oneshot::channel();
        {
            let mut st = shared.lock();
            if st.closed {
                return Err(Error::Disconnected);
            }
            st.pending.insert(id, tx);
        }
        let mut guard = PendingGuard {
            shared,
            id,
            armed: true,
        };
        tracing::trace!(command = name, id, "QMP send");
        // Written (or queued whole) before the first await: a cancelled
        // caller never leaves half a command on the socket.
        match shared.writer.send(shared_arc, bytes, fds) {
            Ok(()) => {}
            Err(SendError::Closed) => return Err(Error::Disconnected),
            Err(SendError::Io(e)) => {
                tracing::warn!(error = %e, "QMP write failed");
                shared.close(Error::Disconnected);
                return Err(Error::Disconnected);
            }
        }
        let wait = async {
            let r = rx.await.unwrap_or(Err(Error::Disconnected));
            guard.armed = false;
            r
        };
        match timeout {
            Some(d) => tokio::time::timeout(d, wait)
                .await
                .map_err(|_| Error::Timeout {
                    command: name.to_string(),
                })?,
            None => wait.await,
        }
    }
}

async fn read_greeting(
    lines: &mut LineReader<tokio::net::unix::OwnedReadHalf>,
) -> Result<Greeting> {
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) | Err(ReadError::Io(_)) => return Err(Error::Disconnected),
            Err(ReadError::Protocol(ProtocolError::Truncated)) => return Err(Error::Disconnected),
            Err(ReadError::Protocol(e)) => return Err(Error::Protocol(e)),
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        return match parse_message(line)? {
            Message::Greeting(g) => Ok(g),
            Message::Return { .. } => Err(ProtocolError::Unexpected("return").into()),
            Message::Error { .. } => Err(ProtocolError::Unexpected("error").into()),
            Message::Event(_) => Err(ProtocolError::Unexpected("event").into()),
        };
    }
}
