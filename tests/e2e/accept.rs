//! ACCEPT is validated completely before anything happens; every refusal is a
//! status update with a reason and a message naming the problem.

use std::time::Duration;

use agora_proto::v1::{self, StatusReason, TaskState};

use crate::harness::*;

#[tokio::test]
async fn a_task_larger_than_its_offer_is_refused_and_nothing_launches() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    // Two tasks: the first fits, the second asks for more cpus than the agent has.
    fw.launch(
        &[&offers[0]],
        vec![
            shell_task("small", "sleep 300", 1.0, 32.0),
            shell_task("huge", "sleep 300", 64.0, 32.0),
        ],
    )
    .await;

    let huge = fw.update("huge", TaskState::Error).await;
    assert_eq!(huge.reason(), StatusReason::ReasonResourcesInsufficient);
    assert!(
        huge.message.contains("cpus"),
        "message names the resource: {}",
        huge.message
    );
    // The valid task in the same accept still launches.
    fw.update("small", TaskState::Running).await;
}

#[tokio::test]
async fn ports_outside_the_offer_are_refused() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    let mut task = shell_task("t1", "true", 0.1, 32.0);
    task.resources = agora_proto::Resources::new()
        .scalar("cpus", 0.1)
        .with_ranges("ports", [(80, 80)])
        .to_proto();
    fw.launch(&[&offers[0]], vec![task]).await;
    let st = fw.update("t1", TaskState::Error).await;
    assert_eq!(st.reason(), StatusReason::ReasonResourcesInsufficient);
    assert!(st.message.contains("ports"), "{}", st.message);
}

#[tokio::test]
async fn two_tasks_with_one_id_in_an_accept_are_refused() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    fw.launch(
        &[&offers[0]],
        vec![
            shell_task("dup", "sleep 300", 0.1, 32.0),
            shell_task("dup", "sleep 300", 0.1, 32.0),
        ],
    )
    .await;
    // Exactly one of them runs; the other is an error naming the duplicate id.
    let first = fw.next_update("dup", SOON).await.expect("an update for dup");
    fw.ack(&first).await;
    let second = fw
        .next_update("dup", SOON)
        .await
        .expect("a second update for dup");
    let states = [first.state(), second.state()];
    let error = [&first, &second]
        .into_iter()
        .find(|s| s.state() == TaskState::Error)
        .cloned();
    let error = error.unwrap_or_else(|| panic!("no TASK_ERROR among {states:?}"));
    assert_eq!(error.reason(), StatusReason::ReasonTaskInvalid);
    assert!(error.message.contains("dup"), "{}", error.message);
}

#[tokio::test]
async fn reusing_the_id_of_a_live_task_is_refused() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    fw.launch(&[&offers[0]], vec![shell_task("t1", "sleep 300", 0.1, 32.0)])
        .await;
    fw.update("t1", TaskState::Running).await;

    let offers = fw.offers().await;
    fw.launch(&[&offers[0]], vec![shell_task("t1", "sleep 300", 0.1, 32.0)])
        .await;
    let st = fw.update("t1", TaskState::Error).await;
    assert_eq!(st.reason(), StatusReason::ReasonTaskInvalid);
}

#[tokio::test]
async fn accepting_another_frameworks_offer_is_refused() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut a = Framework::subscribe(cluster.master.addr, framework_info("a", 0.0)).await;
    let offers = a.offers().await;
    let mut b = Framework::subscribe(cluster.master.addr, framework_info("b", 0.0)).await;

    b.launch(&[&offers[0]], vec![shell_task("stolen", "true", 0.1, 32.0)])
        .await;
    let st = b.update("stolen", TaskState::Error).await;
    assert_eq!(st.reason(), StatusReason::ReasonInvalidOffers);
    assert!(
        st.message.contains(&offers[0].id),
        "message names the offer: {}",
        st.message
    );
    // The rightful holder can still use it.
    a.launch(&[&offers[0]], vec![shell_task("mine", "true", 0.1, 32.0)])
        .await;
    a.update("mine", TaskState::Finished).await;
}

#[tokio::test]
async fn accepting_a_rescinded_offer_drops_the_task() {
    let spec = ClusterSpec {
        master_args: vec!["--offer-timeout".into(), "1s".into()],
        ..Default::default()
    };
    let cluster = Cluster::start(spec).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    let offer_id = offers[0].id.clone();
    let rescinded = fw
        .wait_for(SOON, |e| match &e.event {
            Some(v1::event::Event::Rescind(r)) if r.offer_id == offer_id => Some(()),
            _ => None,
        })
        .await;
    assert!(
        rescinded.is_some(),
        "the held offer was not rescinded after --offer-timeout"
    );

    fw.launch(&[&offers[0]], vec![shell_task("late", "true", 0.1, 32.0)])
        .await;
    let st = fw.update("late", TaskState::Dropped).await;
    assert_eq!(st.reason(), StatusReason::ReasonInvalidOffers);
}

#[tokio::test]
async fn resources_an_accept_leaves_unused_are_offered_again_at_once() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    fw.launch(&[&offers[0]], vec![shell_task("t1", "sleep 300", 1.0, 32.0)])
        .await;
    // refuse_seconds 0 in the accept: the remaining 3 cpus come straight back.
    let again = fw
        .offers_within(Duration::from_secs(3))
        .await
        .expect("leftovers re-offered");
    let cpus: f64 = again
        .iter()
        .map(|o| {
            agora_proto::Resources::from_proto(&o.resources)
                .expect("valid")
                .get_scalar("cpus")
        })
        .sum();
    assert_eq!(cpus, 3.0);
}
