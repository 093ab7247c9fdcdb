//! One call, from answer to end: the task that runs its IVR, and the [`CallChannel`] that turns
//! the IVR's imports into RTP playout and digits.
//!
//! Digits reach the call from two places: the SIP endpoint (INFO) through the call's event
//! queue, and the RTP receive loop (RFC 4733, in-band) through its digit queue. Both are merged
//! into one de-duplicated stream here; keys that arrive while no gather is running wait in the
//! type-ahead buffer (at most [`MAX_PENDING_DIGITS`] of them).
//!
//! A watchdog ends calls the runtime should not keep: no RTP from the caller for
//! `rtp_timeout` while media is expected (never while on hold), or `max_duration` since the
//! answer. It sends the BYE itself and wakes the channel, which then ends as if the caller had
//! hung up; the record says `media-timeout` or `max-duration`.

use super::media::{self, MediaDigit, MediaSession, Playing};
use super::{CallEvent, Shared, SipCommand};
use crate::config::TransferMode;
use crate::engine::channel::CallChannel;
use crate::engine::host::CallContext;
use crate::engine::wit::{
    CallError, CallInfo, Destination, GatherOptions, GatherResult, Prompt, TransferFailure,
};
use crate::engine::{CallReport, LoadedIvr, Outcome};
use crate::media::codec::Codec;
use crate::media::digits::{DigitMerger, DigitSource, MAX_PENDING_DIGITS};
use crate::sip::{CallHandle, IncomingCall, sdp};
use crate::store::{CallRecord, StoreOp};
use crate::time::unix_ms;
use async_trait::async_trait;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Everything a call task starts with.
pub(crate) struct CallSetup {
    pub handle: CallHandle,
    pub incoming: IncomingCall,
    pub ivr: Arc<LoadedIvr>,
    pub session: Arc<MediaSession>,
    /// The SDP for our 200: the answer, or our offer when the INVITE had none.
    pub local_sdp: Vec<u8>,
    /// The negotiation, when the INVITE carried the offer.
    pub negotiated: Option<sdp::Answer>,
    pub events: mpsc::UnboundedReceiver<CallEvent>,
    pub commands: mpsc::UnboundedSender<SipCommand>,
    pub shared: Arc<Shared>,
}

/// The media codec for an SDP codec.
pub(crate) fn media_codec(codec: sdp::Codec) -> Codec {
    match codec {
        sdp::Codec::Pcmu => Codec::Pcmu,
        sdp::Codec::Pcma => Codec::Pcma,
    }
}

/// Whether we send media in this direction (ours).
pub(crate) fn sends(direction: sdp::Direction) -> bool {
    matches!(
        direction,
        sdp::Direction::SendRecv | sdp::Direction::SendOnly
    )
}

