//! The running service framework: one actor that owns the [`Engine`] and the
//! [`HealthMonitor`], fed by the SDK driver's callbacks, the API's
//! [`ServiceHandle`] requests, health events and timers; it carries out the
//! engine's effects in order. [`serve`] adds the REST API on a listener.
//! With `--zk`, [`serve`] runs one instance of several ([`serve_elected`]):
//! the elected one runs the framework on its state in ZooKeeper, the others
//! forward REST calls to it.
//!
//! Architecture invariant: the engine's state changes are stored before any
//! launch or kill that follows them is sent (write-ahead), and a command is
//! answered and a status update acknowledged only after what it changed is
//! stored. Several ready inputs are stepped together and their consecutive
//! writes stored as one batch.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agora_framework_ha::{Elected, ElectedError};
use agora_proto::{AgentId, FrameworkId, OfferId, TaskId, v1};
use agora_sdk::{Driver, DriverConfig, Filters, Scheduler, SdkError, Subscribed};
use agora_store::{ElectionError, Leadership, SharedElection, ZkOptions, ZkUrl};
use futures::future::BoxFuture;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::app::AppId;
use crate::engine::{Effect, Engine, EngineConfig, Input, Now, Reply, StateChange};
use crate::handle::{
    AppStatus, DeploymentView, EVENT_BUFFER, QueueEntry, Request, ServiceError, ServiceEvent, ServiceHandle,
    ServiceInfo, TaskView,
};
use crate::health::{HealthEvent, HealthMonitor};
use crate::state::{KvStateStore, StateError, StateStore};

/// A week: how long the master keeps the framework's tasks running while it
/// is away, unless `--failover-timeout` says otherwise.
pub const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// At most this many ready inputs are stepped before their effects are
/// carried out.
const MAX_BATCH: usize = 256;

/// Settings of `agora service`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceConfig {
    /// Masters to subscribe to, `host:port`, comma-separated (tried in turn).
    #[arg(long, value_delimiter = ',', required = true)]
    pub master: Vec<String>,
    /// Address of the REST API (Marathon's).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory of the framework's state (apps, versions, deployments, tasks,
    /// framework id).
    #[arg(long, default_value = "./agora-data/service")]
    pub work_dir: PathBuf,
    /// The framework's name, shown by the master.
    #[arg(long, default_value = "agora-service")]
    pub name: String,
    /// Roles to subscribe with, comma-separated; apps' `role` and
    /// `acceptedResourceRoles` pick among their offers.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub role: Vec<String>,
    /// How often to reconcile every task with the master (explicitly and
    /// implicitly), besides after each (re-)subscription.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub reconcile_interval: Duration,
    /// How long declined offers' resources are not re-offered; a REVIVE
    /// clears this as soon as something needs launching.
    #[arg(long, default_value_t = 120.0)]
    pub decline_refuse_seconds: f64,
    /// How long the master keeps this framework's tasks running after it
    /// disconnects (restarts of the framework must be shorter).
    #[arg(long, default_value = "7days", value_parser = humantime::parse_duration)]
    pub failover_timeout: Duration,
    /// Hostname announced to the master (default: this machine's); also
    /// what standbys forward to when `--listen` is a wildcard address.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Run highly available with the state in ZooKeeper, e.g.
    /// `zk://h1:2181,h2:2181/agora-service`: instances with the same URL elect
    /// one that acts (`PATH/leader`, state under `PATH/state`); the others
    /// forward REST calls to it. Without it: one instance, state in
    /// `--work-dir`.
    #[arg(long)]
    pub zk: Option<ZkUrl>,
    /// The ZooKeeper session timeout: a leader cut off from ZooKeeper stops
    /// acting within half of it, and a standby takes over after it.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub zk_session_timeout: Duration,
}

impl ServiceConfig {
    /// The defaults above, with the given masters and work dir, listening on `listen`.
    pub fn new(master: Vec<String>, listen: SocketAddr, work_dir: PathBuf) -> Self {
        Self {
            master,
            listen,
            work_dir,
            name: "agora-service".to_owned(),
            role: vec!["*".to_owned()],
            reconcile_interval: Duration::from_secs(300),
            decline_refuse_seconds: 120.0,
            failover_timeout: DEFAULT_FAILOVER_TIMEOUT,
            hostname: None,
            zk: None,
            zk_session_timeout: ZkOptions::default().session_timeout,
        }
    }

    fn roles(&self) -> Vec<String> {
        let roles: Vec<String> = self
            .role
            .iter()
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect();
        if roles.is_empty() {
            vec!["*".to_owned()]
        } else {
            roles
        }
    }

    /// The masters to subscribe to: `host:port` addresses, or one
    /// `zk://hosts/path` URL (whose host list the comma split cut apart).
    fn masters(&self) -> Vec<String> {
        let masters: Vec<String> = self
            .master
            .iter()
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .collect();
        match masters.first() {
            Some(first) if first.starts_with("zk://") => vec![masters.join(",")],
            _ => masters,
        }
    }

    fn hostname(&self) -> String {
        self.hostname
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".to_owned())
    }

