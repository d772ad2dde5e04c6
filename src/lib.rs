//! Support for trunkguard's end-to-end tests (`tests/`) and benchmarks (`benches/`).
//!
//! The product lives in `crates/`; this package only owns the tests that cross crate and process
//! boundaries, and the helpers they share.

use std::path::{Path, PathBuf};

/// The workspace root (where the top-level `Cargo.toml` is).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The project's `shared/` folder (seeds, conformance material): `$TRUNKGUARD_SHARED` when set,
/// else `../shared` beside the checkout, which is where CI and every developer have it.
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("TRUNKGUARD_SHARED") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("..").join("shared"),
    }
}
