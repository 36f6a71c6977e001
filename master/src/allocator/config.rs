//! The allocator's configuration: role weights and the minimum allocatable
//! resources (`--min-allocatable 'cpus:0.01;mem:32'`).

use std::str::FromStr;

use agora_proto::Resources;

use super::roles::RoleWeights;

/// Default of `--min-allocatable`.
pub const DEFAULT_MIN_ALLOCATABLE: &str = "cpus:0.01;mem:32";

/// Why a `--min-allocatable` value does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MinAllocatableError {
    #[error("min-allocatable entry {entry:?}: expected name:amount, e.g. cpus:0.01")]
    Syntax { entry: String },
    #[error("min-allocatable entry {entry:?}: amount must be a finite number > 0")]
    Amount { entry: String },
}

/// The smallest offers worth making: a list of alternatives, each one
/// scalar and an amount. Resources are offered only if they contain at least
/// one alternative (e.g. `cpus:0.01;mem:32`: at least 0.01 cpus, or at least
/// 32 MiB of memory). An empty list allows any non-empty offer. Leftovers
/// that meet no alternative (a sliver of cpu, ports alone) stay unoffered
/// until the agent frees more.
#[derive(Debug, Clone, PartialEq)]
pub struct MinAllocatable(Vec<(String, f64)>);

impl MinAllocatable {
    /// Parses `;`-separated `name:amount` alternatives.
    pub fn parse(text: &str) -> Result<Self, MinAllocatableError> {
        let mut out = Vec::new();
        for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, amount) = entry
                .split_once(':')
                .filter(|(n, _)| !n.trim().is_empty())
                .ok_or_else(|| MinAllocatableError::Syntax {
                    entry: entry.to_owned(),
                })?;
            let amount: f64 = amount
                .trim()
                .parse()
                .ok()
                .filter(|a: &f64| a.is_finite() && *a > 0.0)
                .ok_or_else(|| MinAllocatableError::Amount {
                    entry: entry.to_owned(),
                })?;
            out.push((name.trim().to_owned(), amount));
        }
        Ok(Self(out))
    }

    /// Whether `r` is worth offering.
    pub fn met_by(&self, r: &Resources) -> bool {
        if r.is_empty() {
            return false;
        }
        self.0.is_empty()
            || self
                .0
                .iter()
                .any(|(name, amount)| r.get_scalar(name) + 1e-9 >= *amount)
    }
}

impl Default for MinAllocatable {
    fn default() -> Self {
        Self(vec![("cpus".to_owned(), 0.01), ("mem".to_owned(), 32.0)])
    }
}

impl FromStr for MinAllocatable {
    type Err = MinAllocatableError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Everything the allocator is configured with.
#[derive(Debug, Clone, Default)]
pub struct AllocatorConfig {
    /// Role weights (`--weights`).
    pub weights: RoleWeights,
    /// Smallest offers worth making (`--min-allocatable`).
    pub min_allocatable: MinAllocatable,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(t: &str) -> Resources {
        Resources::parse(t).unwrap()
    }

    #[test]
    fn the_default_matches_the_flag_default() {
        assert_eq!(
            MinAllocatable::parse(DEFAULT_MIN_ALLOCATABLE).unwrap(),
            MinAllocatable::default()
        );
    }

    #[test]
    fn any_one_alternative_is_enough() {
        let m = MinAllocatable::default();
        assert!(m.met_by(&res("cpus:0.01")));
        assert!(m.met_by(&res("cpus:0.001;mem:32")));
        assert!(!m.met_by(&res("cpus:0.001;mem:31")));
        assert!(!m.met_by(&res("ports:[1-100]")));
    }

    #[test]
    fn a_bad_entry_is_named_in_the_error() {
        let e = MinAllocatable::parse("cpus:0.01;mem:lots").unwrap_err();
        assert!(e.to_string().contains("\"mem:lots\""), "{e}");
        assert!(MinAllocatable::parse("cpus").is_err());
    }

    #[test]
    fn an_empty_list_allows_any_non_empty_offer() {
        let m = MinAllocatable::parse("").unwrap();
        assert!(m.met_by(&res("cpus:0.001")));
        assert!(!m.met_by(&Resources::new()));
    }
}
