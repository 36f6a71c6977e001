//! `agora app …` and `agora deployments`: the service framework's apps from
//! the command line, through its Marathon-compatible REST API.
//!
//! Changes print the deployment they started; with `--wait` the command
//! follows the deployment (one line per change of its step or of the apps'
//! task counts) until it is gone. Errors print the framework's message (and
//! each field's problems) and exit non-zero.

use std::fmt::Write as _;
use std::io::Read as _;
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Where the service framework's REST API is.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceTarget {
    /// The service framework's REST API: a URL, host:port (any instance: standbys proxy to the
    /// leader), or the framework's zk://host:2181[,host:2181...]/path (the instance elected there).
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8080",
        env = "AGORA_SERVICE"
    )]
    pub service: String,
}

/// How long `--wait` follows a deployment.
#[derive(Debug, Clone, clap::Args)]
pub struct WaitArgs {
    /// Follow the deployment until it finishes, showing its progress.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds (the deployment goes on).
    #[arg(long, default_value_t = 600, requires = "wait")]
    pub timeout: u64,
}

/// Flags of `agora app`.
#[derive(Debug, clap::Args)]
pub struct AppArgs {
    #[command(flatten)]
    pub target: ServiceTarget,
    #[command(subcommand)]
    pub command: AppCommand,
}

