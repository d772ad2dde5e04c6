//! Admission of initial INVITEs at the SIP ingress (seed 001, DESIGN.md "SIP ingress"):
//!
//! 1. the source address must be in the access list of the tenant that owns the called agent,
//!    else the INVITE is dropped silently (or answered 403, configurable): scanners learn
//!    nothing. An INVITE for an unknown agent is dropped unless its source is in some tenant's
//!    list, in which case the caller is told 404;
//! 2. the From user must be an E.164 number, else 404 Not Found (seed 001: "The SIP From header
//!    must contain a valid E.164 phone number. Using any other format will result in a SIP 404");
//! 3. the Request-URI user names the agent by SIP username or E.164 number (seed 001: "You can
//!    use either the agent's username or phone number in the URI"), else 404;
//! 4. the INVITE goes to the agent URI, with X-Dest-User when the agent has one and through the
//!    agent's route when it has a `proxyAddress`.
//!
//! An agent registered to a customer's PBX (seeds 000, 002) is also named by the user part of
//! each of its bindings' Contacts, an unguessable token: an INVITE to it came through that
//! binding, and is allowed from the addresses the binding registered to (the ingress tells, as
//! [`Invite::from_registrar`]: registering is the trust, as for any phone registered to a PBX)
//! as well as from the tenant's access list. Rules 2 to 4 apply as to any other call.
//!
//! The per-source flood limit comes before all of this and lives in the ingress, which owns the
//! clock.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;

use foldhash::SharedSeed;
use foldhash::fast::SeedableRandomState;

use crate::access_list::{AccessEntry, AccessList};
use crate::dest_user::DestUser;
use crate::e164::E164;
use crate::host::{Host, HostPort};
use crate::route::{DEFAULT_PORT, Route, Transport};

/// An agent as the ingress sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// The agent's id.
    pub id: String,
    /// Its SIP username, if it has one.
    pub username: Option<String>,
    /// Its phone number, if it has one.
    pub number: Option<E164>,
    /// Where its calls go, e.g. `sip:sales@127.0.0.1:5090`.
    pub uri: String,
    /// The X-Dest-User value to send, if set.
    pub dest_user: Option<DestUser>,
    /// The route (transport, proxy) to reach it, if not the default.
    pub route: Option<Route>,
    /// The user parts of its registration bindings' Contacts: an INVITE to one of them came
    /// through that binding.
    pub contacts: Vec<String>,
}

/// Where an INVITE forwarded to an agent is sent: the agent's route when it has one, else the
/// host, port and `transport` of its URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    /// An IP address literal (IPv6 without brackets) or a host name.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The transport.
    pub transport: Transport,
    /// The `Route` to push, naming the route's `proxyAddress`, when it has one.
    pub route: Option<String>,
}

impl Agent {
    /// Where INVITEs to this agent go; an error when it has no route and its URI is not a
    /// `sip:` URI with a host.
    pub fn next_hop(&self) -> Result<NextHop, String> {
        let Some(route) = &self.route else {
            let (target, transport) = uri_target(&self.uri).ok_or_else(|| {
                format!(
                    "agent {} uri {:?}: not a sip: URI with a host",
                    self.id, self.uri
                )
            })?;
            return Ok(NextHop {
                host: hop_host(&target.host),
                port: target.port_or(DEFAULT_PORT),
                transport,
                route: None,
            });
        };
        let (host, port) = route.next_hop();
        let transport = route.transport();
        let pushed = route.proxy.as_ref().map(|proxy| match transport {
            Transport::Tcp => format!("<sip:{}:{port};transport=tcp;lr>", proxy.host),
            Transport::Udp => format!("<sip:{}:{port};lr>", proxy.host),
        });
        Ok(NextHop {
            host: hop_host(host),
            port,
            transport,
            route: pushed,
        })
    }
}

