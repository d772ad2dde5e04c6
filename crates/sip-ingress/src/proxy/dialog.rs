//! The dialogs the ingress admitted (RFC 3261 section 12): who the two ends are and how each is
//! reached, so an in-dialog request goes the way its tags say, and nothing else passes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::sip::Transport;
use crate::sip::head::Head;
use crate::sip::uri;

/// How long a dialog is remembered without a BYE.
pub(super) const DIALOG_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// A dialog the ingress admitted, by its INVITE.
#[derive(Debug)]
pub(super) struct Dialog {
    /// The From tag of the caller's INVITE: the caller's tag in the dialog's id (RFC 3261
    /// section 12), which says who sent an in-dialog request. None for an RFC 2543 caller.
    pub caller_tag: Option<String>,
    pub caller: SocketAddr,
    /// How the caller reached us, and so how requests to it leave.
    pub caller_transport: Transport,
    pub callee: SocketAddr,
    pub callee_transport: Transport,
    pub since: Instant,
}

impl Dialog {
    /// Whether an in-dialog request came from the caller (else from the agent), by its tags:
    /// the caller's tag is its From tag on the caller's requests and its To tag on the agent's.
    /// None when neither carries it: the request is not of this dialog. Without a caller tag,
    /// by the address it came from.
    pub fn sent_by_caller(&self, head: &Head, source: SocketAddr) -> Option<bool> {
        let Some(caller_tag) = self.caller_tag.as_deref() else {
            return Some(source != self.callee);
        };
        if uri::tag(head.value("From")) == Some(caller_tag) {
            Some(true)
        } else if uri::tag(head.value("To")) == Some(caller_tag) {
            Some(false)
        } else {
            None
        }
    }
}
