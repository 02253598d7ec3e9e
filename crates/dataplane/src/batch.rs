//! Packet buffers and batches.
//!
//! A [`PacketBuf`] is a fixed, preallocated buffer: [`HEADROOM`] bytes in front for prepending
//! headers without copying the packet (encapsulation), then [`BUF_CAPACITY`] bytes for the frame.
//! The engine writes its [`Verdict`] into each buffer of a [`Batch`].
//!
//! Sizes: every port kind carries jumbo frames. [`BUF_CAPACITY`] holds a [`MAX_MTU`] (9216)
//! byte IP packet, its Ethernet header, and one encapsulation made upstream (up to
//! [`HEADROOM`] bytes, the largest rewrite a policy can have: 40 + 8 + 16 x 13). A buffer is
//! then [`BUF_SIZE`] = 9742 bytes; a batch of 256 is 2.4 MiB. The port MTU (an IP MTU, see
//! `PortConfig::mtu`) is a separate, smaller bound checked on egress.

use crate::drop::DropReason;
use crate::port::PortId;
use crate::vm::VmId;

/// Bytes reserved in front of a received frame for prepended headers: the largest policy
/// rewrite (an IPv6 header and an SRH of `MAX_SEGMENTS + 1` segments, 40 + 8 + 16 x 13).
pub const HEADROOM: usize = 256;
/// The largest IP MTU a port can have (`ip link set mtu`; jumbo frames).
pub const MAX_MTU: usize = 9216;
/// Bytes available for a received frame: a [`MAX_MTU`] IP packet, its Ethernet header and one
/// encapsulation added upstream (up to [`HEADROOM`] bytes).
pub const BUF_CAPACITY: usize = MAX_MTU + 14 + HEADROOM;
/// Total size of a packet buffer.
pub const BUF_SIZE: usize = HEADROOM + BUF_CAPACITY;

/// What the engine decided for a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (rewritten, Ethernet included) frame on this port.
    Tx(PortId),
    /// Discarded (counted under the reason).
    Drop(DropReason),
    /// Copied into this VM's End.SBUF buffer, or held by its commit fence
    /// ([`crate::fence`]); it will come out of `poll_transmit`. This `PacketBuf` is free for
    /// the next frame.
    Held(VmId),
    /// Handled by the engine (e.g. an NDP solicitation answered through `poll_transmit`).
    Consumed,
}

/// The frame did not fit in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame of {len} bytes does not fit a {BUF_CAPACITY} byte packet buffer")]
pub struct FrameTooLarge {
    /// Length of the rejected frame.
    pub len: usize,
}

/// One packet: a fixed buffer with headroom, the data range, ingress port and verdict.
#[derive(Clone)]
pub struct PacketBuf {
    pub(crate) buf: Box<[u8]>,
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// Port the frame arrived on.
    pub ingress: PortId,
    /// The engine's decision (written by `process_batch`).
    pub verdict: Verdict,
}

impl core::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PacketBuf")
            .field("ingress", &self.ingress)
            .field("verdict", &self.verdict)
            .field("start", &self.start)
            .field("len", &self.len())
            .finish()
    }
}

impl Default for PacketBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl PacketBuf {
    /// An empty buffer (allocates [`BUF_SIZE`] bytes once).
    pub fn new() -> PacketBuf {
        PacketBuf {
            buf: vec![0u8; BUF_SIZE].into_boxed_slice(),
            start: HEADROOM,
            end: HEADROOM,
            ingress: PortId(0),
            verdict: Verdict::Consumed,
        }
    }

    /// The frame.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The frame, mutable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    /// Frame length.
    #[inline]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the frame is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Bytes available in front of the frame.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// Replaces the frame by a copy of `frame` placed after the full headroom.
    #[inline]
    pub fn set_data(&mut self, frame: &[u8]) -> Result<(), FrameTooLarge> {
        if frame.len() > BUF_CAPACITY {
            return Err(FrameTooLarge { len: frame.len() });
        }
        self.start = HEADROOM;
        self.end = HEADROOM + frame.len();
        self.buf[self.start..self.end].copy_from_slice(frame);
        Ok(())
    }

    /// Sets the frame length to `len` bytes after the full headroom, for drivers that receive
    /// directly into [`PacketBuf::receive_area`].
    pub fn set_received_len(&mut self, len: usize) -> Result<(), FrameTooLarge> {
        if len > BUF_CAPACITY {
            return Err(FrameTooLarge { len });
        }
        self.start = HEADROOM;
        self.end = HEADROOM + len;
        Ok(())
    }

