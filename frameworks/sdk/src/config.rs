//! How a driver is set up.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use agora_proto::v1;
use agora_store::ZkOptions;

use crate::FrameworkIdStore;

/// Settings of a [`crate::Driver`]. Build with [`DriverConfig::new`] and
/// adjust the public fields.
#[derive(Clone)]
pub struct DriverConfig {
    /// Where the masters are: addresses as `host:port`, tried in turn until
    /// one accepts the subscription (a standby's redirect to the leader is
    /// followed at once), or one `zk://hosts/path` URL, whose elected
    /// leader the driver follows. Entries are joined with commas before
    /// parsing, so a `zk://` URL split on its commas works too.
    pub masters: Vec<String>,
    /// ZooKeeper session settings, used when `masters` is a `zk://` URL.
    pub zk: ZkOptions,
    /// The framework to subscribe. If `framework.id` is empty, the id is
    /// loaded from `framework_id_store` (if any), else the master assigns
    /// one.
    pub framework: v1::FrameworkInfo,
    /// Where the framework id is kept between runs; `None` keeps it only in
    /// memory (re-subscriptions after a disconnect still reuse it).
    pub framework_id_store: Option<Arc<dyn FrameworkIdStore>>,
    /// The master is considered gone after this many heartbeat intervals
    /// without any event (default 3).
    pub missed_heartbeats: u32,
    /// First delay between connection attempts (default 100 ms).
    pub backoff_min: Duration,
    /// Longest delay between connection attempts (default 5 s).
    pub backoff_max: Duration,
    /// Time allowed to connect and receive SUBSCRIBED (default 10 s).
    pub connect_timeout: Duration,
    /// Acknowledge status updates after [`crate::Scheduler::update`]
    /// returns (default true).
    pub auto_acknowledge: bool,
}

impl DriverConfig {
    /// A configuration with the defaults above.
    pub fn new(masters: Vec<String>, framework: v1::FrameworkInfo) -> Self {
        Self {
            masters,
            zk: ZkOptions::default(),
            framework,
            framework_id_store: None,
            missed_heartbeats: 3,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            auto_acknowledge: true,
        }
    }
}

impl fmt::Debug for DriverConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriverConfig")
            .field("masters", &self.masters)
            .field("zk", &self.zk)
            .field("framework", &self.framework)
            .field("framework_id_store", &self.framework_id_store.is_some())
            .field("missed_heartbeats", &self.missed_heartbeats)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("connect_timeout", &self.connect_timeout)
            .field("auto_acknowledge", &self.auto_acknowledge)
            .finish()
    }
}

/// Splits a `--master` value, `host:port[,host:port...]`, into addresses;
/// a `zk://h1:2181,h2:2181/path` URL stays whole.
pub fn split_masters(list: &str) -> Vec<String> {
    let list = list.trim();
    if list.starts_with("zk://") {
        return vec![list.to_owned()];
    }
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Filters attached to ACCEPT and DECLINE.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Filters {
    /// Do not re-offer the unused resources of these offers to this
    /// framework for this long. `None` means the master's default (5 s).
    pub refuse: Option<Duration>,
}

impl Filters {
    /// Refuse the unused resources for `duration`.
    pub fn refuse(duration: Duration) -> Self {
        Self {
            refuse: Some(duration),
        }
    }

    pub(crate) fn to_proto(self) -> v1::Filters {
        v1::Filters {
            refuse_seconds: self.refuse.map(|d| d.as_secs_f64()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_lists_split_on_commas() {
        assert_eq!(
            split_masters("a:1, b:2,,"),
            vec!["a:1".to_owned(), "b:2".to_owned()]
        );
    }

    #[test]
    fn a_zk_url_is_one_master_source() {
        assert_eq!(
            split_masters(" zk://h1:2181,h2:2181/agora "),
            vec!["zk://h1:2181,h2:2181/agora".to_owned()]
        );
    }

    #[test]
    fn default_filters_leave_refusal_to_the_master() {
        assert_eq!(Filters::default().to_proto().refuse_seconds, None);
        assert_eq!(
            Filters::refuse(Duration::from_secs(2)).to_proto().refuse_seconds,
            Some(2.0)
        );
    }
}
