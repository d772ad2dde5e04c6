//! What the proxy core gives back for each thing it handles: the datagrams to send
//! ([`Outgoing`]) and what happened ([`Event`]), which the transport loop reports as logs and
//! metrics (`crate::report`).

use std::net::SocketAddr;

use crate::admission::Reason;
use crate::sip::Transport;

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
    /// A response to a request the ingress sent itself (its only Via is ours, its CSeq method
    /// REGISTER): for the registration client, which the transport loop hands it to.
    OwnResponse,
    /// A message was dropped.
    Dropped,
}
