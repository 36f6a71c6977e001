//! The engine's behaviours, one per test, with explicit times (no clock).

use std::collections::BTreeMap;
use std::time::Duration;

use agora_proto::v1::{self, StatusReason, TaskState};
use agora_proto::{Resources, TaskId};
use jiff::Timestamp;

use super::*;
use crate::job::{ConcurrencyPolicy, Job, JobName};

const T0: &str = "2026-01-01T00:00:00Z";

/// `T0 + secs`.
fn t(secs: i64) -> Timestamp {
    let t0: Timestamp = T0.parse().unwrap();
    t0.checked_add(jiff::SignedDuration::from_secs(secs)).unwrap()
}

fn name(n: &str) -> JobName {
    JobName::new(n).unwrap()
}

/// A job every `period` seconds from T0, forever (ALLOW, no retries unless set).
fn every(n: &str, period: u64) -> Job {
    let mut job = Job::new(name(n), "true");
    job.schedule = Some(format!("R/{T0}/PT{period}S"));
    job.concurrency_policy = ConcurrencyPolicy::Allow;
    job.concurrent = true;
    job.retries = 0;
    job
}

fn dependent(n: &str, parents: &[&str]) -> Job {
    let mut job = Job::new(name(n), "true");
    job.parents = parents.iter().map(|p| name(p)).collect();
    job.retries = 0;
    job
}

fn offer(id: &str) -> v1::Offer {
    v1::Offer {
        id: id.into(),
        framework_id: "fw".into(),
        agent_id: "agent-1".into(),
        hostname: "host-1".into(),
        resources: Resources::parse("cpus:8;mem:8192;disk:8192").unwrap().to_proto(),
        ..Default::default()
    }
}

fn status(task_id: &TaskId, state: TaskState) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: task_id.to_string(),
        state: state as i32,
        agent_id: "agent-1".into(),
        uuid: format!("{task_id}-{}", state as i32).into_bytes(),
        ..Default::default()
    }
}

fn reconciliation(task_id: &TaskId, state: TaskState) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: task_id.to_string(),
        state: state as i32,
        reason: StatusReason::ReasonReconciliation as i32,
        ..Default::default()
    }
}

fn launched(effects: &[Effect]) -> Vec<TaskId> {
    effects
        .iter()
        .flat_map(|e| match e {
            Effect::Launch { tasks, .. } => tasks
                .iter()
                .map(|t| TaskId::new_unchecked(t.task_id.clone()))
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}

fn killed(effects: &[Effect]) -> Vec<TaskId> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Kill { task_id, .. } => Some(task_id.clone()),
            _ => None,
        })
        .collect()
}

fn runs(engine: &Engine, n: &str) -> Vec<RunRecord> {
    engine.runs(&name(n)).unwrap()
}

fn scheduled(engine: &Engine, n: &str) -> Vec<Option<Timestamp>> {
    runs(engine, n).iter().map(|r| r.scheduled_at).collect()
}

/// The store as the runtime would leave it: every Persist applied in order.
#[derive(Default)]
struct Durable {
    jobs: BTreeMap<JobName, StoredJob>,
    runs: BTreeMap<(JobName, u64), Run>,
}

impl Durable {
    fn apply(&mut self, effects: &[Effect]) {
        for e in effects {
            if let Effect::Persist(changes) = e {
                for c in changes {
                    match c {
                        Change::PutJob(j) => {
                            self.jobs.insert(j.job.name.clone(), (**j).clone());
                        }
                        Change::DeleteJob { name, runs } => {
                            self.jobs.remove(name);
                            for seq in runs {
                                self.runs.remove(&(name.clone(), *seq));
                            }
                        }
                        Change::PutRun(n, r) => {
                            self.runs.insert((n.clone(), r.seq), (**r).clone());
                        }
                        Change::DeleteRun(n, seq) => {
                            self.runs.remove(&(n.clone(), *seq));
                        }
                    }
                }
            }
        }
    }

    fn recovered(&self) -> Recovered {
        Recovered {
            jobs: self
                .jobs
                .values()
                .map(|j| {
                    let runs = self
                        .runs
                        .iter()
                        .filter(|((n, _), _)| *n == j.job.name)
                        .map(|(_, r)| r.clone())
                        .collect();
                    (j.clone(), runs)
                })
                .collect(),
        }
    }
}

/// An engine that records what it persists.
struct Harness {
    engine: Engine,
    durable: Durable,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(EngineConfig::default())
    }

    fn with(config: EngineConfig) -> Harness {
        Harness {
            engine: Engine::new(config),
            durable: Durable::default(),
        }
    }

    fn record(&mut self, effects: Vec<Effect>) -> Vec<Effect> {
        self.durable.apply(&effects);
        effects
    }

    fn put(&mut self, job: Job, now: Timestamp) -> Vec<Effect> {
        let e = self.engine.put_job(job, now).unwrap();
        self.record(e)
    }

    fn tick(&mut self, now: Timestamp) -> Vec<Effect> {
        let e = self.engine.tick(now);
        self.record(e)
    }

    fn offer(&mut self, id: &str, now: Timestamp) -> Vec<Effect> {
        let e = self.engine.offers(vec![offer(id)], now);
        self.record(e)
    }

    fn update(&mut self, task: &TaskId, state: TaskState, now: Timestamp) -> Vec<Effect> {
        let e = self.engine.update(status(task, state), now);
        self.record(e)
    }

    /// Simulates a restart: a new engine from what was persisted, subscribed again.
    fn restart(&mut self, now: Timestamp) -> Vec<Effect> {
        let (engine, problems) = Engine::recover(self.engine.config().clone(), self.durable.recovered());
        assert!(problems.is_empty(), "{problems:?}");
        self.engine = engine;
        let mut e = self.engine.tick(now);
        e.extend(self.engine.subscribed(now));
        self.record(e)
    }

    /// A reconciliation answer from the master.
    fn answer(&mut self, task: &TaskId, state: TaskState, now: Timestamp) -> Vec<Effect> {
        let e = self.engine.update(reconciliation(task, state), now);
        self.record(e)
    }

    /// The master restarts under a running framework: the subscription drops and comes back.
    fn master_restart(&mut self, now: Timestamp) -> Vec<Effect> {
        self.engine.disconnected();
        let e = self.engine.subscribed(now);
        self.record(e)
    }

    /// Offers at `now` and returns the task launched (exactly one expected).
    fn launch_one(&mut self, id: &str, now: Timestamp) -> TaskId {
        let launched = launched(&self.offer(id, now));
        assert_eq!(launched.len(), 1, "{launched:?}");
        launched[0].clone()
    }
}

// -------------------------------------------------------------------------------------------
// Schedules
// -------------------------------------------------------------------------------------------

#[test]
fn a_job_fires_at_each_scheduled_instant() {
    let mut h = Harness::new();
    h.put(every("a", 10), t(-1));
    for (k, at) in [0, 10, 20].into_iter().enumerate() {
        h.tick(t(at));
        let task = h.launch_one(&format!("o{k}"), t(at));
        h.update(&task, TaskState::Finished, t(at + 1));
    }
    assert_eq!(
        scheduled(&h.engine, "a"),
        vec![Some(t(0)), Some(t(10)), Some(t(20))]
    );
    assert!(
        runs(&h.engine, "a")
            .iter()
            .all(|r| r.state == RunState::Succeeded)
    );
    assert!(
        runs(&h.engine, "a")
            .iter()
            .all(|r| r.trigger == Trigger::Schedule)
    );
    assert_eq!(h.engine.job(&name("a")).unwrap().next_run, Some(t(30)));
}

#[test]
fn nothing_fires_before_the_instant() {
    let mut h = Harness::new();
    h.put(every("a", 10), t(-5));
    h.tick(t(-1));
    assert!(runs(&h.engine, "a").is_empty());
    assert_eq!(h.engine.next_deadline(), Some(t(0)));
}

