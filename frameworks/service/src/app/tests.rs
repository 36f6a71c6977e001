//! Tests of reading, validating, patching and writing app definitions.

use serde_json::{Value, json};

use super::*;

fn app(v: Value) -> AppDefinition {
    AppDefinition::from_value(&v).unwrap_or_else(|e| panic!("valid app refused: {e}"))
}

fn refused(v: Value) -> ValidationErrors {
    match AppDefinition::from_value(&v) {
        Ok(app) => panic!("invalid app accepted: {app:?}"),
        Err(e) => e,
    }
}

fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

// --- defaults -------------------------------------------------------------

#[test]
fn minimal_app_gets_marathons_defaults() {
    let a = app(json!({"id": "/web", "cmd": "sleep 100"}));
    assert_eq!(a.id.as_str(), "/web");
    assert_eq!(a.instances, 1);
    assert_eq!(a.cpus, 1.0);
    assert_eq!(a.mem, 128.0);
    assert_eq!(a.disk, 0.0);
    assert_eq!(a.gpus, 0);
    assert_eq!(a.backoff_seconds, 1);
    assert_eq!(a.backoff_factor, 1.15);
    assert_eq!(a.max_launch_delay_seconds, 300);
    assert_eq!(a.upgrade_strategy.minimum_health_capacity, 1.0);
    assert_eq!(a.upgrade_strategy.maximum_over_capacity, 1.0);
    assert_eq!(a.kill_selection, KillSelection::YoungestFirst);
    assert_eq!(a.network_mode(), NetworkMode::Host);
    assert!(!a.require_ports);
}

#[test]
fn host_app_without_ports_gets_one_dynamic_port() {
    let a = app(json!({"id": "/web", "cmd": "x"}));
    assert_eq!(a.port_definitions.len(), 1);
    assert_eq!(a.port_definitions[0].port, 0);
    assert_eq!(a.port_definitions[0].protocol, "tcp");
}

#[test]
fn explicit_empty_port_definitions_mean_no_ports() {
    let a = app(json!({"id": "/web", "cmd": "x", "portDefinitions": []}));
    assert!(a.port_definitions.is_empty());
}

#[test]
fn deprecated_ports_become_port_definitions() {
    let a = app(json!({"id": "/web", "cmd": "x", "ports": [0, 8080]}));
    let ports: Vec<u16> = a.port_definitions.iter().map(|d| d.port).collect();
    assert_eq!(ports, vec![0, 8080]);
}

#[test]
fn health_check_gets_marathons_defaults() {
    let a = app(json!({"id": "/web", "cmd": "x", "healthChecks": [{"protocol": "HTTP"}]}));
    let hc = &a.health_checks[0];
    assert_eq!(hc.grace_period_seconds, 300);
    assert_eq!(hc.interval_seconds, 60);
    assert_eq!(hc.timeout_seconds, 20);
    assert_eq!(hc.max_consecutive_failures, 3);
    assert_eq!(hc.delay_seconds, 15);
    assert!(!hc.ignore_http1xx);
    assert_eq!(hc.path.as_deref(), Some("/"));
    assert_eq!(hc.grace_period(), std::time::Duration::from_secs(300));
}

#[test]
fn health_check_without_port_index_on_a_one_port_app_probes_port_0() {
    let a = app(json!({"id": "/web", "cmd": "x", "healthChecks": [{"protocol": "TCP"}]}));
    assert_eq!(a.health_checks[0].port_index, Some(0));
}

#[test]
fn mesos_http_and_command_string_are_accepted() {
    let a = app(json!({"id": "/web", "cmd": "x", "healthChecks": [
        {"protocol": "MESOS_HTTP", "portIndex": 0},
        {"protocol": "COMMAND", "command": "true"},
        {"protocol": "COMMAND", "command": {"value": "exit 0"}},
    ]}));
    assert_eq!(a.health_checks[0].protocol, HealthCheckProtocol::Http);
    assert_eq!(a.health_checks[1].command.as_ref().unwrap().value, "true");
    assert_eq!(a.health_checks[2].command.as_ref().unwrap().value, "exit 0");
}

