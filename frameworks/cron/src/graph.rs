//! The dependency DAG between jobs, and its Chronos CSV and dot renderings.
//!
//! Nodes are jobs, edges run parent → child. [`DependencyGraph::check`] keeps it acyclic with
//! every parent present; [`DependencyGraph::put`] and [`DependencyGraph::remove`] keep it in step
//! with the job set. Iteration is by name, so every rendering is deterministic.
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use crate::job::{Job, JobError, JobName};

/// The last result of a job, as the graph endpoints show it (`fresh`, `success`, `failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LastStatus {
    /// Never ran.
    #[default]
    Fresh,
    /// The last run succeeded.
    Success,
    /// The last run failed.
    Failure,
}

impl LastStatus {
    /// Chronos' text: `fresh`, `success` or `failure`.
    pub fn as_str(self) -> &'static str {
        match self {
            LastStatus::Fresh => "fresh",
            LastStatus::Success => "success",
            LastStatus::Failure => "failure",
        }
    }

    /// Chronos' rule: fresh when never finished, else whichever of the last success and the last
    /// error is later (failure on a tie).
    pub fn from_times(last_success: Option<jiff::Timestamp>, last_error: Option<jiff::Timestamp>) -> Self {
        match (last_success, last_error) {
            (None, None) => LastStatus::Fresh,
            (Some(_), None) => LastStatus::Success,
            (None, Some(_)) => LastStatus::Failure,
            (Some(s), Some(e)) if s > e => LastStatus::Success,
            (Some(_), Some(_)) => LastStatus::Failure,
        }
    }
}

/// What a job is doing now, as the graph endpoints show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunningState {
    /// Nothing running or queued.
    #[default]
    Idle,
    /// A run is waiting for resources.
    Queued,
    /// At least one run is going.
    Running,
}

impl std::fmt::Display for RunningState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunningState::Idle => f.write_str("idle"),
            RunningState::Queued => f.write_str("queued"),
            RunningState::Running => f.write_str("running"),
        }
    }
}

/// A job's status for `to_csv`/`to_dot`; jobs missing from the map are fresh and idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeStatus {
    /// The last result.
    pub last: LastStatus,
    /// What it is doing now.
    pub state: RunningState,
}

/// Anything the graph renderings accept as a job's status: a [`NodeStatus`], a [`LastStatus`], or
/// Chronos' last-status text (`fresh`, `success`, `failure`; anything else is fresh).
pub trait ToNodeStatus {
    /// The status.
    fn to_node_status(&self) -> NodeStatus;
}

impl ToNodeStatus for NodeStatus {
    fn to_node_status(&self) -> NodeStatus {
        *self
    }
}

impl ToNodeStatus for LastStatus {
    fn to_node_status(&self) -> NodeStatus {
        NodeStatus {
            last: *self,
            state: RunningState::Idle,
        }
    }
}

impl ToNodeStatus for str {
    fn to_node_status(&self) -> NodeStatus {
        let last = match self {
            "success" => LastStatus::Success,
            "failure" => LastStatus::Failure,
            _ => LastStatus::Fresh,
        };
        NodeStatus {
            last,
            state: RunningState::Idle,
        }
    }
}

impl ToNodeStatus for String {
    fn to_node_status(&self) -> NodeStatus {
        self.as_str().to_node_status()
    }
}

impl<T: ToNodeStatus + ?Sized> ToNodeStatus for &T {
    fn to_node_status(&self) -> NodeStatus {
        (**self).to_node_status()
    }
}

/// Parents and children of every job.
#[derive(Debug, Clone, Default)]
pub struct DependencyGraph {
    /// Every job, with its parents (empty for scheduled jobs).
    parents: BTreeMap<JobName, Vec<JobName>>,
    /// Every job that has children, with them.
    children: BTreeMap<JobName, BTreeSet<JobName>>,
}

