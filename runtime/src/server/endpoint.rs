//! One SIP endpoint: the task that owns a UDP socket and the sans-IO [`SipCore`] behind it.
//!
//! The loop waits on three things — a datagram, a command from a call task, the core's next
//! timeout (one reusable timer) — feeds the core, then drains its outputs: datagrams go out,
//! events start calls or reach the call they belong to.

use super::call::{self, CallSetup};
use super::guard::{Guard, Traffic, Verdict};
use super::media::{MediaDigit, MediaSession};
use super::tcp::TcpHub;
use super::{CallEvent, Shared, SipCommand};
use crate::media::digits::DigitSource;
use crate::media::dtmf::parse_sip_info;
use crate::sip::{self, CallHandle, Event, IncomingCall, Input, Output, SipCore, sdp};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// What the endpoint keeps per live call.
struct CallLink {
    events: mpsc::UnboundedSender<CallEvent>,
    session: Arc<MediaSession>,
}

/// Where an endpoint's messages come from and go to.
pub(crate) enum Net {
    /// One UDP socket.
    Udp(UdpSocket),
    /// A TCP listener's connections.
    Tcp(TcpHub),
}

impl Net {
    /// The next message into `buf`: (length, sender). None when the transport is gone.
    async fn recv(&mut self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        match self {
            Net::Udp(socket) => loop {
                match socket.recv_from(buf).await {
                    Ok(received) => return Some(received),
                    // ICMP errors surface here on some systems; they say nothing about our calls.
                    Err(e) => tracing::debug!("SIP socket: {e}"),
                }
            },
            Net::Tcp(hub) => {
                let (from, message) = hub.recv().await?;
                let len = message.len().min(buf.len());
                buf[..len].copy_from_slice(&message[..len]);
                Some((len, from))
            }
        }
    }

    async fn send(&self, data: Vec<u8>, to: SocketAddr) {
        match self {
            Net::Udp(socket) => {
                if let Err(e) = socket.send_to(&data, to).await {
                    tracing::debug!(%to, "SIP send failed: {e}");
                }
            }
            Net::Tcp(hub) => hub.send(data, to),
        }
    }
}

/// Logs the core's admission refusals (stateless 503s past a per-source or half-open cap)
/// without a line per refused datagram: the first one, then a count at most every 5 s.
#[derive(Default)]
struct Refusals {
    since_log: u64,
    logged_at: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, now: Instant, from: SocketAddr) {
        self.since_log += 1;
        if self
            .logged_at
            .is_some_and(|t| now.saturating_duration_since(t) < std::time::Duration::from_secs(5))
        {
            return;
        }
        tracing::warn!(
            source = %from.ip(),
            refused = self.since_log,
            "admission cap reached: new SIP requests refused with 503"
        );
        self.since_log = 0;
        self.logged_at = Some(now);
    }
}

/// A SIP endpoint and its calls.
pub(crate) struct Endpoint {
    net: Net,
    core: SipCore,
    calls: HashMap<CallHandle, CallLink>,
    commands_tx: mpsc::UnboundedSender<SipCommand>,
    commands_rx: mpsc::UnboundedReceiver<SipCommand>,
    guard: Arc<std::sync::Mutex<Guard>>,
    shared: Arc<Shared>,
}

impl Endpoint {
    /// An endpoint on a bound transport reachable at `local`, sharing `guard` with its
    /// transport (TCP checks it at accept).
    pub(crate) fn new(
        net: Net,
        local: SocketAddr,
        guard: Arc<std::sync::Mutex<Guard>>,
        shared: Arc<Shared>,
    ) -> Self {
        let mut config = sip::Config::new(local);
        config.transport = match net {
            Net::Udp(_) => sip::Transport::Udp,
            Net::Tcp(_) => sip::Transport::Tcp,
        };
        config.max_calls = shared.config.max_calls;
        config.admission = shared
            .config
            .guard
            .admission(config.max_calls, config.max_transactions);
        config.user_agent = format!("wasm-ivr/{}", env!("CARGO_PKG_VERSION"));
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        Endpoint {
            net,
            core: SipCore::new(config),
            calls: HashMap::new(),
            commands_tx,
            commands_rx,
            guard,
            shared,
        }
    }

