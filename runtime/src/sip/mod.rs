//! Sans-IO SIP user agent for the IVR runtime: a UAS for the calls it receives, plus the UAC
//! pieces call transfer needs (REFER in an answered call, outbound INVITE for bridging).
//!
//! # How the pieces fit
//!
//! [`SipCore`] is one SIP endpoint (one local UDP address). It owns no socket and reads no clock:
//! the I/O task feeds it [`Input`]s and drains [`Output`]s, the str0m / quinn-proto pattern:
//!
//! ```text
//! core.handle_input(Input::Datagram { now, from, data });   // or Input::Timeout(now)
//! while let Some(out) = core.poll_output() {
//!     match out {
//!         Output::Transmit(t) => socket.send_to(&t.data, t.to),
//!         Output::Event(e) => app.handle(e),                    // may call core.answer(...) etc.
//!         Output::Timeout(at) => timer.reset(at),               // always the last output
//!     }
//! }
//! ```
//!
//! * [`message`] frames and validates datagrams (own parser, see its docs for why not rsip) and
//!   prints responses; malformed requests get a 400 that says what is wrong.
//! * `transaction` holds the RFC 3261 §17 state machines: INVITE and non-INVITE server
//!   transactions (retransmissions answered from cache, timers G/H/I/J and RFC 6026's L), the
//!   non-INVITE client transaction used for BYE, REFER and CANCEL (timers E/F/K), and the INVITE
//!   client transaction of outbound calls (timers A/B/D and RFC 6026's M; it ACKs non-2xx finals
//!   itself). Client transactions never retransmit when [`Config::transport`] is TCP.
//! * `dialog` holds calls and their dialogs, including the 2xx retransmission that the UAS core
//!   (not the transaction) performs until ACK (§13.3.1.4). Outbound calls get a UAC dialog when
//!   their 2xx arrives (§12.1.2); the core sends the ACK for it (§13.2.2.4) and re-sends it for
//!   every retransmitted 2xx. After that both kinds of call behave alike (BYE, INFO, re-INVITE).
//!
//! # Transfer
//!
//! * Blind: [`SipCore::refer`] sends REFER in an answered call ([`Event::ReferResponse`]); the
//!   transferee's NOTIFYs (`Event: refer`, `message/sipfrag` bodies) are answered 200 and reported
//!   as [`Event::TransferProgress`].
//! * Bridged: [`SipCore::invite`] places an outbound call ([`Event::OutboundProgress`],
//!   [`Event::OutboundAnswered`] or [`Event::OutboundFailed`]); [`SipCore::cancel`] gives up on
//!   one that is still ringing. Inbound and outbound calls share one handle counter, so a
//!   [`CallHandle`] never names two calls.
//! * [`sdp`] reads offers and builds G.711 + telephone-event answers; the core only checks that an
//!   offer is answerable (else 488) and stamps the `o=` version of what the application sends.
//! * [`timers`] has T1/T2/T4 and the back-off shared by the machines.
//!
//! Every response goes to the source address of the request (RFC 3261 §18.2.2 with RFC 3581
//! `rport`): addresses in Via are decorated (`received`, `rport`) but never used for sending.
//! Every call produces exactly one [`Event::CallEnded`], its last event; transactions and calls are
//! removed when their timers end them, and [`SipCore::transaction_count`] /
//! [`SipCore::dialog_count`] expose the sizes so tests can check nothing is left behind.

pub mod admission;
mod dialog;
pub mod message;
pub mod sdp;
pub mod stream;
pub mod timers;
mod transaction;

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dialog::{Call, CallState, CancelState, Dialog, RequestParts, Transfer};
use message::{Message, Method, NameAddr, ParseError, Request, Response, ResponseBuilder, Uri};
use timers::{TimerConfig, earliest};
use transaction::{
    ClientPurpose, ClientTimeout, ClientTx, InviteClientAction, InviteClientTx, InviteServerTx,
    NonInviteServerTx, OutgoingInvite, ServerTimeout, ServerTx, TxKey,
};

/// Methods we accept; everything else known gets 405, unknown methods 501. REFER is absent on
/// purpose: we send it (blind transfer) but refuse incoming ones, and NOTIFY is accepted only
/// for the implicit subscription of a REFER we sent.
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, NOTIFY";
/// The only event package we take NOTIFYs for (RFC 3515).
const REFER_EVENT: &str = "refer";
/// The only body type we take in INVITEs.
const ACCEPT: &str = "application/sdp";

/// Identifies a call for the application; stable for the call's whole life, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallHandle(pub u64);

/// Settings of one endpoint.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our address as peers reach it: used in Via and Contact of what we send.
    pub local_addr: SocketAddr,
    /// T1/T2/T4.
    pub timers: TimerConfig,
    /// Larger datagrams are answered with 513 (requests) or dropped (default 64 KiB).
    pub max_message_size: usize,
    /// New INVITEs beyond this many live calls get 503 (default 10 000).
    pub max_calls: usize,
    /// New requests beyond this many live transactions get 503 (default 100 000).
    pub max_transactions: usize,
    /// Product token for Server / User-Agent headers.
    pub user_agent: String,
    /// UDP or TCP: what our own requests' Via and our Contact say.
    pub transport: Transport,
    /// How long the application may take to answer an INVITE or re-INVITE before the core
    /// answers for it (480 and `CallEnded { Unanswered }`, or 500 for a re-INVITE), so that a
    /// stuck application cannot pin calls in memory (default 180 s, RFC 3261 timer C). Also how
    /// long an outbound call may go without a final response before the core cancels it
    /// (`OutboundFailed` then `CallEnded { Unanswered }`).
    pub answer_timeout: Duration,
    /// Per-source caps, the half-open total and the trusted trunks (see [`admission`]).
    pub admission: admission::Limits,
}

impl Config {
    /// Defaults for an endpoint reachable at `local_addr`.
    pub fn new(local_addr: SocketAddr) -> Self {
        Self {
            local_addr,
            timers: TimerConfig::default(),
            max_message_size: 64 * 1024,
            max_calls: 10_000,
            max_transactions: 100_000,
            user_agent: "wasm-ivr".to_owned(),
            answer_timeout: Duration::from_secs(180),
            transport: Transport::Udp,
            admission: admission::Limits::for_capacity(10_000, 100_000),
        }
    }

    /// Our Contact, with `;transport=tcp` on stream endpoints so in-dialog requests come back
    /// over the same kind of transport.
    pub fn contact(&self) -> String {
        match self.transport {
            Transport::Udp => format!("<sip:{}>", self.local_addr),
            Transport::Tcp => format!("<sip:{};transport=tcp>", self.local_addr),
        }
    }
}

/// The transport an endpoint runs on; it shows in the Via and Contact of what we send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Datagrams.
    Udp,
    /// A stream; messages framed by [`stream::StreamFramer`].
    Tcp,
}

impl Transport {
    /// The Via transport token.
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

impl Config {
    /// Whether the transport is reliable (no request retransmissions, zero timers D and K).
    fn reliable(&self) -> bool {
        self.transport == Transport::Tcp
    }

    /// `TRANSPORT host:port` for the Via of our requests.
    fn via_sent_by(&self) -> String {
        format!("{} {}", self.transport.via_name(), self.local_addr)
    }
}

/// Something that happened outside the core.
#[derive(Debug)]
pub enum Input<'a> {
    /// A UDP datagram arrived.
    Datagram {
        /// Arrival time.
        now: Instant,
        /// Source address: every response to it goes here.
        from: SocketAddr,
        /// The payload.
        data: &'a [u8],
    },
    /// The deadline last returned as [`Output::Timeout`] (or a later instant) has passed.
    Timeout(Instant),
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// Payload.
    pub data: Vec<u8>,
}

/// Something for the I/O loop to do.
#[derive(Debug)]
pub enum Output {
    /// Send a datagram.
    Transmit(Transmit),
    /// Tell the application.
    Event(Event),
    /// Call `handle_input(Input::Timeout(..))` at this instant; always the last output of a drain.
    Timeout(Instant),
}

/// A new call, reported after the core has sent 100 Trying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCall {
    /// Handle for commands and later events.
    pub call: CallHandle,
    /// The Call-ID header.
    pub call_id: String,
    /// The From header value.
    pub from: String,
    /// The To header value.
    pub to: String,
    /// The dialled number: user part of the Request-URI, else of To (percent-decoded, no params).
    pub did: String,
    /// The caller: user part of P-Asserted-Identity, else of From (`tel:` numbers included).
    pub caller: String,
    /// Every header as (name, value), compact names expanded.
    pub headers: Vec<(String, String)>,
    /// The SDP offer, if the INVITE had one (else the offer goes in our 200 and the answer in ACK).
    pub sdp_offer: Option<Vec<u8>>,
    /// Where the INVITE came from.
    pub source: SocketAddr,
}

