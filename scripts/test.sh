#!/usr/bin/env bash
# Runs every test Agora has, after installing and starting what they need.
#
#   scripts/test.sh            # format check, clippy, all tests
#   scripts/test.sh -E 'test(failover)'   # extra args go to cargo-nextest
#
# Needs: a Rust toolchain. Everything else it installs itself (Debian, as
# root): a Docker Engine if none answers, and the test image
# agora-test/busybox:latest (scripts/test-image.sh; there is no registry),
# and the real Marathon and Chronos Python clients the compatibility tests
# drive (marathon 0.13, chronos-python 1.2.1, from PyPI), and Debian's
# zookeeper package (the HA tests start their own servers from its jars).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "$@" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$@"; }
}

# A Docker Engine that answers: start one (installing docker.io first) if needed.
ensure_docker() {
  if docker info >/dev/null 2>&1; then
    return
  fi
  command -v dockerd >/dev/null 2>&1 || apt_install docker.io
  echo "starting dockerd"
  (dockerd >/tmp/agora-dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return
    sleep 1
  done
  echo "dockerd did not start; see /tmp/agora-dockerd.log" >&2
  exit 1
}

# The unchanged third-party clients the compatibility tests run.
ensure_python_clients() {
  command -v python3 >/dev/null 2>&1 || apt_install python3 python3-pip
  if python3 -c 'import marathon, chronos' >/dev/null 2>&1 &&
    python3 -c 'import importlib.metadata as m; assert m.version("marathon") == "0.13.0" and m.version("chronos-python") == "1.2.1"' >/dev/null 2>&1; then
    return
  fi
  python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
    'marathon==0.13.0' 'chronos-python==1.2.1' 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check 'marathon==0.13.0' 'chronos-python==1.2.1'
}

# ZooKeeper for the high-availability tests (Debian's package; the tests
# start their own standalone servers from its jars, see store/src/zk_server.rs).
ensure_zookeeper() {
  if [ -f /usr/share/java/zookeeper.jar ] && command -v java >/dev/null 2>&1; then
    return
  fi
  apt_install zookeeper
}

step "Python clients for the compatibility tests"
ensure_python_clients

step "ZooKeeper (Debian package) for the HA tests"
ensure_zookeeper

step "Docker Engine and the test image"
ensure_docker
scripts/test-image.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "build"
cargo build --workspace --all-targets --quiet

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  echo "(cargo-nextest not found: using cargo test)"
  cargo test --workspace --no-fail-fast "$@"
fi
