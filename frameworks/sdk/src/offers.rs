//! Packing tasks into offers: [`Offered`] is what one agent offers, with the
//! tasks placed on it so far; [`OfferPool`] spreads tasks over several
//! agents' offers and turns the result into ACCEPT and DECLINE calls.

use agora_proto::v1;
use agora_proto::{AgentId, OfferId, Resources};

use crate::SdkError;

/// The name of the port range resource.
pub const PORTS: &str = "ports";

/// The offers of one agent, with what is left of them after the tasks
/// placed so far.
#[derive(Debug, Clone)]
pub struct Offered {
    offer_ids: Vec<OfferId>,
    agent_id: AgentId,
    hostname: String,
    attributes: Vec<v1::Attribute>,
    remaining: Resources,
    tasks: Vec<v1::TaskInfo>,
}

impl Offered {
    /// Starts from one offer; fails if its ids or resources are malformed.
    pub fn new(offer: &v1::Offer) -> Result<Self, SdkError> {
        let offer_id = OfferId::parse(&offer.id).map_err(|e| SdkError::Protocol(format!("offer id: {e}")))?;
        let agent_id = AgentId::parse(&offer.agent_id)
            .map_err(|e| SdkError::Protocol(format!("offer agent id: {e}")))?;
        let remaining = Resources::from_proto(&offer.resources)
            .map_err(|e| SdkError::Protocol(format!("offer {offer_id} resources: {e}")))?;
        Ok(Self {
            offer_ids: vec![offer_id],
            agent_id,
            hostname: offer.hostname.clone(),
            attributes: offer.attributes.clone(),
            remaining,
            tasks: Vec::new(),
        })
    }

    /// Adds another offer from the same agent (one ACCEPT may combine them).
    pub fn merge(&mut self, offer: &v1::Offer) -> Result<(), SdkError> {
        let other = Offered::new(offer)?;
        if other.agent_id != self.agent_id {
            return Err(SdkError::Protocol(format!(
                "offer {} is on agent {}, not {}",
                offer.id, other.agent_id, self.agent_id
            )));
        }
        self.offer_ids.extend(other.offer_ids);
        self.remaining.add(&other.remaining);
        Ok(())
    }

    /// The agent the resources are on.
    pub fn agent_id(&self) -> &AgentId {
        &self.agent_id
    }

    /// The agent's hostname.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The agent's attributes (for placement constraints).
    pub fn attributes(&self) -> &[v1::Attribute] {
        &self.attributes
    }

    /// The offers combined here.
    pub fn offer_ids(&self) -> &[OfferId] {
        &self.offer_ids
    }

    /// What is still free after the placed tasks.
    pub fn remaining(&self) -> &Resources {
        &self.remaining
    }

    /// Tasks placed so far.
    pub fn tasks(&self) -> &[v1::TaskInfo] {
        &self.tasks
    }

    /// The full resources for a task needing `resources` plus `ports`
    /// ports (the lowest free ones), if they fit in what remains.
    pub fn fit(&self, resources: &Resources, ports: usize) -> Option<Resources> {
        let mut demand = resources.clone();
        if ports > 0 {
            let picked = self.remaining.get_ranges(PORTS).first_n(ports as u64)?;
            demand.add(&Resources::new().with_ranges(PORTS, picked.into_iter().map(|p| (p, p))));
        }
        self.remaining.contains(&demand).then_some(demand)
    }

    /// Takes `resources` plus `ports` ports out of what remains and returns
    /// the full set to give the task, or `None` (nothing taken) if they do
    /// not fit.
    pub fn allocate(&mut self, resources: &Resources, ports: usize) -> Option<Resources> {
        let demand = self.fit(resources, ports)?;
        self.remaining = self.remaining.checked_sub(&demand)?;
        Some(demand)
    }

    /// Adds a task whose resources were obtained from [`Offered::allocate`].
    pub fn launch(&mut self, mut task: v1::TaskInfo) {
        task.agent_id = self.agent_id.to_string();
        self.tasks.push(task);
    }

