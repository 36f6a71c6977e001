//! Quota: per role, a guarantee (resources held back for the role until it
//! uses them) and a limit (never allocated more).

use agora_proto::Resources;

use super::quantities::{KINDS, Quantities, UNLIMITED};
use super::roles::RoleError;

/// Why a quota or reservation request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    #[error(transparent)]
    Role(#[from] RoleError),
    #[error("quota may only name cpus, mem, disk and gpus, not {0:?}")]
    UnsupportedResource(String),
    #[error("quota may not be set on the default role '*'")]
    DefaultRole,
    #[error("guarantee {guarantee} exceeds limit {limit}")]
    GuaranteeAboveLimit { guarantee: String, limit: String },
}

/// A role's quota in quantities: kinds absent from the limit are unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quota {
    pub guarantee: Quantities,
    pub limit: Quantities,
}

impl Default for Quota {
    fn default() -> Self {
        Self {
            guarantee: Quantities::ZERO,
            limit: Quantities([UNLIMITED; 4]),
        }
    }
}

impl Quota {
    /// Validates and converts a guarantee and an optional limit.
    pub(crate) fn new(guarantee: &Resources, limit: Option<&Resources>) -> Result<Self, QuotaError> {
        let only_share_kinds = |r: &Resources| -> Result<(), QuotaError> {
            match r.keys().find(|(name, _)| !KINDS.contains(name)) {
                Some((name, _)) => Err(QuotaError::UnsupportedResource(name.to_owned())),
                None => Ok(()),
            }
        };
        only_share_kinds(guarantee)?;
        let guarantee_q = Quantities::of(guarantee);
        let mut limit_q = Quantities([UNLIMITED; 4]);
        if let Some(limit) = limit {
            only_share_kinds(limit)?;
            let given = Quantities::of(limit);
            for (i, name) in KINDS.iter().enumerate() {
                if limit.keys().any(|(n, _)| n == *name) {
                    limit_q.0[i] = given.0[i];
                }
            }
            if !guarantee_q.fits_in(&limit_q) {
                return Err(QuotaError::GuaranteeAboveLimit {
                    guarantee: guarantee.to_string(),
                    limit: limit.to_string(),
                });
            }
        }
        Ok(Self {
            guarantee: guarantee_q,
            limit: limit_q,
        })
    }

    /// Whether this quota constrains anything.
    pub(crate) fn is_set(&self) -> bool {
        *self != Quota::default()
    }

    /// Whether the limit constrains any kind.
    pub(crate) fn has_limit(&self) -> bool {
        self.limit.0.iter().any(|v| *v != UNLIMITED)
    }

    /// The limit as resources (`None`: unlimited in every kind).
    pub(crate) fn limit_resources(&self) -> Option<Resources> {
        self.has_limit().then(|| self.limit.to_resources())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(t: &str) -> Resources {
        Resources::parse(t).unwrap()
    }

    #[test]
    fn a_guarantee_above_the_limit_is_refused() {
        let e = Quota::new(&res("cpus:4"), Some(&res("cpus:2"))).unwrap_err();
        assert!(matches!(e, QuotaError::GuaranteeAboveLimit { .. }));
    }

    #[test]
    fn kinds_missing_from_the_limit_are_unlimited() {
        let q = Quota::new(&res("mem:100"), Some(&res("cpus:2"))).unwrap();
        assert_eq!(q.limit.0[0], 2000);
        assert_eq!(q.limit.0[1], UNLIMITED);
    }

    #[test]
    fn ports_cannot_be_quota() {
        assert!(matches!(
            Quota::new(&res("ports:[1-2]"), None),
            Err(QuotaError::UnsupportedResource(_))
        ));
    }
}
