//! The router over a stand-in actor that keeps jobs and runs in memory: routes, status
//! codes, error bodies and JSON shapes, without a cluster.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use agora_proto::TaskId;
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::stats::{DurationHistogram, Percentile, job_stat_json};
use super::*;
use crate::handle::{Command, CronInfo, CronMetrics, RunRecord, RunState, Trigger};
use crate::job::JobStats;

/// What the stand-in actor holds.
#[derive(Default)]
struct Jobs {
    jobs: BTreeMap<JobName, JobStatus>,
    runs: BTreeMap<JobName, Vec<RunRecord>>,
}

impl Jobs {
    fn status(&self, name: &JobName) -> crate::handle::Result<JobStatus> {
        self.jobs
            .get(name)
            .cloned()
            .ok_or_else(|| CronError::NotFound(name.to_string()))
    }

    fn known(&self, name: &JobName) -> crate::handle::Result<()> {
        self.status(name).map(|_| ())
    }
}

/// A handle whose actor stores jobs in memory, runs nothing, and records a manual run as
/// a pending run; `seed` fills it first.
fn stand_in(seed: Jobs) -> CronHandle {
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut state = seed;
        while let Some(command) = rx.recv().await {
            #[allow(unreachable_patterns)] // the actor may grow commands this stand-in ignores
            match command {
                Command::Jobs(reply) => {
                    let _ = reply.send(state.jobs.values().cloned().collect());
                }
                Command::Job(name, reply) => {
                    let _ = reply.send(state.status(&name));
                }
                Command::PutJob(job, reply) => {
                    let status = JobStatus {
                        job: *job,
                        stats: JobStats::default(),
                        next_run: None,
                        running: 0,
                    };
                    state.jobs.insert(status.job.name.clone(), status);
                    let _ = reply.send(Ok(()));
                }
                Command::DeleteJob(name, reply) => {
                    let answer = state.known(&name);
                    state.jobs.remove(&name);
                    let _ = reply.send(answer);
                }
                Command::RunNow(name, reply) => {
                    let answer = state.known(&name);
                    if answer.is_ok() {
                        let runs = state.runs.entry(name.clone()).or_default();
                        runs.push(run(&name, runs.len(), RunState::Pending, None));
                    }
                    let _ = reply.send(answer);
                }
                Command::KillTasks(name, reply) => {
                    let _ = reply.send(state.known(&name));
                }
                Command::Runs(name, reply) => {
                    let answer = state
                        .known(&name)
                        .map(|()| state.runs.get(&name).cloned().unwrap_or_default());
                    let _ = reply.send(answer);
                }
                Command::Info(reply) => {
                    let _ = reply.send(CronInfo {
                        framework_id: Some("fw-1".into()),
                        leader: "127.0.0.1:4400".into(),
                        master: "127.0.0.1:5050".into(),
                    });
                }
                Command::Metrics(reply) => {
                    let _ = reply.send(CronMetrics {
                        jobs: state.jobs.len() as u64,
                        runs_by_state: vec![(RunState::Succeeded, 3), (RunState::Failed, 1)],
                        launch_lateness_seconds: vec![0.002, 0.004, 0.2],
                        doubled_runs: 0,
                    });
                }
                _ => {}
            }
        }
    });
    CronHandle::new(tx)
}

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn name(text: &str) -> JobName {
    JobName::new(text).unwrap()
}

/// Run number `n` of `job`; a run with `secs` took that long (started at 10:00:00 + n min).
fn run(job: &JobName, n: usize, state: RunState, secs: Option<i64>) -> RunRecord {
    let start = ts("2026-03-01T10:00:00Z") + jiff::SignedDuration::from_mins(n as i64);
    RunRecord {
        job: job.clone(),
        run_id: format!("run-{n}"),
        trigger: Trigger::Schedule,
        scheduled_at: Some(start),
        attempt: 0,
        task_id: secs.map(|_| TaskId::new_unchecked(format!("{job}.run-{n}.0"))),
        started_at: secs.map(|_| start),
        finished_at: secs.map(|s| start + jiff::SignedDuration::from_secs(s)),
        state,
        exit_code: None,
        message: None,
    }
}

fn scheduled(name: &str, command: &str) -> Value {
    json!({
        "name": name,
        "command": command,
        "owner": "ops@example.com",
        "schedule": "R/2026-03-01T10:00:00Z/PT1H",
    })
}

fn job(body: &Value) -> Job {
    let kind = if body.get("parents").is_some() {
        JobKind::Dependent
    } else {
        JobKind::Scheduled
    };
    Job::from_json(body.to_string().as_bytes(), kind).unwrap()
}

