//! The types of an app definition, with Marathon 1.x's field names and
//! defaults.
//!
//! Every nested type (de)serializes in Marathon's JSON form; the whole
//! [`AppDefinition`] (de)serializes in a storage form close to it (use
//! [`AppDefinition::from_json`] and [`AppDefinition::to_json`] for the REST
//! API: they add defaults, validation and Marathon's exact output fields).

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::id::AppId;

/// Marathon's default `cpus`.
pub const DEFAULT_CPUS: f64 = 1.0;
/// Marathon's default `mem` (MiB).
pub const DEFAULT_MEM: f64 = 128.0;
/// Marathon's default `backoffSeconds`.
pub const DEFAULT_BACKOFF_SECONDS: u64 = 1;
/// Marathon's default `backoffFactor`.
pub const DEFAULT_BACKOFF_FACTOR: f64 = 1.15;
/// The default `maxLaunchDelaySeconds` (the 300 s).
pub const DEFAULT_MAX_LAUNCH_DELAY_SECONDS: u64 = 300;

/// A declared app: what to run, how many, where, and how to replace it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AppDefinition {
    /// The app's id, e.g. `/shop/web`.
    pub id: AppId,
    /// A shell command line (`/bin/sh -c`); exclusive with `args`.
    pub cmd: Option<String>,
    /// An argv vector; exclusive with `cmd`.
    pub args: Vec<String>,
    /// The user to run the task as.
    pub user: Option<String>,
    /// How many tasks to keep running.
    pub instances: u32,
    /// CPU shares per task.
    pub cpus: f64,
    /// Memory per task, MiB.
    pub mem: f64,
    /// Disk per task, MiB.
    pub disk: f64,
    /// Whole GPUs per task.
    pub gpus: u32,
    /// Environment variables given to each task.
    pub env: BTreeMap<String, String>,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Container settings; absent means a plain command.
    pub container: Option<Container>,
    /// The networks the task joins (Marathon 1.5+); empty means host networking.
    pub networks: Vec<Network>,
    /// Ports for host networking: each gets a host port from the offer.
    pub port_definitions: Vec<PortDefinition>,
    /// Use the `portDefinitions` port numbers as the host ports.
    pub require_ports: bool,
    /// Placement constraints.
    pub constraints: Vec<Constraint>,
    /// Offer roles the app may use; `None` means any.
    pub accepted_resource_roles: Option<Vec<String>>,
    /// The role the app's tasks are launched under.
    pub role: Option<String>,
    /// Health checks of each task.
    pub health_checks: Vec<HealthCheck>,
    /// How a rolling update replaces tasks.
    pub upgrade_strategy: UpgradeStrategy,
    /// What to do with tasks that become unreachable.
    pub unreachable_strategy: UnreachableStrategy,
    /// First delay before relaunching a failed task, seconds.
    pub backoff_seconds: u64,
    /// Factor the delay grows by on each further failure.
    pub backoff_factor: f64,
    /// Upper bound of the delay, seconds.
    pub max_launch_delay_seconds: u64,
    /// Which tasks go first when scaling down.
    pub kill_selection: KillSelection,
    /// Time between SIGTERM and SIGKILL when a task is killed.
    pub task_kill_grace_period_seconds: Option<f64>,
    /// Apps this app depends on (started before it, removed after it).
    pub dependencies: Vec<AppId>,
    /// URIs fetched into the sandbox (stored and shown; Agora does not fetch).
    pub fetch: Vec<FetchUri>,
    /// Marathon's `executor` field (stored and shown, unused).
    pub executor: String,
    /// The version (time of the change that made this definition).
    pub version: Option<Timestamp>,
    /// When the app was last scaled and last changed otherwise.
    pub version_info: Option<VersionInfo>,
}

impl Default for AppDefinition {
    fn default() -> Self {
        Self {
            id: AppId::placeholder(),
            cmd: None,
            args: Vec::new(),
            user: None,
            instances: 1,
            cpus: DEFAULT_CPUS,
            mem: DEFAULT_MEM,
            disk: 0.0,
            gpus: 0,
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            container: None,
            networks: Vec::new(),
            port_definitions: Vec::new(),
            require_ports: false,
            constraints: Vec::new(),
            accepted_resource_roles: None,
            role: None,
            health_checks: Vec::new(),
            upgrade_strategy: UpgradeStrategy::default(),
            unreachable_strategy: UnreachableStrategy::default(),
            backoff_seconds: DEFAULT_BACKOFF_SECONDS,
            backoff_factor: DEFAULT_BACKOFF_FACTOR,
            max_launch_delay_seconds: DEFAULT_MAX_LAUNCH_DELAY_SECONDS,
            kill_selection: KillSelection::default(),
            task_kill_grace_period_seconds: None,
            dependencies: Vec::new(),
            fetch: Vec::new(),
            executor: String::new(),
            version: None,
            version_info: None,
        }
    }
}

