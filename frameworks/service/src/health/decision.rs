//! The pure decision logic of health checking: fed `(instant, probe outcome)`,
//! it says when the next probe is due and which events follow. No I/O, no clock:
//! every instant comes from the caller, so tests drive it with explicit times.

use std::time::Duration;

use agora_proto::TaskId;
use tokio::time::Instant;

use super::HealthCheckResult;

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The check passed (HTTP 200–399, TCP connected, command exited 0).
    Healthy,
    /// The check failed, with a human-readable cause.
    Unhealthy(String),
    /// The result is discarded (HTTP 1xx with `ignoreHttp1xx`): nothing changes.
    Ignored,
}

/// The timing parameters of one health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckTiming {
    /// Failures are ignored this long after the task started (until its first success).
    /// Probes run during it too, so a task can become healthy early, and one probe is
    /// always due right when it ends (not one interval later).
    pub grace_period: Duration,
    /// Time between the starts of two probes.
    pub interval: Duration,
    /// Longest a single probe may take before it counts as failed.
    pub timeout: Duration,
    /// Consecutive counted failures after which the task is unhealthy; 0 = never.
    pub max_consecutive_failures: u32,
}

/// The state of one health check of one task.
#[derive(Debug, Clone)]
pub struct CheckState {
    timing: CheckTiming,
    grace_end: Instant,
    next_due: Instant,
    probe_begun: Option<Instant>,
    has_result: bool,
    alive: bool,
    consecutive_failures: u32,
    first_success: Option<jiff::Timestamp>,
    last_success: Option<jiff::Timestamp>,
    last_failure: Option<jiff::Timestamp>,
    last_failure_cause: Option<String>,
}

impl CheckState {
    /// A check of a task that started at `started_at`: the first probe is due at once;
    /// until the first success, one is also due exactly when the grace period ends.
    pub fn new(started_at: Instant, timing: CheckTiming) -> Self {
        let grace_end = started_at + timing.grace_period;
        Self {
            timing,
            grace_end,
            next_due: started_at,
            probe_begun: None,
            has_result: false,
            alive: false,
            consecutive_failures: 0,
            first_success: None,
            last_success: None,
            last_failure: None,
            last_failure_cause: None,
        }
    }

    /// The check's timing parameters.
    pub fn timing(&self) -> CheckTiming {
        self.timing
    }

    /// When the next probe should start.
    pub fn next_due(&self) -> Instant {
        self.next_due
    }

    /// Whether a probe has begun and its outcome is not recorded yet.
    pub fn in_flight(&self) -> bool {
        self.probe_begun.is_some()
    }

    /// A probe begins at `now`; the next one is due one interval later, or when the
    /// grace period ends if that comes first and no probe has passed yet.
    pub fn begin(&mut self, now: Instant) {
        self.probe_begun = Some(now);
        let mut next = now + self.timing.interval;
        if self.first_success.is_none() && now < self.grace_end && next > self.grace_end {
            next = self.grace_end;
        }
        self.next_due = next;
    }

    /// Records the outcome of the probe begun last (`wall` = when it ended, for the
    /// result's timestamps). Returns the cause when it is a failure that counts: a
    /// failure of a probe begun within the grace period, before any success, does not.
    pub fn record(&mut self, wall: jiff::Timestamp, outcome: ProbeOutcome) -> Option<String> {
        let begun = self.probe_begun.take().unwrap_or(self.grace_end);
        match outcome {
            ProbeOutcome::Ignored => None,
            ProbeOutcome::Healthy => {
                self.has_result = true;
                self.alive = true;
                self.consecutive_failures = 0;
                self.first_success.get_or_insert(wall);
                self.last_success = Some(wall);
                None
            }
            ProbeOutcome::Unhealthy(cause) => {
                if begun < self.grace_end && self.first_success.is_none() {
                    return None;
                }
                self.has_result = true;
                self.alive = false;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.last_failure = Some(wall);
                self.last_failure_cause = Some(cause.clone());
                Some(cause)
            }
        }
    }

    /// Whether the last counted probe passed (false before any).
    pub fn alive(&self) -> bool {
        self.alive
    }

    /// Whether any probe outcome has counted yet.
    pub fn has_result(&self) -> bool {
        self.has_result
    }

    /// Counted failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Whether the failures reached `maxConsecutiveFailures` (never when it is 0).
    pub fn reached_failure_limit(&self) -> bool {
        self.timing.max_consecutive_failures > 0
            && self.consecutive_failures >= self.timing.max_consecutive_failures
    }

