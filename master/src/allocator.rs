//! The allocator: decides which framework is offered which agent's unused
//! resources.
//!
//! Architecture invariant: pure. State in (agents' resources, what is used and
//! offered, frameworks' roles and flags, offer filters), decisions out
//! ([`Allocation`]s). No I/O, no clock reads: callers pass `now`.
//!
//! Policy (the first step towards DRF): every allocation pass walks the
//! agents; each agent's unoffered, unused resources go to the eligible
//! framework with the lowest dominant share (used + offered over the cluster
//! total, the max over cpus, mem and disk). A resource is in at most one
//! offer at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use agora_proto::resources::UNRESERVED;
use agora_proto::{AgentId, FrameworkId, Resources};
use tokio::time::Instant;

/// Scalars that count towards a framework's dominant share.
const SHARE_RESOURCES: [&str; 3] = ["cpus", "mem", "disk"];

/// One decision of an allocation pass: offer `resources` of `agent_id` to
/// `framework_id`. The allocator already counts them as offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub resources: Resources,
}

#[derive(Debug, Default)]
struct AgentSlot {
    total: Resources,
    /// Resources used by tasks, per framework.
    used: BTreeMap<FrameworkId, Resources>,
    /// Resources in outstanding offers, per framework.
    offered: BTreeMap<FrameworkId, Resources>,
}

impl AgentSlot {
    fn free(&self) -> Resources {
        let mut free = self.total.clone();
        for r in self.used.values().chain(self.offered.values()) {
            free = free.saturating_sub(r);
        }
        free
    }
}

#[derive(Debug)]
struct FrameworkSlot {
    /// The framework's roles; never empty (no roles means `*`).
    roles: Vec<String>,
    /// Subscribed and connected.
    active: bool,
    /// Roles for which the framework asked for no offers.
    suppressed: BTreeSet<String>,
}

impl FrameworkSlot {
    fn offerable_roles(&self) -> Vec<String> {
        self.roles
            .iter()
            .filter(|r| !self.suppressed.contains(*r))
            .cloned()
            .collect()
    }
}

/// The allocator's state. See the module documentation for the policy.
#[derive(Debug, Default)]
pub struct Allocator {
    agents: BTreeMap<AgentId, AgentSlot>,
    frameworks: BTreeMap<FrameworkId, FrameworkSlot>,
    /// (framework, agent) pairs that must not be offered until the instant.
    filters: HashMap<(FrameworkId, AgentId), Instant>,
}

fn normalize_roles(roles: &[String]) -> Vec<String> {
    if roles.is_empty() {
        vec![UNRESERVED.to_owned()]
    } else {
        roles.to_vec()
    }
}

/// The part of `r` a framework with `roles` may be offered: unreserved
/// resources and those reserved for one of the roles.
fn for_roles(r: &Resources, roles: &[String]) -> Resources {
    let keep: Vec<_> = r
        .to_proto()
        .into_iter()
        .filter(|res| res.role.is_empty() || res.role == UNRESERVED || roles.contains(&res.role))
        .collect();
    Resources::from_proto(&keep).unwrap_or_default()
}

impl Allocator {
    /// An empty allocator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an agent with its total resources; nothing of it is
    /// used or offered yet (see [`Allocator::add_used`]).
    pub fn add_agent(&mut self, agent: AgentId, total: Resources) {
        self.agents.insert(
            agent,
            AgentSlot {
                total,
                ..AgentSlot::default()
            },
        );
    }

    /// Removes an agent; its offers and usage are forgotten. Callers rescind
    /// the agent's offers themselves.
    pub fn remove_agent(&mut self, agent: &AgentId) {
        self.agents.remove(agent);
        self.filters.retain(|(_, a), _| a != agent);
    }

    /// Whether the agent is known.
    pub fn has_agent(&self, agent: &AgentId) -> bool {
        self.agents.contains_key(agent)
    }

    /// Adds a framework (inactive until [`Allocator::activate`]), or updates
    /// the roles of a known one.
    pub fn add_framework(&mut self, framework: FrameworkId, roles: &[String]) {
        let roles = normalize_roles(roles);
        match self.frameworks.get_mut(&framework) {
            Some(slot) => slot.roles = roles,
            None => {
                self.frameworks.insert(
                    framework,
                    FrameworkSlot {
                        roles,
                        active: false,
                        suppressed: BTreeSet::new(),
                    },
                );
            }
        }
    }

    /// Forgets a framework: its outstanding offers and filters go away (the
    /// caller rescinds the offers). Resources its tasks still use stay used
    /// until [`Allocator::release`].
    pub fn remove_framework(&mut self, framework: &FrameworkId) {
        self.frameworks.remove(framework);
        for slot in self.agents.values_mut() {
            slot.offered.remove(framework);
        }
        self.filters.retain(|(f, _), _| f != framework);
    }

