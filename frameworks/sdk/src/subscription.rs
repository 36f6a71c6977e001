//! The driver's event loop: connect, subscribe, dispatch events to the
//! [`Scheduler`], detect a lost or silent master, re-subscribe.

use std::time::Duration;

use agora_proto::v1::scheduler_client::SchedulerClient;
use agora_proto::v1::{self, event::Event};
use agora_proto::{FrameworkId, OfferId, StreamId};
use tokio::sync::watch;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

use crate::backoff::Backoff;
use crate::driver::{RunState, Session};
use crate::liveness::Liveness;
use crate::{Driver, DriverConfig, RejectCode, Scheduler, SdkError, Subscribed};

/// What to do after a subscription ends.
enum Next {
    /// Connect again (after a backoff delay).
    Reconnect,
    /// The driver is done.
    Exit,
}

/// A successful subscription: the event stream and the SUBSCRIBED event.
struct Subscription {
    client: SchedulerClient<Channel>,
    events: Streaming<v1::Event>,
    subscribed: v1::Subscribed,
}

pub(crate) struct EventLoop<S> {
    config: DriverConfig,
    driver: Driver,
    scheduler: S,
    backoff: Backoff,
    /// Index into `config.masters` of the master to try next.
    next_master: usize,
    state: watch::Receiver<RunState>,
}

impl<S: Scheduler> EventLoop<S> {
    pub(crate) fn new(config: DriverConfig, driver: Driver, scheduler: S) -> Self {
        let backoff = Backoff::new(config.backoff_min, config.backoff_max);
        let state = driver.shared.state.subscribe();
        Self {
            config,
            driver,
            scheduler,
            backoff,
            next_master: 0,
            state,
        }
    }

    /// Runs until stopped, torn down or refused; always leaves the driver
    /// stopped and disconnected.
    pub(crate) async fn run(mut self) -> Result<(), SdkError> {
        let result = self.run_until_done().await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "framework driver stopped");
        }
        self.driver.shared.session.send_replace(None);
        self.driver.shared.state.send_replace(RunState::Stopped);
        result
    }

    fn stopped(&self) -> bool {
        *self.state.borrow() == RunState::Stopped
    }

    async fn run_until_done(&mut self) -> Result<(), SdkError> {
        self.validate()?;
        self.load_framework_id().await?;
        loop {
            if self.stopped() {
                return Ok(());
            }
            let mut state = self.state.clone();
            let attempt = tokio::select! {
                a = self.subscribe() => a?,
                _ = state.wait_for(|s| *s == RunState::Stopped) => return Ok(()),
            };
            if let Some(subscription) = attempt {
                self.backoff.reset();
                if let Next::Exit = self.serve(subscription).await? {
                    return Ok(());
                }
            }
            let delay = self.backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.state.wait_for(|s| *s == RunState::Stopped) => return Ok(()),
            }
        }
    }

    fn validate(&self) -> Result<(), SdkError> {
        if self.config.masters.is_empty() {
            return Err(SdkError::Config("no master address given".into()));
        }
        for m in &self.config.masters {
            if m.starts_with("zk://") {
                return Err(SdkError::Config(format!(
                    "{m}: ZooKeeper master discovery is not supported yet; give host:port addresses"
                )));
            }
            Endpoint::from_shared(format!("http://{m}"))
                .map_err(|e| SdkError::Config(format!("bad master address {m:?}: {e}")))?;
        }
        if self.config.framework.name.is_empty() {
            return Err(SdkError::Config("framework name must not be empty".into()));
        }
        Ok(())
    }

    /// Takes the framework id from the configuration, else the id store.
    async fn load_framework_id(&mut self) -> Result<(), SdkError> {
        if !self.config.framework.id.is_empty() {
            FrameworkId::parse(&self.config.framework.id)
                .map_err(|e| SdkError::Config(format!("framework id: {e}")))?;
            return Ok(());
        }
        if let Some(store) = &self.config.framework_id_store
            && let Some(id) = store.load().await?
        {
            tracing::info!(framework_id = %id, "re-subscribing with the stored framework id");
            self.driver.shared.framework_id.send_replace(Some(id));
        }
        Ok(())
    }

    /// One attempt on the next master: connect, subscribe, read SUBSCRIBED.
    /// `Ok(None)` means try again later; `Err` means give up.
    async fn subscribe(&mut self) -> Result<Option<Subscription>, SdkError> {
        let index = self.next_master % self.config.masters.len();
        let Some(address) = self.config.masters.get(index).cloned() else {
            return Err(SdkError::Config("no master address given".into()));
        };
        let framework_id = self.driver.framework_id();
        let timeout = self.config.connect_timeout;
        let attempt = tokio::time::timeout(
            timeout,
            try_subscribe(&self.config, &address, framework_id.as_ref()),
        )
        .await;
        match attempt {
            Ok(Ok(subscription)) => Ok(Some(subscription)),
            Ok(Err(AttemptError::Retry(reason))) => {
                tracing::debug!(master = %address, %reason, "subscription attempt failed");
                self.next_master = self.next_master.wrapping_add(1);
                Ok(None)
            }
            Ok(Err(AttemptError::Fatal(e))) => {
                if let SdkError::Rejected {
                    code: RejectCode::NotFound,
                    message,
                } = &e
                {
                    // Our id is dead for good: forget it so that the next
                    // start registers afresh, and tell the framework.
                    if let Some(store) = &self.config.framework_id_store
                        && let Err(e) = store.clear().await
                    {
                        tracing::warn!(error = %e, "could not clear the dead framework id");
                    }
                    self.scheduler.error(&self.driver, message.clone()).await;
                    return Err(SdkError::Terminated(message.clone()));
                }
                self.scheduler.error(&self.driver, e.to_string()).await;
                Err(e)
            }
            Err(_) => {
                tracing::debug!(master = %address, "subscription attempt timed out");
                self.next_master = self.next_master.wrapping_add(1);
                Ok(None)
            }
        }
    }
}

