//! The running cron framework: one actor owns the [`Engine`]; it is fed by the SDK driver's
//! callbacks, the [`CronHandle`]'s commands and a timer set to [`Engine::next_deadline`], and
//! carries out the engine's effects in order. [`serve`] adds the REST API on a listener.
//! With `--zk`, [`serve`] runs one instance of several ([`serve_elected`]): the elected one
//! runs the framework on its state in ZooKeeper, the others forward REST calls to it.
//!
//! Architecture invariant: every change the engine makes is stored before any launch, kill or
//! acknowledgement that follows it is sent, and a command is answered only after what it
//! changed is stored. If a write fails the framework stops (it never acts on state it could
//! not record); a restart recovers from the store. Several ready inputs are stepped together
//! and their writes stored as one batch.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agora_framework_ha::{Elected, ElectedError};
use agora_proto::{OfferId, v1};
use agora_sdk::{Driver, DriverConfig, Filters, Scheduler, SdkError, Subscribed};
use agora_store::{ElectionError, Leadership, SharedElection, ZkOptions, ZkUrl};
use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::engine::{Change, Effect, Engine, EngineConfig, RUN_LABEL};
use crate::handle::{Command, CronError, CronHandle, CronInfo};
use crate::state::{KvStateStore, StateError, StateStore};

/// A week: how long the master keeps the framework's tasks running while it is away.
pub const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// At most this many ready inputs are stepped before their effects are carried out.
const MAX_BATCH: usize = 256;

/// The timer never sleeps longer than this (the wall clock may be adjusted meanwhile).
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Settings of `agora cron`.
#[derive(Debug, Clone, clap::Args)]
pub struct CronConfig {
    /// Masters to subscribe to, `host:port`, comma-separated (tried in turn).
    #[arg(long, value_delimiter = ',', required = true)]
    pub master: Vec<String>,
    /// Address of the REST API (Chronos').
    #[arg(long, default_value = "127.0.0.1:4400")]
    pub listen: SocketAddr,
    /// Directory of the framework's state (jobs, run history, framework id).
    #[arg(long, default_value = "./agora-data/cron")]
    pub work_dir: PathBuf,
    /// The framework's name, shown by the master.
    #[arg(long, default_value = "agora-cron")]
    pub name: String,
    /// Role to subscribe with.
    #[arg(long, default_value = "*")]
    pub role: String,
    /// How long the master keeps this framework's tasks running after it disconnects
    /// (restarts of the framework must be shorter, or running runs are lost).
    #[arg(long, default_value = "7days", value_parser = humantime::parse_duration)]
    pub failover_timeout: Duration,
    /// Hostname announced to the master (default: this machine's); also what standbys forward
    /// to when `--listen` is a wildcard address.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Run highly available with the state in ZooKeeper, e.g. `zk://h1:2181,h2:2181/agora-cron`:
    /// instances with the same URL elect one that acts (`PATH/leader`, state under
    /// `PATH/state`); the others forward REST calls to it. Without it: one instance, state in
    /// `--work-dir`.
    #[arg(long)]
    pub zk: Option<ZkUrl>,
    /// The ZooKeeper session timeout: a leader cut off from ZooKeeper stops acting within half
    /// of it, and a standby takes over after it.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub zk_session_timeout: Duration,
    /// Delay before the first retry of a failed run; doubles with each retry.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub retry_backoff: Duration,
    /// Longest delay between retries.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub retry_backoff_max: Duration,
    /// Finished runs kept per job.
    #[arg(long, default_value_t = 1000)]
    pub history: usize,
    /// Missed instants of one job run after downtime (older ones are recorded as skipped).
    #[arg(long, default_value_t = 100)]
    pub catch_up_limit: usize,
    /// Disable a job after this many failed runs in a row unless it has softError (0: never).
    #[arg(long, default_value_t = 0)]
    pub disable_after_failures: u64,
    /// Hold offers (and revive this long ahead) for runs due within this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub offer_lead: Duration,
    /// How often to reconcile every task in flight with the master, besides after each
    /// (re-)subscription.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub reconcile_interval: Duration,
    /// How long a running task may stay unknown to a (restarted) master whose agent has not
    /// re-registered before its run is launched again (Mesos' --agent_reregister_timeout).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub agent_reregister_timeout: Duration,
}

