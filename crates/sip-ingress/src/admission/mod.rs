//! Admission of initial INVITEs: the decision is made by a policy running as a wasm component
//! in wasmtime (world `trunkguard:ingress-policy/ingress-policy`, `crates/ingress-policy/wit`).
//!
//! * [`host`]: the wasmtime side: one engine, compiled policies (cached on disk), instances with
//!   a deadline per call and a memory limit.
//! * [`live`]: the policy in force for a proxy core, swapped atomically on reload, failing
//!   closed when the policy traps, overruns its deadline or answers nonsense.
//! * [`oracle`]: the same rules natively, which the wasm policy is tested against.
//!
//! This module holds what the proxy and the policy exchange, in the ingress's own types: the
//! [`Facts`] of an INVITE and the [`Verdict`], checked before the proxy acts on it: a policy is
//! untrusted code, so it may not add header fields that would break the transaction, and its
//! reasons become metrics labels only if they look like labels.

pub mod host;
pub mod live;
pub mod oracle;

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use policy::admission::{DeniedSource, Tenant};

use crate::sip::head::{canonical_name, is_token_char};
use crate::sip::uri;
use host::wit;

/// A fixed or policy-given reason, used as a metrics label.
pub type Reason = Cow<'static, str>;

/// The transport an INVITE arrived on, or a next hop uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// UDP.
    #[default]
    Udp,
    /// TCP.
    Tcp,
}

impl Transport {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// The facts of one initial INVITE that a policy decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Where the INVITE came from.
    pub source: SocketAddr,
    /// How it came.
    pub transport: Transport,
    /// Its Request-URI.
    pub request_uri: String,
    /// The Request-URI's user part (empty when there is none).
    pub request_user: String,
    /// The From URI's user part.
    pub from_user: String,
    /// The From display name, unquoted.
    pub from_display_name: Option<String>,
    /// The To URI's user part.
    pub to_user: String,
    /// The To display name, unquoted.
    pub to_display_name: Option<String>,
    /// The header fields the configuration selects (`[policy] headers`), in received order.
    pub headers: Vec<(String, String)>,
}

/// Where a forwarded INVITE goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    /// An IP address literal or a name.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The transport.
    pub transport: Transport,
}

/// An admitted INVITE's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The tenant owning the agent.
    pub tenant: String,
    /// The agent.
    pub agent_id: String,
    /// The forwarded INVITE's Request-URI.
    pub agent_uri: String,
    /// Where the packet goes.
    pub next_hop: NextHop,
    /// Header fields to add (a `Route` is pushed; any other replaces received fields of its name).
    pub headers: Vec<(String, String)>,
}

/// A policy's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the INVITE.
    Forward(Forward),
    /// Answer with `code`.
    Reject {
        /// 400 to 699.
        code: u16,
        /// Why (a metrics label).
        reason: Reason,
    },
    /// Send nothing.
    Drop {
        /// Why (a metrics label).
        reason: Reason,
    },
}

/// What decides initial INVITEs for a proxy core.
pub trait Admit: Send {
    /// Decides one initial INVITE. Never fails: a failing policy yields a fail-closed reject.
    fn decide(&mut self, facts: Facts) -> Verdict;

    /// Whether some tenant allows `source`: over the flood limit such a source is told to retry
    /// later, any other learns nothing.
    fn knows_source(&self, source: IpAddr) -> bool;

    /// Whether the policy is given header fields named `name` (canonical), per `[policy]
    /// headers`.
    fn wants_header(&self, name: &str) -> bool;
}

/// The user part and display name of a From or To value.
pub fn party(value: &str) -> (String, Option<String>) {
    (
        uri::user(uri::uri_of(value)).unwrap_or_default().to_owned(),
        uri::display_name(value).map(str::to_owned),
    )
}

/// The operator's configuration as a policy sees it.
pub fn snapshot(
    tenants: &[Tenant],
    denied: DeniedSource,
    settings: &[(String, String)],
) -> wit::Snapshot {
    let tenants = tenants
        .iter()
        .map(|tenant| wit::Tenant {
            id: tenant.id.clone(),
            access: tenant.access.iter().map(ToString::to_string).collect(),
            agents: tenant
                .agents
                .iter()
                .map(|agent| wit::Agent {
                    id: agent.id.clone(),
                    username: agent.username.clone(),
                    number: agent.number.as_ref().map(|n| n.as_str().to_owned()),
                    uri: agent.uri.clone(),
                    dest_user: agent.dest_user.as_ref().map(|d| d.as_str().to_owned()),
                    route: agent.route.as_ref().map(ToString::to_string),
                })
                .collect(),
        })
        .collect();
    wit::Snapshot {
        tenants,
        denied_source: match denied {
            DeniedSource::Drop => wit::DeniedSource::Drop,
            DeniedSource::Forbid => wit::DeniedSource::Forbid,
        },
        settings: settings.to_vec(),
    }
}

fn wit_transport(transport: Transport) -> wit::Transport {
    match transport {
        Transport::Udp => wit::Transport::Udp,
        Transport::Tcp => wit::Transport::Tcp,
    }
}

impl Facts {
    /// The facts in the component's types.
    pub(crate) fn into_wit(self) -> wit::Invite {
        wit::Invite {
            source_address: self.source.ip().to_string(),
            source_port: self.source.port(),
            transport: wit_transport(self.transport),
            request_uri: self.request_uri,
            request_user: self.request_user,
            from_user: self.from_user,
            from_display_name: self.from_display_name,
            to_user: self.to_user,
            to_display_name: self.to_display_name,
            headers: self
                .headers
                .into_iter()
                .map(|(name, value)| wit::Header { name, value })
                .collect(),
        }
    }
}

