//! Launch backoff on *repeated* failures: the first failure of an app
//! version is replaced at once (a single crash or an outside kill heals
//! without waiting); the second waits `backoffSeconds`, each further one
//! × `backoffFactor`, up to `maxLaunchDelaySeconds` (Marathon's rate limiter,
//! which also delayed the first replacement).

use std::time::Duration;

use tokio::time::Instant;

use super::{Now, StoredDelay};
use crate::app::{AppDefinition, AppId};

/// The launch delay of one app version.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LaunchDelay {
    /// The version whose failures this counts (a new version starts afresh).
    pub version: Option<jiff::Timestamp>,
    /// The delay applied after the last failure.
    pub current: Duration,
    /// No launch before this.
    pub until: Instant,
    /// Failures counted.
    pub failures: u32,
}

impl LaunchDelay {
    /// After the first failure of `app`'s current version at `now`: no delay.
    pub fn first(app: &AppDefinition, now: Instant) -> Self {
        Self {
            version: app.version,
            current: Duration::ZERO,
            until: now,
            failures: 1,
        }
    }

    /// The delay after one more failure at `now`: `backoffSeconds` after the
    /// second failure, then the previous one × `backoffFactor`, capped at
    /// `maxLaunchDelaySeconds`.
    pub fn next(&self, app: &AppDefinition, now: Instant) -> Self {
        if self.current.is_zero() {
            let current = app.backoff().min(app.max_launch_delay());
            return Self {
                version: app.version,
                current,
                until: now + current,
                failures: self.failures.saturating_add(1),
            };
        }
        let factor = if app.backoff_factor.is_finite() && app.backoff_factor >= 1.0 {
            app.backoff_factor
        } else {
            1.0
        };
        let cap = app.max_launch_delay();
        let grown = self.current.as_secs_f64() * factor;
        let current = if grown >= cap.as_secs_f64() {
            cap
        } else {
            Duration::from_secs_f64(grown)
        };
        Self {
            version: app.version,
            current,
            until: now + current,
            failures: self.failures.saturating_add(1),
        }
    }

    /// Time left at `now` (zero when it has passed).
    pub fn left(&self, now: Instant) -> Duration {
        self.until.saturating_duration_since(now)
    }

    /// Whether launches must still wait at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        now < self.until
    }

    /// The stored form of `app`'s delay: its end on the wall clock of `now`.
    pub fn stored(&self, app: &AppId, now: Now) -> StoredDelay {
        StoredDelay {
            app_id: app.clone(),
            version: self.version,
            current_seconds: self.current.as_secs_f64(),
            until: now.wall.checked_add(self.left(now.instant)).unwrap_or(now.wall),
            failures: self.failures,
        }
    }

    /// A stored delay, its wall-clock end seen from `now` (a past end holds nothing).
    pub fn restored(stored: &StoredDelay, now: Now) -> Self {
        let left = Duration::try_from(stored.until.duration_since(now.wall)).unwrap_or(Duration::ZERO);
        Self {
            version: stored.version,
            current: Duration::try_from_secs_f64(stored.current_seconds).unwrap_or(Duration::ZERO),
            until: now.instant + left,
            failures: stored.failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::AppId;

    fn app(backoff: u64, factor: f64, max: u64) -> AppDefinition {
        AppDefinition {
            backoff_seconds: backoff,
            backoff_factor: factor,
            max_launch_delay_seconds: max,
            ..AppDefinition::new(AppId::parse("/a").expect("valid"), "true")
        }
    }

    #[test]
    fn delay_grows_by_the_factor_and_stops_at_the_cap() {
        let now = Instant::now();
        let app = app(1, 2.0, 5);
        let d1 = LaunchDelay::first(&app, now);
        let d2 = d1.next(&app, now);
        let d3 = d2.next(&app, now);
        let d4 = d3.next(&app, now);
        let d5 = d4.next(&app, now);
        let d6 = d5.next(&app, now);
        let secs: Vec<u64> = [d1, d2, d3, d4, d5, d6]
            .iter()
            .map(|d| d.current.as_secs())
            .collect();
        assert_eq!(
            secs,
            vec![0, 1, 2, 4, 5, 5],
            "the first failure is replaced at once"
        );
        assert_eq!(d6.failures, 6);
        assert_eq!(d6.until, now + Duration::from_secs(5));
        assert!(!d1.holds(now));
    }

    #[test]
    fn a_stored_delay_ends_at_the_same_wall_clock_time_after_a_restart() {
        let app = app(10, 2.0, 300);
        let before = Now {
            instant: Instant::now(),
            wall: jiff::Timestamp::from_second(1_800_000_000).expect("valid"),
        };
        let delay = LaunchDelay::first(&app, before.instant)
            .next(&app, before.instant)
            .next(&app, before.instant);
        let stored = delay.stored(&app.id, before);
        assert_eq!(stored.until, before.wall + Duration::from_secs(20));

        // Restarted 5 s later, on a monotonic clock that starts afresh.
        let after = Now {
            instant: Instant::now() + Duration::from_secs(1000),
            wall: before.wall + Duration::from_secs(5),
        };
        let restored = LaunchDelay::restored(&stored, after);

        assert_eq!(restored.left(after.instant), Duration::from_secs(15));
        assert_eq!((restored.current, restored.failures), (delay.current, 3));
        assert_eq!(
            restored.next(&app, after.instant).current,
            Duration::from_secs(40)
        );
        let later = Now {
            instant: after.instant,
            wall: before.wall + Duration::from_secs(60),
        };
        assert!(!LaunchDelay::restored(&stored, later).holds(later.instant));
    }
}
