//! The default admission rules decided natively, without wasmtime: the oracle the wasm policy
//! is tested and benchmarked against (`tests/policy.rs`, `benches/policy.rs`). The ingress
//! itself always decides through the wasm policy.

use std::net::IpAddr;
use std::sync::Arc;

use policy::admission::{Admission, Agent, Invite, World};
use policy::{Host, RouteTransport};

use super::{Admit, Facts, Forward, ForwardRef, NextHop, Transport, Verdict};
use crate::config::Config;
use crate::sip::uri;

/// The native rules over a configuration's tenants.
pub struct NativeRules {
    world: World,
    /// The forward to each agent, by slot, as the wasm policy prepares them.
    forwards: Arc<[Forward]>,
    headers: Vec<String>,
}

impl NativeRules {
    /// The rules of `config`.
    pub fn new(config: &Config) -> Result<Self, String> {
        let world = World::new(config.tenants.clone(), config.denied).map_err(|e| e.to_string())?;
        let forwards = world
            .agents()
            .map(|(tenant, agent)| forward(&tenant.id, agent))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            world,
            forwards,
            headers: config.policy.headers.clone(),
        })
    }
}

fn transport(route: RouteTransport) -> Transport {
    match route {
        RouteTransport::Udp => Transport::Udp,
        RouteTransport::Tcp => Transport::Tcp,
    }
}

fn hop_host(host: &Host) -> String {
    match host {
        Host::Ipv6(address) => address.to_string(),
        other => other.to_string(),
    }
}

fn forward(tenant: &str, agent: &Agent) -> Result<Forward, String> {
    let mut headers = Vec::new();
    let next_hop = match &agent.route {
        Some(route) => {
            let (host, port) = route.next_hop();
            if let Some(proxy) = &route.proxy {
                let tcp = if route.transport() == RouteTransport::Tcp {
                    ";transport=tcp"
                } else {
                    ""
                };
                headers.push((
                    "Route".to_owned(),
                    format!("<sip:{}:{port}{tcp};lr>", proxy.host),
                ));
            }
            NextHop {
                host: hop_host(host),
                port,
                transport: transport(route.transport()),
            }
        }
        None => {
            let Some(target) = uri::host_port(&agent.uri) else {
                return Err(format!(
                    "tenant {tenant} agent {} uri {:?}: not a sip: URI with a host",
                    agent.id, agent.uri
                ));
            };
            let tcp =
                uri::param(&agent.uri, "transport").is_some_and(|t| t.eq_ignore_ascii_case("tcp"));
            NextHop {
                host: hop_host(&target.host),
                port: target.port_or(policy::route::DEFAULT_PORT),
                transport: if tcp { Transport::Tcp } else { Transport::Udp },
            }
        }
    };
    if let Some(user) = &agent.dest_user {
        headers.push(("X-Dest-User".to_owned(), user.as_str().to_owned()));
    }
    Ok(Forward {
        tenant: tenant.to_owned(),
        agent_id: agent.id.clone(),
        agent_uri: agent.uri.clone(),
        next_hop,
        headers,
    })
}

impl Admit for NativeRules {
    fn decide(&mut self, facts: Facts) -> Verdict {
        let invite = Invite {
            source: facts.source().ip(),
            from_user: facts.from_user(),
            request_user: facts.request_user(),
        };
        match self.world.decide(&invite) {
            Admission::Forward { slot } => match ForwardRef::new(&self.forwards, slot as usize) {
                Some(forward) => Verdict::Forward(forward),
                None => unreachable!("the world's slots index its agents"),
            },
            Admission::Reject { code, reason } => Verdict::Reject {
                code,
                reason: reason.into(),
            },
            Admission::Drop { reason } => Verdict::Drop {
                reason: reason.into(),
            },
        }
    }

    fn knows_source(&self, source: IpAddr) -> bool {
        self.world.knows_source(source)
    }

    fn wants_header(&self, name: &str) -> bool {
        self.headers.iter().any(|wanted| wanted == name)
    }
}
