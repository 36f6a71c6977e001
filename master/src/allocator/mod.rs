//! The allocator: decides which framework is offered which agent's unused
//! resources.
//!
//! Architecture invariant: pure. State in (agents' resources, what is used and
//! offered, frameworks' roles and flags, quota, reservations, offer filters),
//! decisions out ([`Allocation`]s). No I/O, no clock reads: callers pass `now`.
//!
//! # Policy
//!
//! - **Clients.** A framework subscribed to several roles is one client per
//!   (framework, role). Each [`Allocation`] names the role it is for. A
//!   framework holds offers on an agent for at most one of its roles at a
//!   time, so returned resources are attributed exactly.
//! - **Weighted hierarchical DRF.** Roles form a tree (`eng/web` under
//!   `eng`). At every node, child roles and the node's own clients are sorted
//!   by dominant share (allocated = used + offered, over the cluster total,
//!   the max over cpus, mem, disk and gpus); a role's share aggregates its
//!   subtree and is divided by its weight (`--weights`). An agent's free
//!   resources go to the first eligible client in that order.
//! - **Reservations.** Resources reserved for role `r` are offered only to
//!   clients of `r` or of a descendant of `r`. They count towards `r`'s
//!   guarantee whether used or not.
//! - **Quota.** A role is never allocated (used + offered) beyond its limit,
//!   reserved resources included: its subtree's allocation is checked
//!   against the limit of it and of every ancestor, and an offer carries
//!   only the part that fits (reserved resources that do not fit stay
//!   unoffered until the role's allocation drops). Guarantees: enough free unreserved resources are held
//!   back across the cluster for every role's unmet guarantee; other roles
//!   are not offered into that headroom.
//! - **Filters, SUPPRESS, REVIVE** are per client. See [`Allocator::revive`].
//! - **Fair rotation.** A client whose offer on an agent comes back
//!   (declined, rescinded, the unused rest of an accept) goes behind every
//!   other client for that agent until the agent frees new resources (a task
//!   ends): leftovers are not re-offered to the same framework while another
//!   one is waiting, and clients that keep declining take turns.
//! - **Minimum allocatable.** Resources are offered only if they meet
//!   [`MinAllocatable`]; slivers that fit no one never circulate.
//!
//! # Cost
//!
//! A pass examines only agents whose situation changed ("dirty": new agent,
//! resources returned or freed, a filter expired, quota headroom changed
//! where resources were held back) — or every agent with free resources
//! after demand changed (a client became offerable: activation, REVIVE,
//! unsuppress, new role). A pass with nothing dirty returns at once. Picking
//! a client walks the DRF order from the front and stops at the first
//! eligible client; an agent every offerable client refuses is skipped in
//! O(1). Shares are re-keyed in O(depth · log n) per allocation change, and
//! all at once only when the cluster total changes.

mod config;
mod filters;
#[cfg(test)]
mod proptests;
mod quantities;
mod quota;
mod roles;
mod sorter;
#[cfg(test)]
mod tests;

pub use config::{AllocatorConfig, DEFAULT_MIN_ALLOCATABLE, MinAllocatable, MinAllocatableError};
pub use quantities::{KINDS, Quantities};
pub use quota::QuotaError;
pub use roles::{RoleError, RoleWeights, WeightsError, is_ancestor_or_self, parent_role, validate_role};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use agora_proto::resources::UNRESERVED;
use agora_proto::{AgentId, FrameworkId, Resources};
use tokio::time::Instant;

use filters::{AgentIdx, Filters};
use quantities::UNLIMITED;
use quota::Quota;
use sorter::{ClientIdx, Entry, RoleIdx, Share, Sorter};

/// One decision of an allocation pass: offer `resources` of `agent_id` to
/// `framework_id` for `role`. The allocator already counts them as offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    /// The role the resources are allocated to (one of the framework's).
    pub role: String,
    pub resources: Resources,
}

/// Why a reservation change or quota is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocatorError {
    #[error("agent {0} is not known")]
    UnknownAgent(AgentId),
    #[error(transparent)]
    Role(#[from] RoleError),
    #[error(transparent)]
    Quota(#[from] QuotaError),
    #[error("reservations need a role other than '*'")]
    ReserveDefaultRole,
    #[error("{wanted} is not free on agent {agent} (free: {free})")]
    NotFree {
        agent: AgentId,
        wanted: String,
        free: String,
    },
}

/// What the operator sees of a role (`/roles`). Amounts aggregate the
/// role's subtree.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleView {
    pub role: String,
    pub weight: f64,
    /// Quota guarantee (empty: none).
    pub guarantee: Resources,
    /// Quota limit (`None`: unlimited).
    pub limit: Option<Resources>,
    /// Used by tasks plus held in offers.
    pub allocated: Resources,
    /// Held in offers.
    pub offered: Resources,
    /// Reserved for the role on agents (used or not).
    pub reserved: Resources,
    /// Dominant share divided by weight: the key DRF sorts by.
    pub weighted_share: f64,
    /// Frameworks subscribed to the role.
    pub frameworks: usize,
}

/// Per reservation role (`*` for unreserved), the part of some resources.
type Buckets = BTreeMap<String, Resources>;

#[derive(Debug, Clone)]
struct AgentSlot {
    id: AgentId,
    total: Resources,
    /// Neither used nor offered, by reservation role.
    free: Buckets,
    offered: BTreeMap<ClientIdx, Resources>,
    used: BTreeMap<ClientIdx, Resources>,
    /// Clients with an active filter on this agent.
    filtered_by: HashSet<ClientIdx>,
    /// How many of `filtered_by` are offerable.
    refusing: u32,
    /// Clients whose offers here came back, with the order they did.
    behind: BTreeMap<ClientIdx, u64>,
}

impl AgentSlot {
    fn free_all(&self) -> Resources {
        let mut out = Resources::new();
        for r in self.free.values() {
            out.add(r);
        }
        out
    }
}

#[derive(Debug, Clone)]
struct Client {
    framework: FrameworkId,
    role: RoleIdx,
    subscribed: bool,
    suppressed: bool,
    /// In its role's sorter (framework active, subscribed, not suppressed).
    offerable: bool,
    allocated: Quantities,
    offered: Quantities,
    key: Share,
    /// Agents this client has filters on.
    filtered: HashSet<AgentIdx>,
}

