//! Offer filters: DECLINE with refuse_seconds, SUPPRESS and REVIVE.

use std::time::Duration;

use agora_proto::v1;
use tokio::time::Instant;

use crate::harness::*;

#[tokio::test]
async fn a_declined_agent_is_not_offered_again_before_refuse_seconds() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    let declined_at = Instant::now();
    fw.decline(&[&offers[0]], 3.0).await;

    assert!(
        fw.offers_within(Duration::from_millis(2500)).await.is_none(),
        "offered again before refuse_seconds expired"
    );
    let again = fw.offers().await;
    assert_eq!(again[0].agent_id, offers[0].agent_id);
    assert!(declined_at.elapsed() >= Duration::from_secs(3));
}

#[tokio::test]
async fn a_decline_with_zero_refuse_seconds_is_offered_again_right_away() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    fw.decline(&[&offers[0]], 0.0).await;
    assert!(fw.offers_within(Duration::from_secs(2)).await.is_some());
}

#[tokio::test]
async fn a_suppressed_framework_gets_no_offers_until_it_revives() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = Framework::subscribe(cluster.master.addr, framework_info("e2e", 0.0)).await;
    let offers = fw.offers().await;
    fw.client
        .suppress(v1::SuppressRequest {
            caller: fw.caller(),
            roles: vec![],
        })
        .await
        .expect("suppress");
    fw.decline(&[&offers[0]], 0.0).await;
    assert!(
        fw.offers_within(Duration::from_secs(2)).await.is_none(),
        "offered while suppressed"
    );

    fw.client
        .revive(v1::ReviveRequest {
            caller: fw.caller(),
            roles: vec![],
        })
        .await
        .expect("revive");
    assert!(fw.offers_within(SOON).await.is_some(), "no offer after REVIVE");
}

#[tokio::test]
async fn an_agent_is_offered_to_one_framework_at_a_time() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut a = Framework::subscribe(cluster.master.addr, framework_info("a", 0.0)).await;
    let offers = a.offers().await;
    let mut b = Framework::subscribe(cluster.master.addr, framework_info("b", 0.0)).await;
    assert!(
        b.offers_within(Duration::from_secs(1)).await.is_none(),
        "the same resources were offered twice"
    );
    // Once `a` declines, `b` gets them.
    a.decline(&[&offers[0]], 30.0).await;
    let got = b.offers().await;
    assert_eq!(got[0].agent_id, offers[0].agent_id);
}
