//! GPU detection through `nvidia-smi`: the agent offers `gpus:N` only when
//! `nvidia-smi` is on PATH and lists devices.

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

#[cfg(test)]
mod tests {
    use super::*;

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
