//! `zk://host1:2181,host2:2181/path` — where a ZooKeeper ensemble is and
//! which znode a cluster keeps its data under.

use std::fmt;
use std::str::FromStr;

/// ZooKeeper's client port, used when a host names none.
pub const DEFAULT_PORT: u16 = 2181;

/// A parsed `zk://` URL: the ensemble's hosts and the cluster's root znode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkUrl {
    /// `host:port` of each server, in the order given.
    pub hosts: Vec<String>,
    /// The root znode, absolute, without a trailing slash (e.g. `/agora`).
    pub path: String,
}

/// Why a `zk://` URL was refused; each variant names the bad part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZkUrlError {
    /// The URL does not start with `zk://`.
    #[error("zk URL {url:?}: must start with zk:// (e.g. zk://h1:2181,h2:2181/agora)")]
    Scheme {
        /// The whole URL as given.
        url: String,
    },
    /// No host between `zk://` and the path.
    #[error("zk URL {url:?}: names no host (e.g. zk://h1:2181,h2:2181/agora)")]
    NoHosts {
        /// The whole URL as given.
        url: String,
    },
    /// One host of the list is malformed.
    #[error("zk URL {url:?}: host {host:?}: {reason}")]
    Host {
        /// The whole URL as given.
        url: String,
        /// The offending `host[:port]` entry.
        host: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The path is missing or is not a valid znode path.
    #[error("zk URL {url:?}: path {path:?}: {reason}")]
    Path {
        /// The whole URL as given.
        url: String,
        /// The offending path ("" when missing).
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl ZkUrl {
    /// Parses `zk://h1[:port],h2[:port]/path` (port defaults to 2181; the path
    /// is required and must not be `/`).
    pub fn parse(url: &str) -> Result<ZkUrl, ZkUrlError> {
        let rest = url
            .strip_prefix("zk://")
            .ok_or_else(|| ZkUrlError::Scheme { url: url.to_owned() })?;
        let (hosts_part, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if hosts_part.is_empty() {
            return Err(ZkUrlError::NoHosts { url: url.to_owned() });
        }
        let mut hosts = Vec::new();
        for entry in hosts_part.split(',') {
            hosts.push(parse_host(entry).map_err(|reason| ZkUrlError::Host {
                url: url.to_owned(),
                host: entry.to_owned(),
                reason,
            })?);
        }
        if path.is_empty() || path == "/" {
            return Err(ZkUrlError::Path {
                url: url.to_owned(),
                path: path.to_owned(),
                reason: "a root znode is required after the hosts, e.g. /agora",
            });
        }
        validate_znode_path(path).map_err(|reason| ZkUrlError::Path {
            url: url.to_owned(),
            path: path.to_owned(),
            reason,
        })?;
        Ok(ZkUrl {
            hosts,
            path: path.to_owned(),
        })
    }

    /// The hosts as ZooKeeper's connect string, `h1:2181,h2:2181`.
    pub fn connect_string(&self) -> String {
        self.hosts.join(",")
    }

    /// The same ensemble with `name` appended to the path (`/agora` →
    /// `/agora/leader`). `name` may hold several `/`-separated segments.
    pub fn child(&self, name: &str) -> Result<ZkUrl, ZkUrlError> {
        let path = format!("{}/{}", self.path, name.trim_start_matches('/'));
        validate_znode_path(&path).map_err(|reason| ZkUrlError::Path {
            url: self.to_string(),
            path: path.clone(),
            reason,
        })?;
        Ok(ZkUrl {
            hosts: self.hosts.clone(),
            path,
        })
    }
}

impl FromStr for ZkUrl {
    type Err = ZkUrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ZkUrl::parse(s)
    }
}

impl fmt::Display for ZkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "zk://{}{}", self.connect_string(), self.path)
    }
}

/// `host[:port]` or `[v6]:port` → `host:port`.
fn parse_host(entry: &str) -> Result<String, &'static str> {
    if entry.is_empty() {
        return Err("empty host (two commas in a row, or a trailing comma?)");
    }
    if entry.contains('@') {
        return Err("credentials in the URL are not supported");
    }
    let (host, port) = if let Some(v6) = entry.strip_prefix('[') {
        let end = v6.find(']').ok_or("IPv6 address without a closing ]")?;
        let after = &v6[end + 1..];
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or("expected :port after the IPv6 address")?,
            ),
        };
        (&entry[..end + 2], port)
    } else {
        match entry.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (entry, None),
        }
    };
    if host.is_empty() {
        return Err("empty host name");
    }
    if !host.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    {
        return Err("host name may hold only letters, digits, '.', '-' and '_'");
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err("port must be a number from 1 to 65535"),
            Ok(p) => p,
        },
    };
    Ok(format!("{host}:{port}"))
}

