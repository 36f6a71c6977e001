//! Task logs: `GET /tasks/{task_id}/logs?stream=stdout|stderr&tail=N&follow=true`.
//!
//! The handler finds the task's run (a task the agent knows, or else the
//! newest sandbox of a task it has forgotten) and streams what the run's
//! containerizer gives for it ([`Containerizer::logs`]). For processes that is
//! [`file_logs`]: the sandbox's `stdout`/`stderr` file, from the start of its
//! last `tail` lines, then (with `follow`) whatever is appended, polled every
//! [`FOLLOW_POLL`], until the run has ended.
//!
//! Errors are JSON `{"error": "..."}`: 404 naming an unknown task, 400 naming
//! a bad parameter, 409 when the task id is used by several frameworks and
//! no `framework_id` says which is meant.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agora_proto::{FrameworkId, TaskId};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use nix::errno::Errno;
use nix::sys::signal;
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio::sync::{mpsc, oneshot};

use crate::agent::Command;
use crate::containerizer::{Containerizer, LogChunks, LogStream, RunRef};
use crate::supervisor::{META_DIR, STATUS_FILE, TASK_PID_FILE};

/// How often a followed log file is checked for new data.
pub(crate) const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Largest piece of a log file read (and sent) at once.
const CHUNK: usize = 64 * 1024;

/// What the logs handler needs.
#[derive(Clone)]
struct LogsContext {
    actor: mpsc::UnboundedSender<Command>,
    containerizer: Arc<dyn Containerizer>,
    /// `work_dir/sandboxes`: where runs of forgotten tasks are found.
    sandboxes: PathBuf,
}

/// The `/tasks/{task_id}/logs` route.
pub(crate) fn router(
    actor: mpsc::UnboundedSender<Command>,
    containerizer: Arc<dyn Containerizer>,
    sandboxes: PathBuf,
) -> Router {
    Router::new()
        .route("/tasks/{task_id}/logs", get(logs))
        .with_state(LogsContext {
            actor,
            containerizer,
            sandboxes,
        })
}

/// The query string, unparsed so that a bad value gets an error naming it.
#[derive(Debug, Default, Deserialize)]
struct LogsQuery {
    stream: Option<String>,
    tail: Option<String>,
    follow: Option<String>,
    framework_id: Option<String>,
}

/// A valid logs request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LogsRequest {
    stream: LogStream,
    tail: Option<usize>,
    follow: bool,
    framework_id: Option<String>,
}

/// Why a logs request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum LogsError {
    #[error("invalid stream {0:?}: expected stdout or stderr")]
    BadStream(String),
    #[error("invalid tail {0:?}: expected a number of lines")]
    BadTail(String),
    #[error("invalid follow {0:?}: expected true or false")]
    BadFollow(String),
    #[error("no task {0:?} on this agent")]
    UnknownTask(String),
    #[error("task {task:?} exists in several frameworks ({frameworks}); add framework_id=")]
    Ambiguous { task: String, frameworks: String },
    #[error("agent is stopping")]
    Stopping,
}

impl LogsError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadStream(_) | Self::BadTail(_) | Self::BadFollow(_) => StatusCode::BAD_REQUEST,
            Self::UnknownTask(_) => StatusCode::NOT_FOUND,
            Self::Ambiguous { .. } => StatusCode::CONFLICT,
            Self::Stopping => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for LogsError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() });
        (self.status(), axum::Json(body)).into_response()
    }
}

impl LogsQuery {
    fn parse(self) -> Result<LogsRequest, LogsError> {
        let stream = match self.stream.as_deref() {
            None | Some("stdout") => LogStream::Stdout,
            Some("stderr") => LogStream::Stderr,
            Some(other) => return Err(LogsError::BadStream(other.to_owned())),
        };
        let tail = match self.tail {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| LogsError::BadTail(text))?),
        };
        let follow = match self.follow.as_deref() {
            None | Some("false" | "0") => false,
            Some("true" | "1" | "") => true,
            Some(other) => return Err(LogsError::BadFollow(other.to_owned())),
        };
        Ok(LogsRequest {
            stream,
            tail,
            follow,
            framework_id: self.framework_id.filter(|f| !f.is_empty()),
        })
    }
}

