//! The record framing of QEMU's `-netdev stream` (and `-netdev socket`) backends: each frame
//! is preceded by its length as a 4-byte big-endian integer.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Frame length (bytes)                      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Ethernet frame (no FCS, no virtio-net header) ...     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! A stream read returns any number of bytes: [`RxFramer`] keeps what it has read and hands out
//! complete frames, so a record split over any number of reads comes out whole.

use std::io;

/// Length of the record header.
pub const RECORD_HEADER_LEN: usize = 4;

/// The largest frame QEMU 7.2 sends or accepts on a stream backend (`NET_BUFSIZE`, 4096 +
/// 65536); a larger length means the stream is out of step.
pub const MAX_RECORD_FRAME: usize = 4096 + 65536;

/// The record header for a frame of `len` bytes.
#[inline]
pub fn record_header(len: usize) -> [u8; RECORD_HEADER_LEN] {
    (len as u32).to_be_bytes()
}

/// What the framer holds next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// A complete frame.
    Frame(&'a [u8]),
    /// An empty record (skipped by the caller; QEMU never sends one).
    Empty,
    /// Not a complete record yet: read more.
    NeedMore,
    /// A length no QEMU sends: the stream is out of step and must be reset.
    Bad(u32),
}

/// Reassembles records from stream reads.
#[derive(Debug)]
pub struct RxFramer {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl RxFramer {
    /// A framer with room for two of the largest records.
    pub fn new() -> RxFramer {
        RxFramer {
            buf: vec![0u8; 2 * (RECORD_HEADER_LEN + MAX_RECORD_FRAME)].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Forgets everything buffered (a new connection).
    pub fn reset(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Bytes buffered and not handed out yet.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Whether a complete record is buffered.
    pub fn has_record(&self) -> bool {
        let b = &self.buf[self.start..self.end];
        if b.len() < RECORD_HEADER_LEN {
            return false;
        }
        let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        len > MAX_RECORD_FRAME || b.len() >= RECORD_HEADER_LEN + len
    }

    /// Reads once with `read` into the free space (compacting first when needed). Returns
    /// what `read` returned: `Ok(0)` is end of stream.
    pub fn fill(&mut self, read: impl FnOnce(&mut [u8]) -> io::Result<usize>) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < RECORD_HEADER_LEN + MAX_RECORD_FRAME {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // Only reachable if the caller fills without draining complete records first.
            return Err(io::Error::other("stream framer buffer full"));
        }
        let n = read(&mut self.buf[self.end..])?;
        self.end += n.min(self.buf.len() - self.end);
        Ok(n)
    }

    /// The next record, consumed if complete.
    pub fn next_record(&mut self) -> Next<'_> {
        let avail = self.end - self.start;
        if avail < RECORD_HEADER_LEN {
            return Next::NeedMore;
        }
        let s = self.start;
        let b = &self.buf;
        let len = u32::from_be_bytes([b[s], b[s + 1], b[s + 2], b[s + 3]]);
        let n = len as usize;
        if n > MAX_RECORD_FRAME {
            return Next::Bad(len);
        }
        if avail < RECORD_HEADER_LEN + n {
            return Next::NeedMore;
        }
        self.start += RECORD_HEADER_LEN + n;
        if n == 0 {
            return Next::Empty;
        }
        Next::Frame(&self.buf[s + RECORD_HEADER_LEN..s + RECORD_HEADER_LEN + n])
    }
}

impl Default for RxFramer {
    fn default() -> Self {
        RxFramer::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_of(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut s = Vec::new();
        for f in frames {
            s.extend_from_slice(&record_header(f.len()));
            s.extend_from_slice(f);
        }
        s
    }

    fn frames() -> Vec<Vec<u8>> {
        (0..20u8)
            .map(|i| vec![i; 60 + usize::from(i) * 97])
            .collect()
    }

    /// Feeds `stream` in reads of the given sizes (cycled) and collects the frames.
    fn reassemble(stream: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
        let mut f = RxFramer::new();
        let mut out = Vec::new();
        let mut pos = 0;
        let mut k = 0;
        while pos < stream.len() {
            let want = sizes[k % sizes.len()].max(1);
            k += 1;
            let n = f
                .fill(|buf| {
                    let n = want.min(buf.len()).min(stream.len() - pos);
                    buf[..n].copy_from_slice(&stream[pos..pos + n]);
                    Ok(n)
                })
                .expect("fill");
            pos += n;
            loop {
                match f.next_record() {
                    Next::Frame(fr) => out.push(fr.to_vec()),
                    Next::Empty => {}
                    Next::NeedMore => break,
                    Next::Bad(l) => panic!("bad length {l}"),
                }
            }
        }
        assert_eq!(f.buffered(), 0);
        out
    }

    #[test]
    fn whole_and_partial_reads_give_the_same_frames() {
        let fr = frames();
        let s = stream_of(&fr);
        assert_eq!(reassemble(&s, &[s.len()]), fr);
        assert_eq!(reassemble(&s, &[1]), fr);
        assert_eq!(reassemble(&s, &[3, 5, 7, 1000]), fr);
        // Header split from its frame, and frames straddling reads.
        assert_eq!(reassemble(&s, &[2, 4, 61, 4093]), fr);
    }

    #[test]
    fn has_record_tracks_completeness() {
        let mut f = RxFramer::new();
        let s = stream_of(&[vec![7u8; 100]]);
        f.fill(|b| {
            b[..50].copy_from_slice(&s[..50]);
            Ok(50)
        })
        .expect("fill");
        assert!(!f.has_record());
        assert_eq!(f.next_record(), Next::NeedMore);
        f.fill(|b| {
            b[..54].copy_from_slice(&s[50..]);
            Ok(54)
        })
        .expect("fill");
        assert!(f.has_record());
        assert_eq!(f.next_record(), Next::Frame(&[7u8; 100][..]));
        assert!(!f.has_record());
    }

    #[test]
    fn out_of_step_length_is_reported_and_empty_records_skipped() {
        let mut f = RxFramer::new();
        let mut s = record_header(0).to_vec();
        s.extend_from_slice(&0x0100_0000u32.to_be_bytes());
        f.fill(|b| {
            b[..s.len()].copy_from_slice(&s);
            Ok(s.len())
        })
        .expect("fill");
        assert_eq!(f.next_record(), Next::Empty);
        assert!(f.has_record());
        assert_eq!(f.next_record(), Next::Bad(0x0100_0000));
        f.reset();
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn compaction_keeps_a_pending_partial_record() {
        let mut f = RxFramer::new();
        let big = vec![1u8; MAX_RECORD_FRAME];
        let s = stream_of(&[big.clone(), big.clone(), vec![2u8; 10]]);
        let mut pos = 0;
        let mut got = Vec::new();
        while pos < s.len() {
            let n = f
                .fill(|b| {
                    let n = b.len().min(s.len() - pos).min(50_000);
                    b[..n].copy_from_slice(&s[pos..pos + n]);
                    Ok(n)
                })
                .expect("fill");
            pos += n;
            while let Next::Frame(fr) = f.next_record() {
                got.push(fr.len());
            }
        }
        assert_eq!(got, vec![MAX_RECORD_FRAME, MAX_RECORD_FRAME, 10]);
    }
}
