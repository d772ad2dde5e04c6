//! Every binding the registration client runs, without sockets: the store's wishes in
//! ([`Bindings::set`]), REGISTERs out, the registrars' answers, lookups and undeliverable
//! requests in, each handled to the end before the next.
//!
//! * A binding starts at a bounded rate: each one's first REGISTER is due a start spacing
//!   (`1 / max_per_second`) after the one before, so 10,000 bindings at start reach one PBX
//!   over 50 s at the default 200 per second, not at once.
//! * A changed binding is a new binding (a new contact): the old one is first removed at its
//!   registrar (Expires: 0, RFC 3261 section 10.2.2), and its successor starts once that is
//!   answered or given up, so the PBX never holds two of our contacts for one extension. A
//!   deleted binding is removed the same way, then forgotten.
//! * A registrar given by name is looked up (by the caller, [`Bindings::take_lookups`]; the
//!   answer given to [`Bindings::on_resolved`]): the REGISTER waits meanwhile, and a name with
//!   no address we can send to is a failure of the attempt, retried after the backoff.
//! * A response reaches its binding by Call-ID, only from the address the binding sends to
//!   (the binding itself checks the branch); anything else is ignored.
//! * [`Bindings::stop`] removes every binding at once; the caller waits until
//!   [`Bindings::is_idle`] or its own deadline.
//!
//! Each binding's report is written to the [`Board`] after every change to it, and each
//! address its REGISTERs go to is recorded in [`Registrars`], so admission trusts the registrar
//! for that binding's calls.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use policy::Host;

use super::RegistrationConfig;
use super::binding::{Binding, SipStatus};
use super::spec::{BindingSpec, Desired};
use super::status::{BindingKey, Board, Lifecycle, Report};
use crate::admission::registrars::Registrars;
use crate::proxy::{FAILED_LOOKUP_LIFETIME, Outgoing, RESOLVED_LIFETIME, reachable};
use crate::sip::Transport;
use crate::sip::check::{Verdict, classify_datagram};

/// The randomness the bindings draw on (branches, tags, Call-IDs, client nonces, jitter).
pub type RandomSource = Box<dyn FnMut() -> u64 + Send>;

/// One running binding.
struct Entry {
    key: BindingKey,
    spec: BindingSpec,
    binding: Binding,
    /// The registrar's address, once known.
    to: Option<SocketAddr>,
    /// A REGISTER waiting for the registrar's name to be looked up.
    held: Option<Vec<u8>>,
    /// Whether it is being removed (deleted, changed, or the ingress stopping).
    leaving: bool,
}

/// A registrar's name: its addresses until a time, or the bindings waiting for its lookup.
enum Name {
    Known(Vec<IpAddr>, Instant),
    Looking(Vec<String>),
}

/// The registration client's bindings.
pub struct Bindings {
    local: SocketAddr,
    config: RegistrationConfig,
    t1: Duration,
    random: RandomSource,
    /// What the store asks for, by key.
    desired: HashMap<BindingKey, Result<BindingSpec, String>>,
    /// The running bindings, by Call-ID.
    entries: HashMap<String, Entry>,
    /// The Call-ID of each key's running binding.
    by_key: HashMap<BindingKey, String>,
    /// When each binding needs attention; stale entries are skipped when they come up.
    timers: BinaryHeap<Reverse<(Instant, String)>>,
    /// When the next binding may start.
    next_start: Option<Instant>,
    names: HashMap<String, Name>,
    new_lookups: Vec<String>,
    /// Attempts made after a failure, since [`Bindings::take_retries`] last asked.
    retries: u64,
    stopping: bool,
    registrars: Registrars,
    board: Board,
}

impl Bindings {
    /// Bindings registering contacts at `local` (the ingress address the PBXs' calls come back
    /// to), with `config`, RFC 3261's `t1` and `random`; reporting to `board` and recording
    /// their registrars in `registrars`.
    pub fn new(
        local: SocketAddr,
        config: RegistrationConfig,
        t1: Duration,
        random: RandomSource,
        registrars: Registrars,
        board: Board,
    ) -> Self {
        Self {
            local,
            config,
            t1,
            random,
            desired: HashMap::new(),
            entries: HashMap::new(),
            by_key: HashMap::new(),
            timers: BinaryHeap::new(),
            next_start: None,
            names: HashMap::new(),
            new_lookups: Vec::new(),
            retries: 0,
            stopping: false,
            registrars,
            board,
        }
    }

