//! The per-task queue of unacknowledged status updates.
//!
//! Updates for one task are delivered in order: only the head of the queue is
//! in flight; it is resent with backoff until the framework's acknowledgement
//! (matching its uuid) comes back down, and only then is the next one sent.
//!
//! An update may be sent only once it is durable (on disk in the task's
//! checkpoint). The queue numbers updates as they are pushed; the agent's
//! checkpoint writer reports, per batch, up to which number a checkpoint is
//! on disk ([`UpdateQueue::mark_durable`]), and a head that is not durable
//! yet is never due.

use std::collections::VecDeque;
use std::time::Duration;

use agora_proto::v1;
use tokio::time::Instant;

/// Longest wait between two resends of the same update.
const MAX_RETRY: Duration = Duration::from_secs(600);
/// The retry interval grows up to this many times the base interval.
const MAX_RETRY_FACTOR: u32 = 10;

/// What an acknowledgement did to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ack {
    /// The head was acknowledged and removed.
    Removed,
    /// The uuid is not the head's (a stale or duplicate acknowledgement): ignored.
    Stale,
}

/// Unacknowledged updates of one task, oldest (in flight) first.
#[derive(Debug, Clone)]
pub(crate) struct UpdateQueue {
    pending: VecDeque<v1::TaskStatus>,
    /// How many updates were ever pushed (the newest one's sequence number).
    pushed: u64,
    /// Updates up to this sequence number are on disk.
    durable: u64,
    base: Duration,
    /// When the head was last sent and how long until it is resent;
    /// `None` when the head has not been sent (since connecting).
    retry: Option<(Instant, Duration)>,
}

impl UpdateQueue {
    /// An empty queue that resends after `base`, doubling up to 10x (capped at 10 min).
    pub(crate) fn new(base: Duration) -> Self {
        Self::with_pending(base, Vec::new())
    }

    /// A queue recovered from a checkpoint (so already durable); nothing counts as sent yet.
    pub(crate) fn with_pending(base: Duration, pending: Vec<v1::TaskStatus>) -> Self {
        let pushed = pending.len() as u64;
        Self {
            pending: pending.into(),
            pushed,
            durable: pushed,
            base: base.max(Duration::from_millis(1)),
            retry: None,
        }
    }

    /// Appends an update; returns whether it is now the head (and should be sent).
    pub(crate) fn push(&mut self, status: v1::TaskStatus) -> bool {
        self.pending.push_back(status);
        self.pushed += 1;
        self.pending.len() == 1
    }

    /// The sequence number of the newest update pushed: a checkpoint taken now
    /// covers every update up to it.
    pub(crate) fn pushed(&self) -> u64 {
        self.pushed
    }

    /// Records that a checkpoint holding every update up to `seq` is on disk.
    pub(crate) fn mark_durable(&mut self, seq: u64) {
        self.durable = self.durable.max(seq.min(self.pushed));
    }

    /// Whether the head exists and is on disk, so it may be sent.
    pub(crate) fn head_is_durable(&self) -> bool {
        let len = self.pending.len() as u64;
        // The head's sequence number is `pushed - len + 1`.
        len > 0 && self.pushed - len < self.durable
    }

    /// The update in flight, if any.
    pub(crate) fn head(&self) -> Option<&v1::TaskStatus> {
        self.pending.front()
    }

