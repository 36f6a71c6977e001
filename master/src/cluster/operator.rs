//! The operator's side of the allocator on [`Master`]: runtime quota and
//! weights (stored in the registry), `/roles`, dynamic reservations (RESERVE
//! and UNRESERVE, stored per agent and re-applied when the agent
//! registers), and the shares `/state` and `/metrics` show.

use std::collections::BTreeMap;

use agora_proto::resources::UNRESERVED;
use agora_proto::{AgentId, FrameworkId, Resources, v1};
use agora_store::Write;
use prost::Message as _;
use serde_json::{Value, json};

use super::{Effect, Master, resources_json};
use crate::metrics::label;
use crate::quota::{BadRequest, QuotaSpec, quantities_json, quota_key, weight_json, weight_key};
use crate::validation::{ReservationKind, ReservationOp, with_role};

/// Store prefix of the agents' dynamic reservations.
pub const RESERVATIONS_PREFIX: &str = "/master/reservations/";

/// Store key of an agent's dynamic reservations (`v1::Reserve`, protobuf).
pub fn reservations_key(id: &AgentId) -> String {
    format!("{RESERVATIONS_PREFIX}{id}")
}

/// The stored form of an agent's dynamic reservations.
pub fn encode_reservations(reserved: &Resources) -> Vec<u8> {
    v1::Reserve {
        resources: reserved.to_proto(),
    }
    .encode_to_vec()
}

/// Reads what [`encode_reservations`] wrote.
pub fn decode_reservations(bytes: &[u8]) -> Option<Resources> {
    let stored = v1::Reserve::decode(bytes).ok()?;
    Resources::from_proto(&stored.resources).ok()
}

/// An operator request about roles, handled by the actor.
#[derive(Debug, Clone)]
pub enum OperatorRequest {
    /// `GET /quota`.
    Quotas,
    /// `PUT /quota/{role}`.
    SetQuota { role: String, quota: QuotaSpec },
    /// `DELETE /quota/{role}`.
    RemoveQuota { role: String },
    /// `GET /weights`.
    Weights,
    /// `PUT /weights/{role}`.
    SetWeight { role: String, weight: f64 },
    /// `GET /roles`.
    Roles,
}

/// Why an operator request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorError {
    /// Bad input (HTTP 400); nothing changed.
    #[error(transparent)]
    BadRequest(#[from] BadRequest),
    /// The thing to remove does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(String),
}

/// The role policy the operator set at runtime, as the registry has it.
#[derive(Debug, Default)]
pub(super) struct RolePolicy {
    quotas: BTreeMap<String, QuotaSpec>,
    /// `--weights` defaults, overridden by weights set at runtime.
    weights: BTreeMap<String, f64>,
    /// Per agent: its dynamic reservations (reserved form).
    reservations: BTreeMap<AgentId, Resources>,
}

impl RolePolicy {
    /// The policy at start-up: only the `--weights` defaults.
    pub(super) fn new(weights: &crate::allocator::RoleWeights) -> Self {
        Self {
            weights: weights.iter().map(|(r, w)| (r.to_owned(), w)).collect(),
            ..Self::default()
        }
    }

    /// Dynamic reservations by agent.
    pub(super) fn reservations(&self) -> &BTreeMap<AgentId, Resources> {
        &self.reservations
    }
}

/// Splits reserved-form resources by role, in unreserved form.
fn split_by_role(reserved: &Resources) -> BTreeMap<String, Resources> {
    let mut out: BTreeMap<String, Vec<v1::Resource>> = BTreeMap::new();
    for mut res in reserved.to_proto() {
        let role = std::mem::take(&mut res.role);
        if !role.is_empty() && role != UNRESERVED {
            out.entry(role).or_default().push(res);
        }
    }
    out.into_iter()
        .filter_map(|(role, list)| Resources::from_proto(&list).ok().map(|r| (role, r)))
        .collect()
}

impl Master {
    /// Loads a stored quota at start-up.
    pub fn recover_quota(&mut self, role: String, quota: QuotaSpec) {
        match self
            .allocator
            .set_quota(&role, &quota.guarantee, quota.limit.as_ref())
        {
            Ok(()) => {
                self.policy.quotas.insert(role, quota);
            }
            Err(e) => tracing::warn!(%role, error = %e, "ignoring a stored quota"),
        }
    }

    /// Loads a stored weight at start-up (it overrides `--weights`).
    pub fn recover_weight(&mut self, role: String, weight: f64) {
        if !(weight.is_finite() && weight > 0.0) {
            tracing::warn!(%role, weight, "ignoring a stored weight");
            return;
        }
        match self.allocator.set_weight(&role, weight) {
            Ok(()) => {
                self.policy.weights.insert(role, weight);
            }
            Err(e) => tracing::warn!(%role, error = %e, "ignoring a stored weight"),
        }
    }