    /// The Marathon `healthCheckResults` item, once a probe outcome has counted.
    pub fn result(&self, task_id: &TaskId) -> Option<HealthCheckResult> {
        self.has_result.then(|| HealthCheckResult {
            alive: self.alive,
            consecutive_failures: self.consecutive_failures,
            first_success: self.first_success,
            last_failure: self.last_failure,
            last_success: self.last_success,
            last_failure_cause: self.last_failure_cause.clone(),
            task_id: task_id.clone(),
        })
    }
}

/// What follows from one recorded probe outcome, for a whole task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskCheckEvent {
    /// A counted failure of check number `check` (index into the task's checks).
    Failed {
        /// Index of the failed check.
        check: usize,
        /// Why it failed.
        cause: String,
    },
    /// The task's health changed: alive = every check has a result and all are alive.
    Changed {
        /// The new health.
        alive: bool,
    },
    /// A check reached its `maxConsecutiveFailures`: the task should be killed.
    /// Reported at most once per task.
    Unhealthy {
        /// The last failure's cause.
        cause: String,
    },
}

/// All health checks of one task and the task-level decisions over them.
#[derive(Debug, Clone)]
pub struct TaskChecks {
    checks: Vec<CheckState>,
    alive: bool,
    unhealthy_reported: bool,
}

impl TaskChecks {
    /// The checks of a task that started at `started_at`, one per timing.
    pub fn new(started_at: Instant, timings: impl IntoIterator<Item = CheckTiming>) -> Self {
        Self {
            checks: timings
                .into_iter()
                .map(|t| CheckState::new(started_at, t))
                .collect(),
            alive: false,
            unhealthy_reported: false,
        }
    }

    /// The checks, in the order given.
    pub fn checks(&self) -> &[CheckState] {
        &self.checks
    }

    /// A probe of check `index` begins at `now` (ignored for an unknown index).
    pub fn begin(&mut self, index: usize, now: Instant) {
        if let Some(check) = self.checks.get_mut(index) {
            check.begin(now);
        }
    }

