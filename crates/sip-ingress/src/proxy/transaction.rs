//! INVITE transactions as the proxy forwards them (RFC 3261 sections 16.6 to 16.10 and 17.1):
//! the client side towards the agent and what the caller is answered.
//!
//! * A forwarded INVITE is retransmitted to the agent after T1, 2xT1, 4xT1... until the agent
//!   answers at all, and if it has not answered after 64xT1 the caller gets 408 Request Timeout
//!   (section 17.1.1.2, Timers A and B; over TCP, which is reliable, only B).
//! * An agent that rings (answers provisionally) for Timer C ([`Timers`]) without a final
//!   answer is sent a CANCEL (section 16.8), and the caller gets its 487, or a 408 from the
//!   ingress if the agent stays silent for 64xT1 more.
//! * The caller's CANCEL goes to the agent once it has answered provisionally (section 9.1:
//!   not before); over UDP the ingress sends its CANCEL again until the agent answers it
//!   (section 17.1.2.2, Timer E), and the caller gets 487 if the agent gives no final answer
//!   within 64xT1.
//! * The proxy sends the ACK of a non-2xx final answer itself (section 17.1.1.3).
//! * An INVITE that could not be sent to one address of its agent, or was answered 503 there,
//!   moves on to the next with a branch of its own (RFC 3263 section 4.3), by rewriting the
//!   branch in the forwarded bytes.
//!
//! Every phase but the last ends by a timer, so a transaction lasts until its final answer and
//! is then kept long enough to absorb retransmissions ([`TRANSACTION_LIFETIME`]).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::branch::BranchKey;
use super::output::{Event, Outgoing};
use crate::sip::head::Head;
use crate::sip::{Transport, response, via};

/// How long an ended INVITE transaction is remembered, to absorb retransmissions, at least
/// (64 x the default T1, as RFC 3261 Timers D and H); longer when a larger T1 asks for it.
pub(super) const TRANSACTION_LIFETIME: Duration = Duration::from_secs(32);
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

/// The header field values of a forwarded INVITE that its CANCEL and ACK repeat.
#[derive(Debug)]
pub(super) struct InviteFields {
    pub from: String,
    pub to: String,
    pub call_id: String,
    pub cseq_number: String,
}

impl InviteFields {
    pub fn of(head: &Head) -> Self {
        Self {
            from: head.value("From").to_owned(),
            to: head.value("To").to_owned(),
            call_id: head.value("Call-ID").to_owned(),
            cseq_number: head.cseq_number().to_owned(),
        }
    }
}

#[derive(Debug)]
pub(super) struct InviteTransaction {
    pub caller: SocketAddr,
    /// The branch of the caller's INVITE, from which ours are made.
    pub caller_branch: String,
    pub callee: SocketAddr,
    /// The agent's other addresses, the next one last: where the INVITE goes if it cannot be
    /// sent to `callee`.
    pub fallbacks: Vec<SocketAddr>,
    pub callee_transport: Transport,
    /// Our branch on the forwarded INVITE (CANCEL and our ACK reuse it).
    pub branch: String,
    /// Our branch and the address of each earlier attempt, whose late answers are absorbed;
    /// how many there are is part of our branch.
    pub abandoned: Vec<(String, SocketAddr)>,
    /// The forwarded INVITE's Request-URI.
    pub request_uri: String,
    /// The forwarded INVITE's From, To, Call-ID and CSeq number, which the CANCEL and ACK the
    /// proxy sends on this transaction repeat (RFC 3261 sections 9.1 and 17.1.1.3).
    pub invite: InviteFields,
    /// The last response sent to the caller, resent on retransmissions.
    pub last_response: Vec<u8>,
    /// The answers the ingress gives the caller itself when the agent gives no final one: 408,
    /// or 487 once the caller has cancelled.
    pub timeout: Vec<u8>,
    pub terminated: Vec<u8>,
    /// Whether the caller sent a CANCEL.
    pub cancelled: bool,
    /// When Timer C fires: set when the INVITE is forwarded, reset by every provisional answer
    /// but 100 (RFC 3261 sections 16.6 and 16.7).
    pub timer_c: Instant,
    pub phase: Phase,
}