#[test]
fn an_r3_schedule_fires_three_times() {
    let mut h = Harness::new();
    let mut job = every("r3", 10);
    job.schedule = Some(format!("R3/{T0}/PT10S"));
    h.put(job, t(-1));
    for at in [0, 10, 20, 30, 40, 50] {
        h.tick(t(at));
    }
    assert_eq!(
        scheduled(&h.engine, "r3"),
        vec![Some(t(0)), Some(t(10)), Some(t(20))]
    );
    assert_eq!(h.engine.job(&name("r3")).unwrap().next_run, None);
}

#[test]
fn a_disabled_job_does_not_fire() {
    let mut h = Harness::new();
    let mut job = every("off", 10);
    job.disabled = true;
    h.put(job, t(-1));
    h.tick(t(0));
    h.tick(t(100));
    assert!(runs(&h.engine, "off").is_empty());
    assert_eq!(h.engine.next_deadline(), None);
}

#[test]
fn a_manual_run_launches_now_without_moving_the_schedule() {
    let mut h = Harness::new();
    h.put(every("a", 100), t(1));
    let e = h.engine.run_now(&name("a"), t(5)).unwrap();
    h.record(e);
    h.launch_one("o1", t(5));
    let r = runs(&h.engine, "a");
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].trigger, r[0].scheduled_at, r[0].state),
        (Trigger::Manual, None, RunState::Running)
    );
    assert_eq!(h.engine.job(&name("a")).unwrap().next_run, Some(t(100)));
}

// -------------------------------------------------------------------------------------------
// Exactly once: persisted before launch, restarts
// -------------------------------------------------------------------------------------------

#[test]
fn an_instant_becomes_a_run_and_moves_the_cursor_in_one_persist() {
    // Without arming: the instant is handled when it comes.
    let mut h = Harness::with(EngineConfig {
        arm_ahead: Duration::ZERO,
        ..EngineConfig::default()
    });
    h.put(every("a", 10), t(-1));
    let effects = h.tick(t(0));
    let persists: Vec<&Vec<Change>> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Persist(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(persists.len(), 1);
    let batch = persists[0];
    assert!(batch.iter().any(|c| matches!(c, Change::PutRun(_, r)
        if r.record.scheduled_at == Some(t(0)) && r.record.state == RunState::Pending)));
    assert!(
        batch
            .iter()
            .any(|c| matches!(c, Change::PutJob(j) if j.cursor == Some(t(10))))
    );
}

#[test]
fn a_launch_is_persisted_with_its_task_id_before_it_is_sent() {
    let mut h = Harness::new();
    h.put(every("a", 10), t(-1));
    h.tick(t(0));
    let effects = h.offer("o1", t(0));
    let persist = effects
        .iter()
        .position(|e| matches!(e, Effect::Persist(_)))
        .unwrap();
    let launch = effects
        .iter()
        .position(|e| matches!(e, Effect::Launch { .. }))
        .unwrap();
    assert!(persist < launch, "{effects:?}");
    let task = launched(&effects)[0].clone();
    let Effect::Persist(changes) = &effects[persist] else {
        unreachable!()
    };
    assert!(changes.iter().any(|c| matches!(c, Change::PutRun(_, r)
        if r.record.task_id.as_ref() == Some(&task) && r.record.state == RunState::Running)));
}

#[test]
fn an_update_is_acknowledged_only_after_its_outcome_is_persisted() {
    let mut h = Harness::new();
    h.put(every("a", 10), t(-1));
    h.tick(t(0));
    let task = h.launch_one("o1", t(0));
    let effects = h.update(&task, TaskState::Finished, t(1));
    let persist = effects
        .iter()
        .position(|e| matches!(e, Effect::Persist(_)))
        .unwrap();
    let ack = effects
        .iter()
        .position(|e| matches!(e, Effect::Acknowledge(_)))
        .unwrap();
    assert!(persist < ack, "{effects:?}");
}

#[test]
fn task_ids_derive_from_the_run_id_and_the_attempt() {
    let mut h = Harness::new();
    h.put(every("a", 10), t(-1));
    h.tick(t(0));
    let task = h.launch_one("o1", t(0));
    let run = &runs(&h.engine, "a")[0];
    assert_eq!(task, task_id_for(&run.run_id, 0));
}

#[test]
fn after_a_restart_a_running_run_is_reconciled_and_adopted_not_relaunched() {
    let mut h = Harness::new();
    h.put(every("a", 100), t(-1));
    h.tick(t(0));
    let task = h.launch_one("o1", t(0));
    h.update(&task, TaskState::Running, t(1));

    let effects = h.restart(t(5));
    assert!(effects.contains(&Effect::Reconcile(vec![(
        task.clone(),
        Some(AgentId::new_unchecked("agent-1"))
    )])));
    let e = h.engine.update(reconciliation(&task, TaskState::Running), t(5));
    assert!(launched(&h.record(e)).is_empty());
    assert!(launched(&h.offer("o2", t(6))).is_empty());
    let r = runs(&h.engine, "a");
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].state, r[0].task_id.clone()),
        (RunState::Running, Some(task))
    );
}

#[test]
fn after_a_restart_a_task_unknown_to_the_master_is_launched_once_with_the_same_id() {
    let mut h = Harness::new();
    h.put(every("a", 100), t(-1));
    h.tick(t(0));
    let task = h.launch_one("o1", t(0));
    h.restart(t(5));
    // The agent's offer shows the master knows it: its "unknown" is definitive.
    assert!(launched(&h.offer("o2", t(5))).is_empty());
    h.answer(&task, TaskState::Unknown, t(5));
    assert_eq!(h.launch_one("o3", t(5)), task);
    assert!(launched(&h.offer("o4", t(6))).is_empty());
    assert_eq!(runs(&h.engine, "a").len(), 1);
}

#[test]
fn after_a_restart_a_task_gone_from_its_registered_agent_is_launched_again_not_failed() {
    let mut h = Harness::new();
    h.put(every("a", 100), t(-1));
    h.tick(t(0));
    let task = h.launch_one("o1", t(0));
    h.restart(t(5));
    assert!(launched(&h.offer("o2", t(5))).is_empty());
    // A master that knows the agent answers GONE: the launch never reached it.
    h.answer(&task, TaskState::Gone, t(5));
    assert_eq!(h.launch_one("o3", t(5)), task, "the same attempt, launched again");
    let job = h.engine.job(&name("a")).unwrap();
    assert_eq!(job.stats.error_count, 0, "not counted as a failure");
    assert_eq!(runs(&h.engine, "a").len(), 1);
}

#[test]
fn a_task_that_ended_while_the_framework_was_down_is_recorded_when_its_update_arrives() {
    let mut h = Harness::new();
    h.put(every("a", 100), t(-1));
    h.tick(t(0));
    let task = h.launch_one("o1", t(0));
    h.restart(t(5));
    h.update(&task, TaskState::Finished, t(5));
    let r = runs(&h.engine, "a");
    assert_eq!((r.len(), r[0].state), (1, RunState::Succeeded));
    assert_eq!(h.engine.job(&name("a")).unwrap().stats.success_count, 1);
}

#[test]
fn a_run_that_ended_while_the_framework_was_down_keeps_the_agents_end_time() {
    let mut h = Harness::new();
    h.put(every("a", 100), t(-1));
    h.tick(t(0));
    let task = h.launch_one("o1", t(0));
    h.restart(t(50));
    let mut update = status(&task, TaskState::Finished);
    update.source = v1::StatusSource::Agent as i32;
    update.timestamp = t(3).as_millisecond() as f64 / 1000.0;
    let e = h.engine.update(update, t(50));
    h.record(e);
    assert_eq!(runs(&h.engine, "a")[0].finished_at, Some(t(3)));
}

