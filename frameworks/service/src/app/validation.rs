//! Marathon's 422 error body and the checks that produce it.

use serde::{Deserialize, Serialize};

/// The errors of one field, `{"path": "/cpus", "errors": ["…"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// A JSON path in Marathon's form: `/cpus`, `/healthChecks(0)/portIndex`.
    pub path: String,
    /// What is wrong, in Marathon's words.
    pub errors: Vec<String>,
}

/// Why an app definition was refused: Marathon's 422 body,
/// `{"message": "Object is not valid", "details": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, thiserror::Error)]
#[error("{message}: {}", summary(details))]
pub struct ValidationErrors {
    /// `Object is not valid` (rule violations) or `Invalid JSON` (shape).
    pub message: String,
    /// One entry per offending path.
    pub details: Vec<FieldError>,
}

fn summary(details: &[FieldError]) -> String {
    details
        .iter()
        .map(|d| format!("{} {}", d.path, d.errors.join("; ")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Marathon's message for rule violations.
pub const OBJECT_NOT_VALID: &str = "Object is not valid";
/// Marathon's message for JSON of the wrong shape.
pub const INVALID_JSON: &str = "Invalid JSON";

impl ValidationErrors {
    /// An empty collection with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// One error at one path.
    pub fn single(message: impl Into<String>, path: impl Into<String>, error: impl Into<String>) -> Self {
        let mut e = Self::new(message);
        e.add(path, error);
        e
    }

    /// Adds an error at `path` (merged with earlier errors of the same path).
    pub fn add(&mut self, path: impl Into<String>, error: impl Into<String>) {
        let path = path.into();
        let error = error.into();
        match self.details.iter_mut().find(|d| d.path == path) {
            Some(d) => {
                if !d.errors.contains(&error) {
                    d.errors.push(error);
                }
            }
            None => self.details.push(FieldError {
                path,
                errors: vec![error],
            }),
        }
    }

    /// True when no error was added.
    pub fn is_empty(&self) -> bool {
        self.details.is_empty()
    }

    /// `Ok(())` when empty, else `Err(self)`.
    pub fn into_result(self) -> Result<(), Self> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }

    /// The errors recorded at `path`, for tests and messages.
    pub fn at(&self, path: &str) -> Vec<&str> {
        self.details
            .iter()
            .filter(|d| d.path == path)
            .flat_map(|d| d.errors.iter().map(String::as_str))
            .collect()
    }
}

use super::definition::{
    AppDefinition, Constraint, ConstraintOperator, ContainerType, HealthCheckProtocol, NetworkMode,
};

/// Formats a number as Scala prints a Double (`-3.0`, `0.5`).
fn scala_double(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{n:.1}")
    } else {
        format!("{n}")
    }
}

/// `got -3.0, expected 0.0 or more` when `n` is below `min` (or not finite).
fn check_at_least(errors: &mut ValidationErrors, path: &str, n: f64, min: f64) {
    if n < min || !n.is_finite() {
        errors.add(
            path,
            format!("got {}, expected {} or more", scala_double(n), scala_double(min)),
        );
    }
}

/// `got 1.5, expected 1.0 or less` when `n` is above `max`.
fn check_at_most(errors: &mut ValidationErrors, path: &str, n: f64, max: f64) {
    if n > max {
        errors.add(
            path,
            format!("got {}, expected {} or less", scala_double(n), scala_double(max)),
        );
    }
}

const PORT_PROTOCOLS: [&str; 3] = ["tcp", "udp", "udp,tcp"];

/// Marathon's message for a health check on a port the app lacks.
pub const HEALTH_CHECK_PORT_INDEX: &str =
    "Health check port indices must address an element of the ports array or container port mappings.";

/// Marathon's message when the app has nothing to run.
pub const CMD_ARGS_OR_CONTAINER: &str =
    "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.";

impl AppDefinition {
    /// Checks the rules Marathon checks (and the ones Agora's launch
    /// needs); every violation is reported with its path.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = ValidationErrors::new(OBJECT_NOT_VALID);
        self.validate_command(&mut e);
        check_at_least(&mut e, "/cpus", self.cpus, 0.0);
        check_at_least(&mut e, "/mem", self.mem, 0.0);
        check_at_least(&mut e, "/disk", self.disk, 0.0);
        check_at_least(&mut e, "/backoffFactor", self.backoff_factor, 1.0);
        if let Some(grace) = self.task_kill_grace_period_seconds {
            check_at_least(&mut e, "/taskKillGracePeriodSeconds", grace, 0.0);
        }
        if let (Some(inactive), Some(expunge)) = (
            self.unreachable_strategy.inactive_after(),
            self.unreachable_strategy.expunge_after(),
        ) && expunge < inactive
        {
            e.add(
                "/unreachableStrategy/expungeAfterSeconds",
                "must be greater than or equal to inactiveAfterSeconds",
            );
        }
        let us = &self.upgrade_strategy;
        for (path, n) in [
            (
                "/upgradeStrategy/minimumHealthCapacity",
                us.minimum_health_capacity,
            ),
            ("/upgradeStrategy/maximumOverCapacity", us.maximum_over_capacity),
        ] {
            check_at_least(&mut e, path, n, 0.0);
            check_at_most(&mut e, path, n, 1.0);
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') {
                e.add(format!("/env({key})"), "must be a non-empty name without '='");
            }
        }
        if let Some(roles) = &self.accepted_resource_roles {
            if roles.is_empty() {
                e.add("/acceptedResourceRoles", "must not be empty");
            }
            for (i, role) in roles.iter().enumerate() {
                if role.is_empty() {
                    e.add(format!("/acceptedResourceRoles({i})"), "must not be empty");
                }
            }
        }
        for (i, c) in self.constraints.iter().enumerate() {
            if let Err(msg) = validate_constraint(c) {
                e.add(format!("/constraints({i})"), msg);
            }
        }
        if self.dependencies.contains(&self.id) {
            e.add("/dependencies", "an app cannot depend on itself");
        }
        self.validate_ports(&mut e);
        self.validate_container(&mut e);
        self.validate_health_checks(&mut e);
        e.into_result()
    }

    fn validate_command(&self, e: &mut ValidationErrors) {
        if self.cmd.as_deref() == Some("") {
            e.add("/cmd", "must not be an empty string");
        }
        let cmd = self.cmd.is_some();
        let args = !self.args.is_empty();
        let container = self
            .container
            .as_ref()
            .is_some_and(|c| c.docker.as_ref().is_some_and(|d| !d.image.is_empty()));
        if !((cmd ^ args) || (!(cmd && args) && container)) {
            e.add("/", CMD_ARGS_OR_CONTAINER);
        }
    }

    fn validate_ports(&self, e: &mut ValidationErrors) {
        let mode = self.network_mode();
        if mode != NetworkMode::Host && !self.port_definitions.is_empty() {
            e.add("/", "portDefinitions are only allowed with host-networking");
        }
        if mode == NetworkMode::Host && !self.port_mappings().is_empty() {
            e.add("/", "portMappings are not allowed with host-networking");
        }
        let mut names = std::collections::BTreeSet::new();
        let mut ports = std::collections::BTreeSet::new();
        for (i, def) in self.port_definitions.iter().enumerate() {
            if let Some(name) = &def.name
                && !names.insert(name.as_str())
            {
                e.add("/portDefinitions", "Port names must be unique.");
            }
            if def.port != 0 && !ports.insert(def.port) {
                e.add("/portDefinitions", "Ports must be unique.");
            }
            if !PORT_PROTOCOLS.contains(&def.protocol.as_str()) {
                e.add(
                    format!("/portDefinitions({i})/protocol"),
                    "must be one of tcp, udp, udp,tcp",
                );
            }
        }
        if self.require_ports && self.port_definitions.iter().any(|d| d.port == 0) {
            e.add(
                "/requirePorts",
                "requirePorts needs fixed (non-zero) ports in portDefinitions",
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, m) in self.port_mappings().iter().enumerate() {
            if let Some(name) = &m.name
                && !names.insert(name.as_str())
            {
                e.add("/container/portMappings", "Port names must be unique.");
            }
            if !PORT_PROTOCOLS.contains(&m.protocol.as_str()) {
                e.add(
                    format!("/container/portMappings({i})/protocol"),
                    "must be one of tcp, udp, udp,tcp",
                );
            }
        }
    }

    fn validate_container(&self, e: &mut ValidationErrors) {
        let has_image = self
            .container
            .as_ref()
            .is_some_and(|c| c.docker.as_ref().is_some_and(|d| !d.image.is_empty()));
        if let Some(container) = &self.container {
            match (&container.docker, container.kind) {
                (Some(docker), _) if docker.image.trim().is_empty() => {
                    e.add("/container/docker/image", "must not be empty");
                }
                (None, ContainerType::Docker) => e.add("/container/docker", "must be defined"),
                _ => {}
            }
            for (i, v) in container.volumes.iter().enumerate() {
                if v.container_path.is_empty() {
                    e.add(
                        format!("/container/volumes({i})/containerPath"),
                        "must not be empty",
                    );
                }
                if let Some(host) = &v.host_path
                    && !host.starts_with('/')
                {
                    e.add(
                        format!("/container/volumes({i})/hostPath"),
                        "must be an absolute path",
                    );
                }
            }
        }
        if self.network_mode() != NetworkMode::Host && !has_image {
            e.add(
                "/networks",
                "container networking needs a container with a docker image",
            );
        }
        if self.networks.iter().any(|n| n.mode == NetworkMode::Container) {
            e.add(
                "/networks",
                "Agora supports host and container/bridge networking, not named container networks",
            );
        }
        if self.networks.len() > 1 {
            e.add("/networks", "Agora supports one network per app");
        }
    }

    fn validate_health_checks(&self, e: &mut ValidationErrors) {
        let port_count = self.port_count();
        for (i, hc) in self.health_checks.iter().enumerate() {
            let path = format!("/healthChecks({i})");
            match hc.protocol {
                HealthCheckProtocol::Command => {
                    if hc.command.as_ref().is_none_or(|c| c.value.trim().is_empty()) {
                        e.add(
                            format!("{path}/command"),
                            "a COMMAND health check needs a command",
                        );
                    }
                }
                HealthCheckProtocol::Http | HealthCheckProtocol::Https | HealthCheckProtocol::Tcp => {
                    let valid = match hc.port_index {
                        Some(idx) => (idx as usize) < port_count,
                        None => hc.port.is_some() || port_count == 1,
                    };
                    if !valid {
                        e.add(path.clone(), HEALTH_CHECK_PORT_INDEX);
                    }
                    if hc.protocol == HealthCheckProtocol::Https {
                        // Probing HTTPS needs TLS, which this build leaves out; accepting
                        // the check would fail every probe and kill healthy tasks.
                        e.add(
                            format!("{path}/protocol"),
                            "HTTPS health checks are not supported (this build has no TLS); use HTTP or TCP",
                        );
                    }
                }
            }
            if hc.interval_seconds == 0 {
                e.add(format!("{path}/intervalSeconds"), "got 0, expected 1 or more");
            }
            if hc.timeout_seconds == 0 {
                e.add(format!("{path}/timeoutSeconds"), "got 0, expected 1 or more");
            }
        }
    }
}

/// Marathon's per-operator rules for one constraint.
fn validate_constraint(c: &Constraint) -> Result<(), String> {
    if c.field.is_empty() {
        return Err("Missing field and operator".into());
    }
    let is_int = |v: &Option<String>| v.as_deref().is_some_and(|s| s.trim().parse::<i64>().is_ok());
    match c.operator {
        ConstraintOperator::Unique if c.value.is_some() => Err("Value specified but not used".into()),
        ConstraintOperator::Cluster | ConstraintOperator::Is
            if c.value.as_deref().is_none_or(str::is_empty) =>
        {
            Err("Missing value".into())
        }
        ConstraintOperator::GroupBy if c.value.is_some() && !is_int(&c.value) => {
            Err("Value was specified but is not a number".into())
        }
        ConstraintOperator::MaxPer if !is_int(&c.value) => {
            Err("Value was not specified or is not a number".into())
        }
        ConstraintOperator::Like | ConstraintOperator::Unlike => match &c.value {
            None => Err("A regular expression value must be provided".into()),
            Some(v) => match super::constraints::anchored_regex(v) {
                Ok(_) => Ok(()),
                Err(_) => Err(format!("'{v}' is not a valid regular expression")),
            },
        },
        _ => Ok(()),
    }
}
