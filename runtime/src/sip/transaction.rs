//! Transaction state machines (RFC 3261 §17, with the INVITE "Accepted" states of RFC 6026).
//!
//! Server side: INVITE and non-INVITE server transactions. Client side: the non-INVITE client
//! transaction (BYE, REFER, CANCEL; timers E/F/K) and the INVITE client transaction of outbound
//! calls (timers A/B/D/M), which also builds the ACK for a non-2xx final response itself.
//! Over a reliable transport (TCP) client transactions never retransmit and timers D and K are
//! zero (§17.1.1.2, §17.1.2.2).
//!
//! Each machine owns the bytes it may have to send again and its deadlines; the core asks it what
//! to do on a retransmitted request, an ACK, a response or a timeout, and sends whatever it returns.
//! Terminated machines are removed by the core, which is what keeps memory bounded.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Instant;

use super::CallHandle;
use super::message::{Method, Request};
use super::timers::{Backoff, TimerConfig, earliest};

/// RFC 3261 §8.1.1.7: branches starting with this cookie are unique per transaction.
pub(crate) const MAGIC_COOKIE: &str = "z9hG4bK";

/// The method part of a server transaction key: ACK matches the INVITE it acknowledges.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum TxMethod {
    Invite,
    Cancel,
    Other(String),
}

/// Identifies a server transaction (RFC 3261 §17.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TxKey {
    /// The branch, or for RFC 2543 peers without the magic cookie a digest of the fields §17.2.3
    /// falls back to (Request-URI, Call-ID, From tag, CSeq number, top Via).
    branch: String,
    sent_by: String,
    method: TxMethod,
}

impl TxKey {
    /// The key of the transaction `req` belongs to; ACK and CANCEL map as described in §17.2.3
    /// and §9.2 via [`Self::for_request_as`].
    pub fn for_request(req: &Request) -> Self {
        let method = match &req.method {
            Method::Invite | Method::Ack => TxMethod::Invite,
            Method::Cancel => TxMethod::Cancel,
            other => TxMethod::Other(other.as_str().to_owned()),
        };
        Self::for_request_as(req, method)
    }

    /// The key of the INVITE transaction a CANCEL targets (same branch and sent-by, §9.2).
    pub fn invite_of_cancel(req: &Request) -> Self {
        Self::for_request_as(req, TxMethod::Invite)
    }

    fn for_request_as(req: &Request, method: TxMethod) -> Self {
        let branch = match req.via.branch() {
            Some(b) if b.len() > MAGIC_COOKIE.len() && b.starts_with(MAGIC_COOKIE) => b.to_owned(),
            _ => format!(
                "2543|{}|{}|{}|{}|{}",
                req.uri_text,
                req.call_id,
                req.from.tag().unwrap_or_default(),
                req.cseq.seq,
                req.via.sent_by()
            ),
        };
        Self {
            branch,
            sent_by: req.via.sent_by(),
            method,
        }
    }
}

/// A server transaction.
#[derive(Debug)]
pub(crate) enum ServerTx {
    /// Boxed: it keeps the whole INVITE to build the final response.
    Invite(Box<InviteServerTx>),
    NonInvite(NonInviteServerTx),
}

impl ServerTx {
    /// Where the request came from (and responses go).
    pub fn peer(&self) -> SocketAddr {
        match self {
            Self::Invite(tx) => tx.peer,
            Self::NonInvite(tx) => tx.peer,
        }
    }

    /// What to send when the request arrives again.
    pub fn retransmission(&self) -> Option<(SocketAddr, Vec<u8>)> {
        match self {
            Self::Invite(tx) => tx.retransmission().map(|b| (tx.peer, b)),
            Self::NonInvite(tx) => Some((tx.peer, tx.response.clone())),
        }
    }

    /// The next instant this transaction needs attention.
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            Self::Invite(tx) => tx.deadline(),
            Self::NonInvite(tx) => Some(tx.until),
        }
    }
}