    fn framework_info(&self, leader: &str) -> v1::FrameworkInfo {
        let hostname = self.hostname();
        v1::FrameworkInfo {
            id: String::new(),
            name: self.name.clone(),
            user: std::env::var("USER").unwrap_or_default(),
            roles: self.roles(),
            failover_timeout_seconds: self.failover_timeout.as_secs_f64(),
            checkpoint: true,
            capabilities: vec![
                v1::FrameworkCapability::PartitionAware as i32,
                v1::FrameworkCapability::MultiRole as i32,
            ],
            hostname,
            webui_url: format!("http://{leader}"),
            labels: Vec::new(),
        }
    }
}

/// Why the service framework could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No `--master` given.
    #[error("no master address given (--master host:port)")]
    NoMaster,
    /// The state store could not be opened.
    #[error("cannot open the state store in {dir}: {source}")]
    OpenStore {
        /// The work dir.
        dir: PathBuf,
        /// Why.
        source: agora_store::StoreError,
    },
    /// The stored state could not be loaded.
    #[error("cannot load the stored state: {0}")]
    Recover(StateError),
    /// A state change could not be stored: the framework stops rather than
    /// act on state it could not record.
    #[error("cannot store a state change, stopping: {0}")]
    Persist(StateError),
    /// The master refused to serve this framework any more.
    #[error("the master stopped serving this framework: {0}")]
    Refused(String),
    /// The actor panicked (a bug).
    #[error("the service framework's actor crashed: {0}")]
    Crashed(String),
    /// The listener failed.
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    /// `--zk` names no usable ZooKeeper path.
    #[error("--zk: {0}")]
    ZkUrl(#[from] agora_store::ZkUrlError),
    /// Taking part in the election of the active instance failed for good.
    #[error(transparent)]
    Election(#[from] ElectionError),
}

impl From<ElectedError<RuntimeError>> for RuntimeError {
    fn from(e: ElectedError<RuntimeError>) -> Self {
        match e {
            ElectedError::Election(e) => RuntimeError::Election(e),
            ElectedError::Http(e) => RuntimeError::Http(e),
            ElectedError::Framework(e) => e,
        }
    }
}

/// What the actor owns and the handle's reads look at.
pub(crate) struct ServiceState {
    engine: Engine,
    health: HealthMonitor,
    info: ServiceInfo,
}

impl ServiceState {
    fn with_health(&self, mut task: TaskView) -> TaskView {
        if task.health.is_empty() {
            task.health = self.health.results(&task.id);
        }
        task
    }

    fn app_with_health(&self, mut status: AppStatus) -> AppStatus {
        status.tasks = status.tasks.into_iter().map(|t| self.with_health(t)).collect();
        status
    }

    pub(crate) fn apps(&self) -> Vec<AppStatus> {
        self.engine
            .apps()
            .into_iter()
            .map(|s| self.app_with_health(s))
            .collect()
    }

    pub(crate) fn app(&self, id: &AppId) -> Result<AppStatus, ServiceError> {
        self.engine.app(id).map(|s| self.app_with_health(s))
    }

    pub(crate) fn app_versions(&self, id: &AppId) -> Result<Vec<jiff::Timestamp>, ServiceError> {
        self.engine.app_versions(id)
    }

    pub(crate) fn app_version(
        &self,
        id: &AppId,
        version: jiff::Timestamp,
    ) -> Result<crate::app::AppDefinition, ServiceError> {
        self.engine.app_version(id, version)
    }

    pub(crate) fn tasks(&self, app: Option<&AppId>) -> Vec<TaskView> {
        self.engine
            .tasks(app)
            .into_iter()
            .map(|t| self.with_health(t))
            .collect()
    }

    pub(crate) fn deployments(&self) -> Vec<DeploymentView> {
        self.engine.deployments()
    }

    pub(crate) fn queue(&self) -> Vec<QueueEntry> {
        self.engine.queue_at(Instant::now())
    }

    pub(crate) fn info(&self) -> ServiceInfo {
        self.info.clone()
    }
}

/// The SDK's callbacks, forwarded to the actor as engine inputs.
struct Forwarder {
    inputs: mpsc::UnboundedSender<DriverEvent>,
}

/// What the driver reports.
#[allow(clippy::large_enum_variant)] // nearly always an input; moved once
enum DriverEvent {
    Input(Input),
    /// The master will not serve the framework any more.
    Refused(String),
}

impl Forwarder {
    fn send(&self, input: Input) {
        let _ = self.inputs.send(DriverEvent::Input(input));
    }
}

impl Scheduler for Forwarder {
    async fn subscribed(&mut self, _driver: &Driver, info: Subscribed) {
        tracing::info!(
            framework_id = %info.framework_id,
            resubscribed = info.resubscribed,
            "service framework subscribed"
        );
        self.send(Input::Subscribed {
            framework_id: info.framework_id.into_string(),
        });
    }

    async fn offers(&mut self, _driver: &Driver, offers: Vec<v1::Offer>) {
        self.send(Input::Offers(offers));
    }

    async fn rescinded(&mut self, _driver: &Driver, offer_id: OfferId) {
        self.send(Input::Rescinded(offer_id));
    }

    async fn update(&mut self, _driver: &Driver, status: v1::TaskStatus) {
        self.send(Input::Status(status));
    }

    async fn disconnected(&mut self, _driver: &Driver) {
        tracing::warn!("service framework lost its master; re-subscribing");
        self.send(Input::Disconnected);
    }

    async fn error(&mut self, _driver: &Driver, message: String) {
        tracing::error!(%message, "the master refused the service framework");
        let _ = self.inputs.send(DriverEvent::Refused(message));
    }
}

/// A call the actor makes to the master.
#[derive(Debug)]
pub(crate) enum MasterCall {
    Accept {
        offer_id: OfferId,
        tasks: Vec<v1::TaskInfo>,
    },
    Decline {
        offer_ids: Vec<OfferId>,
        refuse: Option<Duration>,
    },
    Kill {
        task_id: TaskId,
        agent_id: Option<AgentId>,
    },
    Reconcile(Vec<(TaskId, Option<AgentId>)>),
    Suppress(Vec<String>),
    Revive(Vec<String>),
    Acknowledge(v1::TaskStatus),
}

/// Where the actor's calls to the master go: the SDK driver (a recorder in tests).
pub(crate) trait Master: Send + Sync {
    fn call(&self, call: MasterCall) -> BoxFuture<'_, Result<(), SdkError>>;
}

impl Master for Driver {
    fn call(&self, call: MasterCall) -> BoxFuture<'_, Result<(), SdkError>> {
        Box::pin(async move {
            match call {
                MasterCall::Accept { offer_id, tasks } => {
                    self.accept(vec![offer_id], tasks, Filters::default()).await
                }
                MasterCall::Decline { offer_ids, refuse } => self.decline(offer_ids, refuse).await,
                MasterCall::Kill { task_id, agent_id } => self.kill(&task_id, agent_id.as_ref()).await,
                MasterCall::Reconcile(tasks) => self.reconcile(tasks).await,
                MasterCall::Suppress(roles) => self.suppress(roles).await,
                MasterCall::Revive(roles) => self.revive(roles).await,
                MasterCall::Acknowledge(status) => self.acknowledge(&status).await,
            }
        })
    }
}