    /// Makes the running bindings those of `desired`: new ones start, changed ones are removed
    /// and then started anew, deleted ones are removed and forgotten, unchanged ones go on.
    /// Returns what to send now. Ignored once stopping.
    pub fn set(&mut self, desired: Vec<Desired>, now: Instant, unix: u64) -> Vec<Outgoing> {
        if self.stopping {
            return Vec::new();
        }
        let desired: HashMap<_, _> = desired.into_iter().collect();
        let mut out = Vec::new();
        let mut keys: Vec<BindingKey> = self.desired.keys().cloned().collect();
        keys.extend(
            desired
                .keys()
                .filter(|k| !self.desired.contains_key(*k))
                .cloned(),
        );
        self.desired = desired;
        // In key order, so starts are spaced in an order that does not depend on hashing.
        keys.sort();
        for key in keys {
            self.settle(&key, now, unix, &mut out);
        }
        out
    }

    /// Brings `key`'s running binding in line with what is desired for it.
    fn settle(&mut self, key: &BindingKey, now: Instant, unix: u64, out: &mut Vec<Outgoing>) {
        if let Some(call_id) = self.by_key.get(key).cloned() {
            let wanted = matches!(self.desired.get(key), Some(Ok(spec)) if self.entries[&call_id].spec == *spec);
            if !wanted {
                self.leave(&call_id, now, unix, out);
            }
            return;
        }
        match self.desired.get(key).cloned() {
            None => self.board.remove(key),
            Some(Err(why)) => self.board.set(
                key,
                Report {
                    lifecycle: Lifecycle::Failed,
                    sip: None,
                    message: Some(why),
                    last_refreshed: None,
                    errors: Vec::new(),
                    contact: None,
                    calls_up: 0,
                },
            ),
            Some(Ok(spec)) => self.start(key.clone(), spec, now),
        }
    }

    /// Starts a binding of `spec` for `key` in the next start slot.
    fn start(&mut self, key: BindingKey, spec: BindingSpec, now: Instant) {
        let slot = self.next_start.map_or(now, |next| next.max(now));
        self.next_start = Some(slot + self.config.start_spacing());
        let transport = spec.account.transport;
        let contact = format!(
            "sip:{}@{}{}",
            spec.contact_user,
            self.local,
            if transport == Transport::Tcp {
                ";transport=tcp"
            } else {
                ""
            }
        );
        let binding = Binding::new(
            spec.account.clone(),
            contact,
            self.local,
            self.config.expires,
            self.t1,
            slot,
            &mut self.random,
        );
        let call_id = binding.call_id().to_owned();
        self.timers.push(Reverse((slot, call_id.clone())));
        self.by_key.insert(key.clone(), call_id.clone());
        let entry = Entry {
            key,
            spec,
            binding,
            to: None,
            held: None,
            leaving: false,
        };
        self.report(&entry);
        self.entries.insert(call_id, entry);
    }

    /// Removes the binding of `call_id` at its registrar; once done, its key's successor (if
    /// any is desired) starts.
    fn leave(&mut self, call_id: &str, now: Instant, unix: u64, out: &mut Vec<Outgoing>) {
        let Some(entry) = self.entries.get_mut(call_id) else {
            return;
        };
        if entry.leaving {
            return;
        }
        entry.leaving = true;
        if let Some(bytes) = entry.binding.remove(now, &mut self.random) {
            self.dispatch(call_id, bytes, now, unix, out);
        }
        self.after(call_id, now, unix, out);
    }

    /// What follows any change to the binding of `call_id`: its next timer, its report, and,
    /// once it is removed, forgetting it and starting its key's successor.
    fn after(&mut self, call_id: &str, now: Instant, unix: u64, out: &mut Vec<Outgoing>) {
        let Some(entry) = self.entries.get(call_id) else {
            return;
        };
        match entry.binding.deadline() {
            Some(at) => {
                self.timers.push(Reverse((at, call_id.to_owned())));
                self.report(entry);
            }
            None => {
                let entry = self.entries.remove(call_id).expect("present");
                self.registrars.remove(&entry.spec.contact_user);
                self.by_key.remove(&entry.key);
                if self.stopping {
                    self.board.remove(&entry.key);
                } else {
                    self.settle(&entry.key, now, unix, out);
                }
            }
        }
    }

