//! SIP over TCP (RFC 3261 section 18): messages framed by Content-Length, at most 64 KiB each;
//! a double-CRLF keep-alive ping between them is answered with a CRLF pong (RFC 5626 section
//! 4.4.1); a connection silent for the idle time is closed, and one source address may hold a
//! bounded number of connections. Received messages go to the proxy core of the listening address;
//! what the core sends to the peer's address goes back on the connection (section 18.2.2).
//!
//! Agents whose route says `transport=tcp` are reached over a connection the ingress opens
//! ([`Connections::send_or_connect`]) and then treats like an accepted one: the agent's responses
//! and requests come back on it, and it closes when idle.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::sip::frame::{FrameError, PONG, StreamReader};

/// What the connections tell the proxy core.
pub enum Inbound {
    /// One framed message received from `source`, the connection's peer.
    Message {
        /// The message.
        bytes: Vec<u8>,
        /// The connection's peer.
        source: SocketAddr,
    },
    /// A message that was queued for `peer` and never sent: the connection to it could not be
    /// opened (RFC 3261 section 18.4, a transport error the core answers for).
    Undeliverable {
        /// The message.
        bytes: Vec<u8>,
        /// Where it should have gone.
        peer: SocketAddr,
    },
}

/// How many queued messages a connection's writer holds before the connection is closed.
const WRITE_QUEUE: usize = 64;

/// A connection's write queue: what its writer sends, in order.
type Queue = (mpsc::Sender<Vec<u8>>, mpsc::Receiver<Vec<u8>>);

/// The live connections of one listening address, by peer address, and how many each source
/// address holds.
#[derive(Default)]
pub struct Connections {
    writers: Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
    per_source: Mutex<HashMap<IpAddr, usize>>,
}

fn queue_refused(refused: mpsc::error::TrySendError<Vec<u8>>) -> Vec<u8> {
    match refused {
        mpsc::error::TrySendError::Full(bytes) | mpsc::error::TrySendError::Closed(bytes) => bytes,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Connections {
    /// Queues `bytes` on the connection to `peer`; gives them back when there is none (or it is
    /// stuck).
    pub fn send(&self, peer: SocketAddr, bytes: Vec<u8>) -> Result<(), Vec<u8>> {
        match lock(&self.writers).get(&peer) {
            Some(writer) => writer.try_send(bytes).map_err(queue_refused),
            None => Err(bytes),
        }
    }

    /// The number of open connections.
    pub fn len(&self) -> usize {
        lock(&self.writers).len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn admit(&self, peer: SocketAddr, limit: usize) -> Option<Queue> {
        let mut per_source = lock(&self.per_source);
        let count = per_source.entry(peer.ip()).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        let (sender, receiver) = mpsc::channel(WRITE_QUEUE);
        lock(&self.writers).insert(peer, sender.clone());
        Some((sender, receiver))
    }

    fn release(&self, peer: SocketAddr) {
        lock(&self.writers).remove(&peer);
        let mut per_source = lock(&self.per_source);
        if let Some(count) = per_source.get_mut(&peer.ip()) {
            *count -= 1;
            if *count == 0 {
                per_source.remove(&peer.ip());
            }
        }
    }
}

/// How long opening a connection to an agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Connections {
    /// Queues `bytes` on the connection to `peer`, opening one when there is none: messages sent
    /// while it is being opened wait in its queue, and if it cannot be opened they go back to
    /// `core` as [`Inbound::Undeliverable`]. Gives the bytes back when they cannot be queued
    /// (the connection's queue is full).
    pub fn send_or_connect(
        self: &Arc<Self>,
        peer: SocketAddr,
        bytes: Vec<u8>,
        core: &mpsc::Sender<Inbound>,
        idle: Duration,
    ) -> Result<(), Vec<u8>> {
        let (sender, mut receiver) = {
            let mut writers = lock(&self.writers);
            if let Some(writer) = writers.get(&peer) {
                return writer.try_send(bytes).map_err(queue_refused);
            }
            let (sender, receiver) = mpsc::channel(WRITE_QUEUE);
            // A new queue has room for one message.
            sender.try_send(bytes).map_err(queue_refused)?;
            writers.insert(peer, sender.clone());
            *lock(&self.per_source).entry(peer.ip()).or_default() += 1;
            (sender, receiver)
        };
        let (connections, core) = (Arc::clone(self), core.clone());
        tokio::spawn(async move {
            let failure =
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer)).await {
                    Ok(Ok(stream)) => {
                        let _ = stream.set_nodelay(true);
                        tracing::debug!(%peer, "tcp connection to agent opened");
                        serve(stream, peer, (sender, receiver), &core, idle).await;
                        connections.release(peer);
                        return;
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "timed out".to_owned(),
                };
            tracing::warn!(%peer, "tcp connection to agent failed: {failure}");
            // Once the queue is out of the table, nothing more joins it: what it holds is all
            // that was lost.
            connections.release(peer);
            receiver.close();
            while let Some(bytes) = receiver.recv().await {
                if core
                    .send(Inbound::Undeliverable { bytes, peer })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(())
    }
}

/// Accepts connections on `listener` forever.
pub async fn accept(
    listener: TcpListener,
    connections: Arc<Connections>,
    core: mpsc::Sender<Inbound>,
    idle: Duration,
    per_source: usize,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("tcp accept failed: {e}");
                continue;
            }
        };
        let Some(outgoing) = connections.admit(peer, per_source) else {
            tracing::info!(%peer, "tcp connection refused: too many from this source");
            continue;
        };
        let (connections, core) = (Arc::clone(&connections), core.clone());
        tokio::spawn(async move {
            serve(stream, peer, outgoing, &core, idle).await;
            connections.release(peer);
        });
    }
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    (queue, mut outgoing): Queue,
    core: &mpsc::Sender<Inbound>,
    idle: Duration,
) {
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        while let Some(bytes) = outgoing.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut incoming = StreamReader::default();
    let mut chunk = [0u8; 8192];
    'connection: loop {
        let read = match tokio::time::timeout(idle, reader.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Err(_) => {
                tracing::debug!(%peer, "tcp connection idle, closing");
                break;
            }
            Ok(Ok(n)) => n,
        };
        let received = incoming.push(&chunk[..read]);
        for _ in 0..received.pings {
            // A full queue already carries traffic, which keeps the connection alive too.
            let _ = queue.try_send(PONG.to_vec());
        }
        for bytes in received.messages {
            let inbound = Inbound::Message {
                bytes,
                source: peer,
            };
            if core.send(inbound).await.is_err() {
                break 'connection;
            }
        }
        if let Some(error) = received.error {
            // A stream that cannot be framed cannot be resynchronised: close it.
            log_framing_error(peer, &error);
            break;
        }
    }
    writing.abort();
}

fn log_framing_error(peer: SocketAddr, error: &FrameError) {
    tracing::info!(%peer, "closing tcp connection: {error}");
}
