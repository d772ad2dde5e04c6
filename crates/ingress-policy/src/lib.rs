//! trunkguard's default admission policy for initial INVITEs, as a wasm component
//! (`wasm32-wasip2`, world `trunkguard:ingress-policy/ingress-policy` in `wit/`).
//!
//! The rules are those of [`policy::admission`]; this crate translates the component's
//! snapshot into a [`World`] and the decision into a [`Verdict`]. It is also the library other
//! policies are written with: [`Rules`] applies the default rules and exposes the snapshot's
//! settings, and [`export_policy!`] exports a policy type. `crates/country-policy` is such a
//! policy.
//!
//! An admitted INVITE is answered `prepared(slot)`: `load` returns one forward per agent, in
//! slot order, which the ingress checks and keeps, so a decision crosses the component boundary
//! with a number instead of the agent URI, next hop and header fields.
//!
//! ```ignore
//! struct MyPolicy;
//! impl ingress_policy::bindings::Guest for MyPolicy { /* load, decide */ }
//! ingress_policy::export_policy!(MyPolicy);
//! ```

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use policy::admission::{Admission, Agent, DeniedSource, Invite as Facts, Tenant, World};
use policy::route::RouteTransport;
use policy::{Host, HostPort};

/// The component bindings generated from `wit/ingress-policy.wit`.
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "ingress-policy",
        pub_export_macro: true,
        export_macro_name: "export_policy",
        default_bindings_module: "ingress_policy::bindings",
    });
}

use bindings::trunkguard::ingress_policy::types::{
    self as wit, Forward, Header, Invite, IpAddress, NextHop, Present, Reject, Snapshot, Transport,
    Verdict,
};
pub use bindings::{Guest, export_policy};

/// The default rules over a loaded snapshot.
pub struct Rules {
    world: World,
    settings: Vec<(String, String)>,
}

fn agent_of(tenant: &str, raw: wit::Agent) -> Result<Agent, String> {
    let context = |field: &str| format!("tenant {tenant} agent {} {field}", raw.id);
    let number = raw
        .number
        .map(|n| n.parse().map_err(|e| format!("{}: {e}", context("number"))))
        .transpose()?;
    let dest_user = match raw.dest_user {
        Some(value) => policy::dest_user::DestUser::parse(&value)
            .map_err(|e| format!("{}: {e}", context("dest-user")))?,
        None => None,
    };
    let route = raw
        .route
        .map(|r| r.parse().map_err(|e| format!("{}: {e}", context("route"))))
        .transpose()?;
    Ok(Agent {
        id: raw.id,
        username: raw.username,
        number,
        uri: raw.uri,
        dest_user,
        route,
    })
}

fn tenant_of(raw: wit::Tenant) -> Result<Tenant, String> {
    let access = raw
        .access
        .iter()
        .map(|entry| {
            entry
                .parse()
                .map_err(|e| format!("tenant {} access {entry:?}: {e}", raw.id))
        })
        .collect::<Result<_, _>>()?;
    let agents = raw
        .agents
        .into_iter()
        .map(|agent| agent_of(&raw.id, agent))
        .collect::<Result<_, _>>()?;
    Ok(Tenant {
        id: raw.id,
        access,
        agents,
    })
}

/// The host and port of a SIP URI (`sip:user@host:port;params`), and its `transport`.
fn uri_target(uri: &str) -> Option<(HostPort, RouteTransport)> {
    let rest = uri.strip_prefix("sip:")?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let end = rest.find([';', '?', '>']).unwrap_or(rest.len());
    let target = rest[..end].parse().ok()?;
    let transport = rest[end..]
        .split(';')
        .filter_map(|param| param.split_once('='))
        .find(|(name, _)| name.eq_ignore_ascii_case("transport"))
        .map_or(RouteTransport::Udp, |(_, value)| {
            if value.eq_ignore_ascii_case("tcp") {
                RouteTransport::Tcp
            } else {
                RouteTransport::Udp
            }
        });
    Some((target, transport))
}