/// What an expired server transaction timer asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ServerTimeout {
    /// Nothing due yet.
    Idle,
    /// Send these bytes again (timer G).
    Retransmit(SocketAddr, Vec<u8>),
    /// The transaction is over (timers H, I, J, L); remove it.
    Terminated,
}

/// States of an INVITE server transaction, each holding what it needs (rustls style).
#[derive(Debug)]
pub(crate) enum InviteServerState {
    /// Provisional responses sent; waiting for the application's final answer.
    Proceeding { last_provisional: Vec<u8> },
    /// Non-2xx final sent; retransmitted on timer G (unreliable transports only, §17.2.1)
    /// until ACK or timer H.
    Completed {
        response: Vec<u8>,
        retransmit: Option<Backoff>,
        give_up: Instant,
    },
    /// ACK received; absorbing ACK retransmissions until timer I.
    Confirmed { until: Instant },
    /// 2xx sent (RFC 6026); the dialog retransmits the 2xx, we absorb INVITE retransmissions.
    Accepted { until: Instant },
}

/// An INVITE server transaction.
#[derive(Debug)]
pub(crate) struct InviteServerTx {
    /// Where the INVITE came from: every response goes there.
    pub peer: SocketAddr,
    /// The INVITE, kept to build the final response later.
    pub request: Request,
    /// The call this INVITE created or modifies, while the application owes an answer.
    pub call: Option<CallHandle>,
    /// Current state.
    pub state: InviteServerState,
}

impl InviteServerTx {
    /// A transaction that has sent `provisional` (normally 100 Trying).
    pub fn proceeding(
        peer: SocketAddr,
        request: Request,
        call: Option<CallHandle>,
        provisional: Vec<u8>,
    ) -> Self {
        Self {
            peer,
            request,
            call,
            state: InviteServerState::Proceeding {
                last_provisional: provisional,
            },
        }
    }

    /// Whether the application may still send a response.
    pub fn is_proceeding(&self) -> bool {
        matches!(self.state, InviteServerState::Proceeding { .. })
    }

    /// Records a newer provisional response (e.g. 180) for retransmitted INVITEs.
    pub fn provisional(&mut self, bytes: Vec<u8>) {
        if let InviteServerState::Proceeding { last_provisional } = &mut self.state {
            *last_provisional = bytes;
        }
    }

    /// Moves to the state that follows sending a final response (over a reliable transport
    /// when `reliable`: a non-2xx final is then not retransmitted).
    pub fn final_response(
        &mut self,
        now: Instant,
        timers: &TimerConfig,
        reliable: bool,
        status: u16,
        bytes: Vec<u8>,
    ) {
        self.call = None;
        self.state = if (200..300).contains(&status) {
            InviteServerState::Accepted {
                until: now + timers.timer_l(),
            }
        } else {
            InviteServerState::Completed {
                response: bytes,
                retransmit: (!reliable).then(|| Backoff::start(now, timers)),
                give_up: now + timers.timer_h(),
            }
        };
    }

    /// Handles an ACK matching this transaction; returns whether it was absorbed here.
    pub fn ack(&mut self, now: Instant, timers: &TimerConfig) -> bool {
        match self.state {
            InviteServerState::Completed { .. } => {
                self.state = InviteServerState::Confirmed {
                    until: now + timers.timer_i(),
                };
                true
            }
            InviteServerState::Confirmed { .. } => true,
            _ => false,
        }
    }

