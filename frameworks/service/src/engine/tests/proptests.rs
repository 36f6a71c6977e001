//! Random sequences of inputs; after every step the engine's invariants hold.

use proptest::prelude::*;

use super::*;
use crate::engine::reconcile::{Mode, bounds};

#[derive(Debug, Clone)]
enum Op {
    Create {
        app: usize,
        instances: u32,
        checks: bool,
    },
    Update {
        app: usize,
        instances: u32,
        cmd: u8,
        min_health: u8,
        max_over: u8,
        force: bool,
    },
    Restart {
        app: usize,
        force: bool,
    },
    Delete {
        app: usize,
        force: bool,
    },
    Cancel {
        force: bool,
    },
    KillScale {
        task: usize,
    },
    Offer {
        host: usize,
    },
    Run {
        task: usize,
    },
    Healthy {
        task: usize,
        alive: bool,
    },
    Unhealthy {
        task: usize,
    },
    End {
        task: usize,
        state: u8,
    },
    Unreachable {
        task: usize,
    },
    ConfirmKills,
    Advance {
        secs: u8,
    },
    Reconcile,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..3usize, 0..5u32, any::<bool>()).prop_map(|(app, instances, checks)| Op::Create { app, instances, checks }),
        1 => (0..3usize, 0..6u32, 0..3u8, 0..3u8, 0..3u8, any::<bool>()).prop_map(
            |(app, instances, cmd, min_health, max_over, force)| Op::Update {
                app,
                instances,
                cmd,
                min_health,
                max_over,
                force
            }
        ),
        1 => (0..3usize, any::<bool>()).prop_map(|(app, force)| Op::Restart { app, force }),
        1 => (0..3usize, any::<bool>()).prop_map(|(app, force)| Op::Delete { app, force }),
        1 => any::<bool>().prop_map(|force| Op::Cancel { force }),
        1 => (0..20usize).prop_map(|task| Op::KillScale { task }),
        3 => (0..3usize).prop_map(|host| Op::Offer { host }),
        4 => (0..20usize).prop_map(|task| Op::Run { task }),
        2 => (0..20usize, any::<bool>()).prop_map(|(task, alive)| Op::Healthy { task, alive }),
        1 => (0..20usize).prop_map(|task| Op::Unhealthy { task }),
        2 => (0..20usize, 0..6u8).prop_map(|(task, state)| Op::End { task, state }),
        1 => (0..20usize).prop_map(|task| Op::Unreachable { task }),
        3 => Just(Op::ConfirmKills),
        2 => (0..120u8).prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Reconcile),
    ]
}

const APPS: [&str; 3] = ["/a", "/b", "/c"];
const FRACTIONS: [f64; 3] = [0.0, 0.5, 1.0];

fn nth_task(h: &Harness, n: usize) -> Option<TaskId> {
    let all = h.engine.tasks(None);
    if all.is_empty() {
        None
    } else {
        Some(all[n % all.len()].id.clone())
    }
}