/// The `agora app` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AppCommand {
    /// Create an app, or replace its definition, from Marathon app JSON
    /// (a file, or `-` for stdin; a JSON array deploys several apps at once).
    Deploy {
        /// The JSON file, or `-`.
        file: String,
        /// Override a deployment running for the app.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List the apps with their task counts.
    List {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one app: its definition, counts, deployments and tasks.
    Show {
        /// The app id, e.g. /shop/web.
        id: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change an app's number of instances.
    Scale {
        /// The app id.
        id: String,
        /// The new number of instances.
        instances: u32,
        /// Override a deployment running for the app.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Replace every task of an app (a rolling restart).
    Restart {
        /// The app id.
        id: String,
        /// Override a deployment running for the app.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Remove an app and kill its tasks.
    Rm {
        /// The app id.
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List an app's tasks.
    Tasks {
        /// The app id.
        id: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// List an app's stored versions, newest first.
    Versions {
        /// The app id.
        id: String,
    },
    /// Deploy a stored version of an app again.
    Rollback {
        /// The app id.
        id: String,
        /// The version, as `agora app versions` shows it.
        #[arg(value_name = "VERSION")]
        app_version: String,
        /// Override a deployment running for the app.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// Flags of `agora deployments`.
#[derive(Debug, clap::Args)]
pub struct DeploymentsArgs {
    #[command(flatten)]
    pub target: ServiceTarget,
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
}

/// A client of the service framework's REST API.
struct ServiceClient {
    base: String,
    http: reqwest::Client,
}

/// An app id as a URL path (`/shop/web`); a relative id is taken from the root.
fn app_path(id: &str) -> String {
    format!("/{}", id.trim_start_matches('/'))
}

/// The error a non-2xx answer means: Marathon's `message`, then one line per
/// field of `details` (`  /cpus: got -1.0, expected 0.0 or more`).
pub fn error_text(status: StatusCode, body: &str) -> String {
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        let body = body.trim();
        return if body.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {body}")
        };
    };
    let mut out = value
        .get("message")
        .and_then(Value::as_str)
        .map_or_else(|| format!("HTTP {status}"), str::to_owned);
    match value.get("details") {
        Some(Value::Array(details)) => {
            for detail in details {
                let path = detail.get("path").and_then(Value::as_str).unwrap_or("/");
                let errors: Vec<&str> = detail
                    .get("errors")
                    .and_then(Value::as_array)
                    .map(|e| e.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let _ = write!(out, "\n  {path}: {}", errors.join("; "));
            }
        }
        Some(Value::String(detail)) => {
            let _ = write!(out, "\n  {detail}");
        }
        _ => {}
    }
    if let Some(Value::Array(deployments)) = value.get("deployments") {
        let ids: Vec<&str> = deployments.iter().filter_map(|d| d.get("id")?.as_str()).collect();
        if !ids.is_empty() {
            let _ = write!(
                out,
                "\n  deployments in the way: {} (use --force to override)",
                ids.join(", ")
            );
        }
    }
    out
}

impl ServiceClient {
    /// A client of the API `--service` names (through ZooKeeper for a `zk://` URL).
    async fn connect(target: &ServiceTarget) -> anyhow::Result<Self> {
        Ok(Self {
            base: crate::framework_api::base_url("--service", &target.service).await?,
            http: reqwest::Client::new(),
        })
    }

    /// Sends a request; a non-2xx answer is an error with the framework's message.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}{}", self.base, query_string(query));
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the service framework at {}", self.base))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("{url} did not answer"))?;
        if !status.is_success() {
            bail!("{}", error_text(status, &text));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{url} did not answer JSON"))
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, &[], None).await
    }
}

/// `?k=v&…` for parameters whose names and values need no escaping
/// (booleans), or nothing.
fn query_string(query: &[(&str, String)]) -> String {
    if query.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("?{}", pairs.join("&"))
}

fn force_query(force: bool) -> Vec<(&'static str, String)> {
    vec![("force", force.to_string())]
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn trim(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Lines padded into columns.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// `agora app list`: one line per app.
pub fn render_apps(body: &Value) -> String {
    let apps = body
        .get("apps")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if apps.is_empty() {
        return "no apps\n".to_owned();
    }
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|app| {
            let deploying = app
                .get("deployments")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            vec![
                text(app, "id").to_owned(),
                format!("{}/{}", num(app, "tasksRunning"), num(app, "instances")),
                num(app, "tasksHealthy").to_string(),
                trim(app.get("cpus").and_then(Value::as_f64).unwrap_or(0.0)),
                trim(app.get("mem").and_then(Value::as_f64).unwrap_or(0.0)),
                if deploying > 0 {
                    "yes".to_owned()
                } else {
                    "-".to_owned()
                },
                command_of(app),
            ]
        })
        .collect();
    table(
        &["ID", "RUNNING", "HEALTHY", "CPUS", "MEM", "DEPLOYING", "COMMAND"],
        &rows,
    )
}

/// The command line of an app: `cmd`, `args` joined, or the Docker image.
fn command_of(app: &Value) -> String {
    if let Some(cmd) = app.get("cmd").and_then(Value::as_str) {
        return cmd.to_owned();
    }
    if let Some(args) = app.get("args").and_then(Value::as_array) {
        return args
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" ");
    }
    app.pointer("/container/docker/image")
        .and_then(Value::as_str)
        .map_or_else(|| "-".to_owned(), |image| format!("(image {image})"))
}

/// `agora app tasks`: one line per task.
pub fn render_tasks(tasks: &[Value]) -> String {
    if tasks.is_empty() {
        return "no tasks\n".to_owned();
    }
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let ports: Vec<String> = t
                .get("ports")
                .and_then(Value::as_array)
                .map(|p| p.iter().map(|x| x.to_string()).collect())
                .unwrap_or_default();
            let health = match t.get("healthCheckResults").and_then(Value::as_array) {
                Some(results) if !results.is_empty() => {
                    if results.iter().all(|r| r.get("alive") == Some(&Value::Bool(true))) {
                        "healthy"
                    } else {
                        "unhealthy"
                    }
                }
                _ => "-",
            };
            vec![
                text(t, "id").to_owned(),
                text(t, "state").to_owned(),
                text(t, "host").to_owned(),
                if ports.is_empty() {
                    "-".to_owned()
                } else {
                    ports.join(",")
                },
                health.to_owned(),
                text(t, "startedAt").to_owned(),
                text(t, "version").to_owned(),
            ]
        })
        .collect();
    table(
        &["ID", "STATE", "HOST", "PORTS", "HEALTH", "STARTED", "VERSION"],
        &rows,
    )
}

/// `agora app show`: the app's main fields, its last failure and its tasks.
pub fn render_app(app: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "id:          {}", text(app, "id"));
    let _ = writeln!(out, "command:     {}", command_of(app));
    let _ = writeln!(
        out,
        "instances:   {} ({} running, {} staged, {} healthy, {} unhealthy)",
        num(app, "instances"),
        num(app, "tasksRunning"),
        num(app, "tasksStaged"),
        num(app, "tasksHealthy"),
        num(app, "tasksUnhealthy"),
    );
    let _ = writeln!(
        out,
        "resources:   cpus {}, mem {} MiB, disk {} MiB",
        trim(app.get("cpus").and_then(Value::as_f64).unwrap_or(0.0)),
        trim(app.get("mem").and_then(Value::as_f64).unwrap_or(0.0)),
        trim(app.get("disk").and_then(Value::as_f64).unwrap_or(0.0)),
    );
    let _ = writeln!(out, "version:     {}", text(app, "version"));
    let deployments: Vec<&str> = app
        .get("deployments")
        .and_then(Value::as_array)
        .map(|d| d.iter().filter_map(|x| x.get("id")?.as_str()).collect())
        .unwrap_or_default();
    let deploying = if deployments.is_empty() {
        "-".to_owned()
    } else {
        deployments.join(", ")
    };
    let _ = writeln!(out, "deployments: {deploying}");
    if let Some(failure) = app.get("lastTaskFailure").filter(|f| f.is_object()) {
        let _ = writeln!(
            out,
            "last failure: {} {} on {} at {}: {}",
            text(failure, "taskId"),
            text(failure, "state"),
            text(failure, "host"),
            text(failure, "timestamp"),
            text(failure, "message"),
        );
    }
    out.push('\n');
    let tasks = app
        .get("tasks")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    out.push_str(&render_tasks(tasks));
    out
}

/// `agora deployments`: one line per running deployment.
pub fn render_deployments(deployments: &[Value]) -> String {
    if deployments.is_empty() {
        return "no deployments\n".to_owned();
    }
    let rows: Vec<Vec<String>> = deployments
        .iter()
        .map(|d| {
            let apps: Vec<&str> = d
                .get("affectedApps")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            vec![
                text(d, "id").to_owned(),
                format!("{}/{}", num(d, "currentStep"), num(d, "totalSteps")),
                current_actions(d),
                apps.join(","),
                text(d, "version").to_owned(),
            ]
        })
        .collect();
    table(&["ID", "STEP", "ACTIONS", "APPS", "VERSION"], &rows)
}

/// `ScaleApplication /web, StartApplication /db`.
fn current_actions(deployment: &Value) -> String {
    let actions: Vec<String> = deployment
        .get("currentActions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| format!("{} {}", text(x, "action"), text(x, "app")))
                .collect()
        })
        .unwrap_or_default();
    if actions.is_empty() {
        "-".to_owned()
    } else {
        actions.join(", ")
    }
}

/// One progress line of a deployment: its step and actions, and the task
/// counts of the apps it changes (`apps` is `GET /v2/apps`).
pub fn progress_line(deployment: &Value, apps: &Value) -> String {
    let mut line = format!(
        "step {}/{}: {}",
        num(deployment, "currentStep"),
        num(deployment, "totalSteps"),
        current_actions(deployment)
    );
    let affected: Vec<&str> = deployment
        .get("affectedApps")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let listed = apps
        .get("apps")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for id in affected {
        match listed
            .iter()
            .find(|a| a.get("id").and_then(Value::as_str) == Some(id))
        {
            Some(app) => {
                let _ = write!(
                    line,
                    " | {id}: {}/{} running, {} healthy",
                    num(app, "tasksRunning"),
                    num(app, "instances"),
                    num(app, "tasksHealthy")
                );
            }
            None => {
                let _ = write!(line, " | {id}: removed");
            }
        }
    }
    line
}

/// Prints what a change started, and follows it with `--wait`.
async fn report(client: &ServiceClient, answer: &Value, wait: &WaitArgs) -> anyhow::Result<()> {
    let Some(id) = answer.get("deploymentId").and_then(Value::as_str) else {
        println!("{}", serde_json::to_string_pretty(answer)?);
        return Ok(());
    };
    println!("deployment {id} started (version {})", text(answer, "version"));
    if wait.wait {
        follow(client, id, Duration::from_secs(wait.timeout)).await?;
    }
    Ok(())
}

/// Polls `/v2/deployments` until deployment `id` is gone, printing a line
/// whenever its progress changes.
async fn follow(client: &ServiceClient, id: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let deployments = client.get("/v2/deployments").await?;
        let running = deployments
            .as_array()
            .and_then(|all| {
                all.iter()
                    .find(|d| d.get("id").and_then(Value::as_str) == Some(id))
            })
            .cloned();
        let apps = client.get("/v2/apps").await?;
        let Some(deployment) = running else {
            println!("deployment {id} finished");
            return Ok(());
        };
        let line = progress_line(&deployment, &apps);
        if line != last {
            println!("  {line}");
            last = line;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "deployment {id} still running after {}s (it goes on; see `agora deployments`)",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Reads the JSON to deploy from a file or stdin (`-`).
fn read_definition(file: &str) -> anyhow::Result<Value> {
    let text = if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the app JSON from stdin")?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
    };
    serde_json::from_str(&text).with_context(|| format!("{file} is not JSON"))
}

/// Runs `agora app …`.
pub async fn run_app(args: AppArgs) -> anyhow::Result<()> {
    let client = ServiceClient::connect(&args.target).await?;
    match args.command {
        AppCommand::Deploy { file, force, wait } => {
            let definition = read_definition(&file)?;
            let query = force_query(force);
            let answer = match &definition {
                Value::Array(_) => {
                    client
                        .call(Method::PUT, "/v2/apps", &query, Some(&definition))
                        .await?
                }
                Value::Object(object) => {
                    let Some(id) = object.get("id").and_then(Value::as_str) else {
                        bail!("{file}: the app has no \"id\"");
                    };
                    let mut query = query;
                    query.push(("partialUpdate", "false".to_owned()));
                    let path = format!("/v2/apps{}", app_path(id));
                    client.call(Method::PUT, &path, &query, Some(&definition)).await?
                }
                _ => bail!("{file}: expected an app object or an array of apps"),
            };
            report(&client, &answer, &wait).await
        }
        AppCommand::List { json } => {
            let apps = client.get("/v2/apps").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&apps)?);
            } else {
                print!("{}", render_apps(&apps));
            }
            Ok(())
        }
        AppCommand::Show { id, json } => {
            let answer = client.get(&format!("/v2/apps{}", app_path(&id))).await?;
            let app = answer.get("app").cloned().unwrap_or(Value::Null);
            if json {
                println!("{}", serde_json::to_string_pretty(&app)?);
            } else {
                print!("{}", render_app(&app));
            }
            Ok(())
        }
        AppCommand::Scale {
            id,
            instances,
            force,
            wait,
        } => {
            let path = format!("/v2/apps{}", app_path(&id));
            let body = json!({ "instances": instances });
            let answer = client
                .call(Method::PUT, &path, &force_query(force), Some(&body))
                .await?;
            report(&client, &answer, &wait).await
        }
        AppCommand::Restart { id, force, wait } => {
            let path = format!("/v2/apps{}/restart", app_path(&id));
            let answer = client
                .call(Method::POST, &path, &force_query(force), None)
                .await?;
            report(&client, &answer, &wait).await
        }
        AppCommand::Rm { id, wait } => {
            let path = format!("/v2/apps{}", app_path(&id));
            let answer = client.call(Method::DELETE, &path, &[], None).await?;
            report(&client, &answer, &wait).await
        }
        AppCommand::Tasks { id, json } => {
            let answer = client.get(&format!("/v2/apps{}/tasks", app_path(&id))).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                let tasks = answer
                    .get("tasks")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                print!("{}", render_tasks(tasks));
            }
            Ok(())
        }
        AppCommand::Versions { id } => {
            let answer = client.get(&format!("/v2/apps{}/versions", app_path(&id))).await?;
            let mut versions: Vec<&str> = answer
                .get("versions")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            versions.sort_unstable_by(|a, b| b.cmp(a));
            for version in versions {
                println!("{version}");
            }
            Ok(())
        }
        AppCommand::Rollback {
            id,
            app_version,
            force,
            wait,
        } => {
            let path = format!("/v2/apps{}", app_path(&id));
            let body = json!({ "version": app_version });
            let answer = client
                .call(Method::PUT, &path, &force_query(force), Some(&body))
                .await?;
            report(&client, &answer, &wait).await
        }
    }
}

