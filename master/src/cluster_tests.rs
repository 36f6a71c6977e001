//! The master's steps and timers, driven without the network and with
//! paused time.

use super::*;

const DELAY: Duration = Duration::from_millis(5);

fn config() -> MasterConfig {
    let mut c = MasterConfig::new("127.0.0.1:0".parse().unwrap(), "unused".into());
    c.allocation_delay = DELAY;
    c.agent_timeout = Duration::from_secs(15);
    c.framework_heartbeat_interval = Duration::from_secs(3600);
    c
}

fn master(config: MasterConfig) -> Master {
    Master::new(config, "master-1".into(), Metrics::new(), Instant::now())
}

fn agent_info(id: &str) -> v1::AgentInfo {
    v1::AgentInfo {
        id: id.into(),
        hostname: "host-1".into(),
        resources: Resources::parse("cpus:4;mem:1024;ports:[31000-31009]")
            .unwrap()
            .to_proto(),
        ..Default::default()
    }
}

fn register(m: &mut Master, id: &str, conn: u64, tasks: Vec<v1::Task>) -> AgentId {
    let (tx, _rx) = mpsc::unbounded_channel();
    let register = v1::Register {
        agent: Some(agent_info(id)),
        tasks,
        frameworks: vec![],
    };
    m.register_agent(register, conn, tx, Instant::now()).unwrap()
}

fn framework_info(failover: f64) -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        name: "fw".into(),
        failover_timeout_seconds: failover,
        ..Default::default()
    }
}

fn subscribe(m: &mut Master, info: v1::FrameworkInfo) -> Caller {
    let (tx, _rx) = mpsc::unbounded_channel();
    let (framework_id, stream_id) = m.subscribe(info, vec![], tx, Instant::now()).unwrap();
    Caller {
        framework_id,
        stream_id,
    }
}

fn framework_events(effects: &[Effect], fid: &FrameworkId) -> Vec<event::Event> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ToFramework(f, ev) if f == fid => Some(ev.clone()),
            _ => None,
        })
        .collect()
}