#[test]
fn instants_missed_while_down_run_once_each_as_catch_up() {
    let mut h = Harness::new();
    h.put(every("a", 10), t(-1));
    h.tick(t(0));
    h.restart(t(35));
    h.restart(t(36));
    h.tick(t(37));
    assert_eq!(
        scheduled(&h.engine, "a"),
        vec![Some(t(0)), Some(t(10)), Some(t(20)), Some(t(30))]
    );
    let triggers: Vec<Trigger> = runs(&h.engine, "a").iter().map(|r| r.trigger).collect();
    assert_eq!(
        triggers,
        vec![
            Trigger::Schedule,
            Trigger::CatchUp,
            Trigger::CatchUp,
            Trigger::CatchUp
        ]
    );
    assert_eq!(h.engine.job(&name("a")).unwrap().next_run, Some(t(40)));
}

#[test]
fn missed_instants_beyond_the_catch_up_limit_are_one_skipped_record() {
    let mut h = Harness::with(EngineConfig {
        catch_up_limit: 2,
        ..EngineConfig::default()
    });
    // Created before the first instant is armed, so all three are missed instants.
    h.put(every("a", 10), t(-10));
    h.restart(t(55));
    let r = runs(&h.engine, "a");
    let states: Vec<(Option<Timestamp>, RunState)> = r.iter().map(|r| (r.scheduled_at, r.state)).collect();
    assert_eq!(
        states,
        vec![
            (Some(t(0)), RunState::Pending),
            (Some(t(10)), RunState::Pending),
            (Some(t(20)), RunState::Skipped)
        ]
    );
    assert_eq!(h.engine.job(&name("a")).unwrap().next_run, Some(t(60)));
}

#[test]
fn an_instant_later_than_the_starting_deadline_is_skipped_and_recorded() {
    let mut h = Harness::new();
    let mut job = every("a", 10);
    job.starting_deadline_seconds = Some(5);
    h.put(job, t(-10));
    h.restart(t(24));
    let r = runs(&h.engine, "a");
    let states: Vec<(Option<Timestamp>, RunState)> = r.iter().map(|r| (r.scheduled_at, r.state)).collect();
    assert_eq!(
        states,
        vec![
            (Some(t(0)), RunState::Skipped),
            (Some(t(10)), RunState::Skipped),
            (Some(t(20)), RunState::Pending)
        ]
    );
    assert!(
        r[0].message
            .as_deref()
            .unwrap()
            .contains("startingDeadlineSeconds")
    );
}

// -------------------------------------------------------------------------------------------
// Arming: the next instant persisted ahead of it
// -------------------------------------------------------------------------------------------

/// The persisted run of `instant`, armed or not.
fn durable_run(h: &Harness, n: &str, instant: Timestamp) -> Option<Run> {
    h.durable
        .runs
        .iter()
        .find(|((job, _), r)| *job == name(n) && r.record.scheduled_at == Some(instant))
        .map(|(_, r)| r.clone())
}

