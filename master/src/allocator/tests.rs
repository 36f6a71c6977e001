//! Unit tests of the allocation policy, one behaviour each.

use super::*;
use std::time::Duration;

pub(super) fn agent(n: u32) -> AgentId {
    AgentId::new_unchecked(format!("agent-{n}"))
}
pub(super) fn fw(n: u32) -> FrameworkId {
    FrameworkId::new_unchecked(format!("fw-{n}"))
}
pub(super) fn res(text: &str) -> Resources {
    Resources::parse(text).unwrap()
}
fn active_framework(a: &mut Allocator, f: FrameworkId) {
    a.add_framework(f.clone(), &[]);
    a.activate(&f);
}
fn role_framework(a: &mut Allocator, f: FrameworkId, roles: &[&str]) {
    let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
    a.add_framework(f.clone(), &roles);
    a.activate(&f);
}
fn now() -> Instant {
    Instant::now()
}

#[test]
fn offers_all_of_an_agents_free_resources_to_one_framework() {
    let mut a = Allocator::new();
    a.add_agent(agent(1), res("cpus:4;mem:1024;ports:[31000-31010]"));
    active_framework(&mut a, fw(1));
    let out = a.allocate(now());
    assert_eq!(
        out,
        vec![Allocation {
            framework_id: fw(1),
            agent_id: agent(1),
            role: "*".to_owned(),
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
    assert_eq!(a.allocate(now()).len(), 1);
    assert!(a.allocate(now()).is_empty());
}

#[test]
fn recovered_resources_are_offered_again() {
    let mut a = Allocator::new();
    a.add_agent(agent(1), res("cpus:4"));
    active_framework(&mut a, fw(1));
    let out = a.allocate(now());
    a.recover(&fw(1), &agent(1), &out[0].resources);
    assert_eq!(a.allocate(now()), out);
}

#[test]
fn the_framework_with_the_lowest_dominant_share_gets_the_agent() {
    let mut a = Allocator::new();
    a.add_agent(agent(1), res("cpus:4;mem:1000"));
    a.add_agent(agent(2), res("cpus:4;mem:1000"));
    active_framework(&mut a, fw(1));
    active_framework(&mut a, fw(2));
    a.add_used(&fw(1), &agent(1), &res("mem:500"));
    let out = a.allocate(now());
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
    assert!(a.allocate(now()).is_empty());
    a.revive(&fw(2), &[]);
    assert_eq!(a.allocate(now())[0].framework_id, fw(2));
}

#[test]
fn a_filtered_agent_is_not_offered_to_the_framework_until_expiry() {
    let mut a = Allocator::new();
    let t = now();
    a.add_agent(agent(1), res("cpus:4"));
    active_framework(&mut a, fw(1));
    a.add_filter(fw(1), "*", agent(1), t + Duration::from_secs(5));
    assert!(a.allocate(t).is_empty());
    assert!(a.allocate(t + Duration::from_secs(4)).is_empty());
    assert_eq!(a.allocate(t + Duration::from_secs(5)).len(), 1);
}

#[test]
fn a_filter_does_not_stop_other_frameworks() {
    let mut a = Allocator::new();
    let t = now();
    a.add_agent(agent(1), res("cpus:4"));
    active_framework(&mut a, fw(1));
    active_framework(&mut a, fw(2));
    a.add_filter(fw(1), "*", agent(1), t + Duration::from_secs(5));
    assert_eq!(a.allocate(t)[0].framework_id, fw(2));
}

#[test]
fn a_filter_applies_only_to_the_declined_role() {
    let mut a = Allocator::new();
    let t = now();
    a.add_agent(agent(1), res("cpus:4"));
    role_framework(&mut a, fw(1), &["a", "b"]);
    a.add_filter(fw(1), "a", agent(1), t + Duration::from_secs(5));
    let out = a.allocate(t);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].role, "b");
}

#[test]
fn next_filter_expiry_is_the_earliest_filter() {
    let mut a = Allocator::new();
    let t = now();
    a.add_agent(agent(1), res("cpus:4"));
    a.add_agent(agent(2), res("cpus:4"));
    active_framework(&mut a, fw(1));
    a.add_filter(fw(1), "*", agent(1), t + Duration::from_secs(9));
    a.add_filter(fw(1), "*", agent(2), t + Duration::from_secs(3));
    assert_eq!(a.next_filter_expiry(), Some(t + Duration::from_secs(3)));
}

#[test]
fn revive_clears_filters() {
    let mut a = Allocator::new();
    let t = now();
    a.add_agent(agent(1), res("cpus:4"));
    active_framework(&mut a, fw(1));
    a.add_filter(fw(1), "*", agent(1), t + Duration::from_secs(5));
    a.revive(&fw(1), &[]);
    assert_eq!(a.allocate(t).len(), 1);
}

#[test]
fn revive_of_one_role_keeps_the_other_roles_filters_and_suppression() {
    let mut a = Allocator::new();
    let t = now();
    a.add_agent(agent(1), res("cpus:4"));
    role_framework(&mut a, fw(1), &["a", "b"]);
    a.add_filter(fw(1), "a", agent(1), t + Duration::from_secs(5));
    a.suppress(&fw(1), &["b".to_owned()]);
    a.revive(&fw(1), &["b".to_owned()]);
    let out = a.allocate(t);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].role, "b", "role a is still filtered");
}

