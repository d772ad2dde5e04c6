//! trunkguard's default admission policy for initial INVITEs, as a wasm component
//! (`wasm32-wasip2`, world `trunkguard:ingress-policy/ingress-policy` in `wit/`).
//!
//! The rules are those of [`policy::admission`]; this crate translates the component's
//! snapshot into a [`World`] and the decision into a [`Verdict`]. It is also the library other
//! policies are written with: [`Rules`] applies the default rules and exposes the snapshot's
//! settings, and [`export_policy!`] exports a policy type. `crates/country-policy` is such a
//! policy.
//!
//! Verdicts are numbers: `load` prepares one forward per agent, in slot order, and the reason
//! labels (the default rules' and the policy's own, see [`Rules::with_reasons`]), which the
//! ingress checks once and keeps; an admitted INVITE is answered `forward(slot)` and a refused
//! one names its reason by index.
//!
//! ```ignore
//! struct MyPolicy;
//! impl ingress_policy::bindings::Guest for MyPolicy { /* load, decide */ }
//! ingress_policy::export_policy!(MyPolicy);
//! ```

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use policy::admission::{Admission, Agent, DeniedSource, Invite as Facts, Tenant, World};

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
    self as wit, Forward, Header, Invite, IpAddress, NextHop, Prepared, Present, Reject, Snapshot,
    Transport, Verdict,
};
pub use bindings::{Guest, export_policy};

/// The reasons of the default rules' refusals (`policy::admission`), first in every policy's
/// prepared reasons.
const RULE_REASONS: [&str; 3] = ["source_not_allowed", "from_not_e164", "unknown_agent"];

/// The default rules over a loaded snapshot.
pub struct Rules {
    world: World,
    settings: Vec<(String, String)>,
    /// The reason labels verdicts name by index: the rules' own, then the policy's.
    reasons: Vec<String>,
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
        contacts: raw.contacts,
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

/// The forward to `agent`, or why there is none (an agent URI without a host).
fn forward_to(tenant: &str, agent: &Agent) -> Result<Forward, String> {
    let hop = agent
        .next_hop()
        .map_err(|e| format!("tenant {tenant} {e}"))?;
    let mut headers = Vec::new();
    if let Some(route) = hop.route {
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
    // The one place the guest turns the rules' transport into the world's.
    let transport = match hop.transport {
        policy::Transport::Udp => Transport::Udp,
        policy::Transport::Tcp => Transport::Tcp,
    };
    Ok(Forward {
        tenant: tenant.into(),
        agent_id: agent.id.clone(),
        agent_uri: agent.uri.clone(),
        next_hop: NextHop {
            host: hop.host,
            port: hop.port,
            transport,
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

    /// Whether the INVITE came from the registrar of the binding its Request-URI names (see
    /// the WIT `present`).
    pub fn from_registrar(&self) -> bool {
        self.present.contains(Present::FROM_REGISTRAR)
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
            reasons: RULE_REASONS.map(str::to_owned).to_vec(),
        })
    }

    /// Adds the reason labels of the policy's own refusals (see [`Rules::reject`]).
    pub fn with_reasons(mut self, labels: &[&str]) -> Self {
        self.reasons
            .extend(labels.iter().map(|label| (*label).to_owned()));
        self
    }

    /// What `load` returns: the forward to every agent, in slot order, so that
    /// [`Rules::decide`] can answer `forward(slot)`, and the reason labels. Fails for an agent
    /// whose URI names no host.
    pub fn prepare(&self) -> Result<Prepared, String> {
        let forwards = self
            .world
            .agents()
            .map(|(tenant, agent)| forward_to(&tenant.id, agent))
            .collect::<Result<_, _>>()?;
        Ok(Prepared {
            forwards,
            reasons: self.reasons.clone(),
        })
    }

    fn reason(&self, label: &str) -> u32 {
        // A label not prepared gets an index the ingress has no reason for: it refuses the
        // verdict and fails closed, naming the index in its log.
        self.reasons
            .iter()
            .position(|known| known == label)
            .and_then(|index| u32::try_from(index).ok())
            .unwrap_or(u32::MAX)
    }

    /// A refusal with `code` (400 to 699) and the prepared reason `label`.
    pub fn reject(&self, code: u16, label: &str) -> Verdict {
        Verdict::Reject(Reject {
            code,
            reason: self.reason(label),
        })
    }

    /// A silent refusal for the prepared reason `label`.
    pub fn drop_silently(&self, label: &str) -> Verdict {
        Verdict::Drop(self.reason(label))
    }

    /// The tenant owning the agent a `forward(slot)` verdict forwards to.
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

    /// Decides `invite` by the default rules; an admitted INVITE gets `forward(slot)`, the slot
    /// of its agent's forward in [`Rules::prepare`].
    pub fn decide(&self, invite: &Invite) -> Verdict {
        let facts = Facts {
            source: invite.source(),
            from_user: invite.from_user(),
            request_user: invite.request_user(),
            from_registrar: invite.from_registrar(),
        };
        match self.world.decide(&facts) {
            Admission::Forward { slot } => Verdict::Forward(slot),
            Admission::Reject { code, reason } => self.reject(code, reason),
            Admission::Drop { reason } => self.drop_silently(reason),
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

/// Runs `decide` with the loaded rules. The ingress always loads an instance before it decides;
/// were it not loaded, the verdict would name a reason that does not exist, which the ingress
/// refuses (failing closed).
pub fn with_rules(decide: impl FnOnce(&Rules) -> Verdict) -> Verdict {
    LOADED.with(|loaded| match loaded.borrow().as_ref() {
        Some(rules) => decide(rules),
        None => Verdict::Reject(Reject {
            code: 503,
            reason: u32::MAX,
        }),
    })
}

/// The default policy: [`Rules`] as they are.
pub struct DefaultPolicy;

impl Guest for DefaultPolicy {
    fn load(snapshot: Snapshot) -> Result<Prepared, String> {
        let rules = Rules::load(snapshot)?;
        let prepared = rules.prepare()?;
        keep(rules);
        Ok(prepared)
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
    fn an_invites_text_facts_read_back() {
        let text = "sip:sales@192.0.2.10sales+15551230000PBXsalesX-Case: one\r\nX-Two: a: b\r\n";
        let invite = Invite {
            source_address: IpAddress::Ipv6((0x2001_0db8_0000_0000, 1)),
            source_port: 5070,
            transport: Transport::Udp,
            text: text.into(),
            request_uri_end: 20,
            request_user_end: 25,
            from_user_end: 37,
            from_display_name_end: 40,
            to_user_end: 45,
            to_display_name_end: 45,
            present: Present::FROM_DISPLAY_NAME,
        };
        assert_eq!(
            invite.source(),
            "2001:db8::1".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(invite.request_uri(), "sip:sales@192.0.2.10");
        assert_eq!(invite.request_user(), "sales");
        assert_eq!(invite.from_user(), "+15551230000");
        assert_eq!(invite.from_display_name(), Some("PBX"));
        assert_eq!(invite.to_user(), "sales");
        assert_eq!(invite.to_display_name(), None);
        let headers: Vec<_> = invite.headers().collect();
        assert_eq!(headers, [("X-Case", "one"), ("X-Two", "a: b")]);
        // Offsets out of place read as empty facts rather than panicking.
        let broken = Invite {
            request_user_end: 1000,
            ..invite
        };
        assert_eq!(broken.request_user(), "");
        assert_eq!(broken.from_user(), "");
    }
}