fn persisted(effects: &[Effect]) -> Vec<Change> {
    effects
        .iter()
        .flat_map(|e| match e {
            Effect::Persist(c) => c.clone(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn the_next_instant_is_armed_ahead_with_its_run_and_the_cursor_in_one_persist() {
    let mut h = Harness::new();
    h.put(every("a", 10), t(-100));
    assert!(durable_run(&h, "a", t(0)).is_none(), "armed too early");
    let batch = persisted(&h.tick(t(-5)));
    assert!(batch.iter().any(|c| matches!(c, Change::PutRun(_, r)
        if r.armed && r.record.scheduled_at == Some(t(0)) && r.record.state == RunState::Pending)));
    assert!(
        batch
            .iter()
            .any(|c| matches!(c, Change::PutJob(j) if j.cursor == Some(t(10))))
    );
    assert_eq!(h.engine.next_deadline(), Some(t(0)));
}

#[test]
fn an_armed_run_is_launched_at_its_instant_not_before() {
    let mut h = Harness::new();
    h.put(every("a", 100), t(-100));
    h.tick(t(-5));
    assert!(launched(&h.offer("o1", t(-1))).is_empty());
    let effects = h.tick(t(0));
    assert_eq!(
        launched(&effects).len(),
        1,
        "the held offer takes it at the instant"
    );
}

#[test]
fn at_an_armed_instant_only_the_runs_launch_is_written_before_it_is_sent() {
    let mut h = Harness::new();
    h.put(every("a", 100), t(-100));
    h.tick(t(-5));
    h.offer("o1", t(-1));
    let effects = h.tick(t(0));
    let Some(Effect::Persist(batch)) = effects.first() else {
        panic!("the launch is persisted first: {effects:?}");
    };
    assert_eq!(batch.len(), 1, "{batch:?}");
    assert!(matches!(&batch[0], Change::PutRun(_, r)
        if !r.armed && r.record.state == RunState::Running && r.record.task_id.is_some()));
}

#[test]
fn an_armed_run_is_not_history_until_its_instant() {
    let mut h = Harness::new();
    h.put(every("a", 100), t(-100));
    h.tick(t(-5));
    assert!(runs(&h.engine, "a").is_empty());
    let status = h.engine.job(&name("a")).unwrap();
    assert_eq!(status.next_run, Some(t(0)), "the next run is the armed instant");
    assert_eq!(status.running, 0);
    h.tick(t(0));
    assert_eq!(scheduled(&h.engine, "a"), vec![Some(t(0))]);
    assert_eq!(h.engine.job(&name("a")).unwrap().next_run, Some(t(100)));
}

#[test]
fn an_armed_run_survives_a_restart_before_its_instant_and_runs_once() {
    let mut h = Harness::new();
    h.put(every("a", 100), t(-100));
    h.tick(t(-5));
    h.restart(t(-2));
    h.tick(t(0));
    h.launch_one("o1", t(0));
    let r = runs(&h.engine, "a");
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].scheduled_at, r[0].trigger), (Some(t(0)), Trigger::Schedule));
}

#[test]
fn an_armed_run_whose_instant_passed_during_a_restart_is_one_catch_up() {
    let mut h = Harness::new();
    h.put(every("a", 100), t(-100));
    h.tick(t(-5));
    let effects = h.restart(t(30));
    // Whether it was launched before the framework stopped is the master's to say.
    let asked = reconciled(&effects);
    assert_eq!(asked.len(), 1);
    h.answer(&asked[0].0, TaskState::Gone, t(30));
    h.launch_one("o1", t(30));
    let r = runs(&h.engine, "a");
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!((r[0].scheduled_at, r[0].trigger), (Some(t(0)), Trigger::CatchUp));
    assert_eq!(h.engine.job(&name("a")).unwrap().next_run, Some(t(100)));
}

#[test]
fn an_armed_run_past_its_starting_deadline_after_a_restart_is_skipped() {
    let mut h = Harness::new();
    let mut job = every("a", 100);
    job.starting_deadline_seconds = Some(10);
    h.put(job, t(-100));
    h.tick(t(-5));
    let effects = h.restart(t(30));
    let asked = reconciled(&effects);
    h.answer(&asked[0].0, TaskState::Gone, t(30));
    assert!(launched(&h.offer("o1", t(30))).is_empty());
    let r = runs(&h.engine, "a");
    assert_eq!((r[0].scheduled_at, r[0].state), (Some(t(0)), RunState::Skipped));
    assert!(
        r[0].message
            .as_deref()
            .unwrap()
            .contains("startingDeadlineSeconds")
    );
}

#[test]
fn disabling_a_job_drops_its_armed_run() {
    let mut h = Harness::new();
    let job = every("a", 100);
    h.put(job.clone(), t(-100));
    h.tick(t(-5));
    let mut disabled = job;
    disabled.disabled = true;
    h.put(disabled, t(-4));
    assert!(durable_run(&h, "a", t(0)).is_none());
    assert!(launched(&h.offer("o1", t(0))).is_empty());
    h.tick(t(1));
    assert!(runs(&h.engine, "a").is_empty());
}

#[test]
fn a_new_schedule_drops_the_armed_run_of_the_old_one() {
    let mut h = Harness::new();
    let job = every("a", 100);
    h.put(job.clone(), t(-100));
    h.tick(t(-5));
    let mut moved = job;
    moved.schedule = Some(format!("R/{}/PT100S", t(3)));
    h.put(moved, t(-2));
    assert!(durable_run(&h, "a", t(0)).is_none());
    assert!(durable_run(&h, "a", t(3)).is_some_and(|r| r.armed));
    h.tick(t(0));
    assert!(launched(&h.offer("o1", t(0))).is_empty());
    h.tick(t(3));
    assert_eq!(scheduled(&h.engine, "a"), vec![Some(t(3))]);
}

#[test]
fn replacing_a_job_with_the_same_schedule_keeps_its_armed_run() {
    let mut h = Harness::new();
    let job = every("a", 100);
    h.put(job.clone(), t(-100));
    h.tick(t(-5));
    let mut edited = job;
    edited.command = "echo edited".into();
    h.put(edited, t(-4));
    h.tick(t(0));
    h.offer("o1", t(0));
    assert_eq!(scheduled(&h.engine, "a"), vec![Some(t(0))]);
    assert!(durable_run(&h, "a", t(0)).is_some_and(|r| !r.armed && r.record.task_id.is_some()));
}

#[test]
fn forbid_is_decided_at_the_armed_instant_not_when_arming() {
    let mut h = Harness::new();
    let mut job = every("a", 100);
    job.concurrency_policy = ConcurrencyPolicy::Forbid;
    h.put(job, t(-100));
    h.tick(t(-5));
    // A manual run starts after the instant was armed and is still going at the instant.
    let e = h.engine.run_now(&name("a"), t(-3)).unwrap();
    h.record(e);
    h.launch_one("o1", t(-3));
    h.tick(t(0));
    assert!(launched(&h.offer("o2", t(0))).is_empty());
    let r = runs(&h.engine, "a");
    let instant = r.iter().find(|r| r.scheduled_at == Some(t(0))).unwrap();
    assert_eq!(instant.state, RunState::Skipped);
    assert!(instant.message.as_deref().unwrap().contains("FORBID"));
}

#[test]
fn replace_kills_the_run_in_flight_at_the_armed_instant_not_when_arming() {
    let mut h = Harness::new();
    let mut job = every("a", 100);
    job.concurrency_policy = ConcurrencyPolicy::Replace;
    h.put(job, t(-100));
    let e = h.engine.run_now(&name("a"), t(-10)).unwrap();
    h.record(e);
    let manual = h.launch_one("o1", t(-10));
    assert!(killed(&h.tick(t(-5))).is_empty(), "killed when arming");
    assert_eq!(killed(&h.tick(t(0))), vec![manual]);
    assert_eq!(launched(&h.offer("o2", t(0))).len(), 1);
}

#[test]
fn killing_a_jobs_tasks_leaves_its_armed_instant() {
    let mut h = Harness::new();
    h.put(every("a", 100), t(-100));
    let e = h.engine.run_now(&name("a"), t(-10)).unwrap();
    h.record(e);
    let manual = h.launch_one("o1", t(-10));
    h.tick(t(-5));
    let e = h.engine.kill_tasks(&name("a"), t(-4)).unwrap();
    assert_eq!(killed(&h.record(e)), vec![manual]);
    h.tick(t(0));
    assert_eq!(launched(&h.offer("o2", t(0))).len(), 1);
}

#[test]
fn a_job_firing_more_often_than_the_arming_lead_has_one_armed_run_at_a_time() {
    let mut h = Harness::new();
    h.put(every("a", 1), t(-100));
    h.tick(t(-1));
    let armed = h.durable.runs.values().filter(|r| r.armed).count();
    assert_eq!(armed, 1);
    for at in 0..4 {
        h.tick(t(at));
        h.launch_one(&format!("o{at}"), t(at));
    }
    assert_eq!(
        scheduled(&h.engine, "a"),
        vec![Some(t(0)), Some(t(1)), Some(t(2)), Some(t(3))]
    );
}

// -------------------------------------------------------------------------------------------
// Concurrency policy
// -------------------------------------------------------------------------------------------

#[test]
fn allow_starts_a_new_run_while_one_is_in_flight() {
    let mut h = Harness::new();
    h.put(every("a", 10), t(-1));
    h.tick(t(0));
    h.launch_one("o1", t(0));
    h.tick(t(10));
    h.launch_one("o2", t(10));
    let states: Vec<RunState> = runs(&h.engine, "a").iter().map(|r| r.state).collect();
    assert_eq!(states, vec![RunState::Running, RunState::Running]);
}

#[test]
fn forbid_skips_an_instant_while_a_run_is_in_flight() {
    let mut h = Harness::new();
    let mut job = every("a", 10);
    job.concurrency_policy = ConcurrencyPolicy::Forbid;
    h.put(job, t(-1));
    h.tick(t(0));
    h.launch_one("o1", t(0));
    h.tick(t(10));
    assert!(launched(&h.offer("o2", t(10))).is_empty());
    let r = runs(&h.engine, "a");
    assert_eq!((r[1].scheduled_at, r[1].state), (Some(t(10)), RunState::Skipped));
    assert!(r[1].message.as_deref().unwrap().contains("FORBID"));
}

#[test]
fn replace_kills_the_run_in_flight_and_starts_the_new_one() {
    let mut h = Harness::new();
    let mut job = every("a", 10);
    job.concurrency_policy = ConcurrencyPolicy::Replace;
    h.put(job, t(-1));
    h.tick(t(0));
    let first = h.launch_one("o1", t(0));
    let effects = h.tick(t(10));
    assert_eq!(killed(&effects), vec![first.clone()]);
    let second = h.launch_one("o2", t(10));
    assert_ne!(first, second);
    h.update(&first, TaskState::Killed, t(11));
    let states: Vec<RunState> = runs(&h.engine, "a").iter().map(|r| r.state).collect();
    assert_eq!(states, vec![RunState::Killed, RunState::Running]);
    assert_eq!(h.engine.job(&name("a")).unwrap().stats.error_count, 0);
}

// -------------------------------------------------------------------------------------------
// Failures
// -------------------------------------------------------------------------------------------

#[test]
fn a_failed_run_is_retried_with_backoff_up_to_retries_then_failed() {
    let mut h = Harness::new();
    let mut job = every("a", 1000);
    job.retries = 2;
    h.put(job, t(-1));
    h.tick(t(0));
    let first = h.launch_one("o1", t(0));
    h.update(&first, TaskState::Failed, t(1));
    // 10 s backoff: nothing before t(11).
    assert_eq!(h.engine.next_deadline(), Some(t(11)));
    // An offer arriving during the backoff is held, and used at the end of it.
    assert!(launched(&h.offer("o2", t(10))).is_empty());
    let second = launched(&h.tick(t(11)));
    assert_eq!(second.len(), 1);
    let second = second[0].clone();
    assert_eq!(second, task_id_for(&runs(&h.engine, "a")[0].run_id, 1));
    h.update(&second, TaskState::Failed, t(12));
    // 20 s backoff for the second retry: an offer at t(31) is held, used at t(32).
    assert!(launched(&h.offer("o4", t(31))).is_empty());
    let third = launched(&h.tick(t(32)));
    assert_eq!(third.len(), 1);
    let third = third[0].clone();
    h.update(&third, TaskState::Failed, t(33));
    let r = runs(&h.engine, "a");
    assert_eq!((r.len(), r[0].state, r[0].attempt), (1, RunState::Failed, 2));
    let stats = h.engine.job(&name("a")).unwrap().stats;
    assert_eq!((stats.error_count, stats.errors_since_last_success), (1, 1));
    assert_eq!(stats.last_error, Some(t(33)));
}

#[test]
fn retry_backoff_doubles_and_is_capped() {
    let c = EngineConfig::default();
    assert_eq!(retry_backoff(&c, 0), Duration::from_secs(10));
    assert_eq!(retry_backoff(&c, 1), Duration::from_secs(20));
    assert_eq!(retry_backoff(&c, 4), Duration::from_secs(160));
    assert_eq!(retry_backoff(&c, 5), Duration::from_secs(300));
    assert_eq!(retry_backoff(&c, 40), Duration::from_secs(300));
}

#[test]
fn a_run_longer_than_max_completion_time_is_killed_and_failed() {
    let mut h = Harness::new();
    let mut job = every("a", 1000);
    job.max_completion_time_seconds = Some(30);
    job.retries = 2;
    h.put(job, t(-1));
    h.tick(t(0));
    let task = h.launch_one("o1", t(0));
    assert_eq!(h.engine.next_deadline(), Some(t(30)));
    let effects = h.tick(t(30));
    assert_eq!(killed(&effects), vec![task.clone()]);
    h.update(&task, TaskState::Killed, t(31));
    let r = runs(&h.engine, "a");
    assert_eq!((r[0].state, r[0].attempt), (RunState::Failed, 0));
    assert!(r[0].message.as_deref().unwrap().contains("maxCompletionTime"));
}

#[test]
fn killing_a_jobs_tasks_records_its_runs_as_killed() {
    let mut h = Harness::new();
    h.put(every("a", 1000), t(-1));
    h.tick(t(0));
    let task = h.launch_one("o1", t(0));
    let e = h.engine.kill_tasks(&name("a"), t(1)).unwrap();
    assert_eq!(killed(&h.record(e)), vec![task.clone()]);
    h.update(&task, TaskState::Killed, t(2));
    assert_eq!(runs(&h.engine, "a")[0].state, RunState::Killed);
}

#[test]
fn a_successful_run_updates_the_statistics() {
    let mut h = Harness::new();
    h.put(every("a", 10), t(-1));
    h.tick(t(0));
    let task = h.launch_one("o1", t(0));
    h.update(&task, TaskState::Finished, t(3));
    let stats = h.engine.job(&name("a")).unwrap().stats;
    assert_eq!((stats.success_count, stats.last_success), (1, Some(t(3))));
}

// -------------------------------------------------------------------------------------------
// Dependent jobs
// -------------------------------------------------------------------------------------------

fn one_shot(n: &str) -> Job {
    let mut job = every(n, 1000);
    job.schedule = Some(format!("R1/{T0}/PT1S"));
    job
}

#[test]
fn a_child_runs_once_after_all_its_parents_succeeded() {
    let mut h = Harness::new();
    h.put(one_shot("p1"), t(-3));
    h.put(one_shot("p2"), t(-2));
    h.put(dependent("child", &["p1", "p2"]), t(-1));
    h.tick(t(0));
    let e = h.engine.offers(vec![offer("o1")], t(0));
    let tasks = launched(&h.record(e));
    assert_eq!(tasks.len(), 2);
    h.update(&tasks[0], TaskState::Finished, t(1));
    assert!(runs(&h.engine, "child").is_empty());
    h.update(&tasks[1], TaskState::Finished, t(2));
    let r = runs(&h.engine, "child");
    assert_eq!((r.len(), r[0].trigger), (1, Trigger::Dependency));
    h.tick(t(3));
    assert_eq!(runs(&h.engine, "child").len(), 1);
}

#[test]
fn a_child_does_not_run_after_a_parent_failed() {
    let mut h = Harness::new();
    h.put(one_shot("p1"), t(-3));
    h.put(one_shot("p2"), t(-2));
    h.put(dependent("child", &["p1", "p2"]), t(-1));
    h.tick(t(0));
    let e = h.engine.offers(vec![offer("o1")], t(0));
    let tasks = launched(&h.record(e));
    h.update(&tasks[0], TaskState::Finished, t(1));
    h.update(&tasks[1], TaskState::Failed, t(2));
    assert!(runs(&h.engine, "child").is_empty());
}

#[test]
fn a_job_with_an_unknown_parent_is_refused_and_nothing_is_stored() {
    let mut h = Harness::new();
    let err = h.engine.put_job(dependent("child", &["nope"]), t(0)).unwrap_err();
    assert_eq!(err.http_status(), 400);
    assert!(h.engine.jobs().is_empty());
}

// -------------------------------------------------------------------------------------------
// Offers
// -------------------------------------------------------------------------------------------

#[test]
fn offers_are_declined_and_suppressed_when_nothing_is_due_soon() {
    let mut h = Harness::new();
    assert!(h.put(every("a", 3600), t(1)).contains(&Effect::Suppress));
    let effects = h.offer("o1", t(1));
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Decline { refuse, .. } if *refuse >= Duration::from_secs(600)))
    );
}