/// One thing that woke the actor.
enum Wake {
    Request(Request),
    Input(Input),
    Refused(String),
    Stop,
}

/// A command's answer and where it goes.
type Answer = (
    oneshot::Sender<Result<Reply, ServiceError>>,
    Result<Reply, ServiceError>,
);

/// The effects of a batch of steps and the answers waiting for them.
#[derive(Default)]
struct Batch {
    effects: Vec<Effect>,
    /// Status updates to acknowledge once their effects are stored.
    acks: Vec<v1::TaskStatus>,
    replies: Vec<Answer>,
}

/// The actor: the engine, the health checks, the store and the driver.
struct Actor {
    state: ServiceState,
    store: Arc<dyn StateStore>,
    /// `None` when detached: calls are dropped.
    master: Option<Arc<dyn Master>>,
    events: broadcast::Sender<ServiceEvent>,
    roles: Vec<String>,
}

fn now() -> Now {
    Now {
        instant: Instant::now(),
        wall: jiff::Timestamp::now(),
    }
}

impl Actor {
    /// Steps one wake-up into `batch`; `Err` ends the actor.
    fn take(&mut self, wake: Wake, batch: &mut Batch) -> Result<bool, RuntimeError> {
        match wake {
            Wake::Stop => return Ok(false),
            Wake::Refused(message) => return Err(RuntimeError::Refused(message)),
            Wake::Request(Request::Read(read)) => read(&self.state),
            Wake::Request(Request::Command { command, reply }) => {
                let step = self.state.engine.step(now(), Input::Command(command));
                batch.effects.extend(step.effects);
                let answer = step
                    .reply
                    .unwrap_or_else(|| Err(ServiceError::Internal("the engine gave no answer".to_owned())));
                batch.replies.push((reply, answer));
            }
            Wake::Input(input) => {
                match &input {
                    Input::Subscribed { framework_id } => {
                        self.state.info.framework_id = Some(framework_id.clone());
                    }
                    Input::Status(status) if !status.uuid.is_empty() => batch.acks.push(status.clone()),
                    _ => {}
                }
                let step = self.state.engine.step(now(), input);
                batch.effects.extend(step.effects);
            }
        }
        Ok(true)
    }

    /// Carries out a batch's effects in order, storing consecutive state
    /// changes together, always before a launch or kill that follows them
    /// and before any answer.
    async fn execute(&mut self, batch: Batch) -> Result<(), RuntimeError> {
        let mut unstored: Vec<StateChange> = Vec::new();
        for effect in batch.effects {
            match effect {
                Effect::Persist(changes) => unstored.extend(changes),
                effect @ (Effect::Accept { .. } | Effect::Kill { .. }) => {
                    self.store(&mut unstored).await?;
                    self.act(effect).await;
                }
                effect => self.act(effect).await,
            }
        }
        self.store(&mut unstored).await?;
        for (reply, answer) in batch.replies {
            let _ = reply.send(answer);
        }
        // Only now may the agents forget the updates: what they changed is stored.
        let acks = batch
            .acks
            .into_iter()
            .map(|status| self.call(MasterCall::Acknowledge(status)));
        futures::future::join_all(acks).await;
        Ok(())
    }