    /// Writes the report of `entry` to the board.
    fn report(&self, entry: &Entry) {
        let binding = &entry.binding;
        let status = binding.status();
        let message = match status {
            SipStatus::Online => None,
            _ => binding.errors().next().map(|e| e.message.clone()),
        };
        self.board.set(
            &entry.key,
            Report {
                lifecycle: Lifecycle::Running,
                sip: Some(status),
                message,
                last_refreshed: binding.last_refreshed(),
                errors: binding.errors().cloned().collect(),
                contact: Some(entry.spec.contact_user.clone()),
                calls_up: 0,
            },
        );
    }

    /// Sends `bytes` of the binding of `call_id` to its registrar, or holds them until the
    /// registrar's name is looked up.
    fn dispatch(
        &mut self,
        call_id: &str,
        bytes: Vec<u8>,
        now: Instant,
        unix: u64,
        out: &mut Vec<Outgoing>,
    ) {
        let Some(entry) = self.entries.get_mut(call_id) else {
            return;
        };
        let transport = entry.spec.account.transport;
        if let Some(to) = entry.to {
            out.push(Outgoing {
                to,
                transport,
                bytes,
            });
            return;
        }
        let port = entry.spec.port;
        let name = match &entry.spec.registrar {
            Host::Ipv4(ip) => Err(IpAddr::V4(*ip)),
            Host::Ipv6(ip) => Err(IpAddr::V6(*ip)),
            Host::Domain(name) => Ok(name.to_ascii_lowercase()),
        };
        let addresses = match name {
            Err(ip) => vec![ip],
            Ok(name) => match self.names.get_mut(&name) {
                Some(Name::Known(addresses, until)) if *until > now => addresses.clone(),
                Some(Name::Looking(waiting)) => {
                    if !waiting.iter().any(|w| w == call_id) {
                        waiting.push(call_id.to_owned());
                    }
                    entry.held = Some(bytes);
                    return;
                }
                _ => {
                    self.names
                        .insert(name.clone(), Name::Looking(vec![call_id.to_owned()]));
                    self.new_lookups.push(name);
                    entry.held = Some(bytes);
                    return;
                }
            },
        };
        match reachable(self.local, &addresses, transport).first() {
            Some(ip) => {
                let to = SocketAddr::new(*ip, port);
                entry.to = Some(to);
                self.registrars.add(&entry.spec.contact_user, *ip);
                out.push(Outgoing {
                    to,
                    transport,
                    bytes,
                });
            }
            None => {
                let why = format!(
                    "the registrar {} has no address this ingress can send to over {}",
                    entry.spec.registrar,
                    transport.as_str()
                );
                entry
                    .binding
                    .on_transport_error(now, unix, &why, &mut self.random);
                self.after(call_id, now, unix, out);
            }
        }
    }

    /// The registrars' names to look up (each once); the answers go to
    /// [`Bindings::on_resolved`].
    pub fn take_lookups(&mut self) -> Vec<String> {
        std::mem::take(&mut self.new_lookups)
    }

    /// The addresses of `name` (none when it did not resolve): the REGISTERs that waited for it
    /// are sent, or fail.
    pub fn on_resolved(
        &mut self,
        name: &str,
        addresses: Vec<IpAddr>,
        now: Instant,
        unix: u64,
    ) -> Vec<Outgoing> {
        let lifetime = if addresses.is_empty() {
            FAILED_LOOKUP_LIFETIME
        } else {
            RESOLVED_LIFETIME
        };
        let waiting = match self
            .names
            .insert(name.to_owned(), Name::Known(addresses, now + lifetime))
        {
            Some(Name::Looking(waiting)) => waiting,
            _ => Vec::new(),
        };
        let mut out = Vec::new();
        for call_id in waiting {
            let held = self
                .entries
                .get_mut(&call_id)
                .and_then(|entry| entry.held.take());
            if let Some(bytes) = held {
                self.dispatch(&call_id, bytes, now, unix, &mut out);
            }
        }
        out
    }