    /// Allocates and, if it fits, launches the task `make` builds from the
    /// allocated resources. Returns whether the task was placed.
    pub fn place(
        &mut self,
        resources: &Resources,
        ports: usize,
        make: impl FnOnce(&Offered, Resources) -> v1::TaskInfo,
    ) -> bool {
        match self.allocate(resources, ports) {
            Some(allocated) => {
                let task = make(self, allocated);
                self.launch(task);
                true
            }
            None => false,
        }
    }

    /// The offer ids and the tasks to launch on them.
    pub fn into_parts(self) -> (Vec<OfferId>, Vec<v1::TaskInfo>) {
        (self.offer_ids, self.tasks)
    }
}

/// Offers grouped per agent, to place many tasks at once.
#[derive(Debug, Clone, Default)]
pub struct OfferPool {
    agents: Vec<Offered>,
    unusable: Vec<OfferId>,
}

/// What to do with a pool: ACCEPT these offers with these tasks, DECLINE the
/// rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LaunchPlan {
    /// One entry per agent that got tasks: its offers and the tasks.
    pub accepts: Vec<(Vec<OfferId>, Vec<v1::TaskInfo>)>,
    /// Offers that got no task (including malformed ones).
    pub declines: Vec<OfferId>,
}

impl OfferPool {
    /// Groups `offers` by agent. Malformed offers cannot be used; their ids
    /// (where readable) are declined by the plan.
    pub fn new(offers: &[v1::Offer]) -> Self {
        let mut pool = OfferPool::default();
        for offer in offers {
            pool.add(offer);
        }
        pool
    }

    /// Adds one more offer.
    pub fn add(&mut self, offer: &v1::Offer) {
        let result = match self
            .agents
            .iter_mut()
            .find(|a| a.agent_id.as_str() == offer.agent_id)
        {
            Some(agent) => agent.merge(offer),
            None => Offered::new(offer).map(|o| self.agents.push(o)),
        };
        if let Err(e) = result {
            tracing::warn!(offer = %offer.id, error = %e, "ignoring malformed offer");
            if let Ok(id) = OfferId::parse(&offer.id) {
                self.unusable.push(id);
            }
        }
    }

    /// Whether there are no usable offers.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// The offers, per agent.
    pub fn agents(&self) -> &[Offered] {
        &self.agents
    }

    /// The offers, per agent, for custom placement.
    pub fn agents_mut(&mut self) -> &mut [Offered] {
        &mut self.agents
    }

    /// Number of tasks placed so far.
    pub fn task_count(&self) -> usize {
        self.agents.iter().map(|a| a.tasks.len()).sum()
    }

    /// Places one task on the agent with the fewest tasks placed so far
    /// among those where it fits (spreading load), building it with `make`
    /// from the allocated resources. Returns whether it was placed.
    pub fn place(
        &mut self,
        resources: &Resources,
        ports: usize,
        make: impl FnOnce(&Offered, Resources) -> v1::TaskInfo,
    ) -> bool {
        let best = self
            .agents
            .iter()
            .enumerate()
            .filter(|(_, a)| a.fit(resources, ports).is_some())
            .min_by_key(|(_, a)| a.tasks.len())
            .map(|(i, _)| i);
        match best.and_then(|i| self.agents.get_mut(i)) {
            Some(agent) => agent.place(resources, ports, make),
            None => false,
        }
    }

