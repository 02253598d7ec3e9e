//! The event queue: a binary heap ordered by (virtual time, insertion number), so events at
//! the same nanosecond run in the order they were scheduled and a run is deterministic.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Virtual time, nanoseconds since the start of the run.
pub type Nanos = u64;

struct Entry<E> {
    at: Nanos,
    n: u64,
    e: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.n) == (other.at, other.n)
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, the earliest event must come out first.
        (other.at, other.n).cmp(&(self.at, self.n))
    }
}

/// Events waiting for their time.
pub struct Queue<E> {
    heap: BinaryHeap<Entry<E>>,
    next: u64,
}

impl<E> std::fmt::Debug for Queue<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("waiting", &self.heap.len())
            .field("scheduled", &self.next)
            .finish()
    }
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Queue {
            heap: BinaryHeap::new(),
            next: 0,
        }
    }
}

impl<E> Queue<E> {
    /// Schedules `e` at `at`.
    pub fn push(&mut self, at: Nanos, e: E) {
        let n = self.next;
        self.next += 1;
        self.heap.push(Entry { at, n, e });
    }

    /// The earliest event and its time.
    pub fn pop(&mut self) -> Option<(Nanos, E)> {
        self.heap.pop().map(|x| (x.at, x.e))
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True if nothing waits.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Events scheduled since the start.
    pub fn scheduled(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_order_then_insertion_order() {
        let mut q = Queue::default();
        q.push(5, "b");
        q.push(1, "a");
        q.push(5, "c");
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, vec![(1, "a"), (5, "b"), (5, "c")]);
        assert!(q.is_empty());
    }
}