/// Runs `agora deployments`.
pub async fn run_deployments(args: DeploymentsArgs) -> anyhow::Result<()> {
    let client = ServiceClient::connect(&args.target).await?;
    let deployments = client.get("/v2/deployments").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&deployments)?);
    } else {
        let list = deployments.as_array().map(Vec::as_slice).unwrap_or(&[]);
        print!("{}", render_deployments(list));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The subcommands as `agora` mounts them (with `--version` propagated).
    #[derive(Debug, clap::Parser)]
    #[command(name = "agora", version, propagate_version = true)]
    enum TestCli {
        App(AppArgs),
        Deployments(DeploymentsArgs),
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory as _;
        TestCli::command().debug_assert();
    }

    #[test]
    fn rollback_takes_an_id_and_a_version() {
        use clap::Parser as _;
        let cli = TestCli::try_parse_from([
            "agora",
            "app",
            "rollback",
            "/web",
            "2026-01-01T00:00:00.000Z",
            "--wait",
            "--service",
            "h:1",
        ])
        .unwrap();
        let TestCli::App(args) = cli else {
            panic!("not app")
        };
        assert_eq!(args.target.service, "h:1");
        match args.command {
            AppCommand::Rollback {
                id,
                app_version,
                wait,
                ..
            } => {
                assert_eq!(id, "/web");
                assert_eq!(app_version, "2026-01-01T00:00:00.000Z");
                assert!(wait.wait);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn query_strings_join_parameters() {
        assert_eq!(query_string(&[]), "");
        assert_eq!(
            query_string(&[("force", "true".into()), ("partialUpdate", "false".into())]),
            "?force=true&partialUpdate=false"
        );
    }

    #[test]
    fn app_ids_become_absolute_paths() {
        assert_eq!(app_path("shop/web"), "/shop/web");
        assert_eq!(app_path("/shop/web"), "/shop/web");
    }

    #[test]
    fn errors_show_marathons_message_and_each_field() {
        let body = r#"{"message":"Object is not valid","details":[{"path":"/cpus","errors":["got -1.0, expected 0.0 or more"]}]}"#;
        assert_eq!(
            error_text(StatusCode::UNPROCESSABLE_ENTITY, body),
            "Object is not valid\n  /cpus: got -1.0, expected 0.0 or more"
        );
    }

    #[test]
    fn a_conflict_names_the_deployments_and_force() {
        let body = r#"{"message":"App is locked","deployments":[{"id":"d-1"}]}"#;
        let text = error_text(StatusCode::CONFLICT, body);
        assert!(text.starts_with("App is locked"), "{text}");
        assert!(text.contains("d-1") && text.contains("--force"), "{text}");
    }

    #[test]
    fn a_body_that_is_not_json_is_shown_with_the_status() {
        assert_eq!(
            error_text(StatusCode::BAD_GATEWAY, "oops"),
            "HTTP 502 Bad Gateway: oops"
        );
        assert_eq!(error_text(StatusCode::BAD_GATEWAY, ""), "HTTP 502 Bad Gateway");
    }

    #[test]
    fn the_app_list_shows_running_over_instances() {
        let body = json!({"apps": [{
            "id": "/web", "instances": 3, "tasksRunning": 2, "tasksHealthy": 1, "cpus": 0.5, "mem": 64.0,
            "cmd": "sleep 1000", "deployments": [{"id": "d-1"}]
        }]});
        let text = render_apps(&body);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID"), "{text}");
        assert!(lines[1].starts_with("/web"), "{text}");
        assert!(lines[1].contains("2/3"), "{text}");
        assert!(lines[1].contains("0.5"), "{text}");
        assert!(lines[1].contains("yes"), "{text}");
        assert!(lines[1].ends_with("sleep 1000"), "{text}");
        assert_eq!(render_apps(&json!({"apps": []})), "no apps\n");
    }

    #[test]
    fn tasks_show_state_host_ports_and_health() {
        let tasks = [json!({
            "id": "web.1", "state": "TASK_RUNNING", "host": "node-1", "ports": [31000, 31001],
            "healthCheckResults": [{"alive": true}], "startedAt": "2026-01-01T00:00:00.000Z",
            "version": "2026-01-01T00:00:00.000Z"
        })];
        let text = render_tasks(&tasks);
        let row = text.lines().nth(1).unwrap();
        for part in ["web.1", "TASK_RUNNING", "node-1", "31000,31001", "healthy"] {
            assert!(row.contains(part), "{part} missing in {row}");
        }
    }

    #[test]
    fn show_includes_counts_failure_and_tasks() {
        let app = json!({
            "id": "/web", "cmd": "sleep 1", "instances": 2, "tasksRunning": 1, "tasksStaged": 1,
            "cpus": 1.0, "mem": 128.0, "disk": 0.0, "version": "v1", "deployments": [],
            "lastTaskFailure": {"taskId": "web.0", "state": "TASK_FAILED", "host": "h", "timestamp": "t", "message": "exit 1"},
            "tasks": []
        });
        let text = render_app(&app);
        assert!(text.contains("2 (1 running, 1 staged"), "{text}");
        assert!(
            text.contains("last failure: web.0 TASK_FAILED on h at t: exit 1"),
            "{text}"
        );
        assert!(text.contains("no tasks"), "{text}");
    }

    #[test]
    fn deployments_show_step_actions_and_apps() {
        let deployments = [json!({
            "id": "d-1", "currentStep": 1, "totalSteps": 2, "affectedApps": ["/web", "/db"],
            "currentActions": [{"action": "StartApplication", "app": "/db"}], "version": "v"
        })];
        let text = render_deployments(&deployments);
        let row = text.lines().nth(1).unwrap();
        assert!(row.contains("d-1") && row.contains("1/2"), "{row}");
        assert!(
            row.contains("StartApplication /db") && row.contains("/web,/db"),
            "{row}"
        );
        assert_eq!(render_deployments(&[]), "no deployments\n");
    }

    #[test]
    fn progress_shows_the_step_and_each_apps_counts() {
        let deployment = json!({
            "id": "d-1", "currentStep": 1, "totalSteps": 1, "affectedApps": ["/web", "/gone"],
            "currentActions": [{"action": "ScaleApplication", "app": "/web"}]
        });
        let apps = json!({"apps": [{"id": "/web", "instances": 3, "tasksRunning": 1, "tasksHealthy": 0}]});
        assert_eq!(
            progress_line(&deployment, &apps),
            "step 1/1: ScaleApplication /web | /web: 1/3 running, 0 healthy | /gone: removed"
        );
    }
}
