//! The job definition: Chronos job JSON in and out, Chronos' defaults, validation.
//!
//! Input is read as leniently as Chronos read it (numbers and booleans may come as strings,
//! `null` means absent, unknown fields such as `async` are ignored; run counters sent by a client
//! are ignored), but every value that is present must make sense: a bad one is a [`JobError`]
//! naming the field. Output ([`Job::to_json`]) has the fields Chronos 3 emits, plus Agora's
//! `concurrencyPolicy` and, when set, `startingDeadlineSeconds` and `epsilon`.
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::schedule::{self, Schedule};

/// Chronos' default `cpus`.
pub const DEFAULT_CPUS: f64 = 0.1;
/// Chronos' default `mem` (MiB).
pub const DEFAULT_MEM: f64 = 128.0;
/// Chronos' default `disk` (MiB).
pub const DEFAULT_DISK: f64 = 256.0;
/// Chronos' default `retries`.
pub const DEFAULT_RETRIES: u32 = 2;

/// A rejected job definition: which field is wrong and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    /// The JSON field at fault (Chronos name, e.g. `schedule`, `parents`, `container.image`).
    pub field: String,
    /// A message that starts with the field name.
    pub message: String,
}

impl JobError {
    /// An error for `field`; the message is prefixed with the field name.
    pub fn new(field: impl Into<String>, message: impl fmt::Display) -> Self {
        let field = field.into();
        let message = format!("{field}: {message}");
        JobError { field, message }
    }

    /// The same error for a field nested in `outer`: field `image` becomes `container.image`,
    /// `[0]` becomes `constraints[0]`.
    pub fn within(self, outer: &str) -> JobError {
        let detail = self
            .message
            .strip_prefix(&format!("{}: ", self.field))
            .unwrap_or(&self.message);
        let field = if self.field.is_empty() {
            outer.to_owned()
        } else if self.field.starts_with('[') {
            format!("{outer}{}", self.field)
        } else {
            format!("{outer}.{}", self.field)
        };
        JobError::new(field, detail)
    }
}

/// A job name: one or more of `[A-Za-z0-9_.-]` (Chronos' `[\w.-]+`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct JobName(String);

impl JobName {
    /// Validates and wraps a name; the error names the field `name`.
    pub fn new(name: &str) -> Result<Self, JobError> {
        if name.is_empty() {
            return Err(JobError::new("name", "must not be empty"));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(JobError::new(
                "name",
                format_args!(
                    "{name:?} contains {c:?}; a job name may contain only letters, digits, '_', '.' and '-'"
                ),
            ));
        }
        Ok(JobName(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for JobName {
    type Err = JobError;
    fn from_str(s: &str) -> Result<Self, JobError> {
        JobName::new(s)
    }
}

impl AsRef<str> for JobName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for JobName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        JobName::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Which endpoint a job came in through: `/scheduler/iso8601` or `/scheduler/dependency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Has a `schedule`, no `parents`.
    Scheduled,
    /// Has `parents`, no `schedule`.
    Dependent,
}

/// What to do when a run is due while an earlier run of the same job is still going
/// (Kubernetes CronJob's `concurrencyPolicy`; JSON `"ALLOW"`, `"FORBID"`, `"REPLACE"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConcurrencyPolicy {
    /// Start the new run alongside.
    Allow,
    /// Skip the new run (recorded as skipped).
    Forbid,
    /// Kill the running one, then start the new run.
    Replace,
}

impl ConcurrencyPolicy {
    /// The JSON text: `ALLOW`, `FORBID` or `REPLACE`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConcurrencyPolicy::Allow => "ALLOW",
            ConcurrencyPolicy::Forbid => "FORBID",
            ConcurrencyPolicy::Replace => "REPLACE",
        }
    }
}

/// An environment variable for the job's task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Variable value.
    pub value: String,
}

/// A URI the agent fetches into the sandbox (Chronos `fetch` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchUri {
    /// The URI.
    pub uri: String,
    /// Mark the file executable.
    pub executable: bool,
    /// Use the fetcher cache.
    pub cache: bool,
    /// Extract archives (Chronos' default true).
    pub extract: bool,
    /// File name in the sandbox (empty: from the URI).
    pub output_file: String,
}

/// Docker's volume access mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeMode {
    /// Read-write.
    Rw,
    /// Read-only.
    Ro,
}

impl VolumeMode {
    /// `RW` or `RO`.
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeMode::Rw => "RW",
            VolumeMode::Ro => "RO",
        }
    }
}

/// A volume of a job's container (Chronos `{containerPath, hostPath, mode}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobVolume {
    /// Path inside the container.
    pub container_path: String,
    /// Path on the host (None: a volume in the sandbox).
    pub host_path: Option<String>,
    /// Access mode (None: Docker's default, read-write).
    pub mode: Option<VolumeMode>,
}

/// A `{key, value}` pair (Docker parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// The container's network mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    /// The host's network (Chronos' default).
    Host,
    /// Docker's bridge.
    Bridge,
    /// A user-defined network (`networkName`).
    User,
}

impl NetworkMode {
    /// `HOST`, `BRIDGE` or `USER`.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Host => "HOST",
            NetworkMode::Bridge => "BRIDGE",
            NetworkMode::User => "USER",
        }
    }
}

/// A job's container (Chronos `container`). Only `DOCKER` containers are accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobContainer {
    /// Containerizer kind: `DOCKER`.
    pub kind: String,
    /// Image name.
    pub image: String,
    /// Network mode (default `HOST`).
    pub network: NetworkMode,
    /// Network name for `USER` networks.
    pub network_name: Option<String>,
    /// Volumes.
    pub volumes: Vec<JobVolume>,
    /// Pull the image before every run.
    pub force_pull_image: bool,
    /// Extra `docker run` parameters.
    pub parameters: Vec<Parameter>,
    /// Chronos' `networkInfos`, kept as sent and returned unchanged (not interpreted).
    pub network_infos: Vec<Value>,
}

/// A placement constraint, Chronos form `["attribute", "OPERATOR", "value"]`.
#[derive(Debug, Clone)]
pub struct Constraint {
    /// Agent attribute name, or `hostname`.
    pub attribute: String,
    /// The operator.
    pub operator: ConstraintOperator,
    /// The value (a regular expression for LIKE/UNLIKE, matched against the whole attribute).
    pub value: String,
    /// `value` compiled, anchored at both ends (LIKE/UNLIKE).
    pattern: Option<regex::Regex>,
}

impl PartialEq for Constraint {
    fn eq(&self, other: &Self) -> bool {
        self.attribute == other.attribute && self.operator == other.operator && self.value == other.value
    }
}

