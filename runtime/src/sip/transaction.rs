//! Transaction state machines (RFC 3261 §17, with the INVITE "Accepted" state of RFC 6026).
//!
//! Each machine owns the bytes it may have to send again and its deadlines; the core asks it what
//! to do on a retransmitted request, an ACK, a response or a timeout, and sends whatever it returns.
//! Terminated machines are removed by the core, which is what keeps memory bounded.

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
    /// Non-2xx final sent; retransmitted on timer G until ACK or timer H.
    Completed {
        response: Vec<u8>,
        retransmit: Backoff,
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

    /// Moves to the state that follows sending a final response.
    pub fn final_response(
        &mut self,
        now: Instant,
        timers: &TimerConfig,
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
                retransmit: Backoff::start(now, timers),
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
            } => Some(retransmit.next.min(*give_up)),
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
                } else if now >= retransmit.next {
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

/// Why the core sent a request as a client: decides what a final response or a timeout means.
///
/// Outbound INVITE (transfer by re-origination) and REFER (blind transfer) will become variants
/// here; REFER reuses the non-INVITE machine below, INVITE needs its own (timers A–D).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientPurpose {
    /// BYE for `call`; `report` is false when the call already ended (2xx never acknowledged).
    Bye { call: CallHandle, report: bool },
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
    /// A transaction whose request was just sent at `now`.
    pub fn start(
        now: Instant,
        timers: &TimerConfig,
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
                    until: now + timers.timer_k(),
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
            } => earliest(Some(retransmit.next), Some(*give_up)),
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
                } else if now >= retransmit.next {
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
                } else if now >= retransmit.next {
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