fn apply(h: &mut Harness, op: &Op) -> Step {
    match op.clone() {
        Op::Create {
            app: a,
            instances,
            checks,
        } => {
            let def = AppDefinition {
                health_checks: if checks {
                    vec![HealthCheck::default()]
                } else {
                    Vec::new()
                },
                ..app(APPS[a], instances)
            };
            h.step(Input::Command(Command::CreateApp(def)))
        }
        Op::Update {
            app: a,
            instances,
            cmd,
            min_health,
            max_over,
            force,
        } => {
            let def = AppDefinition {
                cmd: Some(format!("sleep {cmd}")),
                upgrade_strategy: UpgradeStrategy {
                    minimum_health_capacity: FRACTIONS[min_health as usize],
                    maximum_over_capacity: FRACTIONS[max_over as usize],
                },
                ..app(APPS[a], instances)
            };
            h.step(Input::Command(Command::UpdateApps {
                apps: vec![def],
                force,
            }))
        }
        Op::Restart { app, force } => h.step(Input::Command(Command::RestartApp {
            id: id(APPS[app]),
            force,
        })),
        Op::Delete { app, force } => h.step(Input::Command(Command::DeleteApps {
            ids: vec![id(APPS[app])],
            force,
        })),
        Op::Cancel { force } => match h.engine.deployments().first() {
            Some(d) => h.step(Input::Command(Command::CancelDeployment {
                id: d.id.clone(),
                force,
            })),
            None => h.step(Input::Tick),
        },
        Op::KillScale { task } => match nth_task(h, task) {
            Some(t) => h.step(Input::Command(Command::KillTasks {
                ids: vec![t],
                scale: true,
                wipe: false,
                force: false,
            })),
            None => h.step(Input::Tick),
        },
        Op::Offer { host } => h.offer(["host-a", "host-b", "host-c"][host]),
        Op::Run { task } => match nth_task(h, task) {
            Some(t) => h.status(&t, v1::TaskState::Running),
            None => h.step(Input::Tick),
        },
        Op::Healthy { task, alive } => match nth_task(h, task) {
            Some(t) => h.healthy(&t, alive),
            None => h.step(Input::Tick),
        },
        Op::Unhealthy { task } => match nth_task(h, task) {
            Some(t) => {
                let version = h.engine.task(&t).map(|r| r.version).unwrap_or_default();
                let app_id = h
                    .engine
                    .task(&t)
                    .map(|r| r.app_id.clone())
                    .unwrap_or_else(|| id("/a"));
                h.step(Input::Health(HealthEvent::Unhealthy {
                    task_id: t,
                    app_id,
                    version,
                    cause: "x".into(),
                }))
            }
            None => h.step(Input::Tick),
        },
        Op::End { task, state } => match nth_task(h, task) {
            Some(t) => {
                let state = [
                    v1::TaskState::Failed,
                    v1::TaskState::Killed,
                    v1::TaskState::Finished,
                    v1::TaskState::Lost,
                    v1::TaskState::Error,
                    v1::TaskState::Gone,
                ][state as usize];
                h.status(&t, state)
            }
            None => h.step(Input::Tick),
        },
        Op::Unreachable { task } => match nth_task(h, task) {
            Some(t) => h.status(&t, v1::TaskState::Unreachable),
            None => h.step(Input::Tick),
        },
        Op::ConfirmKills => {
            h.confirm_kills();
            h.step(Input::Tick)
        }
        Op::Advance { secs } => h.advance(Duration::from_secs(u64::from(secs))),
        Op::Reconcile => h.step(Input::ReconcileDue),
    }
}

/// The most tasks that may count as an app's instances under its mode.
fn bound(h: &Harness, app: &AppId) -> usize {
    match h.engine.mode(app) {
        Mode::Keep(def) | Mode::Scale(def) => def.instances as usize,
        Mode::Restart(def) => bounds(def).1 as usize,
        Mode::Stop => 0,
    }
}

fn check(h: &Harness, before: &std::collections::BTreeMap<AppId, usize>, step: &Step) {
    for a in APPS {
        let app = id(a);
        let per_app = h
            .engine
            .deployments()
            .iter()
            .filter(|d| d.affected_apps.contains(&app))
            .count();
        assert!(per_app <= 1, "{a}: {per_app} deployments");
        let counted = h.engine.tasks_of(&app).filter(|t| t.counts()).count();
        let bound = bound(h, &app);
        assert!(
            counted <= bound,
            "{a}: {counted} tasks count as instances, bound {bound}"
        );
        if let Mode::Restart(def) = h.engine.mode(&app) {
            let alive = h.engine.tasks_of(&app).filter(|t| !t.inactive).count();
            let was = before.get(&app).copied().unwrap_or(0);
            assert!(
                alive <= was.max(bounds(def).1 as usize),
                "{a}: launches took {alive} tasks over the capacity bound"
            );
        }
    }
    // A timer is never already due (the runtime would spin), except the
    // immediate tick that lets a new deployment move on.
    if let Some(deadline) = h.engine.next_deadline() {
        assert!(
            deadline > h.now().instant || h.engine.advance_due,
            "a past deadline"
        );
    }
    // Every launched task is known and was persisted before its accept.
    let mut persisted = std::collections::BTreeSet::new();
    for e in &step.effects {
        match e {
            Effect::Persist(changes) => {
                for c in changes {
                    if let StateChange::PutTask(t) = c {
                        persisted.insert(t.task_id.to_string());
                    }
                }
            }
            Effect::Accept { tasks, .. } => {
                for t in tasks {
                    assert!(
                        persisted.contains(&t.task_id),
                        "{} accepted before it was persisted",
                        t.task_id
                    );
                }
            }
            _ => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_over_random_inputs(ops in proptest::collection::vec(op(), 1..80)) {
        let mut h = Harness::new();
        for op in &ops {
            let before = APPS
                .iter()
                .map(|a| (id(a), h.engine.tasks_of(&id(a)).filter(|t| !t.inactive).count()))
                .collect();
            let step = apply(&mut h, op);
            check(&h, &before, &step);
        }
    }
}
