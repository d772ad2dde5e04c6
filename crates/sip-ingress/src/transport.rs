//! The transports around the proxy cores: one core per listening address, fed by its UDP socket
//! and by the TCP connections of that address ([`tcp`]), sending what the core gives back, and
//! looking up agents' host names for it ([`resolve`]).
//!
//! Each core owns its [`Proxy`] and runs in one task (`run_core`), so the proxy's state needs
//! no lock: a message, a timer, a lookup's answer or an undeliverable message is handled to the
//! end, and what it gives to send is sent, before the next.
//!
//! The first address also carries the registration client (`crate::register::service`): it
//! sends through that address's [`Sender`], and the core hands it the responses to its
//! REGISTERs and the REGISTERs a connection could not take ([`ClientLink`]).

pub mod resolve;
pub mod tcp;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::metrics::Metrics;
use crate::proxy::{Event, Outgoing, Proxy};
use crate::report;
use crate::sip::{Transport, response};
use resolve::{Resolved, Resolver};
use tcp::Connections;
pub use tcp::Inbound;

/// How many received TCP messages wait for the proxy core before readers wait.
const CORE_QUEUE: usize = 1024;

/// The largest datagram read (IPv4 UDP maximum).
const MAX_DATAGRAM: usize = 65_535;

/// Where the ingress listens and how it keeps connections (`[sip]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// UDP addresses to listen on.
    pub udp: Vec<SocketAddr>,
    /// TCP addresses to listen on; each is also a UDP address, whose proxy it shares.
    pub tcp: Vec<SocketAddr>,
    /// How long a TCP connection may stay silent before it is closed.
    pub tcp_idle: Duration,
    /// The most TCP connections one source address may hold.
    pub tcp_connections_per_source: usize,
    /// Addresses of agents' host names, in order, used instead of the system resolver (like
    /// `/etc/hosts`, for this ingress only), by lower-case name.
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
}

/// The registration client's way in and out through the first listening address.
pub struct ClientLink {
    /// The address: REGISTERs leave from it and name it in their Via and Contact.
    pub local: SocketAddr,
    /// Sends as that address's core does.
    pub sender: Sender,
    /// What the core hands over: the responses to the client's REGISTERs (those whose only
    /// Via is ours) as [`Inbound::Message`], and the REGISTERs a connection could not take as
    /// [`Inbound::Undeliverable`].
    pub messages: mpsc::Receiver<Inbound>,
    /// Looks up registrars' names (with `[sip.hosts]` as overrides), answering to `resolved`.
    pub resolver: Resolver,
    /// The lookups' answers.
    pub resolved: mpsc::Receiver<Resolved>,
}

/// Binds every address of `config` and spawns its proxy core (the proxy `proxy_for` makes for
/// the bound address) and its TCP listener into `tasks`. Returns the link through which the
/// registration client sends and receives at the first address.
pub async fn listen(
    config: &TransportConfig,
    mut proxy_for: impl FnMut(SocketAddr) -> Proxy,
    metrics: &Arc<Metrics>,
    tasks: &mut JoinSet<()>,
) -> Result<ClientLink, String> {
    let hosts = Arc::new(config.hosts.clone());
    let mut link = None;
    for addr in &config.udp {
        let socket = Arc::new(
            UdpSocket::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on udp {addr}: {e}"))?,
        );
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(%local, "listening on udp");
        let connections = Arc::new(Connections::default());
        let (core, inbound) = mpsc::channel(CORE_QUEUE);
        if config.tcp.contains(addr) {
            let listener = TcpListener::bind(local)
                .await
                .map_err(|e| format!("cannot listen on tcp {local}: {e}"))?;
            tracing::info!(%local, "listening on tcp");
            tasks.spawn(tcp::accept(
                listener,
                Arc::clone(&connections),
                core.clone(),
                config.tcp_idle,
                config.tcp_connections_per_source,
            ));
        }
        let sender = Sender {
            socket,
            connections,
            core,
            tcp_idle: config.tcp_idle,
        };
        let client = if link.is_none() {
            let (to_client, messages) = mpsc::channel(CORE_QUEUE);
            let (answers, resolved) = mpsc::channel(CORE_QUEUE);
            link = Some(ClientLink {
                local,
                sender: sender.clone(),
                messages,
                resolver: Resolver::new(Arc::clone(&hosts), answers),
                resolved,
            });
            Some(to_client)
        } else {
            None
        };
        let (answers, resolved) = mpsc::channel(CORE_QUEUE);
        let transports = Transports {
            sender,
            inbound,
            resolver: Resolver::new(Arc::clone(&hosts), answers),
            resolved,
            client,
        };
        tasks.spawn(run_core(transports, proxy_for(local), Arc::clone(metrics)));
    }
    link.ok_or_else(|| "sip.udp: at least one address is required".to_owned())
}

/// How one listening address sends: its UDP socket, its TCP connections (opened as needed).
#[derive(Clone)]
pub struct Sender {
    socket: Arc<UdpSocket>,
    connections: Arc<Connections>,
    /// Where messages from connections the ingress opens go (the core's own inbound queue).
    core: mpsc::Sender<Inbound>,
    /// How long a connection the ingress opens may stay silent.
    tcp_idle: Duration,
}

