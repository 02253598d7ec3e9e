//! Reading the per-port input captures and writing the per-port output captures.
//!
//! Inputs are Ethernet captures, classic pcap (microsecond or nanosecond timestamps, either
//! byte order) or pcapng (what tcpdump and Wireshark write, several interfaces and sections
//! allowed as long as every packet's interface is Ethernet), read with pcap-parser (a
//! streaming reader: pcap-file 2 cannot read pcapng and refuses frames longer than the
//! header's snap length). They are read as they are replayed, one frame per input at a time,
//! so memory does not grow with their size. Several inputs, one per ingress port, are merged
//! into one stream by capture timestamp ([`Merge`]: the earliest next frame of any input
//! goes first; ties keep input order; the frames of one capture keep their file order).
//!
//! The header's snap length is not a limit on what a record holds: a complete frame longer
//! than it (some writers declare 2048 and write longer frames) is read whole, and its outcome
//! decided by the dataplane like any other (`FrameTooLarge` beyond a packet buffer). A frame
//! the capture did cut short (captured length below the original length) is an error naming
//! it: replaying part of a frame as if it were the frame would be a misread.

use std::collections::BinaryHeap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{Block, Linktype, PcapBlockOwned};

/// Errors reading or writing captures. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("cannot open capture {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read capture {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("capture {path} has link type {link}; only Ethernet captures can be replayed")]
    LinkType { path: PathBuf, link: i32 },
    #[error("packet {index} of {path} is truncated in the capture ({captured} of {original} bytes); capture with a larger snap length")]
    Truncated {
        path: PathBuf,
        index: usize,
        captured: usize,
        original: u32,
    },
    #[error("cannot write capture {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: pcap_file::PcapError,
    },
}

/// One frame read from an input capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFrame {
    /// Index of the input (in the order the inputs were given).
    pub input: usize,
    /// Position of the frame within its capture, from 0.
    pub index_in_file: usize,
    /// Capture timestamp (time since the Unix epoch, as pcap stores it).
    pub timestamp: Duration,
    pub data: Vec<u8>,
}

/// The reader's buffer: the largest block it can hold (a 256 KiB frame with its headers).
const READ_BUFFER: usize = 256 * 1024 + 4096;

/// A pcapng interface: its link type and timestamp units.
#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: Linktype,
    /// Units per second.
    resolution: u64,
    /// Seconds added to every timestamp.
    offset: i64,
}

/// What the capture's headers said so far.
#[derive(Debug)]
enum Format {
    /// Before the first header.
    Unknown,
    /// Classic pcap.
    Legacy { nanos: bool },
    /// pcapng: the interfaces of the current section, and its byte order.
    Ng {
        interfaces: Vec<Interface>,
        big_endian: bool,
    },
}

/// One input capture, read frame by frame.
pub struct CaptureReader {
    reader: Box<dyn PcapReaderIterator + Send>,
    state: State,
}

/// What a [`CaptureReader`] knows besides its buffer.
#[derive(Debug)]
struct State {
    path: PathBuf,
    input: usize,
    format: Format,
    frames: usize,
}

impl std::fmt::Debug for CaptureReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureReader")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn nanos(secs: i64, frac: u64, resolution: u64) -> Duration {
    let secs = u64::try_from(secs).unwrap_or(0);
    // `frac` < `resolution`: in nanoseconds without overflow for any resolution up to 2^64.
    let frac_ns = u128::from(frac) * 1_000_000_000 / u128::from(resolution.max(1));
    Duration::from_secs(secs) + Duration::from_nanos(u64::try_from(frac_ns).unwrap_or(0))
}

impl CaptureReader {
    /// Opens `path` (classic pcap or pcapng) as input number `input`.
    pub fn open(path: &Path, input: usize) -> Result<CaptureReader, PcapError> {
        let file = File::open(path).map_err(|source| PcapError::Open {
            path: path.to_owned(),
            source,
        })?;
        let reader =
            pcap_parser::create_reader(READ_BUFFER, file).map_err(|e| PcapError::Read {
                path: path.to_owned(),
                reason: match e {
                    pcap_parser::PcapError::Eof => "the file is empty".to_owned(),
                    pcap_parser::PcapError::HeaderNotRecognized => {
                        "neither pcap nor pcapng (unknown magic number)".to_owned()
                    }
                    other => format!("{other:?}"),
                },
            })?;
        Ok(CaptureReader {
            reader,
            state: State {
                path: path.to_owned(),
                input,
                format: Format::Unknown,
                frames: 0,
            },
        })
    }

