//! The callbacks a framework implements.

use std::future::Future;
use std::time::Duration;

use agora_proto::v1;
use agora_proto::{FrameworkId, OfferId};

use crate::Driver;

/// What the master said when the driver (re-)subscribed.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscribed {
    /// The framework's id (assigned by the master on first subscription).
    pub framework_id: FrameworkId,
    /// Identifies the master process; changes when the master restarts.
    pub master_id: String,
    /// The `host:port` the driver subscribed at.
    pub master_address: String,
    /// How often the master sends heartbeats on this stream.
    pub heartbeat_interval: Duration,
    /// True when the driver subscribed with an id it already had (after a
    /// disconnect, or loaded from the framework id store).
    pub resubscribed: bool,
}

/// A framework's reactions to what the master tells it.
///
/// The driver calls these one at a time, in the order the events arrived,
/// and waits for each to return before reading the next event: keep them
/// short, or hand long work to a task of your own. Every callback gets the
/// [`Driver`] to make calls with (accept, decline, kill, ...).
///
/// Implement the methods with `async fn`:
///
/// ```
/// use agora_proto::v1;
/// use agora_sdk::{Driver, OfferId, Scheduler};
///
/// struct DeclineEverything;
///
/// impl Scheduler for DeclineEverything {
///     async fn offers(&mut self, driver: &Driver, offers: Vec<v1::Offer>) {
///         let ids = offers.iter().filter_map(|o| OfferId::parse(&o.id).ok()).collect();
///         let _ = driver.decline(ids, None).await;
///     }
///     async fn update(&mut self, _driver: &Driver, status: v1::TaskStatus) {
///         println!("{} is now {:?}", status.task_id, status.state());
///     }
/// }
/// ```
pub trait Scheduler: Send + 'static {
    /// The driver (re-)subscribed; calls can be made from now on. The
    /// master re-sends offers after every subscription, so any offers held
    /// before a disconnect are void.
    fn subscribed(&mut self, _driver: &Driver, _info: Subscribed) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// New offers. Accept them (with tasks) or decline them: offers a
    /// framework sits on are unavailable to others until the master
    /// rescinds them.
    fn offers(&mut self, driver: &Driver, offers: Vec<v1::Offer>) -> impl Future<Output = ()> + Send;

    /// An offer is no longer valid; accepting it now yields TASK_DROPPED.
    fn rescinded(&mut self, _driver: &Driver, _offer_id: OfferId) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// A task changed state. When [`crate::DriverConfig::auto_acknowledge`]
    /// is on (the default) the driver acknowledges the update after this
    /// returns; otherwise call [`Driver::acknowledge`] yourself, or the
    /// agent keeps re-sending it (and holds back the task's later updates).
    fn update(&mut self, driver: &Driver, status: v1::TaskStatus) -> impl Future<Output = ()> + Send;

    /// Data sent by one of the framework's tasks through its agent.
    fn message(
        &mut self,
        _driver: &Driver,
        _message: v1::FrameworkMessage,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// An agent was lost, or an executor exited.
    fn failure(&mut self, _driver: &Driver, _failure: v1::Failure) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The subscription was lost (stream ended, or the master went silent).
    /// The driver re-subscribes by itself; calls fail with
    /// [`crate::SdkError::NotConnected`] until [`Scheduler::subscribed`].
    fn disconnected(&mut self, _driver: &Driver) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The master will not serve this framework any more (torn down,
    /// removed after its failover timeout, or replaced by another instance
    /// with the same id). The driver stops after this returns.
    fn error(&mut self, _driver: &Driver, _message: String) -> impl Future<Output = ()> + Send {
        async {}
    }
}
