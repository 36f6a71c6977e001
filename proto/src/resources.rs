//! Resource arithmetic: the bag of `cpus`, `mem`, `disk`, `gpus`, `ports` and
//! named scalars that agents have, offers carry and tasks use.
//!
//! Scalars are kept in thousandths (as Mesos does) so that adding and
//! subtracting offers never drifts: `0.1 + 0.2 - 0.3 == 0` here.

use std::collections::BTreeMap;
use std::fmt;

use crate::v1;

/// The role of unreserved resources.
pub const UNRESERVED: &str = "*";

/// Why resources (from the wire or from text) are not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("resource name must not be empty")]
    EmptyName,
    #[error("resource {0:?} has no value")]
    NoValue(String),
    #[error("resource {0:?} must be a finite scalar > 0 with at most 3 decimals' meaning")]
    BadScalar(String),
    #[error("resource {0:?}: range {1}-{2} ends before it begins")]
    BadRange(String, u64, u64),
    #[error("resource {0:?} is used both as a scalar and as ranges")]
    KindMismatch(String),
    #[error("cannot parse resources {0:?}: {1}")]
    Syntax(String, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Amount {
    /// Thousandths of a unit.
    Scalar(i64),
    Ranges(RangeSet),
}

/// A normalized set of inclusive ranges: sorted, non-overlapping, non-adjacent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    pub fn new(ranges: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut v: Vec<(u64, u64)> = ranges.into_iter().collect();
        v.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for (b, e) in v {
            match out.last_mut() {
                Some(last) if b <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => out.push((b, e)),
            }
        }
        Self(out)
    }
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Number of values in the set.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|(b, e)| e - b + 1).sum()
    }
    pub fn contains_set(&self, other: &RangeSet) -> bool {
        other
            .0
            .iter()
            .all(|&(b, e)| self.0.iter().any(|&(sb, se)| sb <= b && e <= se))
    }
    pub fn union(&self, other: &RangeSet) -> RangeSet {
        RangeSet::new(self.0.iter().chain(other.0.iter()).copied())
    }
    /// Removes `other` from `self` (values not in `self` are ignored).
    pub fn difference(&self, other: &RangeSet) -> RangeSet {
        let mut out = Vec::new();
        for &(b, e) in &self.0 {
            let mut pieces = vec![(b, e)];
            for &(ob, oe) in &other.0 {
                let mut next = Vec::new();
                for (pb, pe) in pieces {
                    if oe < pb || ob > pe {
                        next.push((pb, pe));
                        continue;
                    }
                    if ob > pb {
                        next.push((pb, ob - 1));
                    }
                    if oe < pe {
                        next.push((oe + 1, pe));
                    }
                }
                pieces = next;
            }
            out.extend(pieces);
        }
        RangeSet::new(out)
    }
    /// The lowest `n` values of the set, if it has that many.
    pub fn first_n(&self, n: u64) -> Option<Vec<u64>> {
        let mut out = Vec::new();
        for &(b, e) in &self.0 {
            let mut v = b;
            while v <= e && (out.len() as u64) < n {
                out.push(v);
                v += 1;
            }
        }
        ((out.len() as u64) == n).then_some(out)
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, (b, e)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{b}-{e}")?;
        }
        f.write_str("]")
    }
}

/// A bag of resources, keyed by name and role.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resources {
    entries: BTreeMap<(String, String), Amount>,
}

fn normalize_role(role: &str) -> String {
    if role.is_empty() {
        UNRESERVED.to_owned()
    } else {
        role.to_owned()
    }
}

fn to_millis(name: &str, v: f64) -> Result<i64, ResourceError> {
    if !v.is_finite() || v <= 0.0 || v > 1e15 {
        return Err(ResourceError::BadScalar(name.to_owned()));
    }
    let m = (v * 1000.0).round() as i64;
    if m == 0 {
        return Err(ResourceError::BadScalar(name.to_owned()));
    }
    Ok(m)
}

