//! Exponential backoff with jitter between connection attempts.

use std::time::Duration;

use rand::Rng;

/// Delays between reconnection attempts: doubling from `min` up to `max`,
/// each delay drawn uniformly from the upper half of the current step so
/// that many frameworks restarting together do not reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// A backoff starting at `min` and never exceeding `max` (`max` is
    /// raised to `min` if smaller).
    pub fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        Self { min, max, step: min }
    }

    /// The next delay to wait, then doubles the step (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step.saturating_mul(2)).min(self.max);
        let half = step / 2;
        let jitter_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = if jitter_nanos == 0 {
            0
        } else {
            rand::rng().random_range(0..=jitter_nanos)
        };
        (step - half) + Duration::from_nanos(jitter)
    }

    /// Starts over from `min`, after a successful connection.
    pub fn reset(&mut self) {
        self.step = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    #[test]
    fn first_delay_is_between_half_min_and_min() {
        for _ in 0..100 {
            let d = Backoff::new(MIN, MAX).next_delay();
            assert!(d >= MIN / 2 && d <= MIN, "{d:?}");
        }
    }

    #[test]
    fn delays_grow_exponentially_until_the_cap() {
        let mut b = Backoff::new(MIN, MAX);
        let mut step = MIN;
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d >= step / 2 && d <= step, "{d:?} outside step {step:?}");
            step = (step * 2).min(MAX);
        }
    }

    #[test]
    fn delays_never_exceed_max() {
        let mut b = Backoff::new(MIN, MAX);
        for _ in 0..100 {
            assert!(b.next_delay() <= MAX);
        }
    }

    #[test]
    fn reset_starts_over_from_min() {
        let mut b = Backoff::new(MIN, MAX);
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= MIN);
    }
}
