//! Validation of ACCEPT calls, as pure functions.
//!
//! Architecture invariant: an ACCEPT is validated completely before any of it
//! takes effect. [`validate_accept`] looks at the offers and every task and
//! returns an [`AcceptPlan`]: what to launch, which tasks get which error
//! update, which offers are consumed and what goes back to the pool. The
//! caller then applies the plan.

use std::collections::HashSet;

use agora_proto::v1::{self, StatusReason, TaskState};
use agora_proto::{AgentId, FrameworkId, OfferId, Resources, TaskId};

/// What the validator needs to know of an outstanding offer.
#[derive(Debug, Clone, Copy)]
pub struct OfferRef<'a> {
    pub framework_id: &'a FrameworkId,
    pub agent_id: &'a AgentId,
    pub resources: &'a Resources,
}

/// A task that will not be launched, and the update its framework gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The task id as the framework sent it (it may not be a valid id).
    pub task_id: String,
    pub state: TaskState,
    pub reason: StatusReason,
    /// Names the field or offer and the problem.
    pub message: String,
}

/// A task that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidLaunch {
    pub task_id: TaskId,
    /// The task as sent, with `agent_id` filled in.
    pub info: v1::TaskInfo,
    pub resources: Resources,
}

/// The outcome of validating an ACCEPT.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptPlan {
    /// The agent of the offers, when the offers are valid.
    pub agent_id: Option<AgentId>,
    /// The caller's own outstanding offers named in the accept: they are
    /// consumed (removed) whatever happens to the tasks.
    pub consumed_offers: Vec<OfferId>,
    /// Whether the offers were valid; if not, nothing is launched and the
    /// consumed offers go back to the pool without filters.
    pub offers_valid: bool,
    /// Tasks to launch, in order.
    pub launches: Vec<ValidLaunch>,
    /// Tasks that get an error update instead.
    pub rejections: Vec<Rejection>,
    /// The part of the consumed offers no launch uses; back to the pool.
    pub unused: Resources,
}

fn task_infos(operations: &[v1::Operation]) -> Vec<(String, &v1::TaskInfo)> {
    let mut out = Vec::new();
    for (i, op) in operations.iter().enumerate() {
        if let Some(v1::operation::Operation::Launch(launch)) = &op.operation {
            for (j, t) in launch.task_infos.iter().enumerate() {
                out.push((format!("operations[{i}].launch.task_infos[{j}]"), t));
            }
        }
    }
    out
}

