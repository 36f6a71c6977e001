//! `/metrics`: the cron framework's counters in the Prometheus / OpenMetrics text format,
//! built on a fresh explicit registry from a [`CronMetrics`] snapshot at each scrape.
//!
//! - `agora_cron_jobs` — jobs defined.
//! - `agora_cron_runs{state="succeeded"|…}` — runs by state (terminal runs since the
//!   framework started, pending and running runs now).
//! - `agora_cron_doubled_runs_total` — scheduled instants that ran twice (must stay 0).
//! - `agora_cron_recent_launch_lateness_seconds` — histogram of scheduled instant → task
//!   launched over the most recent launches the framework keeps (a window, so its counts
//!   may fall between scrapes).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::handle::{CronMetrics, RunState};

/// Upper bounds of the lateness buckets, in seconds (the benchmark's target is p99 < 0.1 s).
const LATENESS_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The lower-case name of a run state, as a label value.
fn state_label(state: RunState) -> &'static str {
    match state {
        RunState::Pending => "pending",
        RunState::Running => "running",
        RunState::Succeeded => "succeeded",
        RunState::Failed => "failed",
        RunState::Skipped => "skipped",
        RunState::Killed => "killed",
    }
}

/// The text exposition of `snapshot`.
pub fn render(snapshot: &CronMetrics) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("agora_cron");

    let jobs = Gauge::<i64>::default();
    jobs.set(i64::try_from(snapshot.jobs).unwrap_or(i64::MAX));
    registry.register("jobs", "Jobs defined", jobs);

    let runs = Family::<Vec<(String, String)>, Gauge<f64, AtomicU64>>::default();
    for (state, count) in &snapshot.runs_by_state {
        runs.get_or_create(&vec![("state".to_owned(), state_label(*state).to_owned())])
            .set(*count as f64);
    }
    registry.register(
        "runs",
        "Runs by state: terminal runs since the framework started, pending and running runs now",
        runs,
    );

    let doubled = Counter::<u64>::default();
    doubled.inc_by(snapshot.doubled_runs);
    registry.register(
        "doubled_runs",
        "Scheduled instants that were run twice (must stay 0)",
        doubled,
    );

    let lateness = Histogram::new(LATENESS_BUCKETS);
    for sample in &snapshot.launch_lateness_seconds {
        lateness.observe(*sample);
    }
    registry.register(
        "recent_launch_lateness_seconds",
        "Scheduled instant to task launched, over the most recent launches kept (a window)",
        lateness,
    );

    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}
