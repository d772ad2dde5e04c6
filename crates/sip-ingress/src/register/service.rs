//! The registration client's task: it drives [`Bindings`] over the first listening address
//! ([`ClientLink`]) with what the store asks for (a watch channel the reloader publishes to),
//! until told to stop; then it removes every binding at its registrar, in parallel, and ends
//! when all are answered or [`STOP_WITHIN`] has passed, whichever comes first.
//!
//! Like a proxy core, one task owns the bindings, so nothing is locked: a change of the store,
//! a response, a lookup's answer or a timer is handled to the end, and what it gives to send
//! is sent, before the next.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::bindings::Bindings;
use super::spec::Desired;
use crate::clock::unix_now;
use crate::metrics::Metrics;
use crate::proxy::Outgoing;
use crate::transport::resolve::Resolved;
use crate::transport::{ClientLink, Inbound, until};

/// How long the removals on stop may take.
pub const STOP_WITHIN: Duration = Duration::from_secs(2);

/// How often the bindings' gauges are brought up to date.
const GAUGES_EVERY: Duration = Duration::from_secs(1);

/// What woke the client.
enum Woke {
    /// The store's bindings changed.
    Desired,
    /// The core handed something over.
    Message(Inbound),
    /// A registrar's name was looked up.
    Resolved(Resolved),
    /// A binding's timer is due.
    Timer,
    /// The gauges are due.
    Gauges,
}

/// The running registration client.
pub struct Service {
    bindings: Bindings,
    link: ClientLink,
    desired: watch::Receiver<Arc<Vec<Desired>>>,
    stop: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
}

impl Service {
    /// A client running `bindings` through `link`, registering what `desired` holds until
    /// `stop` turns true, its gauges from the bindings' board.
    pub fn new(
        bindings: Bindings,
        link: ClientLink,
        desired: watch::Receiver<Arc<Vec<Desired>>>,
        stop: watch::Receiver<bool>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            bindings,
            link,
            desired,
            stop,
            metrics,
        }
    }

    /// Runs until stopped and every binding is removed (or [`STOP_WITHIN`] has passed).
    pub async fn run(mut self) {
        let mut gauges = tokio::time::interval(GAUGES_EVERY);
        self.desired.mark_changed();
        // Closed only when the reloader is gone, as the process ends.
        let mut desired_open = true;
        loop {
            let next_timer = self.bindings.next_timer();
            let woke = tokio::select! {
                changed = self.desired.changed(), if desired_open => match changed {
                    Ok(()) => Woke::Desired,
                    Err(_) => {
                        desired_open = false;
                        continue;
                    }
                },
                _ = self.stop.wait_for(|stop| *stop) => break,
                Some(message) = self.link.messages.recv() => Woke::Message(message),
                Some(resolved) = self.link.resolved.recv() => Woke::Resolved(resolved),
                () = until(next_timer) => Woke::Timer,
                _ = gauges.tick() => Woke::Gauges,
            };
            let out = self.on_woke(woke);
            self.deliver(out).await;
        }
        self.remove_all().await;
    }

    /// Removes every binding, waiting for their answers at most [`STOP_WITHIN`].
    async fn remove_all(&mut self) {
        let deadline = tokio::time::Instant::now() + STOP_WITHIN;
        let out = self.bindings.stop(Instant::now(), unix_now());
        tracing::info!(
            removals = out.len(),
            "unregistering every binding before stopping"
        );
        self.deliver(out).await;
        while !self.bindings.is_idle() {
            let next_timer = self.bindings.next_timer();
            let woke = tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!("stopping with bindings whose removal was not answered in time");
                    break;
                }
                Some(message) = self.link.messages.recv() => Woke::Message(message),
                Some(resolved) = self.link.resolved.recv() => Woke::Resolved(resolved),
                () = until(next_timer) => Woke::Timer,
            };
            let out = self.on_woke(woke);
            self.deliver(out).await;
        }
        self.update_gauges();
    }

    /// Handles what woke the task; returns what to send.
    fn on_woke(&mut self, woke: Woke) -> Vec<Outgoing> {
        let now = Instant::now();
        match woke {
            Woke::Desired => {
                let desired = self.desired.borrow_and_update().as_ref().clone();
                self.bindings.set(desired, now, unix_now())
            }
            Woke::Message(message) => self.on_message(message),
            Woke::Resolved((name, addresses)) => {
                tracing::debug!(%name, ?addresses, "registrar host name looked up");
                self.bindings.on_resolved(&name, addresses, now, unix_now())
            }
            Woke::Timer => self.bindings.on_timers(now, unix_now()),
            Woke::Gauges => {
                self.update_gauges();
                Vec::new()
            }
        }
    }

    /// Handles what the core handed over.
    fn on_message(&mut self, message: Inbound) -> Vec<Outgoing> {
        let now = Instant::now();
        match message {
            Inbound::Message { bytes, source } => {
                let (out, code) = self.bindings.on_response(&bytes, source, now, unix_now());
                match code {
                    Some(code) => {
                        tracing::debug!(registrar = %source, code, "registrar answered");
                        self.metrics.register_answer(code);
                    }
                    None => tracing::debug!(%source, "a response to no binding was ignored"),
                }
                out
            }
            Inbound::Undeliverable { bytes, peer } => {
                tracing::info!(registrar = %peer, "a REGISTER could not be sent");
                self.bindings
                    .on_undeliverable(&bytes, peer, now, unix_now())
                    .unwrap_or_default()
            }
        }
    }

    /// Sends `out`; what cannot be sent is a failure of its binding's attempt.
    async fn deliver(&mut self, out: Vec<Outgoing>) {
        self.link.resolver.look_up(self.bindings.take_lookups());
        let mut batch = out;
        // A failed send fails its attempt, which sends nothing until its backoff: this ends.
        while !batch.is_empty() {
            let mut next = Vec::new();
            self.metrics.register_requests(batch.len() as u64);
            for out in batch {
                let to = out.to;
                if let Err(bytes) = self.link.sender.send(out).await {
                    let now = Instant::now();
                    next.extend(
                        self.bindings
                            .on_undeliverable(&bytes, to, now, unix_now())
                            .unwrap_or_default(),
                    );
                }
            }
            batch = next;
        }
        self.metrics.register_retries(self.bindings.take_retries());
    }

    fn update_gauges(&self) {
        let counts = self.bindings.board().counts();
        self.metrics.registrations(
            counts
                .into_iter()
                .map(|((lifecycle, sip), count)| (lifecycle.as_str(), sip, count)),
        );
    }
}