    /// All unacknowledged updates, oldest first.
    pub(crate) fn pending(&self) -> impl Iterator<Item = &v1::TaskStatus> {
        self.pending.iter()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Handles an acknowledgement: removes the head if `uuid` is its uuid.
    pub(crate) fn ack(&mut self, uuid: &[u8]) -> Ack {
        match self.pending.front() {
            Some(head) if head.uuid == uuid => {
                self.pending.pop_front();
                self.retry = None;
                Ack::Removed
            }
            _ => Ack::Stale,
        }
    }

    /// Records that the head was sent at `now`: the first send waits `base`
    /// for an ack, each resend twice as long as the previous, up to the cap.
    pub(crate) fn mark_sent(&mut self, now: Instant) {
        let cap = (self.base * MAX_RETRY_FACTOR).min(MAX_RETRY);
        let wait = match self.retry {
            None => self.base.min(cap),
            Some((_, previous)) => (previous * 2).min(cap),
        };
        self.retry = Some((now, wait));
    }

    /// Forgets send history (e.g. after a reconnect): the head is due at once.
    pub(crate) fn reset(&mut self) {
        self.retry = None;
    }

    /// When the head must be (re)sent: `None` if the queue is empty or the head
    /// is not durable yet; for a head never sent, "now" (the caller's earliest).
    pub(crate) fn due_at(&self) -> Option<Option<Instant>> {
        if !self.head_is_durable() {
            return None;
        }
        Some(self.retry.map(|(sent, wait)| sent + wait))
    }

    /// Whether the head should be sent at `now`.
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        match self.due_at() {
            Some(None) => true,
            Some(Some(at)) => at <= now,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: v1::TaskState, uuid: u8) -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: "t".into(),
            state: state as i32,
            uuid: vec![uuid; 16],
            ..Default::default()
        }
    }

    /// A queue whose updates are all on disk (the writer is not under test).
    fn durable(q: &mut UpdateQueue) {
        q.mark_durable(q.pushed());
    }

    #[test]
    fn an_update_is_not_due_until_its_checkpoint_is_durable() {
        let mut q = UpdateQueue::new(Duration::from_secs(10));
        q.push(status(v1::TaskState::Running, 1));
        let covered = q.pushed();
        assert!(!q.is_due(Instant::now()));
        assert_eq!(q.due_at(), None);
        q.push(status(v1::TaskState::Finished, 2));
        q.mark_durable(covered);
        assert!(q.is_due(Instant::now()));
        assert_eq!(q.ack(&[1; 16]), Ack::Removed);
        assert!(
            !q.is_due(Instant::now()),
            "the terminal update is not on disk yet"
        );
        q.mark_durable(q.pushed());
        assert!(q.is_due(Instant::now()));
    }

    #[test]
    fn a_late_report_of_an_older_batch_does_not_undo_durability() {
        let mut q = UpdateQueue::new(Duration::from_secs(10));
        q.push(status(v1::TaskState::Running, 1));
        q.push(status(v1::TaskState::Finished, 2));
        q.mark_durable(2);
        q.mark_durable(1);
        q.mark_durable(99);
        q.ack(&[1; 16]);
        assert!(q.head_is_durable());
        q.push(status(v1::TaskState::Finished, 3));
        q.ack(&[2; 16]);
        assert!(!q.head_is_durable(), "durability is capped at what was pushed");
    }

    #[test]
    fn recovered_updates_are_durable() {
        let q = UpdateQueue::with_pending(Duration::from_secs(10), vec![status(v1::TaskState::Running, 1)]);
        assert!(q.is_due(Instant::now()));
    }

    #[test]
    fn only_the_first_update_becomes_head() {
        let mut q = UpdateQueue::new(Duration::from_secs(10));
        assert!(q.push(status(v1::TaskState::Starting, 1)));
        assert!(!q.push(status(v1::TaskState::Running, 2)));
        assert_eq!(q.head().unwrap().uuid, vec![1; 16]);
    }

    #[test]
    fn ack_of_head_removes_it_and_exposes_the_next() {
        let mut q = UpdateQueue::new(Duration::from_secs(10));
        q.push(status(v1::TaskState::Starting, 1));
        q.push(status(v1::TaskState::Running, 2));
        assert_eq!(q.ack(&[1; 16]), Ack::Removed);
        assert_eq!(q.head().unwrap().uuid, vec![2; 16]);
        assert_eq!(q.ack(&[2; 16]), Ack::Removed);
        assert!(q.is_empty());
    }

    #[test]
    fn ack_with_a_stale_or_future_uuid_is_ignored() {
        let mut q = UpdateQueue::new(Duration::from_secs(10));
        q.push(status(v1::TaskState::Starting, 1));
        q.push(status(v1::TaskState::Running, 2));
        assert_eq!(q.ack(&[2; 16]), Ack::Stale);
        assert_eq!(q.ack(&[9; 16]), Ack::Stale);
        assert_eq!(q.pending().count(), 2);
    }

    #[test]
    fn an_unsent_head_is_due_immediately() {
        let mut q = UpdateQueue::new(Duration::from_secs(10));
        assert!(!q.is_due(Instant::now()));
        q.push(status(v1::TaskState::Starting, 1));
        durable(&mut q);
        assert!(q.is_due(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn resends_back_off_doubling_up_to_ten_times_the_base() {
        let base = Duration::from_secs(10);
        let mut q = UpdateQueue::new(base);
        q.push(status(v1::TaskState::Starting, 1));
        durable(&mut q);
        let mut waits = Vec::new();
        for _ in 0..6 {
            let sent = Instant::now();
            q.mark_sent(sent);
            let due = q.due_at().unwrap().unwrap();
            waits.push((due - sent).as_secs());
            tokio::time::advance(due - sent - Duration::from_millis(1)).await;
            assert!(!q.is_due(Instant::now()));
            tokio::time::advance(Duration::from_millis(1)).await;
            assert!(q.is_due(Instant::now()));
        }
        assert_eq!(waits, [10, 20, 40, 80, 100, 100]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_interval_is_capped_at_ten_minutes() {
        let mut q = UpdateQueue::new(Duration::from_secs(120));
        q.push(status(v1::TaskState::Starting, 1));
        durable(&mut q);
        for _ in 0..5 {
            q.mark_sent(Instant::now());
        }
        let now = Instant::now();
        assert_eq!(q.due_at().unwrap().unwrap() - now, MAX_RETRY);
    }

    #[tokio::test(start_paused = true)]
    async fn ack_restarts_backoff_for_the_next_update() {
        let mut q = UpdateQueue::new(Duration::from_secs(10));
        q.push(status(v1::TaskState::Starting, 1));
        q.push(status(v1::TaskState::Running, 2));
        durable(&mut q);
        q.mark_sent(Instant::now());
        q.mark_sent(Instant::now());
        q.ack(&[1; 16]);
        assert!(q.is_due(Instant::now()));
        q.mark_sent(Instant::now());
        assert_eq!(
            q.due_at().unwrap().unwrap() - Instant::now(),
            Duration::from_secs(10)
        );
    }
}