    fn retransmission(&self) -> Option<Vec<u8>> {
        match &self.state {
            InviteServerState::Proceeding { last_provisional } => Some(last_provisional.clone()),
            InviteServerState::Completed { response, .. } => Some(response.clone()),
            InviteServerState::Confirmed { .. } | InviteServerState::Accepted { .. } => None,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match &self.state {
            InviteServerState::Proceeding { .. } => None,
            InviteServerState::Completed {
                retransmit,
                give_up,
                ..
            } => Some(
                retransmit
                    .as_ref()
                    .map_or(*give_up, |r| r.next.min(*give_up)),
            ),
            InviteServerState::Confirmed { until } | InviteServerState::Accepted { until } => {
                Some(*until)
            }
        }
    }

    /// Runs the timers that are due at `now`.
    pub fn timeout(&mut self, now: Instant, timers: &TimerConfig) -> ServerTimeout {
        match &mut self.state {
            InviteServerState::Proceeding { .. } => ServerTimeout::Idle,
            InviteServerState::Completed {
                response,
                retransmit,
                give_up,
            } => {
                if now >= *give_up {
                    ServerTimeout::Terminated
                } else if let Some(retransmit) = retransmit.as_mut().filter(|r| now >= r.next) {
                    retransmit.advance(now, timers);
                    ServerTimeout::Retransmit(self.peer, response.clone())
                } else {
                    ServerTimeout::Idle
                }
            }
            InviteServerState::Confirmed { until } | InviteServerState::Accepted { until } => {
                if now >= *until {
                    ServerTimeout::Terminated
                } else {
                    ServerTimeout::Idle
                }
            }
        }
    }
}

/// A non-INVITE server transaction. The core answers every non-INVITE request at once, so the
/// machine starts in Completed: it only replays the response until timer J.
#[derive(Debug)]
pub(crate) struct NonInviteServerTx {
    pub peer: SocketAddr,
    pub response: Vec<u8>,
    pub until: Instant,
}

impl NonInviteServerTx {
    /// Runs timer J.
    pub fn timeout(&self, now: Instant) -> ServerTimeout {
        if now >= self.until {
            ServerTimeout::Terminated
        } else {
            ServerTimeout::Idle
        }
    }
}

/// Why the core sent a non-INVITE request as a client: decides what a final response or a
/// timeout means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientPurpose {
    /// BYE for `call`; `report` is false when the call already ended (2xx never acknowledged,
    /// or a forked 2xx we do not want).
    Bye { call: CallHandle, report: bool },
    /// REFER (blind transfer) in `call`'s dialog; the final response is reported.
    Refer { call: CallHandle },
    /// CANCEL of `call`'s outbound INVITE; its response is not reported (the INVITE's is).
    Cancel { call: CallHandle },
}

/// States of a non-INVITE client transaction (§17.1.2).
#[derive(Debug)]
pub(crate) enum ClientState {
    /// Request sent; retransmitting on timer E, giving up on timer F.
    Trying {
        retransmit: Backoff,
        give_up: Instant,
    },
    /// A provisional arrived; retransmitting every T2 until timer F.
    Proceeding {
        retransmit: Backoff,
        give_up: Instant,
    },
    /// Final response received; absorbing retransmissions until timer K.
    Completed { until: Instant },
}

/// A non-INVITE client transaction.
#[derive(Debug)]
pub(crate) struct ClientTx {
    pub purpose: ClientPurpose,
    pub method: Method,
    pub dest: SocketAddr,
    pub request: Vec<u8>,
    /// Sent over a reliable transport: no timer E retransmissions, timer K is zero (§17.1.2.2).
    pub reliable: bool,
    pub state: ClientState,
}

/// What an expired client transaction timer asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClientTimeout {
    Idle,
    Retransmit(SocketAddr, Vec<u8>),
    /// Timer F: no final response; report a timeout and remove.
    TimedOut,
    /// Timer K: remove quietly.
    Terminated,
}

impl ClientTx {
    /// A transaction whose request was just sent at `now` (over a reliable transport when
    /// `reliable`).
    pub fn start(
        now: Instant,
        timers: &TimerConfig,
        reliable: bool,
        purpose: ClientPurpose,
        method: Method,
        dest: SocketAddr,
        request: Vec<u8>,
    ) -> Self {
        Self {
            purpose,
            method,
            dest,
            request,
            reliable,
            state: ClientState::Trying {
                retransmit: Backoff::start(now, timers),
                give_up: now + timers.timer_f(),
            },
        }
    }