/// Connects to `address`, subscribes and reads SUBSCRIBED. A free function
/// so that the future does not borrow the (not necessarily `Sync`)
/// scheduler.
async fn try_subscribe(
    config: &DriverConfig,
    address: &str,
    framework_id: Option<&FrameworkId>,
) -> Result<Subscription, AttemptError> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| AttemptError::Fatal(SdkError::Config(format!("bad master address {address:?}: {e}"))))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| AttemptError::Retry(format!("connect: {e}")))?;
    let mut client = SchedulerClient::new(channel);
    let mut framework = config.framework.clone();
    framework.id = framework_id.map(FrameworkId::to_string).unwrap_or_default();
    let request = v1::SubscribeRequest {
        framework: Some(framework),
        suppressed_roles: Vec::new(),
    };
    let mut events = match client.subscribe(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            return Err(match SdkError::from_status(&status) {
                e @ SdkError::Rejected {
                    code: RejectCode::NotFound | RejectCode::InvalidArgument | RejectCode::PermissionDenied,
                    ..
                } => AttemptError::Fatal(e),
                e => AttemptError::Retry(e.to_string()),
            });
        }
    };
    match events.message().await {
        Ok(Some(v1::Event {
            event: Some(Event::Subscribed(subscribed)),
        })) => Ok(Subscription {
            client,
            events,
            subscribed,
        }),
        Ok(Some(v1::Event {
            event: Some(Event::Error(error)),
        })) => Err(AttemptError::Fatal(SdkError::Terminated(error.message))),
        Ok(Some(other)) => Err(AttemptError::Retry(format!(
            "expected SUBSCRIBED as the first event, got {other:?}"
        ))),
        Ok(None) => Err(AttemptError::Retry("stream ended before SUBSCRIBED".into())),
        Err(status) => Err(AttemptError::Retry(format!("stream failed: {status}"))),
    }
}