    async fn store(&self, unstored: &mut Vec<StateChange>) -> Result<(), RuntimeError> {
        if unstored.is_empty() {
            return Ok(());
        }
        let changes = std::mem::take(unstored);
        self.store.apply(changes).await.map_err(RuntimeError::Persist)
    }

    /// Carries out one effect other than [`Effect::Persist`].
    async fn act(&mut self, effect: Effect) {
        let call = match effect {
            Effect::Persist(_) => return,
            Effect::Publish(event) => {
                let _ = self.events.send(event);
                return;
            }
            Effect::WatchHealth { target, checks } => {
                self.state.health.watch(target, checks);
                return;
            }
            Effect::UnwatchHealth(task_id) => {
                self.state.health.unwatch(&task_id);
                return;
            }
            Effect::Accept { offer_id, tasks } => MasterCall::Accept { offer_id, tasks },
            Effect::Decline {
                offer_ids,
                refuse_seconds,
            } => MasterCall::Decline {
                offer_ids,
                refuse: Duration::try_from_secs_f64(refuse_seconds).ok(),
            },
            Effect::Kill { task_id, agent_id } => MasterCall::Kill { task_id, agent_id },
            Effect::Reconcile { tasks } => MasterCall::Reconcile(tasks),
            Effect::Suppress => MasterCall::Suppress(self.roles.clone()),
            Effect::Revive => MasterCall::Revive(self.roles.clone()),
        };
        self.call(call).await;
    }

    /// Makes one call to the master. A failure is only logged: the master
    /// re-sends offers after a re-subscription, agents re-send updates that
    /// were not acknowledged, and reconciliation corrects the engine's view.
    async fn call(&self, call: MasterCall) {
        let Some(master) = &self.master else {
            return;
        };
        if let Err(e) = master.call(call).await {
            tracing::debug!(error = %e, "a call to the master failed");
        }
    }

    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut driver_events: mpsc::UnboundedReceiver<DriverEvent>,
        mut health_events: mpsc::UnboundedReceiver<HealthEvent>,
        mut stop: watch::Receiver<bool>,
        reconcile_interval: Duration,
    ) -> Result<(), RuntimeError> {
        let mut reconcile = tokio::time::interval_at(Instant::now() + reconcile_interval, reconcile_interval);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.state.engine.next_deadline();
            let wake = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => Wake::Stop,
                Some(event) = driver_events.recv() => driver_wake(event),
                Some(request) = requests.recv() => Wake::Request(request),
                Some(event) = health_events.recv() => Wake::Input(Input::Health(event)),
                _ = reconcile.tick() => Wake::Input(Input::ReconcileDue),
                _ = sleep_until(deadline), if deadline.is_some() => Wake::Input(Input::Tick),
            };
            let mut batch = Batch::default();
            let mut running = self.take(wake, &mut batch)?;
            // Step whatever else is ready (taking from each source in turn,
            // so none starves), so that its writes share one batch.
            let mut taken = 1;
            let mut idle_sources = 0;
            let mut source = 0;
            while running && taken < MAX_BATCH && idle_sources < 3 {
                let wake = match source {
                    0 => driver_events.try_recv().ok().map(driver_wake),
                    1 => requests.try_recv().ok().map(Wake::Request),
                    _ => health_events
                        .try_recv()
                        .ok()
                        .map(|e| Wake::Input(Input::Health(e))),
                };
                source = (source + 1) % 3;
                match wake {
                    Some(wake) => {
                        idle_sources = 0;
                        running = self.take(wake, &mut batch)?;
                        taken += 1;
                    }
                    None => idle_sources += 1,
                }
            }
            self.execute(batch).await?;
            if !running {
                return Ok(());
            }
        }
    }
}

