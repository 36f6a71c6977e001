//! `agora bench docker`: how long Agora takes to get N `sleep` containers
//! RUNNING, next to the raw engine (N parallel create+start calls through
//! bollard) and Docker's own orchestrator (`docker service create
//! --replicas N` in Swarm mode) on the same engine.
//!
//! The three run one after another, in `--runs` rounds, each run starting
//! from zero benchmark containers and once the load average has fallen
//! below `--max-load`. Every container a run creates carries the label
//! `agora.bench=<run id>` and is removed by it when the run ends, pass or
//! fail; the swarm service is removed, and the swarm left if the benchmark
//! created it.

mod agora;
mod engine;
mod raw;
mod swarm;

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use engine::{BENCH_LABEL, Engine};

/// Flags of `agora bench docker`.
#[derive(Debug, Clone, clap::Args)]
pub struct DockerArgs {
    /// Containers launched by each measurement.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub containers: u16,
    /// Image of the containers (built by scripts/test-image.sh); must be present locally.
    #[arg(long, default_value = "agora-test/busybox:latest")]
    pub image: String,
    /// Skip the Swarm measurement.
    #[arg(long)]
    pub skip_swarm: bool,
    /// Runs of each measurement; the median and the spread are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=20))]
    pub runs: u16,
    /// Wait before each run until the one-minute load average is below this.
    #[arg(long, default_value_t = 1.5)]
    pub max_load: f64,
    /// Wait at most this many seconds for the load to fall (then measure anyway).
    #[arg(long, default_value_t = 600)]
    pub max_wait_secs: u64,
    /// Give up on one run after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Print the results as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What every measurement launches.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// How many containers.
    pub containers: usize,
    /// Their image.
    pub image: String,
    /// CPUs each (a cpu quota).
    pub cpus: f64,
    /// Memory each, MiB (a hard limit).
    pub mem_mib: f64,
}

impl Workload {
    /// The command every container runs.
    pub fn argv(&self) -> Vec<String> {
        vec!["sleep".to_owned(), "3600".to_owned()]
    }

    #[cfg(test)]
    fn for_test(containers: usize) -> Self {
        Self {
            containers,
            image: "agora-test/busybox:latest".to_owned(),
            cpus: 0.01,
            mem_mib: 16.0,
        }
    }
}

/// The three ways of launching the containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Raw,
    Agora,
    Swarm,
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            System::Raw => "raw engine (bollard, parallel create+start)",
            System::Agora => "Agora (SDK framework, 1 agent)",
            System::Swarm => "Swarm (docker service create --replicas)",
        })
    }
}

/// The runs of one system.
#[derive(Debug, Clone, Default, PartialEq)]
struct Series {
    samples: Vec<Duration>,
    loads: Vec<f64>,
}

impl Series {
    fn push(&mut self, sample: Duration, load: f64) {
        self.samples.push(sample);
        self.loads.push(load);
    }

    /// The middle sample (the mean of the two middle ones for an even count).
    fn median(&self) -> Option<Duration> {
        median(&self.samples)
    }

    fn min(&self) -> Option<Duration> {
        self.samples.iter().min().copied()
    }

    fn max(&self) -> Option<Duration> {
        self.samples.iter().max().copied()
    }

    fn json(&self) -> serde_json::Value {
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        serde_json::json!({
            "median_seconds": secs(self.median()),
            "min_seconds": secs(self.min()),
            "max_seconds": secs(self.max()),
            "runs_seconds": self.samples.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
            "load_at_start": self.loads,
        })
    }

    /// `12.34 s (12.01–12.90, 3 runs)`.
    fn summary(&self) -> String {
        match (self.median(), self.min(), self.max()) {
            (Some(m), Some(lo), Some(hi)) => format!(
                "{:.2} s (spread {:.2}–{:.2} s, {} runs)",
                m.as_secs_f64(),
                lo.as_secs_f64(),
                hi.as_secs_f64(),
                self.samples.len()
            ),
            _ => "not measured".to_owned(),
        }
    }
}

/// The median of `samples`, in any order.
fn median(samples: &[Duration]) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => sorted.get(n / 2).copied(),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
    }
}

/// `a ÷ b` of two medians, if both were measured.
fn ratio(a: Option<Duration>, b: Option<Duration>) -> Option<f64> {
    let (a, b) = (a?, b?);
    (!b.is_zero()).then(|| a.as_secs_f64() / b.as_secs_f64())
}

fn format_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}×"))
}

/// Everything the benchmark measured.
#[derive(Debug, Default)]
struct Report {
    raw: Series,
    agora: Series,
    swarm: Option<Series>,
}

impl Report {
    fn agora_over_raw(&self) -> Option<f64> {
        ratio(self.agora.median(), self.raw.median())
    }

    fn agora_over_swarm(&self) -> Option<f64> {
        ratio(self.agora.median(), self.swarm.as_ref().and_then(Series::median))
    }

    fn print(&self, workload: &Workload, json: bool) {
        if json {
            let value = serde_json::json!({
                "containers": workload.containers,
                "image": workload.image,
                "command": workload.argv().join(" "),
                "raw": self.raw.json(),
                "agora": self.agora.json(),
                "swarm": self.swarm.as_ref().map(Series::json),
                "agora_over_raw": self.agora_over_raw(),
                "agora_over_swarm": self.agora_over_swarm(),
            });
            println!("{value}");
            return;
        }
        println!(
            "{} × `{}` of {} (cpus {}, mem {} MiB), time until all run:",
            workload.containers,
            workload.argv().join(" "),
            workload.image,
            workload.cpus,
            workload.mem_mib
        );
        println!("  {:<45} {}", System::Raw.to_string(), self.raw.summary());
        println!("  {:<45} {}", System::Agora.to_string(), self.agora.summary());
        if let Some(swarm) = &self.swarm {
            println!("  {:<45} {}", System::Swarm.to_string(), swarm.summary());
        }
        println!("  Agora ÷ raw:   {}", format_ratio(self.agora_over_raw()));
        if self.swarm.is_some() {
            println!("  Agora ÷ Swarm: {}", format_ratio(self.agora_over_swarm()));
        }
    }
}

