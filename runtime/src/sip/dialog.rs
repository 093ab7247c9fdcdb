//! Dialogs and the calls built on them (RFC 3261 §12, §13, §14, §15).
//!
//! A [`Call`] exists from the initial INVITE (received, or sent for an outbound call) until the
//! core emits `CallEnded`; its [`Dialog`]
//! holds what in-dialog requests need (tags, route set, remote target, CSeq counters) and the
//! 2xx retransmission state of §13.3.1.4, which lives here rather than in the transaction layer.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Instant;

use super::EndReason;
use super::message::{NameAddr, Request, Response, split_list};
use super::sdp;
use super::timers::{Backoff, TimerConfig, earliest};
use super::transaction::{OutgoingInvite, TxKey};

/// The SIP dialog state shared by both directions of a call (UAS for inbound calls, UAC for
/// outbound ones).
#[derive(Debug, Clone)]
pub(crate) struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    /// The caller's From tag; empty for RFC 2543 callers that send none.
    pub remote_tag: String,
    /// Our party (UAS: the INVITE's To plus our tag; UAC: our From with its tag): From of our
    /// requests.
    pub local_party: String,
    /// The other party (UAS: the INVITE's From; UAC: the 2xx's To): To of our requests.
    pub remote_party: String,
    /// Where in-dialog requests are addressed (Request-URI): the peer's Contact.
    pub remote_target: String,
    /// UAS: Record-Route of the INVITE in order (§12.1.1); UAC: Record-Route of the 2xx
    /// reversed (§12.1.2).
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    pub remote_cseq: u32,
    /// The address the INVITE came from (UAC: where the application told us to send the
    /// INVITE); every request we send in the dialog goes there.
    ///
    /// A sans-IO core has no DNS, and SIP behind NAT or a record-routing proxy (the deployment in
    /// DESIGN.md: Kamailio in front) works best with symmetric flows, so the next hop is the
    /// flow the call arrived on rather than a host name taken from Route or Contact.
    pub peer: SocketAddr,
}

impl Dialog {
    /// Builds the UAS side of a dialog from the INVITE that creates it.
    pub fn from_invite(req: &Request, local_tag: &str, peer: SocketAddr) -> Result<Self, String> {
        let to = req.headers.get("To").unwrap_or_default();
        let remote_target = match req.headers.list("Contact").first() {
            Some(contact) => {
                NameAddr::parse(contact)
                    .map_err(|e| format!("Malformed Contact: {e}"))?
                    .uri_text
            }
            // RFC 2543 callers may omit Contact: fall back to their address of record.
            None => req.from.uri_text.clone(),
        };
        let mut route_set = Vec::new();
        for rr in req.headers.get_all("Record-Route").flat_map(split_list) {
            NameAddr::parse(rr).map_err(|e| format!("Malformed Record-Route: {e}"))?;
            route_set.push(rr.trim().to_owned());
        }
        Ok(Self {
            call_id: req.call_id.clone(),
            local_tag: local_tag.to_owned(),
            remote_tag: req.from.tag().unwrap_or_default().to_owned(),
            local_party: format!("{to};tag={local_tag}"),
            remote_party: req.headers.get("From").unwrap_or_default().to_owned(),
            remote_target,
            route_set,
            local_cseq: 0,
            remote_cseq: req.cseq.seq,
            peer,
        })
    }

    /// Whether an in-dialog request's From tag is the peer's (the dialog id's remote tag).
    pub fn matches_remote(&self, req: &Request) -> bool {
        req.from.tag().unwrap_or_default() == self.remote_tag
    }

    /// The UAC side of a dialog before any answer: what an outbound INVITE said (§12.1.2 fills
    /// in the rest from the 2xx, see [`Self::confirm`]).
    pub fn outgoing(inv: &OutgoingInvite, peer: SocketAddr) -> Self {
        Self {
            call_id: inv.call_id.clone(),
            local_tag: inv.local_tag.clone(),
            remote_tag: String::new(),
            local_party: inv.from.clone(),
            remote_party: inv.to.clone(),
            remote_target: inv.request_uri.clone(),
            route_set: Vec::new(),
            local_cseq: inv.cseq,
            remote_cseq: 0,
            peer,
        }
    }

