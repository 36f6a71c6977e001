#!/usr/bin/env bash
# Runs every test Agora has, after installing and starting what they need.
#
#   scripts/test.sh            # format check, clippy, all tests
#   scripts/test.sh -E 'test(failover)'   # extra args go to cargo-nextest
#
# Needs: a Rust toolchain. Everything else it installs itself (Debian).
# Today the tests need nothing beyond Rust: they start real `agora` processes
# on loopback with the process containerizer. The Docker, ZooKeeper and
# client-compatibility issues add their set-up steps here.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

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
