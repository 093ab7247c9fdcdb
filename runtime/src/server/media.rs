//! Media I/O: an RTP socket per call from the configured port range, one pacer that sends every
//! call's 20 ms frames from a single clock, and a receive loop per call that turns RTP into
//! digits.
//!
//! The pacer never allocates per packet: each session keeps its queue of pre-encoded prompt
//! frames and the pacer writes the next one into one shared buffer. When a call has nothing to
//! play, its RTP clock still advances, so the next prompt starts with a marker bit and a
//! timestamp that reflects the pause.
//!
//! A call's media belongs to its caller ([`MediaRules`]): only the latched source (address and
//! SSRC) is heard, and RTP only goes to addresses the caller's own signalling or RTP vouches
//! for. Everything else is dropped and counted.

use crate::config::MediaLatch;
use crate::media::codec::Codec;
use crate::media::digits::{DigitSource, MAX_PENDING_DIGITS};
use crate::media::dtmf::{Digit, InbandDetector, Rfc4733Receiver};
use crate::media::prompt::EncodedPrompt;
use crate::media::rtp::{MAX_PACKET_LEN, RtpPayload, RtpReceiver, RtpSender, is_rtcp, rtp_ssrc};
use crate::sip::sdp;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// How long the latched RTP source must be silent before another source may take over.
pub const RELATCH_AFTER: Duration = Duration::from_secs(2);

/// One frame of G.711 at 8 kHz.
pub const FRAME: Duration = Duration::from_millis(20);
const FRAME_SAMPLES: u32 = 160;

/// Random slots tried before the exhaustive scan of the port range.
const RANDOM_PROBES: u32 = 16;

/// Whose RTP a call hears, and where it may send (`[sip] media_latch` and `media_confirm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaRules {
    /// Which sources may become the call's media.
    pub latch: MediaLatch,
    /// Send to an SDP address whose IP is not the signalling source's only once RTP from the
    /// caller arrives (the reply then goes to that RTP's source).
    pub confirm: bool,
}

impl Default for MediaRules {
    fn default() -> Self {
        MediaRules {
            latch: MediaLatch::default(),
            confirm: true,
        }
    }
}

/// Whether RTP may be sent to `addr`: a real port, and not an unspecified, multicast or
/// (limited) broadcast address, so one INVITE cannot aim a call's audio at a whole network.
pub fn sendable(addr: SocketAddr) -> bool {
    let ip = addr.ip().to_canonical();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    addr.port() != 0 && !ip.is_unspecified() && !ip.is_multicast() && !broadcast
}

/// Hands out RTP ports (even numbers, RTCP convention) from a range, by binding them.
pub struct RtpPorts {
    ip: IpAddr,
    first: u16,
    last: u16,
}

impl RtpPorts {
    /// Ports `first..=last` on `ip`.
    pub fn new(ip: IpAddr, first: u16, last: u16) -> Self {
        RtpPorts {
            ip,
            first: first + first % 2,
            last,
        }
    }