impl DependencyGraph {
    /// The graph of `jobs` as they are (no checks; use [`DependencyGraph::put`] to add checked).
    pub fn new<'a>(jobs: impl IntoIterator<Item = &'a Job>) -> Self {
        let mut graph = DependencyGraph::default();
        for job in jobs {
            graph.insert(job);
        }
        graph
    }

    /// Checks that `job` (new, or replacing the job of the same name) can be put into the graph:
    /// no parent is the job itself, every parent exists, and no parent depends on the job (a
    /// cycle). Errors name the field `parents`.
    pub fn check(&self, job: &Job) -> Result<(), JobError> {
        for parent in &job.parents {
            if *parent == job.name {
                return Err(JobError::new(
                    "parents",
                    format_args!("{} cannot be its own parent", job.name),
                ));
            }
            if !self.parents.contains_key(parent) {
                return Err(JobError::new(
                    "parents",
                    format_args!("unknown parent job {parent:?}"),
                ));
            }
        }
        // The job's descendants do not depend on its own parent edges, so the current graph
        // answers whether a new parent would close a cycle.
        let descendants = self.descendants(&job.name);
        if let Some(parent) = job.parents.iter().find(|p| descendants.contains(*p)) {
            let path = self.path(&job.name, parent).join(" -> ");
            return Err(JobError::new(
                "parents",
                format_args!(
                    "{parent} depends on {} ({path}); making it a parent would create a cycle",
                    job.name
                ),
            ));
        }
        Ok(())
    }

    /// [`DependencyGraph::check`]s `job`, then puts it in (replacing the job of the same name).
    pub fn put(&mut self, job: &Job) -> Result<(), JobError> {
        self.check(job)?;
        self.remove_edges(&job.name);
        self.insert(job);
        Ok(())
    }

    /// Takes a job out. Its children keep it among their parents (their edges come back if it is
    /// put back); until then it is no node, no edge to it is rendered, and it cannot be named as a
    /// new parent.
    pub fn remove(&mut self, name: &JobName) {
        self.remove_edges(name);
        self.parents.remove(name);
    }

    /// Whether the graph holds a job of this name.
    pub fn contains(&self, name: &JobName) -> bool {
        self.parents.contains_key(name)
    }

    /// The jobs that list `name` among their parents, by name.
    pub fn children(&self, name: &JobName) -> Vec<JobName> {
        self.children
            .get(name)
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The parents of `name` (empty for a scheduled or unknown job).
    pub fn parents(&self, name: &JobName) -> &[JobName] {
        self.parents.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    /// Everything that depends on `name`, directly or not (not `name` itself unless in a cycle).
    pub fn descendants(&self, name: &JobName) -> BTreeSet<JobName> {
        let mut seen = BTreeSet::new();
        let mut queue: VecDeque<&JobName> = VecDeque::from([name]);
        while let Some(n) = queue.pop_front() {
            for child in self.children.get(n).into_iter().flatten() {
                if seen.insert(child.clone()) {
                    queue.push_back(child);
                }
            }
        }
        seen
    }

    /// Every job, parents before children (ties by name).
    pub fn topological_order(&self) -> Vec<JobName> {
        let mut waiting: BTreeMap<&JobName, usize> = self
            .parents
            .iter()
            .map(|(n, ps)| (n, ps.iter().filter(|p| self.parents.contains_key(*p)).count()))
            .collect();
        let mut ready: BTreeSet<&JobName> = waiting
            .iter()
            .filter(|(_, w)| **w == 0)
            .map(|(n, _)| *n)
            .collect();
        let mut order = Vec::with_capacity(self.parents.len());
        while let Some(n) = ready.pop_first() {
            order.push(n.clone());
            for child in self.children.get(n).into_iter().flatten() {
                if let Some(w) = waiting.get_mut(child) {
                    *w -= 1;
                    if *w == 0 {
                        ready.insert(child);
                    }
                }
            }
        }
        order
    }

    /// Chronos' `/scheduler/graph/csv`: a line `node,<name>,<lastStatus>,<state>` per job
    /// (`fresh|success|failure`, `idle|queued|running`), then `link,<parent>,<child>` per
    /// edge; each line ends with `\n`.
    pub fn to_csv<S: ToNodeStatus>(&self, statuses: &BTreeMap<JobName, S>) -> String {
        let mut out = String::new();
        for name in self.parents.keys() {
            let status = statuses
                .get(name)
                .map(ToNodeStatus::to_node_status)
                .unwrap_or_default();
            let _ = writeln!(out, "node,{name},{},{}", status.last.as_str(), status.state);
        }
        for (parent, child) in self.edges() {
            let _ = writeln!(out, "link,{parent},{child}");
        }
        out
    }

    /// Chronos' `/scheduler/graph/dot` (JGraphT's DOT export): nodes numbered from 1 in name order,
    /// labelled with the job name, then `a -> b;` per edge. Statuses are not shown, as in Chronos;
    /// the parameter is there so both renderings take the same input.
    pub fn to_dot<S: ToNodeStatus>(&self, statuses: &BTreeMap<JobName, S>) -> String {
        let _ = statuses;
        let ids: BTreeMap<&JobName, usize> = self.parents.keys().zip(1..).collect();
        let mut out = String::from("digraph G {\n");
        for (name, id) in &ids {
            let _ = writeln!(out, "  {id} [ label=\"{name}\" ];");
        }
        for (parent, child) in self.edges() {
            if let (Some(p), Some(c)) = (ids.get(parent), ids.get(child)) {
                let _ = writeln!(out, "  {p} -> {c};");
            }
        }
        out.push_str("}\n");
        out
    }

    /// Edges between jobs that both exist, by (parent, child).
    fn edges(&self) -> impl Iterator<Item = (&JobName, &JobName)> {
        self.children
            .iter()
            .filter(|(p, _)| self.parents.contains_key(*p))
            .flat_map(|(p, cs)| cs.iter().map(move |c| (p, c)))
            .filter(|(_, c)| self.parents.contains_key(*c))
    }

    /// The names along a path from `from` down to `to` (both included).
    fn path(&self, from: &JobName, to: &JobName) -> Vec<String> {
        let mut came_from: BTreeMap<&JobName, &JobName> = BTreeMap::new();
        let mut queue = VecDeque::from([from]);
        while let Some(n) = queue.pop_front() {
            if n == to {
                break;
            }
            for child in self.children.get(n).into_iter().flatten() {
                if child != from && !came_from.contains_key(child) {
                    came_from.insert(child, n);
                    queue.push_back(child);
                }
            }
        }
        let mut path = vec![to.to_string()];
        let mut at = to;
        while let Some(prev) = came_from.get(at) {
            path.push(prev.to_string());
            at = prev;
        }
        path.reverse();
        path
    }

    fn insert(&mut self, job: &Job) {
        for parent in &job.parents {
            self.children
                .entry(parent.clone())
                .or_default()
                .insert(job.name.clone());
        }
        self.parents.insert(job.name.clone(), job.parents.clone());
    }

    fn remove_edges(&mut self, name: &JobName) {
        for parent in self.parents.get(name).cloned().unwrap_or_default() {
            if let Some(children) = self.children.get_mut(&parent) {
                children.remove(name);
                if children.is_empty() {
                    self.children.remove(&parent);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobKind;

    fn name(n: &str) -> JobName {
        JobName::new(n).unwrap()
    }

    fn scheduled(n: &str) -> Job {
        let mut job = Job::new(name(n), "true");
        job.schedule = Some("R//PT1H".into());
        job
    }

    fn dependent(n: &str, parents: &[&str]) -> Job {
        let mut job = Job::new(name(n), "true");
        job.parents = parents.iter().map(|p| name(p)).collect();
        job
    }

    /// extract → transform → load, extract → audit.
    fn pipeline() -> DependencyGraph {
        let mut g = DependencyGraph::default();
        g.put(&scheduled("extract")).unwrap();
        g.put(&dependent("transform", &["extract"])).unwrap();
        g.put(&dependent("load", &["transform"])).unwrap();
        g.put(&dependent("audit", &["extract"])).unwrap();
        g
    }

    #[test]
    fn unknown_parent_is_rejected() {
        let e = pipeline().check(&dependent("report", &["nope"])).unwrap_err();
        assert_eq!(e.field, "parents");
        assert!(e.message.contains("nope"), "{e}");
    }

    #[test]
    fn self_parent_is_rejected() {
        let e = pipeline().check(&dependent("load", &["load"])).unwrap_err();
        assert_eq!(e.field, "parents");
    }

    #[test]
    fn two_job_cycle_is_rejected() {
        let mut g = DependencyGraph::default();
        g.put(&scheduled("a")).unwrap();
        g.put(&dependent("b", &["a"])).unwrap();
        let e = g.put(&dependent("a", &["b"])).unwrap_err();
        assert_eq!(e.field, "parents");
        assert!(e.message.contains("cycle"), "{e}");
        // Nothing changed.
        assert_eq!(g.parents(&name("a")), &[] as &[JobName]);
    }

    #[test]
    fn longer_cycle_is_rejected_with_its_path() {
        let e = pipeline().check(&dependent("extract", &["load"])).unwrap_err();
        assert_eq!(e.field, "parents");
        assert!(e.message.contains("extract -> transform -> load"), "{e}");
    }

    #[test]
    fn replacing_parents_without_a_cycle_is_accepted() {
        let mut g = pipeline();
        g.put(&dependent("load", &["audit", "transform"])).unwrap();
        assert_eq!(g.children(&name("audit")), [name("load")]);
        g.put(&dependent("load", &["audit"])).unwrap();
        assert!(g.children(&name("transform")).is_empty());
    }

    #[test]
    fn children_are_listed_by_name() {
        assert_eq!(
            pipeline().children(&name("extract")),
            [name("audit"), name("transform")]
        );
        assert!(pipeline().children(&name("load")).is_empty());
    }

    #[test]
    fn descendants_include_grandchildren() {
        let d = pipeline().descendants(&name("extract"));
        assert_eq!(
            d.into_iter().collect::<Vec<_>>(),
            [name("audit"), name("load"), name("transform")]
        );
    }

    #[test]
    fn topological_order_puts_parents_first() {
        assert_eq!(
            pipeline().topological_order(),
            [name("extract"), name("audit"), name("transform"), name("load")]
        );
    }

    #[test]
    fn removed_job_cannot_be_a_parent_and_its_edges_are_not_shown() {
        let mut g = pipeline();
        g.remove(&name("transform"));
        assert!(!g.contains(&name("transform")));
        assert_eq!(
            g.check(&dependent("x", &["transform"])).unwrap_err().field,
            "parents"
        );
        assert!(!g.to_csv::<NodeStatus>(&BTreeMap::new()).contains("transform"));
    }

    #[test]
    fn new_builds_from_parsed_jobs() {
        let body = br#"{"name":"b","command":"true","parents":["a"]}"#;
        let b = Job::from_json(body, JobKind::Dependent).unwrap();
        let a = scheduled("a");
        let g = DependencyGraph::new([&a, &b]);
        assert_eq!(g.children(&name("a")), [name("b")]);
    }

    #[test]
    fn csv_is_chronos_format() {
        let statuses = BTreeMap::from([
            (
                name("extract"),
                NodeStatus {
                    last: LastStatus::Success,
                    state: RunningState::Idle,
                },
            ),
            (
                name("transform"),
                NodeStatus {
                    last: LastStatus::Failure,
                    state: RunningState::Running,
                },
            ),
            (
                name("audit"),
                NodeStatus {
                    last: LastStatus::Fresh,
                    state: RunningState::Queued,
                },
            ),
        ]);
        assert_eq!(
            pipeline().to_csv(&statuses),
            "node,audit,fresh,queued\n\
             node,extract,success,idle\n\
             node,load,fresh,idle\n\
             node,transform,failure,running\n\
             link,extract,audit\n\
             link,extract,transform\n\
             link,transform,load\n"
        );
    }

    #[test]
    fn csv_accepts_chronos_status_text() {
        let statuses = BTreeMap::from([(name("load"), "success".to_owned())]);
        assert!(pipeline().to_csv(&statuses).contains("node,load,success,idle\n"));
    }

    #[test]
    fn dot_is_jgrapht_format() {
        assert_eq!(
            pipeline().to_dot::<NodeStatus>(&BTreeMap::new()),
            "digraph G {\n  1 [ label=\"audit\" ];\n  2 [ label=\"extract\" ];\n  3 [ label=\"load\" ];\n  \
             4 [ label=\"transform\" ];\n  2 -> 1;\n  2 -> 4;\n  4 -> 3;\n}\n"
        );
    }

    #[test]
    fn last_status_follows_chronos_rule() {
        let t = |s: &str| Some(s.parse::<jiff::Timestamp>().unwrap());
        assert_eq!(LastStatus::from_times(None, None), LastStatus::Fresh);
        assert_eq!(
            LastStatus::from_times(t("2026-01-01T00:00:00Z"), None),
            LastStatus::Success
        );
        assert_eq!(
            LastStatus::from_times(None, t("2026-01-01T00:00:00Z")),
            LastStatus::Failure
        );
        assert_eq!(
            LastStatus::from_times(t("2026-01-02T00:00:00Z"), t("2026-01-01T00:00:00Z")),
            LastStatus::Success
        );
        assert_eq!(
            LastStatus::from_times(t("2026-01-01T00:00:00Z"), t("2026-01-02T00:00:00Z")),
            LastStatus::Failure
        );
    }
}