/// Runs a call to its end: answer, wait for ACK, run the IVR, write its trace.
pub(crate) async fn run(setup: CallSetup) {
    let CallSetup {
        handle,
        incoming,
        ivr,
        session,
        local_sdp,
        negotiated,
        mut events,
        commands,
        shared,
    } = setup;
    let call_id = incoming.call_id.clone();
    let caller = crate::store::normalize_number(&incoming.caller);
    let mut record = CallRecord {
        call_id: call_id.clone(),
        caller: caller.clone(),
        did: incoming.did.clone(),
        ivr: ivr.name.clone(),
        version: ivr.version.clone(),
        path: Vec::new(),
        digits: Vec::new(),
        outcome: "cancelled".into(),
        destination: None,
        detail: None,
        started_at_ms: unix_ms() as i64,
        answered_at_ms: None,
        ended_at_ms: 0,
    };
    let delay = shared.config.answer_delay;
    if !delay.is_zero() {
        let _ = commands.send(SipCommand::Ring(handle));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            event = wait_for_end(&mut events) => {
                tracing::info!(%call_id, ?event, "call ended before it was answered");
                save_record(&shared, record).await;
                return;
            }
        }
    }
    let _ = commands.send(SipCommand::Answer(handle, local_sdp));
    let ack_sdp = loop {
        match events.recv().await {
            Some(CallEvent::Acked { sdp }) => break sdp,
            Some(CallEvent::Ended) | None => {
                tracing::info!(%call_id, "call ended before the ACK");
                record.detail = Some("no ACK".into());
                save_record(&shared, record).await;
                return;
            }
            Some(_) => {}
        }
    };
    let telephone_event = match (&negotiated, ack_sdp) {
        (Some(answer), _) => answer.telephone_event,
        // We offered in our 200; the caller's answer is in the ACK.
        (None, Some(body)) => match sdp::parse(&body)
            .and_then(|d| sdp::answer(&d, session.local_addr().ip(), session.local_addr().port()))
        {
            Ok(answer) => {
                session.renegotiate(&answer);
                answer.telephone_event
            }
            Err(e) => {
                tracing::warn!(%call_id, "unusable SDP answer in ACK ({e}); hanging up");
                let _ = commands.send(SipCommand::Hangup(handle));
                return;
            }
        },
        (None, None) => {
            tracing::warn!(%call_id, "ACK without the SDP answer our offer asked for; hanging up");
            let _ = commands.send(SipCommand::Hangup(handle));
            return;
        }
    };
    let (digits_tx, digits_rx) = mpsc::channel(MAX_PENDING_DIGITS);
    let receiver = tokio::spawn(media::receive(session.clone(), telephone_event, digits_tx));
    let (expired_tx, expired) = watch::channel(None);
    let watchdog = tokio::spawn(watchdog(
        session.clone(),
        Limits {
            rtp_timeout: shared.config.rtp_timeout,
            max_duration: shared.config.max_duration,
        },
        Instant::now(),
        handle,
        commands.clone(),
        expired_tx,
    ));
    record.answered_at_ms = Some(unix_ms() as i64);
    let mut headers = incoming.headers.clone();
    let on_dnc_list = {
        let looked_up = caller.clone();
        let lookup = crate::store::with_retries(&shared.store, StoreOp::DncLookup, move |s| {
            s.dnc_contains(&looked_up)
        })
        .await;
        // Only the runtime says whether the lookup failed: a caller's header of that name goes.
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case(crate::store::DNC_LOOKUP_HEADER));
        match lookup {
            Ok(listed) => listed,
            Err(e) => {
                tracing::error!(%call_id, "do-not-call lookup failed; the IVR is told the list could not be checked: {e}");
                headers.push((
                    crate::store::DNC_LOOKUP_HEADER.to_owned(),
                    "failed".to_owned(),
                ));
                false
            }
        }
    };

    let info = CallInfo {
        call_id: call_id.clone(),
        caller: caller.clone(),
        did: incoming.did.clone(),
        ivr: ivr.name.clone(),
        version: ivr.version.clone(),
        caller_on_dnc_list: on_dnc_list,
        started_at_ms: unix_ms(),
        headers,
    };
    tracing::info!(%call_id, did = %incoming.did, caller = %incoming.caller, ivr = %ivr.name, version = %ivr.version, "call answered");
    crate::metrics::metrics().call_started(crate::metrics::LiveCall {
        call_id: call_id.clone(),
        caller: caller.clone(),
        did: incoming.did.clone(),
        ivr: ivr.name.clone(),
        version: ivr.version.clone(),
        step: String::new(),
        answered_at_ms: unix_ms(),
    });
    let channel = RtpCall {
        handle,
        session: session.clone(),
        events: Events {
            rx: events,
            expired: expired.clone(),
        },
        digits: digits_rx,
        digits_open: true,
        type_ahead: VecDeque::new(),
        merger: DigitMerger::new(),
        commands: commands.clone(),
        answered: Instant::now(),
        shared: shared.clone(),
        caller: caller.clone(),
        ivr_name: ivr.name.clone(),
        telephone_event,
        ended: false,
    };
    let context = CallContext::new(
        Box::new(channel),
        info,
        shared.registry.clone(),
        shared.engine.settings().cpu_budget,
    );
    let mut call = shared.engine.run_call(ivr.clone(), context).await;
    receiver.abort();
    watchdog.abort();
    if let Some(expiry) = *expired.borrow() {
        // The channel saw the end as a hangup; the record says who really ended the call.
        call.ended = Some(expiry.outcome());
    }
    let report = CallReport::new(&ivr, call);
    let metrics = crate::metrics::metrics();
    metrics.call_ended(&call_id, &ivr.name, report.outcome.label());
    metrics.rtp(session.packets_sent(), session.send_errors());
    tracing::info!(%call_id, path = %report.path.join(","), outcome = report.outcome.label(), duration_ms = report.duration_ms, rtp_sent = session.packets_sent(), rtp_send_errors = session.send_errors(), rtp_foreign_dropped = session.foreign_dropped(), "call ended");
    if let Some(dir) = &shared.config.call_traces {
        write_trace(dir, &report);
    }
    record.path = report.path.clone();
    record.digits = report.digits.clone();
    record.outcome = report.outcome.label().to_owned();
    match &report.outcome {
        Outcome::Transfer { destination, .. } => {
            record.destination = serde_json::to_string(destination).ok();
        }
        Outcome::Error { message } => record.detail = Some(message.clone()),
        _ => {}
    }
    save_record(&shared, record).await;
}