    /// The framework is subscribed and connected: it may receive offers.
    pub fn activate(&mut self, framework: &FrameworkId) {
        if let Some(slot) = self.frameworks.get_mut(framework) {
            slot.active = true;
        }
    }

    /// The framework is disconnected: no offers until it is activated again.
    pub fn deactivate(&mut self, framework: &FrameworkId) {
        if let Some(slot) = self.frameworks.get_mut(framework) {
            slot.active = false;
        }
    }

    /// Stops offers for `roles` (empty: all of the framework's roles).
    pub fn suppress(&mut self, framework: &FrameworkId, roles: &[String]) {
        if let Some(slot) = self.frameworks.get_mut(framework) {
            let roles = if roles.is_empty() {
                slot.roles.clone()
            } else {
                roles.to_vec()
            };
            slot.suppressed.extend(roles);
        }
    }

    /// Resumes offers for `roles` (empty: all) and clears the framework's
    /// offer filters.
    pub fn revive(&mut self, framework: &FrameworkId, roles: &[String]) {
        if let Some(slot) = self.frameworks.get_mut(framework) {
            if roles.is_empty() {
                slot.suppressed.clear();
            } else {
                for r in roles {
                    slot.suppressed.remove(r);
                }
            }
        }
        self.clear_filters(framework);
    }

