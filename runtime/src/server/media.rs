//! Media I/O: an RTP socket per call from the configured port range, one pacer that sends every
//! call's 20 ms frames from a single clock, and a receive loop per call that turns RTP into
//! digits.
//!
//! The pacer never allocates per packet: each session keeps its queue of pre-encoded prompt
//! frames and the pacer writes the next one into one shared buffer. When a call has nothing to
//! play, its RTP clock still advances, so the next prompt starts with a marker bit and a
//! timestamp that reflects the pause.

use crate::media::codec::Codec;
use crate::media::digits::DigitSource;
use crate::media::dtmf::{Digit, InbandDetector, Rfc4733Receiver};
use crate::media::prompt::EncodedPrompt;
use crate::media::rtp::{MAX_PACKET_LEN, RtpPayload, RtpReceiver, RtpSender};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// How long the latched RTP source must be silent before another source may take over.
pub const RELATCH_AFTER: Duration = Duration::from_secs(2);

/// One frame of G.711 at 8 kHz.
pub const FRAME: Duration = Duration::from_millis(20);
const FRAME_SAMPLES: u32 = 160;

/// Hands out RTP ports (even numbers, RTCP convention) from a range, by binding them.
pub struct RtpPorts {
    ip: IpAddr,
    first: u16,
    last: u16,
    cursor: AtomicU32,
}

impl RtpPorts {
    /// Ports `first..=last` on `ip`.
    pub fn new(ip: IpAddr, first: u16, last: u16) -> Self {
        RtpPorts {
            ip,
            first: first + first % 2,
            last,
            cursor: AtomicU32::new(0),
        }
    }

    /// The address media is bound to and announced in SDP.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Binds the next free even port; the port is free again when the socket is dropped.
    pub fn bind(&self) -> std::io::Result<UdpSocket> {
        let slots = u32::from(self.last.saturating_sub(self.first)) / 2 + 1;
        for _ in 0..slots {
            let slot = self.cursor.fetch_add(1, Ordering::Relaxed) % slots;
            let port = self.first + (slot * 2) as u16;
            match std::net::UdpSocket::bind(SocketAddr::new(self.ip, port)) {
                Ok(socket) => {
                    socket.set_nonblocking(true)?;
                    return UdpSocket::from_std(socket);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("no free RTP port in {}-{}", self.first, self.last),
        ))
    }
}

/// Something queued for playing.
pub enum Playing {
    /// A prompt, from this frame on.
    Prompt {
        /// The encoded prompt.
        prompt: EncodedPrompt,
        /// The next frame to send.
        next: usize,
    },
    /// Silence for this many frames.
    Silence {
        /// Frames left.
        frames: u32,
    },
}

struct Outbound {
    remote: Option<SocketAddr>,
    /// Set once the caller's RTP arrives: from then on we send where it comes from.
    latched: bool,
    /// When the latched source last sent; another source may take over only after it has
    /// been quiet for [`RELATCH_AFTER`], so one stray packet cannot steal the call's audio.
    latched_seen: Option<Instant>,
    sending: bool,
    codec: Codec,
    sender: RtpSender,
    queue: VecDeque<Playing>,
    done: Option<oneshot::Sender<()>>,
    started: bool,
}

/// Where a bridged leg's packets go: the other leg, with its telephone-event payload type.
struct Relay {
    to: Weak<MediaSession>,
    event_from: Option<u8>,
    event_to: Option<u8>,
}

/// One call's RTP endpoint.
pub struct MediaSession {
    socket: UdpSocket,
    local: SocketAddr,
    out: Mutex<Outbound>,
    relay: Mutex<Option<Relay>>,
    packets_sent: AtomicU64,
    send_errors: AtomicU64,
}

impl MediaSession {
    /// A session on a bound socket, sending `codec` with payload type `payload_type`.
    pub fn new(
        socket: UdpSocket,
        codec: Codec,
        payload_type: u8,
        remote: Option<SocketAddr>,
    ) -> std::io::Result<Arc<Self>> {
        let local = socket.local_addr()?;
        let sender = RtpSender::new(payload_type)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(Arc::new(MediaSession {
            socket,
            local,
            out: Mutex::new(Outbound {
                remote,
                latched: false,
                latched_seen: None,
                sending: true,
                codec,
                sender,
                queue: VecDeque::new(),
                done: None,
                started: false,
            }),
            relay: Mutex::new(None),
            packets_sent: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
        }))
    }

    /// The local RTP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// RTP packets sent so far.
    pub fn packets_sent(&self) -> u64 {
        self.packets_sent.load(Ordering::Relaxed)
    }

