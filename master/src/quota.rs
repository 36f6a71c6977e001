//! The operator's quota and weight requests: parsing and checking the JSON
//! bodies of `PUT /quota/{role}` and `PUT /weights/{role}`, their stored
//! form, and the registry keys they live under. Pure: no I/O.
//!
//! Bodies (amounts are numbers; names are `cpus`, `mem`, `disk`, `gpus`):
//!
//! ```text
//! PUT /quota/eng/web    {"guarantee": {"cpus": 2, "mem": 1024}, "limit": {"cpus": 4}}
//! PUT /weights/eng/web  {"weight": 3}
//! ```
//!
//! The registry stores exactly these bodies (as JSON) under
//! `/master/quota/<role>` and `/master/weights/<role>`, the role
//! percent-encoded so that a hierarchical role (`eng/web`) is one key segment.

use agora_proto::Resources;
use serde_json::{Map, Value, json};

use crate::allocator::{KINDS, validate_role};

/// Store prefix of the quotas.
pub const QUOTA_PREFIX: &str = "/master/quota/";
/// Store prefix of the role weights set at runtime.
pub const WEIGHTS_PREFIX: &str = "/master/weights/";

/// A request the operator got wrong; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct BadRequest {
    /// The offending field (`role`, `guarantee.cpus`, `weight`, `body`).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl BadRequest {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// A role's quota as the operator gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaSpec {
    /// Resources held back for the role until it uses them.
    pub guarantee: Resources,
    /// Never allocated more; `None`: unlimited (kinds a limit leaves out are
    /// unlimited too).
    pub limit: Option<Resources>,
}

impl QuotaSpec {
    /// The JSON form (the request body shape; also what is stored).
    pub fn to_json(&self) -> Value {
        json!({
            "guarantee": quantities_json(&self.guarantee),
            "limit": self.limit.as_ref().map(quantities_json),
        })
    }
}

/// Checks a role named in a path: valid, and not the default role `*`.
pub fn check_role(role: &str) -> Result<(), BadRequest> {
    validate_role(role).map_err(|e| BadRequest::new("role", e.to_string()))?;
    if role == agora_proto::resources::UNRESERVED {
        return Err(BadRequest::new(
            "role",
            "the default role '*' cannot have quota or a weight",
        ));
    }
    Ok(())
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, BadRequest> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(BadRequest::new("body", "must be a JSON object")),
        Err(e) => Err(BadRequest::new("body", format!("malformed JSON: {e}"))),
    }
}

