//! Wall-clock moments on the monotonic clock. The kernel stamps received datagrams on the
//! wall clock (`SO_TIMESTAMPNS`) and srmigd reports its moments in microseconds since the
//! Unix epoch, while the lab times everything else with [`Instant`]s.
//!
//! A [`WallAnchor`] reads both clocks together, again while the reader was descheduled
//! between the reads, and a receiver maps all its stamps through the one anchor it read when
//! it started, so their order and spacing are the kernel's. Reading a pair for each datagram,
//! as the probe did, put the reader's own preemption between the two reads into the stamp: a
//! thread descheduled between them dated its datagram that much earlier, ahead of answers that
//! came before it. On this 2-core machine beside two fuzzers, about 5 pairs in a million were
//! more than 1 ms apart, a burst of released answers comes some microseconds apart, and the
//! received stamps are what `lab_migrate` checks End.SBUF's release order on (it failed once
//! in CI that way). A wall clock stepped after an anchor was read shifts the later moments by
//! the step; the lab's hosts run no time daemon.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One reading of both clocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallAnchor {
    mono: Instant,
    wall: SystemTime,
}

impl WallAnchor {
    /// Reads the pair, again while the monotonic reads around the wall one are more than
    /// 2 µs apart (the thread was descheduled), keeping the tightest of a few tries.
    pub(crate) fn now() -> WallAnchor {
        let read = || {
            let before = Instant::now();
            let wall = SystemTime::now();
            let width = before.elapsed();
            let anchor = WallAnchor {
                mono: before + width / 2,
                wall,
            };
            (width, anchor)
        };
        let mut best = read();
        for _ in 0..16 {
            if best.0 <= Duration::from_micros(2) {
                break;
            }
            let next = read();
            if next.0 < best.0 {
                best = next;
            }
        }
        best.1
    }

    /// The monotonic instant of `wall` (`None` out of `Instant`'s range).
    pub(crate) fn instant(&self, wall: SystemTime) -> Option<Instant> {
        match wall.duration_since(self.wall) {
            Ok(after) => self.mono.checked_add(after),
            Err(before) => self.mono.checked_sub(before.duration()),
        }
    }

    /// The monotonic instant of `us` microseconds since the Unix epoch.
    pub(crate) fn instant_of_unix_us(&self, us: u64) -> Option<Instant> {
        self.instant(UNIX_EPOCH.checked_add(Duration::from_micros(us))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_stamps_keep_their_order_and_spacing_on_the_monotonic_clock() {
        let anchor = WallAnchor::now();
        let base = SystemTime::now();
        // Stamps 1 µs apart, before and after the anchor: one mapping for all, so the order
        // and the spacing are exact (a pair of clock reads per stamp would jitter them).
        let at = |us: i64| {
            let wall = if us >= 0 {
                base + Duration::from_micros(us.unsigned_abs())
            } else {
                base - Duration::from_micros(us.unsigned_abs())
            };
            anchor.instant(wall).expect("in range")
        };
        let stamps: Vec<Instant> = (-5_000..5_000).map(at).collect();
        for pair in stamps.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_micros(1));
        }
        // `base` was read before `later`, and not long before.
        let later = Instant::now();
        let mapped = at(0);
        assert!(
            mapped <= later + Duration::from_millis(1)
                && later.saturating_duration_since(mapped) < Duration::from_millis(500),
            "{:?}",
            later.saturating_duration_since(mapped)
        );
    }

    #[test]
    fn unix_microseconds_map_to_instants() {
        let anchor = WallAnchor::now();
        let us = |wall: SystemTime| {
            u64::try_from(
                wall.duration_since(UNIX_EPOCH)
                    .expect("after 1970")
                    .as_micros(),
            )
            .expect("fits")
        };
        let now = SystemTime::now();
        let earlier = anchor
            .instant_of_unix_us(us(now - Duration::from_millis(2)))
            .expect("in range");
        let at_now = anchor.instant_of_unix_us(us(now)).expect("in range");
        let back = at_now - earlier;
        // Microseconds: the two moments are truncated separately.
        assert!(
            back.abs_diff(Duration::from_millis(2)) <= Duration::from_micros(1),
            "{back:?}"
        );
    }
}
