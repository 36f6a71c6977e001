//! Run-time statistics in Chronos' shapes: the histogram of `/scheduler/job/stat/{name}`
//! and `/scheduler/stats/{percentile}`, and the `taskStatHistory` list.
//!
//! Chronos fed a Dropwizard histogram with each successful run's duration in
//! milliseconds; here the samples are the durations (`finishedAt - startedAt`) of the
//! successful runs still in the job's run history.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::handle::{RunRecord, RunState};

/// How many runs `taskStatHistory` shows, newest first (Chronos' `--job_history_limit`).
pub const TASK_STAT_HISTORY: usize = 5;

/// A statistic the `/scheduler/stats/{…}` route can rank jobs by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Percentile {
    /// `99thPercentile`.
    P99,
    /// `98thPercentile`.
    P98,
    /// `95thPercentile`.
    P95,
    /// `75thPercentile`.
    P75,
    /// `median`.
    Median,
    /// `mean`: the arithmetic mean (Chronos' serializer wrote the median here).
    Mean,
}

impl Percentile {
    /// The path segments, in Chronos' spelling.
    pub const NAMES: [&'static str; 6] = [
        "99thPercentile",
        "98thPercentile",
        "95thPercentile",
        "75thPercentile",
        "median",
        "mean",
    ];

    /// The statistic named by a path segment (Chronos' spelling, case-sensitive).
    pub fn parse(name: &str) -> Option<Percentile> {
        Some(match name {
            "99thPercentile" => Percentile::P99,
            "98thPercentile" => Percentile::P98,
            "95thPercentile" => Percentile::P95,
            "75thPercentile" => Percentile::P75,
            "median" => Percentile::Median,
            "mean" => Percentile::Mean,
            _ => return None,
        })
    }
}

/// Durations of successful runs in milliseconds, sorted ascending.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DurationHistogram {
    sorted_millis: Vec<f64>,
}

impl DurationHistogram {
    /// A histogram of the given durations (milliseconds, any order; NaN is dropped).
    pub fn new(mut millis: Vec<f64>) -> Self {
        millis.retain(|m| !m.is_nan());
        millis.sort_by(f64::total_cmp);
        DurationHistogram {
            sorted_millis: millis,
        }
    }

    /// The durations of the runs that succeeded and have both a start and an end.
    pub fn of_runs(runs: &[RunRecord]) -> Self {
        DurationHistogram::new(
            runs.iter()
                .filter(|r| r.state == RunState::Succeeded)
                .filter_map(|r| Some(millis_between(r.started_at?, r.finished_at?)))
                .collect(),
        )
    }

    /// Number of samples.
    pub fn count(&self) -> usize {
        self.sorted_millis.len()
    }

    /// The value at quantile `q` (0..=1), interpolated between neighbours the way
    /// Dropwizard's snapshot does (position `q·(n+1)`); 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        let values = &self.sorted_millis;
        let (Some(&first), Some(&last)) = (values.first(), values.last()) else {
            return 0.0;
        };
        let position = q * (values.len() as f64 + 1.0);
        if position < 1.0 {
            return first;
        }
        // position >= 1 here, so the index below is at least 1.
        let index = position.floor() as usize;
        if index >= values.len() {
            return last;
        }
        let lower = values[index - 1];
        let upper = values[index];
        lower + (position - position.floor()) * (upper - lower)
    }

    /// The arithmetic mean; 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.sorted_millis.is_empty() {
            0.0
        } else {
            self.sorted_millis.iter().sum::<f64>() / self.sorted_millis.len() as f64
        }
    }

    /// The statistic `p` in milliseconds.
    pub fn value(&self, p: Percentile) -> f64 {
        match p {
            Percentile::P99 => self.quantile(0.99),
            Percentile::P98 => self.quantile(0.98),
            Percentile::P95 => self.quantile(0.95),
            Percentile::P75 => self.quantile(0.75),
            Percentile::Median => self.quantile(0.5),
            Percentile::Mean => self.mean(),
        }
    }

    /// Chronos' histogram object: the four percentiles, median, mean (ms) and count.
    pub fn to_json(&self) -> Value {
        json!({
            "75thPercentile": self.value(Percentile::P75),
            "95thPercentile": self.value(Percentile::P95),
            "98thPercentile": self.value(Percentile::P98),
            "99thPercentile": self.value(Percentile::P99),
            "median": self.value(Percentile::Median),
            "mean": self.value(Percentile::Mean),
            "count": self.count(),
        })
    }
}

fn millis_between(start: Timestamp, end: Timestamp) -> f64 {
    (end.as_millisecond() - start.as_millisecond()) as f64
}

/// Chronos' task time format, `MM/dd/yy HH:mm:ss` in UTC, or `N/A`.
fn task_time(t: Option<Timestamp>) -> String {
    t.map(|t| t.strftime("%m/%d/%y %H:%M:%S").to_string())
        .unwrap_or_else(|| "N/A".to_owned())
}

/// Chronos' task duration format: `1h2m3s`, `2m0s`, `5s` (hours and minutes only when
/// non-zero; whole seconds).
fn task_duration(start: Timestamp, end: Timestamp) -> String {
    let seconds = (end.as_second() - start.as_second()).max(0);
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let mut text = String::new();
    if hours > 0 {
        text.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        text.push_str(&format!("{minutes}m"));
    }
    text.push_str(&format!("{seconds}s"));
    text
}

/// Chronos' task status for a run state (`Success`, `Fail`, `Running`).
fn task_status(state: RunState) -> &'static str {
    match state {
        RunState::Succeeded => "Success",
        RunState::Failed | RunState::Killed => "Fail",
        RunState::Pending | RunState::Running => "Running",
        RunState::Skipped => "Idle",
    }
}

/// One `taskStatHistory` entry, for a run that launched a task.
fn task_stat(run: &RunRecord) -> Option<Value> {
    let task_id = run.task_id.as_ref()?;
    let mut entry = json!({
        "taskId": task_id.as_str(),
        "jobName": run.job.as_str(),
        // The run history does not keep the agent; Chronos wrote the slave id here.
        "slaveId": "",
        "startTime": task_time(run.started_at),
        "endTime": task_time(run.finished_at),
    });
    if let (Some(start), Some(end), Some(object)) = (run.started_at, run.finished_at, entry.as_object_mut()) {
        object.insert("duration".to_owned(), Value::String(task_duration(start, end)));
    }
    if let Some(object) = entry.as_object_mut() {
        object.insert(
            "status".to_owned(),
            Value::String(task_status(run.state).to_owned()),
        );
    }
    Some(entry)
}

/// The body of `/scheduler/job/stat/{name}`: `{"histogram": {…}, "taskStatHistory": […]}`,
/// the history holding the newest [`TASK_STAT_HISTORY`] runs that launched a task, newest
/// first. `runs` is oldest first, as the handle returns it.
pub fn job_stat_json(runs: &[RunRecord]) -> Value {
    let history: Vec<Value> = runs
        .iter()
        .rev()
        .filter_map(task_stat)
        .take(TASK_STAT_HISTORY)
        .collect();
    json!({
        "histogram": DurationHistogram::of_runs(runs).to_json(),
        "taskStatHistory": history,
    })
}
