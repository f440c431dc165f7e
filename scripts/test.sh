#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this):
# system packages, formatting, lints with warnings denied, then every test, including the
# end-to-end tests that start real cosignerd processes on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

export CARGO_TERM_COLOR=never
step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build the binaries the end-to-end tests run"
cargo build --workspace --bins --locked

step "cargo test"
cargo test --workspace --locked --no-fail-fast
