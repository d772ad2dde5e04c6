//! The proxy core (RFC 3261 section 16), without sockets: a received message in, the messages
//! to send out. The transport loop around it is `crate::transport`.
//!
//! * An initial INVITE is decided by the admission policy ([`crate::admission`], a wasm
//!   component in wasmtime), answered `100 Trying`, and forwarded to the agent with our Via and
//!   Record-Route (so in-dialog requests come back through the ingress) and the header fields
//!   the policy adds, by editing the received bytes. Its transaction (`transaction`: Timers
//!   A, B and C, CANCEL, the ACK of a failure, the next address) lasts until its final answer.
//! * Retransmitted INVITEs are absorbed: the last response is sent again.
//! * In-dialog requests (To tag) are only forwarded for dialogs the ingress admitted
//!   (`dialog`), matched by Call-ID and the caller's tag, whose place (From or To) says which
//!   way they go; anything else gets 481 (an ACK is dropped). The Route naming the ingress is
//!   consumed.
//! * CANCEL is answered 200 and sent on to the agent with the INVITE's branch, once the agent
//!   has answered the INVITE provisionally (RFC 3261 section 9.1: not before).
//! * Responses are relayed by popping our Via and sending to the next one's `received`/`rport`
//!   or sent-by, when our Via's branch is the one the ingress made for a request from there
//!   (`branch`: keyed by a secret, so forged responses do not make it a reflector). The
//!   agent's 100 Trying goes no further (the caller had ours), nor, once the caller has a final
//!   answer, anything but a 2xx (section 16.7 step 5); an agent's 503 to an INVITE is relayed
//!   as 500 (section 16.7 step 6): the caller hears that the call failed, not that the ingress
//!   is unavailable.
//! * Agents are reached over UDP, or over TCP when their next hop says `transport=tcp` (the
//!   transport loop opens the connection, see [`Outgoing::transport`]); when the caller's and
//!   the agent's transports differ the Record-Route is doubled (RFC 5658).
//! * A forwarded INVITE the transport loop could not send ([`Proxy::on_undeliverable`]) or that
//!   the agent answered 503 goes to the next address of its agent's host name, if it has one,
//!   as a new transaction (RFC 3263 section 4.3, RFC 3261 section 21.5.4). Else one that could
//!   not be sent ends as if the agent had answered 503 (RFC 3261 section 16.9).
//! * A next hop given as a host name is looked up by the transport loop (`lookup`,
//!   [`Proxy::take_lookups`], [`Proxy::on_resolved`]): the caller has its 100 Trying at once
//!   and the INVITE is held, then forwarded to the first address of a family the ingress can
//!   send to, or answered 503.
//! * A call whose INVITE named a registration binding's contact is counted on the registration
//!   client's board from the agent's relayed 2xx to the first BYE (`dialog`): the binding is
//!   `calling` meanwhile.
//! * A response whose only Via is ours, to a REGISTER, answers the ingress's own registration
//!   client: [`Event::OwnResponse`], which the transport loop hands over.
//! * OPTIONS addressed to the ingress itself is answered 200.
//! * An initial INVITE that already carries a Via of the ingress's own address has come back
//!   through it: 482 Loop Detected (RFC 3261 section 16.3). The ingress only forwards to agents,
//!   so a legitimate spiral cannot pass through it twice.
//! * Before any of this, requests outside the dialogs the ingress admitted pass a per-source
//!   flood limit (governor, keyed by IP): over it, a source some tenant allows gets 503 with
//!   Retry-After, any other nothing.
//!
//! State (dialogs, INVITE transactions, held INVITEs) is bounded in number and expires.
//! `output` holds what the core gives back: the messages to send and the events to report.

