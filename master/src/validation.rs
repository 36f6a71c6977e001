//! Validation of ACCEPT calls, as pure functions.
//!
//! Architecture invariant: an ACCEPT is validated completely before any of it
//! takes effect. [`validate_accept`] looks at the offers and every task and
//! returns an [`AcceptPlan`]: what to launch, which tasks get which error
//! update, which offers are consumed and what goes back to the pool. The
//! caller then applies the plan.
//!
//! RESERVE and UNRESERVE operations are checked first, in order, against
//! what the offers hold; an invalid one refuses the whole accept
//! ([`InvalidOperation`]: there is no task to carry an error update).
//! Valid ones convert the offered resources before the launches are
//! checked, so a LAUNCH may use resources a RESERVE of the same accept
//! reserved.
//!
//! LAUNCH and LAUNCH_GROUP operations are then checked in order, each
//! against what the earlier ones left of the offers. A task with a
//! `container` is checked with [`agora_proto::container::validate_container`]
//! before anything is created. A LAUNCH_GROUP is all-or-nothing: if any of
//! its tasks is invalid, or the group's total does not fit, every task of
//! the group gets TASK_ERROR.

use std::collections::{BTreeMap, HashSet};

use agora_proto::container::{validate_container, validate_group};
use agora_proto::resources::UNRESERVED;
use agora_proto::v1::{self, StatusReason, TaskState};
use agora_proto::{AgentId, FrameworkId, OfferId, Resources, TaskId};

use crate::allocator::{is_ancestor_or_self, validate_role};

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

/// A task group (LAUNCH_GROUP) that passed validation: launched together,
/// on one agent, all or nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidGroup {
    /// The group's tasks, in the order the framework sent them.
    pub tasks: Vec<ValidLaunch>,
}

impl ValidGroup {
    /// The resources of all the group's tasks together.
    pub fn resources(&self) -> Resources {
        let mut total = Resources::new();
        for t in &self.tasks {
            total.add(&t.resources);
        }
        total
    }
}

/// Which way a reservation operation moves resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationKind {
    /// RESERVE: unreserved → reserved for the role.
    Reserve,
    /// UNRESERVE: reserved for the role → unreserved.
    Unreserve,
}

/// A valid RESERVE or UNRESERVE, for one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationOp {
    pub kind: ReservationKind,
    pub role: String,
    /// The amounts, in their unreserved form.
    pub resources: Resources,
}

impl ReservationOp {
    /// The amounts reserved for the role.
    pub fn reserved(&self) -> Resources {
        with_role(&self.resources, &self.role)
    }
}

/// An operation that refuses the whole accept; names the operation and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidOperation(pub String);

/// `r` with every resource given `role` (`*`: unreserved).
pub fn with_role(r: &Resources, role: &str) -> Resources {
    let list: Vec<v1::Resource> = r
        .to_proto()
        .into_iter()
        .map(|mut res| {
            res.role = if role == UNRESERVED {
                String::new()
            } else {
                role.to_owned()
            };
            res
        })
        .collect();
    Resources::from_proto(&list).unwrap_or_default()
}

/// What the validator needs to know of the framework and the agent.
#[derive(Debug, Clone, Copy)]
pub struct AcceptContext<'a> {
    /// The framework's roles; reservations must be for one of them or a
    /// role below one.
    pub roles: &'a [String],
    /// Dynamic reservations by agent (only those may be unreserved).
    pub dynamic_reservations: &'a BTreeMap<AgentId, Resources>,
    /// Whether the framework has FRAMEWORK_CAPABILITY_TASK_GROUPS (needed
    /// for LAUNCH_GROUP).
    pub task_groups: bool,
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
    /// Reservation changes to apply, in order, before the launches.
    pub reservations: Vec<ReservationOp>,
    /// Tasks to launch, in order.
    pub launches: Vec<ValidLaunch>,
    /// Task groups to launch, in order.
    pub groups: Vec<ValidGroup>,
    /// Tasks that get an error update instead.
    pub rejections: Vec<Rejection>,
    /// The part of the consumed offers no launch uses; back to the pool.
    pub unused: Resources,
}

/// A LAUNCH or LAUNCH_GROUP operation, with its path and its tasks' paths.
struct LaunchOp<'a> {
    /// `operations[i].launch` or `operations[i].launch_group`.
    path: String,
    group: bool,
    tasks: Vec<(String, &'a v1::TaskInfo)>,
}

