//! The proxy core (RFC 3261 section 16), without sockets: a received datagram in, the datagrams
//! to send out. The transport loop around it is in `main.rs`.
//!
//! * An initial INVITE is decided by the admission policy ([`crate::admission`], a wasm
//!   component in wasmtime), answered `100 Trying`, and forwarded to the agent with our Via and
//!   Record-Route (so in-dialog requests come back through the ingress) and the header fields
//!   the policy adds, by editing the received bytes.
//! * Retransmitted INVITEs are absorbed: the last response is sent again.
//! * In-dialog requests (To tag) are only forwarded for dialogs the ingress admitted, matched
//!   by Call-ID and the caller's tag, whose place (From or To) says which way they go; anything
//!   else gets 481 (an ACK is dropped). The Route naming the ingress is consumed.
//! * CANCEL is answered 200 and sent on to the agent with the INVITE's branch, once the agent
//!   has answered the INVITE provisionally (RFC 3261 section 9.1: not before); if it never does,
//!   the caller gets 487 when Timer B fires, and if it gives no final answer within 64xT1 of the
//!   CANCEL, the caller gets 487 then. Over UDP the ingress sends its CANCEL again until the
//!   agent answers it (RFC 3261 section 17.1.2.2, Timer E).
//! * Responses are relayed by popping our Via and sending to the next one's `received`/`rport`
//!   or sent-by, when our Via's branch is the one the ingress made for a request from there
//!   (keyed by a secret: forged responses do not make it a reflector). For a non-2xx final
//!   answer to an INVITE the proxy sends the ACK itself and absorbs the caller's (RFC 3261
//!   section 17.1.1.3). The agent's 100 Trying goes no further (the caller had ours), nor,
//!   once the caller has a final answer, anything but a 2xx (section 16.7 step 5).
//! * A forwarded INVITE is retransmitted to the agent after T1, 2xT1, 4xT1... until the agent
//!   answers at all, and if it has not answered after 64xT1 the caller gets 408 Request Timeout
//!   (RFC 3261 section 17.1.1.2, Timers A and B; over TCP, which is reliable, only B). An agent
//!   that rings (answers provisionally) for Timer C ([`Timers`]) without a final answer is sent
//!   a CANCEL (RFC 3261 section 16.8), and the caller gets its 487, or a 408 from the ingress if
//!   the agent stays silent for 64xT1 more. [`Proxy::on_timers`] does it; [`Proxy::next_timer`] says when.
//! * Agents are reached over UDP, or over TCP when their next hop says `transport=tcp` (the
//!   transport loop opens the connection, see [`Outgoing::transport`]); when the caller's and
//!   the agent's transports differ the Record-Route is doubled (RFC 5658).
//! * A forwarded INVITE the transport loop could not send ([`Proxy::on_undeliverable`]) or that
//!   the agent answered 503 goes to the next address of its agent's host name, if it has one,
//!   as a new transaction (RFC 3263 section 4.3, RFC 3261 section 21.5.4). Else one that could
//!   not be sent ends as if the agent had answered 503 (RFC 3261 section 16.9), and an agent's
//!   503 to an INVITE is relayed as 500 (section 16.7 step 6): the caller hears that the call
//!   failed, not that the ingress is unavailable.
//! * A next hop given as a host name is looked up by the transport loop ([`Proxy::take_lookups`],
//!   [`Proxy::on_resolved`]): the caller has its 100 Trying at once and the INVITE is held,
//!   then forwarded to the first address of a family the ingress can send to, or answered 503.
//!   Answers are cached ([`RESOLVED_LIFETIME`]). Only address records are used: the port is the
//!   one in the URI or route, 5060 without one (no RFC 3263 NAPTR/SRV selection), and a timeout
//!   does not move an INVITE on to the next address.
//! * OPTIONS addressed to the ingress itself is answered 200.
//! * An initial INVITE that already carries a Via of the ingress's own address has come back
//!   through it: 482 Loop Detected (RFC 3261 section 16.3). The ingress only forwards to agents,
//!   so a legitimate spiral cannot pass through it twice.
//! * Before any of this, requests outside the dialogs the ingress admitted pass a per-source
//!   flood limit (governor, keyed by IP): over it, a source some tenant allows gets 503 with
//!   Retry-After, any other nothing.
//!
//! State (dialogs, INVITE transactions) is bounded in number and expires: an INVITE
//! transaction lasts until its final answer, which its timers guarantee, and is then kept long
//! enough to absorb retransmissions.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use governor::clock::{Clock, MonotonicClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use policy::{Host, HostPort};

use crate::admission::{self, Admit, Facts, Reason, Transport};

use crate::sip::check::{self, Request, Response, Verdict, split_list};
use crate::sip::forward::{self, Edits};
use crate::sip::frame::frame_datagram;
use crate::sip::head::{self, Head};
use crate::sip::{response, uri};

/// How long an ended INVITE transaction is remembered, to absorb retransmissions, at least
/// (64 x the default T1, as RFC 3261 Timers D and H); longer when a larger T1 asks for it.
const TRANSACTION_LIFETIME: Duration = Duration::from_secs(32);
/// Timer C by default (RFC 3261 section 16.6 step 11: "larger than 3 minutes"): how long an
/// agent may answer a forwarded INVITE provisionally (ring) without a final answer before it
/// is sent a CANCEL (section 16.8).
pub const DEFAULT_TIMER_C: Duration = Duration::from_secs(3 * 60 + 1);
/// RFC 3261's T2: the longest interval between retransmissions of a non-INVITE request (our
/// CANCEL).
const T2: Duration = Duration::from_secs(4);
/// RFC 3261's default T1, the round-trip time estimate.
pub const DEFAULT_T1: Duration = Duration::from_millis(500);

/// The proxy's transaction timers that can be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RFC 3261 T1, the round-trip estimate: Timer A's first interval; Timer B and the wait for
    /// an answer to a CANCEL are 64xT1.
    pub t1: Duration,
    /// Timer C: how long an agent may ring without a final answer.
    pub timer_c: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            t1: DEFAULT_T1,
            timer_c: DEFAULT_TIMER_C,
        }
    }
}
/// The refusal reason of an INVITE whose agent cannot be reached.
const UNREACHABLE: &str = "agent_unreachable";
/// How long a dialog is remembered without a BYE.
const DIALOG_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The most dialogs and transactions kept; beyond this new calls get 503.
pub const MAX_ENTRIES: usize = 100_000;
/// How long the addresses of an agent's host name are used before it is looked up again. The
/// system resolver does not tell how long its answers hold, so this is a fixed, short time.
pub const RESOLVED_LIFETIME: Duration = Duration::from_secs(30);
/// How long a name that did not resolve is remembered, so that a burst of calls to an agent
/// whose name is wrong is not a burst of lookups.
pub const FAILED_LOOKUP_LIFETIME: Duration = Duration::from_secs(5);
/// How many of an agent host name's addresses one INVITE tries, in the resolver's order, when
/// it cannot be sent to one (RFC 3263 section 4.3). Bounded, so that a name with many dead
/// addresses does not have one INVITE open as many connections.
pub const MOST_ADDRESSES_TRIED: usize = 4;

/// What moved a forwarded INVITE on to its agent's next address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failover {
    /// It could not be sent (a transport error, RFC 3261 section 18.4).
    TransportError,
    /// The agent answered 503 Service Unavailable (RFC 3261 section 21.5.4).
    Unavailable,
}

impl Failover {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Failover::TransportError => "transport_error",
            Failover::Unavailable => "503",
        }
    }
}

/// One datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The destination.
    pub to: SocketAddr,
    /// How to reach `to` when the ingress holds no connection to it (a connection it holds, in
    /// either direction, is always used): a datagram, or a new TCP connection.
    pub transport: Transport,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// What happened, for logs and metrics: fixed labels only.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Event {
    /// An initial INVITE was forwarded.
    Admitted,
    /// An initial INVITE was refused with this reason.
    Refused(Reason),
    /// A retransmission was absorbed.
    Retransmission,
    /// An admitted INVITE waits for its agent's host name to be looked up.
    AwaitingName,
    /// A forwarded INVITE the agent has not answered was sent again (Timer A).
    Retransmitted,
    /// The agent never answered a forwarded INVITE; the caller got this answer: 408, or 487
    /// when it had cancelled (Timer B).
    TimedOut(u16),
    /// A CANCEL the agent has not answered was sent again (RFC 3261 section 17.1.2.2, Timer E).
    CancelRetransmitted,
    /// The agent answered a forwarded INVITE provisionally but not finally until Timer C fired:
    /// it was sent a CANCEL (RFC 3261 section 16.8).
    RangTooLong,
    /// The agent did not answer a cancelled INVITE finally within 64xT1 of the CANCEL: the
    /// caller got this answer (487 when it had cancelled, else 408) and the transaction ended
    /// (RFC 3261 section 9.1).
    CancelUnanswered(u16),
    /// A forwarded INVITE the agent had not answered could not be sent to it (a connection that
    /// could not be opened, a failed send): the caller got this answer, 500, or 487 when it had
    /// cancelled (RFC 3261 sections 16.9 and 16.7).
    Undeliverable(u16),
    /// A forwarded INVITE went to the next address of its agent's host name, as a new
    /// transaction (RFC 3263 section 4.3), after this at the address before.
    NextAddress(Failover),
    /// An in-dialog request or a CANCEL was relayed.
    Relayed,
    /// A response was relayed.
    ResponseRelayed,
    /// An agent's response to a forwarded INVITE was kept from the caller (RFC 3261 section
    /// 16.7 step 5): a 100 Trying (the caller had the ingress's own), a final answer other than
    /// 2xx after the caller had one, or anything but a 2xx from an address the INVITE moved on
    /// from.
    ResponseAbsorbed,
    /// A message was answered by the ingress itself (400, 416, 481, OPTIONS 200...).
    Answered(u16),
    /// A message was dropped.
    Dropped,
}

#[derive(Debug)]
struct Dialog {
    /// The From tag of the caller's INVITE: the caller's tag in the dialog's id (RFC 3261
    /// section 12), which says who sent an in-dialog request. None for an RFC 2543 caller.
    caller_tag: Option<String>,
    caller: SocketAddr,
    /// How the caller reached us, and so how requests to it leave.
    caller_transport: Transport,
    callee: SocketAddr,
    callee_transport: Transport,
    since: Instant,
}

impl Dialog {
    /// Whether an in-dialog request came from the caller (else from the agent), by its tags:
    /// the caller's tag is its From tag on the caller's requests and its To tag on the agent's.
    /// None when neither carries it: the request is not of this dialog. Without a caller tag,
    /// by the address it came from.
    fn sent_by_caller(&self, head: &Head, source: SocketAddr) -> Option<bool> {
        let Some(caller_tag) = self.caller_tag.as_deref() else {
            return Some(source != self.callee);
        };
        if uri::tag(value(head, "From")) == Some(caller_tag) {
            Some(true)
        } else if uri::tag(value(head, "To")) == Some(caller_tag) {
            Some(false)
        } else {
            None
        }
    }
}

/// The header field values of a forwarded INVITE that its CANCEL and ACK repeat.
#[derive(Debug)]
struct InviteFields {
    from: String,
    to: String,
    call_id: String,
    cseq_number: String,
}

impl InviteFields {
    fn of(head: &Head) -> Self {
        Self {
            from: value(head, "From").to_owned(),
            to: value(head, "To").to_owned(),
            call_id: value(head, "Call-ID").to_owned(),
            cseq_number: value(head, "CSeq")
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned(),
        }
    }
}

#[derive(Debug)]
struct InviteTransaction {
    caller: SocketAddr,
    /// The branch of the caller's INVITE, from which ours are made.
    caller_branch: String,
    callee: SocketAddr,
    /// The agent's other addresses, the next one last: where the INVITE goes if it cannot be
    /// sent to `callee`.
    fallbacks: Vec<SocketAddr>,
    callee_transport: Transport,
    /// Our branch on the forwarded INVITE (CANCEL and our ACK reuse it).
    branch: String,
    /// Our branch and the address of each earlier attempt, whose late answers are absorbed;
    /// how many there are is part of our branch.
    abandoned: Vec<(String, SocketAddr)>,
    /// The forwarded INVITE's Request-URI.
    request_uri: String,
    /// The forwarded INVITE's From, To, Call-ID and CSeq number, which the CANCEL and ACK the
    /// proxy sends on this transaction repeat (RFC 3261 sections 9.1 and 17.1.1.3).
    invite: InviteFields,
    /// The last response sent to the caller, resent on retransmissions.
    last_response: Vec<u8>,
    /// The answers the ingress gives the caller itself when the agent gives no final one: 408,
    /// or 487 once the caller has cancelled.
    timeout: Vec<u8>,
    terminated: Vec<u8>,
    /// Whether the caller sent a CANCEL.
    cancelled: bool,
    /// When Timer C fires: set when the INVITE is forwarded, reset by every provisional answer
    /// but 100 (RFC 3261 sections 16.6 and 16.7).
    timer_c: Instant,
    phase: Phase,
}

impl InviteTransaction {
    /// Timer B, or the end of a CANCEL's wait: the caller gets the ingress's own final answer
    /// (487 when it cancelled, else 408) and the transaction ends.
    fn give_up(&mut self, now: Instant, out: &mut Vec<Outgoing>) -> Event {
        let calling = matches!(self.phase, Phase::Calling(_));
        let code = self.end(408, now, out);
        if calling {
            Event::TimedOut(code)
        } else {
            Event::CancelUnanswered(code)
        }
    }

    /// Ends the transaction with the ingress's own final answer to the caller: 487 when it
    /// cancelled, else `code` (408, or 500). Returns the code sent.
    fn end(&mut self, code: u16, now: Instant, out: &mut Vec<Outgoing>) -> u16 {
        let (code, answer) = if self.cancelled {
            (487, self.terminated.clone())
        } else if code == 408 {
            (408, self.timeout.clone())
        } else {
            (code, response::with_status(&self.timeout, code))
        };
        out.push(Outgoing {
            to: self.caller,
            transport: Transport::Udp,
            bytes: answer.clone(),
        });
        self.last_response = answer;
        self.phase = Phase::Completed { at: now };
        code
    }

