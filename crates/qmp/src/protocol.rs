//! QMP on the wire, without I/O: the greeting, command encoding, and the three kinds of
//! server messages (success reply, error reply, event).
//!
//! QMP is line-delimited JSON over a stream socket. A session looks like this (`C:` client,
//! `S:` QEMU; every message is one line):
//!
//! ```text
//! S: {"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "..."},
//!             "capabilities": ["oob"]}}
//! C: {"execute": "qmp_capabilities", "id": 1}
//! S: {"return": {}, "id": 1}
//! C: {"execute": "migrate", "arguments": {"uri": "tcp:127.0.0.1:4441"}, "id": 2}
//! S: {"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": "MIGRATION",
//!     "data": {"status": "setup"}}
//! S: {"return": {}, "id": 2}
//! C: {"execute": "migrate", "id": 3}
//! S: {"id": 3, "error": {"class": "GenericError", "desc": "Parameter 'uri' is missing"}}
//! ```
//!
//! Events may arrive at any point between replies; replies carry the `id` of their command.
//! Before `qmp_capabilities` the server is in negotiation mode and sends no events.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::QmpError;
use crate::event::{Event, Timestamp};

/// The longest line we accept from QEMU. Real replies are a few KiB (`query-qmp-schema` is the
/// big one at ~200 KiB); anything beyond this is a broken peer, not QMP.
pub const MAX_LINE: usize = 8 * 1024 * 1024;

/// QEMU's version, from the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QemuVersion {
    /// Major version (7 for QEMU 7.2.22).
    pub major: u32,
    /// Minor version (2 for QEMU 7.2.22).
    pub minor: u32,
    /// Micro version (22 for QEMU 7.2.22).
    pub micro: u32,
}

impl std::fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// The server's first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// QEMU's version.
    pub version: QemuVersion,
    /// The distribution's package string, e.g. `Debian 1:7.2+dfsg-7+deb12u18+b3`.
    pub package: String,
    /// Capabilities the server offers (e.g. `oob`); this client enables none of them.
    pub capabilities: Vec<String>,
}

#[derive(Deserialize)]
struct GreetingWire {
    #[serde(rename = "QMP")]
    qmp: GreetingBody,
}

#[derive(Deserialize)]
struct GreetingBody {
    version: VersionWire,
    #[serde(default)]
    capabilities: Vec<String>,
}

#[derive(Deserialize)]
struct VersionWire {
    qemu: QemuVersion,
    #[serde(default)]
    package: String,
}

/// Parses the greeting line.
pub fn parse_greeting(line: &[u8]) -> Result<Greeting, QmpError> {
    let wire: GreetingWire = serde_json::from_slice(line)
        .map_err(|e| QmpError::protocol(format!("bad greeting ({e}): {}", excerpt(line))))?;
    Ok(Greeting {
        version: wire.qmp.version.qemu,
        package: wire.qmp.version.package.trim().to_owned(),
        capabilities: wire.qmp.capabilities,
    })
}

/// One command, ready to send: `{"execute": name, "arguments": {...}, "id": id}` + `\n`.
///
/// `arguments` must be a JSON object (QMP rejects anything else); `None` and `Value::Null`
/// omit it.
pub fn encode_command(name: &str, arguments: Option<&Value>, id: u64) -> Result<Vec<u8>, QmpError> {
    let mut msg = Map::new();
    msg.insert("execute".into(), Value::String(name.to_owned()));
    match arguments {
        None | Some(Value::Null) => {}
        Some(args @ Value::Object(_)) => {
            msg.insert("arguments".into(), args.clone());
        }
        Some(other) => {
            return Err(QmpError::protocol(format!(
                "arguments of {name} must be a JSON object, not {other}"
            )))
        }
    }
    msg.insert("id".into(), Value::from(id));
    let mut line = serde_json::to_vec(&Value::Object(msg))
        .map_err(|e| QmpError::protocol(format!("cannot encode {name}: {e}")))?;
    line.push(b'\n');
    Ok(line)
}

/// A message from QEMU after the greeting.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// `{"return": ..., "id": ...}`.
    Return {
        /// The id of the command answered (`None` if QEMU could not read one).
        id: Option<Value>,
        /// The command's result.
        value: Value,
    },
    /// `{"error": {"class": ..., "desc": ...}, "id": ...}`.
    Error {
        /// The id of the command answered (`None` when QEMU could not parse the command).
        id: Option<Value>,
        /// Error class.
        class: String,
        /// Human-readable description.
        desc: String,
    },
    /// `{"event": ..., "timestamp": {...}, "data": {...}}`.
    Event(Event),
}

impl Incoming {
    /// The reply's id as the `u64` this client sends, if it is one.
    pub fn reply_id(&self) -> Option<u64> {
        match self {
            Incoming::Return { id, .. } | Incoming::Error { id, .. } => {
                id.as_ref().and_then(Value::as_u64)
            }
            Incoming::Event(_) => None,
        }
    }
}

