//! [`CronHandle`]: the interface the REST API and the CLI use to read and change the
//! cron framework. A cheap clone of a channel to the actor that owns the engine; every
//! call is a command answered by the actor, so callers never touch the engine's state.

use agora_proto::TaskId;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::job::{Job, JobError, JobName, JobStats};

/// What the cron framework answers when a call cannot be carried out.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CronError {
    /// No job of that name (the name is the payload).
    #[error("job '{0}' not found")]
    NotFound(String),
    /// The request was refused: the error names the field.
    #[error("{0}")]
    Invalid(JobError),
    /// The framework cannot answer now (starting, shutting down, store down).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A fault inside the framework (e.g. the store refused a write).
    #[error("internal error: {0}")]
    Internal(String),
}

impl CronError {
    /// The HTTP status this error maps to: 404, 400, 503 or 500.
    pub fn http_status(&self) -> u16 {
        match self {
            CronError::NotFound(_) => 404,
            CronError::Invalid(_) => 400,
            CronError::Unavailable(_) => 503,
            CronError::Internal(_) => 500,
        }
    }
}

impl From<JobError> for CronError {
    fn from(e: JobError) -> Self {
        CronError::Invalid(e)
    }
}

/// Result of a [`CronHandle`] call.
pub type Result<T, E = CronError> = std::result::Result<T, E>;

/// Why a run exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Trigger {
    /// A scheduled instant, handled on time.
    Schedule,
    /// Started by a user (PUT /scheduler/job/{name}).
    Manual,
    /// A dependent job whose parents all succeeded.
    Dependency,
    /// A scheduled instant that passed while the framework was down, run late.
    CatchUp,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunState {
    /// Recorded, waiting for an offer (or a retry's backoff) to launch.
    Pending,
    /// The task was launched (it may still be staging on the agent).
    Running,
    /// The task finished with exit code 0.
    Succeeded,
    /// Every attempt failed, or the run overran `maxCompletionTime`.
    Failed,
    /// The instant was not run: too late (`startingDeadlineSeconds`), or FORBID with a run in flight.
    Skipped,
    /// Killed by a user, by REPLACE, or because its job was deleted.
    Killed,
}

impl RunState {
    /// True once the run can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Skipped | RunState::Killed
        )
    }
}

/// One run of a job: a scheduled instant, a manual run or a dependency run, with all its attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// The job this run belongs to.
    pub job: JobName,
    /// Unique id of the run; task ids are derived from it and the attempt.
    pub run_id: String,
    /// Why the run exists.
    pub trigger: Trigger,
    /// The scheduled instant (None for manual and dependency runs: they are due when recorded).
    pub scheduled_at: Option<Timestamp>,
    /// The current attempt, 0 for the first; a retry increments it.
    pub attempt: u32,
    /// The task of the current attempt, once one was launched.
    pub task_id: Option<TaskId>,
    /// When the current attempt's task was launched.
    pub started_at: Option<Timestamp>,
    /// When the run became terminal.
    pub finished_at: Option<Timestamp>,
    /// Where the run stands.
    pub state: RunState,
    /// Exit code of the last attempt's task, when the agent reported one.
    pub exit_code: Option<i32>,
    /// Why the run ended as it did (the task's message, "skipped: …", …).
    pub message: Option<String>,
}

/// A job with its statistics, as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobStatus {
    /// The job definition.
    pub job: Job,
    /// Success and error counters.
    pub stats: JobStats,
    /// The next scheduled instant not yet handled (None: dependent, disabled or used up).
    pub next_run: Option<Timestamp>,
    /// Runs of this job that are pending or running.
    pub running: u32,
}

/// Who and where the framework is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronInfo {
    /// The framework id the master assigned (None before the first subscription).
    pub framework_id: Option<String>,
    /// The address this framework's API listens on (the leader: there is one instance).
    pub leader: String,
    /// The master address(es) the framework talks to.
    pub master: String,
}

/// Counters and lateness samples for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CronMetrics {
    /// Number of jobs.
    pub jobs: u64,
    /// Runs that became terminal since start, by final state, plus the pending/running now.
    pub runs_by_state: Vec<(RunState, u64)>,
    /// Scheduled instant → task launched, in seconds, for the most recent launches (bounded).
    pub launch_lateness_seconds: Vec<f64>,
    /// Scheduled instants run twice (must stay 0).
    pub doubled_runs: u64,
}