impl CronConfig {
    /// The defaults above, with the given masters and work dir, listening on `listen`.
    pub fn new(master: Vec<String>, listen: SocketAddr, work_dir: PathBuf) -> Self {
        let engine = EngineConfig::default();
        CronConfig {
            master,
            listen,
            work_dir,
            name: "agora-cron".to_owned(),
            role: "*".to_owned(),
            failover_timeout: DEFAULT_FAILOVER_TIMEOUT,
            hostname: None,
            zk: None,
            zk_session_timeout: ZkOptions::default().session_timeout,
            retry_backoff: engine.retry_backoff,
            retry_backoff_max: engine.retry_backoff_max,
            history: engine.history_limit,
            catch_up_limit: engine.catch_up_limit,
            disable_after_failures: engine.disable_after_failures,
            offer_lead: engine.offer_lead,
            reconcile_interval: Duration::from_secs(300),
            agent_reregister_timeout: engine.agent_reregister_timeout,
        }
    }

    /// The masters to subscribe to: `host:port` addresses, or one `zk://hosts/path` URL (whose
    /// host list the comma split cut apart).
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
        self.hostname.clone().unwrap_or_else(|| {
            hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "localhost".to_owned())
        })
    }

    /// The engine's settings from these flags.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            retry_backoff: self.retry_backoff,
            retry_backoff_max: self.retry_backoff_max,
            history_limit: self.history,
            catch_up_limit: self.catch_up_limit,
            disable_after_failures: self.disable_after_failures,
            offer_lead: self.offer_lead,
            agent_reregister_timeout: self.agent_reregister_timeout,
            ..EngineConfig::default()
        }
    }
}

/// Why the cron framework stopped.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No master address was given.
    #[error("no master address given (--master)")]
    NoMaster,
    /// The state store could not be opened.
    #[error("cannot open the state store in {0}: {1}")]
    Open(PathBuf, StateError),
    /// The stored state could not be loaded.
    #[error("cannot load the stored state: {0}")]
    Recover(StateError),
    /// A state change could not be stored: the framework stops rather than act on state it
    /// could not record.
    #[error("cannot store a state change, stopping: {0}")]
    Persist(StateError),
    /// The master refused to serve this framework any more.
    #[error("the master stopped serving this framework: {0}")]
    Refused(String),
    /// The actor panicked (a bug).
    #[error("the cron framework's actor crashed: {0}")]
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

/// What the SDK driver reports, forwarded to the actor.
#[derive(Debug)]
enum DriverEvent {
    Subscribed(Subscribed),
    Offers(Vec<v1::Offer>),
    Rescinded(OfferId),
    Update(v1::TaskStatus),
    Disconnected,
    Refused(String),
}

/// The SDK's callbacks: each one forwards to the actor and returns at once.
struct Forwarder {
    events: mpsc::UnboundedSender<DriverEvent>,
}

impl Scheduler for Forwarder {
    async fn subscribed(&mut self, _driver: &Driver, info: Subscribed) {
        tracing::info!(
            framework_id = %info.framework_id,
            resubscribed = info.resubscribed,
            "cron framework subscribed"
        );
        let _ = self.events.send(DriverEvent::Subscribed(info));
    }

    async fn offers(&mut self, _driver: &Driver, offers: Vec<v1::Offer>) {
        let _ = self.events.send(DriverEvent::Offers(offers));
    }

    async fn rescinded(&mut self, _driver: &Driver, offer_id: OfferId) {
        let _ = self.events.send(DriverEvent::Rescinded(offer_id));
    }

    async fn update(&mut self, _driver: &Driver, status: v1::TaskStatus) {
        let _ = self.events.send(DriverEvent::Update(status));
    }

    async fn disconnected(&mut self, _driver: &Driver) {
        tracing::warn!("cron framework lost its master; re-subscribing");
        let _ = self.events.send(DriverEvent::Disconnected);
    }

    async fn error(&mut self, _driver: &Driver, message: String) {
        tracing::error!(%message, "the master refused the cron framework");
        let _ = self.events.send(DriverEvent::Refused(message));
    }
}

/// One thing that woke the actor.
enum Wake {
    Command(Command),
    Driver(DriverEvent),
    Timer,
    Reconcile,
    Stop,
}

/// Answers to send once the batch's effects are carried out.
enum Reply {
    Unit(oneshot::Sender<Result<(), CronError>>, Result<(), CronError>),
}

