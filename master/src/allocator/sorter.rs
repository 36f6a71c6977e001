//! The DRF sorter: one per role node, holding the node's child roles and
//! its own clients ordered by (weighted) dominant share, lowest first. Keys
//! are updated when allocations change, so picking the next client is a
//! walk from the front rather than a sort.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::collections::btree_set;

/// A dominant share, totally ordered (`f64::total_cmp`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Share(pub f64);

impl Eq for Share {}

impl PartialOrd for Share {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Share {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Index of a role node.
pub(crate) type RoleIdx = u32;
/// Index of a client: one (framework, role) pair.
pub(crate) type ClientIdx = u32;

/// What a sorter orders: child roles and the node's own clients. Roles sort
/// before clients on equal share, so a subtree is not starved by ties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Entry {
    Role(RoleIdx),
    Client(ClientIdx),
}

/// Entries ordered by share, ties broken by entry.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sorter {
    order: BTreeSet<(Share, Entry)>,
}

impl Sorter {
    pub(crate) fn insert(&mut self, entry: Entry, share: Share) {
        self.order.insert((share, entry));
    }

    pub(crate) fn remove(&mut self, entry: Entry, share: Share) {
        self.order.remove(&(share, entry));
    }

    /// Moves `entry` from key `old` to key `new`.
    pub(crate) fn update(&mut self, entry: Entry, old: Share, new: Share) {
        if old != new && self.order.remove(&(old, entry)) {
            self.order.insert((new, entry));
        }
    }

    pub(crate) fn clear(&mut self) {
        self.order.clear();
    }

    pub(crate) fn iter(&self) -> btree_set::Iter<'_, (Share, Entry)> {
        self.order.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterates_lowest_share_first_and_follows_updates() {
        let mut s = Sorter::default();
        s.insert(Entry::Client(1), Share(0.5));
        s.insert(Entry::Client(2), Share(0.1));
        s.insert(Entry::Role(7), Share(0.3));
        let order: Vec<Entry> = s.iter().map(|(_, e)| *e).collect();
        assert_eq!(order, [Entry::Client(2), Entry::Role(7), Entry::Client(1)]);
        s.update(Entry::Client(2), Share(0.1), Share(0.9));
        assert_eq!(s.iter().next().map(|(_, e)| *e), Some(Entry::Role(7)));
    }
}