/// An outbound call for [`SipCore::invite`] (bridged transfer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundCall {
    /// Request-URI: a `sip:`, `sips:` or `tel:` URI without headers.
    pub request_uri: String,
    /// To header value (name-addr or addr-spec, no tag).
    pub to: String,
    /// From header value (no tag: the core adds its own).
    pub from: String,
    /// Where to send the INVITE and every later request of the call: the URI's host or the
    /// outbound proxy, resolved by the application (the core does no DNS).
    pub destination: SocketAddr,
    /// Our SDP offer (required: the core sends the ACK itself, so it cannot carry an answer).
    pub sdp_offer: Vec<u8>,
    /// Extra headers copied into the INVITE (e.g. `X-IVR-Path`, `P-Asserted-Identity`). `Route`
    /// headers form a pre-loaded route and are repeated on CANCEL and on the ACK of a failure.
    pub extra_headers: Vec<(String, String)>,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The caller cancelled before we answered, or we cancelled an outbound call
    /// ([`SipCore::cancel`]).
    Cancelled,
    /// The application rejected the call.
    Rejected,
    /// The caller sent BYE.
    RemoteBye,
    /// We sent BYE (see [`Event::ByeResult`] for how it went).
    LocalBye,
    /// Our 2xx was never acknowledged within 64·T1; the core sent BYE on its own.
    AckTimeout,
    /// The application did not answer within `Config::answer_timeout`; the core sent 480. For an
    /// outbound call: no final response within that time, so the core cancelled it.
    Unanswered,
    /// An outbound call was refused (final status ≥ 300) or got no response at all (timer B);
    /// see [`Event::OutboundFailed`].
    Failed,
}

/// How a BYE we sent ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByeOutcome {
    /// A final response arrived with this status.
    Response(u16),
    /// No final response within 64·T1 (timer F).
    Timeout,
}

/// What the core tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new call; answer with [`SipCore::answer`] or refuse with [`SipCore::reject`].
    IncomingCall(IncomingCall),
    /// The caller cancelled an unanswered call (the core sent 200 to CANCEL and 487 to INVITE).
    CallCancelled {
        /// The call.
        call: CallHandle,
    },
    /// Our 2xx was acknowledged; `sdp` is the answer when our 200 carried the offer.
    Ack {
        /// The call.
        call: CallHandle,
        /// SDP body of the ACK, if any.
        sdp: Option<Vec<u8>>,
    },
    /// The caller hung up (the core answered 200).
    ByeReceived {
        /// The call.
        call: CallHandle,
    },
    /// An INFO in the dialog (the core answered 200); DTMF arrives this way as
    /// `application/dtmf-relay` or `application/dtmf`.
    Info {
        /// The call.
        call: CallHandle,
        /// Content-Type media type, lower-cased, without parameters.
        content_type: Option<String>,
        /// The body.
        body: Vec<u8>,
    },
    /// A re-INVITE (hold, resume, session refresh); answer with [`SipCore::answer_reinvite`]
    /// (typically `sdp::answer(offer, ..)`, or the current SDP when the offer is `None`) or
    /// refuse with [`SipCore::reject_reinvite`].
    ReInvite {
        /// The call.
        call: CallHandle,
        /// The new offer; `None` asks us to offer in the 200 (answer comes in ACK).
        sdp_offer: Option<Vec<u8>>,
    },
    /// The outcome of the BYE sent by [`SipCore::hangup`].
    ByeResult {
        /// The call.
        call: CallHandle,
        /// Final response or timeout.
        outcome: ByeOutcome,
    },
    /// The final response to a REFER sent by [`SipCore::refer`]: 202 (or 200) means the
    /// transferee accepted and [`Event::TransferProgress`] follows; ≥ 300 means it refused.
    /// When no final response arrives within 64·T1 (timer F) the core reports `status: 408`
    /// itself (RFC 3261 §8.1.3.1 treats a transaction timeout as 408).
    ReferResponse {
        /// The call the REFER was sent in.
        call: CallHandle,
        /// Final status.
        status: u16,
    },
    /// A NOTIFY of the REFER subscription (the core answered 200): how the transferee's call
    /// to the transfer target is going.
    TransferProgress {
        /// The call the REFER was sent in.
        call: CallHandle,
        /// Status line of the `message/sipfrag` body (100, 180, 200, 486, …).
        status: u16,
        /// `Subscription-State: terminated`: no more NOTIFYs follow.
        done: bool,
    },
    /// A provisional response to our outbound INVITE (100, 180, 183, …).
    OutboundProgress {
        /// The outbound call.
        call: CallHandle,
        /// The status.
        status: u16,
    },
    /// The outbound call was answered; the core has sent the ACK. The call now behaves like an
    /// answered inbound one ([`SipCore::hangup`], BYE, INFO, re-INVITE).
    OutboundAnswered {
        /// The outbound call.
        call: CallHandle,
        /// The SDP answer of the 2xx, if it had a body.
        sdp_answer: Option<Vec<u8>>,
    },
    /// The outbound call failed: the final status (the core ACKed it), or 408 when timer B
    /// fired or a CANCEL got no final response, or 487 when a 2xx crossed our CANCEL (the core
    /// ACKed it and sent BYE). [`Event::CallEnded`] follows at once.
    OutboundFailed {
        /// The outbound call.
        call: CallHandle,
        /// The status.
        status: u16,
    },
    /// The call is gone; always the last event for a call, emitted exactly once.
    CallEnded {
        /// The call.
        call: CallHandle,
        /// Why.
        reason: EndReason,
    },
}

/// Why an application command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The call does not exist (never did, or already ended).
    #[error("unknown call {0:?}")]
    UnknownCall(CallHandle),
    /// The command does not fit the call's state.
    #[error("call {call:?}: {why}")]
    InvalidState {
        /// The call.
        call: CallHandle,
        /// What is wrong.
        why: &'static str,
    },
    /// The status code is not allowed for this command.
    #[error("status {0} is not allowed here")]
    InvalidStatus(u16),
    /// An argument (URI, header, SDP) cannot be put on the wire as given.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// `Config::max_calls` calls are live already.
    #[error("too many calls")]
    TooManyCalls,
}

/// A final response decided by the core: status, reason phrase and extra headers.
struct Reply {
    status: u16,
    reason: String,
    extra: Vec<(&'static str, String)>,
}

impl Reply {
    fn new(status: u16, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
            extra: Vec::new(),
        }
    }

    fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.extra.push((name, value.into()));
        self
    }
}

/// Random tags and branches without a dependency: the std hasher is keyed per process by the OS.
struct Ids {
    keys: RandomState,
    counter: u64,
}

impl Ids {
    fn next(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        let mut h = self.keys.build_hasher();
        h.write_u64(self.counter);
        h.finish()
    }

    fn tag(&mut self) -> String {
        format!("{:016x}", self.next())
    }

    fn branch(&mut self) -> String {
        format!("{}{:016x}", transaction::MAGIC_COOKIE, self.next())
    }
}

/// The SIP endpoint state machine; see the module docs for the run loop.
pub struct SipCore {
    config: Config,
    server_txs: HashMap<TxKey, ServerTx>,
    /// Non-INVITE client transactions by branch.
    client_txs: HashMap<String, ClientTx>,
    /// INVITE client transactions by branch (a CANCEL shares its INVITE's branch, so the two
    /// kinds live in separate maps).
    invite_txs: HashMap<String, InviteClientTx>,
    calls: HashMap<CallHandle, Call>,
    /// (Call-ID, local tag) → call, to route in-dialog requests.
    dialogs: HashMap<(String, String), CallHandle>,
    outputs: VecDeque<Output>,
    timeout_reported: bool,
    next_call: u64,
    ids: Ids,
    /// What each source holds, for the admission caps.
    ledger: admission::Ledger,
    /// Requests refused by an admission cap, ever.
    refused: u64,
}

impl SipCore {
    /// A core with no calls.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            server_txs: HashMap::new(),
            client_txs: HashMap::new(),
            invite_txs: HashMap::new(),
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            outputs: VecDeque::new(),
            timeout_reported: false,
            next_call: 0,
            ledger: admission::Ledger::default(),
            refused: 0,
            ids: Ids {
                keys: RandomState::new(),
                counter: 0,
            },
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Live server plus client transactions.
    pub fn transaction_count(&self) -> usize {
        self.server_txs.len() + self.client_txs.len() + self.invite_txs.len()
    }

