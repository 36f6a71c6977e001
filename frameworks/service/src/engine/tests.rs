//! The engine's behaviours, driven step by step with explicit times.

use std::time::Duration;

use agora_proto::{OfferId, Resources, TaskId, v1};
use tokio::time::Instant;

use super::*;
use crate::app::{
    AppDefinition, AppId, Constraint, ConstraintOperator, HealthCheck, UnreachableStrategy, UpgradeStrategy,
};
use crate::handle::{DeploymentRef, ServiceError, ServiceEvent};
use crate::health::HealthEvent;

mod proptests;

/// An engine with a clock the test moves.
struct Harness {
    engine: Engine,
    start: Instant,
    elapsed: Duration,
    offers: u32,
}

fn id(s: &str) -> AppId {
    AppId::parse(s).expect("valid app id")
}

fn app(name: &str, instances: u32) -> AppDefinition {
    AppDefinition {
        instances,
        cpus: 0.1,
        mem: 16.0,
        ..AppDefinition::new(id(name), "sleep 1000")
    }
}

fn kills(step: &Step) -> Vec<TaskId> {
    step.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Kill { task_id, .. } => Some(task_id.clone()),
            _ => None,
        })
        .collect()
}

fn launched(step: &Step) -> Vec<v1::TaskInfo> {
    step.effects
        .iter()
        .flat_map(|e| match e {
            Effect::Accept { tasks, .. } => tasks.clone(),
            _ => Vec::new(),
        })
        .collect()
}

fn declines(step: &Step) -> Vec<(Vec<OfferId>, f64)> {
    step.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Decline {
                offer_ids,
                refuse_seconds,
            } => Some((offer_ids.clone(), *refuse_seconds)),
            _ => None,
        })
        .collect()
}

fn has(step: &Step, f: impl Fn(&Effect) -> bool) -> bool {
    step.effects.iter().any(f)
}

fn revives(step: &Step) -> bool {
    has(step, |e| matches!(e, Effect::Revive))
}

fn suppresses(step: &Step) -> bool {
    has(step, |e| matches!(e, Effect::Suppress))
}

fn events(step: &Step) -> Vec<&ServiceEvent> {
    step.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish(ev) => Some(ev),
            _ => None,
        })
        .collect()
}

fn deployment_succeeded(step: &Step) -> bool {
    events(step)
        .iter()
        .any(|e| matches!(e, ServiceEvent::DeploymentSuccess { .. }))
}

impl Harness {
    fn new() -> Self {
        Self::with(Recovered::default())
    }

    fn with(recovered: Recovered) -> Self {
        let mut h = Self {
            engine: Engine::new(EngineConfig::default(), recovered),
            start: Instant::now(),
            elapsed: Duration::ZERO,
            offers: 0,
        };
        h.step(Input::Subscribed {
            framework_id: "fw-1".into(),
        });
        h
    }

    fn now(&self) -> Now {
        let wall = jiff::Timestamp::from_second(1_700_000_000).expect("valid") + self.elapsed;
        Now {
            instant: self.start + self.elapsed,
            wall,
        }
    }

    fn advance(&mut self, d: Duration) -> Step {
        self.elapsed += d;
        self.step(Input::Tick)
    }

    fn step(&mut self, input: Input) -> Step {
        let now = self.now();
        self.engine.step(now, input)
    }

    fn command(&mut self, command: Command) -> Result<Reply, ServiceError> {
        self.step(Input::Command(command))
            .reply
            .expect("commands are answered")
    }

    fn deploy(&mut self, command: Command) -> DeploymentRef {
        match self.command(command) {
            Ok(Reply::Deployment(r)) => r,
            other => panic!("expected a deployment, got {other:?}"),
        }
    }

    fn offer_on(&mut self, host: &str, resources: &str) -> v1::Offer {
        self.offers += 1;
        v1::Offer {
            id: format!("offer-{}", self.offers),
            framework_id: "fw-1".into(),
            agent_id: format!("agent-{host}"),
            hostname: host.into(),
            resources: Resources::parse(resources).expect("valid resources").to_proto(),
            ..Default::default()
        }
    }

    /// One big offer on `host`; the step's launched tasks.
    fn offer(&mut self, host: &str) -> Step {
        let offer = self.offer_on(host, "cpus:100;mem:100000;ports:[31000-32000]");
        self.step(Input::Offers(vec![offer]))
    }

    fn status(&mut self, task: &TaskId, state: v1::TaskState) -> Step {
        self.status_with(task, state, v1::StatusReason::ReasonUnspecified)
    }

    fn status_with(&mut self, task: &TaskId, state: v1::TaskState, reason: v1::StatusReason) -> Step {
        let agent = self.engine.task(task).and_then(|t| t.agent_id.clone());
        let mut status = v1::TaskStatus {
            task_id: task.to_string(),
            agent_id: agent.map(|a| a.to_string()).unwrap_or_default(),
            message: format!("{state:?}"),
            ..Default::default()
        };
        status.set_state(state);
        status.set_reason(reason);
        self.step(Input::Status(status))
    }