/// The actor: the engine, the store and the driver.
struct Actor {
    engine: Engine,
    store: Arc<dyn StateStore>,
    driver: Driver,
    info: CronInfo,
}

impl Actor {
    /// Steps one wake-up; returns Ok(false) to stop.
    fn take(
        &mut self,
        wake: Wake,
        effects: &mut Vec<Effect>,
        replies: &mut Vec<Reply>,
    ) -> Result<bool, RuntimeError> {
        let now = Timestamp::now();
        match wake {
            Wake::Stop => return Ok(false),
            Wake::Timer => effects.extend(self.engine.tick(now)),
            Wake::Reconcile => {
                let tasks = self.engine.launched_tasks();
                if !tasks.is_empty() {
                    effects.push(Effect::Reconcile(tasks));
                }
            }
            Wake::Driver(event) => match event {
                DriverEvent::Subscribed(info) => {
                    self.info.framework_id = Some(info.framework_id.to_string());
                    effects.extend(self.engine.subscribed(now));
                }
                DriverEvent::Offers(offers) => effects.extend(self.engine.offers(offers, now)),
                DriverEvent::Rescinded(id) => self.engine.rescinded(&id),
                DriverEvent::Update(status) => effects.extend(self.engine.update(status, now)),
                DriverEvent::Disconnected => self.engine.disconnected(),
                DriverEvent::Refused(message) => return Err(RuntimeError::Refused(message)),
            },
            Wake::Command(command) => self.command(command, now, effects, replies),
        }
        Ok(true)
    }

    fn command(
        &mut self,
        command: Command,
        now: Timestamp,
        effects: &mut Vec<Effect>,
        replies: &mut Vec<Reply>,
    ) {
        let mut unit = |reply, result: Result<Vec<Effect>, CronError>| match result {
            Ok(e) => {
                effects.extend(e);
                replies.push(Reply::Unit(reply, Ok(())));
            }
            Err(e) => replies.push(Reply::Unit(reply, Err(e))),
        };
        match command {
            Command::Jobs(reply) => {
                let _ = reply.send(self.engine.jobs());
            }
            Command::Job(name, reply) => {
                let _ = reply.send(self.engine.job(&name));
            }
            Command::Runs(name, reply) => {
                let _ = reply.send(self.engine.runs(&name));
            }
            Command::Info(reply) => {
                let mut info = self.info.clone();
                if let Some(id) = self.driver.framework_id() {
                    info.framework_id = Some(id.to_string());
                }
                let _ = reply.send(info);
            }
            Command::Metrics(reply) => {
                let _ = reply.send(self.engine.metrics());
            }
            Command::PutJob(job, reply) => unit(reply, self.engine.put_job(*job, now)),
            Command::DeleteJob(name, reply) => unit(reply, self.engine.delete_job(&name, now)),
            Command::RunNow(name, reply) => unit(reply, self.engine.run_now(&name, now)),
            Command::KillTasks(name, reply) => unit(reply, self.engine.kill_tasks(&name, now)),
        }
    }

    /// Carries out a batch's effects: all its writes first (one atomic batch), then the calls
    /// in order. One exception: the ACCEPTs of runs whose armed record was written by an earlier
    /// batch (see [`crate::engine`]) go out while the batch is written, unless a KILL precedes
    /// them (REPLACE kills the run in flight first).
    async fn execute(&mut self, effects: Vec<Effect>) -> Result<(), RuntimeError> {
        let mut changes = Vec::new();
        let mut calls = Vec::new();
        for effect in effects {
            match effect {
                Effect::Persist(c) => changes.extend(c),
                other => calls.push(other),
            }
        }
        let accepts = calls
            .iter()
            .filter(|c| matches!(c, Effect::Launch { .. }))
            .count();
        let calls_after_write = calls.split_off(early_launches(&changes, &calls));
        let started = Instant::now();
        let write = async {
            let result = if changes.is_empty() {
                Ok(())
            } else {
                self.store.apply(changes).await.map_err(RuntimeError::Persist)
            };
            (result, Instant::now())
        };
        let send_early = async {
            futures::future::join_all(calls.into_iter().map(|l| self.call(l))).await;
            Instant::now()
        };
        let ((result, written), sent_early) = futures::future::join(write, send_early).await;
        result?;
        // Launches next to each other (one per agent) go out together: they use different
        // offers and tasks, and each waits for the master's answer.
        let mut calls = calls_after_write.into_iter().peekable();
        while let Some(call) = calls.next() {
            if !matches!(call, Effect::Launch { .. }) {
                self.call(call).await;
                continue;
            }
            let mut launches = vec![call];
            while let Some(next) = calls.next_if(|c| matches!(c, Effect::Launch { .. })) {
                launches.push(next);
            }
            futures::future::join_all(launches.into_iter().map(|l| self.call(l))).await;
        }
        if accepts > 0 {
            // Where a launch step's time goes (`agora bench cron`, docs/BENCHMARKS.md).
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let after_write = written.max(sent_early);
            tracing::debug!(
                target: "agora_cron::launch",
                accepts,
                write_ms = ms(written.duration_since(started)),
                early_calls_ms = ms(sent_early.duration_since(started)),
                calls_after_write_ms = ms(after_write.elapsed()),
                "launch step"
            );
        }
        Ok(())
    }