/// The LAUNCH and LAUNCH_GROUP operations, in order.
fn launch_ops(operations: &[v1::Operation]) -> Vec<LaunchOp<'_>> {
    let mut out = Vec::new();
    for (i, op) in operations.iter().enumerate() {
        let (path, group, infos) = match &op.operation {
            Some(v1::operation::Operation::Launch(l)) => {
                (format!("operations[{i}].launch"), false, &l.task_infos)
            }
            Some(v1::operation::Operation::LaunchGroup(g)) => {
                (format!("operations[{i}].launch_group"), true, &g.task_infos)
            }
            _ => continue,
        };
        let tasks = infos
            .iter()
            .enumerate()
            .map(|(j, t)| (format!("{path}.task_infos[{j}]"), t))
            .collect();
        out.push(LaunchOp { path, group, tasks });
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
        // A container without a command runs its image's entrypoint.
        None if task.container.is_some() => {}
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
    validate_container(task).map_err(|e| format!("{path}.{e}"))?;
    Ok((task_id, resources))
}

/// The RESERVE and UNRESERVE operations, with their paths.
fn reservation_ops(operations: &[v1::Operation]) -> Vec<(String, ReservationKind, &[v1::Resource])> {
    let mut out = Vec::new();
    for (i, op) in operations.iter().enumerate() {
        match &op.operation {
            Some(v1::operation::Operation::Reserve(r)) => {
                out.push((
                    format!("operations[{i}].reserve"),
                    ReservationKind::Reserve,
                    r.resources.as_slice(),
                ));
            }
            Some(v1::operation::Operation::Unreserve(r)) => {
                out.push((
                    format!("operations[{i}].unreserve"),
                    ReservationKind::Unreserve,
                    r.resources.as_slice(),
                ));
            }
            _ => {}
        }
    }
    out
}

/// Checks one RESERVE/UNRESERVE against what is left of the offers
/// (`remaining`) and of the agent's dynamic reservations (`dynamic`), and
/// applies it to both. `Err` names the field.
fn check_reservation(
    path: &str,
    kind: ReservationKind,
    list: &[v1::Resource],
    roles: &[String],
    remaining: &mut Resources,
    dynamic: &mut Resources,
) -> Result<Vec<ReservationOp>, String> {
    if list.is_empty() {
        return Err(format!("{path}.resources: must not be empty"));
    }
    let mut avail = remaining.clone();
    let mut dyn_avail = dynamic.clone();
    let mut by_role: BTreeMap<String, Resources> = BTreeMap::new();
    for (j, res) in list.iter().enumerate() {
        let field = format!("{path}.resources[{j}]");
        let role = res.role.as_str();
        if role.is_empty() || role == UNRESERVED {
            return Err(format!(
                "{field}.role: must name the role of the reservation (not '*')"
            ));
        }
        validate_role(role).map_err(|e| format!("{field}.role: {e}"))?;
        if !roles.iter().any(|r| is_ancestor_or_self(r, role)) {
            return Err(format!(
                "{field}.role: {role:?} is neither one of the framework's roles {roles:?} nor below one"
            ));
        }
        let reserved =
            Resources::from_proto(std::slice::from_ref(res)).map_err(|e| format!("{field}: {e}"))?;
        let unreserved = with_role(&reserved, UNRESERVED);
        match kind {
            ReservationKind::Reserve => {
                avail = avail.checked_sub(&unreserved).ok_or_else(|| {
                    format!(
                        "{field}: {unreserved} is not among the offers' unreserved resources (left: {avail})"
                    )
                })?;
            }
            ReservationKind::Unreserve => {
                avail = avail.checked_sub(&reserved).ok_or_else(|| {
                    format!("{field}: {reserved} is not among the offered resources (left: {avail})")
                })?;
                dyn_avail = dyn_avail.checked_sub(&reserved).ok_or_else(|| {
                    format!("{field}: {reserved} is not dynamically reserved on the agent (static reservations cannot be undone)")
                })?;
            }
        }
        by_role.entry(role.to_owned()).or_default().add(&unreserved);
    }
    let ops: Vec<ReservationOp> = by_role
        .into_iter()
        .map(|(role, resources)| ReservationOp {
            kind,
            role,
            resources,
        })
        .collect();
    for op in &ops {
        match kind {
            ReservationKind::Reserve => {
                avail.add(&op.reserved());
                dyn_avail.add(&op.reserved());
            }
            ReservationKind::Unreserve => avail.add(&op.resources),
        }
    }
    *remaining = avail;
    *dynamic = dyn_avail;
    Ok(ops)
}