    fn healthy(&mut self, task: &TaskId, alive: bool) -> Step {
        let record = self.engine.task(task).expect("known task").clone();
        self.step(Input::Health(HealthEvent::Changed {
            task_id: task.clone(),
            app_id: record.app_id,
            version: record.version,
            alive,
        }))
    }

    fn task_ids(&self, app: &str) -> Vec<TaskId> {
        self.engine
            .tasks(Some(&id(app)))
            .into_iter()
            .map(|t| t.id)
            .collect()
    }

    fn tasks_in(&self, app: &str, state: TaskState) -> Vec<TaskId> {
        self.task_ids(app)
            .into_iter()
            .filter(|t| self.engine.task(t).is_some_and(|r| r.state == state))
            .collect()
    }

    /// Every staging task of `app` reports RUNNING.
    fn run_all(&mut self, app: &str) {
        for t in self.tasks_in(app, TaskState::Staging) {
            self.status(&t, v1::TaskState::Running);
        }
    }

    /// Every task being killed reports KILLED; whether a deployment finished.
    fn confirm_kills(&mut self) -> bool {
        let killing: Vec<TaskId> = self
            .engine
            .tasks(None)
            .into_iter()
            .filter(|t| self.engine.task(&t.id).is_some_and(|r| r.kill_requested))
            .map(|t| t.id)
            .collect();
        let mut finished = false;
        for t in killing {
            finished |= deployment_succeeded(&self.status(&t, v1::TaskState::Killed));
        }
        finished
    }

    /// Creates `app`, launches and runs its tasks, and lets the deployment finish.
    fn running(&mut self, def: AppDefinition) {
        let name = def.id.to_string();
        self.deploy(Command::CreateApp(def));
        self.offer("host-a");
        self.run_all(&name);
        self.advance(Duration::from_millis(1));
        assert!(self.engine.deployments().is_empty(), "creating {name} finished");
    }
}

#[test]
fn launches_up_to_instances() {
    let mut h = Harness::new();
    h.deploy(Command::CreateApp(app("/web", 3)));
    let first = h.offer("host-a");
    assert_eq!(launched(&first).len(), 3, "three tasks packed into one offer");
    assert!(has(&first, |e| matches!(e, Effect::Accept { .. })));
    let second = h.offer("host-b");
    assert!(launched(&second).is_empty());
    assert_eq!(h.task_ids("/web").len(), 3);
}

#[test]
fn launches_are_persisted_before_they_are_accepted() {
    let mut h = Harness::new();
    h.deploy(Command::CreateApp(app("/web", 2)));
    let step = h.offer("host-a");
    let persist = step.effects.iter().position(|e| matches!(e, Effect::Persist(_)));
    let accept = step
        .effects
        .iter()
        .position(|e| matches!(e, Effect::Accept { .. }));
    assert!(persist.expect("persisted") < accept.expect("accepted"));
}

#[test]
fn suppresses_when_satisfied_and_revives_on_scale_up() {
    let mut h = Harness::new();
    let create = h.step(Input::Command(Command::CreateApp(app("/web", 2))));
    assert!(revives(&create), "new work revives offers");
    let placed = h.offer("host-a");
    assert!(suppresses(&placed), "nothing more wanted: suppress");
    h.run_all("/web");
    let quiet = h.advance(Duration::from_secs(1));
    assert!(
        !suppresses(&quiet) && !revives(&quiet),
        "only transitions are signalled"
    );

    let scale = h.step(Input::Command(Command::UpdateApps {
        apps: vec![app("/web", 4)],
        force: false,
    }));
    assert!(revives(&scale), "scale-up revives");
    assert!(!revives(&h.advance(Duration::from_secs(1))), "revived once");
}

#[test]
fn declines_leftover_offers_with_long_refuse_seconds() {
    let mut h = Harness::new();
    h.deploy(Command::CreateApp(app("/web", 1)));
    let a = h.offer_on("host-a", "cpus:1;mem:1000");
    let b = h.offer_on("host-b", "cpus:1;mem:1000");
    let step = h.step(Input::Offers(vec![a, b]));
    assert_eq!(launched(&step).len(), 1);
    let declined = declines(&step);
    assert_eq!(declined.len(), 1);
    assert_eq!(declined[0].0.len(), 1, "the unused offer is declined");
    assert_eq!(declined[0].1, 120.0);
}

#[test]
fn offers_that_do_not_fit_are_declined_and_reasons_are_queued() {
    let mut h = Harness::new();
    h.deploy(Command::CreateApp(app("/web", 1)));
    let small = h.offer_on("host-a", "cpus:0.01;mem:1000");
    let step = h.step(Input::Offers(vec![small]));
    assert!(launched(&step).is_empty());
    assert_eq!(declines(&step).len(), 1);
    let queue = h.engine.queue();
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].count, 1);
    assert_eq!(queue[0].unplaced_reasons, vec!["InsufficientCpus".to_owned()]);
}

#[test]
fn a_first_failure_is_replaced_at_once() {
    let mut h = Harness::new();
    h.running(AppDefinition {
        backoff_seconds: 60,
        ..app("/crash", 1)
    });
    let task = h.task_ids("/crash").pop().expect("a task");
    let step = h.status(&task, v1::TaskState::Failed);
    assert!(revives(&step), "replacement wanted at once");
    assert_eq!(h.engine.queue()[0].delay_seconds_left, 0);
    assert_eq!(launched(&h.offer("host-a")).len(), 1);
}

