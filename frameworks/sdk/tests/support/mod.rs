//! A scripted stand-in for the master's scheduler API, and a scheduler that
//! records what the driver tells it. Used until tests can run the real
//! master; the driver cannot tell the difference on the wire.
#![allow(dead_code, clippy::unwrap_used)] // test support: panicking is the failure report

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agora_proto::v1::scheduler_server::{Scheduler as SchedulerService, SchedulerServer};
use agora_proto::v1::{self, event::Event};
use agora_sdk::{Driver, DriverConfig, OfferId, Scheduler, Subscribed, TaskBuilder, TaskId};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

/// A call the fake master received.
#[derive(Debug, Clone)]
pub enum Call {
    Accept(v1::AcceptRequest),
    Decline(v1::DeclineRequest),
    Revive(v1::ReviveRequest),
    Suppress(v1::SuppressRequest),
    Kill(v1::KillRequest),
    Acknowledge(v1::AcknowledgeRequest),
    Reconcile(v1::ReconcileRequest),
    Message(v1::MessageRequest),
    Teardown(v1::TeardownRequest),
}

#[derive(Default)]
struct State {
    subscriptions: Vec<v1::SubscribeRequest>,
    stream: Option<mpsc::Sender<Result<v1::Event, Status>>>,
    stream_id: String,
    refuse_subscribe: Option<Status>,
    refuse_calls: Option<Status>,
    heartbeat_interval: f64,
    subscriptions_served: u32,
}

#[derive(Clone)]
struct Service {
    state: Arc<Mutex<State>>,
    calls: mpsc::UnboundedSender<Call>,
}

/// The fake master: its address, a handle to script it, and its calls.
pub struct FakeMaster {
    pub addr: SocketAddr,
    service: Service,
    calls: mpsc::UnboundedReceiver<Call>,
    server: JoinHandle<()>,
}

impl FakeMaster {
    /// Starts on a free loopback port.
    pub async fn start() -> FakeMaster {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts on `addr` (e.g. the port of a previous, stopped fake master).
    pub async fn start_on(addr: SocketAddr) -> FakeMaster {
        let (tx, calls) = mpsc::unbounded_channel();
        let service = Service {
            state: Arc::new(Mutex::new(State {
                heartbeat_interval: 15.0,
                ..State::default()
            })),
            calls: tx,
        };
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = SchedulerServer::new(service.clone());
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        FakeMaster {
            addr,
            service,
            calls,
            server,
        }
    }

    /// Kills the server and every connection, like a crashed master.
    pub async fn crash(self) -> SocketAddr {
        self.server.abort();
        let _ = self.server.await;
        self.service.state.lock().await.stream = None;
        self.addr
    }

    /// Sets the heartbeat interval announced in SUBSCRIBED (heartbeats are
    /// never actually sent unless pushed).
    pub async fn set_heartbeat_interval(&self, seconds: f64) {
        self.service.state.lock().await.heartbeat_interval = seconds;
    }

    /// Makes every SUBSCRIBE fail with `status`.
    pub async fn refuse_subscriptions(&self, status: Status) {
        self.service.state.lock().await.refuse_subscribe = Some(status);
    }

    /// Makes every call (not SUBSCRIBE) fail with `status`.
    pub async fn refuse_calls(&self, status: Status) {
        self.service.state.lock().await.refuse_calls = Some(status);
    }

    /// Makes this master a standby of the leader at `leader`: SUBSCRIBE and
    /// calls are answered UNAVAILABLE naming it, as a real standby does.
    pub async fn become_standby_of(&self, leader: SocketAddr) {
        self.refuse_subscriptions(standby_status(leader)).await;
        self.refuse_calls(standby_status(leader)).await;
    }

    /// The SUBSCRIBE requests received so far.
    pub async fn subscriptions(&self) -> Vec<v1::SubscribeRequest> {
        self.service.state.lock().await.subscriptions.clone()
    }

    /// Sends an event on the current stream.
    pub async fn push(&self, event: Event) {
        let tx = self.service.state.lock().await.stream.clone();
        tx.expect("a subscription")
            .send(Ok(v1::Event { event: Some(event) }))
            .await
            .unwrap();
    }

    /// Ends the current stream, as a master does when it drops a framework.
    pub async fn end_stream(&self) {
        self.service.state.lock().await.stream = None;
    }

    /// The next call received, within 5 s.
    pub async fn next_call(&mut self) -> Call {
        tokio::time::timeout(Duration::from_secs(5), self.calls.recv())
            .await
            .expect("a call within 5 s")
            .expect("server alive")
    }

    /// Whether no call arrives within `wait`.
    pub async fn no_call_within(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.calls.recv()).await.is_err()
    }
}