    /// Feeds a response; returns the status when it is the first final response.
    pub fn response(&mut self, now: Instant, timers: &TimerConfig, status: u16) -> Option<u16> {
        match &mut self.state {
            ClientState::Trying {
                retransmit,
                give_up,
            } if status < 200 => {
                let mut r = *retransmit;
                r.at_t2(now, timers);
                self.state = ClientState::Proceeding {
                    retransmit: r,
                    give_up: *give_up,
                };
                None
            }
            ClientState::Trying { .. } | ClientState::Proceeding { .. } if status >= 200 => {
                self.state = ClientState::Completed {
                    until: now + timers.timer_k(self.reliable),
                };
                Some(status)
            }
            _ => None,
        }
    }

    /// The next instant this transaction needs attention.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            ClientState::Trying {
                retransmit,
                give_up,
            }
            | ClientState::Proceeding {
                retransmit,
                give_up,
            } => {
                let retransmit = (!self.reliable).then_some(retransmit.next);
                earliest(retransmit, Some(*give_up))
            }
            ClientState::Completed { until } => Some(*until),
        }
    }

    /// Runs the timers that are due at `now`.
    pub fn timeout(&mut self, now: Instant, timers: &TimerConfig) -> ClientTimeout {
        match &mut self.state {
            ClientState::Trying {
                retransmit,
                give_up,
            } => {
                if now >= *give_up {
                    ClientTimeout::TimedOut
                } else if !self.reliable && now >= retransmit.next {
                    retransmit.advance(now, timers);
                    ClientTimeout::Retransmit(self.dest, self.request.clone())
                } else {
                    ClientTimeout::Idle
                }
            }
            ClientState::Proceeding {
                retransmit,
                give_up,
            } => {
                if now >= *give_up {
                    ClientTimeout::TimedOut
                } else if !self.reliable && now >= retransmit.next {
                    retransmit.at_t2(now, timers);
                    ClientTimeout::Retransmit(self.dest, self.request.clone())
                } else {
                    ClientTimeout::Idle
                }
            }
            ClientState::Completed { until } => {
                if now >= *until {
                    ClientTimeout::Terminated
                } else {
                    ClientTimeout::Idle
                }
            }
        }
    }
}

/// The fields of an INVITE we sent that its CANCEL and its non-2xx ACK must repeat
/// (RFC 3261 §9.1, §17.1.1.3), and that the UAC dialog starts from (§12.1.2).
#[derive(Debug, Clone)]
pub(crate) struct OutgoingInvite {
    pub request_uri: String,
    /// The whole top Via value, branch included.
    pub via: String,
    /// From header value, our tag included.
    pub from: String,
    pub local_tag: String,
    /// To header value as the application gave it (no tag).
    pub to: String,
    pub call_id: String,
    pub cseq: u32,
    /// Route headers the application put on the INVITE (pre-loaded route); CANCEL and ACK
    /// carry the same ones.
    pub routes: Vec<String>,
    pub user_agent: String,
}

impl OutgoingInvite {
    /// Prints the INVITE itself with the given Contact, Allow, extra headers and SDP offer.
    pub fn invite(
        &self,
        contact: &str,
        allow: &str,
        extra: &[(String, String)],
        sdp: &[u8],
    ) -> Vec<u8> {
        let mut s = self.head("INVITE", &self.to);
        // Writing into a String cannot fail; results are ignored on purpose.
        let _ = write!(s, "Contact: {contact}\r\nAllow: {allow}\r\n");
        for (name, value) in extra {
            if !name.eq_ignore_ascii_case("Route") {
                let _ = write!(s, "{name}: {value}\r\n");
            }
        }
        let _ = write!(
            s,
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n",
            sdp.len()
        );
        let mut out = s.into_bytes();
        out.extend_from_slice(sdp);
        out
    }

    /// The CANCEL for this INVITE (§9.1): same Request-URI, Via, From, To, Call-ID, Route and
    /// CSeq number.
    pub fn cancel(&self) -> Vec<u8> {
        let mut s = self.head("CANCEL", &self.to);
        s.push_str("Content-Length: 0\r\n\r\n");
        s.into_bytes()
    }

