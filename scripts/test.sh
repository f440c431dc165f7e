#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this):
# system packages, formatting, lints with warnings denied, then every test, including the
# end-to-end tests that start real cosignerd processes on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

export CARGO_TERM_COLOR=never
# Several tests provoke TPM errors on purpose (foreign TPM, PCR mismatch); libtss2 would log
# each one on stderr. The errors the tests check come back through the API regardless.
export TSS2_LOG=all+NONE
# The daemon's crash-test hook exists only in this build (tests/tests/faults.rs uses it).
FEATURES=cosignerd/test-hooks
step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked --features "$FEATURES" -- -D warnings

step "build the binaries the end-to-end tests run"
cargo build --workspace --bins --locked --features "$FEATURES"

step "cargo test"
cargo test --workspace --locked --no-fail-fast --features "$FEATURES"
