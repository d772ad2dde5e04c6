//! Admission of initial INVITEs: the decision is made by a policy running as a wasm component
//! in wasmtime (world `trunkguard:ingress-policy/ingress-policy`, `crates/ingress-policy/wit`).
//!
//! * [`wasm`]: the wasmtime side: one engine, compiled policies (cached on disk), instances with
//!   a deadline per call and a memory limit.
//! * [`live`]: the policy in force for a proxy core, swapped atomically on reload, failing
//!   closed when the policy traps, overruns its deadline or answers nonsense.
//! * [`oracle`]: the same rules natively, which the wasm policy is tested against.
//! * [`registrars`]: where registration bindings registered, which calls through them are
//!   trusted from.
//!
//! This module holds what the proxy and the policy exchange, in the ingress's own types: the
//! [`Facts`] of an INVITE and the [`Verdict`], checked before the proxy acts on it: a policy is
//! untrusted code, so it may not add header fields that would break the transaction, and its
//! reasons become metrics labels only if they look like labels.

pub mod config;
pub mod live;
pub mod oracle;
pub mod registrars;
pub mod wasm;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use policy::admission::{DeniedSource, Tenant};

use crate::sip::check::Request;
use crate::sip::head::{canonical_name, is_token_char};
use crate::sip::{Transport, uri};
use wasm::wit;

/// Why an INVITE was refused, as a metrics label: one of the ingress's own, or one a policy
/// prepared at load, shared so that a refusal copies no text.
#[derive(Clone)]
pub struct Reason(Label);

#[derive(Clone)]
enum Label {
    Fixed(&'static str),
    Prepared(Arc<str>),
}

impl Reason {
    /// The label.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Label::Fixed(label) => label,
            Label::Prepared(label) => label,
        }
    }
}

impl From<&'static str> for Reason {
    fn from(label: &'static str) -> Self {
        Self(Label::Fixed(label))
    }
}

impl From<String> for Reason {
    fn from(label: String) -> Self {
        Self(Label::Prepared(label.into()))
    }
}

impl std::hash::Hash for Reason {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq for Reason {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Reason {}

impl std::fmt::Debug for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text facts of an INVITE, borrowed from the request, to build [`Facts`] with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Text<'a> {
    /// The Request-URI.
    pub request_uri: &'a str,
    /// The Request-URI's user part (empty when there is none).
    pub request_user: &'a str,
    /// The From URI's user part.
    pub from_user: &'a str,
    /// The From display name, unquoted.
    pub from_display_name: Option<&'a str>,
    /// The To URI's user part.
    pub to_user: &'a str,
    /// The To display name, unquoted.
    pub to_display_name: Option<&'a str>,
}

impl<'a> Text<'a> {
    /// The text facts of an INVITE to `request_uri` whose From and To values are `from`, `to`.
    pub fn of(request_uri: &'a str, from: &'a str, to: &'a str) -> Self {
        let (from_user, from_display_name) = uri::party(from);
        let (to_user, to_display_name) = uri::party(to);
        Self {
            request_uri,
            request_user: uri::user(request_uri).unwrap_or_default(),
            from_user,
            from_display_name,
            to_user,
            to_display_name,
        }
    }
}

/// The facts of one initial INVITE that a policy decides on.
///
/// Kept as the policy receives them (the WIT `invite`): the text facts one after the other in
/// one string, then the selected header fields as `Name: value` CRLF lines, so a decision
/// copies one string into the policy's memory instead of one per fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    source: SocketAddr,
    transport: Transport,
    text: String,
    /// Where the Request-URI, its user, the From user, the From display name, the To user and
    /// the To display name end in `text`.
    ends: [u32; 6],
    from_display_name: bool,
    to_display_name: bool,
    from_registrar: bool,
}

