//! The I/O side of a call: sockets, tasks and timers around the sans-IO [`crate::sip`] core and
//! [`crate::media`] primitives.
//!
//! - [`endpoint`]: one task per SIP listener owns the socket and its `SipCore`; it routes each
//!   new call by DID, binds the call's RTP port, and spawns the call task.
//! - [`call`]: one task per call answers, waits for the ACK, and runs the IVR on the engine with
//!   an RTP-backed [`crate::engine::CallChannel`].
//! - [`media`]: RTP ports, the per-call media session, the single pacer that sends every call's
//!   frames, and the per-call receive loop that turns RTP into digits.

mod call;
mod endpoint;
pub mod guard;
pub mod media;
mod tcp;

use crate::engine::{IvrEngine, Registry};
use crate::media::library::PromptLibrary;
use media::{MediaDigit, Pacer, RtpPorts};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What a call task tells the SIP endpoint to do.
pub(crate) enum SipCommand {
    /// Send 180 Ringing.
    Ring(crate::sip::CallHandle),
    /// Send 200 OK with this SDP.
    Answer(crate::sip::CallHandle, Vec<u8>),
    /// Send BYE.
    Hangup(crate::sip::CallHandle),
    /// Send REFER to this URI with these extra headers.
    Refer(crate::sip::CallHandle, String, Vec<(String, String)>),
    /// Place an outbound call (a bridged transfer's second leg); its events go to `events`.
    Invite {
        /// The call to place.
        call: crate::sip::OutboundCall,
        /// Where the new leg's events go.
        events: tokio::sync::mpsc::UnboundedSender<CallEvent>,
        /// The new leg's media session.
        session: std::sync::Arc<media::MediaSession>,
        /// The new leg's handle, or why it could not be placed.
        reply: tokio::sync::oneshot::Sender<Result<crate::sip::CallHandle, String>>,
    },
    /// Give up on an outbound call that is still ringing.
    Cancel(crate::sip::CallHandle),
}

/// What the SIP endpoint tells a call task.
#[derive(Debug)]
pub(crate) enum CallEvent {
    /// Our 200 was acknowledged (with the SDP answer when we made the offer).
    Acked {
        /// The ACK's SDP.
        sdp: Option<Vec<u8>>,
    },
    /// A digit from SIP INFO.
    Digit(MediaDigit),
    /// A re-INVITE changed the media (hold, resume, new address).
    Renegotiated,
    /// The final response to our REFER.
    ReferResponse(u16),
    /// An outbound leg was answered, with the callee's SDP.
    OutboundAnswered(Option<Vec<u8>>),
    /// An outbound leg failed with this status.
    OutboundFailed(u16),
    /// A NOTIFY about the transfer: the status the transferee got, and whether it is final.
    TransferProgress {
        /// The sipfrag status.
        status: u16,
        /// Subscription terminated.
        done: bool,
    },
    /// The call is over on the SIP side (BYE, CANCEL, timeout).
    Ended,
}

/// A SIP listen address: `udp:127.0.0.1:5060`, `tcp:[::1]:5060`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// UDP or TCP.
    pub transport: crate::sip::Transport,
    /// The socket address.
    pub addr: SocketAddr,
}

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (transport, addr) = s
            .split_once(':')
            .ok_or_else(|| format!("'{s}': use TRANSPORT:ADDRESS:PORT, e.g. udp:127.0.0.1:5060"))?;
        let transport = match transport.to_ascii_lowercase().as_str() {
            "udp" => crate::sip::Transport::Udp,
            "tcp" => crate::sip::Transport::Tcp,
            other => return Err(format!("'{s}': unknown transport '{other}' (udp or tcp)")),
        };
        let addr: SocketAddr = addr.parse().map_err(|e| {
            format!("'{s}': bad address ({e}); IPv6 goes in brackets: udp:[::1]:5060")
        })?;
        Ok(Listen { transport, addr })
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let transport = match self.transport {
            crate::sip::Transport::Udp => "udp",
            crate::sip::Transport::Tcp => "tcp",
        };
        write!(f, "{transport}:{}", self.addr)
    }
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// SIP listeners.
    pub listen: Vec<Listen>,
    /// RTP port range (inclusive).
    pub rtp_ports: (u16, u16),
    /// The address RTP binds to and SDP announces; default: the first listener's address.
    pub media_ip: Option<IpAddr>,
    /// Calls at once; further INVITEs get 503.
    pub max_calls: usize,
    /// Ring this long (180) before answering.
    pub answer_delay: Duration,
    /// Write each finished call's trace as JSON here.
    pub call_traces: Option<PathBuf>,
    /// Transfer settings.
    pub transfer: crate::config::TransferSection,
    /// Source ACL and rate limit.
    pub guard: guard::GuardConfig,
    /// Whose RTP a call hears and where its RTP may go.
    pub media: media::MediaRules,
    /// End a call whose caller has sent no RTP this long while media is expected (`None`: off).
    pub rtp_timeout: Option<Duration>,
    /// End a call this long after it was answered (`None`: off).
    pub max_duration: Option<Duration>,
}