#[test]
fn offers_are_revived_ahead_of_the_next_instant_and_held_until_it() {
    let mut h = Harness::new();
    h.put(every("a", 100), t(1));
    h.offer("o1", t(1));
    assert_eq!(h.engine.next_deadline(), Some(t(90)));
    assert!(h.tick(t(90)).contains(&Effect::Revive));
    let held = h.offer("o2", t(91));
    assert!(!held.iter().any(|e| matches!(e, Effect::Decline { .. })));
    let at_instant = h.tick(t(100));
    assert_eq!(launched(&at_instant).len(), 1);
}

#[test]
fn a_run_goes_only_to_an_agent_that_satisfies_its_constraints() {
    let mut h = Harness::new();
    let mut job = every("a", 100);
    job.constraints = vec![
        crate::job::Constraint::new("hostname", crate::job::ConstraintOperator::Equals, "host-2").unwrap(),
    ];
    h.put(job, t(-1));
    h.tick(t(0));
    assert!(launched(&h.offer("o1", t(0))).is_empty());
    let mut other = offer("o2");
    other.agent_id = "agent-2".into();
    other.hostname = "host-2".into();
    let e = h.engine.offers(vec![other], t(1));
    assert_eq!(launched(&e).len(), 1);
}

#[test]
fn history_is_bounded_per_job() {
    let mut h = Harness::with(EngineConfig {
        history_limit: 3,
        ..EngineConfig::default()
    });
    let mut job = every("a", 10);
    job.starting_deadline_seconds = Some(0);
    h.put(job, t(-10));
    h.restart(t(95));
    let r = runs(&h.engine, "a");
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].scheduled_at, Some(t(70)));
    let history = h.durable.runs.values().filter(|r| !r.armed).count();
    assert_eq!(history, 3);
}

#[test]
fn deleting_a_job_kills_its_tasks_and_forgets_it() {
    let mut h = Harness::new();
    h.put(every("a", 100), t(-1));
    h.tick(t(0));
    let task = h.launch_one("o1", t(0));
    let e = h.engine.delete_job(&name("a"), t(1)).unwrap();
    assert_eq!(killed(&h.record(e)), vec![task]);
    assert!(h.engine.job(&name("a")).is_err());
    assert!(h.durable.jobs.is_empty() && h.durable.runs.is_empty());
}

#[test]
fn a_job_that_would_close_a_cycle_is_refused_and_the_old_definition_kept() {
    let mut h = Harness::new();
    h.put(one_shot("a"), t(-3));
    h.put(dependent("b", &["a"]), t(-2));
    let err = h.engine.put_job(dependent("a", &["b"]), t(-1)).unwrap_err();
    assert_eq!(err.http_status(), 400);
    assert!(h.engine.job(&name("a")).unwrap().job.parents.is_empty());
}

#[test]
fn replacing_a_job_with_the_same_schedule_keeps_its_cursor() {
    let mut h = Harness::new();
    h.put(every("a", 10), t(-1));
    h.tick(t(0));
    let mut changed = every("a", 10);
    changed.command = "echo changed".into();
    h.put(changed, t(5));
    assert_eq!(h.engine.job(&name("a")).unwrap().next_run, Some(t(10)));
    assert_eq!(scheduled(&h.engine, "a"), vec![Some(t(0))]);
}