/// A request to the actor that owns the engine, with the channel its answer goes back on.
#[derive(Debug)]
pub(crate) enum Command {
    Jobs(oneshot::Sender<Vec<JobStatus>>),
    Job(JobName, oneshot::Sender<Result<JobStatus>>),
    PutJob(Box<Job>, oneshot::Sender<Result<()>>),
    DeleteJob(JobName, oneshot::Sender<Result<()>>),
    RunNow(JobName, oneshot::Sender<Result<()>>),
    KillTasks(JobName, oneshot::Sender<Result<()>>),
    Runs(JobName, oneshot::Sender<Result<Vec<RunRecord>>>),
    Info(oneshot::Sender<CronInfo>),
    Metrics(oneshot::Sender<CronMetrics>),
}

/// The interface to a running cron framework. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CronHandle {
    commands: mpsc::Sender<Command>,
}

impl CronHandle {
    /// A handle that sends to the actor listening on the other end of `commands`.
    pub(crate) fn new(commands: mpsc::Sender<Command>) -> Self {
        CronHandle { commands }
    }

    /// A handle with no framework behind it: every call answers [`CronError::Unavailable`].
    pub fn unavailable() -> Self {
        let (tx, _rx) = mpsc::channel(1);
        CronHandle { commands: tx }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| CronError::Unavailable("the cron framework is not running".into()))?;
        rx.await
            .map_err(|_| CronError::Unavailable("the cron framework stopped".into()))
    }

    /// Every job with its statistics, sorted by name.
    pub async fn jobs(&self) -> Result<Vec<JobStatus>> {
        self.ask(Command::Jobs).await
    }

    /// One job with its statistics.
    pub async fn job(&self, name: &JobName) -> Result<JobStatus> {
        self.ask(|tx| Command::Job(name.clone(), tx)).await?
    }

    /// Creates or replaces a job. The dependency graph is checked first: on error nothing is stored.
    pub async fn put_job(&self, job: Job) -> Result<()> {
        self.ask(|tx| Command::PutJob(Box::new(job), tx)).await?
    }

    /// Deletes a job (its run history too) and kills its running tasks. Its children are
    /// re-wired as Chronos does (they inherit its parents, or its schedule when it was their
    /// only parent and a scheduled job).
    pub async fn delete_job(&self, name: &JobName) -> Result<()> {
        self.ask(|tx| Command::DeleteJob(name.clone(), tx)).await?
    }

    /// Starts a manual run of the job now (it does not move the schedule).
    pub async fn run_now(&self, name: &JobName) -> Result<()> {
        self.ask(|tx| Command::RunNow(name.clone(), tx)).await?
    }

    /// Kills every pending or running run of the job (they are recorded as Killed).
    pub async fn kill_tasks(&self, name: &JobName) -> Result<()> {
        self.ask(|tx| Command::KillTasks(name.clone(), tx)).await?
    }

    /// The job's run history, oldest first (bounded; in-flight runs included).
    pub async fn runs(&self, name: &JobName) -> Result<Vec<RunRecord>> {
        self.ask(|tx| Command::Runs(name.clone(), tx)).await?
    }

    /// The framework id and the addresses of this framework and its master.
    pub async fn info(&self) -> Result<CronInfo> {
        self.ask(Command::Info).await
    }

    /// Counters and lateness samples for `/metrics`.
    pub async fn metrics(&self) -> Result<CronMetrics> {
        self.ask(Command::Metrics).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_handle_without_a_framework_answers_unavailable() {
        let handle = CronHandle::unavailable();
        let err = handle.jobs().await.unwrap_err();
        assert!(matches!(err, CronError::Unavailable(_)));
        assert_eq!(err.http_status(), 503);
    }

    #[test]
    fn run_states_and_triggers_are_screaming_in_json() {
        assert_eq!(serde_json::to_value(RunState::Succeeded).unwrap(), "SUCCEEDED");
        assert_eq!(serde_json::to_value(Trigger::CatchUp).unwrap(), "CATCH_UP");
    }
}
