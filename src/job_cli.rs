//! `agora job …`: manage the cron framework's jobs over its Chronos-compatible REST API.
//!
//! - `add FILE.json|-` — create or replace a job (Chronos job JSON; a job with `parents`
//!   goes to `/v1/scheduler/dependency`, any other to `/v1/scheduler/iso8601`);
//! - `list` — name, schedule, next run, last result, state (`/v1/scheduler/jobs/summary`);
//! - `run NAME` — run now; `runs NAME` — the run history; `rm NAME` — delete;
//! - `graph` — the dependency graph in Graphviz dot.
//!
//! An error answer's `message` is printed and the command exits non-zero.

use std::fmt::Write as _;
use std::io::Read as _;

use anyhow::{Context, bail};
use serde_json::Value;

/// Flags of `agora job`.
#[derive(Debug, Clone, clap::Args)]
pub struct JobArgs {
    /// The cron framework's REST API: a URL, host:port (any instance: standbys proxy to the
    /// leader), or the framework's zk://host:2181[,host:2181...]/path (the instance elected there).
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:4400",
        env = "AGORA_CRON"
    )]
    pub cron: String,
    #[command(subcommand)]
    pub command: JobCommand,
}

/// What `agora job` does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum JobCommand {
    /// Create or replace a job from Chronos job JSON (a file, or `-` for stdin).
    ///
    /// A job with `parents` is a dependent job; otherwise it needs a `schedule`.
    Add {
        /// The job definition: a JSON file, or `-` to read stdin.
        file: String,
    },
    /// List the jobs: schedule (or parents), next run, last result, state.
    List {
        /// Print the raw JSON summary instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Run a job now (the schedule is not moved).
    Run {
        /// The job's name.
        name: String,
    },
    /// Print a job's run history, oldest first.
    Runs {
        /// The job's name.
        name: String,
        /// Print the raw JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a job and kill its running tasks.
    Rm {
        /// The job's name.
        name: String,
    },
    /// Print the dependency graph in Graphviz dot.
    Graph,
}

/// Runs `agora job …`, printing to stdout.
pub async fn run(args: JobArgs) -> anyhow::Result<()> {
    let api = Api::new(&crate::framework_api::base_url("--cron", &args.cron).await?)?;
    let mut out = std::io::stdout().lock();
    let text = execute(&api, args.command, read_job_file).await?;
    std::io::Write::write_all(&mut out, text.as_bytes())?;
    Ok(())
}

/// Reads a job definition from a file, or stdin for `-`.
fn read_job_file(file: &str) -> anyhow::Result<Vec<u8>> {
    if file == "-" {
        let mut body = Vec::new();
        std::io::stdin()
            .read_to_end(&mut body)
            .context("cannot read the job from stdin")?;
        Ok(body)
    } else {
        std::fs::read(file).with_context(|| format!("cannot read {file}"))
    }
}

/// Carries out `command` against `api`; answers what to print.
async fn execute(
    api: &Api,
    command: JobCommand,
    read: impl FnOnce(&str) -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<String> {
    Ok(match command {
        JobCommand::Add { file } => {
            let body = read(&file)?;
            let job: Value =
                serde_json::from_slice(&body).with_context(|| format!("{file} is not valid JSON"))?;
            let name = job
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            api.send(reqwest::Method::POST, add_path(&job), Some(body))
                .await?;
            format!("saved job {name}\n")
        }
        JobCommand::List { json } => {
            let summary = api.get_json("/v1/scheduler/jobs/summary").await?;
            if json {
                format!("{}\n", serde_json::to_string_pretty(&summary)?)
            } else {
                render_jobs(&summary)
            }
        }
        JobCommand::Run { name } => {
            api.send(reqwest::Method::PUT, &job_path("", &name), None).await?;
            format!("started a run of {name}\n")
        }
        JobCommand::Runs { name, json } => {
            let runs = api.get_json(&job_path("/runs", &name)).await?;
            if json {
                format!("{}\n", serde_json::to_string_pretty(&runs)?)
            } else {
                render_runs(&runs)
            }
        }
        JobCommand::Rm { name } => {
            api.send(reqwest::Method::DELETE, &job_path("", &name), None)
                .await?;
            format!("deleted job {name}\n")
        }
        JobCommand::Graph => {
            api.send(reqwest::Method::GET, "/v1/scheduler/graph/dot", None)
                .await?
        }
    })
}

/// Where a job definition is posted: dependent jobs (with `parents`) and scheduled ones
/// have different endpoints, as in Chronos.
fn add_path(job: &Value) -> &'static str {
    if job.get("parents").is_some() {
        "/v1/scheduler/dependency"
    } else {
        "/v1/scheduler/iso8601"
    }
}

/// `/v1/scheduler/job/{name}{suffix}`, the name percent-encoded.
fn job_path(suffix: &str, name: &str) -> String {
    let mut encoded = String::new();
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    format!("/v1/scheduler/job/{encoded}{suffix}")
}

/// The cron framework's API at one base URL.
struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    /// `address` is a URL or a bare `host:port` (then `http://` is assumed).
    fn new(address: &str) -> anyhow::Result<Self> {
        let base = if address.contains("://") {
            address.trim_end_matches('/').to_owned()
        } else {
            format!("http://{}", address.trim_end_matches('/'))
        };
        reqwest::Url::parse(&base).with_context(|| format!("--cron {address:?} is not a URL"))?;
        Ok(Api {
            base,
            client: reqwest::Client::new(),
        })
    }

    /// Sends a request; answers the body of a success, or fails with the API's message.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the cron framework at {}", self.base))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("{method} {url}: the answer was cut off"))?;
        if status.is_success() {
            Ok(text)
        } else {
            bail!("{}", error_message(status, &text))
        }
    }

    async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let text = self.send(reqwest::Method::GET, path, None).await?;
        serde_json::from_str(&text).with_context(|| format!("{path} did not answer JSON"))
    }
}