/// What every task of the server shares.
pub(crate) struct Shared {
    pub config: ServerConfig,
    pub engine: Arc<IvrEngine>,
    pub registry: Arc<Registry>,
    pub prompts: Arc<PromptLibrary>,
    pub speech: Option<Arc<crate::tts::Speech>>,
    pub store: Arc<dyn crate::store::Store>,
    pub ports: RtpPorts,
    pub pacer: Arc<Pacer>,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No listener configured.
    #[error("no SIP listener configured")]
    NoListener,
    /// A listener could not be bound.
    #[error("cannot listen on {listen}: {source}")]
    Bind {
        /// The listener.
        listen: Listen,
        /// Why.
        source: std::io::Error,
    },
    /// The media address is unusable.
    #[error("the media address {0} is unspecified; set a concrete address for RTP and SDP")]
    MediaAddress(IpAddr),
}

/// A bound server, ready to run.
pub struct Server {
    endpoints: Vec<endpoint::Endpoint>,
    local_addrs: Vec<Listen>,
    shared: Arc<Shared>,
}

impl Server {
    /// Binds every listener. Must be called inside a tokio runtime.
    pub async fn bind(
        config: ServerConfig,
        engine: Arc<IvrEngine>,
        registry: Arc<Registry>,
        prompts: Arc<PromptLibrary>,
        speech: Option<Arc<crate::tts::Speech>>,
        store: Arc<dyn crate::store::Store>,
    ) -> Result<Server, ServerError> {
        let first = config.listen.first().ok_or(ServerError::NoListener)?;
        let media_ip = config.media_ip.unwrap_or(first.addr.ip());
        if media_ip.is_unspecified() {
            return Err(ServerError::MediaAddress(media_ip));
        }
        let shared = Arc::new(Shared {
            ports: RtpPorts::new(media_ip, config.rtp_ports.0, config.rtp_ports.1),
            pacer: Arc::new(Pacer::default()),
            config: config.clone(),
            engine,
            registry,
            prompts,
            speech,
            store,
        });
        let mut endpoints = Vec::new();
        let mut local_addrs = Vec::new();
        for listen in &config.listen {
            let guard = Arc::new(std::sync::Mutex::new(guard::Guard::new(
                config.guard.clone(),
            )));
            let bind_err = |source| ServerError::Bind {
                listen: *listen,
                source,
            };
            let (net, local) = match listen.transport {
                crate::sip::Transport::Udp => {
                    let socket = tokio::net::UdpSocket::bind(listen.addr)
                        .await
                        .map_err(bind_err)?;
                    let local = socket.local_addr().map_err(bind_err)?;
                    (endpoint::Net::Udp(socket), local)
                }
                crate::sip::Transport::Tcp => {
                    let listener = tokio::net::TcpListener::bind(listen.addr)
                        .await
                        .map_err(bind_err)?;
                    let local = listener.local_addr().map_err(bind_err)?;
                    (
                        endpoint::Net::Tcp(tcp::TcpHub::start(listener, guard.clone())),
                        local,
                    )
                }
            };
            local_addrs.push(Listen {
                transport: listen.transport,
                addr: local,
            });
            endpoints.push(endpoint::Endpoint::new(net, local, guard, shared.clone()));
        }
        Ok(Server {
            endpoints,
            local_addrs,
            shared,
        })
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> &[Listen] {
        &self.local_addrs
    }

    /// Serves calls until `shutdown` completes.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let pacer = tokio::spawn(self.shared.pacer.clone().run());
        let tasks: Vec<_> = self
            .endpoints
            .into_iter()
            .map(|endpoint| tokio::spawn(endpoint.run()))
            .collect();
        shutdown.await;
        for task in tasks {
            task.abort();
        }
        pacer.abort();
    }
}