#[test]
fn revive_is_idempotent() {
    let mut a = Allocator::new();
    let t = now();
    a.add_agent(agent(1), res("cpus:4"));
    a.add_agent(agent(2), res("cpus:4"));
    active_framework(&mut a, fw(1));
    active_framework(&mut a, fw(2));
    a.add_filter(fw(1), "*", agent(1), t + Duration::from_secs(60));
    a.suppress(&fw(1), &[]);
    a.revive(&fw(1), &[]);
    let mut once = a.clone();
    a.revive(&fw(1), &[]);
    a.revive(&fw(1), &[]);
    assert_eq!(a.allocate(t), once.allocate(t));
    assert_eq!(a.filter_count(), 0);
    // Reviving with nothing to clear offers nothing new.
    a.revive(&fw(1), &[]);
    assert!(a.allocate(t).is_empty());
}

#[test]
fn used_resources_are_not_offered_until_released() {
    let mut a = Allocator::new();
    a.add_agent(agent(1), res("cpus:4"));
    active_framework(&mut a, fw(1));
    let out = a.allocate(now());
    a.launch(&fw(1), &agent(1), &res("cpus:3"));
    a.recover(
        &fw(1),
        &agent(1),
        &out[0].resources.saturating_sub(&res("cpus:3")),
    );
    assert_eq!(a.allocate(now())[0].resources, res("cpus:1"));
    a.release(&fw(1), &agent(1), &res("cpus:3"));
    assert_eq!(a.allocate(now())[0].resources, res("cpus:3"));
}

#[test]
fn reserved_resources_go_only_to_frameworks_of_that_role() {
    let mut a = Allocator::new();
    a.add_agent(agent(1), res("cpus:4;cpus(prod):2"));
    active_framework(&mut a, fw(1));
    let out = a.allocate(now());
    assert_eq!(out[0].resources, res("cpus:4"));
    role_framework(&mut a, fw(2), &["prod"]);
    let out = a.allocate(now());
    assert_eq!(out[0].framework_id, fw(2));
    assert_eq!(out[0].resources, res("cpus(prod):2"));
}

#[test]
fn reserved_resources_are_offered_to_descendant_roles() {
    let mut a = Allocator::new();
    a.add_agent(agent(1), res("cpus(eng):2"));
    role_framework(&mut a, fw(1), &["engine"]);
    assert!(a.allocate(now()).is_empty(), "engine is not under eng");
    role_framework(&mut a, fw(2), &["eng/web"]);
    let out = a.allocate(now());
    assert_eq!(out[0].framework_id, fw(2));
    assert_eq!(out[0].role, "eng/web");
}

#[test]
fn removing_an_agent_drops_its_resources() {
    let mut a = Allocator::new();
    a.add_agent(agent(1), res("cpus:4"));
    active_framework(&mut a, fw(1));
    a.remove_agent(&agent(1));
    assert!(a.allocate(now()).is_empty());
    assert!(a.cluster_total().is_empty());
}