#[test]
fn relative_id_and_dependencies_are_resolved() {
    let a = app(json!({"id": "shop/web", "cmd": "x", "dependencies": ["db", "/cache"]}));
    assert_eq!(a.id.as_str(), "/shop/web");
    let deps: Vec<&str> = a.dependencies.iter().map(AppId::as_str).collect();
    assert_eq!(deps, vec!["/shop/db", "/cache"]);
}

#[test]
fn unknown_fields_are_ignored_as_marathon_ignores_them() {
    let a = app(json!({"id": "/web", "cmd": "x", "frobnicate": true, "cpu": 7}));
    assert_eq!(a.cpus, 1.0);
}

#[test]
fn uris_become_fetch_entries() {
    let a = app(json!({"id": "/web", "cmd": "x", "uris": ["http://example.com/a.tgz"]}));
    assert_eq!(a.fetch[0].uri, "http://example.com/a.tgz");
    assert!(a.fetch[0].extract);
}

// --- bad input ------------------------------------------------------------

#[test]
fn negative_cpus_is_refused_at_cpus() {
    let e = refused(json!({"id": "/web", "cmd": "x", "cpus": -1}));
    assert_eq!(e.message, "Object is not valid");
    assert_eq!(e.at("/cpus"), vec!["got -1.0, expected 0.0 or more"]);
}

#[test]
fn negative_mem_and_disk_are_refused_at_their_paths() {
    let e = refused(json!({"id": "/web", "cmd": "x", "mem": -3.5, "disk": -1}));
    assert_eq!(e.at("/mem"), vec!["got -3.5, expected 0.0 or more"]);
    assert_eq!(e.at("/disk"), vec!["got -1.0, expected 0.0 or more"]);
}

#[test]
fn negative_instances_is_refused_at_instances() {
    let e = refused(json!({"id": "/web", "cmd": "x", "instances": -3}));
    assert_eq!(e.message, "Object is not valid");
    assert_eq!(e.at("/instances"), vec!["got -3, expected 0 or more"]);
}

#[test]
fn bad_id_path_is_refused_at_id() {
    let e = refused(json!({"id": "/Shop_Web", "cmd": "x"}));
    let errors = e.at("/id");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("must fully match regular expression"),
        "{errors:?}"
    );
}

#[test]
fn root_id_is_refused() {
    let e = refused(json!({"id": "/", "cmd": "x"}));
    assert_eq!(e.at("/id"), vec!["Path must contain at least one path element"]);
}

#[test]
fn missing_id_is_refused() {
    let e = refused(json!({"cmd": "x"}));
    assert_eq!(e.message, "Invalid JSON");
    assert_eq!(e.at("/id"), vec!["error.path.missing"]);
}

#[test]
fn unknown_constraint_operator_is_refused_at_its_index() {
    let e = refused(
        json!({"id": "/web", "cmd": "x", "constraints": [["hostname", "UNIQUE"], ["rack", "NEAR", "a"]]}),
    );
    assert_eq!(e.message, "Object is not valid");
    let errors = e.at("/constraints(1)");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("Constraint operator must be one of the following"),
        "{errors:?}"
    );
    assert!(e.at("/constraints(0)").is_empty());
}

#[test]
fn constraint_of_wrong_arity_is_refused() {
    let e = refused(json!({"id": "/web", "cmd": "x", "constraints": [["hostname"]]}));
    assert_eq!(
        e.at("/constraints(0)"),
        vec!["Each constraint must have either 2 or 3 fields"]
    );
}

