//! Placement constraints: whether a task of an app may go on an agent,
//! given where the app's other live tasks are.
//!
//! Marathon's semantics: the field is `hostname` or an agent attribute; an
//! agent without the attribute fails every operator but UNLIKE. LIKE and
//! UNLIKE match the whole value (Marathon anchors its regex); GROUP_BY's
//! optional value is the number of groups expected; MAX_PER caps the tasks
//! per value; IS compares for equality.

use std::collections::{BTreeMap, BTreeSet};

use agora_proto::v1;
use regex::Regex;

use super::definition::{Constraint, ConstraintOperator};

/// What the constraints look at on an agent: its hostname and attributes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentFacts {
    /// The agent's hostname.
    pub hostname: String,
    /// The agent's attributes, `(name, value)`.
    pub attributes: Vec<(String, String)>,
}

impl AgentFacts {
    /// The facts of the agent an offer is from.
    pub fn from_offer(offer: &v1::Offer) -> Self {
        Self {
            hostname: offer.hostname.clone(),
            attributes: offer
                .attributes
                .iter()
                .map(|a| (a.name.clone(), a.value.clone()))
                .collect(),
        }
    }

    /// The value of a constraint field on this agent: the hostname for
    /// `hostname`, else the attribute's value (`None` if it has none).
    pub fn field(&self, field: &str) -> Option<&str> {
        if field == "hostname" {
            return Some(&self.hostname);
        }
        self.attributes
            .iter()
            .find(|(k, _)| k == field)
            .map(|(_, v)| v.as_str())
    }
}

