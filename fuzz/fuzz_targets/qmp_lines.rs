//! QMP lines as QEMU sends them, through the parsers the client runs on them: the greeting
//! (`protocol::parse_greeting`), then every line after it (`protocol::parse_incoming`:
//! replies, errors and events with their typed view), and the typed results the controller
//! and srmigd read from replies (`query-migrate`, `query-status`, and for srmigd's exact
//! take-back `x-query-virtio`, `x-query-virtio-queue-status`, `query-migrate-capabilities`). Nothing may panic; a reply's id is
//! the id it carries; an event's typed view round-trips through its name.
//!
//! Input: newline-separated lines; the first is the greeting. Seeds:
//! `fuzz/corpus/qmp_lines/seed-*` (the crate's recorded QEMU sessions).
#![no_main]

use libfuzzer_sys::fuzz_target;
use srmig_qmp::protocol::{parse_greeting, parse_incoming, Incoming};
use srmig_qmp::{MigrationCapability, MigrationInfo, StatusInfo, VirtQueueStatus, VirtioInfo};

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    if let Some(first) = lines.next() {
        let _ = parse_greeting(first);
    }
    for line in lines {
        match parse_incoming(line) {
            Ok(Some(Incoming::Return { id, value })) => {
                if let Some(n) = id.as_ref().and_then(|v| v.as_u64()) {
                    let back = Incoming::Return {
                        id: id.clone(),
                        value: value.clone(),
                    };
                    assert_eq!(back.reply_id(), Some(n));
                }
                let _ = serde_json::from_value::<MigrationInfo>(value.clone());
                let _ = serde_json::from_value::<StatusInfo>(value.clone());
                let _ = serde_json::from_value::<Vec<VirtioInfo>>(value.clone());
                let _ = serde_json::from_value::<VirtQueueStatus>(value.clone());
                if let Some(caps) = value.as_array() {
                    for c in caps {
                        let _ = serde_json::from_value::<MigrationCapability>(
                            c["capability"].clone(),
                        );
                    }
                }
            }
            Ok(Some(Incoming::Event(e))) => {
                // The typed view is derived from the name and data alone.
                let again = srmig_qmp::Event::new(e.name.clone(), e.timestamp, e.data.clone());
                assert_eq!(again.kind, e.kind);
            }
            Ok(Some(Incoming::Error { .. })) | Ok(None) | Err(_) => {}
        }
    }
});
