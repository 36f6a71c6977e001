//! Helpers for tests that run real Docker containers: the test image, the
//! docker CLI, and a guard that removes a cluster's containers by label.

use std::path::{Path, PathBuf};

pub const IMAGE: &str = "agora-test/busybox:latest";

pub fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("Docker tests need the docker CLI and a running engine");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Fails loudly when the engine or the test image is missing.
pub fn require_docker() {
    let out = std::process::Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .expect("Docker tests need the docker CLI and a running engine");
    assert!(
        out.status.success(),
        "Docker tests need the image {IMAGE} (run scripts/test-image.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes the containers of agent 0 of the cluster in `dir` when dropped.
pub struct Containers(PathBuf);

impl Containers {
    pub fn of(dir: &Path) -> Self {
        Self(dir.join("agent-0"))
    }

    pub fn ids(&self) -> Vec<String> {
        let filter = format!("label=agora.work_dir={}", self.0.display());
        docker(&["ps", "-aq", "--filter", &filter])
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        for id in self.ids() {
            docker(&["rm", "-f", &id]);
        }
    }
}
