//! [`TimerQueue`]: many deadlines, one sleep. The simulated agents keep every
//! task's "finish at" time here instead of spawning a timer per task.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use tokio::time::Instant;

/// Items that fall due at given instants, handed out earliest first (and in
/// insertion order among equal instants).
#[derive(Debug)]
pub struct TimerQueue<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    next_seq: u64,
}

#[derive(Debug)]
struct Entry<T> {
    at: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }
}

impl<T> TimerQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `item` for `at`.
    pub fn push(&mut self, at: Instant, item: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse(Entry { at, seq, item }));
    }

    /// The earliest deadline, if any item is queued.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Takes every item due at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: Instant) -> Vec<T> {
        let mut due = Vec::new();
        while self.heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
            if let Some(Reverse(e)) = self.heap.pop() {
                due.push(e.item);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn nothing_is_due_before_its_deadline() {
        let mut q = TimerQueue::new();
        q.push(Instant::now() + Duration::from_secs(1), "a");
        assert!(q.pop_due(Instant::now()).is_empty());
        assert!(q.next_deadline().is_some());
    }

    #[test]
    fn items_come_out_earliest_first_once_due() {
        let mut q = TimerQueue::new();
        let t0 = Instant::now();
        q.push(t0 + Duration::from_millis(30), "late");
        q.push(t0 + Duration::from_millis(10), "early");
        q.push(t0 + Duration::from_millis(20), "middle");
        assert_eq!(q.pop_due(t0 + Duration::from_millis(25)), vec!["early", "middle"]);
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(30)));
    }

    #[test]
    fn items_due_at_the_same_instant_keep_their_order() {
        let mut q = TimerQueue::new();
        let at = Instant::now() + Duration::from_millis(5);
        for i in 0..5 {
            q.push(at, i);
        }
        assert_eq!(q.pop_due(at), vec![0, 1, 2, 3, 4]);
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn the_next_deadline_is_the_earliest() {
        let mut q: TimerQueue<()> = TimerQueue::new();
        assert_eq!(q.next_deadline(), None);
        let t0 = Instant::now();
        q.push(t0 + Duration::from_secs(2), ());
        q.push(t0 + Duration::from_secs(1), ());
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_secs(1)));
    }
}
