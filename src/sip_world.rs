//! The SIP ingress's worlds for its tests and benchmarks: the tenants and agents of an ingress
//! configuration, built in code and written as its TOML, with the demo world's own (the
//! tenants of `crates/sip-ingress/src/demo.toml`, on ports the caller picks), scratch
//! directories, and a probe of whether a SIP server is up.

use std::fmt::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Whether a SIP server at `target` answers an OPTIONS over UDP within 200 ms (any answer:
/// it is up).
pub fn answers_options(target: SocketAddr) -> bool {
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let Ok(local) = socket.local_addr() else {
        return false;
    };
    let options = format!(
        "OPTIONS sip:{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-ready-{port}\r\n\
         From: <sip:probe@{local}>;tag=1\r\nTo: <sip:{target}>\r\nCall-ID: ready-{port}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        port = local.port()
    );
    let mut buffer = [0u8; 2048];
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .is_ok()
        && socket.send_to(options.as_bytes(), target).is_ok()
        && socket
            .recv_from(&mut buffer)
            .is_ok_and(|(n, _)| buffer[..n].starts_with(b"SIP/2.0 "))
}

/// The SIPp scenario `name` of the ingress's end-to-end tests (`crates/sip-ingress/tests/sipp/`)
/// written into `dir` with `checks` (ereg actions on what an agent receives) in place of its
/// `@CHECKS@`; the file is named for the checks' length, so differently checked copies of one
/// scenario can live side by side.
pub fn sipp_scenario(dir: &Path, name: &str, checks: &str) -> PathBuf {
    let template = crate::workspace_root()
        .join("crates")
        .join("sip-ingress")
        .join("tests")
        .join("sipp")
        .join(name);
    let text = std::fs::read_to_string(&template)
        .unwrap_or_else(|e| panic!("{}: {e}", template.display()))
        .replace("@CHECKS@", checks);
    let path = dir.join(format!("{}-{name}", checks.len()));
    std::fs::write(&path, text).expect("scenario written");
    path
}

/// A fresh directory for the test or benchmark `name` of `suite`, unique to this process.
pub fn scratch(suite: &str, name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("trunkguard-{suite}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory in the temp dir");
    dir
}

/// An agent of a tenant (`[[tenants.agents]]`).
#[derive(Debug, Clone)]
pub struct Agent {
    id: String,
    fields: Vec<(&'static str, String)>,
}

impl Agent {
    /// Agent `id` reached at `uri`.
    pub fn new(id: &str, uri: &str) -> Self {
        Self {
            id: id.to_owned(),
            fields: vec![("uri", uri.to_owned())],
        }
    }

    /// Agent `id`, whose SIP username is also `id`, reached at `uri`.
    pub fn named(id: &str, uri: &str) -> Self {
        Self::new(id, uri).with("username", id)
    }

    /// With the setting `key = "value"` (`number`, `dest_user`, `route`...).
    pub fn with(mut self, key: &'static str, value: &str) -> Self {
        self.fields.push((key, value.to_owned()));
        self
    }
}

/// A tenant (`[[tenants]]`): its access list and agents.
#[derive(Debug, Clone)]
pub struct Tenant {
    id: String,
    access: Vec<String>,
    agents: Vec<Agent>,
}

impl Tenant {
    /// Tenant `id`, allowing INVITEs from `access`.
    pub fn new(id: &str, access: &[&str]) -> Self {
        Self {
            id: id.to_owned(),
            access: access.iter().map(|a| (*a).to_owned()).collect(),
            agents: Vec::new(),
        }
    }

    /// With `agent`.
    pub fn agent(mut self, agent: Agent) -> Self {
        self.agents.push(agent);
        self
    }
}

/// The demo world's tenants: `demo` (callers from 127.0.0.1 and ::1; agent `sales` with an
/// X-Dest-User, agent `support` behind the proxy at 127.0.0.1:`proxy_port`) and `acme`
/// (callers from 127.0.0.4; agent `acme-bot`), every agent at 127.0.0.1:`agent_port`.
pub fn demo_tenants(agent_port: u16, proxy_port: u16) -> Vec<Tenant> {
    let at = |user: &str| format!("sip:{user}@127.0.0.1:{agent_port}");
    let route = format!("127.0.0.1:{agent_port};transport=udp;proxyAddress=127.0.0.1:{proxy_port}");
    vec![
        Tenant::new("demo", &["127.0.0.1/32", "::1/128"])
            .agent(
                Agent::named("sales", &at("sales"))
                    .with("number", "+15550100001")
                    .with("dest_user", "sales.desk"),
            )
            .agent(
                Agent::named("support", &at("support"))
                    .with("number", "+15550100002")
                    .with("route", &route),
            ),
        Tenant::new("acme", &["127.0.0.4/32"])
            .agent(Agent::new("acme-bot", &at("acme-bot")).with("number", "+15550100003")),
    ]
}

/// `tenants` as ingress configuration text, to follow every other table.
pub fn tenants_toml(tenants: &[Tenant]) -> String {
    let mut text = String::new();
    for tenant in tenants {
        let access: Vec<String> = tenant.access.iter().map(|a| format!("{a:?}")).collect();
        let _ = writeln!(
            text,
            "\n[[tenants]]\nid = {:?}\naccess = [{}]",
            tenant.id,
            access.join(", ")
        );
        for agent in &tenant.agents {
            let _ = writeln!(text, "\n[[tenants.agents]]\nid = {:?}", agent.id);
            for (key, value) in &agent.fields {
                let _ = writeln!(text, "{key} = {value:?}");
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_are_written_as_the_ingress_reads_them() {
        let text = tenants_toml(&[Tenant::new("t", &["127.0.0.1/32"])
            .agent(Agent::named("a", "sip:a@127.0.0.1:5090").with("number", "+15550100001"))]);
        assert_eq!(
            text,
            "\n[[tenants]]\nid = \"t\"\naccess = [\"127.0.0.1/32\"]\n\n[[tenants.agents]]\n\
             id = \"a\"\nuri = \"sip:a@127.0.0.1:5090\"\nusername = \"a\"\nnumber = \"+15550100001\"\n"
        );
    }
}
