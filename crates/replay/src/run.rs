//! The replay loop: merged input frames -> `process_batch` -> per-port output captures and a
//! per-packet record.
//!
//! Time: the dataplane's `now` is the capture time relative to the first input frame, so
//! End.SBUF buffer ages and ICMPv6 rate limits behave as they did on the wire. Frames with the
//! same timestamp are processed together in batches of up to [`BATCH`]; a frame with a later
//! timestamp, or a due event, starts a new batch. After every batch and every event, generated
//! and released packets are drained with `poll_transmit` and written with the same `now`.
//!
//! Every input frame gets an outcome, whatever its size: a frame longer than a packet buffer
//! ([`srmig_dataplane::BUF_CAPACITY`], a 9216-byte IP packet plus Ethernet and one
//! encapsulation) cannot be received by a driver either; it is recorded as a drop
//! (`FrameTooLarge`, counted by the dataplane like a driver would) in its place in the
//! order, and the run goes on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use srmig_dataplane::{
    Batch, Dataplane, Instant, PacketBuf, PortId, Verdict, VmId, VmState, BUF_CAPACITY,
};

use crate::config::{EventTime, ReplayConfig};
use crate::describe::describe;
use crate::pcap::{CaptureReader, CaptureWriter, InputFrame, Merge, PcapError};
use crate::summary::{counters_summary, CountersSummary};

/// Packets per `process_batch` call at most.
pub const BATCH: usize = 256;

