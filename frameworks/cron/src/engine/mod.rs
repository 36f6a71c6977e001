//! The cron engine: which runs are due, what to launch where, retries, concurrency policy,
//! deadlines, dependent jobs and statistics.
//!
//! Pure: jobs, persisted cursors, in-flight runs and `now` in; [`Effect`]s out. No I/O, no
//! clock. The runtime carries the effects out **in order** and stops if a
//! [`Effect::Persist`] fails, so every effect that follows a persist happens only once the
//! change is durable.
//!
//! Exactly once: every scheduled job has a *cursor*, the next scheduled instant not yet
//! handled. Handling an instant (ahead of it: arming, below) creates its run record (or a
//! Skipped record) and moves the cursor in ONE persisted change; a task is launched only after
//! the run, which determines the task id it will use, is persisted. Task ids are derived from the run id and the attempt, so after
//! a restart the runs found Pending/Running are reconciled with the master under the same
//! task ids instead of being launched again:
//! - the master knows the task → adopted (its updates flow as usual);
//! - the master does not know it → launched once more with the same task id (at most
//!   [`MAX_RELAUNCHES`] times, then it counts as a failed attempt), but only when that answer
//!   is definitive (below);
//! - it ended while we were down → the agent re-sends the terminal update and it is recorded.
//!
//! Arming: [`EngineConfig::arm_ahead`] before a job's next instant, its run is created *armed*
//! and the cursor moved past it, in one persisted change. That record names the task the
//! instant will launch (its id derives from the run), so at the instant the ACCEPT does not
//! wait for the step's write (Pending → Running): [`Effect::Launch`]'s `armed` lets the runtime
//! send it while the write goes on, and no fsync lies on the launch path. If the framework dies
//! before that write lands, the store still holds the armed run with its instant past; a
//! restarted engine counts it as launched on an unknown agent (*unconfirmed*) and reconciles
//! its task: the master knows it → adopted; it does not (an answer the master gives about an
//! agent-less task only once no agent is still re-registering) → the run is decided as its
//! instant again and launched, under the same task id. An armed run is not history yet: it
//! is decided when its instant comes, exactly as an instant handled then — the concurrency
//! policy (FORBID skips, REPLACE kills) and `startingDeadlineSeconds` apply then, and one whose
//! instant passed while the framework was down is a catch-up. Armed runs of a job that is
//! disabled or given another schedule are dropped (their instants never come); one job has at
//! most one armed run. A user's kill leaves the armed run alone (it has not started).
//!
//! When "unknown" is definitive: a restarted master knows a task only once its agent has
//! re-registered and reported it, and answers "unknown" for every task of an agent that has not
//! re-registered yet (Mesos answers nothing then, and TASK_UNREACHABLE once its
//! `--agent_reregister_timeout` passed). So an unknown answer relaunches a run only when the
//! current master has shown that it knows the run's agent (an offer or an agent's update from
//! it since the latest subscription: the answer, later on the same ordered stream, was made
//! after the agent re-registered), or when the agent has not shown up for
//! [`EngineConfig::agent_reregister_timeout`] since the first unknown answer. Until then the
//! run stays Running, *in doubt*: reconciled again with backoff, again at once when its agent
//! shows up, and offers are kept revived so that it can. A DROPPED update (the master refused
//! the launch) is definitive too.
//!
//! `startingDeadlineSeconds` bounds the time from a scheduled instant to the launch of its
//! first attempt: an instant handled too late, or a run still waiting for an offer at its
//! deadline, is recorded as Skipped, never launched late.
//!
//! Deleting a job that has children re-wires them as Chronos does: the children of a dependent
//! job inherit its parents; a child whose only parent was a scheduled job takes over that
//! job's schedule (and time zone). Unlike Chronos, a child of a scheduled job that has other
//! parents too just loses the deleted one (Chronos made it a scheduled job, dropping them).
//!
//! Missed instants (the framework was down): each one is run once, oldest first, as
//! [`Trigger::CatchUp`], unless `startingDeadlineSeconds` says it is too late (then a
//! Skipped record). At most [`EngineConfig::catch_up_limit`] missed instants of one job are
//! run; the instants beyond are covered by one Skipped record naming the span. This is
//! Kubernetes' CronJob rule (each missed schedule counts) rather than Chronos' (which ran
//! only instants within `epsilon`); `epsilon` is kept in the JSON but not used.

mod placement;
pub use placement::{RUN_LABEL, SCHEDULED_AT_ENV, SCHEDULED_AT_LABEL};
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use agora_proto::state::is_terminal;
use agora_proto::v1::{self, StatusReason, TaskState};
use agora_proto::{AgentId, OfferId, TaskId};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::graph::DependencyGraph;
use crate::handle::{CronError, CronMetrics, JobStatus, RunRecord, RunState, Trigger};
use crate::job::{ConcurrencyPolicy, Job, JobName, JobStats};
use crate::schedule::Schedule;

/// How often a task the master reported unknown is launched again with the same task id
/// before the attempt counts as failed.
pub const MAX_RELAUNCHES: u32 = 3;

/// The engine's tunables.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Delay before the first retry of a failed attempt; doubles for each further retry.
    pub retry_backoff: Duration,
    /// Longest delay between retries.
    pub retry_backoff_max: Duration,
    /// Finished runs kept per job (in-flight runs are always kept).
    pub history_limit: usize,
    /// Missed instants of one job run after downtime; older ones are recorded as skipped.
    pub catch_up_limit: usize,
    /// An instant handled later than this after its time is a catch-up ([`Trigger::CatchUp`]).
    pub late_after: Duration,
    /// Offers are held (not declined) when a run is due within this long, and offers are
    /// revived this long before the next due run, so launches happen at the instant.
    pub offer_lead: Duration,
    /// Offers not needed are declined for this long (revived before they are needed).
    pub decline_refuse: Duration,
    /// Disable a job after this many failed runs in a row unless it has `softError`
    /// (Chronos' `--disable_after_failures`); 0 = never.
    pub disable_after_failures: u64,
    /// Lateness samples (scheduled instant → launch) kept for `/metrics`.
    pub lateness_samples: usize,
    /// How long a launched task may stay unknown to the master while its agent has not shown
    /// that it re-registered, before its run is launched again (Mesos'
    /// `--agent_reregister_timeout`).
    pub agent_reregister_timeout: Duration,
    /// First delay before a task in doubt is reconciled again; doubles up to
    /// [`RECONCILE_RETRY_MAX`].
    pub reconcile_retry: Duration,
    /// A job's next instant is *armed* this long before it comes: its run record is created and
    /// the cursor moved past it in one persisted change, so that at the instant only the run's
    /// launch is left to write (see the module documentation). Zero: instants are handled only
    /// when they come.
    pub arm_ahead: Duration,
}

/// Longest delay between two reconciliations of a task in doubt.
pub const RECONCILE_RETRY_MAX: Duration = Duration::from_secs(30);

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            retry_backoff: Duration::from_secs(10),
            retry_backoff_max: Duration::from_secs(300),
            history_limit: 1000,
            catch_up_limit: 100,
            late_after: Duration::from_secs(5),
            offer_lead: Duration::from_secs(10),
            decline_refuse: Duration::from_secs(3600),
            disable_after_failures: 0,
            lateness_samples: 10_000,
            agent_reregister_timeout: Duration::from_secs(600),
            reconcile_retry: Duration::from_secs(1),
            arm_ahead: Duration::from_secs(5),
        }
    }
}

/// Why the engine asked for a task to be killed; decides how its KILLED update is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KillReason {
    /// A user asked (DELETE /scheduler/task/kill/{name}) → Killed.
    User,
    /// A newer run replaced it (REPLACE) → Killed.
    Replaced,
    /// It ran longer than `maxCompletionTime` → Failed, no retry.
    Overran,
}

/// One run as the engine keeps (and persists) it: the public record plus bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// Position in the job's history (increasing); the run's store key.
    pub seq: u64,
    /// The public record.
    pub record: RunRecord,
    /// When the current attempt may be launched (the instant, the manual request, or the end
    /// of a retry's backoff).
    pub due_at: Timestamp,
    /// The agent the current attempt's task is on, once known.
    #[serde(default)]
    pub agent_id: Option<AgentId>,
    /// Set when the engine asked for the task to be killed, and why.
    #[serde(default)]
    pub kill: Option<KillReason>,
    /// Times the current attempt was launched again because the master did not know it.
    #[serde(default)]
    pub relaunches: u32,
    /// Created ahead of its instant and not come yet: not part of the history, not launched,
    /// and the concurrency policy and deadline are applied when the instant comes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub armed: bool,
    /// Found armed after a restart with its instant past: its task may have been launched
    /// before its launch was recorded. It is reconciled under its task id: the master's answer
    /// decides whether it runs (adopted) or is decided as its instant again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unconfirmed: bool,
}