    async fn call(&self, effect: Effect) {
        let driver = &self.driver;
        let result = match &effect {
            Effect::Persist(_) => Ok(()),
            Effect::Launch { offer_ids, tasks, .. } => {
                let launched: Vec<_> = tasks
                    .iter()
                    .filter_map(|t| agora_proto::TaskId::parse(&t.task_id).ok())
                    .map(|t| (t, None))
                    .collect();
                let result = driver
                    .accept(offer_ids.clone(), tasks.clone(), Filters::refuse(Duration::ZERO))
                    .await;
                if result.is_ok() {
                    log_launch_lateness(tasks);
                }
                if result.is_err() {
                    // Did the launch reach the master? Ask; an unknown task is launched again.
                    let _ = driver.reconcile(launched).await;
                }
                result
            }
            Effect::Decline { offer_ids, refuse } => driver.decline(offer_ids.clone(), Some(*refuse)).await,
            Effect::Kill { task_id, agent_id } => driver.kill(task_id, agent_id.as_ref()).await,
            Effect::Reconcile(tasks) => driver.reconcile(tasks.clone()).await,
            Effect::Acknowledge(status) => driver.acknowledge(status).await,
            Effect::Suppress => driver.suppress(Vec::new()).await,
            Effect::Revive => driver.revive(Vec::new()).await,
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, effect = effect_name(&effect), "call to the master failed");
        }
    }
}

/// How many of `calls`, from the first, are ACCEPTs that need not wait for `changes`: launches
/// of armed runs whose armed record is durable already (not armed in this very batch).
fn early_launches(changes: &[Change], calls: &[Effect]) -> usize {
    let armed_now: std::collections::HashSet<&str> = changes
        .iter()
        .filter_map(|c| match c {
            Change::PutRun(_, run) if run.armed => Some(run.record.run_id.as_str()),
            _ => None,
        })
        .collect();
    calls
        .iter()
        .take_while(|call| match call {
            Effect::Launch { tasks, armed, .. } => {
                *armed
                    && tasks.iter().all(|t| {
                        t.labels
                            .iter()
                            .find(|l| l.key == RUN_LABEL)
                            .is_some_and(|l| !armed_now.contains(l.value.as_str()))
                    })
            }
            _ => false,
        })
        .count()
}

fn effect_name(effect: &Effect) -> &'static str {
    match effect {
        Effect::Persist(_) => "persist",
        Effect::Launch { .. } => "launch",
        Effect::Decline { .. } => "decline",
        Effect::Kill { .. } => "kill",
        Effect::Reconcile(_) => "reconcile",
        Effect::Acknowledge(_) => "acknowledge",
        Effect::Suppress => "suppress",
        Effect::Revive => "revive",
    }
}

/// The tokio instant of a wall-clock deadline (now when it passed), at most [`MAX_SLEEP`] away.
fn instant_of(deadline: Timestamp) -> Instant {
    let wait = deadline.duration_since(Timestamp::now());
    let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO).min(MAX_SLEEP);
    Instant::now() + wait
}

