//! Bad calls get a clear status naming the field; the master keeps serving.

use agora_proto::v1;
use agora_proto::v1::agent_link_client::AgentLinkClient;
use tonic::Code;

use crate::harness::*;

struct Case {
    what: &'static str,
    code: Code,
    /// A word the error message must contain (the field or the problem).
    mentions: &'static str,
    result: Result<(), tonic::Status>,
}

fn check(cases: Vec<Case>) {
    let mut failures = vec![];
    for c in cases {
        match c.result {
            Ok(()) => failures.push(format!("{}: accepted", c.what)),
            Err(s) if s.code() != c.code => failures.push(format!(
                "{}: code {:?}, wanted {:?} ({})",
                c.what,
                s.code(),
                c.code,
                s.message()
            )),
            Err(s) if !s.message().to_lowercase().contains(c.mentions) => failures.push(format!(
                "{}: message {:?} does not mention {:?}",
                c.what,
                s.message(),
                c.mentions
            )),
            Err(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "bad calls mishandled:\n{}",
        failures.join("\n")
    );
}

async fn subscribe_error(
    addr: std::net::SocketAddr,
    framework: Option<v1::FrameworkInfo>,
) -> Result<(), tonic::Status> {
    let mut client = scheduler_client(addr).await;
    let mut stream = client
        .subscribe(v1::SubscribeRequest {
            framework,
            suppressed_roles: vec![],
        })
        .await?
        .into_inner();
    // Some servers report the error as the first stream item.
    stream.message().await?;
    Ok(())
}

#[tokio::test]
async fn bad_scheduler_calls_are_refused_with_the_field_named() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let addr = cluster.master.addr;
    let mut fw = Framework::subscribe(addr, framework_info("good", 0.0)).await;
    let mut c = fw.client.clone();
    let good = fw.caller();
    let stale = Some(v1::Caller {
        framework_id: fw.id.clone(),
        stream_id: "stream-old".into(),
    });
    let unknown = Some(v1::Caller {
        framework_id: "fw-unknown".into(),
        stream_id: fw.stream_id.clone(),
    });
    let info = |f: &dyn Fn(&mut v1::FrameworkInfo)| {
        let mut i = framework_info("x", 0.0);
        f(&mut i);
        Some(i)
    };
    let ok = |r: Result<tonic::Response<v1::CallResponse>, tonic::Status>| r.map(|_| ());
    let launch = |caller: Option<v1::Caller>, offer_ids: Vec<String>| v1::AcceptRequest {
        caller,
        offer_ids,
        operations: vec![],
        filters: None,
    };

    let cases = vec![
        Case {
            what: "subscribe without framework",
            code: Code::InvalidArgument,
            mentions: "framework",
            result: subscribe_error(addr, None).await,
        },
        Case {
            what: "subscribe without name",
            code: Code::InvalidArgument,
            mentions: "name",
            result: subscribe_error(addr, info(&|i| i.name.clear())).await,
        },
        Case {
            what: "negative failover timeout",
            code: Code::InvalidArgument,
            mentions: "failover_timeout",
            result: subscribe_error(addr, info(&|i| i.failover_timeout_seconds = -1.0)).await,
        },
        Case {
            what: "NaN failover timeout",
            code: Code::InvalidArgument,
            mentions: "failover_timeout",
            result: subscribe_error(addr, info(&|i| i.failover_timeout_seconds = f64::NAN)).await,
        },
        Case {
            what: "malformed framework id",
            code: Code::InvalidArgument,
            mentions: "id",
            result: subscribe_error(addr, info(&|i| i.id = "a/b".into())).await,
        },
        Case {
            what: "unknown framework id",
            code: Code::NotFound,
            mentions: "fw-nope",
            result: subscribe_error(addr, info(&|i| i.id = "fw-nope".into())).await,
        },
        Case {
            what: "accept without caller",
            code: Code::InvalidArgument,
            mentions: "caller",
            result: ok(c.accept(launch(None, vec!["o".into()])).await),
        },
        Case {
            what: "accept with empty framework id",
            code: Code::InvalidArgument,
            mentions: "framework_id",
            result: ok(c
                .accept(launch(
                    Some(v1::Caller {
                        framework_id: String::new(),
                        stream_id: "s".into(),
                    }),
                    vec!["o".into()],
                ))
                .await),
        },
        Case {
            what: "accept from unknown framework",
            code: Code::NotFound,
            mentions: "fw-unknown",
            result: ok(c.accept(launch(unknown.clone(), vec!["o".into()])).await),
        },
        Case {
            what: "accept on a stale stream",
            code: Code::FailedPrecondition,
            mentions: "stream",
            result: ok(c.accept(launch(stale.clone(), vec!["o".into()])).await),
        },
        Case {
            what: "accept with no offers",
            code: Code::InvalidArgument,
            mentions: "offer_ids",
            result: ok(c.accept(launch(good.clone(), vec![])).await),
        },
        Case {
            what: "accept with malformed offer id",
            code: Code::InvalidArgument,
            mentions: "offer_ids",
            result: ok(c.accept(launch(good.clone(), vec!["".into()])).await),
        },
        Case {
            what: "decline with negative refuse_seconds",
            code: Code::InvalidArgument,
            mentions: "refuse_seconds",
            result: ok(c
                .decline(v1::DeclineRequest {
                    caller: good.clone(),
                    offer_ids: vec!["o".into()],
                    filters: Some(v1::Filters {
                        refuse_seconds: Some(-1.0),
                    }),
                })
                .await),
        },
        Case {
            what: "decline on a stale stream",
            code: Code::FailedPrecondition,
            mentions: "stream",
            result: ok(c
                .decline(v1::DeclineRequest {
                    caller: stale.clone(),
                    offer_ids: vec!["o".into()],
                    filters: None,
                })
                .await),
        },
        Case {
            what: "kill without task id",
            code: Code::InvalidArgument,
            mentions: "task_id",
            result: ok(c
                .kill(v1::KillRequest {
                    caller: good.clone(),
                    ..Default::default()
                })
                .await),
        },
        Case {
            what: "acknowledge without uuid",
            code: Code::InvalidArgument,
            mentions: "uuid",
            result: ok(c
                .acknowledge(v1::AcknowledgeRequest {
                    caller: good.clone(),
                    agent_id: "a".into(),
                    task_id: "t".into(),
                    uuid: vec![],
                })
                .await),
        },
        Case {
            what: "reconcile a malformed task id",
            code: Code::InvalidArgument,
            mentions: "task_id",
            result: ok(c
                .reconcile(v1::ReconcileRequest {
                    caller: good.clone(),
                    tasks: vec![v1::ReconcileTask {
                        task_id: "a b".into(),
                        agent_id: String::new(),
                    }],
                })
                .await),
        },
        Case {
            what: "message to an unknown agent",
            code: Code::NotFound,
            mentions: "agent",
            result: ok(c
                .message(v1::MessageRequest {
                    caller: good.clone(),
                    agent_id: "agent-nope".into(),
                    task_id: "t".into(),
                    data: vec![],
                })
                .await),
        },
        Case {
            what: "revive from unknown framework",
            code: Code::NotFound,
            mentions: "fw-unknown",
            result: ok(c
                .revive(v1::ReviveRequest {
                    caller: unknown.clone(),
                    roles: vec![],
                })
                .await),
        },
        Case {
            what: "teardown on a stale stream",
            code: Code::FailedPrecondition,
            mentions: "stream",
            result: ok(c
                .teardown(v1::TeardownRequest {
                    caller: stale.clone(),
                })
                .await),
        },
    ];
    check(cases);

    // Nothing above disturbed the good framework: it still gets offers.
    let offers = fw.offers().await;
    assert!(!offers.is_empty());
}

#[tokio::test]
async fn an_agent_stream_that_does_not_start_with_register_is_refused() {
    let cluster = Cluster::start(ClusterSpec {
        agents: 0,
        ..Default::default()
    })
    .await;
    let mut client = AgentLinkClient::connect(cluster.master_url())
        .await
        .expect("connect");
    let first = v1::AgentMessage {
        message: Some(v1::agent_message::Message::Heartbeat(v1::AgentHeartbeat {})),
    };
    let result = match client.attach(tokio_stream::iter(vec![first])).await {
        Err(s) => Err(s),
        Ok(resp) => resp.into_inner().message().await.map(|_| ()),
    };
    check(vec![Case {
        what: "heartbeat before register",
        code: Code::InvalidArgument,
        mentions: "register",
        result: result.and(Err(tonic::Status::ok("stream ended"))),
    }]);
}

#[tokio::test]
async fn an_agent_registering_without_hostname_or_with_bad_resources_is_refused() {
    let cluster = Cluster::start(ClusterSpec {
        agents: 0,
        ..Default::default()
    })
    .await;
    let register = |agent: v1::AgentInfo| v1::AgentMessage {
        message: Some(v1::agent_message::Message::Register(v1::Register {
            agent: Some(agent),
            tasks: vec![],
            frameworks: vec![],
        })),
    };
    let mut cases = vec![];
    for (what, mentions, agent) in [
        (
            "register without hostname",
            "hostname",
            v1::AgentInfo {
                resources: agora_proto::Resources::new().scalar("cpus", 1.0).to_proto(),
                ..Default::default()
            },
        ),
        (
            "register with a NaN resource",
            "cpus",
            v1::AgentInfo {
                hostname: "h".into(),
                resources: vec![v1::Resource {
                    name: "cpus".into(),
                    value: Some(v1::resource::Value::Scalar(f64::NAN)),
                    role: String::new(),
                }],
                ..Default::default()
            },
        ),
    ] {
        let mut client = AgentLinkClient::connect(cluster.master_url())
            .await
            .expect("connect");
        let result = match client.attach(tokio_stream::iter(vec![register(agent)])).await {
            Err(s) => Err(s),
            Ok(resp) => resp.into_inner().message().await.map(|_| ()),
        };
        cases.push(Case {
            what,
            code: Code::InvalidArgument,
            mentions,
            result,
        });
    }
    check(cases);
}