/// Validates an ACCEPT of `framework` over `offer_ids` with `operations`.
///
/// `lookup` finds an outstanding offer; `is_live` says whether the framework
/// already has a live task with that id. `Err`: an invalid RESERVE or
/// UNRESERVE; nothing of the accept may happen.
pub fn validate_accept<'a>(
    framework: &FrameworkId,
    offer_ids: &[OfferId],
    operations: &[v1::Operation],
    context: AcceptContext<'_>,
    lookup: impl Fn(&OfferId) -> Option<OfferRef<'a>>,
    is_live: impl Fn(&TaskId) -> bool,
) -> Result<AcceptPlan, InvalidOperation> {
    let launch_ops = launch_ops(operations);
    let reservation_ops = reservation_ops(operations);
    if let Some(op) = launch_ops.iter().find(|op| op.group && op.tasks.is_empty()) {
        return Err(InvalidOperation(format!(
            "{}.task_infos: a task group needs at least one task",
            op.path
        )));
    }
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
        Err((_, message)) if !reservation_ops.is_empty() => {
            let (path, _, _) = &reservation_ops[0];
            return Err(InvalidOperation(format!("{path}: cannot apply: {message}")));
        }
        Err((state, message)) => {
            return Ok(AcceptPlan {
                agent_id: None,
                consumed_offers,
                offers_valid: false,
                launches: Vec::new(),
                groups: Vec::new(),
                rejections: launch_ops
                    .iter()
                    .flat_map(|op| &op.tasks)
                    .map(|(_, t)| Rejection {
                        task_id: t.task_id.clone(),
                        state,
                        reason: StatusReason::ReasonInvalidOffers,
                        message: message.clone(),
                    })
                    .collect(),
                reservations: Vec::new(),
                unused: held,
            });
        }
    };

    let mut remaining = held;
    let mut dynamic = context
        .dynamic_reservations
        .get(&agent)
        .cloned()
        .unwrap_or_default();
    let mut reservations = Vec::new();
    for (path, kind, list) in reservation_ops {
        let ops = check_reservation(&path, kind, list, context.roles, &mut remaining, &mut dynamic)
            .map_err(InvalidOperation)?;
        reservations.extend(ops);
    }
    let mut checker = TaskChecker {
        agent: &agent,
        is_live: &is_live,
        ids_in_accept: HashSet::new(),
    };
    let mut launches = Vec::new();
    let mut groups = Vec::new();
    let mut rejections = Vec::new();
    for op in &launch_ops {
        if op.group {
            match check_group(op, context.task_groups, &mut checker, &remaining) {
                Ok((group, rest)) => {
                    remaining = rest;
                    groups.push(group);
                }
                Err(refused) => rejections.extend(refused),
            }
            continue;
        }
        for (path, task) in &op.tasks {
            match checker.check(path, task).and_then(|(task_id, resources)| {
                let rest = fit(&resources, &remaining)
                    .map_err(|(reason, message)| (reason, format!("{path}.resources: task {message}")))?;
                Ok((task_id, resources, rest))
            }) {
                Ok((task_id, resources, rest)) => {
                    remaining = rest;
                    launches.push(valid_launch(task, task_id, resources, &agent));
                }
                Err((reason, message)) => rejections.push(rejection(task, reason, message)),
            }
        }
    }
    Ok(AcceptPlan {
        agent_id: Some(agent),
        consumed_offers,
        offers_valid: true,
        reservations,
        launches,
        groups,
        rejections,
        unused: remaining,
    })
}

/// Why a task is refused: the reason and the message naming the field.
type Refusal = (StatusReason, String);

/// The per-task checks of LAUNCH and LAUNCH_GROUP alike.
struct TaskChecker<'c, L> {
    agent: &'c AgentId,
    is_live: &'c L,
    /// The ids of the tasks of this accept checked so far.
    ids_in_accept: HashSet<TaskId>,
}

