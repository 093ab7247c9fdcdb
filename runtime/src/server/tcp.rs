//! SIP over TCP: accepts connections, frames each byte stream into messages
//! ([`crate::sip::stream::StreamFramer`]) and hands them to the endpoint as if they were
//! datagrams from the peer's address; responses and our own requests to that address go back
//! over the same connection.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] connections, each closed after [`IDLE_TIMEOUT`] without
//! traffic, and closed at once when its stream cannot be framed (bad or conflicting
//! Content-Length, a message over the size limit), since a stream cannot be resynchronised.

use super::guard::{Guard, Verdict};
use crate::sip::stream::{Frame, StreamFramer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Connections open at once per listener; more are refused.
pub const MAX_CONNECTIONS: usize = 4096;
/// Connections open at once from one address.
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 64;
/// A connection without traffic this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
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
    let (mut reader, mut writer) = stream.into_split();
    let mut framer = StreamFramer::new(MAX_MESSAGE);
    let mut buf = [0u8; 8192];
    'connection: loop {
        tokio::select! {
            read = tokio::time::timeout(IDLE_TIMEOUT, reader.read(&mut buf)) => {
                let n = match read {
                    Ok(Ok(n)) if n > 0 => n,
                    Ok(Ok(_)) | Ok(Err(_)) => break,
                    Err(_) => {
                        tracing::debug!(%peer, "TCP connection idle; closing");
                        break;
                    }
                };
                framer.push(&buf[..n]);
                loop {
                    match framer.next_frame() {
                        Ok(Some(Frame::Message(message))) => {
                            if frames.send((peer, message)).await.is_err() {
                                break 'connection;
                            }
                        }
                        Ok(Some(Frame::KeepAlive)) => {
                            if writer.write_all(b"\r\n").await.is_err() {
                                break 'connection;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::info!(%peer, "closing TCP connection: {e}");
                            break 'connection;
                        }
                    }
                }
            }
            message = outgoing.recv() => match message {
                Some(data) => {
                    if writer.write_all(&data).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    if let Ok(mut open) = connections.lock() {
        open.remove(&peer);
    }
}