/// The host and port of a SIP URI (`sip:user@host:port;params`), and its `transport`.
fn uri_target(uri: &str) -> Option<(HostPort, Transport)> {
    let rest = uri.strip_prefix("sip:")?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let end = rest.find([';', '?', '>']).unwrap_or(rest.len());
    let target = rest[..end].parse().ok()?;
    let tcp = rest[end..]
        .split(';')
        .filter_map(|param| param.split_once('='))
        .any(|(name, value)| {
            name.eq_ignore_ascii_case("transport") && value.eq_ignore_ascii_case("tcp")
        });
    let transport = if tcp { Transport::Tcp } else { Transport::Udp };
    Some((target, transport))
}

/// The host part as a next hop names it: IPv6 without brackets.
fn hop_host(host: &Host) -> String {
    match host {
        Host::Ipv6(address) => address.to_string(),
        other => other.to_string(),
    }
}

/// A tenant: its access list and its agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// The tenant id (what the edge sets in `x-tenant-id`).
    pub id: String,
    /// The addresses allowed to send it INVITEs.
    pub access: Vec<AccessEntry>,
    /// Its agents.
    pub agents: Vec<Agent>,
}

/// What to do with an INVITE whose source is not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeniedSource {
    /// Send nothing back (the default).
    #[default]
    Drop,
    /// Answer 403 Forbidden.
    Forbid,
}

/// The facts of one initial INVITE that admission looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invite<'a> {
    /// The packet's source address.
    pub source: IpAddr,
    /// The user part of the From URI.
    pub from_user: &'a str,
    /// The user part of the Request-URI.
    pub request_user: &'a str,
    /// Whether the source is an address that the binding whose Contact the Request-URI names
    /// registered to (its registrar, or the registrar's proxy).
    pub from_registrar: bool,
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Forward to the agent in this slot: its place among all agents, in configuration order
    /// (see [`World::agents`]); [`World::agent`] finds it, and callers may keep per-agent data
    /// beside the world. A number rather than a reference, so that deciding reads no more of
    /// the world than it must.
    Forward {
        /// The agent's slot.
        slot: u32,
    },
    /// Answer with this status.
    Reject {
        /// 403 or 404.
        code: u16,
        /// Why, for logs and metrics (a fixed label).
        reason: &'static str,
    },
    /// Send nothing.
    Drop {
        /// Why, for logs and metrics (a fixed label).
        reason: &'static str,
    },
}

/// Why a set of tenants cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorldError(pub String);

impl std::fmt::Display for WorldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WorldError {}

/// Where a called agent is: its tenant and slot (its place in the tenant follows from the
/// tenant's first slot).
#[derive(Debug, Clone, Copy)]
struct Called {
    tenant: u32,
    slot: u32,
}

/// Tenants indexed for admission: one hash lookup finds the called agent, one binary search
/// checks the source.
#[derive(Debug, Clone)]
pub struct World {
    tenants: Vec<Tenant>,
    access: Vec<AccessList>,
    any_access: AccessList,
    /// Username or number -> the agent's tenant and slot. Hashed with
    /// foldhash, several times faster than the standard SipHash on short names: callers only
    /// look names up in this table, which the operator's configuration fills, so they cannot
    /// lengthen its probe sequences; the seed is random all the same.
    agents: HashMap<String, Called, SeedableRandomState>,
    /// Contact user (a binding's token) -> the agent's tenant and slot.
    contacts: HashMap<String, Called, SeedableRandomState>,
    /// The slot of each tenant's first agent.
    first_slot: Vec<u32>,
    denied: DeniedSource,
}

