//! Typed identifiers. On the wire they are strings; in code each kind has its
//! own type so an `AgentId` can never be passed where a `TaskId` is meant.

use std::fmt;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} bytes, got {len}")]
    TooLong { max: usize, len: usize },
    #[error("must be printable ASCII without '/' or whitespace, found {0:?}")]
    BadChar(char),
}

/// Longest identifier accepted.
pub const MAX_ID_LEN: usize = 255;

/// Checks the identifier rules shared by every id kind.
pub fn validate_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            max: MAX_ID_LEN,
            len: s.len(),
        });
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic() || *c == '/') {
        return Err(IdError::BadChar(c));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses and validates an id received from a peer or a user.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                validate_id(s)?;
                Ok(Self(s.to_owned()))
            }
            /// Wraps a string that is known to be valid (generated locally).
            pub fn new_unchecked(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            /// A fresh random id with the given prefix, e.g. `agent-…`.
            pub fn generate(prefix: &str) -> Self {
                Self(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// An agent, assigned by the master at first registration.
    AgentId
);
id_type!(
    /// A framework, assigned by the master at first subscription.
    FrameworkId
);
id_type!(
    /// An offer, assigned by the master.
    OfferId
);
id_type!(
    /// A task, chosen by its framework; unique within the framework.
    TaskId
);
id_type!(
    /// One subscription stream of a framework.
    StreamId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_empty_long_and_odd_characters() {
        assert_eq!(TaskId::parse(""), Err(IdError::Empty));
        assert!(matches!(
            TaskId::parse(&"x".repeat(256)),
            Err(IdError::TooLong { .. })
        ));
        assert_eq!(TaskId::parse("a/b"), Err(IdError::BadChar('/')));
        assert_eq!(TaskId::parse("a b"), Err(IdError::BadChar(' ')));
        assert!(TaskId::parse("web.1-abc_2").is_ok());
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = AgentId::generate("agent");
        let b = AgentId::generate("agent");
        assert_ne!(a, b);
        assert!(AgentId::parse(a.as_str()).is_ok());
    }
}
