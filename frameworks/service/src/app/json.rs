//! Marathon JSON in and out: reading an app (with defaults), partial updates
//! (PUT), and Marathon 1.x's output form.
//!
//! Reading is field by field, so each error names its field's path
//! (`/cpus`, `/healthChecks(0)/portIndex`). Unknown fields are ignored, as
//! Marathon ignores them; read-only fields a client echoes back (`tasks`,
//! `deployments`, `versionInfo`, …) are ignored too.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::definition::{
    AppDefinition, Constraint, Container, ContainerType, DockerContainer, DockerParameter, FetchUri,
    HealthCheck, HealthCheckProtocol, Network, NetworkMode, PortDefinition, PortMapping, Volume, VolumeMode,
};
use super::id::AppId;
use super::timestamp::{parse_timestamp, timestamp_string};
use super::validation::{INVALID_JSON, OBJECT_NOT_VALID, ValidationErrors};

/// The keys [`AppDefinition::to_json`] may emit. Every one is a parameter of
/// the marathon 0.13 Python client's `MarathonApp.__init__` (see the test
/// `emitted_keys_are_all_accepted_by_marathon_0_13_client`).
pub const APP_OUTPUT_KEYS: [&str; 35] = [
    "id",
    "cmd",
    "args",
    "user",
    "env",
    "instances",
    "cpus",
    "mem",
    "disk",
    "gpus",
    "executor",
    "constraints",
    "uris",
    "fetch",
    "storeUrls",
    "backoffSeconds",
    "backoffFactor",
    "maxLaunchDelaySeconds",
    "container",
    "healthChecks",
    "readinessChecks",
    "dependencies",
    "upgradeStrategy",
    "unreachableStrategy",
    "killSelection",
    "labels",
    "acceptedResourceRoles",
    "requirePorts",
    "portDefinitions",
    "networks",
    "secrets",
    "taskKillGracePeriodSeconds",
    "role",
    "version",
    "versionInfo",
];

/// Fields of Marathon's app JSON that are outputs only; a client that sends
/// an app back as it got it (the 0.13 client's `update_app`) sends them too.
const READ_ONLY_KEYS: [&str; 11] = [
    "tasks",
    "tasksStaged",
    "tasksRunning",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "lastTaskFailure",
    "taskStats",
    "readinessCheckResults",
    "versionInfo",
    "version",
];

