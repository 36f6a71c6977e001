//! Query parameters as Marathon reads them: repeated keys (`embed=a&embed=b`),
//! case-insensitive booleans (`force=True`), and path segments of ids that
//! may arrive with a doubled slash (`/v2/apps//shop/web`, as the Python
//! client builds them).

use super::error::ApiError;

/// The query string of a request, every `key=value` pair in order.
#[derive(Debug, Clone, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Wraps decoded pairs.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }

    /// The last value of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order (`embed=a&embed=b` gives `a`, `b`).
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter: `true`/`false` in any case (`True`, as Python's
    /// `requests` sends it), `1`/`0`, or a bare `?force`; `default` when absent.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(value) => parse_bool(value).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "query parameter {key}: expected true or false, got '{value}'"
                ))
            }),
        }
    }
}

/// `true`/`false` in any case, `1`/`0`, and the empty string (a bare key) as true.
pub fn parse_bool(value: &str) -> Option<bool> {
    let value = value.trim();
    if value.is_empty() || value == "1" || value.eq_ignore_ascii_case("true") {
        Some(true)
    } else if value == "0" || value.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// The non-empty segments of a wildcard path (`"/shop//web/"` gives
/// `["shop", "web"]`).
pub fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// What `embed` asks to add to app objects (Marathon's `app.*`/`apps.*`
/// values; both prefixes are accepted on every endpoint, as Marathon does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Embed {
    /// `tasks`: the app's tasks.
    pub tasks: bool,
    /// `tasksStaged`, `tasksRunning`, `tasksHealthy`, `tasksUnhealthy`.
    pub counts: bool,
    /// `deployments`: the ids of the deployments changing the app.
    pub deployments: bool,
    /// `readinessCheckResults` (always empty: Agora has no readiness checks).
    pub readiness: bool,
    /// `lastTaskFailure`.
    pub last_task_failure: bool,
    /// `taskStats`.
    pub task_stats: bool,
}

impl Embed {
    /// What `GET /v2/apps` always shows: counts and deployments (Marathon adds
    /// them whatever `embed` says), plus what `embed` asks for.
    pub fn for_list(params: &Params) -> Self {
        Self {
            counts: true,
            deployments: true,
            ..Self::from_params(params)
        }
    }

    /// What `GET /v2/apps/{id}` always shows: counts, deployments, tasks and
    /// the last task failure, plus what `embed` asks for.
    pub fn for_one(params: &Params) -> Self {
        Self {
            counts: true,
            deployments: true,
            tasks: true,
            last_task_failure: true,
            ..Self::from_params(params)
        }
    }

    /// Exactly what `embed` asks for; unknown values are ignored, as Marathon does.
    pub fn from_params(params: &Params) -> Self {
        let mut embed = Self::default();
        for value in params.all("embed") {
            let name = value
                .strip_prefix("apps.")
                .or_else(|| value.strip_prefix("app."))
                .unwrap_or(value);
            match name {
                "tasks" => embed.tasks = true,
                "counts" => embed.counts = true,
                "deployments" => embed.deployments = true,
                "readiness" => embed.readiness = true,
                "lastTaskFailure" => embed.last_task_failure = true,
                // Marathon's deprecated shorthand: the failure and the tasks.
                "failures" => {
                    embed.last_task_failure = true;
                    embed.tasks = true;
                }
                "taskStats" => embed.task_stats = true,
                _ => {}
            }
        }
        embed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn booleans_are_case_insensitive() {
        for (text, expected) in [
            ("True", true),
            ("TRUE", true),
            ("true", true),
            ("False", false),
            ("fAlSe", false),
            ("1", true),
            ("0", false),
            ("", true),
        ] {
            assert_eq!(parse_bool(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn a_bad_boolean_is_an_error_naming_the_parameter() {
        let err = params(&[("force", "yes")])
            .flag("force", false)
            .expect_err("not a boolean");
        match err {
            ApiError::BadRequest(message) => {
                assert!(message.contains("force"), "{message}");
                assert!(message.contains("yes"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn an_absent_flag_takes_its_default() {
        assert!(params(&[]).flag("force", true).unwrap());
        assert!(!params(&[]).flag("force", false).unwrap());
    }

    #[test]
    fn repeated_keys_keep_every_value() {
        let p = params(&[("embed", "app.tasks"), ("x", "1"), ("embed", "app.counts")]);
        assert_eq!(p.all("embed").collect::<Vec<_>>(), ["app.tasks", "app.counts"]);
        assert_eq!(p.get("x"), Some("1"));
    }

    #[test]
    fn doubled_and_trailing_slashes_are_ignored_in_paths() {
        assert_eq!(segments("/shop//web/"), ["shop", "web"]);
        assert!(segments("/").is_empty());
    }

    #[test]
    fn embed_accepts_app_and_apps_prefixes() {
        let e = Embed::from_params(&params(&[("embed", "apps.tasks"), ("embed", "app.taskStats")]));
        assert!(e.tasks && e.task_stats);
        assert!(!e.counts && !e.last_task_failure);
    }

    #[test]
    fn embed_failures_means_the_last_failure_and_the_tasks() {
        let e = Embed::from_params(&params(&[("embed", "app.failures")]));
        assert!(e.last_task_failure && e.tasks);
    }

    #[test]
    fn the_app_list_always_has_counts_and_deployments_but_not_tasks() {
        let e = Embed::for_list(&params(&[]));
        assert!(e.counts && e.deployments);
        assert!(!e.tasks && !e.last_task_failure);
    }

    #[test]
    fn one_app_always_has_tasks_and_its_last_failure() {
        let e = Embed::for_one(&params(&[]));
        assert!(e.counts && e.deployments && e.tasks && e.last_task_failure);
        assert!(!e.task_stats);
    }
}
