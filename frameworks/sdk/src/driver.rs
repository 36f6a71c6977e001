//! [`Driver`]: the handle a framework makes calls with.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use agora_proto::v1;
use agora_proto::v1::scheduler_client::SchedulerClient;
use agora_proto::{AgentId, FrameworkId, OfferId, TaskId};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::masters::redirect_of;
use crate::offers::LaunchPlan;
use crate::subscription::EventLoop;
use crate::{DriverConfig, Filters, FrameworkIdStore, Scheduler, SdkError};

/// Whether the driver is still meant to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunState {
    Running,
    /// A TEARDOWN is in flight: the master's farewell is expected.
    TearingDown,
    Stopped,
}

/// The current subscription: the connection and the caller identity to put
/// on every call.
#[derive(Clone)]
pub(crate) struct Session {
    /// The master's `host:port`.
    pub(crate) master: String,
    pub(crate) client: SchedulerClient<Channel>,
    pub(crate) caller: v1::Caller,
}

pub(crate) struct Shared {
    pub(crate) session: watch::Sender<Option<Session>>,
    pub(crate) framework_id: watch::Sender<Option<FrameworkId>>,
    pub(crate) state: watch::Sender<RunState>,
    /// `(master, leader)`: a call to `master` was answered by a standby
    /// naming `leader`; the event loop moves there.
    pub(crate) redirect: watch::Sender<Option<(String, String)>>,
    pub(crate) id_store: Option<Arc<dyn FrameworkIdStore>>,
}

/// A cheap-to-clone handle for making calls to the master.
///
/// Calls made while the driver has no subscription (before the first
/// SUBSCRIBED, or while re-subscribing) fail at once with
/// [`SdkError::NotConnected`]; they are not queued, because after a
/// re-subscription the master re-sends offers and agents re-send
/// unacknowledged updates, and the framework should act on those. After the
/// driver stopped, calls fail with [`SdkError::Stopped`].
#[derive(Clone)]
pub struct Driver {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("framework_id", &self.framework_id())
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// Runs a framework until it is torn down, [`Driver::stop`] is called, or
/// the master refuses to serve it any more (then [`Scheduler::error`] is
/// called and the reason returned as `Err`).
pub async fn run<S: Scheduler>(config: DriverConfig, scheduler: S) -> Result<(), SdkError> {
    let (driver, event_loop) = Driver::new(config, scheduler);
    let result = event_loop.run().await;
    drop(driver);
    result
}

impl Driver {
    /// Starts a driver in a background task and returns its handle with
    /// the task, which ends as [`run`] does.
    pub fn start<S: Scheduler>(
        config: DriverConfig,
        scheduler: S,
    ) -> (Driver, JoinHandle<Result<(), SdkError>>) {
        let (driver, event_loop) = Driver::new(config, scheduler);
        (driver, tokio::spawn(event_loop.run()))
    }

    fn new<S: Scheduler>(config: DriverConfig, scheduler: S) -> (Driver, EventLoop<S>) {
        let framework_id = FrameworkId::parse(&config.framework.id).ok();
        let driver = Driver {
            shared: Arc::new(Shared {
                session: watch::Sender::new(None),
                framework_id: watch::Sender::new(framework_id),
                state: watch::Sender::new(RunState::Running),
                redirect: watch::Sender::new(None),
                id_store: config.framework_id_store.clone(),
            }),
        };
        let event_loop = EventLoop::new(config, driver.clone(), scheduler);
        (driver, event_loop)
    }

    /// The framework's id, once known (after the first SUBSCRIBED, or from
    /// the configuration / id store).
    pub fn framework_id(&self) -> Option<FrameworkId> {
        self.shared.framework_id.borrow().clone()
    }

    /// The `host:port` of the master the driver is subscribed with, if any.
    pub fn master(&self) -> Option<String> {
        self.shared.session.borrow().as_ref().map(|s| s.master.clone())
    }

    /// Whether the driver is subscribed right now.
    pub fn is_connected(&self) -> bool {
        self.shared.session.borrow().is_some()
    }