impl Constraint {
    /// A checked constraint; LIKE/UNLIKE values must be regular expressions. Errors name
    /// `constraints`.
    pub fn new(attribute: &str, operator: ConstraintOperator, value: &str) -> Result<Self, JobError> {
        if attribute.is_empty() {
            return Err(JobError::new(
                "constraints",
                "the attribute name must not be empty",
            ));
        }
        let pattern = match operator {
            ConstraintOperator::Equals => None,
            ConstraintOperator::Like | ConstraintOperator::Unlike => {
                Some(regex::Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                    JobError::new(
                        "constraints",
                        format_args!(
                            "{} value {value:?} is not a regular expression: {e}",
                            operator.as_str()
                        ),
                    )
                })?)
            }
        };
        Ok(Constraint {
            attribute: attribute.to_owned(),
            operator,
            value: value.to_owned(),
            pattern,
        })
    }

    /// Whether an agent whose attribute has `actual` (None: the agent lacks the attribute)
    /// satisfies this constraint. A missing attribute satisfies only UNLIKE.
    pub fn matches(&self, actual: Option<&str>) -> bool {
        let Some(actual) = actual else {
            return self.operator == ConstraintOperator::Unlike;
        };
        match (self.operator, &self.pattern) {
            (ConstraintOperator::Equals, _) => actual == self.value,
            (ConstraintOperator::Like, Some(p)) => p.is_match(actual),
            (ConstraintOperator::Unlike, Some(p)) => !p.is_match(actual),
            (_, None) => false,
        }
    }
}

/// Chronos' constraint operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstraintOperator {
    /// The attribute equals the value.
    Equals,
    /// The attribute matches the regular expression.
    Like,
    /// The attribute does not match the regular expression.
    Unlike,
}

impl ConstraintOperator {
    /// `EQUALS`, `LIKE` or `UNLIKE`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConstraintOperator::Equals => "EQUALS",
            ConstraintOperator::Like => "LIKE",
            ConstraintOperator::Unlike => "UNLIKE",
        }
    }
}

/// A job (Chronos' job model plus Agora's `concurrencyPolicy` and `startingDeadlineSeconds`).
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The unique name.
    pub name: JobName,
    /// The command (a shell command line when `shell`, else the executable). May be empty only
    /// for a container job (the image's entrypoint runs).
    pub command: String,
    /// Run `command` with `sh -c`; when false, `command` is run with `arguments`.
    pub shell: bool,
    /// Arguments when `shell` is false.
    pub arguments: Vec<String>,
    /// The container, if any.
    pub container: Option<JobContainer>,
    /// CPUs per run (> 0).
    pub cpus: f64,
    /// Memory per run, MiB (> 0).
    pub mem: f64,
    /// Disk per run, MiB (> 0).
    pub disk: f64,
    /// Environment of the task.
    pub environment_variables: Vec<EnvVar>,
    /// Placement constraints.
    pub constraints: Vec<Constraint>,
    /// Owner e-mail addresses.
    pub owner: String,
    /// Owner's name.
    pub owner_name: String,
    /// Free text.
    pub description: String,
    /// Retries after a failed attempt.
    pub retries: u32,
    /// Not scheduled while true (manual runs still allowed).
    pub disabled: bool,
    /// Chronos' `concurrent`; always `concurrency_policy == Allow`.
    pub concurrent: bool,
    /// Chronos' `softError` (kept and shown; no effect on scheduling).
    pub soft_error: bool,
    /// Kill a run that has not finished after this many seconds (Chronos `maxCompletionTime`).
    pub max_completion_time_seconds: Option<u64>,
    /// The schedule expression of a scheduled job (None for a dependent job).
    pub schedule: Option<String>,
    /// IANA zone of the schedule (None: UTC, or the ISO 8601 start's own offset).
    pub schedule_time_zone: Option<String>,
    /// Parents of a dependent job (empty for scheduled jobs); no duplicates.
    pub parents: Vec<JobName>,
    /// What to do with a run due while another is going (JSON `concurrencyPolicy`; default from
    /// `concurrent`: true → ALLOW, false → FORBID).
    pub concurrency_policy: ConcurrencyPolicy,
    /// A run starting later than this many seconds after its instant is skipped.
    pub starting_deadline_seconds: Option<u64>,
    /// Chronos' `epsilon` (an ISO 8601 duration such as `PT30M`), as sent.
    pub epsilon: Option<String>,
    /// Chronos' `runAsUser` (empty: the agent's default).
    pub run_as_user: String,
    /// Chronos' `highPriority`.
    pub high_priority: bool,
    /// Chronos' deprecated `uris` to fetch into the sandbox.
    pub uris: Vec<String>,
    /// Chronos' `fetch`.
    pub fetch: Vec<FetchUri>,
    /// Chronos' `executor` (kept and shown; Agora always uses its own).
    pub executor: String,
    /// Chronos' `executorFlags` (kept and shown).
    pub executor_flags: String,
    /// Chronos' `taskInfoData` (kept and shown).
    pub task_info_data: String,
    /// Chronos' `dataProcessingJobType` (kept and shown).
    pub data_processing_job_type: bool,
}

/// Run counters of a job, shown in the Chronos JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStats {
    /// Successful runs.
    pub success_count: u64,
    /// Failed runs (after retries).
    pub error_count: u64,
    /// End of the last successful run.
    pub last_success: Option<jiff::Timestamp>,
    /// End of the last failed run.
    pub last_error: Option<jiff::Timestamp>,
    /// Failed runs since the last success.
    pub errors_since_last_success: u64,
}

impl Job {
    /// A job with Chronos' defaults, no schedule and no parents (for building jobs in code).
    pub fn new(name: JobName, command: impl Into<String>) -> Job {
        Job {
            name,
            command: command.into(),
            shell: true,
            arguments: Vec::new(),
            container: None,
            cpus: DEFAULT_CPUS,
            mem: DEFAULT_MEM,
            disk: DEFAULT_DISK,
            environment_variables: Vec::new(),
            constraints: Vec::new(),
            owner: String::new(),
            owner_name: String::new(),
            description: String::new(),
            retries: DEFAULT_RETRIES,
            disabled: false,
            concurrent: false,
            soft_error: false,
            max_completion_time_seconds: None,
            schedule: None,
            schedule_time_zone: None,
            parents: Vec::new(),
            concurrency_policy: ConcurrencyPolicy::Forbid,
            starting_deadline_seconds: None,
            epsilon: None,
            run_as_user: String::new(),
            high_priority: false,
            uris: Vec::new(),
            fetch: Vec::new(),
            executor: String::new(),
            executor_flags: String::new(),
            task_info_data: String::new(),
            data_processing_job_type: false,
        }
    }