/// Checks the offers of an accept: every one exists, belongs to `framework`,
/// and all are on one agent. `Err` carries the state, reason and message
/// every task gets.
fn check_offers<'a>(
    framework: &FrameworkId,
    offer_ids: &[OfferId],
    lookup: &impl Fn(&OfferId) -> Option<OfferRef<'a>>,
) -> Result<AgentId, (TaskState, String)> {
    let mut seen = HashSet::new();
    let mut agent: Option<(&OfferId, AgentId)> = None;
    if offer_ids.is_empty() {
        return Err((TaskState::Error, "offer_ids: must not be empty".to_owned()));
    }
    for id in offer_ids {
        if !seen.insert(id) {
            return Err((TaskState::Error, format!("offer {id} is listed more than once")));
        }
        let Some(offer) = lookup(id) else {
            return Err((
                TaskState::Dropped,
                format!("offer {id} is unknown or was rescinded"),
            ));
        };
        if offer.framework_id != framework {
            return Err((
                TaskState::Error,
                format!("offer {id} belongs to another framework"),
            ));
        }
        match &agent {
            None => agent = Some((id, offer.agent_id.clone())),
            Some((first, a)) if a != offer.agent_id => {
                return Err((
                    TaskState::Error,
                    format!(
                        "offer {id} is on agent {} but offer {first} is on agent {a}: all offers must be on one agent",
                        offer.agent_id
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    agent
        .map(|(_, a)| a)
        .ok_or((TaskState::Error, "offer_ids: must not be empty".to_owned()))
}

/// Checks one task's shape; `Err` is the message naming the field.
fn check_task(path: &str, task: &v1::TaskInfo, agent: &AgentId) -> Result<(TaskId, Resources), String> {
    if task.name.is_empty() {
        return Err(format!("{path}.name: must not be empty"));
    }
    let task_id = TaskId::parse(&task.task_id).map_err(|e| format!("{path}.task_id: {e}"))?;
    match task.command.as_ref().and_then(|c| c.command.as_ref()) {
        None if task.command.is_none() => return Err(format!("{path}.command: must be set")),
        None => return Err(format!("{path}.command: must have a shell string or an argv")),
        Some(v1::command_info::Command::Shell(s)) if s.trim().is_empty() => {
            return Err(format!("{path}.command.shell: must not be empty"));
        }
        Some(v1::command_info::Command::Argv(a)) if a.args.is_empty() || a.args[0].is_empty() => {
            return Err(format!("{path}.command.argv.args: must not be empty"));
        }
        Some(_) => {}
    }
    let resources = Resources::from_proto(&task.resources).map_err(|e| format!("{path}.resources: {e}"))?;
    if resources.is_empty() {
        return Err(format!("{path}.resources: must not be empty"));
    }
    if !task.agent_id.is_empty() && task.agent_id != agent.as_str() {
        return Err(format!(
            "{path}.agent_id: names agent {} but the offers are on agent {agent}",
            task.agent_id
        ));
    }
    Ok((task_id, resources))
}

/// Validates an ACCEPT of `framework` over `offer_ids` with `operations`.
///
/// `lookup` finds an outstanding offer; `is_live` says whether the framework
/// already has a live task with that id.
pub fn validate_accept<'a>(
    framework: &FrameworkId,
    offer_ids: &[OfferId],
    operations: &[v1::Operation],
    lookup: impl Fn(&OfferId) -> Option<OfferRef<'a>>,
    is_live: impl Fn(&TaskId) -> bool,
) -> AcceptPlan {
    let tasks = task_infos(operations);
    // The caller's own offers are consumed whether or not the accept is valid.
    let mut consumed_offers = Vec::new();
    let mut held = Resources::new();
    let mut unique = HashSet::new();
    for id in offer_ids {
        if let Some(offer) = lookup(id)
            && offer.framework_id == framework
            && unique.insert(id)
        {
            consumed_offers.push(id.clone());
            held.add(offer.resources);
        }
    }
    let agent = match check_offers(framework, offer_ids, &lookup) {
        Ok(agent) => agent,
        Err((state, message)) => {
            return AcceptPlan {
                agent_id: None,
                consumed_offers,
                offers_valid: false,
                launches: Vec::new(),
                rejections: tasks
                    .iter()
                    .map(|(_, t)| Rejection {
                        task_id: t.task_id.clone(),
                        state,
                        reason: StatusReason::ReasonInvalidOffers,
                        message: message.clone(),
                    })
                    .collect(),
                unused: held,
            };
        }
    };

    let mut remaining = held;
    let mut launches = Vec::new();
    let mut rejections = Vec::new();
    let mut ids_in_accept = HashSet::new();
    for (path, task) in tasks {
        let reject = |reason, message| Rejection {
            task_id: task.task_id.clone(),
            state: TaskState::Error,
            reason,
            message,
        };
        let (task_id, resources) = match check_task(&path, task, &agent) {
            Ok(ok) => ok,
            Err(message) => {
                rejections.push(reject(StatusReason::ReasonTaskInvalid, message));
                continue;
            }
        };
        if is_live(&task_id) {
            rejections.push(reject(
                StatusReason::ReasonTaskInvalid,
                format!("{path}.task_id: task {task_id} is already live in this framework"),
            ));
            continue;
        }
        if !ids_in_accept.insert(task_id.clone()) {
            rejections.push(reject(
                StatusReason::ReasonTaskInvalid,
                format!("{path}.task_id: task {task_id} appears more than once in this accept"),
            ));
            continue;
        }
        let Some(rest) = remaining.checked_sub(&resources) else {
            let missing = resources.saturating_sub(&remaining);
            rejections.push(reject(
                StatusReason::ReasonResourcesInsufficient,
                format!(
                    "{path}.resources: task needs {resources} but the offers only have {remaining} left (missing {missing})"
                ),
            ));
            continue;
        };
        remaining = rest;
        let mut info = task.clone();
        info.agent_id = agent.as_str().to_owned();
        launches.push(ValidLaunch {
            task_id,
            info,
            resources,
        });
    }
    AcceptPlan {
        agent_id: Some(agent),
        consumed_offers,
        offers_valid: true,
        launches,
        rejections,
        unused: remaining,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fixture {
        offers: HashMap<OfferId, (FrameworkId, AgentId, Resources)>,
        live: HashSet<TaskId>,
    }

    fn me() -> FrameworkId {
        FrameworkId::new_unchecked("fw-me")
    }

    fn fixture() -> Fixture {
        let mut offers = HashMap::new();
        let a1 = AgentId::new_unchecked("agent-1");
        let a2 = AgentId::new_unchecked("agent-2");
        let r = Resources::parse("cpus:2;mem:256;ports:[31000-31001]").unwrap();
        offers.insert(OfferId::new_unchecked("o1"), (me(), a1.clone(), r.clone()));
        offers.insert(
            OfferId::new_unchecked("o1b"),
            (me(), a1, Resources::parse("cpus:1").unwrap()),
        );
        offers.insert(OfferId::new_unchecked("o2"), (me(), a2.clone(), r.clone()));
        offers.insert(
            OfferId::new_unchecked("other"),
            (FrameworkId::new_unchecked("fw-x"), a2, r),
        );
        Fixture {
            offers,
            live: [TaskId::new_unchecked("live")].into_iter().collect(),
        }
    }

    fn task(id: &str, res: &str) -> v1::TaskInfo {
        v1::TaskInfo {
            name: "t".into(),
            task_id: id.into(),
            resources: Resources::parse(res).unwrap().to_proto(),
            command: Some(v1::CommandInfo {
                command: Some(v1::command_info::Command::Shell("true".into())),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn launch(tasks: Vec<v1::TaskInfo>) -> Vec<v1::Operation> {
        vec![v1::Operation {
            operation: Some(v1::operation::Operation::Launch(v1::Launch { task_infos: tasks })),
        }]
    }

    fn run(offers: &[&str], tasks: Vec<v1::TaskInfo>) -> AcceptPlan {
        let f = fixture();
        let ids: Vec<OfferId> = offers.iter().map(|o| OfferId::new_unchecked(*o)).collect();
        validate_accept(
            &me(),
            &ids,
            &launch(tasks),
            |id| {
                f.offers.get(id).map(|(fw, a, r)| OfferRef {
                    framework_id: fw,
                    agent_id: a,
                    resources: r,
                })
            },
            |t| f.live.contains(t),
        )
    }

    #[test]
    fn a_valid_task_is_launched_and_the_rest_is_unused() {
        let plan = run(&["o1"], vec![task("a", "cpus:1;mem:128;ports:[31000-31000]")]);
        assert!(plan.offers_valid);
        assert!(plan.rejections.is_empty());
        assert_eq!(plan.launches.len(), 1);
        assert_eq!(plan.launches[0].info.agent_id, "agent-1");
        assert_eq!(
            plan.unused,
            Resources::parse("cpus:1;mem:128;ports:[31001-31001]").unwrap()
        );
        assert_eq!(plan.consumed_offers, vec![OfferId::new_unchecked("o1")]);
    }

    #[test]
    fn offers_on_one_agent_are_pooled() {
        let plan = run(&["o1", "o1b"], vec![task("a", "cpus:3")]);
        assert_eq!(plan.launches.len(), 1);
        assert_eq!(plan.rejections, vec![]);
    }

    #[test]
    fn invalid_offers_fail_every_task() {
        // (offers, expected state, words the message must contain)
        let cases: &[(&[&str], TaskState, &str)] = &[
            (
                &["gone"],
                TaskState::Dropped,
                "offer gone is unknown or was rescinded",
            ),
            (&["o1", "gone"], TaskState::Dropped, "offer gone"),
            (
                &["other"],
                TaskState::Error,
                "offer other belongs to another framework",
            ),
            (&["o1", "o2"], TaskState::Error, "offer o2 is on agent agent-2"),
            (
                &["o1", "o1"],
                TaskState::Error,
                "offer o1 is listed more than once",
            ),
            (&[], TaskState::Error, "offer_ids"),
        ];
        for (offers, state, words) in cases {
            let plan = run(offers, vec![task("a", "cpus:1"), task("b", "cpus:1")]);
            assert!(!plan.offers_valid, "{offers:?}");
            assert!(plan.launches.is_empty(), "{offers:?}");
            assert_eq!(plan.rejections.len(), 2, "{offers:?}");
            for r in &plan.rejections {
                assert_eq!(r.state, *state, "{offers:?}");
                assert_eq!(r.reason, StatusReason::ReasonInvalidOffers, "{offers:?}");
                assert!(r.message.contains(words), "{offers:?}: {}", r.message);
            }
        }
    }

    #[test]
    fn the_callers_own_offers_are_returned_when_the_offers_are_invalid() {
        let plan = run(&["o1", "o2", "other"], vec![task("a", "cpus:1")]);
        assert_eq!(
            plan.consumed_offers,
            vec![OfferId::new_unchecked("o1"), OfferId::new_unchecked("o2")]
        );
        let mut both = Resources::parse("cpus:2;mem:256;ports:[31000-31001]").unwrap();
        both.add(&both.clone());
        assert_eq!(plan.unused, both);
    }

    #[test]
    fn invalid_tasks_get_task_error_naming_the_field() {
        let with = |f: &dyn Fn(&mut v1::TaskInfo)| {
            let mut t = task("x", "cpus:1");
            f(&mut t);
            t
        };
        let path = "operations[0].launch.task_infos[0]";
        let cases: Vec<(v1::TaskInfo, StatusReason, String)> = vec![
            (
                with(&|t| t.name.clear()),
                StatusReason::ReasonTaskInvalid,
                format!("{path}.name"),
            ),
            (
                with(&|t| t.task_id.clear()),
                StatusReason::ReasonTaskInvalid,
                format!("{path}.task_id"),
            ),
            (
                with(&|t| t.task_id = "a/b".into()),
                StatusReason::ReasonTaskInvalid,
                format!("{path}.task_id"),
            ),
            (
                with(&|t| t.command = None),
                StatusReason::ReasonTaskInvalid,
                format!("{path}.command"),
            ),
            (
                with(&|t| {
                    t.command = Some(v1::CommandInfo {
                        command: Some(v1::command_info::Command::Shell(String::new())),
                        ..Default::default()
                    })
                }),
                StatusReason::ReasonTaskInvalid,
                format!("{path}.command.shell"),
            ),
            (
                with(&|t| {
                    t.command = Some(v1::CommandInfo {
                        command: Some(v1::command_info::Command::Argv(v1::Argv { args: vec![] })),
                        ..Default::default()
                    })
                }),
                StatusReason::ReasonTaskInvalid,
                format!("{path}.command.argv"),
            ),
            (
                with(&|t| t.resources.clear()),
                StatusReason::ReasonTaskInvalid,
                format!("{path}.resources"),
            ),
            (
                with(&|t| t.resources[0].value = Some(v1::resource::Value::Scalar(-1.0))),
                StatusReason::ReasonTaskInvalid,
                format!("{path}.resources"),
            ),
            (
                with(&|t| t.agent_id = "agent-2".into()),
                StatusReason::ReasonTaskInvalid,
                format!("{path}.agent_id"),
            ),
            (
                with(&|t| t.task_id = "live".into()),
                StatusReason::ReasonTaskInvalid,
                "already live".into(),
            ),
            (
                task("x", "cpus:3"),
                StatusReason::ReasonResourcesInsufficient,
                "missing cpus:1".into(),
            ),
            (
                task("x", "ports:[31005-31005]"),
                StatusReason::ReasonResourcesInsufficient,
                "missing ports:[31005-31005]".into(),
            ),
        ];
        for (t, reason, words) in cases {
            let plan = run(&["o1"], vec![t.clone()]);
            assert!(plan.offers_valid);
            assert!(plan.launches.is_empty(), "{t:?}");
            assert_eq!(plan.rejections.len(), 1, "{t:?}");
            let r = &plan.rejections[0];
            assert_eq!(r.state, TaskState::Error, "{t:?}");
            assert_eq!(r.reason, reason, "{t:?}");
            assert!(
                r.message.contains(&words),
                "expected {words:?} in {:?}",
                r.message
            );
            assert_eq!(
                plan.unused,
                Resources::parse("cpus:2;mem:256;ports:[31000-31001]").unwrap()
            );
        }
    }

    #[test]
    fn a_task_id_repeated_in_one_accept_is_rejected_the_second_time() {
        let plan = run(&["o1"], vec![task("a", "cpus:0.5"), task("a", "cpus:0.5")]);
        assert_eq!(plan.launches.len(), 1);
        assert_eq!(plan.rejections.len(), 1);
        assert!(plan.rejections[0].message.contains("more than once"));
    }

    #[test]
    fn tasks_must_fit_after_the_earlier_tasks_of_the_same_accept() {
        let plan = run(
            &["o1"],
            vec![task("a", "cpus:1.5"), task("b", "cpus:1"), task("c", "cpus:0.5")],
        );
        let launched: Vec<&str> = plan.launches.iter().map(|l| l.task_id.as_str()).collect();
        assert_eq!(launched, vec!["a", "c"]);
        assert_eq!(plan.rejections[0].task_id, "b");
        assert_eq!(
            plan.rejections[0].reason,
            StatusReason::ReasonResourcesInsufficient
        );
    }

    #[test]
    fn the_same_port_cannot_go_to_two_tasks() {
        let plan = run(
            &["o1"],
            vec![task("a", "ports:[31000-31000]"), task("b", "ports:[31000-31000]")],
        );
        assert_eq!(plan.launches.len(), 1);
        assert_eq!(plan.rejections[0].task_id, "b");
    }
}