/// Errors of a replay run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("invalid node configuration")]
    Config(#[from] srmig_dataplane::ConfigError),
    #[error("--pcap {port}={file}: no port named \"{port}\" in the configuration")]
    UnknownPort { port: String, file: String },
    #[error(transparent)]
    Pcap(#[from] PcapError),
    #[error("cannot create output directory {path}")]
    OutDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("output directory {dir}: {file} would be overwritten, but it is an input (--pcap); choose another --out")]
    InputInOutDir { dir: String, file: String },
    #[error("output directory {dir}: cannot remove {file}, an output of an earlier run")]
    Stale {
        dir: String,
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Summary {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The file of `port`'s output capture in the output directory (a port name is any string:
/// never a path out of that directory).
fn output_file(port: &str) -> String {
    format!("{}.pcap", port.replace(['/', '\0'], "_"))
}

/// Removes what an earlier replay left in `out_dir` so that it holds only this run's outputs:
/// `summary.json`, the captures that summary lists, and a `<port>.pcap` for every port of this
/// node (a port that sends nothing this time must not show an old capture). Nothing else is
/// touched, and an input among those files is refused before anything is removed. Returns
/// the files removed, by name.
fn clear_earlier_outputs(
    out_dir: &Path,
    ports: &[String],
    inputs: &[Input],
) -> Result<Vec<String>, ReplayError> {
    let mut names: Vec<String> = ports.iter().map(|p| output_file(p)).collect();
    let summary = out_dir.join("summary.json");
    if let Ok(text) = std::fs::read_to_string(&summary) {
        #[derive(serde::Deserialize)]
        struct Earlier {
            #[serde(default)]
            outputs: Vec<Listed>,
        }
        #[derive(serde::Deserialize)]
        struct Listed {
            file: PathBuf,
        }
        if let Ok(e) = serde_json::from_str::<Earlier>(&text) {
            // Only files directly in the output directory, named as replay names them.
            names.extend(e.outputs.into_iter().filter_map(|l| {
                let name = l.file.file_name()?.to_str()?.to_owned();
                name.ends_with(".pcap").then_some(name)
            }));
        }
        names.push("summary.json".to_owned());
    }
    names.sort();
    names.dedup();
    let existing: Vec<PathBuf> = names
        .iter()
        .map(|n| out_dir.join(n))
        .filter(|p| p.is_file())
        .collect();
    let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
    for p in &existing {
        if inputs.iter().any(|i| same(&i.file, p)) {
            return Err(ReplayError::InputInOutDir {
                dir: out_dir.display().to_string(),
                file: p.display().to_string(),
            });
        }
    }
    let mut removed = Vec::new();
    for p in existing {
        std::fs::remove_file(&p).map_err(|source| ReplayError::Stale {
            dir: out_dir.display().to_string(),
            file: p.display().to_string(),
            source,
        })?;
        removed.push(
            p.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        );
    }
    Ok(removed)
}

/// One input capture: the port it arrives on and the file.
#[derive(Debug, Clone)]
pub struct Input {
    pub port: String,
    pub file: PathBuf,
}

/// What happened to one input packet.
#[derive(Debug, Clone, Serialize)]
pub struct PacketRecord {
    /// Position in the merged input stream, from 1.
    pub n: usize,
    pub port: String,
    pub index_in_file: usize,
    pub time_us: u64,
    pub len: usize,
    pub summary: String,
    /// `tx`, `drop`, `held` or `consumed`.
    pub verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// The frame as it left, for `tx`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_summary: Option<String>,
}

/// A packet the dataplane emitted on its own: ICMPv6 errors, NDP answers, End.SBUF releases.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratedRecord {
    pub time_us: u64,
    pub egress: String,
    pub len: usize,
    pub summary: String,
}

/// A VM state change applied during the replay.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub time_us: u64,
    /// Input packets processed before it was applied.
    pub after_packets: usize,
    pub vm: String,
    pub state: VmState,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileSummary {
    pub port: String,
    pub file: String,
    pub frames: usize,
}

/// Where a replay's per-packet records go as they happen: [`replay`] collects them into its
/// [`Summary`]; `srmig replay` prints them and streams them into `summary.json`
/// ([`crate::stream::SummaryWriter`]), so that its memory does not grow with the capture.
pub trait RecordSink {
    /// An input packet's outcome.
    fn packet(&mut self, record: &PacketRecord) -> Result<(), ReplayError>;
    /// A packet the dataplane emitted on its own.
    fn generated(&mut self, record: &GeneratedRecord) -> Result<(), ReplayError>;
    /// A VM state change applied (also kept in the summary: at most one per configured event).
    fn event(&mut self, _record: &EventRecord) -> Result<(), ReplayError> {
        Ok(())
    }
}

/// The [`RecordSink`] of [`replay`]: every record in memory.
#[derive(Debug, Default)]
struct Collect {
    packets: Vec<PacketRecord>,
    generated: Vec<GeneratedRecord>,
}

impl RecordSink for Collect {
    fn packet(&mut self, record: &PacketRecord) -> Result<(), ReplayError> {
        self.packets.push(record.clone());
        Ok(())
    }

    fn generated(&mut self, record: &GeneratedRecord) -> Result<(), ReplayError> {
        self.generated.push(record.clone());
        Ok(())
    }
}

/// How many packets went which way (what `srmig replay` prints at the end).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Input packets.
    pub packets: usize,
    /// Forwarded or delivered.
    pub tx: usize,
    pub held: usize,
    pub dropped: usize,
    pub consumed: usize,
    /// Packets the dataplane emitted on its own (errors, answers, End.SBUF releases).
    pub generated: usize,
}

impl Totals {
    fn count(&mut self, r: &PacketRecord) {
        self.packets += 1;
        match r.verdict {
            "tx" => self.tx += 1,
            "held" => self.held += 1,
            "drop" => self.dropped += 1,
            _ => self.consumed += 1,
        }
    }
}

/// The JSON summary of a replay.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// What of the configuration the replay did not reproduce offline (srmigd's `[[qemu]]`
    /// and `[io]`, ports without `mtu`), one sentence each.
    pub notes: Vec<String>,
    pub inputs: Vec<FileSummary>,
    pub outputs: Vec<FileSummary>,
    pub packets: Vec<PacketRecord>,
    pub generated: Vec<GeneratedRecord>,
    pub events: Vec<EventRecord>,
    pub counters: CountersSummary,
    pub totals: Totals,
}