    /// Parses Chronos job JSON, applies defaults and validates it for `kind`: a scheduled job
    /// needs a `schedule` (and optional `scheduleTimeZone`) and no `parents`; a dependent job needs
    /// `parents` and no `schedule`. Whether the parents exist is the graph's check.
    pub fn from_json(body: &[u8], kind: JobKind) -> Result<Job, JobError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| JobError::new("body", format_args!("not valid JSON: {e}")))?;
        Job::from_value(&value, kind)
    }

    /// [`Job::from_json`] on parsed JSON.
    pub fn from_value(value: &Value, kind: JobKind) -> Result<Job, JobError> {
        let obj = value
            .as_object()
            .ok_or_else(|| JobError::new("body", "must be a JSON object"))?;
        let f = Fields(obj);
        let name = JobName::new(
            &f.string("name")?
                .ok_or_else(|| JobError::new("name", "is required"))?,
        )?;
        let mut job = Job::new(name, f.string("command")?.unwrap_or_default());
        job.shell = f.boolean("shell")?.unwrap_or(true);
        job.arguments = f.strings("arguments")?;
        job.container = f
            .get("container")
            .map(container)
            .transpose()
            .map_err(|e| e.within("container"))?;
        if job.command.trim().is_empty() && job.container.is_none() {
            return Err(JobError::new(
                "command",
                "is required (it may be empty only for a container job)",
            ));
        }
        job.cpus = f.resource("cpus", DEFAULT_CPUS)?;
        job.mem = f.resource("mem", DEFAULT_MEM)?;
        job.disk = f.resource("disk", DEFAULT_DISK)?;
        job.environment_variables = f.env("environmentVariables")?;
        job.constraints = f.constraints("constraints")?;
        job.owner = f.string("owner")?.unwrap_or_default();
        job.owner_name = f.string("ownerName")?.unwrap_or_default();
        job.description = f.string("description")?.unwrap_or_default();
        job.retries = match f.integer("retries")? {
            None => DEFAULT_RETRIES,
            Some(n) => {
                u32::try_from(n).map_err(|_| JobError::new("retries", "must be between 0 and 4294967295"))?
            }
        };
        job.disabled = f.boolean("disabled")?.unwrap_or(false);
        job.soft_error = f.boolean("softError")?.unwrap_or(false);
        job.max_completion_time_seconds = f.integer("maxCompletionTime")?.filter(|s| *s > 0);
        job.starting_deadline_seconds = f.integer("startingDeadlineSeconds")?;
        job.run_as_user = f.string("runAsUser")?.unwrap_or_default();
        job.high_priority = f.boolean("highPriority")?.unwrap_or(false);
        job.uris = f.strings("uris")?;
        job.fetch = f.fetch("fetch")?;
        job.executor = f.string("executor")?.unwrap_or_default();
        job.executor_flags = f.string("executorFlags")?.unwrap_or_default();
        job.task_info_data = f.string("taskInfoData")?.unwrap_or_default();
        job.data_processing_job_type = f.boolean("dataProcessingJobType")?.unwrap_or(false);
        job.epsilon = f.string("epsilon")?.filter(|s| !s.is_empty());
        if let Some(epsilon) = &job.epsilon {
            epsilon_span(epsilon)?;
        }

        let concurrent = f.boolean("concurrent")?;
        let policy = match f.string("concurrencyPolicy")?.filter(|s| !s.is_empty()) {
            None => None,
            Some(p) => Some(match p.to_ascii_uppercase().as_str() {
                "ALLOW" => ConcurrencyPolicy::Allow,
                "FORBID" => ConcurrencyPolicy::Forbid,
                "REPLACE" => ConcurrencyPolicy::Replace,
                _ => {
                    return Err(JobError::new(
                        "concurrencyPolicy",
                        format_args!("{p:?} is not one of ALLOW, FORBID, REPLACE"),
                    ));
                }
            }),
        };
        job.concurrency_policy = match (policy, concurrent) {
            (Some(p), Some(c)) if (p == ConcurrencyPolicy::Allow) != c => {
                return Err(JobError::new(
                    "concurrencyPolicy",
                    format_args!("{} contradicts \"concurrent\": {c}", p.as_str()),
                ));
            }
            (Some(p), _) => p,
            (None, Some(true)) => ConcurrencyPolicy::Allow,
            (None, _) => ConcurrencyPolicy::Forbid,
        };
        job.concurrent = job.concurrency_policy == ConcurrencyPolicy::Allow;

        let schedule = f.string("schedule")?.filter(|s| !s.trim().is_empty());
        let parents = f.parents()?;
        match kind {
            JobKind::Scheduled => {
                if !parents.is_empty() {
                    return Err(JobError::new(
                        "parents",
                        "a scheduled job must not have parents (post a dependent job to /scheduler/dependency)",
                    ));
                }
                let Some(schedule) = schedule else {
                    return Err(JobError::new(
                        "schedule",
                        "is required for a scheduled job (R[n]/[start]/period or a cron expression)",
                    ));
                };
                let tz = f.string("scheduleTimeZone")?.filter(|s| !s.trim().is_empty());
                Schedule::parse(&schedule, tz.as_deref(), jiff::Timestamp::UNIX_EPOCH)?;
                job.schedule = Some(schedule);
                job.schedule_time_zone = tz;
            }
            JobKind::Dependent => {
                if schedule.is_some() {
                    return Err(JobError::new(
                        "schedule",
                        "a dependent job must not have a schedule (post a scheduled job to /scheduler/iso8601)",
                    ));
                }
                if parents.is_empty() {
                    return Err(JobError::new(
                        "parents",
                        "a dependent job needs at least one parent",
                    ));
                }
                if parents.contains(&job.name) {
                    return Err(JobError::new(
                        "parents",
                        format_args!("{} cannot be its own parent", job.name),
                    ));
                }
                job.parents = parents;
            }
        }
        Ok(job)
    }

    /// Which kind of job this is.
    pub fn kind(&self) -> JobKind {
        if self.parents.is_empty() {
            JobKind::Scheduled
        } else {
            JobKind::Dependent
        }
    }

    /// The parsed schedule of a scheduled job (None for a dependent job); `now` stands for an
    /// empty ISO 8601 start (see [`Job::pin_schedule_start`]).
    pub fn parsed_schedule(&self, now: jiff::Timestamp) -> Option<Result<Schedule, JobError>> {
        let expr = self.schedule.as_deref()?;
        Some(Schedule::parse(expr, self.schedule_time_zone.as_deref(), now))
    }

    /// Writes an empty ISO 8601 start (`R5//PT1H`) out as `now`, so that the stored job keeps
    /// its instants: call it once when the job is accepted.
    pub fn pin_schedule_start(&mut self, now: jiff::Timestamp) -> Result<(), JobError> {
        if let Some(expr) = &self.schedule {
            self.schedule = Some(schedule::pin_start(
                expr,
                self.schedule_time_zone.as_deref(),
                now,
            )?);
        }
        Ok(())
    }

    /// `epsilon` as a span (None when unset).
    pub fn epsilon_span(&self) -> Option<jiff::Span> {
        self.epsilon.as_deref().and_then(|e| epsilon_span(e).ok())
    }

    /// The Chronos job JSON with `stats` (`lastSuccess`/`lastError` are `""` when never).
    pub fn to_json(&self, stats: &JobStats) -> Value {
        let time = |t: &Option<jiff::Timestamp>| t.map(|t| format!("{t:.3}")).unwrap_or_default();
        let mut out = Map::new();
        let mut put = |k: &str, v: Value| {
            out.insert(k.to_owned(), v);
        };
        put("name", json!(self.name));
        put("command", json!(self.command));
        put("shell", json!(self.shell));
        put("executor", json!(self.executor));
        put("executorFlags", json!(self.executor_flags));
        put("taskInfoData", json!(self.task_info_data));
        put("retries", json!(self.retries));
        put("owner", json!(self.owner));
        put("ownerName", json!(self.owner_name));
        put("description", json!(self.description));
        put("successCount", json!(stats.success_count));
        put("errorCount", json!(stats.error_count));
        put("lastSuccess", json!(time(&stats.last_success)));
        put("lastError", json!(time(&stats.last_error)));
        put("cpus", json!(self.cpus));
        put("disk", json!(self.disk));
        put("mem", json!(self.mem));
        put("disabled", json!(self.disabled));
        put("softError", json!(self.soft_error));
        put("dataProcessingJobType", json!(self.data_processing_job_type));
        put("errorsSinceLastSuccess", json!(stats.errors_since_last_success));
        let fetch: Vec<Value> = self
            .fetch
            .iter()
            .map(|f| {
                let mut o = json!({
                    "uri": f.uri, "executable": f.executable, "cache": f.cache, "extract": f.extract,
                });
                if !f.output_file.is_empty() {
                    o["output_file"] = json!(f.output_file);
                }
                o
            })
            .collect();
        put("fetch", Value::Array(fetch));
        put("uris", json!(self.uris));
        put("environmentVariables", json!(self.environment_variables));
        put("arguments", json!(self.arguments));
        put("highPriority", json!(self.high_priority));
        put("runAsUser", json!(self.run_as_user));
        put("concurrent", json!(self.concurrent));
        put(
            "maxCompletionTime",
            json!(self.max_completion_time_seconds.unwrap_or(0)),
        );
        if let Some(c) = &self.container {
            put("container", container_json(c));
        }
        let constraints: Vec<Value> = self
            .constraints
            .iter()
            .map(|c| json!([c.attribute, c.operator.as_str(), c.value]))
            .collect();
        put("constraints", Value::Array(constraints));
        match &self.schedule {
            Some(schedule) if self.parents.is_empty() => {
                put("schedule", json!(schedule));
                put(
                    "scheduleTimeZone",
                    json!(self.schedule_time_zone.clone().unwrap_or_default()),
                );
            }
            _ => put("parents", json!(self.parents)),
        }
        put("concurrencyPolicy", json!(self.concurrency_policy.as_str()));
        if let Some(s) = self.starting_deadline_seconds {
            put("startingDeadlineSeconds", json!(s));
        }
        if let Some(e) = &self.epsilon {
            put("epsilon", json!(e));
        }
        Value::Object(out)
    }
}

