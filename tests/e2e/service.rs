//! The service and cron frameworks as separate processes (`agora service`,
//! `agora cron`) on a real master and agent: the service framework crashes
//! in the middle of a rolling update and finishes it after a restart,
//! restarts without touching running tasks, and the `agora app` / `agora
//! job` command lines drive both frameworks.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

use crate::harness::*;
use crate::rest::*;

/// How long a deployment of a few `sleep` tasks may take on a loaded box.
const DEPLOYMENT: Duration = Duration::from_secs(60);

/// Starts `agora service` against the cluster's master with its state in
/// `<test dir>/service`; answers once its API listens.
async fn start_service(cluster: &Cluster) -> Process {
    let work_dir = cluster.dir.path().join("service");
    let args = vec![
        "service".to_string(),
        "--master".into(),
        cluster.master.addr.to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--work-dir".into(),
        work_dir.display().to_string(),
        "--name".into(),
        "e2e-service".into(),
    ];
    let service = Process::start(cluster.dir.path(), "service", args).await;
    let address = logged_address(&service.log, "service framework API listening").await;
    assert_eq!(address, service.addr);
    service
}

/// Starts `agora cron` against the cluster's master with its state in
/// `<test dir>/cron`.
async fn start_cron(cluster: &Cluster) -> Process {
    let work_dir = cluster.dir.path().join("cron");
    let args = vec![
        "cron".to_string(),
        "--master".into(),
        cluster.master.addr.to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--work-dir".into(),
        work_dir.display().to_string(),
    ];
    Process::start(cluster.dir.path(), "cron", args).await
}

/// Sends a request with an optional JSON body; answers the status and the
/// body as JSON (`Null` when empty).
async fn call(method: Method, url: &str, body: Option<&Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method.clone(), url);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.expect("response body");
    let value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {url} answered {text:?}: {e}"))
    };
    (status, value)
}

/// The service framework's id once it has subscribed.
async fn subscribed(service: &Process) -> String {
    until("the service framework to subscribe", SOON, || async {
        let info = http_json(&url(service, "/v2/info")).await;
        info["frameworkId"].as_str().map(str::to_owned)
    })
    .await
}