#[test]
fn constraint_values_are_checked_per_operator() {
    let cases = [
        (json!(["hostname", "UNIQUE", "x"]), "Value specified but not used"),
        (json!(["rack", "CLUSTER"]), "Missing value"),
        (json!(["rack", "IS"]), "Missing value"),
        (
            json!(["rack", "GROUP_BY", "two"]),
            "Value was specified but is not a number",
        ),
        (
            json!(["rack", "MAX_PER"]),
            "Value was not specified or is not a number",
        ),
        (
            json!(["rack", "LIKE"]),
            "A regular expression value must be provided",
        ),
        (
            json!(["rack", "UNLIKE", "(a"]),
            "'(a' is not a valid regular expression",
        ),
    ];
    for (constraint, message) in cases {
        let e = refused(json!({"id": "/web", "cmd": "x", "constraints": [constraint.clone()]}));
        assert_eq!(e.at("/constraints(0)"), vec![message], "{constraint}");
    }
}

#[test]
fn constraint_value_may_be_a_json_number() {
    let a = app(json!({"id": "/web", "cmd": "x", "constraints": [["rack", "GROUP_BY", 3]]}));
    assert_eq!(a.constraints[0].value.as_deref(), Some("3"));
}

#[test]
fn health_check_on_a_port_index_the_app_lacks_is_refused() {
    let e = refused(json!({"id": "/web", "cmd": "x", "portDefinitions": [{"port": 0}],
        "healthChecks": [{"protocol": "HTTP", "portIndex": 0}, {"protocol": "HTTP", "portIndex": 1}]}));
    assert_eq!(e.at("/healthChecks(1)"), vec![HEALTH_CHECK_PORT_INDEX]);
    assert!(e.at("/healthChecks(0)").is_empty());
}

#[test]
fn health_check_of_an_app_without_ports_needs_a_fixed_port() {
    let e = refused(json!({"id": "/web", "cmd": "x", "portDefinitions": [],
        "healthChecks": [{"protocol": "TCP"}]}));
    assert_eq!(e.at("/healthChecks(0)"), vec![HEALTH_CHECK_PORT_INDEX]);
    app(
        json!({"id": "/web", "cmd": "x", "portDefinitions": [], "healthChecks": [{"protocol": "TCP", "port": 22}]}),
    );
}

#[test]
fn https_health_checks_are_refused_naming_the_protocol() {
    let e = refused(json!({"id": "/web", "cmd": "x", "portDefinitions": [{"port": 0}],
        "healthChecks": [{"protocol": "HTTPS", "portIndex": 0}]}));
    assert!(e.at("/healthChecks(0)/protocol")[0].contains("HTTPS"));
}

#[test]
fn command_health_check_needs_a_command() {
    let e = refused(json!({"id": "/web", "cmd": "x", "healthChecks": [{"protocol": "COMMAND"}]}));
    assert!(!e.at("/healthChecks(0)/command").is_empty());
}

#[test]
fn cmd_and_args_together_are_refused() {
    let e = refused(json!({"id": "/web", "cmd": "x", "args": ["y"]}));
    assert_eq!(e.at("/"), vec![CMD_ARGS_OR_CONTAINER]);
}

#[test]
fn neither_cmd_args_nor_container_is_refused() {
    let e = refused(json!({"id": "/web"}));
    assert_eq!(e.at("/"), vec![CMD_ARGS_OR_CONTAINER]);
}

#[test]
fn docker_image_alone_is_enough_to_run() {
    let a = app(json!({"id": "/web", "container": {"type": "DOCKER", "docker": {"image": "nginx"}}}));
    assert_eq!(a.container.unwrap().docker.unwrap().image, "nginx");
}

#[test]
fn empty_docker_image_is_refused() {
    let e =
        refused(json!({"id": "/web", "cmd": "x", "container": {"type": "DOCKER", "docker": {"image": ""}}}));
    assert_eq!(e.at("/container/docker/image"), vec!["must not be empty"]);
}

#[test]
fn upgrade_strategy_outside_0_to_1_is_refused() {
    let e = refused(json!({"id": "/web", "cmd": "x",
        "upgradeStrategy": {"minimumHealthCapacity": 1.5, "maximumOverCapacity": -0.1}}));
    assert_eq!(
        e.at("/upgradeStrategy/minimumHealthCapacity"),
        vec!["got 1.5, expected 1.0 or less"]
    );
    assert_eq!(
        e.at("/upgradeStrategy/maximumOverCapacity"),
        vec!["got -0.1, expected 0.0 or more"]
    );
}

