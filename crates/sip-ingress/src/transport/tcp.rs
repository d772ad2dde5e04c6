//! SIP over TCP (RFC 3261 section 18): messages framed by Content-Length, at most 64 KiB each;
//! a double-CRLF keep-alive ping between them is answered with a CRLF pong (RFC 5626 section
//! 4.4.1); a connection silent for the idle time is closed, and one source address may hold a
//! bounded number of connections. Received messages go to the proxy core of the listening address;
//! what the core sends to the peer's address goes back on the connection (section 18.2.2).
//!
//! Agents whose route says `transport=tcp` are reached over a connection the ingress opens
//! ([`Connections::send_or_connect`]) and then treats like an accepted one: the agent's responses
//! and requests come back on it, and it closes when idle.
//!
//! Whatever a connection was given and did not write, because it could not be opened or because
//! it ended first, goes back to the core as [`Inbound::Undeliverable`]: an INVITE lost that way
//! is answered at once rather than at Timer B.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

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
    /// A message that was queued for `peer` and never (wholly) sent: the connection to it could
    /// not be opened, or it closed first (RFC 3261 section 18.4, a transport error the core
    /// answers for).
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

    /// Ends the connection to `peer`: takes it out of the table, then gives the core what it
    /// never wrote, `unsent` (the message whose write failed) first.
    async fn hand_back(
        &self,
        peer: SocketAddr,
        unsent: Option<Vec<u8>>,
        mut queue: mpsc::Receiver<Vec<u8>>,
        core: &mpsc::Sender<Inbound>,
    ) {
        // Once the queue is out of the table, nothing more joins it: what it holds is all that
        // was lost.
        self.release(peer);
        queue.close();
        let mut lost = 0usize;
        let queued = std::iter::from_fn(|| queue.try_recv().ok());
        for bytes in unsent.into_iter().chain(queued) {
            lost += 1;
            if core
                .send(Inbound::Undeliverable { bytes, peer })
                .await
                .is_err()
            {
                break;
            }
        }
        if lost > 0 {
            tracing::info!(%peer, lost, "tcp connection ended with messages it never sent");
        }
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
        let (sender, receiver) = {
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
                        serve(stream, peer, (sender, receiver), &connections, &core, idle).await;
                        return;
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "timed out".to_owned(),
                };
            tracing::warn!(%peer, "tcp connection to agent failed: {failure}");
            connections.hand_back(peer, None, receiver, &core).await;
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
            serve(stream, peer, outgoing, &connections, &core, idle).await;
        });
    }
}

/// What a connection's writer ends with: its queue, and the message it failed to write.
type Unwritten = (mpsc::Receiver<Vec<u8>>, Option<Vec<u8>>);

/// Writes the queue's messages in order until the queue closes, a write fails or `stop` fires.
async fn write_queue(
    mut writer: OwnedWriteHalf,
    mut queue: mpsc::Receiver<Vec<u8>>,
    mut stop: oneshot::Receiver<()>,
) -> Unwritten {
    loop {
        let bytes = tokio::select! {
            _ = &mut stop => return (queue, None),
            next = queue.recv() => match next {
                Some(bytes) => bytes,
                None => return (queue, None),
            },
        };
        // A peer that stopped reading blocks the write: stopping gives the message back.
        let written = tokio::select! {
            _ = &mut stop => false,
            result = writer.write_all(&bytes) => result.is_ok(),
        };
        if !written {
            return (queue, Some(bytes));
        }
    }
}

/// Runs one connection until it ends (the peer closes it, it idles, it cannot be framed or a
/// write fails), then hands back what it never wrote.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    (queue, outgoing): Queue,
    connections: &Connections,
    core: &mpsc::Sender<Inbound>,
    idle: Duration,
) {
    let (mut reader, writer) = stream.into_split();
    let (stop, stopped) = oneshot::channel();
    let mut writing = tokio::spawn(write_queue(writer, outgoing, stopped));
    let mut writer_ended = None;
    let mut incoming = StreamReader::default();
    let mut chunk = [0u8; 8192];
    'connection: loop {
        let read = tokio::select! {
            read = tokio::time::timeout(idle, reader.read(&mut chunk)) => read,
            ended = &mut writing => {
                writer_ended = Some(ended);
                break;
            }
        };
        let read = match read {
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
    let ended = match writer_ended {
        Some(ended) => ended,
        None => {
            let _ = stop.send(());
            writing.await
        }
    };
    match ended {
        Ok((queue, unsent)) => connections.hand_back(peer, unsent, queue, core).await,
        // The writer does not panic; were it to, its queue is gone with it.
        Err(_) => connections.release(peer),
    }
}

fn log_framing_error(peer: SocketAddr, error: &FrameError) {
    tracing::info!(%peer, "closing tcp connection: {error}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message of `len` bytes that says which it is in its first eight.
    fn numbered(number: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![b'x'; len];
        bytes[..8].copy_from_slice(&number.to_be_bytes());
        bytes
    }

    fn number_of(bytes: &[u8]) -> u64 {
        u64::from_be_bytes(bytes[..8].try_into().expect("eight bytes"))
    }

    #[tokio::test]
    async fn a_connection_that_ends_hands_back_every_message_it_did_not_write_in_order() {
        let agent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let peer = agent.local_addr().expect("address");
        let connections = Arc::new(Connections::default());
        let (core, mut inbound) = mpsc::channel(WRITE_QUEUE * 2);
        let idle = Duration::from_secs(60);
        let size = 60 * 1024;

        // The agent accepts and never reads: the kernel's buffers fill, the writer blocks, and
        // the queue fills behind it until it refuses a message.
        let mut queued = 0u64;
        connections
            .send_or_connect(peer, numbered(queued, size), &core, idle)
            .expect("a new connection takes its first message");
        let (mut accepted, _) = agent.accept().await.expect("accept");
        loop {
            queued += 1;
            match connections.send_or_connect(peer, numbered(queued, size), &core, idle) {
                Ok(()) => tokio::task::yield_now().await,
                Err(refused) => {
                    assert_eq!(
                        number_of(&refused),
                        queued,
                        "the refused message comes back"
                    );
                    break;
                }
            }
            assert!(queued < 100_000, "the queue never filled");
        }

        // The agent closes its side: the ingress's read ends, and with it the connection.
        accepted.shutdown().await.expect("shutdown");
        let mut handed_back = Vec::new();
        while let Ok(Some(inbound)) =
            tokio::time::timeout(Duration::from_secs(10), inbound.recv()).await
        {
            match inbound {
                Inbound::Undeliverable { bytes, peer: to } => {
                    assert_eq!(to, peer);
                    handed_back.push(number_of(&bytes));
                }
                Inbound::Message { .. } => panic!("the agent sent nothing"),
            }
            if handed_back.last() == Some(&(queued - 1)) {
                break;
            }
        }

        assert!(
            handed_back.len() >= WRITE_QUEUE,
            "only {} of a full queue came back",
            handed_back.len()
        );
        // What reached the agent before the ingress closed: whole messages, then perhaps part
        // of the one whose write was stopped, which counts as not sent.
        let mut received = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), accepted.read_to_end(&mut received))
            .await
            .expect("the ingress closes its side")
            .expect("read");
        let delivered = (received.len() / size) as u64;
        let expected: Vec<u64> = (delivered..queued).collect();
        assert_eq!(handed_back, expected, "every unwritten message, in order");
        tokio::time::timeout(Duration::from_secs(10), async {
            while !connections.is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the ended connection leaves the table");
        assert!(lock(&connections.per_source).is_empty());
    }
}
