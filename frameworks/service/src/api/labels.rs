//! Marathon's label selector (`GET /v2/apps?label=…`): comma-separated
//! terms, each `key` (present), `key==value`, `key!=value`,
//! `key in (a, b)` or `key notin (a, b)`; every term must hold.

use std::collections::BTreeMap;

/// One term of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Exists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector(Vec<Term>);

/// Splits on commas outside parentheses.
fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

fn set_values(text: &str) -> Option<Vec<String>> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

impl LabelSelector {
    /// Parses a selector; the error names the term that does not parse.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |term: &str| format!("Can not parse label selector: '{term}' in '{text}'");
        let mut terms = Vec::new();
        for raw in split_terms(text) {
            let term = raw.trim();
            if term.is_empty() {
                return Err(bad(raw));
            }
            let parsed = if let Some((k, v)) = term.split_once("==") {
                Term::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = term.split_once("!=") {
                Term::NotEquals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, rest)) = term.split_once(" notin ") {
                Term::NotIn(k.trim().to_owned(), set_values(rest).ok_or_else(|| bad(term))?)
            } else if let Some((k, rest)) = term.split_once(" in ") {
                Term::In(k.trim().to_owned(), set_values(rest).ok_or_else(|| bad(term))?)
            } else if term.chars().any(|c| c.is_whitespace() || "()=!".contains(c)) {
                return Err(bad(term));
            } else {
                Term::Exists(term.to_owned())
            };
            let key = match &parsed {
                Term::Exists(k)
                | Term::Equals(k, _)
                | Term::NotEquals(k, _)
                | Term::In(k, _)
                | Term::NotIn(k, _) => k,
            };
            if key.is_empty() {
                return Err(bad(term));
            }
            terms.push(parsed);
        }
        Ok(Self(terms))
    }

    /// True when `labels` satisfy every term.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|term| match term {
            Term::Exists(k) => labels.contains_key(k),
            Term::Equals(k, v) => labels.get(k) == Some(v),
            Term::NotEquals(k, v) => labels.get(k) != Some(v),
            Term::In(k, set) => labels.get(k).is_some_and(|v| set.contains(v)),
            Term::NotIn(k, set) => labels.get(k).is_none_or(|v| !set.contains(v)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equality_and_inequality() {
        let l = labels(&[("env", "prod"), ("tier", "web")]);
        assert!(LabelSelector::parse("env==prod").unwrap().matches(&l));
        assert!(!LabelSelector::parse("env==dev").unwrap().matches(&l));
        assert!(LabelSelector::parse("env!=dev").unwrap().matches(&l));
        assert!(LabelSelector::parse("env==prod, tier==web").unwrap().matches(&l));
        assert!(!LabelSelector::parse("env==prod,tier==db").unwrap().matches(&l));
    }

    #[test]
    fn presence_and_sets() {
        let l = labels(&[("env", "prod")]);
        assert!(LabelSelector::parse("env").unwrap().matches(&l));
        assert!(!LabelSelector::parse("owner").unwrap().matches(&l));
        assert!(LabelSelector::parse("env in (dev, prod)").unwrap().matches(&l));
        assert!(!LabelSelector::parse("env notin (dev,prod)").unwrap().matches(&l));
        assert!(LabelSelector::parse("owner notin (x)").unwrap().matches(&l));
    }

    #[test]
    fn a_malformed_selector_names_the_bad_term() {
        let err = LabelSelector::parse("env==prod, a b").expect_err("malformed");
        assert!(err.contains("'a b'"), "{err}");
        assert!(LabelSelector::parse("env in dev").is_err());
        assert!(LabelSelector::parse("==x").is_err());
        assert!(LabelSelector::parse("").is_err());
    }
}
