//! The async client: one connection, commands matched to replies by id, events fanned out.
//!
//! ```text
//!   Client::execute ──encode──► write half (mutex: one line at a time) ──► QEMU
//!        ▲  oneshot per id                                                    │
//!        └──── reader task ◄── read half (line by line) ◄─────────────────────┘
//!                  │ replies: by id to the waiting command
//!                  └ events: broadcast to every `Events` subscriber (QEMU's timestamps kept)
//! ```
//!
//! Commands may be issued concurrently from several tasks (`&self`). When the connection ends
//! (EOF, I/O error, protocol violation), every waiting command and every later one fails with
//! that error, and event subscribers see the end of the stream.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

use crate::error::QmpError;
use crate::event::Event;
use crate::protocol::{
    encode_command, excerpt, parse_greeting, parse_incoming, Greeting, Incoming, MAX_LINE,
};

/// Limits of one client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// How long to wait for the greeting after connecting.
    pub greeting_timeout: Duration,
    /// How long to wait for each command's reply.
    pub command_timeout: Duration,
    /// Events buffered per subscriber; a subscriber that falls further behind loses the oldest
    /// (counted in [`Events::lagged`]).
    pub event_capacity: usize,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            greeting_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(30),
            event_capacity: 1024,
        }
    }
}

type Reply = Result<Value, QmpError>;

struct Pending {
    command: String,
    tx: oneshot::Sender<Reply>,
}

#[derive(Default)]
struct ReplyTable {
    pending: HashMap<u64, Pending>,
    /// Why the connection ended, once it has.
    closed: Option<QmpError>,
}

#[derive(Default)]
struct Shared {
    table: Mutex<ReplyTable>,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, ReplyTable> {
        // A panic while holding this lock cannot leave the table inconsistent (every
        // critical section is a single map operation), so a poisoned lock is still usable.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Removes a command's entry if its caller stops waiting (timeout, or future dropped).
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.table().pending.remove(&self.id);
    }
}

type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A QMP connection in command mode (greeting read, `qmp_capabilities` done).
pub struct Client {
    greeting: Greeting,
    shared: Arc<Shared>,
    writer: tokio::sync::Mutex<Writer>,
    next_id: AtomicU64,
    /// Kept only to hand out new subscriptions; the reader task owns the sender, so
    /// subscribers see the end of the stream when the connection ends.
    events: broadcast::Receiver<Event>,
    reader: JoinHandle<()>,
    config: ClientConfig,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("greeting", &self.greeting)
            .field("next_id", &self.next_id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Client {
    /// Connects to a QMP unix socket and negotiates capabilities.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client, QmpError> {
        Client::connect_with(path, ClientConfig::default()).await
    }

    /// [`Client::connect`] with explicit limits.
    pub async fn connect_with(
        path: impl AsRef<Path>,
        config: ClientConfig,
    ) -> Result<Client, QmpError> {
        let stream = UnixStream::connect(path.as_ref()).await?;
        Client::handshake(stream, config).await
    }

    /// Connects, retrying while the socket does not exist yet or refuses connections (QEMU
    /// creates it a little after it starts; a QMP socket also refuses a second client while
    /// one is connected). Other errors end the wait at once.
    pub async fn connect_retry(
        path: impl AsRef<Path>,
        within: Duration,
        config: ClientConfig,
    ) -> Result<Client, QmpError> {
        let path = path.as_ref();
        let deadline = Instant::now() + within;
        loop {
            match UnixStream::connect(path).await {
                Ok(stream) => return Client::handshake(stream, config).await,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return Err(QmpError::timeout(
                            format!("connect to {} ({e})", path.display()),
                            within,
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(QmpError::Io(e)),
            }
        }
    }

    /// Runs the QMP handshake on any byte stream (a unix socket, or an in-memory duplex
    /// stream in tests): reads the greeting, starts the reader task, sends
    /// `qmp_capabilities`. Needs a tokio runtime.
    pub async fn handshake<S>(stream: S, config: ClientConfig) -> Result<Client, QmpError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(stream);
        let mut reader = BufReader::new(read);
        let mut line = Vec::new();
        let greeting =
            match timeout(config.greeting_timeout, read_line(&mut reader, &mut line)).await {
                Err(_) => return Err(QmpError::timeout("greeting", config.greeting_timeout)),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(false)) => return Err(QmpError::Closed),
                Ok(Ok(true)) => parse_greeting(&line)?,
            };
        tracing::debug!(version = %greeting.version, package = %greeting.package, "QMP greeting");

        let shared = Arc::new(Shared::default());
        let (tx, rx) = broadcast::channel(config.event_capacity.max(1));
        let reader = tokio::spawn(read_loop(reader, Arc::clone(&shared), tx));
        let client = Client {
            greeting,
            shared,
            writer: tokio::sync::Mutex::new(Box::new(write)),
            next_id: AtomicU64::new(1),
            events: rx,
            reader,
            config,
        };
        client.execute("qmp_capabilities", None).await?;
        Ok(client)
    }

    /// The server's greeting.
    pub fn greeting(&self) -> &Greeting {
        &self.greeting
    }

    /// A new event subscription: every event from now on, in order.
    ///
    /// Subscribe *before* issuing the command whose events you want to see.
    pub fn subscribe(&self) -> Events {
        Events {
            rx: self.events.resubscribe(),
            lagged: 0,
        }
    }

    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.table().closed.is_some()
    }

