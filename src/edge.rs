//! Envoy running the demo edge (`envoy/envoy.yaml`) on free ports, for end-to-end tests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::http::{self, Connection, Response};
use crate::process::{Guarded, wait_until};

/// An Envoy running `envoy/envoy.yaml` with its ports and wasm path replaced.
pub struct Edge {
    /// The edge listener (envoy.yaml's 127.0.0.1:10000).
    pub listener: SocketAddr,
    /// The admin listener (envoy.yaml's 127.0.0.1:9901).
    pub admin: SocketAddr,
    /// The Envoy process, killed when the edge is dropped.
    pub process: Guarded,
    /// Envoy's log file.
    pub log: PathBuf,
}

/// A scratch directory for one run.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trunkguard-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    dir
}

/// The demo configuration (`envoy/envoy.yaml`) with `edits` applied, each of which must match exactly once.
pub fn envoy_config(edits: &[(&str, String)]) -> String {
    let path = crate::workspace_root().join("envoy").join("envoy.yaml");
    let mut config = std::fs::read_to_string(&path).expect("envoy/envoy.yaml is readable");
    for (from, to) in edits {
        assert_eq!(
            config.matches(from).count(),
            1,
            "{from:?} must occur once in envoy.yaml"
        );
        config = config.replace(from, to);
    }
    config
}

/// Starts Envoy (`--concurrency 2`) on `envoy/envoy.yaml` with free listener and admin ports,
/// `upstream_port` as the API upstream, the built filter, and `extra_edits`.
pub fn start_envoy(name: &str, upstream_port: u16, extra_edits: &[(&str, String)]) -> Edge {
    let (listener_port, admin_port) = (crate::free_port(), crate::free_port());
    let wasm = crate::wasm_artifact("edge_filter.wasm");
    let mut edits = vec![
        ("port_value: 10000", format!("port_value: {listener_port}")),
        ("port_value: 9901", format!("port_value: {admin_port}")),
        ("port_value: 8081", format!("port_value: {upstream_port}")),
        (
            "filename: target/wasm/edge_filter.wasm",
            format!("filename: {}", wasm.display()),
        ),
    ];
    edits.extend(extra_edits.iter().cloned());
    let dir = scratch_dir(name);
    let config = dir.join("envoy.yaml");
    std::fs::write(&config, envoy_config(&edits)).expect("config is writable");
    let log = dir.join("envoy.log");
    let process = Guarded::spawn(
        "envoy",
        Command::new(crate::envoy_binary())
            .arg("-c")
            .arg(&config)
            .args([
                "--concurrency",
                "2",
                "--disable-hot-restart",
                "--log-level",
                "info",
            ]),
        &log,
    );
    Edge {
        listener: SocketAddr::from(([127, 0, 0, 1], listener_port)),
        admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
        process,
        log,
    }
}

impl Edge {
    /// Waits (30 s at most) until Envoy's admin `/ready` answers 200; fails at once if Envoy
    /// exits.
    pub fn wait_ready(&mut self) {
        let admin = self.admin;
        let process = &mut self.process;
        let mut exited = false;
        let ready = wait_until(Duration::from_secs(30), || {
            exited = !process.is_running();
            exited
                || Connection::open(admin)
                    .and_then(|mut c| c.request("GET", "/ready", &[], None))
                    .is_ok_and(|r| r.status == 200)
        });
        assert!(
            ready && !exited,
            "Envoy did not become ready (exited: {exited}); log:\n{}",
            read(&self.log)
        );
    }

    /// Sends one request to the edge listener, tagged `x-case: case` for the logs.
    pub fn send(
        &self,
        case: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        let mut all = vec![("x-case", case)];
        all.extend_from_slice(headers);
        http::request(self.listener, method, path, &all, body)
    }

    /// Envoy's counters and gauges (`/stats`).
    pub fn stats(&self) -> BTreeMap<String, u64> {
        let text = http::request(self.admin, "GET", "/stats", &[], None).body;
        String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|l| l.split_once(": "))
            .filter_map(|(n, v)| Some((n.to_owned(), v.trim().parse().ok()?)))
            .collect()
    }
}

/// A file's text, or nothing.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
