//! Support for trunkguard's end-to-end tests (`tests/`) and benchmarks (`benches/`).
//!
//! The product lives in `crates/`; this package only owns the tests that cross crate and process
//! boundaries, and the helpers they share: locating tools and artifacts, starting processes that
//! are always stopped, a small HTTP/1.1 client, an upstream that records what it receives, and
//! the SIP ingress's test worlds ([`sip_world`]).

pub mod edge;
pub mod http;
pub mod process;
pub mod sip_world;
pub mod upstream;

use std::net::TcpListener;
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

/// Where `cargo xtask wasm` puts the wasm artifacts: `$TRUNKGUARD_WASM_DIR`, else `target/wasm`.
pub fn wasm_dir() -> PathBuf {
    match std::env::var_os("TRUNKGUARD_WASM_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("target").join("wasm"),
    }
}

/// A built wasm artifact, with a message saying how to build it when it is missing.
pub fn wasm_artifact(file: &str) -> PathBuf {
    let path = wasm_dir().join(file);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo xtask test` (it builds the wasm artifacts)",
        path.display()
    );
    path
}

/// The Envoy binary: `$TRUNKGUARD_ENVOY`, else the one `cargo xtask` installs in `.venv`.
pub fn envoy_binary() -> PathBuf {
    let path = match std::env::var_os("TRUNKGUARD_ENVOY") {
        Some(path) => PathBuf::from(path),
        None => workspace_root().join(".venv").join("bin").join("envoy"),
    };
    assert!(
        path.exists(),
        "Envoy is missing at {}: run the tests with `cargo xtask test` (it installs Envoy)",
        path.display()
    );
    path
}

/// The edge filter's configuration as embedded in `envoy/envoy.yaml` (the demo world), so tests
/// and benchmarks use exactly what the README tells users to run.
pub fn demo_filter_configuration() -> String {
    let path = workspace_root().join("envoy").join("envoy.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let start = yaml
        .find("value: |")
        .map(|at| at + "value: |".len())
        .expect("envoy.yaml embeds the filter configuration after `value: |`");
    let block: Vec<&str> = yaml[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with("- name:"))
        .collect();
    block.join("\n")
}

/// A loopback UDP port that was free a moment ago.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("the loopback interface can bind an ephemeral port")
}

/// A loopback port that was free a moment ago for both TCP and UDP, for a SIP listener that
/// takes both: a port free for UDP may be the local end of some TCP connection.
pub fn free_sip_port() -> u16 {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0")
            .expect("the loopback interface can bind an ephemeral port");
        let port = listener
            .local_addr()
            .expect("a bound listener has an address")
            .port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both TCP and UDP in 100 tries");
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the loopback interface can bind an ephemeral port")
}

/// How long a benchmark measures each configuration: `TRUNKGUARD_BENCH_SECONDS` (10 unless
/// set), and whether that makes it a smoke run (below 3 s, as `cargo xtask test` runs
/// benchmarks: the harness works and every answer is right, goals are reported, not enforced).
pub fn bench_seconds() -> (u64, bool) {
    let seconds = std::env::var("TRUNKGUARD_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    (seconds, seconds < 3)
}