async fn run_actor(
    mut actor: Actor,
    mut commands: mpsc::Receiver<Command>,
    mut events: mpsc::UnboundedReceiver<DriverEvent>,
    mut stop: oneshot::Receiver<()>,
    reconcile_interval: Duration,
) -> Result<(), RuntimeError> {
    let mut reconcile = tokio::time::interval_at(Instant::now() + reconcile_interval, reconcile_interval);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Handle what came due while the framework was down.
    let first = actor.engine.tick(Timestamp::now());
    actor.execute(first).await?;
    loop {
        let deadline = actor.engine.next_deadline();
        let sleep_until = deadline
            .map(instant_of)
            .unwrap_or_else(|| Instant::now() + MAX_SLEEP);
        let wake = tokio::select! {
            biased;
            _ = &mut stop => Wake::Stop,
            _ = tokio::time::sleep_until(sleep_until) => Wake::Timer,
            Some(event) = events.recv() => Wake::Driver(event),
            Some(command) = commands.recv() => Wake::Command(command),
            _ = reconcile.tick() => Wake::Reconcile,
        };
        let mut effects = Vec::new();
        let mut replies = Vec::new();
        let mut keep_going = actor.take(wake, &mut effects, &mut replies)?;
        // Step whatever else is ready, so their writes share one batch.
        let mut taken = 1;
        while keep_going && taken < MAX_BATCH {
            let next = match events.try_recv() {
                Ok(event) => Wake::Driver(event),
                Err(_) => match commands.try_recv() {
                    Ok(command) => Wake::Command(command),
                    Err(_) => break,
                },
            };
            keep_going = actor.take(next, &mut effects, &mut replies)?;
            taken += 1;
        }
        let result = actor.execute(effects).await;
        for reply in replies {
            match reply {
                Reply::Unit(tx, answer) => {
                    let answer = match &result {
                        Ok(()) => answer,
                        Err(e) => Err(CronError::Internal(e.to_string())),
                    };
                    let _ = tx.send(answer);
                }
            }
        }
        result?;
        if !keep_going {
            return Ok(());
        }
    }
}

/// The cron framework without its HTTP server: the actor and the SDK driver on one state.
pub struct Cron {
    handle: CronHandle,
    /// `None` once stopped or halted.
    driver: Option<Driver>,
    /// The driver's event loop.
    driver_task: Option<JoinHandle<Result<(), SdkError>>>,
    stop: Option<oneshot::Sender<()>>,
    /// `None` once it has been awaited to its end.
    actor: Option<JoinHandle<Result<(), RuntimeError>>>,
}

impl std::fmt::Debug for Cron {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cron")
            .field("driver", &self.driver)
            .finish_non_exhaustive()
    }
}

impl Cron {
    /// Loads the state from `store`, subscribes to the configured masters (as the stored
    /// framework id, if any) and starts the actor, which first handles what came due while
    /// no instance ran. `leader` is the address the REST API is served on.
    pub async fn start(
        config: &CronConfig,
        store: Arc<dyn StateStore>,
        leader: String,
    ) -> Result<Cron, RuntimeError> {
        let masters = config.masters();
        if masters.is_empty() {
            return Err(RuntimeError::NoMaster);
        }
        let recovered = store.load().await.map_err(RuntimeError::Recover)?;
        let (engine, problems) = Engine::recover(config.engine_config(), recovered);
        for (job, problem) in problems {
            tracing::error!(%job, %problem, "stored job's schedule does not parse; it will not fire");
        }
        let framework = v1::FrameworkInfo {
            name: config.name.clone(),
            user: std::env::var("USER").unwrap_or_default(),
            roles: vec![config.role.clone()],
            failover_timeout_seconds: config.failover_timeout.as_secs_f64(),
            checkpoint: true,
            capabilities: vec![v1::FrameworkCapability::PartitionAware as i32],
            hostname: config.hostname(),
            webui_url: format!("http://{leader}"),
            ..Default::default()
        };
        let mut driver_config = DriverConfig::new(masters.clone(), framework);
        driver_config.framework_id_store = Some(store.framework_id_store());
        driver_config.auto_acknowledge = false;

        let (events_tx, events) = mpsc::unbounded_channel();
        let (driver, driver_task) = Driver::start(driver_config, Forwarder { events: events_tx });
        let (commands_tx, commands) = mpsc::channel(1024);
        let handle = CronHandle::new(commands_tx);
        let actor = Actor {
            engine,
            store,
            driver: driver.clone(),
            info: CronInfo {
                framework_id: driver.framework_id().map(|id| id.to_string()),
                leader,
                master: masters.join(","),
            },
        };
        let (stop, actor_stop) = oneshot::channel();
        let actor = tokio::spawn(run_actor(
            actor,
            commands,
            events,
            actor_stop,
            config.reconcile_interval,
        ));
        Ok(Cron {
            handle,
            driver: Some(driver),
            driver_task: Some(driver_task),
            stop: Some(stop),
            actor: Some(actor),
        })
    }