    /// Waits until the driver is subscribed; fails with
    /// [`SdkError::Stopped`] if it stops first.
    pub async fn wait_connected(&self) -> Result<(), SdkError> {
        let mut session = self.shared.session.subscribe();
        let mut state = self.shared.state.subscribe();
        tokio::select! {
            r = session.wait_for(Option::is_some) => r.map(|_| ()).map_err(|_| SdkError::Stopped),
            _ = state.wait_for(|s| *s == RunState::Stopped) => Err(SdkError::Stopped),
        }
    }

    /// Accepts `offer_ids` (all on one agent) and launches `tasks` on them.
    /// Problems with the tasks come back as TASK_ERROR / TASK_DROPPED
    /// updates, not as an error here.
    pub async fn accept(
        &self,
        offer_ids: Vec<OfferId>,
        tasks: Vec<v1::TaskInfo>,
        filters: Filters,
    ) -> Result<(), SdkError> {
        let operations = if tasks.is_empty() {
            Vec::new()
        } else {
            vec![v1::Operation {
                operation: Some(v1::operation::Operation::Launch(v1::Launch { task_infos: tasks })),
            }]
        };
        let offer_ids = offer_ids.into_iter().map(OfferId::into_string).collect();
        self.call(|mut client, caller| async move {
            client
                .accept(v1::AcceptRequest {
                    caller: Some(caller),
                    offer_ids,
                    operations,
                    filters: Some(filters.to_proto()),
                })
                .await
        })
        .await
    }

    /// Launches `tasks` on one offer, with default filters.
    pub async fn launch(&self, offer: &v1::Offer, tasks: Vec<v1::TaskInfo>) -> Result<(), SdkError> {
        let id = OfferId::parse(&offer.id).map_err(|e| SdkError::Protocol(format!("offer id: {e}")))?;
        self.accept(vec![id], tasks, Filters::default()).await
    }

    /// Carries out an [`crate::OfferPool`]'s plan: one ACCEPT per agent
    /// (sent concurrently) and one DECLINE for the unused offers, all with
    /// `filters`. Returns the first error, after trying every call.
    pub async fn execute(&self, plan: LaunchPlan, filters: Filters) -> Result<(), SdkError> {
        let accepts = plan
            .accepts
            .into_iter()
            .map(|(offer_ids, tasks)| self.accept(offer_ids, tasks, filters));
        let mut results = futures::future::join_all(accepts).await;
        if !plan.declines.is_empty() {
            results.push(self.decline(plan.declines, filters.refuse).await);
        }
        results.into_iter().collect()
    }

    /// Declines offers; their resources are not offered again to this
    /// framework for `refuse` (master default 5 s when `None`).
    pub async fn decline(&self, offer_ids: Vec<OfferId>, refuse: Option<Duration>) -> Result<(), SdkError> {
        let offer_ids = offer_ids.into_iter().map(OfferId::into_string).collect();
        let filters = Filters { refuse }.to_proto();
        self.call(|mut client, caller| async move {
            client
                .decline(v1::DeclineRequest {
                    caller: Some(caller),
                    offer_ids,
                    filters: Some(filters),
                })
                .await
        })
        .await
    }

    /// Clears offer filters and resumes offers for `roles` (all when empty).
    pub async fn revive(&self, roles: Vec<String>) -> Result<(), SdkError> {
        self.call(|mut client, caller| async move {
            client
                .revive(v1::ReviveRequest {
                    caller: Some(caller),
                    roles,
                })
                .await
        })
        .await
    }

    /// Stops offers for `roles` (all when empty) until [`Driver::revive`].
    pub async fn suppress(&self, roles: Vec<String>) -> Result<(), SdkError> {
        self.call(|mut client, caller| async move {
            client
                .suppress(v1::SuppressRequest {
                    caller: Some(caller),
                    roles,
                })
                .await
        })
        .await
    }

    /// Kills a task; the outcome arrives as a TASK_KILLED (or other) update.
    pub async fn kill(&self, task_id: &TaskId, agent_id: Option<&AgentId>) -> Result<(), SdkError> {
        let task_id = task_id.to_string();
        let agent_id = agent_id.map(AgentId::to_string).unwrap_or_default();
        self.call(|mut client, caller| async move {
            client
                .kill(v1::KillRequest {
                    caller: Some(caller),
                    task_id,
                    agent_id,
                    kill_policy: None,
                })
                .await
        })
        .await
    }

