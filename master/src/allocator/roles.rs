//! Roles: name rules, the hierarchy (`eng/web` is a child of `eng`), and
//! the operator's weights (`--weights 'prod=3,dev=1'`).

use std::collections::BTreeMap;
use std::str::FromStr;

use agora_proto::resources::UNRESERVED;

/// Why a role name is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    #[error("role must not be empty")]
    Empty,
    #[error("role {0:?} has an empty path segment")]
    EmptySegment(String),
    #[error("role {0:?}: segments must not be '.' or '..'")]
    DotSegment(String),
    #[error("role {0:?}: segments must not start with '-'")]
    DashSegment(String),
    #[error("role {0:?} contains whitespace or a control character")]
    Whitespace(String),
    #[error("role {0:?}: '*' is only valid as the whole role")]
    Star(String),
}

/// Checks a role name: `*` (the default role), or one or more `/`-separated
/// segments, each non-empty, not `.` or `..`, not starting with `-`, with
/// no whitespace, control characters or `*`. Pure, for SUBSCRIBE checks.
pub fn validate_role(role: &str) -> Result<(), RoleError> {
    if role == UNRESERVED {
        return Ok(());
    }
    if role.is_empty() {
        return Err(RoleError::Empty);
    }
    if role.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RoleError::Whitespace(role.to_owned()));
    }
    if role.contains('*') {
        return Err(RoleError::Star(role.to_owned()));
    }
    for segment in role.split('/') {
        if segment.is_empty() {
            return Err(RoleError::EmptySegment(role.to_owned()));
        }
        if segment == "." || segment == ".." {
            return Err(RoleError::DotSegment(role.to_owned()));
        }
        if segment.starts_with('-') {
            return Err(RoleError::DashSegment(role.to_owned()));
        }
    }
    Ok(())
}

/// The parent of a hierarchical role (`eng/web` → `eng`), `None` at the top.
pub fn parent_role(role: &str) -> Option<&str> {
    role.rsplit_once('/').map(|(parent, _)| parent)
}

/// Whether `ancestor` is `role` or one of its ancestors (`eng` for `eng/web`).
/// Resources reserved for `ancestor` may be offered to clients of `role`.
pub fn is_ancestor_or_self(ancestor: &str, role: &str) -> bool {
    role == ancestor
        || (role.len() > ancestor.len()
            && role.starts_with(ancestor)
            && role.as_bytes().get(ancestor.len()) == Some(&b'/'))
}

/// Why a `--weights` value does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeightsError {
    #[error("weights entry {entry:?}: expected role=weight")]
    Syntax { entry: String },
    #[error("weights entry {entry:?}: {source}")]
    Role { entry: String, source: RoleError },
    #[error("weights entry {entry:?}: weight must be a finite number > 0")]
    Weight { entry: String },
    #[error("weights entry {entry:?}: role given twice")]
    Duplicate { entry: String },
}

/// Role weights: a role's dominant share is divided by its weight, so a
/// role of weight 3 gets three times the resources of a role of weight 1
/// under contention. Roles not listed weigh 1.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoleWeights(BTreeMap<String, f64>);

impl RoleWeights {
    /// Parses `prod=3,dev=1` (empty: every role weighs 1).
    pub fn parse(text: &str) -> Result<Self, WeightsError> {
        let mut out = BTreeMap::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (role, weight) = entry.split_once('=').ok_or_else(|| WeightsError::Syntax {
                entry: entry.to_owned(),
            })?;
            let role = role.trim();
            validate_role(role).map_err(|source| WeightsError::Role {
                entry: entry.to_owned(),
                source,
            })?;
            let weight: f64 = weight
                .trim()
                .parse()
                .ok()
                .filter(|w: &f64| w.is_finite() && *w > 0.0)
                .ok_or_else(|| WeightsError::Weight {
                    entry: entry.to_owned(),
                })?;
            if out.insert(role.to_owned(), weight).is_some() {
                return Err(WeightsError::Duplicate {
                    entry: entry.to_owned(),
                });
            }
        }
        Ok(Self(out))
    }

    /// The weight of `role` (1 unless configured).
    pub fn get(&self, role: &str) -> f64 {
        self.0.get(role).copied().unwrap_or(1.0)
    }

    /// The configured weights, by role.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.0.iter().map(|(role, w)| (role.as_str(), *w))
    }

    /// Sets the weight of a role (must be finite and > 0; others are ignored).
    pub fn set(&mut self, role: &str, weight: f64) {
        if weight.is_finite() && weight > 0.0 {
            self.0.insert(role.to_owned(), weight);
        }
    }
}

impl FromStr for RoleWeights {
    type Err = WeightsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_default_role_and_hierarchical_names() {
        for ok in ["*", "prod", "eng/web", "a/b/c", "team_1.x"] {
            assert_eq!(validate_role(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_role_names() {
        assert_eq!(validate_role(""), Err(RoleError::Empty));
        assert!(matches!(
            validate_role("eng//web"),
            Err(RoleError::EmptySegment(_))
        ));
        assert!(matches!(validate_role("/eng"), Err(RoleError::EmptySegment(_))));
        assert!(matches!(validate_role("eng/"), Err(RoleError::EmptySegment(_))));
        assert!(matches!(validate_role("eng/.."), Err(RoleError::DotSegment(_))));
        assert!(matches!(validate_role("."), Err(RoleError::DotSegment(_))));
        assert!(matches!(validate_role("a b"), Err(RoleError::Whitespace(_))));
        assert!(matches!(validate_role("eng/*"), Err(RoleError::Star(_))));
        assert!(matches!(validate_role("-x"), Err(RoleError::DashSegment(_))));
    }

    #[test]
    fn ancestry_follows_path_segments() {
        assert!(is_ancestor_or_self("eng", "eng/web"));
        assert!(is_ancestor_or_self("eng", "eng"));
        assert!(!is_ancestor_or_self("eng", "engine"));
        assert!(!is_ancestor_or_self("eng/web", "eng"));
        assert_eq!(parent_role("eng/web/a"), Some("eng/web"));
        assert_eq!(parent_role("eng"), None);
    }

    #[test]
    fn parses_weights_and_defaults_to_one() {
        let w = RoleWeights::parse("prod=3, dev=1.5").unwrap();
        assert_eq!(w.get("prod"), 3.0);
        assert_eq!(w.get("dev"), 1.5);
        assert_eq!(w.get("other"), 1.0);
        assert_eq!(RoleWeights::parse("").unwrap(), RoleWeights::default());
    }

    #[test]
    fn a_bad_weights_entry_is_named_in_the_error() {
        let e = RoleWeights::parse("prod=3,dev=zero").unwrap_err();
        assert!(e.to_string().contains("\"dev=zero\""), "{e}");
        assert!(matches!(
            RoleWeights::parse("prod"),
            Err(WeightsError::Syntax { .. })
        ));
        assert!(matches!(
            RoleWeights::parse("a b=1"),
            Err(WeightsError::Role { .. })
        ));
        assert!(matches!(
            RoleWeights::parse("p=1,p=2"),
            Err(WeightsError::Duplicate { .. })
        ));
        assert!(matches!(
            RoleWeights::parse("p=-1"),
            Err(WeightsError::Weight { .. })
        ));
    }
}