fn transport_of(transport: RouteTransport) -> Transport {
    match transport {
        RouteTransport::Udp => Transport::Udp,
        RouteTransport::Tcp => Transport::Tcp,
    }
}

/// The host part as it goes in a SIP URI or a next hop (IPv6 without brackets for the hop).
fn hop_host(host: &Host) -> String {
    match host {
        Host::Ipv6(address) => address.to_string(),
        other => other.to_string(),
    }
}

/// The forward to `agent`, or why there is none (an agent URI without a host).
fn forward_to(tenant: &str, agent: &Agent) -> Result<Forward, String> {
    let (host, port, transport, route) = match &agent.route {
        Some(route) => {
            let (host, port) = route.next_hop();
            let transport = route.transport();
            let pushed = route.proxy.as_ref().map(|proxy| {
                let mut value = format!("<sip:{}:{port}", proxy.host);
                if transport == RouteTransport::Tcp {
                    value.push_str(";transport=tcp");
                }
                value.push_str(";lr>");
                value
            });
            (host.clone(), port, transport, pushed)
        }
        None => match uri_target(&agent.uri) {
            Some((target, transport)) => (
                target.host.clone(),
                target.port_or(policy::route::DEFAULT_PORT),
                transport,
                None,
            ),
            None => {
                return Err(format!(
                    "tenant {tenant} agent {} uri {:?}: not a sip: URI with a host",
                    agent.id, agent.uri
                ));
            }
        },
    };
    let mut headers = Vec::new();
    if let Some(route) = route {
        headers.push(Header {
            name: "Route".into(),
            value: route,
        });
    }
    if let Some(user) = &agent.dest_user {
        headers.push(Header {
            name: "X-Dest-User".into(),
            value: user.as_str().into(),
        });
    }
    Ok(Forward {
        tenant: tenant.into(),
        agent_id: agent.id.clone(),
        agent_uri: agent.uri.clone(),
        next_hop: NextHop {
            host: hop_host(&host),
            port,
            transport: transport_of(transport),
        },
        headers,
    })
}

/// The text facts of an INVITE, read from the one string they travel in (see the WIT
/// `invite`). An offset out of place (which the ingress never sends) reads as an empty fact.
impl Invite {
    fn fact(&self, start: u32, end: u32) -> &str {
        self.text
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    /// The packet's source IP address.
    pub fn source(&self) -> IpAddr {
        match self.source_address {
            IpAddress::Ipv4(bits) => IpAddr::V4(Ipv4Addr::from_bits(bits)),
            IpAddress::Ipv6((high, low)) => IpAddr::V6(Ipv6Addr::from_bits(
                u128::from(high) << 64 | u128::from(low),
            )),
        }
    }

    /// The Request-URI.
    pub fn request_uri(&self) -> &str {
        self.fact(0, self.request_uri_end)
    }

    /// The Request-URI's user part (empty when it has none).
    pub fn request_user(&self) -> &str {
        self.fact(self.request_uri_end, self.request_user_end)
    }

    /// The From URI's user part.
    pub fn from_user(&self) -> &str {
        self.fact(self.request_user_end, self.from_user_end)
    }

    /// The From display name, unquoted.
    pub fn from_display_name(&self) -> Option<&str> {
        self.present
            .contains(Present::FROM_DISPLAY_NAME)
            .then(|| self.fact(self.from_user_end, self.from_display_name_end))
    }

    /// The To URI's user part.
    pub fn to_user(&self) -> &str {
        self.fact(self.from_display_name_end, self.to_user_end)
    }

    /// The To display name, unquoted.
    pub fn to_display_name(&self) -> Option<&str> {
        self.present
            .contains(Present::TO_DISPLAY_NAME)
            .then(|| self.fact(self.to_user_end, self.to_display_name_end))
    }

    /// The header fields the ingress passes, as (canonical name, value), in received order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.text
            .get(self.to_display_name_end as usize..)
            .unwrap_or_default()
            .split_terminator("\r\n")
            .filter_map(|field| field.split_once(": "))
    }
}