    /// The ACK for a non-2xx final response whose To header is `to` (§17.1.1.3).
    pub fn ack_for_failure(&self, to: &str) -> Vec<u8> {
        let mut s = self.head("ACK", to);
        s.push_str("Content-Length: 0\r\n\r\n");
        s.into_bytes()
    }

    fn head(&self, method: &str, to: &str) -> String {
        let mut s = String::with_capacity(512);
        let _ = write!(
            s,
            "{method} {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\n",
            self.request_uri, self.via
        );
        for r in &self.routes {
            let _ = write!(s, "Route: {r}\r\n");
        }
        let _ = write!(
            s,
            "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {} {method}\r\nUser-Agent: {}\r\n",
            self.from, self.call_id, self.cseq, self.user_agent
        );
        s
    }
}

/// States of an INVITE client transaction (§17.1.1, with the "Accepted" state of RFC 6026).
#[derive(Debug)]
pub(crate) enum InviteClientState {
    /// INVITE sent; retransmitted on timer A (unreliable transports), given up on timer B.
    Calling {
        retransmit: Backoff,
        give_up: Instant,
    },
    /// A provisional arrived: no more retransmissions. `give_up` is set once a CANCEL was sent:
    /// without a final response 64·T1 later the INVITE counts as cancelled (§9.1).
    Proceeding { give_up: Option<Instant> },
    /// Non-2xx final received and acknowledged; retransmissions of it are acknowledged again
    /// until timer D.
    Completed { ack: Vec<u8>, until: Instant },
    /// 2xx received; the core acknowledged it (the ACK is its own transaction, kept here so that
    /// 2xx retransmissions get it again) until timer M.
    Accepted {
        until: Instant,
        /// To tag of the 2xx that made the dialog.
        remote_tag: String,
        ack: Vec<u8>,
        /// To tags of other 2xx (forking) that the core acknowledged and ended with BYE.
        forks: Vec<String>,
    },
}

/// What a response means for an INVITE client transaction; the core acts on it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InviteClientAction {
    /// Nothing to do (a stray or late response).
    Ignore,
    /// A provisional response.
    Provisional,
    /// The first non-2xx final: send `ack`, report the failure.
    Failed { ack: Vec<u8> },
    /// A retransmitted final response: send this ACK again.
    Reack(Vec<u8>),
    /// The first 2xx: the core builds the dialog and the ACK and hands it to [`InviteClientTx::set_ack`].
    Accepted,
    /// A 2xx from another fork (To tag `new` is true the first time it is seen).
    Fork { new: bool },
}

/// Most forked 2xx tags remembered per INVITE; beyond that each retransmission gets a new BYE.
const MAX_FORKS: usize = 8;

/// An INVITE client transaction for an outbound call.
#[derive(Debug)]
pub(crate) struct InviteClientTx {
    pub call: CallHandle,
    pub invite: OutgoingInvite,
    pub dest: SocketAddr,
    request: Vec<u8>,
    /// Sent over a reliable transport: no timer A, timer D is zero.
    reliable: bool,
    pub state: InviteClientState,
}

impl InviteClientTx {
    /// A transaction whose INVITE (`request`) was just sent at `now`.
    pub fn start(
        now: Instant,
        timers: &TimerConfig,
        reliable: bool,
        call: CallHandle,
        invite: OutgoingInvite,
        dest: SocketAddr,
        request: Vec<u8>,
    ) -> Self {
        Self {
            call,
            invite,
            dest,
            request,
            reliable,
            state: InviteClientState::Calling {
                retransmit: Backoff::start(now, timers),
                give_up: now + timers.timer_b(),
            },
        }
    }

    /// Whether no response arrived yet (a CANCEL must wait for a provisional, §9.1).
    pub fn is_calling(&self) -> bool {
        matches!(self.state, InviteClientState::Calling { .. })
    }

    /// Whether a provisional arrived and no final one yet.
    pub fn is_proceeding(&self) -> bool {
        matches!(self.state, InviteClientState::Proceeding { .. })
    }

