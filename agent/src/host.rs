//! What the agent offers: its resources (from `--resources`, with whatever is
//! missing detected on the host) and its attributes (`--attributes`).

use std::path::{Path, PathBuf};

use agora_proto::Resources;
use agora_proto::resources::ResourceError;
use agora_proto::v1;

/// Ports offered when `--resources` names none.
pub(crate) const DEFAULT_PORTS: (u64, u64) = (31000, 32000);

/// The resources `detect_host_resources` fills in when `--resources` lacks them.
const DETECTED: [&str; 4] = ["cpus", "mem", "disk", "ports"];

/// Why `--attributes` text is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    /// A part has no `:` between name and value.
    #[error("attribute {0:?} is not name:value")]
    NotNameValue(String),
    /// A part has an empty name.
    #[error("attribute {0:?} has an empty name")]
    EmptyName(String),
}

/// Parses `rack:a;zone:eu` into attributes, in order.
pub(crate) fn parse_attributes(text: &str) -> Result<Vec<v1::Attribute>, AttributeError> {
    text.split(';')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, value) = part
                .split_once(':')
                .ok_or_else(|| AttributeError::NotNameValue(part.to_owned()))?;
            let name = name.trim();
            if name.is_empty() {
                return Err(AttributeError::EmptyName(part.to_owned()));
            }
            Ok(v1::Attribute {
                name: name.to_owned(),
                value: value.trim().to_owned(),
            })
        })
        .collect()
}

/// The agent's total resources: `text` parsed, with any of cpus/mem/disk/ports
/// that it does not name taken from `detected`.
pub(crate) fn resolve_resources(
    text: Option<&str>,
    detected: &Resources,
) -> Result<Resources, ResourceError> {
    let mut resources = match text {
        Some(text) => Resources::parse(text)?,
        None => Resources::new(),
    };
    let named: Vec<String> = resources.keys().map(|(name, _)| name.to_owned()).collect();
    for name in DETECTED {
        if named.iter().any(|n| n == name) {
            continue;
        }
        let mut one = Resources::new();
        if name == "ports" {
            let ports = detected.get_ranges("ports");
            one = one.with_ranges("ports", ports.ranges().iter().copied());
        } else {
            one = one.scalar(name, detected.get_scalar(name));
        }
        resources.add(&one);
    }
    Ok(resources)
}

/// The machine's cpus, mem (MiB, total minus 10%), disk (MiB free under `work_dir`)
/// and the default ports 31000-32000, as `Resources`. What cannot be detected is
/// left out.
pub fn detect_host_resources(work_dir: &Path) -> Resources {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut resources = Resources::new()
        .scalar("cpus", cpus as f64)
        .with_ranges("ports", [DEFAULT_PORTS]);
    if let Ok(mut system) = sysinfo::System::new() {
        system.refresh_memory();
        let mib = system.total_memory() / (1024 * 1024);
        resources = resources.scalar("mem", (mib as f64 * 0.9).floor());
    }
    if let Some(free) = free_disk_bytes(work_dir) {
        resources = resources.scalar("disk", (free / (1024 * 1024)) as f64);
    }
    resources
}

/// Free bytes on the filesystem holding `dir` (or its nearest existing ancestor).
fn free_disk_bytes(dir: &Path) -> Option<u64> {
    let dir = existing_ancestor(dir)?;
    let disks = sysinfo::Disks::new_with_refreshed_list().ok()?;
    disks
        .iter()
        .filter(|disk| dir.starts_with(disk.mount_point()))
        .max_by_key(|disk| disk.mount_point().as_os_str().len())
        .map(|disk| disk.available_space())
}

fn existing_ancestor(dir: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(dir).ok()?;
    absolute.ancestors().find_map(|p| p.canonicalize().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_parse_in_order_and_trim() {
        let attrs = parse_attributes(" rack:a ; zone:eu;").unwrap();
        let pairs: Vec<_> = attrs
            .iter()
            .map(|a| (a.name.as_str(), a.value.as_str()))
            .collect();
        assert_eq!(pairs, [("rack", "a"), ("zone", "eu")]);
    }

    #[test]
    fn attributes_without_colon_or_name_are_rejected() {
        assert_eq!(
            parse_attributes("rack"),
            Err(AttributeError::NotNameValue("rack".into()))
        );
        assert_eq!(
            parse_attributes(":a"),
            Err(AttributeError::EmptyName(":a".into()))
        );
    }

    #[test]
    fn empty_attribute_text_means_no_attributes() {
        assert!(parse_attributes("").unwrap().is_empty());
    }

    fn detected() -> Resources {
        Resources::parse("cpus:8;mem:1000;disk:5000;ports:[31000-32000]").unwrap()
    }

    #[test]
    fn given_resources_win_and_missing_ones_are_detected() {
        let r = resolve_resources(Some("cpus:2;ports:[5000-5001];gpus:1"), &detected()).unwrap();
        assert_eq!(r.get_scalar("cpus"), 2.0);
        assert_eq!(r.get_scalar("gpus"), 1.0);
        assert_eq!(r.get_scalar("mem"), 1000.0);
        assert_eq!(r.get_scalar("disk"), 5000.0);
        assert_eq!(r.get_ranges("ports").ranges(), &[(5000, 5001)]);
    }

    #[test]
    fn a_reserved_resource_counts_as_given() {
        let r = resolve_resources(Some("cpus(prod):2"), &detected()).unwrap();
        assert_eq!(r.get_scalar("cpus"), 2.0);
    }

    #[test]
    fn no_resources_flag_means_everything_detected() {
        assert_eq!(resolve_resources(None, &detected()).unwrap(), detected());
    }

    #[test]
    fn bad_resource_text_is_an_error() {
        assert!(resolve_resources(Some("cpus:lots"), &detected()).is_err());
    }

    #[test]
    fn an_undetectable_resource_is_left_out() {
        let partial = Resources::parse("cpus:1").unwrap();
        let r = resolve_resources(None, &partial).unwrap();
        assert_eq!(r.get_scalar("mem"), 0.0);
        assert!(r.get_ranges("ports").is_empty());
    }

    #[test]
    fn host_detection_finds_cpus_memory_disk_and_default_ports() {
        let dir = tempfile::tempdir().unwrap();
        let r = detect_host_resources(&dir.path().join("not-yet-created"));
        assert!(r.get_scalar("cpus") >= 1.0);
        assert!(r.get_scalar("mem") > 0.0);
        assert!(r.get_scalar("disk") > 0.0);
        assert_eq!(r.get_ranges("ports").ranges(), &[DEFAULT_PORTS]);
    }
}