    /// RTP packets the socket refused (full buffer, unreachable destination).
    pub fn send_errors(&self) -> u64 {
        self.send_errors.load(Ordering::Relaxed)
    }

    /// Replaces what is playing; the receiver fires when it has all been sent (or is stopped).
    pub fn play(&self, items: Vec<Playing>) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut out) = self.out.lock() {
            out.queue = items.into();
            if out.queue.is_empty() {
                let _ = tx.send(());
            } else {
                out.sender.start_talkspurt();
                out.done = Some(tx);
            }
        }
        rx
    }

    /// Stops playing (barge-in, hangup).
    pub fn stop(&self) {
        if let Ok(mut out) = self.out.lock() {
            out.queue.clear();
            if let Some(done) = out.done.take() {
                let _ = done.send(());
            }
        }
    }

    /// Applies a new negotiation (re-INVITE): where to send, and whether to send at all (hold).
    pub fn renegotiate(
        &self,
        remote: Option<SocketAddr>,
        sending: bool,
        codec: Codec,
        payload_type: u8,
    ) {
        if let Ok(mut out) = self.out.lock() {
            if !out.latched {
                out.remote = remote;
            }
            out.sending = sending && remote.is_some();
            out.codec = codec;
            let _ = out.sender.set_payload_type(payload_type);
        }
    }

    /// The codec this session sends.
    pub fn codec(&self) -> Codec {
        self.out.lock().map(|o| o.codec).unwrap_or(Codec::Pcmu)
    }

    /// Bridges: from now on every RTP packet received here is sent on by `to` (to its remote
    /// address), with telephone-event payload type `event_from` rewritten to `event_to`.
    pub fn relay_to(&self, to: &Arc<MediaSession>, event_from: Option<u8>, event_to: Option<u8>) {
        if let Ok(mut relay) = self.relay.lock() {
            *relay = Some(Relay {
                to: Arc::downgrade(to),
                event_from,
                event_to,
            });
        }
    }

    fn is_relaying(&self) -> bool {
        self.relay.lock().map(|r| r.is_some()).unwrap_or(false)
    }

    /// Sends a received packet on to the bridged leg.
    fn relay(&self, packet: &mut [u8]) {
        let Ok(relay) = self.relay.lock() else {
            return;
        };
        let Some(relay) = relay.as_ref() else {
            return;
        };
        let Some(to) = relay.to.upgrade() else {
            return;
        };
        if let (Some(from), Some(into), Some(byte)) =
            (relay.event_from, relay.event_to, packet.get_mut(1))
            && *byte & 0x7f == from
        {
            *byte = (*byte & 0x80) | (into & 0x7f);
        }
        let remote = to.out.lock().ok().and_then(|o| o.remote);
        if let Some(remote) = remote
            && to.socket.try_send_to(packet, remote).is_ok()
        {
            to.packets_sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Symmetric RTP: once the caller's media arrives, answer to where it comes from (NAT).
    /// A source we cannot send to (port 0, an unspecified address) is never latched.
    fn latch(&self, from: SocketAddr, now: Instant) {
        if from.port() == 0 || from.ip().is_unspecified() {
            return;
        }
        let Ok(mut out) = self.out.lock() else { return };
        if out.latched && out.remote == Some(from) {
            out.latched_seen = Some(now);
            return;
        }
        let current_quiet = out
            .latched_seen
            .is_none_or(|seen| now.duration_since(seen) >= RELATCH_AFTER);
        if !out.latched || current_quiet {
            out.remote = Some(from);
            out.latched = true;
            out.latched_seen = Some(now);
        }
    }

    /// Writes this tick's packet into `buf`: (length, destination), or None when there is
    /// nothing to send.
    fn tick(&self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        let mut guard = self.out.lock().ok()?;
        let out = &mut *guard;
        let codec = out.codec;
        let Some(front) = out.queue.front_mut() else {
            if out.started {
                out.sender.skip(FRAME_SAMPLES);
            }
            return None;
        };
        let frame: Option<[u8; 160]> = match front {
            Playing::Prompt { prompt, next } => {
                let frame = prompt.frame(codec, *next).copied();
                *next += 1;
                frame
            }
            Playing::Silence { frames } => {
                *frames = frames.saturating_sub(1);
                Some([codec.silence_byte(); 160])
            }
        };
        let finished = match out.queue.front() {
            Some(Playing::Prompt { prompt, next }) => *next >= prompt.frame_count(),
            Some(Playing::Silence { frames }) => *frames == 0,
            None => true,
        };
        if finished {
            out.queue.pop_front();
            if out.queue.is_empty()
                && let Some(done) = out.done.take()
            {
                let _ = done.send(());
            }
        }
        out.started = true;
        let (Some(frame), Some(remote), true) = (frame, out.remote, out.sending) else {
            out.sender.skip(FRAME_SAMPLES);
            return None;
        };
        let len = out.sender.write_audio(&frame, buf).ok()?;
        Some((len, remote))
    }
}

/// Drives every call's playout from one 20 ms clock.
#[derive(Default)]
pub struct Pacer {
    sessions: Mutex<HashMap<u64, Weak<MediaSession>>>,
    next_id: AtomicU64,
}

impl Pacer {
    /// Adds a session; it is dropped from the pacer when the session is dropped.
    pub fn add(&self, session: &Arc<MediaSession>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.insert(id, Arc::downgrade(session));
        }
    }

    /// Runs the clock until the pacer is dropped by everyone else.
    pub async fn run(self: Arc<Self>) {
        let mut interval = tokio::time::interval(FRAME);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut buf = [0u8; MAX_PACKET_LEN];
        let mut live: Vec<Arc<MediaSession>> = Vec::new();
        loop {
            let scheduled = interval.tick().await;
            if Instant::now().duration_since(scheduled.into_std()) > FRAME {
                crate::metrics::metrics().late_tick();
            }
            live.clear();
            if let Ok(mut sessions) = self.sessions.lock() {
                sessions.retain(|_, weak| match weak.upgrade() {
                    Some(session) => {
                        live.push(session);
                        true
                    }
                    None => false,
                });
            }
            for session in &live {
                if let Some((len, to)) = session.tick(&mut buf) {
                    // A full socket buffer drops one frame, like the network would.
                    match session.socket.try_send_to(&buf[..len], to) {
                        Ok(_) => {
                            session.packets_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            session.send_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::trace!(%to, "RTP send failed: {e}");
                        }
                    }
                }
            }
        }
    }
}