/// What a standby master answers: UNAVAILABLE with `agora-leader` metadata.
pub fn standby_status(leader: SocketAddr) -> Status {
    let mut status = Status::unavailable(format!("not the leader; the leader is at {leader}"));
    status
        .metadata_mut()
        .insert(agora_store::LEADER_METADATA, leader.to_string().parse().unwrap());
    status
}

impl Service {
    async fn check(&self, caller: Option<&v1::Caller>) -> Result<(), Status> {
        let state = self.state.lock().await;
        if let Some(status) = state.refuse_calls.clone() {
            return Err(status);
        }
        match caller {
            Some(c) if state.stream.is_some() && c.stream_id == state.stream_id => Ok(()),
            _ => Err(Status::failed_precondition("not subscribed on this stream")),
        }
    }

    async fn record(
        &self,
        caller: Option<&v1::Caller>,
        call: Call,
    ) -> Result<Response<v1::CallResponse>, Status> {
        self.check(caller).await?;
        let _ = self.calls.send(call);
        Ok(Response::new(v1::CallResponse {}))
    }
}

#[tonic::async_trait]
impl SchedulerService for Service {
    type SubscribeStream = ReceiverStream<Result<v1::Event, Status>>;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        let mut state = self.state.lock().await;
        state.subscriptions.push(request.clone());
        if let Some(status) = state.refuse_subscribe.clone() {
            return Err(status);
        }
        state.subscriptions_served += 1;
        let framework_id = match request.framework.map(|f| f.id) {
            Some(id) if !id.is_empty() => id,
            _ => "fw-1".to_owned(),
        };
        let stream_id = format!("stream-{}", state.subscriptions_served);
        let (tx, rx) = mpsc::channel(64);
        let subscribed = Event::Subscribed(v1::Subscribed {
            framework_id,
            stream_id: stream_id.clone(),
            heartbeat_interval_seconds: state.heartbeat_interval,
            master_id: "master-1".into(),
        });
        tx.send(Ok(v1::Event {
            event: Some(subscribed),
        }))
        .await
        .unwrap();
        if let Some(old) = state.stream.replace(tx) {
            let _ = old
                .send(Ok(v1::Event {
                    event: Some(Event::Error(v1::Error {
                        message: "framework failed over".into(),
                    })),
                }))
                .await;
        }
        state.stream_id = stream_id;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn accept(&self, r: Request<v1::AcceptRequest>) -> Result<Response<v1::CallResponse>, Status> {
        let r = r.into_inner();
        self.record(r.caller.as_ref(), Call::Accept(r.clone())).await
    }
    async fn decline(&self, r: Request<v1::DeclineRequest>) -> Result<Response<v1::CallResponse>, Status> {
        let r = r.into_inner();
        self.record(r.caller.as_ref(), Call::Decline(r.clone())).await
    }
    async fn revive(&self, r: Request<v1::ReviveRequest>) -> Result<Response<v1::CallResponse>, Status> {
        let r = r.into_inner();
        self.record(r.caller.as_ref(), Call::Revive(r.clone())).await
    }
    async fn suppress(&self, r: Request<v1::SuppressRequest>) -> Result<Response<v1::CallResponse>, Status> {
        let r = r.into_inner();
        self.record(r.caller.as_ref(), Call::Suppress(r.clone())).await
    }
    async fn kill(&self, r: Request<v1::KillRequest>) -> Result<Response<v1::CallResponse>, Status> {
        let r = r.into_inner();
        self.record(r.caller.as_ref(), Call::Kill(r.clone())).await
    }
    async fn acknowledge(
        &self,
        r: Request<v1::AcknowledgeRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let r = r.into_inner();
        self.record(r.caller.as_ref(), Call::Acknowledge(r.clone())).await
    }
    async fn reconcile(
        &self,
        r: Request<v1::ReconcileRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let r = r.into_inner();
        self.record(r.caller.as_ref(), Call::Reconcile(r.clone())).await
    }
    async fn message(&self, r: Request<v1::MessageRequest>) -> Result<Response<v1::CallResponse>, Status> {
        let r = r.into_inner();
        self.record(r.caller.as_ref(), Call::Message(r.clone())).await
    }
    async fn teardown(&self, r: Request<v1::TeardownRequest>) -> Result<Response<v1::CallResponse>, Status> {
        let r = r.into_inner();
        let result = self.record(r.caller.as_ref(), Call::Teardown(r.clone())).await;
        if result.is_ok() {
            // Like the master: say goodbye on the stream, then close it.
            let tx = self.state.lock().await.stream.take();
            if let Some(tx) = tx {
                let _ = tx
                    .send(Ok(v1::Event {
                        event: Some(Event::Error(v1::Error {
                            message: "framework torn down".into(),
                        })),
                    }))
                    .await;
            }
        }
        result
    }
}