    /// The interface the REST API uses.
    pub fn handle(&self) -> CronHandle {
        self.handle.clone()
    }

    /// Waits until the actor ends by itself (a write failed, the master refused the
    /// framework); at once if it has already ended.
    pub async fn stopped(&mut self) -> Result<(), RuntimeError> {
        let Some(actor) = self.actor.as_mut() else {
            return Ok(());
        };
        let result = actor.await;
        self.actor = None;
        match result {
            Ok(result) => result,
            Err(e) => Err(RuntimeError::Crashed(e.to_string())),
        }
    }

    /// Stops without tearing the framework down (its tasks keep running for the failover
    /// timeout; a start on the same state adopts them) and waits until it stopped.
    pub async fn stop(mut self) -> Result<(), RuntimeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(driver) = self.driver.take() {
            driver.stop();
        }
        let result = match self.actor.take() {
            Some(mut actor) => match tokio::time::timeout(Duration::from_secs(5), &mut actor).await {
                Ok(Ok(result)) => result,
                Ok(Err(e)) => Err(RuntimeError::Crashed(e.to_string())),
                Err(_) => {
                    actor.abort();
                    Ok(())
                }
            },
            None => Ok(()),
        };
        if let Some(task) = self.driver_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        result
    }

    /// Stops acting at once, without tearing the framework down: the driver makes no more
    /// calls and the actor is dropped in the middle of whatever it was doing (a write in
    /// flight lands whole or not at all). For a leader whose term ended: the next leader
    /// starts from the store.
    pub fn halt(mut self) {
        self.halt_now();
    }

    fn halt_now(&mut self) {
        if let Some(driver) = self.driver.take() {
            driver.stop();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(actor) = self.actor.take() {
            actor.abort();
        }
        if let Some(task) = self.driver_task.take() {
            task.abort();
        }
    }
}

impl Drop for Cron {
    /// A framework dropped without [`Cron::stop`] halts: no driver or actor keeps acting for
    /// it in the background.
    fn drop(&mut self) {
        self.halt_now();
    }
}

/// The cron framework as the active instance of one leadership term.
impl Elected for Cron {
    type Error = RuntimeError;

    fn api(&self) -> axum::Router {
        crate::api::router(self.handle())
    }

    async fn stopped(&mut self) -> Result<(), RuntimeError> {
        Cron::stopped(self).await
    }

    async fn halt(self) {
        Cron::halt(self);
    }

    async fn stop(self) -> Result<(), RuntimeError> {
        Cron::stop(self).await
    }

    /// Store failures end the term (another may succeed); a refusal by the master,
    /// unreadable state or a crash would repeat in every term.
    fn is_fatal(error: &RuntimeError) -> bool {
        match error {
            RuntimeError::Persist(_) | RuntimeError::Recover(StateError::Store(_)) => false,
            RuntimeError::NoMaster
            | RuntimeError::Open(..)
            | RuntimeError::Recover(_)
            | RuntimeError::Refused(_)
            | RuntimeError::Crashed(_)
            | RuntimeError::Http(_)
            | RuntimeError::ZkUrl(_)
            | RuntimeError::Election(_) => true,
        }
    }
}

/// A cron framework running in this process (see [`start`]).
#[derive(Debug)]
pub struct CronFramework {
    handle: CronHandle,
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), RuntimeError>>,
}

impl CronFramework {
    /// The interface the REST API uses, for in-process callers.
    pub fn handle(&self) -> CronHandle {
        self.handle.clone()
    }

    /// The address the REST API listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops the framework without tearing it down (its tasks keep running for the failover
    /// timeout; a restart with the same work dir adopts them) and waits until it stopped.
    pub async fn stop(mut self) -> Result<(), RuntimeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait().await
    }

    /// Waits until the framework stops by itself (an error: the master refused it, a write
    /// failed, the listener failed).
    pub async fn wait(&mut self) -> Result<(), RuntimeError> {
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(RuntimeError::Crashed(e.to_string())),
        }
    }
}

