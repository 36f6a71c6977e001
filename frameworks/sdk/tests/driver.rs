//! The driver against a scripted master: subscription, calls, updates,
//! re-subscription, failure detection and shutdown.

mod support;

use std::sync::Arc;
use std::time::Duration;

use agora_proto::v1::{self, event::Event};
use agora_sdk::{Driver, FileIdStore, FrameworkId, FrameworkIdStore, OfferId, SdkError};
use support::{Call, FakeMaster, Seen, config, offer, recorder};
use tonic::Status;

fn subscribed(seen: Seen) -> agora_sdk::Subscribed {
    match seen {
        Seen::Subscribed(info) => info,
        other => panic!("expected Subscribed, got {other:?}"),
    }
}

#[tokio::test]
async fn first_subscription_gets_a_framework_id_from_the_master() {
    let master = FakeMaster::start().await;
    let (scheduler, mut events) = recorder();
    let (driver, _run) = Driver::start(config(vec![master.addr.to_string()]), scheduler);

    let info = subscribed(events.next().await);
    assert_eq!(info.framework_id.as_str(), "fw-1");
    assert!(!info.resubscribed);
    assert_eq!(driver.framework_id(), Some(FrameworkId::new_unchecked("fw-1")));
    let subs = master.subscriptions().await;
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].framework.as_ref().map(|f| f.id.as_str()), Some(""));
}

#[tokio::test]
async fn offers_are_accepted_with_the_subscription_caller() {
    let mut master = FakeMaster::start().await;
    let (scheduler, mut events) = recorder();
    let (_driver, _run) = Driver::start(config(vec![master.addr.to_string()]), scheduler);
    subscribed(events.next().await);

    master
        .push(Event::Offers(v1::Offers {
            offers: vec![offer("o1")],
        }))
        .await;

    let Call::Accept(accept) = master.next_call().await else {
        panic!("expected ACCEPT")
    };
    let caller = accept.caller.unwrap();
    assert_eq!(
        (caller.framework_id.as_str(), caller.stream_id.as_str()),
        ("fw-1", "stream-1")
    );
    assert_eq!(accept.offer_ids, vec!["o1".to_owned()]);
    let Some(v1::operation::Operation::Launch(launch)) = &accept.operations[0].operation else {
        panic!("expected LAUNCH")
    };
    assert_eq!(launch.task_infos[0].task_id, "task-o1");
}

#[tokio::test]
async fn updates_with_a_uuid_are_acknowledged_after_the_callback() {
    let mut master = FakeMaster::start().await;
    let (scheduler, mut events) = recorder();
    let (_driver, _run) = Driver::start(config(vec![master.addr.to_string()]), scheduler);
    subscribed(events.next().await);

    let status = v1::TaskStatus {
        task_id: "t1".into(),
        agent_id: "a1".into(),
        state: v1::TaskState::Running as i32,
        uuid: b"u-1".to_vec(),
        ..Default::default()
    };
    master
        .push(Event::Update(v1::Update {
            status: Some(status.clone()),
        }))
        .await;

    assert_eq!(events.next().await, Seen::Update(status));
    let Call::Acknowledge(ack) = master.next_call().await else {
        panic!("expected ACKNOWLEDGE")
    };
    assert_eq!((ack.task_id.as_str(), ack.agent_id.as_str()), ("t1", "a1"));
    assert_eq!(ack.uuid, b"u-1".to_vec());
}

#[tokio::test]
async fn updates_from_the_master_without_uuid_are_not_acknowledged() {
    let mut master = FakeMaster::start().await;
    let (scheduler, mut events) = recorder();
    let (_driver, _run) = Driver::start(config(vec![master.addr.to_string()]), scheduler);
    subscribed(events.next().await);

    let status = v1::TaskStatus {
        task_id: "t1".into(),
        state: v1::TaskState::Error as i32,
        ..Default::default()
    };
    master
        .push(Event::Update(v1::Update { status: Some(status) }))
        .await;

    assert!(matches!(events.next().await, Seen::Update(_)));
    assert!(master.no_call_within(Duration::from_millis(200)).await);
}

#[tokio::test]
async fn auto_acknowledge_can_be_turned_off() {
    let mut master = FakeMaster::start().await;
    let (scheduler, mut events) = recorder();
    let mut cfg = config(vec![master.addr.to_string()]);
    cfg.auto_acknowledge = false;
    let (driver, _run) = Driver::start(cfg, scheduler);
    subscribed(events.next().await);

    let status = v1::TaskStatus {
        task_id: "t1".into(),
        agent_id: "a1".into(),
        uuid: b"u-1".to_vec(),
        ..Default::default()
    };
    master
        .push(Event::Update(v1::Update {
            status: Some(status.clone()),
        }))
        .await;
    assert!(matches!(events.next().await, Seen::Update(_)));
    assert!(master.no_call_within(Duration::from_millis(200)).await);

    driver.acknowledge(&status).await.unwrap();
    assert!(matches!(master.next_call().await, Call::Acknowledge(_)));
}