#[test]
fn repeated_failures_are_replaced_after_a_backoff_that_grows_by_the_factor_and_caps() {
    let mut h = Harness::new();
    let def = AppDefinition {
        backoff_seconds: 2,
        backoff_factor: 2.0,
        max_launch_delay_seconds: 5,
        ..app("/crash", 1)
    };
    h.running(def);
    // The first failure is replaced at once.
    let task = h.task_ids("/crash").pop().expect("a task");
    h.status(&task, v1::TaskState::Failed);
    assert_eq!(launched(&h.offer("host-a")).len(), 1);
    h.run_all("/crash");
    let mut delays = Vec::new();
    for _ in 0..4 {
        let task = h.task_ids("/crash").pop().expect("a task");
        h.status(&task, v1::TaskState::Failed);
        let queue = h.engine.queue();
        assert_eq!(queue.len(), 1, "the replacement waits in the queue");
        let delay = queue[0].delay_seconds_left;
        delays.push(delay);
        // No launch while the delay holds.
        h.elapsed += Duration::from_millis(delay * 1000 - 100);
        assert!(launched(&h.offer("host-a")).is_empty(), "held by backoff");
        let expired = h.advance(Duration::from_millis(100));
        assert!(revives(&expired), "the delay's end asks for offers again");
        assert_eq!(launched(&h.offer("host-a")).len(), 1, "replaced after the delay");
        h.run_all("/crash");
    }
    assert_eq!(delays, vec![2, 4, 5, 5]);
    let status = h.engine.app(&id("/crash")).expect("app");
    assert_eq!(
        status.last_task_failure.expect("failure recorded").state,
        "TASK_FAILED"
    );
}

#[test]
fn backoff_is_reset_by_a_task_that_stays_running() {
    let mut h = Harness::new();
    h.running(AppDefinition {
        backoff_seconds: 3,
        ..app("/crash", 1)
    });
    let task = h.task_ids("/crash").pop().expect("a task");
    h.status(&task, v1::TaskState::Failed);
    h.advance(Duration::from_secs(3));
    h.offer("host-a");
    h.run_all("/crash");
    assert!(h.engine.delays.contains_key(&id("/crash")));
    h.advance(EngineConfig::default().backoff_reset_after);
    assert!(
        !h.engine.delays.contains_key(&id("/crash")),
        "stable task resets the backoff"
    );
}

#[test]
fn reset_delay_clears_the_backoff() {
    let mut h = Harness::new();
    h.running(AppDefinition {
        backoff_seconds: 60,
        ..app("/crash", 1)
    });
    for _ in 0..2 {
        let task = h.task_ids("/crash").pop().expect("a task");
        h.status(&task, v1::TaskState::Failed);
        if h.engine.queue()[0].delay_seconds_left == 0 {
            h.offer("host-a");
            h.run_all("/crash");
        }
    }
    assert_eq!(
        h.engine.queue()[0].delay_seconds_left,
        60,
        "the second failure waits"
    );
    let step = h.step(Input::Command(Command::ResetDelay(id("/crash"))));
    assert!(matches!(step.reply, Some(Ok(Reply::Done))));
    assert!(revives(&step));
    assert_eq!(h.engine.queue()[0].delay_seconds_left, 0);
    assert_eq!(launched(&h.offer("host-a")).len(), 1);
}