#[test]
fn a_re_enabled_job_resumes_from_now_without_running_the_instants_it_was_disabled_for() {
    let mut h = Harness::new();
    let mut off = every("a", 10);
    off.disabled = true;
    h.put(off, t(-1));
    h.tick(t(35));
    h.put(every("a", 10), t(36));
    h.tick(t(36));
    assert!(runs(&h.engine, "a").is_empty());
    assert_eq!(h.engine.job(&name("a")).unwrap().next_run, Some(t(40)));
}

// -------------------------------------------------------------------------------------------
// Reconciliation: an "unknown" answer relaunches a run only when it is definitive
// -------------------------------------------------------------------------------------------

fn offer_on(id: &str, agent: &str) -> v1::Offer {
    let mut o = offer(id);
    o.agent_id = agent.into();
    o.hostname = format!("host-of-{agent}");
    o
}

/// A job every 100 s whose first run is launched at t(0) on agent-1 and reported running.
fn running_on_agent_1(h: &mut Harness) -> TaskId {
    h.put(every("a", 100), t(-1));
    h.tick(t(0));
    let task = h.launch_one("o1", t(0));
    h.update(&task, TaskState::Running, t(1));
    task
}

fn agent_1() -> Option<AgentId> {
    Some(AgentId::new_unchecked("agent-1"))
}