/// A cheap check for relaying: RTP version 2 and a whole fixed header.
fn looks_like_rtp(packet: &[u8]) -> bool {
    packet.len() >= 12 && packet[0] >> 6 == 2
}

/// A digit from the media side, with when it arrived.
#[derive(Debug, Clone, Copy)]
pub struct MediaDigit {
    /// Which path delivered it.
    pub source: DigitSource,
    /// The key.
    pub digit: Digit,
    /// Arrival.
    pub at: Instant,
}

/// Reads the caller's RTP until the session's socket is dropped or the receiver is gone:
/// latches the remote address, and turns RFC 4733 events and in-band tones into digits.
pub async fn receive(
    session: Arc<MediaSession>,
    telephone_event: Option<u8>,
    digits: mpsc::UnboundedSender<MediaDigit>,
) {
    let mut rtp = RtpReceiver::new(telephone_event);
    let mut events = Rfc4733Receiver::new();
    let mut inband = InbandDetector::new();
    let mut inband_on = true;
    let mut buf = [0u8; 2048];
    loop {
        let Ok((len, from)) = session.socket.recv_from(&mut buf).await else {
            return;
        };
        let now = Instant::now();
        if session.is_relaying() {
            // Bridged: the other leg gets every packet, digits included.
            if looks_like_rtp(&buf[..len]) {
                session.latch(from, now);
                session.relay(&mut buf[..len]);
            }
            continue;
        }
        let Ok(packet) = rtp.receive(&buf[..len]) else {
            continue; // not RTP: ignore, and do not latch onto its source
        };
        session.latch(from, now);
        let mut found: Vec<(DigitSource, Digit)> = Vec::new();
        match packet.payload {
            RtpPayload::TelephoneEvent { payload } => {
                if let Ok(Some(digit)) = events.on_packet(packet.timestamp, payload) {
                    found.push((DigitSource::Rfc4733, digit));
                }
                // A caller that sends RFC 4733 sends every key that way; stop listening for
                // tones (which would also hear the carrier's own in-band copy).
                inband_on = false;
            }
            RtpPayload::Audio { codec, payload } if inband_on => {
                inband.feed_g711(codec, payload, |digit| {
                    found.push((DigitSource::Inband, digit))
                });
            }
            _ => {}
        }
        for (source, digit) in found {
            if digits
                .send(MediaDigit {
                    source,
                    digit,
                    at: now,
                })
                .is_err()
            {
                return;
            }
        }
    }
}