impl Resources {
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates and converts resources received on the wire.
    pub fn from_proto(list: &[v1::Resource]) -> Result<Self, ResourceError> {
        let mut r = Resources::new();
        for res in list {
            if res.name.is_empty() {
                return Err(ResourceError::EmptyName);
            }
            let role = normalize_role(&res.role);
            match &res.value {
                None => return Err(ResourceError::NoValue(res.name.clone())),
                Some(v1::resource::Value::Scalar(v)) => {
                    r.add_scalar_millis(&res.name, &role, to_millis(&res.name, *v)?)?;
                }
                Some(v1::resource::Value::Ranges(rs)) => {
                    let mut set = Vec::new();
                    for rg in &rs.range {
                        if rg.end < rg.begin {
                            return Err(ResourceError::BadRange(res.name.clone(), rg.begin, rg.end));
                        }
                        set.push((rg.begin, rg.end));
                    }
                    r.add_ranges(&res.name, &role, RangeSet::new(set))?;
                }
            }
        }
        Ok(r)
    }

    /// The wire form, one `Resource` per name and role.
    pub fn to_proto(&self) -> Vec<v1::Resource> {
        self.entries
            .iter()
            .map(|((name, role), amount)| v1::Resource {
                name: name.clone(),
                role: if role == UNRESERVED {
                    String::new()
                } else {
                    role.clone()
                },
                value: Some(match amount {
                    Amount::Scalar(m) => v1::resource::Value::Scalar(*m as f64 / 1000.0),
                    Amount::Ranges(rs) => v1::resource::Value::Ranges(v1::Ranges {
                        range: rs
                            .0
                            .iter()
                            .map(|&(begin, end)| v1::Range { begin, end })
                            .collect(),
                    }),
                }),
            })
            .collect()
    }