    /// Live calls (each with its dialog, early or confirmed).
    pub fn dialog_count(&self) -> usize {
        self.calls.len()
    }

    /// Inbound calls whose 2xx is not acknowledged yet (still offered, ringing, or answered and
    /// waiting for the ACK).
    pub fn half_open_count(&self) -> usize {
        self.ledger.half_open()
    }

    /// Requests refused by an admission cap since the core started (each got a stateless 503).
    pub fn refused_count(&self) -> u64 {
        self.refused
    }

    /// Feeds a datagram or a timer expiry.
    pub fn handle_input(&mut self, input: Input<'_>) {
        self.timeout_reported = false;
        match input {
            Input::Datagram { now, from, data } => self.on_datagram(now, from, data),
            Input::Timeout(now) => self.on_timeout(now),
        }
    }

    /// Next thing to do: transmits and events in order, then one `Timeout`, then `None`.
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(out) = self.outputs.pop_front() {
            return Some(out);
        }
        if self.timeout_reported {
            return None;
        }
        self.timeout_reported = true;
        self.next_deadline().map(Output::Timeout)
    }

    /// Sends 180 Ringing for an offered call.
    pub fn ring(&mut self, call: CallHandle) -> Result<(), CommandError> {
        self.timeout_reported = false;
        let (key, tag) = self.offered(call)?;
        let Some(ServerTx::Invite(tx)) = self.server_txs.get_mut(&key) else {
            return Err(CommandError::InvalidState {
                call,
                why: "no pending INVITE",
            });
        };
        let bytes = ResponseBuilder::new(&tx.request.headers, tx.peer, 180, "Ringing")
            .local_tag(Some(&tag))
            .record_route()
            .header("Contact", self.config.contact())
            .build();
        tx.provisional(bytes.clone());
        let to = tx.peer;
        self.transmit(to, bytes);
        Ok(())
    }

    /// Answers an offered call with 200 OK carrying `sdp` (our answer, or our offer when the
    /// INVITE had none), retransmitted until ACK; no ACK within 64·T1 ends the call.
    pub fn answer(
        &mut self,
        now: Instant,
        call: CallHandle,
        sdp: Vec<u8>,
    ) -> Result<(), CommandError> {
        self.timeout_reported = false;
        self.offered(call)?;
        self.send_2xx(now, call, sdp)?;
        if let Some(c) = self.calls.get_mut(&call) {
            c.state = CallState::Established;
        }
        Ok(())
    }

    /// Refuses an offered call with a final status (300–699); the call ends (`Rejected`).
    pub fn reject(
        &mut self,
        now: Instant,
        call: CallHandle,
        status: u16,
        reason: &str,
    ) -> Result<(), CommandError> {
        self.timeout_reported = false;
        if !(300..=699).contains(&status) {
            return Err(CommandError::InvalidStatus(status));
        }
        let (key, _) = self.offered(call)?;
        self.final_to_pending(now, call, &key, status, reason);
        self.end_call(now, call, EndReason::Rejected);
        Ok(())
    }

    /// Answers a pending re-INVITE with 200 OK carrying `sdp`, retransmitted until ACK.
    pub fn answer_reinvite(
        &mut self,
        now: Instant,
        call: CallHandle,
        sdp: Vec<u8>,
    ) -> Result<(), CommandError> {
        self.timeout_reported = false;
        self.pending_reinvite(call)?;
        self.send_2xx(now, call, sdp)
    }

    /// Refuses a pending re-INVITE (e.g. 488); the call continues unchanged.
    pub fn reject_reinvite(
        &mut self,
        now: Instant,
        call: CallHandle,
        status: u16,
        reason: &str,
    ) -> Result<(), CommandError> {
        self.timeout_reported = false;
        if !(300..=699).contains(&status) {
            return Err(CommandError::InvalidStatus(status));
        }
        let key = self.pending_reinvite(call)?;
        self.final_to_pending(now, call, &key, status, reason);
        Ok(())
    }

    /// Ends an answered call, inbound or outbound, with BYE (deferred until the ACK if it is
    /// still pending). Reports [`Event::ByeResult`] then [`Event::CallEnded`] (`LocalBye`). An
    /// outbound call that is not answered yet is ended with [`SipCore::cancel`] instead.
    pub fn hangup(&mut self, now: Instant, call: CallHandle) -> Result<(), CommandError> {
        self.timeout_reported = false;
        let c = self
            .calls
            .get_mut(&call)
            .ok_or(CommandError::UnknownCall(call))?;
        match c.state {
            CallState::Offered => Err(CommandError::InvalidState {
                call,
                why: "not answered yet: use reject",
            }),
            CallState::Dialing => Err(CommandError::InvalidState {
                call,
                why: "not answered yet: use cancel",
            }),
            CallState::Terminating => Err(CommandError::InvalidState {
                call,
                why: "already hanging up",
            }),
            CallState::Established if c.ack_wait.is_some() => {
                // §15: no BYE before the 2xx is acknowledged (or its retransmission gives up).
                c.hangup_after_ack = true;
                Ok(())
            }
            CallState::Established => {
                self.send_bye(now, call, true);
                Ok(())
            }
        }
    }

    /// Blind transfer: sends REFER (`Refer-To: <refer_to>`, `Referred-By` our Contact, plus
    /// `extra_headers` such as `X-IVR-Path`) in an answered, acknowledged call. The outcome comes
    /// as [`Event::ReferResponse`], then the transferee's progress as [`Event::TransferProgress`].
    /// One REFER at a time per call.
    pub fn refer(
        &mut self,
        now: Instant,
        call: CallHandle,
        refer_to: &str,
        extra_headers: &[(String, String)],
    ) -> Result<(), CommandError> {
        self.timeout_reported = false;
        if has_crlf(refer_to) || !matches!(Uri::parse(refer_to), Ok(Uri::Sip(_) | Uri::Tel { .. }))
        {
            return Err(CommandError::InvalidArgument(
                "Refer-To must be a sip:, sips: or tel: URI",
            ));
        }
        check_headers(extra_headers, REFER_OWNED)?;
        let c = self
            .calls
            .get_mut(&call)
            .ok_or(CommandError::UnknownCall(call))?;
        let why = match c.state {
            CallState::Offered | CallState::Dialing => Some("not answered yet"),
            CallState::Terminating => Some("hanging up"),
            CallState::Established if c.ack_wait.is_some() => Some("2xx not acknowledged yet"),
            CallState::Established if c.transfer.is_some_and(|t| t.pending) => {
                Some("a REFER is already pending")
            }
            CallState::Established => None,
        };
        if let Some(why) = why {
            return Err(CommandError::InvalidState { call, why });
        }
        let contact = self.config.contact();
        let mut headers = vec![
            ("Contact".to_owned(), contact.clone()),
            ("Refer-To".to_owned(), format!("<{refer_to}>")),
            ("Referred-By".to_owned(), contact),
        ];
        headers.extend_from_slice(extra_headers);
        let branch = self.ids.branch();
        let via = self.config.via_sent_by();
        let bytes = c.dialog.request_with(
            "REFER",
            &RequestParts {
                via_sent_by: &via,
                branch: &branch,
                user_agent: &self.config.user_agent,
                headers: &headers,
            },
        );
        c.transfer = Some(Transfer {
            pending: true,
            subscribed: true,
        });
        let dest = c.dialog.peer;
        let tx = ClientTx::start(
            now,
            &self.config.timers,
            self.config.reliable(),
            ClientPurpose::Refer { call },
            Method::Refer,
            dest,
            bytes.clone(),
        );
        self.client_txs.insert(branch, tx);
        self.transmit(dest, bytes);
        Ok(())
    }

    /// Places an outbound call (bridged transfer): sends the INVITE to `destination` and returns
    /// the new call's handle. Reports [`Event::OutboundProgress`] per provisional, then either
    /// [`Event::OutboundAnswered`] (the core ACKs; the call continues like an answered inbound
    /// one) or [`Event::OutboundFailed`] followed by [`Event::CallEnded`].
    pub fn invite(&mut self, now: Instant, call: OutboundCall) -> Result<CallHandle, CommandError> {
        self.timeout_reported = false;
        if self.calls.len() >= self.config.max_calls {
            return Err(CommandError::TooManyCalls);
        }
        let OutboundCall {
            request_uri,
            to,
            from,
            destination,
            sdp_offer,
            extra_headers,
        } = call;
        let uri_ok = match Uri::parse(&request_uri) {
            Ok(Uri::Sip(u)) => !u.has_headers,
            Ok(Uri::Tel { .. }) => true,
            _ => false,
        };
        if !uri_ok || has_crlf(&request_uri) {
            return Err(CommandError::InvalidArgument(
                "request_uri must be a sip:, sips: or tel: URI without headers",
            ));
        }
        for (value, what) in [
            (&to, "to must be a name-addr without a tag"),
            (&from, "from must be a name-addr without a tag"),
        ] {
            let ok = !has_crlf(value) && NameAddr::parse(value).is_ok_and(|n| n.tag().is_none());
            if !ok {
                return Err(CommandError::InvalidArgument(what));
            }
        }
        if sdp_offer.is_empty() {
            return Err(CommandError::InvalidArgument(
                "an outbound INVITE needs an SDP offer",
            ));
        }
        check_headers(&extra_headers, INVITE_OWNED)?;

        let local_tag = self.ids.tag();
        let branch = self.ids.branch();
        let call_id = format!("{:016x}{:016x}@wasm-ivr", self.ids.next(), self.ids.next());
        let invite = OutgoingInvite {
            request_uri,
            via: format!(
                "SIP/2.0/{};branch={branch};rport",
                self.config.via_sent_by()
            ),
            from: format!("{from};tag={local_tag}"),
            local_tag,
            to,
            call_id,
            cseq: 1,
            routes: extra_headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("Route"))
                .map(|(_, v)| v.clone())
                .collect(),
            user_agent: self.config.user_agent.clone(),
        };
        self.next_call += 1;
        let handle = CallHandle(self.next_call);
        let mut c = Call::outbound(
            Dialog::outgoing(&invite, destination),
            branch.clone(),
            now + self.config.answer_timeout,
        );
        let body = c.stamp_sdp(sdp_offer);
        let bytes = invite.invite(&self.config.contact(), ALLOW, &extra_headers, &body);
        self.calls.insert(handle, c);
        let tx = InviteClientTx::start(
            now,
            &self.config.timers,
            self.config.reliable(),
            handle,
            invite,
            destination,
            bytes.clone(),
        );
        self.invite_txs.insert(branch, tx);
        self.transmit(destination, bytes);
        Ok(handle)
    }

    /// Gives up on an outbound call that has no final response yet: sends CANCEL (after the first
    /// provisional, as §9.1 requires). The 487 that follows is reported as
    /// `OutboundFailed { status: 487 }` and `CallEnded { Cancelled }`.
    pub fn cancel(&mut self, now: Instant, call: CallHandle) -> Result<(), CommandError> {
        self.timeout_reported = false;
        let c = self
            .calls
            .get(&call)
            .ok_or(CommandError::UnknownCall(call))?;
        let why = match (&c.outbound, c.state) {
            (None, _) => Some("not an outbound call: use reject or hangup"),
            (Some(o), CallState::Dialing) if o.cancel != CancelState::None => {
                Some("already cancelling")
            }
            (Some(_), CallState::Dialing) => None,
            (Some(_), _) => Some("already answered: use hangup"),
        };
        if let Some(why) = why {
            return Err(CommandError::InvalidState { call, why });
        }
        self.start_cancel(now, call, EndReason::Cancelled);
        Ok(())
    }

    // ----- commands: helpers -------------------------------------------------------------

    fn offered(&self, call: CallHandle) -> Result<(TxKey, String), CommandError> {
        let c = self
            .calls
            .get(&call)
            .ok_or(CommandError::UnknownCall(call))?;
        match (&c.state, &c.pending_invite) {
            (CallState::Offered, Some(key)) => Ok((key.clone(), c.dialog.local_tag.clone())),
            _ => Err(CommandError::InvalidState {
                call,
                why: "not an offered call",
            }),
        }
    }

    fn pending_reinvite(&self, call: CallHandle) -> Result<TxKey, CommandError> {
        let c = self
            .calls
            .get(&call)
            .ok_or(CommandError::UnknownCall(call))?;
        match (&c.state, &c.pending_invite) {
            (CallState::Established, Some(key)) => Ok(key.clone()),
            _ => Err(CommandError::InvalidState {
                call,
                why: "no re-INVITE pending",
            }),
        }
    }

    fn send_2xx(
        &mut self,
        now: Instant,
        call: CallHandle,
        sdp: Vec<u8>,
    ) -> Result<(), CommandError> {
        let timers = self.config.timers;
        let contact = self.config.contact();
        let server = self.config.user_agent.clone();
        let c = self
            .calls
            .get_mut(&call)
            .ok_or(CommandError::UnknownCall(call))?;
        c.answer_by = None;
        let key = c.pending_invite.take().ok_or(CommandError::InvalidState {
            call,
            why: "no INVITE pending",
        })?;
        let Some(ServerTx::Invite(tx)) = self.server_txs.get_mut(&key) else {
            return Err(CommandError::InvalidState {
                call,
                why: "INVITE transaction gone",
            });
        };
        let body = c.stamp_sdp(sdp);
        let bytes = ResponseBuilder::new(&tx.request.headers, tx.peer, 200, "OK")
            .local_tag(Some(&c.dialog.local_tag))
            .record_route()
            .header("Contact", contact)
            .header("Allow", ALLOW)
            .header("Server", server)
            .body("application/sdp", &body)
            .build();
        tx.final_response(now, &timers, self.config.reliable(), 200, bytes.clone());
        c.wait_for_ack(now, &timers, bytes.clone(), tx.request.cseq.seq);
        let to = tx.peer;
        self.transmit(to, bytes);
        Ok(())
    }

    /// Sends a non-2xx final response on the call's pending INVITE transaction.
    fn final_to_pending(
        &mut self,
        now: Instant,
        call: CallHandle,
        key: &TxKey,
        status: u16,
        reason: &str,
    ) {
        let timers = self.config.timers;
        let tag = self.calls.get_mut(&call).map(|c| {
            c.pending_invite = None;
            c.answer_by = None;
            c.dialog.local_tag.clone()
        });
        if let Some(ServerTx::Invite(tx)) = self.server_txs.get_mut(key)
            && tx.is_proceeding()
        {
            let bytes = ResponseBuilder::new(&tx.request.headers, tx.peer, status, reason)
                .local_tag(tag.as_deref())
                .build();
            tx.final_response(now, &timers, self.config.reliable(), status, bytes.clone());
            let to = tx.peer;
            self.transmit(to, bytes);
        }
    }

    fn send_bye(&mut self, now: Instant, call: CallHandle, report: bool) {
        let branch = self.ids.branch();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let via = self.config.via_sent_by();
        let bytes = c
            .dialog
            .request("BYE", &via, &branch, &self.config.user_agent);
        let dest = c.dialog.peer;
        c.state = CallState::Terminating;
        let tx = ClientTx::start(
            now,
            &self.config.timers,
            self.config.reliable(),
            ClientPurpose::Bye { call, report },
            Method::Bye,
            dest,
            bytes.clone(),
        );
        self.client_txs.insert(branch, tx);
        self.transmit(dest, bytes);
        // A re-INVITE still waiting for the application can no longer be answered.
        if let Some(key) = self.calls.get(&call).and_then(|c| c.pending_invite.clone()) {
            self.final_to_pending(now, call, &key, 487, "Request Terminated");
        }
    }

    /// Cancels an outbound call that is still dialing; it will end with `reason`.
    fn start_cancel(&mut self, now: Instant, call: CallHandle, reason: EndReason) {
        let Some(o) = self.calls.get_mut(&call).and_then(|c| c.outbound.as_mut()) else {
            return;
        };
        o.end_reason = reason;
        o.ring_until = None;
        let Some(tx) = self.invite_txs.get(&o.branch) else {
            return;
        };
        if tx.is_calling() {
            // §9.1: no CANCEL before a provisional response; the first one triggers it.
            o.cancel = CancelState::Wanted;
        } else if tx.is_proceeding() {
            o.cancel = CancelState::Sent;
            let branch = o.branch.clone();
            self.send_cancel(now, call, &branch);
        }
    }

    fn send_cancel(&mut self, now: Instant, call: CallHandle, branch: &str) {
        let timers = self.config.timers;
        let Some(tx) = self.invite_txs.get_mut(branch) else {
            return;
        };
        tx.cancel_sent(now, &timers);
        let bytes = tx.invite.cancel();
        let dest = tx.dest;
        let cancel = ClientTx::start(
            now,
            &timers,
            self.config.reliable(),
            ClientPurpose::Cancel { call },
            Method::Cancel,
            dest,
            bytes.clone(),
        );
        self.client_txs.insert(branch.to_owned(), cancel);
        self.transmit(dest, bytes);
    }

    /// Reports an outbound call's failure and ends it.
    fn outbound_failed(&mut self, now: Instant, call: CallHandle, status: u16) {
        let Some(reason) = self
            .calls
            .get(&call)
            .and_then(|c| c.outbound.as_ref())
            .map(|o| o.end_reason)
        else {
            return;
        };
        self.event(Event::OutboundFailed { call, status });
        self.end_call(now, call, reason);
    }

    /// Forgets a call and emits its one `CallEnded`; a pending INVITE gets 487.
    fn end_call(&mut self, now: Instant, call: CallHandle, reason: EndReason) {
        if let Some(key) = self.calls.get(&call).and_then(|c| c.pending_invite.clone()) {
            self.final_to_pending(now, call, &key, 487, "Request Terminated");
        }
        self.ledger.call_ended(call);
        if let Some(c) = self.calls.remove(&call) {
            self.dialogs
                .remove(&(c.dialog.call_id.clone(), c.dialog.local_tag.clone()));
            self.event(Event::CallEnded { call, reason });
        }
    }

    // ----- input --------------------------------------------------------------------------

    fn on_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if data.len() > self.config.max_message_size {
            self.on_oversized(from, data);
            return;
        }
        match message::parse(data) {
            Ok(Message::Request(req)) => self.on_request(now, from, *req),
            Ok(Message::Response(resp)) => self.on_response(now, *resp),
            Err(ParseError::Reject {
                status,
                reason,
                headers,
            }) => {
                let tag = self.ids.tag();
                let bytes = ResponseBuilder::new(&headers, from, status, &reason)
                    .local_tag(Some(&tag))
                    .build();
                self.transmit(from, bytes);
            }
            // Keep-alives, truncated datagrams, bad responses and requests without a Via cannot
            // be answered usefully: drop them.
            Err(_) => {}
        }
    }

    /// Answers a request with `status` without keeping any state (an ACL refusal): nothing is
    /// remembered, so a flood of refused requests costs no memory. ACKs and responses are
    /// dropped.
    pub fn refuse(&mut self, from: SocketAddr, data: &[u8], status: u16, reason: &str) {
        if data.len() > self.config.max_message_size {
            return;
        }
        let headers = match message::parse(data) {
            Ok(Message::Request(r)) if r.method != Method::Ack => r.headers,
            _ => return,
        };
        let tag = self.ids.tag();
        let bytes = ResponseBuilder::new(&headers, from, status, reason)
            .local_tag(Some(&tag))
            .build();
        self.transmit(from, bytes);
    }

    fn on_oversized(&mut self, from: SocketAddr, data: &[u8]) {
        let headers = match message::parse(data) {
            Ok(Message::Request(r)) if r.method != Method::Ack => r.headers,
            Err(ParseError::Reject { headers, .. }) => headers,
            _ => return,
        };
        let tag = self.ids.tag();
        let bytes = ResponseBuilder::new(&headers, from, 513, "Message Too Large")
            .local_tag(Some(&tag))
            .build();
        self.transmit(from, bytes);
    }

    fn on_request(&mut self, now: Instant, from: SocketAddr, req: Request) {
        if req.method == Method::Ack {
            self.on_ack(now, &req);
            return;
        }
        let key = TxKey::for_request(&req);
        if let Some(tx) = self.server_txs.get(&key) {
            // A retransmission: replay the last response, if the state has one.
            if let Some((to, bytes)) = tx.retransmission() {
                self.transmit(to, bytes);
            }
            return;
        }
        if self.server_txs.len() >= self.config.max_transactions {
            // Stateless: remembering the refusal would itself grow the table.
            let tag = self.ids.tag();
            let bytes = ResponseBuilder::new(&req.headers, from, 503, "Service Unavailable")
                .local_tag(Some(&tag))
                .header("Retry-After", "5")
                .build();
            self.transmit(from, bytes);
            return;
        }
        if let Err(refusal) = self.admit(from, &req) {
            // Stateless for the same reason; the source is told to come back later.
            self.refused += 1;
            let tag = self.ids.tag();
            let bytes = ResponseBuilder::new(&req.headers, from, 503, "Service Unavailable")
                .local_tag(Some(&tag))
                .header("Retry-After", "5")
                .header(
                    "Warning",
                    format!("399 wasm-ivr \"too many {}\"", refusal.as_str()),
                )
                .build();
            self.transmit(from, bytes);
            return;
        }
        if req.method == Method::Cancel {
            self.on_cancel(now, from, &req, key);
            return;
        }
        // RFC 3261 §8.2.1: method inspection first.
        match &req.method {
            Method::Invite | Method::Bye | Method::Options | Method::Info | Method::Notify => {}
            Method::Extension(_) => {
                self.respond(
                    now,
                    from,
                    &req,
                    key,
                    Reply::new(501, "Not Implemented").with("Allow", ALLOW),
                );
                return;
            }
            _ => {
                self.respond(
                    now,
                    from,
                    &req,
                    key,
                    Reply::new(405, "Method Not Allowed").with("Allow", ALLOW),
                );
                return;
            }
        }
        // §8.2.2.1: Request-URI scheme.
        if matches!(req.uri, Uri::Other { .. }) {
            self.respond(
                now,
                from,
                &req,
                key,
                Reply::new(416, "Unsupported URI Scheme"),
            );
            return;
        }
        // §8.2.2.3: we support no extensions, so any Require option tag is unsupported.
        let required = req.headers.list("Require");
        if !required.is_empty() {
            let unsupported = required.join(", ");
            self.respond(
                now,
                from,
                &req,
                key,
                Reply::new(420, "Bad Extension").with("Unsupported", unsupported),
            );
            return;
        }
        let in_dialog = req.to.tag().is_some();
        let call = if in_dialog {
            self.find_dialog(&req)
        } else {
            None
        };
        match (&req.method, in_dialog, call) {
            (Method::Options, _, _) => {
                self.respond(
                    now,
                    from,
                    &req,
                    key,
                    Reply::new(200, "OK")
                        .with("Allow", ALLOW)
                        .with("Accept", ACCEPT),
                );
            }
            // §12.2.2: a request for a dialog we do not have.
            (_, true, None) | (Method::Bye | Method::Info | Method::Notify, false, _) => {
                self.respond(
                    now,
                    from,
                    &req,
                    key,
                    Reply::new(481, "Call/Transaction Does Not Exist"),
                );
            }
            (Method::Invite, false, _) => self.on_invite(now, from, req, key),
            (Method::Invite, true, Some(call)) => self.on_reinvite(now, from, req, key, call),
            (Method::Bye, true, Some(call)) => self.on_bye(now, from, &req, key, call),
            (Method::Info, true, Some(call)) => self.on_info(now, from, req, key, call),
            (Method::Notify, true, Some(call)) => self.on_notify(now, from, &req, key, call),
            _ => self.respond(
                now,
                from,
                &req,
                key,
                Reply::new(500, "Server Internal Error"),
            ),
        }
    }

    /// The admission caps for a new request from `from`: its transaction, and for an initial
    /// INVITE its call.
    fn admit(&self, from: SocketAddr, req: &Request) -> Result<(), admission::Refusal> {
        let limits = &self.config.admission;
        self.ledger.admit_transaction(limits, from.ip())?;
        if req.method == Method::Invite && req.to.tag().is_none() {
            self.ledger.admit_call(limits, from.ip())?;
        }
        Ok(())
    }

    /// Keeps a server transaction, counted against its peer's cap.
    fn insert_server_tx(&mut self, key: TxKey, tx: ServerTx) {
        let peer = tx.peer().ip();
        if let Some(old) = self.server_txs.insert(key, tx) {
            self.ledger.transaction_ended(old.peer().ip());
        }
        self.ledger.transaction_started(peer);
    }

    fn find_dialog(&self, req: &Request) -> Option<CallHandle> {
        let tag = req.to.tag()?;
        let call = *self.dialogs.get(&(req.call_id.clone(), tag.to_owned()))?;
        let c = self.calls.get(&call)?;
        c.dialog.matches_remote(req).then_some(call)
    }

    /// Checks an INVITE's Accept and body (§8.2.3, RFC 3264): the offer if acceptable, else the
    /// response to send.
    fn check_offer(req: &Request) -> Result<Option<Vec<u8>>, Reply> {
        let accept = req.headers.list("Accept");
        let sdp_ok = accept.iter().any(|a| {
            let t = a.split(';').next().unwrap_or_default().trim();
            [ACCEPT, "application/*", "*/*"]
                .iter()
                .any(|ok| t.eq_ignore_ascii_case(ok))
        });
        if !accept.is_empty() && !sdp_ok {
            return Err(Reply::new(406, "Not Acceptable"));
        }
        if req.body.is_empty() {
            return Ok(None);
        }
        if req.content_type.as_deref() != Some(ACCEPT) {
            return Err(Reply::new(415, "Unsupported Media Type").with("Accept", ACCEPT));
        }
        if let Some(enc) = req.headers.get("Content-Encoding")
            && !enc.trim().eq_ignore_ascii_case("identity")
        {
            let reply = Reply::new(415, "Unsupported Media Type");
            return Err(reply.with("Accept-Encoding", "identity"));
        }
        match sdp::parse(&req.body) {
            Err(_) => Err(Reply::new(400, "Malformed SDP body")),
            Ok(offer) if !offer.has_common_codec() => {
                let warning = "305 wasm-ivr \"Incompatible media format\"";
                Err(Reply::new(488, "Not Acceptable Here").with("Warning", warning))
            }
            Ok(_) => Ok(Some(req.body.clone())),
        }
    }

    fn on_invite(&mut self, now: Instant, from: SocketAddr, req: Request, key: TxKey) {
        if self.calls.len() >= self.config.max_calls {
            self.respond(
                now,
                from,
                &req,
                key,
                Reply::new(503, "Service Unavailable").with("Retry-After", "5"),
            );
            return;
        }
        let sdp_offer = match Self::check_offer(&req) {
            Ok(offer) => offer,
            Err(r) => {
                self.respond(now, from, &req, key, r);
                return;
            }
        };
        let local_tag = self.ids.tag();
        let dialog = match Dialog::from_invite(&req, &local_tag, from) {
            Ok(d) => d,
            Err(reason) => {
                self.respond(now, from, &req, key, Reply::new(400, reason));
                return;
            }
        };
        self.next_call += 1;
        let call = CallHandle(self.next_call);
        let trying = ResponseBuilder::new(&req.headers, from, 100, "Trying").build();
        self.transmit(from, trying.clone());
        let trusted = self.config.admission.is_trusted(from.ip());
        let incoming = IncomingCall {
            call,
            call_id: req.call_id.clone(),
            from: req.headers.get("From").unwrap_or_default().to_owned(),
            to: req.headers.get("To").unwrap_or_default().to_owned(),
            did: normalise_number(
                req.uri
                    .user()
                    .or_else(|| req.to.uri.user())
                    .unwrap_or_default(),
            ),
            caller: caller_of(&req, trusted),
            // An untrusted source's assertion is not passed on either: the application must not
            // be able to believe it by reading the headers.
            headers: req
                .headers
                .iter()
                .filter(|h| trusted || !h.name.eq_ignore_ascii_case(ASSERTED_IDENTITY))
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
            sdp_offer,
            source: from,
        };
        self.dialogs
            .insert((dialog.call_id.clone(), local_tag), call);
        let answer_by = now + self.config.answer_timeout;
        self.calls
            .insert(call, Call::new(dialog, key.clone(), answer_by));
        self.ledger.call_started(call, from.ip());
        self.insert_server_tx(
            key,
            ServerTx::Invite(Box::new(InviteServerTx::proceeding(
                from,
                req,
                Some(call),
                trying,
            ))),
        );
        self.event(Event::IncomingCall(incoming));
    }

    fn on_reinvite(
        &mut self,
        now: Instant,
        from: SocketAddr,
        req: Request,
        key: TxKey,
        call: CallHandle,
    ) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        // §14.2: one INVITE at a time per dialog; an older CSeq is out of order (§12.2.2).
        let busy =
            c.state != CallState::Established || c.pending_invite.is_some() || c.ack_wait.is_some();
        if busy {
            self.respond(
                now,
                from,
                &req,
                key,
                Reply::new(500, "Server Internal Error").with("Retry-After", "1"),
            );
            return;
        }
        if req.cseq.seq <= c.dialog.remote_cseq {
            self.respond(now, from, &req, key, Reply::new(500, "CSeq Out of Order"));
            return;
        }
        let sdp_offer = match Self::check_offer(&req) {
            Ok(offer) => offer,
            Err(r) => {
                self.respond(now, from, &req, key, r);
                return;
            }
        };
        let new_target = req
            .headers
            .list("Contact")
            .first()
            .and_then(|c| NameAddr::parse(c).ok())
            .map(|n| n.uri_text);
        let trying = ResponseBuilder::new(&req.headers, from, 100, "Trying").build();
        self.transmit(from, trying.clone());
        if let Some(c) = self.calls.get_mut(&call) {
            c.dialog.remote_cseq = req.cseq.seq;
            // A re-INVITE is a target refresh request (§12.2.2).
            if let Some(target) = new_target {
                c.dialog.remote_target = target;
            }
            c.pending_invite = Some(key.clone());
            c.answer_by = Some(now + self.config.answer_timeout);
        }
        self.insert_server_tx(
            key,
            ServerTx::Invite(Box::new(InviteServerTx::proceeding(
                from,
                req,
                Some(call),
                trying,
            ))),
        );
        self.event(Event::ReInvite { call, sdp_offer });
    }

    fn on_bye(
        &mut self,
        now: Instant,
        from: SocketAddr,
        req: &Request,
        key: TxKey,
        call: CallHandle,
    ) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if req.cseq.seq <= c.dialog.remote_cseq && c.state != CallState::Offered {
            self.respond(now, from, req, key, Reply::new(500, "CSeq Out of Order"));
            return;
        }
        let state = c.state;
        self.respond(now, from, req, key, Reply::new(200, "OK"));
        if state == CallState::Terminating {
            // Our BYE crossed theirs: the call ends when our BYE completes.
            return;
        }
        self.event(Event::ByeReceived { call });
        self.end_call(now, call, EndReason::RemoteBye);
    }

    fn on_info(
        &mut self,
        now: Instant,
        from: SocketAddr,
        req: Request,
        key: TxKey,
        call: CallHandle,
    ) {
        if let Some(c) = self.calls.get_mut(&call) {
            if req.cseq.seq <= c.dialog.remote_cseq && c.state != CallState::Offered {
                self.respond(now, from, &req, key, Reply::new(500, "CSeq Out of Order"));
                return;
            }
            c.dialog.remote_cseq = req.cseq.seq;
        }
        self.respond(now, from, &req, key, Reply::new(200, "OK"));
        self.event(Event::Info {
            call,
            content_type: req.content_type,
            body: req.body,
        });
    }

    /// A NOTIFY of the implicit subscription of our REFER (RFC 3515 §2.4.4, RFC 6665 §4.1.3).
    /// Answered 200 whenever it is well-formed; only a parseable sipfrag is reported.
    fn on_notify(
        &mut self,
        now: Instant,
        from: SocketAddr,
        req: &Request,
        key: TxKey,
        call: CallHandle,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if req.cseq.seq <= c.dialog.remote_cseq && c.state != CallState::Offered {
            self.respond(now, from, req, key, Reply::new(500, "CSeq Out of Order"));
            return;
        }
        c.dialog.remote_cseq = req.cseq.seq;
        let package = req
            .headers
            .get("Event")
            .map(|e| e.split(';').next().unwrap_or_default().trim());
        let reply = match (package, req.headers.get("Subscription-State")) {
            (None, _) => Some(Reply::new(400, "Missing Event header")),
            (Some(p), _) if !p.eq_ignore_ascii_case(REFER_EVENT) => {
                Some(Reply::new(489, "Bad Event").with("Allow-Events", REFER_EVENT))
            }
            (_, None) => Some(Reply::new(400, "Missing Subscription-State header")),
            _ if !c.transfer.is_some_and(|t| t.subscribed) => {
                Some(Reply::new(481, "Subscription Does Not Exist"))
            }
            _ => None,
        };
        if let Some(reply) = reply {
            self.respond(now, from, req, key, reply);
            return;
        }
        let done = req
            .headers
            .get("Subscription-State")
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("terminated"));
        if done && let Some(t) = &mut c.transfer {
            t.subscribed = false;
        }
        self.respond(now, from, req, key, Reply::new(200, "OK"));
        if let Some(status) = sipfrag_status(req) {
            self.event(Event::TransferProgress { call, status, done });
        }
    }

    fn on_cancel(&mut self, now: Instant, from: SocketAddr, req: &Request, key: TxKey) {
        let invite_key = TxKey::invite_of_cancel(req);
        let (call, proceeding) = match self.server_txs.get(&invite_key) {
            Some(ServerTx::Invite(tx)) => (tx.call, tx.is_proceeding()),
            _ => {
                self.respond(
                    now,
                    from,
                    req,
                    key,
                    Reply::new(481, "Call/Transaction Does Not Exist"),
                );
                return;
            }
        };
        self.respond(now, from, req, key, Reply::new(200, "OK"));
        if !proceeding {
            return;
        }
        let initial = call
            .and_then(|c| self.calls.get(&c))
            .is_some_and(|c| c.state == CallState::Offered);
        match call {
            Some(call) if initial => {
                self.final_to_pending(now, call, &invite_key, 487, "Request Terminated");
                self.event(Event::CallCancelled { call });
                self.end_call(now, call, EndReason::Cancelled);
            }
            Some(call) => self.final_to_pending(now, call, &invite_key, 487, "Request Terminated"),
            None => {}
        }
    }

    fn on_ack(&mut self, now: Instant, req: &Request) {
        let timers = self.config.timers;
        // ACK for a non-2xx final shares the INVITE's transaction (§17.2.3).
        if let Some(ServerTx::Invite(tx)) = self.server_txs.get_mut(&TxKey::for_request(req))
            && tx.ack(now, &timers)
        {
            return;
        }
        // ACK for a 2xx is its own transaction, routed by the dialog (§13.3.1.4).
        let Some(call) = self.find_dialog(req) else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.ack_wait.as_ref().is_none_or(|w| w.cseq != req.cseq.seq) {
            return;
        }
        c.ack_wait = None;
        let hangup = std::mem::take(&mut c.hangup_after_ack);
        self.ledger.call_confirmed(call);
        let sdp = (!req.body.is_empty()).then(|| req.body.clone());
        self.event(Event::Ack { call, sdp });
        if hangup {
            self.send_bye(now, call, true);
        }
    }

    fn on_response(&mut self, now: Instant, resp: Response) {
        if resp.cseq.method == Method::Invite {
            self.on_invite_response(now, &resp);
            return;
        }
        let timers = self.config.timers;
        let Some(branch) = resp.via.branch() else {
            return;
        };
        let Some(tx) = self.client_txs.get_mut(branch) else {
            return;
        };
        if tx.method != resp.cseq.method {
            return;
        }
        if let Some(status) = tx.response(now, &timers, resp.status) {
            let purpose = tx.purpose;
            self.client_finished(now, purpose, status);
        }
    }

    /// A non-INVITE client transaction got its final response (`status`; 408 for timer F).
    fn client_finished(&mut self, now: Instant, purpose: ClientPurpose, status: u16) {
        match purpose {
            ClientPurpose::Bye { call, report } => {
                self.bye_finished(now, call, report, ByeOutcome::Response(status));
            }
            ClientPurpose::Refer { call } => self.refer_finished(call, status),
            // The INVITE's own final response (or its give-up timer) ends the call.
            ClientPurpose::Cancel { .. } => {}
        }
    }

    fn refer_finished(&mut self, call: CallHandle, status: u16) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if let Some(t) = &mut c.transfer {
            t.pending = false;
            if status >= 300 {
                t.subscribed = false;
            }
        }
        self.event(Event::ReferResponse { call, status });
    }

    fn on_invite_response(&mut self, now: Instant, resp: &Response) {
        let timers = self.config.timers;
        let Some(branch) = resp.via.branch() else {
            return;
        };
        let Some(tx) = self.invite_txs.get_mut(branch) else {
            return;
        };
        let to = resp.headers.get("To").unwrap_or_default();
        let to_tag = NameAddr::parse(to)
            .ok()
            .and_then(|n| n.tag().map(str::to_owned))
            .unwrap_or_default();
        let (call, dest) = (tx.call, tx.dest);
        let branch = branch.to_owned();
        match tx.response(now, &timers, resp.status, to, &to_tag) {
            InviteClientAction::Ignore => {}
            InviteClientAction::Provisional => {
                self.event(Event::OutboundProgress {
                    call,
                    status: resp.status,
                });
                let wanted = self
                    .calls
                    .get_mut(&call)
                    .and_then(|c| c.outbound.as_mut())
                    .filter(|o| o.cancel == CancelState::Wanted);
                if let Some(o) = wanted {
                    o.cancel = CancelState::Sent;
                    self.send_cancel(now, call, &branch);
                }
            }
            InviteClientAction::Failed { ack } => {
                self.transmit(dest, ack);
                self.outbound_failed(now, call, resp.status);
            }
            InviteClientAction::Reack(ack) => {
                if !ack.is_empty() {
                    self.transmit(dest, ack);
                }
            }
            InviteClientAction::Accepted => self.on_outbound_answer(now, call, &branch, resp),
            InviteClientAction::Fork { new } => self.on_forked_answer(now, &branch, resp, new),
        }
    }

    /// The first 2xx to an outbound INVITE: confirm the dialog, ACK, report (§13.2.2.4).
    fn on_outbound_answer(
        &mut self,
        now: Instant,
        call: CallHandle,
        branch: &str,
        resp: &Response,
    ) {
        let via = self.config.via_sent_by();
        let ack_branch = self.ids.branch();
        let Some(tx) = self.invite_txs.get_mut(branch) else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        c.dialog.confirm(resp);
        let ack = c.dialog.ack(
            tx.invite.cseq,
            &RequestParts {
                via_sent_by: &via,
                branch: &ack_branch,
                user_agent: &self.config.user_agent,
                headers: &[],
            },
        );
        tx.set_ack(ack.clone());
        c.state = CallState::Established;
        let mut cancelled = false;
        if let Some(o) = &mut c.outbound {
            o.ring_until = None;
            cancelled = o.cancel != CancelState::None;
        }
        let dest = c.dialog.peer;
        self.dialogs
            .insert((c.dialog.call_id.clone(), c.dialog.local_tag.clone()), call);
        self.transmit(dest, ack);
        if cancelled {
            // The 2xx crossed our CANCEL: the session exists, so end it right away (§15).
            self.send_bye(now, call, false);
            self.outbound_failed(now, call, 487);
        } else {
            let sdp_answer = (!resp.body.is_empty()).then(|| resp.body.clone());
            self.event(Event::OutboundAnswered { call, sdp_answer });
        }
    }

    /// A 2xx from a second fork of our INVITE (§13.2.2.4): acknowledge it and, the first time,
    /// end that extra session with an unreported BYE.
    fn on_forked_answer(&mut self, now: Instant, branch: &str, resp: &Response, new: bool) {
        let via = self.config.via_sent_by();
        let ack_branch = self.ids.branch();
        let Some(tx) = self.invite_txs.get(branch) else {
            return;
        };
        let (call, dest, cseq) = (tx.call, tx.dest, tx.invite.cseq);
        let mut dialog = Dialog::outgoing(&tx.invite, dest);
        dialog.confirm(resp);
        let ua = self.config.user_agent.clone();
        let ack = dialog.ack(
            cseq,
            &RequestParts {
                via_sent_by: &via,
                branch: &ack_branch,
                user_agent: &ua,
                headers: &[],
            },
        );
        self.transmit(dest, ack);
        if new {
            let bye_branch = self.ids.branch();
            let bye = dialog.request("BYE", &via, &bye_branch, &ua);
            let tx = ClientTx::start(
                now,
                &self.config.timers,
                self.config.reliable(),
                ClientPurpose::Bye {
                    call,
                    report: false,
                },
                Method::Bye,
                dest,
                bye.clone(),
            );
            self.client_txs.insert(bye_branch, tx);
            self.transmit(dest, bye);
        }
    }

    fn bye_finished(&mut self, now: Instant, call: CallHandle, report: bool, outcome: ByeOutcome) {
        if report && self.calls.contains_key(&call) {
            self.event(Event::ByeResult { call, outcome });
            self.end_call(now, call, EndReason::LocalBye);
        }
    }

    // ----- timers -------------------------------------------------------------------------

    fn on_timeout(&mut self, now: Instant) {
        let timers = self.config.timers;
        let mut done = Vec::new();
        let mut sends = Vec::new();
        for (key, tx) in &mut self.server_txs {
            let result = match tx {
                ServerTx::Invite(t) => t.timeout(now, &timers),
                ServerTx::NonInvite(t) => t.timeout(now),
            };
            match result {
                ServerTimeout::Idle => {}
                ServerTimeout::Retransmit(to, bytes) => sends.push((to, bytes)),
                ServerTimeout::Terminated => done.push(key.clone()),
            }
        }
        for key in done {
            if let Some(tx) = self.server_txs.remove(&key) {
                self.ledger.transaction_ended(tx.peer().ip());
            }
        }

        let mut finished = Vec::new();
        let mut gone = Vec::new();
        for (branch, tx) in &mut self.client_txs {
            match tx.timeout(now, &timers) {
                ClientTimeout::Idle => {}
                ClientTimeout::Retransmit(to, bytes) => sends.push((to, bytes)),
                ClientTimeout::TimedOut => {
                    finished.push(tx.purpose);
                    gone.push(branch.clone());
                }
                ClientTimeout::Terminated => gone.push(branch.clone()),
            }
        }
        for branch in gone {
            self.client_txs.remove(&branch);
        }

        let mut invites_failed = Vec::new();
        let mut gone = Vec::new();
        for (branch, tx) in &mut self.invite_txs {
            match tx.timeout(now) {
                ClientTimeout::Idle => {}
                ClientTimeout::Retransmit(to, bytes) => sends.push((to, bytes)),
                ClientTimeout::TimedOut => {
                    invites_failed.push(tx.call);
                    gone.push(branch.clone());
                }
                ClientTimeout::Terminated => gone.push(branch.clone()),
            }
        }
        for branch in gone {
            self.invite_txs.remove(&branch);
        }

        let mut ack_timeouts = Vec::new();
        let mut unanswered = Vec::new();
        let mut ring_timeouts = Vec::new();
        for (call, c) in &mut self.calls {
            if c.answer_by.is_some_and(|t| now >= t) {
                unanswered.push((*call, c.state));
            }
            if let Some(o) = &mut c.outbound
                && o.ring_until.is_some_and(|t| now >= t)
            {
                o.ring_until = None;
                ring_timeouts.push(*call);
            }
            let Some(w) = &mut c.ack_wait else { continue };
            if now >= w.give_up {
                ack_timeouts.push(*call);
            } else if now >= w.retransmit.next {
                w.retransmit.advance(now, &timers);
                sends.push((c.dialog.peer, w.response.clone()));
            }
        }
        for (to, bytes) in sends {
            self.transmit(to, bytes);
        }
        for purpose in finished {
            match purpose {
                ClientPurpose::Bye { call, report } => {
                    self.bye_finished(now, call, report, ByeOutcome::Timeout);
                }
                // §8.1.3.1: a transaction timeout counts as 408.
                other => self.client_finished(now, other, 408),
            }
        }
        invites_failed.sort();
        for call in invites_failed {
            // Timer B, or no final response 64·T1 after our CANCEL.
            self.outbound_failed(now, call, 408);
        }
        ring_timeouts.sort();
        for call in ring_timeouts {
            self.start_cancel(now, call, EndReason::Unanswered);
        }
        unanswered.sort_by_key(|(call, _)| *call);
        for (call, state) in unanswered {
            let Some(key) = self.calls.get(&call).and_then(|c| c.pending_invite.clone()) else {
                continue;
            };
            if state == CallState::Offered {
                self.final_to_pending(now, call, &key, 480, "Temporarily Unavailable");
                self.end_call(now, call, EndReason::Unanswered);
            } else {
                self.final_to_pending(now, call, &key, 500, "Server Internal Error");
            }
        }
        ack_timeouts.sort();
        for call in ack_timeouts {
            // §13.3.1.4: confirm the dialog and end the session with BYE; the call is over for the
            // application now, the BYE runs on unreported.
            if let Some(c) = self.calls.get_mut(&call) {
                c.ack_wait = None;
            }
            self.send_bye(now, call, false);
            self.end_call(now, call, EndReason::AckTimeout);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let servers = self
            .server_txs
            .values()
            .filter_map(ServerTx::deadline)
            .min();
        let clients = self
            .client_txs
            .values()
            .filter_map(ClientTx::deadline)
            .min();
        let invites = self
            .invite_txs
            .values()
            .filter_map(InviteClientTx::deadline)
            .min();
        let calls = self.calls.values().filter_map(Call::deadline).min();
        earliest(earliest(earliest(servers, clients), invites), calls)
    }

    // ----- output helpers -----------------------------------------------------------------

    /// Answers a request with a final response and keeps it in a server transaction so that
    /// retransmissions are answered from cache (INVITE: until ACK/timer H; others: timer J).
    fn respond(&mut self, now: Instant, from: SocketAddr, req: &Request, key: TxKey, reply: Reply) {
        let timers = self.config.timers;
        let tag = match req.to.tag() {
            Some(_) => None,
            None => Some(self.ids.tag()),
        };
        let status = reply.status;
        let mut builder = ResponseBuilder::new(&req.headers, from, status, &reply.reason)
            .local_tag(tag.as_deref());
        for (name, value) in reply.extra {
            builder = builder.header(name, value);
        }
        if status == 200 || status >= 400 {
            builder = builder.header("Server", self.config.user_agent.clone());
        }
        let bytes = builder.build();
        let tx = if req.method == Method::Invite {
            let mut tx = InviteServerTx::proceeding(from, req.clone(), None, Vec::new());
            tx.final_response(now, &timers, self.config.reliable(), status, bytes.clone());
            ServerTx::Invite(Box::new(tx))
        } else {
            ServerTx::NonInvite(NonInviteServerTx {
                peer: from,
                response: bytes.clone(),
                until: now + timers.timer_j(),
            })
        };
        self.insert_server_tx(key, tx);
        self.transmit(from, bytes);
    }

    fn transmit(&mut self, to: SocketAddr, data: Vec<u8>) {
        self.outputs
            .push_back(Output::Transmit(Transmit { to, data }));
    }

    fn event(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }
}

