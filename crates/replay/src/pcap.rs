//! Reading the per-port input captures and writing the per-port output captures.
//!
//! Inputs are classic pcap files with Ethernet link type (what `tcpdump -w` writes on a veth or a
//! TAP). Several inputs, one per ingress port, are merged into one stream ordered by capture
//! timestamp (ties keep file order, then packet order), which is the order the dataplane sees.
//!
//! The header's snap length is not a limit on what a record holds: a complete frame longer
//! than it (some writers declare 2048 and write longer frames) is read whole, and its outcome
//! decided by the dataplane like any other (`FrameTooLarge` beyond a packet buffer). A frame
//! the capture did cut short (captured length below the original length) is an error naming
//! it: replaying part of a frame as if it were the frame would be a misread.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::{DataLink, TsResolution};

/// Errors reading or writing captures. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("cannot open capture {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read capture {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: pcap_file::PcapError,
    },
    #[error("capture {path} is pcapng; only classic pcap can be replayed (convert it: editcap -F pcap IN OUT)")]
    Pcapng { path: PathBuf },
    #[error("capture {path} has link type {link:?}; only Ethernet captures can be replayed")]
    LinkType { path: PathBuf, link: DataLink },
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

/// The first four bytes of a pcapng file (its Section Header Block type).
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Reads every frame of one Ethernet capture.
pub fn read_capture(path: &Path, input: usize) -> Result<Vec<InputFrame>, PcapError> {
    let open = || {
        File::open(path).map_err(|source| PcapError::Open {
            path: path.to_owned(),
            source,
        })
    };
    let mut magic = [0u8; 4];
    if std::io::Read::read_exact(&mut open()?, &mut magic).is_ok() && magic == PCAPNG_MAGIC {
        return Err(PcapError::Pcapng {
            path: path.to_owned(),
        });
    }
    let mut reader =
        PcapReader::new(BufReader::new(open()?)).map_err(|source| PcapError::Read {
            path: path.to_owned(),
            source,
        })?;
    let header = reader.header();
    if header.datalink != DataLink::ETHERNET {
        return Err(PcapError::LinkType {
            path: path.to_owned(),
            link: header.datalink,
        });
    }
    let mut frames = Vec::new();
    // Raw records: `next_packet` would refuse a complete frame longer than the header's snap
    // length (see the module docs); lengths and timestamps are checked here instead.
    while let Some(packet) = reader.next_raw_packet() {
        let packet = packet.map_err(|source| PcapError::Read {
            path: path.to_owned(),
            source,
        })?;
        let index_in_file = frames.len();
        if packet.data.len() < packet.orig_len as usize {
            return Err(PcapError::Truncated {
                path: path.to_owned(),
                index: index_in_file,
                captured: packet.data.len(),
                original: packet.orig_len,
            });
        }
        let frac = match header.ts_resolution {
            TsResolution::MicroSecond => Duration::from_micros(u64::from(packet.ts_frac)),
            TsResolution::NanoSecond => Duration::from_nanos(u64::from(packet.ts_frac)),
        };
        frames.push(InputFrame {
            input,
            index_in_file,
            // A fraction of a second or more in the fraction field carries into the seconds.
            timestamp: Duration::from_secs(u64::from(packet.ts_sec)) + frac,
            data: packet.data.into_owned(),
        });
    }
    Ok(frames)
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

    #[test]
    fn pcapng_is_named_as_such() {
        let dir = temp_dir();
        let path = dir.join("x.pcapng");
        std::fs::write(
            &path,
            [
                0x0a, 0x0d, 0x0d, 0x0a, 0x1c, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a,
            ],
        )
        .expect("write");
        let err = read_capture(&path, 0).expect_err("pcapng").to_string();
        assert!(
            err.contains("is pcapng") && err.contains("editcap"),
            "{err}"
        );
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