/// Writes the call record, off the async threads; a failure is logged, never fatal to calls.
async fn save_record(shared: &Arc<Shared>, mut record: CallRecord) {
    record.ended_at_ms = unix_ms() as i64;
    let call_id = record.call_id.clone();
    let outcome = record.outcome.clone();
    let written = crate::store::with_retries(&shared.store, StoreOp::RecordCall, move |s| {
        s.record_call(&record)
    })
    .await;
    if let Err(e) = written {
        tracing::error!(%call_id, %outcome, "call record not written: {e}");
    }
}

async fn wait_for_end(events: &mut mpsc::UnboundedReceiver<CallEvent>) -> &'static str {
    loop {
        match events.recv().await {
            Some(CallEvent::Ended) => return "ended",
            None => return "gone",
            Some(_) => {}
        }
    }
}

/// Why the runtime itself ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// No RTP from the caller for the RTP timeout.
    MediaTimeout,
    /// The call reached its maximum duration.
    MaxDuration,
}

impl Expiry {
    fn outcome(self) -> Outcome {
        match self {
            Expiry::MediaTimeout => Outcome::MediaTimeout,
            Expiry::MaxDuration => Outcome::MaxDuration,
        }
    }
}

/// The watchdog's limits; `None` turns one off.
#[derive(Debug, Clone, Copy)]
struct Limits {
    rtp_timeout: Option<Duration>,
    max_duration: Option<Duration>,
}

impl Limits {
    /// Whether the call is over a limit at `now`, or when to look again.
    fn check(
        &self,
        answered: Instant,
        quiet_since: Option<Instant>,
        now: Instant,
    ) -> Result<Instant, Expiry> {
        let max_at = self.max_duration.map(|d| answered + d);
        if max_at.is_some_and(|at| now >= at) {
            return Err(Expiry::MaxDuration);
        }
        let quiet_at = match (self.rtp_timeout, quiet_since) {
            (Some(timeout), Some(since)) => Some(since + timeout),
            // On hold nothing is due, but a resume restarts the clock: look again a timeout
            // from now.
            (Some(timeout), None) => Some(now + timeout),
            (None, _) => None,
        };
        if quiet_since.is_some() && quiet_at.is_some_and(|at| now >= at) {
            return Err(Expiry::MediaTimeout);
        }
        let far = now + Duration::from_secs(3600);
        Ok([max_at, quiet_at]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(far))
    }
}

/// Ends the call when it goes over a limit: sends the BYE and tells the channel why.
async fn watchdog(
    session: Arc<MediaSession>,
    limits: Limits,
    answered: Instant,
    handle: CallHandle,
    commands: mpsc::UnboundedSender<SipCommand>,
    expired: watch::Sender<Option<Expiry>>,
) {
    loop {
        let now = Instant::now();
        match limits.check(answered, session.quiet_since(), now) {
            Ok(next) => tokio::time::sleep_until(next.into()).await,
            Err(expiry) => {
                tracing::info!(call = ?handle, ?expiry, "ending the call");
                session.stop();
                let _ = commands.send(SipCommand::Hangup(handle));
                let _ = expired.send(Some(expiry));
                return;
            }
        }
    }
}

/// A call's SIP events, ended early by the watchdog.
struct Events {
    rx: mpsc::UnboundedReceiver<CallEvent>,
    expired: watch::Receiver<Option<Expiry>>,
}

