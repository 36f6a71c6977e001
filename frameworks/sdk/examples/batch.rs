//! # Writing an Agora framework: a batch runner
//!
//! This example is a complete framework. It runs a list of shell commands on
//! the cluster, prints every state change of every task, tears itself down
//! when all tasks have ended, and exits 0 if every task FINISHED, 1
//! otherwise.
//!
//! ```text
//! cargo run -p agora-sdk --example batch -- --master 127.0.0.1:5050 \
//!     --task 'echo hi' --task 'sleep 1'
//! cargo run -p agora-sdk --example batch -- --master 127.0.0.1:5050 \
//!     --count 20 --command 'sleep 0.5' --cpus 0.2 --mem 64
//! ```
//!
//! A framework is two things:
//!
//! 1. A type implementing [`Scheduler`]: the master *tells* the framework
//!    things (here are offers, this task is now RUNNING, you were
//!    disconnected) and the driver calls the matching method.
//! 2. A [`Driver`]: the handle the framework *asks* the master things with
//!    (accept these offers with these tasks, decline those, kill that task).
//!
//! The driver does the plumbing: it connects to the master, subscribes,
//! re-subscribes after a disconnect, and acknowledges status updates.
//! Everything below is the framework's own logic.

use std::collections::{BTreeMap, VecDeque};
use std::process::ExitCode;
use std::time::Duration;

use agora_sdk::proto::state::{is_terminal, mesos_name};
use agora_sdk::{
    Driver, DriverConfig, Filters, OfferPool, Resources, Scheduler, Subscribed, TaskBuilder, TaskId,
    split_masters, v1,
};
use clap::Parser;
use tokio::sync::oneshot;

/// Runs a batch of shell commands on an Agora cluster.
#[derive(Debug, Parser)]
struct Args {
    /// Master address(es), host:port[,host:port...], or zk://host:2181/path to follow the leader.
    #[arg(long, default_value = "127.0.0.1:5050")]
    master: String,
    /// A command to run (repeatable).
    #[arg(long = "task")]
    tasks: Vec<String>,
    /// Run `--command` this many times (in addition to any --task).
    #[arg(long, default_value_t = 0)]
    count: usize,
    /// The command `--count` runs.
    #[arg(long, default_value = "true")]
    command: String,
    /// CPUs per task.
    #[arg(long, default_value_t = 0.1)]
    cpus: f64,
    /// Memory per task, MiB.
    #[arg(long, default_value_t = 32.0)]
    mem: f64,
    /// The framework's name.
    #[arg(long, default_value = "batch")]
    name: String,
}

/// How the batch ended, sent from the scheduler to `main`.
#[derive(Debug, Default)]
struct Summary {
    finished: usize,
    failed: Vec<(TaskId, v1::TaskState)>,
}

/// The framework's state: what is still to launch and what has ended.
struct Batch {
    /// Every task's command, by task id.
    commands: BTreeMap<TaskId, String>,
    /// Tasks not launched yet.
    pending: VecDeque<TaskId>,
    /// The latest state of every task launched so far.
    states: BTreeMap<TaskId, v1::TaskState>,
    /// Resources each task gets.
    per_task: Resources,
    /// Total number of tasks in the batch.
    total: usize,
    /// Whether we told the master to stop sending offers.
    suppressed: bool,
    /// Where to report the outcome; taken when the batch is done.
    done: Option<oneshot::Sender<Summary>>,
}

impl Scheduler for Batch {
    /// Called after every (re-)subscription. After a re-subscription we may
    /// have missed updates while disconnected, so ask the master for the
    /// latest state of all our tasks ("implicit reconciliation"); answers
    /// arrive as ordinary updates.
    async fn subscribed(&mut self, driver: &Driver, info: Subscribed) {
        println!("subscribed as {}", info.framework_id);
        if info.resubscribed
            && let Err(e) = driver.reconcile(vec![]).await
        {
            eprintln!("reconcile failed: {e}");
        }
    }

    /// The heart of a framework: the master offers resources on some agents
    /// and we decide what to run there. `OfferPool` packs as many pending
    /// tasks as fit into the offers, spreading them over the agents; the
    /// resulting plan accepts the offers we used (launching the tasks) and
    /// declines the rest. Offers we neither accept nor decline stay ours
    /// until the master rescinds them, starving other frameworks: always
    /// answer every offer.
    async fn offers(&mut self, driver: &Driver, offers: Vec<v1::Offer>) {
        let mut pool = OfferPool::new(&offers);
        while let Some(id) = self.pending.front() {
            let command = self.commands.get(id).cloned().unwrap_or_default();
            let placed = pool.place(&self.per_task, 0, |_, resources| {
                TaskBuilder::new(id.clone(), format!("batch {id}"))
                    .shell(command)
                    .resources(&resources)
                    .build()
            });
            if !placed {
                break; // nothing left that fits; wait for more offers
            }
            if let Some(id) = self.pending.pop_front() {
                self.states.insert(id, v1::TaskState::Staging);
            }
        }
        // With nothing left to launch, keep the unused resources away from us
        // for a while (other frameworks get them) and stop offers entirely.
        let filters = if self.pending.is_empty() {
            Filters::refuse(Duration::from_secs(60))
        } else {
            Filters::default()
        };
        if let Err(e) = driver.execute(pool.into_plan(), filters).await {
            eprintln!("accepting offers failed: {e}");
        }
        if self.pending.is_empty() && !self.suppressed {
            self.suppressed = driver.suppress(vec![]).await.is_ok();
        }
    }