    /// Parses Mesos' text form: `cpus:4;mem:8192;ports:[31000-32000];cpus(prod):2`.
    pub fn parse(text: &str) -> Result<Self, ResourceError> {
        let syntax = |why: &str| ResourceError::Syntax(text.to_owned(), why.to_owned());
        let mut r = Resources::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once(':')
                .ok_or_else(|| syntax("expected name:value"))?;
            let key = key.trim();
            let (name, role) = match key.split_once('(') {
                Some((n, rest)) => {
                    let role = rest
                        .strip_suffix(')')
                        .ok_or_else(|| syntax("unclosed '(' in role"))?;
                    (n.trim(), role.trim())
                }
                None => (key, UNRESERVED),
            };
            if name.is_empty() {
                return Err(ResourceError::EmptyName);
            }
            let role = normalize_role(role);
            let value = value.trim();
            if let Some(inner) = value.strip_prefix('[') {
                let inner = inner.strip_suffix(']').ok_or_else(|| syntax("unclosed '['"))?;
                let mut set = Vec::new();
                for rg in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let (b, e) = rg.split_once('-').unwrap_or((rg, rg));
                    let b: u64 = b
                        .trim()
                        .parse()
                        .map_err(|_| syntax("range bounds must be integers"))?;
                    let e: u64 = e
                        .trim()
                        .parse()
                        .map_err(|_| syntax("range bounds must be integers"))?;
                    if e < b {
                        return Err(ResourceError::BadRange(name.to_owned(), b, e));
                    }
                    set.push((b, e));
                }
                r.add_ranges(name, &role, RangeSet::new(set))?;
            } else {
                let v: f64 = value.parse().map_err(|_| syntax("scalar must be a number"))?;
                r.add_scalar_millis(name, &role, to_millis(name, v)?)?;
            }
        }
        Ok(r)
    }

    /// A scalar resource (unreserved), for building task resources in code.
    pub fn scalar(mut self, name: &str, amount: f64) -> Self {
        if let Ok(m) = to_millis(name, amount) {
            let _ = self.add_scalar_millis(name, UNRESERVED, m);
        }
        self
    }

    /// Range values (unreserved), e.g. ports, for building task resources in code.
    pub fn with_ranges(mut self, name: &str, ranges: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let _ = self.add_ranges(name, UNRESERVED, RangeSet::new(ranges));
        self
    }

    fn add_scalar_millis(&mut self, name: &str, role: &str, m: i64) -> Result<(), ResourceError> {
        let key = (name.to_owned(), role.to_owned());
        match self.entries.get_mut(&key) {
            Some(Amount::Scalar(v)) => *v += m,
            Some(Amount::Ranges(_)) => return Err(ResourceError::KindMismatch(name.to_owned())),
            None => {
                self.entries.insert(key, Amount::Scalar(m));
            }
        }
        Ok(())
    }

    fn add_ranges(&mut self, name: &str, role: &str, set: RangeSet) -> Result<(), ResourceError> {
        if set.is_empty() {
            return Ok(());
        }
        let key = (name.to_owned(), role.to_owned());
        match self.entries.get_mut(&key) {
            Some(Amount::Ranges(v)) => *v = v.union(&set),
            Some(Amount::Scalar(_)) => return Err(ResourceError::KindMismatch(name.to_owned())),
            None => {
                self.entries.insert(key, Amount::Ranges(set));
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total of a scalar over all roles, in units (e.g. cpus).
    pub fn get_scalar(&self, name: &str) -> f64 {
        self.entries
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, a)| match a {
                Amount::Scalar(m) => *m as f64 / 1000.0,
                Amount::Ranges(_) => 0.0,
            })
            .sum()
    }

    /// Union of a range resource over all roles (e.g. all ports).
    pub fn get_ranges(&self, name: &str) -> RangeSet {
        let mut out = RangeSet::default();
        for ((n, _), a) in &self.entries {
            if let (true, Amount::Ranges(rs)) = (n == name, a) {
                out = out.union(rs);
            }
        }
        out
    }

    /// Names and roles present.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.keys().map(|(n, r)| (n.as_str(), r.as_str()))
    }

    /// Whether every resource in `other` is also in `self` (same role).
    pub fn contains(&self, other: &Resources) -> bool {
        other
            .entries
            .iter()
            .all(|(key, amount)| match (self.entries.get(key), amount) {
                (Some(Amount::Scalar(have)), Amount::Scalar(want)) => have >= want,
                (Some(Amount::Ranges(have)), Amount::Ranges(want)) => have.contains_set(want),
                _ => false,
            })
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Resources) {
        for ((name, role), amount) in &other.entries {
            // Kinds always agree for resources built through this type's
            // constructors, which reject mixing; ignore a mismatch rather
            // than panic.
            let _ = match amount {
                Amount::Scalar(m) => self.add_scalar_millis(name, role, *m),
                Amount::Ranges(rs) => self.add_ranges(name, role, rs.clone()),
            };
        }
    }

    /// `self - other`, or `None` if `other` is not contained in `self`.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        if !self.contains(other) {
            return None;
        }
        let mut out = self.clone();
        for (key, amount) in &other.entries {
            let remove = match (out.entries.get_mut(key), amount) {
                (Some(Amount::Scalar(have)), Amount::Scalar(want)) => {
                    *have -= want;
                    *have == 0
                }
                (Some(Amount::Ranges(have)), Amount::Ranges(want)) => {
                    *have = have.difference(want);
                    have.is_empty()
                }
                _ => false,
            };
            if remove {
                out.entries.remove(key);
            }
        }
        Some(out)
    }

    /// `self - other`, dropping whatever of `other` is not in `self`.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        let mut out = self.clone();
        for (key, amount) in &other.entries {
            let remove = match (out.entries.get_mut(key), amount) {
                (Some(Amount::Scalar(have)), Amount::Scalar(want)) => {
                    *have = (*have - want).max(0);
                    *have == 0
                }
                (Some(Amount::Ranges(have)), Amount::Ranges(want)) => {
                    *have = have.difference(want);
                    have.is_empty()
                }
                _ => false,
            };
            if remove {
                out.entries.remove(key);
            }
        }
        out
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, ((name, role), amount)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            f.write_str(name)?;
            if role != UNRESERVED {
                write!(f, "({role})")?;
            }
            match amount {
                Amount::Scalar(m) => write!(f, ":{}", *m as f64 / 1000.0)?,
                Amount::Ranges(rs) => write!(f, ":{rs}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_mesos_text_form_with_roles_and_ranges() {
        let r =
            Resources::parse("cpus:4;mem:8192;ports:[31000-32000,40000-40001];cpus(prod):2").expect("parses");
        assert_eq!(r.get_scalar("cpus"), 6.0);
        assert_eq!(r.get_scalar("mem"), 8192.0);
        assert_eq!(r.get_ranges("ports").len(), 1003);
        assert_eq!(
            r.to_string(),
            "cpus:4;cpus(prod):2;mem:8192;ports:[31000-32000,40000-40001]"
        );
    }

    #[test]
    fn rejects_bad_text() {
        assert!(Resources::parse("cpus").is_err());
        assert!(Resources::parse("cpus:-1").is_err());
        assert!(Resources::parse("cpus:abc").is_err());
        assert!(Resources::parse("ports:[5-1]").is_err());
        assert!(Resources::parse("ports:[1-5];ports:3").is_err());
    }

    #[test]
    fn rejects_bad_wire_resources() {
        let bad = |r: v1::Resource| Resources::from_proto(&[r]).is_err();
        assert!(bad(v1::Resource {
            name: String::new(),
            value: Some(v1::resource::Value::Scalar(1.0)),
            role: String::new()
        }));
        assert!(bad(v1::Resource {
            name: "cpus".into(),
            value: None,
            role: String::new()
        }));
        assert!(bad(v1::Resource {
            name: "cpus".into(),
            value: Some(v1::resource::Value::Scalar(f64::NAN)),
            role: String::new()
        }));
        assert!(bad(v1::Resource {
            name: "ports".into(),
            value: Some(v1::resource::Value::Ranges(v1::Ranges {
                range: vec![v1::Range { begin: 9, end: 1 }]
            })),
            role: String::new()
        }));
    }

    #[test]
    fn scalars_do_not_drift() {
        let mut r = Resources::new().scalar("cpus", 0.1);
        r.add(&Resources::new().scalar("cpus", 0.2));
        let left = r
            .checked_sub(&Resources::new().scalar("cpus", 0.3))
            .expect("contained");
        assert!(left.is_empty());
    }

    #[test]
    fn ports_subtract_as_sets() {
        let have = Resources::parse("ports:[100-200]").expect("parses");
        let want = Resources::parse("ports:[150-150]").expect("parses");
        let left = have.checked_sub(&want).expect("contained");
        assert_eq!(left.get_ranges("ports").ranges(), &[(100, 149), (151, 200)]);
        assert!(
            have.checked_sub(&Resources::parse("ports:[250-250]").expect("parses"))
                .is_none()
        );
    }

    #[test]
    fn reserved_resources_do_not_satisfy_unreserved_demand() {
        let have = Resources::parse("cpus(prod):4").expect("parses");
        assert!(!have.contains(&Resources::parse("cpus:1").expect("parses")));
    }

    fn arb_resources() -> impl Strategy<Value = Resources> {
        (
            0u32..8000,
            0u32..100_000,
            proptest::collection::vec((0u64..500, 0u64..20), 0..4),
        )
            .prop_map(|(c, m, ports)| {
                let mut r = Resources::new();
                if c > 0 {
                    r = r.scalar("cpus", c as f64 / 1000.0);
                }
                if m > 0 {
                    r = r.scalar("mem", m as f64);
                }
                r.with_ranges("ports", ports.into_iter().map(|(b, l)| (b, b + l)))
            })
    }

    proptest! {
        #[test]
        fn adding_then_subtracting_gives_back_the_original(a in arb_resources(), b in arb_resources()) {
            // Ranges that overlap are merged on add, so subtract only what was disjointly added.
            let b = b.saturating_sub(&a);
            let mut sum = a.clone();
            sum.add(&b);
            prop_assert!(sum.contains(&a));
            prop_assert!(sum.contains(&b));
            prop_assert_eq!(sum.checked_sub(&b), Some(a));
        }

        #[test]
        fn wire_form_round_trips(a in arb_resources()) {
            prop_assert_eq!(Resources::from_proto(&a.to_proto()), Ok(a));
        }
    }
}