    /// Completes a UAC dialog from the 2xx that creates it (§12.1.2): the remote tag and party
    /// from To, the remote target from Contact (else the Request-URI stays), and the route set
    /// from Record-Route in reverse order. A 2xx must be acknowledged whatever it carries, so
    /// malformed Contact or Record-Route elements are skipped rather than refused.
    pub fn confirm(&mut self, resp: &Response) {
        let to = resp.headers.get("To").unwrap_or_default();
        self.remote_tag = NameAddr::parse(to)
            .ok()
            .and_then(|n| n.tag().map(str::to_owned))
            .unwrap_or_default();
        to.clone_into(&mut self.remote_party);
        if let Some(target) = resp
            .headers
            .list("Contact")
            .first()
            .and_then(|c| NameAddr::parse(c).ok())
        {
            self.remote_target = target.uri_text;
        }
        let mut route_set: Vec<String> = resp
            .headers
            .get_all("Record-Route")
            .flat_map(split_list)
            .filter(|rr| NameAddr::parse(rr).is_ok())
            .map(|rr| rr.trim().to_owned())
            .collect();
        route_set.reverse();
        self.route_set = route_set;
    }

    /// Builds a new in-dialog request (§12.2.1.1) without a body and bumps the local CSeq.
    pub fn request(
        &mut self,
        method: &str,
        via_sent_by: &str,
        branch: &str,
        user_agent: &str,
    ) -> Vec<u8> {
        self.local_cseq = self.local_cseq.saturating_add(1);
        self.build(
            method,
            self.local_cseq,
            &RequestParts {
                via_sent_by,
                branch,
                user_agent,
                headers: &[],
            },
        )
    }

    /// Builds a new in-dialog request carrying `headers` (after the standard ones) and bumps
    /// the local CSeq.
    pub fn request_with(&mut self, method: &str, parts: &RequestParts<'_>) -> Vec<u8> {
        self.local_cseq = self.local_cseq.saturating_add(1);
        self.build(method, self.local_cseq, parts)
    }

    /// The ACK for a 2xx to our INVITE with CSeq number `cseq` (§13.2.2.4): built like an
    /// in-dialog request but with the INVITE's sequence number and a branch of its own.
    pub fn ack(&self, cseq: u32, parts: &RequestParts<'_>) -> Vec<u8> {
        self.build("ACK", cseq, parts)
    }

    fn build(&self, method: &str, cseq: u32, parts: &RequestParts<'_>) -> Vec<u8> {
        let first_is_strict = self
            .route_set
            .first()
            .and_then(|r| NameAddr::parse(r).ok())
            .is_some_and(|r| !r.uri.is_loose_route());
        let (request_uri, routes): (String, Vec<String>) = if first_is_strict {
            // Strict routing: the first route becomes the Request-URI, the target goes last.
            let first = self
                .route_set
                .first()
                .and_then(|r| NameAddr::parse(r).ok())
                .map(|r| r.uri_text)
                .unwrap_or_else(|| self.remote_target.clone());
            let mut rest: Vec<String> = self.route_set.iter().skip(1).cloned().collect();
            rest.push(format!("<{}>", self.remote_target));
            (first, rest)
        } else {
            (self.remote_target.clone(), self.route_set.clone())
        };
        let RequestParts {
            via_sent_by,
            branch,
            user_agent,
            headers,
        } = parts;
        let mut s = String::with_capacity(512);
        // Writing into a String cannot fail; results are ignored on purpose.
        let _ = write!(
            s,
            "{method} {request_uri} SIP/2.0\r\nVia: SIP/2.0/{via_sent_by};branch={branch};rport\r\nMax-Forwards: 70\r\n"
        );
        for r in &routes {
            let _ = write!(s, "Route: {r}\r\n");
        }
        let _ = write!(
            s,
            "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nUser-Agent: {user_agent}\r\n",
            self.local_party, self.remote_party, self.call_id
        );
        for (name, value) in *headers {
            let _ = write!(s, "{name}: {value}\r\n");
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        s.into_bytes()
    }
}

/// What varies between the requests we send in a dialog besides method and CSeq.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestParts<'a> {
    /// `TRANSPORT host:port` for the Via.
    pub via_sent_by: &'a str,
    pub branch: &'a str,
    pub user_agent: &'a str,
    /// Extra headers, printed in order after the standard ones.
    pub headers: &'a [(String, String)],
}

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallState {
    /// INVITE received; the application has not answered or rejected it.
    Offered,
    /// Outbound INVITE sent; no 2xx yet (the dialog is not confirmed).
    Dialing,
    /// 2xx sent (its ACK may still be pending, see [`Call::ack_wait`]), or for an outbound call
    /// 2xx received and acknowledged.
    Established,
    /// We sent BYE; waiting for its final response.
    Terminating,
}