#[test]
fn an_agent_with_a_sliver_of_cpu_is_not_offered_at_all() {
    let mut a = Allocator::new();
    a.add_agent(agent(1), res("cpus:0.001;mem:16;ports:[1-100]"));
    active_framework(&mut a, fw(1));
    assert!(a.allocate(now()).is_empty());
    a.reconsider_all_agents();
    assert!(a.allocate(now()).is_empty());
}

#[test]
fn leftovers_below_min_allocatable_are_never_offered() {
    let mut a = Allocator::new();
    a.add_agent(agent(1), res("cpus:1;mem:100;ports:[1-10]"));
    active_framework(&mut a, fw(1));
    active_framework(&mut a, fw(2));
    let out = a.allocate(now());
    let f = out[0].framework_id.clone();
    a.launch(&f, &agent(1), &res("cpus:0.995;mem:90"));
    a.recover(&f, &agent(1), &res("cpus:0.005;mem:10;ports:[1-10]"));
    for _ in 0..5 {
        assert!(a.allocate(now()).is_empty(), "cpus:0.005;mem:10;ports circulate");
    }
}

#[test]
fn a_declining_framework_does_not_starve_a_larger_framework() {
    // fw-1 holds little and keeps declining with refuse_seconds 0; fw-2
    // holds more (higher share) and wants the agent. Mesos re-offers the
    // leftovers to fw-1 forever; here fw-2 is offered them next.
    let mut a = Allocator::new();
    a.add_agent(agent(1), res("cpus:4;mem:4096"));
    a.add_agent(agent(2), res("cpus:4;mem:4096"));
    active_framework(&mut a, fw(1));
    active_framework(&mut a, fw(2));
    a.add_used(&fw(2), &agent(2), &res("cpus:4;mem:4096"));
    let first = a.allocate(now());
    assert_eq!(first[0].framework_id, fw(1), "lowest share first");
    a.recover(&fw(1), &agent(1), &first[0].resources);
    let second = a.allocate(now());
    assert_eq!(second.len(), 1);
    assert_eq!(
        second[0].framework_id,
        fw(2),
        "the decliner is behind for this agent"
    );
}

#[test]
fn frameworks_that_keep_declining_take_turns() {
    let mut a = Allocator::new();
    a.add_agent(agent(1), res("cpus:4"));
    for n in 1..=3 {
        active_framework(&mut a, fw(n));
    }
    let mut seen = Vec::new();
    for _ in 0..6 {
        let out = a.allocate(now());
        assert_eq!(out.len(), 1);
        seen.push(out[0].framework_id.clone());
        a.recover(&out[0].framework_id, &agent(1), &out[0].resources);
    }
    assert_eq!(seen, [fw(1), fw(2), fw(3), fw(1), fw(2), fw(3)]);
}

#[test]
fn a_pass_with_nothing_changed_does_nothing() {
    let mut a = Allocator::new();
    a.add_agent(agent(1), res("cpus:4"));
    active_framework(&mut a, fw(1));
    a.allocate(now());
    assert!(!a.has_work(now()));
    assert!(a.allocate(now()).is_empty());
}

#[test]
fn a_new_framework_makes_every_agent_with_free_resources_a_candidate() {
    let mut a = Allocator::new();
    a.add_agent(agent(1), res("cpus:4"));
    assert!(a.allocate(now()).is_empty(), "nobody to offer to");
    active_framework(&mut a, fw(1));
    assert_eq!(a.allocate(now()).len(), 1);
}

#[test]
fn weights_divide_a_roles_share() {
    let config = AllocatorConfig {
        weights: RoleWeights::parse("prod=3").unwrap(),
        ..AllocatorConfig::default()
    };
    let mut a = Allocator::with_config(config);
    for n in 0..2 {
        a.add_agent(agent(n), res("cpus:4;mem:4096"));
    }
    role_framework(&mut a, fw(1), &["prod"]);
    role_framework(&mut a, fw(2), &["dev"]);
    a.add_used(&fw(1), &agent(0), &res("cpus:2;mem:2048"));
    a.add_used(&fw(2), &agent(1), &res("cpus:1;mem:1024"));
    // prod: 0.25/3 ≈ 0.083 < dev: 0.125, so prod is offered first.
    let out = a.allocate(now());
    assert_eq!(out[0].framework_id, fw(1));
}

