//! Framework failover: re-subscribing within failover_timeout keeps the
//! tasks; missing it kills them. Unacknowledged updates are resent.

use std::time::Duration;

use agora_proto::v1::{self, TaskState};

use crate::harness::*;

#[tokio::test]
async fn a_framework_that_resubscribes_in_time_keeps_its_tasks() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 60.0)).await;
    let offers = fw.offers().await;
    fw.launch(
        &[&offers[0]],
        vec![shell_task("t1", "echo $$ > pid; exec sleep 300", 0.1, 32.0)],
    )
    .await;
    fw.update("t1", TaskState::Running).await;
    let pid = task_pid(&cluster, "t1").await;
    let id = fw.id.clone();
    fw.disconnect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut info = framework_info("e2e", 60.0);
    info.id = id.clone();
    let mut fw = Framework::subscribe(cluster.master.addr, info).await;
    assert_eq!(fw.id, id);
    fw.reconcile(&["t1"]).await;
    let st = fw.next_update("t1", SOON).await.expect("reconciliation answer");
    assert_eq!(st.state(), TaskState::Running);
    assert!(pid_alive(pid), "task was killed during the framework's failover");
}

#[tokio::test]
async fn a_framework_that_misses_its_failover_timeout_loses_its_tasks() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 1.0)).await;
    let offers = fw.offers().await;
    fw.launch(
        &[&offers[0]],
        vec![shell_task("t1", "echo $$ > pid; exec sleep 300", 0.1, 32.0)],
    )
    .await;
    fw.update("t1", TaskState::Running).await;
    let pid = task_pid(&cluster, "t1").await;
    let id = fw.id.clone();
    fw.disconnect();

    let deadline = tokio::time::Instant::now() + SOON;
    while pid_alive(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "task survived its framework's removal"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut info = framework_info("e2e", 1.0);
    info.id = id;
    let err = Framework::try_subscribe(cluster.master.addr, info)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    // Its resources are back in the pool for others.
    let mut other = Framework::subscribe(cluster.master.addr, framework_info("other", 0.0)).await;
    let mut offered = 0.0;
    while offered < 4.0 {
        let offers = other
            .offers_within(SOON)
            .await
            .expect("the killed task's cpus were never offered");
        offered += offers
            .iter()
            .map(|o| {
                agora_proto::Resources::from_proto(&o.resources)
                    .expect("valid")
                    .get_scalar("cpus")
            })
            .sum::<f64>();
    }
    assert_eq!(offered, 4.0);
}

#[tokio::test]
async fn an_unacknowledged_update_is_resent_until_acknowledged() {
    let spec = ClusterSpec {
        agent_args: vec!["--status-update-retry".into(), "300ms".into()],
        ..Default::default()
    };
    let cluster = Cluster::start(spec).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    fw.launch(&[&offers[0]], vec![shell_task("t1", "exec sleep 300", 0.1, 32.0)])
        .await;
    // Skip to RUNNING, then do not acknowledge it.
    let running = loop {
        let st = fw.next_update("t1", SOON).await.expect("update");
        if st.state() == TaskState::Running {
            break st;
        }
        fw.ack(&st).await;
    };
    let again = fw.next_update("t1", SOON).await.expect("RUNNING was not resent");
    assert_eq!(again.state(), TaskState::Running);
    assert_eq!(again.uuid, running.uuid, "the resend is the same update");
    fw.ack(&again).await;
    assert!(
        fw.next_update("t1", Duration::from_secs(2)).await.is_none(),
        "update resent after it was acknowledged"
    );
}

#[tokio::test]
async fn an_update_sent_while_the_framework_was_away_arrives_after_it_resubscribes() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 60.0)).await;
    let offers = fw.offers().await;
    fw.launch(&[&offers[0]], vec![shell_task("t1", "sleep 1", 0.1, 32.0)])
        .await;
    fw.update("t1", TaskState::Running).await;
    let id = fw.id.clone();
    fw.disconnect();
    // The task finishes while the framework is away.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut info = framework_info("e2e", 60.0);
    info.id = id;
    let mut fw = Framework::subscribe(cluster.master.addr, info).await;
    fw.update("t1", TaskState::Finished).await;
}

#[tokio::test]
async fn teardown_kills_the_frameworks_tasks() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 600.0)).await;
    let offers = fw.offers().await;
    fw.launch(
        &[&offers[0]],
        vec![shell_task("t1", "echo $$ > pid; exec sleep 300", 0.1, 32.0)],
    )
    .await;
    fw.update("t1", TaskState::Running).await;
    let pid = task_pid(&cluster, "t1").await;
    fw.client
        .teardown(v1::TeardownRequest { caller: fw.caller() })
        .await
        .expect("teardown");
    let deadline = tokio::time::Instant::now() + SOON;
    while pid_alive(pid) {
        assert!(tokio::time::Instant::now() < deadline, "task survived TEARDOWN");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