    /// The calls that carry out the placement.
    pub fn into_plan(self) -> LaunchPlan {
        let mut plan = LaunchPlan {
            accepts: Vec::new(),
            declines: self.unusable,
        };
        for agent in self.agents {
            if agent.tasks.is_empty() {
                plan.declines.extend(agent.offer_ids);
            } else {
                plan.accepts.push(agent.into_parts());
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use agora_proto::TaskId;

    use super::*;
    use crate::TaskBuilder;

    fn offer(id: &str, agent: &str, resources: &str) -> v1::Offer {
        v1::Offer {
            id: id.into(),
            framework_id: "fw".into(),
            agent_id: agent.into(),
            hostname: format!("{agent}.local"),
            resources: Resources::parse(resources).unwrap().to_proto(),
            ..Default::default()
        }
    }

    fn small() -> Resources {
        Resources::new().scalar("cpus", 0.5).scalar("mem", 32.0)
    }

    fn make(n: usize) -> impl FnOnce(&Offered, Resources) -> v1::TaskInfo {
        move |_, r| {
            TaskBuilder::new(TaskId::new_unchecked(format!("t{n}")), "t")
                .shell("true")
                .resources(&r)
                .build()
        }
    }

    #[test]
    fn placing_a_task_subtracts_its_resources() {
        let mut o = Offered::new(&offer("o1", "a1", "cpus:1;mem:100")).unwrap();
        assert!(o.place(&small(), 0, make(1)));
        assert_eq!(o.remaining(), &Resources::parse("cpus:0.5;mem:68").unwrap());
        assert_eq!(o.tasks()[0].agent_id, "a1");
    }

    #[test]
    fn a_task_that_does_not_fit_takes_nothing() {
        let mut o = Offered::new(&offer("o1", "a1", "cpus:0.4;mem:100")).unwrap();
        assert!(!o.place(&small(), 0, make(1)));
        assert_eq!(o.remaining(), &Resources::parse("cpus:0.4;mem:100").unwrap());
        assert!(o.tasks().is_empty());
    }

    #[test]
    fn ports_are_picked_lowest_first_and_not_reused() {
        let mut o = Offered::new(&offer("o1", "a1", "cpus:4;mem:1000;ports:[31000-31002]")).unwrap();
        let first = o.allocate(&small(), 2).unwrap();
        assert_eq!(first.get_ranges(PORTS).ranges(), &[(31000, 31001)]);
        let second = o.allocate(&small(), 1).unwrap();
        assert_eq!(second.get_ranges(PORTS).ranges(), &[(31002, 31002)]);
        assert!(o.allocate(&small(), 1).is_none());
    }

    #[test]
    fn pool_merges_offers_of_the_same_agent() {
        let pool = OfferPool::new(&[offer("o1", "a1", "cpus:1"), offer("o2", "a1", "cpus:1")]);
        assert_eq!(pool.agents().len(), 1);
        assert_eq!(pool.agents()[0].remaining().get_scalar("cpus"), 2.0);
        assert_eq!(pool.agents()[0].offer_ids().len(), 2);
    }

    #[test]
    fn pool_spreads_tasks_over_agents() {
        let mut pool = OfferPool::new(&[
            offer("o1", "a1", "cpus:2;mem:1000"),
            offer("o2", "a2", "cpus:2;mem:1000"),
        ]);
        for n in 0..4 {
            assert!(pool.place(&small(), 0, make(n)));
        }
        assert_eq!(pool.agents()[0].tasks().len(), 2);
        assert_eq!(pool.agents()[1].tasks().len(), 2);
    }

    #[test]
    fn pool_packs_until_full() {
        let mut pool = OfferPool::new(&[offer("o1", "a1", "cpus:1;mem:1000")]);
        let mut placed = 0;
        while pool.place(&small(), 0, make(placed)) {
            placed += 1;
        }
        assert_eq!(placed, 2);
        assert_eq!(pool.task_count(), 2);
    }

    #[test]
    fn plan_accepts_used_offers_and_declines_the_rest() {
        let mut pool = OfferPool::new(&[
            offer("o1", "a1", "cpus:1;mem:1000"),
            offer("o2", "a2", "cpus:0.1;mem:1000"),
        ]);
        assert!(pool.place(&small(), 0, make(1)));
        let plan = pool.into_plan();
        assert_eq!(plan.accepts.len(), 1);
        assert_eq!(plan.accepts[0].0, vec![OfferId::new_unchecked("o1")]);
        assert_eq!(plan.declines, vec![OfferId::new_unchecked("o2")]);
    }

    #[test]
    fn malformed_offers_are_declined_not_used() {
        let mut bad = offer("o9", "a9", "cpus:1");
        bad.resources[0].value = None;
        let pool = OfferPool::new(&[bad]);
        assert!(pool.is_empty());
        assert_eq!(pool.into_plan().declines, vec![OfferId::new_unchecked("o9")]);
    }
}