impl Events {
    /// The next event; `Ended` once the watchdog has ended the call (it sent the BYE).
    /// Cancel-safe, like the receiver it wraps.
    async fn recv(&mut self) -> Option<CallEvent> {
        if self.expired.borrow().is_some() {
            return Some(CallEvent::Ended);
        }
        tokio::select! {
            event = self.rx.recv() => event,
            changed = self.expired.changed() => match changed {
                Ok(()) => Some(CallEvent::Ended),
                // The watchdog is gone without firing (the call is ending): only SIP is left.
                Err(_) => self.rx.recv().await,
            },
        }
    }
}

/// Writes a call's trace as `DIR/<call-id>.json`, the call id made safe as a file name.
fn write_trace(dir: &std::path::Path, report: &CallReport) {
    let name: String = report
        .call_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!("{name}.json"));
    let written = serde_json::to_vec_pretty(report)
        .map_err(std::io::Error::other)
        .and_then(|json| {
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, json)?;
            std::fs::rename(&tmp, &path)
        });
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), "cannot write the call trace: {e}");
    }
}

/// What the IVR waits on.
enum Input {
    Digit(char),
    Ended,
}

/// The media side of a real call.
struct RtpCall {
    handle: CallHandle,
    session: Arc<MediaSession>,
    events: Events,
    digits: mpsc::Receiver<MediaDigit>,
    digits_open: bool,
    type_ahead: VecDeque<char>,
    merger: DigitMerger,
    commands: mpsc::UnboundedSender<SipCommand>,
    answered: Instant,
    shared: Arc<Shared>,
    caller: String,
    ivr_name: String,
    telephone_event: Option<u8>,
    ended: bool,
}

impl RtpCall {
    /// Blind transfer: REFER the caller and follow the NOTIFYs.
    async fn transfer_by_refer(
        &mut self,
        uri: String,
        headers: Vec<(String, String)>,
        deadline: tokio::time::Instant,
    ) -> Result<(), CallError> {
        tracing::info!(call = ?self.handle, %uri, "transferring (REFER)");
        // The context rides in the Refer-To URI too, so the transferee's INVITE carries it to
        // whoever answers; the REFER itself carries it for anything on the path.
        let refer_to = with_uri_headers(&uri, &headers);
        let _ = self
            .commands
            .send(SipCommand::Refer(self.handle, refer_to, headers));
        let mut accepted = false;
        loop {
            let event = tokio::select! {
                event = self.events.recv() => event,
                () = tokio::time::sleep_until(deadline) => {
                    return Err(CallError::TransferFailed(TransferFailure::NoAnswer));
                }
                digit = self.digits.recv(), if self.digits_open => {
                    match digit {
                        Some(d) => self.keep_digit(d),
                        None => self.digits_open = false,
                    }
                    continue;
                }
            };
            match event {
                Some(CallEvent::ReferResponse(status)) if (200..300).contains(&status) => {
                    accepted = true
                }
                Some(CallEvent::ReferResponse(status)) => return Err(transfer_failure(status)),
                Some(CallEvent::TransferProgress { status, done }) => {
                    if (200..300).contains(&status) {
                        // The caller is connected to the destination: we leave the call.
                        self.ended = true;
                        let _ = self.commands.send(SipCommand::Hangup(self.handle));
                        return Ok(());
                    }
                    if status >= 300 {
                        return Err(transfer_failure(status));
                    }
                    if done {
                        return Err(CallError::TransferFailed(TransferFailure::NoAnswer));
                    }
                }
                Some(CallEvent::Digit(d)) => self.keep_digit(d),
                Some(CallEvent::Ended) | None => {
                    self.ended = true;
                    // A caller that accepted the REFER and then left went to the destination.
                    return if accepted {
                        Ok(())
                    } else {
                        Err(CallError::HungUp)
                    };
                }
                Some(_) => {}
            }
        }
    }