    /// Loads an agent's stored dynamic reservations at start-up; they are
    /// applied when the agent registers.
    pub fn recover_reservations(&mut self, agent: AgentId, reserved: Resources) {
        if !reserved.is_empty() {
            self.policy.reservations.insert(agent, reserved);
        }
    }

    /// Runs an operator request; changes are queued for the registry.
    pub fn operator(
        &mut self,
        request: OperatorRequest,
        now: tokio::time::Instant,
    ) -> Result<Value, OperatorError> {
        match request {
            OperatorRequest::Quotas => Ok(self.quotas_json()),
            OperatorRequest::SetQuota { role, quota } => {
                self.allocator
                    .set_quota(&role, &quota.guarantee, quota.limit.as_ref())
                    .map_err(|e| BadRequest::new("quota", e.to_string()))?;
                tracing::info!(%role, quota = %quota.to_json(), "quota set");
                let body = quota.to_json();
                self.effects.push(Effect::Persist(vec![Write::put(
                    quota_key(&role),
                    body.to_string().into_bytes(),
                )]));
                self.policy.quotas.insert(role.clone(), quota.clone());
                self.schedule_allocation(now);
                Ok(quota_entry(&role, &quota))
            }
            OperatorRequest::RemoveQuota { role } => {
                if self.policy.quotas.remove(&role).is_none() {
                    return Err(OperatorError::NotFound(format!("role {role:?} has no quota")));
                }
                self.allocator
                    .set_quota(&role, &Resources::new(), None)
                    .map_err(|e| BadRequest::new("role", e.to_string()))?;
                tracing::info!(%role, "quota removed");
                self.effects
                    .push(Effect::Persist(vec![Write::delete(quota_key(&role))]));
                self.schedule_allocation(now);
                Ok(json!({}))
            }
            OperatorRequest::Weights => Ok(self.weights_json()),
            OperatorRequest::SetWeight { role, weight } => {
                if !(weight.is_finite() && weight > 0.0) {
                    return Err(BadRequest::new("weight", "must be a finite number > 0").into());
                }
                self.allocator
                    .set_weight(&role, weight)
                    .map_err(|e| BadRequest::new("role", e.to_string()))?;
                tracing::info!(%role, weight, "weight set");
                self.effects.push(Effect::Persist(vec![Write::put(
                    weight_key(&role),
                    weight_json(weight).to_string().into_bytes(),
                )]));
                self.policy.weights.insert(role.clone(), weight);
                self.schedule_allocation(now);
                Ok(json!({ "role": role, "weight": weight }))
            }
            OperatorRequest::Roles => Ok(self.roles_json()),
        }
    }

    /// `GET /quota`: `{"quotas": [{"role", "guarantee": {..}, "limit": {..} | null}]}`.
    pub fn quotas_json(&self) -> Value {
        let quotas: Vec<Value> = self
            .policy
            .quotas
            .iter()
            .map(|(role, q)| quota_entry(role, q))
            .collect();
        json!({ "quotas": quotas })
    }

    /// `GET /weights`: `{"weights": [{"role", "weight"}]}` (`--weights`
    /// defaults and weights set at runtime; other roles weigh 1).
    pub fn weights_json(&self) -> Value {
        let weights: Vec<Value> = self
            .policy
            .weights
            .iter()
            .map(|(role, w)| json!({ "role": role, "weight": w }))
            .collect();
        json!({ "weights": weights })
    }

    /// `GET /roles`: every known role with its weight, quota, and what its
    /// subtree is allocated, offered and has reserved:
    ///
    /// ```text
    /// {"roles": [{"role", "weight", "guarantee": Q, "limit": Q | null,
    ///             "allocated": R, "offered": R, "reserved": R,
    ///             "weighted_share", "frameworks": [framework ids]}]}
    /// ```
    /// (Q: quota amounts by kind; R: as in `/state`.)
    pub fn roles_json(&self) -> Value {
        let roles: Vec<Value> = self
            .allocator
            .roles()
            .into_iter()
            .map(|v| {
                let frameworks: Vec<&FrameworkId> = self
                    .frameworks
                    .iter()
                    .filter(|(_, f)| f.info.roles.contains(&v.role))
                    .map(|(id, _)| id)
                    .collect();
                json!({
                    "role": v.role,
                    "weight": v.weight,
                    "guarantee": quantities_json(&v.guarantee),
                    "limit": v.limit.as_ref().map(quantities_json),
                    "allocated": resources_json(&v.allocated),
                    "offered": resources_json(&v.offered),
                    "reserved": resources_json(&v.reserved),
                    "weighted_share": v.weighted_share,
                    "frameworks": frameworks,
                })
            })
            .collect();
        json!({ "roles": roles })
    }