/// Parses one line after the greeting.
///
/// `Ok(None)` is a well-formed JSON object that is none of the three known messages (a newer
/// QEMU may add some; the caller logs and skips it). Invalid JSON is a protocol error.
pub fn parse_incoming(line: &[u8]) -> Result<Option<Incoming>, QmpError> {
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        QmpError::protocol(format!("invalid JSON from QEMU ({e}): {}", excerpt(line)))
    })?;
    let Value::Object(mut obj) = value else {
        return Err(QmpError::protocol(format!(
            "QMP message is not an object: {}",
            excerpt(line)
        )));
    };
    if let Some(value) = obj.remove("return") {
        return Ok(Some(Incoming::Return {
            id: obj.remove("id"),
            value,
        }));
    }
    if let Some(err) = obj.remove("error") {
        let field = |name: &str| {
            err.get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    QmpError::protocol(format!("error reply without {name}: {}", excerpt(line)))
                })
        };
        return Ok(Some(Incoming::Error {
            id: obj.remove("id"),
            class: field("class")?,
            desc: field("desc")?,
        }));
    }
    if let Some(name) = obj.remove("event") {
        let Value::String(name) = name else {
            return Err(QmpError::protocol(format!(
                "event name is not a string: {}",
                excerpt(line)
            )));
        };
        let timestamp = match obj.remove("timestamp") {
            Some(ts) => serde_json::from_value::<Timestamp>(ts).map_err(|e| {
                QmpError::protocol(format!("bad event timestamp ({e}): {}", excerpt(line)))
            })?,
            None => {
                return Err(QmpError::protocol(format!(
                    "event without timestamp: {}",
                    excerpt(line)
                )))
            }
        };
        let data = obj.remove("data").unwrap_or(Value::Null);
        return Ok(Some(Incoming::Event(Event::new(name, timestamp, data))));
    }
    Ok(None)
}

/// The start of a line, for error messages (never the whole of a huge line).
pub(crate) fn excerpt(line: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&line[..line.len().min(MAX)]);
    if line.len() > MAX {
        format!("{}...", text.trim_end())
    } else {
        text.trim_end().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use crate::types::MigrationStatus;

    /// The greeting of the QEMU on this machine (Debian bookworm's qemu-system-x86).
    const GREETING_7_2: &str = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}"#;

    #[test]
    fn parses_real_greeting() {
        let g = parse_greeting(GREETING_7_2.as_bytes()).expect("greeting");
        assert_eq!(
            g.version,
            QemuVersion {
                major: 7,
                minor: 2,
                micro: 22
            }
        );
        assert_eq!(g.version.to_string(), "7.2.22");
        assert_eq!(g.package, "Debian 1:7.2+dfsg-7+deb12u18+b3");
        assert_eq!(g.capabilities, vec!["oob".to_owned()]);
    }

    #[test]
    fn rejects_a_reply_as_greeting() {
        let err = parse_greeting(br#"{"return": {}}"#).expect_err("not a greeting");
        assert!(matches!(err, QmpError::Protocol(_)), "{err:?}");
        assert!(parse_greeting(b"\xff\xfe").is_err());
    }

    #[test]
    fn encodes_commands_with_ids() {
        let line = encode_command("qmp_capabilities", None, 1).expect("encode");
        assert_eq!(line, b"{\"execute\":\"qmp_capabilities\",\"id\":1}\n");
        let args = serde_json::json!({"uri": "tcp:127.0.0.1:4441"});
        let line = encode_command("migrate", Some(&args), 7).expect("encode");
        let back: Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(
            back,
            serde_json::json!({"execute": "migrate", "arguments": {"uri": "tcp:127.0.0.1:4441"}, "id": 7})
        );
        assert!(line.ends_with(b"\n") && !line[..line.len() - 1].contains(&b'\n'));
        assert!(encode_command("x", Some(&Value::from(3)), 1).is_err());
        assert_eq!(
            encode_command("x", Some(&Value::Null), 2).expect("null args"),
            b"{\"execute\":\"x\",\"id\":2}\n"
        );
    }

    #[test]
    fn parses_return_error_and_event() {
        let r = parse_incoming(
            br#"{"return": {"status": "running", "singlestep": false, "running": true}, "id": 3}"#,
        )
        .expect("ok")
        .expect("known");
        assert_eq!(r.reply_id(), Some(3));
        assert!(matches!(r, Incoming::Return { .. }));

        let e = parse_incoming(
            br#"{"id": 4, "error": {"class": "GenericError", "desc": "There's a migration process in progress"}}"#,
        )
        .expect("ok")
        .expect("known");
        assert_eq!(
            e,
            Incoming::Error {
                id: Some(Value::from(4)),
                class: "GenericError".into(),
                desc: "There's a migration process in progress".into()
            }
        );

        let ev = parse_incoming(
            br#"{"timestamp": {"seconds": 1763900000, "microseconds": 250001}, "event": "MIGRATION", "data": {"status": "completed"}}"#,
        )
        .expect("ok")
        .expect("known");
        let Incoming::Event(ev) = ev else {
            panic!("not an event")
        };
        assert_eq!(
            ev.kind,
            EventKind::Migration {
                status: MigrationStatus::Completed
            }
        );
        assert_eq!(ev.timestamp.as_micros(), 1_763_900_000_250_001);
    }

    #[test]
    fn error_reply_without_id_is_kept() {
        let e = parse_incoming(
            br#"{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}"#,
        )
        .expect("ok")
        .expect("known");
        assert_eq!(e.reply_id(), None);
    }

    #[test]
    fn unknown_and_invalid_messages() {
        assert_eq!(parse_incoming(br#"{"something": 1}"#).expect("ok"), None);
        for bad in [
            &b"not json"[..],
            b"[1,2]",
            b"{\"event\": 5, \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}",
            b"{\"event\": \"STOP\"}",
            b"{\"error\": {\"class\": \"X\"}}",
        ] {
            let err = parse_incoming(bad).expect_err("invalid");
            assert!(matches!(err, QmpError::Protocol(_)), "{err:?}");
        }
    }

    #[test]
    fn excerpt_truncates() {
        let long = vec![b'a'; 1000];
        assert_eq!(excerpt(&long).len(), 203);
        assert_eq!(excerpt(b"short\n"), "short");
    }
}