    /// Bridged transfer: call the destination ourselves, then relay audio and DTMF between the
    /// two legs until either hangs up.
    async fn transfer_by_bridge(
        &mut self,
        uri: String,
        next_hop: std::net::SocketAddr,
        headers: Vec<(String, String)>,
        deadline: tokio::time::Instant,
    ) -> Result<(), CallError> {
        let unreachable =
            |why: String| CallError::TransferFailed(TransferFailure::Unreachable(why));
        let socket = self
            .shared
            .ports
            .bind()
            .map_err(|e| unreachable(e.to_string()))?;
        let local = socket
            .local_addr()
            .map_err(|e| unreachable(e.to_string()))?;
        let codec = self.session.codec();
        let sdp_codec = match codec {
            Codec::Pcmu => sdp::Codec::Pcmu,
            Codec::Pcma => sdp::Codec::Pcma,
        };
        let agent = MediaSession::new(socket, self.shared.config.media, next_hop.ip())
            .map_err(|e| unreachable(e.to_string()))?;
        let (events_tx, mut agent_events) = mpsc::unbounded_channel();
        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
        let from_user = if self.caller.is_empty() {
            "wasm-ivr".to_owned()
        } else {
            self.caller.clone()
        };
        let call = crate::sip::OutboundCall {
            request_uri: uri.clone(),
            to: format!("<{uri}>"),
            from: format!("<sip:{from_user}@{}>", local.ip()),
            destination: next_hop,
            sdp_offer: sdp::offer_codec(local.ip(), local.port(), sdp_codec),
            extra_headers: headers,
        };
        tracing::info!(call = ?self.handle, %uri, %next_hop, "transferring (bridge)");
        let _ = self.commands.send(SipCommand::Invite {
            call,
            events: events_tx,
            session: agent.clone(),
            reply: reply_tx,
        });
        let leg = match reply_rx.await {
            Ok(Ok(handle)) => handle,
            Ok(Err(why)) => return Err(unreachable(why)),
            Err(_) => return Err(unreachable("the SIP endpoint is gone".into())),
        };
        // Ringing: wait for the answer, a failure, the caller leaving, or the timeout.
        let answer_sdp = loop {
            tokio::select! {
                event = agent_events.recv() => match event {
                    Some(CallEvent::OutboundAnswered(sdp)) => break sdp,
                    Some(CallEvent::OutboundFailed(status)) => return Err(transfer_failure(status)),
                    Some(CallEvent::Ended) | None => {
                        return Err(CallError::TransferFailed(TransferFailure::NoAnswer));
                    }
                    Some(_) => {}
                },
                event = self.events.recv() => match event {
                    Some(CallEvent::Ended) | None => {
                        self.ended = true;
                        let _ = self.commands.send(SipCommand::Cancel(leg));
                        return Err(CallError::HungUp);
                    }
                    Some(CallEvent::Digit(d)) => self.keep_digit(d),
                    Some(_) => {}
                },
                () = tokio::time::sleep_until(deadline) => {
                    let _ = self.commands.send(SipCommand::Cancel(leg));
                    return Err(CallError::TransferFailed(TransferFailure::NoAnswer));
                }
            }
        };
        let negotiated = answer_sdp
            .as_deref()
            .ok_or_else(|| "no SDP in the answer".to_owned())
            .and_then(|body| sdp::parse(body).map_err(|e| e.to_string()))
            .and_then(|d| sdp::answer(&d, local.ip(), local.port()).map_err(|e| e.to_string()));
        let negotiated = match negotiated {
            Ok(n) => n,
            Err(why) => {
                let _ = self.commands.send(SipCommand::Hangup(leg));
                return Err(unreachable(format!(
                    "the destination's answer is unusable: {why}"
                )));
            }
        };
        agent.renegotiate(&negotiated);
        // Relay both ways; RFC 4733 events keep flowing with each leg's payload type.
        self.session
            .relay_to(&agent, self.telephone_event, negotiated.telephone_event);
        agent.relay_to(
            &self.session,
            negotiated.telephone_event,
            self.telephone_event,
        );
        // The agent leg only relays (its digits are the caller's business, not ours).
        let (sink, _) = mpsc::channel(1);
        let agent_receiver = tokio::spawn(media::receive(
            agent.clone(),
            negotiated.telephone_event,
            sink,
        ));
        let bridged_at = Instant::now();
        // Bridged: whoever hangs up first, the other leg gets a BYE.
        loop {
            tokio::select! {
                event = agent_events.recv() => if matches!(event, Some(CallEvent::Ended) | None) {
                    self.ended = true;
                    let _ = self.commands.send(SipCommand::Hangup(self.handle));
                    break;
                },
                event = self.events.recv() => if matches!(event, Some(CallEvent::Ended) | None) {
                    self.ended = true;
                    let _ = self.commands.send(SipCommand::Hangup(leg));
                    break;
                },
            }
        }
        agent_receiver.abort();
        tracing::info!(call = ?self.handle, bridged_s = bridged_at.elapsed().as_secs_f64(), "bridge ended");
        Ok(())
    }
}

