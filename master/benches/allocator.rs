//! Allocator benchmarks in the shapes of Mesos' own
//! (`HierarchicalAllocator_BENCHMARK_Test`), so the figures compare:
//!
//! - `declined/<agents>x<frameworks>`: every framework has declined every
//!   agent (a refuse filter on every pair); one full pass over every agent.
//! - `first_cycle/<agents>x<frameworks>`: a fresh cluster; one pass offers
//!   every agent.
//! - `quota/3000_roles`: 3,000 agents, 3,000 roles each with a quota
//!   guarantee and limit, one framework per role; one pass offers every agent.
//! - `quota/3000_roles_nothing_to_do`: the same cluster after that pass,
//!   with nothing changed.
//!
//! Run: `cargo bench -p agora-master --bench allocator`.

use std::hint::black_box;
use std::time::Duration;

use agora_master::allocator::Allocator;
use agora_proto::{AgentId, FrameworkId, Resources};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tokio::time::Instant;

fn agent(n: usize) -> AgentId {
    AgentId::new_unchecked(format!("agent-{n}"))
}

fn framework(n: usize) -> FrameworkId {
    FrameworkId::new_unchecked(format!("fw-{n}"))
}

fn agent_resources() -> Resources {
    Resources::parse("cpus:16;mem:65536;disk:100000;ports:[31000-32000]").unwrap_or_default()
}

/// A cluster of `agents` agents and `frameworks` frameworks in role `*`.
fn cluster(agents: usize, frameworks: usize) -> Allocator {
    let mut a = Allocator::new();
    for n in 0..agents {
        a.add_agent(agent(n), agent_resources());
    }
    for n in 0..frameworks {
        a.add_framework(framework(n), &[]);
        a.activate(&framework(n));
    }
    a
}

fn declined(c: &mut Criterion, agents: usize, frameworks: usize) {
    let now = Instant::now();
    let mut a = cluster(agents, frameworks);
    // Every framework is offered, and declines, every agent for an hour.
    for o in a.allocate(now) {
        a.recover(&o.framework_id, &o.agent_id, &o.resources);
    }
    let until = now + Duration::from_secs(3600);
    for f in 0..frameworks {
        for n in 0..agents {
            a.add_filter(framework(f), "*", agent(n), until);
        }
    }
    c.bench_function(&format!("declined/{agents}x{frameworks}"), |b| {
        b.iter(|| {
            a.reconsider_all_agents();
            black_box(a.allocate(now))
        })
    });
}

fn first_cycle(c: &mut Criterion, agents: usize, frameworks: usize) {
    let now = Instant::now();
    let a = cluster(agents, frameworks);
    c.bench_function(&format!("first_cycle/{agents}x{frameworks}"), |b| {
        b.iter_batched(
            || a.clone(),
            |mut a| black_box(a.allocate(now).len()),
            BatchSize::LargeInput,
        )
    });
}

fn quota_cluster() -> Allocator {
    let mut a = Allocator::new();
    let guarantee = Resources::parse("cpus:8;mem:32768").unwrap_or_default();
    let limit = Resources::parse("cpus:16;mem:65536").unwrap_or_default();
    for n in 0..3000 {
        let role = format!("role{n}");
        let _ = a.set_quota(&role, &guarantee, Some(&limit));
        a.add_framework(framework(n), &[role]);
        a.activate(&framework(n));
    }
    for n in 0..3000 {
        a.add_agent(agent(n), agent_resources());
    }
    a
}

fn quota(c: &mut Criterion) {
    let now = Instant::now();
    let fresh = quota_cluster();
    c.bench_function("quota/3000_roles", |b| {
        b.iter_batched(
            || fresh.clone(),
            |mut a| black_box(a.allocate(now).len()),
            BatchSize::LargeInput,
        )
    });
    let mut settled = fresh.clone();
    let offered = settled.allocate(now).len();
    assert_eq!(offered, 3000, "every agent is offered");
    c.bench_function("quota/3000_roles_nothing_to_do", |b| {
        b.iter(|| black_box(settled.allocate(now).len()))
    });
}

fn benches(c: &mut Criterion) {
    declined(c, 2000, 200);
    declined(c, 10_000, 1000);
    first_cycle(c, 2000, 200);
    first_cycle(c, 10_000, 1000);
    quota(c);
}

criterion_group! {
    name = allocator;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(allocator);