/// Headers the core writes itself on an outbound INVITE (compact forms are expanded before the
/// check); `Route` is allowed there as a pre-loaded route.
const INVITE_OWNED: &[&str] = &[
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Max-Forwards",
    "Contact",
    "Content-Type",
    "Content-Length",
    "Record-Route",
];

/// Headers the core writes itself on a REFER (its route comes from the dialog).
const REFER_OWNED: &[&str] = &[
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Max-Forwards",
    "Contact",
    "Content-Type",
    "Content-Length",
    "Record-Route",
    "Route",
    "Refer-To",
    "Referred-By",
];

fn has_crlf(s: &str) -> bool {
    s.contains(['\r', '\n'])
}

/// Checks application-supplied headers: token names, no line breaks in values (no header
/// injection), none of the headers the core writes itself.
fn check_headers(headers: &[(String, String)], owned: &[&str]) -> Result<(), CommandError> {
    for (name, value) in headers {
        if !message::is_token(name) {
            return Err(CommandError::InvalidArgument("header name is not a token"));
        }
        if has_crlf(value) {
            return Err(CommandError::InvalidArgument(
                "header value contains CR or LF",
            ));
        }
        let long = message::expand_compact(name);
        if owned.iter().any(|o| o.eq_ignore_ascii_case(long)) {
            return Err(CommandError::InvalidArgument(
                "header is written by the core",
            ));
        }
    }
    Ok(())
}