fn driver_wake(event: DriverEvent) -> Wake {
    match event {
        DriverEvent::Input(input) => Wake::Input(input),
        DriverEvent::Refused(message) => Wake::Refused(message),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A running service framework (without its HTTP server): the actor, and
/// the driver when it has a master.
pub struct Service {
    handle: ServiceHandle,
    driver: Option<Driver>,
    /// The driver's event loop.
    driver_run: Option<JoinHandle<Result<(), SdkError>>>,
    stop: watch::Sender<bool>,
    /// `None` once it has been awaited to its end.
    actor: Option<JoinHandle<Result<(), RuntimeError>>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("driver", &self.driver)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Loads the state from `state`, subscribes to the configured masters
    /// (as the stored framework id, if any) and starts the actor. `leader`
    /// is the address the REST API is served on.
    pub async fn start(
        config: &ServiceConfig,
        state: Arc<dyn StateStore>,
        leader: String,
    ) -> Result<Service, RuntimeError> {
        let masters = config.masters();
        if masters.is_empty() {
            return Err(RuntimeError::NoMaster);
        }
        let mut driver_config = DriverConfig::new(masters.clone(), config.framework_info(&leader));
        driver_config.framework_id_store = Some(state.framework_ids());
        // Updates are acknowledged once the engine's changes are stored.
        driver_config.auto_acknowledge = false;
        // Known before the master confirms it, when this framework ran before.
        let framework_id = match state.framework_ids().load().await {
            Ok(id) => id.map(FrameworkId::into_string),
            Err(e) => {
                return Err(RuntimeError::Recover(StateError::Corrupt {
                    key: "framework id".to_owned(),
                    reason: e.to_string(),
                }));
            }
        };
        let info = ServiceInfo {
            framework_id,
            leader,
            master: masters.join(","),
            name: config.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let engine_config = EngineConfig {
            decline_refuse_seconds: config.decline_refuse_seconds,
            roles: config.roles(),
            ..EngineConfig::default()
        };
        Self::launch(
            engine_config,
            state,
            info,
            Some(driver_config),
            config.reconcile_interval,
        )
        .await
    }

    /// A service framework with no master: the engine, store and handle
    /// work, but no offers ever arrive and calls to the master are dropped.
    /// For tests of the API against real state.
    pub async fn start_detached(state: Arc<dyn StateStore>) -> Result<Service, RuntimeError> {
        let info = ServiceInfo {
            framework_id: None,
            leader: String::new(),
            master: String::new(),
            name: "agora-service".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        Self::launch(
            EngineConfig::default(),
            state,
            info,
            None,
            Duration::from_secs(300),
        )
        .await
    }

    async fn launch(
        engine_config: EngineConfig,
        state: Arc<dyn StateStore>,
        info: ServiceInfo,
        driver_config: Option<DriverConfig>,
        reconcile_interval: Duration,
    ) -> Result<Service, RuntimeError> {
        let recovered = state.load().await.map_err(RuntimeError::Recover)?;
        let roles = engine_config.roles.clone();
        let engine = Engine::new(engine_config, recovered);
        let (health, health_events) = HealthMonitor::new();
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (handle, requests) = ServiceHandle::new(1024, events.clone());
        let (driver_tx, driver_events) = mpsc::unbounded_channel();
        let (driver, driver_run) = match driver_config {
            Some(cfg) => {
                let (driver, run) = Driver::start(cfg, Forwarder { inputs: driver_tx });
                (Some(driver), Some(run))
            }
            None => (None, None),
        };
        let (stop, stopped) = watch::channel(false);
        let actor = Actor {
            state: ServiceState { engine, health, info },
            store: state,
            master: driver.clone().map(|d| Arc::new(d) as Arc<dyn Master>),
            events,
            roles,
        };
        let actor = tokio::spawn(actor.run(
            requests,
            driver_events,
            health_events,
            stopped,
            reconcile_interval.max(Duration::from_millis(10)),
        ));
        Ok(Service {
            handle,
            driver,
            driver_run,
            stop,
            actor: Some(actor),
        })
    }

    /// A handle to this framework.
    pub fn handle(&self) -> ServiceHandle {
        self.handle.clone()
    }

    /// The framework id, once the master assigned it.
    pub fn framework_id(&self) -> Option<FrameworkId> {
        self.driver.as_ref().and_then(Driver::framework_id)
    }

    /// Waits until the actor ends by itself (an error, or the master
    /// refusing the framework); at once if it has already ended.
    pub async fn stopped(&mut self) -> Result<(), RuntimeError> {
        let Some(actor) = self.actor.as_mut() else {
            return Ok(());
        };
        let result = actor.await;
        self.actor = None;
        joined(result)
    }

    /// Stops the framework without tearing it down: the master keeps its
    /// tasks running for the failover timeout, and a new start on the same
    /// state picks them up again.
    pub async fn stop(mut self) -> Result<(), RuntimeError> {
        if let Some(driver) = &self.driver {
            driver.stop();
        }
        let _ = self.stop.send(true);
        let result = match self.actor.take() {
            Some(actor) => joined(actor.await),
            None => Ok(()),
        };
        self.driver = None;
        if let Some(run) = self.driver_run.take() {
            // The event loop notices the stop at once; it holds the store
            // (through the framework id store) until it ends.
            let _ = tokio::time::timeout(Duration::from_secs(5), run).await;
        }
        result
    }

    /// Stops acting at once, without tearing the framework down: the driver
    /// makes no more calls and the actor is dropped in the middle of whatever
    /// it was doing (a write in flight lands whole or not at all). For a
    /// leader whose term ended: the next leader starts from the store.
    pub fn halt(mut self) {
        self.halt_now();
    }

    fn halt_now(&mut self) {
        if let Some(driver) = self.driver.take() {
            driver.stop();
        }
        let _ = self.stop.send(true);
        if let Some(actor) = self.actor.take() {
            actor.abort();
        }
        if let Some(run) = self.driver_run.take() {
            run.abort();
        }
    }
}

impl Drop for Service {
    /// A service dropped without [`Service::stop`] halts: no driver or actor
    /// keeps acting for it in the background.
    fn drop(&mut self) {
        self.halt_now();
    }
}

/// The service framework as the active instance of one leadership term.
impl Elected for Service {
    type Error = RuntimeError;

    fn api(&self) -> axum::Router {
        crate::api::router(self.handle())
    }

    async fn stopped(&mut self) -> Result<(), RuntimeError> {
        Service::stopped(self).await
    }

    async fn halt(self) {
        Service::halt(self);
    }

    async fn stop(self) -> Result<(), RuntimeError> {
        Service::stop(self).await
    }

    /// Store failures end the term (another may succeed); a refusal by the
    /// master, unreadable state or a crash would repeat in every term.
    fn is_fatal(error: &RuntimeError) -> bool {
        match error {
            RuntimeError::Persist(_) | RuntimeError::Recover(StateError::Store(_)) => false,
            RuntimeError::NoMaster
            | RuntimeError::OpenStore { .. }
            | RuntimeError::Recover(_)
            | RuntimeError::Refused(_)
            | RuntimeError::Crashed(_)
            | RuntimeError::Http(_)
            | RuntimeError::ZkUrl(_)
            | RuntimeError::Election(_) => true,
        }
    }
}

fn joined(result: Result<Result<(), RuntimeError>, tokio::task::JoinError>) -> Result<(), RuntimeError> {
    match result {
        Ok(result) => result,
        Err(e) => Err(RuntimeError::Crashed(e.to_string())),
    }
}

/// Runs the service framework with its state in `config.work_dir` and the
/// REST API on `listener`, until `shutdown` resolves (or the master refuses
/// the framework, or a state change cannot be stored). Stopping never kills
/// tasks: the next run on the same work dir picks them up.
///
/// With `config.zk`, runs as one instance of several instead (see
/// [`serve_elected`]), its state in ZooKeeper under `PATH/state` and the
/// election in `PATH/leader`.
pub async fn serve(
    config: ServiceConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RuntimeError> {
    if let Some(url) = config.zk.clone() {
        let options = ZkOptions {
            session_timeout: config.zk_session_timeout,
        };
        let (election, store_for_term) = agora_framework_ha::on_zookeeper(&url, options)?;
        let state_for_term = move |leadership: &Leadership| {
            let store = store_for_term(leadership);
            async move { Ok(Arc::new(KvStateStore::new(store.await?)) as Arc<dyn StateStore>) }
        };
        return serve_elected(config, election, state_for_term, listener, shutdown).await;
    }
    let store = agora_store::open_embedded(&config.work_dir).map_err(|source| RuntimeError::OpenStore {
        dir: config.work_dir.clone(),
        source,
    })?;
    serve_with_state(config, Arc::new(KvStateStore::new(store)), listener, shutdown).await
}

/// Runs one instance of a highly available service framework until
/// `shutdown` resolves: the REST API on `listener`, a candidate in
/// `election`. Elected, it loads the state afresh from `state_for_term` (a
/// store bound to that term, so a deposed leader's writes fail), subscribes
/// with the stored framework id, reconciles and serves; standing by, it
/// forwards REST calls to the leader. When its term ends it stops acting at
/// once (tasks keep running) and campaigns again.
pub async fn serve_elected<F, Fut>(
    config: ServiceConfig,
    election: SharedElection,
    state_for_term: F,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RuntimeError>
where
    F: Fn(&Leadership) -> Fut + Send,
    Fut: Future<Output = Result<Arc<dyn StateStore>, agora_store::StoreError>> + Send,
{
    if config.masters().is_empty() {
        return Err(RuntimeError::NoMaster);
    }
    let local = listener.local_addr().map_err(RuntimeError::Http)?;
    let address = agora_framework_ha::advertised_address(local, &config.hostname());
    let advertised = address.clone();
    let start = move |leadership: &Leadership| {
        let state = state_for_term(leadership);
        let config = config.clone();
        let address = advertised.clone();
        async move {
            let state = state
                .await
                .map_err(|e| RuntimeError::Recover(StateError::Store(e)))?;
            Service::start(&config, state, address).await
        }
    };
    agora_framework_ha::run_elected(election, address, listener, start, shutdown)
        .await
        .map_err(RuntimeError::from)
}

/// [`serve`] with the state in `state` instead of `config.work_dir`.
pub async fn serve_with_state(
    config: ServiceConfig,
    state: Arc<dyn StateStore>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RuntimeError> {
    let leader = listener.local_addr().map_err(RuntimeError::Http)?.to_string();
    let mut service = Service::start(&config, state, leader.clone()).await?;
    tracing::info!(address = %leader, masters = ?config.master, "service framework API listening");
    let router = crate::api::router(service.handle());
    let (http_stop, http_stopped) = watch::channel(false);
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let mut stopped = http_stopped;
        let _ = stopped.wait_for(|s| *s).await;
    });
    let mut server = std::pin::pin!(server.into_future());
    let outcome = tokio::select! {
        result = &mut server => result.map_err(RuntimeError::Http),
        () = shutdown => Ok(()),
        result = service.stopped() => result,
    };
    // Event streams never end by themselves: give requests a moment, then drop them.
    let _ = http_stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), &mut server).await;
    let stopped = service.stop().await;
    outcome.and(stopped)
}

#[cfg(test)]
mod tests {
    use agora_store::MemoryStore;

    use super::*;
    use crate::app::AppDefinition;
    use crate::engine::Recovered;
    use crate::handle::DeploymentRef;

    /// What the actor did, in order.
    type Log = mpsc::UnboundedReceiver<String>;

    /// A store that logs each batch (and can be made to fail).
    struct RecordingStore {
        log: mpsc::UnboundedSender<String>,
        fail: bool,
    }

    impl StateStore for RecordingStore {
        fn load(&self) -> BoxFuture<'_, Result<Recovered, StateError>> {
            Box::pin(async { Ok(Recovered::default()) })
        }

        fn apply(&self, changes: Vec<StateChange>) -> BoxFuture<'_, Result<(), StateError>> {
            Box::pin(async move {
                if self.fail {
                    let _ = self.log.send("store failed".to_owned());
                    return Err(StateError::Store(agora_store::StoreError::Io("disk full".into())));
                }
                let _ = self.log.send(format!("store {}", changes.len()));
                Ok(())
            })
        }

        fn framework_ids(&self) -> Arc<dyn agora_sdk::FrameworkIdStore> {
            Arc::new(agora_sdk::StoreIdStore::new(
                Arc::new(MemoryStore::default()),
                "/id",
            ))
        }
    }

    /// A master that logs each call.
    struct RecordingMaster {
        log: mpsc::UnboundedSender<String>,
    }

    impl Master for RecordingMaster {
        fn call(&self, call: MasterCall) -> BoxFuture<'_, Result<(), SdkError>> {
            let entry = match call {
                MasterCall::Accept { offer_id, .. } => format!("accept {offer_id}"),
                MasterCall::Acknowledge(status) => format!("ack {}", status.task_id),
                other => format!("{other:?}"),
            };
            let _ = self.log.send(entry);
            Box::pin(async { Ok(()) })
        }
    }

    fn actor(fail_store: bool) -> (Actor, Log) {
        let (log, entries) = mpsc::unbounded_channel();
        let (health, _events) = HealthMonitor::new();
        let actor = Actor {
            state: ServiceState {
                engine: Engine::new(EngineConfig::default(), Recovered::default()),
                health,
                info: ServiceInfo {
                    framework_id: None,
                    leader: String::new(),
                    master: String::new(),
                    name: "test".into(),
                    version: "0".into(),
                },
            },
            store: Arc::new(RecordingStore {
                log: log.clone(),
                fail: fail_store,
            }),
            master: Some(Arc::new(RecordingMaster { log })),
            events: broadcast::channel(16).0,
            roles: vec!["*".into()],
        };
        (actor, entries)
    }

    fn drain(log: &mut Log) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(entry) = log.try_recv() {
            out.push(entry);
        }
        out
    }

    fn put(id: &str) -> StateChange {
        StateChange::PutApp(AppDefinition::new(AppId::parse(id).expect("valid id"), "sleep 1"))
    }

    fn accept(offer: &str) -> Effect {
        Effect::Accept {
            offer_id: OfferId::new_unchecked(offer),
            tasks: Vec::new(),
        }
    }

    fn deployment_reply() -> Result<Reply, ServiceError> {
        Ok(Reply::Deployment(DeploymentRef {
            id: crate::handle::DeploymentId::generate(),
            version: jiff::Timestamp::UNIX_EPOCH,
        }))
    }

    #[tokio::test]
    async fn state_changes_are_stored_before_a_launch_that_follows_them() {
        let (mut actor, mut log) = actor(false);
        let batch = Batch {
            effects: vec![
                Effect::Persist(vec![put("/a")]),
                Effect::Persist(vec![put("/b")]),
                accept("offer-1"),
                Effect::Persist(vec![put("/c")]),
                Effect::Revive,
                Effect::Persist(vec![put("/d")]),
            ],
            ..Batch::default()
        };

        actor.execute(batch).await.expect("execute");

        assert_eq!(
            drain(&mut log),
            vec!["store 2", "accept offer-1", "Revive([\"*\"])", "store 2"]
        );
    }

    #[tokio::test]
    async fn updates_are_acknowledged_only_after_their_changes_are_stored() {
        let (mut actor, mut log) = actor(false);
        let batch = Batch {
            effects: vec![Effect::Persist(vec![put("/a")])],
            acks: vec![v1::TaskStatus {
                task_id: "t1".into(),
                uuid: b"u1".to_vec(),
                ..Default::default()
            }],
            ..Batch::default()
        };

        actor.execute(batch).await.expect("execute");

        assert_eq!(drain(&mut log), vec!["store 1", "ack t1"]);
    }

    #[tokio::test]
    async fn a_failed_write_launches_nothing_answers_nothing_and_stops_the_actor() {
        let (mut actor, mut log) = actor(true);
        let (reply, answer) = oneshot::channel();
        let batch = Batch {
            effects: vec![Effect::Persist(vec![put("/a")]), accept("offer-1")],
            acks: vec![v1::TaskStatus {
                task_id: "t1".into(),
                uuid: b"u1".to_vec(),
                ..Default::default()
            }],
            replies: vec![(reply, deployment_reply())],
        };

        let result = actor.execute(batch).await;

        assert!(matches!(result, Err(RuntimeError::Persist(_))), "{result:?}");
        assert_eq!(drain(&mut log), vec!["store failed"]);
        assert!(answer.await.is_err(), "the command must not be answered");
    }

    #[tokio::test]
    async fn a_command_is_answered_after_its_changes_are_stored() {
        let shared: agora_store::SharedStore = Arc::new(MemoryStore::default());
        let service = Service::start_detached(Arc::new(KvStateStore::new(shared.clone())))
            .await
            .expect("start");
        let app = AppDefinition::new(AppId::parse("/web").expect("valid id"), "sleep 100");

        service.handle().create_app(app).await.expect("created");

        let stored = KvStateStore::new(shared).load().await.expect("load");
        assert_eq!(stored.apps.len(), 1);
        assert_eq!(stored.apps[0].id.as_str(), "/web");
        service.stop().await.expect("stop");
    }

    #[tokio::test]
    async fn a_restarted_service_serves_the_apps_it_stored() {
        let shared: agora_store::SharedStore = Arc::new(MemoryStore::default());
        let state = || Arc::new(KvStateStore::new(shared.clone()));
        let first = Service::start_detached(state()).await.expect("start");
        let app = AppDefinition::new(AppId::parse("/web").expect("valid id"), "sleep 100");
        let created = first.handle().create_app(app).await.expect("created");
        first.stop().await.expect("stop");

        let second = Service::start_detached(state()).await.expect("restart");

        let apps = second.handle().apps().await;
        assert_eq!(apps.len(), 1);
        let id = &apps[0].app.id;
        assert_eq!(
            second.handle().app_versions(id).await.expect("versions"),
            vec![created.version]
        );
        assert_eq!(
            second.handle().deployments().await.len(),
            1,
            "the deployment is still running"
        );
        second.stop().await.expect("stop");
    }

    #[tokio::test]
    async fn a_stopped_service_answers_unavailable() {
        let service = Service::start_detached(Arc::new(KvStateStore::new(Arc::new(MemoryStore::default()))))
            .await
            .expect("start");
        let handle = service.handle();
        service.stop().await.expect("stop");

        let err = handle
            .app(&AppId::parse("/web").expect("valid id"))
            .await
            .expect_err("stopped");

        assert_eq!(err.http_status(), 503);
    }

    #[test]
    fn the_framework_survives_a_week_away_and_is_partition_aware() {
        let config = ServiceConfig::new(
            vec!["m:5050".into()],
            "127.0.0.1:8080".parse().expect("addr"),
            ".".into(),
        );
        let info = config.framework_info("127.0.0.1:8080");
        assert_eq!(info.failover_timeout_seconds, 7.0 * 24.0 * 3600.0);
        assert!(
            info.capabilities
                .contains(&(v1::FrameworkCapability::PartitionAware as i32))
        );
        assert_eq!(info.roles, vec!["*".to_owned()]);
        assert_eq!(info.name, "agora-service");
    }

    #[test]
    fn the_command_line_takes_a_master_list_and_durations() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            config: ServiceConfig,
        }
        let cli = Cli::parse_from([
            "agora-service",
            "--master",
            "a:5050,b:5050",
            "--reconcile-interval",
            "30s",
            "--role",
            "web,*",
        ]);
        assert_eq!(cli.config.master, vec!["a:5050".to_owned(), "b:5050".to_owned()]);
        assert_eq!(cli.config.reconcile_interval, Duration::from_secs(30));
        assert_eq!(cli.config.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(cli.config.failover_timeout, DEFAULT_FAILOVER_TIMEOUT);
        assert_eq!(cli.config.roles(), vec!["web".to_owned(), "*".to_owned()]);
    }

    #[test]
    fn the_command_line_takes_zookeeper_urls_for_the_state_and_the_masters() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            config: ServiceConfig,
        }
        let cli = Cli::parse_from([
            "agora-service",
            "--master",
            "zk://z1:2181,z2:2181/agora",
            "--zk",
            "zk://z1:2181,z2:2181/agora-service",
            "--zk-session-timeout",
            "3s",
        ]);
        assert_eq!(
            cli.config.masters(),
            vec!["zk://z1:2181,z2:2181/agora".to_owned()]
        );
        let zk = cli.config.zk.expect("--zk");
        assert_eq!(zk.hosts, vec!["z1:2181".to_owned(), "z2:2181".to_owned()]);
        assert_eq!(zk.path, "/agora-service");
        assert_eq!(cli.config.zk_session_timeout, Duration::from_secs(3));

        let bad = Cli::try_parse_from(["agora-service", "--master", "m:5050", "--zk", "http://z1/x"]);
        let message = bad.expect_err("refused").to_string();
        assert!(message.contains("--zk") && message.contains("zk://"), "{message}");
        let plain = Cli::parse_from(["agora-service", "--master", "m:5050"]);
        assert_eq!(
            plain.config.zk, None,
            "without --zk: one instance on its work dir"
        );
    }
}