#[test]
fn backoff_factor_below_1_is_refused() {
    let e = refused(json!({"id": "/web", "cmd": "x", "backoffFactor": 0.5}));
    assert_eq!(e.at("/backoffFactor"), vec!["got 0.5, expected 1.0 or more"]);
}

#[test]
fn wrong_json_type_is_invalid_json_at_the_field() {
    let e = refused(json!({"id": "/web", "cmd": "x", "cpus": "one", "env": {"A": 1}}));
    assert_eq!(e.message, "Invalid JSON");
    assert_eq!(e.at("/cpus"), vec!["error.expected.jsnumber"]);
    assert_eq!(e.at("/env(A)"), vec!["error.expected.jsstring"]);
}

#[test]
fn malformed_json_is_refused_not_panicking() {
    let e = AppDefinition::from_json(b"{\"id\": ").unwrap_err();
    assert_eq!(e.message, "Invalid JSON");
    let e = AppDefinition::from_json(b"[1, 2]").unwrap_err();
    assert_eq!(e.at("/"), vec!["error.expected.jsobject"]);
}

#[test]
fn validation_errors_serialize_to_marathons_422_body() {
    let e = refused(json!({"id": "/web", "cmd": "x", "cpus": -1}));
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        json!({"message": "Object is not valid", "details": [{"path": "/cpus", "errors": ["got -1.0, expected 0.0 or more"]}]})
    );
}

#[test]
fn port_definitions_on_bridge_networking_are_refused() {
    let e = refused(json!({"id": "/web", "cmd": "x", "portDefinitions": [{"port": 0}],
        "container": {"docker": {"image": "nginx", "network": "BRIDGE"}}}));
    assert_eq!(
        e.at("/"),
        vec!["portDefinitions are only allowed with host-networking"]
    );
}

#[test]
fn duplicate_port_names_are_refused() {
    let e = refused(json!({"id": "/web", "cmd": "x",
        "portDefinitions": [{"port": 0, "name": "http"}, {"port": 0, "name": "http"}]}));
    assert_eq!(e.at("/portDefinitions"), vec!["Port names must be unique."]);
}

// --- container forms ------------------------------------------------------

fn pre_1_5_bridge_app() -> Value {
    json!({"id": "/web", "container": {"type": "DOCKER", "docker": {
        "image": "nginx", "network": "BRIDGE",
        "portMappings": [{"containerPort": 80, "hostPort": 0, "protocol": "tcp", "name": "http"}]}}})
}

fn current_bridge_app() -> Value {
    json!({"id": "/web", "networks": [{"mode": "container/bridge"}], "container": {"type": "DOCKER",
        "docker": {"image": "nginx"},
        "portMappings": [{"containerPort": 80, "hostPort": 0, "protocol": "tcp", "name": "http"}]}})
}

#[test]
fn pre_1_5_docker_port_mappings_are_accepted() {
    let a = app(pre_1_5_bridge_app());
    assert_eq!(a.network_mode(), NetworkMode::ContainerBridge);
    assert_eq!(a.port_mappings().len(), 1);
    assert_eq!(a.port_mappings()[0].container_port, 80);
    assert!(a.port_definitions.is_empty());
}

#[test]
fn both_port_mapping_forms_give_the_same_app() {
    assert_eq!(app(pre_1_5_bridge_app()), app(current_bridge_app()));
}

#[test]
fn bridge_mapping_without_host_port_gets_a_dynamic_one() {
    let a = app(
        json!({"id": "/web", "networks": [{"mode": "container/bridge"}], "container": {
        "docker": {"image": "nginx"}, "portMappings": [{"containerPort": 80}]}}),
    );
    assert_eq!(a.port_mappings()[0].host_port, Some(0));
}