/// The message of an error answer: Chronos' `{"status", "message"}` body, or the raw text.
fn error_message(status: reqwest::StatusCode, body: &str) -> String {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned());
    if message.is_empty() {
        format!("the cron framework answered {status}")
    } else {
        format!("{message} ({status})")
    }
}

/// Lays out rows under headers, columns padded to their widest cell.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_cells: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_cells).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

/// The `agora job list` table from `/scheduler/jobs/summary`.
fn render_jobs(summary: &Value) -> String {
    let jobs = summary
        .get("jobs")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if jobs.is_empty() {
        return "no jobs\n".to_owned();
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            let parents: Vec<&str> = job
                .get("parents")
                .and_then(Value::as_array)
                .map(|ps| ps.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let schedule = if parents.is_empty() {
                or_dash(text(job, "schedule"))
            } else {
                format!("after {}", parents.join(","))
            };
            let last = match text(job, "state") {
                "fresh" | "" => "never ran".to_owned(),
                other => other.to_owned(),
            };
            let mut state = text(job, "status").to_owned();
            if job.get("disabled").and_then(Value::as_bool).unwrap_or(false) {
                state.push_str(" (disabled)");
            }
            vec![
                text(job, "name").to_owned(),
                schedule,
                or_dash(text(job, "nextRun")),
                last,
                state,
            ]
        })
        .collect();
    table(&["NAME", "SCHEDULE", "NEXT RUN", "LAST RESULT", "STATE"], &rows)
}

/// An RFC 3339 UTC time without its fraction of a second (`…T10:00:03.1554Z` →
/// `…T10:00:03Z`); any other text unchanged.
fn whole_seconds(text: &str) -> String {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match text.split_once('.') {
        Some((seconds, fraction))
            if seconds.contains('T') && fraction.strip_suffix('Z').is_some_and(digits) =>
        {
            format!("{seconds}Z")
        }
        _ => text.to_owned(),
    }
}