#[derive(Debug, Clone)]
struct FrameworkSlot {
    active: bool,
    /// Role name to client, for every role the framework ever had.
    clients: BTreeMap<String, ClientIdx>,
    /// Roles it is subscribed to now; never empty while subscribed.
    roles: Vec<String>,
}

#[derive(Debug, Clone)]
struct RoleNode {
    name: String,
    parent: Option<RoleIdx>,
    weight: f64,
    quota: Quota,
    /// Subtree: used + offered.
    allocated: Quantities,
    /// Subtree: offered.
    offered: Quantities,
    /// Subtree: the unreserved part of `allocated`.
    allocated_unreserved: Quantities,
    /// Subtree: reserved on agents (used or not).
    reserved: Quantities,
    /// `max(guarantee - (allocated_unreserved + reserved), 0)`.
    unmet: Quantities,
    /// Offerable clients in the subtree.
    offerable: u32,
    /// Clients (any state) whose role this is.
    clients: usize,
    key: Share,
    sorter: Sorter,
}

/// The root of the role tree (not a role).
const ROOT: RoleIdx = 0;

/// The allocator's state. See the module documentation for the policy.
#[derive(Debug, Clone)]
pub struct Allocator {
    config: AllocatorConfig,
    agents: Vec<Option<AgentSlot>>,
    agent_index: HashMap<AgentId, AgentIdx>,
    vacant_agents: Vec<AgentIdx>,
    frameworks: HashMap<FrameworkId, FrameworkSlot>,
    clients: Vec<Client>,
    roles: Vec<RoleNode>,
    role_index: HashMap<String, RoleIdx>,
    filters: Filters,
    /// Sum of all agents' totals.
    total: Quantities,
    /// Unreserved resources neither used nor offered, cluster-wide.
    free_unreserved: Quantities,
    /// Sum of every role's unmet guarantee.
    required_headroom: Quantities,
    quota_roles: usize,
    offerable: u32,
    dirty: BTreeSet<AgentIdx>,
    /// Agents left with free resources because of a limit or headroom.
    held_back: BTreeSet<AgentIdx>,
    demand_changed: bool,
    quota_changed: bool,
    shares_stale: bool,
    seq: u64,
}

impl Default for Allocator {
    fn default() -> Self {
        Self::with_config(AllocatorConfig::default())
    }
}

/// Splits resources by reservation role.
fn by_role(r: &Resources) -> Buckets {
    let mut out = Buckets::new();
    if r.is_empty() {
        return out;
    }
    if r.keys().all(|(_, role)| role == UNRESERVED) {
        out.insert(UNRESERVED.to_owned(), r.clone());
        return out;
    }
    let mut groups: BTreeMap<String, Vec<agora_proto::v1::Resource>> = BTreeMap::new();
    for res in r.to_proto() {
        let role = if res.role.is_empty() {
            UNRESERVED.to_owned()
        } else {
            res.role.clone()
        };
        groups.entry(role).or_default().push(res);
    }
    for (role, list) in groups {
        if let Ok(part) = Resources::from_proto(&list) {
            out.insert(role, part);
        }
    }
    out
}

/// `a ∩ b`: what of `b` is in `a`.
fn intersect(a: &Resources, b: &Resources) -> Resources {
    a.saturating_sub(&a.saturating_sub(b))
}

/// Resources reserved for `role` with the same amounts as unreserved `r`.
fn reserved_as(r: &Resources, role: &str) -> Resources {
    let list: Vec<_> = r
        .to_proto()
        .into_iter()
        .map(|mut res| {
            res.role = role.to_owned();
            res
        })
        .collect();
    Resources::from_proto(&list).unwrap_or_default()
}

/// `r` (all of it reserved for `role`, `*` for unreserved) with each share
/// kind cut to `cap`; whether anything was cut.
fn cap_part(r: &Resources, role: &str, cap: &Quantities) -> (Resources, bool) {
    let have = Quantities::of(r);
    let mut excess = Resources::new();
    let mut cut = false;
    for (i, name) in KINDS.iter().enumerate() {
        let keep = cap.0[i].max(0);
        if have.0[i] > keep {
            excess = excess.scalar(name, (have.0[i] - keep) as f64 / 1000.0);
            cut = true;
        }
    }
    if !cut {
        return (r.clone(), false);
    }
    if role != UNRESERVED {
        excess = reserved_as(&excess, role);
    }
    (r.saturating_sub(&excess), true)
}

/// What one client would be offered on one agent.
struct Candidate {
    client: ClientIdx,
    unreserved: Resources,
    /// Reserved parts (each within the role's limit), by reservation role.
    reserved: Buckets,
}

impl Allocator {
    /// An empty allocator with the default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty allocator.
    pub fn with_config(config: AllocatorConfig) -> Self {
        let root = RoleNode {
            name: String::new(),
            parent: None,
            weight: 1.0,
            quota: Quota::default(),
            allocated: Quantities::ZERO,
            offered: Quantities::ZERO,
            allocated_unreserved: Quantities::ZERO,
            reserved: Quantities::ZERO,
            unmet: Quantities::ZERO,
            offerable: 0,
            clients: 0,
            key: Share(0.0),
            sorter: Sorter::default(),
        };
        Self {
            config,
            agents: Vec::new(),
            agent_index: HashMap::new(),
            vacant_agents: Vec::new(),
            frameworks: HashMap::new(),
            clients: Vec::new(),
            roles: vec![root],
            role_index: HashMap::new(),
            filters: Filters::default(),
            total: Quantities::ZERO,
            free_unreserved: Quantities::ZERO,
            required_headroom: Quantities::ZERO,
            quota_roles: 0,
            offerable: 0,
            dirty: BTreeSet::new(),
            held_back: BTreeSet::new(),
            demand_changed: false,
            quota_changed: false,
            shares_stale: false,
            seq: 0,
        }
    }

    // -----------------------------------------------------------------
    // Roles
    // -----------------------------------------------------------------

    fn role_share(&self, r: RoleIdx) -> Share {
        let node = &self.roles[r as usize];
        Share(node.allocated.dominant_share(&self.total) / node.weight)
    }