    /// Runs a command; `arguments` must be a JSON object or `None`. Returns QEMU's `return`.
    pub async fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let line = encode_command(command, arguments.as_ref(), id)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut table = self.shared.table();
            if let Some(err) = &table.closed {
                return Err(err.duplicate());
            }
            table.pending.insert(
                id,
                Pending {
                    command: command.to_owned(),
                    tx,
                },
            );
        }
        let _guard = PendingGuard {
            shared: &self.shared,
            id,
        };
        tracing::trace!(target: "srmig_qmp::wire", line = %excerpt(&line), "->");
        {
            let mut writer = self.writer.lock().await;
            let written = async {
                writer.write_all(&line).await?;
                writer.flush().await
            };
            if let Err(e) = written.await {
                // If the reader already saw the end, report that (more precise than EPIPE).
                return Err(match &self.shared.table().closed {
                    Some(closed) => closed.duplicate(),
                    None if is_disconnect(&e) => QmpError::Closed,
                    None => QmpError::Io(e),
                });
            }
        }
        match timeout(self.config.command_timeout, rx).await {
            Err(_) => Err(QmpError::timeout(
                format!("reply to {command}"),
                self.config.command_timeout,
            )),
            Ok(Err(_)) => Err(self
                .shared
                .table()
                .closed
                .as_ref()
                .map_or(QmpError::Closed, QmpError::duplicate)),
            Ok(Ok(reply)) => reply,
        }
    }

    /// Runs a command with serializable arguments and deserializes its result.
    pub async fn execute_as<A, R>(
        &self,
        command: &str,
        arguments: Option<&A>,
    ) -> Result<R, QmpError>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let args = match arguments {
            Some(a) => Some(serde_json::to_value(a).map_err(|e| {
                QmpError::protocol(format!("cannot encode the arguments of {command}: {e}"))
            })?),
            None => None,
        };
        let value = self.execute(command, args).await?;
        serde_json::from_value(value.clone()).map_err(|e| {
            QmpError::protocol(format!(
                "unexpected reply to {command} ({e}): {}",
                excerpt(value.to_string().as_bytes())
            ))
        })
    }
}

