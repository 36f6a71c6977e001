//! The frameworks of `agora bench cluster`, on the SDK: each owns a
//! contiguous range of the benchmark's tasks, packs as many of them into
//! each offer as fit, declines the rest (refuse 0 s while tasks are
//! pending), SUPPRESSes once every task is launched, and reports when every
//! task is terminal.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use agora_sdk::proto::state::{is_terminal, mesos_name};
use agora_sdk::{Driver, Filters, OfferId, OfferPool, Resources, Scheduler, TaskBuilder, TaskId, v1};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::timeline::{Timeline, task_id, task_index};

/// How long offers are refused once a framework has nothing left to launch.
const REFUSE_WHEN_DONE: Duration = Duration::from_secs(3600);

/// Splits `total` items into `parts` contiguous ranges whose sizes differ by
/// at most one (the first ranges take the remainder).
pub fn split_evenly(total: usize, parts: usize) -> Vec<Range<usize>> {
    if parts == 0 {
        return Vec::new();
    }
    let (base, extra) = (total / parts, total % parts);
    let mut start = 0;
    (0..parts)
        .map(|p| {
            let len = base + usize::from(p < extra);
            let range = start..start + len;
            start += len;
            range
        })
        .collect()
}

/// How a framework's tasks ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Tasks that ended in a state other than FINISHED, by state.
    pub failures: BTreeMap<&'static str, usize>,
}

/// One benchmark framework.
pub struct BenchFramework {
    tasks: Range<usize>,
    next: usize,
    per_task: Resources,
    burst: usize,
    terminal: Vec<bool>,
    remaining: usize,
    suppressed: bool,
    timeline: Arc<Timeline>,
    outcome: Outcome,
    done: Option<oneshot::Sender<Outcome>>,
}

impl BenchFramework {
    /// A framework that launches the tasks numbered `tasks`, each needing
    /// `per_task`, at most `burst` per OFFERS event, and sends its
    /// [`Outcome`] on `done` when all are terminal.
    pub fn new(
        tasks: Range<usize>,
        per_task: Resources,
        burst: usize,
        timeline: Arc<Timeline>,
        done: oneshot::Sender<Outcome>,
    ) -> Self {
        let len = tasks.len();
        let mut framework = Self {
            next: tasks.start,
            tasks,
            per_task,
            burst: burst.max(1),
            terminal: vec![false; len],
            remaining: len,
            suppressed: false,
            timeline,
            outcome: Outcome::default(),
            done: Some(done),
        };
        framework.finish_if_done();
        framework
    }

    fn pending(&self) -> bool {
        self.next < self.tasks.end
    }

    fn finish_if_done(&mut self) {
        if self.remaining == 0
            && let Some(done) = self.done.take()
        {
            let _ = done.send(std::mem::take(&mut self.outcome));
        }
    }

    /// Places pending tasks on `pool`, offer by offer, as many as fit (at
    /// most the burst).
    fn place(&mut self, pool: &mut OfferPool, offered_at: Instant) {
        let limit = self.next.saturating_add(self.burst).min(self.tasks.end);
        for agent in pool.agents_mut() {
            while self.next < limit {
                let index = self.next;
                let placed = agent.place(&self.per_task, 0, |_, resources| {
                    TaskBuilder::new(TaskId::new_unchecked(task_id(index)), "sim")
                        .shell("true")
                        .resources(&resources)
                        .build()
                });
                if !placed {
                    break;
                }
                self.timeline.placed(index, offered_at);
                self.next += 1;
            }
            if self.next == limit {
                break;
            }
        }
    }
}

impl Scheduler for BenchFramework {
    async fn offers(&mut self, driver: &Driver, offers: Vec<v1::Offer>) {
        let offered_at = Instant::now();
        self.timeline.offers_received(offered_at);
        if !self.pending() {
            let ids = offers.iter().filter_map(|o| OfferId::parse(&o.id).ok()).collect();
            if let Err(e) = driver.decline(ids, Some(REFUSE_WHEN_DONE)).await {
                tracing::warn!(error = %e, "decline failed");
            }
            return;
        }
        let mut pool = OfferPool::new(&offers);
        self.place(&mut pool, offered_at);
        let filters = if self.pending() {
            Filters::refuse(Duration::ZERO)
        } else {
            Filters::refuse(REFUSE_WHEN_DONE)
        };
        if let Err(e) = driver.execute(pool.into_plan(), filters).await {
            tracing::warn!(error = %e, "accept/decline failed");
        }
        if !self.pending() && !self.suppressed {
            match driver.suppress(Vec::new()).await {
                Ok(()) => self.suppressed = true,
                Err(e) => tracing::warn!(error = %e, "suppress failed"),
            }
        }
    }