#[test]
fn hierarchical_roles_compare_subtrees_first() {
    let mut a = Allocator::new();
    a.add_agent(agent(0), res("cpus:10;mem:10000"));
    a.add_agent(agent(1), res("cpus:10;mem:10000"));
    role_framework(&mut a, fw(1), &["eng/web"]);
    role_framework(&mut a, fw(2), &["eng/db"]);
    role_framework(&mut a, fw(3), &["ops"]);
    // eng's subtree holds 4 cpus (split over two frameworks of 2 each); ops holds 3.
    a.add_used(&fw(1), &agent(0), &res("cpus:2"));
    a.add_used(&fw(2), &agent(0), &res("cpus:2"));
    a.add_used(&fw(3), &agent(0), &res("cpus:3"));
    let eng = a.roles().into_iter().find(|r| r.role == "eng").unwrap();
    assert_eq!(eng.allocated, res("cpus:4"), "a parent aggregates its subtree");
    let out = a.allocate(now());
    assert_eq!(out[0].framework_id, fw(3), "ops (0.15) is below eng (0.2)");
}

#[test]
fn a_framework_with_several_roles_is_offered_for_each() {
    let mut a = Allocator::new();
    a.add_agent(agent(1), res("cpus:4;cpus(a):1"));
    a.add_agent(agent(2), res("cpus:4;cpus(b):1"));
    role_framework(&mut a, fw(1), &["a", "b"]);
    let mut roles: Vec<String> = a.allocate(now()).into_iter().map(|o| o.role).collect();
    roles.sort();
    assert_eq!(roles, ["a", "b"]);
}

#[test]
fn a_limit_is_never_exceeded() {
    let mut a = Allocator::new();
    a.set_quota("dev", &Resources::new(), Some(&res("cpus:3")))
        .unwrap();
    a.add_agent(agent(1), res("cpus:2;mem:100"));
    a.add_agent(agent(2), res("cpus:2;mem:100"));
    role_framework(&mut a, fw(1), &["dev"]);
    let out = a.allocate(now());
    let cpus: f64 = out.iter().map(|o| o.resources.get_scalar("cpus")).sum();
    assert_eq!(cpus, 3.0);
}

#[test]
fn a_role_at_its_limit_is_not_offered_its_reserved_resources() {
    let mut a = Allocator::new();
    a.set_quota("prod", &Resources::new(), Some(&res("cpus:2;mem:100")))
        .unwrap();
    a.add_agent(agent(1), res("cpus:2;mem:100"));
    role_framework(&mut a, fw(1), &["prod"]);
    let out = a.allocate(now());
    a.launch(&fw(1), &agent(1), &out[0].resources);
    a.add_agent(agent(2), res("cpus(prod):2;mem(prod):100"));
    assert!(a.allocate(now()).is_empty(), "prod already holds its limit");
    assert_eq!(a.free(&agent(2)), res("cpus(prod):2;mem(prod):100"));
    a.release(&fw(1), &agent(1), &res("cpus:1;mem:50"));
    let cpus: f64 = a
        .allocate(now())
        .iter()
        .map(|o| o.resources.get_scalar("cpus"))
        .sum();
    assert_eq!(cpus, 1.0, "only what the release made room for is offered");
}

#[test]
fn a_role_near_its_limit_is_offered_only_the_reserved_part_that_fits() {
    let mut a = Allocator::new();
    a.set_quota("prod", &Resources::new(), Some(&res("cpus:3")))
        .unwrap();
    a.add_agent(agent(1), res("cpus(prod):2;mem:100"));
    a.add_agent(agent(2), res("cpus(prod):2;mem:100"));
    role_framework(&mut a, fw(1), &["prod"]);
    let out = a.allocate(now());
    let cpus: f64 = out.iter().map(|o| o.resources.get_scalar("cpus")).sum();
    assert_eq!(cpus, 3.0);
    let prod = a.roles().into_iter().find(|r| r.role == "prod").unwrap();
    assert_eq!(prod.allocated.get_scalar("cpus"), 3.0);
}