impl Run {
    fn is_active(&self) -> bool {
        !self.record.state.is_terminal()
    }

    /// Launched: a task id was chosen and an ACCEPT may have reached the master.
    fn is_launched(&self) -> bool {
        self.record.state == RunState::Running && self.record.task_id.is_some()
    }

    /// Part of the history: it ran, runs, waits for an offer or was decided (not armed).
    fn is_history(&self) -> bool {
        !self.armed
    }
}

/// A job as persisted: the definition and its scheduling state.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredJob {
    /// The definition.
    pub job: Job,
    /// The `now` the schedule was parsed with when it was created (an empty ISO 8601 start
    /// means this instant, for good).
    pub anchor: Timestamp,
    /// The next scheduled instant not yet handled (None: dependent, or no more instants).
    pub cursor: Option<Timestamp>,
    /// Run counters.
    pub stats: JobStats,
    /// When the last dependency run of this (dependent) job was created.
    pub last_dependency_run: Option<Timestamp>,
    /// The `seq` the next run of this job gets.
    pub next_seq: u64,
}

/// One durable change; a [`Effect::Persist`] batch is applied atomically.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Create or replace a job's record.
    PutJob(Box<StoredJob>),
    /// Delete a job's record and the listed runs.
    DeleteJob {
        /// The job.
        name: JobName,
        /// `seq` of every run of the job.
        runs: Vec<u64>,
    },
    /// Create or replace a run.
    PutRun(JobName, Box<Run>),
    /// Delete a run (history trimming).
    DeleteRun(JobName, u64),
}

/// What the runtime must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Write these changes atomically and durably; stop if that fails.
    Persist(Vec<Change>),
    /// ACCEPT these offers (all of one agent) launching these tasks; no refuse filter.
    Launch {
        /// The offers.
        offer_ids: Vec<OfferId>,
        /// The tasks.
        tasks: Vec<v1::TaskInfo>,
        /// Every task is the first launch of a run that was persisted armed in an earlier
        /// step: what a restart needs to find the task is durable already, so this ACCEPT need
        /// not wait for this step's write (see the module documentation).
        armed: bool,
    },
    /// DECLINE these offers for `refuse`.
    Decline {
        /// The offers.
        offer_ids: Vec<OfferId>,
        /// How long the master should not re-offer them.
        refuse: Duration,
    },
    /// KILL a task.
    Kill {
        /// The task.
        task_id: TaskId,
        /// Its agent, when known.
        agent_id: Option<AgentId>,
    },
    /// Ask the master for the latest state of these tasks.
    Reconcile(Vec<(TaskId, Option<AgentId>)>),
    /// Acknowledge a status update (after its outcome was persisted).
    Acknowledge(v1::TaskStatus),
    /// Stop offers.
    Suppress,
    /// Resume offers (and clear decline filters).
    Revive,
}

/// What [`Engine::recover`] starts from: every persisted job with its runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovered {
    /// Jobs with their runs (any order).
    pub jobs: Vec<(StoredJob, Vec<Run>)>,
}

struct JobEntry {
    job: Job,
    schedule: Option<Schedule>,
    anchor: Timestamp,
    cursor: Option<Timestamp>,
    stats: JobStats,
    last_dependency_run: Option<Timestamp>,
    next_seq: u64,
    runs: BTreeMap<u64, Run>,
    /// `seq` of the runs in flight (kept in step by [`Engine::persist_run`], which every change
    /// of a run goes through), so finding them does not scan the history.
    live: std::collections::BTreeSet<u64>,
}

impl JobEntry {
    fn stored(&self) -> StoredJob {
        StoredJob {
            job: self.job.clone(),
            anchor: self.anchor,
            cursor: self.cursor,
            stats: self.stats.clone(),
            last_dependency_run: self.last_dependency_run,
            next_seq: self.next_seq,
        }
    }

    fn active(&self) -> impl Iterator<Item = &Run> {
        self.live.iter().filter_map(|seq| self.runs.get(seq))
    }

    /// Runs in flight, armed runs excluded.
    fn in_flight(&self) -> impl Iterator<Item = &Run> {
        self.active().filter(|r| !r.armed)
    }

    /// The armed run, if any (at most one per job).
    fn armed(&self) -> Option<&Run> {
        self.active().find(|r| r.armed)
    }

    /// The next instant this job will run at: its armed run's, else the cursor.
    fn next_instant(&self) -> Option<Timestamp> {
        self.armed().map(|r| r.due_at).or(self.cursor)
    }

    /// The latest finished run succeeded (the job's last result is a success).
    fn last_result_succeeded(&self) -> bool {
        match (self.stats.last_success, self.stats.last_error) {
            (Some(s), Some(e)) => s >= e,
            (Some(_), None) => true,
            _ => false,
        }
    }

    fn fires(&self) -> bool {
        !self.job.disabled && self.schedule.is_some()
    }
}

/// A launched task the master answered "unknown" for before its agent showed up.
#[derive(Debug, Clone, Copy)]
struct Doubt {
    /// The first unknown answer.
    since: Timestamp,
    /// Reconciliations sent since (for the backoff).
    retries: u32,
    /// When to reconcile it again.
    recheck_at: Timestamp,
}

/// Lateness figures and counters for `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    lateness: VecDeque<f64>,
    doubled_runs: u64,
}

/// The engine. See the module documentation.
pub struct Engine {
    config: EngineConfig,
    jobs: BTreeMap<JobName, JobEntry>,
    /// Launched task id → (job, run seq), for the runs in flight.
    tasks: HashMap<TaskId, (JobName, u64)>,
    /// Offers held for runs due soon, in arrival order.
    offers: Vec<v1::Offer>,
    /// Whether offers are suppressed (None: not known, e.g. right after subscribing).
    suppressed: Option<bool>,
    /// Offers were declined (with a refuse filter) since the last revive.
    declined: bool,
    counters: Counters,
    /// The `now` of the latest step.
    now: Timestamp,
    /// Changes of the current step: one Persist, emitted before every other effect of it.
    changes: Vec<Change>,
    /// Effects of the current step that must follow its Persist.
    later: Vec<Effect>,
    /// Set by [`Engine::recover`] until the first step: instants that passed before it were
    /// missed while the framework was down.
    recovering: bool,
    /// Agents the current master has shown it knows (an offer, or an update from the agent,
    /// since the latest subscription): its "unknown task" answers about them are definitive.
    agents_seen: HashSet<AgentId>,
    /// Launched tasks the master answered "unknown" for before their agent showed up.
    doubts: BTreeMap<TaskId, Doubt>,
    /// Runs whose armed instant came in the current step: their launch need not wait for the
    /// step's write.
    settled: HashSet<(JobName, u64)>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("jobs", &self.jobs.len())
            .field("tasks", &self.tasks.len())
            .field("offers", &self.offers.len())
            .field("suppressed", &self.suppressed)
            .field("doubts", &self.doubts.len())
            .finish_non_exhaustive()
    }
}