fn epsilon_span(text: &str) -> Result<jiff::Span, JobError> {
    let span: jiff::Span = text
        .strip_prefix('P')
        .and_then(|_| text.parse().ok())
        .ok_or_else(|| {
            JobError::new(
                "epsilon",
                format_args!("{text:?} is not an ISO 8601 duration like PT30M"),
            )
        })?;
    if span.is_negative() {
        return Err(JobError::new("epsilon", "must not be negative"));
    }
    Ok(span)
}

fn container_json(c: &JobContainer) -> Value {
    let volumes: Vec<Value> = c
        .volumes
        .iter()
        .map(|v| {
            let mut o = Map::new();
            if let Some(h) = &v.host_path {
                o.insert("hostPath".into(), json!(h));
            }
            o.insert("containerPath".into(), json!(v.container_path));
            if let Some(m) = v.mode {
                o.insert("mode".into(), json!(m.as_str()));
            }
            Value::Object(o)
        })
        .collect();
    let mut o = json!({
        "type": c.kind,
        "image": c.image,
        "network": c.network.as_str(),
        "networkInfos": c.network_infos,
        "volumes": volumes,
        "forcePullImage": c.force_pull_image,
        "parameters": c.parameters.iter().map(|p| json!({"key": p.key, "value": p.value})).collect::<Vec<_>>(),
    });
    if let Some(n) = &c.network_name {
        o["networkName"] = json!(n);
    }
    o
}

fn container(value: &Value) -> Result<JobContainer, JobError> {
    let obj = value
        .as_object()
        .ok_or_else(|| JobError::new("", "must be an object"))?;
    let f = Fields(obj);
    let field = |k: &str| k.to_owned();
    let kind = f
        .string("type")?
        .unwrap_or_else(|| "DOCKER".into())
        .to_ascii_uppercase();
    if kind != "DOCKER" {
        return Err(JobError::new(
            field("type"),
            format_args!("{kind:?} is not supported; use DOCKER"),
        ));
    }
    let image = f.string("image")?.unwrap_or_default();
    if image.trim().is_empty() {
        return Err(JobError::new(field("image"), "is required"));
    }
    let network = match f.string("network")?.map(|n| n.to_ascii_uppercase()).as_deref() {
        None | Some("") | Some("HOST") => NetworkMode::Host,
        Some("BRIDGE") => NetworkMode::Bridge,
        Some("USER") => NetworkMode::User,
        Some(other) => {
            return Err(JobError::new(
                field("network"),
                format_args!("{other:?} is not one of HOST, BRIDGE, USER"),
            ));
        }
    };
    let network_name = f.string("networkName")?.filter(|n| !n.is_empty());
    let mut volumes = Vec::new();
    for (i, v) in f.array("volumes")?.iter().enumerate() {
        let within = |e: JobError| e.within(&format!("volumes[{i}]"));
        let at = |k: &str| format!("volumes[{i}].{k}");
        let vo = v
            .as_object()
            .ok_or_else(|| JobError::new(format!("volumes[{i}]"), "must be an object"))?;
        let vf = Fields(vo);
        let container_path = vf
            .string("containerPath")
            .map_err(within)?
            .filter(|p| !p.is_empty());
        let container_path =
            container_path.ok_or_else(|| JobError::new(at("containerPath"), "is required"))?;
        let host_path = vf.string("hostPath").map_err(within)?.filter(|p| !p.is_empty());
        let mode = match vf
            .string("mode")
            .map_err(within)?
            .map(|m| m.to_ascii_uppercase())
            .as_deref()
        {
            None | Some("") => None,
            Some("RW") => Some(VolumeMode::Rw),
            Some("RO") => Some(VolumeMode::Ro),
            Some(other) => {
                return Err(JobError::new(
                    at("mode"),
                    format_args!("{other:?} is not RW or RO"),
                ));
            }
        };
        volumes.push(JobVolume {
            container_path,
            host_path,
            mode,
        });
    }
    let mut parameters = Vec::new();
    for (i, p) in f.array("parameters")?.iter().enumerate() {
        let (key, value) =
            key_value(p, "key", "value").map_err(|m| JobError::new(format!("parameters[{i}]"), m))?;
        parameters.push(Parameter { key, value });
    }
    Ok(JobContainer {
        kind,
        image,
        network,
        network_name,
        volumes,
        force_pull_image: f.boolean("forcePullImage")?.unwrap_or(false),
        parameters,
        network_infos: f.array("networkInfos")?.to_vec(),
    })
}