async fn logs(
    State(ctx): State<LogsContext>,
    UrlPath(task_id): UrlPath<String>,
    Query(query): Query<LogsQuery>,
) -> Result<Response, LogsError> {
    let request = query.parse()?;
    let run = find_run(&ctx, &task_id, request.framework_id.as_deref()).await?;
    tracing::debug!(task = %task_id, sandbox = %run.sandbox.display(), ?request, "serving task logs");
    let chunks = ctx
        .containerizer
        .logs(&run, request.stream, request.tail, request.follow);
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// The run whose logs are asked for: among the tasks the agent knows, else on disk.
async fn find_run(ctx: &LogsContext, task_id: &str, framework_id: Option<&str>) -> Result<RunRef, LogsError> {
    let (reply, answer) = oneshot::channel();
    ctx.actor
        .send(Command::Runs(reply))
        .map_err(|_| LogsError::Stopping)?;
    let runs = answer.await.map_err(|_| LogsError::Stopping)?;
    let known: Vec<RunRef> = runs
        .into_iter()
        .map(|v| v.run)
        .filter(|r| r.task_id == task_id && framework_id.is_none_or(|f| r.framework_id == f))
        .collect();
    let candidates = if known.is_empty() {
        let sandboxes = ctx.sandboxes.clone();
        let (task, framework) = (task_id.to_owned(), framework_id.map(str::to_owned));
        tokio::task::spawn_blocking(move || runs_on_disk(&sandboxes, &task, framework.as_deref()))
            .await
            .unwrap_or_default()
    } else {
        known
    };
    pick_run(task_id, candidates)
}

/// One run per framework, or the reason there is not exactly one.
fn pick_run(task_id: &str, mut candidates: Vec<RunRef>) -> Result<RunRef, LogsError> {
    match candidates.len() {
        0 => Err(LogsError::UnknownTask(task_id.to_owned())),
        1 => Ok(candidates.remove(0)),
        _ => {
            let mut frameworks: Vec<String> = candidates.into_iter().map(|r| r.framework_id).collect();
            frameworks.sort();
            frameworks.dedup();
            Err(LogsError::Ambiguous {
                task: task_id.to_owned(),
                frameworks: frameworks.join(", "),
            })
        }
    }
}

/// The newest run of `task_id` (in `framework_id`, or in each framework) under
/// `sandboxes/<framework>/<task>/<run>/`, for tasks the agent has forgotten.
fn runs_on_disk(sandboxes: &Path, task_id: &str, framework_id: Option<&str>) -> Vec<RunRef> {
    let safe = |id: &str| id != "." && id != "..";
    if TaskId::parse(task_id).is_err() || !safe(task_id) {
        return vec![];
    }
    let frameworks: Vec<String> = match framework_id {
        Some(f) if FrameworkId::parse(f).is_ok() && safe(f) => vec![f.to_owned()],
        Some(_) => return vec![],
        None => std::fs::read_dir(sandboxes)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default(),
    };
    frameworks
        .into_iter()
        .filter_map(|framework| {
            let runs = std::fs::read_dir(sandboxes.join(&framework).join(task_id)).ok()?;
            let newest = runs
                .flatten()
                .filter_map(|e| {
                    let modified = e.metadata().ok().filter(|m| m.is_dir())?.modified().ok()?;
                    Some((modified, e.path()))
                })
                .max()?;
            Some(RunRef {
                framework_id: framework,
                task_id: task_id.to_owned(),
                sandbox: newest.1,
            })
        })
        .collect()
}

/// Where the last `lines` lines of a file of `len` bytes start. A final
/// newline ends the last line rather than starting another one.
pub(crate) fn tail_offset<R: Read + Seek>(reader: &mut R, len: u64, lines: usize) -> io::Result<u64> {
    if lines == 0 {
        return Ok(len);
    }
    let mut buf = vec![0u8; CHUNK];
    let mut end = len;
    let mut found = 0;
    while end > 0 {
        let start = end.saturating_sub(CHUNK as u64);
        let piece = &mut buf[..(end - start) as usize];
        reader.seek(SeekFrom::Start(start))?;
        reader.read_exact(piece)?;
        for (i, byte) in piece.iter().enumerate().rev() {
            let at = start + i as u64;
            if *byte == b'\n' && at + 1 != len {
                found += 1;
                if found == lines {
                    return Ok(at + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

/// Where to start reading a log file for the last `tail` lines (0 if the file is missing).
async fn start_offset(path: PathBuf, tail: Option<usize>) -> io::Result<u64> {
    let Some(lines) = tail else { return Ok(0) };
    tokio::task::spawn_blocking(move || match std::fs::File::open(&path) {
        Ok(mut file) => {
            let len = file.metadata()?.len();
            tail_offset(&mut file, len, lines)
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(err) => Err(err),
    })
    .await
    .map_err(io::Error::other)?
}

/// The next piece of the file from `offset` (advanced past it); `None` at the end.
/// A file that shrank (truncated) is read again from its start.
async fn read_more(path: &Path, offset: &mut u64) -> io::Result<Option<Bytes>> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let len = file.metadata().await?.len();
    if len < *offset {
        *offset = 0;
    }
    if len == *offset {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(*offset)).await?;
    let mut buf = Vec::with_capacity(CHUNK.min((len - *offset) as usize));
    let read = file.take(CHUNK as u64).read_to_end(&mut buf).await?;
    if read == 0 {
        return Ok(None);
    }
    *offset += read as u64;
    Ok(Some(Bytes::from(buf)))
}

/// Whether the process run in `sandbox` has ended: its exit status is
/// recorded, or its process group is gone.
fn process_run_ended(sandbox: &Path) -> bool {
    let meta = sandbox.join(META_DIR);
    if meta.join(STATUS_FILE).exists() {
        return true;
    }
    let pid = std::fs::read_to_string(meta.join(TASK_PID_FILE))
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .filter(|p| *p > 0);
    match pid {
        Some(pgid) => matches!(signal::killpg(Pid::from_raw(pgid), None), Err(Errno::ESRCH)),
        // Not started yet (or never will be: then the status file says so).
        None => false,
    }
}

/// A process run's `stdout`/`stderr` from its sandbox: the last `tail` lines
/// (everything if `None`), then with `follow` what is appended until the run ends.
pub(crate) fn file_logs(sandbox: PathBuf, stream: LogStream, tail: Option<usize>, follow: bool) -> LogChunks {
    let path = sandbox.join(stream.file_name());
    Box::pin(async_stream::try_stream! {
        let mut offset = start_offset(path.clone(), tail).await?;
        loop {
            // Decided before reading, so the last read sees everything the run wrote.
            let ended = !follow || process_run_ended(&sandbox);
            while let Some(chunk) = read_more(&path, &mut offset).await? {
                yield chunk;
            }
            if ended {
                break;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use futures::StreamExt as _;

    use super::*;

    fn tail_of(text: &str, lines: usize) -> String {
        let offset = tail_offset(&mut Cursor::new(text.as_bytes()), text.len() as u64, lines).unwrap();
        text[offset as usize..].to_owned()
    }

    #[test]
    fn tail_returns_the_last_n_lines() {
        assert_eq!(tail_of("a\nb\nc\nd\n", 2), "c\nd\n");
    }

    #[test]
    fn tail_counts_an_unterminated_last_line() {
        assert_eq!(tail_of("a\nb\nc", 2), "b\nc");
    }

    #[test]
    fn tail_longer_than_the_file_returns_everything() {
        assert_eq!(tail_of("a\nb\n", 10), "a\nb\n");
        assert_eq!(tail_of("", 3), "");
    }

    #[test]
    fn tail_of_zero_lines_is_empty() {
        assert_eq!(tail_of("a\nb\n", 0), "");
    }

    #[test]
    fn tail_finds_lines_across_read_chunks() {
        let long = "x".repeat(CHUNK + 10);
        let text = format!("first\n{long}\nlast\n");
        assert_eq!(tail_of(&text, 2), format!("{long}\nlast\n"));
        assert_eq!(tail_of(&text, 3), text);
    }

    fn query(pairs: &[(&str, &str)]) -> Result<LogsRequest, LogsError> {
        let mut q = LogsQuery::default();
        for (k, v) in pairs {
            let v = Some((*v).to_owned());
            match *k {
                "stream" => q.stream = v,
                "tail" => q.tail = v,
                "follow" => q.follow = v,
                "framework_id" => q.framework_id = v,
                _ => unreachable!(),
            }
        }
        q.parse()
    }

    #[test]
    fn the_default_request_is_all_of_stdout_without_following() {
        assert_eq!(
            query(&[]).unwrap(),
            LogsRequest {
                stream: LogStream::Stdout,
                tail: None,
                follow: false,
                framework_id: None
            }
        );
    }

    #[test]
    fn stderr_tail_and_follow_are_parsed() {
        let r = query(&[("stream", "stderr"), ("tail", "5"), ("follow", "true")]).unwrap();
        assert_eq!((r.stream, r.tail, r.follow), (LogStream::Stderr, Some(5), true));
    }

    #[test]
    fn bad_parameters_are_refused_naming_the_parameter() {
        let err = query(&[("stream", "stdin")]).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.to_string().contains("stream"));
        let err = query(&[("tail", "-1")]).unwrap_err();
        assert!(err.to_string().contains("tail"), "{err}");
        let err = query(&[("follow", "maybe")]).unwrap_err();
        assert!(err.to_string().contains("follow"), "{err}");
    }

    fn run_in(framework: &str, sandbox: &Path) -> RunRef {
        RunRef {
            framework_id: framework.into(),
            task_id: "t".into(),
            sandbox: sandbox.to_path_buf(),
        }
    }

    #[test]
    fn one_run_per_task_id_is_picked_and_several_are_ambiguous() {
        let p = Path::new("/x");
        assert_eq!(pick_run("t", vec![run_in("a", p)]).unwrap().framework_id, "a");
        assert!(matches!(pick_run("t", vec![]), Err(LogsError::UnknownTask(_))));
        let err = pick_run("t", vec![run_in("b", p), run_in("a", p)]).unwrap_err();
        assert_eq!(err.status(), StatusCode::CONFLICT);
        assert!(err.to_string().contains("a, b"), "{err}");
    }

    #[test]
    fn forgotten_runs_are_found_on_disk_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("fw-1/t/run-old");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::create_dir_all(dir.path().join("fw-2/other/run")).unwrap();
        let runs = runs_on_disk(dir.path(), "t", None);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].framework_id, "fw-1");
        assert_eq!(runs[0].sandbox, old);
        assert!(runs_on_disk(dir.path(), "t", Some("fw-2")).is_empty());
        assert!(runs_on_disk(dir.path(), "..", None).is_empty());
    }

    async fn collect(chunks: LogChunks) -> String {
        let parts: Vec<Bytes> = chunks.map(|c| c.unwrap()).collect().await;
        String::from_utf8(parts.concat()).unwrap()
    }

    #[tokio::test]
    async fn file_logs_give_the_tail_of_the_stream_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stderr"), "1\n2\n3\n").unwrap();
        let text = collect(file_logs(dir.path().into(), LogStream::Stderr, Some(2), false)).await;
        assert_eq!(text, "2\n3\n");
    }

    #[tokio::test]
    async fn file_logs_of_a_missing_file_are_empty() {
        let dir = tempfile::tempdir().unwrap();
        let text = collect(file_logs(dir.path().into(), LogStream::Stdout, None, false)).await;
        assert_eq!(text, "");
    }

    #[tokio::test]
    async fn following_a_run_that_has_ended_returns_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stdout"), "done\n").unwrap();
        std::fs::create_dir_all(dir.path().join(META_DIR)).unwrap();
        std::fs::write(dir.path().join(META_DIR).join(STATUS_FILE), "{\"exit_code\":0}").unwrap();
        let text = collect(file_logs(dir.path().into(), LogStream::Stdout, None, true)).await;
        assert_eq!(text, "done\n");
    }
}
