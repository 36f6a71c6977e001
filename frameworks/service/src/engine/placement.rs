//! Offers: pack the tasks apps wait for into the offers at hand (many tasks
//! per offer, several offers per step), decline the rest.

use std::collections::{BTreeMap, BTreeSet};

use agora_proto::{AgentId, OfferId, Resources, TaskId, v1};

use super::core::{Engine, Out};
use super::reconcile::version_of;
use super::{Effect, Now, StateChange, TaskRecord, TaskState};
use crate::app::constraints::{AgentFacts, accepts};
use crate::app::launch::task_info;
use crate::app::{AppDefinition, AppId};

/// The reason shown in the queue when constraints refused every offer.
pub(super) const UNFULFILLED_CONSTRAINT: &str = "UnfulfilledConstraint";

/// A fresh task id for `app`: Marathon's `<app id with _>.<uuid>`.
pub(super) fn new_task_id(app: &AppId) -> TaskId {
    let uuid = uuid::Uuid::new_v4().hyphenated().to_string();
    let mut name = app.safe_name();
    name.truncate(agora_proto::id::MAX_ID_LEN - uuid.len() - 1);
    TaskId::parse(&format!("{name}.{uuid}")).unwrap_or_else(|_| TaskId::new_unchecked(format!("task.{uuid}")))
}

/// The host ports of a launched task, in `PORT0, PORT1, …` order (from its
/// environment; else the `ports` resource in ascending order).
fn task_ports(info: &v1::TaskInfo) -> Vec<u16> {
    let env = info.command.as_ref().map(|c| &c.environment[..]).unwrap_or(&[]);
    let mut ports = Vec::new();
    for i in 0.. {
        let name = format!("PORT{i}");
        match env
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.parse::<u16>().ok())
        {
            Some(p) => ports.push(p),
            None => break,
        }
    }
    if ports.is_empty() {
        for r in info.resources.iter().filter(|r| r.name == "ports") {
            if let Some(v1::resource::Value::Ranges(ranges)) = &r.value {
                for range in &ranges.range {
                    ports.extend((range.begin..=range.end).filter_map(|p| u16::try_from(p).ok()));
                }
            }
        }
        ports.sort_unstable();
    }
    ports
}

/// One offer being filled.
struct Filling {
    offer: v1::Offer,
    offer_id: OfferId,
    facts: AgentFacts,
    tasks: Vec<v1::TaskInfo>,
}

impl Filling {
    /// Takes what `task` uses out of the offer's resources.
    fn take(&mut self, task: &v1::TaskInfo) {
        let (Ok(have), Ok(used)) = (
            Resources::from_proto(&self.offer.resources),
            Resources::from_proto(&task.resources),
        ) else {
            self.offer.resources.clear();
            return;
        };
        self.offer.resources = have.saturating_sub(&used).to_proto();
    }
}

impl Engine {
    /// Places waiting tasks into `offers`; every offer is accepted (with
    /// tasks) or declined in this step.
    pub(super) fn offers(&mut self, now: Now, offers: Vec<v1::Offer>, out: &mut Out) {
        let mut fillings: Vec<Filling> = offers
            .into_iter()
            .filter_map(|offer| {
                let offer_id = OfferId::parse(&offer.id).ok()?;
                let facts = AgentFacts::from_offer(&offer);
                Some(Filling {
                    offer,
                    offer_id,
                    facts,
                    tasks: Vec::new(),
                })
            })
            .collect();
        let mut demand: Vec<(AppId, AppDefinition, u32)> = self.launchable(now.instant);
        let mut reasons: BTreeMap<AppId, BTreeSet<String>> = BTreeMap::new();
        let mut placed: BTreeMap<AppId, Vec<AgentFacts>> = BTreeMap::new();
        for (app, _, _) in &demand {
            let facts = self
                .tasks_of(app)
                .filter(|t| t.counts())
                .map(|t| AgentFacts {
                    hostname: t.host.clone(),
                    attributes: t.attributes.clone(),
                })
                .collect();
            placed.insert(app.clone(), facts);
        }

        for filling in &mut fillings {
            // Round robin over the apps, one task at a time, until nothing
            // more fits this offer.
            let mut blocked: BTreeSet<AppId> = BTreeSet::new();
            loop {
                let mut progress = false;
                for (app, def, left) in demand.iter_mut() {
                    if *left == 0 || blocked.contains(app) {
                        continue;
                    }
                    let others = placed.get(app).map(|p| &p[..]).unwrap_or(&[]);
                    if !accepts(&def.constraints, &filling.facts, others) {
                        reasons
                            .entry(app.clone())
                            .or_default()
                            .insert(UNFULFILLED_CONSTRAINT.to_owned());
                        blocked.insert(app.clone());
                        continue;
                    }
                    let task_id = new_task_id(app);
                    match task_info(def, &task_id, &filling.offer) {
                        Ok(info) => {
                            filling.take(&info);
                            let record = TaskRecord {
                                task_id: task_id.clone(),
                                app_id: app.clone(),
                                version: version_of(def),
                                agent_id: AgentId::parse(&filling.offer.agent_id).ok(),
                                host: filling.offer.hostname.clone(),
                                attributes: filling.facts.attributes.clone(),
                                ports: task_ports(&info),
                                env: info
                                    .command
                                    .as_ref()
                                    .map(|c| {
                                        c.environment
                                            .iter()
                                            .map(|e| (e.name.clone(), e.value.clone()))
                                            .collect()
                                    })
                                    .unwrap_or_default(),
                                state: TaskState::Staging,
                                staged_at: now.wall,
                                started_at: None,
                                kill_requested: false,
                                unreachable_since: None,
                                inactive: false,
                                healthy: None,
                                ready_since: None,
                                unreachable_at: None,
                            };
                            out.change(StateChange::PutTask(record.clone()));
                            self.tasks.insert(task_id, record);
                            placed.entry(app.clone()).or_default().push(filling.facts.clone());
                            filling.tasks.push(info);
                            *left -= 1;
                            progress = true;
                        }
                        Err(unfit) => {
                            reasons.entry(app.clone()).or_default().insert(unfit.to_string());
                            blocked.insert(app.clone());
                        }
                    }
                }
                if !progress {
                    break;
                }
            }
        }

        let mut declined = Vec::new();
        for filling in fillings {
            if filling.tasks.is_empty() {
                declined.push(filling.offer_id);
            } else {
                out.effect(Effect::Accept {
                    offer_id: filling.offer_id,
                    tasks: filling.tasks,
                });
            }
        }
        if !declined.is_empty() {
            out.effect(Effect::Decline {
                offer_ids: declined,
                refuse_seconds: self.config.decline_refuse_seconds,
            });
        }
        for (app, _, left) in demand {
            if left == 0 {
                self.unplaced.remove(&app);
            } else if let Some(r) = reasons.remove(&app) {
                self.unplaced.insert(app, r);
            }
        }
    }
}