impl InviteTransaction {
    /// Starts the transaction of `admitted`, whose agent is at `callee` and else at `fallbacks`
    /// in order: the transaction, Timers A (over UDP), B and C running, and the INVITE to send.
    pub fn start(
        admitted: AdmittedInvite,
        callee: SocketAddr,
        mut fallbacks: Vec<SocketAddr>,
        now: Instant,
        timers: Timers,
    ) -> (Self, Outgoing) {
        let AdmittedInvite {
            caller_branch,
            branch,
            request_uri,
            invite,
            forwarded,
            trying,
            timeout,
            terminated,
            caller,
            hop_transport,
            ..
        } = admitted;
        let timer_c = now + timers.timer_c;
        let unanswered = Unanswered {
            forwarded: forwarded.clone(),
            retransmit_at: (hop_transport == Transport::Udp).then(|| now + timers.t1),
            interval: timers.t1,
            // RFC 3261 section 16.8: Timer C firing before any answer counts as a 408, which
            // is what Timer B gives the caller.
            give_up_at: (now + timers.t1 * 64).min(timer_c),
        };
        fallbacks.reverse();
        let transaction = Self {
            caller,
            caller_branch,
            callee,
            fallbacks,
            callee_transport: hop_transport,
            branch,
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
        let forwarded = Outgoing {
            to: callee,
            transport: hop_transport,
            bytes: forwarded,
        };
        (transaction, forwarded)
    }

    /// Runs this transaction's timer that is due as of `now`, for the proxy at `local`:
    /// retransmits an unanswered INVITE (Timer A), cancels an INVITE that rang too long (Timer
    /// C), sends its CANCEL again (Timer E), or gives the caller the ingress's own final answer
    /// (Timer B, or the end of a CANCEL's wait). None when it has ended.
    pub fn on_timer(
        &mut self,
        now: Instant,
        timers: Timers,
        local: SocketAddr,
        out: &mut Vec<Outgoing>,
    ) -> Option<Event> {
        let event = match &mut self.phase {
            Phase::Calling(unanswered) if unanswered.give_up_at > now => {
                if let Some(at) = unanswered.retransmit_at {
                    out.push(Outgoing {
                        to: self.callee,
                        transport: Transport::Udp,
                        bytes: unanswered.forwarded.clone(),
                    });
                    // Scheduled from the previous schedule, not from `now`, so a late timer
                    // does not push every later retransmission (and the count before Timer B)
                    // back.
                    unanswered.interval *= 2;
                    unanswered.retransmit_at = Some(at + unanswered.interval);
                }
                Event::Retransmitted
            }
            Phase::Proceeding { .. } => {
                out.push(self.hop_request(local, "CANCEL", &self.invite.to));
                self.phase =
                    Phase::Cancelling(CancelSent::new(now, timers.t1, self.callee_transport));
                Event::RangTooLong
            }
            Phase::Cancelling(sent) if sent.give_up_at > now => {
                if let Some(at) = sent.resend_at {
                    sent.interval = (sent.interval * 2).min(T2.max(timers.t1));
                    sent.resend_at = Some(at + sent.interval);
                }
                out.push(self.hop_request(local, "CANCEL", &self.invite.to));
                Event::CancelRetransmitted
            }
            Phase::Calling(_) | Phase::Cancelling(_) => self.give_up(now, out),
            Phase::Completed { .. } => return None,
        };
        Some(event)
    }

    /// Takes the caller's CANCEL for the proxy at `local`: the CANCEL goes to the agent once it
    /// has answered provisionally (RFC 3261 section 9.1: not before; the first provisional
    /// answer sends it), and again when the caller resends its own (our 200 was lost, and so
    /// may ours have been). An ended transaction only has the CANCEL answered.
    pub fn on_cancel(
        &mut self,
        now: Instant,
        timers: Timers,
        local: SocketAddr,
        out: &mut Vec<Outgoing>,
    ) -> Event {
        self.cancelled = true;
        match self.phase {
            Phase::Calling(_) => Event::Relayed,
            Phase::Proceeding { .. } => {
                out.push(self.hop_request(local, "CANCEL", &self.invite.to));
                self.phase =
                    Phase::Cancelling(CancelSent::new(now, timers.t1, self.callee_transport));
                Event::Relayed
            }
            Phase::Cancelling(_) => {
                out.push(self.hop_request(local, "CANCEL", &self.invite.to));
                Event::Relayed
            }
            Phase::Completed { .. } => Event::Answered(200),
        }
    }

    /// Moves this transaction's INVITE, which could not be sent to its agent's address or was
    /// answered 503 there, on to the agent's next address as a new transaction with a branch of
    /// its own made with `key` (RFC 3263 section 4.3). An INVITE not yet answered keeps its
    /// Timer B; one that was answered provisionally starts a new one. Returns the INVITE to
    /// send; None when the caller cancelled, the agent has no next address, or the transaction
    /// is past the point of trying one.
    pub fn next_attempt(
        &mut self,
        key: &BranchKey,
        now: Instant,
        timers: Timers,
    ) -> Option<Outgoing> {
        let next = *self.fallbacks.last()?;
        if self.cancelled {
            return None;
        }
        let (forwarded, give_up_at) = match &self.phase {
            Phase::Calling(unanswered) => (&unanswered.forwarded, unanswered.give_up_at),
            Phase::Proceeding {
                retry: Some(forwarded),
            } => (forwarded, now + timers.t1 * 64),
            _ => return None,
        };
        // At most MOST_ADDRESSES_TRIED attempts: the count fits.
        let attempt = self.abandoned.len() as u8 + 1;
        let branch = key.make(
            &self.caller_branch,
            self.caller,
            &self.invite.call_id,
            attempt,
        );
        let forwarded = rebranch(forwarded, &self.branch, &branch)?;
        self.fallbacks.pop();
        let old_branch = std::mem::replace(&mut self.branch, branch);
        let old_callee = std::mem::replace(&mut self.callee, next);
        self.abandoned.push((old_branch, old_callee));
        self.timer_c = now + timers.timer_c;
        self.phase = Phase::Calling(Unanswered {
            forwarded: forwarded.clone(),
            retransmit_at: (self.callee_transport == Transport::Udp).then(|| now + timers.t1),
            interval: timers.t1,
            give_up_at: give_up_at.min(self.timer_c),
        });
        Some(Outgoing {
            to: next,
            transport: self.callee_transport,
            bytes: forwarded,
        })
    }

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
    pub fn end(&mut self, code: u16, now: Instant, out: &mut Vec<Outgoing>) -> u16 {
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
    pub fn on_answer(&mut self, code: u16, relayed: Vec<u8>, now: Instant, timers: Timers) -> bool {
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
    pub fn hop_request(&self, local: SocketAddr, method: &str, to: &str) -> Outgoing {
        self.hop_request_on(local, method, to, &self.branch, self.callee)
    }

    /// [`InviteTransaction::hop_request`] on the attempt of `branch`, sent to `callee`.
    pub fn hop_request_on(
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
            via::ours(local, self.callee_transport, branch),
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

    /// When the proxy must next run this transaction's timer, if ever.
    pub fn deadline(&self) -> Option<Instant> {
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
pub(super) enum Phase {
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
pub(super) struct CancelSent {
    pub give_up_at: Instant,
    /// When the CANCEL goes again; None once the agent answered it, and over TCP.
    pub resend_at: Option<Instant>,
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
pub(super) struct Unanswered {
    /// The forwarded INVITE, sent again when Timer A fires.
    pub forwarded: Vec<u8>,
    /// When Timer A fires next (never over TCP, which is reliable), and its current interval
    /// (doubling from T1).
    pub retransmit_at: Option<Instant>,
    pub interval: Duration,
    /// Timer B (or Timer C, should a large T1 make it fire first): when the caller gets the
    /// transaction's final answer from the ingress.
    pub give_up_at: Instant,
}

/// An admitted INVITE, ready to forward but for its agent's address: the transaction's state
/// and the answers it may need, built from the request when it was admitted.
#[derive(Debug)]
pub(super) struct AdmittedInvite {
    pub key: String,
    pub caller_branch: String,
    pub branch: String,
    pub request_uri: String,
    /// The received Request-URI's user: a binding's contact when the call came through a
    /// registration.
    pub called_user: String,
    pub invite: InviteFields,
    pub forwarded: Vec<u8>,
    pub trying: Vec<u8>,
    pub timeout: Vec<u8>,
    pub terminated: Vec<u8>,
    pub caller: SocketAddr,
    pub caller_transport: Transport,
    pub hop_transport: Transport,
}

/// `forwarded`, an INVITE whose first header field is our Via with branch `old`, with `new`
/// in its place.
pub(super) fn rebranch(forwarded: &[u8], old: &str, new: &str) -> Option<Vec<u8>> {
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