    /// Frames read so far.
    pub fn frames(&self) -> usize {
        self.state.frames
    }

    /// The next frame, `None` at the end of the capture.
    pub fn next_frame(&mut self) -> Result<Option<InputFrame>, PcapError> {
        loop {
            self.check_block_length()?;
            let (consumed, frame) = match self.reader.next() {
                Ok((offset, block)) => (offset, self.state.block(block)?),
                Err(pcap_parser::PcapError::Eof) => return Ok(None),
                Err(pcap_parser::PcapError::Incomplete(_)) => {
                    if let Err(e) = self.reader.refill() {
                        let reason = match e {
                            pcap_parser::PcapError::BufferTooSmall => format!(
                                "a block after frame {} is larger than {READ_BUFFER} bytes",
                                self.state.frames
                            ),
                            other => format!("{other:?}"),
                        };
                        return Err(self.state.error(reason));
                    }
                    continue;
                }
                Err(pcap_parser::PcapError::UnexpectedEof) => {
                    let reason = format!(
                        "the file ends inside a block after frame {}",
                        self.state.frames
                    );
                    return Err(self.state.error(reason));
                }
                Err(e) => {
                    let reason = format!("after frame {}: {e:?}", self.state.frames);
                    return Err(self.state.error(reason));
                }
            };
            self.reader.consume(consumed);
            if let Some(f) = frame {
                return Ok(Some(f));
            }
        }
    }
}

impl CaptureReader {
    /// Refuses a pcapng block (after the section header) whose total length is below the 12
    /// bytes of its own type and two length fields. pcap-parser 0.17 checks a block's length
    /// against the smallest header of the block type it recognises, which is 4 bytes for a
    /// Process Information Block: `length - 12` then underflows inside the parser (a panic
    /// where overflow checks are on, a nonsensical length elsewhere). Found by the
    /// `replay_pcap` fuzz target.
    fn check_block_length(&self) -> Result<(), PcapError> {
        let Format::Ng { big_endian, .. } = self.state.format else {
            return Ok(());
        };
        let data = self.reader.data();
        // A section header is the parser's (its byte order may differ from this section's).
        if data.get(..4) == Some(&[0x0a, 0x0d, 0x0d, 0x0a]) {
            return Ok(());
        }
        let Some(len) = data.get(4..8) else {
            return Ok(());
        };
        let len = <[u8; 4]>::try_from(len).unwrap_or_default();
        let len = if big_endian {
            u32::from_be_bytes(len)
        } else {
            u32::from_le_bytes(len)
        };
        if len < 12 {
            return Err(self.state.error(format!(
                "a pcapng block of {len} bytes after frame {} (a block has at least 12)",
                self.state.frames
            )));
        }
        Ok(())
    }
}