/// Runs the benchmark and prints its results.
pub async fn docker(args: DockerArgs) -> anyhow::Result<()> {
    let engine = Engine::connect().await?;
    anyhow::ensure!(
        engine.has_image(&args.image).await,
        "the image {} is not present (run scripts/test-image.sh)",
        args.image
    );
    let workload = Workload {
        containers: usize::from(args.containers),
        image: args.image.clone(),
        cpus: 0.01,
        mem_mib: 16.0,
    };
    let swarm = if args.skip_swarm {
        None
    } else {
        Some(swarm::Swarm::join().await?)
    };
    let report = rounds(&engine, &workload, &args, swarm.is_some()).await;
    if let Some(swarm) = swarm
        && let Err(err) = swarm.release().await
    {
        tracing::warn!(%err, "cannot leave the swarm the benchmark created");
    }
    report?.print(&workload, args.json);
    Ok(())
}

/// `args.runs` rounds, each measuring raw, Agora and (with `swarm`) Swarm
/// in turn, so that a change in the machine's background load hits all three.
async fn rounds(
    engine: &Engine,
    workload: &Workload,
    args: &DockerArgs,
    swarm: bool,
) -> anyhow::Result<Report> {
    let mut report = Report {
        swarm: swarm.then(Series::default),
        ..Report::default()
    };
    for run in 1..=args.runs {
        let (raw, load) = measure(engine, workload, args, System::Raw, run).await?;
        report.raw.push(raw, load);
        let (agora, load) = measure(engine, workload, args, System::Agora, run).await?;
        report.agora.push(agora, load);
        if let Some(series) = report.swarm.as_mut() {
            let (swarm, load) = measure(engine, workload, args, System::Swarm, run).await?;
            series.push(swarm, load);
        }
    }
    Ok(report)
}

/// One run of one system, from zero benchmark containers on a quiet
/// machine; the time and the load average at its start.
async fn measure(
    engine: &Engine,
    workload: &Workload,
    args: &DockerArgs,
    system: System,
    run: u16,
) -> anyhow::Result<(Duration, f64)> {
    let timeout = Duration::from_secs(args.timeout_secs);
    let leftovers = engine.labelled(None, false).await?;
    anyhow::ensure!(
        leftovers.is_empty(),
        "{} containers labelled {BENCH_LABEL} exist already (remove them with \
         `docker rm -f $(docker ps -aq --filter label={BENCH_LABEL})`)",
        leftovers.len()
    );
    let load = engine::wait_for_quiet(args.max_load, Duration::from_secs(args.max_wait_secs)).await;
    let label_value = uuid::Uuid::new_v4().simple().to_string();
    tracing::info!(%system, run, load, "measuring");
    let measured = match system {
        System::Raw => {
            let m = tokio::time::timeout(timeout, raw::measure(engine, workload, &label_value))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out after {timeout:?}")));
            let cleaned = engine.clean_up(&label_value, Duration::ZERO).await;
            cleaned.and(m)
        }
        System::Agora => agora::measure(engine, workload, &label_value, timeout).await,
        System::Swarm => swarm::measure(engine, workload, &label_value, timeout).await,
    }
    .with_context(|| format!("{system}, run {run}"))?;
    tracing::info!(%system, run, seconds = measured.as_secs_f64(), "measured");
    Ok((measured, load.unwrap_or(f64::NAN)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: DockerArgs,
    }

    fn secs(v: &[f64]) -> Vec<Duration> {
        v.iter().map(|&s| Duration::from_secs_f64(s)).collect()
    }

    #[test]
    fn defaults_are_fifty_busybox_containers_three_runs_with_swarm() {
        let cli = Cli::try_parse_from(["bench"]).unwrap();
        assert_eq!(cli.args.containers, 50);
        assert_eq!(cli.args.image, "agora-test/busybox:latest");
        assert_eq!(cli.args.runs, 3);
        assert!(!cli.args.skip_swarm && !cli.args.json);
    }

    #[test]
    fn zero_containers_is_refused() {
        assert!(Cli::try_parse_from(["bench", "--containers", "0"]).is_err());
    }

    #[test]
    fn the_median_of_an_odd_count_is_the_middle_sample() {
        assert_eq!(median(&secs(&[3.0, 1.0, 2.0])), Some(Duration::from_secs(2)));
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(
            median(&secs(&[4.0, 1.0, 2.0, 3.0])),
            Some(Duration::from_secs_f64(2.5))
        );
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn ratios_divide_medians_and_print_with_two_decimals() {
        let r = ratio(Some(Duration::from_secs(11)), Some(Duration::from_secs(10)));
        assert_eq!(format_ratio(r), "1.10×");
        assert_eq!(format_ratio(ratio(Some(Duration::from_secs(1)), None)), "n/a");
        assert_eq!(ratio(Some(Duration::from_secs(1)), Some(Duration::ZERO)), None);
    }

    #[test]
    fn a_series_summary_gives_the_median_and_the_spread() {
        let series = Series {
            samples: secs(&[15.2, 14.8, 16.0]),
            loads: vec![0.5; 3],
        };
        assert_eq!(series.summary(), "15.20 s (spread 14.80–16.00 s, 3 runs)");
    }
}