impl Facts {
    /// The facts of an INVITE from `source` over `transport`, with the header fields the
    /// configuration selects (`[policy] headers`), in received order. A line break in a value
    /// becomes a space, as in unfolding.
    pub fn new<'h>(
        source: SocketAddr,
        transport: Transport,
        text: Text<'_>,
        headers: impl IntoIterator<Item = (&'h str, &'h str)>,
    ) -> Self {
        let facts = [
            text.request_uri,
            text.request_user,
            text.from_user,
            text.from_display_name.unwrap_or_default(),
            text.to_user,
            text.to_display_name.unwrap_or_default(),
        ];
        let mut packed = String::with_capacity(facts.iter().map(|f| f.len()).sum::<usize>() + 64);
        let mut ends = [0; 6];
        for (fact, end) in facts.iter().zip(&mut ends) {
            packed.push_str(fact);
            // A SIP message is far smaller than 4 GiB; saturating keeps an impossible one
            // from wrapping.
            *end = u32::try_from(packed.len()).unwrap_or(u32::MAX);
        }
        for (name, value) in headers {
            packed.push_str(name);
            packed.push_str(": ");
            packed.extend(
                value
                    .chars()
                    .map(|c| if c == '\r' || c == '\n' { ' ' } else { c }),
            );
            packed.push_str("\r\n");
        }
        Self {
            source,
            transport,
            text: packed,
            ends,
            from_display_name: text.from_display_name.is_some(),
            to_display_name: text.to_display_name.is_some(),
            from_registrar: false,
        }
    }

    /// These facts, saying whether the source is an address that the registration binding
    /// named by the Request-URI user registered to.
    pub fn with_from_registrar(mut self, from_registrar: bool) -> Self {
        self.from_registrar = from_registrar;
        self
    }

    fn fact(&self, index: usize) -> &str {
        let start = index.checked_sub(1).map_or(0, |before| self.ends[before]);
        self.text
            .get(start as usize..self.ends[index] as usize)
            .unwrap_or_default()
    }

    /// The facts of `request`, from `source` over `transport`, with the header fields the
    /// policy `wants` in received order.
    pub fn of(
        request: &Request,
        source: SocketAddr,
        transport: Transport,
        wants: impl Fn(&str) -> bool,
    ) -> Self {
        let head = &request.head;
        let text = Text::of(&request.uri, head.value("From"), head.value("To"));
        let headers = head
            .fields
            .iter()
            .filter(|f| wants(&f.name))
            .map(|f| (f.name.as_str(), f.value.as_str()));
        Self::new(source, transport, text, headers)
    }

    /// Where the INVITE came from.
    pub fn source(&self) -> SocketAddr {
        self.source
    }

    /// How it came.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Its Request-URI.
    pub fn request_uri(&self) -> &str {
        self.fact(0)
    }

    /// The Request-URI's user part (empty when there is none).
    pub fn request_user(&self) -> &str {
        self.fact(1)
    }

    /// The From URI's user part.
    pub fn from_user(&self) -> &str {
        self.fact(2)
    }

    /// The From display name, unquoted.
    pub fn from_display_name(&self) -> Option<&str> {
        self.from_display_name.then(|| self.fact(3))
    }

    /// The To URI's user part.
    pub fn to_user(&self) -> &str {
        self.fact(4)
    }

    /// The To display name, unquoted.
    pub fn to_display_name(&self) -> Option<&str> {
        self.to_display_name.then(|| self.fact(5))
    }

    /// Whether the source is an address the binding named by the Request-URI user registered
    /// to (its registrar or the registrar's proxy).
    pub fn from_registrar(&self) -> bool {
        self.from_registrar
    }

    /// The selected header fields, in received order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.text
            .get(self.ends[5] as usize..)
            .unwrap_or_default()
            .split_terminator("\r\n")
            .filter_map(|field| field.split_once(": "))
    }
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

/// One of a list of forwards shared by every verdict naming it: a policy prepares one forward
/// per agent at load, and a decision costs a reference count on the list, not on the agent's
/// forward, which the decision need not read.
#[derive(Clone)]
pub struct ForwardRef {
    list: Arc<[Forward]>,
    index: usize,
}

impl ForwardRef {
    /// The forward at `index` of `list`, if there is one.
    pub fn new(list: &Arc<[Forward]>, index: usize) -> Option<Self> {
        (index < list.len()).then(|| Self {
            list: Arc::clone(list),
            index,
        })
    }
}

impl std::ops::Deref for ForwardRef {
    type Target = Forward;

    fn deref(&self) -> &Forward {
        &self.list[self.index]
    }
}

impl std::fmt::Debug for ForwardRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Forward::fmt(self, f)
    }
}