    /// Runs until the task is dropped.
    pub(crate) async fn run(mut self) {
        let mut buf = vec![0u8; 65_536];
        let timer = tokio::time::sleep(std::time::Duration::from_secs(3600));
        tokio::pin!(timer);
        let mut armed = false;
        let mut refusals = Refusals::default();
        loop {
            tokio::select! {
                received = self.net.recv(&mut buf) => match received {
                    Some((len, from)) => {
                        let now = Instant::now();
                        let data = &buf[..len];
                        let traffic = Traffic::of(data);
                        let verdict = self.guard.lock().map_or(Verdict::Drop, |mut g| g.check_traffic(from.ip(), now, traffic));
                        match verdict {
                            Verdict::Pass => {
                                let refused = self.core.refused_count();
                                self.core.handle_input(Input::Datagram { now, from, data });
                                if self.core.refused_count() > refused {
                                    refusals.note(now, from);
                                }
                            }
                            Verdict::Forbid => self.core.refuse(from, data, 403, "Forbidden"),
                            Verdict::Drop => {}
                        }
                    }
                    None => return,
                },
                Some(command) = self.commands_rx.recv() => self.apply(command),
                () = &mut timer, if armed => {
                    armed = false;
                    self.core.handle_input(Input::Timeout(Instant::now()));
                }
            }
            while let Some(output) = self.core.poll_output() {
                match output {
                    Output::Transmit(t) => self.net.send(t.data, t.to).await,
                    Output::Event(event) => self.on_event(event),
                    Output::Timeout(at) => {
                        timer.as_mut().reset(at.into());
                        armed = true;
                    }
                }
            }
        }
    }