impl<L: Fn(&TaskId) -> bool> TaskChecker<'_, L> {
    /// Checks a task's shape and container, and that its id is neither live
    /// nor used earlier in the accept.
    fn check(&mut self, path: &str, task: &v1::TaskInfo) -> Result<(TaskId, Resources), Refusal> {
        let invalid = |message| (StatusReason::ReasonTaskInvalid, message);
        let (task_id, resources) = check_task(path, task, self.agent).map_err(invalid)?;
        if (self.is_live)(&task_id) {
            return Err(invalid(format!(
                "{path}.task_id: task {task_id} is already live in this framework"
            )));
        }
        if !self.ids_in_accept.insert(task_id.clone()) {
            return Err(invalid(format!(
                "{path}.task_id: task {task_id} appears more than once in this accept"
            )));
        }
        Ok((task_id, resources))
    }
}

/// What is left of `remaining` after `needed`; `Err` says what is missing.
fn fit(needed: &Resources, remaining: &Resources) -> Result<Resources, Refusal> {
    remaining.checked_sub(needed).ok_or_else(|| {
        let missing = needed.saturating_sub(remaining);
        (
            StatusReason::ReasonResourcesInsufficient,
            format!("needs {needed} but the offers only have {remaining} left (missing {missing})"),
        )
    })
}

fn rejection(task: &v1::TaskInfo, reason: StatusReason, message: String) -> Rejection {
    Rejection {
        task_id: task.task_id.clone(),
        state: TaskState::Error,
        reason,
        message,
    }
}

fn valid_launch(task: &v1::TaskInfo, task_id: TaskId, resources: Resources, agent: &AgentId) -> ValidLaunch {
    let mut info = task.clone();
    info.agent_id = agent.as_str().to_owned();
    ValidLaunch {
        task_id,
        info,
        resources,
    }
}

/// Checks a LAUNCH_GROUP completely: the capability, every task, the group
/// as a whole ([`validate_group`]) and that its total fits `remaining`.
/// `Ok`: the group and what it leaves of `remaining`; `Err`: one rejection
/// for every task of the group.
fn check_group<L: Fn(&TaskId) -> bool>(
    op: &LaunchOp<'_>,
    capable: bool,
    checker: &mut TaskChecker<'_, L>,
    remaining: &Resources,
) -> Result<(ValidGroup, Resources), Vec<Rejection>> {
    let refuse_all = |reason: StatusReason, message: String| -> Vec<Rejection> {
        op.tasks
            .iter()
            .map(|(_, t)| rejection(t, reason, message.clone()))
            .collect()
    };
    if !capable {
        return Err(refuse_all(
            StatusReason::ReasonTaskInvalid,
            format!(
                "{}: the framework lacks the FRAMEWORK_CAPABILITY_TASK_GROUPS capability",
                op.path
            ),
        ));
    }
    // Every task is checked, so that each invalid one gets its own message.
    let checked: Vec<Result<(TaskId, Resources), Refusal>> = op
        .tasks
        .iter()
        .map(|(path, task)| checker.check(path, task))
        .collect();
    let mut errors: Vec<Option<String>> = checked
        .iter()
        .map(|c| c.as_ref().err().map(|(_, m)| m.clone()))
        .collect();
    if errors.iter().all(Option::is_none) {
        let infos: Vec<v1::TaskInfo> = op.tasks.iter().map(|(_, t)| (*t).clone()).collect();
        if let Err(message) = validate_group(&infos) {
            let (index, message) = group_error_at(&op.path, &message);
            match index.and_then(|i| errors.get_mut(i)) {
                Some(slot) => *slot = Some(message),
                None => return Err(refuse_all(StatusReason::ReasonTaskInvalid, message)),
            }
        }
    }
    if let Some((first, _)) = op.tasks.iter().zip(&errors).find(|(_, e)| e.is_some()) {
        let invalid_id = &first.1.task_id;
        return Err(op
            .tasks
            .iter()
            .zip(errors)
            .map(|((_, task), error)| {
                let message = error.unwrap_or_else(|| {
                    format!("{}: task group refused: task {invalid_id} is invalid", op.path)
                });
                rejection(task, StatusReason::ReasonTaskInvalid, message)
            })
            .collect());
    }
    let tasks: Vec<ValidLaunch> = op
        .tasks
        .iter()
        .zip(checked)
        .filter_map(|((_, task), c)| {
            c.ok()
                .map(|(id, resources)| valid_launch(task, id, resources, checker.agent))
        })
        .collect();
    let group = ValidGroup { tasks };
    let rest = fit(&group.resources(), remaining).map_err(|(reason, message)| {
        refuse_all(
            reason,
            format!("{}: task group refused: the group {message}", op.path),
        )
    })?;
    Ok((group, rest))
}