impl State {
    fn error(&self, reason: impl Into<String>) -> PcapError {
        PcapError::Read {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Takes one block: a header updates [`Format`], a packet becomes a frame.
    fn block(&mut self, block: PcapBlockOwned<'_>) -> Result<Option<InputFrame>, PcapError> {
        let (timestamp, caplen, origlen, data, linktype) = match block {
            PcapBlockOwned::LegacyHeader(h) => {
                if h.network != Linktype::ETHERNET {
                    return Err(PcapError::LinkType {
                        path: self.path.clone(),
                        link: h.network.0,
                    });
                }
                self.format = Format::Legacy {
                    nanos: h.is_nanosecond_precision(),
                };
                return Ok(None);
            }
            PcapBlockOwned::Legacy(b) => {
                let Format::Legacy { nanos: ns } = self.format else {
                    return Err(self.error("a packet before the file header"));
                };
                let resolution = if ns { 1_000_000_000 } else { 1_000_000 };
                // A fraction of a second or more in the fraction field carries into the seconds.
                let t = Duration::from_secs(u64::from(b.ts_sec))
                    + nanos(0, u64::from(b.ts_usec), resolution);
                (t, b.caplen, b.origlen, b.data, Linktype::ETHERNET)
            }
            PcapBlockOwned::NG(Block::SectionHeader(shb)) => {
                self.format = Format::Ng {
                    interfaces: Vec::new(),
                    big_endian: shb.big_endian(),
                };
                return Ok(None);
            }
            PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                let Some(resolution) = idb.ts_resolution() else {
                    return Err(self.error("an interface with an invalid if_tsresol"));
                };
                let Format::Ng { interfaces, .. } = &mut self.format else {
                    return Err(self.error("an interface before the section header"));
                };
                interfaces.push(Interface {
                    linktype: idb.linktype,
                    resolution,
                    offset: idb.ts_offset(),
                });
                return Ok(None);
            }
            PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                let Format::Ng { interfaces, .. } = &self.format else {
                    return Err(self.error("a packet before the section header"));
                };
                let Some(i) = interfaces.get(epb.if_id as usize).copied() else {
                    return Err(self.error(format!(
                        "packet {} names interface {}, which the section does not describe",
                        self.frames, epb.if_id
                    )));
                };
                let ts = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                let secs = i
                    .offset
                    .saturating_add(i64::try_from(ts / i.resolution).unwrap_or(i64::MAX));
                let t = nanos(secs, ts % i.resolution, i.resolution);
                (t, epb.caplen, epb.origlen, epb.data, i.linktype)
            }
            PcapBlockOwned::NG(Block::SimplePacket(_)) => {
                return Err(self.error(format!(
                    "packet {} is a simple packet block (no timestamp): not replayable",
                    self.frames
                )));
            }
            // Statistics, name resolution, comments, custom blocks: nothing to replay.
            PcapBlockOwned::NG(_) => return Ok(None),
        };
        if linktype != Linktype::ETHERNET {
            return Err(PcapError::LinkType {
                path: self.path.clone(),
                link: linktype.0,
            });
        }
        let index_in_file = self.frames;
        let captured = (caplen as usize).min(data.len());
        if captured < origlen as usize {
            return Err(PcapError::Truncated {
                path: self.path.clone(),
                index: index_in_file,
                captured,
                original: origlen,
            });
        }
        self.frames += 1;
        Ok(Some(InputFrame {
            input: self.input,
            index_in_file,
            timestamp,
            // pcapng pads packet data to 4 bytes: the frame is the captured length.
            data: data[..captured].to_vec(),
        }))
    }
}

/// Reads every frame of one capture (tests and small tools; the replay streams).
pub fn read_capture(path: &Path, input: usize) -> Result<Vec<InputFrame>, PcapError> {
    let mut r = CaptureReader::open(path, input)?;
    let mut frames = Vec::new();
    while let Some(f) = r.next_frame()? {
        frames.push(f);
    }
    Ok(frames)
}

/// The head of one input in a [`Merge`]: ordered by timestamp, then input (a min-heap through
/// `Reverse` ordering below).
#[derive(Debug)]
struct Head(InputFrame);

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.key().cmp(&self.key())
    }
}
impl Head {
    fn key(&self) -> (Duration, usize, usize) {
        (self.0.timestamp, self.0.input, self.0.index_in_file)
    }
}

/// The inputs merged into one stream by timestamp, read as it goes: at most one frame per
/// input is held.
#[derive(Debug)]
pub struct Merge {
    readers: Vec<CaptureReader>,
    heads: BinaryHeap<Head>,
}

impl Merge {
    /// Starts merging `readers` (reads the first frame of each).
    pub fn new(mut readers: Vec<CaptureReader>) -> Result<Merge, PcapError> {
        let mut heads = BinaryHeap::with_capacity(readers.len());
        for r in &mut readers {
            if let Some(f) = r.next_frame()? {
                heads.push(Head(f));
            }
        }
        Ok(Merge { readers, heads })
    }

    /// The next frame of the merged stream, without taking it.
    pub fn peek(&self) -> Option<&InputFrame> {
        self.heads.peek().map(|h| &h.0)
    }