    fn apply(&mut self, command: SipCommand) {
        let now = Instant::now();
        let result = match command {
            SipCommand::Ring(call) => self.core.ring(call),
            SipCommand::Answer(call, body) => self.core.answer(now, call, body),
            SipCommand::Hangup(call) => self.core.hangup(now, call),
            SipCommand::Invite {
                call,
                events,
                session,
                reply,
            } => {
                let placed = self.core.invite(now, call);
                match &placed {
                    Ok(handle) => {
                        self.calls.insert(*handle, CallLink { events, session });
                        let _ = reply.send(Ok(*handle));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
                placed.map(|_| ())
            }
            SipCommand::Cancel(call) => self.core.cancel(now, call),
            SipCommand::Refer(call, refer_to, headers) => {
                let result = self.core.refer(now, call, &refer_to, &headers);
                if result.is_err() {
                    // The call task waits for an answer; a refused command is a refused REFER.
                    self.notify(call, CallEvent::ReferResponse(400));
                }
                result
            }
        };
        if let Err(e) = result {
            tracing::debug!("SIP command not applied: {e}");
        }
    }

    fn notify(&self, call: CallHandle, event: CallEvent) {
        if let Some(link) = self.calls.get(&call) {
            let _ = link.events.send(event);
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::IncomingCall(incoming) => self.on_incoming(incoming),
            Event::Ack { call, sdp } => self.notify(call, CallEvent::Acked { sdp }),
            Event::CallCancelled { call } | Event::ByeReceived { call } => {
                self.notify(call, CallEvent::Ended)
            }
            Event::Info {
                call,
                content_type,
                body,
            } => match parse_sip_info(content_type.as_deref().unwrap_or(""), &body) {
                Ok(info) => self.notify(
                    call,
                    CallEvent::Digit(MediaDigit {
                        source: DigitSource::SipInfo,
                        digit: info.digit,
                        at: Instant::now(),
                    }),
                ),
                Err(e) => tracing::debug!("INFO without a usable digit: {e}"),
            },
            Event::ReInvite { call, sdp_offer } => self.on_reinvite(call, sdp_offer),
            Event::ByeResult { call, outcome } => {
                tracing::debug!(?call, ?outcome, "BYE done");
            }
            Event::ReferResponse { call, status } => {
                self.notify(call, CallEvent::ReferResponse(status))
            }
            Event::TransferProgress { call, status, done } => {
                self.notify(call, CallEvent::TransferProgress { status, done })
            }
            Event::OutboundProgress { call, status } => {
                tracing::debug!(?call, status, "outbound leg progress");
            }
            Event::OutboundAnswered { call, sdp_answer } => {
                self.notify(call, CallEvent::OutboundAnswered(sdp_answer))
            }
            Event::OutboundFailed { call, status } => {
                self.notify(call, CallEvent::OutboundFailed(status))
            }
            Event::CallEnded { call, reason } => {
                tracing::debug!(?call, ?reason, "dialog ended");
                if let Some(link) = self.calls.remove(&call) {
                    let _ = link.events.send(CallEvent::Ended);
                }
            }
        }
    }

    fn reject(&mut self, call: CallHandle, status: u16, reason: &str) {
        if let Err(e) = self.core.reject(Instant::now(), call, status, reason) {
            tracing::debug!("reject not applied: {e}");
        }
    }

    fn on_incoming(&mut self, incoming: IncomingCall) {
        let call = incoming.call;
        // Every unknown number gets the same answer, so a scanner learns nothing.
        let Some(ivr) = self.shared.registry.route(&incoming.did) else {
            tracing::info!(did = %incoming.did, from = %incoming.source, "no IVR for this number");
            self.reject(call, 404, "Not Found");
            return;
        };
        let socket = match self.shared.ports.bind() {
            Ok(socket) => socket,
            Err(e) => {
                tracing::warn!("cannot take the call: {e}");
                self.reject(call, 503, "Service Unavailable");
                return;
            }
        };
        let local = match socket.local_addr() {
            Ok(addr) => addr,
            Err(e) => {
                tracing::warn!("RTP socket: {e}");
                self.reject(call, 503, "Service Unavailable");
                return;
            }
        };
        let media_ip = self.shared.ports.ip();
        let (local_sdp, negotiated) = match &incoming.sdp_offer {
            Some(offer) => {
                match sdp::parse(offer).and_then(|o| sdp::answer(&o, media_ip, local.port())) {
                    Ok(answer) => (answer.sdp.clone(), Some(answer)),
                    Err(e) => {
                        tracing::info!("unanswerable offer: {e}");
                        self.reject(call, 488, "Not Acceptable Here");
                        return;
                    }
                }
            }
            None => (sdp::offer(media_ip, local.port()), None),
        };
        let session =
            match MediaSession::new(socket, self.shared.config.media, incoming.source.ip()) {
                Ok(session) => session,
                Err(e) => {
                    tracing::warn!("RTP session: {e}");
                    self.reject(call, 500, "Server Internal Error");
                    return;
                }
            };
        if let Some(answer) = &negotiated {
            session.renegotiate(answer);
        }
        self.shared.pacer.add(&session);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        self.calls.insert(
            call,
            CallLink {
                events: events_tx,
                session: session.clone(),
            },
        );
        tokio::spawn(call::run(CallSetup {
            handle: call,
            incoming,
            ivr,
            session,
            local_sdp,
            negotiated,
            events: events_rx,
            commands: self.commands_tx.clone(),
            shared: self.shared.clone(),
        }));
    }

    fn on_reinvite(&mut self, call: CallHandle, offer: Option<Vec<u8>>) {
        let now = Instant::now();
        let Some(link) = self.calls.get(&call) else {
            let _ = self
                .core
                .reject_reinvite(now, call, 481, "Call/Transaction Does Not Exist");
            return;
        };
        let local: SocketAddr = link.session.local_addr();
        let media_ip = self.shared.ports.ip();
        let result = match offer {
            Some(offer) => {
                match sdp::parse(&offer).and_then(|o| sdp::answer(&o, media_ip, local.port())) {
                    Ok(answer) => {
                        link.session.renegotiate(&answer);
                        let _ = link.events.send(CallEvent::Renegotiated);
                        self.core.answer_reinvite(now, call, answer.sdp)
                    }
                    Err(e) => {
                        tracing::info!("unanswerable re-INVITE offer: {e}");
                        self.core
                            .reject_reinvite(now, call, 488, "Not Acceptable Here")
                    }
                }
            }
            // A session refresh without an offer: offer what we have.
            None => self
                .core
                .answer_reinvite(now, call, sdp::offer(media_ip, local.port())),
        };
        if let Err(e) = result {
            tracing::debug!("re-INVITE answer not applied: {e}");
        }
    }
}