/// Reads one line (up to `\n`) into `buf`, bounded by [`MAX_LINE`]. False at EOF before any byte.
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    buf: &mut Vec<u8>,
) -> Result<bool, QmpError> {
    buf.clear();
    let limit = u64::try_from(MAX_LINE)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let n = match reader.take(limit).read_until(b'\n', buf).await {
        Ok(n) => n,
        // QEMU exits right after answering `quit`, with our next read pending: Linux reports
        // that as a reset on a unix socket. It is the end of the connection, not a failure.
        Err(e) if is_disconnect(&e) => {
            tracing::debug!(error = %e, "QMP peer disconnected");
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    };
    if n == 0 {
        return Ok(false);
    }
    if buf.last() != Some(&b'\n') {
        if buf.len() > MAX_LINE {
            return Err(QmpError::protocol(format!(
                "line longer than {MAX_LINE} bytes: {}",
                excerpt(buf)
            )));
        }
        // EOF in the middle of a line: the message is incomplete, the connection is gone.
        tracing::debug!(partial = %excerpt(buf), "QMP connection closed mid-line");
        return Ok(false);
    }
    Ok(true)
}

/// Errors that only mean "the peer is gone".
fn is_disconnect(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionAborted
    )
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: BufReader<R>,
    shared: Arc<Shared>,
    events: broadcast::Sender<Event>,
) {
    let mut line = Vec::with_capacity(4096);
    let end = loop {
        match read_line(&mut reader, &mut line).await {
            Err(e) => break e,
            Ok(false) => break QmpError::Closed,
            Ok(true) => {}
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        tracing::trace!(target: "srmig_qmp::wire", line = %excerpt(&line), "<-");
        match parse_incoming(&line) {
            Err(e) => break e,
            Ok(None) => tracing::warn!(line = %excerpt(&line), "unknown QMP message skipped"),
            Ok(Some(Incoming::Event(event))) => {
                tracing::debug!(event = %event.name, data = %event.data, "QMP event");
                // No subscriber is fine: nobody asked for events.
                let _ = events.send(event);
            }
            Ok(Some(reply)) => deliver(&shared, reply),
        }
    };
    match &end {
        QmpError::Closed => tracing::debug!("QMP connection closed"),
        e => tracing::warn!(error = %e, "QMP connection ended"),
    }
    let mut table = shared.table();
    for (_, pending) in table.pending.drain() {
        let _ = pending.tx.send(Err(end.duplicate()));
    }
    table.closed = Some(end);
}

/// Hands a reply to the command that waits for it.
fn deliver(shared: &Shared, reply: Incoming) {
    let mut table = shared.table();
    let key = match reply.reply_id() {
        Some(id) => Some(id),
        // QEMU omits the id when it could not parse the command at all; if exactly one
        // command is waiting the reply can only be for it.
        None if table.pending.len() == 1 => table.pending.keys().next().copied(),
        None => None,
    };
    let Some(pending) = key.and_then(|k| table.pending.remove(&k)) else {
        tracing::warn!(?reply, "QMP reply matches no waiting command; dropped");
        return;
    };
    let result = match reply {
        Incoming::Return { value, .. } => Ok(value),
        Incoming::Error { class, desc, .. } => Err(QmpError::Command {
            command: pending.command,
            class,
            desc,
        }),
        Incoming::Event(_) => return,
    };
    // The caller may have stopped waiting (its future was dropped): nothing to do.
    let _ = pending.tx.send(result);
}

/// A subscription to a client's events.
#[derive(Debug)]
pub struct Events {
    rx: broadcast::Receiver<Event>,
    lagged: u64,
}

impl Events {
    /// The next event; `None` once the connection has ended and every event was read.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            match self.rx.recv().await {
                Ok(event) => return Some(event),
                Err(broadcast::error::RecvError::Closed) => return None,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.lagged += n;
                    tracing::warn!(lost = n, "QMP event subscriber fell behind; events lost");
                }
            }
        }
    }

    /// The next event if one is already queued (never waits).
    pub fn try_next(&mut self) -> Option<Event> {
        loop {
            match self.rx.try_recv() {
                Ok(event) => return Some(event),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    self.lagged += n;
                    tracing::warn!(lost = n, "QMP event subscriber fell behind; events lost");
                }
                Err(_) => return None,
            }
        }
    }

    /// Waits for the first event matching `pred` (earlier events are consumed).
    pub async fn wait_for(
        &mut self,
        within: Duration,
        what: &str,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Result<Event, QmpError> {
        let wait = async {
            while let Some(event) = self.next().await {
                if pred(&event) {
                    return Ok(event);
                }
            }
            Err(QmpError::Closed)
        };
        timeout(within, wait)
            .await
            .unwrap_or_else(|_| Err(QmpError::timeout(format!("event {what}"), within)))
    }

    /// Events this subscriber lost by falling more than the capacity behind.
    pub fn lagged(&self) -> u64 {
        self.lagged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{FakeQemu, GREETING};
    use serde_json::json;

    #[tokio::test]
    async fn handshake_then_command() {
        let (client, mut qemu) = FakeQemu::pair();
        let server = tokio::spawn(async move {
            qemu.greet().await;
            let (id, cmd) = qemu.expect("qmp_capabilities").await;
            assert!(cmd.get("arguments").is_none());
            qemu.reply(&id, json!({})).await;
            let (id, _) = qemu.expect("query-status").await;
            qemu.reply(
                &id,
                json!({"status": "running", "singlestep": false, "running": true}),
            )
            .await;
            qemu
        });
        let client = Client::handshake(client, ClientConfig::default())
            .await
            .expect("handshake");
        assert_eq!(client.greeting().version.to_string(), "7.2.22");
        let status = client
            .execute("query-status", None)
            .await
            .expect("query-status");
        assert_eq!(status["status"], "running");
        server.await.expect("server");
    }

    #[tokio::test]
    async fn greeting_timeout_and_eof() {
        let config = ClientConfig {
            greeting_timeout: Duration::from_millis(50),
            ..ClientConfig::default()
        };
        let (client, qemu) = FakeQemu::pair();
        let err = Client::handshake(client, config.clone())
            .await
            .expect_err("no greeting");
        assert!(matches!(err, QmpError::Timeout { .. }), "{err:?}");
        drop(qemu);

        let (client, qemu) = FakeQemu::pair();
        drop(qemu);
        let err = Client::handshake(client, config).await.expect_err("eof");
        assert!(matches!(err, QmpError::Closed), "{err:?}");
    }

    #[tokio::test]
    async fn garbage_greeting_is_a_protocol_error() {
        let (client, mut qemu) = FakeQemu::pair();
        qemu.send_raw(b"{\"return\": {}}\r\n").await;
        let err = Client::handshake(client, ClientConfig::default())
            .await
            .expect_err("bad greeting");
        assert!(matches!(err, QmpError::Protocol(_)), "{err:?}");
    }

    #[tokio::test]
    async fn greeting_constant_is_accepted() {
        assert!(parse_greeting(GREETING.as_bytes()).is_ok());
    }

    /// QEMU closes its end right after `quit` while our next read is pending; over a real
    /// unix socket with unread data that is a reset, which must read as `Closed`.
    #[tokio::test]
    async fn reset_after_quit_is_a_clean_close() {
        let (client_end, server_end) = UnixStream::pair().expect("socketpair");
        let server = tokio::spawn(async move {
            let (read, mut write) = tokio::io::split(server_end);
            let mut read = BufReader::new(read);
            write
                .write_all(format!("{GREETING}\r\n").as_bytes())
                .await
                .expect("greet");
            let mut line = String::new();
            read.read_line(&mut line).await.expect("caps");
            let id: Value = serde_json::from_str::<Value>(&line).expect("json")["id"].clone();
            write
                .write_all(format!("{{\"return\": {{}}, \"id\": {id}}}\r\n").as_bytes())
                .await
                .expect("reply");
            // Leave `quit` and the pipelined command unread (so the kernel resets the
            // connection, as it does for QEMU) and vanish.
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        let client = Client::handshake(client_end, ClientConfig::default())
            .await
            .expect("handshake");
        let pipelined = client.execute("query-status", None);
        let (quit, pipelined) = tokio::join!(client.quit(), pipelined);
        quit.expect("quit counts as done when QEMU goes away");
        let err = pipelined.expect_err("no answer");
        assert!(matches!(err, QmpError::Closed), "{err:?}");
        server.await.expect("server");
        let err = client.stop().await.expect_err("closed");
        assert!(matches!(err, QmpError::Closed), "{err:?}");
    }

    #[tokio::test]
    async fn lagging_subscriber_counts_lost_events() {
        let config = ClientConfig {
            event_capacity: 2,
            ..ClientConfig::default()
        };
        let (stream, mut qemu) = FakeQemu::pair();
        let server = tokio::spawn(async move {
            qemu.negotiate().await;
            qemu
        });
        let client = Client::handshake(stream, config).await.expect("handshake");
        let mut qemu = server.await.expect("server");
        let mut events = client.subscribe();
        for i in 0..5 {
            qemu.event("MIGRATION_PASS", Some(json!({ "pass": i })), 1, i)
                .await;
        }
        qemu.close().await;
        let mut passes = Vec::new();
        while let Some(ev) = events.next().await {
            passes.push(ev.timestamp.microseconds);
        }
        assert_eq!(passes, vec![3, 4]);
        assert_eq!(events.lagged(), 3);
    }
}