#[test]
fn docker_network_together_with_networks_is_refused() {
    let e = refused(json!({"id": "/web", "networks": [{"mode": "host"}],
        "container": {"docker": {"image": "nginx", "network": "HOST"}}}));
    assert_eq!(
        e.at("/"),
        vec!["must not specify both container.docker.network and networks"]
    );
}

#[test]
fn port_mappings_on_host_networking_are_refused() {
    let e = refused(json!({"id": "/web", "container": {"docker": {"image": "nginx"},
        "portMappings": [{"containerPort": 80}]}}));
    assert_eq!(
        e.at("/"),
        vec!["portMappings are not allowed with host-networking"]
    );
}

#[test]
fn output_uses_the_current_container_form() {
    let out = app(pre_1_5_bridge_app()).to_json();
    assert_eq!(out["networks"], json!([{"mode": "container/bridge"}]));
    assert_eq!(out["container"]["portMappings"][0]["containerPort"], json!(80));
    assert_eq!(out["container"]["portMappings"][0]["hostPort"], json!(0));
    assert!(out["container"]["docker"].get("portMappings").is_none());
    assert!(out["container"]["docker"].get("network").is_none());
}

// --- output ----------------------------------------------------------------

/// The parameters of `MarathonApp.__init__` in the marathon 0.13 Python
/// client (site-packages/marathon/models/app.py), camelCased as its
/// `from_json` expects them. The client rejects any other key.
pub(crate) const MARATHON_0_13_APP_PARAMS: [&str; 48] = [
    "acceptedResourceRoles",
    "args",
    "backoffFactor",
    "backoffSeconds",
    "cmd",
    "constraints",
    "container",
    "cpus",
    "dependencies",
    "deployments",
    "disk",
    "env",
    "executor",
    "healthChecks",
    "id",
    "role",
    "instances",
    "killSelection",
    "labels",
    "lastTaskFailure",
    "maxLaunchDelaySeconds",
    "mem",
    "ports",
    "requirePorts",
    "storeUrls",
    "taskRateLimit",
    "tasks",
    "tasksRunning",
    "tasksStaged",
    "tasksHealthy",
    "taskKillGracePeriodSeconds",
    "tasksUnhealthy",
    "upgradeStrategy",
    "unreachableStrategy",
    "uris",
    "user",
    "version",
    "versionInfo",
    "ipAddress",
    "fetch",
    "taskStats",
    "readinessChecks",
    "readinessCheckResults",
    "secrets",
    "portDefinitions",
    "residency",
    "gpus",
    "networks",
];

/// `MarathonContainer.__init__` (site-packages/marathon/models/container.py).
const MARATHON_0_13_CONTAINER_PARAMS: [&str; 4] = ["docker", "type", "portMappings", "volumes"];
/// `MarathonContainerPortMapping.__init__` (same file).
const MARATHON_0_13_PORT_MAPPING_PARAMS: [&str; 6] = [
    "name",
    "containerPort",
    "hostPort",
    "servicePort",
    "protocol",
    "labels",
];
/// `MarathonContainerVolume.__init__` (same file).
const MARATHON_0_13_VOLUME_PARAMS: [&str; 5] =
    ["containerPath", "hostPath", "mode", "persistent", "external"];
/// `PortDefinition.__init__` (site-packages/marathon/models/app.py).
const MARATHON_0_13_PORT_DEFINITION_PARAMS: [&str; 4] = ["port", "protocol", "name", "labels"];
/// `MarathonUpgradeStrategy.__init__` (app.py).
const MARATHON_0_13_UPGRADE_PARAMS: [&str; 2] = ["maximumOverCapacity", "minimumHealthCapacity"];
/// `MarathonUnreachableStrategy.__init__` (app.py).
const MARATHON_0_13_UNREACHABLE_PARAMS: [&str; 4] = [
    "unreachableInactiveAfterSeconds",
    "unreachableExpungeAfterSeconds",
    "inactiveAfterSeconds",
    "expungeAfterSeconds",
];
/// `MarathonAppVersionInfo.__init__` (app.py).
const MARATHON_0_13_VERSION_INFO_PARAMS: [&str; 2] = ["lastScalingAt", "lastConfigChangeAt"];

fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn assert_keys_within(v: &Value, allowed: &[&str], what: &str) {
    for key in keys(v) {
        assert!(
            allowed.contains(&key.as_str()),
            "{what} key {key:?} is not accepted by marathon 0.13"
        );
    }
}

/// An app that sets every field `to_json` can emit.
fn full_app() -> AppDefinition {
    let mut a = app(json!({
        "id": "/shop/web", "cmd": "python3 -m http.server $PORT0", "user": "nobody",
        "instances": 3, "cpus": 0.5, "mem": 64, "disk": 10, "gpus": 0,
        "env": {"A": "1"}, "labels": {"team": "shop"},
        "networks": [{"mode": "container/bridge"}],
        "container": {"type": "DOCKER", "docker": {"image": "nginx", "privileged": false,
            "parameters": [{"key": "label", "value": "a=b"}], "forcePullImage": true},
            "portMappings": [{"containerPort": 80, "hostPort": 0, "servicePort": 10000, "name": "http",
                "labels": {"x": "y"}}],
            "volumes": [{"containerPath": "/data", "hostPath": "/tmp", "mode": "RO"}]},
        "constraints": [["hostname", "UNIQUE"]], "acceptedResourceRoles": ["*"], "role": "prod",
        "healthChecks": [{"protocol": "HTTP", "portIndex": 0, "path": "/health"}],
        "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.2},
        "unreachableStrategy": {"inactiveAfterSeconds": 10, "expungeAfterSeconds": 20},
        "backoffSeconds": 2, "backoffFactor": 2.0, "maxLaunchDelaySeconds": 60,
        "killSelection": "OLDEST_FIRST", "taskKillGracePeriodSeconds": 5,
        "dependencies": ["/shop/db"], "uris": ["http://example.com/x"],
    }));
    a = a.versioned(ts("2026-11-22T10:15:30.042917Z"), None);
    a
}

#[test]
fn emitted_keys_are_all_accepted_by_marathon_0_13_client() {
    for a in [full_app(), app(json!({"id": "/x", "cmd": "y"}))] {
        let out = a.to_json();
        assert_keys_within(&out, &MARATHON_0_13_APP_PARAMS, "app");
        assert_keys_within(&out, &APP_OUTPUT_KEYS, "app");
        for key in APP_OUTPUT_KEYS {
            assert!(MARATHON_0_13_APP_PARAMS.contains(&key), "{key} would be rejected");
        }
    }
}

#[test]
fn emitted_nested_objects_are_accepted_by_marathon_0_13_client() {
    let out = full_app().to_json();
    let container = &out["container"];
    assert_keys_within(container, &MARATHON_0_13_CONTAINER_PARAMS, "container");
    assert_keys_within(
        &container["portMappings"][0],
        &MARATHON_0_13_PORT_MAPPING_PARAMS,
        "portMapping",
    );
    assert_keys_within(&container["volumes"][0], &MARATHON_0_13_VOLUME_PARAMS, "volume");
    assert_keys_within(
        &out["upgradeStrategy"],
        &MARATHON_0_13_UPGRADE_PARAMS,
        "upgradeStrategy",
    );
    assert_keys_within(
        &out["unreachableStrategy"],
        &MARATHON_0_13_UNREACHABLE_PARAMS,
        "unreachableStrategy",
    );
    assert_keys_within(
        &out["versionInfo"],
        &MARATHON_0_13_VERSION_INFO_PARAMS,
        "versionInfo",
    );
    let host =
        app(json!({"id": "/x", "cmd": "y", "portDefinitions": [{"port": 0, "name": "http"}]})).to_json();
    assert_keys_within(
        &host["portDefinitions"][0],
        &MARATHON_0_13_PORT_DEFINITION_PARAMS,
        "portDefinition",
    );
    // MarathonContainer accepts only these types and volume modes.
    assert!(["DOCKER", "MESOS"].contains(&container["type"].as_str().unwrap()));
    assert!(["RO", "RW"].contains(&container["volumes"][0]["mode"].as_str().unwrap()));
    assert!(["tcp", "udp", "udp,tcp"].contains(&container["portMappings"][0]["protocol"].as_str().unwrap()));
    assert!(["YOUNGEST_FIRST", "OLDEST_FIRST"].contains(&out["killSelection"].as_str().unwrap()));
}