    /// The node of `name`, created (with its ancestors) if new.
    fn ensure_role(&mut self, name: &str) -> RoleIdx {
        if let Some(&r) = self.role_index.get(name) {
            return r;
        }
        let parent = match parent_role(name) {
            Some(p) => self.ensure_role(p),
            None => ROOT,
        };
        let idx = self.roles.len() as RoleIdx;
        self.roles.push(RoleNode {
            name: name.to_owned(),
            parent: Some(parent),
            weight: self.config.weights.get(name),
            quota: Quota::default(),
            allocated: Quantities::ZERO,
            offered: Quantities::ZERO,
            allocated_unreserved: Quantities::ZERO,
            reserved: Quantities::ZERO,
            unmet: Quantities::ZERO,
            offerable: 0,
            clients: 0,
            key: Share(0.0),
            sorter: Sorter::default(),
        });
        self.role_index.insert(name.to_owned(), idx);
        self.roles[parent as usize]
            .sorter
            .insert(Entry::Role(idx), Share(0.0));
        idx
    }

    /// `r` and its ancestors, nearest first (the root excluded).
    fn chain(&self, r: RoleIdx) -> Vec<RoleIdx> {
        let mut out = Vec::with_capacity(4);
        let mut cur = Some(r);
        while let Some(c) = cur.filter(|c| *c != ROOT) {
            out.push(c);
            cur = self.roles[c as usize].parent;
        }
        out
    }

    fn refresh_unmet(&mut self, r: RoleIdx) {
        let node = &self.roles[r as usize];
        let consumed = node.allocated_unreserved + node.reserved;
        let unmet = node.quota.guarantee.gap(consumed);
        let old = node.unmet;
        if old != unmet {
            self.required_headroom -= old;
            self.required_headroom += unmet;
            self.roles[r as usize].unmet = unmet;
            self.quota_changed = true;
        }
    }

    /// Sets a role's quota: `guarantee` (resources held back for it) and
    /// `limit` (`None`: unlimited; kinds it does not name are unlimited).
    /// Only cpus, mem, disk and gpus; the guarantee must fit in the limit.
    /// An empty guarantee and no limit remove the quota.
    pub fn set_quota(
        &mut self,
        role: &str,
        guarantee: &Resources,
        limit: Option<&Resources>,
    ) -> Result<(), AllocatorError> {
        validate_role(role)?;
        if role == UNRESERVED {
            return Err(QuotaError::DefaultRole.into());
        }
        let quota = Quota::new(guarantee, limit)?;
        let r = self.ensure_role(role);
        let was_set = self.roles[r as usize].quota.is_set();
        self.roles[r as usize].quota = quota;
        match (was_set, quota.is_set()) {
            (false, true) => self.quota_roles += 1,
            (true, false) => self.quota_roles -= 1,
            _ => {}
        }
        self.refresh_unmet(r);
        self.quota_changed = true;
        self.demand_changed = true;
        Ok(())
    }

    /// Changes a role's weight at runtime (must be finite and > 0).
    pub fn set_weight(&mut self, role: &str, weight: f64) -> Result<(), AllocatorError> {
        validate_role(role)?;
        if !(weight.is_finite() && weight > 0.0) {
            return Ok(());
        }
        self.config.weights.set(role, weight);
        let r = self.ensure_role(role);
        self.roles[r as usize].weight = weight;
        self.shares_stale = true;
        Ok(())
    }