impl AppDefinition {
    /// Parses Marathon app JSON (`POST /v2/apps`): reads every known field,
    /// fills in Marathon's defaults, normalises (pre-1.5 container form,
    /// `ports`, BRIDGE host ports) and validates.
    pub fn from_json(body: &[u8]) -> Result<Self, ValidationErrors> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ValidationErrors::single(INVALID_JSON, "/", e.to_string()))?;
        Self::from_value(&value)
    }

    /// As [`AppDefinition::from_json`], from parsed JSON. `id` is required.
    pub fn from_value(value: &Value) -> Result<Self, ValidationErrors> {
        let obj = expect_object(value)?;
        if obj.get("id").is_none_or(Value::is_null) {
            return Err(ValidationErrors::single(
                INVALID_JSON,
                "/id",
                "error.path.missing",
            ));
        }
        let mut app = Self::default();
        app.apply(obj, &[])?;
        app.add_default_ports(obj);
        app.normalise();
        app.validate()?;
        Ok(app)
    }

    /// Parses an app whose id comes from the URL (`PUT /v2/apps/{id}` of an
    /// app that does not exist yet); an `id` in the body is ignored.
    pub fn from_value_with_id(value: &Value, id: &AppId) -> Result<Self, ValidationErrors> {
        let obj = expect_object(value)?;
        let mut app = Self {
            id: id.clone(),
            ..Self::default()
        };
        app.apply(obj, &["id"])?;
        app.add_default_ports(obj);
        app.normalise();
        app.validate()?;
        Ok(app)
    }

    /// The version a `PUT {"version": V}` rolls back to: `Ok(Some(V))` for a
    /// body of only `version` (and `id`), `Ok(None)` without `version`.
    pub fn rollback_version(value: &Value) -> Result<Option<Timestamp>, ValidationErrors> {
        let Some(obj) = value.as_object() else {
            return Ok(None);
        };
        let Some(version) = obj.get("version").filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let others = obj
            .iter()
            .filter(|(k, v)| k.as_str() != "version" && k.as_str() != "id" && !v.is_null())
            .filter(|(k, _)| !READ_ONLY_KEYS.contains(&k.as_str()))
            .count();
        if others > 0 {
            return Err(ValidationErrors::single(
                OBJECT_NOT_VALID,
                "/",
                "The 'version' field may only be combined with the 'id' field.",
            ));
        }
        let text = version
            .as_str()
            .ok_or_else(|| ValidationErrors::single(INVALID_JSON, "/version", "error.expected.jsstring"))?;
        parse_timestamp(text).map(Some).map_err(|e| {
            ValidationErrors::single(
                INVALID_JSON,
                "/version",
                format!("error.expected.date.isoformat: {e}"),
            )
        })
    }

    /// A partial update (`PUT /v2/apps/{id}`): fields present in `update`
    /// replace this app's, absent (or null) ones are kept; the id, version
    /// and read-only fields of the body are ignored. The result is
    /// normalised and validated. Setting `cmd` drops `args` and vice versa;
    /// setting `ports` or `portDefinitions` replaces both.
    pub fn patched(&self, update: &Value) -> Result<Self, ValidationErrors> {
        let obj = expect_object(update)?;
        let mut app = self.clone();
        let present = |k: &str| obj.get(k).is_some_and(|v| !v.is_null());
        if present("cmd") && !present("args") {
            app.args.clear();
        }
        if present("args") && !present("cmd") {
            app.cmd = None;
        }
        let changes_networking = present("networks")
            || obj
                .get("container")
                .and_then(|c| c.get("docker"))
                .and_then(|d| d.get("network"))
                .is_some_and(|n| !n.is_null());
        if changes_networking {
            app.networks.clear();
        }
        app.apply(obj, &["id"])?;
        app.normalise();
        app.validate()?;
        Ok(app)
    }

    /// True when `new` differs from this app only in `instances` (and
    /// version stamps): a scale, not a configuration change.
    pub fn is_scale_only_change(&self, new: &AppDefinition) -> bool {
        let strip = |a: &AppDefinition| AppDefinition {
            instances: 0,
            version: None,
            version_info: None,
            ..a.clone()
        };
        strip(self) == strip(new)
    }

    /// This definition stamped as the version made at `at`: `version = at`;
    /// `versionInfo.lastScalingAt = at`, and `lastConfigChangeAt = at` too
    /// unless the change from `previous` is only a scale.
    pub fn versioned(mut self, at: Timestamp, previous: Option<&AppDefinition>) -> Self {
        let last_config_change_at = match previous {
            Some(p) if p.is_scale_only_change(&self) => p
                .version_info
                .map(|v| v.last_config_change_at)
                .or(p.version)
                .unwrap_or(at),
            _ => at,
        };
        self.version = Some(at);
        self.version_info = Some(super::definition::VersionInfo {
            last_scaling_at: at,
            last_config_change_at,
        });
        self
    }

    /// Marathon 1.x's JSON of this app: exactly the fields of
    /// [`APP_OUTPUT_KEYS`], timestamps as `YYYY-MM-DDTHH:MM:SS.sssZ`, the
    /// container in the 1.5+ form (`container.portMappings`, `networks`).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id.as_str()));
        if let Some(cmd) = &self.cmd {
            m.insert("cmd".into(), json!(cmd));
        }
        if !self.args.is_empty() {
            m.insert("args".into(), json!(self.args));
        }
        if let Some(user) = &self.user {
            m.insert("user".into(), json!(user));
        }
        m.insert("env".into(), json!(self.env));
        m.insert("instances".into(), json!(self.instances));
        m.insert("cpus".into(), json!(self.cpus));
        m.insert("mem".into(), json!(self.mem));
        m.insert("disk".into(), json!(self.disk));
        m.insert("gpus".into(), json!(self.gpus));
        m.insert("executor".into(), json!(self.executor));
        m.insert("constraints".into(), json!(self.constraints));
        m.insert("fetch".into(), json!(self.fetch));
        m.insert("backoffSeconds".into(), json!(self.backoff_seconds));
        m.insert("backoffFactor".into(), json!(self.backoff_factor));
        m.insert(
            "maxLaunchDelaySeconds".into(),
            json!(self.max_launch_delay_seconds),
        );
        if let Some(container) = &self.container {
            m.insert("container".into(), json!(container));
        }
        m.insert("healthChecks".into(), json!(self.health_checks));
        m.insert("readinessChecks".into(), json!([]));
        m.insert("dependencies".into(), json!(self.dependencies));
        m.insert("upgradeStrategy".into(), json!(self.upgrade_strategy));
        m.insert("unreachableStrategy".into(), json!(self.unreachable_strategy));
        m.insert("killSelection".into(), json!(self.kill_selection));
        m.insert("labels".into(), json!(self.labels));
        if let Some(roles) = &self.accepted_resource_roles {
            m.insert("acceptedResourceRoles".into(), json!(roles));
        }
        m.insert("requirePorts".into(), json!(self.require_ports));
        m.insert("portDefinitions".into(), json!(self.port_definitions));
        let networks = if self.networks.is_empty() {
            vec![Network::of_mode(NetworkMode::Host)]
        } else {
            self.networks.clone()
        };
        m.insert("networks".into(), json!(networks));
        m.insert("secrets".into(), json!({}));
        if let Some(grace) = self.task_kill_grace_period_seconds {
            m.insert("taskKillGracePeriodSeconds".into(), json!(grace));
        }
        if let Some(role) = &self.role {
            m.insert("role".into(), json!(role));
        }
        if let Some(version) = self.version {
            m.insert("version".into(), json!(timestamp_string(version)));
        }
        if let Some(info) = &self.version_info {
            m.insert(
                "versionInfo".into(),
                json!({
                    "lastScalingAt": timestamp_string(info.last_scaling_at),
                    "lastConfigChangeAt": timestamp_string(info.last_config_change_at),
                }),
            );
        }
        Value::Object(m)
    }

    /// Reads every known field of `obj` into `self`, skipping `skip`.
    fn apply(&mut self, obj: &Map<String, Value>, skip: &[&str]) -> Result<(), ValidationErrors> {
        let mut r = Reader::default();
        let mut docker_network: Option<NetworkMode> = None;
        let mut ports: Option<Vec<u16>> = None;
        let mut port_definitions: Option<Vec<PortDefinition>> = None;
        let mut dependencies: Option<&Value> = None;
        for (key, value) in obj {
            if value.is_null() || skip.contains(&key.as_str()) {
                continue;
            }
            let path = format!("/{key}");
            match key.as_str() {
                "id" => {
                    if let Some(s) = r.string(value, &path) {
                        match AppId::parse(&s) {
                            Ok(id) => self.id = id,
                            Err(e) => r.invalid(&path, e.to_string()),
                        }
                    }
                }
                "cmd" => self.cmd = r.string(value, &path).or(self.cmd.take()),
                "args" => {
                    if let Some(args) = r.strings(value, &path) {
                        self.args = args;
                    }
                }
                "user" => self.user = r.string(value, &path).or(self.user.take()),
                "instances" => {
                    if let Some(n) = r.unsigned(value, &path, 0) {
                        self.instances = saturate_u32(n);
                    }
                }
                "cpus" => set(&mut self.cpus, r.number(value, &path)),
                "mem" => set(&mut self.mem, r.number(value, &path)),
                "disk" => set(&mut self.disk, r.number(value, &path)),
                "gpus" => {
                    if let Some(n) = r.unsigned(value, &path, 0) {
                        self.gpus = saturate_u32(n);
                    }
                }
                "env" => set(&mut self.env, r.string_map(value, &path)),
                "labels" => set(&mut self.labels, r.string_map(value, &path)),
                "container" => {
                    if let Some((container, network)) = r.container(value, &path) {
                        self.container = Some(container);
                        docker_network = network.or(docker_network);
                    }
                }
                "networks" => set(&mut self.networks, r.typed::<Vec<Network>>(value, &path)),
                "ports" => ports = r.typed(value, &path),
                "portDefinitions" => port_definitions = r.typed(value, &path),
                "requirePorts" => set(&mut self.require_ports, r.boolean(value, &path)),
                "constraints" => set(&mut self.constraints, r.constraints(value, &path)),
                "acceptedResourceRoles" => {
                    if let Some(roles) = r.strings(value, &path) {
                        self.accepted_resource_roles = Some(roles);
                    }
                }
                "role" => self.role = r.string(value, &path).or(self.role.take()),
                "healthChecks" => set(&mut self.health_checks, r.health_checks(value, &path)),
                "upgradeStrategy" => set(&mut self.upgrade_strategy, r.typed(value, &path)),
                "unreachableStrategy" => set(&mut self.unreachable_strategy, r.typed(value, &path)),
                "backoffSeconds" => set(&mut self.backoff_seconds, r.unsigned(value, &path, 0)),
                "backoffFactor" => set(&mut self.backoff_factor, r.number(value, &path)),
                "maxLaunchDelaySeconds" => {
                    set(&mut self.max_launch_delay_seconds, r.unsigned(value, &path, 0))
                }
                "killSelection" => set(&mut self.kill_selection, r.typed(value, &path)),
                "taskKillGracePeriodSeconds" => {
                    if let Some(n) = r.number(value, &path) {
                        self.task_kill_grace_period_seconds = Some(n);
                    }
                }
                // Resolved after the loop, relative to the (maybe new) id's group.
                "dependencies" => dependencies = Some(value),
                "uris" => {
                    if let Some(uris) = r.strings(value, &path) {
                        self.fetch = uris
                            .into_iter()
                            .map(|uri| FetchUri {
                                extract: true,
                                executable: false,
                                cache: false,
                                uri,
                            })
                            .collect();
                    }
                }
                "fetch" => set(&mut self.fetch, r.typed(value, &path)),
                "executor" => set(&mut self.executor, r.string(value, &path)),
                _ => {}
            }
        }
        if let Some(value) = dependencies {
            set(
                &mut self.dependencies,
                r.dependencies(value, "/dependencies", &self.id),
            );
        }
        match (ports, port_definitions) {
            (_, Some(defs)) => self.port_definitions = defs,
            (Some(ports), None) => {
                self.port_definitions = ports
                    .into_iter()
                    .map(|port| PortDefinition {
                        port,
                        protocol: "tcp".into(),
                        name: None,
                        labels: BTreeMap::new(),
                    })
                    .collect();
            }
            (None, None) => {}
        }
        if let Some(mode) = docker_network {
            if obj.get("networks").is_some_and(|n| !n.is_null()) {
                r.invalid("/", "must not specify both container.docker.network and networks");
            }
            self.networks = vec![Network::of_mode(mode)];
        }
        r.finish()
    }

    /// Fills in what Marathon derives: host networking when no network is
    /// given, dynamic host ports for BRIDGE mappings, health check port
    /// index 0 (when the app has exactly one port) and path `/`.
    fn normalise(&mut self) {
        if self.networks.is_empty() {
            self.networks = vec![Network::of_mode(NetworkMode::Host)];
        }
        if self.network_mode() == NetworkMode::ContainerBridge
            && let Some(container) = &mut self.container
        {
            for mapping in &mut container.port_mappings {
                mapping.host_port.get_or_insert(0);
            }
        }
        let port_count = self.port_count();
        for check in &mut self.health_checks {
            match check.protocol {
                HealthCheckProtocol::Http | HealthCheckProtocol::Https => {
                    check.path.get_or_insert_with(|| "/".to_owned());
                }
                HealthCheckProtocol::Tcp | HealthCheckProtocol::Command => {}
            }
            let probes_port = check.protocol != HealthCheckProtocol::Command;
            if probes_port && check.port.is_none() && check.port_index.is_none() && port_count == 1 {
                check.port_index = Some(0);
            }
        }
    }
}