impl World {
    /// Indexes `tenants`. Two agents may not share a username or a number, across tenants too,
    /// since the Request-URI alone must name one agent; slots are `u32`, which bounds the
    /// number of agents.
    pub fn new(tenants: Vec<Tenant>, denied: DeniedSource) -> Result<Self, WorldError> {
        let agent_count: usize = tenants.iter().map(|t| t.agents.len()).sum();
        if u32::try_from(agent_count).is_err() || u32::try_from(tenants.len()).is_err() {
            return Err(WorldError(format!(
                "{} tenants with {agent_count} agents: at most {} of each are supported",
                tenants.len(),
                u32::MAX
            )));
        }
        // The casts below cannot truncate: both counts were checked above.
        let first_slot: Vec<u32> = tenants
            .iter()
            .scan(0u32, |next, tenant| {
                let first = *next;
                *next += tenant.agents.len() as u32;
                Some(first)
            })
            .collect();
        let seed = RandomState::new().build_hasher().finish();
        let hasher = SeedableRandomState::with_seed(seed, SharedSeed::global_fixed());
        let mut agents = HashMap::with_hasher(hasher.clone());
        let mut contacts = HashMap::with_hasher(hasher);
        for (t, tenant) in tenants.iter().enumerate() {
            for (a, agent) in tenant.agents.iter().enumerate() {
                let called = Called {
                    tenant: t as u32,
                    slot: first_slot[t] + a as u32,
                };
                let names = agent
                    .username
                    .iter()
                    .cloned()
                    .chain(agent.number.iter().map(|n| n.as_str().to_owned()));
                for name in names {
                    if let Some(other) = agents.insert(name.clone(), called) {
                        let owner = other.tenant as usize;
                        let other_agent = (other.slot - first_slot[owner]) as usize;
                        let owner = &tenants[owner];
                        return Err(WorldError(format!(
                            "{name} names both agent {} of tenant {} and agent {} of tenant {}",
                            owner.agents[other_agent].id, owner.id, agent.id, tenant.id
                        )));
                    }
                }
                for contact in &agent.contacts {
                    if contacts.insert(contact.clone(), called).is_some() {
                        return Err(WorldError(format!(
                            "the contact {contact} of agent {} of tenant {} is another's too",
                            agent.id, tenant.id
                        )));
                    }
                }
            }
        }
        let access = tenants.iter().map(|t| AccessList::new(&t.access)).collect();
        let any_access = AccessList::new(tenants.iter().flat_map(|t| t.access.iter()));
        Ok(Self {
            tenants,
            access,
            any_access,
            agents,
            contacts,
            first_slot,
            denied,
        })
    }

    /// Whether any tenant allows `source` (a caller that may be told why it is refused).
    pub fn knows_source(&self, source: IpAddr) -> bool {
        self.any_access.contains(source)
    }

    /// The tenants.
    pub fn tenants(&self) -> &[Tenant] {
        &self.tenants
    }

    /// Every agent with its tenant, in slot order (see [`Admission::Forward`]).
    pub fn agents(&self) -> impl Iterator<Item = (&Tenant, &Agent)> {
        self.tenants
            .iter()
            .flat_map(|tenant| tenant.agents.iter().map(move |agent| (tenant, agent)))
    }

    /// The agent in `slot`, with its tenant.
    pub fn agent(&self, slot: u32) -> Option<(&Tenant, &Agent)> {
        // Tenants without agents share their first slot with the next tenant, which comes
        // after them: the last tenant starting at or before `slot` is the owner.
        let owner = self
            .first_slot
            .partition_point(|&first| first <= slot)
            .checked_sub(1)?;
        let tenant = self.tenants.get(owner)?;
        let agent = tenant
            .agents
            .get((slot - self.first_slot[owner]) as usize)?;
        Some((tenant, agent))
    }

    fn denied(&self) -> Admission {
        match self.denied {
            DeniedSource::Drop => Admission::Drop {
                reason: "source_not_allowed",
            },
            DeniedSource::Forbid => Admission::Reject {
                code: 403,
                reason: "source_not_allowed",
            },
        }
    }

