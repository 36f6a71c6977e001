//! Property tests of the policy: DRF with weights, quota, reservations,
//! filters, and a bound on how long demand goes unoffered.

use super::tests::{agent, fw, res};
use super::*;
use proptest::prelude::*;
use std::time::Duration;

fn subscribe(a: &mut Allocator, f: FrameworkId, role: &str) {
    a.add_framework(f.clone(), &[role.to_owned()]);
    a.activate(&f);
}

/// Frameworks with unlimited demand: every offer is launched on in full.
fn run_to_quiescence(a: &mut Allocator, now: Instant) {
    for _ in 0..1000 {
        let out = a.allocate(now);
        if out.is_empty() {
            return;
        }
        for o in out {
            a.launch(&o.framework_id, &o.agent_id, &o.resources);
        }
    }
}

fn role_view(a: &Allocator, role: &str) -> RoleView {
    a.roles().into_iter().find(|r| r.role == role).unwrap()
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
        let mut now = Instant::now();
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
                Op::AddFramework(n) => subscribe(&mut a, fw(n), "*"),
                Op::Deactivate(n) => a.deactivate(&fw(n)),
                Op::Allocate => {
                    for o in a.allocate(now) {
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
                        offers.push(o);
                    }
                }
                Op::DeclineFirst(secs) => {
                    if offers.is_empty() { continue; }
                    let o = offers.remove(0);
                    a.recover(&o.framework_id, &o.agent_id, &o.resources);
                    if secs > 0 {
                        let until = now + Duration::from_secs(secs);
                        a.add_filter(o.framework_id.clone(), &o.role, o.agent_id.clone(), until);
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

    #[test]
    fn shares_converge_to_drf_with_weights(
        agents in 20u32..60,
        cpus in 1u32..8,
        mem_per_cpu in 100u32..2000,
    ) {
        let config = AllocatorConfig {
            weights: RoleWeights::parse("prod=3,dev=1").unwrap(),
            ..AllocatorConfig::default()
        };
        let mut a = Allocator::with_config(config);
        for n in 0..agents {
            a.add_agent(agent(n), res(&format!("cpus:{cpus};mem:{}", cpus * mem_per_cpu)));
        }
        subscribe(&mut a, fw(1), "prod");
        subscribe(&mut a, fw(2), "dev");
        run_to_quiescence(&mut a, Instant::now());
        let prod = a.dominant_share(&fw(1));
        let dev = a.dominant_share(&fw(2));
        let one_agent = 1.0 / f64::from(agents);
        prop_assert!((prod / 3.0 - dev).abs() <= one_agent + 1e-9, "prod {prod} dev {dev}");
        prop_assert!((prod + dev - 1.0).abs() < 1e-9, "everything is allocated");
    }

    #[test]
    fn quota_guarantees_are_met_whenever_the_cluster_can_meet_them(
        agents in proptest::collection::vec(1u32..16, 1..12),
        guarantees in proptest::collection::vec(0u32..20, 1..4),
        first_role in 0usize..4,
    ) {
        let total: u32 = agents.iter().sum();
        let sum: u32 = guarantees.iter().sum();
        prop_assume!(sum <= total);
        let mut a = Allocator::new();
        for (i, g) in guarantees.iter().enumerate() {
            if *g > 0 {
                a.set_quota(&format!("q{i}"), &res(&format!("cpus:{g}")), None).unwrap();
            }
        }
        for (n, c) in agents.iter().enumerate() {
            a.add_agent(agent(n as u32), res(&format!("cpus:{c};mem:{}", c * 1024)));
        }
        // A greedy role without quota subscribes first (or in between).
        let mut order: Vec<(u32, String)> = (0..guarantees.len()).map(|i| (i as u32 + 1, format!("q{i}"))).collect();
        order.insert(first_role.min(order.len()), (0, "greedy".to_owned()));
        for (n, role) in &order {
            subscribe(&mut a, fw(*n), role);
            run_to_quiescence(&mut a, Instant::now());
        }
        for (i, g) in guarantees.iter().enumerate() {
            let got = role_view(&a, &format!("q{i}")).allocated.get_scalar("cpus");
            prop_assert!(got + 1e-9 >= f64::from(*g), "q{i} got {got} of guarantee {g}");
        }
    }

    #[test]
    fn limits_are_never_exceeded(
        // Per agent: unreserved cpus, and cpus statically reserved for a role.
        agents in proptest::collection::vec((1u32..16, 0usize..4, 0u32..6), 1..10),
        limits in proptest::collection::vec(1u32..20, 1..4),
        // Per step: a task to release, and a dynamic reservation to try.
        steps in proptest::collection::vec((0usize..10, 0u32..10, 0usize..4, 0u32..4), 0..10),
    ) {
        let mut a = Allocator::new();
        for (i, l) in limits.iter().enumerate() {
            a.set_quota(&format!("r{i}"), &Resources::new(), Some(&res(&format!("cpus:{l}")))).unwrap();
            subscribe(&mut a, fw(i as u32), &format!("r{i}"));
        }
        let role = |i: usize| format!("r{}", i % limits.len());
        for (n, (c, r, reserved)) in agents.iter().enumerate() {
            let mut text = format!("cpus:{c};mem:{}", c * 1024);
            if *reserved > 0 {
                text.push_str(&format!(";cpus({}):{reserved}", role(*r)));
            }
            a.add_agent(agent(n as u32), res(&text));
        }
        let now = Instant::now();
        let mut launched: Vec<Allocation> = Vec::new();
        let check = |a: &Allocator| -> Result<(), TestCaseError> {
            for (i, l) in limits.iter().enumerate() {
                let got = role_view(a, &format!("r{i}")).allocated.get_scalar("cpus");
                prop_assert!(got <= f64::from(*l) + 1e-9, "r{i} holds {got} > limit {l}");
            }
            Ok(())
        };
        for (release, on, r, cpus) in steps {
            for o in a.allocate(now) {
                a.launch(&o.framework_id, &o.agent_id, &o.resources);
                launched.push(o);
            }
            check(&a)?;
            if !launched.is_empty() {
                let o = launched.remove(release % launched.len());
                a.release(&o.framework_id, &o.agent_id, &o.resources);
            }
            if cpus > 0 {
                // Fails (and changes nothing) when the cpus are not free.
                let _ = a.reserve(&agent(on % agents.len() as u32), &role(r), &res(&format!("cpus:{cpus}")));
            }
        }
        run_to_quiescence(&mut a, now);
        check(&a)?;
    }

    #[test]
    fn reserved_resources_never_reach_another_role(
        agents in proptest::collection::vec((1u32..8, 0usize..4, 1u32..4), 1..10),
    ) {
        let roles = ["*", "eng", "eng/web", "ops"];
        let mut a = Allocator::new();
        for (n, (c, role, reserved)) in agents.iter().enumerate() {
            let mut text = format!("cpus:{c};mem:1024");
            if roles[*role] != "*" {
                text.push_str(&format!(";cpus({}):{reserved}", roles[*role]));
            }
            a.add_agent(agent(n as u32), res(&text));
        }
        for (i, role) in roles.iter().enumerate() {
            subscribe(&mut a, fw(i as u32), role);
        }
        for _ in 0..3 {
            let out = a.allocate(Instant::now());
            for o in &out {
                for (_, res_role) in o.resources.keys() {
                    prop_assert!(
                        res_role == "*" || is_ancestor_or_self(res_role, &o.role),
                        "{res_role} reserved resources offered to role {}", o.role
                    );
                }
                a.recover(&o.framework_id, &o.agent_id, &o.resources);
            }
        }
    }

    #[test]
    fn no_framework_with_unmet_demand_goes_without_offers_for_long(
        frameworks in 2u32..6,
        agents in 1u32..3,
        refuse in proptest::collection::vec(0u64..2, 64),
    ) {
        let mut a = Allocator::new();
        for n in 0..agents {
            a.add_agent(agent(n), res("cpus:4;mem:4096"));
        }
        for n in 0..frameworks {
            subscribe(&mut a, fw(n), "*");
        }
        let mut now = Instant::now();
        let bound = 2 * frameworks as usize + 2;
        let mut last_offer: Vec<usize> = vec![0; frameworks as usize];
        for (cycle, secs) in refuse.iter().enumerate() {
            for o in a.allocate(now) {
                let n: usize = o.framework_id.as_str().trim_start_matches("fw-").parse().unwrap();
                last_offer[n] = cycle;
                // Everyone declines: unmet demand, but not for these leftovers.
                a.recover(&o.framework_id, &o.agent_id, &o.resources);
                if *secs > 0 {
                    a.add_filter(o.framework_id, &o.role, o.agent_id, now + Duration::from_secs(*secs));
                }
            }
            for (n, last) in last_offer.iter().enumerate() {
                prop_assert!(cycle - last <= bound, "fw-{n} starved since cycle {last} (now {cycle})");
            }
            now += Duration::from_secs(1);
        }
    }
}
