//! Resource usage reported by agents: what `/state` and `/metrics` show of it.

use super::*;

const DELAY: Duration = Duration::from_millis(5);

fn master() -> Master {
    let mut c = MasterConfig::new("127.0.0.1:0".parse().unwrap(), "unused".into());
    c.allocation_delay = DELAY;
    c.framework_heartbeat_interval = Duration::from_secs(3600);
    Master::new(c, "master-1".into(), Metrics::new(), Instant::now())
}

/// A master with one agent running task `t1` (cpus:1;mem:128) for one framework.
async fn with_running_task() -> (Master, AgentId, FrameworkId) {
    let mut m = master();
    let (tx, _rx) = mpsc::unbounded_channel();
    let register = v1::Register {
        agent: Some(v1::AgentInfo {
            hostname: "host-1".into(),
            resources: Resources::parse("cpus:4;mem:1024").unwrap().to_proto(),
            ..Default::default()
        }),
        tasks: vec![],
        frameworks: vec![],
    };
    let agent = m.register_agent(register, 1, tx, Instant::now()).unwrap();
    let (ftx, _frx) = mpsc::unbounded_channel();
    let info = v1::FrameworkInfo {
        name: "fw".into(),
        ..Default::default()
    };
    let (framework_id, stream_id) = m.subscribe(info, vec![], ftx, Instant::now()).unwrap();
    m.take_effects();
    tokio::time::advance(DELAY).await;
    m.tick(Instant::now());
    let offer = m
        .take_effects()
        .into_iter()
        .find_map(|e| match e {
            Effect::ToFramework(_, event::Event::Offers(o)) => o.offers.into_iter().next(),
            _ => None,
        })
        .unwrap();
    let task = v1::TaskInfo {
        name: "t1".into(),
        task_id: "t1".into(),
        resources: Resources::parse("cpus:1;mem:128").unwrap().to_proto(),
        command: Some(v1::CommandInfo {
            command: Some(v1::command_info::Command::Shell("sleep 100".into())),
            ..Default::default()
        }),
        ..Default::default()
    };
    let caller = Caller {
        framework_id: framework_id.clone(),
        stream_id,
    };
    let call = Call::Accept {
        offer_ids: vec![OfferId::parse(&offer.id).unwrap()],
        operations: vec![v1::Operation {
            operation: Some(v1::operation::Operation::Launch(v1::Launch {
                task_infos: vec![task],
            })),
        }],
        refuse: Duration::ZERO,
    };
    m.call(&caller, call, Instant::now()).unwrap();
    m.take_effects();
    (m, agent, framework_id)
}

fn report(m: &mut Master, agent: &AgentId, framework: &FrameworkId, cpus: f64, mem: f64) {
    let usage = v1::ResourceUsage {
        host: Some(v1::HostUsage {
            cpus_used: 2.5,
            mem_used_mib: 3000.0,
            cpus_total: 8.0,
            mem_total_mib: 16000.0,
        }),
        tasks: vec![v1::TaskUsage {
            framework_id: framework.to_string(),
            task_id: "t1".into(),
            cpus_used: cpus,
            mem_used_mib: mem,
            cpus_limit: None,
            mem_limit_mib: None,
        }],
        timestamp: 1000.0,
    };
    m.agent_message(agent, 1, v1::agent_message::Message::Usage(usage), Instant::now());
}

fn finish(m: &mut Master, agent: &AgentId, framework: &FrameworkId) {
    let u = v1::StatusUpdate {
        latest_state: TaskState::Finished as i32,
        framework_id: framework.to_string(),
        status: Some(v1::TaskStatus {
            task_id: "t1".into(),
            state: TaskState::Finished as i32,
            source: StatusSource::Agent as i32,
            uuid: vec![1],
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
async fn state_shows_an_agents_usage_next_to_its_allocation() {
    let (mut m, agent, framework) = with_running_task().await;
    report(&mut m, &agent, &framework, 0.75, 200.0);
    let state = m.state_json();
    let a = &state["agents"][0];
    assert_eq!(a["used"]["cpus"], json!(1.0), "allocated");
    assert_eq!(a["usage"]["cpus_used"], json!(0.75), "actually used");
    assert_eq!(a["usage"]["mem_used_mib"], json!(200.0));
    assert_eq!(a["usage"]["host"]["cpus_total"], json!(8.0));
    assert_eq!(a["usage"]["host"]["mem_used_mib"], json!(3000.0));
}

#[tokio::test(start_paused = true)]
async fn state_shows_each_tasks_usage_or_null_before_a_sample() {
    let (mut m, agent, framework) = with_running_task().await;
    assert_eq!(m.state_json()["tasks"][0]["usage"], Value::Null);
    assert_eq!(m.state_json()["agents"][0]["usage"], Value::Null);
    report(&mut m, &agent, &framework, 0.5, 64.0);
    let task = &m.state_json()["tasks"][0];
    assert_eq!(task["usage"], json!({"cpus_used": 0.5, "mem_used_mib": 64.0}));
}

#[tokio::test(start_paused = true)]
async fn metrics_show_allocated_and_used_per_agent_and_usage_per_task() {
    let (mut m, agent, framework) = with_running_task().await;
    report(&mut m, &agent, &framework, 0.75, 200.0);
    m.refresh_gauges();
    let text = m.metrics.render();
    let agent_label = format!("agent_id=\"{agent}\"");
    for line in [
        format!("agora_master_agent_cpus_used{{{agent_label}}} 0.75"),
        format!("agora_master_agent_mem_used_mib{{{agent_label}}} 200.0"),
        format!("agora_master_agent_cpus_allocated{{{agent_label}}} 1.0"),
        format!("agora_master_agent_mem_allocated_mib{{{agent_label}}} 128.0"),
        format!("agora_master_task_cpus_used{{framework_id=\"{framework}\",task_id=\"t1\"}} 0.75"),
    ] {
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_ended_tasks_usage_series_is_removed() {
    let (mut m, agent, framework) = with_running_task().await;
    report(&mut m, &agent, &framework, 0.75, 200.0);
    m.refresh_gauges();
    assert!(m.metrics.render().contains("task_id=\"t1\""));
    finish(&mut m, &agent, &framework);
    m.refresh_gauges();
    assert!(!m.metrics.render().contains("task_id=\"t1\""));
    assert_eq!(m.state_json()["tasks"][0]["usage"], Value::Null);
}

#[tokio::test(start_paused = true)]
async fn nonsense_figures_from_an_agent_read_as_zero() {
    let (mut m, agent, framework) = with_running_task().await;
    report(&mut m, &agent, &framework, f64::NAN, -5.0);
    let task = &m.state_json()["tasks"][0];
    assert_eq!(task["usage"], json!({"cpus_used": 0.0, "mem_used_mib": 0.0}));
}