    /// Refuses `agent`'s resources to `framework` until `until`.
    pub fn add_filter(&mut self, framework: FrameworkId, agent: AgentId, until: Instant) {
        let entry = self.filters.entry((framework, agent)).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Drops every filter of the framework.
    pub fn clear_filters(&mut self, framework: &FrameworkId) {
        self.filters.retain(|(f, _), _| f != framework);
    }

    /// The earliest instant a filter expires, if any filter is active.
    pub fn next_filter_expiry(&self) -> Option<Instant> {
        self.filters.values().min().copied()
    }

    /// Returns offered resources to the pool (decline, rescind, the unused
    /// rest of an accept).
    pub fn recover(&mut self, framework: &FrameworkId, agent: &AgentId, resources: &Resources) {
        if let Some(slot) = self.agents.get_mut(agent)
            && let Some(offered) = slot.offered.get_mut(framework)
        {
            *offered = offered.saturating_sub(resources);
            if offered.is_empty() {
                slot.offered.remove(framework);
            }
        }
    }

    /// Moves offered resources to used: a task was launched on them.
    pub fn launch(&mut self, framework: &FrameworkId, agent: &AgentId, resources: &Resources) {
        self.recover(framework, agent, resources);
        self.add_used(framework, agent, resources);
    }

    /// Counts resources as used by the framework's tasks on the agent (e.g.
    /// tasks an agent reports when it re-registers).
    pub fn add_used(&mut self, framework: &FrameworkId, agent: &AgentId, resources: &Resources) {
        if let Some(slot) = self.agents.get_mut(agent) {
            slot.used.entry(framework.clone()).or_default().add(resources);
        }
    }

    /// Returns used resources to the pool: a task ended.
    pub fn release(&mut self, framework: &FrameworkId, agent: &AgentId, resources: &Resources) {
        if let Some(slot) = self.agents.get_mut(agent)
            && let Some(used) = slot.used.get_mut(framework)
        {
            *used = used.saturating_sub(resources);
            if used.is_empty() {
                slot.used.remove(framework);
            }
        }
    }

    /// Resources of the agent that are neither used nor offered.
    pub fn free(&self, agent: &AgentId) -> Resources {
        self.agents.get(agent).map(AgentSlot::free).unwrap_or_default()
    }

    /// Resources of the agent used by tasks (all frameworks).
    pub fn used(&self, agent: &AgentId) -> Resources {
        self.sum_over(agent, |s| &s.used)
    }

    /// Resources of the agent in outstanding offers (all frameworks).
    pub fn offered(&self, agent: &AgentId) -> Resources {
        self.sum_over(agent, |s| &s.offered)
    }

    fn sum_over(
        &self,
        agent: &AgentId,
        pick: impl Fn(&AgentSlot) -> &BTreeMap<FrameworkId, Resources>,
    ) -> Resources {
        let mut out = Resources::new();
        if let Some(slot) = self.agents.get(agent) {
            for r in pick(slot).values() {
                out.add(r);
            }
        }
        out
    }

    /// What the framework's tasks use plus what it holds in offers, over all agents.
    pub fn allocated(&self, framework: &FrameworkId) -> Resources {
        let mut out = Resources::new();
        for slot in self.agents.values() {
            for r in [slot.used.get(framework), slot.offered.get(framework)]
                .into_iter()
                .flatten()
            {
                out.add(r);
            }
        }
        out
    }

    /// The sum of all agents' resources.
    pub fn cluster_total(&self) -> Resources {
        let mut out = Resources::new();
        for slot in self.agents.values() {
            out.add(&slot.total);
        }
        out
    }

    /// The framework's dominant share: the largest fraction of the cluster's
    /// cpus, mem or disk it uses or holds in offers.
    pub fn dominant_share(&self, framework: &FrameworkId) -> f64 {
        share_of(&self.allocated(framework), &self.cluster_total())
    }

    /// Runs one allocation pass at `now`: expired filters are dropped, then
    /// every agent's free resources are offered as described in the module
    /// documentation. The returned resources are counted as offered.
    pub fn allocate(&mut self, now: Instant) -> Vec<Allocation> {
        self.filters.retain(|_, until| *until > now);
        let total = self.cluster_total();
        let mut allocated: BTreeMap<FrameworkId, Resources> = self
            .frameworks
            .keys()
            .map(|f| (f.clone(), self.allocated(f)))
            .collect();
        let mut out = Vec::new();
        let agent_ids: Vec<AgentId> = self.agents.keys().cloned().collect();
        for agent in agent_ids {
            let Some(slot) = self.agents.get(&agent) else {
                continue;
            };
            let mut free = slot.free();
            if free.is_empty() {
                continue;
            }
            let mut candidates: Vec<(f64, FrameworkId, Vec<String>)> = self
                .frameworks
                .iter()
                .filter(|(f, s)| s.active && !self.filters.contains_key(&((*f).clone(), agent.clone())))
                .filter_map(|(f, s)| {
                    let roles = s.offerable_roles();
                    (!roles.is_empty()).then(|| {
                        let share = allocated.get(f).map(|a| share_of(a, &total)).unwrap_or(0.0);
                        (share, f.clone(), roles)
                    })
                })
                .collect();
            candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            for (_, framework, roles) in candidates {
                let offer = for_roles(&free, &roles);
                if offer.is_empty() {
                    continue;
                }
                free = free.saturating_sub(&offer);
                if let Some(slot) = self.agents.get_mut(&agent) {
                    slot.offered.entry(framework.clone()).or_default().add(&offer);
                }
                allocated.entry(framework.clone()).or_default().add(&offer);
                out.push(Allocation {
                    framework_id: framework,
                    agent_id: agent.clone(),
                    resources: offer,
                });
                if free.is_empty() {
                    break;
                }
            }
        }
        out
    }
}

fn share_of(allocated: &Resources, total: &Resources) -> f64 {
    SHARE_RESOURCES
        .iter()
        .filter_map(|name| {
            let t = total.get_scalar(name);
            (t > 0.0).then(|| allocated.get_scalar(name) / t)
        })
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn agent(n: u32) -> AgentId {
        AgentId::new_unchecked(format!("agent-{n}"))
    }
    fn fw(n: u32) -> FrameworkId {
        FrameworkId::new_unchecked(format!("fw-{n}"))
    }
    fn res(text: &str) -> Resources {
        Resources::parse(text).unwrap()
    }
    fn active_framework(a: &mut Allocator, f: FrameworkId) {
        a.add_framework(f.clone(), &[]);
        a.activate(&f);
    }

    #[test]
    fn offers_all_of_an_agents_free_resources_to_one_framework() {
        let mut a = Allocator::new();
        a.add_agent(agent(1), res("cpus:4;mem:1024;ports:[31000-31010]"));
        active_framework(&mut a, fw(1));
        let out = a.allocate(Instant::now());
        assert_eq!(
            out,
            vec![Allocation {
                framework_id: fw(1),
                agent_id: agent(1),
                resources: res("cpus:4;mem:1024;ports:[31000-31010]")
            }]
        );
        assert!(a.free(&agent(1)).is_empty());
    }

    #[test]
    fn offered_resources_are_not_offered_again() {
        let mut a = Allocator::new();
        a.add_agent(agent(1), res("cpus:4"));
        active_framework(&mut a, fw(1));
        active_framework(&mut a, fw(2));
        assert_eq!(a.allocate(Instant::now()).len(), 1);
        assert!(a.allocate(Instant::now()).is_empty());
    }

    #[test]
    fn recovered_resources_are_offered_again() {
        let mut a = Allocator::new();
        a.add_agent(agent(1), res("cpus:4"));
        active_framework(&mut a, fw(1));
        let out = a.allocate(Instant::now());
        a.recover(&fw(1), &agent(1), &out[0].resources);
        assert_eq!(a.allocate(Instant::now()), out);
    }

    #[test]
    fn the_framework_with_the_lowest_dominant_share_gets_the_agent() {
        let mut a = Allocator::new();
        a.add_agent(agent(1), res("cpus:4;mem:1000"));
        a.add_agent(agent(2), res("cpus:4;mem:1000"));
        active_framework(&mut a, fw(1));
        active_framework(&mut a, fw(2));
        a.add_used(&fw(1), &agent(1), &res("mem:500"));
        let out = a.allocate(Instant::now());
        assert_eq!(out[0].framework_id, fw(2), "fw-2 has share 0, fw-1 has 0.25");
        assert_eq!(out[0].agent_id, agent(1));
        assert_eq!(out[0].resources, res("cpus:4;mem:500"));
        assert_eq!(out[1].framework_id, fw(1), "fw-2 now holds more than fw-1");
    }

    #[test]
    fn inactive_and_suppressed_frameworks_get_no_offers() {
        let mut a = Allocator::new();
        a.add_agent(agent(1), res("cpus:4"));
        a.add_framework(fw(1), &[]);
        active_framework(&mut a, fw(2));
        a.suppress(&fw(2), &[]);
        assert!(a.allocate(Instant::now()).is_empty());
        a.revive(&fw(2), &[]);
        assert_eq!(a.allocate(Instant::now())[0].framework_id, fw(2));
    }

    #[test]
    fn a_filtered_agent_is_not_offered_to_the_framework_until_expiry() {
        let mut a = Allocator::new();
        let now = Instant::now();
        a.add_agent(agent(1), res("cpus:4"));
        active_framework(&mut a, fw(1));
        a.add_filter(fw(1), agent(1), now + Duration::from_secs(5));
        assert!(a.allocate(now).is_empty());
        assert!(a.allocate(now + Duration::from_secs(4)).is_empty());
        assert_eq!(a.allocate(now + Duration::from_secs(5)).len(), 1);
    }

    #[test]
    fn a_filter_does_not_stop_other_frameworks() {
        let mut a = Allocator::new();
        let now = Instant::now();
        a.add_agent(agent(1), res("cpus:4"));
        active_framework(&mut a, fw(1));
        active_framework(&mut a, fw(2));
        a.add_filter(fw(1), agent(1), now + Duration::from_secs(5));
        assert_eq!(a.allocate(now)[0].framework_id, fw(2));
    }

    #[test]
    fn revive_clears_filters() {
        let mut a = Allocator::new();
        let now = Instant::now();
        a.add_agent(agent(1), res("cpus:4"));
        active_framework(&mut a, fw(1));
        a.add_filter(fw(1), agent(1), now + Duration::from_secs(5));
        a.revive(&fw(1), &[]);
        assert_eq!(a.allocate(now).len(), 1);
    }

    #[test]
    fn used_resources_are_not_offered_until_released() {
        let mut a = Allocator::new();
        a.add_agent(agent(1), res("cpus:4"));
        active_framework(&mut a, fw(1));
        let out = a.allocate(Instant::now());
        a.launch(&fw(1), &agent(1), &res("cpus:3"));
        a.recover(
            &fw(1),
            &agent(1),
            &out[0].resources.saturating_sub(&res("cpus:3")),
        );
        assert_eq!(a.allocate(Instant::now())[0].resources, res("cpus:1"));
        a.release(&fw(1), &agent(1), &res("cpus:3"));
        assert_eq!(a.allocate(Instant::now())[0].resources, res("cpus:3"));
    }

    #[test]
    fn reserved_resources_go_only_to_frameworks_of_that_role() {
        let mut a = Allocator::new();
        a.add_agent(agent(1), res("cpus:4;cpus(prod):2"));
        active_framework(&mut a, fw(1));
        let out = a.allocate(Instant::now());
        assert_eq!(out[0].resources, res("cpus:4"));
        a.add_framework(fw(2), &["prod".to_owned()]);
        a.activate(&fw(2));
        let out = a.allocate(Instant::now());
        assert_eq!(out[0].framework_id, fw(2));
        assert_eq!(out[0].resources, res("cpus(prod):2"));
    }

    #[test]
    fn removing_an_agent_drops_its_resources() {
        let mut a = Allocator::new();
        a.add_agent(agent(1), res("cpus:4"));
        active_framework(&mut a, fw(1));
        a.remove_agent(&agent(1));
        assert!(a.allocate(Instant::now()).is_empty());
        assert!(a.cluster_total().is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        AddAgent(u32, u32, u32),
        RemoveAgent(u32),
        AddFramework(u32),
        Deactivate(u32),
        Allocate,
        DeclineFirst(u64),
        LaunchHalfOfFirst,
        ReleaseAll(u32),
        Advance(u64),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..4, 1u32..8, 0u32..20).prop_map(|(a, c, p)| Op::AddAgent(a, c, p)),
            (0u32..4).prop_map(Op::RemoveAgent),
            (0u32..3).prop_map(Op::AddFramework),
            (0u32..3).prop_map(Op::Deactivate),
            Just(Op::Allocate),
            Just(Op::Allocate),
            (0u64..10).prop_map(Op::DeclineFirst),
            Just(Op::LaunchHalfOfFirst),
            (0u32..3).prop_map(Op::ReleaseAll),
            (0u64..10).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #[test]
        fn offers_never_overlap_exceed_free_resources_or_ignore_filters(
            ops in proptest::collection::vec(arb_op(), 1..60)
        ) {
            let mut a = Allocator::new();
            let start = Instant::now();
            let mut now = start;
            // The model: totals, outstanding offers, used, filters.
            let mut totals: BTreeMap<AgentId, Resources> = BTreeMap::new();
            let mut offers: Vec<Allocation> = Vec::new();
            let mut used: Vec<(FrameworkId, AgentId, Resources)> = Vec::new();
            let mut filters: HashMap<(FrameworkId, AgentId), Instant> = HashMap::new();
            for op in ops {
                match op {
                    Op::AddAgent(n, cpus, ports) => {
                        if totals.contains_key(&agent(n)) { continue; }
                        let mut r = res(&format!("cpus:{cpus};mem:{}", cpus * 100));
                        if ports > 0 {
                            r = r.with_ranges("ports", [(1000, 1000 + u64::from(ports))]);
                        }
                        a.add_agent(agent(n), r.clone());
                        totals.insert(agent(n), r);
                    }
                    Op::RemoveAgent(n) => {
                        a.remove_agent(&agent(n));
                        totals.remove(&agent(n));
                        offers.retain(|o| o.agent_id != agent(n));
                        used.retain(|u| u.1 != agent(n));
                        filters.retain(|(_, ag), _| *ag != agent(n));
                    }
                    Op::AddFramework(n) => active_framework(&mut a, fw(n)),
                    Op::Deactivate(n) => a.deactivate(&fw(n)),
                    Op::Allocate => {
                        let out = a.allocate(now);
                        for o in &out {
                            // Free in the model: total - used - outstanding offers.
                            let mut free = totals.get(&o.agent_id).cloned().unwrap_or_default();
                            for u in used.iter().filter(|u| u.1 == o.agent_id) {
                                free = free.saturating_sub(&u.2);
                            }
                            for x in offers.iter().filter(|x| x.agent_id == o.agent_id) {
                                free = free.saturating_sub(&x.resources);
                            }
                            prop_assert!(free.contains(&o.resources), "offer {:?} exceeds free {}", o, free);
                            if let Some(until) = filters.get(&(o.framework_id.clone(), o.agent_id.clone())) {
                                prop_assert!(*until <= now, "filtered pair offered: {:?}", o);
                            }
                            offers.push(o.clone());
                        }
                    }
                    Op::DeclineFirst(secs) => {
                        if offers.is_empty() { continue; }
                        let o = offers.remove(0);
                        a.recover(&o.framework_id, &o.agent_id, &o.resources);
                        if secs > 0 {
                            let until = now + Duration::from_secs(secs);
                            a.add_filter(o.framework_id.clone(), o.agent_id.clone(), until);
                            let e = filters.entry((o.framework_id, o.agent_id)).or_insert(until);
                            *e = (*e).max(until);
                        }
                    }
                    Op::LaunchHalfOfFirst => {
                        if offers.is_empty() { continue; }
                        let o = offers.remove(0);
                        let half = Resources::new().scalar("cpus", o.resources.get_scalar("cpus") / 2.0);
                        let task = if o.resources.contains(&half) { half } else { Resources::new() };
                        a.launch(&o.framework_id, &o.agent_id, &task);
                        a.recover(&o.framework_id, &o.agent_id, &o.resources.saturating_sub(&task));
                        used.push((o.framework_id, o.agent_id, task));
                    }
                    Op::ReleaseAll(n) => {
                        for u in used.iter().filter(|u| u.0 == fw(n)) {
                            a.release(&u.0, &u.1, &u.2);
                        }
                        used.retain(|u| u.0 != fw(n));
                    }
                    Op::Advance(secs) => now += Duration::from_secs(secs),
                }
            }
        }
    }
}