#[tokio::test]
async fn rescinds_reach_the_scheduler_as_offer_ids() {
    let master = FakeMaster::start().await;
    let (scheduler, mut events) = recorder();
    let (_driver, _run) = Driver::start(config(vec![master.addr.to_string()]), scheduler);
    subscribed(events.next().await);

    master
        .push(Event::Rescind(v1::Rescind {
            offer_id: "o7".into(),
        }))
        .await;

    assert_eq!(events.next().await, Seen::Rescinded(OfferId::new_unchecked("o7")));
}

#[tokio::test]
async fn a_closed_stream_leads_to_resubscribing_with_the_same_id() {
    let master = FakeMaster::start().await;
    let (scheduler, mut events) = recorder();
    let (driver, _run) = Driver::start(config(vec![master.addr.to_string()]), scheduler);
    subscribed(events.next().await);

    master.end_stream().await;

    assert_eq!(events.next().await, Seen::Disconnected);
    let info = subscribed(events.next().await);
    assert!(info.resubscribed);
    assert_eq!(info.framework_id.as_str(), "fw-1");
    let subs = master.subscriptions().await;
    assert_eq!(subs[1].framework.as_ref().map(|f| f.id.as_str()), Some("fw-1"));
    assert!(driver.is_connected());
}

#[tokio::test]
async fn calls_after_resubscribing_carry_the_new_stream_id() {
    let mut master = FakeMaster::start().await;
    let (scheduler, mut events) = recorder();
    let (driver, _run) = Driver::start(config(vec![master.addr.to_string()]), scheduler);
    subscribed(events.next().await);
    master.end_stream().await;
    assert_eq!(events.next().await, Seen::Disconnected);
    subscribed(events.next().await);

    driver.revive(vec![]).await.unwrap();

    let Call::Revive(revive) = master.next_call().await else {
        panic!("expected REVIVE")
    };
    assert_eq!(revive.caller.unwrap().stream_id, "stream-2");
}

#[tokio::test]
async fn a_silent_master_is_detected_by_missed_heartbeats() {
    let master = FakeMaster::start().await;
    master.set_heartbeat_interval(0.1).await;
    let (scheduler, mut events) = recorder();
    let mut cfg = config(vec![master.addr.to_string()]);
    cfg.missed_heartbeats = 2;
    let (_driver, _run) = Driver::start(cfg, scheduler);
    subscribed(events.next().await);

    // The fake master never sends heartbeats: after 2 × 100 ms the driver
    // gives up on the stream and subscribes again.
    assert_eq!(events.next().await, Seen::Disconnected);
    assert!(subscribed(events.next().await).resubscribed);
}

#[tokio::test]
async fn heartbeats_keep_the_subscription_alive() {
    let master = FakeMaster::start().await;
    master.set_heartbeat_interval(0.1).await;
    let (scheduler, mut events) = recorder();
    let mut cfg = config(vec![master.addr.to_string()]);
    cfg.missed_heartbeats = 3;
    let (_driver, _run) = Driver::start(cfg, scheduler);
    subscribed(events.next().await);

    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        master.push(Event::Heartbeat(v1::Heartbeat {})).await;
    }

    assert!(
        events.0.try_recv().is_err(),
        "no disconnect while heartbeats flow"
    );
    assert_eq!(master.subscriptions().await.len(), 1);
}

#[tokio::test]
async fn reconnects_to_a_restarted_master_on_the_same_port() {
    let master = FakeMaster::start().await;
    let (scheduler, mut events) = recorder();
    let (_driver, _run) = Driver::start(config(vec![master.addr.to_string()]), scheduler);
    subscribed(events.next().await);

    let addr = master.crash().await;
    assert_eq!(events.next().await, Seen::Disconnected);
    let restarted = FakeMaster::start_on(addr).await;

    assert!(subscribed(events.next().await).resubscribed);
    let subs = restarted.subscriptions().await;
    assert_eq!(subs[0].framework.as_ref().map(|f| f.id.as_str()), Some("fw-1"));
}

#[tokio::test]
async fn the_next_master_is_tried_when_one_is_down() {
    let dead = FakeMaster::start().await.crash().await;
    let master = FakeMaster::start().await;
    let (scheduler, mut events) = recorder();
    let masters = vec![dead.to_string(), master.addr.to_string()];
    let (_driver, _run) = Driver::start(config(masters), scheduler);

    assert_eq!(subscribed(events.next().await).framework_id.as_str(), "fw-1");
}