/// The `agora job runs` table from `/scheduler/job/{name}/runs`.
fn render_runs(runs: &Value) -> String {
    let runs = runs.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if runs.is_empty() {
        return "no runs\n".to_owned();
    }
    let cell = |run: &Value, key: &str| match run.get(key) {
        Some(Value::String(s)) => whole_seconds(s),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    };
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|run| {
            [
                "runId",
                "trigger",
                "scheduledAt",
                "startedAt",
                "finishedAt",
                "state",
                "attempt",
                "exitCode",
                "taskId",
            ]
            .iter()
            .map(|key| cell(run, key))
            .collect()
        })
        .collect();
    table(
        &[
            "RUN",
            "TRIGGER",
            "SCHEDULED",
            "STARTED",
            "FINISHED",
            "STATE",
            "ATTEMPT",
            "EXIT",
            "TASK",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn a_job_with_parents_is_added_as_a_dependent_job() {
        assert_eq!(
            add_path(&json!({"name": "a", "parents": ["b"]})),
            "/v1/scheduler/dependency"
        );
        assert_eq!(
            add_path(&json!({"name": "a", "schedule": "R/PT1H"})),
            "/v1/scheduler/iso8601"
        );
    }

    #[test]
    fn job_names_are_percent_encoded_in_paths() {
        assert_eq!(
            job_path("/runs", "etl.daily-1"),
            "/v1/scheduler/job/etl.daily-1/runs"
        );
        assert_eq!(job_path("", "a b/c"), "/v1/scheduler/job/a%20b%2Fc");
    }

    #[test]
    fn a_bare_host_and_port_is_an_http_url() {
        assert_eq!(Api::new("127.0.0.1:4400").unwrap().base, "http://127.0.0.1:4400");
        assert_eq!(Api::new("http://cron:4400/").unwrap().base, "http://cron:4400");
    }

    #[test]
    fn the_error_message_is_the_apis_message() {
        let body = r#"{"status":"Bad Request","message":"schedule: cannot parse 'R/x'"}"#;
        assert_eq!(
            error_message(reqwest::StatusCode::BAD_REQUEST, body),
            "schedule: cannot parse 'R/x' (400 Bad Request)"
        );
        assert_eq!(
            error_message(reqwest::StatusCode::BAD_GATEWAY, ""),
            "the cron framework answered 502 Bad Gateway"
        );
    }

    #[test]
    fn the_job_list_shows_schedule_or_parents_next_run_and_last_result() {
        let summary = json!({"jobs": [
            {"name": "extract", "status": "idle", "state": "success",
             "schedule": "R/2026-03-01T02:00:00Z/P1D", "parents": [], "disabled": false,
             "nextRun": "2026-03-02T02:00:00Z"},
            {"name": "load", "status": "1 running", "state": "fresh", "schedule": "",
             "parents": ["extract", "clean"], "disabled": true, "nextRun": ""},
        ]});
        assert_eq!(
            render_jobs(&summary),
            "\
NAME     SCHEDULE                    NEXT RUN              LAST RESULT  STATE
extract  R/2026-03-01T02:00:00Z/P1D  2026-03-02T02:00:00Z  success      idle
load     after extract,clean         -                     never ran    1 running (disabled)
"
        );
        assert_eq!(render_jobs(&json!({"jobs": []})), "no jobs\n");
    }

    #[test]
    fn the_run_history_is_a_table_with_dashes_for_missing_values() {
        let runs = json!([{
            "job": "a", "runId": "r1", "trigger": "SCHEDULE", "scheduledAt": "2026-03-01T10:00:00Z",
            "attempt": 1, "taskId": "a-r1-1", "startedAt": "2026-03-01T10:00:00.1554Z",
            "finishedAt": null, "state": "RUNNING", "exitCode": null, "message": null,
        }]);
        assert_eq!(
            render_runs(&runs),
            "\
RUN  TRIGGER   SCHEDULED             STARTED               FINISHED  STATE    ATTEMPT  EXIT  TASK
r1   SCHEDULE  2026-03-01T10:00:00Z  2026-03-01T10:00:00Z  -         RUNNING  1        -     a-r1-1
"
        );
    }

    /// A one-request HTTP server: answers `status` and `body`, and hands back the request
    /// it received (head and body).
    async fn answer_once(
        status: &'static str,
        body: &'static str,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if rest.len() >= length || n == 0 {
                        break;
                    }
                }
            }
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&request).to_string()
        });
        (address, server)
    }

    #[test]
    fn run_times_are_shown_to_the_second() {
        assert_eq!(
            whole_seconds("2026-11-22T22:26:03.155480797Z"),
            "2026-11-22T22:26:03Z"
        );
        assert_eq!(whole_seconds("2026-11-22T22:26:03Z"), "2026-11-22T22:26:03Z");
        assert_eq!(
            whole_seconds("extract.1795386363058.0"),
            "extract.1795386363058.0"
        );
    }

    #[tokio::test]
    async fn add_posts_the_file_to_the_endpoint_of_its_kind() {
        let (address, server) = answer_once("204 No Content", "").await;
        let api = Api::new(&address).unwrap();
        let job = r#"{"name":"load","command":"true","parents":["extract"]}"#;
        let printed = execute(&api, JobCommand::Add { file: "-".into() }, |_| {
            Ok(job.as_bytes().to_vec())
        })
        .await
        .unwrap();
        assert_eq!(printed, "saved job load\n");
        let request = server.await.unwrap();
        assert!(
            request.starts_with("POST /v1/scheduler/dependency HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.ends_with(job), "{request}");
    }

    #[tokio::test]
    async fn a_refused_job_fails_with_the_apis_message() {
        let (address, server) = answer_once(
            "400 Bad Request",
            r#"{"status":"Bad Request","message":"name: bad"}"#,
        )
        .await;
        let api = Api::new(&address).unwrap();
        let err = execute(
            &api,
            JobCommand::Add {
                file: "job.json".into(),
            },
            |_| Ok(br#"{"name":"a b","schedule":"R/PT1H"}"#.to_vec()),
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "name: bad (400 Bad Request)");
        assert!(server.await.unwrap().starts_with("POST /v1/scheduler/iso8601 "));
    }

    #[tokio::test]
    async fn a_file_that_is_not_json_is_refused_before_sending() {
        let api = Api::new("127.0.0.1:9").unwrap();
        let err = execute(
            &api,
            JobCommand::Add {
                file: "job.json".into(),
            },
            |_| Ok(b"{".to_vec()),
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "job.json is not valid JSON");
    }

    #[tokio::test]
    async fn run_and_rm_use_put_and_delete_on_the_job() {
        for (command, line, printed) in [
            (
                JobCommand::Run { name: "a".into() },
                "PUT /v1/scheduler/job/a ",
                "started a run of a\n",
            ),
            (
                JobCommand::Rm { name: "a".into() },
                "DELETE /v1/scheduler/job/a ",
                "deleted job a\n",
            ),
        ] {
            let (address, server) = answer_once("204 No Content", "").await;
            let api = Api::new(&address).unwrap();
            let out = execute(&api, command, |_| unreachable!()).await.unwrap();
            assert_eq!(out, printed);
            assert!(server.await.unwrap().starts_with(line));
        }
    }

    #[tokio::test]
    async fn an_unknown_job_fails_with_not_found() {
        let (address, _server) = answer_once(
            "404 Not Found",
            r#"{"status":"Not Found","message":"job 'x' not found"}"#,
        )
        .await;
        let api = Api::new(&address).unwrap();
        let err = execute(
            &api,
            JobCommand::Runs {
                name: "x".into(),
                json: false,
            },
            |_| unreachable!(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "job 'x' not found (404 Not Found)");
    }
}