/// The launch delays a step stores.
fn stored_delays(step: &Step) -> Vec<StoredDelay> {
    step.effects
        .iter()
        .flat_map(|e| match e {
            Effect::Persist(changes) => changes
                .iter()
                .filter_map(|c| match c {
                    StateChange::PutDelay(d) => Some(d.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn a_launch_delay_survives_a_restart_of_the_framework() {
    let mut h = Harness::new();
    h.running(AppDefinition {
        backoff_seconds: 60,
        ..app("/crash", 1)
    });
    let mut stored = Vec::new();
    for _ in 0..2 {
        let task = h.task_ids("/crash").pop().expect("a task");
        stored.extend(stored_delays(&h.status(&task, v1::TaskState::Failed)));
        if h.engine.queue()[0].delay_seconds_left == 0 {
            h.offer("host-a");
            h.run_all("/crash");
        }
    }
    let delay = stored.pop().expect("the delay is stored");
    assert_eq!(delay.until, h.now().wall + Duration::from_secs(60));
    assert_eq!(delay.failures, 2);

    // A new engine on what was stored, 20 s later (a fresh monotonic clock).
    let recovered = Recovered {
        apps: h.engine.apps.values().cloned().collect(),
        versions: h
            .engine
            .versions
            .iter()
            .map(|(k, v)| (k.clone(), v.values().cloned().collect()))
            .collect(),
        deployments: Vec::new(),
        tasks: Vec::new(),
        delays: vec![delay],
    };
    let mut restarted = Harness {
        engine: Engine::new(EngineConfig::default(), recovered),
        start: Instant::now(),
        elapsed: h.elapsed + Duration::from_secs(20),
        offers: 0,
    };
    restarted.step(Input::Subscribed {
        framework_id: "fw-1".into(),
    });

    assert_eq!(restarted.engine.queue()[0].delay_seconds_left, 40);
    assert!(launched(&restarted.offer("host-a")).is_empty(), "still held");
    restarted.advance(Duration::from_secs(40));
    assert_eq!(
        launched(&restarted.offer("host-a")).len(),
        1,
        "launched when it ends"
    );
}

#[test]
fn a_stored_delay_of_a_removed_app_is_deleted() {
    let recovered = Recovered {
        delays: vec![StoredDelay {
            app_id: id("/gone"),
            version: None,
            current_seconds: 1.0,
            until: jiff::Timestamp::from_second(1_700_000_100).expect("valid"),
            failures: 2,
        }],
        ..Recovered::default()
    };
    let mut h = Harness {
        engine: Engine::new(EngineConfig::default(), recovered),
        start: Instant::now(),
        elapsed: Duration::ZERO,
        offers: 0,
    };

    let step = h.step(Input::Subscribed {
        framework_id: "fw-1".into(),
    });

    let deleted = step.effects.iter().any(|e| {
        matches!(e, Effect::Persist(changes)
            if changes.iter().any(|c| matches!(c, StateChange::DeleteDelay(a) if *a == id("/gone"))))
    });
    assert!(deleted, "{:?}", step.effects);
}

#[test]
fn task_killed_outside_is_replaced_without_backoff() {
    let mut h = Harness::new();
    h.running(app("/web", 2));
    let task = h.task_ids("/web")[0].clone();
    let step = h.status(&task, v1::TaskState::Killed);
    assert!(revives(&step), "replacement wanted at once");
    assert_eq!(h.engine.queue()[0].delay_seconds_left, 0);
    assert_eq!(launched(&h.offer("host-a")).len(), 1);
    assert!(
        h.engine
            .app(&id("/web"))
            .expect("app")
            .last_task_failure
            .is_none()
    );
}

#[test]
fn finished_task_is_replaced_without_backoff() {
    let mut h = Harness::new();
    h.running(app("/web", 1));
    let task = h.task_ids("/web")[0].clone();
    h.status(&task, v1::TaskState::Finished);
    assert_eq!(launched(&h.offer("host-a")).len(), 1);
}

#[test]
fn unreachable_task_is_replaced_after_the_timeout_and_killed_when_it_returns() {
    let mut h = Harness::new();
    h.running(AppDefinition {
        unreachable_strategy: UnreachableStrategy::Enabled {
            inactive_after_seconds: 60,
            expunge_after_seconds: 600,
        },
        ..app("/web", 1)
    });
    let old = h.task_ids("/web")[0].clone();
    h.status(&old, v1::TaskState::Unreachable);
    assert!(
        launched(&h.offer("host-b")).is_empty(),
        "not replaced before inactiveAfterSeconds"
    );
    let deadline = h.engine.next_deadline().expect("a timer");
    assert_eq!(deadline, h.now().instant + Duration::from_secs(60));
    h.advance(Duration::from_secs(60));
    let replacement = launched(&h.offer("host-b"));
    assert_eq!(replacement.len(), 1, "replaced after the timeout");
    h.run_all("/web");
    let back = h.status(&old, v1::TaskState::Running);
    assert_eq!(kills(&back), vec![old.clone()], "the returning task is killed");
    h.status(&old, v1::TaskState::Killed);
    assert_eq!(h.task_ids("/web").len(), 1);
    assert!(launched(&h.offer("host-c")).is_empty());
}

#[test]
fn unreachable_task_that_returns_in_time_is_kept() {
    let mut h = Harness::new();
    h.running(AppDefinition {
        unreachable_strategy: UnreachableStrategy::Enabled {
            inactive_after_seconds: 60,
            expunge_after_seconds: 600,
        },
        ..app("/web", 1)
    });
    let task = h.task_ids("/web")[0].clone();
    h.status(&task, v1::TaskState::Unreachable);
    h.elapsed += Duration::from_secs(30);
    let back = h.status(&task, v1::TaskState::Running);
    assert!(kills(&back).is_empty());
    h.advance(Duration::from_secs(60));
    assert!(launched(&h.offer("host-b")).is_empty());
}

#[test]
fn unhealthy_task_is_killed_and_replaced() {
    let mut h = Harness::new();
    h.running(app("/web", 1));
    let task = h.task_ids("/web")[0].clone();
    let step = h.step(Input::Health(HealthEvent::Unhealthy {
        task_id: task.clone(),
        app_id: id("/web"),
        version: h.engine.task(&task).expect("task").version,
        cause: "HTTP 500".into(),
    }));
    assert_eq!(kills(&step), vec![task.clone()]);
    assert!(
        events(&step)
            .iter()
            .any(|e| matches!(e, ServiceEvent::UnhealthyTaskKill { .. }))
    );
    assert_eq!(launched(&h.offer("host-a")).len(), 1, "replaced");
}

/// Rolling update of `n` instances; after every step: never more than the
/// capacity bound alive, never fewer than the health bound ready.
fn rolling_update_respects_bounds(n: u32, min_health: f64, max_over: f64, with_checks: bool) {
    let mut h = Harness::new();
    let strategy = UpgradeStrategy {
        minimum_health_capacity: min_health,
        maximum_over_capacity: max_over,
    };
    let checks = if with_checks {
        vec![HealthCheck::default()]
    } else {
        Vec::new()
    };
    let v1 = AppDefinition {
        upgrade_strategy: strategy,
        health_checks: checks.clone(),
        ..app("/web", n)
    };
    h.deploy(Command::CreateApp(v1.clone()));
    h.offer("host-a");
    h.run_all("/web");
    for t in h.task_ids("/web") {
        if with_checks {
            h.healthy(&t, true);
        }
    }
    h.advance(Duration::from_millis(1));
    assert!(h.engine.deployments().is_empty());

    let v2 = AppDefinition {
        cmd: Some("sleep 2000".into()),
        ..v1
    };
    let r = h.deploy(Command::UpdateApps {
        apps: vec![v2],
        force: false,
    });
    let min_ready = (f64::from(n) * min_health).ceil() as usize;
    let max_alive = (f64::from(n) * (1.0 + max_over)).floor() as usize;
    let check = |h: &Harness, when: &str| {
        let alive = h.task_ids("/web").len();
        let ready = h
            .task_ids("/web")
            .iter()
            .filter_map(|t| h.engine.task(t))
            .filter(|t| !t.kill_requested && t.is_ready(with_checks && t.version == r.version))
            .count();
        assert!(alive <= max_alive, "{when}: {alive} alive > {max_alive}");
        assert!(ready >= min_ready, "{when}: {ready} ready < {min_ready}");
    };
    check(&h, "after update");
    let mut finished = false;
    for round in 0..(4 * n + 4) {
        finished |= h.confirm_kills();
        check(&h, &format!("round {round}: kills confirmed"));
        let step = h.offer("host-a");
        check(&h, &format!("round {round}: offers"));
        finished |= deployment_succeeded(&step);
        for t in h.tasks_in("/web", TaskState::Staging) {
            let s = h.status(&t, v1::TaskState::Running);
            finished |= deployment_succeeded(&s);
            check(&h, &format!("round {round}: {t} running"));
            if with_checks {
                let s = h.healthy(&t, true);
                finished |= deployment_succeeded(&s);
                check(&h, &format!("round {round}: {t} healthy"));
            }
        }
        finished |= deployment_succeeded(&h.advance(Duration::from_millis(1)));
        if finished {
            break;
        }
    }
    assert!(finished, "the rolling update finishes");
    let versions: Vec<_> = h
        .task_ids("/web")
        .iter()
        .filter_map(|t| h.engine.task(t))
        .map(|t| t.version)
        .collect();
    assert_eq!(versions.len(), n as usize);
    assert!(
        versions.iter().all(|v| *v == r.version),
        "every task runs the new version"
    );
}

#[test]
fn rolling_update_keeps_half_healthy_and_never_exceeds_instances() {
    rolling_update_respects_bounds(4, 0.5, 0.0, false);
    rolling_update_respects_bounds(5, 0.5, 0.0, true);
}

#[test]
fn rolling_update_with_default_strategy_keeps_full_capacity() {
    rolling_update_respects_bounds(3, 1.0, 1.0, true);
}

#[test]
fn rolling_update_waits_for_health_before_killing_old_tasks() {
    let mut h = Harness::new();
    let v1 = AppDefinition {
        health_checks: vec![HealthCheck::default()],
        ..app("/web", 2)
    };
    h.deploy(Command::CreateApp(v1.clone()));
    h.offer("host-a");
    h.run_all("/web");
    for t in h.task_ids("/web") {
        h.healthy(&t, true);
    }
    h.advance(Duration::from_millis(1));
    let old = h.task_ids("/web");
    let v2 = AppDefinition {
        cmd: Some("sleep 2".into()),
        ..v1
    };
    let update = h.step(Input::Command(Command::UpdateApps {
        apps: vec![v2],
        force: false,
    }));
    assert!(
        kills(&update).is_empty(),
        "minimumHealthCapacity 1: nothing killed yet"
    );
    assert_eq!(
        launched(&h.offer("host-a")).len(),
        2,
        "maximumOverCapacity 1: two new at once"
    );
    let new: Vec<TaskId> = h.tasks_in("/web", TaskState::Staging);
    for t in &new {
        let s = h.status(t, v1::TaskState::Running);
        assert!(
            kills(&s).is_empty(),
            "running but not yet healthy: old tasks stay"
        );
    }
    let s = h.healthy(&new[0], true);
    assert_eq!(kills(&s).len(), 1, "one new healthy task lets one old task go");
    assert!(old.contains(&kills(&s)[0]));
    let s = h.healthy(&new[1], true);
    assert_eq!(kills(&s).len(), 1);
    h.confirm_kills();
    let done = h.advance(Duration::from_millis(1));
    assert!(deployment_succeeded(&done) || h.engine.deployments().is_empty());
}

#[test]
fn deployment_never_finishes_in_the_step_that_created_it() {
    let mut h = Harness::new();
    let step = h.step(Input::Command(Command::CreateApp(app("/empty", 0))));
    assert!(!deployment_succeeded(&step));
    assert_eq!(h.engine.deployments().len(), 1);
    assert!(
        h.engine.next_deadline().is_some_and(|d| d <= h.now().instant),
        "a tick is due at once"
    );
    let tick = h.advance(Duration::ZERO);
    assert!(deployment_succeeded(&tick));
    assert!(h.engine.deployments().is_empty());
}

#[test]
fn change_during_a_deployment_conflicts_without_force() {
    let mut h = Harness::new();
    let first = h.deploy(Command::CreateApp(app("/web", 2)));
    let err = h
        .command(Command::UpdateApps {
            apps: vec![app("/web", 3)],
            force: false,
        })
        .expect_err("locked");
    assert_eq!(err.http_status(), 409);
    match err {
        ServiceError::Conflict { deployments, .. } => assert_eq!(deployments, vec![first.id]),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        h.engine.app(&id("/web")).expect("app").app.instances,
        2,
        "nothing changed"
    );
}

#[test]
fn create_of_an_existing_app_conflicts() {
    let mut h = Harness::new();
    h.running(app("/web", 1));
    let err = h.command(Command::CreateApp(app("/web", 1))).expect_err("exists");
    assert_eq!(err.http_status(), 409);
}

#[test]
fn force_supersedes_the_running_deployment() {
    let mut h = Harness::new();
    let first = h.deploy(Command::CreateApp(app("/web", 2)));
    let step = h.step(Input::Command(Command::UpdateApps {
        apps: vec![app("/web", 3)],
        force: true,
    }));
    let Some(Ok(Reply::Deployment(second))) = step.reply.clone() else {
        panic!("expected a deployment: {:?}", step.reply)
    };
    assert!(
        events(&step)
            .iter()
            .any(|e| matches!(e, ServiceEvent::DeploymentFailed { plan, .. } if plan.id == first.id))
    );
    let ids: Vec<_> = h.engine.deployments().into_iter().map(|d| d.id).collect();
    assert_eq!(ids, vec![second.id]);
    assert_eq!(launched(&h.offer("host-a")).len(), 3);
}

#[test]
fn cancel_rolls_the_deployment_back() {
    let mut h = Harness::new();
    h.running(app("/web", 2));
    let scale = h.deploy(Command::UpdateApps {
        apps: vec![app("/web", 5)],
        force: false,
    });
    h.offer("host-a");
    assert_eq!(h.task_ids("/web").len(), 5);
    let reply = h
        .command(Command::CancelDeployment {
            id: scale.id.clone(),
            force: false,
        })
        .expect("cancelled");
    let Reply::Cancelled(Some(rollback)) = reply else {
        panic!("expected a rollback: {reply:?}")
    };
    assert_ne!(rollback.id, scale.id);
    assert_eq!(
        h.engine.app(&id("/web")).expect("app").app.instances,
        2,
        "original restored"
    );
    assert_eq!(h.engine.deployments().len(), 1);
    assert_eq!(h.engine.deployments()[0].id, rollback.id);
    let killing = h
        .task_ids("/web")
        .iter()
        .filter(|t| h.engine.task(t).is_some_and(|r| r.kill_requested))
        .count();
    assert_eq!(killing, 3, "the scale-up is undone");
    h.run_all("/web");
    assert!(
        h.confirm_kills(),
        "the rollback finishes when the extra tasks are gone"
    );
    assert!(h.engine.deployments().is_empty());
}

#[test]
fn force_cancel_drops_the_deployment_and_keeps_the_apps_as_they_are() {
    let mut h = Harness::new();
    h.running(app("/web", 1));
    let scale = h.deploy(Command::UpdateApps {
        apps: vec![app("/web", 3)],
        force: false,
    });
    let reply = h
        .command(Command::CancelDeployment {
            id: scale.id,
            force: true,
        })
        .expect("dropped");
    assert!(matches!(reply, Reply::Cancelled(None)));
    assert!(h.engine.deployments().is_empty());
    assert_eq!(h.engine.app(&id("/web")).expect("app").app.instances, 3);
}

#[test]
fn dependencies_start_in_order_and_stop_in_reverse() {
    let mut h = Harness::new();
    let db = app("/db", 1);
    let web = AppDefinition {
        dependencies: vec![id("/db")],
        ..app("/web", 1)
    };
    h.deploy(Command::UpdateApps {
        apps: vec![web, db],
        force: false,
    });
    let plan = &h.engine.deployments()[0];
    let names: Vec<Vec<String>> = plan
        .steps
        .iter()
        .map(|s| s.iter().map(|a| format!("{} {}", a.action, a.app)).collect())
        .collect();
    assert_eq!(
        names,
        vec![
            vec![
                "StartApplication /db".to_owned(),
                "StartApplication /web".to_owned()
            ],
            vec!["ScaleApplication /db".to_owned()],
            vec!["ScaleApplication /web".to_owned()],
        ]
    );
    // Only /db is launched until it runs.
    let first = launched(&h.offer("host-a"));
    assert_eq!(first.len(), 1);
    assert_eq!(h.task_ids("/db").len(), 1);
    assert!(launched(&h.offer("host-a")).is_empty(), "/web waits for /db");
    h.run_all("/db");
    assert_eq!(launched(&h.offer("host-a")).len(), 1);
    assert_eq!(h.task_ids("/web").len(), 1);
    assert!(deployment_succeeded(
        &h.status(&h.task_ids("/web")[0].clone(), v1::TaskState::Running)
    ));

    let r = h.deploy(Command::DeleteApps {
        ids: vec![id("/db"), id("/web")],
        force: false,
    });
    let plan = h
        .engine
        .deployments()
        .into_iter()
        .find(|d| d.id == r.id)
        .expect("plan");
    let names: Vec<Vec<String>> = plan
        .steps
        .iter()
        .map(|s| s.iter().map(|a| format!("{} {}", a.action, a.app)).collect())
        .collect();
    assert_eq!(
        names,
        vec![
            vec!["StopApplication /web".to_owned()],
            vec!["StopApplication /db".to_owned()]
        ]
    );
    assert!(
        h.task_ids("/db")
            .iter()
            .all(|t| !h.engine.task(t).expect("task").kill_requested),
        "/db waits"
    );
    let web_task = h.task_ids("/web")[0].clone();
    let step = h.status(&web_task, v1::TaskState::Killed);
    assert!(
        events(&step)
            .iter()
            .any(|e| matches!(e, ServiceEvent::AppTerminated { app_id, .. } if *app_id == id("/web")))
    );
    assert!(
        kills(&step).len() == 1 && h.task_ids("/db").contains(&kills(&step)[0]),
        "now /db goes"
    );
    assert!(h.confirm_kills());
    assert!(h.engine.apps().is_empty());
}

#[test]
fn delete_kills_every_task_then_removes_the_app() {
    let mut h = Harness::new();
    h.running(app("/web", 2));
    let step = h.step(Input::Command(Command::DeleteApps {
        ids: vec![id("/web")],
        force: false,
    }));
    assert_eq!(kills(&step).len(), 2);
    assert!(h.engine.app(&id("/web")).is_ok(), "kept until its tasks are gone");
    let tasks = h.task_ids("/web");
    h.status(&tasks[0], v1::TaskState::Killed);
    let done = h.status(&tasks[1], v1::TaskState::Killed);
    assert!(deployment_succeeded(&done));
    assert!(has(
        &done,
        |e| matches!(e, Effect::Persist(c) if c.iter().any(|c| matches!(c, StateChange::DeleteApp(_))))
    ));
    assert_eq!(h.engine.app(&id("/web")).expect_err("gone").http_status(), 404);
}

#[test]
fn scale_only_change_keeps_the_version_and_stamps_last_scaling_at() {
    let mut h = Harness::new();
    h.running(app("/web", 1));
    let before = h.engine.app(&id("/web")).expect("app").app;
    h.elapsed += Duration::from_secs(5);
    h.deploy(Command::UpdateApps {
        apps: vec![app("/web", 2)],
        force: false,
    });
    let after = h.engine.app(&id("/web")).expect("app").app;
    assert_eq!(after.version, before.version);
    let info = after.version_info.expect("version info");
    assert!(info.last_scaling_at > before.version.expect("version"));
    assert_eq!(Some(info.last_config_change_at), before.version);
    assert_eq!(h.engine.app_versions(&id("/web")).expect("versions").len(), 1);
    h.confirm_kills();

    h.advance(Duration::from_millis(1));
    h.offer("host-a");
    h.run_all("/web");
    h.advance(Duration::from_millis(1));
    h.deploy(Command::UpdateApps {
        apps: vec![AppDefinition {
            cmd: Some("sleep 5".into()),
            ..app("/web", 2)
        }],
        force: false,
    });
    assert_eq!(
        h.engine.app_versions(&id("/web")).expect("versions").len(),
        2,
        "a config change is a version"
    );
}

#[test]
fn restart_replaces_every_task_with_a_new_version() {
    let mut h = Harness::new();
    h.running(app("/web", 2));
    let old = h.task_ids("/web");
    let r = h.deploy(Command::RestartApp {
        id: id("/web"),
        force: false,
    });
    assert_eq!(h.engine.deployments()[0].steps[0][0].action, "RestartApplication");
    for _ in 0..6 {
        h.offer("host-a");
        h.run_all("/web");
        h.confirm_kills();
    }
    h.advance(Duration::from_millis(1));
    let now = h.task_ids("/web");
    assert_eq!(now.len(), 2);
    assert!(now.iter().all(|t| !old.contains(t)));
    assert!(
        now.iter()
            .all(|t| h.engine.task(t).expect("task").version == r.version)
    );
    assert!(h.engine.deployments().is_empty());
}

#[test]
fn kill_with_scale_lowers_instances_in_a_deployment() {
    let mut h = Harness::new();
    h.running(app("/web", 3));
    let victim = h.task_ids("/web")[0].clone();
    let reply = h
        .command(Command::KillTasks {
            ids: vec![victim.clone()],
            scale: true,
            wipe: false,
            force: false,
        })
        .expect("killed");
    let Reply::Killed(outcome) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(outcome.killed.len(), 1);
    assert!(outcome.deployment.is_some());
    assert_eq!(h.engine.app(&id("/web")).expect("app").app.instances, 2);
    h.status(&victim, v1::TaskState::Killed);
    assert!(launched(&h.offer("host-a")).is_empty(), "not replaced");
}

#[test]
fn kill_without_scale_is_replaced() {
    let mut h = Harness::new();
    h.running(app("/web", 2));
    let victim = h.task_ids("/web")[0].clone();
    let step = h.step(Input::Command(Command::KillTasks {
        ids: vec![victim.clone()],
        scale: false,
        wipe: false,
        force: false,
    }));
    assert_eq!(kills(&step), vec![victim.clone()]);
    assert_eq!(launched(&h.offer("host-a")).len(), 1, "replacement launched");
}

#[test]
fn subscription_reconciles_explicitly_and_implicitly() {
    let mut h = Harness::new();
    h.running(app("/web", 2));
    let step = h.step(Input::Subscribed {
        framework_id: "fw-1".into(),
    });
    let reconciles: Vec<usize> = step
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Reconcile { tasks } => Some(tasks.len()),
            _ => None,
        })
        .collect();
    assert_eq!(reconciles, vec![2, 0], "explicit for known tasks, then implicit");
    let due = h.step(Input::ReconcileDue);
    assert_eq!(
        due.effects
            .iter()
            .filter(|e| matches!(e, Effect::Reconcile { .. }))
            .count(),
        2
    );
}

#[test]
fn unknown_task_reported_by_reconciliation_is_killed() {
    let mut h = Harness::new();
    let phantom = TaskId::new_unchecked("web.phantom");
    let mut status = v1::TaskStatus {
        task_id: phantom.to_string(),
        agent_id: "agent-x".into(),
        ..Default::default()
    };
    status.set_state(v1::TaskState::Running);
    status.set_reason(v1::StatusReason::ReasonReconciliation);
    let step = h.step(Input::Status(status));
    assert_eq!(kills(&step), vec![phantom]);
    assert!(h.engine.tasks(None).is_empty(), "not adopted");
}

#[test]
fn known_task_the_master_does_not_know_is_forgotten_and_replaced() {
    let mut h = Harness::new();
    h.running(app("/web", 1));
    let task = h.task_ids("/web")[0].clone();
    h.status_with(
        &task,
        v1::TaskState::Unknown,
        v1::StatusReason::ReasonReconciliation,
    );
    assert!(h.engine.task(&task).is_none());
    assert_eq!(h.engine.queue()[0].delay_seconds_left, 0, "no backoff");
    assert_eq!(launched(&h.offer("host-a")).len(), 1);
}

#[test]
fn unique_constraint_with_three_instances_on_two_hosts_leaves_one_queued() {
    let mut h = Harness::new();
    h.deploy(Command::CreateApp(AppDefinition {
        constraints: vec![Constraint {
            field: "hostname".into(),
            operator: ConstraintOperator::Unique,
            value: None,
        }],
        ..app("/web", 3)
    }));
    let a = h.offer_on("host-a", "cpus:10;mem:10000");
    let b = h.offer_on("host-b", "cpus:10;mem:10000");
    let step = h.step(Input::Offers(vec![a, b]));
    assert_eq!(launched(&step).len(), 2, "one per host");
    let again = h.offer("host-a");
    assert!(launched(&again).is_empty());
    let queue = h.engine.queue();
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].count, 1);
    assert_eq!(
        queue[0].unplaced_reasons,
        vec!["UnfulfilledConstraint".to_owned()]
    );
}

#[test]
fn recovered_state_keeps_tasks_and_resumes_the_deployment() {
    let mut h = Harness::new();
    h.deploy(Command::CreateApp(AppDefinition {
        health_checks: vec![HealthCheck::default()],
        ..app("/web", 2)
    }));
    h.offer("host-a");
    h.run_all("/web");
    let recovered = Recovered {
        apps: h.engine.apps.values().cloned().collect(),
        versions: h
            .engine
            .versions
            .iter()
            .map(|(k, v)| (k.clone(), v.values().cloned().collect()))
            .collect(),
        deployments: h.engine.deployments.clone(),
        tasks: h.engine.tasks.values().cloned().collect(),
        delays: Vec::new(),
    };
    let tasks = h.task_ids("/web");
    let mut engine = Engine::new(EngineConfig::default(), recovered);
    let step = engine.step(
        h.now(),
        Input::Subscribed {
            framework_id: "fw-1".into(),
        },
    );
    let watched = step
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::WatchHealth { .. }))
        .count();
    assert_eq!(watched, 2, "health checks resume");
    assert!(kills(&step).is_empty(), "nothing restarted");
    assert!(launched(&step).is_empty());
    let mut now: Vec<TaskId> = engine.tasks(None).into_iter().map(|t| t.id).collect();
    now.sort();
    let mut before = tasks;
    before.sort();
    assert_eq!(now, before);
    assert_eq!(engine.deployments().len(), 1, "waits for health");
}
