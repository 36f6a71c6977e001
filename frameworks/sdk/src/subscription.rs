//! The driver's event loop: connect, subscribe, dispatch events to the
//! [`Scheduler`], detect a lost or silent master, re-subscribe.

use std::time::Duration;

use agora_proto::v1::scheduler_client::SchedulerClient;
use agora_proto::v1::{self, event::Event};
use agora_proto::{FrameworkId, OfferId, StreamId};
use agora_store::{Endpoints, LeaderFinder};
use tokio::sync::watch;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

use crate::backoff::Backoff;
use crate::driver::{RunState, Session};
use crate::liveness::Liveness;
use crate::masters::redirect_of;
use crate::{Driver, DriverConfig, RejectCode, Scheduler, SdkError, Subscribed};

/// What to do after a subscription ends.
enum Next {
    /// Connect again (after a backoff delay).
    Reconnect,
    /// Connect again at once: the leader is known to be elsewhere.
    ReconnectNow,
    /// The driver is done.
    Exit,
}

/// How one connection attempt ended, short of giving up.
enum Attempt {
    Subscribed(Box<Subscription>),
    /// A standby named the leader: try it without waiting.
    RetryNow,
    /// Try again after a backoff delay.
    RetryLater,
}

/// A successful subscription: the event stream and the SUBSCRIBED event.
struct Subscription {
    /// The master's `host:port`.
    address: String,
    client: SchedulerClient<Channel>,
    events: Streaming<v1::Event>,
    subscribed: v1::Subscribed,
}

pub(crate) struct EventLoop<S> {
    config: DriverConfig,
    driver: Driver,
    scheduler: S,
    backoff: Backoff,
    /// The master tried last (the one to move away from).
    last_master: String,
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
            last_master: String::new(),
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
        let endpoints = self.validate()?;
        self.load_framework_id().await?;
        let mut masters = LeaderFinder::new(endpoints, self.config.zk.clone());
        loop {
            if self.stopped() {
                return Ok(());
            }
            let mut state = self.state.clone();
            let attempt = tokio::select! {
                a = self.subscribe(&mut masters) => a?,
                _ = state.wait_for(|s| *s == RunState::Stopped) => return Ok(()),
            };
            match attempt {
                Attempt::Subscribed(subscription) => {
                    self.backoff.reset();
                    masters.settled();
                    match self.serve(*subscription, &mut masters).await? {
                        Next::Exit => return Ok(()),
                        Next::ReconnectNow => continue,
                        Next::Reconnect => {}
                    }
                }
                Attempt::RetryNow => continue,
                Attempt::RetryLater => {}
            }
            let delay = self.backoff.next_delay();
            let last = self.last_master.clone();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                // A new leader in ZooKeeper is worth trying at once, and again soon if it is
                // still loading its registry: the backoff grown against the old one ends.
                () = masters.leader_moved_from(&last) => self.backoff.reset(),
                _ = self.state.wait_for(|s| *s == RunState::Stopped) => return Ok(()),
            }
            masters.settled();
        }
    }

    /// Checks the configuration; returns where the masters are.
    fn validate(&self) -> Result<Endpoints, SdkError> {
        let endpoints = Endpoints::from_list(&self.config.masters)
            .map_err(|e| SdkError::Config(format!("masters: {e}")))?;
        if let Endpoints::Addresses(addresses) = &endpoints {
            for m in addresses {
                Endpoint::from_shared(format!("http://{m}"))
                    .map_err(|e| SdkError::Config(format!("bad master address {m:?}: {e}")))?;
            }
        }
        if self.config.framework.name.is_empty() {
            return Err(SdkError::Config("framework name must not be empty".into()));
        }
        Ok(endpoints)
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
    /// `Err` means give up.
    async fn subscribe(&mut self, masters: &mut LeaderFinder) -> Result<Attempt, SdkError> {
        let address = masters.next().await;
        self.last_master.clone_from(&address);
        let framework_id = self.driver.framework_id();
        let timeout = self.config.connect_timeout;
        let attempt = tokio::time::timeout(
            timeout,
            try_subscribe(&self.config, &address, framework_id.as_ref()),
        )
        .await;
        match attempt {
            Ok(Ok(subscription)) => Ok(Attempt::Subscribed(Box::new(subscription))),
            Ok(Err(AttemptError::Redirect(leader))) => {
                tracing::info!(master = %address, %leader, "not the leader; moving to the leader it named");
                if masters.redirected(&address, leader) {
                    Ok(Attempt::RetryNow)
                } else {
                    Ok(Attempt::RetryLater)
                }
            }
            Ok(Err(AttemptError::Retry(reason))) => {
                tracing::debug!(master = %address, %reason, "subscription attempt failed");
                masters.failed(&address);
                Ok(Attempt::RetryLater)
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
                masters.failed(&address);
                Ok(Attempt::RetryLater)
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
            if let Some(leader) = redirect_of(&status) {
                return Err(AttemptError::Redirect(leader));
            }
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
            address: address.to_owned(),
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
    async fn serve(
        &mut self,
        subscription: Subscription,
        masters: &mut LeaderFinder,
    ) -> Result<Next, SdkError> {
        let Subscription {
            address,
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
        let mut redirects = self.driver.shared.redirect.subscribe();
        redirects.mark_unchanged();
        self.driver.shared.session.send_replace(Some(Session {
            master: address.clone(),
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
        tracing::info!(%framework_id, %stream_id, master = %address, master_id = %subscribed.master_id, "subscribed");
        let info = Subscribed {
            framework_id,
            master_id: subscribed.master_id,
            master_address: address.clone(),
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
                () = masters.leader_moved_from(&address) => {
                    tracing::warn!(master = %address, "a new leader was elected; re-subscribing with it");
                    break Next::ReconnectNow;
                }
                changed = redirects.changed() => {
                    let redirect = if changed.is_ok() { redirects.borrow_and_update().clone() } else { None };
                    if let Some((from, leader)) = redirect.filter(|(from, _)| *from == address) {
                        tracing::warn!(master = %from, %leader, "the master is no longer the leader; moving");
                        break if masters.redirected(&from, leader) { Next::ReconnectNow } else { Next::Reconnect };
                    }
                }
            }
        };
        self.driver.shared.session.send_replace(None);
        if let Next::Reconnect | Next::ReconnectNow = ended {
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
    /// A standby answered; the leader is at this address.
    Redirect(String),
    /// Worth trying again (possibly another master).
    Retry(String),
    /// Not worth trying again.
    Fatal(SdkError),
}