async fn app_tasks(service: &Process, app: &str) -> Vec<AppTask> {
    let body = http_json(&url(service, &format!("/v2/apps{app}/tasks"))).await;
    let tasks = body["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("no tasks in {body}"));
    app_tasks_in(tasks)
}

async fn deployments(service: &Process) -> Vec<Value> {
    http_json(&url(service, "/v2/deployments"))
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until `app` has exactly `n` running tasks, all of `version` (any
/// version when `None`), and no deployment runs.
async fn settled(service: &Process, app: &str, n: usize, version: Option<&str>) -> Vec<AppTask> {
    let deadline = Instant::now() + DEPLOYMENT;
    loop {
        let tasks = app_tasks(service, app).await;
        let running = deployments(service).await;
        if tasks.len() == n
            && tasks
                .iter()
                .all(|t| t.state == "TASK_RUNNING" && version.is_none_or(|v| t.version == v))
            && running.is_empty()
        {
            return tasks;
        }
        assert!(
            Instant::now() < deadline,
            "{app} never settled at {n} tasks of version {version:?}: tasks {tasks:#?}, deployments {running:#?}"
        );
        sleep(Duration::from_millis(100)).await;
    }
}

/// The ids of the master's tasks of `framework` that are not terminal.
async fn live_master_tasks(cluster: &Cluster, framework: &str) -> BTreeSet<String> {
    let state = cluster.state().await;
    state["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|t| t["framework_id"] == framework)
        .filter(|t| !TERMINAL.contains(&t["state"].as_str().unwrap_or_default()))
        .map(|t| t["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The ids of the master's frameworks.
async fn master_frameworks(cluster: &Cluster) -> Vec<String> {
    cluster.state().await["frameworks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|f| f["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// An app of `n` `sleep` tasks that write their pid to `$MESOS_SANDBOX/pid`.
fn sleeper(id: &str, n: u32) -> Value {
    json!({
        "id": id,
        "cmd": "echo $$ > pid; exec sleep 1000",
        "instances": n,
        "cpus": 0.1,
        "mem": 32,
    })
}

async fn pids(cluster: &Cluster, tasks: &[AppTask]) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for t in tasks {
        out.push((t.id.clone(), task_pid(cluster, &t.id).await));
    }
    out
}

/// Creates an app through `POST /v2/apps`; answers its version.
async fn create_app(service: &Process, app: &Value) -> String {
    let (status, body) = call(Method::POST, &url(service, "/v2/apps"), Some(app)).await;
    assert_eq!(status, 201, "{body}");
    body["version"].as_str().expect("version").to_owned()
}

#[tokio::test]
async fn a_service_framework_killed_mid_rolling_update_finishes_it_after_a_restart() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    cluster.wait_agents(1).await;
    let mut service = start_service(&cluster).await;
    let framework = subscribed(&service).await;
    let app = "/rolling";
    let v1 = create_app(&service, &sleeper(app, 4)).await;
    let old = settled(&service, app, 4, Some(&v1)).await;
    let old_pids = pids(&cluster, &old).await;

    // The new version turns healthy only once the gate file exists, so the
    // update stops half way: 2 old tasks killed, 2 new ones running but not
    // yet healthy, 2 old ones kept for minimumHealthCapacity 0.5.
    let gate = cluster.dir.path().join("gate");
    let update = gated_update(&gate);
    let (status, body) = call(
        Method::PUT,
        &url(&service, &format!("/v2/apps{app}")),
        Some(&update),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v2 = body["version"].as_str().expect("version").to_owned();
    let deployment = body["deploymentId"].as_str().expect("deploymentId").to_owned();
    let deadline = Instant::now() + DEPLOYMENT;
    let halfway = loop {
        let tasks = app_tasks(&service, app).await;
        let running = |version: &str| {
            tasks
                .iter()
                .filter(|t| t.version == version && t.state == "TASK_RUNNING")
                .count()
        };
        if tasks.len() == 4 && running(&v2) == 2 && running(&v1) == 2 {
            break tasks;
        }
        assert!(
            Instant::now() < deadline,
            "the update never got half way: {tasks:#?}"
        );
        sleep(Duration::from_millis(100)).await;
    };
    let new_before: Vec<AppTask> = halfway.iter().filter(|t| t.version == v2).cloned().collect();
    let new_pids = pids(&cluster, &new_before).await;

    service.crash();
    service.restart().await;

    assert_eq!(subscribed(&service).await, framework, "a new framework id");
    let versions = http_json(&url(&service, &format!("/v2/apps{app}/versions"))).await;
    let versions: BTreeSet<&str> = versions["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(versions, BTreeSet::from([v1.as_str(), v2.as_str()]));
    let running: Vec<String> = deployments(&service)
        .await
        .iter()
        .filter_map(|d| d["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(running, vec![deployment.clone()], "the deployment was lost");
    assert_eq!(
        ids(&app_tasks(&service, app).await),
        ids(&halfway),
        "tasks changed before the new ones turned healthy"
    );

    std::fs::write(&gate, b"").expect("open the gate");
    let done = settled(&service, app, 4, Some(&v2)).await;

    let done_ids = ids(&done);
    for (id, pid) in &new_pids {
        assert!(done_ids.contains(id), "{id} was replaced: {done:?}");
        assert!(pid_alive(*pid), "{id}'s process was restarted");
    }
    for (id, pid) in &old_pids {
        assert!(!done_ids.contains(id), "old task {id} still listed");
        until(&format!("old task {id} to exit"), SOON, || async {
            (!pid_alive(*pid)).then_some(())
        })
        .await;
    }
    assert_eq!(
        live_master_tasks(&cluster, &framework).await,
        done_ids,
        "the master runs other tasks than the app's"
    );
    // And it stays so: no late launch of a task lost track of.
    sleep(Duration::from_secs(2)).await;
    assert_eq!(live_master_tasks(&cluster, &framework).await, done_ids);
    assert_eq!(master_frameworks(&cluster).await, vec![framework]);
}

#[tokio::test]
async fn a_service_framework_killed_just_after_an_update_leaves_no_orphan_task() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    cluster.wait_agents(1).await;
    let mut service = start_service(&cluster).await;
    let framework = subscribed(&service).await;
    let app = "/abrupt";
    let v1 = create_app(&service, &sleeper(app, 4)).await;
    let old = settled(&service, app, 4, Some(&v1)).await;
    let old_pids = pids(&cluster, &old).await;

    let update = json!({
        "cmd": "echo $$ > pid; exec sleep 1002",
        "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.0},
    });
    let (status, body) = call(
        Method::PUT,
        &url(&service, &format!("/v2/apps{app}")),
        Some(&update),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v2 = body["version"].as_str().expect("version").to_owned();
    // The answer comes once the deployment is stored and the first kills
    // are sent: their updates and the launches that follow are in flight.
    service.crash();
    service.restart().await;

    let done = settled(&service, app, 4, Some(&v2)).await;
    for (id, pid) in &old_pids {
        until(&format!("old task {id} to exit"), SOON, || async {
            (!pid_alive(*pid)).then_some(())
        })
        .await;
    }
    let done_ids = ids(&done);
    until("the master to run just the app's tasks", SOON, || async {
        (live_master_tasks(&cluster, &framework).await == done_ids).then_some(())
    })
    .await;
    sleep(Duration::from_secs(2)).await;
    assert_eq!(live_master_tasks(&cluster, &framework).await, done_ids);
    assert_eq!(ids(&app_tasks(&service, app).await), done_ids);
    assert_eq!(master_frameworks(&cluster).await, vec![framework]);
}

#[tokio::test]
async fn a_restarted_service_framework_keeps_its_apps_tasks_and_framework_id() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    cluster.wait_agents(1).await;
    let mut service = start_service(&cluster).await;
    let framework = subscribed(&service).await;
    let app = "/steady";
    let version = create_app(&service, &sleeper(app, 3)).await;
    let before = settled(&service, app, 3, Some(&version)).await;
    let before_pids = pids(&cluster, &before).await;

    service.crash();
    service.restart().await;

    assert_eq!(subscribed(&service).await, framework);
    until(
        "the master to see the framework connected again",
        SOON,
        || async {
            let state = cluster.state().await;
            let frameworks = state["frameworks"].as_array().cloned().unwrap_or_default();
            (frameworks.len() == 1 && frameworks[0]["status"] == "connected").then_some(())
        },
    )
    .await;
    // Time for reconciliation to (wrongly) kill or launch something.
    sleep(Duration::from_secs(3)).await;

    let apps = http_json(&url(&service, "/v2/apps")).await;
    let listed: Vec<&str> = apps["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(listed, vec![app]);
    assert_eq!(apps["apps"][0]["version"], version.as_str());
    let after = settled(&service, app, 3, Some(&version)).await;
    assert_eq!(after, before, "tasks were replaced");
    for (id, pid) in &before_pids {
        assert!(pid_alive(*pid), "{id}'s process was restarted");
        assert_eq!(task_pid(&cluster, id).await, *pid);
    }
    assert_eq!(live_master_tasks(&cluster, &framework).await, ids(&before));
    assert_eq!(master_frameworks(&cluster).await, vec![framework.clone()]);
    let state = cluster.state().await;
    let ended: Vec<&Value> = state["completed_tasks"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter(|t| t["framework_id"] == framework.as_str())
                .collect()
        })
        .unwrap_or_default();
    assert!(ended.is_empty(), "tasks ended: {ended:?}");
}

/// What one `agora` command line did.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `agora <args>` to its end.
async fn agora(args: &[&str]) -> Run {
    let out = tokio::process::Command::new(agora_bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run agora");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `agora <args>` and insists it succeeds; answers its stdout.
async fn agora_ok(args: &[&str]) -> String {
    let run = agora(args).await;
    assert!(
        run.ok,
        "agora {} failed:\n{}\n{}",
        args.join(" "),
        run.stdout,
        run.stderr
    );
    run.stdout
}

fn write_json(dir: &Path, name: &str, value: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).expect("json")).expect("write file");
    path.display().to_string()
}

/// The version in `deployment ID started (version V)`.
fn started_version(out: &str) -> String {
    out.lines()
        .find_map(|l| l.split_once(" started (version ")?.1.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no deployment started in {out}"))
        .to_owned()
}

/// The table rows of `agora app tasks` (header skipped).
fn task_rows(table: &str) -> Vec<&str> {
    table.lines().skip(1).filter(|l| !l.trim().is_empty()).collect()
}

#[tokio::test]
async fn the_app_command_line_deploys_scales_rolls_back_and_removes_an_app() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    cluster.wait_agents(1).await;
    let service = start_service(&cluster).await;
    let framework = subscribed(&service).await;
    let target = service.addr.to_string();
    let svc = ["--service", target.as_str()];
    let dir = cluster.dir.path();
    let app = "/cli/web";

    let v1_file = write_json(dir, "web-v1.json", &sleeper(app, 2));
    let out = agora_ok(&[&["app", "deploy", &v1_file, "--wait"][..], &svc].concat()).await;
    assert!(out.contains("deployment ") && out.contains(" started"), "{out}");
    assert!(out.contains("step "), "no progress shown: {out}");
    assert!(out.contains("finished"), "{out}");
    let v1 = settled(&service, app, 2, None).await[0].version.clone();

    let list = agora_ok(&[&["app", "list"][..], &svc].concat()).await;
    let row = list
        .lines()
        .find(|l| l.starts_with(app))
        .unwrap_or_else(|| panic!("{app} not listed:\n{list}"));
    assert!(row.contains("2/2"), "{row}");

    let out = agora_ok(&[&["app", "scale", app, "3", "--wait"][..], &svc].concat()).await;
    assert!(out.contains("finished"), "{out}");
    let tasks = agora_ok(&[&["app", "tasks", app][..], &svc].concat()).await;
    let rows = task_rows(&tasks);
    assert_eq!(rows.len(), 3, "{tasks}");
    assert!(rows.iter().all(|r| r.contains("TASK_RUNNING")), "{tasks}");
    for t in app_tasks(&service, app).await {
        assert!(tasks.contains(&t.id), "{} missing:\n{tasks}", t.id);
    }

    // A new definition is a new version; scaling was not.
    let mut v2 = sleeper(app, 3);
    v2["cmd"] = json!("echo $$ > pid; exec sleep 1003");
    let v2_file = write_json(dir, "web-v2.json", &v2);
    agora_ok(&[&["app", "deploy", &v2_file, "--wait"][..], &svc].concat()).await;
    let versions = agora_ok(&[&["app", "versions", app][..], &svc].concat()).await;
    let listed: Vec<&str> = versions.lines().collect();
    assert_eq!(listed.len(), 2, "{versions}");
    assert_eq!(listed[1], v1, "oldest last: {versions}");
    let v2_version = listed[0].to_owned();
    settled(&service, app, 3, Some(&v2_version)).await;

    // A rollback deploys the stored definition (2 instances then) as a new
    // version, as Marathon does.
    let out = agora_ok(&[&["app", "rollback", app, &v1, "--wait"][..], &svc].concat()).await;
    assert!(out.contains("finished"), "{out}");
    let rolled = started_version(&out);
    assert!(rolled.as_str() > v2_version.as_str(), "{out}");
    settled(&service, app, 2, Some(&rolled)).await;
    let shown = http_json(&url(&service, &format!("/v2/apps{app}"))).await;
    assert_eq!(shown["app"]["version"], rolled.as_str());
    assert_eq!(shown["app"]["cmd"], "echo $$ > pid; exec sleep 1000");
    assert_eq!(shown["app"]["instances"], 2);

    let deployments_out = agora_ok(&[&["deployments"][..], &svc].concat()).await;
    assert_eq!(deployments_out, "no deployments\n");

    // A bad file: refused with the field named, nothing created.
    let mut bad = sleeper("/cli/bad", 1);
    bad["cpus"] = json!(-1);
    let bad_file = write_json(dir, "bad.json", &bad);
    let run = agora(&[&["app", "deploy", &bad_file][..], &svc].concat()).await;
    assert!(!run.ok, "a negative cpus was accepted: {}", run.stdout);
    assert!(run.stderr.contains("/cpus"), "{}", run.stderr);
    let (status, _) = call(Method::GET, &url(&service, "/v2/apps/cli/bad"), None).await;
    assert_eq!(status, 404, "the bad app was stored");

    let out = agora_ok(&[&["app", "rm", app, "--wait"][..], &svc].concat()).await;
    assert!(out.contains("finished"), "{out}");
    let list = agora_ok(&[&["app", "list"][..], &svc].concat()).await;
    assert_eq!(list, "no apps\n");
    until("the app's tasks to end", SOON, || async {
        live_master_tasks(&cluster, &framework)
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    let run = agora(&[&["app", "tasks", app][..], &svc].concat()).await;
    assert!(!run.ok, "tasks of a removed app: {}", run.stdout);
}

#[tokio::test]
async fn the_job_command_line_adds_runs_lists_and_removes_a_job() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    cluster.wait_agents(1).await;
    let cron = start_cron(&cluster).await;
    let target = cron.addr.to_string();
    let at = ["--cron", target.as_str()];
    let dir = cluster.dir.path();
    let marker = dir.join("job-ran");

    // Scheduled far ahead: it runs only when asked to.
    let job = json!({
        "name": "e2e-job",
        "command": format!("echo ran >> {}", marker.display()),
        "schedule": "R/2099-01-01T00:00:00Z/P1D",
        "cpus": 0.1,
        "mem": 32,
        "owner": "e2e@example.com",
    });
    let file = write_json(dir, "job.json", &job);
    let out = agora_ok(&[&["job", "add", &file][..], &at].concat()).await;
    assert_eq!(out, "saved job e2e-job\n");

    let list = agora_ok(&[&["job", "list"][..], &at].concat()).await;
    let row = list
        .lines()
        .find(|l| l.starts_with("e2e-job"))
        .unwrap_or_else(|| panic!("job not listed:\n{list}"));
    assert!(row.contains("R/2099-01-01T00:00:00Z/P1D"), "{row}");
    assert!(row.contains("never ran"), "{row}");

    let out = agora_ok(&[&["job", "run", "e2e-job"][..], &at].concat()).await;
    assert_eq!(out, "started a run of e2e-job\n");
    let runs = until("the manual run to succeed", DEPLOYMENT, || async {
        let runs = agora_ok(&[&["job", "runs", "e2e-job"][..], &at].concat()).await;
        runs.contains("SUCCEEDED").then_some(runs)
    })
    .await;
    assert!(runs.contains("MANUAL"), "{runs}");
    assert_eq!(task_rows(&runs).len(), 1, "{runs}");
    let ran = std::fs::read_to_string(&marker).expect("the job's command ran");
    assert_eq!(ran, "ran\n");
    let list = agora_ok(&[&["job", "list"][..], &at].concat()).await;
    assert!(
        list.lines()
            .any(|l| l.starts_with("e2e-job") && l.contains("success")),
        "{list}"
    );

    // A bad file: refused with the field named, nothing stored.
    let mut bad = job.clone();
    bad["name"] = json!("e2e-bad");
    bad["schedule"] = json!("every tuesday");
    let bad_file = write_json(dir, "bad-job.json", &bad);
    let run = agora(&[&["job", "add", &bad_file][..], &at].concat()).await;
    assert!(!run.ok, "a bad schedule was accepted: {}", run.stdout);
    assert!(run.stderr.contains("schedule"), "{}", run.stderr);
    let list = agora_ok(&[&["job", "list"][..], &at].concat()).await;
    assert!(!list.contains("e2e-bad"), "{list}");

    let out = agora_ok(&[&["job", "rm", "e2e-job"][..], &at].concat()).await;
    assert_eq!(out, "deleted job e2e-job\n");
    let list = agora_ok(&[&["job", "list"][..], &at].concat()).await;
    assert_eq!(list, "no jobs\n");
    let run = agora(&[&["job", "runs", "e2e-job"][..], &at].concat()).await;
    assert!(!run.ok, "runs of a removed job: {}", run.stdout);
}