/// Starts the cron framework: recovers the state from `config.work_dir`, subscribes to the
/// master, runs the jobs and serves the REST API on `listener`. Returns once the state is
/// recovered and the API is being served.
pub async fn start(
    config: CronConfig,
    listener: tokio::net::TcpListener,
) -> Result<CronFramework, RuntimeError> {
    if config.masters().is_empty() {
        return Err(RuntimeError::NoMaster);
    }
    let state_dir = config.work_dir.join("state");
    let store =
        KvStateStore::open_embedded(&state_dir).map_err(|e| RuntimeError::Open(state_dir.clone(), e))?;
    let listen = listener.local_addr().map_err(RuntimeError::Http)?;
    let mut cron = Cron::start(&config, Arc::new(store), listen.to_string()).await?;
    let handle = cron.handle();

    let (stop_http, http_stop) = oneshot::channel::<()>();
    let http = axum::serve(listener, crate::api::router(handle.clone()))
        .with_graceful_shutdown(async move {
            let _ = http_stop.await;
        })
        .into_future();
    let mut http_task = tokio::spawn(http);
    tracing::info!(address = %listen, "cron framework listening");

    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let outcome = tokio::select! {
            _ = stopped => Ok(()),
            r = cron.stopped() => Err(match r {
                Ok(()) => RuntimeError::Crashed("the actor stopped".into()),
                Err(e) => e,
            }),
            r = &mut http_task => Err(match r {
                Ok(Ok(())) => RuntimeError::Crashed("the HTTP server stopped".into()),
                Ok(Err(e)) => RuntimeError::Http(e),
                Err(e) => RuntimeError::Crashed(e.to_string()),
            }),
        };
        let _ = stop_http.send(());
        let _ = cron.stop().await;
        if !http_task.is_finished() {
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut http_task).await;
        }
        outcome
    });
    Ok(CronFramework {
        handle,
        address: listen,
        stop: Some(stop),
        task,
    })
}

/// Runs the cron framework (see [`start`]) until `shutdown` completes or it fails. Shutdown
/// stops the driver without tearing the framework down: its tasks keep running for the
/// failover timeout, and a restart with the same work dir adopts them.
///
/// With `config.zk`, runs as one instance of several instead (see [`serve_elected`]), its
/// state in ZooKeeper under `PATH/state` and the election in `PATH/leader`.
pub async fn serve(
    config: CronConfig,
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
    let mut framework = start(config, listener).await?;
    tokio::select! {
        _ = shutdown => framework.stop().await,
        r = framework.wait() => r,
    }
}

/// Runs one instance of a highly available cron framework until `shutdown` resolves: the
/// REST API on `listener`, a candidate in `election`. Elected, it loads the state afresh from
/// `state_for_term` (a store bound to that term, so a deposed leader's writes fail),
/// subscribes with the stored framework id, reconciles (adopting runs in flight under their
/// task ids) and runs what came due meanwhile; standing by, it forwards REST calls to the
/// leader. When its term ends it stops acting at once (tasks keep running) and campaigns
/// again.
pub async fn serve_elected<F, Fut>(
    config: CronConfig,
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
            Cron::start(&config, state, address).await
        }
    };
    agora_framework_ha::run_elected(election, address, listener, start, shutdown)
        .await
        .map_err(RuntimeError::from)
}

