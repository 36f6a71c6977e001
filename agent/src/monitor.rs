//! Resource monitoring: every `--usage-interval` the agent samples what each
//! running task uses (through its containerizer's [`Containerizer::usage`]:
//! `/proc` for processes, Docker stats for containers) and what the host
//! uses, and hands the sample ([`v1::ResourceUsage`]) to the actor, which
//! keeps it for `/state` and sends it to the master.
//!
//! Sampling runs in its own task (and the `/proc` and sysinfo reads in the
//! blocking pool), never on the actor's loop.
//!
//! CPU is reported in cores: the growth of a run's cumulative CPU time
//! between two samples divided by the wall time between them
//! ([`cpu_cores`]); a run's first sample has no rate yet and reports 0.
//!
//! For a process task, usage is summed over its process group (every pid
//! whose pgid is the task's pid, which the supervisor made a group leader):
//! utime + stime from `/proc/<pid>/stat`, resident pages from `/proc/<pid>/statm`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agora_proto::v1;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

use crate::agent::{Command, RunView};
use crate::containerizer::{Containerizer, Usage};

const MIB: f64 = 1024.0 * 1024.0;

/// What `/proc/<pid>/stat` says about one process's CPU use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatCpu {
    /// The process group id.
    pub pgid: i32,
    /// User + system CPU time, in clock ticks.
    pub ticks: u64,
}

/// Parses the process group and CPU ticks (utime + stime) from `/proc/<pid>/stat`.
pub(crate) fn parse_stat_cpu(text: &str) -> Option<StatCpu> {
    // The command name (field 2) is parenthesised and may contain anything;
    // after it come field 3 (state) onwards, so field N is at index N - 3.
    let after = text.get(text.rfind(')')? + 1..)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let pgid = fields.get(2)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(StatCpu {
        pgid,
        ticks: utime.saturating_add(stime),
    })
}