    /// How many attempts were made after a failure since the last call.
    pub fn take_retries(&mut self) -> u64 {
        std::mem::take(&mut self.retries)
    }

    /// When [`Bindings::on_timers`] next has something to do (the timers no longer due to
    /// anything are dropped first).
    pub fn next_timer(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, call_id))) = self.timers.peek() {
            let live = self
                .entries
                .get(call_id)
                .is_some_and(|entry| entry.binding.deadline() == Some(*at));
            if live {
                return Some(*at);
            }
            self.timers.pop();
        }
        None
    }

    /// Runs what is due as of `now`: REGISTERs, retransmissions, unanswered attempts.
    pub fn on_timers(&mut self, now: Instant, unix: u64) -> Vec<Outgoing> {
        let mut out = Vec::new();
        while let Some(Reverse((at, _))) = self.timers.peek()
            && *at <= now
        {
            let Reverse((at, call_id)) = self.timers.pop().expect("peeked");
            let Some(entry) = self.entries.get_mut(&call_id) else {
                continue;
            };
            if entry.binding.deadline() != Some(at) {
                continue;
            }
            if entry.binding.is_waiting() && entry.binding.failures() > 0 {
                self.retries += 1;
            }
            if let Some(bytes) = entry.binding.on_timer(now, unix, &mut self.random) {
                self.dispatch(&call_id, bytes, now, unix, &mut out);
            }
            self.after(&call_id, now, unix, &mut out);
        }
        out
    }

    /// Handles a response from `source` to one of the ingress's own requests. Returns what to
    /// send and, when it answered a binding's REGISTER, its status code.
    pub fn on_response(
        &mut self,
        bytes: &[u8],
        source: SocketAddr,
        now: Instant,
        unix: u64,
    ) -> (Vec<Outgoing>, Option<u16>) {
        let Verdict::Response(response) = classify_datagram(bytes) else {
            return (Vec::new(), None);
        };
        let call_id = response.head.value("Call-ID").to_owned();
        let Some(entry) = self.entries.get_mut(&call_id) else {
            return (Vec::new(), None);
        };
        if entry.to != Some(source) {
            return (Vec::new(), None);
        }
        let mut out = Vec::new();
        let answer = entry
            .binding
            .on_response(&response, now, unix, &mut self.random);
        if let Some(bytes) = answer {
            self.dispatch(&call_id, bytes, now, unix, &mut out);
        }
        self.after(&call_id, now, unix, &mut out);
        (out, Some(response.code))
    }

    /// Tells the binding whose REGISTER `bytes` is that it could not be sent to `to` (a refused
    /// connection, a failed send): a failure of its attempt. Returns whether it was one of
    /// ours, and what to send instead.
    pub fn on_undeliverable(
        &mut self,
        bytes: &[u8],
        to: SocketAddr,
        now: Instant,
        unix: u64,
    ) -> Option<Vec<Outgoing>> {
        let Verdict::Request(request) = classify_datagram(bytes) else {
            return None;
        };
        let call_id = request.head.value("Call-ID").to_owned();
        let entry = self
            .entries
            .get_mut(&call_id)
            .filter(|entry| entry.to == Some(to))?;
        let why = format!(
            "cannot reach the registrar at {to} over {}",
            entry.spec.account.transport.as_str()
        );
        entry
            .binding
            .on_transport_error(now, unix, &why, &mut self.random);
        let mut out = Vec::new();
        self.after(&call_id, now, unix, &mut out);
        Some(out)
    }

    /// Removes every binding at its registrar, all at once; nothing starts afterwards. Returns
    /// what to send.
    pub fn stop(&mut self, now: Instant, unix: u64) -> Vec<Outgoing> {
        self.stopping = true;
        self.desired.clear();
        let mut out = Vec::new();
        let call_ids: Vec<String> = self.entries.keys().cloned().collect();
        for call_id in call_ids {
            self.leave(&call_id, now, unix, &mut out);
        }
        out
    }

    /// Where the bindings' reports are written.
    pub fn board(&self) -> &Board {
        &self.board
    }

    /// Whether no binding runs (after [`Bindings::stop`]: all are removed).
    pub fn is_idle(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests;