/// Logs, per task of an ACCEPT the master has taken, how long after its
/// scheduled instant it was launched (target `agora_cron::launch`, level
/// debug). Task ids are `<job>.<instant ms>.<seq>.<attempt>`; the instant is
/// read back from the id, so this needs no state.
fn log_launch_lateness(tasks: &[v1::TaskInfo]) {
    if !tracing::enabled!(target: "agora_cron::launch", tracing::Level::DEBUG) {
        return;
    }
    let now = jiff::Timestamp::now();
    for task in tasks {
        let instant = task
            .labels
            .iter()
            .find(|l| l.key == crate::engine::SCHEDULED_AT_LABEL)
            .and_then(|l| l.value.parse::<jiff::Timestamp>().ok());
        let Some(instant) = instant else { continue };
        let lateness_ms = now.as_millisecond() - instant.as_millisecond();
        tracing::debug!(
            target: "agora_cron::launch",
            task = %task.task_id,
            scheduled_at = %instant,
            lateness_ms,
            "task launched"
        );
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::engine::Run;
    use crate::handle::{RunRecord, RunState, Trigger};
    use crate::job::JobName;

    fn launch(run_id: &str, armed: bool) -> Effect {
        let task = v1::TaskInfo {
            task_id: format!("{run_id}.0"),
            labels: vec![v1::Label {
                key: RUN_LABEL.to_owned(),
                value: run_id.to_owned(),
            }],
            ..Default::default()
        };
        Effect::Launch {
            offer_ids: Vec::new(),
            tasks: vec![task],
            armed,
        }
    }

    fn put_run(run_id: &str, armed: bool) -> Change {
        let job = JobName::new("a").unwrap();
        let at = jiff::Timestamp::UNIX_EPOCH;
        let record = RunRecord {
            job: job.clone(),
            run_id: run_id.to_owned(),
            trigger: Trigger::Schedule,
            scheduled_at: Some(at),
            attempt: 0,
            task_id: None,
            started_at: None,
            finished_at: None,
            state: RunState::Pending,
            exit_code: None,
            message: None,
        };
        let run = Run {
            seq: 0,
            record,
            due_at: at,
            agent_id: None,
            kill: None,
            relaunches: 0,
            armed,
            unconfirmed: false,
        };
        Change::PutRun(job, Box::new(run))
    }

    #[test]
    fn accepts_of_runs_armed_in_an_earlier_batch_go_out_with_the_write() {
        let calls = [launch("a.1", true), launch("b.1", true), Effect::Revive];
        assert_eq!(early_launches(&[put_run("a.1", false)], &calls), 2);
    }

    #[test]
    fn an_accept_of_a_run_armed_in_the_same_batch_waits_for_the_write() {
        let calls = [launch("a.1", true)];
        assert_eq!(early_launches(&[put_run("a.1", true)], &calls), 0);
    }

    #[test]
    fn accepts_not_of_armed_runs_or_after_another_call_wait_for_the_write() {
        assert_eq!(early_launches(&[], &[launch("a.1", false)]), 0);
        let kill_first = [
            Effect::Kill {
                task_id: agora_proto::TaskId::new_unchecked("a.0.0".to_owned()),
                agent_id: None,
            },
            launch("a.1", true),
        ];
        assert_eq!(early_launches(&[], &kill_first), 0);
    }

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        cron: CronConfig,
    }

    #[test]
    fn the_flags_parse_with_their_defaults() {
        Cli::command_for_tests().debug_assert();
        let cli = Cli::parse_from(["cron", "--master", "a:1,b:2"]);
        let expected = CronConfig::new(
            vec!["a:1".into(), "b:2".into()],
            "127.0.0.1:4400".parse().unwrap(),
            PathBuf::from("./agora-data/cron"),
        );
        assert_eq!(format!("{:?}", cli.cron), format!("{expected:?}"));
        assert_eq!(cli.cron.engine_config().retry_backoff, Duration::from_secs(10));
    }

    #[test]
    fn the_flags_take_zookeeper_urls_for_the_state_and_the_masters() {
        let cli = Cli::parse_from([
            "cron",
            "--master",
            "zk://z1:2181,z2:2181/agora",
            "--zk",
            "zk://z1:2181,z2:2181/agora-cron",
            "--zk-session-timeout",
            "3s",
        ]);
        assert_eq!(cli.cron.masters(), vec!["zk://z1:2181,z2:2181/agora".to_owned()]);
        let zk = cli.cron.zk.clone().expect("--zk");
        assert_eq!(zk.hosts, vec!["z1:2181".to_owned(), "z2:2181".to_owned()]);
        assert_eq!(zk.path, "/agora-cron");
        assert_eq!(cli.cron.zk_session_timeout, Duration::from_secs(3));

        let bad = Cli::try_parse_from(["cron", "--master", "m:5050", "--zk", "zk://z1"]);
        let message = bad.expect_err("refused").to_string();
        assert!(message.contains("--zk") && message.contains("path"), "{message}");
        let plain = Cli::parse_from(["cron", "--master", "a:1,b:2"]);
        assert_eq!(plain.cron.masters(), vec!["a:1".to_owned(), "b:2".to_owned()]);
        assert_eq!(plain.cron.zk, None, "without --zk: one instance on its work dir");
    }

    impl Cli {
        fn command_for_tests() -> clap::Command {
            <Cli as clap::CommandFactory>::command()
        }
    }
}