/// Turns a [`validate_group`] message (`tasks[N].field: …`) into one that
/// names the operation's field, and the index of the task it is about.
fn group_error_at(op_path: &str, message: &str) -> (Option<usize>, String) {
    let Some(rest) = message.strip_prefix("tasks") else {
        return (None, format!("{op_path}.task_infos: {message}"));
    };
    let index = rest
        .strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .and_then(|(n, _)| n.parse::<usize>().ok());
    (index, format!("{op_path}.task_infos{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fixture {
        offers: HashMap<OfferId, (FrameworkId, AgentId, Resources)>,
        live: HashSet<TaskId>,
        dynamic: BTreeMap<AgentId, Resources>,
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
        offers.insert(
            OfferId::new_unchecked("reserved"),
            (
                me(),
                AgentId::new_unchecked("agent-3"),
                Resources::parse("cpus(prod):2;cpus(prod/a):1;cpus(prod/b):1;mem:64").unwrap(),
            ),
        );
        let dynamic = [(
            AgentId::new_unchecked("agent-3"),
            Resources::parse("cpus(prod):2;cpus(prod/a):1").unwrap(),
        )]
        .into_iter()
        .collect();
        Fixture {
            offers,
            live: [TaskId::new_unchecked("live")].into_iter().collect(),
            dynamic,
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
        validate_with(&f, &ids, &launch(tasks)).unwrap()
    }

    fn validate_with(
        f: &Fixture,
        ids: &[OfferId],
        operations: &[v1::Operation],
    ) -> Result<AcceptPlan, InvalidOperation> {
        validate_as(f, ids, operations, true)
    }

    fn validate_as(
        f: &Fixture,
        ids: &[OfferId],
        operations: &[v1::Operation],
        task_groups: bool,
    ) -> Result<AcceptPlan, InvalidOperation> {
        let roles = ["prod".to_owned()];
        validate_accept(
            &me(),
            ids,
            operations,
            AcceptContext {
                roles: &roles,
                dynamic_reservations: &f.dynamic,
                task_groups,
            },
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

    fn op(kind: ReservationKind, res: &str) -> v1::Operation {
        let resources = Resources::parse(res).unwrap().to_proto();
        v1::Operation {
            operation: Some(match kind {
                ReservationKind::Reserve => v1::operation::Operation::Reserve(v1::Reserve { resources }),
                ReservationKind::Unreserve => {
                    v1::operation::Operation::Unreserve(v1::Unreserve { resources })
                }
            }),
        }
    }

    fn ids(offers: &[&str]) -> Vec<OfferId> {
        offers.iter().map(|o| OfferId::new_unchecked(*o)).collect()
    }

    #[test]
    fn a_reserve_converts_offered_resources_before_the_launches() {
        let f = fixture();
        let mut ops = vec![op(ReservationKind::Reserve, "cpus(prod/x):1;mem(prod/x):128")];
        ops.extend(launch(vec![task("a", "cpus(prod/x):1")]));
        let plan = validate_with(&f, &ids(&["o1"]), &ops).unwrap();
        assert_eq!(
            plan.reservations,
            vec![ReservationOp {
                kind: ReservationKind::Reserve,
                role: "prod/x".into(),
                resources: Resources::parse("cpus:1;mem:128").unwrap(),
            }]
        );
        assert_eq!(plan.launches.len(), 1, "{:?}", plan.rejections);
        assert_eq!(
            plan.unused,
            Resources::parse("cpus:1;mem:128;mem(prod/x):128;ports:[31000-31001]").unwrap()
        );
    }

    #[test]
    fn an_unreserve_returns_dynamic_reservations_to_the_unreserved_pool() {
        let f = fixture();
        let ops = vec![op(ReservationKind::Unreserve, "cpus(prod):2")];
        let plan = validate_with(&f, &ids(&["reserved"]), &ops).unwrap();
        assert_eq!(plan.reservations[0].kind, ReservationKind::Unreserve);
        assert_eq!(plan.reservations[0].role, "prod");
        assert_eq!(
            plan.unused,
            Resources::parse("cpus:2;cpus(prod/a):1;cpus(prod/b):1;mem:64").unwrap()
        );
    }

    #[test]
    fn invalid_reservations_refuse_the_accept_naming_the_operation() {
        use ReservationKind::{Reserve, Unreserve};
        let cases: Vec<(&[&str], Vec<v1::Operation>, &str)> = vec![
            (
                &["o1"],
                vec![op(Reserve, "cpus(prod):3")],
                "operations[0].reserve.resources[0]: cpus:3 is not among",
            ),
            (
                &["o1"],
                vec![op(Reserve, "cpus(dev):1")],
                "operations[0].reserve.resources[0].role: \"dev\" is neither",
            ),
            (
                &["o1"],
                vec![op(Reserve, "cpus:1")],
                "operations[0].reserve.resources[0].role: must name",
            ),
            (
                &["o1"],
                vec![op(Reserve, "mem(prod):1"), op(Reserve, "cpus(pro d):1")],
                "operations[1].reserve.resources[0].role",
            ),
            (
                &["o1"],
                vec![v1::Operation {
                    operation: Some(v1::operation::Operation::Reserve(v1::Reserve {
                        resources: vec![],
                    })),
                }],
                "operations[0].reserve.resources: must not be empty",
            ),
            (
                &["reserved"],
                vec![op(Unreserve, "cpus(prod):3")],
                "operations[0].unreserve.resources[0]: cpus(prod):3 is not among the offered",
            ),
            (
                &["reserved"],
                vec![op(Unreserve, "cpus(prod/b):1")],
                "static reservations cannot be undone",
            ),
            (
                &["gone"],
                vec![op(Reserve, "cpus(prod):1")],
                "operations[0].reserve: cannot apply: offer gone",
            ),
        ];
        let f = fixture();
        for (offers, ops, words) in cases {
            let err = validate_with(&f, &ids(offers), &ops).unwrap_err();
            assert!(
                err.0.starts_with(words) || err.0.contains(words),
                "{words}: {}",
                err.0
            );
        }
    }

    // --- containers and task groups ---

    /// A Docker task with `cpus:0.5;mem:64;ports:[31000-31000]`, changed by `f`.
    fn docker_task(id: &str, name: &str, f: impl FnOnce(&mut v1::TaskInfo)) -> v1::TaskInfo {
        let mut t = task(id, "cpus:0.5;mem:64;ports:[31000-31000]");
        t.name = name.into();
        t.container = Some(v1::ContainerInfo {
            kind: Some(v1::container_info::Kind::Docker(v1::DockerInfo {
                image: "agora-test/busybox:latest".into(),
                network: v1::NetworkMode::Bridge as i32,
                port_mappings: vec![v1::PortMapping {
                    host_port: 31000,
                    container_port: 80,
                    protocol: String::new(),
                }],
                ..Default::default()
            })),
            volumes: vec![v1::Volume {
                container_path: "/data".into(),
                host_path: "/tmp".into(),
                read_only: true,
            }],
            working_dir: String::new(),
        });
        f(&mut t);
        t
    }

    fn docker(t: &mut v1::TaskInfo) -> &mut v1::DockerInfo {
        match t.container.as_mut().and_then(|c| c.kind.as_mut()) {
            Some(v1::container_info::Kind::Docker(d)) => d,
            None => panic!("not a docker task"),
        }
    }

    fn group(tasks: Vec<v1::TaskInfo>) -> v1::Operation {
        v1::Operation {
            operation: Some(v1::operation::Operation::LaunchGroup(v1::LaunchGroup {
                task_infos: tasks,
            })),
        }
    }

    fn set_mem(t: &mut v1::TaskInfo, mib: f64) {
        t.resources = Resources::parse(&format!("cpus:0.5;mem:{mib};ports:[31000-31000]"))
            .unwrap()
            .to_proto();
    }

    #[test]
    fn a_valid_container_task_is_launched() {
        let plan = run(&["o1"], vec![docker_task("a", "web", |_| {})]);
        assert!(plan.rejections.is_empty(), "{:?}", plan.rejections);
        assert_eq!(plan.launches.len(), 1);
    }

    #[test]
    fn a_container_without_a_command_runs_its_images_entrypoint() {
        let plan = run(&["o1"], vec![docker_task("a", "web", |t| t.command = None)]);
        assert!(plan.rejections.is_empty(), "{:?}", plan.rejections);
        assert_eq!(plan.launches.len(), 1);
    }

    #[test]
    fn bad_container_fields_get_task_error_naming_the_field() {
        let path = "operations[0].launch.task_infos[0]";
        let cases: Vec<(v1::TaskInfo, String)> = vec![
            (
                docker_task("x", "web", |t| set_mem(t, 2.0)),
                format!("{path}.resources.mem: 2 MiB is below"),
            ),
            (
                docker_task("x", "web", |t| {
                    t.container.as_mut().unwrap().volumes[0].container_path = "data".into()
                }),
                format!("{path}.container.volumes[0].container_path: \"data\" is not an absolute path"),
            ),
            (
                docker_task("x", "web", |t| {
                    t.container.as_mut().unwrap().volumes[0].host_path = "tmp/x".into()
                }),
                format!("{path}.container.volumes[0].host_path"),
            ),
            (
                docker_task("x", "web", |t| docker(t).port_mappings[0].host_port = 31001),
                format!(
                    "{path}.container.docker.port_mappings[0].host_port: 31001 is not in the task's ports"
                ),
            ),
            (
                docker_task("x", "web", |t| docker(t).port_mappings[0].container_port = 0),
                format!("{path}.container.docker.port_mappings[0].container_port"),
            ),
            (
                docker_task("x", "web", |t| {
                    docker(t).port_mappings[0].protocol = "sctp".into()
                }),
                format!("{path}.container.docker.port_mappings[0].protocol"),
            ),
            (
                docker_task("x", "web", |t| docker(t).network = v1::NetworkMode::Host as i32),
                format!("{path}.container.docker.port_mappings: only allowed with BRIDGE"),
            ),
            (
                docker_task("x", "web", |t| docker(t).image = " ".into()),
                format!("{path}.container.docker.image: must not be empty"),
            ),
            (
                docker_task("x", "web", |t| t.container.as_mut().unwrap().kind = None),
                format!("{path}.container.docker: must be set"),
            ),
            (
                docker_task("x", "web", |t| {
                    t.container.as_mut().unwrap().working_dir = "srv".into()
                }),
                format!("{path}.container.working_dir"),
            ),
        ];
        for (t, words) in cases {
            let plan = run(&["o1"], vec![t]);
            assert!(plan.launches.is_empty(), "{words}");
            assert_eq!(plan.rejections.len(), 1, "{words}");
            let r = &plan.rejections[0];
            assert_eq!(
                (r.state, r.reason),
                (TaskState::Error, StatusReason::ReasonTaskInvalid)
            );
            assert!(
                r.message.starts_with(&words),
                "expected {words:?}, got {:?}",
                r.message
            );
            assert_eq!(
                plan.unused,
                Resources::parse("cpus:2;mem:256;ports:[31000-31001]").unwrap()
            );
        }
    }

    #[test]
    fn a_valid_group_is_launched_together_and_takes_its_resources() {
        let f = fixture();
        let ops = vec![group(vec![
            docker_task("a", "web", |_| {}),
            docker_task("b", "sidecar", |t| {
                t.resources = Resources::parse("cpus:0.5;mem:32").unwrap().to_proto();
                docker(t).port_mappings.clear();
            }),
        ])];
        let plan = validate_with(&f, &ids(&["o1"]), &ops).unwrap();
        assert!(plan.rejections.is_empty(), "{:?}", plan.rejections);
        assert!(plan.launches.is_empty());
        assert_eq!(plan.groups.len(), 1);
        let launched: Vec<&str> = plan.groups[0].tasks.iter().map(|t| t.task_id.as_str()).collect();
        assert_eq!(launched, vec!["a", "b"]);
        assert!(plan.groups[0].tasks.iter().all(|t| t.info.agent_id == "agent-1"));
        assert_eq!(
            plan.unused,
            Resources::parse("cpus:1;mem:160;ports:[31001-31001]").unwrap()
        );
    }

    #[test]
    fn a_group_with_one_invalid_task_refuses_every_task() {
        let f = fixture();
        let ops = vec![group(vec![
            docker_task("a", "web", |t| docker(t).port_mappings.clear()),
            docker_task("b", "db", |t| {
                docker(t).port_mappings.clear();
                t.container.as_mut().unwrap().volumes[0].container_path = "rel".into();
            }),
        ])];
        let plan = validate_with(&f, &ids(&["o1"]), &ops).unwrap();
        assert!(plan.groups.is_empty());
        let got: Vec<(&str, TaskState, StatusReason, &str)> = plan
            .rejections
            .iter()
            .map(|r| (r.task_id.as_str(), r.state, r.reason, r.message.as_str()))
            .collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "a");
        assert_eq!(
            got[0].3,
            "operations[0].launch_group: task group refused: task b is invalid"
        );
        assert_eq!(got[1].0, "b");
        assert!(
            got[1]
                .3
                .starts_with("operations[0].launch_group.task_infos[1].container.volumes[0].container_path"),
            "{}",
            got[1].3
        );
        assert!(
            got.iter()
                .all(|g| (g.1, g.2) == (TaskState::Error, StatusReason::ReasonTaskInvalid))
        );
        assert_eq!(
            plan.unused,
            Resources::parse("cpus:2;mem:256;ports:[31000-31001]").unwrap()
        );
    }

    #[test]
    fn a_group_with_two_tasks_of_the_same_name_is_refused_naming_the_second() {
        let f = fixture();
        let ops = vec![group(vec![
            docker_task("a", "web", |t| docker(t).port_mappings.clear()),
            docker_task("b", "web", |t| docker(t).port_mappings.clear()),
        ])];
        let plan = validate_with(&f, &ids(&["o1"]), &ops).unwrap();
        assert!(plan.groups.is_empty());
        assert_eq!(plan.rejections.len(), 2);
        assert!(plan.rejections[0].message.ends_with("task b is invalid"));
        assert!(
            plan.rejections[1]
                .message
                .starts_with("operations[0].launch_group.task_infos[1].name: \"web\" is used by another"),
            "{}",
            plan.rejections[1].message
        );
    }

    #[test]
    fn a_group_that_does_not_fit_refuses_every_task() {
        let f = fixture();
        let mut b = task("b", "cpus:1");
        b.name = "u".into();
        let ops = vec![group(vec![task("a", "cpus:1.5"), b])];
        let plan = validate_with(&f, &ids(&["o1"]), &ops).unwrap();
        assert!(plan.groups.is_empty());
        assert_eq!(plan.rejections.len(), 2);
        for r in &plan.rejections {
            assert_eq!(r.reason, StatusReason::ReasonResourcesInsufficient);
            assert!(r.message.contains("task group refused"), "{}", r.message);
            assert!(r.message.contains("missing cpus:0.5"), "{}", r.message);
        }
    }

    #[test]
    fn a_group_must_fit_after_the_earlier_operations_of_the_accept() {
        let f = fixture();
        let mut ops = launch(vec![task("first", "cpus:1.8")]);
        ops.push(group(vec![docker_task("a", "web", |_| {})]));
        let plan = validate_with(&f, &ids(&["o1"]), &ops).unwrap();
        assert_eq!(plan.launches.len(), 1);
        assert!(plan.groups.is_empty());
        assert_eq!(plan.rejections[0].task_id, "a");
        assert_eq!(
            plan.rejections[0].reason,
            StatusReason::ReasonResourcesInsufficient
        );
    }

    #[test]
    fn a_group_needs_the_task_groups_capability() {
        let f = fixture();
        let ops = vec![group(vec![docker_task("a", "web", |_| {})])];
        let plan = validate_as(&f, &ids(&["o1"]), &ops, false).unwrap();
        assert!(plan.groups.is_empty());
        assert_eq!(plan.rejections.len(), 1);
        assert_eq!(plan.rejections[0].reason, StatusReason::ReasonTaskInvalid);
        assert!(
            plan.rejections[0]
                .message
                .contains("FRAMEWORK_CAPABILITY_TASK_GROUPS")
        );
    }

    #[test]
    fn an_empty_group_refuses_the_accept() {
        let f = fixture();
        let err = validate_with(&f, &ids(&["o1"]), &[group(vec![])]).unwrap_err();
        assert!(
            err.0.starts_with("operations[0].launch_group.task_infos"),
            "{}",
            err.0
        );
    }

    #[test]
    fn invalid_offers_fail_every_task_of_a_group() {
        let f = fixture();
        let ops = vec![group(vec![docker_task("a", "web", |_| {})])];
        let plan = validate_with(&f, &ids(&["gone"]), &ops).unwrap();
        assert!(!plan.offers_valid);
        assert_eq!(plan.rejections.len(), 1);
        assert_eq!(plan.rejections[0].reason, StatusReason::ReasonInvalidOffers);
    }
}