    /// The area a driver may receive a frame into (then call `set_received_len`).
    pub fn receive_area(&mut self) -> &mut [u8] {
        &mut self.buf[HEADROOM..]
    }

    /// Grows the frame by `n` bytes at the front (into the headroom) and returns them; `None`
    /// if the headroom is too small.
    #[inline]
    pub fn push_front(&mut self, n: usize) -> Option<&mut [u8]> {
        let s = self.start.checked_sub(n)?;
        self.start = s;
        Some(&mut self.buf[s..s + n])
    }

    /// Removes `n` bytes from the front; `false` (and no change) if the frame is shorter.
    #[inline]
    pub fn pull_front(&mut self, n: usize) -> bool {
        if n > self.len() {
            return false;
        }
        self.start += n;
        true
    }

    /// Shortens the frame to `len` bytes (no-op if already shorter).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.end = self.start + len;
        }
    }
}

/// A batch of packet buffers, preallocated once.
#[derive(Debug, Clone)]
pub struct Batch {
    pkts: Vec<PacketBuf>,
    len: usize,
}

impl Batch {
    /// A batch of `capacity` preallocated buffers, empty.
    pub fn new(capacity: usize) -> Batch {
        Batch {
            pkts: (0..capacity).map(|_| PacketBuf::new()).collect(),
            len: 0,
        }
    }

    /// Maximum number of packets.
    pub fn capacity(&self) -> usize {
        self.pkts.len()
    }

    /// Number of packets in the batch.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch holds no packet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Empties the batch (buffers are kept).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Whether the batch is full.
    pub fn is_full(&self) -> bool {
        self.len == self.pkts.len()
    }

    /// Appends a copy of `frame` received on `ingress`. Returns `Ok(false)` if the batch is full.
    pub fn push(&mut self, ingress: PortId, frame: &[u8]) -> Result<bool, FrameTooLarge> {
        let Some(p) = self.pkts.get_mut(self.len) else {
            return Ok(false);
        };
        p.set_data(frame)?;
        p.ingress = ingress;
        p.verdict = Verdict::Consumed;
        self.len += 1;
        Ok(true)
    }

    /// Sets the number of packets (for drivers that fill [`Batch::slots_mut`] directly);
    /// clamped to the capacity.
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.pkts.len());
    }

    /// All buffers, including unused ones (for drivers receiving in place).
    pub fn slots_mut(&mut self) -> &mut [PacketBuf] {
        &mut self.pkts
    }

    /// The packets in the batch.
    pub fn packets(&self) -> &[PacketBuf] {
        &self.pkts[..self.len]
    }

    /// The packets in the batch, mutable.
    pub fn packets_mut(&mut self) -> &mut [PacketBuf] {
        &mut self.pkts[..self.len]
    }

    /// Iterates over the packets.
    pub fn iter(&self) -> core::slice::Iter<'_, PacketBuf> {
        self.packets().iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_ops() {
        let mut p = PacketBuf::new();
        p.set_data(&[1, 2, 3]).unwrap();
        assert_eq!(p.data(), &[1, 2, 3]);
        assert_eq!(p.headroom(), HEADROOM);
        p.push_front(2).unwrap().copy_from_slice(&[8, 9]);
        assert_eq!(p.data(), &[8, 9, 1, 2, 3]);
        assert!(p.pull_front(3));
        assert_eq!(p.data(), &[2, 3]);
        assert!(!p.pull_front(3));
        assert!(p.push_front(HEADROOM + 2).is_none());
        p.truncate(1);
        assert_eq!(p.data(), &[2]);
        assert_eq!(
            p.set_data(&[0; BUF_CAPACITY + 1]),
            Err(FrameTooLarge {
                len: BUF_CAPACITY + 1
            })
        );
        p.receive_area()[..2].copy_from_slice(&[5, 6]);
        p.set_received_len(2).unwrap();
        assert_eq!(p.data(), &[5, 6]);
    }

    #[test]
    fn batch_fill() {
        let mut b = Batch::new(2);
        assert!(b.push(PortId(1), &[1]).unwrap());
        assert!(b.push(PortId(2), &[2]).unwrap());
        assert!(!b.push(PortId(3), &[3]).unwrap());
        assert!(b.is_full());
        assert_eq!(
            b.iter().map(|p| p.ingress).collect::<Vec<_>>(),
            vec![PortId(1), PortId(2)]
        );
        b.clear();
        assert!(b.is_empty());
        b.set_len(10);
        assert_eq!(b.len(), 2);
    }
}