#[tokio::test]
async fn calls_fail_fast_while_not_connected() {
    let dead = FakeMaster::start().await.crash().await;
    let (scheduler, _events) = recorder();
    let (driver, _run) = Driver::start(config(vec![dead.to_string()]), scheduler);

    let result = driver.decline(vec![OfferId::new_unchecked("o1")], None).await;

    assert_eq!(result, Err(SdkError::NotConnected));
}

#[tokio::test]
async fn the_framework_id_is_persisted_and_reused_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("framework-id");
    let master = FakeMaster::start().await;

    let mut cfg = config(vec![master.addr.to_string()]);
    cfg.framework_id_store = Some(Arc::new(FileIdStore::new(&path)));
    let (scheduler, mut events) = recorder();
    let (driver, run) = Driver::start(cfg.clone(), scheduler);
    subscribed(events.next().await);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "fw-1");
    driver.stop();
    assert_eq!(run.await.unwrap(), Ok(()));

    let (scheduler, mut events) = recorder();
    let (_driver, _run) = Driver::start(cfg, scheduler);
    assert!(subscribed(events.next().await).resubscribed);
    let subs = master.subscriptions().await;
    assert_eq!(subs[1].framework.as_ref().map(|f| f.id.as_str()), Some("fw-1"));
}

#[tokio::test]
async fn an_unknown_framework_id_ends_the_driver_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileIdStore::new(dir.path().join("framework-id")));
    store.save(&FrameworkId::new_unchecked("fw-old")).await.unwrap();
    let master = FakeMaster::start().await;
    master
        .refuse_subscriptions(Status::not_found("framework fw-old is unknown"))
        .await;

    let mut cfg = config(vec![master.addr.to_string()]);
    cfg.framework_id_store = Some(store.clone());
    let (scheduler, mut events) = recorder();
    let (_driver, run) = Driver::start(cfg, scheduler);

    assert_eq!(
        events.next().await,
        Seen::Error("framework fw-old is unknown".into())
    );
    assert!(matches!(run.await.unwrap(), Err(SdkError::Terminated(_))));
    assert_eq!(store.load().await.unwrap(), None, "the dead id is forgotten");
}

#[tokio::test]
async fn an_error_event_ends_the_driver() {
    let master = FakeMaster::start().await;
    let (scheduler, mut events) = recorder();
    let (driver, run) = Driver::start(config(vec![master.addr.to_string()]), scheduler);
    subscribed(events.next().await);

    master
        .push(Event::Error(v1::Error {
            message: "framework removed".into(),
        }))
        .await;

    assert_eq!(events.next().await, Seen::Error("framework removed".into()));
    assert_eq!(
        run.await.unwrap(),
        Err(SdkError::Terminated("framework removed".into()))
    );
    assert_eq!(driver.revive(vec![]).await, Err(SdkError::Stopped));
}

#[tokio::test]
async fn teardown_stops_the_driver_and_forgets_the_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("framework-id");
    let mut master = FakeMaster::start().await;
    let mut cfg = config(vec![master.addr.to_string()]);
    cfg.framework_id_store = Some(Arc::new(FileIdStore::new(&path)));
    let (scheduler, mut events) = recorder();
    let (driver, run) = Driver::start(cfg, scheduler);
    subscribed(events.next().await);

    driver.teardown().await.unwrap();

    assert!(matches!(master.next_call().await, Call::Teardown(_)));
    assert_eq!(run.await.unwrap(), Ok(()));
    assert!(!path.exists());
    assert!(
        events.0.try_recv().is_err(),
        "the farewell is not reported as an error"
    );
}

#[tokio::test]
async fn stop_ends_the_driver_without_teardown() {
    let mut master = FakeMaster::start().await;
    let (scheduler, mut events) = recorder();
    let (driver, run) = Driver::start(config(vec![master.addr.to_string()]), scheduler);
    subscribed(events.next().await);

    driver.stop();

    assert_eq!(run.await.unwrap(), Ok(()));
    assert!(master.no_call_within(Duration::from_millis(100)).await);
    assert_eq!(
        driver.kill(&agora_sdk::TaskId::new_unchecked("t"), None).await,
        Err(SdkError::Stopped)
    );
}

#[tokio::test]
async fn wait_connected_returns_once_subscribed() {
    let master = FakeMaster::start().await;
    let (scheduler, _events) = recorder();
    let (driver, _run) = Driver::start(config(vec![master.addr.to_string()]), scheduler);

    tokio::time::timeout(Duration::from_secs(5), driver.wait_connected())
        .await
        .unwrap()
        .unwrap();

    assert!(driver.is_connected());
}

#[tokio::test]
async fn a_config_without_masters_is_refused() {
    let (scheduler, _events) = recorder();
    let result = agora_sdk::run(config(vec![]), scheduler).await;
    assert!(matches!(result, Err(SdkError::Config(_))));
}