/// Parses the resident set size, in pages, from `/proc/<pid>/statm`.
pub(crate) fn parse_statm_rss_pages(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Cores used over `elapsed`, from two readings of cumulative CPU seconds.
/// A reading that went down (a process of the group exited) counts as idle.
pub(crate) fn cpu_cores(before: f64, after: f64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 || !before.is_finite() || !after.is_finite() {
        return 0.0;
    }
    ((after - before) / secs).max(0.0)
}

fn sysconf_or(var: nix::unistd::SysconfVar, default: i64) -> i64 {
    nix::unistd::sysconf(var)
        .ok()
        .flatten()
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

/// CPU time and RSS of the process group `pgid`, summed over its live members
/// (a blocking scan of `/proc`); `None` if no process is in the group.
pub(crate) fn process_group_usage(pgid: i32) -> Option<Usage> {
    if pgid <= 0 {
        return None;
    }
    let ticks_per_sec = sysconf_or(nix::unistd::SysconfVar::CLK_TCK, 100) as f64;
    let page = sysconf_or(nix::unistd::SysconfVar::PAGE_SIZE, 4096) as u64;
    let mut found = false;
    let mut ticks = 0u64;
    let mut pages = 0u64;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Some(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|t| parse_stat_cpu(&t))
        else {
            continue;
        };
        if stat.pgid != pgid {
            continue;
        }
        found = true;
        ticks = ticks.saturating_add(stat.ticks);
        if let Some(rss) = std::fs::read_to_string(format!("/proc/{pid}/statm"))
            .ok()
            .and_then(|t| parse_statm_rss_pages(&t))
        {
            pages = pages.saturating_add(rss);
        }
    }
    found.then(|| Usage {
        cpu_seconds_total: ticks as f64 / ticks_per_sec,
        mem_bytes: pages.saturating_mul(page),
        cpus_limit: None,
        mem_limit_bytes: None,
    })
}

/// Identifies one run across samples (a reused task id gets a new sandbox).
type RunKey = (String, String, PathBuf);

/// Turns cumulative CPU readings into rates: remembers each run's previous reading.
#[derive(Debug, Default)]
pub(crate) struct CpuRates {
    previous: HashMap<RunKey, (f64, Instant)>,
}

impl CpuRates {
    /// Cores the run used since its previous reading (0 for its first).
    pub(crate) fn rate(&mut self, run: RunKey, cpu_seconds_total: f64, now: Instant) -> f64 {
        match self.previous.insert(run, (cpu_seconds_total, now)) {
            Some((before, then)) => cpu_cores(before, cpu_seconds_total, now.saturating_duration_since(then)),
            None => 0.0,
        }
    }

    /// Forgets runs not in `live`.
    pub(crate) fn retain(&mut self, live: &[RunKey]) {
        self.previous.retain(|k, _| live.contains(k));
    }
}

/// The host's own usage, through sysinfo (kept between samples: CPU usage
/// is measured since the previous refresh).
pub(crate) struct HostSampler {
    system: Option<sysinfo::System>,
}

impl HostSampler {
    pub(crate) fn new() -> Self {
        let system = sysinfo::System::new().ok();
        if system.is_none() {
            tracing::warn!("cannot read host usage; reporting zeros");
        }
        Self { system }
    }

    /// Refreshes and reads the host's usage (blocking).
    pub(crate) fn sample(&mut self) -> v1::HostUsage {
        let Some(system) = self.system.as_mut() else {
            return v1::HostUsage::default();
        };
        system.refresh_cpu_usage();
        system.refresh_memory();
        let cores = system.cpus().len() as f64;
        v1::HostUsage {
            cpus_used: f64::from(system.global_cpu_usage()) / 100.0 * cores,
            mem_used_mib: system.used_memory() as f64 / MIB,
            cpus_total: cores,
            mem_total_mib: system.total_memory() as f64 / MIB,
        }
    }
}

/// A run's usage sample as the protocol carries it.
fn task_usage(view: &RunView, usage: &Usage, cpus_used: f64) -> v1::TaskUsage {
    v1::TaskUsage {
        framework_id: view.run.framework_id.clone(),
        task_id: view.run.task_id.clone(),
        cpus_used,
        mem_used_mib: usage.mem_bytes as f64 / MIB,
        cpus_limit: usage.cpus_limit,
        mem_limit_mib: usage.mem_limit_bytes.map(|b| b as f64 / MIB),
    }
}

/// Samples every `interval` until the actor is gone: asks the actor which runs
/// are live, samples them and the host, and sends the result back as
/// [`Command::Usage`].
pub(crate) async fn run(
    interval: Duration,
    containerizer: Arc<dyn Containerizer>,
    actor: mpsc::UnboundedSender<Command>,
) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut rates = CpuRates::default();
    let mut host = Some(HostSampler::new());
    loop {
        ticker.tick().await;
        let (reply, answer) = oneshot::channel();
        if actor.send(Command::Runs(reply)).is_err() {
            return;
        }
        let Ok(views) = answer.await else { return };
        let live: Vec<RunView> = views.into_iter().filter(|v| !v.ended).collect();
        let samples =
            futures::future::join_all(live.iter().map(|v| containerizer.usage(&v.run, v.task_pid))).await;
        let now = Instant::now();
        let mut tasks = Vec::with_capacity(live.len());
        let mut keys = Vec::with_capacity(live.len());
        for (view, sample) in live.iter().zip(samples) {
            let key = (
                view.run.framework_id.clone(),
                view.run.task_id.clone(),
                view.run.sandbox.clone(),
            );
            keys.push(key.clone());
            if let Some(usage) = sample {
                let cpus = rates.rate(key, usage.cpu_seconds_total, now);
                tasks.push(task_usage(view, &usage, cpus));
            }
        }
        rates.retain(&keys);
        let mut sampler = host.take().unwrap_or_else(HostSampler::new);
        let (sampler, host_usage) = match tokio::task::spawn_blocking(move || {
            let usage = sampler.sample();
            (sampler, usage)
        })
        .await
        {
            Ok(done) => done,
            Err(err) => {
                tracing::warn!(%err, "host usage sampling failed");
                (HostSampler::new(), v1::HostUsage::default())
            }
        };
        host = Some(sampler);
        let usage = v1::ResourceUsage {
            host: Some(host_usage),
            tasks,
            timestamp: agora_proto::unix_seconds(SystemTime::now()),
        };
        if actor.send(Command::Usage(usage)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str =
        "4321 (sh -c (busy)) R 4300 4321 4300 0 -1 4194304 120 0 0 0 250 50 3 1 20 0 1 0 98765 1000 10";

    #[test]
    fn stat_gives_the_process_group_and_user_plus_system_ticks() {
        assert_eq!(
            parse_stat_cpu(STAT),
            Some(StatCpu {
                pgid: 4321,
                ticks: 300
            })
        );
    }

    #[test]
    fn truncated_or_garbled_stat_is_none() {
        assert_eq!(parse_stat_cpu("garbage"), None);
        assert_eq!(parse_stat_cpu("1 (x) S 1 2"), None);
        assert_eq!(
            parse_stat_cpu("1 (x) S 1 notanumber 3 4 5 6 7 8 9 10 11 12 13"),
            None
        );
    }

    #[test]
    fn statm_gives_resident_pages() {
        assert_eq!(parse_statm_rss_pages("2000 512 100 10 0 300 0\n"), Some(512));
        assert_eq!(parse_statm_rss_pages("2000"), None);
        assert_eq!(parse_statm_rss_pages(""), None);
    }

    #[test]
    fn cores_are_cpu_seconds_per_wall_second() {
        assert_eq!(cpu_cores(10.0, 11.5, Duration::from_secs(1)), 1.5);
        assert_eq!(cpu_cores(10.0, 10.25, Duration::from_millis(500)), 0.5);
    }

    #[test]
    fn cpu_time_going_down_or_no_elapsed_time_is_zero_cores() {
        assert_eq!(cpu_cores(10.0, 9.0, Duration::from_secs(1)), 0.0);
        assert_eq!(cpu_cores(1.0, 2.0, Duration::ZERO), 0.0);
        assert_eq!(cpu_cores(f64::NAN, 2.0, Duration::from_secs(1)), 0.0);
    }

    fn key(task: &str) -> RunKey {
        ("fw".into(), task.into(), PathBuf::from("/s"))
    }

    #[tokio::test(start_paused = true)]
    async fn a_runs_rate_comes_from_its_previous_reading() {
        let mut rates = CpuRates::default();
        let start = Instant::now();
        assert_eq!(rates.rate(key("t"), 5.0, start), 0.0, "first reading has no rate");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(rates.rate(key("t"), 7.0, Instant::now()), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn forgotten_runs_start_over() {
        let mut rates = CpuRates::default();
        rates.rate(key("t"), 5.0, Instant::now());
        rates.retain(&[key("other")]);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(rates.rate(key("t"), 9.0, Instant::now()), 0.0);
    }

    #[test]
    fn our_own_process_group_has_cpu_time_and_memory() {
        let pgid = nix::unistd::getpgrp().as_raw();
        let usage = process_group_usage(pgid).unwrap();
        assert!(usage.mem_bytes > 0);
        assert!(usage.cpu_seconds_total >= 0.0);
        assert_eq!(process_group_usage(0), None);
    }

    #[test]
    fn host_usage_reports_cores_and_memory() {
        let host = HostSampler::new().sample();
        assert!(host.cpus_total >= 1.0);
        assert!(host.mem_total_mib > 0.0);
        assert!(host.mem_used_mib > 0.0 && host.mem_used_mib <= host.mem_total_mib);
    }
}