#[test]
fn emitted_fields_have_marathons_values() {
    let out = full_app().to_json();
    assert_eq!(out["id"], json!("/shop/web"));
    assert_eq!(out["constraints"], json!([["hostname", "UNIQUE"]]));
    assert_eq!(out["version"], json!("2026-11-22T10:15:30.042Z"));
    assert_eq!(
        out["versionInfo"]["lastConfigChangeAt"],
        json!("2026-11-22T10:15:30.042Z")
    );
    assert_eq!(out["healthChecks"][0]["protocol"], json!("HTTP"));
    assert_eq!(out["healthChecks"][0]["gracePeriodSeconds"], json!(300));
    assert_eq!(
        out["unreachableStrategy"],
        json!({"inactiveAfterSeconds": 10, "expungeAfterSeconds": 20})
    );
    assert_eq!(out["fetch"][0]["uri"], json!("http://example.com/x"));
    assert_eq!(out["container"]["docker"]["image"], json!("nginx"));
}

#[test]
fn disabled_unreachable_strategy_round_trips() {
    let a = app(json!({"id": "/x", "cmd": "y", "unreachableStrategy": "disabled"}));
    assert_eq!(a.unreachable_strategy.inactive_after(), None);
    assert_eq!(a.to_json()["unreachableStrategy"], json!("disabled"));
}

#[test]
fn output_reads_back_as_the_same_app() {
    let a = full_app();
    let mut back = AppDefinition::from_value(&a.to_json()).unwrap();
    back.version = a.version;
    back.version_info = a.version_info;
    assert_eq!(back, a);
}

#[test]
fn storage_form_round_trips_exactly() {
    let a = full_app();
    let stored = serde_json::to_vec(&a).unwrap();
    let back: AppDefinition = serde_json::from_slice(&stored).unwrap();
    assert_eq!(back, a);
}

// --- partial updates ------------------------------------------------------

#[test]
fn patch_replaces_present_fields_and_keeps_absent_ones() {
    let a = full_app();
    let b = a.patched(&json!({"instances": 7, "env": {"B": "2"}})).unwrap();
    assert_eq!(b.instances, 7);
    assert_eq!(b.env.get("B").map(String::as_str), Some("2"));
    assert!(!b.env.contains_key("A"));
    assert_eq!(b.cmd, a.cmd);
    assert_eq!(b.container, a.container);
    assert_eq!(b.health_checks, a.health_checks);
}

#[test]
fn patch_with_null_keeps_the_field() {
    let a = full_app();
    let b = a.patched(&json!({"cmd": null, "cpus": null})).unwrap();
    assert_eq!(b, a);
}

#[test]
fn patch_ignores_id_and_read_only_fields_a_client_echoes() {
    let a = full_app();
    let mut echoed = a.to_json();
    echoed["tasks"] = json!([]);
    echoed["tasksRunning"] = json!(3);
    echoed["deployments"] = json!([{"id": "d1"}]);
    echoed["versionInfo"] = json!({"lastScalingAt": "2020-01-01T00:00:00.000Z"});
    echoed["id"] = json!("/other");
    let b = a.patched(&echoed).unwrap();
    assert_eq!(b, a);
}

#[test]
fn patch_setting_args_drops_cmd() {
    let a = app(json!({"id": "/x", "cmd": "sleep 1"}));
    let b = a.patched(&json!({"args": ["sleep", "2"]})).unwrap();
    assert_eq!(b.cmd, None);
    assert_eq!(b.args, vec!["sleep", "2"]);
    let c = b.patched(&json!({"cmd": "sleep 3"})).unwrap();
    assert!(c.args.is_empty());
}