    /// Moves the transaction on for the agent's answer `code` to the INVITE, which the caller
    /// got as `relayed`. Returns whether the caller's CANCEL, held until the agent answered
    /// provisionally, is now due.
    fn on_answer(&mut self, code: u16, relayed: Vec<u8>, now: Instant, timers: Timers) -> bool {
        if let Phase::Completed { .. } = self.phase {
            // A final answer again is the agent retransmitting it, and goes to retransmitting
            // callers too; a late provisional one changes nothing.
            if code >= 200 {
                self.last_response = relayed;
            }
            return false;
        }
        if code > 100 {
            // The caller had the ingress's own 100, which its retransmissions get again.
            self.last_response = relayed;
        }
        if code >= 200 {
            self.phase = Phase::Completed { at: now };
            return false;
        }
        if code > 100 {
            self.timer_c = now + timers.timer_c;
        }
        if !matches!(self.phase, Phase::Calling(_)) {
            return false;
        }
        if self.cancelled {
            self.phase = Phase::Cancelling(CancelSent::new(now, timers.t1, self.callee_transport));
            true
        } else {
            let retry = match &mut self.phase {
                Phase::Calling(unanswered) if !self.fallbacks.is_empty() => {
                    Some(std::mem::take(&mut unanswered.forwarded))
                }
                _ => None,
            };
            self.phase = Phase::Proceeding { retry };
            false
        }
    }

    /// A hop-by-hop request the proxy at `local` sends itself on this transaction: the CANCEL
    /// it relays or sends for Timer C, and the ACK for a non-2xx final response (RFC 3261
    /// sections 9.1, 16.10, 17.1.1.3). Same Request-URI, branch, From, Call-ID and CSeq number
    /// as the forwarded INVITE; `to` is the INVITE's To for a CANCEL and the response's (with
    /// the agent's tag) for an ACK.
    fn hop_request(&self, local: SocketAddr, method: &str, to: &str) -> Outgoing {
        self.hop_request_on(local, method, to, &self.branch, self.callee)
    }

    /// [`InviteTransaction::hop_request`] on the attempt of `branch`, sent to `callee`.
    fn hop_request_on(
        &self,
        local: SocketAddr,
        method: &str,
        to: &str,
        branch: &str,
        callee: SocketAddr,
    ) -> Outgoing {
        let invite = &self.invite;
        let request = format!(
            "{method} {} SIP/2.0\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            self.request_uri,
            via(local, self.callee_transport, branch),
            invite.from,
            to,
            invite.call_id,
            invite.cseq_number,
        );
        Outgoing {
            to: callee,
            transport: self.callee_transport,
            bytes: request.into_bytes(),
        }
    }

    /// When [`Proxy::on_timers`] must next look at this transaction, if ever.
    fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Calling(unanswered) => Some(
                unanswered
                    .retransmit_at
                    .map_or(unanswered.give_up_at, |at| at.min(unanswered.give_up_at)),
            ),
            Phase::Proceeding { .. } => Some(self.timer_c),
            Phase::Cancelling(sent) => Some(
                sent.resend_at
                    .map_or(sent.give_up_at, |at| at.min(sent.give_up_at)),
            ),
            Phase::Completed { .. } => None,
        }
    }
}

/// Where a forwarded INVITE's transaction stands. Every phase but the last ends by a timer;
/// only an agent that keeps sending provisional answers (each restarting Timer C) keeps its
/// transaction from ending.
#[derive(Debug)]
enum Phase {
    /// The agent has not answered at all: Timers A and B.
    Calling(Unanswered),
    /// The agent answered provisionally: Timer C runs. The forwarded INVITE is kept while the
    /// agent has a next address to send it to should this one answer 503.
    Proceeding { retry: Option<Vec<u8>> },
    /// A CANCEL went to the agent (the caller's, or Timer C's).
    Cancelling(CancelSent),
    /// A final answer went to the caller at `at`; the transaction stays to absorb
    /// retransmissions.
    Completed { at: Instant },
}

/// A CANCEL the ingress sent to the agent: over UDP it is sent again after T1, 2xT1... (at
/// most T2 apart) until the agent answers it (RFC 3261 section 17.1.2.2, Timer E), and the
/// agent has 64xT1 to answer the INVITE finally (section 9.1).
#[derive(Debug)]
struct CancelSent {
    give_up_at: Instant,
    /// When the CANCEL goes again; None once the agent answered it, and over TCP.
    resend_at: Option<Instant>,
    interval: Duration,
}

impl CancelSent {
    fn new(now: Instant, t1: Duration, transport: Transport) -> Self {
        Self {
            give_up_at: now + t1 * 64,
            resend_at: (transport == Transport::Udp).then(|| now + t1),
            interval: t1,
        }
    }
}

/// A forwarded INVITE the agent has not answered yet: RFC 3261 Timers A and B.
#[derive(Debug)]
struct Unanswered {
    /// The forwarded INVITE, sent again when Timer A fires.
    forwarded: Vec<u8>,
    /// When Timer A fires next (never over TCP, which is reliable), and its current interval
    /// (doubling from T1).
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timer B (or Timer C, should a large T1 make it fire first): when the caller gets the
    /// transaction's final answer from the ingress.
    give_up_at: Instant,
}

/// An admitted INVITE, ready to forward but for its agent's address: the transaction's state
/// and the answers it may need, built from the request when it was admitted.
#[derive(Debug)]
struct Prepared {
    key: String,
    caller_branch: String,
    branch: String,
    request_uri: String,
    invite: InviteFields,
    forwarded: Vec<u8>,
    trying: Vec<u8>,
    timeout: Vec<u8>,
    terminated: Vec<u8>,
    caller: SocketAddr,
    caller_transport: Transport,
    hop_transport: Transport,
}

/// An admitted INVITE whose next hop is a host name being looked up.
#[derive(Debug)]
struct AwaitingName {
    port: u16,
    /// Taken when the INVITE is forwarded, cancelled or refused.
    prepared: Option<Prepared>,
    /// The 503 the caller gets if the name does not resolve to an address we can send to.
    unreachable: Vec<u8>,
    /// The last response sent to the caller (100, or the 487 or 503 that ended the
    /// transaction), sent again on retransmissions.
    last_response: Vec<u8>,
    since: Instant,
}

/// What the resolver said about a host name: its addresses in the resolver's order, none when
/// the lookup failed.
#[derive(Debug)]
struct Resolution {
    addresses: Vec<IpAddr>,
    until: Instant,
}

/// The per-source flood limiter.
type FloodLimiter = RateLimiter<IpAddr, HashMapStateStore<IpAddr>, MonotonicClock>;

/// The proxy's state.
pub struct Proxy {
    admission: Box<dyn Admit>,
    local: SocketAddr,
    flood: FloodLimiter,
    dialogs: HashMap<String, Dialog>,
    invites: HashMap<String, InviteTransaction>,
    /// Our branch on each forwarded INVITE -> its transaction's key, to match the agent's
    /// responses without a scan.
    branches: HashMap<String, String>,
    timing: Timers,
    /// The secret key of our branches (SipHash, random per process).
    branch_key: RandomState,
    /// When each unanswered INVITE transaction needs attention; an entry whose transaction was
    /// answered or forgotten meanwhile is dropped when it comes up.
    timers: BinaryHeap<Reverse<(Instant, String)>>,
    /// Host names of agents, resolved.
    names: HashMap<String, Resolution>,
    /// Transactions whose next hop is a name being looked up, by transaction key.
    awaiting: HashMap<String, AwaitingName>,
    /// Names being looked up -> the keys of the transactions waiting for them.
    lookups: HashMap<String, Vec<String>>,
    /// Names to look up that the transport loop has not taken yet.
    new_lookups: Vec<String>,
}

/// The addresses a request over `transport` from `local` can go to, in order, at most
/// [`MOST_ADDRESSES_TRIED`]: over UDP it leaves by our socket, so they must be of the socket's
/// family; a TCP connection can be opened to either.
fn reachable(local: SocketAddr, addresses: &[IpAddr], transport: Transport) -> Vec<IpAddr> {
    addresses
        .iter()
        .filter(|ip| transport == Transport::Tcp || ip.is_ipv4() == local.is_ipv4())
        .take(MOST_ADDRESSES_TRIED)
        .copied()
        .collect()
}

/// `forwarded`, an INVITE whose first header field is our Via with branch `old`, with `new`
/// in its place.
fn rebranch(forwarded: &[u8], old: &str, new: &str) -> Option<Vec<u8>> {
    let via_start = forwarded.windows(2).position(|w| w == b"\r\n")? + 2;
    let via_len = forwarded[via_start..]
        .windows(2)
        .position(|w| w == b"\r\n")?;
    let via = std::str::from_utf8(&forwarded[via_start..via_start + via_len]).ok()?;
    let at = via_start + via.find(&format!("branch={old}"))? + "branch=".len();
    let mut rebranched = Vec::with_capacity(forwarded.len() + new.len());
    rebranched.extend_from_slice(&forwarded[..at]);
    rebranched.extend_from_slice(new.as_bytes());
    rebranched.extend_from_slice(&forwarded[at + old.len()..]);
    Some(rebranched)
}

fn socket_of(hp: &HostPort, default_port: u16) -> Option<SocketAddr> {
    let ip = match &hp.host {
        Host::Ipv4(a) => IpAddr::V4(*a),
        Host::Ipv6(a) => IpAddr::V6(*a),
        Host::Domain(_) => return None,
    };
    Some(SocketAddr::new(ip, hp.port_or(default_port)))
}

/// The address a response goes to, from a via-parm: `received`/`rport` when present
/// (RFC 3261 section 18.2.2, RFC 3581), else the sent-by.
fn response_target(via: &str) -> Option<SocketAddr> {
    let sent_by = check::sent_by(via)?;
    let host = uri::param(via, "received")
        .and_then(|r| r.trim_matches(['[', ']']).parse::<IpAddr>().ok())
        .map(|ip| match ip {
            IpAddr::V4(a) => Host::Ipv4(a),
            IpAddr::V6(a) => Host::Ipv6(a),
        })
        .unwrap_or(sent_by.host);
    let port = uri::param(via, "rport")
        .and_then(|p| p.parse().ok())
        .or(sent_by.port);
    socket_of(&HostPort { host, port }, 5060)
}

/// The Via of the ingress at `local` on a request it sends over `transport`.
fn via(local: SocketAddr, transport: Transport, branch: &str) -> String {
    let protocol = match transport {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
    };
    format!("SIP/2.0/{protocol} {local};branch={branch}")
}

fn value<'a>(head: &'a Head, name: &str) -> &'a str {
    head.first(name)
        .map(|f| f.value.as_str())
        .unwrap_or_default()
}

fn top_via(head: &Head) -> String {
    head.first("Via")
        .and_then(|f| split_list(&f.value).into_iter().next())
        .unwrap_or_default()
}

/// Our branch on `message` if it is an INVITE (the ingress only sends INVITEs it forwards).
fn forwarded_invite_branch(message: &[u8]) -> Option<String> {
    if !message.starts_with(b"INVITE ") {
        return None;
    }
    let frame = frame_datagram(message).ok()?;
    let head = head::parse(&message[..frame.head_len]).ok()?;
    uri::param(&top_via(&head), "branch").map(str::to_owned)
}

fn cseq_method(head: &Head) -> &str {
    value(head, "CSeq")
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
}

impl Proxy {
    /// A proxy admitting by `admission`, reachable at `local` (our Via and Record-Route),
    /// limiting each source to `flood` requests outside admitted dialogs, with transaction
    /// `timers`.
    pub fn new(admission: Box<dyn Admit>, local: SocketAddr, flood: Quota, timers: Timers) -> Self {
        Self {
            admission,
            local,
            flood: RateLimiter::hashmap_with_clock(flood, MonotonicClock),
            dialogs: HashMap::new(),
            invites: HashMap::new(),
            branches: HashMap::new(),
            timing: timers,
            branch_key: RandomState::new(),
            timers: BinaryHeap::new(),
            names: HashMap::new(),
            awaiting: HashMap::new(),
            lookups: HashMap::new(),
            new_lookups: Vec::new(),
        }
    }

    /// The host names the transport loop must look up (each once; the answer is given to
    /// [`Proxy::on_resolved`], the addresses in the resolver's order, none on failure).
    pub fn take_lookups(&mut self) -> Vec<String> {
        std::mem::take(&mut self.new_lookups)
    }

