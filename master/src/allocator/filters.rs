//! Offer filters: (client, agent) pairs that must not be offered until an
//! instant (DECLINE's `refuse_seconds`). Indexed by expiry, so the next
//! expiry and the expired filters are found without a scan.

use std::collections::{BTreeSet, HashMap};

use tokio::time::Instant;

use super::sorter::ClientIdx;

/// Index of an agent slot.
pub(crate) type AgentIdx = u32;

/// The active filters.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filters {
    until: HashMap<(ClientIdx, AgentIdx), Instant>,
    by_expiry: BTreeSet<(Instant, ClientIdx, AgentIdx)>,
}

impl Filters {
    /// Refuses `agent` to `client` until `until` (a later filter on the same
    /// pair extends it). Returns whether the pair was not filtered before.
    pub(crate) fn add(&mut self, client: ClientIdx, agent: AgentIdx, until: Instant) -> bool {
        match self.until.get_mut(&(client, agent)) {
            Some(old) => {
                if until > *old {
                    self.by_expiry.remove(&(*old, client, agent));
                    self.by_expiry.insert((until, client, agent));
                    *old = until;
                }
                false
            }
            None => {
                self.until.insert((client, agent), until);
                self.by_expiry.insert((until, client, agent));
                true
            }
        }
    }

    /// Drops the filter on the pair; returns whether there was one.
    pub(crate) fn remove(&mut self, client: ClientIdx, agent: AgentIdx) -> bool {
        match self.until.remove(&(client, agent)) {
            Some(until) => {
                self.by_expiry.remove(&(until, client, agent));
                true
            }
            None => false,
        }
    }

    /// Drops and returns the filters that expire at or before `now`.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(ClientIdx, AgentIdx)> {
        let mut out = Vec::new();
        while let Some(&(until, client, agent)) = self.by_expiry.first() {
            if until > now {
                break;
            }
            self.by_expiry.pop_first();
            self.until.remove(&(client, agent));
            out.push((client, agent));
        }
        out
    }

    /// The earliest expiry: O(log n).
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.by_expiry.first().map(|(t, _, _)| *t)
    }

    /// Number of active filters.
    pub(crate) fn len(&self) -> usize {
        self.until.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_later_filter_extends_an_earlier_one() {
        let now = Instant::now();
        let mut f = Filters::default();
        assert!(f.add(1, 2, now + Duration::from_secs(1)));
        assert!(!f.add(1, 2, now + Duration::from_secs(5)));
        assert!(!f.add(1, 2, now + Duration::from_secs(3)));
        assert!(f.expire(now + Duration::from_secs(4)).is_empty());
        assert_eq!(f.next_expiry(), Some(now + Duration::from_secs(5)));
        assert_eq!(f.expire(now + Duration::from_secs(5)), vec![(1, 2)]);
        assert_eq!(f.len(), 0);
    }
}