impl Sender {
    /// Sends over the connection to the destination when there is one, else as the message
    /// asks: a UDP datagram, or over a new TCP connection; a response to a request that came
    /// over TCP on a connection that has closed goes over a new one (RFC 3261 section 18.2.2).
    /// Gives the bytes back when they cannot be sent now; a connection that cannot be opened
    /// gives its messages back later to the core, as [`Inbound::Undeliverable`].
    pub async fn send(&self, out: Outgoing) -> Result<(), Vec<u8>> {
        let Outgoing {
            to,
            transport,
            bytes,
        } = out;
        if transport == Transport::Tcp {
            return self.send_or_connect(to, bytes);
        }
        let Err(bytes) = self.connections.send(to, bytes) else {
            return Ok(());
        };
        if let Some(target) = response::reconnect_target(&bytes, to.ip()) {
            return self.send_or_connect(target, bytes);
        }
        match self.socket.send_to(&bytes, to).await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(%to, "udp send failed: {e}");
                Err(bytes)
            }
        }
    }

    /// Queues `bytes` on the TCP connection to `to`, opening one when there is none; gives them
    /// back when its queue is full.
    fn send_or_connect(&self, to: SocketAddr, bytes: Vec<u8>) -> Result<(), Vec<u8>> {
        self.connections
            .send_or_connect(to, bytes, &self.core, self.tcp_idle)
            .inspect_err(|_| tracing::warn!(%to, "tcp send failed: the connection's queue is full"))
    }
}

/// What one listening address receives from and sends through.
struct Transports {
    sender: Sender,
    inbound: mpsc::Receiver<Inbound>,
    /// Looks up agents' host names, and where the core reads their answers.
    resolver: Resolver,
    resolved: mpsc::Receiver<Resolved>,
    /// The registration client, at the first address only.
    client: Option<mpsc::Sender<Inbound>>,
}

impl Transports {
    /// Sends what the proxy core gave to send. What cannot be sent goes back to the core
    /// ([`Proxy::on_undeliverable`]), and the answers it gives for that are sent in turn.
    async fn deliver(&self, proxy: &mut Proxy, metrics: &Metrics, outgoing: Vec<Outgoing>) {
        let mut batch = outgoing;
        // Only an unanswered INVITE gives something back: an answer once, or itself for its
        // agent's next address, of which there are at most MOST_ADDRESSES_TRIED. This ends.
        while !batch.is_empty() {
            let mut answers = Vec::new();
            for out in batch {
                let to = out.to;
                if let Err(bytes) = self.sender.send(out).await {
                    answers.extend(undeliverable(proxy, metrics, &bytes, to));
                }
            }
            batch = answers;
        }
    }

    /// Hands `message` to the registration client; dropped (and so retried by the client's
    /// own timers) when there is none or its queue is full.
    fn to_client(&self, message: Inbound) {
        if let Some(client) = &self.client
            && client.try_send(message).is_err()
        {
            tracing::warn!("the registration client's queue is full: a message to it was dropped");
        }
    }
}

/// Tells the proxy core that `bytes` could not be sent to `to`; returns its answers to send.
fn undeliverable(
    proxy: &mut Proxy,
    metrics: &Metrics,
    bytes: &[u8],
    to: SocketAddr,
) -> Vec<Outgoing> {
    let (answers, event) = proxy.on_undeliverable(bytes, to, Instant::now());
    if let Some(event) = event {
        report::event(metrics, &event, to);
    }
    answers
}

/// The proxy core of one listening address: it owns the proxy state, and handles what arrives
/// on the UDP socket and on the TCP connections of that address.
async fn run_core(mut transports: Transports, mut proxy: Proxy, metrics: Arc<Metrics>) {
    let socket_label = transports
        .sender
        .socket
        .local_addr()
        .map_or_else(|_| "unknown".to_owned(), |a| a.to_string());
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    let mut expiry = tokio::time::interval(Duration::from_secs(1));
    loop {
        let (bytes, source, transport) = tokio::select! {
            received = transports.sender.socket.recv_from(&mut buffer) => match received {
                Ok((length, source)) => (buffer[..length].to_vec(), source, Transport::Udp),
                Err(e) => {
                    tracing::warn!("udp receive failed: {e}");
                    continue;
                }
            },
            Some(inbound) = transports.inbound.recv() => match inbound {
                Inbound::Message { bytes, source } => (bytes, source, Transport::Tcp),
                Inbound::Undeliverable { bytes, peer } if bytes.starts_with(b"REGISTER ") => {
                    transports.to_client(Inbound::Undeliverable { bytes, peer });
                    continue;
                }
                Inbound::Undeliverable { bytes, peer } => {
                    let answers = undeliverable(&mut proxy, &metrics, &bytes, peer);
                    transports.deliver(&mut proxy, &metrics, answers).await;
                    continue;
                }
            },
            _ = expiry.tick() => {
                proxy.expire(Instant::now());
                metrics.live(&socket_label, proxy.live());
                continue;
            }
            () = until(proxy.next_timer()) => {
                let (outgoing, events) = proxy.on_timers(Instant::now());
                for event in &events {
                    report::count(&metrics, event);
                }
                transports.deliver(&mut proxy, &metrics, outgoing).await;
                continue;
            }
            Some((name, addresses)) = transports.resolved.recv() => {
                tracing::debug!(%name, ?addresses, "agent host name looked up");
                let (outgoing, events) = proxy.on_resolved(&name, addresses, Instant::now());
                for event in &events {
                    report::resolved_event(&metrics, event, &name);
                }
                metrics.live(&socket_label, proxy.live());
                transports.deliver(&mut proxy, &metrics, outgoing).await;
                continue;
            }
        };
        let (outgoing, event) = proxy.on_message(&bytes, source, transport, Instant::now());
        metrics.message(transport.as_str());
        report::event(&metrics, &event, source);
        if event == Event::OwnResponse {
            transports.to_client(Inbound::Message { bytes, source });
        }
        metrics.live(&socket_label, proxy.live());
        transports.resolver.look_up(proxy.take_lookups());
        transports.deliver(&mut proxy, &metrics, outgoing).await;
    }
}

/// Completes at `deadline`, never when there is none.
pub(crate) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