    /// Forwards the INVITEs that waited for `name` to its first address of a family we can send
    /// to, or answers them 503 when there is none. The answer is kept for
    /// [`RESOLVED_LIFETIME`] ([`FAILED_LOOKUP_LIFETIME`] for no addresses).
    pub fn on_resolved(
        &mut self,
        name: &str,
        addresses: Vec<IpAddr>,
        now: Instant,
    ) -> (Vec<Outgoing>, Vec<Event>) {
        let (mut out, mut events) = (Vec::new(), Vec::new());
        let waiting = self.lookups.remove(name).unwrap_or_default();
        for key in waiting {
            let Some(awaiting) = self.awaiting.get_mut(&key) else {
                continue;
            };
            let Some(prepared) = awaiting.prepared.take() else {
                continue;
            };
            let port = awaiting.port;
            let mut callees = reachable(self.local, &addresses, prepared.hop_transport)
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port));
            match callees.next() {
                Some(callee) => {
                    self.awaiting.remove(&key);
                    out.push(self.launch(prepared, callee, callees.collect(), now));
                    events.push(Event::Admitted);
                }
                None => {
                    awaiting.last_response = awaiting.unreachable.clone();
                    out.push(Outgoing {
                        to: prepared.caller,
                        transport: Transport::Udp,
                        bytes: awaiting.unreachable.clone(),
                    });
                    events.push(Event::Refused(UNREACHABLE.into()));
                }
            }
        }
        let lifetime = if addresses.is_empty() {
            FAILED_LOOKUP_LIFETIME
        } else {
            RESOLVED_LIFETIME
        };
        self.names.insert(
            name.to_owned(),
            Resolution {
                addresses,
                until: now + lifetime,
            },
        );
        (out, events)
    }

    /// How long an ended INVITE transaction is remembered.
    fn transaction_lifetime(&self) -> Duration {
        TRANSACTION_LIFETIME.max(self.timing.t1 * 64)
    }

    /// When [`Proxy::on_timers`] next has something to do.
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Runs the INVITE transactions' timers that are due as of `now`: retransmits the forwarded
    /// INVITEs whose Timer A fired, answers the callers whose Timer B fired (408, or 487 to one
    /// who cancelled), cancels the INVITEs whose Timer C fired, and answers the callers of
    /// cancelled INVITEs the agent left without a final answer.
    pub fn on_timers(&mut self, now: Instant) -> (Vec<Outgoing>, Vec<Event>) {
        let (mut out, mut events) = (Vec::new(), Vec::new());
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, key))) = self.timers.pop() else {
                break;
            };
            let Some(transaction) = self.invites.get_mut(&key) else {
                continue;
            };
            // An entry that is no longer the transaction's deadline was superseded by a later
            // one (a retransmission, an answer, a reset Timer C).
            if transaction.deadline() != Some(at) {
                continue;
            }
            let event = match &mut transaction.phase {
                Phase::Calling(unanswered) if unanswered.give_up_at > now => {
                    if let Some(at) = unanswered.retransmit_at {
                        out.push(Outgoing {
                            to: transaction.callee,
                            transport: Transport::Udp,
                            bytes: unanswered.forwarded.clone(),
                        });
                        // Scheduled from the previous schedule, not from `now`, so a late
                        // timer does not push every later retransmission (and the count before
                        // Timer B) back.
                        unanswered.interval *= 2;
                        unanswered.retransmit_at = Some(at + unanswered.interval);
                    }
                    Event::Retransmitted
                }
                Phase::Proceeding { .. } => {
                    out.push(transaction.hop_request(self.local, "CANCEL", &transaction.invite.to));
                    transaction.phase = Phase::Cancelling(CancelSent::new(
                        now,
                        self.timing.t1,
                        transaction.callee_transport,
                    ));
                    Event::RangTooLong
                }
                Phase::Cancelling(sent) if sent.give_up_at > now => {
                    if let Some(at) = sent.resend_at {
                        sent.interval = (sent.interval * 2).min(T2.max(self.timing.t1));
                        sent.resend_at = Some(at + sent.interval);
                    }
                    out.push(transaction.hop_request(self.local, "CANCEL", &transaction.invite.to));
                    Event::CancelRetransmitted
                }
                Phase::Calling(_) | Phase::Cancelling(_) => {
                    let event = transaction.give_up(now, &mut out);
                    self.dialogs.remove(&transaction.invite.call_id);
                    event
                }
                Phase::Completed { .. } => continue,
            };
            events.push(event);
            if let Some(deadline) = transaction.deadline() {
                self.timers.push(Reverse((deadline, key)));
            }
        }
        (out, events)
    }

    /// Handles a message the transport loop could not send to `to` (a TCP connection that could
    /// not be opened, ended first or whose queue is full, a failed UDP send). A forwarded INVITE
    /// the agent has not answered goes to the next address of the agent's host name, as a new
    /// transaction with the same Timer B (RFC 3263 section 4.3), unless the caller cancelled.
    /// Without one it ends as if the agent had answered 503 (RFC 3261 section 16.9): the
    /// caller gets 500, what a proxy sends on for a lone 503 (section 16.7 step 6), or 487 if
    /// it had cancelled. Anything else lost is left to its own timers and retransmissions.
    pub fn on_undeliverable(
        &mut self,
        message: &[u8],
        to: SocketAddr,
        now: Instant,
    ) -> (Vec<Outgoing>, Option<Event>) {
        let mut out = Vec::new();
        let Some(branch) = forwarded_invite_branch(message) else {
            return (out, None);
        };
        let Some(key) = self.branches.get(&branch).cloned() else {
            return (out, None);
        };
        let calling = |t: &&InviteTransaction| {
            t.branch == branch && t.callee == to && matches!(t.phase, Phase::Calling(_))
        };
        if self.invites.get(&key).filter(calling).is_none() {
            return (out, None);
        }
        if let Some(next) = self.try_next_address(&key, now) {
            return (
                vec![next],
                Some(Event::NextAddress(Failover::TransportError)),
            );
        }
        let Some(transaction) = self.invites.get_mut(&key) else {
            return (out, None);
        };
        let code = transaction.end(500, now, &mut out);
        self.dialogs.remove(&transaction.invite.call_id);
        (out, Some(Event::Undeliverable(code)))
    }

    /// Sends transaction `key`'s INVITE, which could not be sent to its agent's address or was
    /// answered 503 there, to the agent's next address as a new transaction with a branch of
    /// its own (RFC 3263 section 4.3). An INVITE not yet answered keeps its Timer B; one that
    /// was answered provisionally starts a new one. None when the caller cancelled, the agent
    /// has no next address, or the transaction is past the point of trying one.
    fn try_next_address(&mut self, key: &str, now: Instant) -> Option<Outgoing> {
        let transaction = self.invites.get(key)?;
        let next = *transaction.fallbacks.last()?;
        if transaction.cancelled {
            return None;
        }
        let (forwarded, give_up_at) = match &transaction.phase {
            Phase::Calling(unanswered) => (&unanswered.forwarded, unanswered.give_up_at),
            Phase::Proceeding {
                retry: Some(forwarded),
            } => (forwarded, now + self.timing.t1 * 64),
            _ => return None,
        };
        // At most MOST_ADDRESSES_TRIED attempts: the count fits.
        let attempt = transaction.abandoned.len() as u8 + 1;
        let branch = self.branch_of(
            &transaction.caller_branch,
            transaction.caller,
            &transaction.invite.call_id,
            attempt,
        );
        let forwarded = rebranch(forwarded, &transaction.branch, &branch)?;
        let transaction = self.invites.get_mut(key)?;
        transaction.fallbacks.pop();
        let old_branch = std::mem::replace(&mut transaction.branch, branch.clone());
        let old_callee = std::mem::replace(&mut transaction.callee, next);
        transaction.abandoned.push((old_branch, old_callee));
        transaction.timer_c = now + self.timing.timer_c;
        transaction.phase = Phase::Calling(Unanswered {
            forwarded: forwarded.clone(),
            retransmit_at: (transaction.callee_transport == Transport::Udp)
                .then(|| now + self.timing.t1),
            interval: self.timing.t1,
            give_up_at: give_up_at.min(transaction.timer_c),
        });
        if let Some(dialog) = self.dialogs.get_mut(&transaction.invite.call_id) {
            dialog.callee = next;
        }
        if let Some(deadline) = transaction.deadline() {
            self.timers.push(Reverse((deadline, key.to_owned())));
        }
        let transport = transaction.callee_transport;
        self.branches.insert(branch, key.to_owned());
        Some(Outgoing {
            to: next,
            transport,
            bytes: forwarded,
        })
    }

    /// The number of dialogs and INVITE transactions held.
    pub fn live(&self) -> (usize, usize) {
        (self.dialogs.len(), self.invites.len() + self.awaiting.len())
    }

    fn is_local(&self, hp: &HostPort) -> bool {
        socket_of(hp, 5060) == Some(self.local)
    }

    /// Forgets expired state.
    pub fn expire(&mut self, now: Instant) {
        self.flood.retain_recent();
        self.flood.shrink_to_fit();
        let lifetime = self.transaction_lifetime();
        // Only ended transactions are forgotten: the others end by their timers.
        self.invites.retain(|_, t| match t.phase {
            Phase::Completed { at } => now.duration_since(at) < lifetime,
            _ => true,
        });
        self.awaiting
            .retain(|_, a| now.duration_since(a.since) < lifetime);
        self.names.retain(|_, resolution| resolution.until > now);
        let invites = &self.invites;
        self.branches.retain(|_, key| invites.contains_key(key));
        self.dialogs
            .retain(|_, d| now.duration_since(d.since) < DIALOG_LIFETIME);
    }

    /// Handles one message from `source`, received over `transport`.
    pub fn on_message(
        &mut self,
        bytes: &[u8],
        source: SocketAddr,
        transport: Transport,
        now: Instant,
    ) -> (Vec<Outgoing>, Event) {
        match check::classify_datagram(bytes) {
            Verdict::Drop(_) => (Vec::new(), Event::Dropped),
            Verdict::Reject(rejection) => match rejection.head {
                Some(head) => {
                    let reply = response::build(&head, rejection.code, &rejection.headers);
                    (
                        vec![Outgoing {
                            to: source,
                            transport: Transport::Udp,
                            bytes: reply,
                        }],
                        Event::Answered(rejection.code),
                    )
                }
                None => (Vec::new(), Event::Dropped),
            },
            Verdict::Response(response) => self.on_response(bytes, &response, now),
            Verdict::Request(request) => self.on_request(bytes, &request, source, transport, now),
        }
    }

    fn answer(
        head: &Head,
        to: SocketAddr,
        code: u16,
        extra: &[(String, String)],
    ) -> (Vec<Outgoing>, Event) {
        let bytes = response::build(head, code, extra);
        let transport = Transport::Udp;
        (
            vec![Outgoing {
                to,
                transport,
                bytes,
            }],
            Event::Answered(code),
        )
    }

    /// The `Allow` field of answers to OPTIONS and of 405: the methods the ingress handles.
    fn allow() -> [(String, String); 1] {
        [(
            "Allow".to_owned(),
            "INVITE, ACK, BYE, CANCEL, OPTIONS".to_owned(),
        )]
    }

    /// The Record-Route of an initial INVITE received over `caller` and forwarded over `agent`.
    /// When the two differ it is doubled (RFC 5658): the top entry is the address the agent's
    /// in-dialog requests come to, the bottom one the address the caller's come to, so neither
    /// side switches transport.
    fn record_route(&self, caller: Transport, agent: Transport) -> String {
        let entry = |transport| match transport {
            Transport::Udp => format!("<sip:{};lr>", self.local),
            Transport::Tcp => format!("<sip:{};transport=tcp;lr>", self.local),
        };
        if caller == agent {
            entry(agent)
        } else {
            format!("{}, {}", entry(agent), entry(caller))
        }
    }

    /// How many of the first Route elements name the ingress (two after a double
    /// Record-Route), all of which it consumes.
    fn leading_routes_naming_us(&self, head: &Head) -> usize {
        head.all("Route")
            .flat_map(|f| split_list(&f.value))
            .take_while(|route| {
                uri::host_port(uri::uri_of(route)).is_some_and(|hp| self.is_local(&hp))
            })
            .count()
    }

    /// Our Via on a request sent over `transport`.
    fn our_via(&self, transport: Transport, branch: &str) -> String {
        via(self.local, transport, branch)
    }

    /// Our branch on a request forwarded from `source`.
    fn branch_for(&self, head: &Head, source: SocketAddr) -> String {
        let via = top_via(head);
        let incoming = uri::param(&via, "branch").unwrap_or_default();
        self.branch_of(incoming, source, value(head, "Call-ID"), 0)
    }

    /// Our branch on a request whose sender's branch is `incoming`, sent from `source` in call
    /// `call_id`, on its `attempt`th address (0 for the first): the same for its
    /// retransmissions, and keyed by a secret, so that a response proves the ingress forwarded
    /// its request to the sender its next Via names. A later attempt is a new transaction with
    /// a branch of its own (RFC 3263 section 4.3), which names its attempt.
    fn branch_of(&self, incoming: &str, source: SocketAddr, call_id: &str, attempt: u8) -> String {
        let tag = self
            .branch_key
            .hash_one((incoming, source, call_id, attempt));
        match attempt {
            0 => format!("{}{tag:016x}", check::BRANCH_COOKIE),
            _ => format!("{}{tag:016x}.{attempt}", check::BRANCH_COOKIE),
        }
    }

    /// Whether `ours` is a branch the ingress made for a request whose sender's branch is
    /// `incoming`, sent from `source` in call `call_id`.
    fn made_branch(&self, ours: &str, incoming: &str, source: SocketAddr, call_id: &str) -> bool {
        let attempt = ours
            .rsplit_once('.')
            .and_then(|(_, attempt)| attempt.parse().ok())
            .unwrap_or(0);
        ours == self.branch_of(incoming, source, call_id, attempt)
    }

    fn transaction_key(head: &Head, source: SocketAddr) -> String {
        let via = top_via(head);
        let branch = uri::param(&via, "branch").unwrap_or_default();
        format!("{branch}|{source}|{}", value(head, "Call-ID"))
    }

    fn on_request(
        &mut self,
        bytes: &[u8],
        request: &Request,
        source: SocketAddr,
        transport: Transport,
        now: Instant,
    ) -> (Vec<Outgoing>, Event) {
        let head = &request.head;
        let in_dialog = uri::tag(value(head, "To")).is_some();
        // Requests of the dialogs the ingress admitted are never limited; any other, in-dialog
        // ones naming no such dialog included, would otherwise cost an unlimited 481 each.
        let admitted_dialog = in_dialog && self.dialogs.contains_key(value(head, "Call-ID"));
        if !admitted_dialog
            && request.method != "ACK"
            && let Err(not_until) = self.flood.check_key(&source.ip())
        {
            if !self.admission.knows_source(source.ip()) {
                return (Vec::new(), Event::Refused("flood".into()));
            }
            let wait = not_until.wait_time_from(MonotonicClock.now());
            let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let extra = [("Retry-After".to_owned(), retry_after.max(1).to_string())];
            let (out, _) = Self::answer(head, source, 503, &extra);
            return (out, Event::Refused("flood".into()));
        }
        let addressed_to_us = uri::user(&request.uri).is_none()
            && uri::host_port(&request.uri).is_some_and(|hp| self.is_local(&hp));
        match request.method.as_str() {
            "OPTIONS" if addressed_to_us && !in_dialog => {
                Self::answer(head, source, 200, &Self::allow())
            }
            "CANCEL" => self.on_cancel(head, source, now),
            "INVITE" if !in_dialog => self.on_invite(bytes, request, source, transport, now),
            "ACK" if !in_dialog => (Vec::new(), Event::Dropped),
            _ if in_dialog => self.in_dialog(bytes, request, source),
            _ => Self::answer(head, source, 405, &Self::allow()),
        }
    }

    /// What the policy is told about an INVITE.
    fn facts(&self, request: &Request, source: SocketAddr, transport: Transport) -> Facts {
        let head = &request.head;
        let (from_user, from_display_name) = admission::party(value(head, "From"));
        let (to_user, to_display_name) = admission::party(value(head, "To"));
        let text = admission::Text {
            request_uri: &request.uri,
            request_user: uri::user(&request.uri).unwrap_or_default(),
            from_user,
            from_display_name,
            to_user,
            to_display_name,
        };
        let headers = head
            .fields
            .iter()
            .filter(|f| self.admission.wants_header(&f.name))
            .map(|f| (f.name.as_str(), f.value.as_str()));
        Facts::new(source, transport, text, headers)
    }

    fn on_invite(
        &mut self,
        bytes: &[u8],
        request: &Request,
        source: SocketAddr,
        transport: Transport,
        now: Instant,
    ) -> (Vec<Outgoing>, Event) {
        let head = &request.head;
        let key = Self::transaction_key(head, source);
        let looped = head
            .all("Via")
            .flat_map(|f| split_list(&f.value))
            .filter_map(|via| check::sent_by(&via))
            .any(|hp| self.is_local(&hp));
        if looped {
            let (out, _) = Self::answer(head, source, 482, &[]);
            return (out, Event::Refused("loop".into()));
        }
        let resent = match (self.invites.get(&key), self.awaiting.get(&key)) {
            (Some(transaction), _) => Some(transaction.last_response.clone()),
            (None, Some(awaiting)) => Some(awaiting.last_response.clone()),
            (None, None) => None,
        };
        if let Some(bytes) = resent {
            let out = Outgoing {
                to: source,
                transport: Transport::Udp,
                bytes,
            };
            return (vec![out], Event::Retransmission);
        }
        let facts = self.facts(request, source, transport);
        let forward = match self.admission.decide(facts) {
            admission::Verdict::Drop { reason } => return (Vec::new(), Event::Refused(reason)),
            admission::Verdict::Reject { code, reason } => {
                let (out, _) = Self::answer(head, source, code, &[]);
                return (out, Event::Refused(reason));
            }
            admission::Verdict::Forward(forward) => forward,
        };
        let held = self.invites.len() + self.awaiting.len();
        if held >= MAX_ENTRIES || self.dialogs.len() >= MAX_ENTRIES {
            let (out, _) = Self::answer(
                head,
                source,
                503,
                &[("Retry-After".to_owned(), "5".to_owned())],
            );
            return (out, Event::Refused("overloaded".into()));
        }
        let hop = &forward.next_hop;
        let caller_branch = uri::param(&top_via(head), "branch")
            .unwrap_or_default()
            .to_owned();
        let branch = self.branch_of(&caller_branch, source, value(head, "Call-ID"), 0);
        let edits = Edits {
            request_uri: Some(forward.agent_uri.clone()),
            via: self.our_via(hop.transport, &branch),
            record_route: Some(self.record_route(transport, hop.transport)),
            headers: forward.headers.clone(),
            consume_route: 0,
            source: Some(source),
        };
        let trying = response::build(head, 100, &[]);
        let prepared = Prepared {
            key,
            caller_branch,
            branch,
            request_uri: forward.agent_uri.clone(),
            invite: InviteFields::of(head),
            forwarded: forward::forward(bytes, request, &edits),
            trying: trying.clone(),
            timeout: response::build(head, 408, &[]),
            terminated: response::build(head, 487, &[]),
            caller: source,
            caller_transport: transport,
            hop_transport: hop.transport,
        };
        let trying = Outgoing {
            to: source,
            transport: Transport::Udp,
            bytes: trying,
        };
        let addresses = match hop.host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => match self.names.get(&hop.host).filter(|r| r.until > now) {
                Some(resolution) => reachable(self.local, &resolution.addresses, hop.transport),
                None => {
                    self.await_name(hop.host.clone(), hop.port, prepared, head, now);
                    return (vec![trying], Event::AwaitingName);
                }
            },
        };
        let mut callees = addresses
            .into_iter()
            .map(|ip| SocketAddr::new(ip, hop.port));
        let Some(callee) = callees.next() else {
            let (out, _) = Self::answer(head, source, 503, &[]);
            return (out, Event::Refused(UNREACHABLE.into()));
        };
        let forwarded = self.launch(prepared, callee, callees.collect(), now);
        (vec![trying, forwarded], Event::Admitted)
    }

    /// Holds an admitted INVITE until `name` is looked up, asking the transport loop for the
    /// lookup unless one is under way.
    fn await_name(
        &mut self,
        name: String,
        port: u16,
        prepared: Prepared,
        head: &Head,
        now: Instant,
    ) {
        let key = prepared.key.clone();
        self.awaiting.insert(
            key.clone(),
            AwaitingName {
                port,
                last_response: prepared.trying.clone(),
                prepared: Some(prepared),
                unreachable: response::build(head, 503, &[]),
                since: now,
            },
        );
        let waiting = self.lookups.entry(name.clone()).or_default();
        if waiting.is_empty() {
            self.new_lookups.push(name);
        }
        waiting.push(key);
    }

    /// Starts the transaction of an admitted INVITE whose agent is at `callee`, and else at
    /// `fallbacks` in order: the forwarded INVITE to send, its timers, and the dialog.
    fn launch(
        &mut self,
        prepared: Prepared,
        callee: SocketAddr,
        mut fallbacks: Vec<SocketAddr>,
        now: Instant,
    ) -> Outgoing {
        let Prepared {
            key,
            caller_branch,
            branch,
            request_uri,
            invite,
            forwarded,
            trying,
            timeout,
            terminated,
            caller,
            caller_transport,
            hop_transport,
        } = prepared;
        let call_id = invite.call_id.clone();
        let caller_tag = uri::tag(&invite.from).map(str::to_owned);
        let timer_c = now + self.timing.timer_c;
        let unanswered = Unanswered {
            forwarded: forwarded.clone(),
            retransmit_at: (hop_transport == Transport::Udp).then(|| now + self.timing.t1),
            interval: self.timing.t1,
            // RFC 3261 section 16.8: Timer C firing before any answer counts as a 408, which
            // is what Timer B gives the caller.
            give_up_at: (now + self.timing.t1 * 64).min(timer_c),
        };
        fallbacks.reverse();
        let transaction = InviteTransaction {
            caller,
            caller_branch,
            callee,
            fallbacks,
            callee_transport: hop_transport,
            branch: branch.clone(),
            abandoned: Vec::new(),
            request_uri,
            invite,
            last_response: trying,
            timeout,
            terminated,
            cancelled: false,
            timer_c,
            phase: Phase::Calling(unanswered),
        };
        if let Some(deadline) = transaction.deadline() {
            self.timers.push(Reverse((deadline, key.clone())));
        }
        self.branches.insert(branch, key.clone());
        self.invites.insert(key, transaction);
        self.dialogs.insert(
            call_id,
            Dialog {
                caller_tag,
                caller,
                caller_transport,
                callee,
                callee_transport: hop_transport,
                since: now,
            },
        );
        Outgoing {
            to: callee,
            transport: hop_transport,
            bytes: forwarded,
        }
    }

    fn on_cancel(
        &mut self,
        head: &Head,
        source: SocketAddr,
        now: Instant,
    ) -> (Vec<Outgoing>, Event) {
        let key = Self::transaction_key(head, source);
        if let Some(awaiting) = self.awaiting.get_mut(&key) {
            // Nothing was sent to the agent yet: the INVITE ends here.
            let mut out = vec![Outgoing {
                to: source,
                transport: Transport::Udp,
                bytes: response::build(head, 200, &[]),
            }];
            if let Some(prepared) = awaiting.prepared.take() {
                awaiting.last_response = prepared.terminated.clone();
                out.push(Outgoing {
                    to: source,
                    transport: Transport::Udp,
                    bytes: prepared.terminated,
                });
            }
            return (out, Event::Answered(487));
        }
        let (local, t1) = (self.local, self.timing.t1);
        let Some(transaction) = self.invites.get_mut(&key) else {
            return Self::answer(head, source, 481, &[]);
        };
        let mut out = vec![Outgoing {
            to: source,
            transport: Transport::Udp,
            bytes: response::build(head, 200, &[]),
        }];
        transaction.cancelled = true;
        let event = match transaction.phase {
            // RFC 3261 section 9.1: not before the agent has answered; the first provisional
            // answer sends it.
            Phase::Calling(_) => Event::Relayed,
            Phase::Proceeding { .. } => {
                out.push(transaction.hop_request(local, "CANCEL", &transaction.invite.to));
                transaction.phase =
                    Phase::Cancelling(CancelSent::new(now, t1, transaction.callee_transport));
                if let Some(deadline) = transaction.deadline() {
                    self.timers.push(Reverse((deadline, key)));
                }
                Event::Relayed
            }
            // The caller resends its CANCEL when our 200 was lost, and so ours, which may have
            // been lost too, goes again.
            Phase::Cancelling(_) => {
                out.push(transaction.hop_request(local, "CANCEL", &transaction.invite.to));
                Event::Relayed
            }
            Phase::Completed { .. } => Event::Answered(200),
        };
        (out, event)
    }

    fn in_dialog(
        &mut self,
        bytes: &[u8],
        request: &Request,
        source: SocketAddr,
    ) -> (Vec<Outgoing>, Event) {
        let head = &request.head;
        let Some(dialog) = self.dialogs.get(value(head, "Call-ID")) else {
            if request.method == "ACK" {
                return (Vec::new(), Event::Dropped);
            }
            return Self::answer(head, source, 481, &[]);
        };
        let Some(from_caller) = dialog.sent_by_caller(head, source) else {
            if request.method == "ACK" {
                return (Vec::new(), Event::Dropped);
            }
            return Self::answer(head, source, 481, &[]);
        };
        let (to, transport) = if from_caller {
            (dialog.callee, dialog.callee_transport)
        } else {
            (dialog.caller, dialog.caller_transport)
        };
        let branch = self.branch_for(head, source);
        let ours = self.leading_routes_naming_us(head);
        let edits = Edits {
            request_uri: None,
            via: self.our_via(transport, &branch),
            record_route: None,
            headers: Vec::new(),
            consume_route: ours,
            source: Some(source),
        };
        let forwarded = forward::forward(bytes, request, &edits);
        (
            vec![Outgoing {
                to,
                transport,
                bytes: forwarded,
            }],
            Event::Relayed,
        )
    }

    fn on_response(
        &mut self,
        bytes: &[u8],
        response: &Response,
        now: Instant,
    ) -> (Vec<Outgoing>, Event) {
        let head = &response.head;
        let Some(first) = head.first("Via") else {
            return (Vec::new(), Event::Dropped);
        };
        let elements = split_list(&first.value);
        let ours = elements
            .first()
            .and_then(|v| check::sent_by(v))
            .is_some_and(|hp| self.is_local(&hp));
        if !ours {
            return (Vec::new(), Event::Dropped);
        }
        if cseq_method(head) == "CANCEL" {
            // Only the ingress's own CANCELs carry its Via: the agent answered one, which need
            // not go again. The answer goes no further.
            let our_branch = uri::param(&elements[0], "branch").unwrap_or_default();
            if let Some(key) = self.branches.get(our_branch)
                && let Some(transaction) = self.invites.get_mut(key)
                && let Phase::Cancelling(sent) = &mut transaction.phase
            {
                sent.resend_at = None;
                self.timers.push(Reverse((sent.give_up_at, key.clone())));
            }
            return (Vec::new(), Event::Dropped);
        }
        let next_via = match elements.get(1) {
            Some(next) => next.clone(),
            None => head
                .all("Via")
                .nth(1)
                .and_then(|f| split_list(&f.value).into_iter().next())
                .unwrap_or_default(),
        };
        // A next Via naming the ingress again is forged or garbled (a request that passed
        // through twice was refused with 482): relaying would send the response to ourselves.
        let Some(to) = response_target(&next_via).filter(|to| *to != self.local) else {
            return (Vec::new(), Event::Dropped);
        };
        // Only a response to a request the ingress forwarded from `to` carries the branch it
        // made for that: anything else would have the ingress send whatever it is told to
        // wherever it is told (a reflector).
        let incoming = uri::param(&next_via, "branch").unwrap_or_default();
        let our_branch = uri::param(&elements[0], "branch").unwrap_or_default();
        if !self.made_branch(our_branch, incoming, to, value(head, "Call-ID")) {
            return (Vec::new(), Event::Dropped);
        }
        let mut relayed = Vec::with_capacity(bytes.len());
        relayed.extend_from_slice(&bytes[..first.span.start]);
        if elements.len() > 1 {
            relayed.extend_from_slice(format!("Via: {}\r\n", elements[1..].join(", ")).as_bytes());
        }
        relayed.extend_from_slice(&bytes[first.span.end..response.frame.len()]);

        let method = cseq_method(head);
        if method == "INVITE"
            && let Some(key) = self.branches.get(our_branch)
            && let Some(transaction) = self.invites.get(key)
        {
            if let Some((branch, callee)) = transaction
                .abandoned
                .iter()
                .find(|(branch, _)| branch == our_branch)
            {
                // An address the INVITE moved on from answers late. Only a 2xx goes on (RFC
                // 3261 section 16.7 step 10); a final refusal, the 503 itself again when our
                // ACK was lost, is acknowledged again.
                if (200..300).contains(&response.code) {
                    return (
                        vec![Outgoing {
                            to,
                            transport: Transport::Udp,
                            bytes: relayed,
                        }],
                        Event::ResponseRelayed,
                    );
                }
                let ack = (response.code >= 300).then(|| {
                    transaction.hop_request_on(
                        self.local,
                        "ACK",
                        value(head, "To"),
                        branch,
                        *callee,
                    )
                });
                return (ack.into_iter().collect(), Event::ResponseAbsorbed);
            }
            if response.code == 503 {
                let ack = transaction.hop_request(self.local, "ACK", value(head, "To"));
                let key = key.clone();
                if let Some(next) = self.try_next_address(&key, now) {
                    return (vec![ack, next], Event::NextAddress(Failover::Unavailable));
                }
            }
        }
        let transaction = match method {
            "INVITE" => self
                .branches
                .get(our_branch)
                .and_then(|key| Some((key, self.invites.get_mut(key)?))),
            _ => None,
        };
        if response.code == 503 && transaction.is_some() {
            // RFC 3261 section 16.7 step 6: the agent is unavailable, not the ingress, so the
            // caller gets 500 and does not take the ingress for down.
            relayed = response::with_status(&relayed, 500);
        }
        // RFC 3261 section 16.7 step 5: the caller had the ingress's own 100, and once it has a
        // final answer only a 2xx goes to it.
        let forwarded = transaction
            .as_ref()
            .is_none_or(|(_, t)| match response.code {
                100 => false,
                200..=299 => true,
                _ => !matches!(t.phase, Phase::Completed { .. }),
            });
        let mut out = Vec::new();
        if forwarded {
            out.push(Outgoing {
                to,
                transport: Transport::Udp,
                bytes: relayed.clone(),
            });
        }
        if let Some((key, transaction)) = transaction {
            if response.code >= 300 {
                out.push(transaction.hop_request(self.local, "ACK", value(head, "To")));
                self.dialogs.remove(value(head, "Call-ID"));
            }
            let deadline = transaction.deadline();
            if transaction.on_answer(response.code, relayed, now, self.timing) {
                out.push(transaction.hop_request(self.local, "CANCEL", &transaction.invite.to));
            }
            if let Some(changed) = transaction.deadline().filter(|d| Some(*d) != deadline) {
                self.timers.push(Reverse((changed, key.clone())));
            }
        } else if method == "BYE" && response.code >= 200 {
            self.dialogs.remove(value(head, "Call-ID"));
        }
        let event = if forwarded {
            Event::ResponseRelayed
        } else {
            Event::ResponseAbsorbed
        };
        (out, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn proxy(rate: u32, burst: u32) -> Proxy {
        let config = crate::config::Config::parse(crate::config::DEMO).expect("demo");
        proxy_of(&config, rate, burst)
    }

    fn proxy_of(config: &crate::config::Config, rate: u32, burst: u32) -> Proxy {
        let rules = crate::admission::oracle::NativeRules::new(config).expect("rules");
        let quota = Quota::per_second(NonZeroU32::new(rate).expect("rate"))
            .allow_burst(NonZeroU32::new(burst).expect("burst"));
        Proxy::new(
            Box::new(rules),
            "127.0.0.1:5060".parse().expect("addr"),
            quota,
            Timers::default(),
        )
    }

    fn invite(n: u32) -> Vec<u8> {
        format!(
            "INVITE sip:sales@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{n}\r\n\
             From: <sip:+15551230000@pbx>;tag=1\r\nTo: <sip:sales@127.0.0.1>\r\nCall-ID: flood-{n}\r\n\
             CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn a_flooding_source_gets_503_with_retry_after_and_unknown_sources_nothing() {
        let mut proxy = proxy(1, 2);
        let known: SocketAddr = "127.0.0.1:5070".parse().expect("addr");
        for n in 0..2 {
            let (_, event) = proxy.on_message(&invite(n), known, Transport::Udp, Instant::now());
            assert_eq!(event, Event::Admitted);
        }
        let (out, event) = proxy.on_message(&invite(2), known, Transport::Udp, Instant::now());
        assert_eq!(event, Event::Refused("flood".into()));
        let text = String::from_utf8_lossy(&out[0].bytes).into_owned();
        assert!(
            text.starts_with("SIP/2.0 503 Service Unavailable\r\n"),
            "{text}"
        );
        assert!(text.contains("Retry-After: 1\r\n"), "{text}");

        let unknown: SocketAddr = "127.0.0.9:5070".parse().expect("addr");
        for n in 10..12 {
            proxy.on_message(&invite(n), unknown, Transport::Udp, Instant::now());
        }
        let (out, event) = proxy.on_message(&invite(12), unknown, Transport::Udp, Instant::now());
        assert_eq!((out.len(), event), (0, Event::Refused("flood".into())));
    }

    /// An in-dialog `method` request of call `n` (To has a tag).
    fn in_dialog_request(method: &str, n: u32) -> Vec<u8> {
        format!(
            "{method} sip:sales@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKd{n}\r\n\
             From: <sip:+15551230000@pbx>;tag=1\r\nTo: <sip:sales@127.0.0.1>;tag=a\r\n\
             Call-ID: flood-{n}\r\nCSeq: 2 {method}\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn requests_naming_no_admitted_dialog_count_against_the_flood_limit_and_calls_do_not() {
        let mut proxy = proxy(1, 3);
        let now = Instant::now();
        let (known, unknown) = (caller(), "127.0.0.9:5070".parse().expect("addr"));
        let (_, event) = proxy.on_message(&invite(1), known, Transport::Udp, now);
        assert_eq!(event, Event::Admitted);
        for n in 2..4 {
            let (_, event) =
                proxy.on_message(&in_dialog_request("BYE", n), known, Transport::Udp, now);
            assert_eq!(event, Event::Answered(481));
        }
        let (out, event) =
            proxy.on_message(&in_dialog_request("BYE", 4), known, Transport::Udp, now);
        assert_eq!(event, Event::Refused("flood".into()));
        assert!(
            text(&out[0]).starts_with("SIP/2.0 503 "),
            "{}",
            text(&out[0])
        );
        for _ in 0..10 {
            let (_, event) =
                proxy.on_message(&in_dialog_request("INFO", 1), known, Transport::Udp, now);
            assert_eq!(event, Event::Relayed, "the admitted call is not limited");
        }
        for n in 10..13 {
            proxy.on_message(&in_dialog_request("BYE", n), unknown, Transport::Udp, now);
        }
        let (out, event) =
            proxy.on_message(&in_dialog_request("BYE", 13), unknown, Transport::Udp, now);
        assert_eq!((out.len(), event), (0, Event::Refused("flood".into())));
    }

    #[test]
    fn in_dialog_requests_go_the_way_their_tags_say_and_others_get_481() {
        let mut proxy = proxy(100, 100);
        let now = Instant::now();
        let (out, _) = proxy.on_message(&invite(14), caller(), Transport::Udp, now);
        let agent = out[1].to;
        // The agent's BYE comes from another port than the one it was reached at.
        let agent_bye = "BYE sip:+15551230000@127.0.0.1:5070 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKbye\r\n\
             From: <sip:sales@127.0.0.1>;tag=a\r\nTo: <sip:+15551230000@pbx>;tag=1\r\n\
             Call-ID: flood-14\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n";
        let elsewhere = SocketAddr::new(agent.ip(), 40000);
        let (out, event) = proxy.on_message(agent_bye.as_bytes(), elsewhere, Transport::Udp, now);
        assert_eq!(event, Event::Relayed);
        assert_eq!(
            out[0].to,
            caller(),
            "to the caller, whose tag is its To tag"
        );

        let (out, event) = proxy.on_message(
            &in_dialog_request("INFO", 14),
            caller(),
            Transport::Udp,
            now,
        );
        assert_eq!((event, out[0].to), (Event::Relayed, agent));

        let strangers = String::from_utf8(in_dialog_request("BYE", 14))
            .expect("text")
            .replace(";tag=1", ";tag=other");
        let (out, event) = proxy.on_message(strangers.as_bytes(), caller(), Transport::Udp, now);
        assert_eq!(
            event,
            Event::Answered(481),
            "the Call-ID alone is not the dialog"
        );
        assert!(text(&out[0]).starts_with("SIP/2.0 481 "));
    }

    #[test]
    fn an_invite_that_passed_through_the_ingress_before_is_482() {
        let mut proxy = proxy(100, 100);
        let looped = String::from_utf8(invite(7))
            .expect("utf8")
            .replace("Via: ", "Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKagent\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKours\r\nVia: ");
        let caller: SocketAddr = "127.0.0.1:5090".parse().expect("addr");
        let (out, event) =
            proxy.on_message(looped.as_bytes(), caller, Transport::Udp, Instant::now());
        assert_eq!(event, Event::Refused("loop".into()));
        assert!(
            String::from_utf8_lossy(&out[0].bytes).starts_with("SIP/2.0 482 Loop Detected\r\n")
        );
    }

    #[test]
    fn retransmissions_are_absorbed_and_admitted_calls_are_tracked() {
        let mut proxy = proxy(100, 100);
        let caller = caller();
        let start = Instant::now();
        let (out, event) = proxy.on_message(&invite(1), caller, Transport::Udp, start);
        assert_eq!((event, out.len()), (Event::Admitted, 2));
        assert_eq!(
            out[1].to,
            "127.0.0.1:5090".parse::<SocketAddr>().expect("agent")
        );
        let (again, event) = proxy.on_message(&invite(1), caller, Transport::Udp, Instant::now());
        assert_eq!(event, Event::Retransmission);
        assert_eq!(
            again,
            vec![out[0].clone()],
            "the 100 Trying is sent again, nothing forwarded"
        );
        assert_eq!(proxy.live(), (1, 1));
        assert_eq!(proxy.branches.len(), 1);
        proxy.expire(start + DEFAULT_T1 * 63);
        assert_eq!(proxy.live(), (1, 1), "a transaction under way is kept");
        let ended = start + DEFAULT_T1 * 64;
        let (_, events) = proxy.on_timers(ended);
        assert_eq!(events.last(), Some(&Event::TimedOut(408)));
        assert_eq!(
            proxy.live(),
            (0, 1),
            "the call is over, its transaction kept"
        );
        proxy.expire(ended + proxy.transaction_lifetime() - Duration::from_millis(1));
        assert_eq!(proxy.live(), (0, 1), "retransmissions are still absorbed");
        proxy.expire(ended + proxy.transaction_lifetime());
        assert_eq!(proxy.live(), (0, 0));
        assert!(
            proxy.branches.is_empty(),
            "the branch index is expired with them"
        );
    }

    fn text(out: &Outgoing) -> String {
        String::from_utf8_lossy(&out.bytes).into_owned()
    }

    #[test]
    fn an_unanswered_invite_is_retransmitted_at_doubling_intervals_then_the_caller_gets_408() {
        let mut proxy = proxy(100, 100);
        let caller = caller();
        let start = Instant::now();
        let (out, _) = proxy.on_message(&invite(1), caller, Transport::Udp, start);
        let forwarded = out[1].clone();
        assert_eq!(proxy.next_timer(), Some(start + DEFAULT_T1));
        assert_eq!(proxy.on_timers(start + DEFAULT_T1 / 2), (vec![], vec![]));

        // Timer A: T1, 2T1, 4T1... after the last send: six retransmissions before 64 x T1.
        let mut sent_at = Vec::new();
        let mut at = start;
        while let Some(next) = proxy.next_timer() {
            at = next;
            let (out, events) = proxy.on_timers(at);
            if events == [Event::TimedOut(408)] {
                break;
            }
            assert_eq!(
                (out, events),
                (vec![forwarded.clone()], vec![Event::Retransmitted])
            );
            sent_at.push((at - start).as_millis());
        }
        assert_eq!(sent_at, [500, 1500, 3500, 7500, 15500, 31500]);

        // Timer B at 64 x T1: 408 to the caller, who gets it again if it retransmits.
        assert_eq!(at - start, DEFAULT_T1 * 64);
        assert_eq!(proxy.next_timer(), None);
        let (again, event) = proxy.on_message(&invite(1), caller, Transport::Udp, at);
        assert_eq!(event, Event::Retransmission);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].to, caller);
        assert!(
            text(&again[0]).starts_with("SIP/2.0 408 Request Timeout\r\n"),
            "{}",
            text(&again[0])
        );
        assert_eq!(
            proxy.live(),
            (0, 1),
            "the dialog that never was is forgotten"
        );
    }

    #[test]
    fn a_caller_on_tcp_gets_a_double_record_route_and_both_routes_are_consumed() {
        let mut proxy = proxy(100, 100);
        let caller = caller();
        let (out, _) = proxy.on_message(&invite(3), caller, Transport::Tcp, Instant::now());
        assert!(
            text(&out[1]).contains(
                "\r\nRecord-Route: <sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:5060;transport=tcp;lr>\r\n"
            ),
            "{}",
            text(&out[1])
        );
        let (out, _) = proxy.on_message(&invite(4), caller, Transport::Udp, Instant::now());
        assert!(
            text(&out[1]).contains("\r\nRecord-Route: <sip:127.0.0.1:5060;lr>\r\n"),
            "{}",
            text(&out[1])
        );

        // The caller's BYE carries the route set in reverse: the TCP entry first.
        let bye = "BYE sip:sales@127.0.0.1:5090 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bKbye\r\n\
             Route: <sip:127.0.0.1:5060;transport=tcp;lr>, <sip:127.0.0.1:5060;lr>\r\n\
             From: <sip:+15551230000@pbx>;tag=1\r\nTo: <sip:sales@127.0.0.1>;tag=a\r\n\
             Call-ID: flood-3\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
        let (out, event) = proxy.on_message(bye.as_bytes(), caller, Transport::Tcp, Instant::now());
        assert_eq!(event, Event::Relayed);
        assert!(!text(&out[0]).contains("Route:"), "{}", text(&out[0]));
        assert!(text(&out[0]).contains("\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch="));

        // A request from the agent to the caller on TCP leaves over TCP, and says so in our Via.
        let agent: SocketAddr = "127.0.0.1:5090".parse().expect("agent");
        let bye_from_agent = "BYE sip:+15551230000@127.0.0.1:5070;transport=tcp SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKfromagent\r\n\
             Route: <sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:5060;transport=tcp;lr>\r\n\
             From: <sip:sales@127.0.0.1>;tag=a\r\nTo: <sip:+15551230000@pbx>;tag=1\r\n\
             Call-ID: flood-3\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n";
        let (out, event) = proxy.on_message(
            bye_from_agent.as_bytes(),
            agent,
            Transport::Udp,
            Instant::now(),
        );
        assert_eq!(event, Event::Relayed);
        assert_eq!(out[0].to, caller);
        assert!(
            text(&out[0]).contains("\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch="),
            "{}",
            text(&out[0])
        );
        assert!(!text(&out[0]).contains("Route:"), "{}", text(&out[0]));
    }

    fn cancel(n: u32) -> Vec<u8> {
        format!(
            "CANCEL sip:sales@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{n}\r\n\
             From: <sip:+15551230000@pbx>;tag=1\r\nTo: <sip:sales@127.0.0.1>\r\nCall-ID: flood-{n}\r\n\
             CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    /// The agent's answer `status` to the INVITE forwarded as `forwarded`.
    fn agent_answer(forwarded: &Outgoing, status: &str, n: u32) -> Vec<u8> {
        let via = text(forwarded)
            .lines()
            .find(|l| l.starts_with("Via: "))
            .expect("our via")
            .to_owned();
        format!(
            "SIP/2.0 {status}\r\n{via}\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{n}\r\n\
             From: <sip:+15551230000@pbx>;tag=1\r\nTo: <sip:sales@127.0.0.1>;tag=a\r\n\
             Call-ID: flood-{n}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn a_cancel_waits_for_the_agents_provisional_answer() {
        let mut proxy = proxy(100, 100);
        let now = Instant::now();
        let forwarded = forward_invite(&mut proxy, 5, now);
        let agent = forwarded.to;
        let (out, event) = proxy.on_message(&cancel(5), caller(), Transport::Udp, now);
        assert_eq!(event, Event::Relayed);
        assert_eq!(out.len(), 1, "only the 200 to the caller");
        assert!(text(&out[0]).starts_with("SIP/2.0 200 OK\r\n"));
        assert!(text(&out[0]).contains("CSeq: 1 CANCEL\r\n"));

        let ringing = agent_answer(&forwarded, "180 Ringing", 5);
        let (out, _) = proxy.on_message(&ringing, agent, Transport::Udp, now);
        assert_eq!(out.len(), 2, "the 180 relayed and the CANCEL sent");
        assert_eq!(out[1].to, agent);
        assert!(
            text(&out[1]).starts_with("CANCEL sip:sales@127.0.0.1:5090 SIP/2.0\r\n"),
            "{}",
            text(&out[1])
        );
        assert_eq!(
            top_branch(&out[1]),
            top_branch(&forwarded),
            "the CANCEL matches the forwarded INVITE"
        );
    }

    #[test]
    fn the_ack_for_a_failure_repeats_the_invite_and_takes_only_to_from_the_answer() {
        let mut proxy = proxy(100, 100);
        let now = Instant::now();
        let forwarded = forward_invite(&mut proxy, 7, now);
        let agent = forwarded.to;
        // An agent that rewrites From in its answer must not change the ACK's From.
        let busy = String::from_utf8(agent_answer(&forwarded, "486 Busy Here", 7))
            .expect("text")
            .replace(
                "From: <sip:+15551230000@pbx>;tag=1",
                "From: \"Rewritten\" <sip:other@pbx>;tag=1",
            );
        let (out, event) = proxy.on_message(busy.as_bytes(), agent, Transport::Udp, now);
        assert_eq!(event, Event::ResponseRelayed);
        assert_eq!(out.len(), 2, "the 486 relayed and the ACK sent");
        assert_eq!(out[1].to, agent);
        let ack = text(&out[1]);
        assert!(
            ack.starts_with("ACK sip:sales@127.0.0.1:5090 SIP/2.0\r\n"),
            "{ack}"
        );
        for field in [
            "From: <sip:+15551230000@pbx>;tag=1\r\n",
            "To: <sip:sales@127.0.0.1>;tag=a\r\n",
            "Call-ID: flood-7\r\n",
            "CSeq: 1 ACK\r\n",
        ] {
            assert!(ack.contains(field), "{field:?} missing from\n{ack}");
        }
    }

    #[test]
    fn an_agents_503_reaches_the_caller_as_500_with_the_rest_of_the_answer() {
        let mut proxy = proxy(100, 100);
        let now = Instant::now();
        let forwarded = forward_invite(&mut proxy, 14, now);
        let agent = forwarded.to;
        let unavailable =
            String::from_utf8(agent_answer(&forwarded, "503 Service Unavailable", 14))
                .expect("text")
                .replace("Content-Length: 0", "Retry-After: 30\r\nContent-Length: 0");
        let (out, event) = proxy.on_message(unavailable.as_bytes(), agent, Transport::Udp, now);
        assert_eq!(event, Event::ResponseRelayed);
        assert_eq!(out.len(), 2, "the answer relayed and the ACK sent");
        let relayed = text(&out[0]);
        assert_eq!(out[0].to, caller());
        assert!(
            relayed.starts_with("SIP/2.0 500 Server Internal Error\r\n"),
            "{relayed}"
        );
        let unavailable_rest = unavailable.split_once("\r\n").expect("line").1;
        let our_via = unavailable_rest.lines().next().expect("our via");
        assert_eq!(
            relayed.split_once("\r\n").expect("line").1,
            unavailable_rest.replacen(&format!("{our_via}\r\n"), "", 1),
            "everything but the status line and our Via is the agent's"
        );
        let ack = out[1].clone();
        assert!(text(&ack).starts_with("ACK "), "{}", text(&ack));
        // The agent's retransmission (our ACK was lost) is acknowledged again; the caller
        // already has its final answer (RFC 3261 section 16.7 step 5).
        let (out, event) = proxy.on_message(unavailable.as_bytes(), agent, Transport::Udp, now);
        assert_eq!((out, event), (vec![ack], Event::ResponseAbsorbed));
        let (out, _) = proxy.on_message(&invite(14), caller(), Transport::Udp, now);
        assert!(
            text(&out[0]).starts_with("SIP/2.0 500 "),
            "the caller's retransmission gets the 500 again"
        );
    }

    #[test]
    fn a_503_to_a_request_other_than_invite_is_relayed_as_it_is() {
        let mut proxy = proxy(100, 100);
        let now = Instant::now();
        let forwarded = forward_invite(&mut proxy, 15, now);
        let agent = forwarded.to;
        let ok = agent_answer(&forwarded, "200 OK", 15);
        proxy.on_message(&ok, agent, Transport::Udp, now);
        let bye = "BYE sip:sales@127.0.0.1:5090 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbye15\r\n\
             Route: <sip:127.0.0.1:5060;lr>\r\nFrom: <sip:+15551230000@pbx>;tag=1\r\n\
             To: <sip:sales@127.0.0.1>;tag=a\r\nCall-ID: flood-15\r\nCSeq: 2 BYE\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
        let (out, event) = proxy.on_message(bye.as_bytes(), caller(), Transport::Udp, now);
        assert_eq!(event, Event::Relayed);
        let unavailable = String::from_utf8(agent_answer(&out[0], "503 Service Unavailable", 15))
            .expect("text")
            // The caller's Via only: our branch may well begin with "15" too.
            .replace(
                "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK15\r\n",
                "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbye15\r\n",
            )
            .replace("CSeq: 1 INVITE", "CSeq: 2 BYE");
        let (out, event) = proxy.on_message(unavailable.as_bytes(), agent, Transport::Udp, now);
        assert_eq!(event, Event::ResponseRelayed);
        assert!(
            text(&out[0]).starts_with("SIP/2.0 503 Service Unavailable\r\n"),
            "{}",
            text(&out[0])
        );
    }

    #[test]
    fn an_invite_that_cannot_be_sent_to_its_agent_ends_at_once_with_500() {
        let mut proxy = proxy(100, 100);
        let start = Instant::now();
        let forwarded = forward_invite(&mut proxy, 16, start);
        let agent = forwarded.to;
        for elsewhere in ["127.0.0.1:1".parse().expect("addr"), caller()] {
            assert_eq!(
                proxy.on_undeliverable(&forwarded.bytes, elsewhere, start),
                (vec![], None),
                "only a failure towards the INVITE's agent counts"
            );
        }
        let (out, event) = proxy.on_undeliverable(&forwarded.bytes, agent, start);
        assert_eq!(event, Some(Event::Undeliverable(500)));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].to, caller());
        let answer = text(&out[0]);
        assert!(
            answer.starts_with("SIP/2.0 500 Server Internal Error\r\n"),
            "{answer}"
        );
        assert!(answer.contains("Call-ID: flood-16\r\n") && answer.contains(";tag="));
        assert_eq!(
            proxy.on_undeliverable(&forwarded.bytes, agent, start),
            (vec![], None),
            "a transaction ends once"
        );
        assert_eq!(
            proxy.on_timers(start + DEFAULT_T1 * 64),
            (vec![], vec![]),
            "no retransmission, no 408"
        );
        let (out, event) = proxy.on_message(&invite(16), caller(), Transport::Udp, start);
        assert_eq!(event, Event::Retransmission);
        assert_eq!(
            text(&out[0]),
            answer,
            "a retransmitted INVITE gets the 500 again"
        );
        assert_eq!(proxy.live().0, 0, "no dialog is left");
    }

    #[test]
    fn only_an_unanswered_invite_ends_when_a_message_cannot_be_sent() {
        let mut proxy = proxy(100, 100);
        let now = Instant::now();
        let forwarded = forward_invite(&mut proxy, 17, now);
        let agent = forwarded.to;
        let ringing = agent_answer(&forwarded, "180 Ringing", 17);
        proxy.on_message(&ringing, agent, Transport::Udp, now);
        assert_eq!(
            proxy.on_undeliverable(&forwarded.bytes, agent, now),
            (vec![], None),
            "the agent has answered: the INVITE reached it"
        );
        let response = agent_answer(&forwarded, "180 Ringing", 18);
        assert_eq!(
            proxy.on_undeliverable(&response, caller(), now),
            (vec![], None)
        );
        assert_eq!(
            proxy.on_undeliverable(b"INVITE garbage", agent, now),
            (vec![], None)
        );
    }

    #[test]
    fn a_cancelled_invite_that_cannot_be_sent_ends_with_487() {
        let mut proxy = proxy(100, 100);
        let now = Instant::now();
        let forwarded = forward_invite(&mut proxy, 19, now);
        proxy.on_message(&cancel(19), caller(), Transport::Udp, now);
        let (out, event) = proxy.on_undeliverable(&forwarded.bytes, forwarded.to, now);
        assert_eq!(event, Some(Event::Undeliverable(487)));
        assert!(text(&out[0]).starts_with("SIP/2.0 487 Request Terminated\r\n"));
    }

    #[test]
    fn a_response_whose_next_via_is_the_ingress_again_is_dropped_not_sent_to_itself() {
        let mut proxy = proxy(100, 100);
        let now = Instant::now();
        let forwarded = forward_invite(&mut proxy, 8, now);
        let agent = forwarded.to;
        let ringing = String::from_utf8(agent_answer(&forwarded, "180 Ringing", 8)).expect("text");
        let our_via = ringing.lines().nth(1).expect("our via").to_owned();
        let doubled = ringing.replacen(&our_via, &format!("{our_via}\r\n{our_via}"), 1);
        let (out, event) = proxy.on_message(doubled.as_bytes(), agent, Transport::Udp, now);
        assert_eq!(event, Event::Dropped);
        assert!(out.is_empty(), "sent {:?}", out.first().map(text));
    }

    #[test]
    fn only_responses_to_requests_the_ingress_forwarded_are_relayed() {
        let mut proxy = proxy(100, 100);
        let now = Instant::now();
        let forwarded = forward_invite(&mut proxy, 13, now);
        let agent = forwarded.to;
        let ringing = String::from_utf8(agent_answer(&forwarded, "180 Ringing", 13)).expect("text");
        let victim = "Via: SIP/2.0/UDP 192.0.2.66:5060;branch=z9hG4bK13";
        let caller_via = ringing.lines().nth(2).expect("the caller's via").to_owned();
        for forged in [
            // Our genuine branch, but the caller's Via pointed elsewhere.
            ringing.replacen(&caller_via, victim, 1),
            // A branch of the right form the ingress never made.
            ringing.replacen(&top_branch(&forwarded), "z9hG4bK0123456789abcdef", 1),
        ] {
            let (out, event) = proxy.on_message(forged.as_bytes(), agent, Transport::Udp, now);
            assert_eq!((out, event), (vec![], Event::Dropped), "relayed:\n{forged}");
        }
        let (out, event) = proxy.on_message(ringing.as_bytes(), agent, Transport::Udp, now);
        assert_eq!(event, Event::ResponseRelayed);
        assert_eq!(out[0].to, caller());
    }

    #[test]
    fn a_cancelled_invite_the_agent_never_answers_ends_with_487_and_no_cancel() {
        let mut proxy = proxy(100, 100);
        let caller = caller();
        let start = Instant::now();
        let (out, _) = proxy.on_message(&invite(6), caller, Transport::Udp, start);
        let agent = out[1].to;
        proxy.on_message(&cancel(6), caller, Transport::Udp, start);
        let (out, events) = proxy.on_timers(start + DEFAULT_T1 * 64);
        assert_eq!(events, [Event::TimedOut(487)]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].to, caller);
        assert!(
            text(&out[0]).starts_with("SIP/2.0 487 Request Terminated\r\n"),
            "{}",
            text(&out[0])
        );
        assert!(out.iter().all(|o| o.to != agent));
    }

    #[test]
    fn any_answer_from_the_agent_stops_the_retransmissions_and_the_408() {
        let mut proxy = proxy(100, 100);
        let caller = caller();
        let start = Instant::now();
        let (out, _) = proxy.on_message(&invite(2), caller, Transport::Udp, start);
        let forwarded = text(&out[1]);
        let via = forwarded
            .lines()
            .find(|l| l.starts_with("Via: "))
            .expect("our via");
        let ringing = format!(
            "SIP/2.0 180 Ringing\r\n{via}\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK2\r\n\
             From: <sip:+15551230000@pbx>;tag=1\r\nTo: <sip:sales@127.0.0.1>;tag=a\r\n\
             Call-ID: flood-2\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        let agent = out[1].to;
        let (relayed, event) = proxy.on_message(
            ringing.as_bytes(),
            agent,
            Transport::Udp,
            start + DEFAULT_T1 / 2,
        );
        assert_eq!((relayed.len(), event), (1, Event::ResponseRelayed));
        assert_eq!(
            proxy.on_timers(start + DEFAULT_T1 * 100),
            (vec![], vec![]),
            "nothing retransmitted, no 408"
        );
        assert_eq!(
            proxy.next_timer(),
            Some(start + DEFAULT_T1 / 2 + DEFAULT_TIMER_C),
            "only Timer C runs, from the 180"
        );
    }

    /// The branch of the first Via of `out`.
    fn top_branch(out: &Outgoing) -> String {
        let message = text(out);
        let via = message
            .lines()
            .find(|l| l.starts_with("Via: "))
            .unwrap_or_default();
        uri::param(via, "branch").unwrap_or_default().to_owned()
    }

    #[test]
    fn an_agent_ringing_past_timer_c_is_cancelled_and_its_487_reaches_the_caller() {
        let mut proxy = proxy(100, 100);
        let caller = caller();
        let start = Instant::now();
        let forwarded = forward_invite(&mut proxy, 9, start);
        let agent = forwarded.to;
        let trying = agent_answer(&forwarded, "100 Trying", 9);
        proxy.on_message(&trying, agent, Transport::Udp, start);
        let ringing = agent_answer(&forwarded, "180 Ringing", 9);
        let rang = start + Duration::from_secs(100);
        proxy.on_message(&ringing, agent, Transport::Udp, rang);

        // Sixty seconds of ringing outlive the 32 s an ended transaction is kept, not this one.
        proxy.expire(start + Duration::from_secs(60));
        assert_eq!(
            proxy.on_timers(start + DEFAULT_TIMER_C),
            (vec![], vec![]),
            "the 180 reset Timer C"
        );
        let (out, events) = proxy.on_timers(rang + DEFAULT_TIMER_C);
        assert_eq!(events, [Event::RangTooLong]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].to, agent);
        assert!(
            text(&out[0]).starts_with("CANCEL sip:sales@127.0.0.1:5090 SIP/2.0\r\n"),
            "{}",
            text(&out[0])
        );
        assert_eq!(top_branch(&out[0]), top_branch(&forwarded));

        let terminated = agent_answer(&forwarded, "487 Request Terminated", 9);
        let (out, event) =
            proxy.on_message(&terminated, agent, Transport::Udp, rang + DEFAULT_TIMER_C);
        assert_eq!(event, Event::ResponseRelayed);
        assert_eq!((out[0].to, out[1].to), (caller, agent));
        assert!(text(&out[0]).starts_with("SIP/2.0 487 "));
        assert!(text(&out[1]).starts_with("ACK "));
        assert_eq!(proxy.live(), (0, 1));
        assert_eq!(
            proxy.on_timers(rang + DEFAULT_TIMER_C * 2),
            (vec![], vec![])
        );
    }

    #[test]
    fn timer_c_runs_from_the_forwarded_invite_when_only_100_trying_came() {
        let mut proxy = proxy(100, 100);
        let start = Instant::now();
        let forwarded = forward_invite(&mut proxy, 10, start);
        let agent = forwarded.to;
        let trying = agent_answer(&forwarded, "100 Trying", 10);
        proxy.on_message(
            &trying,
            agent,
            Transport::Udp,
            start + Duration::from_secs(10),
        );
        let (out, events) = proxy.on_timers(start + DEFAULT_TIMER_C);
        assert_eq!(events, [Event::RangTooLong]);
        assert!(text(&out[0]).starts_with("CANCEL "));
    }

    #[test]
    fn with_a_long_t1_timer_c_answers_a_silent_agent_408_before_timer_b() {
        let config = crate::config::Config::parse(crate::config::DEMO).expect("demo");
        let rules = crate::admission::oracle::NativeRules::new(&config).expect("rules");
        let quota = Quota::per_second(NonZeroU32::new(100).expect("rate"));
        let local = "127.0.0.1:5060".parse().expect("addr");
        let timers = Timers {
            t1: Duration::from_secs(4),
            ..Timers::default()
        };
        let mut proxy = Proxy::new(Box::new(rules), local, quota, timers);
        let start = Instant::now();
        proxy.on_message(&invite(11), caller(), Transport::Udp, start);
        let mut events = Vec::new();
        while let Some(at) = proxy
            .next_timer()
            .filter(|at| *at <= start + DEFAULT_TIMER_C)
        {
            events.extend(proxy.on_timers(at).1);
        }
        assert_eq!(events.last(), Some(&Event::TimedOut(408)));
        assert_eq!(proxy.next_timer(), None);
    }

    #[test]
    fn a_cancel_the_agent_never_answers_gets_the_caller_487_after_64_t1() {
        let mut proxy = proxy(100, 100);
        let caller = caller();
        let start = Instant::now();
        let forwarded = forward_invite(&mut proxy, 12, start);
        let agent = forwarded.to;
        let ringing = agent_answer(&forwarded, "180 Ringing", 12);
        proxy.on_message(&ringing, agent, Transport::Udp, start);

        let cancelled = start + Duration::from_secs(60);
        proxy.expire(cancelled);
        let (out, event) = proxy.on_message(&cancel(12), caller, Transport::Udp, cancelled);
        assert_eq!(
            event,
            Event::Relayed,
            "a call ringing for a minute is still known"
        );
        assert_eq!((out[0].to, out[1].to), (caller, agent));
        assert!(text(&out[0]).starts_with("SIP/2.0 200 OK\r\n"));
        assert!(text(&out[1]).starts_with("CANCEL "));
        let (again, _) = proxy.on_message(&cancel(12), caller, Transport::Udp, cancelled);
        assert_eq!(again, out, "a resent CANCEL is answered and sent on again");

        let (out, events) = proxy.on_timers(cancelled + DEFAULT_T1 * 64);
        assert_eq!(events, [Event::CancelUnanswered(487)]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].to, caller);
        assert!(text(&out[0]).starts_with("SIP/2.0 487 Request Terminated\r\n"));
        assert_eq!(proxy.live(), (0, 1), "the dialog is gone");
        let (resent, event) = proxy.on_message(&invite(12), caller, Transport::Udp, cancelled);
        assert_eq!(event, Event::Retransmission);
        assert_eq!(resent, out, "a retransmitted INVITE gets the 487 again");
        let (out, event) = proxy.on_message(&cancel(12), caller, Transport::Udp, cancelled);
        assert_eq!(
            (out.len(), event),
            (1, Event::Answered(200)),
            "a CANCEL after the end is only answered"
        );
    }

    #[test]
    fn the_ingress_resends_its_cancel_over_udp_until_the_agent_answers_it() {
        let mut proxy = proxy(100, 100);
        let start = Instant::now();
        let forwarded = forward_invite(&mut proxy, 15, start);
        let agent = forwarded.to;
        let ringing = agent_answer(&forwarded, "180 Ringing", 15);
        proxy.on_message(&ringing, agent, Transport::Udp, start);
        let (out, _) = proxy.on_message(&cancel(15), caller(), Transport::Udp, start);
        let cancel_sent = out[1].clone();

        let mut resent_after = Vec::new();
        while let Some(at) = proxy
            .next_timer()
            .filter(|at| *at < start + Duration::from_secs(10))
        {
            let (out, events) = proxy.on_timers(at);
            assert_eq!(events, [Event::CancelRetransmitted]);
            assert_eq!(out, std::slice::from_ref(&cancel_sent));
            resent_after.push(at - start);
        }
        let seconds = |s: f64| Duration::from_secs_f64(s);
        assert_eq!(
            resent_after,
            [seconds(0.5), seconds(1.5), seconds(3.5), seconds(7.5)],
            "T1, 2xT1, 4xT1 apart, then T2"
        );

        let our_via = text(&cancel_sent)
            .lines()
            .find(|l| l.starts_with("Via: "))
            .expect("our via")
            .to_owned();
        let answered = format!(
            "SIP/2.0 200 OK\r\n{our_via}\r\nFrom: <sip:+15551230000@pbx>;tag=1\r\n\
             To: <sip:sales@127.0.0.1>\r\nCall-ID: flood-15\r\nCSeq: 1 CANCEL\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let (out, _) = proxy.on_message(answered.as_bytes(), agent, Transport::Udp, start);
        assert!(out.is_empty(), "the answer to our CANCEL goes no further");
        let mut events = Vec::new();
        while let Some(at) = proxy.next_timer() {
            events.extend(proxy.on_timers(at).1);
        }
        assert_eq!(
            events,
            [Event::CancelUnanswered(487)],
            "no more CANCELs, and the 487 when the agent never ends the INVITE"
        );
    }

    const AGENT_HOST: &str = "agents.example";

    /// The demo world, but agent `sales` is at a host name.
    fn proxy_with_named_agent() -> Proxy {
        let mut config = crate::config::Config::parse(crate::config::DEMO).expect("demo");
        let sales = config
            .tenants
            .iter_mut()
            .flat_map(|tenant| tenant.agents.iter_mut())
            .find(|agent| agent.id == "sales")
            .expect("agent sales");
        sales.uri = format!("sip:sales@{AGENT_HOST}:5090");
        proxy_of(&config, 100, 100)
    }

    fn caller() -> SocketAddr {
        "127.0.0.1:5070".parse().expect("addr")
    }

    /// Call `n`'s INVITE from [`caller`] at `now`, as forwarded to the agent.
    fn forward_invite(proxy: &mut Proxy, n: u32, now: Instant) -> Outgoing {
        let (mut out, event) = proxy.on_message(&invite(n), caller(), Transport::Udp, now);
        assert_eq!(
            (event, out.len()),
            (Event::Admitted, 2),
            "100 Trying, INVITE"
        );
        out.swap_remove(1)
    }

    fn status_line(out: &Outgoing) -> String {
        text(out).lines().next().unwrap_or_default().to_owned()
    }

    #[test]
    fn an_agent_host_name_is_looked_up_once_for_all_the_invites_waiting_for_it_then_cached() {
        let mut proxy = proxy_with_named_agent();
        let start = Instant::now();
        let (out, event) = proxy.on_message(&invite(1), caller(), Transport::Udp, start);
        assert_eq!(event, Event::AwaitingName);
        assert_eq!(out.len(), 1, "only the 100 Trying, nothing forwarded yet");
        assert_eq!(
            (out[0].to, status_line(&out[0])),
            (caller(), "SIP/2.0 100 Trying".to_owned())
        );
        assert_eq!(proxy.take_lookups(), [AGENT_HOST]);
        let (_, event) = proxy.on_message(&invite(2), caller(), Transport::Udp, start);
        assert_eq!(event, Event::AwaitingName);
        assert!(proxy.take_lookups().is_empty(), "one lookup under way");
        let (again, event) = proxy.on_message(&invite(1), caller(), Transport::Udp, start);
        assert_eq!(event, Event::Retransmission);
        assert_eq!(again, out, "a retransmission gets the 100 again");
        assert_eq!(proxy.live(), (0, 2));

        // The IPv6 address is skipped: this core sends from an IPv4 socket.
        let ipv6: IpAddr = "2001:db8::7".parse().expect("ip");
        let ipv4: IpAddr = "192.0.2.7".parse().expect("ip");
        let (out, events) = proxy.on_resolved(AGENT_HOST, vec![ipv6, ipv4], start);
        assert_eq!(events, [Event::Admitted, Event::Admitted]);
        let agent = SocketAddr::new(ipv4, 5090);
        assert_eq!(out.iter().map(|o| o.to).collect::<Vec<_>>(), [agent, agent]);
        assert!(
            text(&out[0]).starts_with(&format!("INVITE sip:sales@{AGENT_HOST}:5090 SIP/2.0\r\n"))
        );
        assert!(text(&out[0]).contains("X-Dest-User: sales.desk\r\n"));
        assert_eq!(proxy.live(), (2, 2));
        assert_eq!(
            proxy.next_timer(),
            Some(start + DEFAULT_T1),
            "Timer A runs from the forwarding"
        );

        // Cached: the next call goes at once.
        let (out, event) = proxy.on_message(&invite(3), caller(), Transport::Udp, start);
        assert_eq!((event, out.len(), out[1].to), (Event::Admitted, 2, agent));
        assert!(proxy.take_lookups().is_empty());

        // Until the answer is too old.
        let later = start + RESOLVED_LIFETIME;
        proxy.expire(later);
        let (_, event) = proxy.on_message(&invite(4), caller(), Transport::Udp, later);
        assert_eq!(event, Event::AwaitingName);
        assert_eq!(proxy.take_lookups(), [AGENT_HOST]);
    }

    #[test]
    fn a_name_without_a_usable_address_gets_503_which_is_remembered_briefly() {
        let mut proxy = proxy_with_named_agent();
        let start = Instant::now();
        proxy.on_message(&invite(1), caller(), Transport::Udp, start);
        assert_eq!(proxy.take_lookups(), [AGENT_HOST]);
        let (out, events) = proxy.on_resolved(AGENT_HOST, Vec::new(), start);
        assert_eq!(events, [Event::Refused(UNREACHABLE.into())]);
        assert_eq!(
            (out.len(), out[0].to, status_line(&out[0])),
            (1, caller(), "SIP/2.0 503 Service Unavailable".to_owned())
        );
        let (again, event) = proxy.on_message(&invite(1), caller(), Transport::Udp, start);
        assert_eq!((event, again), (Event::Retransmission, out));

        let (out, event) = proxy.on_message(&invite(2), caller(), Transport::Udp, start);
        assert_eq!(event, Event::Refused(UNREACHABLE.into()));
        assert_eq!(status_line(&out[0]), "SIP/2.0 503 Service Unavailable");
        assert!(proxy.take_lookups().is_empty(), "the failure is cached");

        let later = start + FAILED_LOOKUP_LIFETIME;
        let (_, event) = proxy.on_message(&invite(3), caller(), Transport::Udp, later);
        assert_eq!(event, Event::AwaitingName);
        assert_eq!(proxy.take_lookups(), [AGENT_HOST]);
        // Only IPv6 addresses, for an IPv4 socket: nothing to send to.
        let (out, _) =
            proxy.on_resolved(AGENT_HOST, vec!["2001:db8::7".parse().expect("ip")], later);
        assert_eq!(status_line(&out[0]), "SIP/2.0 503 Service Unavailable");
        assert_eq!(
            proxy.live(),
            (0, 2),
            "the ended transactions absorb retransmissions"
        );
        proxy.expire(later + proxy.transaction_lifetime());
        assert_eq!(proxy.live(), (0, 0));
    }

    #[test]
    fn a_call_cancelled_while_its_agent_is_looked_up_gets_487_and_never_reaches_the_agent() {
        let mut proxy = proxy_with_named_agent();
        let start = Instant::now();
        proxy.on_message(&invite(1), caller(), Transport::Udp, start);
        let (out, event) = proxy.on_message(&cancel(1), caller(), Transport::Udp, start);
        assert_eq!(event, Event::Answered(487));
        let lines: Vec<String> = out.iter().map(status_line).collect();
        assert_eq!(lines, ["SIP/2.0 200 OK", "SIP/2.0 487 Request Terminated"]);
        assert!(text(&out[0]).contains("CSeq: 1 CANCEL\r\n"));
        assert!(text(&out[1]).contains("CSeq: 1 INVITE\r\n"));
        let (sent, events) =
            proxy.on_resolved(AGENT_HOST, vec!["192.0.2.7".parse().expect("ip")], start);
        assert_eq!((sent, events), (vec![], vec![]));
        let (again, _) = proxy.on_message(&invite(1), caller(), Transport::Udp, start);
        assert_eq!(status_line(&again[0]), "SIP/2.0 487 Request Terminated");
        assert_eq!(proxy.live().0, 0, "no dialog");
    }

    /// Call `n`'s INVITE to the agent at [`AGENT_HOST`], forwarded once the name resolved to
    /// `addresses`.
    fn forward_to_named_agent(
        proxy: &mut Proxy,
        n: u32,
        addresses: &[&str],
        now: Instant,
    ) -> Outgoing {
        let (_, event) = proxy.on_message(&invite(n), caller(), Transport::Udp, now);
        assert_eq!(event, Event::AwaitingName);
        let addresses = addresses.iter().map(|a| a.parse().expect("ip")).collect();
        let (mut out, events) = proxy.on_resolved(AGENT_HOST, addresses, now);
        assert_eq!((events, out.len()), (vec![Event::Admitted], 1));
        out.remove(0)
    }

    #[test]
    fn an_invite_that_cannot_be_sent_goes_to_the_agents_next_address_as_a_new_transaction() {
        let mut proxy = proxy_with_named_agent();
        let start = Instant::now();
        // The IPv6 address is skipped: this core sends from an IPv4 socket.
        let first = forward_to_named_agent(
            &mut proxy,
            1,
            &["192.0.2.7", "2001:db8::7", "192.0.2.8"],
            start,
        );
        let (a, b): (SocketAddr, SocketAddr) = (
            "192.0.2.7:5090".parse().expect("addr"),
            "192.0.2.8:5090".parse().expect("addr"),
        );
        assert_eq!(first.to, a);

        let later = start + Duration::from_millis(100);
        let (out, event) = proxy.on_undeliverable(&first.bytes, a, later);
        assert_eq!(event, Some(Event::NextAddress(Failover::TransportError)));
        assert_eq!(out.len(), 1, "nothing to the caller yet");
        let second = &out[0];
        assert_eq!((second.to, second.transport), (b, Transport::Udp));
        let (old, new) = (top_branch(&first), top_branch(second));
        assert!(
            new.starts_with(check::BRANCH_COOKIE) && new.ends_with(".1") && new != old,
            "a branch of its own: {new}"
        );
        assert_eq!(
            text(second),
            text(&first).replacen(&old, &new, 1),
            "the same INVITE otherwise"
        );
        assert_eq!(
            proxy.on_undeliverable(&first.bytes, a, later),
            (vec![], None),
            "the first attempt is over"
        );

        // Timer A starts again for the new transaction.
        assert_eq!(proxy.on_timers(start + DEFAULT_T1), (vec![], vec![]));
        let (resent, events) = proxy.on_timers(later + DEFAULT_T1);
        assert_eq!(events, [Event::Retransmitted]);
        assert_eq!((resent[0].to, &resent[0].bytes), (b, &second.bytes));

        // The agent at the second address answers on the new branch.
        let ringing = agent_answer(second, "180 Ringing", 1);
        let (out, event) = proxy.on_message(&ringing, b, Transport::Udp, later);
        assert_eq!(event, Event::ResponseRelayed);
        assert_eq!(
            (out.len(), out[0].to, status_line(&out[0])),
            (1, caller(), "SIP/2.0 180 Ringing".to_owned())
        );
        let busy = agent_answer(second, "486 Busy Here", 1);
        let (out, _) = proxy.on_message(&busy, b, Transport::Udp, later);
        let ack = out
            .iter()
            .find(|o| o.to == b)
            .expect("our ACK to the agent");
        assert!(text(ack).starts_with("ACK "));
        assert_eq!(top_branch(ack), new, "the ACK is of the new transaction");
    }

    #[test]
    fn an_invite_whose_every_address_fails_gets_500_after_at_most_four_addresses() {
        let mut proxy = proxy_with_named_agent();
        let now = Instant::now();
        let addresses = [
            "192.0.2.1",
            "192.0.2.2",
            "192.0.2.3",
            "192.0.2.4",
            "192.0.2.5",
        ];
        let mut sent = forward_to_named_agent(&mut proxy, 1, &addresses, now);
        let mut tried = vec![sent.to];
        loop {
            let (mut out, event) = proxy.on_undeliverable(&sent.bytes, sent.to, now);
            match event {
                Some(Event::NextAddress(Failover::TransportError)) => {
                    sent = out.remove(0);
                    tried.push(sent.to);
                }
                Some(Event::Undeliverable(code)) => {
                    assert_eq!(code, 500);
                    assert_eq!(out[0].to, caller());
                    assert!(text(&out[0]).starts_with("SIP/2.0 500 Server Internal Error\r\n"));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let expected: Vec<SocketAddr> = addresses[..MOST_ADDRESSES_TRIED]
            .iter()
            .map(|ip| SocketAddr::new(ip.parse().expect("ip"), 5090))
            .collect();
        assert_eq!(tried, expected, "in the resolver's order");
        assert_eq!(proxy.live().0, 0, "no dialog is left");
        assert_eq!(proxy.on_timers(now + DEFAULT_T1 * 64), (vec![], vec![]));
    }

    #[test]
    fn the_next_address_keeps_the_first_addresss_timer_b() {
        let mut proxy = proxy_with_named_agent();
        let start = Instant::now();
        let first = forward_to_named_agent(&mut proxy, 1, &["192.0.2.7", "192.0.2.8"], start);
        let later = start + DEFAULT_T1 * 10;
        let (_, event) = proxy.on_undeliverable(&first.bytes, first.to, later);
        assert_eq!(event, Some(Event::NextAddress(Failover::TransportError)));
        let (out, events) = proxy.on_timers(start + DEFAULT_T1 * 64);
        assert_eq!(events.last(), Some(&Event::TimedOut(408)));
        assert_eq!(
            status_line(out.last().expect("408")),
            "SIP/2.0 408 Request Timeout"
        );
    }

    #[test]
    fn a_cancelled_invite_does_not_go_to_the_next_address() {
        let mut proxy = proxy_with_named_agent();
        let now = Instant::now();
        let first = forward_to_named_agent(&mut proxy, 1, &["192.0.2.7", "192.0.2.8"], now);
        proxy.on_message(&cancel(1), caller(), Transport::Udp, now);
        let (out, event) = proxy.on_undeliverable(&first.bytes, first.to, now);
        assert_eq!(event, Some(Event::Undeliverable(487)));
        assert_eq!((out.len(), out[0].to), (1, caller()));
    }

    #[test]
    fn an_agent_address_that_answers_503_is_acknowledged_and_the_invite_goes_to_the_next() {
        let mut proxy = proxy_with_named_agent();
        let start = Instant::now();
        let first = forward_to_named_agent(&mut proxy, 1, &["192.0.2.7", "192.0.2.8"], start);
        let (a, b) = (first.to, "192.0.2.8:5090".parse().expect("addr"));
        let trying = agent_answer(&first, "100 Trying", 1);
        let (out, event) = proxy.on_message(&trying, a, Transport::Udp, start);
        assert_eq!((out, event), (vec![], Event::ResponseAbsorbed));
        let ringing = agent_answer(&first, "180 Ringing", 1);
        let (out, _) = proxy.on_message(&ringing, a, Transport::Udp, start);
        assert_eq!(status_line(&out[0]), "SIP/2.0 180 Ringing");

        let later = start + DEFAULT_T1 * 100;
        let unavailable = agent_answer(&first, "503 Service Unavailable", 1);
        let (out, event) = proxy.on_message(&unavailable, a, Transport::Udp, later);
        assert_eq!(event, Event::NextAddress(Failover::Unavailable));
        assert_eq!(out.len(), 2, "nothing to the caller: {out:?}");
        let (ack, second) = (&out[0], &out[1]);
        assert_eq!(ack.to, a);
        assert!(text(ack).starts_with("ACK "));
        assert_eq!(
            top_branch(ack),
            top_branch(&first),
            "the ACK ends the first attempt"
        );
        assert_eq!(second.to, b);
        assert!(text(second).starts_with("INVITE "));
        assert!(top_branch(second).ends_with(".1"));

        // The first address sends its 503 again (our ACK was lost): acknowledged again, and
        // the caller still hears nothing of it.
        let (out, event) = proxy.on_message(&unavailable, a, Transport::Udp, later);
        assert_eq!(event, Event::ResponseAbsorbed);
        assert_eq!(out, vec![ack.clone()]);

        // The new attempt has timers of its own: Timer A, then Timer B from the 503.
        let (resent, _) = proxy.on_timers(later + DEFAULT_T1);
        assert_eq!(resent, vec![second.clone()]);
        let (out, events) = proxy.on_timers(later + DEFAULT_T1 * 64);
        assert_eq!(events.last(), Some(&Event::TimedOut(408)));
        assert_eq!(out.last().map(|o| o.to), Some(caller()));
    }

    #[test]
    fn a_503_from_the_last_address_reaches_the_caller_as_500() {
        let mut proxy = proxy_with_named_agent();
        let now = Instant::now();
        let first = forward_to_named_agent(&mut proxy, 1, &["192.0.2.7", "192.0.2.8"], now);
        let unavailable = agent_answer(&first, "503 Service Unavailable", 1);
        let (out, _) = proxy.on_message(&unavailable, first.to, Transport::Udp, now);
        let second = out[1].clone();
        let unavailable = agent_answer(&second, "503 Service Unavailable", 1);
        let (out, event) = proxy.on_message(&unavailable, second.to, Transport::Udp, now);
        assert_eq!(event, Event::ResponseRelayed);
        let to_caller = out.iter().find(|o| o.to == caller()).expect("the answer");
        assert_eq!(status_line(to_caller), "SIP/2.0 500 Server Internal Error");
        let ack = out.iter().find(|o| o.to == second.to).expect("our ACK");
        assert_eq!(top_branch(ack), top_branch(&second));
    }

    #[test]
    fn a_2xx_from_an_address_the_invite_moved_on_from_still_reaches_the_caller() {
        let mut proxy = proxy_with_named_agent();
        let now = Instant::now();
        let first = forward_to_named_agent(&mut proxy, 1, &["192.0.2.7", "192.0.2.8"], now);
        proxy.on_message(
            &agent_answer(&first, "503 Service Unavailable", 1),
            first.to,
            Transport::Udp,
            now,
        );
        let ok = agent_answer(&first, "200 OK", 1);
        let (out, event) = proxy.on_message(&ok, first.to, Transport::Udp, now);
        assert_eq!(event, Event::ResponseRelayed);
        assert_eq!(
            (out.len(), out[0].to, status_line(&out[0])),
            (1, caller(), "SIP/2.0 200 OK".to_owned())
        );
        let ringing = agent_answer(&first, "180 Ringing", 1);
        let (out, event) = proxy.on_message(&ringing, first.to, Transport::Udp, now);
        assert_eq!((out, event), (vec![], Event::ResponseAbsorbed));
    }

    #[test]
    fn the_agents_100_trying_stops_timer_a_and_goes_no_further() {
        let mut proxy = proxy(100, 100);
        let start = Instant::now();
        let (sent, _) = proxy.on_message(&invite(20), caller(), Transport::Udp, start);
        let (ours, forwarded) = (sent[0].clone(), sent[1].clone());
        let trying = agent_answer(&forwarded, "100 Trying", 20);
        let (out, event) = proxy.on_message(&trying, forwarded.to, Transport::Udp, start);
        assert_eq!((out, event), (vec![], Event::ResponseAbsorbed));
        let (out, events) = proxy.on_timers(start + DEFAULT_T1 * 2);
        assert_eq!(
            (out, events),
            (vec![], vec![]),
            "no Timer A once the agent answered"
        );
        let (out, event) = proxy.on_message(&invite(20), caller(), Transport::Udp, start);
        assert_eq!(
            (out, event),
            (vec![ours], Event::Retransmission),
            "the caller's retransmission gets the ingress's own 100 again"
        );
    }

    #[test]
    fn after_the_callers_final_answer_only_a_2xx_reaches_it() {
        let mut proxy = proxy(100, 100);
        let start = Instant::now();
        let forwarded = forward_invite(&mut proxy, 21, start);
        let agent = forwarded.to;
        let (out, events) = proxy.on_timers(start + DEFAULT_T1 * 64);
        assert_eq!(events.last(), Some(&Event::TimedOut(408)));
        assert_eq!(
            status_line(out.last().expect("408")),
            "SIP/2.0 408 Request Timeout"
        );

        let busy = agent_answer(&forwarded, "486 Busy Here", 21);
        let (out, event) = proxy.on_message(&busy, agent, Transport::Udp, start);
        assert_eq!(event, Event::ResponseAbsorbed);
        assert_eq!(out.len(), 1, "only our ACK: {out:?}");
        assert_eq!(out[0].to, agent);
        assert!(text(&out[0]).starts_with("ACK "));
        let ringing = agent_answer(&forwarded, "180 Ringing", 21);
        let (out, event) = proxy.on_message(&ringing, agent, Transport::Udp, start);
        assert_eq!((out, event), (vec![], Event::ResponseAbsorbed));

        let ok = agent_answer(&forwarded, "200 OK", 21);
        let (out, event) = proxy.on_message(&ok, agent, Transport::Udp, start);
        assert_eq!(event, Event::ResponseRelayed);
        assert_eq!(
            (out.len(), out[0].to, status_line(&out[0])),
            (1, caller(), "SIP/2.0 200 OK".to_owned())
        );
    }
}