    /// Acknowledges a status update. Updates without a uuid (produced by
    /// the master) need none: this returns `Ok` without a call.
    pub async fn acknowledge(&self, status: &v1::TaskStatus) -> Result<(), SdkError> {
        if status.uuid.is_empty() {
            return Ok(());
        }
        let request = (
            status.agent_id.clone(),
            status.task_id.clone(),
            status.uuid.clone(),
        );
        self.call(|mut client, caller| async move {
            let (agent_id, task_id, uuid) = request;
            client
                .acknowledge(v1::AcknowledgeRequest {
                    caller: Some(caller),
                    agent_id,
                    task_id,
                    uuid,
                })
                .await
        })
        .await
    }

    /// Asks for the latest state of `tasks` (every task of the framework
    /// when empty); answers arrive as updates with REASON_RECONCILIATION.
    pub async fn reconcile(&self, tasks: Vec<(TaskId, Option<AgentId>)>) -> Result<(), SdkError> {
        let tasks = tasks
            .into_iter()
            .map(|(task_id, agent_id)| v1::ReconcileTask {
                task_id: task_id.into_string(),
                agent_id: agent_id.map(AgentId::into_string).unwrap_or_default(),
            })
            .collect();
        self.call(|mut client, caller| async move {
            client
                .reconcile(v1::ReconcileRequest {
                    caller: Some(caller),
                    tasks,
                })
                .await
        })
        .await
    }

    /// Sends opaque data to a task through its agent.
    pub async fn message(&self, agent_id: &AgentId, task_id: &TaskId, data: Vec<u8>) -> Result<(), SdkError> {
        let (agent_id, task_id) = (agent_id.to_string(), task_id.to_string());
        self.call(|mut client, caller| async move {
            client
                .message(v1::MessageRequest {
                    caller: Some(caller),
                    agent_id,
                    task_id,
                    data,
                })
                .await
        })
        .await
    }

    /// Removes the framework from the cluster: the master kills all its
    /// tasks and forgets it. On success the stored framework id is cleared
    /// and the driver stops (its `run` returns `Ok`).
    pub async fn teardown(&self) -> Result<(), SdkError> {
        let mut began = false;
        self.shared.state.send_if_modified(|s| {
            began = *s == RunState::Running;
            if began {
                *s = RunState::TearingDown;
            }
            began
        });
        if !began {
            return Err(SdkError::Stopped);
        }
        let result = self
            .call(|mut client, caller| async move {
                client
                    .teardown(v1::TeardownRequest { caller: Some(caller) })
                    .await
            })
            .await;
        if let Err(e) = result {
            self.shared.state.send_if_modified(|s| {
                let revert = *s == RunState::TearingDown;
                if revert {
                    *s = RunState::Running;
                }
                revert
            });
            return Err(e);
        }
        if let Some(store) = &self.shared.id_store
            && let Err(e) = store.clear().await
        {
            tracing::warn!(error = %e, "could not clear the stored framework id after teardown");
        }
        self.shared.state.send_replace(RunState::Stopped);
        Ok(())
    }

    /// Stops the driver without tearing the framework down: the
    /// subscription is closed and the master keeps the framework's tasks for
    /// its failover timeout, so a new driver can re-subscribe with the same id.
    pub fn stop(&self) {
        self.shared.state.send_replace(RunState::Stopped);
    }

    /// Makes one unary call with the current session's client and caller.
    async fn call<F, Fut>(&self, f: F) -> Result<(), SdkError>
    where
        F: FnOnce(SchedulerClient<Channel>, v1::Caller) -> Fut,
        Fut: Future<Output = Result<tonic::Response<v1::CallResponse>, tonic::Status>>,
    {
        if *self.shared.state.borrow() == RunState::Stopped {
            return Err(SdkError::Stopped);
        }
        let session = self.shared.session.borrow().clone();
        let Some(session) = session else {
            return Err(SdkError::NotConnected);
        };
        f(session.client, session.caller)
            .await
            .map(|_| ())
            .map_err(|status| {
                if let Some(leader) = redirect_of(&status) {
                    // The master stepped down: tell the event loop where to go.
                    self.shared.redirect.send_replace(Some((session.master, leader)));
                }
                SdkError::from_status(&status)
            })
    }
}