impl AppDefinition {
    /// A definition with Marathon's defaults and this id and command.
    pub fn new(id: AppId, cmd: impl Into<String>) -> Self {
        Self {
            id,
            cmd: Some(cmd.into()),
            ..Self::default()
        }
    }

    /// The effective network mode: the first network's, else host.
    pub fn network_mode(&self) -> NetworkMode {
        self.networks.first().map_or(NetworkMode::Host, |n| n.mode)
    }

    /// The container's port mappings (empty without a container).
    pub fn port_mappings(&self) -> &[PortMapping] {
        self.container.as_ref().map_or(&[][..], |c| &c.port_mappings[..])
    }

    /// How many ports a task of this app has (what `portIndex` may address):
    /// the container's port mappings if any, else the port definitions.
    pub fn port_count(&self) -> usize {
        let mappings = self.port_mappings();
        if mappings.is_empty() {
            self.port_definitions.len()
        } else {
            mappings.len()
        }
    }

    /// The first relaunch delay.
    pub fn backoff(&self) -> Duration {
        Duration::from_secs(self.backoff_seconds)
    }

    /// The largest relaunch delay.
    pub fn max_launch_delay(&self) -> Duration {
        Duration::from_secs(self.max_launch_delay_seconds)
    }

    /// The kill grace period, if the app sets one.
    pub fn kill_grace_period(&self) -> Option<Duration> {
        self.task_kill_grace_period_seconds
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
    }
}

/// When an app was last scaled and last changed in another way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// The last change of any kind (a scale too).
    pub last_scaling_at: Timestamp,
    /// The last change that was not only a scale.
    pub last_config_change_at: Timestamp,
}

/// Which tasks are killed first when an app scales down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KillSelection {
    /// The most recently started first (Marathon's default).
    #[default]
    YoungestFirst,
    /// The longest running first.
    OldestFirst,
}

/// How a rolling update replaces an app's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UpgradeStrategy {
    /// Fraction of `instances` that must stay healthy during the update (0..=1).
    pub minimum_health_capacity: f64,
    /// Fraction of `instances` that may run on top of `instances` (0..=1).
    pub maximum_over_capacity: f64,
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        Self {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

/// What happens to a task that becomes TASK_UNREACHABLE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UnreachableStrategy {
    /// Replace it after `inactive_after_seconds`; forget it (kill if it
    /// returns) after `expunge_after_seconds`.
    #[serde(rename_all = "camelCase")]
    Enabled {
        /// Seconds unreachable before a replacement is launched.
        #[serde(default)]
        inactive_after_seconds: u64,
        /// Seconds unreachable before the task is expunged.
        #[serde(default)]
        expunge_after_seconds: u64,
    },
    /// Never replace unreachable tasks (JSON `"disabled"`).
    Disabled(DisabledMarker),
}

/// The JSON string `"disabled"` of [`UnreachableStrategy::Disabled`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DisabledMarker {
    /// `"disabled"`.
    #[serde(rename = "disabled")]
    Disabled,
}

impl Default for UnreachableStrategy {
    /// Marathon 1.6+'s default: replace at once, expunge at once.
    fn default() -> Self {
        Self::Enabled {
            inactive_after_seconds: 0,
            expunge_after_seconds: 0,
        }
    }
}

impl UnreachableStrategy {
    /// How long an unreachable task waits before it is replaced (`None`: never).
    pub fn inactive_after(&self) -> Option<Duration> {
        match self {
            Self::Enabled {
                inactive_after_seconds,
                ..
            } => Some(Duration::from_secs(*inactive_after_seconds)),
            Self::Disabled(_) => None,
        }
    }

    /// How long an unreachable task is kept before it is expunged (`None`: never).
    pub fn expunge_after(&self) -> Option<Duration> {
        match self {
            Self::Enabled {
                expunge_after_seconds,
                ..
            } => Some(Duration::from_secs(*expunge_after_seconds)),
            Self::Disabled(_) => None,
        }
    }
}

/// A URI to fetch into the sandbox (Marathon's `fetch` item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchUri {
    /// The URI.
    pub uri: String,
    /// Extract archives.
    #[serde(default = "default_true")]
    pub extract: bool,
    /// Mark the file executable.
    #[serde(default)]
    pub executable: bool,
    /// Use the fetcher cache.
    #[serde(default)]
    pub cache: bool,
}