    /// Records that a CANCEL was sent at `now`: without a final response within 64·T1 the
    /// transaction gives up (§9.1).
    pub fn cancel_sent(&mut self, now: Instant, timers: &TimerConfig) {
        if let InviteClientState::Proceeding { give_up } = &mut self.state {
            *give_up = Some(now + timers.t1x64());
        }
    }

    /// Keeps the ACK the core sent for the first 2xx, for 2xx retransmissions.
    pub fn set_ack(&mut self, bytes: Vec<u8>) {
        if let InviteClientState::Accepted { ack, .. } = &mut self.state {
            *ack = bytes;
        }
    }

    /// Feeds a response with status `status` whose To header is `to` (`to_tag` its tag).
    pub fn response(
        &mut self,
        now: Instant,
        timers: &TimerConfig,
        status: u16,
        to: &str,
        to_tag: &str,
    ) -> InviteClientAction {
        let open = matches!(
            self.state,
            InviteClientState::Calling { .. } | InviteClientState::Proceeding { .. }
        );
        match (&mut self.state, status) {
            (InviteClientState::Calling { .. }, 100..=199) => {
                self.state = InviteClientState::Proceeding { give_up: None };
                InviteClientAction::Provisional
            }
            (InviteClientState::Proceeding { .. }, 100..=199) => InviteClientAction::Provisional,
            (_, 200..=299) if open => {
                self.state = InviteClientState::Accepted {
                    until: now + timers.timer_m(),
                    remote_tag: to_tag.to_owned(),
                    ack: Vec::new(),
                    forks: Vec::new(),
                };
                InviteClientAction::Accepted
            }
            (
                InviteClientState::Accepted {
                    remote_tag,
                    ack,
                    forks,
                    ..
                },
                200..=299,
            ) => {
                if remote_tag == to_tag {
                    InviteClientAction::Reack(ack.clone())
                } else if forks.iter().any(|f| f == to_tag) {
                    InviteClientAction::Fork { new: false }
                } else {
                    if forks.len() < MAX_FORKS {
                        forks.push(to_tag.to_owned());
                    }
                    InviteClientAction::Fork { new: true }
                }
            }
            (_, 300..=699) if open => {
                let ack = self.invite.ack_for_failure(to);
                self.state = InviteClientState::Completed {
                    ack: ack.clone(),
                    until: now + timers.timer_d(self.reliable),
                };
                InviteClientAction::Failed { ack }
            }
            (InviteClientState::Completed { ack, .. }, 300..=699) => {
                InviteClientAction::Reack(ack.clone())
            }
            _ => InviteClientAction::Ignore,
        }
    }

    /// The next instant this transaction needs attention.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            InviteClientState::Calling {
                retransmit,
                give_up,
            } => earliest((!self.reliable).then_some(retransmit.next), Some(*give_up)),
            InviteClientState::Proceeding { give_up } => *give_up,
            InviteClientState::Completed { until, .. }
            | InviteClientState::Accepted { until, .. } => Some(*until),
        }
    }

    /// Runs the timers that are due at `now`: A (retransmit), B / CANCEL give-up (`TimedOut`),
    /// D and M (`Terminated`).
    pub fn timeout(&mut self, now: Instant) -> ClientTimeout {
        match &mut self.state {
            InviteClientState::Calling {
                retransmit,
                give_up,
            } => {
                if now >= *give_up {
                    ClientTimeout::TimedOut
                } else if !self.reliable && now >= retransmit.next {
                    retransmit.double(now);
                    ClientTimeout::Retransmit(self.dest, self.request.clone())
                } else {
                    ClientTimeout::Idle
                }
            }
            InviteClientState::Proceeding { give_up } => match give_up {
                Some(t) if now >= *t => ClientTimeout::TimedOut,
                _ => ClientTimeout::Idle,
            },
            InviteClientState::Completed { until, .. }
            | InviteClientState::Accepted { until, .. } => {
                if now >= *until {
                    ClientTimeout::Terminated
                } else {
                    ClientTimeout::Idle
                }
            }
        }
    }
}