    /// A task changed state. The driver acknowledges the update after this
    /// returns (unless `auto_acknowledge` is off), so the agent stops
    /// re-sending it.
    async fn update(&mut self, driver: &Driver, status: v1::TaskStatus) {
        let state = status.state();
        println!(
            "{:<12} {:<16} {}",
            status.task_id,
            mesos_name(state),
            status.message
        );
        let Ok(id) = TaskId::parse(&status.task_id) else {
            return;
        };
        if !self.states.contains_key(&id) {
            return; // not one of ours (e.g. from an earlier run)
        }
        self.states.insert(id.clone(), state);

        // A DROPPED task never started (e.g. its offer was rescinded just as
        // we accepted it): put it back in the queue and ask for offers again.
        if state == v1::TaskState::Dropped {
            self.states.remove(&id);
            self.pending.push_back(id);
            if self.suppressed && driver.revive(vec![]).await.is_ok() {
                self.suppressed = false;
            }
            return;
        }

        let ended = self.states.values().filter(|s| is_terminal(**s)).count();
        if ended == self.total {
            self.finish(driver).await;
        }
    }

    /// The master connection dropped; the driver is already re-subscribing.
    /// Our tasks keep running (for the framework's failover timeout).
    async fn disconnected(&mut self, _driver: &Driver) {
        eprintln!("disconnected from the master; re-subscribing");
    }

    /// The master will not serve us any more; the driver stops after this.
    async fn error(&mut self, _driver: &Driver, message: String) {
        eprintln!("master ended the framework: {message}");
    }
}

impl Batch {
    fn new(commands: Vec<String>, per_task: Resources, done: oneshot::Sender<Summary>) -> Self {
        let commands: BTreeMap<TaskId, String> = commands
            .into_iter()
            .enumerate()
            .map(|(n, cmd)| (TaskId::new_unchecked(format!("task-{n}")), cmd))
            .collect();
        Self {
            total: commands.len(),
            pending: commands.keys().cloned().collect(),
            commands,
            states: BTreeMap::new(),
            per_task,
            suppressed: false,
            done: Some(done),
        }
    }

    /// Reports the outcome and tears the framework down (which also stops
    /// the driver, so `run` returns).
    async fn finish(&mut self, driver: &Driver) {
        let mut summary = Summary::default();
        for (id, state) in &self.states {
            if *state == v1::TaskState::Finished {
                summary.finished += 1;
            } else {
                summary.failed.push((id.clone(), *state));
            }
        }
        if let Some(done) = self.done.take() {
            let _ = done.send(summary);
        }
        if let Err(e) = driver.teardown().await {
            eprintln!("teardown failed: {e}");
            driver.stop();
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    let mut commands = args.tasks.clone();
    commands.extend(std::iter::repeat_n(args.command.clone(), args.count));
    if commands.is_empty() {
        anyhow::bail!("nothing to run: give --task CMD (repeatable) or --count N [--command CMD]");
    }
    let per_task = Resources::new().scalar("cpus", args.cpus).scalar("mem", args.mem);

    // Describe the framework. A failover timeout lets our tasks survive a
    // short disconnect from the master; 0 would kill them at once.
    let framework = v1::FrameworkInfo {
        name: args.name.clone(),
        user: std::env::var("USER").unwrap_or_default(),
        failover_timeout_seconds: 60.0,
        ..Default::default()
    };
    let config = DriverConfig::new(split_masters(&args.master), framework);

    let (done_tx, done_rx) = oneshot::channel();
    let (driver, run) = Driver::start(config, Batch::new(commands, per_task, done_tx));

    // Ctrl-C tears the framework down (killing its tasks) instead of leaving
    // them running for the failover timeout.
    let interrupt = driver.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted; tearing down");
            if interrupt.teardown().await.is_err() {
                interrupt.stop();
            }
        }
    });

    // `run` ends when the framework is torn down, stopped, or refused.
    run.await??;

    let Ok(summary) = done_rx.await else {
        eprintln!("the batch did not complete");
        return Ok(ExitCode::FAILURE);
    };
    println!("{} finished, {} did not", summary.finished, summary.failed.len());
    for (id, state) in &summary.failed {
        println!("  {id}: {}", mesos_name(*state));
    }
    Ok(if summary.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