    /// Decides one initial INVITE.
    pub fn decide(&self, invite: &Invite<'_>) -> Admission {
        let (called, through_binding) = match self.agents.get(invite.request_user) {
            Some(called) => (Some(*called), false),
            None => (self.contacts.get(invite.request_user).copied(), true),
        };
        let allowed = match called {
            Some(_) if through_binding && invite.from_registrar => true,
            Some(called) => self.access[called.tenant as usize].contains(invite.source),
            None => self.any_access.contains(invite.source),
        };
        if !allowed {
            return self.denied();
        }
        if E164::check(invite.from_user).is_err() {
            return Admission::Reject {
                code: 404,
                reason: "from_not_e164",
            };
        }
        match called {
            Some(called) => Admission::Forward { slot: called.slot },
            None => Admission::Reject {
                code: 404,
                reason: "unknown_agent",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_uri_gives_the_next_hop_and_a_route_overrides_it() {
        let agent = |uri| agent("a", Some("a"), "+15550100000", uri);
        let hop = agent("sip:sales@127.0.0.1:5090").next_hop().expect("hop");
        assert_eq!((hop.host.as_str(), hop.port), ("127.0.0.1", 5090));
        assert_eq!((hop.transport, hop.route), (Transport::Udp, None));
        let hop = agent("sip:+1555@[::1]:5090;transport=TCP")
            .next_hop()
            .expect("hop");
        assert_eq!((hop.host.as_str(), hop.port), ("::1", 5090));
        assert_eq!(hop.transport, Transport::Tcp);
        assert_eq!(
            agent("tel:+15550100001").next_hop(),
            Err("agent a uri \"tel:+15550100001\": not a sip: URI with a host".to_owned())
        );
        let routed = Agent {
            route: Some(
                "10.0.0.1;transport=tcp;proxyAddress=10.0.0.2:5070"
                    .parse()
                    .expect("route"),
            ),
            ..agent("sip:sales@pbx.example")
        };
        let hop = routed.next_hop().expect("hop");
        assert_eq!((hop.host.as_str(), hop.port), ("10.0.0.2", 5070));
        assert_eq!(hop.transport, Transport::Tcp);
        assert_eq!(
            hop.route.as_deref(),
            Some("<sip:10.0.0.2:5070;transport=tcp;lr>")
        );
    }

    fn entry(s: &str) -> AccessEntry {
        s.parse().expect("entry")
    }

    fn agent(id: &str, username: Option<&str>, number: &str, uri: &str) -> Agent {
        Agent {
            id: id.into(),
            username: username.map(Into::into),
            number: Some(number.parse().expect("number")),
            uri: uri.into(),
            dest_user: None,
            route: None,
            contacts: Vec::new(),
        }
    }

    /// The demo world of issue 4.
    fn demo(denied: DeniedSource) -> World {
        let mut sales = agent(
            "sales",
            Some("sales"),
            "+15550100001",
            "sip:sales@127.0.0.1:5090",
        );
        sales.dest_user = DestUser::parse("sales.desk").expect("valid");
        let mut support = agent(
            "support",
            Some("support"),
            "+15550100002",
            "sip:support@127.0.0.1:5090",
        );
        support.route = Some(
            "127.0.0.1:5090;transport=udp;proxyAddress=127.0.0.1:5091"
                .parse()
                .expect("route"),
        );
        World::new(
            vec![
                Tenant {
                    id: "demo".into(),
                    access: vec![entry("127.0.0.1/32"), entry("::1/128")],
                    agents: vec![sales, support],
                },
                Tenant {
                    id: "acme".into(),
                    access: vec![entry("127.0.0.4/32")],
                    agents: vec![agent(
                        "acme-bot",
                        None,
                        "+15550100003",
                        "sip:acme-bot@127.0.0.1:5090",
                    )],
                },
            ],
            denied,
        )
        .expect("valid world")
    }

    fn invite<'a>(source: &str, from: &'a str, to: &'a str) -> Invite<'a> {
        Invite {
            source: source.parse().expect("ip"),
            from_user: from,
            request_user: to,
            from_registrar: false,
        }
    }

    fn forwarded_to(world: &World, admission: Admission) -> String {
        match admission {
            Admission::Forward { slot } => world.agent(slot).expect("agent").1.id.clone(),
            other => panic!("not forwarded: {other:?}"),
        }
    }

    // seed 001: "You can use either the agent's username or phone number in the URI".
    #[test]
    fn agents_are_reached_by_username_or_number() {
        let world = demo(DeniedSource::Drop);
        assert_eq!(
            forwarded_to(
                &world,
                world.decide(&invite("127.0.0.1", "+15551230000", "sales"))
            ),
            "sales"
        );
        assert_eq!(
            forwarded_to(
                &world,
                world.decide(&invite("::1", "+15551230000", "+15550100002"))
            ),
            "support"
        );
        assert_eq!(
            forwarded_to(
                &world,
                world.decide(&invite("127.0.0.4", "+15551230000", "+15550100003"))
            ),
            "acme-bot"
        );
    }

    // seed 001: "The SIP From header must contain a valid E.164 phone number ... SIP 404".
    #[test]
    fn a_non_e164_from_is_404() {
        let world = demo(DeniedSource::Drop);
        for from in ["alice", "15551230000", "+0123", ""] {
            assert_eq!(
                world.decide(&invite("127.0.0.1", from, "sales")),
                Admission::Reject {
                    code: 404,
                    reason: "from_not_e164"
                }
            );
        }
    }

    // seed 001: "Make sure all IPs sending SIP INVITEs are included in the access list".
    #[test]
    fn sources_outside_the_called_tenants_list_learn_nothing() {
        let world = demo(DeniedSource::Drop);
        let dropped = Admission::Drop {
            reason: "source_not_allowed",
        };
        assert_eq!(
            world.decide(&invite("127.0.0.2", "+15551230000", "sales")),
            dropped
        );
        // A caller allowed by acme calling demo's agent, and the reverse.
        assert_eq!(
            world.decide(&invite("127.0.0.4", "+15551230000", "sales")),
            dropped
        );
        assert_eq!(
            world.decide(&invite("127.0.0.1", "+15551230000", "+15550100003")),
            dropped
        );
        // Unknown agents: 404 only for sources some tenant allows.
        assert_eq!(
            world.decide(&invite("127.0.0.2", "+15551230000", "nobody")),
            dropped
        );
        assert_eq!(
            world.decide(&invite("127.0.0.1", "+15551230000", "nobody")),
            Admission::Reject {
                code: 404,
                reason: "unknown_agent"
            }
        );
        // The source check comes before the From check.
        assert_eq!(
            world.decide(&invite("127.0.0.2", "alice", "sales")),
            dropped
        );
    }

    #[test]
    fn denied_sources_can_be_answered_403() {
        let world = demo(DeniedSource::Forbid);
        assert_eq!(
            world.decide(&invite("127.0.0.2", "+15551230000", "sales")),
            Admission::Reject {
                code: 403,
                reason: "source_not_allowed"
            }
        );
    }

    #[test]
    fn slots_number_agents_in_configuration_order() {
        let world = demo(DeniedSource::Drop);
        let slots: Vec<(String, u32)> = ["sales", "support", "+15550100003"]
            .iter()
            .map(|called| {
                let source = if called.starts_with('+') {
                    "127.0.0.4"
                } else {
                    "127.0.0.1"
                };
                match world.decide(&invite(source, "+15551230000", called)) {
                    Admission::Forward { slot } => {
                        (world.agent(slot).expect("agent").1.id.clone(), slot)
                    }
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(
            slots,
            [
                ("sales".into(), 0),
                ("support".into(), 1),
                ("acme-bot".into(), 2)
            ]
        );
        let order: Vec<&str> = world.agents().map(|(_, a)| a.id.as_str()).collect();
        assert_eq!(order, ["sales", "support", "acme-bot"]);
        let owners: Vec<Option<&str>> = (0..4)
            .map(|slot| world.agent(slot).map(|(t, _)| t.id.as_str()))
            .collect();
        assert_eq!(owners, [Some("demo"), Some("demo"), Some("acme"), None]);
    }

    #[test]
    fn tenants_without_agents_own_no_slot() {
        let tenant = |id: &str, agents: &[&str]| Tenant {
            id: id.into(),
            access: vec![],
            agents: agents
                .iter()
                .map(|name| Agent {
                    number: None,
                    ..agent(name, Some(name), "+15550100000", "sip:x@127.0.0.1")
                })
                .collect(),
        };
        let world = World::new(
            vec![
                tenant("empty", &[]),
                tenant("a", &["a0", "a1"]),
                tenant("also-empty", &[]),
                tenant("b", &["b0"]),
            ],
            DeniedSource::Drop,
        )
        .expect("valid world");
        let owners: Vec<Option<(&str, &str)>> = (0..4)
            .map(|slot| {
                world
                    .agent(slot)
                    .map(|(t, a)| (t.id.as_str(), a.id.as_str()))
            })
            .collect();
        assert_eq!(
            owners,
            [
                Some(("a", "a0")),
                Some(("a", "a1")),
                Some(("b", "b0")),
                None
            ]
        );
    }

    #[test]
    fn one_name_for_two_agents_is_refused() {
        let tenant = |id: &str| Tenant {
            id: id.into(),
            access: vec![],
            agents: vec![agent(id, Some("shared"), "+15550100009", "sip:x@127.0.0.1")],
        };
        let err =
            World::new(vec![tenant("a"), tenant("b")], DeniedSource::Drop).expect_err("clash");
        assert!(err.to_string().contains("shared names both"), "{err}");
    }

    /// The demo world with `sales` also registered to a PBX through the binding `token`.
    fn registered(token: &str) -> World {
        let mut tenants = demo(DeniedSource::Drop).tenants().to_vec();
        tenants[0].agents[0].contacts.push(token.into());
        World::new(tenants, DeniedSource::Drop).expect("valid world")
    }

    // Issue 21: registering is the trust, as for any phone registered to a PBX.
    #[test]
    fn a_call_through_a_binding_is_allowed_from_its_registrar_and_the_tenants_list() {
        let world = registered("c0ffee");
        let from_pbx = Invite {
            from_registrar: true,
            ..invite("192.0.2.50", "+15551230000", "c0ffee")
        };
        assert_eq!(
            forwarded_to(&world, world.decide(&from_pbx)),
            "sales",
            "from the registrar, outside the access list"
        );
        let listed = invite("127.0.0.1", "+15551230000", "c0ffee");
        assert_eq!(forwarded_to(&world, world.decide(&listed)), "sales");
        let stranger = invite("192.0.2.50", "+15551230000", "c0ffee");
        assert_eq!(
            world.decide(&stranger),
            Admission::Drop {
                reason: "source_not_allowed"
            }
        );
    }

    #[test]
    fn the_registrar_is_trusted_only_for_calls_through_its_binding() {
        let world = registered("c0ffee");
        // The ingress sets the flag only for the binding the Request-URI names; a name that
        // is no contact is judged by the access list whatever the flag says.
        let by_name = Invite {
            from_registrar: true,
            ..invite("192.0.2.50", "+15551230000", "sales")
        };
        assert!(matches!(world.decide(&by_name), Admission::Drop { .. }));
    }

    #[test]
    fn a_call_through_a_binding_still_needs_an_e164_from() {
        let world = registered("c0ffee");
        let from_pbx = Invite {
            from_registrar: true,
            ..invite("192.0.2.50", "alice", "c0ffee")
        };
        assert_eq!(
            world.decide(&from_pbx),
            Admission::Reject {
                code: 404,
                reason: "from_not_e164"
            }
        );
    }

    #[test]
    fn one_contact_for_two_agents_is_refused() {
        let mut tenants = demo(DeniedSource::Drop).tenants().to_vec();
        tenants[0].agents[0].contacts.push("c0ffee".into());
        tenants[1].agents[0].contacts.push("c0ffee".into());
        let err = World::new(tenants, DeniedSource::Drop).expect_err("clash");
        assert!(err.to_string().contains("c0ffee"), "{err}");
    }

    #[test]
    fn the_demo_agents_carry_their_headers_and_routes() {
        let world = demo(DeniedSource::Drop);
        let Admission::Forward { slot } =
            world.decide(&invite("127.0.0.1", "+15551230000", "sales"))
        else {
            panic!("not forwarded")
        };
        let (tenant, agent) = world.agent(slot).expect("agent");
        assert_eq!(tenant.id, "demo");
        assert_eq!(
            agent.dest_user.as_ref().map(DestUser::as_str),
            Some("sales.desk")
        );
        let Admission::Forward { slot } =
            world.decide(&invite("127.0.0.1", "+15551230000", "support"))
        else {
            panic!("not forwarded")
        };
        let (_, agent) = world.agent(slot).expect("agent");
        let route = agent.route.as_ref().expect("route");
        assert_eq!(route.next_hop().1, 5091);
    }
}
