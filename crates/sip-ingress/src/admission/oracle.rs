//! The default admission rules decided natively, without wasmtime: the oracle the wasm policy
//! is tested and benchmarked against (`tests/policy.rs`, `benches/policy.rs`). The ingress
//! itself always decides through the wasm policy.

use std::net::IpAddr;
use std::sync::Arc;

use policy::admission::{Admission, Agent, Invite, World};

use super::config::AdmissionConfig;
use super::{Admit, Facts, Forward, ForwardRef, NextHop, Verdict};

/// The native rules over a configuration's tenants.
pub struct NativeRules {
    world: World,
    /// The forward to each agent, by slot, as the wasm policy prepares them.
    forwards: Arc<[Forward]>,
    headers: Vec<String>,
}

impl NativeRules {
    /// The rules of `config`.
    pub fn new(config: &AdmissionConfig) -> Result<Self, String> {
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

fn forward(tenant: &str, agent: &Agent) -> Result<Forward, String> {
    let hop = agent
        .next_hop()
        .map_err(|e| format!("tenant {tenant} {e}"))?;
    let mut headers = Vec::new();
    if let Some(route) = hop.route {
        headers.push(("Route".to_owned(), route));
    }
    if let Some(user) = &agent.dest_user {
        headers.push(("X-Dest-User".to_owned(), user.as_str().to_owned()));
    }
    Ok(Forward {
        tenant: tenant.to_owned(),
        agent_id: agent.id.clone(),
        agent_uri: agent.uri.clone(),
        next_hop: NextHop {
            host: hop.host,
            port: hop.port,
            transport: hop.transport,
        },
        headers,
    })
}

impl Admit for NativeRules {
    fn decide(&mut self, facts: Facts) -> Verdict {
        let invite = Invite {
            source: facts.source().ip(),
            from_user: facts.from_user(),
            request_user: facts.request_user(),
            from_registrar: facts.from_registrar(),
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