    /// The address media is bound to and announced in SDP.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Binds a free even port chosen at random, so one call's port says nothing about the
    /// next one's; a port in use is never taken (the bind fails). The port is free again when
    /// the socket is dropped.
    pub fn bind(&self) -> std::io::Result<UdpSocket> {
        let slots = u32::from(self.last.saturating_sub(self.first)) / 2 + 1;
        let start = rand::random_range(0..slots);
        // Random probes find a port in a range that is mostly free; the scan after them (from
        // a random start) still finds the last free port of a nearly full one.
        let probes = (0..RANDOM_PROBES.min(slots))
            .map(|_| rand::random_range(0..slots))
            .chain((0..slots).map(|i| (start + i) % slots));
        for slot in probes {
            let Some(port) = u16::try_from(slot * 2)
                .ok()
                .and_then(|offset| self.first.checked_add(offset))
                .filter(|port| *port <= self.last)
            else {
                continue;
            };
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

/// The source a call's media is locked to.
#[derive(Debug, Clone, Copy)]
struct Latched {
    addr: SocketAddr,
    ssrc: u32,
    /// When it last sent.
    seen: Instant,
}

struct Outbound {
    rules: MediaRules,
    /// The IP the call's signalling comes from (canonical form).
    signalling: IpAddr,
    /// The media address the caller's SDP names (`None`: none yet, or never a usable one).
    offered: Option<SocketAddr>,
    /// Whether the negotiated direction has us send.
    sending: bool,
    /// Whether the caller is to send RTP (not on hold or inactive): the RTP timeout applies.
    expect_rtp: bool,
    /// The caller's media source, once its RTP has arrived (symmetric RTP: we answer there).
    latched: Option<Latched>,
    /// When the caller's RTP was last heard or, if later, became expected.
    heard: Instant,
    codec: Codec,
    sender: RtpSender,
    queue: VecDeque<Playing>,
    done: Option<oneshot::Sender<()>>,
    started: bool,
}

impl Outbound {
    /// Where this session's RTP goes now, if anywhere.
    fn destination(&self) -> Option<SocketAddr> {
        if !self.sending {
            return None;
        }
        if let Some(latched) = self.latched {
            return Some(latched.addr);
        }
        let offered = self.offered.filter(|a| sendable(*a))?;
        let vouched = !self.rules.confirm || offered.ip().to_canonical() == self.signalling;
        vouched.then_some(offered)
    }

    /// Whether a source at `ip` may become the call's media.
    fn may_latch(&self, ip: IpAddr) -> bool {
        let offered = self.offered.map(|a| a.ip().to_canonical());
        match self.rules.latch {
            MediaLatch::Strict => offered == Some(ip),
            MediaLatch::SignallingIp => offered == Some(ip) || ip == self.signalling,
            MediaLatch::Any => true,
        }
    }

    /// Decides whether a packet from `from` with `ssrc` is the caller's media, latching or
    /// re-latching as the rules allow.
    fn admit(&mut self, from: SocketAddr, ssrc: u32, now: Instant) -> bool {
        if !sendable(from) {
            return false; // port 0, unspecified: nothing a reply could reach
        }
        let ip = from.ip().to_canonical();
        let any = self.rules.latch == MediaLatch::Any;
        let admitted = match self.latched {
            Some(l) if l.addr == from && (l.ssrc == ssrc || any) => {
                self.latched = Some(Latched { seen: now, ..l });
                true
            }
            Some(l) => {
                let quiet = now.saturating_duration_since(l.seen) >= RELATCH_AFTER;
                let same_ip = l.addr.ip().to_canonical() == ip;
                if quiet && (same_ip || any) {
                    tracing::debug!(from = %l.addr, to = %from, "RTP source re-latched");
                    self.latched = Some(Latched {
                        addr: from,
                        ssrc,
                        seen: now,
                    });
                }
                // Today's behaviour in `any`: every source counts.
                any || (quiet && same_ip)
            }
            None if self.may_latch(ip) => {
                self.latched = Some(Latched {
                    addr: from,
                    ssrc,
                    seen: now,
                });
                true
            }
            None => false,
        };
        if admitted {
            self.heard = now;
        }
        admitted
    }
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
    foreign_dropped: AtomicU64,
}

impl MediaSession {
    /// A session on a bound socket for a call whose signalling comes from `signalling`;
    /// PCMU until [`MediaSession::renegotiate`] applies the SDP.
    pub fn new(
        socket: UdpSocket,
        rules: MediaRules,
        signalling: IpAddr,
    ) -> std::io::Result<Arc<Self>> {
        let local = socket.local_addr()?;
        let codec = Codec::Pcmu;
        let sender = RtpSender::new(codec.payload_type())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(Arc::new(MediaSession {
            socket,
            local,
            out: Mutex::new(Outbound {
                rules,
                signalling: signalling.to_canonical(),
                offered: None,
                sending: true,
                expect_rtp: true,
                latched: None,
                heard: Instant::now(),
                codec,
                sender,
                queue: VecDeque::new(),
                done: None,
                started: false,
            }),
            relay: Mutex::new(None),
            packets_sent: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            foreign_dropped: AtomicU64::new(0),
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

    /// RTP packets dropped because they did not come from the call's media source.
    pub fn foreign_dropped(&self) -> u64 {
        self.foreign_dropped.load(Ordering::Relaxed)
    }

    /// Since when the caller's RTP has been missing while it is expected; `None` while the
    /// call is on hold or inactive (no RTP is expected, so no timeout runs).
    pub fn quiet_since(&self) -> Option<Instant> {
        let out = self.out.lock().ok()?;
        out.expect_rtp.then_some(out.heard)
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

    /// Applies a negotiation (the INVITE's offer, the ACK's answer, a re-INVITE): where the
    /// caller's media is, whether we send (hold), whether it sends, the codec.
    ///
    /// A new `c=` IP (the far end moved its media) unlocks the latched source, so the new
    /// address's RTP can latch at once; the same address, or a hold without one, keeps it.
    pub fn renegotiate(&self, answer: &sdp::Answer) {
        let Ok(mut out) = self.out.lock() else { return };
        let now = Instant::now();
        if let Some(media) = answer.remote_media {
            let moved = out
                .offered
                .is_some_and(|old| old.ip().to_canonical() != media.ip().to_canonical());
            if moved {
                out.latched = None;
            }
            out.offered = Some(media);
        }
        out.sending = super::call::sends(answer.direction) && answer.remote_rtp.is_some();
        // Any hold (sendonly, recvonly, inactive, `c=0.0.0.0`) means no RTP is owed: a phone
        // on hold often sends nothing even when its SDP says it could (music on hold).
        let expect = answer.remote_media.is_some() && answer.direction == sdp::Direction::SendRecv;
        if expect && !out.expect_rtp {
            // Resumed from hold: the timeout counts from now.
            out.heard = now;
        }
        out.expect_rtp = expect;
        out.codec = super::call::media_codec(answer.codec);
        let _ = out.sender.set_payload_type(answer.payload_type);
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
        let remote = to.out.lock().ok().and_then(|o| o.destination());
        if let Some(remote) = remote
            && to.socket.try_send_to(packet, remote).is_ok()
        {
            to.packets_sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether a packet from `from` with `ssrc` is the caller's media (see [`MediaRules`]);
    /// counts it when it is not.
    fn admit(&self, from: SocketAddr, ssrc: u32, now: Instant) -> bool {
        let admitted = self
            .out
            .lock()
            .map(|mut out| out.admit(from, ssrc, now))
            .unwrap_or(false);
        if !admitted {
            let before = self.foreign_dropped.fetch_add(1, Ordering::Relaxed);
            crate::metrics::metrics().rtp_foreign_dropped();
            if before == 0 {
                tracing::info!(%from, local = %self.local, "RTP dropped: not this call's media source");
            }
        }
        admitted
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
        let (Some(frame), Some(remote)) = (frame, out.destination()) else {
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
/// keeps only the call's own media source, and turns its RFC 4733 events and in-band tones
/// into digits. At most [`MAX_PENDING_DIGITS`] digits wait in `digits`; more are dropped.
pub async fn receive(
    session: Arc<MediaSession>,
    telephone_event: Option<u8>,
    digits: mpsc::Sender<MediaDigit>,
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
        let packet = &buf[..len];
        // Not RTP, or RTCP multiplexed on the port: nothing to hear, nothing to latch onto.
        let Some(ssrc) = rtp_ssrc(packet).filter(|_| !is_rtcp(packet)) else {
            continue;
        };
        if !session.admit(from, ssrc, now) {
            continue;
        }
        if session.is_relaying() {
            // Bridged: the other leg gets every packet of this leg's media, digits included.
            session.relay(&mut buf[..len]);
            continue;
        }
        let Ok(packet) = rtp.receive(&buf[..len]) else {
            continue;
        };
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
            let digit = MediaDigit {
                source,
                digit,
                at: now,
            };
            match digits.try_send(digit) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::debug!(local = %session.local, "digit queue full ({MAX_PENDING_DIGITS}); key dropped");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// An outbound state for a call signalled from `signalling` whose SDP names `offered`.
    fn out(latch: MediaLatch, signalling: &str, offered: &str) -> Outbound {
        Outbound {
            rules: MediaRules {
                latch,
                confirm: true,
            },
            signalling: signalling.parse().unwrap(),
            offered: Some(addr(offered)),
            sending: true,
            expect_rtp: true,
            latched: None,
            heard: Instant::now(),
            codec: Codec::Pcmu,
            sender: RtpSender::new(0).unwrap(),
            queue: VecDeque::new(),
            done: None,
            started: false,
        }
    }

    #[test]
    fn sendable_refuses_unspecified_multicast_broadcast_and_port_zero() {
        assert!(sendable(addr("127.0.0.1:4000")));
        assert!(sendable(addr("[2001:db8::1]:4000")));
        for bad in [
            "0.0.0.0:4000",
            "224.0.0.1:4000",
            "239.1.2.3:4000",
            "255.255.255.255:4000",
            "[::]:4000",
            "[ff02::1]:4000",
            "[::ffff:224.0.0.1]:4000",
            "127.0.0.1:0",
        ] {
            assert!(!sendable(addr(bad)), "{bad}");
        }
    }

    #[test]
    fn signalling_ip_mode_hears_only_the_callers_ips_and_locks_to_one_source() {
        let t0 = Instant::now();
        let mut o = out(MediaLatch::SignallingIp, "127.0.0.1", "127.0.0.3:6000");
        // Neither the c= IP nor the SIP source: never.
        assert!(!o.admit(addr("127.0.0.2:6000"), 1, t0));
        // The signalling IP from another port than the SDP's (symmetric RTP, NAT): latches.
        assert!(o.admit(addr("127.0.0.1:7000"), 7, t0));
        assert_eq!(o.destination(), Some(addr("127.0.0.1:7000")));
        // Locked: another port of the same IP, another SSRC, the c= IP: dropped while the
        // latched source is live.
        let t1 = t0 + Duration::from_millis(500);
        assert!(!o.admit(addr("127.0.0.1:7002"), 7, t1));
        assert!(!o.admit(addr("127.0.0.1:7000"), 8, t1));
        assert!(!o.admit(addr("127.0.0.3:6000"), 7, t1));
        assert!(o.admit(addr("127.0.0.1:7000"), 7, t1));
        // After the quiet time a re-latch needs the same IP.
        let t2 = t1 + RELATCH_AFTER;
        assert!(!o.admit(addr("127.0.0.3:6000"), 9, t2));
        assert!(!o.admit(addr("127.0.0.2:6000"), 9, t2));
        assert!(o.admit(addr("127.0.0.1:7002"), 9, t2));
        assert_eq!(o.destination(), Some(addr("127.0.0.1:7002")));
        assert!(!o.admit(addr("127.0.0.1:7000"), 7, t2));
        // Port 0 is never anyone's media.
        assert!(!o.admit(addr("127.0.0.1:0"), 9, t2));
    }

    #[test]
    fn strict_mode_hears_only_the_sdp_address() {
        let t0 = Instant::now();
        let mut o = out(MediaLatch::Strict, "127.0.0.1", "127.0.0.3:6000");
        assert!(!o.admit(addr("127.0.0.1:6000"), 1, t0));
        assert!(o.admit(addr("127.0.0.3:6002"), 1, t0));
        // IPv4-mapped IPv6 (a dual-stack socket) is the same source.
        let mut o = out(MediaLatch::Strict, "127.0.0.1", "127.0.0.3:6000");
        assert!(o.admit(addr("[::ffff:127.0.0.3]:6000"), 1, t0));
    }

    #[test]
    fn any_mode_hears_everyone_as_before() {
        let t0 = Instant::now();
        let mut o = out(MediaLatch::Any, "127.0.0.1", "127.0.0.1:6000");
        assert!(o.admit(addr("127.0.0.2:6000"), 1, t0));
        assert!(o.admit(addr("127.0.0.9:6000"), 2, t0));
        assert_eq!(o.destination(), Some(addr("127.0.0.2:6000")));
        assert!(o.admit(addr("127.0.0.9:6000"), 2, t0 + RELATCH_AFTER));
        assert_eq!(o.destination(), Some(addr("127.0.0.9:6000")));
    }

    #[test]
    fn an_sdp_address_other_than_the_signalling_source_waits_for_its_rtp() {
        let t0 = Instant::now();
        let mut o = out(MediaLatch::SignallingIp, "127.0.0.1", "127.0.0.3:6000");
        assert_eq!(o.destination(), None, "not vouched for yet");
        assert!(o.admit(addr("127.0.0.3:6000"), 1, t0));
        assert_eq!(o.destination(), Some(addr("127.0.0.3:6000")));
        // Without confirmation the SDP address is used at once (but never a multicast one).
        let mut o = out(MediaLatch::SignallingIp, "127.0.0.1", "127.0.0.3:6000");
        o.rules.confirm = false;
        assert_eq!(o.destination(), Some(addr("127.0.0.3:6000")));
        o.offered = Some(addr("224.0.0.1:6000"));
        assert_eq!(o.destination(), None);
        // The signalling source's own address needs no confirmation; hold stops sending.
        let mut o = out(MediaLatch::SignallingIp, "127.0.0.1", "127.0.0.1:6000");
        assert_eq!(o.destination(), Some(addr("127.0.0.1:6000")));
        o.sending = false;
        assert_eq!(o.destination(), None);
    }

    fn answer_for(offer: &str) -> sdp::Answer {
        let parsed = sdp::parse(offer.as_bytes()).unwrap();
        sdp::answer(&parsed, "127.0.0.1".parse().unwrap(), 20000).unwrap()
    }

    fn offer(ip: &str, direction: &str) -> String {
        format!(
            "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na={direction}\r\n"
        )
    }

    #[tokio::test]
    async fn renegotiation_moves_the_latch_and_hold_stops_the_rtp_clock() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let session =
            MediaSession::new(socket, MediaRules::default(), "127.0.0.1".parse().unwrap()).unwrap();
        session.renegotiate(&answer_for(&offer("127.0.0.1", "sendrecv")));
        let t0 = Instant::now();
        assert!(session.admit(addr("127.0.0.1:6000"), 1, t0));
        assert!(session.quiet_since().is_some());
        // Every kind of hold stops the clock and keeps the latch.
        session.renegotiate(&answer_for(&offer("127.0.0.1", "sendonly")));
        assert_eq!(session.quiet_since(), None);
        session.renegotiate(&answer_for(&offer("127.0.0.1", "recvonly")));
        assert_eq!(session.quiet_since(), None);
        session.renegotiate(&answer_for(&offer("127.0.0.1", "inactive")));
        assert_eq!(session.quiet_since(), None);
        session.renegotiate(&answer_for(&offer("0.0.0.0", "sendrecv")));
        assert_eq!(session.quiet_since(), None);
        assert!(!session.admit(addr("127.0.0.1:6002"), 1, t0));
        // Resume restarts the clock.
        session.renegotiate(&answer_for(&offer("127.0.0.1", "sendrecv")));
        assert!(session.quiet_since().is_some_and(|since| since >= t0));
        // A new c= IP: its RTP latches at once, the old source is locked out.
        session.renegotiate(&answer_for(&offer("127.0.0.5", "sendrecv")));
        assert!(session.admit(addr("127.0.0.5:6000"), 2, t0));
        assert!(!session.admit(addr("127.0.0.1:6000"), 1, t0));
        assert_eq!(session.foreign_dropped(), 2);
    }

    #[test]
    fn ports_are_random_and_never_one_in_use() {
        // A small private block of the ephemeral range: some tests' ports may be in it, which
        // is the point (bind skips them).
        let first = 41_000u16;
        let ports = RtpPorts::new("127.0.0.1".parse().unwrap(), first, first + 199);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut held = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for _ in 0..20 {
                let socket = ports.bind().unwrap();
                let port = socket.local_addr().unwrap().port();
                assert!(port.is_multiple_of(2) && (first..first + 200).contains(&port));
                assert!(
                    seen.insert(port),
                    "port {port} handed out twice while in use"
                );
                held.push(socket);
            }
            let mut sorted: Vec<u16> = seen.iter().copied().collect();
            sorted.sort_unstable();
            let consecutive = sorted.windows(2).filter(|w| w[1] - w[0] == 2).count();
            assert!(
                consecutive < 15,
                "ports look sequential, not random: {sorted:?}"
            );
        });
    }
}