    /// Takes the next frame of the merged stream.
    pub fn next_frame(&mut self) -> Result<Option<InputFrame>, PcapError> {
        let Some(Head(f)) = self.heads.pop() else {
            return Ok(None);
        };
        if let Some(next) = self.readers[f.input].next_frame()? {
            self.heads.push(Head(next));
        }
        Ok(Some(f))
    }

    /// Frames read from each input so far.
    pub fn frames_per_input(&self) -> Vec<usize> {
        self.readers.iter().map(CaptureReader::frames).collect()
    }
}

/// Merges per-input frame lists into one list ordered by timestamp (stable: ties keep input
/// order, then file order).
pub fn merge_by_time(inputs: Vec<Vec<InputFrame>>) -> Vec<InputFrame> {
    let mut all: Vec<InputFrame> = inputs.into_iter().flatten().collect();
    all.sort_by_key(|f| (f.timestamp, f.input, f.index_in_file));
    all
}

/// An Ethernet capture being written.
#[derive(Debug)]
pub struct CaptureWriter {
    path: PathBuf,
    writer: PcapWriter<BufWriter<File>>,
    frames: usize,
}

impl CaptureWriter {
    pub fn create(path: &Path) -> Result<Self, PcapError> {
        let file = File::create(path).map_err(|source| PcapError::Open {
            path: path.to_owned(),
            source,
        })?;
        let header = PcapHeader {
            datalink: DataLink::ETHERNET,
            snaplen: 65535,
            ..PcapHeader::default()
        };
        let writer = PcapWriter::with_header(BufWriter::new(file), header).map_err(|source| {
            PcapError::Write {
                path: path.to_owned(),
                source,
            }
        })?;
        Ok(Self {
            path: path.to_owned(),
            writer,
            frames: 0,
        })
    }