    /// The earliest instant a check without a probe in flight is due, if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.checks
            .iter()
            .filter(|c| !c.in_flight())
            .map(CheckState::next_due)
            .min()
    }

    /// Indexes of the checks due at `now` with no probe in flight.
    pub fn due(&self, now: Instant) -> Vec<usize> {
        (0..self.checks.len())
            .filter(|&i| !self.checks[i].in_flight() && self.checks[i].next_due() <= now)
            .collect()
    }

    /// Whether the task is healthy: it has checks, each has a result, all alive.
    pub fn alive(&self) -> bool {
        self.alive
    }

    /// Records the outcome of check `index`'s probe and returns the events, in order:
    /// `Failed` (a counted failure), `Changed` (task health flipped), `Unhealthy`
    /// (first time a check reached its failure limit).
    pub fn record(
        &mut self,
        index: usize,
        wall: jiff::Timestamp,
        outcome: ProbeOutcome,
    ) -> Vec<TaskCheckEvent> {
        let mut events = Vec::new();
        let Some(check) = self.checks.get_mut(index) else {
            return events;
        };
        let failure = check.record(wall, outcome);
        let limit_reached = check.reached_failure_limit();
        if let Some(cause) = &failure {
            events.push(TaskCheckEvent::Failed {
                check: index,
                cause: cause.clone(),
            });
        }
        let alive = self.checks.iter().all(|c| c.has_result() && c.alive());
        if alive != self.alive {
            self.alive = alive;
            events.push(TaskCheckEvent::Changed { alive });
        }
        if let Some(cause) = failure
            && limit_reached
            && !self.unhealthy_reported
        {
            self.unhealthy_reported = true;
            events.push(TaskCheckEvent::Unhealthy { cause });
        }
        events
    }

    /// Every check's result so far (checks without one are left out).
    pub fn results(&self, task_id: &TaskId) -> Vec<HealthCheckResult> {
        self.checks.iter().filter_map(|c| c.result(task_id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(30);
    const INTERVAL: Duration = Duration::from_secs(10);

    fn timing(max_consecutive_failures: u32) -> CheckTiming {
        CheckTiming {
            grace_period: GRACE,
            interval: INTERVAL,
            timeout: Duration::from_secs(5),
            max_consecutive_failures,
        }
    }

    fn wall(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn fail(cause: &str) -> ProbeOutcome {
        ProbeOutcome::Unhealthy(cause.to_owned())
    }

    /// Begins the next due probe of check 0 (not before the grace period ends) and records `outcome`.
    fn probe(task: &mut TaskChecks, outcome: ProbeOutcome) -> Vec<TaskCheckEvent> {
        // From the end of the grace period on, where failures count.
        let check = &task.checks()[0];
        let due = check.next_due().max(check.grace_end);
        task.begin(0, due);
        task.record(0, wall(0), outcome)
    }

    fn count_unhealthy(events: &[TaskCheckEvent]) -> usize {
        events
            .iter()
            .filter(|e| matches!(e, TaskCheckEvent::Unhealthy { .. }))
            .count()
    }

    #[test]
    fn first_check_is_due_when_the_task_starts() {
        let t0 = Instant::now();
        let task = TaskChecks::new(t0, [timing(3)]);
        assert_eq!(task.next_due(), Some(t0));
        assert_eq!(task.due(t0), vec![0]);
    }

    #[test]
    fn a_check_is_due_right_when_the_grace_period_ends_not_one_interval_later() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(25);
        let mut task = TaskChecks::new(
            t0,
            [CheckTiming {
                grace_period: grace,
                ..timing(3)
            }],
        );
        let mut due = Vec::new();
        let mut begun = t0;
        while begun <= t0 + grace {
            due.push(begun - t0);
            task.begin(0, begun);
            task.record(0, wall(0), fail("refused"));
            begun = task.next_due().expect("a probe is due");
        }
        let secs = |s| Duration::from_secs(s);
        assert_eq!(due, vec![secs(0), secs(10), secs(20), secs(25)]);
        assert_eq!(begun - t0, secs(35), "then every interval");
    }

    #[test]
    fn a_task_passing_within_the_grace_period_is_healthy_before_it_ends() {
        let t0 = Instant::now();
        let mut task = TaskChecks::new(t0, [timing(3)]);
        task.begin(0, t0);
        task.record(0, wall(0), ProbeOutcome::Healthy);
        assert!(task.checks()[0].alive());
        assert_eq!(task.next_due(), Some(t0 + INTERVAL));
    }

    #[test]
    fn later_checks_are_due_one_interval_after_the_previous_began() {
        let t0 = Instant::now();
        let mut task = TaskChecks::new(t0, [timing(3)]);
        task.begin(0, t0 + GRACE);
        assert_eq!(task.next_due(), None, "no second probe while one is in flight");
        task.record(0, wall(0), ProbeOutcome::Healthy);
        assert_eq!(task.next_due(), Some(t0 + GRACE + INTERVAL));
    }

    #[test]
    fn failures_of_probes_begun_within_the_grace_period_do_not_count() {
        let t0 = Instant::now();
        let mut task = TaskChecks::new(t0, [timing(1)]);
        task.begin(0, t0 + GRACE - Duration::from_secs(1));
        let events = task.record(0, wall(0), fail("refused"));
        assert_eq!(events, vec![]);
        assert_eq!(task.checks()[0].consecutive_failures(), 0);
        assert!(task.results(&TaskId::new_unchecked("t")).is_empty());
    }

    #[test]
    fn failures_within_the_grace_period_count_after_a_first_success() {
        let t0 = Instant::now();
        let mut task = TaskChecks::new(t0, [timing(1)]);
        task.begin(0, t0 + Duration::from_secs(1));
        task.record(0, wall(0), ProbeOutcome::Healthy);
        task.begin(0, t0 + Duration::from_secs(2));
        let events = task.record(0, wall(1), fail("refused"));
        assert_eq!(count_unhealthy(&events), 1);
    }

    #[test]
    fn a_probe_begun_at_the_end_of_the_grace_period_counts() {
        let t0 = Instant::now();
        let mut task = TaskChecks::new(t0, [timing(3)]);
        let events = probe(&mut task, fail("refused"));
        assert_eq!(
            events,
            vec![TaskCheckEvent::Failed {
                check: 0,
                cause: "refused".to_owned()
            }]
        );
        assert_eq!(task.checks()[0].consecutive_failures(), 1);
    }

    #[test]
    fn unhealthy_after_max_consecutive_failures_not_before() {
        let mut task = TaskChecks::new(Instant::now(), [timing(3)]);
        assert_eq!(count_unhealthy(&probe(&mut task, fail("a"))), 0);
        assert_eq!(count_unhealthy(&probe(&mut task, fail("b"))), 0);
        let third = probe(&mut task, fail("c"));
        assert_eq!(
            third.last(),
            Some(&TaskCheckEvent::Unhealthy {
                cause: "c".to_owned()
            })
        );
    }

    #[test]
    fn a_success_resets_the_consecutive_failures() {
        let mut task = TaskChecks::new(Instant::now(), [timing(3)]);
        let mut events = Vec::new();
        for outcome in [fail("a"), fail("b"), ProbeOutcome::Healthy, fail("c"), fail("d")] {
            events.extend(probe(&mut task, outcome));
        }
        assert_eq!(count_unhealthy(&events), 0);
        assert_eq!(task.checks()[0].consecutive_failures(), 2);
    }

    #[test]
    fn unhealthy_is_reported_exactly_once() {
        let mut task = TaskChecks::new(Instant::now(), [timing(2)]);
        let mut events = Vec::new();
        for _ in 0..6 {
            events.extend(probe(&mut task, fail("down")));
        }
        assert_eq!(count_unhealthy(&events), 1);
        let failed = events
            .iter()
            .filter(|e| matches!(e, TaskCheckEvent::Failed { .. }))
            .count();
        assert_eq!(failed, 6, "every counted failure is reported");
    }

    #[test]
    fn max_consecutive_failures_zero_never_reports_unhealthy() {
        let mut task = TaskChecks::new(Instant::now(), [timing(0)]);
        let mut events = Vec::new();
        for _ in 0..20 {
            events.extend(probe(&mut task, fail("down")));
        }
        assert_eq!(count_unhealthy(&events), 0);
        assert_eq!(task.checks()[0].consecutive_failures(), 20);
    }

    #[test]
    fn health_changes_are_reported_once_per_flip() {
        let mut task = TaskChecks::new(Instant::now(), [timing(0)]);
        let changes = |events: Vec<TaskCheckEvent>| {
            events
                .into_iter()
                .filter(|e| matches!(e, TaskCheckEvent::Changed { .. }))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            changes(probe(&mut task, ProbeOutcome::Healthy)),
            vec![TaskCheckEvent::Changed { alive: true }]
        );
        assert_eq!(changes(probe(&mut task, ProbeOutcome::Healthy)), vec![]);
        assert_eq!(
            changes(probe(&mut task, fail("x"))),
            vec![TaskCheckEvent::Changed { alive: false }]
        );
        assert_eq!(changes(probe(&mut task, fail("x"))), vec![]);
    }

    #[test]
    fn a_first_failure_is_no_health_change() {
        let mut task = TaskChecks::new(Instant::now(), [timing(3)]);
        let events = probe(&mut task, fail("refused"));
        assert!(!events.iter().any(|e| matches!(e, TaskCheckEvent::Changed { .. })));
        assert!(!task.alive());
    }

    #[test]
    fn an_ignored_outcome_changes_nothing_but_the_schedule() {
        let t0 = Instant::now();
        let mut task = TaskChecks::new(t0, [timing(1)]);
        task.begin(0, t0 + GRACE);
        assert_eq!(task.record(0, wall(0), ProbeOutcome::Ignored), vec![]);
        assert!(!task.checks()[0].has_result());
        assert_eq!(task.next_due(), Some(t0 + GRACE + INTERVAL));
    }

    #[test]
    fn a_task_is_alive_only_when_every_check_is_alive() {
        let t0 = Instant::now();
        let mut task = TaskChecks::new(t0, [timing(3), timing(3)]);
        task.begin(0, t0 + GRACE);
        task.begin(1, t0 + GRACE);
        assert_eq!(task.record(0, wall(0), ProbeOutcome::Healthy), vec![]);
        assert_eq!(
            task.record(1, wall(0), ProbeOutcome::Healthy),
            vec![TaskCheckEvent::Changed { alive: true }]
        );
        task.begin(1, t0 + GRACE + INTERVAL);
        let events = task.record(1, wall(10), fail("x"));
        assert_eq!(events.last(), Some(&TaskCheckEvent::Changed { alive: false }));
    }

    #[test]
    fn result_keeps_first_success_and_the_last_failure_cause() {
        let t0 = Instant::now();
        let mut task = TaskChecks::new(t0, [timing(0)]);
        for (secs, outcome) in [
            (0, ProbeOutcome::Healthy),
            (10, ProbeOutcome::Healthy),
            (20, fail("HTTP 500")),
        ] {
            let due = task.checks()[0].next_due();
            task.begin(0, due);
            task.record(0, wall(secs), outcome);
        }
        let id = TaskId::new_unchecked("web.1");
        let result = task.results(&id).pop().unwrap();
        assert_eq!(
            result,
            HealthCheckResult {
                alive: false,
                consecutive_failures: 1,
                first_success: Some(wall(0)),
                last_failure: Some(wall(20)),
                last_success: Some(wall(10)),
                last_failure_cause: Some("HTTP 500".to_owned()),
                task_id: id,
            }
        );
    }
}