    /// Every known role (subscribed to, weighted, with quota or
    /// reservations), by name.
    pub fn roles(&self) -> Vec<RoleView> {
        let mut out: Vec<RoleView> = self
            .roles
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, n)| RoleView {
                role: n.name.clone(),
                weight: n.weight,
                guarantee: n.quota.guarantee.to_resources(),
                limit: n.quota.limit_resources(),
                allocated: n.allocated.to_resources(),
                offered: n.offered.to_resources(),
                reserved: n.reserved.to_resources(),
                weighted_share: self.role_share(i as RoleIdx).0,
                frameworks: n.clients,
            })
            .collect();
        out.sort_by(|a, b| a.role.cmp(&b.role));
        out
    }

    // -----------------------------------------------------------------
    // Agents
    // -----------------------------------------------------------------

    fn agent_idx(&self, agent: &AgentId) -> Option<AgentIdx> {
        self.agent_index.get(agent).copied()
    }

    fn slot(&self, a: AgentIdx) -> Option<&AgentSlot> {
        self.agents.get(a as usize).and_then(Option::as_ref)
    }

    fn slot_mut(&mut self, a: AgentIdx) -> Option<&mut AgentSlot> {
        self.agents.get_mut(a as usize).and_then(Option::as_mut)
    }

    fn add_reserved(&mut self, role: &str, q: Quantities, sign: i64) {
        let r = self.ensure_role(role);
        for c in self.chain(r) {
            let node = &mut self.roles[c as usize];
            if sign > 0 {
                node.reserved += q;
            } else {
                node.reserved -= q;
            }
            self.refresh_unmet(c);
        }
    }

    /// Adds (or replaces) an agent with its total resources; nothing of it is
    /// used or offered yet (see [`Allocator::add_used`]).
    pub fn add_agent(&mut self, agent: AgentId, total: Resources) {
        self.remove_agent(&agent);
        let free = by_role(&total);
        for (role, part) in &free {
            if role != UNRESERVED {
                self.add_reserved(role, Quantities::of(part), 1);
            }
        }
        self.total += Quantities::of(&total);
        if let Some(u) = free.get(UNRESERVED) {
            self.free_unreserved += Quantities::of(u);
        }
        let slot = AgentSlot {
            id: agent.clone(),
            total,
            free,
            offered: BTreeMap::new(),
            used: BTreeMap::new(),
            filtered_by: HashSet::new(),
            refusing: 0,
            behind: BTreeMap::new(),
        };
        let idx = match self.vacant_agents.pop() {
            Some(i) => {
                self.agents[i as usize] = Some(slot);
                i
            }
            None => {
                self.agents.push(Some(slot));
                (self.agents.len() - 1) as AgentIdx
            }
        };
        self.agent_index.insert(agent, idx);
        self.dirty.insert(idx);
        self.shares_stale = true;
    }

    /// Removes an agent; its offers and usage are forgotten. Callers rescind
    /// the agent's offers themselves.
    pub fn remove_agent(&mut self, agent: &AgentId) {
        let Some(idx) = self.agent_index.remove(agent) else {
            return;
        };
        let Some(slot) = self.agents.get_mut(idx as usize).and_then(Option::take) else {
            return;
        };
        self.vacant_agents.push(idx);
        self.dirty.remove(&idx);
        self.held_back.remove(&idx);
        for c in &slot.filtered_by {
            self.filters.remove(*c, idx);
            self.clients[*c as usize].filtered.remove(&idx);
        }
        for (c, r) in &slot.offered {
            let unres = by_role(r).get(UNRESERVED).map(Quantities::of).unwrap_or_default();
            self.account(*c, -Quantities::of(r), Quantities::ZERO, -unres);
        }
        for (c, r) in &slot.used {
            let unres = by_role(r).get(UNRESERVED).map(Quantities::of).unwrap_or_default();
            self.account(*c, Quantities::ZERO, -Quantities::of(r), -unres);
        }
        for (role, part) in by_role(&slot.total) {
            if role != UNRESERVED {
                self.add_reserved(&role, Quantities::of(&part), -1);
            }
        }
        if let Some(u) = slot.free.get(UNRESERVED) {
            self.free_unreserved -= Quantities::of(u);
        }
        self.total -= Quantities::of(&slot.total);
        self.shares_stale = true;
        self.quota_changed = true;
    }

    /// Whether the agent is known.
    pub fn has_agent(&self, agent: &AgentId) -> bool {
        self.agent_index.contains_key(agent)
    }

    /// Reserves free unreserved `resources` (given unreserved) of `agent` for
    /// `role` (dynamic reservation, RESERVE). From then on they are offered
    /// only to clients of `role` or its descendants, and count towards its
    /// guarantee. Resources in offers must be recovered first.
    pub fn reserve(
        &mut self,
        agent: &AgentId,
        role: &str,
        resources: &Resources,
    ) -> Result<(), AllocatorError> {
        let (a, reserved) = self.reservation(agent, role, resources)?;
        self.move_between(a, UNRESERVED, resources, role, &reserved)?;
        let q = Quantities::of(resources);
        self.free_unreserved -= q;
        self.add_reserved(role, q, 1);
        Ok(())
    }

    /// Returns free `resources` (given unreserved) reserved for `role` on
    /// `agent` to the unreserved pool (UNRESERVE).
    pub fn unreserve(
        &mut self,
        agent: &AgentId,
        role: &str,
        resources: &Resources,
    ) -> Result<(), AllocatorError> {
        let (a, reserved) = self.reservation(agent, role, resources)?;
        self.move_between(a, role, &reserved, UNRESERVED, resources)?;
        let q = Quantities::of(resources);
        self.free_unreserved += q;
        self.add_reserved(role, q, -1);
        Ok(())
    }

    /// Checks a RESERVE/UNRESERVE of `resources` for `role` on `agent`: the
    /// agent's index and the resources as reserved for the role.
    fn reservation(
        &self,
        agent: &AgentId,
        role: &str,
        resources: &Resources,
    ) -> Result<(AgentIdx, Resources), AllocatorError> {
        validate_role(role)?;
        if role == UNRESERVED {
            return Err(AllocatorError::ReserveDefaultRole);
        }
        let a = self
            .agent_idx(agent)
            .ok_or_else(|| AllocatorError::UnknownAgent(agent.clone()))?;
        Ok((a, reserved_as(resources, role)))
    }

    /// Moves `take` out of free bucket `from` and `put` into bucket `to`,
    /// also in the agent's total.
    fn move_between(
        &mut self,
        a: AgentIdx,
        from: &str,
        take: &Resources,
        to: &str,
        put: &Resources,
    ) -> Result<(), AllocatorError> {
        let Some(slot) = self.slot_mut(a) else {
            return Err(AllocatorError::UnknownAgent(AgentId::new_unchecked("?")));
        };
        let have = slot.free.get(from).cloned().unwrap_or_default();
        let Some(left) = have.checked_sub(take) else {
            return Err(AllocatorError::NotFree {
                agent: slot.id.clone(),
                wanted: take.to_string(),
                free: slot.free_all().to_string(),
            });
        };
        if left.is_empty() {
            slot.free.remove(from);
        } else {
            slot.free.insert(from.to_owned(), left);
        }
        slot.free.entry(to.to_owned()).or_default().add(put);
        slot.total = slot.total.saturating_sub(take);
        slot.total.add(put);
        self.dirty.insert(a);
        self.quota_changed = true;
        Ok(())
    }

    // -----------------------------------------------------------------
    // Frameworks and clients
    // -----------------------------------------------------------------

    fn client_of(&self, framework: &FrameworkId, role: &str) -> Option<ClientIdx> {
        self.frameworks.get(framework)?.clients.get(role).copied()
    }

    fn ensure_client(&mut self, framework: &FrameworkId, role: &str) -> ClientIdx {
        if let Some(c) = self.client_of(framework, role) {
            return c;
        }
        let r = self.ensure_role(role);
        let idx = self.clients.len() as ClientIdx;
        self.clients.push(Client {
            framework: framework.clone(),
            role: r,
            subscribed: false,
            suppressed: false,
            offerable: false,
            allocated: Quantities::ZERO,
            offered: Quantities::ZERO,
            key: Share(0.0),
            filtered: HashSet::new(),
        });
        self.roles[r as usize].clients += 1;
        self.frameworks
            .entry(framework.clone())
            .or_insert_with(|| FrameworkSlot {
                active: false,
                clients: BTreeMap::new(),
                roles: Vec::new(),
            })
            .clients
            .insert(role.to_owned(), idx);
        idx
    }

    /// Brings a client's `offerable` flag (and everything indexed by it) in
    /// line with its framework's and its own state.
    fn refresh_offerable(&mut self, c: ClientIdx) {
        let client = &self.clients[c as usize];
        let active = self.frameworks.get(&client.framework).is_some_and(|f| f.active);
        let now = active && client.subscribed && !client.suppressed;
        if now == client.offerable {
            return;
        }
        let role = client.role;
        let key = Share(client.allocated.dominant_share(&self.total));
        let filtered: Vec<AgentIdx> = client.filtered.iter().copied().collect();
        let client = &mut self.clients[c as usize];
        client.offerable = now;
        client.key = key;
        if now {
            self.roles[role as usize].sorter.insert(Entry::Client(c), key);
            self.offerable += 1;
            self.demand_changed = true;
        } else {
            self.roles[role as usize].sorter.remove(Entry::Client(c), key);
            self.offerable -= 1;
        }
        for r in self.chain(role) {
            let node = &mut self.roles[r as usize];
            if now {
                node.offerable += 1;
            } else {
                node.offerable -= 1;
            }
        }
        for a in filtered {
            if let Some(slot) = self.slot_mut(a) {
                if now {
                    slot.refusing += 1;
                } else {
                    slot.refusing -= 1;
                }
            }
        }
    }

    fn framework_clients(&self, framework: &FrameworkId) -> Vec<ClientIdx> {
        self.frameworks
            .get(framework)
            .map(|f| f.clients.values().copied().collect())
            .unwrap_or_default()
    }

    /// Adds a framework (inactive until [`Allocator::activate`]), or updates
    /// the roles of a known one. No roles means `*`. Each role makes one
    /// client; clients of roles it no longer has get no more offers.
    pub fn add_framework(&mut self, framework: FrameworkId, roles: &[String]) {
        let roles = if roles.is_empty() {
            vec![UNRESERVED.to_owned()]
        } else {
            roles.to_vec()
        };
        let wanted: Vec<ClientIdx> = roles.iter().map(|r| self.ensure_client(&framework, r)).collect();
        if let Some(f) = self.frameworks.get_mut(&framework) {
            f.roles = roles;
        }
        for c in self.framework_clients(&framework) {
            let subscribed = wanted.contains(&c);
            self.clients[c as usize].subscribed = subscribed;
            self.refresh_offerable(c);
        }
    }

    /// Forgets a framework: its outstanding offers and filters go away (the
    /// caller rescinds the offers). Resources its tasks still use stay used
    /// until [`Allocator::release`].
    pub fn remove_framework(&mut self, framework: &FrameworkId) {
        let clients = self.framework_clients(framework);
        if let Some(f) = self.frameworks.get_mut(framework) {
            f.active = false;
            f.roles.clear();
        }
        for c in clients {
            self.clients[c as usize].subscribed = false;
            self.refresh_offerable(c);
            self.clear_client_filters(c);
            let holding: Vec<(AgentIdx, Resources)> = self
                .agents
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let s = s.as_ref()?;
                    s.offered.get(&c).map(|r| (i as AgentIdx, r.clone()))
                })
                .collect();
            for (a, r) in holding {
                self.return_offered(c, a, &r);
            }
            for slot in self.agents.iter_mut().flatten() {
                slot.behind.remove(&c);
            }
        }
    }

    /// The framework is subscribed and connected: it may receive offers.
    pub fn activate(&mut self, framework: &FrameworkId) {
        if let Some(f) = self.frameworks.get_mut(framework) {
            f.active = true;
        }
        for c in self.framework_clients(framework) {
            self.refresh_offerable(c);
        }
    }

    /// The framework is disconnected: no offers until it is activated again.
    pub fn deactivate(&mut self, framework: &FrameworkId) {
        if let Some(f) = self.frameworks.get_mut(framework) {
            f.active = false;
        }
        for c in self.framework_clients(framework) {
            self.refresh_offerable(c);
        }
    }

    /// The framework's clients for `roles` (empty: all it is subscribed to).
    fn clients_for(&self, framework: &FrameworkId, roles: &[String]) -> Vec<ClientIdx> {
        let Some(f) = self.frameworks.get(framework) else {
            return Vec::new();
        };
        let names: &[String] = if roles.is_empty() { &f.roles } else { roles };
        names.iter().filter_map(|r| f.clients.get(r).copied()).collect()
    }

    /// SUPPRESS: no offers for `roles` (empty: all of the framework's roles)
    /// until [`Allocator::revive`].
    pub fn suppress(&mut self, framework: &FrameworkId, roles: &[String]) {
        for c in self.clients_for(framework, roles) {
            self.clients[c as usize].suppressed = true;
            self.refresh_offerable(c);
        }
    }

    /// REVIVE has exactly one meaning: clear all of this framework's refuse
    /// filters for the given roles (all of its roles if none are given) and
    /// unsuppress those roles. Every agent with free resources is then
    /// reconsidered. Repeating it is harmless: the second call finds nothing
    /// to clear and changes nothing.
    pub fn revive(&mut self, framework: &FrameworkId, roles: &[String]) {
        for c in self.clients_for(framework, roles) {
            self.clear_client_filters(c);
            let client = &mut self.clients[c as usize];
            if client.suppressed {
                client.suppressed = false;
                self.refresh_offerable(c);
            }
        }
    }

    // -----------------------------------------------------------------
    // Filters
    // -----------------------------------------------------------------

    /// Refuses `agent`'s resources to `framework` in `role` until `until`
    /// (DECLINE with `refuse_seconds`). An empty `role` means every role of
    /// the framework.
    pub fn add_filter(&mut self, framework: FrameworkId, role: &str, agent: AgentId, until: Instant) {
        let Some(a) = self.agent_idx(&agent) else {
            return;
        };
        let clients = if role.is_empty() {
            self.framework_clients(&framework)
        } else {
            self.client_of(&framework, role).into_iter().collect()
        };
        for c in clients {
            if self.filters.add(c, a, until) {
                let offerable = self.clients[c as usize].offerable;
                self.clients[c as usize].filtered.insert(a);
                if let Some(slot) = self.slot_mut(a) {
                    slot.filtered_by.insert(c);
                    if offerable {
                        slot.refusing += 1;
                    }
                }
            }
        }
    }

    /// Forgets the cross-references of a filter already dropped from `filters`.
    fn unlink_filter(&mut self, c: ClientIdx, a: AgentIdx) {
        let offerable = self.clients[c as usize].offerable;
        self.clients[c as usize].filtered.remove(&a);
        if let Some(slot) = self.slot_mut(a)
            && slot.filtered_by.remove(&c)
        {
            if offerable {
                slot.refusing -= 1;
            }
            self.dirty.insert(a);
        }
    }

    fn clear_client_filters(&mut self, c: ClientIdx) {
        let agents: Vec<AgentIdx> = self.clients[c as usize].filtered.iter().copied().collect();
        for a in agents {
            self.filters.remove(c, a);
            self.unlink_filter(c, a);
        }
    }

    /// Drops every filter of the framework (all roles).
    pub fn clear_filters(&mut self, framework: &FrameworkId) {
        for c in self.framework_clients(framework) {
            self.clear_client_filters(c);
        }
    }

    /// The earliest instant a filter expires, if any filter is active: O(log n).
    pub fn next_filter_expiry(&self) -> Option<Instant> {
        self.filters.next_expiry()
    }

    // -----------------------------------------------------------------
    // Accounting
    // -----------------------------------------------------------------

    /// Applies a change of a client's offered/used amounts (and the
    /// unreserved part of their sum) to it and to its role chain.
    fn account(&mut self, c: ClientIdx, offered: Quantities, used: Quantities, unreserved: Quantities) {
        let delta = offered + used;
        let client = &mut self.clients[c as usize];
        client.offered += offered;
        client.allocated += delta;
        let role = client.role;
        if !delta.is_zero() && client.offerable && !self.shares_stale {
            let old = client.key;
            let new = Share(client.allocated.dominant_share(&self.total));
            client.key = new;
            self.roles[role as usize]
                .sorter
                .update(Entry::Client(c), old, new);
        }
        for r in self.chain(role) {
            let node = &mut self.roles[r as usize];
            node.offered += offered;
            node.allocated += delta;
            node.allocated_unreserved += unreserved;
            if !delta.is_zero() && !self.shares_stale {
                let old = node.key;
                let new = self.role_share(r);
                let parent = self.roles[r as usize].parent.unwrap_or(ROOT);
                self.roles[r as usize].key = new;
                self.roles[parent as usize]
                    .sorter
                    .update(Entry::Role(r), old, new);
            }
            if !unreserved.is_zero() && self.roles[r as usize].quota.is_set() {
                self.refresh_unmet(r);
            }
            // Room under a limit opened: agents held back by it get another look.
            if delta.0.iter().any(|v| *v < 0) && self.roles[r as usize].quota.has_limit() {
                self.quota_changed = true;
            }
        }
    }

    /// Re-keys every sorter (the cluster total changed).
    fn rekey_all(&mut self) {
        for node in &mut self.roles {
            node.sorter.clear();
        }
        for r in 1..self.roles.len() {
            let key = self.role_share(r as RoleIdx);
            let parent = self.roles[r].parent.unwrap_or(ROOT);
            self.roles[r].key = key;
            self.roles[parent as usize]
                .sorter
                .insert(Entry::Role(r as RoleIdx), key);
        }
        for c in 0..self.clients.len() {
            let client = &mut self.clients[c];
            let key = Share(client.allocated.dominant_share(&self.total));
            client.key = key;
            if client.offerable {
                let role = client.role;
                self.roles[role as usize]
                    .sorter
                    .insert(Entry::Client(c as ClientIdx), key);
            }
        }
        self.shares_stale = false;
    }

    /// Takes `wanted` out of a client's offers on an agent; returns what was
    /// taken.
    fn take_offered(&mut self, c: ClientIdx, a: AgentIdx, wanted: &Resources) -> Resources {
        let Some(slot) = self.slot_mut(a) else {
            return Resources::new();
        };
        let Some(offered) = slot.offered.get_mut(&c) else {
            return Resources::new();
        };
        let taken = intersect(offered, wanted);
        *offered = offered.saturating_sub(&taken);
        if offered.is_empty() {
            slot.offered.remove(&c);
        }
        taken
    }

    /// Puts resources back into an agent's free buckets; returns the
    /// unreserved quantities.
    fn put_free(&mut self, a: AgentIdx, r: &Resources) -> Quantities {
        let parts = by_role(r);
        let unres = parts.get(UNRESERVED).map(Quantities::of).unwrap_or_default();
        if let Some(slot) = self.slot_mut(a) {
            for (role, part) in parts {
                slot.free.entry(role).or_default().add(&part);
            }
        }
        self.free_unreserved += unres;
        unres
    }

    /// A client's offered resources come back to the free pool.
    fn return_offered(&mut self, c: ClientIdx, a: AgentIdx, r: &Resources) {
        let taken = self.take_offered(c, a, r);
        if taken.is_empty() {
            return;
        }
        let unres = self.put_free(a, &taken);
        self.account(c, -Quantities::of(&taken), Quantities::ZERO, -unres);
        self.seq += 1;
        let seq = self.seq;
        if let Some(slot) = self.slot_mut(a) {
            slot.behind.insert(c, seq);
        }
        self.dirty.insert(a);
    }

    /// Returns offered resources to the pool (decline, rescind, the unused
    /// rest of an accept). The framework goes behind other frameworks for
    /// this agent until the agent frees new resources.
    pub fn recover(&mut self, framework: &FrameworkId, agent: &AgentId, resources: &Resources) {
        let Some(a) = self.agent_idx(agent) else {
            return;
        };
        for c in self.framework_clients(framework) {
            if self.slot(a).is_some_and(|s| s.offered.contains_key(&c)) {
                self.return_offered(c, a, resources);
            }
        }
    }

    /// Moves offered resources to used: a task was launched on them.
    pub fn launch(&mut self, framework: &FrameworkId, agent: &AgentId, resources: &Resources) {
        let Some(a) = self.agent_idx(agent) else {
            return;
        };
        let mut rest = resources.clone();
        for c in self.framework_clients(framework) {
            let taken = self.take_offered(c, a, &rest);
            if taken.is_empty() {
                continue;
            }
            rest = rest.saturating_sub(&taken);
            let q = Quantities::of(&taken);
            if let Some(slot) = self.slot_mut(a) {
                slot.used.entry(c).or_default().add(&taken);
            }
            self.account(c, -q, q, Quantities::ZERO);
        }
        if !rest.is_empty() {
            self.add_used(framework, agent, &rest);
        }
    }

    /// Counts resources as used by the framework's tasks on the agent (e.g.
    /// tasks an agent reports when it re-registers). They are attributed to
    /// the framework's role that their reservations fit, else its first role.
    pub fn add_used(&mut self, framework: &FrameworkId, agent: &AgentId, resources: &Resources) {
        let Some(a) = self.agent_idx(agent) else {
            return;
        };
        let parts = by_role(resources);
        let roles = self
            .frameworks
            .get(framework)
            .map(|f| f.roles.clone())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| vec![UNRESERVED.to_owned()]);
        let role = roles
            .iter()
            .find(|r| {
                parts
                    .keys()
                    .all(|res_role| res_role == UNRESERVED || is_ancestor_or_self(res_role, r))
            })
            .unwrap_or(&roles[0])
            .clone();
        let c = self.ensure_client(framework, &role);
        let mut taken = Resources::new();
        let mut unres = Quantities::ZERO;
        if let Some(slot) = self.slot_mut(a) {
            for (res_role, part) in parts {
                let Some(free) = slot.free.get_mut(&res_role) else {
                    continue;
                };
                let got = intersect(free, &part);
                *free = free.saturating_sub(&got);
                if free.is_empty() {
                    slot.free.remove(&res_role);
                }
                if res_role == UNRESERVED {
                    unres = Quantities::of(&got);
                }
                taken.add(&got);
            }
            slot.used.entry(c).or_default().add(&taken);
        }
        self.free_unreserved -= unres;
        self.account(c, Quantities::ZERO, Quantities::of(&taken), unres);
    }

    /// Returns used resources to the pool: a task ended. The agent's new
    /// free resources are offered afresh to everyone, in DRF order.
    pub fn release(&mut self, framework: &FrameworkId, agent: &AgentId, resources: &Resources) {
        let Some(a) = self.agent_idx(agent) else {
            return;
        };
        let mut rest = resources.clone();
        for c in self.framework_clients(framework) {
            let taken = {
                let Some(slot) = self.slot_mut(a) else {
                    return;
                };
                let Some(used) = slot.used.get_mut(&c) else {
                    continue;
                };
                let taken = intersect(used, &rest);
                *used = used.saturating_sub(&taken);
                if used.is_empty() {
                    slot.used.remove(&c);
                }
                taken
            };
            if taken.is_empty() {
                continue;
            }
            rest = rest.saturating_sub(&taken);
            let unres = self.put_free(a, &taken);
            self.account(c, Quantities::ZERO, -Quantities::of(&taken), -unres);
        }
        if let Some(slot) = self.slot_mut(a) {
            slot.behind.clear();
        }
        self.dirty.insert(a);
    }

    // -----------------------------------------------------------------
    // Views
    // -----------------------------------------------------------------

    /// Resources of the agent that are neither used nor offered.
    pub fn free(&self, agent: &AgentId) -> Resources {
        self.agent_idx(agent)
            .and_then(|a| self.slot(a))
            .map(AgentSlot::free_all)
            .unwrap_or_default()
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
        pick: impl Fn(&AgentSlot) -> &BTreeMap<ClientIdx, Resources>,
    ) -> Resources {
        let mut out = Resources::new();
        if let Some(slot) = self.agent_idx(agent).and_then(|a| self.slot(a)) {
            for r in pick(slot).values() {
                out.add(r);
            }
        }
        out
    }

    /// What the framework's tasks use plus what it holds in offers, over all
    /// agents and roles. O(agents).
    pub fn allocated(&self, framework: &FrameworkId) -> Resources {
        let clients = self.framework_clients(framework);
        let mut out = Resources::new();
        for slot in self.agents.iter().flatten() {
            for c in &clients {
                for r in [slot.used.get(c), slot.offered.get(c)].into_iter().flatten() {
                    out.add(r);
                }
            }
        }
        out
    }

    /// The sum of all agents' resources.
    pub fn cluster_total(&self) -> Resources {
        let mut out = Resources::new();
        for slot in self.agents.iter().flatten() {
            out.add(&slot.total);
        }
        out
    }

    /// The framework's dominant share over all its roles: the largest
    /// fraction of the cluster's cpus, mem, disk or gpus it uses or holds
    /// in offers. O(roles of the framework).
    pub fn dominant_share(&self, framework: &FrameworkId) -> f64 {
        let mut sum = Quantities::ZERO;
        for c in self.framework_clients(framework) {
            sum += self.clients[c as usize].allocated;
        }
        sum.dominant_share(&self.total)
    }

    /// The framework's dominant share within each of its roles.
    pub fn role_shares(&self, framework: &FrameworkId) -> BTreeMap<String, f64> {
        self.frameworks
            .get(framework)
            .map(|f| {
                f.clients
                    .iter()
                    .map(|(role, c)| {
                        let share = self.clients[*c as usize].allocated.dominant_share(&self.total);
                        (role.clone(), share)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Number of active offer filters.
    pub fn filter_count(&self) -> usize {
        self.filters.len()
    }

    // -----------------------------------------------------------------
    // Allocation
    // -----------------------------------------------------------------

    /// Makes the next pass examine every agent with free resources, as after
    /// a change of demand. (Used by benchmarks to measure a full pass.)
    pub fn reconsider_all_agents(&mut self) {
        self.demand_changed = true;
    }

    /// Whether a pass at `now` would have anything to examine.
    pub fn has_work(&self, now: Instant) -> bool {
        self.demand_changed
            || !self.dirty.is_empty()
            || (self.quota_changed && !self.held_back.is_empty())
            || self.filters.next_expiry().is_some_and(|t| t <= now)
    }

    /// Runs one allocation pass at `now`: expired filters are dropped, then
    /// the agents whose situation changed are offered as described in the
    /// module documentation. The returned resources are counted as offered.
    pub fn allocate(&mut self, now: Instant) -> Vec<Allocation> {
        for (c, a) in self.filters.expire(now) {
            self.unlink_filter(c, a);
        }
        if self.shares_stale {
            self.rekey_all();
        }
        if self.quota_changed {
            self.quota_changed = false;
            let held = std::mem::take(&mut self.held_back);
            self.dirty.extend(held);
        }
        let candidates: Vec<AgentIdx> = if self.demand_changed {
            self.dirty.clear();
            self.demand_changed = false;
            (0..self.agents.len() as AgentIdx)
                .filter(|a| self.slot(*a).is_some_and(|s| !s.free.is_empty()))
                .collect()
        } else {
            std::mem::take(&mut self.dirty).into_iter().collect()
        };
        let mut out = Vec::new();
        if self.offerable == 0 {
            return out;
        }
        for a in candidates {
            self.allocate_agent(a, &mut out);
        }
        // Offers made during this pass changed nothing that needs another.
        self.quota_changed = false;
        out
    }

    fn allocate_agent(&mut self, a: AgentIdx, out: &mut Vec<Allocation>) {
        let mut served: Vec<ClientIdx> = Vec::new();
        loop {
            let Some(slot) = self.slot(a) else {
                return;
            };
            if slot.free.is_empty()
                || slot.refusing >= self.offerable
                || !self.config.min_allocatable.met_by(&slot.free_all())
            {
                return;
            }
            let mut capped = false;
            let found = self.pick(slot, &served, &mut capped);
            if capped {
                self.held_back.insert(a);
            }
            let Some(cand) = found else {
                return;
            };
            served.push(cand.client);
            self.give(a, cand, out);
        }
    }

    /// The first eligible client for agent `a` in DRF order (clients behind
    /// for this agent last, oldest return first), with what it would get.
    fn pick(&self, slot: &AgentSlot, served: &[ClientIdx], capped: &mut bool) -> Option<Candidate> {
        let mut stack = vec![self.roles[ROOT as usize].sorter.iter()];
        while let Some(top) = stack.last_mut() {
            match top.next() {
                None => {
                    stack.pop();
                }
                Some(&(_, Entry::Role(r))) => {
                    if self.roles[r as usize].offerable > 0 {
                        stack.push(self.roles[r as usize].sorter.iter());
                    }
                }
                Some(&(_, Entry::Client(c))) => {
                    if served.contains(&c) || slot.behind.contains_key(&c) {
                        continue;
                    }
                    if let Some(cand) = self.candidate(c, slot, capped) {
                        return Some(cand);
                    }
                }
            }
        }
        let mut behind: Vec<(u64, ClientIdx)> = slot.behind.iter().map(|(c, s)| (*s, *c)).collect();
        behind.sort_unstable();
        behind
            .into_iter()
            .filter(|(_, c)| !served.contains(c))
            .find_map(|(_, c)| self.candidate(c, slot, capped))
    }

    /// What client `c` would be offered of agent `a`, if anything.
    fn candidate(&self, c: ClientIdx, slot: &AgentSlot, capped: &mut bool) -> Option<Candidate> {
        let client = &self.clients[c as usize];
        if !client.offerable || slot.filtered_by.contains(&c) {
            return None;
        }
        if let Some(f) = self.frameworks.get(&client.framework)
            && f.clients
                .values()
                .any(|o| *o != c && slot.offered.contains_key(o))
        {
            return None;
        }
        let role = &self.roles[client.role as usize].name;
        // The limit caps everything the role is given, reserved included;
        // headroom for other roles' guarantees only applies to unreserved.
        let mut limit = self.limit_cap(client.role);
        let mut reserved = Buckets::new();
        for (res_role, part) in &slot.free {
            if res_role != UNRESERVED && is_ancestor_or_self(res_role, role) {
                let (got, cut) = cap_part(part, res_role, &limit);
                *capped |= cut;
                if !got.is_empty() {
                    limit -= Quantities::of(&got);
                    reserved.insert(res_role.clone(), got);
                }
            }
        }
        let mut unreserved = Resources::new();
        if let Some(u) = slot.free.get(UNRESERVED) {
            let cap = limit.min(self.headroom_cap(client.role));
            let (got, cut) = cap_part(u, UNRESERVED, &cap);
            *capped |= cut;
            unreserved = got;
        }
        let mut all = unreserved.clone();
        for part in reserved.values() {
            all.add(part);
        }
        if !self.config.min_allocatable.met_by(&all) {
            return None;
        }
        Some(Candidate {
            client: c,
            unreserved,
            reserved,
        })
    }

    /// How much role `r` may still be given, reserved or not: what fits in
    /// the limits of it and of its ancestors.
    fn limit_cap(&self, r: RoleIdx) -> Quantities {
        let mut cap = Quantities([UNLIMITED; 4]);
        if self.quota_roles == 0 {
            return cap;
        }
        for c in self.chain(r) {
            let node = &self.roles[c as usize];
            cap = cap.min(node.quota.limit.gap(node.allocated));
        }
        cap
    }

    /// How much unreserved resource role `r` may be given without offering
    /// into the headroom held back for other roles' unmet guarantees.
    fn headroom_cap(&self, r: RoleIdx) -> Quantities {
        if self.quota_roles == 0 {
            return Quantities([UNLIMITED; 4]);
        }
        let own_unmet = self
            .chain(r)
            .into_iter()
            .fold(Quantities::ZERO, |sum, c| sum + self.roles[c as usize].unmet);
        self.free_unreserved.gap(self.required_headroom) + own_unmet
    }

    /// Counts a candidate's resources as offered and records the allocation.
    fn give(&mut self, a: AgentIdx, cand: Candidate, out: &mut Vec<Allocation>) {
        let c = cand.client;
        let mut all = cand.unreserved.clone();
        let unres = Quantities::of(&cand.unreserved);
        let Some(slot) = self.slot_mut(a) else {
            return;
        };
        if let Some(u) = slot.free.get_mut(UNRESERVED) {
            *u = u.saturating_sub(&cand.unreserved);
            if u.is_empty() {
                slot.free.remove(UNRESERVED);
            }
        }
        for (role, part) in &cand.reserved {
            if let Some(free) = slot.free.get_mut(role) {
                *free = free.saturating_sub(part);
                if free.is_empty() {
                    slot.free.remove(role);
                }
            }
            all.add(part);
        }
        slot.offered.entry(c).or_default().add(&all);
        slot.behind.remove(&c);
        let agent_id = slot.id.clone();
        self.free_unreserved -= unres;
        self.account(c, Quantities::of(&all), Quantities::ZERO, unres);
        let client = &self.clients[c as usize];
        out.push(Allocation {
            framework_id: client.framework.clone(),
            agent_id,
            role: self.roles[client.role as usize].name.clone(),
            resources: all,
        });
    }
}
