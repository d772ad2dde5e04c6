//! Branches and the keys made of them (RFC 3261 sections 8.1.1.7 and 17.2.3): the key of a
//! caller's transaction, and the branches the ingress puts in its own Via, keyed by a secret so
//! that a response proves the ingress forwarded its request.

use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;

use crate::sip::check::BRANCH_COOKIE;
use crate::sip::frame::frame_datagram;
use crate::sip::head::{self, Head};
use crate::sip::uri;

/// The key of the transaction of a request from `source`: its top Via's branch, the source and
/// the Call-ID.
pub(super) fn transaction_key(head: &Head, source: SocketAddr) -> String {
    let via = head.top_via();
    let branch = uri::param(&via, "branch").unwrap_or_default();
    format!("{branch}|{source}|{}", head.value("Call-ID"))
}

/// Our branch on `message` if it is an INVITE (the ingress only sends INVITEs it forwards).
pub(super) fn forwarded_invite_branch(message: &[u8]) -> Option<String> {
    if !message.starts_with(b"INVITE ") {
        return None;
    }
    let frame = frame_datagram(message).ok()?;
    let head = head::parse(&message[..frame.head_len]).ok()?;
    uri::param(&head.top_via(), "branch").map(str::to_owned)
}

/// The secret the ingress's branches are made with (SipHash, random per process).
pub(super) struct BranchKey(RandomState);

impl BranchKey {
    /// A new random secret.
    pub fn new() -> Self {
        Self(RandomState::new())
    }

    /// Our branch on a request whose sender's branch is `incoming`, sent from `source` in call
    /// `call_id`, on its `attempt`th address (0 for the first): the same for its
    /// retransmissions, and keyed by the secret, so that a response proves the ingress
    /// forwarded its request to the sender its next Via names. A later attempt is a new
    /// transaction with a branch of its own (RFC 3263 section 4.3), which names its attempt.
    pub fn make(&self, incoming: &str, source: SocketAddr, call_id: &str, attempt: u8) -> String {
        let tag = self.0.hash_one((incoming, source, call_id, attempt));
        match attempt {
            0 => format!("{BRANCH_COOKIE}{tag:016x}"),
            _ => format!("{BRANCH_COOKIE}{tag:016x}.{attempt}"),
        }
    }

    /// Whether `ours` is a branch the ingress made for a request whose sender's branch is
    /// `incoming`, sent from `source` in call `call_id`.
    pub fn made(&self, ours: &str, incoming: &str, source: SocketAddr, call_id: &str) -> bool {
        let attempt = ours
            .rsplit_once('.')
            .and_then(|(_, attempt)| attempt.parse().ok())
            .unwrap_or(0);
        ours == self.make(incoming, source, call_id, attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_branch_is_the_same_for_a_retransmission_and_proves_who_it_was_made_for() {
        let key = BranchKey::new();
        let source: SocketAddr = "127.0.0.1:5070".parse().expect("addr");
        let ours = key.make("z9hG4bK1", source, "call", 0);
        assert!(ours.starts_with(BRANCH_COOKIE));
        assert_eq!(ours, key.make("z9hG4bK1", source, "call", 0));
        assert!(key.made(&ours, "z9hG4bK1", source, "call"));
        let elsewhere: SocketAddr = "192.0.2.66:5060".parse().expect("addr");
        assert!(!key.made(&ours, "z9hG4bK1", elsewhere, "call"));
        assert!(!BranchKey::new().made(&ours, "z9hG4bK1", source, "call"));
        let second = key.make("z9hG4bK1", source, "call", 1);
        assert!(second.ends_with(".1") && key.made(&second, "z9hG4bK1", source, "call"));
    }
}