fn agent_messages(effects: &[Effect], aid: &AgentId) -> Vec<master_message::Message> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ToAgent(a, m) if a == aid => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn offers(events: &[event::Event]) -> Vec<v1::Offer> {
    events
        .iter()
        .filter_map(|e| match e {
            event::Event::Offers(o) => Some(o.offers.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn updates(events: &[event::Event]) -> Vec<v1::TaskStatus> {
    events
        .iter()
        .filter_map(|e| match e {
            event::Event::Update(u) => u.status.clone(),
            _ => None,
        })
        .collect()
}

/// Advances paused time by `d` and runs the due timers.
async fn advance(m: &mut Master, d: Duration) -> Vec<Effect> {
    tokio::time::advance(d).await;
    m.tick(Instant::now());
    m.take_effects()
}

/// A cluster with one agent and one subscribed framework holding an offer.
async fn with_offer(config: MasterConfig, failover: f64) -> (Master, AgentId, Caller, v1::Offer) {
    let mut m = master(config);
    let agent = register(&mut m, "", 1, vec![]);
    let caller = subscribe(&mut m, framework_info(failover));
    m.take_effects();
    let effects = advance(&mut m, DELAY).await;
    let offer = offers(&framework_events(&effects, &caller.framework_id)).remove(0);
    (m, agent, caller, offer)
}

fn task_info(id: &str, res: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        name: id.into(),
        task_id: id.into(),
        resources: Resources::parse(res).unwrap().to_proto(),
        command: Some(v1::CommandInfo {
            command: Some(v1::command_info::Command::Shell("sleep 100".into())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn accept(m: &mut Master, caller: &Caller, offer: &v1::Offer, tasks: Vec<v1::TaskInfo>) -> Vec<Effect> {
    let call = Call::Accept {
        offer_ids: vec![OfferId::parse(&offer.id).unwrap()],
        operations: vec![v1::Operation {
            operation: Some(v1::operation::Operation::Launch(v1::Launch { task_infos: tasks })),
        }],
        refuse: Duration::ZERO,
    };
    m.call(caller, call, Instant::now()).unwrap();
    m.take_effects()
}

fn agent_update(m: &mut Master, agent: &AgentId, caller: &Caller, task: &str, state: TaskState, uuid: &[u8]) {
    agent_update_with_latest(m, agent, caller, task, state, TaskState::Unspecified, uuid);
}

/// An agent update whose task has since moved on to `latest` on the agent.
fn agent_update_with_latest(
    m: &mut Master,
    agent: &AgentId,
    caller: &Caller,
    task: &str,
    state: TaskState,
    latest: TaskState,
    uuid: &[u8],
) {
    let u = v1::StatusUpdate {
        latest_state: latest as i32,
        framework_id: caller.framework_id.to_string(),
        status: Some(v1::TaskStatus {
            task_id: task.into(),
            state: state as i32,
            source: StatusSource::Agent as i32,
            uuid: uuid.to_vec(),
            ..Default::default()
        }),
    };
    m.agent_message(
        agent,
        1,
        v1::agent_message::Message::StatusUpdate(u),
        Instant::now(),
    );
}

#[tokio::test(start_paused = true)]
async fn offers_are_made_once_the_allocation_delay_has_passed() {
    let mut m = master(config());
    register(&mut m, "", 1, vec![]);
    let caller = subscribe(&mut m, framework_info(0.0));
    m.take_effects();
    m.tick(Instant::now());
    assert!(offers(&framework_events(&m.take_effects(), &caller.framework_id)).is_empty());
    let effects = advance(&mut m, DELAY).await;
    let made = offers(&framework_events(&effects, &caller.framework_id));
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].hostname, "host-1");
}

#[tokio::test(start_paused = true)]
async fn offers_held_past_the_offer_timeout_are_rescinded_and_offered_again() {
    let mut c = config();
    c.offer_timeout = Some(Duration::from_secs(10));
    let (mut m, _, caller, offer) = with_offer(c, 0.0).await;
    let effects = advance(&mut m, Duration::from_secs(9)).await;
    assert!(framework_events(&effects, &caller.framework_id).is_empty());
    let effects = advance(&mut m, Duration::from_secs(1)).await;
    let events = framework_events(&effects, &caller.framework_id);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, event::Event::Rescind(r) if r.offer_id == offer.id))
    );
    let effects = advance(&mut m, DELAY).await;
    assert_eq!(offers(&framework_events(&effects, &caller.framework_id)).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_declined_agent_is_not_offered_again_until_the_refuse_filter_expires() {
    let (mut m, _, caller, offer) = with_offer(config(), 0.0).await;
    let decline = Call::Decline {
        offer_ids: vec![OfferId::parse(&offer.id).unwrap()],
        refuse: Duration::from_secs(5),
    };
    m.call(&caller, decline, Instant::now()).unwrap();
    let effects = advance(&mut m, Duration::from_secs(4)).await;
    assert!(offers(&framework_events(&effects, &caller.framework_id)).is_empty());
    let effects = advance(&mut m, Duration::from_secs(1)).await;
    assert_eq!(offers(&framework_events(&effects, &caller.framework_id)).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn revive_clears_the_refuse_filter() {
    let (mut m, _, caller, offer) = with_offer(config(), 0.0).await;
    let decline = Call::Decline {
        offer_ids: vec![OfferId::parse(&offer.id).unwrap()],
        refuse: Duration::from_secs(60),
    };
    m.call(&caller, decline, Instant::now()).unwrap();
    m.call(&caller, Call::Revive { roles: vec![] }, Instant::now())
        .unwrap();
    let effects = advance(&mut m, DELAY).await;
    assert_eq!(offers(&framework_events(&effects, &caller.framework_id)).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_suppressed_framework_gets_no_offers() {
    let (mut m, _, caller, offer) = with_offer(config(), 0.0).await;
    m.call(&caller, Call::Suppress { roles: vec![] }, Instant::now())
        .unwrap();
    let decline = Call::Decline {
        offer_ids: vec![OfferId::parse(&offer.id).unwrap()],
        refuse: Duration::ZERO,
    };
    m.call(&caller, decline, Instant::now()).unwrap();
    let effects = advance(&mut m, Duration::from_secs(10)).await;
    assert!(offers(&framework_events(&effects, &caller.framework_id)).is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_accepted_task_is_sent_to_its_agent_and_the_rest_is_offered_again() {
    let (mut m, agent, caller, offer) = with_offer(config(), 0.0).await;
    let effects = accept(&mut m, &caller, &offer, vec![task_info("t1", "cpus:1;mem:128")]);
    let msgs = agent_messages(&effects, &agent);
    assert!(matches!(&msgs[..], [master_message::Message::RunTask(r)]
        if r.task.as_ref().unwrap().agent_id == agent.as_str()));
    let effects = advance(&mut m, DELAY).await;
    let made = offers(&framework_events(&effects, &caller.framework_id));
    let rest = Resources::from_proto(&made[0].resources).unwrap();
    assert_eq!(
        rest,
        Resources::parse("cpus:3;mem:896;ports:[31000-31009]").unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn an_accept_with_a_rescinded_offer_drops_its_tasks() {
    let (mut m, _, caller, mut offer) = with_offer(config(), 0.0).await;
    offer.id = "offer-gone".into();
    let effects = accept(&mut m, &caller, &offer, vec![task_info("t1", "cpus:1")]);
    let ups = updates(&framework_events(&effects, &caller.framework_id));
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Dropped as i32);
    assert_eq!(ups[0].reason, StatusReason::ReasonInvalidOffers as i32);
    assert!(ups[0].uuid.is_empty());
}

#[tokio::test(start_paused = true)]
async fn agent_updates_are_forwarded_and_acknowledgements_go_back_to_the_agent() {
    let (mut m, agent, caller, offer) = with_offer(config(), 0.0).await;
    accept(&mut m, &caller, &offer, vec![task_info("t1", "cpus:4")]);
    agent_update(&mut m, &agent, &caller, "t1", TaskState::Running, b"u1");
    let ups = updates(&framework_events(&m.take_effects(), &caller.framework_id));
    assert_eq!(ups[0].state, TaskState::Running as i32);
    assert_eq!(ups[0].uuid, b"u1");
    let ack = Call::Acknowledge {
        agent_id: agent.clone(),
        task_id: TaskId::parse("t1").unwrap(),
        uuid: b"u1".to_vec(),
    };
    m.call(&caller, ack, Instant::now()).unwrap();
    let msgs = agent_messages(&m.take_effects(), &agent);
    assert!(matches!(&msgs[..], [master_message::Message::Acknowledge(a)] if a.uuid == b"u1"));
}

#[tokio::test(start_paused = true)]
async fn a_terminal_update_returns_the_tasks_resources_and_its_ack_completes_the_task() {
    let (mut m, agent, caller, offer) = with_offer(config(), 0.0).await;
    accept(&mut m, &caller, &offer, vec![task_info("t1", "cpus:1")]);
    advance(&mut m, DELAY).await; // the unused part is offered
    agent_update(&mut m, &agent, &caller, "t1", TaskState::Finished, b"u2");
    let effects = advance(&mut m, DELAY).await;
    let made = offers(&framework_events(&effects, &caller.framework_id));
    assert_eq!(
        Resources::from_proto(&made[0].resources).unwrap(),
        Resources::parse("cpus:1").unwrap()
    );
    assert_eq!(m.state_json()["tasks"].as_array().unwrap().len(), 1);
    let ack = Call::Acknowledge {
        agent_id: agent,
        task_id: TaskId::parse("t1").unwrap(),
        uuid: b"u2".to_vec(),
    };
    m.call(&caller, ack, Instant::now()).unwrap();
    let state = m.state_json();
    assert!(state["tasks"].as_array().unwrap().is_empty());
    assert_eq!(state["completed_tasks"][0]["state"], "TASK_FINISHED");
}

#[tokio::test(start_paused = true)]
async fn a_silent_agent_becomes_unreachable_and_its_tasks_too() {
    let (mut m, agent, caller, offer) = with_offer(config(), 0.0).await;
    accept(&mut m, &caller, &offer, vec![task_info("t1", "cpus:1")]);
    let effects = advance(&mut m, DELAY).await;
    let second = offers(&framework_events(&effects, &caller.framework_id)).remove(0);
    let effects = advance(
        &mut m,
        Duration::from_secs(15) - DELAY * 2 - Duration::from_millis(1),
    )
    .await;
    assert!(framework_events(&effects, &caller.framework_id).is_empty());
    // Found by the next sweep: within agent_timeout + sweep_interval.
    let sweep = m.sweep_interval();
    let effects = advance(&mut m, sweep).await;
    let events = framework_events(&effects, &caller.framework_id);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, event::Event::Rescind(r) if r.offer_id == second.id))
    );
    let ups = updates(&events);
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Unreachable as i32);
    assert_eq!(ups[0].reason, StatusReason::ReasonAgentUnreachable as i32);
    assert_eq!(ups[0].source, StatusSource::Master as i32);
    assert!(ups[0].uuid.is_empty());
    assert_eq!(m.state_json()["agents"][0]["status"], "unreachable");
    let _ = agent;
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_an_agent_reachable() {
    let mut m = master(config());
    let agent = register(&mut m, "", 1, vec![]);
    for _ in 0..4 {
        advance(&mut m, Duration::from_secs(10)).await;
        m.agent_message(
            &agent,
            1,
            v1::agent_message::Message::Heartbeat(v1::AgentHeartbeat {}),
            Instant::now(),
        );
    }
    assert_eq!(m.state_json()["agents"][0]["status"], "active");
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_agent_that_re_registers_gets_its_tasks_back() {
    let (mut m, agent, caller, offer) = with_offer(config(), 0.0).await;
    accept(&mut m, &caller, &offer, vec![task_info("t1", "cpus:1")]);
    advance(&mut m, Duration::from_secs(16)).await;
    let running = v1::Task {
        info: Some(task_info("t1", "cpus:1")),
        framework_id: caller.framework_id.to_string(),
        status: Some(v1::TaskStatus {
            task_id: "t1".into(),
            state: TaskState::Running as i32,
            ..Default::default()
        }),
        group_id: String::new(),
    };
    let orphan = v1::Task {
        info: Some(task_info("t9", "cpus:1")),
        framework_id: "fw-never-heard-of".into(),
        status: None,
        group_id: String::new(),
    };
    register(&mut m, agent.as_str(), 2, vec![running, orphan]);
    let effects = m.take_effects();
    let ups = updates(&framework_events(&effects, &caller.framework_id));
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Running as i32);
    assert_eq!(ups[0].reason, StatusReason::ReasonAgentReregistered as i32);
    let msgs = agent_messages(&effects, &agent);
    assert!(matches!(&msgs[0], master_message::Message::Registered(r) if r.agent_id == agent.as_str()));
    assert!(matches!(&msgs[1], master_message::Message::KillTask(k) if k.task_id == "t9"));
    // The re-adopted task's resources are used: only 3 cpus are offered.
    let effects = advance(&mut m, DELAY).await;
    let made = offers(&framework_events(&effects, &caller.framework_id));
    assert_eq!(
        Resources::from_proto(&made[0].resources)
            .unwrap()
            .get_scalar("cpus"),
        3.0
    );
}

#[tokio::test(start_paused = true)]
async fn a_disconnected_framework_is_removed_when_its_failover_timeout_expires() {
    let (mut m, agent, caller, offer) = with_offer(config(), 10.0).await;
    accept(&mut m, &caller, &offer, vec![task_info("t1", "cpus:1")]);
    m.framework_disconnected(&caller.framework_id, &caller.stream_id, Instant::now());
    let effects = advance(&mut m, Duration::from_secs(9)).await;
    assert!(agent_messages(&effects, &agent).is_empty());
    let effects = advance(&mut m, Duration::from_secs(1)).await;
    let msgs = agent_messages(&effects, &agent);
    assert!(matches!(&msgs[0], master_message::Message::KillTask(k) if k.task_id == "t1"));
    assert!(matches!(&msgs[1], master_message::Message::ShutdownFramework(_)));
    assert!(effects.iter().any(|e| matches!(e, Effect::Persist(w)
        if w == &vec![Write::delete(framework_key(&caller.framework_id))])));
    assert!(m.state_json()["frameworks"].as_array().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_framework_that_re_subscribes_in_time_keeps_its_tasks_and_gets_unacked_updates_again() {
    let (mut m, agent, caller, offer) = with_offer(config(), 10.0).await;
    accept(&mut m, &caller, &offer, vec![task_info("t1", "cpus:1")]);
    m.framework_disconnected(&caller.framework_id, &caller.stream_id, Instant::now());
    agent_update(&mut m, &agent, &caller, "t1", TaskState::Running, b"u1");
    advance(&mut m, Duration::from_secs(9)).await;
    let mut info = framework_info(10.0);
    info.id = caller.framework_id.to_string();
    let again = subscribe(&mut m, info);
    assert_eq!(again.framework_id, caller.framework_id);
    assert_ne!(again.stream_id, caller.stream_id);
    let events = framework_events(&m.take_effects(), &caller.framework_id);
    assert!(matches!(&events[0], event::Event::Subscribed(_)));
    let ups = updates(&events);
    assert_eq!(ups[0].uuid, b"u1");
    let effects = advance(&mut m, Duration::from_secs(5)).await;
    assert!(agent_messages(&effects, &agent).is_empty());
    assert_eq!(m.state_json()["tasks"].as_array().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn calls_with_a_stale_stream_or_unknown_framework_are_refused() {
    let mut m = master(config());
    let caller = subscribe(&mut m, framework_info(10.0));
    let mut info = framework_info(10.0);
    info.id = caller.framework_id.to_string();
    let _new = subscribe(&mut m, info);
    let err = m
        .call(&caller, Call::Revive { roles: vec![] }, Instant::now())
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let stranger = Caller {
        framework_id: FrameworkId::parse("fw-unknown").unwrap(),
        stream_id: caller.stream_id.clone(),
    };
    let err = m
        .call(&stranger, Call::Revive { roles: vec![] }, Instant::now())
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(start_paused = true)]
async fn re_subscribing_with_an_unknown_id_is_not_found() {
    let mut m = master(config());
    let mut info = framework_info(0.0);
    info.id = "fw-unknown".into();
    let (tx, _rx) = mpsc::unbounded_channel();
    let err = m.subscribe(info, vec![], tx, Instant::now()).unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(start_paused = true)]
async fn killing_an_unknown_task_answers_task_lost() {
    let mut m = master(config());
    let caller = subscribe(&mut m, framework_info(0.0));
    m.take_effects();
    let kill = Call::Kill {
        task_id: TaskId::parse("nope").unwrap(),
        kill_policy: None,
    };
    m.call(&caller, kill, Instant::now()).unwrap();
    let ups = updates(&framework_events(&m.take_effects(), &caller.framework_id));
    assert_eq!(ups[0].state, TaskState::Lost as i32);
    assert_eq!(ups[0].reason, StatusReason::ReasonTaskUnknown as i32);
}

#[tokio::test(start_paused = true)]
async fn killing_a_known_task_asks_its_agent() {
    let (mut m, agent, caller, offer) = with_offer(config(), 0.0).await;
    accept(&mut m, &caller, &offer, vec![task_info("t1", "cpus:1")]);
    let kill = Call::Kill {
        task_id: TaskId::parse("t1").unwrap(),
        kill_policy: None,
    };
    m.call(&caller, kill, Instant::now()).unwrap();
    let msgs = agent_messages(&m.take_effects(), &agent);
    assert!(matches!(&msgs[..], [master_message::Message::KillTask(k)] if k.task_id == "t1"));
}

#[tokio::test(start_paused = true)]
async fn reconciliation_answers_latest_states_and_unknown_for_unknown_tasks() {
    let (mut m, agent, caller, offer) = with_offer(config(), 0.0).await;
    accept(&mut m, &caller, &offer, vec![task_info("t1", "cpus:1")]);
    agent_update(&mut m, &agent, &caller, "t1", TaskState::Running, b"u1");
    m.take_effects();
    m.call(&caller, Call::Reconcile { tasks: vec![] }, Instant::now())
        .unwrap();
    let ups = updates(&framework_events(&m.take_effects(), &caller.framework_id));
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Running as i32);
    assert_eq!(ups[0].reason, StatusReason::ReasonReconciliation as i32);
    assert!(ups[0].uuid.is_empty());
    let explicit = Call::Reconcile {
        tasks: vec![reconcile_task("t1", None), reconcile_task("zz", None)],
    };
    m.call(&caller, explicit, Instant::now()).unwrap();
    let ups = updates(&framework_events(&m.take_effects(), &caller.framework_id));
    assert_eq!(ups[1].task_id, "zz");
    assert_eq!(ups[1].state, TaskState::Lost as i32);
}

#[tokio::test(start_paused = true)]
async fn teardown_kills_the_frameworks_tasks_and_forgets_it() {
    let (mut m, agent, caller, offer) = with_offer(config(), 100.0).await;
    accept(&mut m, &caller, &offer, vec![task_info("t1", "cpus:1")]);
    m.call(&caller, Call::Teardown, Instant::now()).unwrap();
    let msgs = agent_messages(&m.take_effects(), &agent);
    assert!(matches!(&msgs[0], master_message::Message::KillTask(_)));
    let err = m
        .call(&caller, Call::Revive { roles: vec![] }, Instant::now())
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(start_paused = true)]
async fn frameworks_recovered_from_the_registry_are_removed_if_they_never_come_back() {
    let mut m = master(config());
    let mut info = framework_info(30.0);
    info.id = "fw-old".into();
    m.recover_framework(info, Instant::now());
    assert_eq!(m.state_json()["frameworks"][0]["status"], "disconnected");
    advance(&mut m, Duration::from_secs(30)).await;
    assert!(m.state_json()["frameworks"].as_array().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn framework_heartbeats_are_sent_every_interval() {
    let mut c = config();
    c.framework_heartbeat_interval = Duration::from_secs(15);
    let mut m = master(c);
    let caller = subscribe(&mut m, framework_info(0.0));
    m.take_effects();
    let effects = advance(&mut m, Duration::from_secs(15)).await;
    let events = framework_events(&effects, &caller.framework_id);
    assert!(events.iter().any(|e| matches!(e, event::Event::Heartbeat(_))));
}

#[tokio::test(start_paused = true)]
async fn a_task_that_ended_on_its_agent_frees_its_resources_before_the_framework_hears_of_it() {
    let (mut m, agent, caller, offer) = with_offer(config(), 0.0).await;
    accept(&mut m, &caller, &offer, vec![task_info("t1", "cpus:1")]);
    advance(&mut m, DELAY).await; // the unused part is offered
    // RUNNING is still unacknowledged, but the task has already finished.
    agent_update_with_latest(
        &mut m,
        &agent,
        &caller,
        "t1",
        TaskState::Running,
        TaskState::Finished,
        b"u1",
    );
    let effects = advance(&mut m, DELAY).await;
    let events = framework_events(&effects, &caller.framework_id);
    assert_eq!(
        updates(&events)[0].state(),
        TaskState::Running,
        "the update is forwarded as it is"
    );
    let made = offers(&events);
    assert_eq!(
        Resources::from_proto(&made[0].resources).unwrap(),
        Resources::parse("cpus:1").unwrap(),
        "the finished task's cpu is offered again"
    );
    // The FINISHED update that follows does not free the resources twice.
    agent_update(&mut m, &agent, &caller, "t1", TaskState::Finished, b"u2");
    let effects = advance(&mut m, DELAY).await;
    assert!(offers(&framework_events(&effects, &caller.framework_id)).is_empty());
}

#[tokio::test(start_paused = true)]
async fn updates_for_a_removed_framework_are_acknowledged_by_the_master() {
    let (mut m, agent, caller, offer) = with_offer(config(), 0.0).await;
    accept(&mut m, &caller, &offer, vec![task_info("t1", "cpus:1")]);
    let teardown = m.call(&caller, Call::Teardown, Instant::now());
    assert!(teardown.is_ok());
    m.take_effects();
    agent_update(&mut m, &agent, &caller, "t1", TaskState::Killing, b"u1");
    let msgs = agent_messages(&m.take_effects(), &agent);
    assert!(
        msgs.iter()
            .any(|msg| matches!(msg, master_message::Message::Acknowledge(a) if a.uuid == b"u1")),
        "the agent's queue would wait forever: {msgs:?}"
    );
    agent_update(&mut m, &agent, &caller, "t1", TaskState::Killed, b"u2");
    let msgs = agent_messages(&m.take_effects(), &agent);
    assert!(
        msgs.iter()
            .any(|msg| matches!(msg, master_message::Message::Acknowledge(a) if a.uuid == b"u2"))
    );
    assert!(m.state_json()["tasks"].as_array().unwrap().is_empty());
}

// ---------------------------------------------------------------------
// Roles: hierarchical roles, weights, dynamic reservations
// ---------------------------------------------------------------------

fn register_with(m: &mut Master, id: &str, resources: &str) -> AgentId {
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut agent = agent_info(id);
    agent.resources = Resources::parse(resources).unwrap().to_proto();
    let register = v1::Register {
        agent: Some(agent),
        tasks: vec![],
        frameworks: vec![],
    };
    m.register_agent(register, 1, tx, Instant::now()).unwrap()
}

fn in_role(role: &str) -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        roles: vec![role.into()],
        ..framework_info(0.0)
    }
}

fn reserve(res: &str) -> v1::Operation {
    v1::Operation {
        operation: Some(v1::operation::Operation::Reserve(v1::Reserve {
            resources: Resources::parse(res).unwrap().to_proto(),
        })),
    }
}

fn unreserve(res: &str) -> v1::Operation {
    v1::Operation {
        operation: Some(v1::operation::Operation::Unreserve(v1::Unreserve {
            resources: Resources::parse(res).unwrap().to_proto(),
        })),
    }
}

fn launching(tasks: Vec<v1::TaskInfo>) -> v1::Operation {
    v1::Operation {
        operation: Some(v1::operation::Operation::Launch(v1::Launch { task_infos: tasks })),
    }
}

/// An ACCEPT with `operations`; what the framework leaves is refused for an hour.
fn accept_ops(
    m: &mut Master,
    caller: &Caller,
    offer: &v1::Offer,
    operations: Vec<v1::Operation>,
) -> Result<Vec<Effect>, Status> {
    let call = Call::Accept {
        offer_ids: vec![OfferId::parse(&offer.id).unwrap()],
        operations,
        refuse: Duration::from_secs(3600),
    };
    m.call(caller, call, Instant::now())?;
    Ok(m.take_effects())
}

/// Subscribes a framework in `role` and returns the first offer it gets.
async fn subscribe_for_offer(m: &mut Master, role: &str) -> (Caller, v1::Offer) {
    let caller = subscribe(m, in_role(role));
    m.take_effects();
    let effects = advance(m, DELAY).await;
    let offer = offers(&framework_events(&effects, &caller.framework_id))
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no offer for a framework in {role}"));
    (caller, offer)
}

fn resources_of(offer: &v1::Offer) -> Resources {
    Resources::from_proto(&offer.resources).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_framework_in_a_hierarchical_role_gets_offers_naming_its_role() {
    let mut m = master(config());
    register(&mut m, "", 1, vec![]);
    let (_, offer) = subscribe_for_offer(&mut m, "eng/web").await;
    assert_eq!(offer.allocation_role, "eng/web");
    assert_eq!(resources_of(&offer).get_scalar("cpus"), 4.0);
}

/// Runs the weights scenario: `prod` holds half the cluster and `dev` a
/// quarter; returns who is offered a newly registered agent.
async fn who_gets_a_new_agent(prod_weight: Option<f64>) -> &'static str {
    let mut m = master(config());
    register_with(&mut m, "agent-1", "cpus:4;mem:1024");
    let (prod, offer) = subscribe_for_offer(&mut m, "prod").await;
    accept_ops(
        &mut m,
        &prod,
        &offer,
        vec![launching(vec![task_info("p", "cpus:4;mem:1024")])],
    )
    .unwrap();
    let dev = subscribe(&mut m, in_role("dev"));
    register_with(&mut m, "agent-2", "cpus:2;mem:512");
    let effects = advance(&mut m, DELAY).await;
    let offer = offers(&framework_events(&effects, &dev.framework_id)).remove(0);
    accept_ops(
        &mut m,
        &dev,
        &offer,
        vec![launching(vec![task_info("d", "cpus:2;mem:512")])],
    )
    .unwrap();
    if let Some(w) = prod_weight {
        m.operator(
            OperatorRequest::SetWeight {
                role: "prod".into(),
                weight: w,
            },
            Instant::now(),
        )
        .unwrap();
    }
    m.take_effects();
    register_with(&mut m, "agent-3", "cpus:2;mem:512");
    let effects = advance(&mut m, DELAY).await;
    match (
        offers(&framework_events(&effects, &prod.framework_id)).len(),
        offers(&framework_events(&effects, &dev.framework_id)).len(),
    ) {
        (1, 0) => "prod",
        (0, 1) => "dev",
        other => panic!("unexpected offers {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_role_with_the_lower_share_is_offered_first() {
    assert_eq!(who_gets_a_new_agent(None).await, "dev");
}

#[tokio::test(start_paused = true)]
async fn a_weight_set_at_runtime_changes_who_is_offered_first() {
    assert_eq!(who_gets_a_new_agent(Some(3.0)).await, "prod");
}

/// One agent; a `prod` framework reserves `cpus:2;mem:512` of it.
async fn with_reservation() -> (Master, AgentId, Caller) {
    let mut m = master(config());
    let agent = register_with(&mut m, "agent-1", "cpus:4;mem:1024");
    let (prod, offer) = subscribe_for_offer(&mut m, "prod").await;
    assert_eq!(offer.allocation_role, "prod");
    let effects = accept_ops(&mut m, &prod, &offer, vec![reserve("cpus(prod):2;mem(prod):512")]).unwrap();
    let stored = effects.iter().any(|e| {
        matches!(e, Effect::Persist(w) if w.iter().any(|w| matches!(w,
            agora_store::Write::Put { key, value }
                if key == &reservations_key(&agent)
                && decode_reservations(value) == Some(Resources::parse("cpus(prod):2;mem(prod):512").unwrap()))))
    });
    assert!(stored, "the reservation is written to the registry: {effects:?}");
    (m, agent, prod)
}

#[tokio::test(start_paused = true)]
async fn reserved_resources_are_offered_only_to_their_role() {
    let (mut m, _, _) = with_reservation().await;
    let (_, dev_offer) = subscribe_for_offer(&mut m, "dev").await;
    assert_eq!(
        resources_of(&dev_offer),
        Resources::parse("cpus:2;mem:512").unwrap()
    );
    let (_, prod_offer) = subscribe_for_offer(&mut m, "prod").await;
    assert_eq!(
        resources_of(&prod_offer),
        Resources::parse("cpus(prod):2;mem(prod):512").unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn a_launch_after_a_reserve_in_the_same_accept_uses_the_reservation() {
    let mut m = master(config());
    let agent = register_with(&mut m, "agent-1", "cpus:4;mem:1024");
    let (prod, offer) = subscribe_for_offer(&mut m, "prod").await;
    let effects = accept_ops(
        &mut m,
        &prod,
        &offer,
        vec![
            reserve("cpus(prod):2"),
            launching(vec![task_info("t", "cpus(prod):2;mem:128")]),
        ],
    )
    .unwrap();
    assert!(matches!(
        agent_messages(&effects, &agent).as_slice(),
        [master_message::Message::RunTask(_)]
    ));
    assert_eq!(
        m.allocator.used(&agent),
        Resources::parse("cpus(prod):2;mem:128").unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn unreserve_gives_the_resources_back_to_every_role() {
    let (mut m, agent, _) = with_reservation().await;
    let (_, dev_offer) = subscribe_for_offer(&mut m, "dev").await;
    assert_eq!(resources_of(&dev_offer).get_scalar("cpus"), 2.0);
    let (prod2, reserved) = subscribe_for_offer(&mut m, "prod").await;
    let effects = accept_ops(
        &mut m,
        &prod2,
        &reserved,
        vec![unreserve("cpus(prod):2;mem(prod):512")],
    )
    .unwrap();
    assert!(effects.iter().any(|e| matches!(e, Effect::Persist(w)
        if w.iter().any(|w| matches!(w, agora_store::Write::Delete { key } if key == &reservations_key(&agent))))));
    assert!(m.policy.reservations().is_empty());
    let free = m.allocator.free(&agent);
    assert_eq!(
        free,
        Resources::parse("cpus:2;mem:512").unwrap(),
        "unreserved and free"
    );
}

#[tokio::test(start_paused = true)]
async fn an_invalid_reserve_refuses_the_whole_accept_and_changes_nothing() {
    let mut m = master(config());
    let agent = register_with(&mut m, "agent-1", "cpus:4;mem:1024");
    let (prod, offer) = subscribe_for_offer(&mut m, "prod").await;
    let cases = [
        (
            reserve("cpus(prod):8"),
            "operations[0].reserve.resources[0]: cpus:8 is not among",
        ),
        (reserve("cpus(dev):1"), "operations[0].reserve.resources[0].role"),
    ];
    for (op, words) in cases {
        let err = accept_ops(
            &mut m,
            &prod,
            &offer,
            vec![op, launching(vec![task_info("t", "cpus:1")])],
        )
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with(words), "{}", err.message());
        assert!(m.take_effects().is_empty(), "nothing is sent or stored");
        assert!(
            m.offers.contains_key(&OfferId::parse(&offer.id).unwrap()),
            "the offer stays"
        );
        assert!(m.policy.reservations().is_empty());
        assert_eq!(m.allocator.offered(&agent), resources_of(&offer));
    }
}

#[tokio::test(start_paused = true)]
async fn stored_reservations_are_reapplied_when_the_agent_registers() {
    let mut m = master(config());
    let agent = AgentId::parse("agent-1").unwrap();
    m.recover_reservations(agent.clone(), Resources::parse("cpus(prod):3").unwrap());
    register_with(&mut m, "agent-1", "cpus:4;mem:1024");
    let (_, dev_offer) = subscribe_for_offer(&mut m, "dev").await;
    assert_eq!(
        resources_of(&dev_offer),
        Resources::parse("cpus:1;mem:1024").unwrap()
    );
    let roles = m.roles_json();
    let prod = roles["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["role"] == "prod")
        .unwrap();
    assert_eq!(prod["reserved"]["cpus"], 3.0);
}

#[tokio::test(start_paused = true)]
async fn state_shows_each_frameworks_shares() {
    let mut m = master(config());
    register_with(&mut m, "agent-1", "cpus:4;mem:1024");
    let (prod, offer) = subscribe_for_offer(&mut m, "prod").await;
    accept_ops(
        &mut m,
        &prod,
        &offer,
        vec![launching(vec![task_info("p", "cpus:1;mem:512")])],
    )
    .unwrap();
    let state = m.state_json();
    let fw = &state["frameworks"][0];
    assert_eq!(fw["dominant_share"], 0.5);
    assert_eq!(fw["role_shares"]["prod"], 0.5);
}

// ---------------------------------------------------------------------
// Task groups (LAUNCH_GROUP)
// ---------------------------------------------------------------------

/// A cluster with one agent and a framework with the TASK_GROUPS capability
/// (if `capable`) holding an offer of the whole agent.
async fn with_group_offer(capable: bool) -> (Master, AgentId, Caller, v1::Offer) {
    let mut m = master(config());
    let agent = register(&mut m, "", 1, vec![]);
    let mut info = framework_info(0.0);
    if capable {
        info.capabilities = vec![v1::FrameworkCapability::TaskGroups as i32];
    }
    let caller = subscribe(&mut m, info);
    m.take_effects();
    let effects = advance(&mut m, DELAY).await;
    let offer = offers(&framework_events(&effects, &caller.framework_id)).remove(0);
    (m, agent, caller, offer)
}

fn launching_group(tasks: Vec<v1::TaskInfo>) -> v1::Operation {
    v1::Operation {
        operation: Some(v1::operation::Operation::LaunchGroup(v1::LaunchGroup {
            task_infos: tasks,
        })),
    }
}

fn run_task_groups(msgs: &[master_message::Message]) -> Vec<v1::RunTaskGroup> {
    msgs.iter()
        .filter_map(|m| match m {
            master_message::Message::RunTaskGroup(g) => Some(g.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_valid_task_group_is_sent_to_its_agent_as_one_run_task_group() {
    let (mut m, agent, caller, offer) = with_group_offer(true).await;
    let group = launching_group(vec![task_info("a", "cpus:1;mem:128"), task_info("b", "cpus:1")]);
    let effects = accept_ops(&mut m, &caller, &offer, vec![group]).unwrap();
    let msgs = agent_messages(&effects, &agent);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let sent = run_task_groups(&msgs).remove(0);
    assert!(sent.group_id.starts_with("group-"), "{}", sent.group_id);
    assert_eq!(sent.framework.unwrap().id, caller.framework_id.as_str());
    let ids: Vec<(&str, &str)> = sent
        .tasks
        .iter()
        .map(|t| (t.task_id.as_str(), t.agent_id.as_str()))
        .collect();
    assert_eq!(ids, vec![("a", agent.as_str()), ("b", agent.as_str())]);
    let state = m.state_json();
    let tasks = state["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    for t in tasks {
        assert_eq!(t["state"], "TASK_STAGING");
        assert_eq!(t["group_id"], sent.group_id.as_str());
    }
}

#[tokio::test(start_paused = true)]
async fn a_task_groups_resources_are_taken_out_of_the_next_offers() {
    let (mut m, _, caller, offer) = with_group_offer(true).await;
    let group = launching_group(vec![task_info("a", "cpus:1;mem:128"), task_info("b", "cpus:1")]);
    let call = Call::Accept {
        offer_ids: vec![OfferId::parse(&offer.id).unwrap()],
        operations: vec![group],
        refuse: Duration::ZERO,
    };
    m.call(&caller, call, Instant::now()).unwrap();
    let effects = advance(&mut m, DELAY).await;
    let made = offers(&framework_events(&effects, &caller.framework_id));
    assert_eq!(
        resources_of(&made[0]),
        Resources::parse("cpus:2;mem:896;ports:[31000-31009]").unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_group_with_an_invalid_task_launches_nothing_and_errors_every_task() {
    let (mut m, agent, caller, offer) = with_group_offer(true).await;
    let mut bad = task_info("b", "cpus:1;mem:2");
    bad.container = Some(v1::ContainerInfo {
        kind: Some(v1::container_info::Kind::Docker(v1::DockerInfo {
            image: "agora-test/busybox:latest".into(),
            ..Default::default()
        })),
        ..Default::default()
    });
    let group = launching_group(vec![task_info("a", "cpus:1"), bad]);
    let effects = accept_ops(&mut m, &caller, &offer, vec![group]).unwrap();
    assert!(agent_messages(&effects, &agent).is_empty());
    let ups = updates(&framework_events(&effects, &caller.framework_id));
    let got: Vec<(&str, i32, &str)> = ups
        .iter()
        .map(|u| (u.task_id.as_str(), u.state, u.message.as_str()))
        .collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, "a");
    assert!(got[0].2.ends_with("task group refused: task b is invalid"));
    assert_eq!(got[1].0, "b");
    assert!(
        got[1]
            .2
            .starts_with("operations[0].launch_group.task_infos[1].resources.mem")
    );
    assert!(got.iter().all(|g| g.1 == TaskState::Error as i32));
    assert!(m.state_json()["tasks"].as_array().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_task_group_from_a_framework_without_the_capability_is_refused() {
    let (mut m, agent, caller, offer) = with_group_offer(false).await;
    let group = launching_group(vec![task_info("a", "cpus:1")]);
    let effects = accept_ops(&mut m, &caller, &offer, vec![group]).unwrap();
    assert!(agent_messages(&effects, &agent).is_empty());
    let ups = updates(&framework_events(&effects, &caller.framework_id));
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Error as i32);
    assert!(ups[0].message.contains("FRAMEWORK_CAPABILITY_TASK_GROUPS"));
}

#[tokio::test(start_paused = true)]
async fn killing_one_task_of_a_group_kills_every_live_task_of_the_group() {
    let (mut m, agent, caller, offer) = with_group_offer(true).await;
    let group = launching_group(vec![
        task_info("a", "cpus:1"),
        task_info("b", "cpus:1"),
        task_info("c", "cpus:1"),
    ]);
    accept_ops(&mut m, &caller, &offer, vec![group]).unwrap();
    agent_update(&mut m, &agent, &caller, "c", TaskState::Finished, b"u1");
    m.take_effects();
    let kill = Call::Kill {
        task_id: TaskId::parse("a").unwrap(),
        kill_policy: None,
    };
    m.call(&caller, kill, Instant::now()).unwrap();
    let mut killed: Vec<String> = agent_messages(&m.take_effects(), &agent)
        .into_iter()
        .filter_map(|msg| match msg {
            master_message::Message::KillTask(k) => Some(k.task_id),
            _ => None,
        })
        .collect();
    killed.sort();
    assert_eq!(killed, vec!["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn a_re_registering_agent_keeps_its_tasks_in_their_group() {
    let (mut m, agent, caller, offer) = with_group_offer(true).await;
    accept_ops(
        &mut m,
        &caller,
        &offer,
        vec![launching_group(vec![task_info("a", "cpus:1")])],
    )
    .unwrap();
    let group_id = m.state_json()["tasks"][0]["group_id"].clone();
    let reported = v1::Task {
        info: Some(task_info("a", "cpus:1")),
        framework_id: caller.framework_id.to_string(),
        status: Some(v1::TaskStatus {
            task_id: "a".into(),
            state: TaskState::Running as i32,
            ..Default::default()
        }),
        group_id: String::new(),
    };
    register(&mut m, agent.as_str(), 2, vec![reported]);
    let state = m.state_json();
    assert_eq!(state["tasks"][0]["state"], "TASK_RUNNING");
    assert_eq!(state["tasks"][0]["group_id"], group_id);
}

/// A fresh master (as after a restart) with a framework, and an agent
/// re-registering with the running tasks `a` and `b` of pod `pod-1` and a
/// single task `c`.
fn restarted_master_with_a_pod() -> (Master, AgentId, Caller) {
    let mut m = master(config());
    let caller = subscribe(&mut m, framework_info(0.0));
    let reported = |id: &str, group: &str| v1::Task {
        info: Some(task_info(id, "cpus:1")),
        framework_id: caller.framework_id.to_string(),
        status: Some(v1::TaskStatus {
            task_id: id.into(),
            state: TaskState::Running as i32,
            ..Default::default()
        }),
        group_id: group.into(),
    };
    let tasks = vec![reported("a", "pod-1"), reported("b", "pod-1"), reported("c", "")];
    let agent = register(&mut m, AgentId::generate("agent").as_str(), 1, tasks);
    m.take_effects();
    (m, agent, caller)
}

fn task_json_of(state: &Value, id: &str) -> Value {
    state["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .cloned()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_restarted_master_learns_task_groups_from_re_registering_agents() {
    let (m, _, _) = restarted_master_with_a_pod();
    let state = m.state_json();
    assert_eq!(task_json_of(&state, "a")["group_id"], "pod-1");
    assert_eq!(task_json_of(&state, "b")["group_id"], "pod-1");
    assert!(task_json_of(&state, "c").get("group_id").is_none());
}

#[tokio::test(start_paused = true)]
async fn after_a_master_restart_killing_one_task_of_a_pod_kills_the_whole_pod() {
    let (mut m, agent, caller) = restarted_master_with_a_pod();
    let kill = Call::Kill {
        task_id: TaskId::parse("a").unwrap(),
        kill_policy: None,
    };
    m.call(&caller, kill, Instant::now()).unwrap();
    let mut killed: Vec<String> = agent_messages(&m.take_effects(), &agent)
        .into_iter()
        .filter_map(|msg| match msg {
            master_message::Message::KillTask(k) => Some(k.task_id),
            _ => None,
        })
        .collect();
    killed.sort();
    assert_eq!(killed, vec!["a", "b"]);
}

fn reconcile_task(task: &str, agent: Option<&str>) -> ReconcileTask {
    ReconcileTask {
        task_id: TaskId::parse(task).unwrap(),
        agent_id: agent.map(|a| AgentId::parse(a).unwrap()),
    }
}

fn partition_aware_framework() -> v1::FrameworkInfo {
    let mut info = framework_info(3600.0);
    info.capabilities = vec![v1::FrameworkCapability::PartitionAware as i32];
    info
}

/// A restarted master that read agent `agent-1` from the registry and has a
/// re-subscribed partition-aware framework asking about task `t1` on it.
fn restarted_with_recovering_agent(c: MasterConfig) -> (Master, Caller) {
    let mut m = master(c);
    m.recover_agent(agent_info("agent-1"), Instant::now());
    let caller = subscribe(&mut m, partition_aware_framework());
    m.take_effects();
    let ask = Call::Reconcile {
        tasks: vec![reconcile_task("t1", Some("agent-1"))],
    };
    m.call(&caller, ask, Instant::now()).unwrap();
    (m, caller)
}

fn running_task(caller: &Caller, id: &str) -> v1::Task {
    v1::Task {
        info: Some(task_info(id, "cpus:1")),
        framework_id: caller.framework_id.to_string(),
        status: Some(v1::TaskStatus {
            task_id: id.into(),
            state: TaskState::Running as i32,
            ..Default::default()
        }),
        group_id: String::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn reconciling_a_task_on_a_recovering_agent_gets_no_answer_yet() {
    let (mut m, caller) = restarted_with_recovering_agent(config());
    let effects = m.take_effects();
    assert!(updates(&framework_events(&effects, &caller.framework_id)).is_empty());
    let ask_anywhere = Call::Reconcile {
        tasks: vec![reconcile_task("t2", None)],
    };
    m.call(&caller, ask_anywhere, Instant::now()).unwrap();
    assert!(updates(&framework_events(&m.take_effects(), &caller.framework_id)).is_empty());
    let effects = advance(&mut m, Duration::from_secs(60)).await;
    assert!(updates(&framework_events(&effects, &caller.framework_id)).is_empty());
    assert!(offers(&framework_events(&effects, &caller.framework_id)).is_empty());
    assert_eq!(m.state_json()["agents"][0]["status"], "recovering");
}

#[tokio::test(start_paused = true)]
async fn a_recovering_agents_task_is_answered_with_its_real_state_once_the_agent_re_registers() {
    let (mut m, caller) = restarted_with_recovering_agent(config());
    m.take_effects();
    register(&mut m, "agent-1", 1, vec![running_task(&caller, "t1")]);
    let ups = updates(&framework_events(&m.take_effects(), &caller.framework_id));
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].task_id, "t1");
    assert_eq!(ups[0].state, TaskState::Running as i32);
    assert_eq!(ups[0].agent_id, "agent-1");
    assert_eq!(ups[0].reason, StatusReason::ReasonReconciliation as i32);
    assert_eq!(m.state_json()["agents"][0]["status"], "active");
}

#[tokio::test(start_paused = true)]
async fn a_recovering_agents_task_is_unreachable_after_the_agent_reregister_timeout() {
    let mut c = config();
    c.agent_reregister_timeout = Duration::from_secs(600);
    let (mut m, caller) = restarted_with_recovering_agent(c);
    m.take_effects();
    let effects = advance(&mut m, Duration::from_secs(599)).await;
    assert!(updates(&framework_events(&effects, &caller.framework_id)).is_empty());
    let effects = advance(&mut m, Duration::from_secs(2)).await;
    let ups = updates(&framework_events(&effects, &caller.framework_id));
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].task_id, "t1");
    assert_eq!(ups[0].state, TaskState::Unreachable as i32);
    assert_eq!(m.state_json()["agents"][0]["status"], "unreachable");
}

#[tokio::test(start_paused = true)]
async fn a_task_its_registered_agent_does_not_have_is_gone() {
    let mut m = master(config());
    let agent = register(&mut m, "agent-1", 1, vec![]);
    let caller = subscribe(&mut m, partition_aware_framework());
    m.take_effects();
    let ask = Call::Reconcile {
        tasks: vec![reconcile_task("t1", Some(agent.as_str()))],
    };
    m.call(&caller, ask, Instant::now()).unwrap();
    let ups = updates(&framework_events(&m.take_effects(), &caller.framework_id));
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Gone as i32);
    assert_eq!(ups[0].agent_id, "agent-1");
}

#[test]
fn the_agent_id_of_a_reconciled_task_passes_through_grpc() {
    let req = v1::ReconcileRequest {
        caller: None,
        tasks: vec![
            v1::ReconcileTask {
                task_id: "t1".into(),
                agent_id: "agent-1".into(),
            },
            v1::ReconcileTask {
                task_id: "t2".into(),
                agent_id: String::new(),
            },
        ],
    };
    let Call::Reconcile { tasks } = crate::grpc::reconcile_call(&req).unwrap() else {
        panic!("not a reconcile call");
    };
    assert_eq!(
        tasks,
        vec![reconcile_task("t1", Some("agent-1")), reconcile_task("t2", None)]
    );
}

fn agent_writes(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Persist(w) if w.iter().any(|w| matches!(w, Write::Put { key, .. } if key.contains("agent-1")))))
        .count()
}

#[test]
fn an_agent_re_registering_unchanged_after_a_failover_writes_nothing() {
    let mut m = master(config());
    m.recover_agent(agent_info("agent-1"), Instant::now());
    m.take_effects();
    register(&mut m, "agent-1", 1, vec![]);
    assert_eq!(agent_writes(&m.take_effects()), 0);
}

#[test]
fn an_agent_reconnecting_unchanged_writes_nothing() {
    let mut m = master(config());
    register(&mut m, "agent-1", 1, vec![]);
    assert_eq!(
        agent_writes(&m.take_effects()),
        1,
        "the first registration is written"
    );
    register(&mut m, "agent-1", 2, vec![]);
    assert_eq!(agent_writes(&m.take_effects()), 0);
}

#[test]
fn an_agent_re_registering_with_other_resources_is_written() {
    let mut m = master(config());
    m.recover_agent(agent_info("agent-1"), Instant::now());
    m.take_effects();
    register_with(&mut m, "agent-1", "cpus:8;mem:2048");
    assert_eq!(agent_writes(&m.take_effects()), 1);
}