/// `{k1: text, k2: text}` where k1 is required and non-empty; values may be numbers or booleans.
fn key_value(v: &Value, k1: &str, k2: &str) -> Result<(String, String), String> {
    let o = v
        .as_object()
        .ok_or_else(|| format!("must be an object with {k1:?} and {k2:?}"))?;
    let text = |k: &str| match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => scalar_text(v)
            .map(Some)
            .ok_or_else(|| format!("{k:?} must be a string")),
    };
    let key = text(k1)?
        .filter(|k| !k.is_empty())
        .ok_or_else(|| format!("{k1:?} is required"))?;
    Ok((key, text(k2)?.unwrap_or_default()))
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Typed access to a JSON object's fields; `null` counts as absent, errors name the field.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }

    fn string(&self, k: &str) -> Result<Option<String>, JobError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(JobError::new(k, "must be a string")),
        }
    }

    fn boolean(&self, k: &str) -> Result<Option<bool>, JobError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(_) => Err(JobError::new(k, "must be true or false")),
        }
    }

    fn number(&self, k: &str) -> Result<Option<f64>, JobError> {
        let n = match self.get(k) {
            None => return Ok(None),
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
            Some(_) => None,
        };
        match n {
            Some(n) if n.is_finite() => Ok(Some(n)),
            _ => Err(JobError::new(k, "must be a number")),
        }
    }

    /// A non-negative whole number.
    fn integer(&self, k: &str) -> Result<Option<u64>, JobError> {
        let Some(n) = self.number(k)? else { return Ok(None) };
        if n < 0.0 {
            return Err(JobError::new(k, format_args!("must not be negative (got {n})")));
        }
        if n.fract() != 0.0 || n > 9.0e15 {
            return Err(JobError::new(k, format_args!("must be a whole number (got {n})")));
        }
        Ok(Some(n as u64))
    }

    /// cpus/mem/disk: must not be negative; absent or 0 means the default (as in Chronos).
    fn resource(&self, k: &str, default: f64) -> Result<f64, JobError> {
        match self.number(k)? {
            None => Ok(default),
            Some(n) if n < 0.0 => Err(JobError::new(k, format_args!("must not be negative (got {n})"))),
            Some(n) if n > 0.0 => Ok(n),
            Some(_) => Ok(default),
        }
    }

    fn array(&self, k: &str) -> Result<&[Value], JobError> {
        match self.get(k) {
            None => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(JobError::new(k, "must be an array")),
        }
    }

    fn strings(&self, k: &str) -> Result<Vec<String>, JobError> {
        self.array(k)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                scalar_text(v).ok_or_else(|| JobError::new(format!("{k}[{i}]"), "must be a string"))
            })
            .collect()
    }

    fn env(&self, k: &str) -> Result<Vec<EnvVar>, JobError> {
        self.array(k)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let (name, value) =
                    key_value(v, "name", "value").map_err(|m| JobError::new(format!("{k}[{i}]"), m))?;
                Ok(EnvVar { name, value })
            })
            .collect()
    }

    fn fetch(&self, k: &str) -> Result<Vec<FetchUri>, JobError> {
        let mut out = Vec::new();
        for (i, v) in self.array(k)?.iter().enumerate() {
            let at = format!("{k}[{i}]");
            let o = v
                .as_object()
                .ok_or_else(|| JobError::new(at.clone(), "must be an object"))?;
            let f = Fields(o);
            let wrap = |e: JobError| e.within(&at);
            let uri = f.string("uri").map_err(wrap)?.filter(|u| !u.is_empty());
            let uri = uri.ok_or_else(|| JobError::new(format!("{at}.uri"), "is required"))?;
            out.push(FetchUri {
                uri,
                executable: f.boolean("executable").map_err(wrap)?.unwrap_or(false),
                cache: f.boolean("cache").map_err(wrap)?.unwrap_or(false),
                extract: f.boolean("extract").map_err(wrap)?.unwrap_or(true),
                output_file: f.string("output_file").map_err(wrap)?.unwrap_or_default(),
            });
        }
        Ok(out)
    }

    fn constraints(&self, k: &str) -> Result<Vec<Constraint>, JobError> {
        let mut out = Vec::new();
        for (i, c) in self.array(k)?.iter().enumerate() {
            let bad = |m: &str| JobError::new(k, format_args!("[{i}] {m}"));
            let parts = c
                .as_array()
                .ok_or_else(|| bad("must be [attribute, operator, value]"))?;
            let [attribute, operator, value] = parts.as_slice() else {
                return Err(bad("must be [attribute, operator, value]"));
            };
            let (Some(attribute), Some(operator), Some(value)) =
                (scalar_text(attribute), operator.as_str(), scalar_text(value))
            else {
                return Err(bad("must be three strings [attribute, operator, value]"));
            };
            let operator = match operator {
                "EQUALS" => ConstraintOperator::Equals,
                "LIKE" => ConstraintOperator::Like,
                "UNLIKE" => ConstraintOperator::Unlike,
                other => {
                    return Err(bad(&format!(
                        "operator {other:?} is not one of EQUALS, LIKE, UNLIKE"
                    )));
                }
            };
            out.push(Constraint::new(&attribute, operator, &value).map_err(|e| {
                JobError::new(
                    k,
                    format_args!("[{i}] {}", e.message.trim_start_matches("constraints: ")),
                )
            })?);
        }
        Ok(out)
    }

    fn parents(&self) -> Result<Vec<JobName>, JobError> {
        let mut out: Vec<JobName> = Vec::new();
        for (i, p) in self.array("parents")?.iter().enumerate() {
            let text = p
                .as_str()
                .ok_or_else(|| JobError::new("parents", format_args!("[{i}] must be a job name")))?;
            let name = JobName::new(text).map_err(|e| {
                JobError::new(
                    "parents",
                    format_args!("[{i}] {}", e.message.trim_start_matches("name: ")),
                )
            })?;
            if !out.contains(&name) {
                out.push(name);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn scheduled(extra: Value) -> Value {
        let mut body = json!({
            "name": "nightly-report",
            "command": "echo hi",
            "owner": "ops@example.com",
            "schedule": "R/2026-03-01T02:00:00Z/P1D",
        });
        merge(&mut body, extra);
        body
    }

    fn dependent(extra: Value) -> Value {
        let mut body = json!({ "name": "load", "command": "echo load", "parents": ["extract"] });
        merge(&mut body, extra);
        body
    }

    fn merge(body: &mut Value, extra: Value) {
        if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
            for (k, v) in e {
                if v == json!("<remove>") {
                    b.remove(&k);
                } else {
                    b.insert(k, v);
                }
            }
        }
    }

    fn parse(body: &Value, kind: JobKind) -> Result<Job, JobError> {
        Job::from_json(body.to_string().as_bytes(), kind)
    }

    fn field_of(body: Value, kind: JobKind) -> String {
        let e = parse(&body, kind).unwrap_err();
        assert!(
            e.message.starts_with(&format!("{}: ", e.field)),
            "message must name the field: {e:?}"
        );
        e.field
    }

    #[test]
    fn minimal_scheduled_job_gets_chronos_defaults() {
        let job = parse(&scheduled(json!({})), JobKind::Scheduled).unwrap();
        assert_eq!(job.name.as_str(), "nightly-report");
        assert_eq!((job.cpus, job.mem, job.disk), (0.1, 128.0, 256.0));
        assert_eq!(job.retries, 2);
        assert!(job.shell);
        assert!(!job.disabled && !job.concurrent && !job.soft_error);
        assert_eq!(job.concurrency_policy, ConcurrencyPolicy::Forbid);
        assert_eq!(job.schedule.as_deref(), Some("R/2026-03-01T02:00:00Z/P1D"));
        assert_eq!(job.schedule_time_zone, None);
        assert!(job.parents.is_empty());
        assert_eq!(job.kind(), JobKind::Scheduled);
        assert_eq!(job.max_completion_time_seconds, None);
    }

    #[test]
    fn minimal_dependent_job_parses() {
        let job = parse(&dependent(json!({})), JobKind::Dependent).unwrap();
        assert_eq!(job.parents, vec![JobName::new("extract").unwrap()]);
        assert_eq!(job.schedule, None);
        assert_eq!(job.kind(), JobKind::Dependent);
    }

    #[test]
    fn every_field_is_read() {
        let body = scheduled(json!({
            "shell": false, "arguments": ["-v", "x"], "cpus": 0.5, "mem": 64, "disk": 10,
            "environmentVariables": [{"name": "A", "value": "1"}],
            "constraints": [["rack", "EQUALS", "a"], ["hostname", "LIKE", "node-[0-9]+"]],
            "ownerName": "Ops", "description": "d", "retries": 0, "disabled": true, "softError": true,
            "maxCompletionTime": 600, "scheduleTimeZone": "Asia/Tokyo", "startingDeadlineSeconds": 30,
            "epsilon": "PT30M", "runAsUser": "nobody", "highPriority": true, "uris": ["http://x/y"],
            "fetch": [{"uri": "http://x/z", "executable": true}], "executor": "", "async": false,
            "concurrencyPolicy": "REPLACE",
        }));
        let job = parse(&body, JobKind::Scheduled).unwrap();
        assert!(!job.shell);
        assert_eq!(job.arguments, ["-v", "x"]);
        assert_eq!((job.cpus, job.mem, job.disk), (0.5, 64.0, 10.0));
        assert_eq!(
            job.environment_variables,
            [EnvVar {
                name: "A".into(),
                value: "1".into()
            }]
        );
        assert_eq!(job.constraints.len(), 2);
        assert_eq!(job.constraints[1].operator, ConstraintOperator::Like);
        assert_eq!(job.retries, 0);
        assert!(job.disabled && job.soft_error && job.high_priority);
        assert_eq!(job.max_completion_time_seconds, Some(600));
        assert_eq!(job.schedule_time_zone.as_deref(), Some("Asia/Tokyo"));
        assert_eq!(job.starting_deadline_seconds, Some(30));
        assert_eq!(job.epsilon_span().map(|s| s.get_minutes()), Some(30));
        assert_eq!(job.run_as_user, "nobody");
        assert_eq!(job.fetch[0].uri, "http://x/z");
        assert!(job.fetch[0].executable && job.fetch[0].extract);
        assert_eq!(job.concurrency_policy, ConcurrencyPolicy::Replace);
        assert!(!job.concurrent);
    }

    #[test]
    fn numbers_and_booleans_sent_as_strings_are_accepted_as_chronos_did() {
        let job = parse(
            &scheduled(json!({"cpus": "0.25", "retries": "3", "disabled": "true"})),
            JobKind::Scheduled,
        )
        .unwrap();
        assert_eq!((job.cpus, job.retries, job.disabled), (0.25, 3, true));
    }

    #[test]
    fn null_fields_take_their_defaults() {
        let job = parse(
            &scheduled(json!({"cpus": null, "retries": null, "container": null})),
            JobKind::Scheduled,
        )
        .unwrap();
        assert_eq!((job.cpus, job.retries, job.container.is_none()), (0.1, 2, true));
    }

    #[test]
    fn zero_resources_take_the_defaults_as_in_chronos() {
        let job = parse(
            &scheduled(json!({"cpus": 0, "mem": 0, "disk": 0})),
            JobKind::Scheduled,
        )
        .unwrap();
        assert_eq!((job.cpus, job.mem, job.disk), (0.1, 128.0, 256.0));
    }

    #[test]
    fn counters_sent_by_a_client_are_ignored() {
        let body = scheduled(json!({"successCount": 5, "lastSuccess": "2026-01-01T00:00:00.000Z"}));
        let job = parse(&body, JobKind::Scheduled).unwrap();
        assert_eq!(job.to_json(&JobStats::default())["successCount"], 0);
    }

    #[test]
    fn cron_schedule_is_accepted() {
        let job = parse(
            &scheduled(json!({"schedule": "*/5 * * * *", "scheduleTimeZone": "Europe/Berlin"})),
            JobKind::Scheduled,
        )
        .unwrap();
        assert_eq!(job.schedule.as_deref(), Some("*/5 * * * *"));
    }

    #[test]
    fn concurrent_true_means_allow() {
        let job = parse(&scheduled(json!({"concurrent": true})), JobKind::Scheduled).unwrap();
        assert_eq!(job.concurrency_policy, ConcurrencyPolicy::Allow);
        let job = parse(
            &scheduled(json!({"concurrencyPolicy": "allow"})),
            JobKind::Scheduled,
        )
        .unwrap();
        assert!(job.concurrent);
    }

    #[test]
    fn container_job_may_have_no_command() {
        let body = scheduled(json!({
            "command": "<remove>",
            "container": {"type": "docker", "image": "busybox", "network": "BRIDGE", "forcePullImage": "true",
                          "volumes": [{"containerPath": "/data", "hostPath": "/srv", "mode": "ro"}],
                          "parameters": [{"key": "label", "value": "x"}]},
        }));
        let job = parse(&body, JobKind::Scheduled).unwrap();
        let c = job.container.unwrap();
        assert_eq!(
            (c.kind.as_str(), c.image.as_str(), c.network),
            ("DOCKER", "busybox", NetworkMode::Bridge)
        );
        assert!(c.force_pull_image);
        assert_eq!(c.volumes[0].mode, Some(VolumeMode::Ro));
        assert_eq!(c.parameters[0].key, "label");
    }

    #[test]
    fn constraint_operators_match_as_chronos_defines_them() {
        let like = Constraint::new("rack", ConstraintOperator::Like, "rack-[1-3]").unwrap();
        assert!(like.matches(Some("rack-2")));
        assert!(!like.matches(Some("rack-22")), "LIKE matches the whole value");
        assert!(!like.matches(None));
        let unlike = Constraint::new("rack", ConstraintOperator::Unlike, "rack-[1-3]").unwrap();
        assert!(unlike.matches(Some("rack-4")) && unlike.matches(None) && !unlike.matches(Some("rack-1")));
        let equals = Constraint::new("hostname", ConstraintOperator::Equals, "a").unwrap();
        assert!(equals.matches(Some("a")) && !equals.matches(Some("b")));
    }

    // ---- bad input: each names its field ----

    #[test]
    fn bad_names_are_rejected() {
        for name in [json!(""), json!("has space"), json!("a/b"), json!("ü"), json!(7)] {
            assert_eq!(
                field_of(scheduled(json!({ "name": name })), JobKind::Scheduled),
                "name",
                "{name}"
            );
        }
        assert_eq!(
            field_of(scheduled(json!({"name": "<remove>"})), JobKind::Scheduled),
            "name"
        );
        assert!(JobName::new("a.b_c-D9").is_ok());
    }

    #[test]
    fn body_that_is_not_a_json_object_is_rejected() {
        assert_eq!(
            Job::from_json(b"{", JobKind::Scheduled).unwrap_err().field,
            "body"
        );
        assert_eq!(
            Job::from_json(b"[]", JobKind::Scheduled).unwrap_err().field,
            "body"
        );
    }

    #[test]
    fn missing_or_blank_command_is_rejected() {
        assert_eq!(
            field_of(scheduled(json!({"command": "<remove>"})), JobKind::Scheduled),
            "command"
        );
        assert_eq!(
            field_of(scheduled(json!({"command": "  "})), JobKind::Scheduled),
            "command"
        );
    }

    #[test]
    fn negative_resources_are_rejected() {
        for field in ["cpus", "mem", "disk"] {
            assert_eq!(
                field_of(scheduled(json!({ field: -1 })), JobKind::Scheduled),
                field
            );
            assert_eq!(
                field_of(scheduled(json!({ field: "lots" })), JobKind::Scheduled),
                field
            );
        }
    }

    #[test]
    fn bad_retries_are_rejected() {
        for retries in [json!(-1), json!(1.5), json!("many"), json!(1e12)] {
            assert_eq!(
                field_of(scheduled(json!({ "retries": retries })), JobKind::Scheduled),
                "retries"
            );
        }
    }

    #[test]
    fn bad_durations_are_rejected() {
        assert_eq!(
            field_of(scheduled(json!({"maxCompletionTime": -5})), JobKind::Scheduled),
            "maxCompletionTime"
        );
        assert_eq!(
            field_of(
                scheduled(json!({"startingDeadlineSeconds": -1})),
                JobKind::Scheduled
            ),
            "startingDeadlineSeconds"
        );
        for epsilon in ["30m", "PT", "-PT1M", "soon"] {
            assert_eq!(
                field_of(scheduled(json!({ "epsilon": epsilon })), JobKind::Scheduled),
                "epsilon"
            );
        }
    }

    #[test]
    fn unparseable_schedule_is_rejected() {
        assert_eq!(
            field_of(scheduled(json!({"schedule": "every hour"})), JobKind::Scheduled),
            "schedule"
        );
        assert_eq!(
            field_of(scheduled(json!({"schedule": 5})), JobKind::Scheduled),
            "schedule"
        );
    }

    #[test]
    fn unknown_time_zone_is_rejected() {
        assert_eq!(
            field_of(
                scheduled(json!({"scheduleTimeZone": "Mars/Base"})),
                JobKind::Scheduled
            ),
            "scheduleTimeZone"
        );
    }

    #[test]
    fn scheduled_job_with_parents_is_rejected() {
        assert_eq!(
            field_of(scheduled(json!({"parents": ["a"]})), JobKind::Scheduled),
            "parents"
        );
    }

    #[test]
    fn scheduled_job_without_schedule_is_rejected() {
        assert_eq!(
            field_of(scheduled(json!({"schedule": "<remove>"})), JobKind::Scheduled),
            "schedule"
        );
        assert_eq!(
            field_of(scheduled(json!({"schedule": ""})), JobKind::Scheduled),
            "schedule"
        );
    }

    #[test]
    fn dependent_job_with_schedule_is_rejected() {
        assert_eq!(
            field_of(dependent(json!({"schedule": "R//PT1H"})), JobKind::Dependent),
            "schedule"
        );
    }

    #[test]
    fn dependent_job_without_parents_is_rejected() {
        assert_eq!(
            field_of(dependent(json!({"parents": []})), JobKind::Dependent),
            "parents"
        );
        assert_eq!(
            field_of(dependent(json!({"parents": "<remove>"})), JobKind::Dependent),
            "parents"
        );
    }

    #[test]
    fn self_parent_and_bad_parent_names_are_rejected() {
        assert_eq!(
            field_of(dependent(json!({"parents": ["load"]})), JobKind::Dependent),
            "parents"
        );
        assert_eq!(
            field_of(dependent(json!({"parents": ["no such"]})), JobKind::Dependent),
            "parents"
        );
        assert_eq!(
            field_of(dependent(json!({"parents": [3]})), JobKind::Dependent),
            "parents"
        );
        assert_eq!(
            field_of(dependent(json!({"parents": "extract"})), JobKind::Dependent),
            "parents"
        );
    }

    #[test]
    fn duplicate_parents_are_kept_once() {
        let job = parse(
            &dependent(json!({"parents": ["a", "b", "a"]})),
            JobKind::Dependent,
        )
        .unwrap();
        assert_eq!(job.parents.len(), 2);
    }

    #[test]
    fn bad_constraints_are_rejected() {
        for c in [
            json!([["rack", "NEAR", "a"]]),
            json!([["rack", "EQUALS"]]),
            json!(["rack"]),
            json!([["rack", "LIKE", "("]]),
            json!([["", "EQUALS", "a"]]),
            json!("rack:a"),
        ] {
            assert_eq!(
                field_of(scheduled(json!({ "constraints": c })), JobKind::Scheduled),
                "constraints",
                "{c}"
            );
        }
    }

    #[test]
    fn bad_concurrency_policy_is_rejected() {
        assert_eq!(
            field_of(
                scheduled(json!({"concurrencyPolicy": "SOMETIMES"})),
                JobKind::Scheduled
            ),
            "concurrencyPolicy"
        );
        assert_eq!(
            field_of(
                scheduled(json!({"concurrencyPolicy": "FORBID", "concurrent": true})),
                JobKind::Scheduled
            ),
            "concurrencyPolicy"
        );
    }

    #[test]
    fn bad_containers_are_rejected_naming_the_nested_field() {
        let cases = [
            (json!({"type": "DOCKER"}), "container.image"),
            (json!({"type": "MESOS", "image": "x"}), "container.type"),
            (json!({"image": "x", "network": "WIFI"}), "container.network"),
            (
                json!({"image": "x", "volumes": [{"hostPath": "/a"}]}),
                "container.volumes[0].containerPath",
            ),
            (
                json!({"image": "x", "volumes": [{"containerPath": "/a", "mode": "RX"}]}),
                "container.volumes[0].mode",
            ),
            (
                json!({"image": "x", "forcePullImage": 3}),
                "container.forcePullImage",
            ),
            (
                json!({"image": "x", "parameters": [{"value": "v"}]}),
                "container.parameters[0]",
            ),
            (json!("busybox"), "container"),
        ];
        for (container, field) in cases {
            assert_eq!(
                field_of(scheduled(json!({ "container": container })), JobKind::Scheduled),
                field
            );
        }
    }

    #[test]
    fn bad_environment_variables_are_rejected() {
        assert_eq!(
            field_of(
                scheduled(json!({"environmentVariables": [{"value": "x"}]})),
                JobKind::Scheduled
            ),
            "environmentVariables[0]"
        );
        assert_eq!(
            field_of(
                scheduled(json!({"environmentVariables": {"A": "1"}})),
                JobKind::Scheduled
            ),
            "environmentVariables"
        );
    }

    // ---- output ----

    #[test]
    fn to_json_has_exactly_chronos_fields_plus_concurrency_policy() {
        let job = parse(&scheduled(json!({})), JobKind::Scheduled).unwrap();
        let out = job.to_json(&JobStats::default());
        let mut keys: Vec<&str> = out.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut expected = vec![
            "name",
            "command",
            "shell",
            "executor",
            "executorFlags",
            "taskInfoData",
            "retries",
            "owner",
            "ownerName",
            "description",
            "successCount",
            "errorCount",
            "lastSuccess",
            "lastError",
            "cpus",
            "disk",
            "mem",
            "disabled",
            "softError",
            "dataProcessingJobType",
            "errorsSinceLastSuccess",
            "fetch",
            "uris",
            "environmentVariables",
            "arguments",
            "highPriority",
            "runAsUser",
            "concurrent",
            "maxCompletionTime",
            "constraints",
            "schedule",
            "scheduleTimeZone",
            "concurrencyPolicy",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(out["lastSuccess"], "");
        assert_eq!(out["lastError"], "");
        assert_eq!(out["scheduleTimeZone"], "");
        assert_eq!(out["cpus"], 0.1);
        assert_eq!(out["concurrencyPolicy"], "FORBID");
    }

    #[test]
    fn to_json_shows_stats_with_millisecond_timestamps() {
        let job = parse(&scheduled(json!({})), JobKind::Scheduled).unwrap();
        let stats = JobStats {
            success_count: 3,
            error_count: 1,
            last_success: Some("2026-03-01T02:00:05.5Z".parse().unwrap()),
            last_error: Some("2026-02-28T02:00:01Z".parse().unwrap()),
            errors_since_last_success: 0,
        };
        let out = job.to_json(&stats);
        assert_eq!(out["successCount"], 3);
        assert_eq!(out["errorCount"], 1);
        assert_eq!(out["lastSuccess"], "2026-03-01T02:00:05.500Z");
        assert_eq!(out["lastError"], "2026-02-28T02:00:01.000Z");
        assert_eq!(out["errorsSinceLastSuccess"], 0);
    }

    #[test]
    fn dependent_job_json_has_parents_and_no_schedule() {
        let job = parse(&dependent(json!({})), JobKind::Dependent).unwrap();
        let out = job.to_json(&JobStats::default());
        assert_eq!(out["parents"], json!(["extract"]));
        assert!(out.get("schedule").is_none() && out.get("scheduleTimeZone").is_none());
    }

    #[test]
    fn to_json_parses_back_to_the_same_job() {
        let body = scheduled(json!({
            "shell": false, "arguments": ["a"], "cpus": 2, "constraints": [["rack", "UNLIKE", "r-[0-9]"]],
            "container": {"type": "DOCKER", "image": "busybox", "networkName": "n", "network": "USER",
                          "volumes": [{"containerPath": "/c"}], "networkInfos": [{"name": "x"}]},
            "environmentVariables": [{"name": "A", "value": "1"}], "maxCompletionTime": 60,
            "startingDeadlineSeconds": 10, "epsilon": "PT1M", "scheduleTimeZone": "UTC",
            "fetch": [{"uri": "u", "output_file": "f"}], "concurrent": true,
        }));
        let job = parse(&body, JobKind::Scheduled).unwrap();
        let again = parse(&job.to_json(&JobStats::default()), JobKind::Scheduled).unwrap();
        assert_eq!(again, job);
        let dep = parse(&dependent(json!({})), JobKind::Dependent).unwrap();
        assert_eq!(
            parse(&dep.to_json(&JobStats::default()), JobKind::Dependent).unwrap(),
            dep
        );
    }

    #[test]
    fn pin_schedule_start_fixes_an_empty_start() {
        let mut job = parse(&scheduled(json!({"schedule": "R3//PT1H"})), JobKind::Scheduled).unwrap();
        job.pin_schedule_start("2026-03-01T00:00:00Z".parse().unwrap())
            .unwrap();
        assert_eq!(job.schedule.as_deref(), Some("R3/2026-03-01T00:00:00+00:00/PT1H"));
        let later: jiff::Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
        let schedule = job.parsed_schedule(later).unwrap().unwrap();
        assert_eq!(schedule.start(), Some("2026-03-01T00:00:00Z".parse().unwrap()));
    }

    #[test]
    fn job_error_within_prefixes_the_field() {
        let e = JobError::new("image", "is required").within("container");
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            ("container.image", "container.image: is required")
        );
    }
}
