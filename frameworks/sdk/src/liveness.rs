//! Detects a silent master: no event (heartbeats included) for
//! `missed_heartbeats × heartbeat_interval`.

use std::time::Duration;

use tokio::time::Instant;

/// Heartbeat interval assumed when the master announces none (Mesos' 15 s).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);

/// Tracks when the last event arrived on a subscription stream.
#[derive(Debug, Clone)]
pub struct Liveness {
    timeout: Duration,
    last_seen: Instant,
}

impl Liveness {
    /// Starts watching now. `interval_seconds` is the master's announced
    /// heartbeat interval (replaced by [`DEFAULT_HEARTBEAT_INTERVAL`] when it
    /// is not a positive finite number); the master is considered gone after
    /// `missed` intervals (at least one) without an event.
    pub fn new(interval_seconds: f64, missed: u32) -> Self {
        let interval = if interval_seconds.is_finite() && interval_seconds > 0.0 {
            Duration::try_from_secs_f64(interval_seconds).unwrap_or(DEFAULT_HEARTBEAT_INTERVAL)
        } else {
            DEFAULT_HEARTBEAT_INTERVAL
        };
        Self {
            timeout: interval.saturating_mul(missed.max(1)),
            last_seen: Instant::now(),
        }
    }

    /// Records that an event arrived just now.
    pub fn observe(&mut self) {
        self.last_seen = Instant::now();
    }

    /// When the master is to be considered gone if nothing arrives before.
    pub fn deadline(&self) -> Instant {
        self.last_seen + self.timeout
    }

    /// Whether the deadline has passed.
    pub fn is_expired(&self) -> bool {
        Instant::now() >= self.deadline()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn master_is_alive_until_the_missed_heartbeats_elapse() {
        let l = Liveness::new(1.0, 3);
        tokio::time::advance(Duration::from_millis(2999)).await;
        assert!(!l.is_expired());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(l.is_expired());
    }

    #[tokio::test(start_paused = true)]
    async fn any_event_pushes_the_deadline_back() {
        let mut l = Liveness::new(1.0, 3);
        tokio::time::advance(Duration::from_millis(2500)).await;
        l.observe();
        tokio::time::advance(Duration::from_millis(2500)).await;
        assert!(!l.is_expired());
    }

    #[tokio::test(start_paused = true)]
    async fn a_bad_interval_falls_back_to_the_default() {
        let l = Liveness::new(f64::NAN, 1);
        assert_eq!(l.deadline() - Instant::now(), DEFAULT_HEARTBEAT_INTERVAL);
        let l = Liveness::new(-1.0, 2);
        assert_eq!(l.deadline() - Instant::now(), DEFAULT_HEARTBEAT_INTERVAL * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_missed_heartbeats_counts_as_one() {
        let l = Liveness::new(2.0, 0);
        assert_eq!(l.deadline() - Instant::now(), Duration::from_secs(2));
    }
}