#[test]
fn invalid_patch_is_refused_with_the_field_path() {
    let a = full_app();
    let e = a.patched(&json!({"cpus": -2})).unwrap_err();
    assert_eq!(e.at("/cpus"), vec!["got -2.0, expected 0.0 or more"]);
}

#[test]
fn patch_can_switch_to_the_pre_1_5_bridge_form() {
    let a = app(json!({"id": "/x", "cmd": "y"}));
    let b = a
        .patched(
            &json!({"portDefinitions": [], "container": {"docker": {"image": "nginx", "network": "BRIDGE",
            "portMappings": [{"containerPort": 80}]}}}),
        )
        .unwrap();
    assert_eq!(b.network_mode(), NetworkMode::ContainerBridge);
    assert_eq!(b.port_mappings()[0].host_port, Some(0));
}

#[test]
fn scale_only_change_is_recognised() {
    let a = full_app();
    let scaled = a.patched(&json!({"instances": 9})).unwrap();
    assert!(a.is_scale_only_change(&scaled));
    let changed = a.patched(&json!({"instances": 9, "cmd": "other"})).unwrap();
    assert!(!a.is_scale_only_change(&changed));
}

#[test]
fn versioned_scale_keeps_last_config_change() {
    let a = full_app();
    let at = ts("2026-12-01T00:00:00Z");
    let scaled = a
        .patched(&json!({"instances": 9}))
        .unwrap()
        .versioned(at, Some(&a));
    let info = scaled.version_info.unwrap();
    assert_eq!(info.last_scaling_at, at);
    assert_eq!(
        info.last_config_change_at,
        a.version_info.unwrap().last_config_change_at
    );
    let changed = a
        .patched(&json!({"cmd": "other"}))
        .unwrap()
        .versioned(at, Some(&a));
    assert_eq!(changed.version_info.unwrap().last_config_change_at, at);
}

#[test]
fn rollback_body_names_the_version() {
    let v = AppDefinition::rollback_version(&json!({"version": "2026-11-22T10:15:30.042Z"})).unwrap();
    assert_eq!(v, Some(ts("2026-11-22T10:15:30.042Z")));
    assert_eq!(
        AppDefinition::rollback_version(&json!({"instances": 2})).unwrap(),
        None
    );
    let e = AppDefinition::rollback_version(&json!({"version": "2026-11-22T10:15:30.042Z", "cmd": "x"}))
        .unwrap_err();
    assert_eq!(
        e.at("/"),
        vec!["The 'version' field may only be combined with the 'id' field."]
    );
}

#[test]
fn put_of_a_new_app_takes_the_id_from_the_url() {
    let id = AppId::parse("/new").unwrap();
    let a = AppDefinition::from_value_with_id(&json!({"id": "/ignored", "cmd": "x"}), &id).unwrap();
    assert_eq!(a.id, id);
}

#[test]
fn unreachable_strategy_takes_defaults_and_refuses_expunge_before_inactive() {
    let a = app(json!({"id": "/x", "cmd": "y", "unreachableStrategy": {"expungeAfterSeconds": 30}}));
    assert_eq!(
        a.unreachable_strategy.inactive_after(),
        Some(std::time::Duration::ZERO)
    );
    assert_eq!(
        a.unreachable_strategy.expunge_after(),
        Some(std::time::Duration::from_secs(30))
    );
    let e = refused(json!({"id": "/x", "cmd": "y",
        "unreachableStrategy": {"inactiveAfterSeconds": 30, "expungeAfterSeconds": 10}}));
    assert!(!e.at("/unreachableStrategy/expungeAfterSeconds").is_empty());
}

#[test]
fn health_check_deserializes_with_marathons_defaults() {
    let hc: HealthCheck = serde_json::from_value(json!({"protocol": "COMMAND", "command": "true"})).unwrap();
    assert_eq!(hc.command.unwrap().value, "true");
    assert_eq!(hc.interval_seconds, 60);
}