    /// A framework's DRF shares for `/state`: `(dominant_share, {role: share})`.
    pub(super) fn framework_shares_json(&self, id: &FrameworkId) -> (f64, Value) {
        let shares: serde_json::Map<String, Value> = self
            .allocator
            .role_shares(id)
            .into_iter()
            .map(|(role, share)| (role, json!(share)))
            .collect();
        (self.allocator.dominant_share(id), Value::Object(shares))
    }

    /// Sets the share gauges (frameworks' dominant shares, roles'
    /// allocations and weighted shares); series of gone ones disappear.
    pub(super) fn refresh_share_gauges(&self) {
        let m = &self.metrics;
        m.framework_dominant_share.clear();
        m.role_allocated.clear();
        m.role_weighted_share.clear();
        for id in self.frameworks.keys() {
            m.framework_dominant_share
                .get_or_create(&label("framework_id", id.as_str()))
                .set(self.allocator.dominant_share(id));
        }
        for v in self.allocator.roles() {
            m.role_weighted_share
                .get_or_create(&label("role", &v.role))
                .set(v.weighted_share);
            for kind in crate::allocator::KINDS {
                let labels = vec![
                    ("role".to_owned(), v.role.clone()),
                    ("resource".to_owned(), kind.to_owned()),
                ];
                m.role_allocated
                    .get_or_create(&labels)
                    .set(v.allocated.get_scalar(kind));
            }
        }
    }

    /// Re-applies an agent's stored dynamic reservations after it was added
    /// to the allocator (before its tasks are counted). Parts that no
    /// longer fit the agent are dropped, with a warning.
    pub(super) fn apply_stored_reservations(&mut self, agent: &AgentId) {
        let Some(reserved) = self.policy.reservations.get(agent).cloned() else {
            return;
        };
        let mut kept = Resources::new();
        for (role, resources) in split_by_role(&reserved) {
            match self.allocator.reserve(agent, &role, &resources) {
                Ok(()) => kept.add(&with_role(&resources, &role)),
                Err(e) => {
                    tracing::warn!(agent = %agent, %role, error = %e, "dropping a dynamic reservation that no longer fits the agent")
                }
            }
        }
        if kept != reserved {
            self.store_reservations(agent, kept);
        }
    }

    /// Applies validated RESERVE/UNRESERVE operations on `agent` (whose
    /// resources involved are free) and queues the registry write.
    pub(super) fn apply_reservations(&mut self, agent: &AgentId, ops: &[ReservationOp]) {
        if ops.is_empty() {
            return;
        }
        let mut reserved = self.policy.reservations.get(agent).cloned().unwrap_or_default();
        for op in ops {
            let result = match op.kind {
                ReservationKind::Reserve => self.allocator.reserve(agent, &op.role, &op.resources),
                ReservationKind::Unreserve => self.allocator.unreserve(agent, &op.role, &op.resources),
            };
            match (result, op.kind) {
                (Ok(()), ReservationKind::Reserve) => reserved.add(&op.reserved()),
                (Ok(()), ReservationKind::Unreserve) => reserved = reserved.saturating_sub(&op.reserved()),
                (Err(e), _) => {
                    tracing::error!(agent = %agent, role = %op.role, error = %e, "a validated reservation change failed")
                }
            }
            tracing::info!(agent = %agent, role = %op.role, kind = ?op.kind, resources = %op.resources, "reservation changed");
        }
        self.store_reservations(agent, reserved);
    }

    fn store_reservations(&mut self, agent: &AgentId, reserved: Resources) {
        let write = if reserved.is_empty() {
            self.policy.reservations.remove(agent);
            Write::delete(reservations_key(agent))
        } else {
            let w = Write::put(reservations_key(agent), encode_reservations(&reserved));
            self.policy.reservations.insert(agent.clone(), reserved);
            w
        };
        self.effects.push(Effect::Persist(vec![write]));
    }
}

fn quota_entry(role: &str, q: &QuotaSpec) -> Value {
    let mut v = q.to_json();
    v["role"] = json!(role);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_reservations_round_trip() {
        let r = Resources::parse("cpus(eng/web):2;mem(prod):512;ports(prod):[1-3]").unwrap();
        assert_eq!(decode_reservations(&encode_reservations(&r)), Some(r));
    }

    #[test]
    fn reservations_split_by_role_in_unreserved_form() {
        let parts = split_by_role(&Resources::parse("cpus(a):1;mem(a):2;cpus(b/c):3;disk:4").unwrap());
        assert_eq!(parts.len(), 2);
        assert_eq!(parts["a"], Resources::parse("cpus:1;mem:2").unwrap());
        assert_eq!(parts["b/c"], Resources::parse("cpus:3").unwrap());
    }
}
