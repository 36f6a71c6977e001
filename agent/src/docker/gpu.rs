//! GPU detection through `nvidia-smi`: the agent offers `gpus:N` only when
//! `nvidia-smi` is on PATH and lists devices.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// One GPU as `nvidia-smi` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Gpu {
    pub index: u32,
    pub uuid: String,
}

/// Parses `nvidia-smi --query-gpu=index,uuid --format=csv,noheader`; lines
/// that do not parse are skipped.
pub(crate) fn parse_gpus(text: &str) -> Vec<Gpu> {
    text.lines()
        .filter_map(|line| {
            let (index, uuid) = line.split_once(',')?;
            let uuid = uuid.trim();
            let index = index.trim().parse().ok()?;
            (!uuid.is_empty()).then(|| Gpu {
                index,
                uuid: uuid.to_owned(),
            })
        })
        .collect()
}

/// The GPUs `nvidia-smi` (looked up on `path`, a PATH-style list) reports;
/// none if it is missing or fails.
pub(crate) fn detect_gpus(path: Option<&str>) -> Vec<Gpu> {
    let Some(program) = path.and_then(find_program) else {
        return Vec::new();
    };
    match Command::new(&program)
        .args(["--query-gpu=index,uuid", "--format=csv,noheader"])
        .output()
    {
        Ok(out) if out.status.success() => parse_gpus(&String::from_utf8_lossy(&out.stdout)),
        Ok(out) => {
            tracing::warn!(status = %out.status, "nvidia-smi failed; offering no GPUs");
            Vec::new()
        }
        Err(err) => {
            tracing::warn!(%err, "cannot run nvidia-smi; offering no GPUs");
            Vec::new()
        }
    }
}

fn find_program(path: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join("nvidia-smi"))
        .find(|p| Path::new(p).is_file())
}

/// Which of the machine's GPUs (by uuid) are handed out to tasks.
#[derive(Debug, Clone, Default)]
pub(crate) struct GpuPool {
    all: Vec<String>,
    in_use: BTreeSet<String>,
}

impl GpuPool {
    /// A pool of the machine's GPUs, all free.
    pub(crate) fn new(all: Vec<String>) -> Self {
        Self {
            all,
            in_use: BTreeSet::new(),
        }
    }

    /// Hands out `wanted` free GPUs, in the machine's order; `None` (nothing
    /// taken) when fewer are free.
    pub(crate) fn take(&mut self, wanted: usize) -> Option<Vec<String>> {
        let free: Vec<String> = self
            .all
            .iter()
            .filter(|g| !self.in_use.contains(*g))
            .take(wanted)
            .cloned()
            .collect();
        if free.len() < wanted {
            return None;
        }
        self.in_use.extend(free.iter().cloned());
        Some(free)
    }

    /// Marks GPUs a recovered container holds as taken; ids this machine
    /// does not have are ignored.
    pub(crate) fn reserve(&mut self, gpus: &[String]) {
        for g in gpus.iter().filter(|g| self.all.contains(g)) {
            self.in_use.insert(g.clone());
        }
    }

    /// Gives GPUs back.
    pub(crate) fn release(&mut self, gpus: &[String]) {
        for g in gpus {
            self.in_use.remove(g);
        }
    }

    /// How many GPUs are free.
    pub(crate) fn free(&self) -> usize {
        self.all.len() - self.in_use.len()
    }
}

/// The GPU ids a container's label lists (comma-separated, as
/// [`gpus_label`] writes them).
pub(crate) fn parse_gpus_label(label: &str) -> Vec<String> {
    label
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The label value naming the GPUs assigned to a container.
pub(crate) fn gpus_label(gpus: &[String]) -> String {
    gpus.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> GpuPool {
        GpuPool::new(vec!["GPU-a".into(), "GPU-b".into()])
    }

    #[test]
    fn gpus_are_handed_out_once_until_released() {
        let mut pool = pool();
        assert_eq!(pool.take(1), Some(vec!["GPU-a".to_owned()]));
        assert_eq!(pool.take(1), Some(vec!["GPU-b".to_owned()]));
        assert_eq!(pool.take(1), None);
        pool.release(&["GPU-a".to_owned()]);
        assert_eq!(pool.take(1), Some(vec!["GPU-a".to_owned()]));
    }

    #[test]
    fn asking_for_more_than_is_free_takes_nothing() {
        let mut pool = pool();
        assert_eq!(pool.take(3), None);
        assert_eq!(pool.free(), 2);
    }

    #[test]
    fn gpus_of_recovered_containers_are_not_handed_out_again() {
        let mut pool = pool();
        let held = parse_gpus_label(&gpus_label(&["GPU-a".to_owned()]));
        pool.reserve(&held);
        assert_eq!(pool.take(1), Some(vec!["GPU-b".to_owned()]));
        assert_eq!(pool.take(1), None);
    }

    #[test]
    fn a_recovered_label_naming_unknown_gpus_reserves_nothing() {
        let mut pool = pool();
        pool.reserve(&parse_gpus_label("GPU-zzz, "));
        assert_eq!(pool.free(), 2);
    }

    #[test]
    fn nvidia_smi_csv_lists_index_and_uuid() {
        let out = "0, GPU-aaaa\n1, GPU-bbbb\n\ngarbage\n";
        assert_eq!(
            parse_gpus(out),
            vec![
                Gpu {
                    index: 0,
                    uuid: "GPU-aaaa".into()
                },
                Gpu {
                    index: 1,
                    uuid: "GPU-bbbb".into()
                },
            ]
        );
    }

    #[test]
    fn without_nvidia_smi_there_are_no_gpus() {
        let dir = tempfile::tempdir().unwrap();
        assert!(detect_gpus(Some(dir.path().to_str().unwrap())).is_empty());
        assert!(detect_gpus(None).is_empty());
    }

    #[test]
    fn a_fake_nvidia_smi_on_path_is_detected() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("nvidia-smi");
        std::fs::write(&script, "#!/bin/sh\necho '0, GPU-1234'\necho '1, GPU-5678'\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let gpus = detect_gpus(Some(dir.path().to_str().unwrap()));
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[1].uuid, "GPU-5678");
    }
}
