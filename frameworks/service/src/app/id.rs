//! App ids: absolute slash-separated paths such as `/shop/web`.

use std::fmt;

/// The regular expression every segment of an app id must fully match
/// (Marathon's `ID_PATH_SEGMENT_PATTERN`, quoted in its error message).
pub const ID_SEGMENT_PATTERN: &str =
    r"^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])|(\.|\.\.)$";

/// Last segments Marathon reserves for its own REST paths.
const RESERVED_LAST_SEGMENTS: [&str; 3] = ["restart", "tasks", "versions"];

/// Why a string is not a valid app id; the messages are Marathon's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppIdError {
    /// A segment has characters outside `[a-z0-9-.]` or a bad shape.
    #[error("must fully match regular expression '{}'", ID_SEGMENT_PATTERN)]
    BadSegment(String),
    /// The id is empty or `/`.
    #[error("Path must contain at least one path element")]
    Empty,
    /// The id ends with `restart`, `tasks` or `versions`.
    #[error("must not end with any of the following reserved keywords: restart, tasks, versions")]
    Reserved,
    /// `..` climbs above the root.
    #[error("Identifier is not child of /. Hint: use relative paths.")]
    AboveRoot,
}

/// An app's id: an absolute, normalised path (`/shop/web`), never the root.
///
/// Relative ids (`web`, `./web`, `../x`) are resolved against a base group
/// (the root for `POST /v2/apps`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId(String);

impl AppId {
    /// Parses a user's id, relative ids taken relative to the root group.
    pub fn parse(s: &str) -> Result<Self, AppIdError> {
        Self::parse_relative_to(s, &[])
    }

    /// Parses an id relative to the group whose segments are `base`
    /// (ignored when `s` starts with `/`).
    pub fn parse_relative_to(s: &str, base: &[&str]) -> Result<Self, AppIdError> {
        let mut segments: Vec<&str> = if s.starts_with('/') {
            Vec::new()
        } else {
            base.to_vec()
        };
        for part in s.split('/').filter(|p| !p.is_empty()) {
            if !segment_is_valid(part) {
                return Err(AppIdError::BadSegment(part.to_owned()));
            }
            match part {
                "." => {}
                ".." => {
                    if segments.pop().is_none() {
                        return Err(AppIdError::AboveRoot);
                    }
                }
                _ => segments.push(part),
            }
        }
        let Some(last) = segments.last() else {
            return Err(AppIdError::Empty);
        };
        if RESERVED_LAST_SEGMENTS.contains(last) {
            return Err(AppIdError::Reserved);
        }
        Ok(Self(format!("/{}", segments.join("/"))))
    }

    /// `/app`, the id of a default definition before its real id is set.
    pub(super) fn placeholder() -> Self {
        Self("/app".to_owned())
    }

    /// The id as text, with its leading `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path segments, e.g. `["shop", "web"]`.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    /// The enclosing group, e.g. `/shop` for `/shop/web` and `/` for `/web`.
    pub fn group(&self) -> String {
        match self.0.rfind('/') {
            Some(0) | None => "/".to_owned(),
            Some(i) => self.0[..i].to_owned(),
        }
    }

    /// The id with `/` replaced by `_` and without the leading one, as
    /// Marathon uses in task ids (`shop_web`).
    pub fn safe_name(&self) -> String {
        self.segments().collect::<Vec<_>>().join("_")
    }
}

/// True when `segment` fully matches [`ID_SEGMENT_PATTERN`]: dot-separated
/// labels of lowercase letters, digits and inner hyphens, or `.`/`..`.
fn segment_is_valid(segment: &str) -> bool {
    if segment == "." || segment == ".." {
        return true;
    }
    segment.split('.').all(|label| {
        let bytes = label.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => {
                alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
            }
            _ => false,
        }
    })
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for AppId {
    type Err = AppIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for AppId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for AppId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_id_is_made_absolute() {
        assert_eq!(AppId::parse("web").unwrap().as_str(), "/web");
    }

    #[test]
    fn nested_id_keeps_its_groups_and_drops_trailing_slash() {
        let id = AppId::parse("/shop/web/").unwrap();
        assert_eq!(id.as_str(), "/shop/web");
        assert_eq!(id.group(), "/shop");
        assert_eq!(id.safe_name(), "shop_web");
    }

    #[test]
    fn dots_are_resolved() {
        assert_eq!(AppId::parse("/shop/./x/../web").unwrap().as_str(), "/shop/web");
        assert_eq!(
            AppId::parse_relative_to("../db", &["shop", "web"])
                .unwrap()
                .as_str(),
            "/shop/db"
        );
    }

    #[test]
    fn uppercase_and_underscores_are_refused() {
        assert!(matches!(AppId::parse("/Shop"), Err(AppIdError::BadSegment(_))));
        assert!(matches!(AppId::parse("/my_app"), Err(AppIdError::BadSegment(_))));
        assert!(matches!(AppId::parse("/-web"), Err(AppIdError::BadSegment(_))));
    }

    #[test]
    fn dotted_segments_are_allowed() {
        assert_eq!(AppId::parse("/a.b-c").unwrap().as_str(), "/a.b-c");
    }

    #[test]
    fn root_and_empty_are_refused() {
        assert_eq!(AppId::parse("/"), Err(AppIdError::Empty));
        assert_eq!(AppId::parse(""), Err(AppIdError::Empty));
        assert_eq!(AppId::parse("/.."), Err(AppIdError::AboveRoot));
    }

    #[test]
    fn reserved_last_segment_is_refused() {
        assert_eq!(AppId::parse("/shop/tasks"), Err(AppIdError::Reserved));
    }

    #[test]
    fn bad_segment_message_quotes_marathons_pattern() {
        let e = AppId::parse("/A").unwrap_err().to_string();
        assert!(
            e.starts_with("must fully match regular expression '^(([a-z0-9]"),
            "{e}"
        );
    }
}
