//! What the service benchmark reads from the framework's `/v2/events`
//! (Marathon's Server-Sent Events): a parser for the SSE framing, the few
//! event types it needs, and [`Fleet`], the app's tasks as those events
//! describe them.

use std::collections::{HashMap, HashSet};

/// One SSE frame: its `event:` name and its `data:` lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseFrame {
    /// The `event:` field ("message" when absent).
    pub event: String,
    /// The `data:` lines, joined with newlines.
    pub data: String,
}

/// Splits a byte stream into SSE frames (frames end at a blank line; lines
/// may end in `\n` or `\r\n`; `:` lines are comments, e.g. keep-alives).
#[derive(Debug, Default)]
pub struct SseParser {
    pending: Vec<u8>,
    event: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    /// Feeds the next chunk; returns the frames it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseFrame> {
        self.pending.extend_from_slice(chunk);
        let mut frames = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.pending.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if !self.data.is_empty() || self.event.is_some() {
                    frames.push(SseFrame {
                        event: self.event.take().unwrap_or_else(|| "message".to_owned()),
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "event" => self.event = Some(value.to_owned()),
                "data" => self.data.push(value.to_owned()),
                _ => {}
            }
        }
        frames
    }
}

/// The events the benchmark acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarathonEvent {
    /// The stream is attached: nothing published from now on is missed.
    Attached,
    /// A task changed state (`status_update_event`).
    Status {
        /// The task.
        task_id: String,
        /// Its app.
        app_id: String,
        /// Mesos' state name, `TASK_RUNNING`.
        state: String,
        /// The app version the task runs.
        version: String,
    },
    /// A deployment finished (`deployment_success`).
    DeploymentSuccess {
        /// The deployment's id.
        id: String,
    },
    /// A deployment failed or was cancelled (`deployment_failed`).
    DeploymentFailed {
        /// The deployment's id.
        id: String,
    },
}

/// The event types to ask `/v2/events?event_type=…` for.
pub const WANTED_EVENT_TYPES: [&str; 4] = [
    "event_stream_attached",
    "status_update_event",
    "deployment_success",
    "deployment_failed",
];

/// The benchmark's view of one frame; `None` for other or malformed events.
pub fn parse_event(frame: &SseFrame) -> Option<MarathonEvent> {
    let data: serde_json::Value = serde_json::from_str(&frame.data).ok()?;
    let text = |field: &str| data.get(field).and_then(|v| v.as_str()).map(str::to_owned);
    match frame.event.as_str() {
        "event_stream_attached" => Some(MarathonEvent::Attached),
        "status_update_event" => Some(MarathonEvent::Status {
            task_id: text("taskId")?,
            app_id: text("appId")?,
            state: text("taskStatus")?,
            version: text("version").unwrap_or_default(),
        }),
        "deployment_success" => Some(MarathonEvent::DeploymentSuccess { id: text("id")? }),
        "deployment_failed" => Some(MarathonEvent::DeploymentFailed { id: text("id")? }),
        _ => None,
    }
}

/// True for Mesos task states after which a task never runs again.
pub fn is_terminal_state(state: &str) -> bool {
    matches!(
        state,
        "TASK_FINISHED"
            | "TASK_FAILED"
            | "TASK_KILLED"
            | "TASK_LOST"
            | "TASK_ERROR"
            | "TASK_DROPPED"
            | "TASK_GONE"
            | "TASK_GONE_BY_OPERATOR"
            | "TASK_UNKNOWN"
    )
}

/// One app's tasks as the event stream (or a resync from `/v2/apps/{id}`)
/// describes them.
#[derive(Debug, Default, Clone)]
pub struct Fleet {
    /// RUNNING tasks and the app version each runs.
    running: HashMap<String, String>,
    /// Every task id ever reported.
    seen: HashSet<String>,
    /// Tasks reported in a terminal state.
    ended: HashSet<String>,
}

impl Fleet {
    /// Records that `task_id` is now in `state`, running `version`.
    pub fn apply(&mut self, task_id: &str, state: &str, version: &str) {
        self.seen.insert(task_id.to_owned());
        if state == "TASK_RUNNING" && !self.ended.contains(task_id) {
            self.running.insert(task_id.to_owned(), version.to_owned());
        } else {
            self.running.remove(task_id);
            if is_terminal_state(state) {
                self.ended.insert(task_id.to_owned());
            }
        }
    }