fn default_true() -> bool {
    true
}

/// A port of a host-networked task (Marathon's `portDefinitions` item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    /// The service port; 0 = any. With `requirePorts` it is the host port.
    #[serde(default)]
    pub port: u16,
    /// `tcp`, `udp` or `udp,tcp`.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// A name, giving the task `PORT_<NAME>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_protocol() -> String {
    "tcp".to_owned()
}

/// The kind of container (Marathon's `container.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContainerType {
    /// The Docker containerizer.
    #[default]
    Docker,
    /// Mesos' own containerizer: Agora runs the command as a process (with
    /// `docker.image` it uses the Docker containerizer).
    Mesos,
}

/// Container settings (Marathon 1.5+'s form: `portMappings` at this level).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// `DOCKER` or `MESOS`.
    #[serde(rename = "type", default)]
    pub kind: ContainerType,
    /// The Docker image and its options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerContainer>,
    /// Container ports published on host ports (BRIDGE networking).
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// Volumes mounted into the container.
    #[serde(default)]
    pub volumes: Vec<Volume>,
}

/// Docker options (Marathon's `container.docker`, minus the pre-1.5
/// `network` and `portMappings`, which live in `networks` and
/// `container.portMappings`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerContainer {
    /// The image reference, e.g. `nginx:1.25`.
    pub image: String,
    /// Run privileged.
    #[serde(default)]
    pub privileged: bool,
    /// Extra `docker run` parameters.
    #[serde(default)]
    pub parameters: Vec<DockerParameter>,
    /// Pull the image before each start.
    #[serde(default)]
    pub force_pull_image: bool,
}

/// One `docker run` parameter (`{"key": "label", "value": "a=b"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerParameter {
    /// The parameter name, without dashes.
    pub key: String,
    /// Its value.
    pub value: String,
}

/// A container port published on a host port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The port inside the container.
    #[serde(default)]
    pub container_port: u16,
    /// The host port: `Some(0)` = any from the offer, `None` = not published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// The service port (stored and shown).
    #[serde(default)]
    pub service_port: u16,
    /// `tcp`, `udp` or `udp,tcp`.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// A name, giving the task `PORT_<NAME>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Whether a volume is mounted read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum VolumeMode {
    /// Read-write (the default).
    #[default]
    #[serde(rename = "RW")]
    ReadWrite,
    /// Read-only.
    #[serde(rename = "RO")]
    ReadOnly,
}

/// A host path mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// The path inside the container.
    pub container_path: String,
    /// The path on the agent; absent means a scratch directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// `RW` or `RO`.
    #[serde(default)]
    pub mode: VolumeMode,
}

/// How a task is networked (Marathon 1.5+'s `networks[].mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NetworkMode {
    /// The agent's network namespace; ports from `portDefinitions`.
    #[default]
    #[serde(rename = "host")]
    Host,
    /// The container engine's bridge; ports from `container.portMappings`.
    #[serde(rename = "container/bridge")]
    ContainerBridge,
    /// A named container network (CNI / Docker user network).
    #[serde(rename = "container")]
    Container,
}

/// One network the task joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// The mode.
    #[serde(default)]
    pub mode: NetworkMode,
    /// The network's name (container mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Network {
    /// A network of this mode, without name or labels.
    pub fn of_mode(mode: NetworkMode) -> Self {
        Self {
            mode,
            name: None,
            labels: BTreeMap::new(),
        }
    }
}

/// How a health check probes a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthCheckProtocol {
    /// HTTP GET `path`; 2xx and 3xx are healthy (1xx too with `ignoreHttp1xx`).
    #[serde(alias = "MESOS_HTTP")]
    Http,
    /// HTTPS GET `path`, certificate not verified.
    #[serde(alias = "MESOS_HTTPS")]
    Https,
    /// A TCP connect.
    #[serde(alias = "MESOS_TCP")]
    Tcp,
    /// A shell command; exit 0 is healthy.
    Command,
}

/// The command of a COMMAND health check: JSON `{"value": "curl -f …"}`
/// (a plain string is accepted too, as the 0.13 Python client sends it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandCheck {
    /// The shell command line.
    pub value: String,
}

impl<'de> Deserialize<'de> for CommandCheck {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Object { value: String },
            Text(String),
        }
        Ok(match Form::deserialize(deserializer)? {
            Form::Object { value } | Form::Text(value) => Self { value },
        })
    }
}