/// `uri` with `headers` as URI headers (RFC 3261 §19.1.1), escaped.
fn with_uri_headers(uri: &str, headers: &[(String, String)]) -> String {
    if headers.is_empty() {
        return uri.to_owned();
    }
    let escape = |text: &str| -> String {
        text.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.!~*'()[]/:+$".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let pairs: Vec<String> = headers
        .iter()
        .map(|(name, value)| format!("{}={}", escape(name), escape(value)))
        .collect();
    let separator = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{separator}{}", pairs.join("&"))
}

/// The failure a SIP status means for the IVR.
fn transfer_failure(status: u16) -> CallError {
    CallError::TransferFailed(match status {
        486 | 600 => TransferFailure::Busy,
        408 | 480 | 487 => TransferFailure::NoAnswer,
        other => TransferFailure::Rejected(other),
    })
}

/// The transfer context as SIP headers: `X-` names pass as they are, other keys become
/// `X-IVR-<key>`; names keep only token characters and values lose line breaks.
fn context_headers(context: &[(String, String)]) -> Vec<(String, String)> {
    context
        .iter()
        .filter(|(key, _)| !key.is_empty())
        .map(|(key, value)| {
            let token: String = key
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            let name = if token.len() > 2 && token[..2].eq_ignore_ascii_case("x-") {
                token
            } else {
                format!("X-IVR-{token}")
            };
            let value: String = value
                .chars()
                .filter(|c| *c != '\r' && *c != '\n')
                .take(256)
                .collect();
            (name, value.trim().to_owned())
        })
        .collect()
}

impl RtpCall {
    /// Merges a media digit into the stream and keeps it for the next gather.
    fn keep_digit(&mut self, digit: MediaDigit) {
        if let Some(merged) = self.merge(digit) {
            self.type_ahead_push(merged);
        }
    }

    /// Keeps a key for the next gather, unless [`MAX_PENDING_DIGITS`] are already waiting.
    fn type_ahead_push(&mut self, key: char) {
        if self.type_ahead.len() < MAX_PENDING_DIGITS {
            self.type_ahead.push_back(key);
        } else {
            tracing::debug!(call = ?self.handle, "type-ahead full; key dropped");
        }
    }

    /// Merges a digit into the call's stream: the key, or None for a copy from another path.
    fn merge(&mut self, digit: MediaDigit) -> Option<char> {
        let merged = self.merger.push(digit.source, digit.digit, digit.at)?;
        crate::metrics::metrics().dtmf(match merged.source {
            DigitSource::Rfc4733 => "rfc4733",
            DigitSource::SipInfo => "sip-info",
            DigitSource::Inband => "inband",
        });
        Some(merged.digit.as_char())
    }

    /// The next digit or the end of the call. Cancel-safe: nothing is lost if a `select!`
    /// drops it before it completes.
    async fn next_input(&mut self) -> Input {
        loop {
            let digit = tokio::select! {
                event = self.events.recv() => match event {
                    Some(CallEvent::Digit(d)) => d,
                    // Events for transfers and set-up are not input.
                    Some(
                        CallEvent::Acked { .. }
                        | CallEvent::Renegotiated
                        | CallEvent::ReferResponse(_)
                        | CallEvent::TransferProgress { .. }
                        | CallEvent::OutboundAnswered(_)
                        | CallEvent::OutboundFailed(_),
                    ) => continue,
                    Some(CallEvent::Ended) | None => {
                        self.ended = true;
                        return Input::Ended;
                    }
                },
                digit = self.digits.recv(), if self.digits_open => match digit {
                    Some(d) => d,
                    None => {
                        self.digits_open = false;
                        continue;
                    }
                },
            };
            if let Some(key) = self.merge(digit) {
                return Input::Digit(key);
            }
        }
    }

    async fn resolve(&self, prompts: &[Prompt]) -> Result<Vec<Playing>, CallError> {
        let mut items = Vec::with_capacity(prompts.len());
        for prompt in prompts {
            items.push(match prompt {
                Prompt::File(name) => self
                    .shared
                    .prompts
                    .get(name)
                    .map(|prompt| Playing::Prompt { prompt, next: 0 })
                    .ok_or_else(|| {
                        CallError::BadRequest(format!(
                            "no audio file '{name}' in {}",
                            self.shared.prompts.dir().display()
                        ))
                    })?,
                Prompt::Silence(ms) => Playing::Silence {
                    frames: ms.div_ceil(20),
                },
                Prompt::Say(speech) => Playing::Prompt {
                    prompt: self.speak(&speech.text, speech.voice.as_deref()).await?,
                    next: 0,
                },
            });
        }
        Ok(items)
    }

    /// Speech from the cache, or rendered now on a blocking thread (a component's dynamic
    /// text; trees' texts were rendered when they loaded).
    async fn speak(
        &self,
        text: &str,
        voice: Option<&str>,
    ) -> Result<crate::media::prompt::EncodedPrompt, CallError> {
        let Some(speech) = self.shared.speech.clone() else {
            return Err(CallError::BadRequest(
                "no text-to-speech engine is available (install espeak-ng); use an audio file"
                    .into(),
            ));
        };
        if let Some(prompt) = speech.cached(text, voice) {
            return Ok(prompt);
        }
        let (text, voice) = (text.to_owned(), voice.map(str::to_owned));
        tokio::task::spawn_blocking(move || speech.prompt(&text, voice.as_deref()))
            .await
            .map_err(|e| CallError::BadRequest(format!("text-to-speech failed: {e}")))?
            .map_err(|e| CallError::BadRequest(e.to_string()))
    }
}

#[async_trait]
impl CallChannel for RtpCall {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.answered.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn play(&mut self, prompts: &[Prompt]) -> Result<(), CallError> {
        if self.ended {
            return Err(CallError::HungUp);
        }
        let items = self.resolve(prompts).await?;
        let mut done = self.session.play(items);
        loop {
            tokio::select! {
                _ = &mut done => return Ok(()),
                input = self.next_input() => match input {
                    Input::Digit(key) => self.type_ahead_push(key),
                    Input::Ended => {
                        self.session.stop();
                        return Err(CallError::HungUp);
                    }
                },
            }
        }
    }

    async fn gather(&mut self, options: &GatherOptions) -> Result<GatherResult, CallError> {
        if self.ended {
            return Err(CallError::HungUp);
        }
        if !options.type_ahead {
            self.type_ahead.clear();
        }
        let items = self.resolve(&options.prompts).await?;
        let mut playing = !items.is_empty();
        let mut done = self.session.play(items);
        let max = usize::from(options.max_digits.max(1));
        let first = Duration::from_millis(u64::from(options.first_digit_timeout_ms));
        let between = Duration::from_millis(u64::from(options.inter_digit_timeout_ms));
        let mut entry = String::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            while let Some(key) = self.type_ahead.pop_front() {
                if playing && options.barge_in {
                    self.session.stop();
                    playing = false;
                }
                if options.terminators.contains(key) {
                    self.session.stop();
                    return Ok(GatherResult::Digits(entry));
                }
                entry.push(key);
                if entry.chars().count() >= max {
                    self.session.stop();
                    return Ok(GatherResult::Digits(entry));
                }
                if !playing {
                    deadline = Some(tokio::time::Instant::now() + between);
                }
            }
            if !playing && deadline.is_none() {
                deadline = Some(
                    tokio::time::Instant::now() + if entry.is_empty() { first } else { between },
                );
            }
            let timer = deadline.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                _ = &mut done, if playing => {
                    playing = false;
                    deadline = None;
                }
                _ = tokio::time::sleep_until(timer), if !playing => {
                    return Ok(if entry.is_empty() {
                        GatherResult::Timeout
                    } else {
                        GatherResult::Partial(entry)
                    });
                }
                input = self.next_input() => match input {
                    Input::Digit(key) => self.type_ahead_push(key),
                    Input::Ended => {
                        self.session.stop();
                        return Err(CallError::HungUp);
                    }
                },
            }
        }
    }

    async fn transfer(
        &mut self,
        to: &Destination,
        context: &[(String, String)],
    ) -> Result<(), CallError> {
        if self.ended {
            return Err(CallError::HungUp);
        }
        let settings = &self.shared.config.transfer;
        let uri = settings
            .uri_for(to)
            .map_err(|why| CallError::TransferFailed(TransferFailure::Unreachable(why)))?;
        let deadline = tokio::time::Instant::now() + settings.timeout();
        self.session.stop();
        let headers = context_headers(context);
        match settings.mode.unwrap_or_default() {
            TransferMode::Refer => self.transfer_by_refer(uri, headers, deadline).await,
            TransferMode::Bridge => {
                let next_hop = settings
                    .next_hop(to, &uri)
                    .map_err(|why| CallError::TransferFailed(TransferFailure::Unreachable(why)))?;
                self.transfer_by_bridge(uri, next_hop, headers, deadline)
                    .await
            }
        }
    }

    async fn hang_up(&mut self, goodbye: &[Prompt]) {
        if self.ended {
            return;
        }
        if !goodbye.is_empty() && self.play(goodbye).await.is_err() {
            return; // the caller hung up first
        }
        self.ended = true;
        self.session.stop();
        let _ = self.commands.send(SipCommand::Hangup(self.handle));
    }

    async fn suppress(&mut self, goodbye: &[Prompt]) -> Result<(), String> {
        // On the list (durably) before the goodbye and the BYE; the call ends either way, but
        // the goodbye ("you have been removed") only plays when it is true.
        let (caller, source) = (self.caller.clone(), format!("ivr:{}", self.ivr_name));
        let written = crate::store::with_retries(&self.shared.store, StoreOp::DncAdd, move |s| {
            s.dnc_add(&caller, &source)
        })
        .await;
        match written {
            Ok(_) => {
                self.hang_up(goodbye).await;
                Ok(())
            }
            Err(e) => {
                self.hang_up(&[]).await;
                Err(format!(
                    "the caller could not be put on the do-not-call list: {e}"
                ))
            }
        }
    }
}

