//! cosigner-test-support: helpers that tests and benchmarks share and that no production
//! crate links. A dev-dependency only (and a dependency of the `cosigner-tests` harness).
//!
//! - [`swtpm`]: a private software TPM per test.

pub mod swtpm;