/// A 2xx being retransmitted until its ACK arrives (§13.3.1.4).
#[derive(Debug, Clone)]
pub(crate) struct AckWait {
    pub response: Vec<u8>,
    pub retransmit: Backoff,
    pub give_up: Instant,
    /// CSeq of the INVITE the 2xx answers; the ACK carries the same number.
    pub cseq: u32,
}

/// What an outbound call needs on top of its dialog.
#[derive(Debug)]
pub(crate) struct Outbound {
    /// Branch of the INVITE client transaction.
    pub branch: String,
    /// Where CANCEL stands.
    pub cancel: CancelState,
    /// How the call ends if it fails from here (changed by a cancel or the ring timeout).
    pub end_reason: EndReason,
    /// When a still-ringing call is cancelled by the core (`Config::answer_timeout`).
    pub ring_until: Option<Instant>,
}

/// CANCEL of an outbound INVITE (§9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CancelState {
    /// Not asked for.
    None,
    /// Asked for before any provisional: sent when the first one arrives.
    Wanted,
    /// Sent.
    Sent,
}

/// A REFER we sent in a call's dialog (RFC 3515).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transfer {
    /// Its transaction has no final response yet.
    pub pending: bool,
    /// The implicit subscription may still send NOTIFYs (not rejected, not terminated).
    pub subscribed: bool,
}

/// One call: dialog plus UAS / UAC bookkeeping.
#[derive(Debug)]
pub(crate) struct Call {
    pub dialog: Dialog,
    pub state: CallState,
    /// The INVITE transaction the application owes a final response to (initial or re-INVITE).
    pub pending_invite: Option<TxKey>,
    /// When the application's answer to `pending_invite` is overdue (see `Config::answer_timeout`).
    pub answer_by: Option<Instant>,
    pub ack_wait: Option<AckWait>,
    /// The application asked to hang up while the ACK was pending: send BYE once it arrives.
    pub hangup_after_ack: bool,
    /// Our last SDP without its `o=` version, to tell a changed SDP from a repeated one.
    pub local_sdp_key: Option<Vec<u8>>,
    pub sdp_version: u64,
    /// Set for calls we placed with `SipCore::invite`.
    pub outbound: Option<Outbound>,
    /// The last REFER sent in this dialog, if any.
    pub transfer: Option<Transfer>,
}

impl Call {
    /// A freshly offered call.
    pub fn new(dialog: Dialog, invite: TxKey, answer_by: Instant) -> Self {
        Self {
            dialog,
            state: CallState::Offered,
            pending_invite: Some(invite),
            answer_by: Some(answer_by),
            ack_wait: None,
            hangup_after_ack: false,
            local_sdp_key: None,
            sdp_version: 0,
            outbound: None,
            transfer: None,
        }
    }

    /// An outbound call whose INVITE is about to be sent on `branch`.
    pub fn outbound(dialog: Dialog, branch: String, ring_until: Instant) -> Self {
        Self {
            dialog,
            state: CallState::Dialing,
            pending_invite: None,
            answer_by: None,
            ack_wait: None,
            hangup_after_ack: false,
            local_sdp_key: None,
            sdp_version: 0,
            outbound: Some(Outbound {
                branch,
                cancel: CancelState::None,
                end_reason: EndReason::Failed,
                ring_until: Some(ring_until),
            }),
            transfer: None,
        }
    }

    /// Stamps our SDP with a session version that stays the same for an unchanged SDP and grows
    /// by one for a changed one (RFC 3264 §8).
    pub fn stamp_sdp(&mut self, body: Vec<u8>) -> Vec<u8> {
        let key = sdp::without_origin_version(&body);
        if self.local_sdp_key.as_ref() != Some(&key) {
            self.sdp_version += 1;
            self.local_sdp_key = Some(key);
        }
        sdp::with_origin_version(&body, self.sdp_version).unwrap_or(body)
    }

    /// Starts retransmitting a 2xx until ACK.
    pub fn wait_for_ack(
        &mut self,
        now: Instant,
        timers: &TimerConfig,
        response: Vec<u8>,
        cseq: u32,
    ) {
        self.ack_wait = Some(AckWait {
            response,
            retransmit: Backoff::start(now, timers),
            give_up: now + timers.t1x64(),
            cseq,
        });
    }

    /// The next instant this call needs attention.
    pub fn deadline(&self) -> Option<Instant> {
        let ack = self
            .ack_wait
            .as_ref()
            .map(|w| w.retransmit.next.min(w.give_up));
        let ring = self.outbound.as_ref().and_then(|o| o.ring_until);
        earliest(earliest(ack, self.answer_by), ring)
    }
}