/// Replays `inputs` through a dataplane built from `config`, writing `<port>.pcap` for every port
/// that sent something into `out_dir`.
pub fn replay(
    config: &ReplayConfig,
    inputs: &[Input],
    out_dir: &Path,
) -> Result<Summary, ReplayError> {
    let mut records = Collect::default();
    let mut summary = replay_into(config, inputs, out_dir, &mut records)?;
    summary.packets = records.packets;
    summary.generated = records.generated;
    Ok(summary)
}

/// [`replay`], handing each packet's record to `sink` as it happens instead of keeping it: the
/// summary returned has no `packets` and no `generated` (its `totals` count them).
pub fn replay_into(
    config: &ReplayConfig,
    inputs: &[Input],
    out_dir: &Path,
    sink: &mut dyn RecordSink,
) -> Result<Summary, ReplayError> {
    let dp = Dataplane::new(config.node.clone())?;
    let mut ports = Vec::with_capacity(inputs.len());
    let mut readers = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        let port = dp
            .port_id(&input.port)
            .ok_or_else(|| ReplayError::UnknownPort {
                port: input.port.clone(),
                file: input.file.display().to_string(),
            })?;
        ports.push(port);
        readers.push(CaptureReader::open(&input.file, i)?);
    }
    // The captures are read as they are replayed (one frame per input held at a time).
    let mut frames = Merge::new(readers)?;
    std::fs::create_dir_all(out_dir).map_err(|source| ReplayError::OutDir {
        path: out_dir.display().to_string(),
        source,
    })?;
    let port_names: BTreeMap<PortId, String> = dp
        .port_names()
        .map(|(id, name)| (id, name.to_owned()))
        .collect();
    let names: Vec<String> = port_names.values().cloned().collect();
    let removed = clear_earlier_outputs(out_dir, &names, inputs)?;
    let mut notes = config.notes.clone();
    if !removed.is_empty() {
        notes.push(format!(
            "removed the outputs of an earlier run from {}: {}",
            out_dir.display(),
            removed.join(", ")
        ));
    }
    let vm_names: Vec<(VmId, String)> = config
        .node
        .vms
        .iter()
        .filter_map(|v| dp.vm_id(&v.name).map(|id| (id, v.name.clone())))
        .collect();
    let base = frames.peek().map_or(Duration::ZERO, |f| f.timestamp);
    let mut run = Run {
        dp,
        out_dir: out_dir.to_owned(),
        base,
        port_names,
        writers: BTreeMap::new(),
        sink,
        totals: Totals::default(),
        events: Vec::new(),
        scratch: PacketBuf::new(),
        vm_names,
        last_time: Duration::ZERO,
    };
    let mut pending_events: Vec<_> = config.events.clone();
    let mut batch = Batch::new(BATCH);
    // The frames of the batch being built, and how many frames were taken so far.
    let mut in_batch: Vec<InputFrame> = Vec::with_capacity(BATCH);
    let mut next = 0;
    let mut end = Duration::ZERO;
    while let Some(first) = frames.next_frame()? {
        let now_d = first.timestamp.saturating_sub(base);
        let now = instant(now_d);
        end = now_d;
        run.apply_due_events(&mut pending_events, next, now_d)?;
        run.expire(now)?;
        // A frame no packet buffer can hold: its own outcome, a counted drop.
        if first.data.len() > BUF_CAPACITY {
            let v = run
                .dp
                .drop_frame_too_large(ports[first.input], first.data.len());
            run.last_time = now_d;
            next += 1;
            run.record(next, &inputs[first.input].port, &first, now_d, v, &[])?;
            continue;
        }
        // Gather frames with this timestamp, up to BATCH, stopping where an event falls due
        // (or before a frame too large for a buffer, which gets its own turn).
        batch.clear();
        in_batch.clear();
        let start = next;
        let t0 = first.timestamp;
        let pushed = batch.push(ports[first.input], &first.data).is_ok();
        debug_assert!(pushed, "an empty batch takes a frame that fits a buffer");
        in_batch.push(first);
        next += 1;
        while batch.len() < BATCH
            && !event_due_after(&pending_events, next)
            && frames
                .peek()
                .is_some_and(|f| f.timestamp == t0 && f.data.len() <= BUF_CAPACITY)
        {
            let Some(f) = frames.next_frame()? else {
                break;
            };
            if batch.push(ports[f.input], &f.data).is_err() {
                // Cannot happen for a frame that fits a buffer in a batch with room; kept
                // as its own packet rather than lost.
                let v = run.dp.drop_frame_too_large(ports[f.input], f.data.len());
                next += 1;
                run.record(next, &inputs[f.input].port, &f, now_d, v, &[])?;
                break;
            }
            in_batch.push(f);
            next += 1;
        }
        run.dp.process_batch(now, &mut batch);
        run.last_time = now_d;
        for (k, pkt) in batch.packets().iter().enumerate() {
            let f = &in_batch[k];
            run.record(
                start + k + 1,
                &inputs[f.input].port,
                f,
                now_d,
                pkt.verdict,
                pkt.data(),
            )?;
        }
        run.drain(now, now_d)?;
    }
    let input_summaries = inputs
        .iter()
        .zip(frames.frames_per_input())
        .map(|(input, frames)| FileSummary {
            port: input.port.clone(),
            file: input.file.display().to_string(),
            frames,
        })
        .collect();
    // Events scheduled after the last packet still happen (e.g. the VM resuming at the end).
    for ev in std::mem::take(&mut pending_events) {
        let t = match ev.time {
            EventTime::AtMs(ms) => ms_duration(ms).max(end),
            EventTime::AfterPacket(_) => end,
        };
        run.apply_event(ev, next, t)?;
    }
    let counters = counters_summary(&run.dp, &config.node);
    let outputs = run
        .writers
        .values()
        .map(|(port, w)| FileSummary {
            port: port.clone(),
            file: w.path().display().to_string(),
            frames: w.frames(),
        })
        .collect();
    Ok(Summary {
        notes,
        inputs: input_summaries,
        outputs,
        packets: Vec::new(),
        generated: Vec::new(),
        events: run.events,
        counters,
        totals: run.totals,
    })
}