/// The status code of a `message/sipfrag` NOTIFY body (`SIP/2.0 180 Ringing`, RFC 3420).
fn sipfrag_status(req: &Request) -> Option<u16> {
    if req.content_type.as_deref() != Some("message/sipfrag") {
        return None;
    }
    let text = std::str::from_utf8(&req.body).ok()?;
    let line = text.trim_start().lines().next()?;
    let rest = line.strip_prefix("SIP/2.0 ")?;
    let code = rest.get(..3)?;
    let after = rest.get(3..)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) || !(after.is_empty() || after.starts_with(' ')) {
        return None;
    }
    code.parse().ok().filter(|c| (100..=699).contains(c))
}

/// The header a trusted proxy puts the caller's identity in (RFC 3325).
const ASSERTED_IDENTITY: &str = "P-Asserted-Identity";

/// The caller's number or user: P-Asserted-Identity first when the request comes from a trusted
/// trunk (RFC 3325 §5: an assertion is only worth what its sender's trust is), else From.
fn caller_of(req: &Request, trusted: bool) -> String {
    let asserted = req
        .headers
        .list(ASSERTED_IDENTITY)
        .into_iter()
        .filter(|_| trusted)
        .filter_map(|v| NameAddr::parse(v).ok())
        .find_map(|n| n.uri.user());
    normalise_number(asserted.or_else(|| req.from.uri.user()).unwrap_or_default())
}

/// Strips RFC 3966 visual separators from something that looks like a phone number, so that
/// `+1-415-555-0100` and `+14155550100` route the same; other users are returned unchanged.
fn normalise_number(user: String) -> String {
    let looks_numeric = !user.is_empty()
        && user
            .chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_digit() || "-.() ".contains(c) || (i == 0 && c == '+'))
        && user.chars().any(|c| c.is_ascii_digit());
    if looks_numeric {
        user.chars()
            .filter(|c| *c == '+' || c.is_ascii_digit())
            .collect()
    } else {
        user
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_uac;