/// Checks an absolute znode path the way ZooKeeper's server does.
pub(crate) fn validate_znode_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("must start with /");
    }
    if path == "/" {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err("must not end with /");
    }
    for segment in path[1..].split('/') {
        match segment {
            "" => return Err("must not hold an empty segment (//)"),
            "." | ".." => return Err("must not hold a . or .. segment"),
            _ => {}
        }
        if segment.chars().any(forbidden_char) {
            return Err("holds a character ZooKeeper refuses (control or reserved Unicode)");
        }
    }
    Ok(())
}

/// Characters ZooKeeper refuses in paths (PathUtils.validatePath).
fn forbidden_char(c: char) -> bool {
    let c = c as u32;
    c <= 0x1f
        || (0x7f..=0x9f).contains(&c)
        || (0xd800..=0xf8ff).contains(&c)
        || (0xfff0..=0xffff).contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_and_path() {
        let url = ZkUrl::parse("zk://h1:2181,10.0.0.2:2182/agora/prod").unwrap();
        assert_eq!(url.hosts, vec!["h1:2181", "10.0.0.2:2182"]);
        assert_eq!(url.path, "/agora/prod");
        assert_eq!(url.connect_string(), "h1:2181,10.0.0.2:2182");
        assert_eq!(url.to_string(), "zk://h1:2181,10.0.0.2:2182/agora/prod");
    }

    #[test]
    fn a_host_without_port_gets_2181() {
        let url: ZkUrl = "zk://zk1,[::1]:2190,[fe80::1]/a".parse().unwrap();
        assert_eq!(url.hosts, vec!["zk1:2181", "[::1]:2190", "[fe80::1]:2181"]);
    }

    #[test]
    fn child_appends_to_the_path() {
        let url = ZkUrl::parse("zk://h:1/agora").unwrap();
        assert_eq!(url.child("leader").unwrap().path, "/agora/leader");
        assert_eq!(url.child("/state/x").unwrap().path, "/agora/state/x");
        assert!(matches!(url.child("a//b"), Err(ZkUrlError::Path { .. })));
    }

    #[test]
    fn a_url_without_the_zk_scheme_is_refused() {
        let err = ZkUrl::parse("http://h:2181/agora").unwrap_err();
        assert!(matches!(err, ZkUrlError::Scheme { .. }));
        assert!(err.to_string().contains("zk://"), "{err}");
    }

    #[test]
    fn a_url_without_hosts_is_refused() {
        assert!(matches!(
            ZkUrl::parse("zk:///agora"),
            Err(ZkUrlError::NoHosts { .. })
        ));
    }

    #[test]
    fn a_bad_port_names_the_host() {
        let err = ZkUrl::parse("zk://h1:2181,h2:x/agora").unwrap_err();
        match &err {
            ZkUrlError::Host { host, .. } => assert_eq!(host, "h2:x"),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("\"h2:x\""), "{err}");
        assert!(matches!(
            ZkUrl::parse("zk://h1:0/a"),
            Err(ZkUrlError::Host { .. })
        ));
        assert!(matches!(
            ZkUrl::parse("zk://h1:70000/a"),
            Err(ZkUrlError::Host { .. })
        ));
    }

    #[test]
    fn an_empty_host_entry_is_refused() {
        let err = ZkUrl::parse("zk://h1:2181,,h2/agora").unwrap_err();
        assert!(
            matches!(err, ZkUrlError::Host { ref host, .. } if host.is_empty()),
            "{err:?}"
        );
        assert!(matches!(
            ZkUrl::parse("zk://user:pw@h1/a"),
            Err(ZkUrlError::Host { .. })
        ));
        assert!(matches!(ZkUrl::parse("zk://h 1/a"), Err(ZkUrlError::Host { .. })));
    }

    #[test]
    fn a_missing_or_root_path_is_refused() {
        for url in ["zk://h1:2181", "zk://h1:2181/"] {
            let err = ZkUrl::parse(url).unwrap_err();
            assert!(matches!(err, ZkUrlError::Path { .. }), "{url}: {err:?}");
            assert!(err.to_string().contains("root znode"), "{err}");
        }
    }

    #[test]
    fn a_malformed_path_is_refused_naming_it() {
        for (url, path) in [
            ("zk://h/agora/", "/agora/"),
            ("zk://h/a//b", "/a//b"),
            ("zk://h/a/../b", "/a/../b"),
            ("zk://h/a\u{1}", "/a\u{1}"),
        ] {
            match ZkUrl::parse(url) {
                Err(ZkUrlError::Path { path: p, .. }) => assert_eq!(p, path),
                other => panic!("{url}: {other:?}"),
            }
        }
    }
}