impl Rules {
    /// Checks and indexes a snapshot.
    pub fn load(snapshot: Snapshot) -> Result<Self, String> {
        let tenants = snapshot
            .tenants
            .into_iter()
            .map(tenant_of)
            .collect::<Result<_, _>>()?;
        let denied = match snapshot.denied_source {
            wit::DeniedSource::Drop => DeniedSource::Drop,
            wit::DeniedSource::Forbid => DeniedSource::Forbid,
        };
        let world = World::new(tenants, denied).map_err(|e| e.to_string())?;
        Ok(Self {
            world,
            settings: snapshot.settings,
        })
    }

    /// The forward to every agent, in slot order: what `load` returns, so that [`Rules::decide`]
    /// can answer `prepared(slot)`. Fails for an agent whose URI names no host.
    pub fn forwards(&self) -> Result<Vec<Forward>, String> {
        self.world
            .agents()
            .map(|(tenant, agent)| forward_to(&tenant.id, agent))
            .collect()
    }

    /// The tenant owning the agent a `prepared(slot)` verdict forwards to.
    pub fn tenant_of(&self, slot: u32) -> Option<&str> {
        self.world.agent(slot).map(|(tenant, _)| tenant.id.as_str())
    }

    /// The value of a `[policy.settings]` key.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Decides `invite` by the default rules; an admitted INVITE gets `prepared(slot)`, the
    /// slot of [`Rules::forwards`].
    pub fn decide(&self, invite: &Invite) -> Verdict {
        let facts = Facts {
            source: invite.source(),
            from_user: invite.from_user(),
            request_user: invite.request_user(),
        };
        match self.world.decide(&facts) {
            Admission::Forward { slot } => Verdict::Prepared(slot),
            Admission::Reject { code, reason } => Verdict::Reject(Reject {
                code,
                reason: reason.into(),
            }),
            Admission::Drop { reason } => Verdict::Drop(reason.into()),
        }
    }
}

thread_local! {
    static LOADED: RefCell<Option<Rules>> = const { RefCell::new(None) };
}

/// Keeps `rules` for the instance's next decisions.
pub fn keep(rules: Rules) {
    LOADED.with(|loaded| *loaded.borrow_mut() = Some(rules));
}

/// Runs `decide` with the loaded rules; before any load, every INVITE is refused 503.
pub fn with_rules(decide: impl FnOnce(&Rules) -> Verdict) -> Verdict {
    LOADED.with(|loaded| match loaded.borrow().as_ref() {
        Some(rules) => decide(rules),
        None => Verdict::Reject(Reject {
            code: 503,
            reason: "policy_not_loaded".into(),
        }),
    })
}

/// The default policy: [`Rules`] as they are.
pub struct DefaultPolicy;

impl Guest for DefaultPolicy {
    fn load(snapshot: Snapshot) -> Result<Vec<Forward>, String> {
        let rules = Rules::load(snapshot)?;
        let forwards = rules.forwards()?;
        keep(rules);
        Ok(forwards)
    }

    fn decide(invite: Invite) -> Verdict {
        with_rules(|rules| rules.decide(&invite))
    }
}

/// The component's exports; the generated glue is `unsafe` by nature (raw canonical ABI).
#[cfg(all(feature = "export", target_arch = "wasm32"))]
#[allow(unsafe_code)]
mod exports {
    use super::DefaultPolicy;
    crate::bindings::export_policy!(DefaultPolicy with_types_in crate::bindings);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_uris_give_the_next_hop() {
        let (target, transport) = uri_target("sip:sales@127.0.0.1:5090").expect("uri");
        assert_eq!(target.to_string(), "127.0.0.1:5090");
        assert_eq!(transport, RouteTransport::Udp);
        let (target, transport) = uri_target("sip:+1555@[::1]:5090;transport=TCP").expect("uri");
        assert_eq!(hop_host(&target.host), "::1");
        assert_eq!(target.port, Some(5090));
        assert_eq!(transport, RouteTransport::Tcp);
        assert!(uri_target("tel:+15550100001").is_none());
    }
}