fn with_jobs(bodies: &[Value]) -> Jobs {
    let mut jobs = Jobs::default();
    for body in bodies {
        let job = job(body);
        jobs.jobs.insert(
            job.name.clone(),
            JobStatus {
                job,
                stats: JobStats::default(),
                next_run: None,
                running: 0,
            },
        );
    }
    jobs
}

/// The router served on a loopback port.
async fn serve(handle: CronHandle) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(handle)).await;
    });
    addr
}

/// Sends a request; answers (status, content type, body as JSON or as a string).
async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, String, Value) {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client.request(method, format!("http://{addr}{path}"));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, content_type, body)
}

fn names(jobs: &Value) -> Vec<&str> {
    jobs.as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect()
}

// --- routes and prefixes ---------------------------------------------------------------

#[tokio::test]
async fn both_prefixes_reach_the_same_jobs() {
    let addr = serve(stand_in(Jobs::default())).await;
    let (code, _, _) = call(
        addr,
        "POST",
        "/v1/scheduler/iso8601",
        Some(&scheduled("a", "true")),
    )
    .await;
    assert_eq!(code, 204);
    let (code, _, _) = call(addr, "POST", "/scheduler/iso8601", Some(&scheduled("b", "true"))).await;
    assert_eq!(code, 204);
    let (_, _, bare) = call(addr, "GET", "/scheduler/jobs", None).await;
    let (_, _, v1) = call(addr, "GET", "/v1/scheduler/jobs", None).await;
    assert_eq!(names(&bare), ["a", "b"]);
    assert_eq!(bare, v1);
}

#[tokio::test]
async fn put_on_iso8601_creates_or_replaces_like_post() {
    let addr = serve(stand_in(Jobs::default())).await;
    let (code, _, _) = call(addr, "PUT", "/scheduler/iso8601", Some(&scheduled("a", "true"))).await;
    assert_eq!(code, 204);
    let (code, _, _) = call(addr, "PUT", "/scheduler/iso8601", Some(&scheduled("a", "false"))).await;
    assert_eq!(code, 204);
    let (_, _, job) = call(addr, "GET", "/scheduler/job/a", None).await;
    assert_eq!(job["command"], "false");
}

#[tokio::test]
async fn a_dependent_job_is_posted_to_dependency() {
    let addr = serve(stand_in(with_jobs(&[scheduled("a", "true")]))).await;
    let child = json!({"name": "b", "command": "true", "owner": "o", "parents": ["a"]});
    let (code, _, _) = call(addr, "POST", "/v1/scheduler/dependency", Some(&child)).await;
    assert_eq!(code, 204);
    let (_, _, job) = call(addr, "GET", "/v1/scheduler/job/b", None).await;
    assert_eq!(job["parents"], json!(["a"]));
}

// --- errors ----------------------------------------------------------------------------

#[tokio::test]
async fn a_bad_job_is_400_in_chronos_shape_naming_the_field_and_nothing_is_stored() {
    let addr = serve(stand_in(Jobs::default())).await;
    let (code, content_type, body) = call(
        addr,
        "POST",
        "/v1/scheduler/iso8601",
        Some(&scheduled("bad name!", "true")),
    )
    .await;
    assert_eq!(code, 400);
    assert!(content_type.starts_with("application/json"), "{content_type}");
    assert_eq!(body["status"], "Bad Request");
    assert!(body["message"].as_str().unwrap().contains("name"), "{body}");
    let (_, _, jobs) = call(addr, "GET", "/v1/scheduler/jobs", None).await;
    assert_eq!(jobs, json!([]));
}

#[tokio::test]
async fn a_body_that_is_not_json_is_400() {
    let addr = serve(stand_in(Jobs::default())).await;
    let (code, _, body) = call(addr, "POST", "/scheduler/iso8601", Some(&json!("not a job"))).await;
    assert_eq!(code, 400);
    assert_eq!(body["status"], "Bad Request");
}

#[tokio::test]
async fn an_unknown_job_is_404_on_every_job_route() {
    let addr = serve(stand_in(Jobs::default())).await;
    for (method, path) in [
        ("GET", "/scheduler/job/nope"),
        ("PUT", "/scheduler/job/nope"),
        ("DELETE", "/v1/scheduler/job/nope"),
        ("DELETE", "/v1/scheduler/task/kill/nope"),
        ("GET", "/v1/scheduler/job/stat/nope"),
        ("GET", "/scheduler/job/nope/runs"),
    ] {
        let (code, _, body) = call(addr, method, path, None).await;
        assert_eq!(code, 404, "{method} {path}");
        assert_eq!(body["status"], "Not Found", "{method} {path}");
        assert!(body["message"].as_str().unwrap().contains("nope"), "{body}");
    }
}