/// A health check, in Marathon's JSON form (missing fields take Marathon's
/// defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HealthCheck {
    /// HTTP, HTTPS, TCP or COMMAND.
    pub protocol: HealthCheckProtocol,
    /// The HTTP(S) path, default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Which of the task's ports to probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<u32>,
    /// A fixed port to probe instead of `portIndex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The command of a COMMAND check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandCheck>,
    /// Failures are ignored this long after the task starts (300).
    pub grace_period_seconds: u64,
    /// Time between checks (60).
    pub interval_seconds: u64,
    /// A check not answered within this is a failure (20).
    pub timeout_seconds: u64,
    /// Failures in a row after which the task is killed (3; 0 = never).
    pub max_consecutive_failures: u32,
    /// Treat HTTP 1xx as healthy.
    pub ignore_http1xx: bool,
    /// Marathon's `delaySeconds` (15), kept for round trips.
    pub delay_seconds: u64,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            protocol: HealthCheckProtocol::Http,
            path: None,
            port_index: None,
            port: None,
            command: None,
            grace_period_seconds: 300,
            interval_seconds: 60,
            timeout_seconds: 20,
            max_consecutive_failures: 3,
            ignore_http1xx: false,
            delay_seconds: 15,
        }
    }
}

impl HealthCheck {
    /// Failures within this time after the task started are ignored.
    pub fn grace_period(&self) -> Duration {
        Duration::from_secs(self.grace_period_seconds)
    }

    /// Time between two checks.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_seconds)
    }

    /// Time after which an unanswered check is a failure.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }

    /// The HTTP path to probe (`/` when unset).
    pub fn http_path(&self) -> &str {
        self.path.as_deref().unwrap_or("/")
    }
}

/// A placement constraint operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConstraintOperator {
    /// Every task on a different value of the field.
    Unique,
    /// Every task on the same value (the given one, else the first task's).
    Cluster,
    /// Spread evenly over the field's values (value = number of groups).
    GroupBy,
    /// The field fully matches the regular expression value.
    Like,
    /// The field does not fully match the regular expression value.
    Unlike,
    /// At most value tasks per value of the field.
    MaxPer,
    /// The field equals the value (Marathon 1.5+).
    Is,
}

impl ConstraintOperator {
    /// The operator's JSON name, e.g. `GROUP_BY`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unique => "UNIQUE",
            Self::Cluster => "CLUSTER",
            Self::GroupBy => "GROUP_BY",
            Self::Like => "LIKE",
            Self::Unlike => "UNLIKE",
            Self::MaxPer => "MAX_PER",
            Self::Is => "IS",
        }
    }

    /// Parses a JSON operator name (exact case, as Marathon).
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Unique,
            Self::Cluster,
            Self::GroupBy,
            Self::Like,
            Self::Unlike,
            Self::MaxPer,
            Self::Is,
        ]
        .into_iter()
        .find(|op| op.as_str() == s)
    }
}

/// A placement constraint, JSON `["hostname", "UNIQUE"]` or
/// `["rack", "GROUP_BY", "3"]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Constraint {
    /// `hostname` or an agent attribute name.
    pub field: String,
    /// The operator.
    pub operator: ConstraintOperator,
    /// The operator's argument.
    pub value: Option<String>,
}

impl Serialize for Constraint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut items = vec![self.field.as_str(), self.operator.as_str()];
        if let Some(v) = &self.value {
            items.push(v);
        }
        items.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Constraint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Constraint::from_json_value(&value).map_err(serde::de::Error::custom)
    }
}

impl Constraint {
    /// Reads Marathon's array form; the error is Marathon's message.
    pub fn from_json_value(value: &serde_json::Value) -> Result<Self, String> {
        const SHAPE: &str = "Each constraint must have either 2 or 3 fields";
        let items = value.as_array().ok_or_else(|| SHAPE.to_owned())?;
        if items.len() < 2 || items.len() > 3 {
            return Err(SHAPE.to_owned());
        }
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let field = text(&items[0]).ok_or_else(|| SHAPE.to_owned())?;
        let op_name = text(&items[1]).ok_or_else(|| SHAPE.to_owned())?;
        let operator = ConstraintOperator::parse(&op_name).ok_or_else(|| {
            "Constraint operator must be one of the following UNIQUE, CLUSTER, GROUP_BY, LIKE, MAX_PER, \
             UNLIKE or IS"
                .to_owned()
        })?;
        let value = match items.get(2) {
            Some(v) => Some(text(v).ok_or_else(|| SHAPE.to_owned())?),
            None => None,
        };
        Ok(Self {
            field,
            operator,
            value,
        })
    }
}
