//! Placing runs into held offers: resources (cpus, mem, disk), Chronos constraints, and the
//! task a run's attempt is launched as.

use agora_proto::v1;
use agora_proto::{AgentId, OfferId, Resources, TaskId};
use agora_sdk::{Offered, TaskBuilder};

use super::Run;
use crate::job::{Job, NetworkMode, VolumeMode};

/// One ACCEPT: offers of one agent and the tasks to launch on them.
pub(super) type Accept = (Vec<OfferId>, Vec<v1::TaskInfo>);

/// Offers grouped per agent with the tasks placed on them so far.
pub(super) struct Placement {
    agents: Vec<Offered>,
}

impl Placement {
    /// Groups `offers` by agent (malformed offers are left out).
    pub(super) fn new(offers: &[v1::Offer]) -> Placement {
        let mut agents: Vec<Offered> = Vec::new();
        for offer in offers {
            match agents
                .iter_mut()
                .find(|a| a.agent_id().as_str() == offer.agent_id)
            {
                Some(agent) => {
                    if let Err(e) = agent.merge(offer) {
                        tracing::warn!(offer = %offer.id, error = %e, "ignoring malformed offer");
                    }
                }
                None => match Offered::new(offer) {
                    Ok(o) => agents.push(o),
                    Err(e) => tracing::warn!(offer = %offer.id, error = %e, "ignoring malformed offer"),
                },
            }
        }
        Placement { agents }
    }

    /// Places the run's attempt on the agent with the fewest tasks placed so far among those
    /// that fit and satisfy the job's constraints. Returns the agent it was placed on.
    pub(super) fn place(&mut self, job: &Job, run: &Run, task_id: &TaskId) -> Option<AgentId> {
        let demand = demand(job);
        let best = self
            .agents
            .iter()
            .enumerate()
            .filter(|(_, a)| satisfies(job, a) && a.fit(&demand, 0).is_some())
            .min_by_key(|(_, a)| a.tasks().len())
            .map(|(i, _)| i);
        let agent = best.and_then(|i| self.agents.get_mut(i))?;
        agent
            .place(&demand, 0, |_, resources| {
                task_info(job, run, task_id, &resources)
            })
            .then(|| agent.agent_id().clone())
    }

    /// One ACCEPT per agent that got tasks, and every offer id those accepts use.
    pub(super) fn into_accepts(self) -> (Vec<Accept>, Vec<OfferId>) {
        let mut accepts = Vec::new();
        let mut used = Vec::new();
        for agent in self.agents {
            if agent.tasks().is_empty() {
                continue;
            }
            let (ids, tasks) = agent.into_parts();
            used.extend(ids.iter().cloned());
            accepts.push((ids, tasks));
        }
        (accepts, used)
    }
}

/// The resources one run of `job` needs.
pub(super) fn demand(job: &Job) -> Resources {
    let mut r = Resources::new();
    for (name, amount) in [("cpus", job.cpus), ("mem", job.mem), ("disk", job.disk)] {
        if amount > 0.0 {
            r = r.scalar(name, amount);
        }
    }
    r
}

/// Whether the agent satisfies every constraint of the job (Chronos semantics: `hostname`
/// is the agent's hostname, other names its attributes).
pub(super) fn satisfies(job: &Job, agent: &Offered) -> bool {
    job.constraints.iter().all(|c| {
        let value = if c.attribute == "hostname" {
            Some(agent.hostname())
        } else {
            agent
                .attributes()
                .iter()
                .find(|a| a.name == c.attribute)
                .map(|a| a.value.as_str())
        };
        c.matches(value)
    })
}

/// The environment variable telling a scheduled run's task its instant (RFC 3339).
pub const SCHEDULED_AT_ENV: &str = "AGORA_CRON_SCHEDULED_AT";
/// The task label carrying the run id.
pub const RUN_LABEL: &str = "cron.run";
/// The task label carrying a scheduled run's instant (RFC 3339).
pub const SCHEDULED_AT_LABEL: &str = "cron.scheduled_at";

/// The task of a run's attempt.
pub(super) fn task_info(job: &Job, run: &Run, task_id: &TaskId, resources: &Resources) -> v1::TaskInfo {
    let mut builder = TaskBuilder::new(task_id.clone(), format!("ChronosTask:{}", job.name));
    builder = if job.shell {
        builder.shell(job.command.clone())
    } else {
        let mut argv: Vec<String> = Vec::new();
        if !job.command.is_empty() {
            argv.push(job.command.clone());
        }
        argv.extend(job.arguments.iter().cloned());
        builder.argv(argv)
    };
    for env in &job.environment_variables {
        builder = builder.env(env.name.clone(), env.value.clone());
    }
    builder = builder
        .env("CHRONOS_JOB_NAME", job.name.as_str())
        .env("CHRONOS_JOB_OWNER", job.owner.clone())
        .env("AGORA_CRON_JOB", job.name.as_str())
        .env("AGORA_CRON_RUN_ID", run.record.run_id.clone())
        .env("AGORA_CRON_ATTEMPT", run.record.attempt.to_string())
        .resources(resources)
        .label("cron.job", job.name.as_str())
        .label(RUN_LABEL, run.record.run_id.clone());
    if let Some(instant) = run.record.scheduled_at {
        // Which instant this run serves: for the job itself, and for measuring launch lateness.
        builder = builder
            .env(SCHEDULED_AT_ENV, instant.to_string())
            .label(SCHEDULED_AT_LABEL, instant.to_string());
    }
    if let Some(container) = &job.container {
        let network = match container.network {
            NetworkMode::Bridge | NetworkMode::User => v1::NetworkMode::Bridge,
            NetworkMode::Host => v1::NetworkMode::Host,
        };
        builder = builder.container(v1::ContainerInfo {
            kind: Some(v1::container_info::Kind::Docker(v1::DockerInfo {
                image: container.image.clone(),
                network: network as i32,
                force_pull_image: container.force_pull_image,
                ..Default::default()
            })),
            volumes: container
                .volumes
                .iter()
                .map(|v| v1::Volume {
                    container_path: v.container_path.clone(),
                    host_path: v.host_path.clone().unwrap_or_default(),
                    read_only: v.mode == Some(VolumeMode::Ro),
                })
                .collect(),
            working_dir: String::new(),
        });
    }
    builder.build()
}