    /// Replaces the view with an authoritative task list (`id, state, version`):
    /// tasks missing from it are no longer running.
    pub fn resync<'a>(&mut self, tasks: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) {
        let mut listed = HashSet::new();
        for (id, state, version) in tasks {
            listed.insert(id.to_owned());
            self.apply(id, state, version);
        }
        self.running.retain(|id, _| listed.contains(id));
    }

    /// Tasks RUNNING now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Tasks RUNNING now with app version `version`.
    pub fn running_of_version(&self, version: &str) -> usize {
        self.running.values().filter(|v| v.as_str() == version).count()
    }

    /// Whether `task_id` is RUNNING now.
    pub fn is_running(&self, task_id: &str) -> bool {
        self.running.contains_key(task_id)
    }

    /// The RUNNING tasks, sorted by id.
    pub fn running_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.running.keys().cloned().collect();
        ids.sort_unstable();
        ids
    }

    /// Every task id reported so far.
    pub fn seen(&self) -> &HashSet<String> {
        &self.seen
    }

    /// A killed task is replaced: `victim` is no longer running, a task not
    /// in `known_before` is RUNNING, and `instances` tasks run again.
    pub fn healed(&self, victim: &str, known_before: &HashSet<String>, instances: usize) -> bool {
        !self.is_running(victim)
            && self.running() == instances
            && self.running.keys().any(|id| !known_before.contains(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_end_at_a_blank_line_even_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: status_update_event\nda").is_empty());
        let frames = p.push(b"ta: {\"a\":1}\n\n");
        assert_eq!(
            frames,
            vec![SseFrame {
                event: "status_update_event".into(),
                data: "{\"a\":1}".into()
            }]
        );
    }

    #[test]
    fn comments_and_carriage_returns_are_ignored() {
        let mut p = SseParser::default();
        let frames = p.push(b":keep-alive\r\n\r\nevent: x\r\ndata: 1\r\ndata: 2\r\n\r\n");
        assert_eq!(
            frames,
            vec![SseFrame {
                event: "x".into(),
                data: "1\n2".into()
            }]
        );
    }

    #[test]
    fn a_status_update_event_names_task_app_state_and_version() {
        let frame = SseFrame {
            event: "status_update_event".into(),
            data: r#"{"taskId":"web.1","appId":"/web","taskStatus":"TASK_RUNNING","version":"v1"}"#.into(),
        };
        assert_eq!(
            parse_event(&frame),
            Some(MarathonEvent::Status {
                task_id: "web.1".into(),
                app_id: "/web".into(),
                state: "TASK_RUNNING".into(),
                version: "v1".into(),
            })
        );
    }

    #[test]
    fn a_deployment_success_names_its_deployment() {
        let frame = SseFrame {
            event: "deployment_success".into(),
            data: r#"{"id":"d-1","plan":{}}"#.into(),
        };
        assert_eq!(
            parse_event(&frame),
            Some(MarathonEvent::DeploymentSuccess { id: "d-1".into() })
        );
    }

    #[test]
    fn an_unparseable_frame_is_no_event() {
        let frame = SseFrame {
            event: "status_update_event".into(),
            data: "not json".into(),
        };
        assert_eq!(parse_event(&frame), None);
    }

    #[test]
    fn a_task_counts_as_running_until_it_ends() {
        let mut f = Fleet::default();
        f.apply("a", "TASK_STAGING", "v1");
        assert_eq!(f.running(), 0);
        f.apply("a", "TASK_RUNNING", "v1");
        f.apply("b", "TASK_RUNNING", "v2");
        assert_eq!((f.running(), f.running_of_version("v1")), (2, 1));
        f.apply("a", "TASK_FAILED", "v1");
        assert_eq!(f.running_ids(), vec!["b".to_owned()]);
    }

    #[test]
    fn a_late_running_update_does_not_revive_an_ended_task() {
        let mut f = Fleet::default();
        f.apply("a", "TASK_KILLED", "v1");
        f.apply("a", "TASK_RUNNING", "v1");
        assert_eq!(f.running(), 0);
    }

    #[test]
    fn a_resync_drops_tasks_the_list_no_longer_has() {
        let mut f = Fleet::default();
        f.apply("a", "TASK_RUNNING", "v1");
        f.apply("b", "TASK_RUNNING", "v1");
        f.resync([("b", "TASK_RUNNING", "v1"), ("c", "TASK_RUNNING", "v2")]);
        assert_eq!(f.running_ids(), vec!["b".to_owned(), "c".to_owned()]);
    }

    #[test]
    fn healed_needs_a_new_task_running_and_the_full_count() {
        let mut f = Fleet::default();
        f.apply("a", "TASK_RUNNING", "v1");
        f.apply("b", "TASK_RUNNING", "v1");
        let known = f.seen().clone();
        f.apply("a", "TASK_FAILED", "v1");
        assert!(!f.healed("a", &known, 2));
        f.apply("c", "TASK_STAGING", "v1");
        assert!(!f.healed("a", &known, 2));
        f.apply("c", "TASK_RUNNING", "v1");
        assert!(f.healed("a", &known, 2));
    }

    #[test]
    fn healed_is_false_while_the_victim_still_runs() {
        let mut f = Fleet::default();
        f.apply("a", "TASK_RUNNING", "v1");
        let known = f.seen().clone();
        f.apply("c", "TASK_RUNNING", "v1");
        assert!(!f.healed("a", &known, 1));
    }
}