impl PartialEq for ForwardRef {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for ForwardRef {}

/// A policy's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the INVITE.
    Forward(ForwardRef),
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
                    contacts: agent.contacts.clone(),
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

// The one place the ingress converts between its transport and the component's.
impl From<Transport> for wit::Transport {
    fn from(transport: Transport) -> Self {
        match transport {
            Transport::Udp => wit::Transport::Udp,
            Transport::Tcp => wit::Transport::Tcp,
        }
    }
}

impl From<wit::Transport> for Transport {
    fn from(transport: wit::Transport) -> Self {
        match transport {
            wit::Transport::Udp => Transport::Udp,
            wit::Transport::Tcp => Transport::Tcp,
        }
    }
}

fn wit_address(address: IpAddr) -> wit::IpAddress {
    match address {
        IpAddr::V4(v4) => wit::IpAddress::Ipv4(v4.to_bits()),
        IpAddr::V6(v6) => {
            let bits = v6.to_bits();
            // The halves of the 128 bits: truncation is the point.
            wit::IpAddress::Ipv6(((bits >> 64) as u64, bits as u64))
        }
    }
}

impl Facts {
    /// The facts in the component's types.
    pub(crate) fn into_wit(self) -> wit::Invite {
        let mut present = wit::Present::empty();
        if self.from_display_name {
            present |= wit::Present::FROM_DISPLAY_NAME;
        }
        if self.to_display_name {
            present |= wit::Present::TO_DISPLAY_NAME;
        }
        if self.from_registrar {
            present |= wit::Present::FROM_REGISTRAR;
        }
        let [
            request_uri_end,
            request_user_end,
            from_user_end,
            from_display_name_end,
            to_user_end,
            to_display_name_end,
        ] = self.ends;
        wit::Invite {
            source_address: wit_address(self.source.ip()),
            source_port: self.source.port(),
            transport: self.transport.into(),
            text: self.text,
            request_uri_end,
            request_user_end,
            from_user_end,
            from_display_name_end,
            to_user_end,
            to_display_name_end,
            present,
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

/// A policy's reason label, or why it is not one.
fn check_reason(reason: String) -> Result<Reason, String> {
    let valid = !reason.is_empty()
        && reason.len() <= 40
        && reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(reason.into())
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

impl Forward {
    /// The ingress's forward for a component's, or why it cannot be acted on.
    pub(crate) fn from_wit(forward: wit::Forward) -> Result<Self, String> {
        check_uri(&forward.agent_uri)?;
        let hop = forward.next_hop;
        if hop.host.is_empty() || hop.port == 0 {
            return Err(format!(
                "next hop {}:{} is not an address",
                hop.host, hop.port
            ));
        }
        Ok(Forward {
            tenant: forward.tenant,
            agent_id: forward.agent_id,
            agent_uri: forward.agent_uri,
            next_hop: NextHop {
                host: hop.host,
                port: hop.port,
                transport: hop.transport.into(),
            },
            headers: forward
                .headers
                .into_iter()
                .map(check_header)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// What a policy prepared at load, checked: the forwards and reasons its verdicts name.
pub(crate) struct Prepared {
    forwards: Arc<[Forward]>,
    reasons: Box<[Reason]>,
}

impl Prepared {
    /// Checks what a policy's `load` returned.
    pub(crate) fn from_wit(prepared: wit::Prepared) -> Result<Self, String> {
        let forwards = prepared
            .forwards
            .into_iter()
            .enumerate()
            .map(|(index, forward)| {
                Forward::from_wit(forward).map_err(|e| format!("prepared forward {index}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        let reasons = prepared
            .reasons
            .into_iter()
            .map(check_reason)
            .collect::<Result<_, _>>()?;
        Ok(Self { forwards, reasons })
    }

    fn reason(&self, index: u32) -> Result<Reason, String> {
        usize::try_from(index)
            .ok()
            .and_then(|index| self.reasons.get(index))
            .cloned()
            .ok_or_else(|| {
                format!(
                    "prepared reason {index} does not exist ({} were prepared)",
                    self.reasons.len()
                )
            })
    }
}

impl Verdict {
    /// The ingress's verdict for a component's, or why it cannot be acted on.
    pub(crate) fn from_wit(verdict: wit::Verdict, prepared: &Prepared) -> Result<Self, String> {
        match verdict {
            wit::Verdict::Forward(index) => usize::try_from(index)
                .ok()
                .and_then(|index| ForwardRef::new(&prepared.forwards, index))
                .map(Verdict::Forward)
                .ok_or_else(|| {
                    format!(
                        "prepared forward {index} does not exist ({} were prepared)",
                        prepared.forwards.len()
                    )
                }),
            wit::Verdict::Reject(reject) => {
                if !(400..=699).contains(&reject.code) {
                    return Err(format!("reject code {} is not 400 to 699", reject.code));
                }
                Ok(Verdict::Reject {
                    code: reject.code,
                    reason: prepared.reason(reject.reason)?,
                })
            }
            wit::Verdict::Drop(reason) => Ok(Verdict::Drop {
                reason: prepared.reason(reason)?,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_travel_in_one_string_and_read_back() {
        let text = Text {
            request_uri: "sip:sales@192.0.2.10",
            request_user: "sales",
            from_user: "+15551230000",
            from_display_name: Some("PBX \u{e9}"),
            to_user: "sales",
            to_display_name: Some(""),
        };
        let facts = Facts::new(
            "[2001:db8::1]:5070".parse().expect("address"),
            Transport::Tcp,
            text,
            [("X-Case", "one"), ("X-Broken", "a\r\nVia: b")],
        );
        let read = Text {
            request_uri: facts.request_uri(),
            request_user: facts.request_user(),
            from_user: facts.from_user(),
            from_display_name: facts.from_display_name(),
            to_user: facts.to_user(),
            to_display_name: facts.to_display_name(),
        };
        assert_eq!(read, text);
        let headers: Vec<_> = facts.headers().collect();
        assert_eq!(headers, [("X-Case", "one"), ("X-Broken", "a  Via: b")]);

        let wit = facts.clone().with_from_registrar(true).into_wit();
        assert!(matches!(
            wit.source_address,
            wit::IpAddress::Ipv6((0x2001_0db8_0000_0000, 1))
        ));
        assert_eq!(wit.source_port, 5070);
        assert_eq!(wit.present, wit::Present::all());
        assert_eq!(
            &wit.text[wit.from_user_end as usize..wit.from_display_name_end as usize],
            "PBX \u{e9}"
        );

        let bare = Facts::new(
            "192.0.2.1:5060".parse().expect("address"),
            Transport::Udp,
            Text::default(),
            [],
        );
        assert_eq!(
            (bare.from_display_name(), bare.to_display_name()),
            (None, None)
        );
        let wit = bare.into_wit();
        assert!(matches!(
            wit.source_address,
            wit::IpAddress::Ipv4(0xc000_0201)
        ));
        assert_eq!(wit.present, wit::Present::empty());
    }

    fn forward(headers: Vec<(&str, &str)>) -> wit::Forward {
        wit::Forward {
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
        }
    }

    fn prepared(forwards: Vec<wit::Forward>, reasons: &[&str]) -> Result<Prepared, String> {
        Prepared::from_wit(wit::Prepared {
            forwards,
            reasons: reasons.iter().map(|r| (*r).to_owned()).collect(),
        })
    }

    #[test]
    fn policies_may_add_headers_but_not_transaction_ones() {
        let checked =
            prepared(vec![forward(vec![("x-dest-user", "sales.desk")])], &[]).expect("valid");
        let verdict = Verdict::from_wit(wit::Verdict::Forward(0), &checked);
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
            let refused = prepared(vec![forward(vec![]), forward(vec![(name, value)])], &[]);
            assert!(
                refused
                    .as_ref()
                    .is_err_and(|e| e.starts_with("prepared forward 1: ")),
                "{name}: {value:?}: {:?}",
                refused.err()
            );
        }
    }

    #[test]
    fn codes_and_reasons_are_checked() {
        let checked = prepared(vec![], &["unknown_agent"]).expect("valid");
        let reject = |code, reason| {
            Verdict::from_wit(wit::Verdict::Reject(wit::Reject { code, reason }), &checked)
        };
        assert_eq!(
            reject(404, 0),
            Ok(Verdict::Reject {
                code: 404,
                reason: "unknown_agent".into()
            })
        );
        for (code, reason) in [(200, 0), (399, 0), (700, 0), (404, 1), (404, u32::MAX)] {
            assert!(reject(code, reason).is_err(), "{code} {reason}");
        }
        assert!(Verdict::from_wit(wit::Verdict::Drop(1), &checked).is_err());
        for label in ["Bad Label", "", &"x".repeat(41)] {
            assert!(prepared(vec![], &[label]).is_err(), "{label:?}");
        }
    }

    #[test]
    fn prepared_forwards_are_named_by_index() {
        let checked = prepared(vec![forward(vec![])], &[]).expect("valid");
        let Ok(Verdict::Forward(forward_to)) =
            Verdict::from_wit(wit::Verdict::Forward(0), &checked)
        else {
            panic!("not forwarded")
        };
        assert_eq!(forward_to.agent_uri, "sip:sales@127.0.0.1:5090");
        let stray = Verdict::from_wit(wit::Verdict::Forward(1), &checked);
        assert!(stray.is_err_and(|e| e.contains("prepared forward 1 does not exist")));
    }

    #[test]
    fn agent_uris_must_be_sip_uris() {
        assert!(check_uri("sip:a@127.0.0.1").is_ok());
        for bad in ["tel:+1555", "sip:", "sip:a@b c", "sip:a@b>x", "sip:a\r\n@b"] {
            assert!(check_uri(bad).is_err(), "{bad}");
        }
    }
}