/// What the recording scheduler saw, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Subscribed(Subscribed),
    Offers(Vec<v1::Offer>),
    Rescinded(OfferId),
    Update(v1::TaskStatus),
    Disconnected,
    Error(String),
}

/// A scheduler that records every callback and launches one `true` task on
/// each offer it gets.
pub struct Recorder {
    pub seen: mpsc::UnboundedSender<Seen>,
}

impl Scheduler for Recorder {
    async fn subscribed(&mut self, _driver: &Driver, info: Subscribed) {
        let _ = self.seen.send(Seen::Subscribed(info));
    }
    async fn offers(&mut self, driver: &Driver, offers: Vec<v1::Offer>) {
        for offer in &offers {
            let task = TaskBuilder::new(TaskId::new_unchecked(format!("task-{}", offer.id)), "t")
                .shell("true")
                .resources(
                    &agora_proto::Resources::new()
                        .scalar("cpus", 0.1)
                        .scalar("mem", 16.0),
                )
                .build();
            driver.launch(offer, vec![task]).await.unwrap();
        }
        let _ = self.seen.send(Seen::Offers(offers));
    }
    async fn rescinded(&mut self, _driver: &Driver, offer_id: OfferId) {
        let _ = self.seen.send(Seen::Rescinded(offer_id));
    }
    async fn update(&mut self, _driver: &Driver, status: v1::TaskStatus) {
        let _ = self.seen.send(Seen::Update(status));
    }
    async fn disconnected(&mut self, _driver: &Driver) {
        let _ = self.seen.send(Seen::Disconnected);
    }
    async fn error(&mut self, _driver: &Driver, message: String) {
        let _ = self.seen.send(Seen::Error(message));
    }
}

/// A recorder and the receiving end of what it sees.
pub fn recorder() -> (Recorder, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Recorder { seen: tx }, Events(rx))
}

/// What the recorder saw.
pub struct Events(pub mpsc::UnboundedReceiver<Seen>);

impl Events {
    /// The next callback, within 5 s.
    pub async fn next(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(5), self.0.recv())
            .await
            .expect("a callback within 5 s")
            .expect("driver alive")
    }
}

/// A driver configuration for tests: fast backoff.
pub fn config(masters: Vec<String>) -> DriverConfig {
    let framework = v1::FrameworkInfo {
        name: "test-framework".into(),
        failover_timeout_seconds: 60.0,
        ..Default::default()
    };
    let mut config = DriverConfig::new(masters, framework);
    config.backoff_min = Duration::from_millis(10);
    config.backoff_max = Duration::from_millis(100);
    config.connect_timeout = Duration::from_secs(2);
    config
}

/// An offer of a little of everything on agent `a1`.
pub fn offer(id: &str) -> v1::Offer {
    v1::Offer {
        id: id.into(),
        framework_id: "fw-1".into(),
        agent_id: "a1".into(),
        hostname: "a1.local".into(),
        resources: agora_proto::Resources::parse("cpus:1;mem:128")
            .unwrap()
            .to_proto(),
        attributes: vec![],
        allocation_role: "*".into(),
    }
}