fn reject_unknown_fields(map: &Map<String, Value>, known: &[&str]) -> Result<(), BadRequest> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(BadRequest::new(
            k.clone(),
            format!("unknown field (expected {})", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// `{"cpus": 2, "mem": 1024}` → resources. Zero amounts are allowed (and
/// dropped) only where `zero_ok`.
fn parse_amounts(field: &str, value: &Value, zero_ok: bool) -> Result<Resources, BadRequest> {
    let Value::Object(map) = value else {
        return Err(BadRequest::new(field, "must be an object of resource amounts"));
    };
    let mut out = Resources::new();
    for (name, amount) in map {
        let path = format!("{field}.{name}");
        if !KINDS.contains(&name.as_str()) {
            return Err(BadRequest::new(
                path,
                "unknown resource (expected cpus, mem, disk or gpus)",
            ));
        }
        let Some(v) = amount.as_f64().filter(|v| v.is_finite()) else {
            return Err(BadRequest::new(path, "must be a number"));
        };
        if v < 0.0 {
            return Err(BadRequest::new(path, "must not be negative"));
        }
        if v > 1e12 {
            return Err(BadRequest::new(path, "is too large"));
        }
        if v == 0.0 {
            if zero_ok {
                continue;
            }
            return Err(BadRequest::new(
                path,
                "must be > 0 (leave the resource out for no limit)",
            ));
        }
        let with = out.clone().scalar(name, v);
        if with == out {
            return Err(BadRequest::new(path, "is too small (the unit is 1/1000)"));
        }
        out = with;
    }
    Ok(out)
}

/// Parses a quota body: `{"guarantee": {..}, "limit": {..} | null}`; both
/// optional. The guarantee must fit in the limit, kind by kind.
pub fn parse_quota(body: &[u8]) -> Result<QuotaSpec, BadRequest> {
    let map = parse_object(body)?;
    reject_unknown_fields(&map, &["guarantee", "limit"])?;
    let guarantee = match map.get("guarantee") {
        None | Some(Value::Null) => Resources::new(),
        Some(v) => parse_amounts("guarantee", v, true)?,
    };
    let limit = match map.get("limit") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_amounts("limit", v, false)?),
    };
    if let Some(limit) = &limit {
        for kind in KINDS {
            let (g, l) = (guarantee.get_scalar(kind), limit.get_scalar(kind));
            if limit.keys().any(|(n, _)| n == kind) && g > l {
                return Err(BadRequest::new(
                    format!("guarantee.{kind}"),
                    format!("{g} exceeds limit.{kind} {l}"),
                ));
            }
        }
    }
    Ok(QuotaSpec { guarantee, limit })
}

/// Parses a weight body: `{"weight": 3}`, finite and > 0.
pub fn parse_weight(body: &[u8]) -> Result<f64, BadRequest> {
    let map = parse_object(body)?;
    reject_unknown_fields(&map, &["weight"])?;
    map.get("weight")
        .and_then(Value::as_f64)
        .filter(|w| w.is_finite() && *w > 0.0)
        .ok_or_else(|| BadRequest::new("weight", "must be a finite number > 0"))
}

/// The stored form of a weight.
pub fn weight_json(weight: f64) -> Value {
    json!({ "weight": weight })
}

/// Scalar amounts of the quota kinds present, as a JSON object.
pub fn quantities_json(r: &Resources) -> Value {
    let mut out = Map::new();
    for kind in KINDS {
        if r.keys().any(|(n, _)| n == kind) {
            out.insert(kind.to_owned(), json!(r.get_scalar(kind)));
        }
    }
    Value::Object(out)
}

/// A role as one registry key segment: `%` and `/` percent-encoded.
pub fn escape_role(role: &str) -> String {
    role.replace('%', "%25").replace('/', "%2F")
}

/// The inverse of [`escape_role`]; `None` if `escaped` is not its output.
pub fn unescape_role(escaped: &str) -> Option<String> {
    let mut out = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        out.push(match code {
            "25" => '%',
            "2F" => '/',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// Registry key of a role's quota.
pub fn quota_key(role: &str) -> String {
    format!("{QUOTA_PREFIX}{}", escape_role(role))
}

/// Registry key of a role's weight.
pub fn weight_key(role: &str) -> String {
    format!("{WEIGHTS_PREFIX}{}", escape_role(role))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_body_parses_into_guarantee_and_limit() {
        let q = parse_quota(br#"{"guarantee":{"cpus":2,"mem":1024},"limit":{"cpus":4}}"#).unwrap();
        assert_eq!(q.guarantee, Resources::parse("cpus:2;mem:1024").unwrap());
        assert_eq!(q.limit, Some(Resources::parse("cpus:4").unwrap()));
    }

    #[test]
    fn a_quota_without_limit_is_unlimited() {
        let q = parse_quota(br#"{"guarantee":{"cpus":1},"limit":null}"#).unwrap();
        assert_eq!(q.limit, None);
        assert_eq!(q.to_json(), json!({"guarantee":{"cpus":1.0},"limit":null}));
    }

    #[test]
    fn bad_quota_bodies_name_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (b"{", "body: malformed JSON"),
            (b"[1]", "body: must be a JSON object"),
            (br#"{"guarantee":{"cpu":1}}"#, "guarantee.cpu: unknown resource"),
            (
                br#"{"guarantee":{"cpus":-1}}"#,
                "guarantee.cpus: must not be negative",
            ),
            (
                br#"{"guarantee":{"cpus":"2"}}"#,
                "guarantee.cpus: must be a number",
            ),
            (br#"{"guarantee":3}"#, "guarantee: must be an object"),
            (br#"{"limit":{"mem":0}}"#, "limit.mem: must be > 0"),
            (br#"{"limit":{"ports":1}}"#, "limit.ports: unknown resource"),
            (
                br#"{"guarantee":{"cpus":4},"limit":{"cpus":2}}"#,
                "guarantee.cpus: 4 exceeds limit.cpus 2",
            ),
            (br#"{"guarantees":{}}"#, "guarantees: unknown field"),
        ];
        for (body, words) in cases {
            let e = parse_quota(body).unwrap_err().to_string();
            assert!(e.starts_with(words), "{}: {e}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn a_weight_must_be_a_finite_positive_number() {
        assert_eq!(parse_weight(br#"{"weight":3}"#).unwrap(), 3.0);
        for body in [
            &br#"{"weight":0}"#[..],
            br#"{"weight":-1}"#,
            br#"{"weight":"x"}"#,
            br#"{"weight":1e999}"#,
            br#"{}"#,
        ] {
            let e = parse_weight(body).unwrap_err();
            assert!(
                e.field == "weight" || e.field == "body",
                "{}: {e}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn the_default_role_and_bad_roles_are_refused() {
        assert_eq!(check_role("*").unwrap_err().field, "role");
        assert_eq!(check_role("a//b").unwrap_err().field, "role");
        assert!(check_role("eng/web").is_ok());
    }

    #[test]
    fn hierarchical_roles_are_one_key_segment() {
        for role in ["eng/web", "a%2Fb", "plain", "x%/y"] {
            let escaped = escape_role(role);
            assert!(!escaped.contains('/'), "{escaped}");
            assert_eq!(unescape_role(&escaped).as_deref(), Some(role));
        }
        assert_eq!(quota_key("eng/web"), "/master/quota/eng%2Fweb");
        assert_eq!(unescape_role("bad%zz"), None);
    }
}
