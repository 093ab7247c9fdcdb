//! UAS dialogs and the calls built on them (RFC 3261 §12, §13.3, §14, §15).
//!
//! A [`Call`] exists from the initial INVITE until the core emits `CallEnded`; its [`Dialog`]
//! holds what in-dialog requests need (tags, route set, remote target, CSeq counters) and the
//! 2xx retransmission state of §13.3.1.4, which lives here rather than in the transaction layer.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Instant;

use super::message::{NameAddr, Request, split_list};
use super::sdp;
use super::timers::{Backoff, TimerConfig, earliest};
use super::transaction::TxKey;

/// The SIP dialog state shared by both directions of a call.
#[derive(Debug, Clone)]
pub(crate) struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    /// The caller's From tag; empty for RFC 2543 callers that send none.
    pub remote_tag: String,
    /// Our party as the caller addressed it (the INVITE's To, plus our tag): From of our requests.
    pub local_party: String,
    /// The caller's party (the INVITE's From): To of our requests.
    pub remote_party: String,
    /// Where in-dialog requests are addressed (Request-URI): the caller's Contact.
    pub remote_target: String,
    /// Record-Route of the INVITE, in order (a UAS keeps the received order, §12.1.1).
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    pub remote_cseq: u32,
    /// The address the INVITE came from; every request we send in the dialog goes there.
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

    /// Whether an in-dialog request's From tag is the caller's (the dialog id's remote tag).
    pub fn matches_remote(&self, req: &Request) -> bool {
        req.from.tag().unwrap_or_default() == self.remote_tag
    }

    /// Builds a new in-dialog request (§12.2.1.1) and bumps the local CSeq.
    pub fn request(
        &mut self,
        method: &str,
        via_sent_by: &str,
        branch: &str,
        user_agent: &str,
    ) -> Vec<u8> {
        self.local_cseq = self.local_cseq.saturating_add(1);
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
            "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {method}\r\nUser-Agent: {user_agent}\r\nContent-Length: 0\r\n\r\n",
            self.local_party, self.remote_party, self.call_id, self.local_cseq
        );
        s.into_bytes()
    }
}

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallState {
    /// INVITE received; the application has not answered or rejected it.
    Offered,
    /// 2xx sent (its ACK may still be pending, see [`Call::ack_wait`]).
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

/// One call: dialog plus UAS bookkeeping.
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
        earliest(ack, self.answer_by)
    }
}
