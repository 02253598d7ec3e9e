//! A scripted QEMU on the far end of an in-memory duplex stream, for transcript tests.

use std::collections::HashMap;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};

/// The greeting of the QEMU on this machine (Debian bookworm's qemu-system-x86 7.2.22).
pub(crate) const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}"#;

/// The server side of a QMP transcript.
pub(crate) struct FakeQemu {
    reader: BufReader<ReadHalf<DuplexStream>>,
    writer: WriteHalf<DuplexStream>,
}

impl FakeQemu {
    /// A connected pair: the client's stream and the fake server.
    pub(crate) fn pair() -> (DuplexStream, FakeQemu) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (read, write) = tokio::io::split(server);
        (
            client,
            FakeQemu {
                reader: BufReader::new(read),
                writer: write,
            },
        )
    }

    /// Writes bytes as they are (QEMU ends lines with `\r\n`).
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("fake qemu write");
        self.writer.flush().await.expect("fake qemu flush");
    }

    async fn send(&mut self, msg: Value) {
        let mut line = serde_json::to_vec(&msg).expect("encode");
        line.extend_from_slice(b"\r\n");
        self.send_raw(&line).await;
    }

    pub(crate) async fn greet(&mut self) {
        let line = format!("{GREETING}\r\n");
        self.send_raw(line.as_bytes()).await;
    }

    /// Greets and accepts `qmp_capabilities`.
    pub(crate) async fn negotiate(&mut self) {
        self.greet().await;
        let (id, _) = self.expect("qmp_capabilities").await;
        self.reply(&id, json!({})).await;
    }

    /// Reads the next command and checks its name; returns its id and the whole message.
    pub(crate) async fn expect(&mut self, name: &str) -> (Value, Value) {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .await
            .expect("fake qemu read");
        assert!(n > 0, "client closed while {name} was expected");
        let msg: Value = serde_json::from_str(&line).expect("client sent JSON");
        assert_eq!(msg["execute"], name, "unexpected command {line}");
        let id = msg.get("id").cloned().expect("command without id");
        (id, msg)
    }

    pub(crate) async fn reply(&mut self, id: &Value, ret: Value) {
        self.send(json!({"return": ret, "id": id})).await;
    }

    pub(crate) async fn error(&mut self, id: &Value, class: &str, desc: &str) {
        self.send(json!({"id": id, "error": {"class": class, "desc": desc}}))
            .await;
    }

    pub(crate) async fn event(
        &mut self,
        name: &str,
        data: Option<Value>,
        seconds: i64,
        micros: i64,
    ) {
        let mut msg =
            json!({"timestamp": {"seconds": seconds, "microseconds": micros}, "event": name});
        if let Some(data) = data {
            msg["data"] = data;
        }
        self.send(msg).await;
    }

    /// Closes the connection (QEMU exiting).
    pub(crate) async fn close(mut self) {
        let _ = self.writer.shutdown().await;
    }

    /// Plays the QEMU side of a recorded transcript (`-> cmd` from the client, `<- msg` from
    /// QEMU, `EOF ...`, `#` comments). Commands must match by name and arguments; replies get
    /// the id the client actually used. Lines are sent byte for byte unless an id changes.
    pub(crate) async fn replay(mut self, transcript: &str) {
        let mut ids: HashMap<String, Value> = HashMap::new();
        for line in transcript.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(cmd) = line.strip_prefix("-> ") {
                let recorded: Value = serde_json::from_str(cmd).expect("recorded command");
                let name = recorded["execute"].as_str().expect("recorded command name");
                let (id, got) = self.expect(name).await;
                assert_eq!(
                    got.get("arguments"),
                    recorded.get("arguments"),
                    "arguments of {name}"
                );
                ids.insert(recorded["id"].to_string(), id);
            } else if let Some(msg) = line.strip_prefix("<- ") {
                let mut value: Value = serde_json::from_str(msg).expect("recorded message");
                let recorded_id = value.get("id").cloned();
                match recorded_id {
                    Some(rid) => {
                        let actual = ids
                            .get(&rid.to_string())
                            .cloned()
                            .unwrap_or_else(|| panic!("reply to an unrecorded command: {line}"));
                        if actual == rid {
                            self.send_raw(format!("{msg}\r\n").as_bytes()).await;
                        } else {
                            value["id"] = actual;
                            self.send(value).await;
                        }
                    }
                    None => self.send_raw(format!("{msg}\r\n").as_bytes()).await,
                }
            } else if line.starts_with("EOF") {
                self.close().await;
                return;
            } else {
                panic!("bad transcript line: {line}");
            }
        }
    }
}