fn instant(d: Duration) -> Instant {
    Instant(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// An event's `at_ms` as a time after the first frame. A file's events are checked when it is
/// loaded (finite, `0..=MAX_AT_MS`); one built by a program is clamped, never a panic: below 0
/// or NaN is the start, beyond `Duration` the end of time.
fn ms_duration(ms: f64) -> Duration {
    if ms.is_nan() || ms <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn event_due_after(events: &[crate::config::Event], processed: usize) -> bool {
    events
        .iter()
        .any(|e| matches!(e.time, EventTime::AfterPacket(n) if n <= processed))
}

struct Run<'s> {
    dp: Dataplane,
    sink: &'s mut dyn RecordSink,
    totals: Totals,
    out_dir: PathBuf,
    base: Duration,
    port_names: BTreeMap<PortId, String>,
    writers: BTreeMap<PortId, (String, CaptureWriter)>,
    events: Vec<EventRecord>,
    scratch: PacketBuf,
    vm_names: Vec<(VmId, String)>,
    /// Time of the last processed input packet.
    last_time: Duration,
}

impl Run<'_> {
    fn port_name(&self, id: PortId) -> String {
        self.port_names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("port{}", id.0))
    }

    fn write(&mut self, port: PortId, now_d: Duration, data: &[u8]) -> Result<(), ReplayError> {
        if !self.writers.contains_key(&port) {
            let name = self.port_name(port);
            let w = CaptureWriter::create(&self.out_dir.join(output_file(&name)))?;
            self.writers.insert(port, (name, w));
        }
        if let Some((_, w)) = self.writers.get_mut(&port) {
            w.write(self.base.saturating_add(now_d), data)?;
        }
        Ok(())
    }

    fn record(
        &mut self,
        n: usize,
        port: &str,
        f: &InputFrame,
        now_d: Duration,
        verdict: Verdict,
        out: &[u8],
    ) -> Result<(), ReplayError> {
        let mut r = PacketRecord {
            n,
            port: port.to_owned(),
            index_in_file: f.index_in_file,
            time_us: micros(now_d),
            len: f.data.len(),
            summary: describe(&f.data),
            verdict: "",
            egress: None,
            reason: None,
            vm: None,
            out_summary: None,
        };
        match verdict {
            Verdict::Tx(port) => {
                r.verdict = "tx";
                r.egress = Some(self.port_name(port));
                r.out_summary = Some(describe(out));
                self.write(port, now_d, out)?;
            }
            Verdict::Drop(reason) => {
                r.verdict = "drop";
                r.reason = Some(reason.as_str());
            }
            Verdict::Held(vm) => {
                r.verdict = "held";
                r.vm = Some(vm_name(&self.vm_names, vm));
            }
            Verdict::Consumed => r.verdict = "consumed",
        }
        self.totals.count(&r);
        self.sink.packet(&r)
    }

    fn drain(&mut self, now: Instant, now_d: Duration) -> Result<(), ReplayError> {
        let mut buf = std::mem::take(&mut self.scratch);
        while let Some(port) = self.dp.poll_transmit(now, &mut buf) {
            let record = GeneratedRecord {
                time_us: micros(now_d),
                egress: self.port_name(port),
                len: buf.len(),
                summary: describe(buf.data()),
            };
            self.totals.generated += 1;
            self.sink.generated(&record)?;
            self.write(port, now_d, buf.data())?;
        }
        self.scratch = buf;
        Ok(())
    }

    fn expire(&mut self, now: Instant) -> Result<(), ReplayError> {
        if self.dp.poll_timeout().is_some_and(|t| t <= now) {
            self.dp.handle_timeout(now);
        }
        Ok(())
    }

    /// Applies every event due at `processed` packets / time `now_d`, in file order. An event
    /// given in milliseconds happens at its own time; one given as a packet count happens at
    /// the time of that packet.
    fn apply_due_events(
        &mut self,
        events: &mut Vec<crate::config::Event>,
        processed: usize,
        now_d: Duration,
    ) -> Result<(), ReplayError> {
        let mut i = 0;
        while i < events.len() {
            let at = match events[i].time {
                EventTime::AfterPacket(n) if n <= processed => Some(self.last_time),
                EventTime::AtMs(ms) => Some(ms_duration(ms)).filter(|t| *t <= now_d),
                EventTime::AfterPacket(_) => None,
            };
            match at {
                Some(at) => {
                    let ev = events.remove(i);
                    self.apply_event(ev, processed, at.max(self.last_time))?;
                }
                None => i += 1,
            }
        }
        Ok(())
    }

    fn apply_event(
        &mut self,
        ev: crate::config::Event,
        processed: usize,
        at: Duration,
    ) -> Result<(), ReplayError> {
        let now = instant(at);
        if let Some(vm) = self.dp.vm_id(&ev.vm) {
            // The VM exists (checked when the file was loaded), so this cannot fail.
            self.dp.handle_vm_state(now, vm, ev.state)?;
        }
        let record = EventRecord {
            time_us: micros(at),
            after_packets: processed,
            vm: ev.vm,
            state: ev.state,
        };
        self.sink.event(&record)?;
        self.events.push(record);
        self.drain(now, at)
    }
}