/// Header fields a policy may not add: the ones that identify the transaction and dialog, frame
/// the message, or that the ingress writes itself.
const RESERVED: [&str; 11] = [
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Max-Forwards",
    "Contact",
    "Record-Route",
    "Content-Length",
    "Content-Type",
    "Content-Encoding",
];

/// Why a verdict cannot be acted on.
fn check_reason(reason: String) -> Result<Reason, String> {
    let valid = !reason.is_empty()
        && reason.len() <= 40
        && reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(Cow::Owned(reason))
    } else {
        Err(format!(
            "reason {reason:?} is not a label (1 to 40 of a-z, 0-9, _)"
        ))
    }
}

fn check_header(header: wit::Header) -> Result<(String, String), String> {
    if header.name.is_empty() || !header.name.bytes().all(is_token_char) {
        return Err(format!("header name {:?} is not a token", header.name));
    }
    let name = canonical_name(&header.name);
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(&name)) {
        return Err(format!("header {name} may not be set by a policy"));
    }
    if header
        .value
        .bytes()
        .any(|b| b.is_ascii_control() && b != b'\t')
    {
        return Err(format!(
            "header {name} has a control character in its value"
        ));
    }
    Ok((name, header.value.trim().to_owned()))
}

fn check_uri(uri: &str) -> Result<(), String> {
    let scheme_ok = uri
        .split_once(':')
        .is_some_and(|(scheme, rest)| scheme.eq_ignore_ascii_case("sip") && !rest.is_empty());
    if scheme_ok
        && !uri
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'>')
    {
        Ok(())
    } else {
        Err(format!("agent URI {uri:?} is not a sip: URI"))
    }
}

impl Verdict {
    /// The ingress's verdict for a component's, or why it cannot be acted on.
    pub(crate) fn from_wit(verdict: wit::Verdict) -> Result<Self, String> {
        match verdict {
            wit::Verdict::Forward(forward) => {
                check_uri(&forward.agent_uri)?;
                let hop = forward.next_hop;
                if hop.host.is_empty() || hop.port == 0 {
                    return Err(format!(
                        "next hop {}:{} is not an address",
                        hop.host, hop.port
                    ));
                }
                Ok(Verdict::Forward(Forward {
                    tenant: forward.tenant,
                    agent_id: forward.agent_id,
                    agent_uri: forward.agent_uri,
                    next_hop: NextHop {
                        host: hop.host,
                        port: hop.port,
                        transport: match hop.transport {
                            wit::Transport::Udp => Transport::Udp,
                            wit::Transport::Tcp => Transport::Tcp,
                        },
                    },
                    headers: forward
                        .headers
                        .into_iter()
                        .map(check_header)
                        .collect::<Result<_, _>>()?,
                }))
            }
            wit::Verdict::Reject(reject) => {
                if !(400..=699).contains(&reject.code) {
                    return Err(format!("reject code {} is not 400 to 699", reject.code));
                }
                Ok(Verdict::Reject {
                    code: reject.code,
                    reason: check_reason(reject.reason)?,
                })
            }
            wit::Verdict::Drop(reason) => Ok(Verdict::Drop {
                reason: check_reason(reason)?,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(headers: Vec<(&str, &str)>) -> wit::Verdict {
        wit::Verdict::Forward(wit::Forward {
            tenant: "demo".into(),
            agent_id: "sales".into(),
            agent_uri: "sip:sales@127.0.0.1:5090".into(),
            next_hop: wit::NextHop {
                host: "127.0.0.1".into(),
                port: 5090,
                transport: wit::Transport::Udp,
            },
            headers: headers
                .into_iter()
                .map(|(name, value)| wit::Header {
                    name: name.into(),
                    value: value.into(),
                })
                .collect(),
        })
    }

    #[test]
    fn policies_may_add_headers_but_not_transaction_ones() {
        let verdict = Verdict::from_wit(forward(vec![("x-dest-user", "sales.desk")]));
        let Ok(Verdict::Forward(forward_to)) = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(
            forward_to.headers,
            [("X-Dest-User".into(), "sales.desk".into())]
        );
        for (name, value) in [
            ("Via", "SIP/2.0/UDP evil"),
            ("v", "SIP/2.0/UDP evil"),
            ("call-id", "x"),
            ("X-Ok", "a\r\nVia: injected"),
            ("Bad Name", "x"),
            ("", "x"),
        ] {
            assert!(
                Verdict::from_wit(forward(vec![(name, value)])).is_err(),
                "{name}: {value:?}"
            );
        }
    }

    #[test]
    fn codes_and_reasons_are_checked() {
        let reject = |code, reason: &str| {
            Verdict::from_wit(wit::Verdict::Reject(wit::Reject {
                code,
                reason: reason.into(),
            }))
        };
        assert!(reject(404, "unknown_agent").is_ok());
        for (code, reason) in [
            (200, "ok"),
            (399, "x"),
            (700, "x"),
            (404, "Bad Label"),
            (404, ""),
        ] {
            assert!(reject(code, reason).is_err(), "{code} {reason}");
        }
        assert!(Verdict::from_wit(wit::Verdict::Drop("x".repeat(41))).is_err());
    }

    #[test]
    fn agent_uris_must_be_sip_uris() {
        assert!(check_uri("sip:a@127.0.0.1").is_ok());
        for bad in ["tel:+1555", "sip:", "sip:a@b c", "sip:a@b>x", "sip:a\r\n@b"] {
            assert!(check_uri(bad).is_err(), "{bad}");
        }
    }
}
