//! [`Timeline`]: when each task was offered and launched, and when the run
//! began and ended, written lock-free by the frameworks and the simulated
//! agents (both live in the benchmark process) and read once at the end.
//!
//! Instants are kept as nanoseconds since the timeline's epoch, plus one, so
//! that zero means "not yet".

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The benchmark's task ids are `t<index>`; this is the index.
pub fn task_index(task_id: &str) -> Option<usize> {
    task_id.strip_prefix('t')?.parse().ok()
}

/// The id of the task with global index `index`.
pub fn task_id(index: usize) -> String {
    format!("t{index}")
}

/// Shared per-task and run-wide instants.
#[derive(Debug)]
pub struct Timeline {
    epoch: Instant,
    /// Per task: when the framework received the OFFERS event it was placed on.
    offered: Vec<AtomicU64>,
    /// Per task: when a simulated agent received its RunTask.
    launched: Vec<AtomicU64>,
    first_offer: AtomicU64,
    last_launch: AtomicU64,
    last_terminal: AtomicU64,
    terminal: AtomicUsize,
}

impl Timeline {
    /// A timeline for `tasks` tasks, starting now.
    pub fn new(tasks: usize) -> Self {
        Self {
            epoch: Instant::now(),
            offered: (0..tasks).map(|_| AtomicU64::new(0)).collect(),
            launched: (0..tasks).map(|_| AtomicU64::new(0)).collect(),
            first_offer: AtomicU64::new(0),
            last_launch: AtomicU64::new(0),
            last_terminal: AtomicU64::new(0),
            terminal: AtomicUsize::new(0),
        }
    }

    fn stamp(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn since_epoch(stamp: u64) -> Option<Duration> {
        stamp.checked_sub(1).map(Duration::from_nanos)
    }

    /// A framework received offers at `at` (the first such call starts the clock).
    pub fn offers_received(&self, at: Instant) {
        let stamp = self.stamp(at);
        let _ = self
            .first_offer
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                (v == 0).then_some(stamp)
            });
    }

    /// Task `index` was placed on an offer received at `at`.
    pub fn placed(&self, index: usize, at: Instant) {
        if let Some(slot) = self.offered.get(index) {
            slot.store(self.stamp(at), Ordering::Relaxed);
        }
    }

    /// A simulated agent received task `index`'s RunTask at `at`.
    pub fn launched(&self, index: usize, at: Instant) {
        let stamp = self.stamp(at);
        if let Some(slot) = self.launched.get(index) {
            let _ = slot.compare_exchange(0, stamp, Ordering::Relaxed, Ordering::Relaxed);
        }
        self.last_launch.fetch_max(stamp, Ordering::Relaxed);
    }

    /// A framework saw a task's first terminal update at `at`.
    pub fn terminal(&self, at: Instant) {
        self.last_terminal.fetch_max(self.stamp(at), Ordering::Relaxed);
        self.terminal.fetch_add(1, Ordering::Relaxed);
    }

    /// Tasks that reached a terminal state so far.
    pub fn terminal_count(&self) -> usize {
        self.terminal.load(Ordering::Relaxed)
    }

    /// From the first offer to the last terminal update.
    pub fn run_time(&self) -> Option<Duration> {
        let first = Self::since_epoch(self.first_offer.load(Ordering::Relaxed))?;
        let last = Self::since_epoch(self.last_terminal.load(Ordering::Relaxed))?;
        Some(last.saturating_sub(first))
    }

    /// From the first offer to the last RunTask reaching an agent.
    pub fn launch_time(&self) -> Option<Duration> {
        let first = Self::since_epoch(self.first_offer.load(Ordering::Relaxed))?;
        let last = Self::since_epoch(self.last_launch.load(Ordering::Relaxed))?;
        Some(last.saturating_sub(first))
    }

    /// Tasks whose RunTask reached an agent.
    pub fn launched_count(&self) -> usize {
        self.launched
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) != 0)
            .count()
    }

    /// Offer received → RunTask received, for every task that has both.
    pub fn offer_to_launch(&self) -> Vec<Duration> {
        self.offered
            .iter()
            .zip(&self.launched)
            .filter_map(|(o, l)| {
                let o = Self::since_epoch(o.load(Ordering::Relaxed))?;
                let l = Self::since_epoch(l.load(Ordering::Relaxed))?;
                Some(l.saturating_sub(o))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_map_back_to_their_index() {
        assert_eq!(task_index(&task_id(4242)), Some(4242));
        assert_eq!(task_index("bench-1"), None);
        assert_eq!(task_index("t"), None);
    }

    #[test]
    fn offer_to_launch_is_measured_per_task() {
        let t = Timeline::new(3);
        let t0 = Instant::now();
        t.offers_received(t0);
        t.placed(0, t0);
        t.placed(1, t0);
        t.launched(0, t0 + Duration::from_millis(7));
        t.launched(1, t0 + Duration::from_millis(9));
        let mut l = t.offer_to_launch();
        l.sort();
        assert_eq!(l, vec![Duration::from_millis(7), Duration::from_millis(9)]);
        assert_eq!(t.launched_count(), 2);
    }

    #[test]
    fn the_run_lasts_from_the_first_offer_to_the_last_terminal_update() {
        let t = Timeline::new(1);
        let t0 = Instant::now() + Duration::from_secs(1);
        t.offers_received(t0);
        t.offers_received(t0 + Duration::from_secs(5));
        t.terminal(t0 + Duration::from_secs(3));
        t.terminal(t0 + Duration::from_secs(2));
        assert_eq!(t.run_time(), Some(Duration::from_secs(3)));
        assert_eq!(t.terminal_count(), 2);
    }

    #[test]
    fn an_unknown_task_index_is_ignored() {
        let t = Timeline::new(1);
        t.placed(5, Instant::now());
        t.launched(5, Instant::now());
        assert!(t.offer_to_launch().is_empty());
    }
}
