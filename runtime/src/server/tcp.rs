//! SIP over TCP: accepts connections, frames each byte stream into messages
//! ([`crate::sip::stream::StreamFramer`]) and hands them to the endpoint as if they were
//! datagrams from the peer's address; responses and our own requests to that address go back
//! over the same connection.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] connections, each closed after [`IDLE_TIMEOUT`] without
//! traffic, after [`MESSAGE_TIMEOUT`] with an unfinished message (a peer trickling bytes keeps
//! the idle timer fresh, not this one: slow-loris), when a write stalls for [`WRITE_TIMEOUT`]
//! (a peer that does not read), and at once when its stream cannot be framed (bad, overlarge
//! or conflicting Content-Length, a message over the size limit), since a stream cannot be
//! resynchronised.

use super::guard::{Guard, Verdict};
use crate::sip::stream::{Frame, StreamFramer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Connections open at once per listener; more are refused.
pub const MAX_CONNECTIONS: usize = 4096;
/// Connections open at once from one address.
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 64;
/// A connection without traffic this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A message must be complete this long after its first byte arrived.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// A write (a response, a keep-alive pong) that cannot be handed to the kernel this long means
/// the peer stopped reading: the connection is closed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection closed for a framing error still sends answers to the messages
/// framed before the error.
pub const LINGER: Duration = Duration::from_secs(1);
/// Largest message accepted on a stream.
pub const MAX_MESSAGE: usize = 64 * 1024;

type Connections = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>;

/// The connections of one TCP listener, seen by the endpoint as one message source and sink.
pub(crate) struct TcpHub {
    frames: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    connections: Connections,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for TcpHub {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl TcpHub {
    /// Starts accepting on a bound listener; `guard` vets each connection's source.
    pub(crate) fn start(listener: TcpListener, guard: Arc<Mutex<Guard>>) -> Self {
        let (frames_tx, frames) = mpsc::channel(1024);
        let connections: Connections = Arc::default();
        let accept = tokio::spawn(accept_loop(listener, frames_tx, connections.clone(), guard));
        TcpHub {
            frames,
            connections,
            accept,
        }
    }

    /// The next message from any connection.
    pub(crate) async fn recv(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.frames.recv().await
    }

    /// Sends to the connection of `to`; dropped (and logged) when there is none any more.
    pub(crate) fn send(&self, data: Vec<u8>, to: SocketAddr) {
        let sender = self
            .connections
            .lock()
            .ok()
            .and_then(|c| c.get(&to).cloned());
        match sender {
            Some(sender) => {
                if sender.try_send(data).is_err() {
                    tracing::debug!(%to, "TCP connection backed up or closing; message dropped");
                }
            }
            None => tracing::debug!(%to, "no TCP connection to send on"),
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    frames: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    connections: Connections,
    guard: Arc<Mutex<Guard>>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!("TCP accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // A source outside the ACL, or banned, gets no connection at all: it could otherwise
        // hold slots open with keep-alives.
        let verdict = guard.lock().map_or(Verdict::Drop, |mut g| {
            g.check(peer.ip(), std::time::Instant::now())
        });
        if verdict != Verdict::Pass {
            tracing::debug!(%peer, "TCP connection refused by the guard");
            continue;
        }
        let (tx, rx) = mpsc::channel(64);
        {
            let Ok(mut open) = connections.lock() else {
                return;
            };
            if open.len() >= MAX_CONNECTIONS {
                tracing::warn!(%peer, "TCP connection refused: {MAX_CONNECTIONS} already open");
                continue;
            }
            let from_source = open.keys().filter(|a| a.ip() == peer.ip()).count();
            if from_source >= MAX_CONNECTIONS_PER_SOURCE {
                tracing::warn!(%peer, "TCP connection refused: {MAX_CONNECTIONS_PER_SOURCE} already open from this address");
                continue;
            }
            open.insert(peer, tx);
        }
        tokio::spawn(connection(
            stream,
            peer,
            frames.clone(),
            rx,
            connections.clone(),
        ));
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    frames: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    connections: Connections,
) {
    // The slot is given back however the task ends (a panic included), so it cannot leak.
    let _slot = Slot { connections, peer };
    let (mut reader, mut writer) = stream.into_split();
    let mut framer = StreamFramer::new(MAX_MESSAGE);
    let mut buf = [0u8; 8192];
    let mut idle_deadline = Instant::now() + IDLE_TIMEOUT;
    // Set while an unfinished message is buffered: when its first byte came, plus the limit.
    let mut message_deadline: Option<Instant> = None;
    // Whether a message of this connection went to the endpoint: its answer is owed.
    let mut framed_any = false;
    'connection: loop {
        let deadline = message_deadline.map_or(idle_deadline, |m| m.min(idle_deadline));
        tokio::select! {
            read = reader.read(&mut buf) => {
                let n = match read {
                    Ok(n) if n > 0 => n,
                    Ok(_) | Err(_) => break,
                };
                let now = Instant::now();
                idle_deadline = now + IDLE_TIMEOUT;
                framer.push(&buf[..n]);
                let mut framed = false;
                loop {
                    match framer.next_frame() {
                        Ok(Some(Frame::Message(message))) => {
                            framed = true;
                            framed_any = true;
                            if frames.send((peer, message)).await.is_err() {
                                break 'connection;
                            }
                        }
                        Ok(Some(Frame::KeepAlive)) => {
                            framed = true;
                            if !write(&mut writer, b"\r\n", peer).await {
                                break 'connection;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::info!(%peer, "closing TCP connection: {e}");
                            if framed_any {
                                linger(&mut outgoing, &mut writer, peer).await;
                            }
                            break 'connection;
                        }
                    }
                }
                // A new message starts its own clock; more bytes of the same one do not.
                if !framer.is_partial() {
                    message_deadline = None;
                } else if framed || message_deadline.is_none() {
                    message_deadline = Some(now + MESSAGE_TIMEOUT);
                }
            }
            message = outgoing.recv() => match message {
                Some(data) => {
                    if !write(&mut writer, &data, peer).await {
                        break;
                    }
                    idle_deadline = Instant::now() + IDLE_TIMEOUT;
                }
                None => break,
            },
            () = tokio::time::sleep_until(deadline) => {
                if message_deadline.is_some_and(|m| m <= Instant::now()) {
                    tracing::info!(%peer, "closing TCP connection: no complete message within {MESSAGE_TIMEOUT:?}");
                } else {
                    tracing::debug!(%peer, "TCP connection idle; closing");
                }
                break;
            }
        }
    }
}

/// A connection's entry in the table, removed when the connection task ends.
struct Slot {
    connections: Connections,
    peer: SocketAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.connections.lock() {
            open.remove(&self.peer);
        }
    }
}

/// After a framing error no more is read, but answers to the messages framed before it
/// (RFC 4475 `dblreq`: two requests, then octets that frame nothing) still go out for a moment.
async fn linger(
    outgoing: &mut mpsc::Receiver<Vec<u8>>,
    writer: &mut OwnedWriteHalf,
    peer: SocketAddr,
) {
    let until = Instant::now() + LINGER;
    while let Ok(Some(data)) = tokio::time::timeout_at(until, outgoing.recv()).await {
        if !write(writer, &data, peer).await {
            return;
        }
    }
}

/// Writes all of `data`, or says the connection is done (an error, or a peer that has not
/// read for [`WRITE_TIMEOUT`]).
async fn write(writer: &mut OwnedWriteHalf, data: &[u8], peer: SocketAddr) -> bool {
    match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(data)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "TCP write: {e}");
            false
        }
        Err(_) => {
            tracing::info!(%peer, "closing TCP connection: the peer has not read for {WRITE_TIMEOUT:?}");
            false
        }
    }
}