fn vm_name(names: &[(VmId, String)], vm: VmId) -> String {
    names
        .iter()
        .find(|(id, _)| *id == vm)
        .map_or_else(|| format!("vm{}", vm.0), |(_, n)| n.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use srmig_dataplane::testkit::canon::*;
    use srmig_dataplane::testkit::{a6, host_config, udp6_sized, uplink_frame};
    use srmig_dataplane::{DropReason, VmState};

    #[test]
    fn a_frame_of_any_size_is_a_packet_with_an_outcome() {
        let dir = std::env::temp_dir().join(format!("srmig-replay-sizes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let input = dir.join("up0.pcap");
        let small = udp6_sized(a6("2001:db8:777::7"), vm1(), 100);
        let jumbo = udp6_sized(a6("2001:db8:777::7"), vm1(), 9000);
        let to_vm = |inner: &[u8]| uplink_frame(S, &[sid(S, END_DT6)], 0, inner);
        let mut too_large = to_vm(&jumbo);
        too_large.resize(BUF_CAPACITY + 1, 0);
        let mut w = CaptureWriter::create(&input).expect("create");
        // Same timestamp: the oversized frame sits in the middle of what would be one batch.
        for f in [to_vm(&small), too_large, to_vm(&jumbo), to_vm(&small)] {
            w.write(Duration::from_millis(1), &f).expect("write");
        }
        drop(w);
        let config = ReplayConfig::new(host_config(S, VmState::Running));
        let inputs = [Input {
            port: "up0".into(),
            file: input,
        }];
        let summary = replay(&config, &inputs, &dir.join("out")).expect("the run completes");
        let outcomes: Vec<_> = summary
            .packets
            .iter()
            .map(|p| (p.n, p.verdict, p.reason, p.len))
            .collect();
        assert_eq!(
            outcomes,
            vec![
                (1, "tx", None, 14 + 40 + 24 + 100),
                (2, "drop", Some("FrameTooLarge"), BUF_CAPACITY + 1),
                (3, "tx", None, 14 + 40 + 24 + 9000),
                (4, "tx", None, 14 + 40 + 24 + 100),
            ]
        );
        assert_eq!(
            summary
                .counters
                .drops
                .get(DropReason::FrameTooLarge.as_str()),
            Some(&1)
        );
        assert_eq!(summary.counters.ports["up0"].rx_packets, 4);
        assert_eq!(summary.counters.ports["vm1"].tx_packets, 3);
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    /// A classic pcap written byte by byte, with the snap length the header declares (tools
    /// write 2048, 65535 or 262144; `pcap-file`'s writer refuses frames longer than it).
    fn raw_pcap(snaplen: u32, frames: &[(Duration, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2_c3d4_u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&0i32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&snaplen.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
        for (t, data) in frames {
            let len = u32::try_from(data.len()).expect("small frame");
            out.extend_from_slice(&u32::try_from(t.as_secs()).expect("ts").to_le_bytes());
            out.extend_from_slice(&t.subsec_micros().to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(data);
        }
        out
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("srmig-replay-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// Issue 10: a capture whose header says snap length 2048 holding a complete 3000-byte
    /// frame aborted the whole run (no summary, later frames never processed).
    #[test]
    fn a_frame_longer_than_the_capture_snap_length_is_still_replayed() {
        let dir = temp_dir("snaplen");
        let small = udp6_sized(a6("2001:db8:777::7"), vm1(), 100);
        let big = udp6_sized(a6("2001:db8:777::7"), vm1(), 3000);
        let to_vm = |inner: &[u8]| uplink_frame(S, &[sid(S, END_DT6)], 0, inner);
        let (f1, f2, f3) = (to_vm(&small), to_vm(&big), to_vm(&small));
        assert!(f2.len() > 2048);
        let ms = Duration::from_millis;
        let input = dir.join("up0.pcap");
        std::fs::write(
            &input,
            raw_pcap(2048, &[(ms(1), &f1), (ms(2), &f2), (ms(3), &f3)]),
        )
        .expect("write pcap");
        let config = ReplayConfig::new(host_config(S, VmState::Running));
        let inputs = [Input {
            port: "up0".into(),
            file: input,
        }];
        let summary = replay(&config, &inputs, &dir.join("out")).expect("the run completes");
        let outcomes: Vec<_> = summary
            .packets
            .iter()
            .map(|p| (p.n, p.verdict, p.len))
            .collect();
        assert_eq!(
            outcomes,
            vec![
                (1, "tx", f1.len()),
                (2, "tx", f2.len()),
                (3, "tx", f3.len())
            ]
        );
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    /// Issue 10: an event at `at_ms = 1e300` panicked (`Duration::from_secs_f64`). A program
    /// can build one without the file's validation: the run must not panic either.
    #[test]
    fn an_event_far_in_the_future_happens_at_the_end_without_panic() {
        let dir = temp_dir("far-event");
        let input = dir.join("up0.pcap");
        let small = udp6_sized(a6("2001:db8:777::7"), vm1(), 100);
        let mut w = CaptureWriter::create(&input).expect("create");
        w.write(
            Duration::from_millis(1),
            &uplink_frame(S, &[sid(S, END_DT6)], 0, &small),
        )
        .expect("write");
        drop(w);
        let mut config = ReplayConfig::new(host_config(S, VmState::Running));
        config.events.push(crate::config::Event {
            time: EventTime::AtMs(1e300),
            vm: "vm1".into(),
            state: VmState::Paused,
        });
        let inputs = [Input {
            port: "up0".into(),
            file: input,
        }];
        let summary = replay(&config, &inputs, &dir.join("out")).expect("the run completes");
        assert_eq!(summary.events.len(), 1);
        assert_eq!(summary.packets[0].verdict, "tx");
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    /// A second run into the same directory leaves only its own outputs: the earlier
    /// summary's captures and this node's port captures are removed (and said so), other files
    /// stay, and an input among them is refused before anything is removed.
    #[test]
    fn an_output_directory_holds_only_the_latest_run() {
        let dir = temp_dir("stale");
        let out = dir.join("out");
        std::fs::create_dir_all(&out).expect("out");
        let small = udp6_sized(a6("2001:db8:777::7"), vm1(), 100);
        let input = dir.join("up0.pcap");
        let mut w = CaptureWriter::create(&input).expect("create");
        w.write(
            Duration::from_millis(1),
            &uplink_frame(S, &[sid(S, END_DT6)], 0, &small),
        )
        .expect("write");
        drop(w);
        // What an earlier run of another node left: its summary lists old.pcap.
        std::fs::write(out.join("old.pcap"), b"x").expect("old");
        std::fs::write(
            out.join("summary.json"),
            r#"{"outputs":[{"port":"old","file":"somewhere/old.pcap","frames":1}]}"#,
        )
        .expect("summary");
        // A capture of one of this node's ports that will send nothing now.
        std::fs::write(out.join("up0.pcap"), b"x").expect("up0");
        std::fs::write(out.join("notes.txt"), b"mine").expect("notes");
        let config = ReplayConfig::new(host_config(S, VmState::Running));
        let inputs = [Input {
            port: "up0".into(),
            file: input.clone(),
        }];
        let summary = replay(&config, &inputs, &out).expect("the run completes");
        assert!(!out.join("old.pcap").exists() && !out.join("summary.json").exists());
        assert!(!out.join("up0.pcap").exists(), "up0 sent nothing this run");
        assert!(out.join("notes.txt").exists(), "not an output: left alone");
        let note = summary.notes.last().expect("a note");
        assert!(
            note.contains("removed the outputs of an earlier run")
                && note.contains("old.pcap")
                && note.contains("summary.json"),
            "{note}"
        );
        // The input inside the output directory, named like an output: refused, nothing
        // removed.
        let inside = out.join("up0.pcap");
        std::fs::copy(&input, &inside).expect("copy");
        std::fs::write(out.join("summary.json"), "{}").expect("summary");
        let inputs = [Input {
            port: "up0".into(),
            file: inside.clone(),
        }];
        let err = replay(&config, &inputs, &out)
            .expect_err("refused")
            .to_string();
        assert!(err.contains("is an input"), "{err}");
        assert!(inside.exists() && out.join("summary.json").exists());
        std::fs::remove_dir_all(dir).expect("cleanup");
    }
}