    async fn update(&mut self, _driver: &Driver, status: v1::TaskStatus) {
        let state = status.state();
        if !is_terminal(state) {
            return;
        }
        let Some(seen) = task_index(&status.task_id)
            .and_then(|i| i.checked_sub(self.tasks.start))
            .and_then(|i| self.terminal.get_mut(i))
        else {
            return;
        };
        if *seen {
            return;
        }
        *seen = true;
        self.remaining -= 1;
        self.timeline.terminal(Instant::now());
        if state != v1::TaskState::Finished {
            tracing::debug!(task = %status.task_id, state = mesos_name(state), message = %status.message, "task failed");
            *self.outcome.failures.entry(mesos_name(state)).or_default() += 1;
        }
        self.finish_if_done();
    }

    async fn error(&mut self, _driver: &Driver, message: String) {
        tracing::error!(%message, "the master ended a benchmark framework");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_split_evenly_with_the_remainder_first() {
        assert_eq!(split_evenly(10, 3), vec![0..4, 4..7, 7..10]);
    }

    #[test]
    fn an_even_split_covers_every_task_once() {
        let ranges = split_evenly(100_000, 100);
        assert_eq!(ranges.len(), 100);
        assert!(ranges.iter().all(|r| r.len() == 1000));
        assert_eq!(ranges.last().map(|r| r.end), Some(100_000));
    }

    #[test]
    fn more_parts_than_tasks_leaves_some_empty() {
        assert_eq!(split_evenly(2, 4), vec![0..1, 1..2, 2..2, 2..2]);
    }

    #[test]
    fn zero_parts_is_no_ranges() {
        assert!(split_evenly(5, 0).is_empty());
    }

    fn offer(id: &str, agent: &str, resources: &str) -> v1::Offer {
        v1::Offer {
            id: id.into(),
            framework_id: "fw".into(),
            agent_id: agent.into(),
            hostname: agent.into(),
            resources: Resources::parse(resources).unwrap().to_proto(),
            ..Default::default()
        }
    }

    fn framework(tasks: Range<usize>, burst: usize) -> (BenchFramework, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        let per_task = Resources::parse("cpus:0.5;mem:32").unwrap();
        let timeline = Arc::new(Timeline::new(tasks.end));
        (BenchFramework::new(tasks, per_task, burst, timeline, tx), rx)
    }

    fn two_offers() -> OfferPool {
        OfferPool::new(&[
            offer("o1", "a1", "cpus:1;mem:100"),
            offer("o2", "a2", "cpus:4;mem:100"),
        ])
    }

    fn placed(pool: &OfferPool) -> Vec<Vec<&str>> {
        pool.agents()
            .iter()
            .map(|a| a.tasks().iter().map(|t| t.task_id.as_str()).collect())
            .collect()
    }

    #[test]
    fn each_offer_is_filled_before_the_next() {
        let (mut f, _) = framework(0..3, usize::MAX);
        let mut pool = two_offers();
        f.place(&mut pool, Instant::now());
        assert_eq!(placed(&pool), vec![vec!["t0", "t1"], vec!["t2"]]);
        assert!(!f.pending());
    }

    #[test]
    fn no_more_than_the_burst_is_placed_per_event() {
        let (mut f, _) = framework(0..10, 3);
        let mut pool = two_offers();
        f.place(&mut pool, Instant::now());
        assert_eq!(placed(&pool), vec![vec!["t0", "t1"], vec!["t2"]]);
        let mut pool = two_offers();
        f.place(&mut pool, Instant::now());
        assert_eq!(placed(&pool), vec![vec!["t3", "t4"], vec!["t5"]]);
        assert!(f.pending());
    }

    #[test]
    fn a_framework_with_no_tasks_is_done_at_once() {
        let (_f, mut rx) = framework(5..5, usize::MAX);
        assert_eq!(rx.try_recv().unwrap(), Outcome::default());
    }
}