/// Compiles a LIKE/UNLIKE pattern anchored at both ends, as Marathon
/// matches the whole value.
pub fn anchored_regex(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

/// True when a new task may go on `candidate`, given the agents of the
/// app's other live tasks (`placed`, one entry per task).
pub fn accepts(constraints: &[Constraint], candidate: &AgentFacts, placed: &[AgentFacts]) -> bool {
    constraints.iter().all(|c| accepts_one(c, candidate, placed))
}

fn accepts_one(c: &Constraint, candidate: &AgentFacts, placed: &[AgentFacts]) -> bool {
    let value = c.value.as_deref();
    let Some(own) = candidate.field(&c.field) else {
        return c.operator == ConstraintOperator::Unlike;
    };
    let placed_values = || placed.iter().filter_map(|p| p.field(&c.field));
    match c.operator {
        ConstraintOperator::Unique => placed_values().all(|v| v != own),
        ConstraintOperator::Cluster => match value.filter(|v| !v.is_empty()) {
            Some(v) => own == v,
            None => placed_values().next().is_none_or(|first| first == own),
        },
        ConstraintOperator::Is => value == Some(own),
        ConstraintOperator::Like => value
            .and_then(|p| anchored_regex(p).ok())
            .is_some_and(|re| re.is_match(own)),
        ConstraintOperator::Unlike => value
            .and_then(|p| anchored_regex(p).ok())
            .is_some_and(|re| !re.is_match(own)),
        ConstraintOperator::MaxPer => {
            let max = value.and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(0);
            placed_values().filter(|v| *v == own).count() < max
        }
        ConstraintOperator::GroupBy => {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for v in placed_values() {
                *counts.entry(v).or_default() += 1;
            }
            let expected_groups = value.and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(0);
            let own_count = counts.get(own).copied().unwrap_or(0);
            // Until every expected group has a task, only empty groups take one.
            if counts.len() < expected_groups {
                return own_count == 0;
            }
            let min = counts.values().copied().min().unwrap_or(0);
            own_count <= min
        }
    }
}

/// How many more tasks constraints allow at most on these agents (`None`
/// when unbounded), given the app's placed tasks. Counts only UNIQUE and
/// MAX_PER (the operators that cap a cluster's capacity), and the agents'
/// values of LIKE/UNLIKE/IS/CLUSTER filters.
pub fn max_placeable(
    constraints: &[Constraint],
    agents: &[AgentFacts],
    placed: &[AgentFacts],
) -> Option<usize> {
    let eligible: Vec<&AgentFacts> = agents
        .iter()
        .filter(|a| {
            constraints.iter().all(|c| match c.operator {
                ConstraintOperator::Unique | ConstraintOperator::MaxPer | ConstraintOperator::GroupBy => {
                    a.field(&c.field).is_some()
                }
                _ => accepts_one(c, a, placed),
            })
        })
        .collect();
    let mut bound: Option<usize> = None;
    for c in constraints {
        let per_value = match c.operator {
            ConstraintOperator::Unique => 1,
            ConstraintOperator::MaxPer => c
                .value
                .as_deref()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0),
            _ => continue,
        };
        let values: BTreeSet<&str> = eligible.iter().filter_map(|a| a.field(&c.field)).collect();
        let used: usize = values
            .iter()
            .map(|v| {
                placed
                    .iter()
                    .filter(|p| p.field(&c.field) == Some(v))
                    .count()
                    .min(per_value)
            })
            .sum();
        let room = values.len() * per_value - used;
        bound = Some(bound.map_or(room, |b| b.min(room)));
    }
    bound
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn agent(host: &str, attrs: &[(&str, &str)]) -> AgentFacts {
        AgentFacts {
            hostname: host.to_owned(),
            attributes: attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn c(field: &str, op: ConstraintOperator, value: Option<&str>) -> Constraint {
        Constraint {
            field: field.to_owned(),
            operator: op,
            value: value.map(str::to_owned),
        }
    }

    use ConstraintOperator::*;

    #[test]
    fn facts_come_from_the_offer() {
        let offer = v1::Offer {
            hostname: "h1".into(),
            attributes: vec![v1::Attribute {
                name: "rack".into(),
                value: "r1".into(),
            }],
            ..Default::default()
        };
        let facts = AgentFacts::from_offer(&offer);
        assert_eq!(facts.field("hostname"), Some("h1"));
        assert_eq!(facts.field("rack"), Some("r1"));
        assert_eq!(facts.field("zone"), None);
    }

    #[test]
    fn unique_refuses_a_host_that_already_runs_a_task() {
        let unique = [c("hostname", Unique, None)];
        assert!(!accepts(&unique, &agent("h1", &[]), &[agent("h1", &[])]));
        assert!(accepts(&unique, &agent("h2", &[]), &[agent("h1", &[])]));
    }

    #[test]
    fn unique_on_an_attribute_compares_attribute_values() {
        let unique = [c("rack", Unique, None)];
        let placed = [agent("h1", &[("rack", "a")])];
        assert!(!accepts(&unique, &agent("h2", &[("rack", "a")]), &placed));
        assert!(accepts(&unique, &agent("h3", &[("rack", "b")]), &placed));
    }

    #[test]
    fn cluster_accepts_only_the_given_value() {
        let cluster = [c("rack", Cluster, Some("a"))];
        assert!(accepts(&cluster, &agent("h1", &[("rack", "a")]), &[]));
        assert!(!accepts(&cluster, &agent("h2", &[("rack", "b")]), &[]));
    }

    #[test]
    fn cluster_without_value_follows_the_first_task() {
        let cluster = [c("rack", Cluster, None)];
        let placed = [agent("h1", &[("rack", "b")])];
        assert!(accepts(&cluster, &agent("h2", &[("rack", "b")]), &placed));
        assert!(!accepts(&cluster, &agent("h3", &[("rack", "a")]), &placed));
    }

    #[test]
    fn group_by_places_on_the_least_used_group() {
        let group_by = [c("rack", GroupBy, None)];
        let placed = [
            agent("h1", &[("rack", "a")]),
            agent("h2", &[("rack", "b")]),
            agent("h3", &[("rack", "a")]),
        ];
        assert!(!accepts(&group_by, &agent("h4", &[("rack", "a")]), &placed));
        assert!(accepts(&group_by, &agent("h5", &[("rack", "b")]), &placed));
    }

    #[test]
    fn group_by_with_a_count_fills_unseen_groups_first() {
        let group_by = [c("rack", GroupBy, Some("3"))];
        let placed = [agent("h1", &[("rack", "a")]), agent("h2", &[("rack", "b")])];
        assert!(!accepts(&group_by, &agent("h3", &[("rack", "a")]), &placed));
        assert!(accepts(&group_by, &agent("h4", &[("rack", "c")]), &placed));
    }

    #[test]
    fn like_matches_the_whole_value() {
        let like = [c("rack", Like, Some("rack-[0-9]"))];
        assert!(accepts(&like, &agent("h", &[("rack", "rack-1")]), &[]));
        assert!(!accepts(&like, &agent("h", &[("rack", "rack-12")]), &[]));
        assert!(!accepts(
            &[c("rack", Like, Some("rack"))],
            &agent("h", &[("rack", "rack-1")]),
            &[]
        ));
    }

    #[test]
    fn unlike_refuses_whole_matches_only() {
        let unlike = [c("hostname", Unlike, Some("bad.*"))];
        assert!(!accepts(&unlike, &agent("bad1", &[]), &[]));
        assert!(accepts(&unlike, &agent("good", &[]), &[]));
    }

    #[test]
    fn agent_without_the_attribute_fails_all_but_unlike() {
        let bare = agent("h", &[]);
        for op in [Unique, Cluster, GroupBy, Like, MaxPer, Is] {
            assert!(!accepts(&[c("rack", op, Some("1"))], &bare, &[]), "{op:?}");
        }
        assert!(accepts(&[c("rack", Unlike, Some("a"))], &bare, &[]));
    }

    #[test]
    fn max_per_caps_tasks_per_value() {
        let max_per = [c("rack", MaxPer, Some("2"))];
        let one = [agent("h1", &[("rack", "a")])];
        let two = [agent("h1", &[("rack", "a")]), agent("h2", &[("rack", "a")])];
        assert!(accepts(&max_per, &agent("h3", &[("rack", "a")]), &one));
        assert!(!accepts(&max_per, &agent("h3", &[("rack", "a")]), &two));
        assert!(accepts(&max_per, &agent("h3", &[("rack", "b")]), &two));
    }

    #[test]
    fn is_accepts_equal_values_only() {
        let is = [c("zone", Is, Some("eu"))];
        assert!(accepts(&is, &agent("h", &[("zone", "eu")]), &[]));
        assert!(!accepts(&is, &agent("h", &[("zone", "eu-west")]), &[]));
    }

    #[test]
    fn all_constraints_must_accept() {
        let both = [c("hostname", Unique, None), c("zone", Is, Some("eu"))];
        assert!(!accepts(&both, &agent("h1", &[("zone", "us")]), &[]));
        assert!(accepts(&both, &agent("h1", &[("zone", "eu")]), &[]));
    }

    #[test]
    fn max_placeable_counts_unique_hosts() {
        let agents = [agent("h1", &[]), agent("h2", &[])];
        assert_eq!(
            max_placeable(&[c("hostname", Unique, None)], &agents, &[]),
            Some(2)
        );
        assert_eq!(
            max_placeable(&[c("hostname", Unique, None)], &agents, &[agent("h1", &[])]),
            Some(1)
        );
        assert_eq!(max_placeable(&[], &agents, &[]), None);
    }

    #[test]
    fn max_placeable_counts_max_per_slots() {
        let agents = [agent("h1", &[("rack", "a")]), agent("h2", &[("rack", "b")])];
        assert_eq!(
            max_placeable(&[c("rack", MaxPer, Some("3"))], &agents, &[]),
            Some(6)
        );
    }

    fn hosts() -> impl Strategy<Value = Vec<usize>> {
        proptest::collection::vec(0usize..5, 0..40)
    }

    /// Offers arrive from random hosts; every accepted one is placed.
    fn place(constraints: &[Constraint], offers: &[usize]) -> Vec<AgentFacts> {
        let mut placed = Vec::new();
        for &h in offers {
            let candidate = agent(
                &format!("h{h}"),
                &[("rack", if h % 2 == 0 { "even" } else { "odd" })],
            );
            if accepts(constraints, &candidate, &placed) {
                placed.push(candidate);
            }
        }
        placed
    }

    proptest! {
        #[test]
        fn unique_never_places_two_tasks_on_one_host(offers in hosts()) {
            let placed = place(&[c("hostname", Unique, None)], &offers);
            let distinct: BTreeSet<&str> = placed.iter().map(|a| a.hostname.as_str()).collect();
            prop_assert_eq!(distinct.len(), placed.len());
        }

        #[test]
        fn max_per_never_exceeds_its_cap(offers in hosts(), cap in 1usize..4) {
            let placed = place(&[c("rack", MaxPer, Some(&cap.to_string()))], &offers);
            for rack in ["even", "odd"] {
                prop_assert!(placed.iter().filter(|a| a.field("rack") == Some(rack)).count() <= cap);
            }
        }

        #[test]
        fn group_by_keeps_groups_within_one_of_each_other(offers in hosts()) {
            let placed = place(&[c("rack", GroupBy, Some("2"))], &offers);
            let even = placed.iter().filter(|a| a.field("rack") == Some("even")).count();
            let odd = placed.len() - even;
            prop_assert!(even.abs_diff(odd) <= 1);
        }

        #[test]
        fn max_placeable_bounds_what_unique_places(offers in hosts()) {
            let agents: Vec<AgentFacts> = (0..5).map(|h| agent(&format!("h{h}"), &[])).collect();
            let unique = [c("hostname", Unique, None)];
            let placed = place(&unique, &offers);
            prop_assert!(placed.len() <= max_placeable(&unique, &agents, &[]).unwrap_or(usize::MAX));
        }
    }
}