/// The task id of a run's attempt: `<run id>.<attempt>`.
pub fn task_id_for(run_id: &str, attempt: u32) -> TaskId {
    TaskId::new_unchecked(format!("{run_id}.{attempt}"))
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

fn secs_between(later: Timestamp, earlier: Timestamp) -> f64 {
    later.duration_since(earlier).as_secs_f64()
}

impl Engine {
    /// An engine with no jobs.
    pub fn new(config: EngineConfig) -> Engine {
        Engine {
            config,
            jobs: BTreeMap::new(),
            tasks: HashMap::new(),
            offers: Vec::new(),
            suppressed: None,
            declined: false,
            counters: Counters::default(),
            now: Timestamp::MIN,
            changes: Vec::new(),
            later: Vec::new(),
            recovering: false,
            agents_seen: HashSet::new(),
            doubts: BTreeMap::new(),
            settled: HashSet::new(),
        }
    }

    /// An engine with the persisted jobs and runs. Jobs whose schedule no longer parses are
    /// kept but never fire; their names are returned with the error so the caller can log them.
    /// Missed instants are handled by the first [`Engine::tick`]; in-flight runs are reconciled
    /// on [`Engine::subscribed`].
    pub fn recover(config: EngineConfig, recovered: Recovered) -> (Engine, Vec<(JobName, String)>) {
        let mut engine = Engine::new(config);
        engine.recovering = true;
        let mut problems = Vec::new();
        for (stored, runs) in recovered.jobs {
            let schedule = match &stored.job.schedule {
                Some(expr) => {
                    match Schedule::parse(expr, stored.job.schedule_time_zone.as_deref(), stored.anchor) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            problems.push((stored.job.name.clone(), e.message.clone()));
                            None
                        }
                    }
                }
                None => None,
            };
            let name = stored.job.name.clone();
            let mut entry = JobEntry {
                job: stored.job,
                schedule,
                anchor: stored.anchor,
                cursor: stored.cursor,
                stats: stored.stats,
                last_dependency_run: stored.last_dependency_run,
                next_seq: stored.next_seq,
                runs: BTreeMap::new(),
                live: Default::default(),
            };
            for run in runs {
                entry.next_seq = entry.next_seq.max(run.seq + 1);
                if run.is_active()
                    && let Some(task_id) = &run.record.task_id
                {
                    engine.tasks.insert(task_id.clone(), (name.clone(), run.seq));
                }
                if run.is_active() {
                    entry.live.insert(run.seq);
                }
                entry.runs.insert(run.seq, run);
            }
            engine.jobs.insert(name, entry);
        }
        (engine, problems)
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    // ---------------------------------------------------------------------------------------
    // Queries
    // ---------------------------------------------------------------------------------------

    /// Every job with its statistics, sorted by name.
    pub fn jobs(&self) -> Vec<JobStatus> {
        self.jobs.values().map(status_of).collect()
    }

    /// One job.
    pub fn job(&self, name: &JobName) -> Result<JobStatus, CronError> {
        self.jobs
            .get(name)
            .map(status_of)
            .ok_or_else(|| CronError::NotFound(name.to_string()))
    }

    /// A job's run history, oldest first.
    pub fn runs(&self, name: &JobName) -> Result<Vec<RunRecord>, CronError> {
        let entry = self
            .jobs
            .get(name)
            .ok_or_else(|| CronError::NotFound(name.to_string()))?;
        Ok(entry
            .runs
            .values()
            .filter(|r| r.is_history())
            .map(|r| r.record.clone())
            .collect())
    }

    /// Counters and lateness samples.
    pub fn metrics(&self) -> CronMetrics {
        let mut by_state: BTreeMap<&'static str, (RunState, u64)> = BTreeMap::new();
        for entry in self.jobs.values() {
            for run in entry.runs.values().filter(|r| r.is_history()) {
                let key = state_key(run.record.state);
                by_state.entry(key).or_insert((run.record.state, 0)).1 += 1;
            }
        }
        CronMetrics {
            jobs: self.jobs.len() as u64,
            runs_by_state: by_state.into_values().collect(),
            launch_lateness_seconds: self.counters.lateness.iter().copied().collect(),
            doubled_runs: self.counters.doubled_runs,
        }
    }

    /// Launched tasks of runs in flight (for reconciliation).
    pub fn launched_tasks(&self) -> Vec<(TaskId, Option<AgentId>)> {
        let mut out: Vec<_> = self
            .jobs
            .values()
            .flat_map(|e| e.active())
            .filter(|r| r.is_launched())
            .filter_map(|r| r.record.task_id.clone().map(|t| (t, r.agent_id.clone())))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// When [`Engine::tick`] must be called next (None: only events can change anything).
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let mut next: Option<Timestamp> = None;
        let mut consider = |t: Timestamp| {
            next = Some(next.map_or(t, |n| n.min(t)));
        };
        let arm_ahead = jiff::SignedDuration::try_from(self.config.arm_ahead).unwrap_or_default();
        for entry in self.jobs.values() {
            if entry.fires()
                && let Some(c) = entry.cursor
            {
                // Armed ahead of the instant when there is no armed run yet, else handled then.
                let arm_at = c.checked_sub(arm_ahead).unwrap_or(c);
                if arm_ahead.is_zero() || entry.armed().is_some() || arm_at <= self.now {
                    consider(c);
                } else {
                    consider(arm_at);
                }
            }
            for run in entry.active() {
                if run.record.state == RunState::Pending && run.due_at > self.now {
                    consider(run.due_at);
                }
                if let Some(kill_at) = overrun_at(&entry.job, run) {
                    consider(kill_at);
                }
                if let Some(skip_at) = start_deadline(&entry.job, run) {
                    consider(skip_at);
                }
            }
        }
        for doubt in self.doubts.values() {
            consider(doubt.recheck_at);
        }
        if self.suppressed != Some(false)
            && let Some(due) = self.next_due()
        {
            let lead = jiff::SignedDuration::try_from(self.config.offer_lead).unwrap_or_default();
            let revive_at = due.checked_sub(lead).unwrap_or(due);
            if revive_at > self.now {
                consider(revive_at);
            }
        }
        next
    }

    // ---------------------------------------------------------------------------------------
    // Commands
    // ---------------------------------------------------------------------------------------

    /// Creates or replaces a job. Checks the dependency graph and the schedule first: on
    /// error nothing changes. A replaced job keeps its statistics and history; its cursor is
    /// kept unless the schedule or time zone changed (or it was re-enabled).
    pub fn put_job(&mut self, job: Job, now: Timestamp) -> Result<Vec<Effect>, CronError> {
        let graph = DependencyGraph::new(self.jobs.values().map(|e| &e.job).filter(|j| j.name != job.name));
        graph.check(&job)?;
        let existing = self.jobs.get(&job.name);
        let same_schedule = existing.is_some_and(|e| {
            e.job.schedule == job.schedule
                && e.job.schedule_time_zone == job.schedule_time_zone
                && e.schedule.is_some()
                // A job being re-enabled starts from now, not from where it was disabled.
                && (job.disabled || !e.job.disabled)
        });
        let anchor = match existing {
            Some(e) if same_schedule => e.anchor,
            _ => now,
        };
        let schedule = match &job.schedule {
            Some(expr) => Some(Schedule::parse(expr, job.schedule_time_zone.as_deref(), anchor)?),
            None => None,
        };
        let cursor = match (existing, &schedule) {
            (Some(e), Some(_)) if same_schedule => e.cursor,
            (_, Some(s)) => s.first_at_or_after(now),
            (_, None) => None,
        };
        let name = job.name.clone();
        if !same_schedule && let Some(armed) = existing.and_then(|e| e.armed()).map(|r| r.seq) {
            // Its instant belongs to the old schedule.
            self.drop_armed_run(&name, armed);
        }
        match self.jobs.get_mut(&name) {
            Some(entry) => {
                entry.job = job;
                entry.schedule = schedule;
                entry.anchor = anchor;
                entry.cursor = cursor;
            }
            None => {
                self.jobs.insert(
                    name.clone(),
                    JobEntry {
                        job,
                        schedule,
                        anchor,
                        cursor,
                        stats: JobStats::default(),
                        last_dependency_run: None,
                        next_seq: 0,
                        runs: BTreeMap::new(),
                        live: Default::default(),
                    },
                );
            }
        }
        self.persist_job(&name);
        Ok(self.step(now))
    }

    /// Deletes a job with its history and kills its launched tasks. Its children are re-wired
    /// in the same change (see the module documentation): the children of a dependent job
    /// inherit its parents; a child whose only parent was a scheduled job takes over its
    /// schedule; other children just lose the deleted parent.
    pub fn delete_job(&mut self, name: &JobName, now: Timestamp) -> Result<Vec<Effect>, CronError> {
        let entry = self
            .jobs
            .remove(name)
            .ok_or_else(|| CronError::NotFound(name.to_string()))?;
        let children: Vec<JobName> = self
            .jobs
            .values()
            .filter(|e| e.job.parents.contains(name))
            .map(|e| e.job.name.clone())
            .collect();
        for child in children {
            self.orphan(&child, &entry, now);
        }
        let mut kills = Vec::new();
        for run in entry.runs.values().filter(|r| r.is_active()) {
            if let Some(task_id) = &run.record.task_id {
                self.tasks.remove(task_id);
                if run.is_launched() {
                    kills.push(Effect::Kill {
                        task_id: task_id.clone(),
                        agent_id: run.agent_id.clone(),
                    });
                }
            }
        }
        self.changes.push(Change::DeleteJob {
            name: name.clone(),
            runs: entry.runs.keys().copied().collect(),
        });
        self.later.extend(kills);
        Ok(self.step(now))
    }

    /// Re-wires `child` after its parent `deleted` was deleted.
    fn orphan(&mut self, child: &JobName, deleted: &JobEntry, now: Timestamp) {
        let Some(entry) = self.jobs.get_mut(child) else {
            return;
        };
        let mut parents: Vec<JobName> = entry
            .job
            .parents
            .iter()
            .filter(|p| **p != deleted.job.name)
            .cloned()
            .collect();
        if !deleted.job.parents.is_empty() {
            for p in &deleted.job.parents {
                if !parents.contains(p) {
                    parents.push(p.clone());
                }
            }
        } else if parents.is_empty() {
            // The scheduled parent's instants become the child's own: same expression, same
            // anchor (an empty ISO 8601 start meant the parent's creation), from now on.
            entry.job.schedule = deleted.job.schedule.clone();
            entry.job.schedule_time_zone = deleted.job.schedule_time_zone.clone();
            entry.schedule = deleted.schedule.clone();
            entry.anchor = deleted.anchor;
            entry.cursor = entry.schedule.as_ref().and_then(|s| s.first_at_or_after(now));
        }
        entry.job.parents = parents;
        self.persist_job(child);
    }

    /// Starts a manual run now (ignores `disabled` and the concurrency policy, as Chronos'
    /// "run now" does; does not move the schedule).
    pub fn run_now(&mut self, name: &JobName, now: Timestamp) -> Result<Vec<Effect>, CronError> {
        if !self.jobs.contains_key(name) {
            return Err(CronError::NotFound(name.to_string()));
        }
        self.create_run(name, Trigger::Manual, None, now);
        Ok(self.step(now))
    }

    /// Kills every run of the job in flight: launched tasks get a KILL (recorded as Killed when
    /// the update arrives), runs not launched yet are Killed at once.
    pub fn kill_tasks(&mut self, name: &JobName, now: Timestamp) -> Result<Vec<Effect>, CronError> {
        if !self.jobs.contains_key(name) {
            return Err(CronError::NotFound(name.to_string()));
        }
        self.kill_active(name, KillReason::User, now);
        Ok(self.step(now))
    }

    // ---------------------------------------------------------------------------------------
    // Events from the master
    // ---------------------------------------------------------------------------------------

    /// The driver (re-)subscribed: offers held before are void; reconcile every launched task.
    /// The master may be another one (or restarted): which agents it knows is learned anew.
    pub fn subscribed(&mut self, now: Timestamp) -> Vec<Effect> {
        self.offers.clear();
        self.suppressed = None;
        self.agents_seen.clear();
        let recheck_at = add(now, self.config.reconcile_retry);
        for doubt in self.doubts.values_mut() {
            doubt.retries = 0;
            doubt.recheck_at = recheck_at;
        }
        let launched = self.launched_tasks();
        if !launched.is_empty() {
            self.later.push(Effect::Reconcile(launched));
        }
        self.step(now)
    }

    /// The subscription was lost: held offers are void, and so is what the master knew.
    pub fn disconnected(&mut self) {
        self.offers.clear();
        self.agents_seen.clear();
    }

    /// New offers: launch due runs into them, hold them if runs are due soon, else decline.
    /// An offer shows that the master knows its agent.
    pub fn offers(&mut self, offers: Vec<v1::Offer>, now: Timestamp) -> Vec<Effect> {
        for offer in &offers {
            if let Ok(agent) = AgentId::parse(&offer.agent_id) {
                self.agent_seen(agent, now);
            }
        }
        self.offers.extend(offers);
        self.step(now)
    }

    /// The current master knows `agent`: tasks in doubt on it are reconciled again at once, and
    /// the answers will be definitive.
    fn agent_seen(&mut self, agent: AgentId, now: Timestamp) {
        if self.agents_seen.contains(&agent) {
            return;
        }
        let mut recheck = Vec::new();
        for (task_id, doubt) in self.doubts.iter_mut() {
            let on_agent = self
                .tasks
                .get(task_id)
                .and_then(|(name, seq)| self.jobs.get(name)?.runs.get(seq))
                .is_some_and(|run| run.agent_id.as_ref() == Some(&agent));
            if on_agent {
                doubt.recheck_at = add(now, self.config.reconcile_retry);
                recheck.push((task_id.clone(), Some(agent.clone())));
            }
        }
        if !recheck.is_empty() {
            self.later.push(Effect::Reconcile(recheck));
        }
        self.agents_seen.insert(agent);
    }

    /// Whether the master's "unknown" answer about `task_id` on `agent` is definitive (see the
    /// module documentation).
    fn unknown_is_definitive(&self, task_id: &TaskId, agent: Option<&AgentId>, now: Timestamp) -> bool {
        if agent.is_some_and(|a| self.agents_seen.contains(a)) {
            return true;
        }
        self.doubts
            .get(task_id)
            .is_some_and(|d| add(d.since, self.config.agent_reregister_timeout) <= now)
    }

    /// Records (or keeps) a launched task in doubt; reconciles it again after the backoff.
    fn doubt(&mut self, task_id: &TaskId, now: Timestamp) {
        let retry = self.config.reconcile_retry;
        match self.doubts.get_mut(task_id) {
            Some(doubt) => {
                doubt.retries += 1;
                let backoff = retry
                    .checked_mul(2u32.saturating_pow(doubt.retries.min(20)))
                    .unwrap_or(RECONCILE_RETRY_MAX)
                    .min(RECONCILE_RETRY_MAX);
                doubt.recheck_at = add(now, backoff);
            }
            None => {
                self.doubts.insert(
                    task_id.clone(),
                    Doubt {
                        since: now,
                        retries: 0,
                        recheck_at: add(now, retry),
                    },
                );
                // Revive (which also clears decline filters), so that the agent's offers show
                // when it is back.
                self.suppressed = None;
            }
        }
    }

    /// Reconciles the tasks in doubt whose backoff ended; forgets those no longer in flight.
    fn recheck_doubts(&mut self, now: Timestamp) {
        let tasks = &self.tasks;
        self.doubts.retain(|task_id, _| tasks.contains_key(task_id));
        let due: Vec<TaskId> = self
            .doubts
            .iter()
            .filter(|(_, d)| d.recheck_at <= now)
            .map(|(t, _)| t.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        let mut reconcile = Vec::with_capacity(due.len());
        for task_id in due {
            let agent = self
                .tasks
                .get(&task_id)
                .and_then(|(name, seq)| self.jobs.get(name)?.runs.get(seq))
                .and_then(|run| run.agent_id.clone());
            if let Some(doubt) = self.doubts.get_mut(&task_id) {
                // Far ahead: the answer re-arms it with the backoff.
                doubt.recheck_at = add(now, RECONCILE_RETRY_MAX);
            }
            reconcile.push((task_id, agent));
        }
        self.later.push(Effect::Reconcile(reconcile));
    }

    /// An offer was rescinded.
    pub fn rescinded(&mut self, offer_id: &OfferId) {
        self.offers.retain(|o| o.id != offer_id.as_str());
    }

    /// A task status update. Its outcome is persisted before it is acknowledged. An update
    /// from an agent shows that the master knows that agent.
    pub fn update(&mut self, status: v1::TaskStatus, now: Timestamp) -> Vec<Effect> {
        let state = status.state();
        if status.source() == v1::StatusSource::Agent
            && let Ok(agent) = AgentId::parse(&status.agent_id)
        {
            self.agent_seen(agent, now);
        }
        let found = TaskId::parse(&status.task_id)
            .ok()
            .and_then(|t| self.tasks.get(&t).cloned().map(|key| (t, key)));
        match found {
            None => {
                if !is_terminal(state)
                    && let Ok(task_id) = TaskId::parse(&status.task_id)
                {
                    // Not a run in flight: a task of a deleted job or a replaced attempt.
                    self.later.push(Effect::Kill {
                        task_id,
                        agent_id: AgentId::parse(&status.agent_id).ok(),
                    });
                }
            }
            Some((task_id, (name, seq))) => self.apply_update(&name, seq, &task_id, &status, now),
        }
        self.later.push(Effect::Acknowledge(status));
        self.step(now)
    }

    /// Timers: handles due instants, retries whose backoff ended, overrunning runs, and offer
    /// holding / reviving.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Effect> {
        self.step(now)
    }

    // ---------------------------------------------------------------------------------------
    // The step every entry point ends with
    // ---------------------------------------------------------------------------------------

    fn step(&mut self, now: Timestamp) -> Vec<Effect> {
        self.now = self.now.max(now);
        self.settle_armed_runs(now);
        self.fire_due_instants(now);
        self.kill_overrunning(now);
        self.skip_past_start_deadline(now);
        self.recheck_doubts(now);
        self.launch_due_runs(now);
        self.arm_next_instants(now);
        self.manage_offers(now);
        self.recovering = false;
        self.flush()
    }

    /// The step's effects: one Persist with every change (the last write of a key wins),
    /// then the other effects in the order they were queued.
    fn flush(&mut self) -> Vec<Effect> {
        self.settled.clear();
        let mut effects = Vec::with_capacity(self.later.len() + 1);
        if !self.changes.is_empty() {
            let mut seen_jobs = std::collections::HashSet::new();
            let mut seen_runs = std::collections::HashSet::new();
            let mut batch: Vec<Change> = Vec::new();
            for change in std::mem::take(&mut self.changes).into_iter().rev() {
                let keep = match &change {
                    Change::PutJob(j) => seen_jobs.insert(j.job.name.clone()),
                    Change::PutRun(n, r) => seen_runs.insert((n.clone(), r.seq)),
                    Change::DeleteRun(n, seq) => seen_runs.insert((n.clone(), *seq)),
                    Change::DeleteJob { .. } => true,
                };
                if keep {
                    batch.push(change);
                }
            }
            batch.reverse();
            effects.push(Effect::Persist(batch));
        }
        effects.append(&mut self.later);
        effects
    }

    fn persist_job(&mut self, name: &JobName) {
        if let Some(entry) = self.jobs.get(name) {
            self.changes.push(Change::PutJob(Box::new(entry.stored())));
        }
    }

    fn persist_run(&mut self, name: &JobName, seq: u64) {
        if let Some(entry) = self.jobs.get_mut(name) {
            match entry.runs.get(&seq) {
                Some(run) if run.is_active() => entry.live.insert(seq),
                _ => entry.live.remove(&seq),
            };
        }
        if let Some(run) = self.jobs.get(name).and_then(|e| e.runs.get(&seq)) {
            self.changes
                .push(Change::PutRun(name.clone(), Box::new(run.clone())));
        }
    }

    fn fire_due_instants(&mut self, now: Timestamp) {
        let due: Vec<JobName> = self
            .jobs
            .iter()
            .filter(|(_, e)| e.fires() && e.cursor.is_some_and(|c| c <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let mut handled = 0usize;
            while let Some(entry) = self.jobs.get(&name) {
                let Some(instant) = entry.cursor.filter(|c| *c <= now) else {
                    break;
                };
                let Some(schedule) = entry.schedule.clone() else {
                    break;
                };
                if handled == self.config.catch_up_limit {
                    // Too many missed instants: one record covers the rest before now.
                    let next = schedule.first_at_or_after(now);
                    let message = format!(
                        "skipped every instant from {instant} to before {now}: more than {} instants were missed",
                        self.config.catch_up_limit
                    );
                    self.record_skipped(&name, Trigger::CatchUp, instant, now, message);
                    if let Some(entry) = self.jobs.get_mut(&name) {
                        entry.cursor = next;
                    }
                    handled = 0;
                    continue;
                }
                handled += 1;
                let next = schedule.next_after(instant);
                let trigger = self.trigger_of(instant, now);
                let too_late = past_starting_deadline(&entry.job, instant, now);
                if self.already_ran(&name, instant) {
                    self.counters.doubled_runs += 1;
                } else if let Some(message) = too_late {
                    self.record_skipped(&name, trigger, instant, now, message);
                } else {
                    self.admit(&name, trigger, Some(instant), now);
                }
                if let Some(entry) = self.jobs.get_mut(&name) {
                    entry.cursor = next;
                }
            }
            self.persist_job(&name);
        }
    }

    /// How an instant handled now counts: a catch-up when it passed while the framework was
    /// down or came more than [`EngineConfig::late_after`] ago, else on schedule.
    fn trigger_of(&self, instant: Timestamp, now: Timestamp) -> Trigger {
        let late_after = jiff::SignedDuration::try_from(self.config.late_after).unwrap_or_default();
        if (self.recovering && instant < now) || now.duration_since(instant) > late_after {
            Trigger::CatchUp
        } else {
            Trigger::Schedule
        }
    }

    /// Whether a scheduled run of `instant` exists already (a doubled run would be a bug).
    fn already_ran(&self, name: &JobName, instant: Timestamp) -> bool {
        let Some(entry) = self.jobs.get(name) else {
            return false;
        };
        entry
            .runs
            .values()
            .rev()
            .take_while(|r| r.record.scheduled_at.is_none_or(|s| s >= instant))
            .any(|r| r.record.scheduled_at == Some(instant))
    }

    /// Creates a run for a schedule or dependency trigger, applying the concurrency policy.
    fn admit(&mut self, name: &JobName, trigger: Trigger, instant: Option<Timestamp>, now: Timestamp) {
        let Some(entry) = self.jobs.get(name) else { return };
        let in_flight: Vec<String> = entry.in_flight().map(|r| r.record.run_id.clone()).collect();
        match entry.job.concurrency_policy {
            ConcurrencyPolicy::Forbid if !in_flight.is_empty() => {
                let message = forbidden_message(&in_flight);
                let at = instant.unwrap_or(now);
                self.record_skipped(name, trigger, at, now, message);
                return;
            }
            ConcurrencyPolicy::Replace if !in_flight.is_empty() => {
                self.kill_active(name, KillReason::Replaced, now);
            }
            _ => {}
        }
        self.create_run(name, trigger, instant, instant.unwrap_or(now));
    }

    /// Creates the run of each firing job's next instant ahead of it (within
    /// [`EngineConfig::arm_ahead`]) and moves the cursor past it, in this step's one change.
    /// At most one armed run per job: a job firing more often than that is armed again once
    /// its armed instant came.
    fn arm_next_instants(&mut self, now: Timestamp) {
        if self.config.arm_ahead.is_zero() {
            return;
        }
        let horizon = add(now, self.config.arm_ahead);
        let to_arm: Vec<(JobName, Timestamp)> = self
            .jobs
            .iter()
            .filter(|(_, e)| e.fires() && e.armed().is_none())
            .filter_map(|(n, e)| {
                e.cursor
                    .filter(|c| *c > now && *c <= horizon)
                    .map(|c| (n.clone(), c))
            })
            .collect();
        for (name, instant) in to_arm {
            let seq = self.create_run(&name, Trigger::Schedule, Some(instant), instant);
            let Some(entry) = self.jobs.get_mut(&name) else {
                continue;
            };
            if let Some(run) = entry.runs.get_mut(&seq) {
                run.armed = true;
            }
            entry.cursor = entry.schedule.as_ref().and_then(|s| s.next_after(instant));
            self.persist_run(&name, seq);
            self.persist_job(&name);
        }
    }

    /// Armed runs whose instant came are decided now, as an instant handled now would be:
    /// late ones (the framework was down) are catch-ups, the starting deadline and the
    /// concurrency policy apply. Armed runs of jobs that no longer fire are dropped.
    fn settle_armed_runs(&mut self, now: Timestamp) {
        let armed: Vec<(JobName, u64, bool)> = self
            .jobs
            .iter()
            .flat_map(|(name, e)| {
                let fires = e.fires();
                e.active()
                    .filter(move |r| r.armed && (!fires || r.due_at <= now))
                    .map(move |r| (name.clone(), r.seq, fires))
            })
            .collect();
        for (name, seq, fires) in armed {
            if !fires {
                self.drop_armed_run(&name, seq);
            } else if self.recovering {
                self.unconfirm(&name, seq);
            } else {
                self.settle_armed_run(&name, seq, now);
            }
        }
    }

    /// An armed run found past its instant after a restart: its task (the run's first, with
    /// the id derived from the run) may have been launched before the launch was recorded. It
    /// counts as launched, agent unknown, until the master answers the reconciliation.
    fn unconfirm(&mut self, name: &JobName, seq: u64) {
        let Some(run) = self.jobs.get_mut(name).and_then(|e| e.runs.get_mut(&seq)) else {
            return;
        };
        let task_id = task_id_for(&run.record.run_id, run.record.attempt);
        run.armed = false;
        run.unconfirmed = true;
        run.record.state = RunState::Running;
        run.record.task_id = Some(task_id.clone());
        self.tasks.insert(task_id, (name.clone(), seq));
        self.persist_run(name, seq);
    }

    /// The master does not know an unconfirmed run's task: it was never launched. The run is
    /// armed again, to be decided at once as its instant (late: a catch-up, deadline and
    /// policy apply).
    fn rearm(&mut self, name: &JobName, seq: u64, task_id: &TaskId) {
        self.tasks.remove(task_id);
        self.doubts.remove(task_id);
        let Some(run) = self.jobs.get_mut(name).and_then(|e| e.runs.get_mut(&seq)) else {
            return;
        };
        run.unconfirmed = false;
        run.armed = true;
        run.record.state = RunState::Pending;
        run.record.task_id = None;
        run.agent_id = None;
        self.persist_run(name, seq);
    }

    fn settle_armed_run(&mut self, name: &JobName, seq: u64, now: Timestamp) {
        let Some(entry) = self.jobs.get(name) else { return };
        let Some(run) = entry.runs.get(&seq) else { return };
        let Some(instant) = run.record.scheduled_at else {
            return;
        };
        let trigger = self.trigger_of(instant, now);
        let in_flight: Vec<String> = entry.in_flight().map(|r| r.record.run_id.clone()).collect();
        let skipped = match past_starting_deadline(&entry.job, instant, now) {
            Some(message) => Some(message),
            None => match entry.job.concurrency_policy {
                ConcurrencyPolicy::Forbid if !in_flight.is_empty() => Some(forbidden_message(&in_flight)),
                ConcurrencyPolicy::Replace if !in_flight.is_empty() => {
                    self.kill_active(name, KillReason::Replaced, now);
                    None
                }
                _ => None,
            },
        };
        let Some(run) = self.jobs.get_mut(name).and_then(|e| e.runs.get_mut(&seq)) else {
            return;
        };
        run.armed = false;
        run.record.trigger = trigger;
        match skipped {
            Some(message) => {
                run.record.state = RunState::Skipped;
                run.record.finished_at = Some(now);
                run.record.message = Some(message);
            }
            None => {
                self.settled.insert((name.clone(), seq));
            }
        }
        self.persist_run(name, seq);
        self.trim_history(name);
    }

    /// Forgets an armed run whose instant will not come (the job was disabled or its schedule
    /// changed). Its instant was never part of the history.
    fn drop_armed_run(&mut self, name: &JobName, seq: u64) {
        let Some(entry) = self.jobs.get_mut(name) else {
            return;
        };
        entry.runs.remove(&seq);
        entry.live.remove(&seq);
        self.changes.push(Change::DeleteRun(name.clone(), seq));
    }

    fn record_skipped(
        &mut self,
        name: &JobName,
        trigger: Trigger,
        instant: Timestamp,
        now: Timestamp,
        message: String,
    ) {
        let seq = self.create_run(name, trigger, Some(instant), instant);
        if let Some(run) = self.jobs.get_mut(name).and_then(|e| e.runs.get_mut(&seq)) {
            run.record.state = RunState::Skipped;
            run.record.finished_at = Some(now);
            run.record.message = Some(message);
        }
        self.persist_run(name, seq);
        self.trim_history(name);
    }

    /// Adds a Pending run and queues it for persisting; returns its seq.
    fn create_run(
        &mut self,
        name: &JobName,
        trigger: Trigger,
        scheduled_at: Option<Timestamp>,
        due_at: Timestamp,
    ) -> u64 {
        let Some(entry) = self.jobs.get_mut(name) else {
            return 0;
        };
        let seq = entry.next_seq;
        entry.next_seq += 1;
        let run_id = format!("{name}.{}.{seq}", entry.anchor.as_millisecond());
        let run = Run {
            seq,
            record: RunRecord {
                job: name.clone(),
                run_id,
                trigger,
                scheduled_at,
                attempt: 0,
                task_id: None,
                started_at: None,
                finished_at: None,
                state: RunState::Pending,
                exit_code: None,
                message: None,
            },
            due_at,
            agent_id: None,
            kill: None,
            relaunches: 0,
            armed: false,
            unconfirmed: false,
        };
        entry.runs.insert(seq, run);
        self.persist_run(name, seq);
        // The job record carries next_seq (and the cursor): persist it in the same batch.
        self.persist_job(name);
        seq
    }

    /// Kills every run of `name` in flight.
    fn kill_active(&mut self, name: &JobName, reason: KillReason, now: Timestamp) {
        let Some(entry) = self.jobs.get_mut(name) else {
            return;
        };
        let mut kills = Vec::new();
        let mut ended = Vec::new();
        let live: Vec<u64> = entry.in_flight().map(|r| r.seq).collect();
        for seq in live {
            let Some(run) = entry.runs.get_mut(&seq) else {
                continue;
            };
            if run.is_launched() {
                if run.kill.is_none() {
                    run.kill = Some(reason);
                }
                if let Some(task_id) = &run.record.task_id {
                    kills.push(Effect::Kill {
                        task_id: task_id.clone(),
                        agent_id: run.agent_id.clone(),
                    });
                }
            } else {
                run.record.state = RunState::Killed;
                run.record.finished_at = Some(now);
                run.record.message = Some(kill_message(reason).to_owned());
                if let Some(task_id) = run.record.task_id.take() {
                    self.tasks.remove(&task_id);
                }
            }
            ended.push(run.seq);
        }
        for seq in ended {
            self.persist_run(name, seq);
        }
        self.trim_history(name);
        self.later.extend(kills);
    }

    /// Runs still waiting for their first launch when their `startingDeadlineSeconds` passed
    /// (no offer could take them in time) are recorded as Skipped instead of launched late.
    fn skip_past_start_deadline(&mut self, now: Timestamp) {
        let mut overdue = Vec::new();
        for (name, entry) in &self.jobs {
            for run in entry.active() {
                if start_deadline(&entry.job, run).is_some_and(|t| t <= now) {
                    overdue.push((name.clone(), run.seq));
                }
            }
        }
        for (name, seq) in overdue {
            let Some(entry) = self.jobs.get_mut(&name) else {
                continue;
            };
            let limit = entry.job.starting_deadline_seconds.unwrap_or_default();
            let Some(run) = entry.runs.get_mut(&seq) else {
                continue;
            };
            run.record.state = RunState::Skipped;
            run.record.finished_at = Some(now);
            run.record.message = Some(format!(
                "skipped: not launched within startingDeadlineSeconds ({limit}) of its instant \
                 (no offer could take it)"
            ));
            self.persist_run(&name, seq);
            self.trim_history(&name);
        }
    }

    fn kill_overrunning(&mut self, now: Timestamp) {
        let mut overrunning = Vec::new();
        for (name, entry) in &self.jobs {
            for run in entry.active() {
                if run.kill.is_none() && overrun_at(&entry.job, run).is_some_and(|t| t <= now) {
                    overrunning.push((name.clone(), run.seq));
                }
            }
        }
        for (name, seq) in overrunning {
            let Some(run) = self.jobs.get_mut(&name).and_then(|e| e.runs.get_mut(&seq)) else {
                continue;
            };
            run.kill = Some(KillReason::Overran);
            let kill = run.record.task_id.clone().map(|task_id| Effect::Kill {
                task_id,
                agent_id: run.agent_id.clone(),
            });
            self.persist_run(&name, seq);
            self.later.extend(kill);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Updates
    // ---------------------------------------------------------------------------------------

    fn apply_update(
        &mut self,
        name: &JobName,
        seq: u64,
        task_id: &TaskId,
        status: &v1::TaskStatus,
        now: Timestamp,
    ) {
        let state = status.state();
        let reconciling = status.reason() == StatusReason::ReasonReconciliation;
        let Some(run) = self.jobs.get(name).and_then(|e| e.runs.get(&seq)) else {
            return;
        };
        if run.record.task_id.as_ref() != Some(task_id) || !run.is_active() {
            return;
        }
        let not_known =
            reconciling && matches!(state, TaskState::Lost | TaskState::Unknown | TaskState::Gone);
        if run.unconfirmed {
            if not_known {
                // Never launched. Definitive although the agent is not known: the master answers
                // a reconciliation without an agent only once no agent is still re-registering.
                self.rearm(name, seq, task_id);
                return;
            }
            // The master knows the task: it was launched; adopted below.
            let Some(run) = self.jobs.get_mut(name).and_then(|e| e.runs.get_mut(&seq)) else {
                return;
            };
            run.unconfirmed = false;
            run.record.started_at.get_or_insert(now);
            self.persist_run(name, seq);
        }
        let Some(run) = self.jobs.get(name).and_then(|e| e.runs.get(&seq)) else {
            return;
        };
        // GONE: a master that knows the agent says it does not have the task.
        if not_known {
            if run.record.state == RunState::Pending {
                // Already waiting to be launched again.
                return;
            }
            let agent = run.agent_id.clone();
            if !self.unknown_is_definitive(task_id, agent.as_ref(), now) {
                // The task may still be running on an agent that has not re-registered.
                self.doubt(task_id, now);
                return;
            }
        }
        self.doubts.remove(task_id);
        let Some(run) = self.jobs.get_mut(name).and_then(|e| e.runs.get_mut(&seq)) else {
            return;
        };
        let mut changed = false;
        if run.agent_id.is_none()
            && let Ok(agent) = AgentId::parse(&status.agent_id)
        {
            run.agent_id = Some(agent);
            changed = true;
        }
        if !is_terminal(state) && state != TaskState::Unreachable && run.record.state == RunState::Pending {
            // The master knows the task after all (e.g. an update that was in flight): adopt it.
            run.record.state = RunState::Running;
            run.record.started_at.get_or_insert(now);
            changed = true;
        }
        let kill = run.kill;
        let relaunches = run.relaunches;
        if reconciling && kill.is_some() && !is_terminal(state) {
            // Still running although we asked for a kill (the kill may have been lost while
            // the master or this framework restarted): ask again.
            self.later.push(Effect::Kill {
                task_id: task_id.clone(),
                agent_id: run.agent_id.clone(),
            });
        }
        if changed && !is_terminal(state) {
            self.persist_run(name, seq);
        }
        let message = (!status.message.is_empty()).then(|| status.message.clone());
        // When the task ended: the agent's time of the update (it may arrive much later, e.g.
        // after a restart of this framework), else now.
        let started = self
            .jobs
            .get(name)
            .and_then(|e| e.runs.get(&seq))
            .and_then(|r| r.record.started_at);
        let ended_at = event_time(status, started, now);
        match state {
            TaskState::Finished => {
                self.finish(
                    name,
                    seq,
                    RunState::Succeeded,
                    status.exit_code,
                    message,
                    ended_at,
                );
            }
            TaskState::Dropped => self.relaunch(name, seq, message, false),
            TaskState::Lost | TaskState::Unknown | TaskState::Gone
                if reconciling && kill.is_none() && relaunches < MAX_RELAUNCHES =>
            {
                self.relaunch(name, seq, message, true)
            }
            s if is_terminal(s) => match kill {
                Some(KillReason::Overran) => {
                    let message = Some(kill_message(KillReason::Overran).to_owned());
                    self.finish(name, seq, RunState::Failed, status.exit_code, message, ended_at);
                }
                Some(reason) => {
                    let message = Some(kill_message(reason).to_owned());
                    self.finish(name, seq, RunState::Killed, status.exit_code, message, ended_at);
                }
                None => self.attempt_failed(name, seq, status.exit_code, message, ended_at, now),
            },
            _ => {}
        }
    }

    /// The attempt's task never ran (dropped, or unknown to the master): launch the same
    /// attempt again with the same task id.
    fn relaunch(&mut self, name: &JobName, seq: u64, message: Option<String>, counted: bool) {
        let Some(run) = self.jobs.get_mut(name).and_then(|e| e.runs.get_mut(&seq)) else {
            return;
        };
        run.record.state = RunState::Pending;
        run.record.started_at = None;
        run.record.message = message;
        run.agent_id = None;
        if counted {
            run.relaunches += 1;
        }
        self.persist_run(name, seq);
    }

    fn attempt_failed(
        &mut self,
        name: &JobName,
        seq: u64,
        exit_code: Option<i32>,
        message: Option<String>,
        ended_at: Timestamp,
        now: Timestamp,
    ) {
        let backoff_config = self.config.clone();
        let Some(entry) = self.jobs.get_mut(name) else {
            return;
        };
        let retries = entry.job.retries;
        let Some(run) = entry.runs.get_mut(&seq) else {
            return;
        };
        if run.record.attempt >= retries {
            self.finish(name, seq, RunState::Failed, exit_code, message, ended_at);
            return;
        }
        if let Some(task_id) = run.record.task_id.take() {
            self.tasks.remove(&task_id);
        }
        let backoff = retry_backoff(&backoff_config, run.record.attempt);
        run.record.attempt += 1;
        run.record.state = RunState::Pending;
        run.record.started_at = None;
        run.record.exit_code = exit_code;
        run.record.message = Some(format!(
            "attempt {} failed ({}); retrying in {}s",
            run.record.attempt,
            message.as_deref().unwrap_or("no message"),
            backoff.as_secs_f64()
        ));
        run.due_at = add(now, backoff);
        run.agent_id = None;
        run.kill = None;
        run.relaunches = 0;
        self.persist_run(name, seq);
    }

    /// Ends a run: statistics, history trimming, and dependent jobs whose parents all succeeded.
    fn finish(
        &mut self,
        name: &JobName,
        seq: u64,
        state: RunState,
        exit_code: Option<i32>,
        message: Option<String>,
        now: Timestamp,
    ) {
        let disable_after = self.config.disable_after_failures;
        let Some(entry) = self.jobs.get_mut(name) else {
            return;
        };
        let Some(run) = entry.runs.get_mut(&seq) else {
            return;
        };
        run.record.state = state;
        run.record.finished_at = Some(now);
        run.record.exit_code = exit_code.or(run.record.exit_code);
        if message.is_some() {
            run.record.message = message;
        }
        if let Some(task_id) = &run.record.task_id {
            self.tasks.remove(task_id);
        }
        match state {
            RunState::Succeeded => {
                entry.stats.success_count += 1;
                entry.stats.last_success = Some(now);
                entry.stats.errors_since_last_success = 0;
            }
            RunState::Failed => {
                entry.stats.error_count += 1;
                entry.stats.last_error = Some(now);
                entry.stats.errors_since_last_success += 1;
                if disable_after > 0
                    && !entry.job.soft_error
                    && entry.stats.errors_since_last_success >= disable_after
                {
                    entry.job.disabled = true;
                }
            }
            _ => {}
        }
        self.persist_run(name, seq);
        self.trim_history(name);
        self.persist_job(name);
        if state == RunState::Succeeded {
            self.fire_children(name, now);
        }
    }

    /// Creates a dependency run of every child of `parent` whose parents' latest runs all
    /// succeeded, at least one of them after the child's last dependency run.
    fn fire_children(&mut self, parent: &JobName, now: Timestamp) {
        let children: Vec<JobName> = self
            .jobs
            .values()
            .filter(|e| e.job.parents.contains(parent) && !e.job.disabled)
            .map(|e| e.job.name.clone())
            .collect();
        for child in children {
            let Some(entry) = self.jobs.get(&child) else {
                continue;
            };
            let mut newest_success: Option<Timestamp> = None;
            let mut all_succeeded = true;
            for p in &entry.job.parents {
                match self.jobs.get(p) {
                    Some(pe) if pe.last_result_succeeded() => {
                        newest_success = newest_success.max(pe.stats.last_success);
                    }
                    _ => all_succeeded = false,
                }
            }
            let fresh = match (newest_success, entry.last_dependency_run) {
                (Some(s), Some(last)) => s > last,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if all_succeeded && fresh {
                if let Some(e) = self.jobs.get_mut(&child) {
                    e.last_dependency_run = Some(now);
                }
                self.admit(&child, Trigger::Dependency, None, now);
                self.persist_job(&child);
            }
        }
    }

    /// Drops the oldest finished runs beyond the history limit.
    fn trim_history(&mut self, name: &JobName) {
        let limit = self.config.history_limit;
        let Some(entry) = self.jobs.get_mut(name) else {
            return;
        };
        let finished_count = entry.runs.len().saturating_sub(entry.live.len());
        if finished_count <= limit {
            return;
        }
        let excess = finished_count - limit;
        let finished: Vec<u64> = entry
            .runs
            .values()
            .filter(|r| !r.is_active())
            .map(|r| r.seq)
            .take(excess)
            .collect();
        for seq in finished {
            entry.runs.remove(&seq);
            // A PutRun of it queued earlier in this step is dropped by `flush` (last write wins).
            self.changes.push(Change::DeleteRun(name.clone(), seq));
        }
    }

    // ---------------------------------------------------------------------------------------
    // Offers
    // ---------------------------------------------------------------------------------------

    /// Runs waiting for an offer now, oldest due first.
    fn due_runs(&self, now: Timestamp) -> Vec<(JobName, u64)> {
        let mut due: Vec<(Timestamp, JobName, u64)> = self
            .jobs
            .iter()
            .flat_map(|(name, e)| {
                e.active()
                    .filter(|r| r.record.state == RunState::Pending && !r.armed && r.due_at <= now)
                    .map(move |r| (r.due_at, name.clone(), r.seq))
            })
            .collect();
        due.sort();
        due.into_iter().map(|(_, n, s)| (n, s)).collect()
    }

    /// The earliest time a run will need an offer (now or later).
    fn next_due(&self) -> Option<Timestamp> {
        let mut next: Option<Timestamp> = None;
        for entry in self.jobs.values() {
            if entry.fires()
                && let Some(c) = entry.cursor
            {
                next = Some(next.map_or(c, |n| n.min(c)));
            }
            for run in entry.active().filter(|r| r.record.state == RunState::Pending) {
                next = Some(next.map_or(run.due_at, |n| n.min(run.due_at)));
            }
        }
        next
    }

    fn launch_due_runs(&mut self, now: Timestamp) {
        let due = self.due_runs(now);
        if due.is_empty() || self.offers.is_empty() {
            return;
        }
        let mut pool = placement::Placement::new(&self.offers);
        let mut launched = Vec::new();
        for (name, seq) in due {
            let Some(entry) = self.jobs.get(&name) else {
                continue;
            };
            let Some(run) = entry.runs.get(&seq) else { continue };
            let task_id = task_id_for(&run.record.run_id, run.record.attempt);
            if let Some(agent) = pool.place(&entry.job, run, &task_id) {
                launched.push((name, seq, task_id, agent));
            }
        }
        if launched.is_empty() {
            return;
        }
        let mut ahead_of_write: HashSet<String> = HashSet::new();
        for (name, seq, task_id, agent) in launched {
            if self.settled.contains(&(name.clone(), seq)) {
                ahead_of_write.insert(task_id.to_string());
            }
            let lateness_sample = self.counters_sample(&name, seq, now);
            let Some(run) = self.jobs.get_mut(&name).and_then(|e| e.runs.get_mut(&seq)) else {
                continue;
            };
            run.record.state = RunState::Running;
            run.record.task_id = Some(task_id.clone());
            run.record.started_at = Some(now);
            // Known before any update: reconciliation names it, and an "unknown" answer is
            // judged by whether the master knows this agent.
            run.agent_id = Some(agent);
            self.tasks.insert(task_id, (name.clone(), seq));
            self.persist_run(&name, seq);
            if let Some(l) = lateness_sample {
                if self.counters.lateness.len() >= self.config.lateness_samples {
                    self.counters.lateness.pop_front();
                }
                self.counters.lateness.push_back(l);
            }
        }
        let (accepts, used) = pool.into_accepts();
        self.offers.retain(|o| !used.iter().any(|u| u.as_str() == o.id));
        for (offer_ids, tasks) in accepts {
            let armed = tasks.iter().all(|t| ahead_of_write.contains(&t.task_id));
            self.later.push(Effect::Launch {
                offer_ids,
                tasks,
                armed,
            });
        }
    }

    /// Lateness of a first attempt of a scheduled run launched now, in seconds.
    fn counters_sample(&self, name: &JobName, seq: u64, now: Timestamp) -> Option<f64> {
        let run = self.jobs.get(name)?.runs.get(&seq)?;
        let instant = run.record.scheduled_at?;
        (run.record.attempt == 0 && run.record.trigger == Trigger::Schedule && run.relaunches == 0)
            .then(|| secs_between(now, instant))
    }

    /// Holds offers while runs are due soon, declines them otherwise; suppresses when
    /// nothing is due soon and revives ahead of the next due run. While tasks are in doubt,
    /// offers are not suppressed: they show which agents the master knows (an agent that has
    /// shown itself may be declined for long).
    fn manage_offers(&mut self, now: Timestamp) {
        let due_soon = self
            .next_due()
            .is_some_and(|due| due <= add(now, self.config.offer_lead));
        if due_soon {
            if self.suppressed != Some(false) || self.declined {
                self.revive();
            }
            return;
        }
        if !self.offers.is_empty() {
            let offer_ids = self
                .offers
                .drain(..)
                .filter_map(|o| OfferId::parse(&o.id).ok())
                .collect();
            self.later.push(Effect::Decline {
                offer_ids,
                refuse: self.config.decline_refuse,
            });
            self.declined = true;
        }
        if !self.doubts.is_empty() {
            if self.suppressed != Some(false) {
                self.revive();
            }
            return;
        }
        if self.suppressed != Some(true) {
            self.suppressed = Some(true);
            self.later.push(Effect::Suppress);
        }
    }
}

impl Engine {
    /// Resumes offers and clears the decline filters set since the last revive.
    fn revive(&mut self) {
        self.suppressed = Some(false);
        self.declined = false;
        self.later.push(Effect::Revive);
    }
}

/// Why an instant handled at `now` is skipped: later than the job's `startingDeadlineSeconds`.
fn past_starting_deadline(job: &Job, instant: Timestamp, now: Timestamp) -> Option<String> {
    let late = now.duration_since(instant).as_secs_f64();
    let limit = job.starting_deadline_seconds?;
    (late > limit as f64)
        .then(|| format!("skipped: {late:.3}s late, more than startingDeadlineSeconds ({limit})"))
}

fn forbidden_message(in_flight: &[String]) -> String {
    format!(
        "skipped: concurrencyPolicy FORBID and run {} is still in flight",
        in_flight.join(", ")
    )
}

fn kill_message(reason: KillReason) -> &'static str {
    match reason {
        KillReason::User => "killed on request",
        KillReason::Replaced => "killed: replaced by a newer run (concurrencyPolicy REPLACE)",
        KillReason::Overran => "killed: ran longer than maxCompletionTime",
    }
}

fn state_key(state: RunState) -> &'static str {
    match state {
        RunState::Pending => "PENDING",
        RunState::Running => "RUNNING",
        RunState::Succeeded => "SUCCEEDED",
        RunState::Failed => "FAILED",
        RunState::Skipped => "SKIPPED",
        RunState::Killed => "KILLED",
    }
}

/// When the update says its task changed state: the agent's timestamp, kept between the
/// attempt's start and `now`; `now` for updates from the master.
fn event_time(status: &v1::TaskStatus, started: Option<Timestamp>, now: Timestamp) -> Timestamp {
    if status.source() != v1::StatusSource::Agent || !status.timestamp.is_finite() || status.timestamp <= 0.0
    {
        return now;
    }
    let Ok(at) = Timestamp::from_microsecond((status.timestamp * 1e6) as i64) else {
        return now;
    };
    let at = at.min(now);
    match started {
        Some(s) => at.max(s),
        None => at,
    }
}

/// When a launched run overruns `maxCompletionTime`.
fn overrun_at(job: &Job, run: &Run) -> Option<Timestamp> {
    let max = job.max_completion_time_seconds?;
    if !run.is_launched() || run.kill.is_some() {
        return None;
    }
    Some(add(run.record.started_at?, Duration::from_secs(max)))
}

/// When a run still waiting for its first launch is too late to start: just after its instant
/// plus `startingDeadlineSeconds` (None: no deadline, not a scheduled run, or launched already).
fn start_deadline(job: &Job, run: &Run) -> Option<Timestamp> {
    let limit = job.starting_deadline_seconds?;
    let instant = run.record.scheduled_at?;
    let waiting = run.record.state == RunState::Pending
        && run.record.attempt == 0
        && run.relaunches == 0
        && run.record.task_id.is_none();
    if !waiting {
        return None;
    }
    // "Later than the deadline" is strictly later, as when an instant is handled late.
    Some(add(
        add(instant, Duration::from_secs(limit)),
        Duration::from_millis(1),
    ))
}

/// Backoff before retry number `attempt + 1`: `retry_backoff × 2^attempt`, capped.
pub fn retry_backoff(config: &EngineConfig, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.min(20));
    config
        .retry_backoff
        .checked_mul(factor)
        .unwrap_or(config.retry_backoff_max)
        .min(config.retry_backoff_max)
}

fn status_of(entry: &JobEntry) -> JobStatus {
    JobStatus {
        job: entry.job.clone(),
        stats: entry.stats.clone(),
        next_run: if entry.fires() { entry.next_instant() } else { None },
        running: entry.in_flight().count() as u32,
    }
}