#[cfg(test)]
mod uri_header_tests {
    #[test]
    fn context_rides_in_the_refer_to_uri() {
        let headers = vec![
            ("X-IVR-Path".to_owned(), "welcome,has_license".to_owned()),
            ("X-IVR-Note".to_owned(), "a b&c=d".to_owned()),
        ];
        let uri = super::with_uri_headers("sip:agent@127.0.0.1:5085", &headers);
        assert_eq!(
            uri,
            "sip:agent@127.0.0.1:5085?X-IVR-Path=welcome%2Chas_license&X-IVR-Note=a%20b%26c%3Dd"
        );
        assert!(crate::sip::message::Uri::parse(&uri).is_ok());
        assert_eq!(super::with_uri_headers("sip:a@b", &[]), "sip:a@b");
    }
}

#[cfg(test)]
mod limit_tests {
    use super::{Expiry, Limits};
    use std::time::{Duration, Instant};

    #[test]
    fn rtp_timeout_and_max_duration() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let limits = Limits {
            rtp_timeout: Some(s(60)),
            max_duration: Some(s(3600)),
        };
        // Heard 10 s in: look again at 70 s.
        assert_eq!(
            limits.check(t0, Some(t0 + s(10)), t0 + s(20)),
            Ok(t0 + s(70))
        );
        assert_eq!(
            limits.check(t0, Some(t0 + s(10)), t0 + s(70)),
            Err(Expiry::MediaTimeout)
        );
        // On hold: no timeout however long, but a look a timeout later (a resume restarts it).
        assert_eq!(limits.check(t0, None, t0 + s(500)), Ok(t0 + s(560)));
        // The maximum applies on hold too, and first.
        assert_eq!(
            limits.check(t0, None, t0 + s(3600)),
            Err(Expiry::MaxDuration)
        );
        assert_eq!(
            limits.check(t0, Some(t0), t0 + s(3600)),
            Err(Expiry::MaxDuration)
        );
        assert_eq!(limits.check(t0, None, t0 + s(3590)), Ok(t0 + s(3600)));
        // Both off: nothing ever ends the call.
        let off = Limits {
            rtp_timeout: None,
            max_duration: None,
        };
        assert!(off.check(t0, Some(t0), t0 + s(100_000)).is_ok());
    }
}