impl<S: Scheduler> EventLoop<S> {
    /// Serves one subscription until it ends.
    async fn serve(&mut self, subscription: Subscription) -> Result<Next, SdkError> {
        let Subscription {
            client,
            mut events,
            subscribed,
        } = subscription;
        let framework_id = FrameworkId::parse(&subscribed.framework_id)
            .map_err(|e| SdkError::Protocol(format!("SUBSCRIBED framework id: {e}")))?;
        let stream_id = StreamId::parse(&subscribed.stream_id)
            .map_err(|e| SdkError::Protocol(format!("SUBSCRIBED stream id: {e}")))?;
        let previous = self.driver.framework_id();
        if previous.as_ref() != Some(&framework_id)
            && let Some(store) = &self.config.framework_id_store
        {
            store.save(&framework_id).await?;
        }
        self.driver
            .shared
            .framework_id
            .send_replace(Some(framework_id.clone()));
        self.driver.shared.session.send_replace(Some(Session {
            client,
            caller: v1::Caller {
                framework_id: framework_id.to_string(),
                stream_id: stream_id.to_string(),
            },
        }));
        let mut liveness = Liveness::new(
            subscribed.heartbeat_interval_seconds,
            self.config.missed_heartbeats,
        );
        tracing::info!(%framework_id, %stream_id, master_id = %subscribed.master_id, "subscribed");
        let info = Subscribed {
            framework_id,
            master_id: subscribed.master_id,
            heartbeat_interval: Duration::try_from_secs_f64(subscribed.heartbeat_interval_seconds)
                .unwrap_or(crate::liveness::DEFAULT_HEARTBEAT_INTERVAL),
            resubscribed: previous.is_some(),
        };
        self.scheduler.subscribed(&self.driver, info).await;

        let ended = loop {
            tokio::select! {
                biased;
                _ = self.state.changed() => {
                    if self.stopped() {
                        break Next::Exit;
                    }
                }
                message = events.message() => match message {
                    Ok(Some(event)) => {
                        liveness.observe();
                        if let Some(next) = self.dispatch(event).await? {
                            break next;
                        }
                    }
                    Ok(None) => {
                        if *self.state.borrow() != RunState::Running {
                            break Next::Exit;
                        }
                        tracing::warn!("master closed the event stream");
                        break Next::Reconnect;
                    }
                    Err(status) => {
                        if *self.state.borrow() != RunState::Running {
                            break Next::Exit;
                        }
                        tracing::warn!(error = %status, "event stream failed");
                        break Next::Reconnect;
                    }
                },
                _ = tokio::time::sleep_until(liveness.deadline()) => {
                    tracing::warn!(
                        missed = self.config.missed_heartbeats,
                        "no heartbeat from the master; re-subscribing"
                    );
                    break Next::Reconnect;
                }
            }
        };
        self.driver.shared.session.send_replace(None);
        if let Next::Reconnect = ended {
            self.scheduler.disconnected(&self.driver).await;
        }
        Ok(ended)
    }

    /// Hands one event to the scheduler. `Some(next)` ends the subscription.
    async fn dispatch(&mut self, event: v1::Event) -> Result<Option<Next>, SdkError> {
        let Some(event) = event.event else {
            return Ok(None);
        };
        match event {
            Event::Subscribed(_) => tracing::warn!("ignoring a second SUBSCRIBED on one stream"),
            Event::Heartbeat(_) => {}
            Event::Offers(offers) => self.scheduler.offers(&self.driver, offers.offers).await,
            Event::Rescind(rescind) => match OfferId::parse(&rescind.offer_id) {
                Ok(id) => self.scheduler.rescinded(&self.driver, id).await,
                Err(e) => tracing::warn!(error = %e, "ignoring RESCIND with a bad offer id"),
            },
            Event::Update(update) => {
                let Some(status) = update.status else {
                    tracing::warn!("ignoring UPDATE without a status");
                    return Ok(None);
                };
                tracing::trace!(
                    task_id = %status.task_id,
                    state = agora_proto::state::mesos_name(status.state()),
                    age_ms = (agora_proto::unix_seconds(std::time::SystemTime::now()) - status.timestamp) * 1000.0,
                    "update received"
                );
                let ack = (self.config.auto_acknowledge && !status.uuid.is_empty()).then(|| v1::TaskStatus {
                    task_id: status.task_id.clone(),
                    agent_id: status.agent_id.clone(),
                    uuid: status.uuid.clone(),
                    ..Default::default()
                });
                self.scheduler.update(&self.driver, status).await;
                if let Some(ack) = ack {
                    // Acknowledge concurrently so that a slow round trip
                    // never holds up the next event.
                    let driver = self.driver.clone();
                    tokio::spawn(async move {
                        if let Err(e) = driver.acknowledge(&ack).await {
                            tracing::debug!(task_id = %ack.task_id, error = %e, "acknowledgement failed; the agent will resend");
                        }
                    });
                }
            }
            Event::Message(message) => self.scheduler.message(&self.driver, message).await,
            Event::Failure(failure) => self.scheduler.failure(&self.driver, failure).await,
            Event::Error(error) => {
                if *self.state.borrow() != RunState::Running {
                    return Ok(Some(Next::Exit));
                }
                tracing::error!(message = %error.message, "master ended the framework");
                self.scheduler.error(&self.driver, error.message.clone()).await;
                return Err(SdkError::Terminated(error.message));
            }
        }
        Ok(None)
    }
}

/// Why one subscription attempt failed.
enum AttemptError {
    /// Worth trying again (possibly another master).
    Retry(String),
    /// Not worth trying again.
    Fatal(SdkError),
}
