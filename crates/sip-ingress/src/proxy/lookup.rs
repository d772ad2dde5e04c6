//! Agents' host names as the proxy core waits for them: the answers the transport loop's
//! resolver gave (cached), and the admitted INVITEs held until their agent's name is looked up.
//!
//! The core never resolves: it asks for a name once however many INVITEs wait for it
//! ([`Lookups::take_new`]) and is told the addresses later. Only address records are used: the
//! port is the one in the URI or route, 5060 without one (no RFC 3263 NAPTR/SRV selection yet).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::transaction::AdmittedInvite;
use crate::sip::Transport;

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

/// The addresses a request over `transport` from `local` can go to, in order, at most
/// [`MOST_ADDRESSES_TRIED`]: over UDP it leaves by our socket, so they must be of the socket's
/// family; a TCP connection can be opened to either.
pub(crate) fn reachable(
    local: SocketAddr,
    addresses: &[IpAddr],
    transport: Transport,
) -> Vec<IpAddr> {
    addresses
        .iter()
        .filter(|ip| transport == Transport::Tcp || ip.is_ipv4() == local.is_ipv4())
        .take(MOST_ADDRESSES_TRIED)
        .copied()
        .collect()
}

/// An admitted INVITE whose next hop is a host name being looked up.
#[derive(Debug)]
pub(super) struct HeldInvite {
    port: u16,
    /// Taken when the INVITE is forwarded, cancelled or refused.
    admitted: Option<AdmittedInvite>,
    /// The 503 the caller gets if the name does not resolve to an address we can send to.
    unreachable: Vec<u8>,
    /// The last response sent to the caller (100, or the 487 or 503 that ended the
    /// transaction), sent again on retransmissions.
    last_response: Vec<u8>,
    since: Instant,
}

impl HeldInvite {
    /// The last response the caller had, for its retransmissions.
    pub fn last_response(&self) -> &[u8] {
        &self.last_response
    }

    /// Ends the INVITE for the caller's CANCEL: its 487, None when it had ended already.
    pub fn cancel(&mut self) -> Option<Vec<u8>> {
        let admitted = self.admitted.take()?;
        self.last_response = admitted.terminated.clone();
        Some(admitted.terminated)
    }
}

/// What the resolver said about a host name: its addresses in the resolver's order, none when
/// the lookup failed.
#[derive(Debug)]
struct Resolution {
    addresses: Vec<IpAddr>,
    until: Instant,
}

/// The pending and answered look-ups of agents' host names.
#[derive(Debug, Default)]
pub(super) struct Lookups {
    /// Host names of agents, resolved.
    names: HashMap<String, Resolution>,
    /// Transactions whose next hop is a name being looked up, by transaction key.
    held: HashMap<String, HeldInvite>,
    /// Names being looked up -> the keys of the transactions waiting for them.
    waiting: HashMap<String, Vec<String>>,
    /// Names to look up that the transport loop has not taken yet.
    new: Vec<String>,
}

impl Lookups {
    /// The addresses of `name` as of `now`, if it was looked up recently (none when it did not
    /// resolve).
    pub fn addresses(&self, name: &str, now: Instant) -> Option<&[IpAddr]> {
        self.names
            .get(name)
            .filter(|r| r.until > now)
            .map(|r| r.addresses.as_slice())
    }

    /// Holds `admitted` under its transaction key until `name` is looked up, asking for the
    /// lookup unless one is under way; the caller gets `unreachable` if it fails.
    pub fn hold(
        &mut self,
        name: String,
        port: u16,
        admitted: AdmittedInvite,
        unreachable: Vec<u8>,
        now: Instant,
    ) {
        let key = admitted.key.clone();
        self.held.insert(
            key.clone(),
            HeldInvite {
                port,
                last_response: admitted.trying.clone(),
                admitted: Some(admitted),
                unreachable,
                since: now,
            },
        );
        let waiting = self.waiting.entry(name.clone()).or_default();
        if waiting.is_empty() {
            self.new.push(name);
        }
        waiting.push(key);
    }

    /// The names the transport loop must look up, each once.
    pub fn take_new(&mut self) -> Vec<String> {
        std::mem::take(&mut self.new)
    }

    /// The held INVITE of transaction `key`.
    pub fn held(&self, key: &str) -> Option<&HeldInvite> {
        self.held.get(key)
    }

    /// The held INVITE of transaction `key`, to cancel.
    pub fn held_mut(&mut self, key: &str) -> Option<&mut HeldInvite> {
        self.held.get_mut(key)
    }

    /// How many INVITEs are held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Takes the INVITEs that waited for `name` and are still to be sent: their transaction
    /// keys, the port their next hop names, and the INVITEs. Their entries stay, to answer
    /// retransmissions, until [`Lookups::forwarded`].
    pub fn release(&mut self, name: &str) -> Vec<(String, u16, AdmittedInvite)> {
        let waiting = self.waiting.remove(name).unwrap_or_default();
        waiting
            .into_iter()
            .filter_map(|key| {
                let held = self.held.get_mut(&key)?;
                let admitted = held.admitted.take()?;
                Some((key, held.port, admitted))
            })
            .collect()
    }

    /// Forgets the held INVITE of `key`: it was forwarded, and its transaction answers now.
    pub fn forwarded(&mut self, key: &str) {
        self.held.remove(key);
    }

    /// Ends the held INVITE of `key` whose name has no address to send to: its 503.
    pub fn unreachable(&mut self, key: &str) -> Option<Vec<u8>> {
        let held = self.held.get_mut(key)?;
        held.last_response = held.unreachable.clone();
        Some(held.unreachable.clone())
    }

    /// Remembers the addresses of `name`: for [`RESOLVED_LIFETIME`], or
    /// [`FAILED_LOOKUP_LIFETIME`] when there are none.
    pub fn remember(&mut self, name: &str, addresses: Vec<IpAddr>, now: Instant) {
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
    }

    /// Forgets held INVITEs older than `lifetime` and answers past their time.
    pub fn expire(&mut self, now: Instant, lifetime: Duration) {
        self.held
            .retain(|_, held| now.duration_since(held.since) < lifetime);
        self.names.retain(|_, resolution| resolution.until > now);
    }
}