    /// Writes one frame. A timestamp beyond pcap's range (`u32` seconds, year 2106: an event
    /// far in the future releasing packets) is written as the last time pcap can hold.
    pub fn write(&mut self, timestamp: Duration, data: &[u8]) -> Result<(), PcapError> {
        let timestamp = timestamp.min(Duration::new(u64::from(u32::MAX), 999_999_999));
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let packet = PcapPacket::new(timestamp, len, data);
        self.writer
            .write_packet(&packet)
            .map_err(|source| PcapError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.frames += 1;
        Ok(())
    }

    pub fn frames(&self) -> usize {
        self.frames
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "srmig-replay-pcap-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn write_then_read_round_trips_and_merges_in_time_order() {
        let dir = temp_dir();
        let a = dir.join("a.pcap");
        let b = dir.join("b.pcap");
        let mut wa = CaptureWriter::create(&a).expect("create a");
        wa.write(Duration::from_millis(1), &[1; 60]).expect("write");
        wa.write(Duration::from_millis(3), &[3; 60]).expect("write");
        drop(wa);
        let mut wb = CaptureWriter::create(&b).expect("create b");
        wb.write(Duration::from_millis(2), &[2; 70]).expect("write");
        wb.write(Duration::from_millis(3), &[4; 70]).expect("write");
        drop(wb);
        let fa = read_capture(&a, 0).expect("read a");
        let fb = read_capture(&b, 1).expect("read b");
        assert_eq!(fa.len(), 2);
        let merged = merge_by_time(vec![fa, fb]);
        let firsts: Vec<u8> = merged.iter().map(|f| f.data[0]).collect();
        assert_eq!(firsts, vec![1, 2, 3, 4]);
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    /// A pcapng file as tcpdump writes one: a section, an Ethernet interface with nanosecond
    /// timestamps (`if_tsresol` 9), packets padded to 4 bytes, and a statistics block.
    fn pcapng(frames: &[(u64, &[u8])], linktype: u16) -> Vec<u8> {
        let mut out = Vec::new();
        let block = |out: &mut Vec<u8>, kind: u32, body: &[u8]| {
            let len = u32::try_from(12 + body.len()).expect("len");
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(body);
            out.extend_from_slice(&len.to_le_bytes());
        };
        let mut shb = Vec::new();
        shb.extend_from_slice(&0x1a2b_3c4d_u32.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        block(&mut out, 0x0a0d_0d0a, &shb);
        let mut idb = Vec::new();
        idb.extend_from_slice(&linktype.to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&262_144u32.to_le_bytes());
        idb.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0]); // if_tsresol = 9 (ns), padded
        idb.extend_from_slice(&[0, 0, 0, 0]); // opt_endofopt
        block(&mut out, 1, &idb);
        for (ns, data) in frames {
            let mut epb = Vec::new();
            epb.extend_from_slice(&0u32.to_le_bytes());
            epb.extend_from_slice(&u32::try_from(ns >> 32).expect("high").to_le_bytes());
            epb.extend_from_slice(&(*ns as u32).to_le_bytes());
            let len = u32::try_from(data.len()).expect("len");
            epb.extend_from_slice(&len.to_le_bytes());
            epb.extend_from_slice(&len.to_le_bytes());
            epb.extend_from_slice(data);
            epb.resize(epb.len().next_multiple_of(4), 0);
            block(&mut out, 6, &epb);
        }
        // An interface statistics block: nothing to replay.
        let mut isb = vec![0u8; 12];
        isb.extend_from_slice(&[0, 0, 0, 0]);
        block(&mut out, 5, &isb);
        out
    }

    #[test]
    fn pcapng_is_read_with_its_timestamps_and_without_padding() {
        let dir = temp_dir();
        let path = dir.join("x.pcapng");
        let t = 1_700_000_000_123_456_789u64;
        std::fs::write(&path, pcapng(&[(t, &[7; 61]), (t + 1_000, &[8; 64])], 1)).expect("write");
        let frames = read_capture(&path, 3).expect("pcapng");
        assert_eq!(frames.len(), 2);
        assert_eq!(
            frames[0].data,
            vec![7; 61],
            "padding is not part of the frame"
        );
        assert_eq!(frames[0].input, 3);
        assert_eq!(frames[0].timestamp, Duration::from_nanos(t));
        assert_eq!(frames[1].timestamp, Duration::from_nanos(t + 1_000));
        assert_eq!(frames[1].index_in_file, 1);
        // Another link type (here Linux cooked capture, 113) is refused, naming the file.
        let sll = dir.join("sll.pcapng");
        std::fs::write(&sll, pcapng(&[(t, &[7; 61])], 113)).expect("write");
        let err = read_capture(&sll, 0).expect_err("not Ethernet").to_string();
        assert!(
            err.contains("link type 113") && err.contains("sll.pcapng"),
            "{err}"
        );
        // Cut short inside a block: an error, not a silent end.
        let bytes = pcapng(&[(t, &[7; 61])], 1);
        let cut = dir.join("cut.pcapng");
        std::fs::write(&cut, &bytes[..bytes.len() - 30]).expect("write");
        let err = read_capture(&cut, 0).expect_err("cut").to_string();
        assert!(err.contains("cut.pcapng"), "{err}");
        // A block shorter than its own type and lengths (a Process Information Block of 6
        // bytes, as the replay_pcap fuzz target found): an error, not a panic in the parser.
        let mut bytes = pcapng(&[(t, &[7; 61])], 1);
        bytes.extend_from_slice(&0x8000_0001u32.to_le_bytes());
        bytes.extend_from_slice(&6u32.to_le_bytes());
        bytes.extend_from_slice(&[0; 8]);
        let short = dir.join("short.pcapng");
        std::fs::write(&short, &bytes).expect("write");
        let err = read_capture(&short, 0)
            .expect_err("short block")
            .to_string();
        assert!(
            err.contains("short.pcapng") && err.contains("block of 6 bytes after frame 1"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    /// What Wireshark's own tool writes: our pcap converted with `editcap -F pcapng` reads back
    /// the same frames and timestamps.
    #[test]
    fn editcap_pcapng_reads_like_the_pcap_it_came_from() {
        let have = std::process::Command::new("editcap")
            .arg("-h")
            .output()
            .is_ok_and(|o| o.status.success());
        if !have {
            eprintln!("SKIPPED: editcap (tshark) is not installed");
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set: editcap must be installed"
            );
            return;
        }
        let dir = temp_dir();
        let (pcap, ng) = (dir.join("e.pcap"), dir.join("e.pcapng"));
        let mut w = CaptureWriter::create(&pcap).expect("create");
        w.write(Duration::new(1_700_000_000, 1_000), &[1; 60])
            .expect("write");
        w.write(Duration::new(1_700_000_000, 9_000), &[2; 1514])
            .expect("write");
        drop(w);
        let out = std::process::Command::new("editcap")
            .args(["-F", "pcapng"])
            .arg(&pcap)
            .arg(&ng)
            .output()
            .expect("editcap");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            read_capture(&ng, 0).expect("pcapng"),
            read_capture(&pcap, 0).expect("pcap")
        );
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    /// A header snap length below the frames (some writers declare less than they write) does
    /// not cut or refuse them; a frame the capture did cut is an error naming it.
    #[test]
    fn snap_length_is_not_a_frame_limit() {
        let dir = temp_dir();
        let path = dir.join("snap.pcap");
        let mut raw = Vec::new();
        raw.extend_from_slice(&0xa1b2_c3d4_u32.to_le_bytes());
        raw.extend_from_slice(&2u16.to_le_bytes());
        raw.extend_from_slice(&4u16.to_le_bytes());
        raw.extend_from_slice(&[0; 8]);
        raw.extend_from_slice(&96u32.to_le_bytes()); // snap length 96
        raw.extend_from_slice(&1u32.to_le_bytes());
        for (cap, orig) in [(200u32, 200u32), (96, 1500)] {
            raw.extend_from_slice(&1u32.to_le_bytes());
            raw.extend_from_slice(&2u32.to_le_bytes());
            raw.extend_from_slice(&cap.to_le_bytes());
            raw.extend_from_slice(&orig.to_le_bytes());
            raw.extend(std::iter::repeat_n(5u8, cap as usize));
        }
        std::fs::write(&path, raw).expect("write");
        let mut r = CaptureReader::open(&path, 0).expect("open");
        let first = r.next_frame().expect("read").expect("frame");
        assert_eq!(first.data.len(), 200);
        assert_eq!(first.timestamp, Duration::new(1, 2_000));
        let err = r.next_frame().expect_err("truncated").to_string();
        assert!(
            err.contains("packet 1") && err.contains("96 of 1500"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    /// The merge takes the earliest head of any input; one capture's frames keep their file
    /// order even where its timestamps go back.
    #[test]
    fn merge_streams_by_time_and_keeps_file_order() {
        let dir = temp_dir();
        let (a, b) = (dir.join("ma.pcap"), dir.join("mb.pcap"));
        let mut wa = CaptureWriter::create(&a).expect("create");
        for (ms, tag) in [(1, 1u8), (5, 5), (3, 6)] {
            wa.write(Duration::from_millis(ms), &[tag; 60])
                .expect("write");
        }
        drop(wa);
        let mut wb = CaptureWriter::create(&b).expect("create");
        for (ms, tag) in [(2, 2u8), (5, 7), (6, 8)] {
            wb.write(Duration::from_millis(ms), &[tag; 60])
                .expect("write");
        }
        drop(wb);
        let readers = vec![
            CaptureReader::open(&a, 0).expect("a"),
            CaptureReader::open(&b, 1).expect("b"),
        ];
        let mut m = Merge::new(readers).expect("merge");
        let mut tags = Vec::new();
        while let Some(f) = m.next_frame().expect("next") {
            tags.push(f.data[0]);
        }
        // a's 3 ms frame comes after its 5 ms one (file order); the 5 ms tie goes to input 0.
        assert_eq!(tags, vec![1, 2, 5, 6, 7, 8]);
        assert_eq!(m.frames_per_input(), vec![3, 3]);
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn timestamps_beyond_pcap_are_clamped_not_refused() {
        let dir = temp_dir();
        let path = dir.join("far.pcap");
        let mut w = CaptureWriter::create(&path).expect("create");
        w.write(Duration::MAX, &[1; 60])
            .expect("a far timestamp is written");
        drop(w);
        let frames = read_capture(&path, 0).expect("read");
        assert_eq!(frames[0].timestamp.as_secs(), u64::from(u32::MAX));
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = read_capture(Path::new("/nonexistent/x.pcap"), 0).expect_err("must fail");
        assert!(err.to_string().contains("/nonexistent/x.pcap"));
    }
}