fn reconciled(effects: &[Effect]) -> Vec<(TaskId, Option<AgentId>)> {
    effects
        .iter()
        .flat_map(|e| match e {
            Effect::Reconcile(tasks) => tasks.clone(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn a_launched_run_records_its_agent_before_any_update() {
    let mut h = Harness::new();
    h.put(every("a", 100), t(-1));
    h.tick(t(0));
    let task = h.launch_one("o1", t(0));
    assert_eq!(h.engine.launched_tasks(), vec![(task, agent_1())]);
}

#[test]
fn an_unknown_answer_before_the_agent_re_registered_does_not_launch_the_run_again() {
    let mut h = Harness::new();
    let task = running_on_agent_1(&mut h);
    let effects = h.master_restart(t(10));
    assert_eq!(reconciled(&effects), vec![(task.clone(), agent_1())]);
    // The restarted master does not know agent-1 yet: "unknown" proves nothing.
    assert!(launched(&h.answer(&task, TaskState::Unknown, t(10))).is_empty());
    let e = h.engine.offers(vec![offer_on("o2", "agent-2")], t(11));
    assert!(launched(&h.record(e)).is_empty());
    let r = runs(&h.engine, "a");
    assert_eq!(
        (r.len(), r[0].state, r[0].task_id.clone()),
        (1, RunState::Running, Some(task.clone()))
    );
    // agent-1 re-registers with the task: the run is adopted and ends once.
    h.answer(&task, TaskState::Running, t(12));
    h.update(&task, TaskState::Finished, t(20));
    let r = runs(&h.engine, "a");
    assert_eq!((r.len(), r[0].state, r[0].attempt), (1, RunState::Succeeded, 0));
    assert_eq!(r[0].task_id, Some(task));
}

#[test]
fn a_task_in_doubt_is_reconciled_again_at_once_when_its_agent_offers() {
    let mut h = Harness::new();
    let task = running_on_agent_1(&mut h);
    h.master_restart(t(10));
    h.answer(&task, TaskState::Unknown, t(10));
    let effects = h.offer("o2", t(11));
    assert_eq!(reconciled(&effects), vec![(task.clone(), agent_1())]);
    // Now the master knows agent-1 and still not the task: it is gone, launch it again.
    h.answer(&task, TaskState::Unknown, t(11));
    assert_eq!(h.launch_one("o3", t(12)), task);
    assert_eq!(runs(&h.engine, "a").len(), 1);
}

#[test]
fn an_update_from_the_agent_shows_it_re_registered() {
    let mut h = Harness::new();
    let task = running_on_agent_1(&mut h);
    h.master_restart(t(10));
    h.answer(&task, TaskState::Unknown, t(10));
    let mut other = status(&TaskId::new_unchecked("some-other-task"), TaskState::Running);
    other.source = v1::StatusSource::Agent as i32;
    let e = h.engine.update(other, t(11));
    assert_eq!(reconciled(&h.record(e)), vec![(task, agent_1())]);
}

#[test]
fn a_task_in_doubt_is_reconciled_again_with_backoff() {
    let mut h = Harness::new();
    let task = running_on_agent_1(&mut h);
    h.master_restart(t(10));
    h.answer(&task, TaskState::Unknown, t(10));
    assert_eq!(h.engine.next_deadline(), Some(t(11)));
    assert_eq!(reconciled(&h.tick(t(11))), vec![(task.clone(), agent_1())]);
    h.answer(&task, TaskState::Unknown, t(11));
    assert_eq!(h.engine.next_deadline(), Some(t(13)));
    assert!(reconciled(&h.tick(t(12))).is_empty());
    assert_eq!(reconciled(&h.tick(t(13))), vec![(task, agent_1())]);
}

#[test]
fn offers_are_revived_while_a_task_is_in_doubt() {
    let mut h = Harness::new();
    let task = running_on_agent_1(&mut h);
    let effects = h.master_restart(t(10));
    assert!(
        effects.contains(&Effect::Suppress),
        "nothing due soon: {effects:?}"
    );
    assert!(
        h.answer(&task, TaskState::Unknown, t(10))
            .contains(&Effect::Revive)
    );
    let e = h.engine.offers(vec![offer_on("o2", "agent-2")], t(11));
    let effects = h.record(e);
    assert!(effects.iter().any(|e| matches!(e, Effect::Decline { .. })));
    assert!(!effects.contains(&Effect::Suppress), "{effects:?}");
}

#[test]
fn a_task_whose_agent_never_comes_back_is_launched_again_after_the_agent_reregister_timeout() {
    let mut h = Harness::with(EngineConfig {
        agent_reregister_timeout: Duration::from_secs(60),
        ..EngineConfig::default()
    });
    let task = running_on_agent_1(&mut h);
    h.master_restart(t(10));
    h.answer(&task, TaskState::Unknown, t(10));
    h.answer(&task, TaskState::Unknown, t(69));
    assert_eq!(runs(&h.engine, "a")[0].state, RunState::Running);
    h.answer(&task, TaskState::Unknown, t(70));
    assert_eq!(runs(&h.engine, "a")[0].state, RunState::Pending);
    let e = h.engine.offers(vec![offer_on("o2", "agent-2")], t(71));
    assert_eq!(launched(&h.record(e)), vec![task]);
}

#[test]
fn a_launch_the_master_never_received_is_launched_again_at_once() {
    // The ACCEPT failed; the runtime reconciles; the master knows agent-1 (it offered it).
    let mut h = Harness::new();
    h.put(every("a", 100), t(-1));
    h.tick(t(0));
    let task = h.launch_one("o1", t(0));
    h.answer(&task, TaskState::Unknown, t(1));
    assert_eq!(h.launch_one("o2", t(1)), task);
}

#[test]
fn a_run_killed_before_a_restart_and_still_running_is_killed_again() {
    let mut h = Harness::new();
    let task = running_on_agent_1(&mut h);
    let e = h.engine.kill_tasks(&name("a"), t(2)).unwrap();
    h.record(e);
    h.restart(t(10));
    let effects = h.answer(&task, TaskState::Running, t(10));
    assert_eq!(killed(&effects), vec![task.clone()]);
    h.update(&task, TaskState::Killed, t(11));
    assert_eq!(runs(&h.engine, "a")[0].state, RunState::Killed);
}

// -------------------------------------------------------------------------------------------
// startingDeadlineSeconds while waiting for an offer
// -------------------------------------------------------------------------------------------

#[test]
fn a_run_still_waiting_for_an_offer_at_its_starting_deadline_is_skipped_not_launched_late() {
    let mut h = Harness::new();
    let mut job = every("a", 100);
    job.starting_deadline_seconds = Some(5);
    h.put(job, t(-1));
    h.tick(t(0));
    assert_eq!(runs(&h.engine, "a")[0].state, RunState::Pending);
    let deadline = h.engine.next_deadline().unwrap();
    assert!(deadline > t(5) && deadline < t(6), "{deadline}");
    h.tick(t(5));
    assert_eq!(runs(&h.engine, "a")[0].state, RunState::Pending);
    h.tick(deadline);
    assert!(launched(&h.offer("o1", deadline)).is_empty());
    let r = runs(&h.engine, "a");
    assert_eq!((r.len(), r[0].state), (1, RunState::Skipped));
    assert_eq!(r[0].finished_at, Some(deadline));
    assert!(
        r[0].message
            .as_deref()
            .unwrap()
            .contains("startingDeadlineSeconds"),
        "{:?}",
        r[0].message
    );
    assert_eq!(
        h.durable.runs.values().next().unwrap().record.state,
        RunState::Skipped
    );
}

#[test]
fn a_run_launched_within_its_starting_deadline_keeps_running_past_it() {
    let mut h = Harness::new();
    let mut job = every("a", 100);
    job.starting_deadline_seconds = Some(5);
    h.put(job, t(-1));
    h.tick(t(0));
    h.launch_one("o1", t(4));
    h.tick(t(30));
    assert_eq!(runs(&h.engine, "a")[0].state, RunState::Running);
}

#[test]
fn a_retry_is_not_bound_by_the_starting_deadline() {
    let mut h = Harness::new();
    let mut job = every("a", 100);
    job.starting_deadline_seconds = Some(5);
    job.retries = 1;
    h.put(job, t(-1));
    h.tick(t(0));
    let first = h.launch_one("o1", t(0));
    h.update(&first, TaskState::Failed, t(1));
    h.tick(t(20));
    let retry = h.launch_one("o2", t(20));
    let r = runs(&h.engine, "a");
    assert_eq!((r[0].state, r[0].attempt), (RunState::Running, 1));
    assert_eq!(Some(retry), r[0].task_id);
}

// -------------------------------------------------------------------------------------------
// Deleting a parent
// -------------------------------------------------------------------------------------------

#[test]
fn deleting_a_scheduled_parent_hands_its_schedule_to_its_only_child() {
    let mut h = Harness::new();
    let mut parent = every("p", 10);
    parent.schedule_time_zone = Some("Europe/Berlin".into());
    h.put(parent, t(-3));
    h.put(dependent("c", &["p"]), t(-2));
    let e = h.engine.delete_job(&name("p"), t(-1)).unwrap();
    h.record(e);
    let child = h.engine.job(&name("c")).unwrap();
    assert!(child.job.parents.is_empty());
    assert_eq!(
        child.job.schedule.as_deref(),
        Some(format!("R/{T0}/PT10S").as_str())
    );
    assert_eq!(child.job.schedule_time_zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(child.next_run, Some(t(0)));
    h.tick(t(0));
    let r = runs(&h.engine, "c");
    assert_eq!(
        (r.len(), r[0].trigger, r[0].scheduled_at),
        (1, Trigger::Schedule, Some(t(0)))
    );
    // Stored so, in the same batch as the deletion.
    assert!(h.durable.jobs[&name("c")].job.parents.is_empty());
    assert!(!h.durable.jobs.contains_key(&name("p")));
}

#[test]
fn deleting_a_dependent_parent_gives_its_children_its_parents() {
    let mut h = Harness::new();
    h.put(one_shot("a"), t(-4));
    h.put(dependent("b", &["a"]), t(-3));
    h.put(dependent("c", &["b"]), t(-2));
    let e = h.engine.delete_job(&name("b"), t(-1)).unwrap();
    h.record(e);
    assert_eq!(h.engine.job(&name("c")).unwrap().job.parents, vec![name("a")]);
    // c now runs after a.
    h.tick(t(0));
    let task = h.launch_one("o1", t(0));
    h.update(&task, TaskState::Finished, t(1));
    assert_eq!(runs(&h.engine, "c")[0].trigger, Trigger::Dependency);
}

#[test]
fn deleting_one_of_several_parents_leaves_the_child_dependent_on_the_others() {
    let mut h = Harness::new();
    h.put(one_shot("p1"), t(-4));
    h.put(one_shot("p2"), t(-3));
    h.put(dependent("c", &["p1", "p2"]), t(-2));
    let e = h.engine.delete_job(&name("p1"), t(-1)).unwrap();
    h.record(e);
    let child = h.engine.job(&name("c")).unwrap();
    assert_eq!((child.job.parents, child.job.schedule), (vec![name("p2")], None));
}

#[test]
fn a_child_re_wired_by_a_deletion_survives_a_restart() {
    let mut h = Harness::new();
    h.put(every("p", 10), t(-3));
    h.put(dependent("c", &["p"]), t(-2));
    let e = h.engine.delete_job(&name("p"), t(-1)).unwrap();
    h.record(e);
    h.restart(t(-1));
    let child = h.engine.job(&name("c")).unwrap();
    assert_eq!((child.job.parents.len(), child.next_run), (0, Some(t(0))));
}

// -------------------------------------------------------------------------------------------
// Daylight saving time, through the engine
// -------------------------------------------------------------------------------------------

const NEW_YORK: &str = "America/New_York";

fn daily_new_york(n: &str, expr: &str) -> Job {
    let mut job = Job::new(name(n), "true");
    job.schedule = Some(expr.into());
    job.schedule_time_zone = Some(NEW_YORK.into());
    job.concurrency_policy = ConcurrencyPolicy::Allow;
    job.retries = 0;
    job
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Runs the engine minute by minute from `from` to `until` with an offer at every minute,
/// finishing every task it launches; returns the job's scheduled instants.
fn run_minutes(h: &mut Harness, job: &str, from: Timestamp, until: Timestamp) -> Vec<Timestamp> {
    let mut now = from;
    let mut k = 0;
    while now < until {
        h.tick(now);
        let e = h.engine.offers(vec![offer(&format!("o{k}"))], now);
        for task in launched(&h.record(e)) {
            h.update(&task, TaskState::Finished, now);
        }
        k += 1;
        now = now.checked_add(jiff::SignedDuration::from_secs(60)).unwrap();
    }
    let r = runs(&h.engine, job);
    assert!(r.iter().all(|r| r.state == RunState::Succeeded), "{r:?}");
    r.iter().map(|r| r.scheduled_at.unwrap()).collect()
}

/// The local dates of `instants` in New York, each once.
fn one_per_local_day(instants: &[Timestamp]) -> Vec<jiff::civil::Date> {
    let dates: Vec<jiff::civil::Date> = instants
        .iter()
        .map(|t| t.in_tz(NEW_YORK).unwrap().date())
        .collect();
    let distinct: std::collections::BTreeSet<_> = dates.iter().copied().collect();
    assert_eq!(distinct.len(), dates.len(), "two runs on one day: {instants:?}");
    dates
}

#[test]
fn a_daily_cron_job_runs_once_on_the_spring_forward_day_when_its_time_does_not_exist() {
    let mut h = Harness::new();
    let from = ts("2026-03-06T12:00:00Z");
    h.put(daily_new_york("nightly", "30 2 * * *"), from);
    let instants = run_minutes(&mut h, "nightly", from, ts("2026-03-10T12:00:00Z"));
    assert_eq!(
        instants,
        [
            ts("2026-03-07T07:30:00Z"), // 02:30 EST
            ts("2026-03-08T07:00:00Z"), // 02:30 does not exist: 03:00 EDT, when the gap ends
            ts("2026-03-09T06:30:00Z"), // 02:30 EDT
            ts("2026-03-10T06:30:00Z"),
        ]
    );
    assert_eq!(one_per_local_day(&instants).len(), 4);
    assert!(
        runs(&h.engine, "nightly")
            .iter()
            .all(|r| r.trigger == Trigger::Schedule)
    );
}

#[test]
fn a_daily_cron_job_runs_once_on_the_fall_back_day() {
    let mut h = Harness::new();
    let from = ts("2026-10-30T12:00:00Z");
    h.put(daily_new_york("nightly", "30 2 * * *"), from);
    let instants = run_minutes(&mut h, "nightly", from, ts("2026-11-03T12:00:00Z"));
    assert_eq!(
        instants,
        [
            ts("2026-10-31T06:30:00Z"), // 02:30 EDT
            ts("2026-11-01T07:30:00Z"), // 02:30 EST, once
            ts("2026-11-02T07:30:00Z"),
            ts("2026-11-03T07:30:00Z"),
        ]
    );
    assert_eq!(one_per_local_day(&instants).len(), 4);
}

#[test]
fn a_daily_cron_job_in_the_repeated_hour_runs_once_on_the_fall_back_day() {
    let mut h = Harness::new();
    let from = ts("2026-10-30T12:00:00Z");
    h.put(daily_new_york("early", "30 1 * * *"), from);
    let instants = run_minutes(&mut h, "early", from, ts("2026-11-03T12:00:00Z"));
    assert_eq!(
        instants,
        [
            ts("2026-10-31T05:30:00Z"),
            ts("2026-11-01T05:30:00Z"), // the first 01:30 (EDT); not again at 06:30Z (EST)
            ts("2026-11-02T06:30:00Z"),
            ts("2026-11-03T06:30:00Z"),
        ]
    );
    assert_eq!(one_per_local_day(&instants).len(), 4);
}

#[test]
fn an_instant_in_the_spring_forward_gap_missed_while_down_runs_once_as_catch_up() {
    let mut h = Harness::new();
    let from = ts("2026-03-07T12:00:00Z");
    h.put(daily_new_york("nightly", "30 2 * * *"), from);
    h.tick(ts("2026-03-08T06:00:00Z"));
    // Down from 06:00Z to 08:00Z: the 07:00Z instant (03:00 EDT) passes meanwhile.
    h.restart(ts("2026-03-08T08:00:00Z"));
    h.restart(ts("2026-03-08T08:00:01Z"));
    let instants = run_minutes(
        &mut h,
        "nightly",
        ts("2026-03-08T08:00:02Z"),
        ts("2026-03-09T12:00:00Z"),
    );
    assert_eq!(instants, [ts("2026-03-08T07:00:00Z"), ts("2026-03-09T06:30:00Z")]);
    let triggers: Vec<Trigger> = runs(&h.engine, "nightly").iter().map(|r| r.trigger).collect();
    assert_eq!(triggers, [Trigger::CatchUp, Trigger::Schedule]);
}

#[test]
fn a_scheduled_runs_task_is_told_its_instant_and_a_manual_runs_is_not() {
    let mut h = Harness::new();
    h.put(every("a", 100), t(-100));
    let e = h.engine.run_now(&name("a"), t(-10)).unwrap();
    h.record(e);
    let manual = h.offer("o1", t(-10));
    h.tick(t(0));
    let scheduled = h.offer("o2", t(0));
    let instant_of = |effects: &[Effect]| -> Vec<(Option<String>, Option<String>)> {
        effects
            .iter()
            .flat_map(|e| match e {
                Effect::Launch { tasks, .. } => tasks.clone(),
                _ => Vec::new(),
            })
            .map(|task| {
                let env = task
                    .command
                    .as_ref()
                    .and_then(|c| c.environment.iter().find(|v| v.name == SCHEDULED_AT_ENV))
                    .map(|v| v.value.clone());
                let label = task
                    .labels
                    .iter()
                    .find(|l| l.key == SCHEDULED_AT_LABEL)
                    .map(|l| l.value.clone());
                (env, label)
            })
            .collect()
    };
    assert_eq!(instant_of(&manual), vec![(None, None)]);
    let at = Some(t(0).to_string());
    assert_eq!(instant_of(&scheduled), vec![(at.clone(), at)]);
}

// -------------------------------------------------------------------------------------------
// Launching at an armed instant without waiting for the write
// -------------------------------------------------------------------------------------------

fn launch_effects(effects: &[Effect]) -> Vec<bool> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Launch { armed, .. } => Some(*armed),
            _ => None,
        })
        .collect()
}

#[test]
fn the_launch_at_an_armed_instant_need_not_wait_for_the_steps_write() {
    let mut h = Harness::new();
    h.put(every("a", 100), t(-100));
    h.tick(t(-5));
    h.offer("o1", t(-1));
    assert_eq!(launch_effects(&h.tick(t(0))), vec![true]);
}

#[test]
fn a_launch_of_an_instant_handled_when_it_comes_waits_for_the_write() {
    let mut h = Harness::with(EngineConfig {
        arm_ahead: Duration::ZERO,
        ..EngineConfig::default()
    });
    h.put(every("a", 100), t(-100));
    h.offer("o1", t(-1));
    assert_eq!(launch_effects(&h.tick(t(0))), vec![false]);
}

#[test]
fn a_retry_waits_for_the_write() {
    let mut h = Harness::new();
    let mut job = every("a", 100);
    job.retries = 1;
    h.put(job, t(-100));
    h.tick(t(-5));
    h.tick(t(0));
    let task = h.launch_one("o1", t(0));
    h.update(&task, TaskState::Failed, t(1));
    h.tick(t(20));
    assert_eq!(launch_effects(&h.offer("o2", t(20))), vec![false]);
}

/// The framework launches the armed instant's task and dies before the step's write lands:
/// the store still holds the armed run. Returns the task id sent to the master.
fn launched_but_not_recorded(h: &mut Harness, job: Job) -> TaskId {
    h.put(job, t(-100));
    h.tick(t(-5));
    h.offer("o1", t(-1));
    let unrecorded = h.engine.tick(t(0));
    let tasks = launched(&unrecorded);
    assert_eq!(tasks.len(), 1);
    assert!(durable_run(h, "a", t(0)).is_some_and(|r| r.armed));
    tasks[0].clone()
}

#[test]
fn a_task_launched_at_its_armed_instant_but_not_recorded_is_adopted_after_a_restart() {
    let mut h = Harness::new();
    let task = launched_but_not_recorded(&mut h, every("a", 100));
    let effects = h.restart(t(2));
    assert!(
        launched(&effects).is_empty(),
        "launched again before the master answered"
    );
    assert_eq!(reconciled(&effects), vec![(task.clone(), None)]);
    let e = h.answer(&task, TaskState::Running, t(2));
    assert!(launched(&e).is_empty());
    assert!(launched(&h.offer("o2", t(3))).is_empty());
    h.update(&task, TaskState::Finished, t(4));
    let r = runs(&h.engine, "a");
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].scheduled_at, r[0].state), (Some(t(0)), RunState::Succeeded));
    assert_eq!(r[0].task_id, Some(task));
}

#[test]
fn an_armed_instant_the_master_never_saw_launched_runs_once_after_a_restart() {
    let mut h = Harness::new();
    let task = launched_but_not_recorded(&mut h, every("a", 100));
    h.restart(t(30));
    h.answer(&task, TaskState::Gone, t(30));
    let again = h.launch_one("o2", t(30));
    assert_eq!(
        again, task,
        "the same task id: a late ACCEPT of the first could not double it"
    );
    let r = runs(&h.engine, "a");
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].scheduled_at, r[0].trigger), (Some(t(0)), Trigger::CatchUp));
}

#[test]
fn an_armed_instant_the_master_never_saw_past_its_deadline_is_skipped_after_a_restart() {
    let mut h = Harness::new();
    let mut job = every("a", 100);
    job.starting_deadline_seconds = Some(10);
    let task = launched_but_not_recorded(&mut h, job);
    h.restart(t(30));
    h.answer(&task, TaskState::Gone, t(30));
    assert!(launched(&h.offer("o2", t(30))).is_empty());
    let r = runs(&h.engine, "a");
    assert_eq!((r[0].scheduled_at, r[0].state), (Some(t(0)), RunState::Skipped));
}