#[tokio::test]
async fn a_bad_name_in_the_path_is_400() {
    let addr = serve(stand_in(Jobs::default())).await;
    let (code, _, body) = call(addr, "PUT", "/scheduler/job/a%20b", None).await;
    assert_eq!(code, 400);
    assert!(body["message"].as_str().unwrap().contains("name"), "{body}");
}

#[tokio::test]
async fn an_unknown_route_is_404_json() {
    let addr = serve(stand_in(Jobs::default())).await;
    let (code, _, body) = call(addr, "GET", "/v2/scheduler/jobs", None).await;
    assert_eq!(code, 404);
    assert_eq!(body["status"], "Not Found");
}

#[tokio::test]
async fn without_a_framework_every_call_is_503_in_chronos_shape() {
    let addr = serve(CronHandle::unavailable()).await;
    let (code, _, body) = call(addr, "GET", "/scheduler/jobs", None).await;
    assert_eq!(code, 503);
    assert_eq!(body["status"], "Service Unavailable");
    assert!(body["message"].is_string());
}

// --- run now, delete, kill ------------------------------------------------------------

#[tokio::test]
async fn run_now_is_204_and_records_a_run() {
    let addr = serve(stand_in(with_jobs(&[scheduled("a", "true")]))).await;
    let (code, _, body) = call(addr, "PUT", "/v1/scheduler/job/a", None).await;
    assert_eq!((code, body), (204, json!("")));
    let (code, _, runs) = call(addr, "GET", "/scheduler/job/a/runs", None).await;
    assert_eq!(code, 200);
    assert_eq!(runs.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn delete_and_kill_are_204() {
    let addr = serve(stand_in(with_jobs(&[scheduled("a", "true")]))).await;
    let (code, _, _) = call(addr, "DELETE", "/scheduler/task/kill/a", None).await;
    assert_eq!(code, 204);
    let (code, _, _) = call(addr, "DELETE", "/scheduler/job/a", None).await;
    assert_eq!(code, 204);
    let (_, _, jobs) = call(addr, "GET", "/scheduler/jobs", None).await;
    assert_eq!(jobs, json!([]));
}

// --- search ----------------------------------------------------------------------------

#[tokio::test]
async fn search_is_a_case_insensitive_substring_of_name_or_command() {
    let addr = serve(stand_in(with_jobs(&[
        scheduled("Nightly-Export", "pg_dump sales"),
        scheduled("hourly", "curl http://x/ping"),
    ])))
    .await;
    let (_, _, found) = call(addr, "GET", "/v1/scheduler/jobs/search?name=EXPORT", None).await;
    assert_eq!(names(&found), ["Nightly-Export"]);
    let (_, _, found) = call(addr, "GET", "/scheduler/jobs/search?command=PING", None).await;
    assert_eq!(names(&found), ["hourly"]);
    let (_, _, found) = call(addr, "GET", "/scheduler/jobs/search?any=sales", None).await;
    assert_eq!(names(&found), ["Nightly-Export"]);
    let (_, _, found) = call(addr, "GET", "/scheduler/jobs/search", None).await;
    assert_eq!(names(&found), ["Nightly-Export", "hourly"]);
}

#[test]
fn search_any_rescues_a_job_the_other_terms_miss() {
    let j = job(&scheduled("report", "make report"));
    assert!(!matches_search(&j, Some("export"), None, None));
    assert!(matches_search(&j, Some("export"), None, Some("make")));
    assert!(matches_search(&j, Some("REP"), Some("Make"), None));
    assert!(!matches_search(&j, Some("rep"), Some("cmake"), None));
    assert!(matches_search(&j, Some(""), Some(""), Some("")));
}

#[tokio::test]
async fn search_returns_ten_jobs_unless_a_limit_is_given() {
    let bodies: Vec<Value> = (0..12)
        .map(|i| scheduled(&format!("job{i:02}"), "true"))
        .collect();
    let addr = serve(stand_in(with_jobs(&bodies))).await;
    let (_, _, found) = call(addr, "GET", "/scheduler/jobs/search?name=job", None).await;
    assert_eq!(found.as_array().unwrap().len(), 10);
    let (_, _, found) = call(
        addr,
        "GET",
        "/scheduler/jobs/search?name=job&limit=20&offset=10",
        None,
    )
    .await;
    assert_eq!(names(&found), ["job10", "job11"]);
    let (code, _, _) = call(addr, "GET", "/scheduler/jobs/search?limit=many", None).await;
    assert_eq!(code, 400);
}

// --- summary ---------------------------------------------------------------------------

#[tokio::test]
async fn the_summary_shows_last_state_current_state_and_next_run() {
    let mut jobs = with_jobs(&[scheduled("a", "true")]);
    if let Some(status) = jobs.jobs.get_mut(&name("a")) {
        status.stats.last_success = Some(ts("2026-03-01T10:00:05Z"));
        status.stats.last_error = Some(ts("2026-03-01T09:00:05Z"));
        status.next_run = Some(ts("2026-03-01T11:00:00Z"));
        status.running = 2;
    }
    let addr = serve(stand_in(jobs)).await;
    let (_, _, summary) = call(addr, "GET", "/scheduler/jobs/summary", None).await;
    assert_eq!(
        summary,
        json!({"jobs": [{
            "name": "a",
            "status": "2 running",
            "state": "success",
            "schedule": "R/2026-03-01T10:00:00Z/PT1H",
            "parents": [],
            "disabled": false,
            "nextRun": "2026-03-01T11:00:00Z",
        }]})
    );
}

// --- statistics ------------------------------------------------------------------------

#[test]
fn quantiles_interpolate_like_dropwizard() {
    let h = DurationHistogram::new(vec![5.0, 1.0, 4.0, 2.0, 3.0]);
    assert_eq!(h.count(), 5);
    assert_eq!(h.quantile(0.5), 3.0);
    assert_eq!(h.quantile(0.75), 4.5);
    assert_eq!(h.quantile(0.99), 5.0);
    assert_eq!(h.quantile(0.01), 1.0);
    assert_eq!(h.mean(), 3.0);
    assert_eq!(DurationHistogram::default().quantile(0.99), 0.0);
    assert_eq!(DurationHistogram::default().mean(), 0.0);
}

#[test]
fn only_successful_finished_runs_are_samples() {
    let a = name("a");
    let runs = vec![
        run(&a, 0, RunState::Succeeded, Some(2)),
        run(&a, 1, RunState::Failed, Some(50)),
        run(&a, 2, RunState::Running, None),
        run(&a, 3, RunState::Succeeded, Some(4)),
    ];
    assert_eq!(
        DurationHistogram::of_runs(&runs),
        DurationHistogram::new(vec![2000.0, 4000.0])
    );
}

#[test]
fn job_stat_json_shape_is_chronos() {
    let a = name("a");
    let mut runs = vec![
        run(&a, 0, RunState::Succeeded, Some(3723)),
        run(&a, 1, RunState::Failed, Some(5)),
        run(&a, 2, RunState::Running, Some(0)),
        run(&a, 3, RunState::Skipped, None),
    ];
    runs[2].finished_at = None;
    assert_eq!(
        job_stat_json(&runs),
        json!({
            "histogram": {
                "75thPercentile": 3723000.0,
                "95thPercentile": 3723000.0,
                "98thPercentile": 3723000.0,
                "99thPercentile": 3723000.0,
                "median": 3723000.0,
                "mean": 3723000.0,
                "count": 1,
            },
            "taskStatHistory": [
                {
                    "taskId": "a.run-2.0",
                    "jobName": "a",
                    "slaveId": "",
                    "startTime": "03/01/26 10:02:00",
                    "endTime": "N/A",
                    "status": "Running",
                },
                {
                    "taskId": "a.run-1.0",
                    "jobName": "a",
                    "slaveId": "",
                    "startTime": "03/01/26 10:01:00",
                    "endTime": "03/01/26 10:01:05",
                    "duration": "5s",
                    "status": "Fail",
                },
                {
                    "taskId": "a.run-0.0",
                    "jobName": "a",
                    "slaveId": "",
                    "startTime": "03/01/26 10:00:00",
                    "endTime": "03/01/26 11:02:03",
                    "duration": "1h2m3s",
                    "status": "Success",
                },
            ],
        })
    );
}

#[test]
fn task_stat_history_keeps_the_newest_five() {
    let a = name("a");
    let runs: Vec<RunRecord> = (0..8).map(|n| run(&a, n, RunState::Succeeded, Some(1))).collect();
    let stat = job_stat_json(&runs);
    let ids: Vec<&str> = stat["taskStatHistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["a.run-7.0", "a.run-6.0", "a.run-5.0", "a.run-4.0", "a.run-3.0"]
    );
    assert_eq!(stat["histogram"]["count"], 8);
}

#[tokio::test]
async fn job_stat_route_answers_the_histogram_of_the_runs() {
    let mut jobs = with_jobs(&[scheduled("a", "true")]);
    jobs.runs
        .insert(name("a"), vec![run(&name("a"), 0, RunState::Succeeded, Some(2))]);
    let addr = serve(stand_in(jobs)).await;
    let (code, _, stat) = call(addr, "GET", "/v1/scheduler/job/stat/a", None).await;
    assert_eq!(code, 200);
    assert_eq!(stat["histogram"]["count"], 1);
    assert_eq!(stat["histogram"]["median"], 2000.0);
    assert_eq!(stat["taskStatHistory"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn stats_rank_jobs_slowest_first_in_seconds() {
    let mut jobs = with_jobs(&[
        scheduled("fast", "true"),
        scheduled("slow", "true"),
        scheduled("new", "true"),
    ]);
    jobs.runs.insert(
        name("fast"),
        vec![run(&name("fast"), 0, RunState::Succeeded, Some(1))],
    );
    jobs.runs.insert(
        name("slow"),
        vec![run(&name("slow"), 0, RunState::Succeeded, Some(30))],
    );
    let addr = serve(stand_in(jobs)).await;
    for percentile in Percentile::NAMES {
        let (code, _, ranked) = call(addr, "GET", &format!("/scheduler/stats/{percentile}"), None).await;
        assert_eq!(code, 200, "{percentile}");
        assert_eq!(
            ranked,
            json!([
                {"jobNameLabel": "slow", "time": 30.0},
                {"jobNameLabel": "fast", "time": 1.0},
                {"jobNameLabel": "new", "time": 0.0},
            ]),
            "{percentile}"
        );
    }
}

#[tokio::test]
async fn an_unknown_statistic_is_400_naming_percentile() {
    let addr = serve(stand_in(Jobs::default())).await;
    let (code, _, body) = call(addr, "GET", "/v1/scheduler/stats/90thPercentile", None).await;
    assert_eq!(code, 400);
    assert!(
        body["message"].as_str().unwrap().starts_with("percentile"),
        "{body}"
    );
}

// --- runs, graph, ping, leader, metrics ---------------------------------------------------

#[tokio::test]
async fn runs_are_run_records_in_camel_case() {
    let mut jobs = with_jobs(&[scheduled("a", "true")]);
    jobs.runs
        .insert(name("a"), vec![run(&name("a"), 0, RunState::Succeeded, Some(2))]);
    let addr = serve(stand_in(jobs)).await;
    let (_, _, runs) = call(addr, "GET", "/v1/scheduler/job/a/runs", None).await;
    assert_eq!(
        runs,
        json!([{
            "job": "a",
            "runId": "run-0",
            "trigger": "SCHEDULE",
            "scheduledAt": "2026-03-01T10:00:00Z",
            "attempt": 0,
            "taskId": "a.run-0.0",
            "startedAt": "2026-03-01T10:00:00Z",
            "finishedAt": "2026-03-01T10:00:02Z",
            "state": "SUCCEEDED",
            "exitCode": null,
            "message": null,
        }])
    );
}

#[tokio::test]
async fn the_graph_routes_answer_plain_text() {
    let addr = serve(stand_in(with_jobs(&[scheduled("a", "true")]))).await;
    for path in ["/scheduler/graph/csv", "/v1/scheduler/graph/dot"] {
        let (code, content_type, _) = call(addr, "GET", path, None).await;
        assert_eq!(code, 200, "{path}");
        assert!(content_type.starts_with("text/plain"), "{path}: {content_type}");
    }
}

#[tokio::test]
async fn ping_answers_pong_and_leader_the_api_address() {
    let addr = serve(stand_in(Jobs::default())).await;
    assert_eq!(call(addr, "GET", "/ping", None).await.2, json!("pong"));
    assert_eq!(
        call(addr, "GET", "/leader", None).await.2,
        json!({"leader": "127.0.0.1:4400"})
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let addr = serve(stand_in(with_jobs(&[
        scheduled("a", "true"),
        scheduled("b", "true"),
    ])))
    .await;
    let (code, content_type, body) = call(addr, "GET", "/metrics", None).await;
    assert_eq!(code, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = body.as_str().unwrap();
    for line in [
        "agora_cron_jobs 2",
        "agora_cron_runs{state=\"succeeded\"} 3",
        "agora_cron_doubled_runs_total 0",
        "agora_cron_recent_launch_lateness_seconds_count 3",
        "agora_cron_recent_launch_lateness_seconds_bucket{le=\"0.005\"} 2",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "{line} missing from\n{text}"
        );
    }
}