impl AppDefinition {
    /// On create, a host-networked app that gives neither `ports` nor
    /// `portDefinitions` gets Marathon's one default dynamic port.
    fn add_default_ports(&mut self, obj: &Map<String, Value>) {
        let given = |k: &str| obj.get(k).is_some_and(|v| !v.is_null());
        if !given("ports") && !given("portDefinitions") && self.network_mode() == NetworkMode::Host {
            self.port_definitions = vec![PortDefinition {
                port: 0,
                protocol: "tcp".into(),
                name: Some("default".into()),
                labels: BTreeMap::new(),
            }];
        }
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

fn saturate_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn expect_object(value: &Value) -> Result<&Map<String, Value>, ValidationErrors> {
    value
        .as_object()
        .ok_or_else(|| ValidationErrors::single(INVALID_JSON, "/", "error.expected.jsobject"))
}

/// Collects two kinds of errors while reading: JSON of the wrong type
/// (Marathon's `Invalid JSON`) and values out of range (`Object is not
/// valid`). Type errors win: they are reported alone.
#[derive(Default)]
struct Reader {
    shape: ValidationErrors,
    rules: ValidationErrors,
}

impl Reader {
    fn finish(self) -> Result<(), ValidationErrors> {
        if !self.shape.is_empty() {
            let mut e = self.shape;
            e.message = INVALID_JSON.into();
            return Err(e);
        }
        if !self.rules.is_empty() {
            let mut e = self.rules;
            e.message = OBJECT_NOT_VALID.into();
            return Err(e);
        }
        Ok(())
    }

    fn wrong_type(&mut self, path: &str, expected: &str) {
        self.shape.add(path, format!("error.expected.{expected}"));
    }

    fn invalid(&mut self, path: &str, error: impl Into<String>) {
        self.rules.add(path, error);
    }

    fn string(&mut self, v: &Value, path: &str) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.wrong_type(path, "jsstring");
                None
            }
        }
    }

    fn boolean(&mut self, v: &Value, path: &str) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            _ => {
                self.wrong_type(path, "jsboolean");
                None
            }
        }
    }

    fn number(&mut self, v: &Value, path: &str) -> Option<f64> {
        match v.as_f64() {
            Some(n) => Some(n),
            None => {
                self.wrong_type(path, "jsnumber");
                None
            }
        }
    }

    /// A whole number `>= min`; a smaller one is a rule violation in
    /// Marathon's words (`got -3, expected 0 or more`).
    fn unsigned(&mut self, v: &Value, path: &str, min: u64) -> Option<u64> {
        let n = self.number(v, path)?;
        if n.fract() != 0.0 {
            self.wrong_type(path, "int");
            return None;
        }
        if n < min as f64 {
            self.invalid(path, format!("got {n}, expected {min} or more"));
            return None;
        }
        Some(n as u64)
    }

    fn strings(&mut self, v: &Value, path: &str) -> Option<Vec<String>> {
        let Value::Array(items) = v else {
            self.wrong_type(path, "jsarray");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            out.push(self.string(item, &format!("{path}({i})"))?);
        }
        Some(out)
    }

    fn string_map(&mut self, v: &Value, path: &str) -> Option<BTreeMap<String, String>> {
        let Value::Object(obj) = v else {
            self.wrong_type(path, "jsobject");
            return None;
        };
        let mut out = BTreeMap::new();
        for (k, item) in obj {
            out.insert(k.clone(), self.string(item, &format!("{path}({k})"))?);
        }
        Some(out)
    }

    fn typed<T: DeserializeOwned>(&mut self, v: &Value, path: &str) -> Option<T> {
        match serde_json::from_value(v.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                self.shape.add(path, e.to_string());
                None
            }
        }
    }

    fn constraints(&mut self, v: &Value, path: &str) -> Option<Vec<Constraint>> {
        let Value::Array(items) = v else {
            self.wrong_type(path, "jsarray");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match Constraint::from_json_value(item) {
                Ok(c) => out.push(c),
                Err(e) => self.invalid(&format!("{path}({i})"), e),
            }
        }
        Some(out)
    }

    fn health_checks(&mut self, v: &Value, path: &str) -> Option<Vec<HealthCheck>> {
        let Value::Array(items) = v else {
            self.wrong_type(path, "jsarray");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}({i})");
            let Value::Object(obj) = item else {
                self.wrong_type(&item_path, "jsobject");
                continue;
            };
            let mut check = HealthCheck::default();
            for (key, value) in obj {
                if value.is_null() {
                    continue;
                }
                let p = format!("{item_path}/{key}");
                match key.as_str() {
                    "protocol" => set(&mut check.protocol, self.typed(value, &p)),
                    "path" => check.path = self.string(value, &p),
                    "portIndex" => {
                        check.port_index = self.unsigned(value, &p, 0).map(saturate_u32);
                    }
                    "port" => {
                        if let Some(n) = self.unsigned(value, &p, 0) {
                            match u16::try_from(n) {
                                Ok(port) => check.port = Some(port),
                                Err(_) => self.invalid(&p, format!("got {n}, expected 65535 or less")),
                            }
                        }
                    }
                    "command" => {
                        check.command = match value {
                            Value::String(s) => Some(super::definition::CommandCheck { value: s.clone() }),
                            _ => self.typed(value, &p),
                        }
                    }
                    "gracePeriodSeconds" => set(&mut check.grace_period_seconds, self.unsigned(value, &p, 0)),
                    "intervalSeconds" => set(&mut check.interval_seconds, self.unsigned(value, &p, 1)),
                    "timeoutSeconds" => set(&mut check.timeout_seconds, self.unsigned(value, &p, 1)),
                    "maxConsecutiveFailures" => {
                        if let Some(n) = self.unsigned(value, &p, 0) {
                            check.max_consecutive_failures = saturate_u32(n);
                        }
                    }
                    "ignoreHttp1xx" => set(&mut check.ignore_http1xx, self.boolean(value, &p)),
                    "delaySeconds" => set(&mut check.delay_seconds, self.unsigned(value, &p, 0)),
                    _ => {}
                }
            }
            out.push(check);
        }
        Some(out)
    }

    fn dependencies(&mut self, v: &Value, path: &str, app: &AppId) -> Option<Vec<AppId>> {
        let items = self.strings(v, path)?;
        let group = app.group();
        let base: Vec<&str> = group.split('/').filter(|s| !s.is_empty()).collect();
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match AppId::parse_relative_to(item, &base) {
                Ok(id) => out.push(id),
                Err(e) => self.invalid(&format!("{path}({i})"), e.to_string()),
            }
        }
        Some(out)
    }

    /// Reads `container` in both forms; returns the pre-1.5
    /// `container.docker.network` separately (it becomes `networks`).
    fn container(&mut self, v: &Value, path: &str) -> Option<(Container, Option<NetworkMode>)> {
        let Value::Object(obj) = v else {
            self.wrong_type(path, "jsobject");
            return None;
        };
        let mut container = Container::default();
        let mut network = None;
        let mut docker_mappings: Option<Vec<PortMapping>> = None;
        let mut mappings: Option<Vec<PortMapping>> = None;
        for (key, value) in obj {
            if value.is_null() {
                continue;
            }
            let p = format!("{path}/{key}");
            match key.as_str() {
                "type" => set(&mut container.kind, self.typed::<ContainerType>(value, &p)),
                "portMappings" => mappings = self.typed(value, &p),
                "volumes" => set(&mut container.volumes, self.volumes(value, &p)),
                "docker" => {
                    let Value::Object(d) = value else {
                        self.wrong_type(&p, "jsobject");
                        continue;
                    };
                    let mut docker = DockerContainer::default();
                    for (dk, dv) in d {
                        if dv.is_null() {
                            continue;
                        }
                        let dp = format!("{p}/{dk}");
                        match dk.as_str() {
                            "image" => set(&mut docker.image, self.string(dv, &dp)),
                            "privileged" => set(&mut docker.privileged, self.boolean(dv, &dp)),
                            "forcePullImage" => set(&mut docker.force_pull_image, self.boolean(dv, &dp)),
                            "parameters" => set(
                                &mut docker.parameters,
                                self.typed::<Vec<DockerParameter>>(dv, &dp),
                            ),
                            "portMappings" => docker_mappings = self.typed(dv, &dp),
                            "network" => match self.string(dv, &dp).as_deref() {
                                Some("BRIDGE") => network = Some(NetworkMode::ContainerBridge),
                                Some("HOST") => network = Some(NetworkMode::Host),
                                Some("USER") => network = Some(NetworkMode::Container),
                                Some(other) => self.invalid(
                                    &dp,
                                    format!("unsupported network '{other}': use BRIDGE, HOST or USER"),
                                ),
                                None => {}
                            },
                            _ => {}
                        }
                    }
                    container.docker = Some(docker);
                }
                _ => {}
            }
        }
        container.port_mappings = match (mappings, docker_mappings) {
            (Some(m), _) if !m.is_empty() => m,
            (_, Some(m)) => m,
            (Some(m), None) => m,
            (None, None) => Vec::new(),
        };
        Some((container, network))
    }

    fn volumes(&mut self, v: &Value, path: &str) -> Option<Vec<Volume>> {
        let Value::Array(items) = v else {
            self.wrong_type(path, "jsarray");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}({i})");
            let Value::Object(obj) = item else {
                self.wrong_type(&p, "jsobject");
                continue;
            };
            let container_path = match obj.get("containerPath") {
                Some(v) => self.string(v, &format!("{p}/containerPath")).unwrap_or_default(),
                None => {
                    self.shape.add(format!("{p}/containerPath"), "error.path.missing");
                    String::new()
                }
            };
            let host_path = match obj.get("hostPath").filter(|v| !v.is_null()) {
                Some(v) => self.string(v, &format!("{p}/hostPath")),
                None => None,
            };
            let mode = match obj.get("mode").filter(|v| !v.is_null()) {
                Some(v) => self
                    .typed::<VolumeMode>(v, &format!("{p}/mode"))
                    .unwrap_or_default(),
                None => VolumeMode::default(),
            };
            out.push(Volume {
                container_path,
                host_path,
                mode,
            });
        }
        Some(out)
    }
}