mod branch;
mod dialog;
mod lookup;
mod output;
mod transaction;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use governor::clock::{Clock, MonotonicClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use policy::HostPort;

use crate::admission::{self, Admit, Facts};
use crate::register::status::Board;
use crate::sip::check::{self, Request, Response, Verdict};
use crate::sip::forward::{self, Edits};
use crate::sip::head::{Head, split_list};
use crate::sip::{Transport, response, uri, via};
use branch::{BranchKey, forwarded_invite_branch, transaction_key};
use dialog::{Dialog, Dialogs};
use lookup::Lookups;
use transaction::{AdmittedInvite, InviteFields, InviteTransaction, Phase, TRANSACTION_LIFETIME};

pub(crate) use lookup::reachable;
pub use lookup::{FAILED_LOOKUP_LIFETIME, MOST_ADDRESSES_TRIED, RESOLVED_LIFETIME};
pub use output::{Event, Failover, Outgoing};
pub use transaction::{DEFAULT_T1, DEFAULT_TIMER_C, Timers};

/// The refusal reason of an INVITE whose agent cannot be reached.
const UNREACHABLE: &str = "agent_unreachable";
/// The most dialogs and transactions kept; beyond this new calls get 503.
pub const MAX_ENTRIES: usize = 100_000;

/// The per-source flood limiter.
type FloodLimiter = RateLimiter<IpAddr, HashMapStateStore<IpAddr>, MonotonicClock>;

/// The proxy's state.
pub struct Proxy {
    admission: Box<dyn Admit>,
    local: SocketAddr,
    flood: FloodLimiter,
    dialogs: Dialogs,
    invites: HashMap<String, InviteTransaction>,
    /// Our branch on each forwarded INVITE -> its transaction's key, to match the agent's
    /// responses without a scan.
    branches: HashMap<String, String>,
    timing: Timers,
    /// The secret key of our branches.
    branch_key: BranchKey,
    /// When each unanswered INVITE transaction needs attention; an entry whose transaction was
    /// answered or forgotten meanwhile is dropped when it comes up.
    timers: BinaryHeap<Reverse<(Instant, String)>>,
    /// Agents' host names: looked up, and the INVITEs waiting for them.
    lookups: Lookups,
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
            dialogs: Dialogs::default(),
            invites: HashMap::new(),
            branches: HashMap::new(),
            timing: timers,
            branch_key: BranchKey::new(),
            timers: BinaryHeap::new(),
            lookups: Lookups::default(),
        }
    }

    /// This proxy, counting the calls through registration bindings on the registration
    /// client's `board` (which then reports them `calling`).
    pub fn counting_calls_on(mut self, board: Board) -> Self {
        self.dialogs = Dialogs::new(board);
        self
    }

    /// The host names the transport loop must look up (each once; the answer is given to
    /// [`Proxy::on_resolved`], the addresses in the resolver's order, none on failure).
    pub fn take_lookups(&mut self) -> Vec<String> {
        self.lookups.take_new()
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
        for (key, port, admitted) in self.lookups.release(name) {
            let mut callees = reachable(self.local, &addresses, admitted.hop_transport)
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port));
            match callees.next() {
                Some(callee) => {
                    self.lookups.forwarded(&key);
                    out.push(self.launch(admitted, callee, callees.collect(), now));
                    events.push(Event::Admitted);
                }
                None => {
                    if let Some(unreachable) = self.lookups.unreachable(&key) {
                        out.push(Outgoing {
                            to: admitted.caller,
                            transport: Transport::Udp,
                            bytes: unreachable,
                        });
                    }
                    events.push(Event::Refused(UNREACHABLE.into()));
                }
            }
        }
        self.lookups.remember(name, addresses, now);
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
            let Some(event) = transaction.on_timer(now, self.timing, self.local, &mut out) else {
                continue;
            };
            if let Event::TimedOut(_) | Event::CancelUnanswered(_) = event {
                self.dialogs.remove(&transaction.invite.call_id);
            }
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
        let transaction = self.invites.get_mut(key)?;
        let next = transaction.next_attempt(&self.branch_key, now, self.timing)?;
        if let Some(dialog) = self.dialogs.get_mut(&transaction.invite.call_id) {
            dialog.callee = next.to;
        }
        if let Some(deadline) = transaction.deadline() {
            self.timers.push(Reverse((deadline, key.to_owned())));
        }
        self.branches
            .insert(transaction.branch.clone(), key.to_owned());
        Some(next)
    }

    /// The number of dialogs and INVITE transactions held.
    pub fn live(&self) -> (usize, usize) {
        (self.dialogs.len(), self.invites.len() + self.lookups.len())
    }

    fn is_local(&self, hp: &HostPort) -> bool {
        via::socket_of(hp, 5060) == Some(self.local)
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
        self.lookups.expire(now, lifetime);
        let invites = &self.invites;
        self.branches.retain(|_, key| invites.contains_key(key));
        self.dialogs.expire(now);
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
        via::ours(self.local, transport, branch)
    }

    /// Our branch on a request forwarded from `source`.
    fn branch_for(&self, head: &Head, source: SocketAddr) -> String {
        let via = head.top_via();
        let incoming = uri::param(&via, "branch").unwrap_or_default();
        self.branch_key
            .make(incoming, source, head.value("Call-ID"), 0)
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
        let in_dialog = uri::tag(head.value("To")).is_some();
        // Requests of the dialogs the ingress admitted are never limited; any other, in-dialog
        // ones naming no such dialog included, would otherwise cost an unlimited 481 each.
        let admitted_dialog = in_dialog && self.dialogs.contains(head.value("Call-ID"));
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

    fn on_invite(
        &mut self,
        bytes: &[u8],
        request: &Request,
        source: SocketAddr,
        transport: Transport,
        now: Instant,
    ) -> (Vec<Outgoing>, Event) {
        let head = &request.head;
        let key = transaction_key(head, source);
        let looped = head
            .all("Via")
            .flat_map(|f| split_list(&f.value))
            .filter_map(|via| via::sent_by(&via))
            .any(|hp| self.is_local(&hp));
        if looped {
            let (out, _) = Self::answer(head, source, 482, &[]);
            return (out, Event::Refused("loop".into()));
        }
        let resent = match (self.invites.get(&key), self.lookups.held(&key)) {
            (Some(transaction), _) => Some(transaction.last_response.clone()),
            (None, Some(held)) => Some(held.last_response().to_vec()),
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
        let admission = &self.admission;
        let facts = Facts::of(request, source, transport, |name| {
            admission.wants_header(name)
        });
        let forward = match self.admission.decide(facts) {
            admission::Verdict::Drop { reason } => return (Vec::new(), Event::Refused(reason)),
            admission::Verdict::Reject { code, reason } => {
                let (out, _) = Self::answer(head, source, code, &[]);
                return (out, Event::Refused(reason));
            }
            admission::Verdict::Forward(forward) => forward,
        };
        let held = self.invites.len() + self.lookups.len();
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
        let caller_branch = uri::param(&head.top_via(), "branch")
            .unwrap_or_default()
            .to_owned();
        let branch = self
            .branch_key
            .make(&caller_branch, source, head.value("Call-ID"), 0);
        let edits = Edits {
            request_uri: Some(forward.agent_uri.clone()),
            via: self.our_via(hop.transport, &branch),
            record_route: Some(forward::record_route(self.local, transport, hop.transport)),
            headers: forward.headers.clone(),
            consume_route: 0,
            source: Some(source),
        };
        let trying = response::build(head, 100, &[]);
        let admitted = AdmittedInvite {
            key,
            caller_branch,
            branch,
            request_uri: forward.agent_uri.clone(),
            called_user: uri::user(&request.uri).unwrap_or_default().to_owned(),
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
            Err(_) => match self.lookups.addresses(&hop.host, now) {
                Some(addresses) => reachable(self.local, addresses, hop.transport),
                None => {
                    let unreachable = response::build(head, 503, &[]);
                    let (name, port) = (hop.host.clone(), hop.port);
                    self.lookups.hold(name, port, admitted, unreachable, now);
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
        let forwarded = self.launch(admitted, callee, callees.collect(), now);
        (vec![trying, forwarded], Event::Admitted)
    }

    /// Starts the transaction of an admitted INVITE whose agent is at `callee`, and else at
    /// `fallbacks` in order: its timers and its dialog. Returns the forwarded INVITE to send.
    fn launch(
        &mut self,
        mut admitted: AdmittedInvite,
        callee: SocketAddr,
        fallbacks: Vec<SocketAddr>,
        now: Instant,
    ) -> Outgoing {
        let key = admitted.key.clone();
        let caller_transport = admitted.caller_transport;
        let called_user = std::mem::take(&mut admitted.called_user);
        let (transaction, forwarded) =
            InviteTransaction::start(admitted, callee, fallbacks, now, self.timing);
        if let Some(deadline) = transaction.deadline() {
            self.timers.push(Reverse((deadline, key.clone())));
        }
        self.branches
            .insert(transaction.branch.clone(), key.clone());
        self.dialogs.insert(
            transaction.invite.call_id.clone(),
            Dialog {
                caller_tag: uri::tag(&transaction.invite.from).map(str::to_owned),
                caller: transaction.caller,
                caller_transport,
                callee,
                callee_transport: transaction.callee_transport,
                since: now,
                called_user,
            },
        );
        self.invites.insert(key, transaction);
        forwarded
    }

    fn on_cancel(
        &mut self,
        head: &Head,
        source: SocketAddr,
        now: Instant,
    ) -> (Vec<Outgoing>, Event) {
        let key = transaction_key(head, source);
        if let Some(held) = self.lookups.held_mut(&key) {
            // Nothing was sent to the agent yet: the INVITE ends here.
            let mut out = vec![Outgoing {
                to: source,
                transport: Transport::Udp,
                bytes: response::build(head, 200, &[]),
            }];
            if let Some(terminated) = held.cancel() {
                out.push(Outgoing {
                    to: source,
                    transport: Transport::Udp,
                    bytes: terminated,
                });
            }
            return (out, Event::Answered(487));
        }
        let Some(transaction) = self.invites.get_mut(&key) else {
            return Self::answer(head, source, 481, &[]);
        };
        let mut out = vec![Outgoing {
            to: source,
            transport: Transport::Udp,
            bytes: response::build(head, 200, &[]),
        }];
        let deadline = transaction.deadline();
        let event = transaction.on_cancel(now, self.timing, self.local, &mut out);
        if let Some(changed) = transaction.deadline().filter(|d| Some(*d) != deadline) {
            self.timers.push(Reverse((changed, key)));
        }
        (out, event)
    }

    fn in_dialog(
        &mut self,
        bytes: &[u8],
        request: &Request,
        source: SocketAddr,
    ) -> (Vec<Outgoing>, Event) {
        let head = &request.head;
        let Some(dialog) = self.dialogs.get(head.value("Call-ID")) else {
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
        if request.method == "BYE" {
            self.dialogs.bye(head.value("Call-ID"));
        }
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
            .and_then(|v| via::sent_by(v))
            .is_some_and(|hp| self.is_local(&hp));
        if !ours {
            return (Vec::new(), Event::Dropped);
        }
        let only_ours = elements.len() == 1 && head.all("Via").nth(1).is_none();
        if only_ours && head.cseq_method() == "REGISTER" {
            return (Vec::new(), Event::OwnResponse);
        }
        if head.cseq_method() == "CANCEL" {
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
        let Some(to) = via::response_target(&next_via).filter(|to| *to != self.local) else {
            return (Vec::new(), Event::Dropped);
        };
        // Only a response to a request the ingress forwarded from `to` carries the branch it
        // made for that: anything else would have the ingress send whatever it is told to
        // wherever it is told (a reflector).
        let incoming = uri::param(&next_via, "branch").unwrap_or_default();
        let our_branch = uri::param(&elements[0], "branch").unwrap_or_default();
        if !self
            .branch_key
            .made(our_branch, incoming, to, head.value("Call-ID"))
        {
            return (Vec::new(), Event::Dropped);
        }
        let mut relayed = response::without_top_via(bytes, first, &elements, response.frame.len());

        let method = head.cseq_method();
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
                    self.dialogs.answered(head.value("Call-ID"));
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
                    transaction.hop_request_on(self.local, "ACK", head.value("To"), branch, *callee)
                });
                return (ack.into_iter().collect(), Event::ResponseAbsorbed);
            }
            if response.code == 503 {
                let ack = transaction.hop_request(self.local, "ACK", head.value("To"));
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
        if forwarded && method == "INVITE" && (200..300).contains(&response.code) {
            self.dialogs.answered(head.value("Call-ID"));
        }
        if forwarded {
            out.push(Outgoing {
                to,
                transport: Transport::Udp,
                bytes: relayed.clone(),
            });
        }
        if let Some((key, transaction)) = transaction {
            if response.code >= 300 {
                out.push(transaction.hop_request(self.local, "ACK", head.value("To")));
                self.dialogs.remove(head.value("Call-ID"));
            }
            let deadline = transaction.deadline();
            if transaction.on_answer(response.code, relayed, now, self.timing) {
                out.push(transaction.hop_request(self.local, "CANCEL", &transaction.invite.to));
            }
            if let Some(changed) = transaction.deadline().filter(|d| Some(*d) != deadline) {
                self.timers.push(Reverse((changed, key.clone())));
            }
        } else if method == "BYE" && response.code >= 200 {
            self.dialogs.remove(head.value("Call-ID"));
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
mod tests;