#[test]
fn a_guarantee_holds_back_headroom_from_other_roles() {
    let mut a = Allocator::new();
    a.set_quota("prod", &res("cpus:3"), None).unwrap();
    a.add_agent(agent(1), res("cpus:2;mem:100"));
    a.add_agent(agent(2), res("cpus:2;mem:100"));
    role_framework(&mut a, fw(1), &["dev"]);
    let out = a.allocate(now());
    let cpus: f64 = out.iter().map(|o| o.resources.get_scalar("cpus")).sum();
    assert_eq!(cpus, 1.0, "3 of 4 cpus are held for prod");
    role_framework(&mut a, fw(2), &["prod"]);
    let out = a.allocate(now());
    let cpus: f64 = out.iter().map(|o| o.resources.get_scalar("cpus")).sum();
    assert_eq!(cpus, 3.0);
    assert!(out.iter().all(|o| o.framework_id == fw(2)));
}

#[test]
fn headroom_is_released_once_the_guarantee_is_met() {
    let mut a = Allocator::new();
    a.set_quota("prod", &res("cpus:2"), None).unwrap();
    a.add_agent(agent(1), res("cpus:2;mem:100"));
    a.add_agent(agent(2), res("cpus:2;mem:100"));
    a.add_agent(agent(3), res("cpus:2;mem:100"));
    role_framework(&mut a, fw(1), &["dev"]);
    role_framework(&mut a, fw(2), &["prod"]);
    let out = a.allocate(now());
    let total: f64 = out.iter().map(|o| o.resources.get_scalar("cpus")).sum();
    assert_eq!(total, 6.0, "everything is offered: prod's 2 and dev's 4");
}

#[test]
fn reservations_count_towards_the_guarantee() {
    let mut a = Allocator::new();
    a.set_quota("prod", &res("cpus:2"), None).unwrap();
    a.add_agent(agent(1), res("cpus(prod):2;mem:100"));
    a.add_agent(agent(2), res("cpus:2;mem:100"));
    role_framework(&mut a, fw(1), &["dev"]);
    let out = a.allocate(now());
    let cpus: f64 = out.iter().map(|o| o.resources.get_scalar("cpus")).sum();
    assert_eq!(cpus, 2.0, "prod's guarantee is covered by its reservation");
}

#[test]
fn set_quota_refuses_a_guarantee_above_the_limit() {
    let mut a = Allocator::new();
    assert!(matches!(
        a.set_quota("prod", &res("cpus:4"), Some(&res("cpus:2"))),
        Err(AllocatorError::Quota(QuotaError::GuaranteeAboveLimit { .. }))
    ));
    assert!(matches!(
        a.set_quota("a b", &res("cpus:1"), None),
        Err(AllocatorError::Role(_))
    ));
}

#[test]
fn reserve_and_unreserve_move_free_resources_between_pools() {
    let mut a = Allocator::new();
    a.add_agent(agent(1), res("cpus:4;mem:100"));
    a.reserve(&agent(1), "prod", &res("cpus:3")).unwrap();
    assert_eq!(a.free(&agent(1)), res("cpus:1;cpus(prod):3;mem:100"));
    assert!(matches!(
        a.reserve(&agent(1), "prod", &res("cpus:3")),
        Err(AllocatorError::NotFree { .. })
    ));
    let prod = a.roles().into_iter().find(|r| r.role == "prod").unwrap();
    assert_eq!(prod.reserved, res("cpus:3"));
    a.unreserve(&agent(1), "prod", &res("cpus:2")).unwrap();
    assert_eq!(a.free(&agent(1)), res("cpus:3;cpus(prod):1;mem:100"));
}

#[test]
fn role_views_report_allocated_and_offered() {
    let mut a = Allocator::new();
    a.set_quota("prod", &res("cpus:1"), Some(&res("cpus:8"))).unwrap();
    a.add_agent(agent(1), res("cpus:4;mem:100"));
    role_framework(&mut a, fw(1), &["prod"]);
    a.allocate(now());
    a.launch(&fw(1), &agent(1), &res("cpus:1"));
    let prod = a.roles().into_iter().find(|r| r.role == "prod").unwrap();
    assert_eq!(prod.allocated, res("cpus:4;mem:100"));
    assert_eq!(prod.offered, res("cpus:3;mem:100"));
    assert_eq!(prod.guarantee, res("cpus:1"));
    assert_eq!(prod.limit, Some(res("cpus:8")));
    assert_eq!(prod.frameworks, 1);
    assert_eq!(a.dominant_share(&fw(1)), 1.0);
}
