//! `wasm-ivr.toml`: the server's settings. Every setting can also be given as a command-line
//! flag or an environment variable (`wasm-ivr serve --help` lists them); a flag or variable
//! wins over the file, the file over the defaults. The defaults work on loopback:
//!
//! ```toml
//! [sip]
//! listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]   # also udp:[::1]:5060
//! rtp_ports = "20000-29999"
//! max_calls = 1000
//! # media_address = "192.0.2.10"    # RTP bind + SDP address; default: the first listener's
//! # answer_delay_ms = 0              # ring (180) this long before answering
//! # allow = ["127.0.0.0/8", "::1/128"]  # source ACL; unset lets every source in
//! acl_action = "reject"              # outsiders get 403, or "drop" for silence
//! rate_limit = 500                   # requests per second per source (0: off); a trunk is one source
//! ban_s = 60                         # a source over the rate is ignored this long
//! media_latch = "signalling-ip"      # whose RTP counts: "strict" (SDP c= IP), "signalling-ip"
//!                                    # (c= IP or the SIP source IP), "any" (unsafe, see SECURITY.md)
//! media_confirm = true               # a c= IP other than the SIP source gets RTP only once its own RTP arrives
//! # trusted = ["192.0.2.0/28"]       # your carrier's SBCs: PAI believed, never banned, no per-source caps
//! # max_half_open = 500               # un-ACKed calls in all (default max_calls / 2)
//! # max_half_open_per_source = 125    # un-ACKed calls per untrusted source (default max_calls / 8)
//! # max_calls_per_source = 500        # calls per untrusted source (default max_calls / 2)
//! # max_transactions_per_source = 2000  # SIP transactions per untrusted source
//!
//! [ivrs]
//! dir = "ivrs"                       # NAME.json, NAME.wasm (+ NAME.toml), routes.toml
//! # audio_dir = "ivrs/audio"
//!
//! [engine]
//! cpu_budget_ms = 2000               # guest CPU per call
//! memory_limit_mib = 64              # linear memory per guest instance
//! # cache_dir = "~/.cache/wasm-ivr"  # compiled components
//!
//! [calls]
//! # traces_dir = "traces"            # one JSON trace per finished call
//! records_keep_days = 90             # call records older than this are pruned (0: keep all)
//! records_max = 1000000              # at most this many call records, newest kept (0: no cap)
//! traces_keep = 10000                # at most this many trace files, newest kept (0: no cap)
//! max_duration_s = 14400             # a call is ended (BYE, outcome max-duration) after this; 0: off
//! rtp_timeout_s = 60                 # no caller RTP this long (not on hold): BYE, outcome media-timeout; 0: off
//!
//! [store]
//! path = "wasm-ivr.db"               # SQLite: do-not-call list, call records
//!
//! [transfer]
//! mode = "refer"                     # "refer": blind REFER; "bridge": we call and relay media
//! # default = "sip:agent@127.0.0.1:5085"   # the "default" destination (the seed's AI agent)
//! # external_prefix = "9"            # dialled before external numbers
//! # outbound_proxy = "127.0.0.1:5070"      # host for external numbers
//! timeout_s = 30                     # give up waiting for the transfer's outcome
//!
//! [transfer.internal]                # extension -> SIP URI
//! # "200" = "sip:200@pbx.example.net"
//!
//! [http]
//! listen = "127.0.0.1:8080"          # the operator API; "off" disables it
//! # api_keys = ["change-me"]         # bearer keys (also WASM_IVR_API_KEYS); none: loopback only
//! max_connections = 256              # served at once; more wait in the listen backlog
//! header_timeout_s = 10              # to send a request's headers (and keep-alive idle time)
//! request_timeout_s = 120            # for a whole request (408 after it)
//!
//! [tts]
//! engine = "festival"                # default voices from "festival", "flite" or "espeak-ng"
//! memory_cache_mib = 64              # encoded prompts kept in memory (LRU beyond this)
//! disk_cache_mib = 256               # levelled WAVs kept in the cache folder (LRU beyond this)
//! ```

use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Default SIP listeners.
pub const DEFAULT_LISTEN: [&str; 2] = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"];
/// Default RTP port range.
pub const DEFAULT_RTP_PORTS: (u16, u16) = (20000, 29999);
/// Default call limit.
pub const DEFAULT_MAX_CALLS: usize = 1000;

/// The file, section by section; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[sip]`
    #[serde(default)]
    pub sip: SipSection,
    /// `[ivrs]`
    #[serde(default)]
    pub ivrs: IvrsSection,
    /// `[engine]`
    #[serde(default)]
    pub engine: EngineSection,
    /// `[calls]`
    #[serde(default)]
    pub calls: CallsSection,
    /// `[store]`
    #[serde(default)]
    pub store: StoreSection,
    /// `[transfer]`
    #[serde(default)]
    pub transfer: TransferSection,
    /// `[http]`
    #[serde(default)]
    pub http: HttpSection,
    /// `[tts]`
    #[serde(default)]
    pub tts: TtsSection,
}

/// `[tts]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtsSection {
    /// The engine whose voices are the defaults (`festival` unless set).
    pub engine: Option<crate::tts::EngineKind>,
    /// Bound of the in-memory prompt cache, MiB.
    pub memory_cache_mib: Option<u64>,
    /// Bound of the on-disk WAV cache, MiB.
    pub disk_cache_mib: Option<u64>,
}

impl TtsSection {
    /// The cache bounds, defaults where unset.
    pub fn cache_limits(&self) -> crate::tts::CacheLimits {
        let defaults = crate::tts::CacheLimits::default();
        crate::tts::CacheLimits {
            memory_bytes: self
                .memory_cache_mib
                .map_or(defaults.memory_bytes, |m| m.saturating_mul(1 << 20)),
            disk_bytes: self
                .disk_cache_mib
                .map_or(defaults.disk_bytes, |m| m.saturating_mul(1 << 20)),
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// `ADDRESS:PORT`, or `off`.
    pub listen: Option<String>,
    /// Accepted bearer keys.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// Connections served at once (default 256).
    pub max_connections: Option<usize>,
    /// Seconds to send a request's header section (default 10).
    pub header_timeout_s: Option<u64>,
    /// Seconds for a whole request (default 120).
    pub request_timeout_s: Option<u64>,
}

impl HttpSection {
    /// The server's bounds: these settings over the defaults.
    pub fn limits(&self) -> crate::api::HttpLimits {
        let defaults = crate::api::HttpLimits::default();
        crate::api::HttpLimits {
            max_connections: self.max_connections.unwrap_or(defaults.max_connections),
            header_timeout: self
                .header_timeout_s
                .map_or(defaults.header_timeout, std::time::Duration::from_secs),
            request_timeout: self
                .request_timeout_s
                .map_or(defaults.request_timeout, std::time::Duration::from_secs),
        }
    }
}

/// Default API address.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8080";

/// `[transfer]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferSection {
    /// `refer` (default).
    pub mode: Option<TransferMode>,
    /// The default destination's SIP URI.
    pub default: Option<String>,
    /// Dial prefix for external numbers.
    pub external_prefix: Option<String>,
    /// `HOST:PORT` external numbers are sent to.
    pub outbound_proxy: Option<String>,
    /// Seconds to wait for a transfer's outcome (default 30).
    pub timeout_s: Option<u64>,
    /// Internal extensions: number → SIP URI.
    #[serde(default)]
    pub internal: std::collections::BTreeMap<String, String>,
}

/// How transfers are carried out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferMode {
    /// A blind transfer: REFER the caller to the destination and follow its NOTIFYs.
    #[default]
    Refer,
    /// The runtime calls the destination itself and relays audio and DTMF between the two legs
    /// until either hangs up; it stays in the path (and in the call record).
    Bridge,
}

impl TransferSection {
    /// The SIP URI for a destination, or why there is none.
    pub fn uri_for(&self, to: &crate::engine::wit::Destination) -> Result<String, String> {
        use crate::engine::wit::Destination;
        let with_scheme = |uri: &str| {
            if uri.starts_with("sip:") || uri.starts_with("sips:") || uri.starts_with("tel:") {
                uri.to_owned()
            } else {
                format!("sip:{uri}")
            }
        };
        match to {
            Destination::SipUri(uri) => Ok(with_scheme(uri)),
            Destination::External(number) => {
                let proxy = self
                    .outbound_proxy
                    .as_deref()
                    .ok_or("no outbound_proxy is configured for external numbers")?;
                let digits: String = number
                    .chars()
                    .filter(|c| c.is_ascii_digit() || *c == '+')
                    .collect();
                let prefix = self.external_prefix.as_deref().unwrap_or("");
                Ok(format!("sip:{prefix}{digits}@{proxy}"))
            }
            Destination::Internal(extension) => self
                .internal
                .get(extension)
                .map(|uri| with_scheme(uri))
                .ok_or_else(|| format!("no internal extension '{extension}' is configured")),
            Destination::Default => self
                .default
                .as_deref()
                .map(with_scheme)
                .ok_or_else(|| "no default transfer destination is configured".to_owned()),
            Destination::Ivr(name) => Err(format!(
                "IVR '{name}' is entered by the engine, not transferred to"
            )),
        }
    }

    /// Where to send an outbound INVITE for `uri` (bridge mode): the outbound proxy for
    /// external numbers or hosts that are not IP addresses, else the URI's own host and port.
    pub fn next_hop(
        &self,
        to: &crate::engine::wit::Destination,
        uri: &str,
    ) -> Result<std::net::SocketAddr, String> {
        let proxy = || -> Result<std::net::SocketAddr, String> {
            let proxy = self
                .outbound_proxy
                .as_deref()
                .ok_or("no outbound_proxy is configured")?;
            proxy
                .parse()
                .map_err(|e| format!("outbound_proxy '{proxy}': {e}"))
        };
        if matches!(to, crate::engine::wit::Destination::External(_)) {
            return proxy();
        }
        let rest = uri.split_once(':').map_or(uri, |(_, r)| r);
        let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let host_port = host_port.split([';', '?', '>']).next().unwrap_or(host_port);
        if let Ok(addr) = host_port.parse::<std::net::SocketAddr>() {
            return Ok(addr);
        }
        if let Ok(ip) = host_port
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
        {
            return Ok(std::net::SocketAddr::new(ip, 5060));
        }
        proxy().map_err(|e| format!("cannot reach '{host_port}' without DNS: {e}"))
    }

    /// How long to wait for a transfer's outcome.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_s.unwrap_or(30))
    }
}

/// `[store]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// The SQLite database file.
    pub path: Option<PathBuf>,
}

/// Default database file.
pub const DEFAULT_STORE: &str = "wasm-ivr.db";

/// `[sip]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipSection {
    /// Listeners, `udp:ADDRESS:PORT`.
    pub listen: Option<Vec<String>>,
    /// `LOW-HIGH`.
    pub rtp_ports: Option<String>,
    /// Calls at once.
    pub max_calls: Option<usize>,
    /// RTP bind and SDP address.
    pub media_address: Option<IpAddr>,
    /// Ring before answering, ms.
    pub answer_delay_ms: Option<u64>,
    /// Source ACL (CIDR blocks); unset allows every source.
    pub allow: Option<Vec<String>>,
    /// `reject` (403) or `drop`.
    pub acl_action: Option<crate::server::guard::AclAction>,
    /// Requests per second per source address; 0 turns the limit off.
    pub rate_limit: Option<u32>,
    /// Seconds a source over the rate limit is ignored.
    pub ban_s: Option<u64>,
    /// Which RTP sources may become a call's media.
    pub media_latch: Option<MediaLatch>,
    /// Send to an SDP address other than the signalling source only once its RTP arrives.
    pub media_confirm: Option<bool>,
    /// The operator's trunks (CIDR blocks): P-Asserted-Identity believed, never banned, no
    /// per-source caps.
    pub trusted: Option<Vec<String>>,
    /// Un-ACKed calls from all sources together.
    pub max_half_open: Option<usize>,
    /// Un-ACKed calls per untrusted source.
    pub max_half_open_per_source: Option<usize>,
    /// Live calls per untrusted source.
    pub max_calls_per_source: Option<usize>,
    /// Live SIP transactions per untrusted source.
    pub max_transactions_per_source: Option<usize>,
}

/// Which RTP sources may become a call's media (`[sip] media_latch`). In `strict` and
/// `signalling-ip` the first accepted packet latches the call onto its source address and SSRC;
/// another source takes over only from the same IP, after the latched one has been quiet for
/// [`crate::server::media::RELATCH_AFTER`] (or at once after a re-INVITE names a new `c=` IP).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MediaLatch {
    /// Only RTP from the IP in the caller's SDP `c=` line.
    Strict,
    /// RTP from the SDP `c=` IP or from the IP the call's SIP came from (a carrier whose SBC
    /// signals and sends media from one address but writes another in SDP, NAT).
    #[default]
    SignallingIp,
    /// The behaviour before sources were checked: audio and digits from every source count,
    /// and replies follow whichever source sent last after the quiet time. Anyone who can reach
    /// the RTP port can inject digits into a call; only for closed networks.
    Any,
}

impl std::str::FromStr for MediaLatch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strict" => Ok(MediaLatch::Strict),
            "signalling-ip" => Ok(MediaLatch::SignallingIp),
            "any" => Ok(MediaLatch::Any),
            other => Err(format!(
                "'{other}': media_latch is strict, signalling-ip or any"
            )),
        }
    }
}

/// Default `[calls] max_duration_s`: four hours.
pub const DEFAULT_MAX_DURATION_S: u64 = 4 * 3600;
/// Default `[calls] rtp_timeout_s`.
pub const DEFAULT_RTP_TIMEOUT_S: u64 = 60;

/// Seconds to a limit; 0 turns it off.
pub fn limit_from_secs(seconds: u64) -> Option<std::time::Duration> {
    (seconds > 0).then(|| std::time::Duration::from_secs(seconds))
}

impl SipSection {
    /// The guard these settings describe.
    pub fn guard(&self) -> Result<crate::server::guard::GuardConfig, String> {
        let defaults = crate::server::guard::GuardConfig::default();
        Ok(crate::server::guard::GuardConfig {
            allow: self
                .allow
                .iter()
                .flatten()
                .map(|c| c.parse())
                .collect::<Result<_, _>>()?,
            acl_action: self.acl_action.unwrap_or(defaults.acl_action),
            rate_limit: self.rate_limit.unwrap_or(defaults.rate_limit),
            ban: self
                .ban_s
                .map_or(defaults.ban, std::time::Duration::from_secs),
            trusted: self
                .trusted
                .iter()
                .flatten()
                .map(|c| c.parse())
                .collect::<Result<_, _>>()?,
            max_half_open: self.max_half_open,
            max_half_open_per_source: self.max_half_open_per_source,
            max_calls_per_source: self.max_calls_per_source,
            max_transactions_per_source: self.max_transactions_per_source,
        })
    }
}

/// `[ivrs]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IvrsSection {
    /// The IVR folder.
    pub dir: Option<PathBuf>,
    /// The audio folder.
    pub audio_dir: Option<PathBuf>,
}

/// `[engine]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// Guest CPU per call, ms.
    pub cpu_budget_ms: Option<u64>,
    /// Linear memory per instance, MiB.
    pub memory_limit_mib: Option<usize>,
    /// Compiled component cache.
    pub cache_dir: Option<PathBuf>,
}

/// `[calls]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallsSection {
    /// Where to write call traces.
    pub traces_dir: Option<PathBuf>,
    /// Call records older than this many days are pruned (0: kept forever; default 90).
    pub records_keep_days: Option<u64>,
    /// At most this many call records are kept, newest first (0: no cap; default 1 000 000).
    pub records_max: Option<u64>,
    /// At most this many trace files are kept, newest first (0: no cap; default 10 000).
    pub traces_keep: Option<u64>,
    /// Longest call, seconds from answer; 0 turns the limit off.
    pub max_duration_s: Option<u64>,
    /// Longest time without the caller's RTP while media is expected, seconds; 0: off.
    pub rtp_timeout_s: Option<u64>,
}

/// A settings file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML or not this format.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
}

impl FileConfig {
    /// Reads and parses a settings file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }
}

/// Parses `LOW-HIGH` into an inclusive port range.
pub fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let (low, high) = text
        .split_once('-')
        .ok_or_else(|| format!("'{text}': an RTP port range is LOW-HIGH, e.g. 20000-29999"))?;
    let low: u16 = low.trim().parse().map_err(|e| format!("'{text}': {e}"))?;
    let high: u16 = high.trim().parse().map_err(|e| format!("'{text}': {e}"))?;
    if low == 0 || high < low.saturating_add(1) {
        return Err(format!(
            "'{text}': need 0 < LOW < HIGH (two ports at least)"
        ));
    }
    Ok((low, high))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("20000-29999"), Ok((20000, 29999)));
        assert!(parse_port_range("20000").is_err());
        assert!(parse_port_range("3000-2000").is_err());
        assert!(parse_port_range("0-10").is_err());
    }

    #[test]
    fn transfer_destinations_map_to_uris() {
        use crate::engine::wit::Destination;
        let t: TransferSection = toml::from_str(
            "default = \"sip:agent@127.0.0.1:5085\"\nexternal_prefix = \"9\"\n\
             outbound_proxy = \"127.0.0.1:5070\"\n[internal]\n\"200\" = \"200@pbx.example.net\"",
        )
        .unwrap();
        assert_eq!(
            t.uri_for(&Destination::Default).unwrap(),
            "sip:agent@127.0.0.1:5085"
        );
        assert_eq!(
            t.uri_for(&Destination::External("+1 (415) 555-0123".into()))
                .unwrap(),
            "sip:9+14155550123@127.0.0.1:5070"
        );
        assert_eq!(
            t.uri_for(&Destination::Internal("200".into())).unwrap(),
            "sip:200@pbx.example.net"
        );
        assert!(
            t.uri_for(&Destination::Internal("201".into()))
                .unwrap_err()
                .contains("'201'")
        );
        assert_eq!(
            t.uri_for(&Destination::SipUri("a@b".into())).unwrap(),
            "sip:a@b"
        );
        assert!(
            TransferSection::default()
                .uri_for(&Destination::Default)
                .is_err()
        );
    }

    #[test]
    fn the_documented_file_parses_and_typos_do_not() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        let parsed: FileConfig = toml::from_str(&example).expect("documented example parses");
        assert_eq!(parsed.sip.max_calls, Some(1000));
        assert_eq!(parsed.sip.media_latch, Some(MediaLatch::SignallingIp));
        assert_eq!(parsed.calls.rtp_timeout_s, Some(DEFAULT_RTP_TIMEOUT_S));
        assert_eq!(parsed.calls.max_duration_s, Some(DEFAULT_MAX_DURATION_S));
        assert!(toml::from_str::<FileConfig>("[sip]\nmedia_latch = \"loose\"").is_err());
        assert_eq!(parsed.tts.engine, Some(crate::tts::EngineKind::Festival));
        assert_eq!(
            parsed.tts.cache_limits(),
            crate::tts::CacheLimits::default()
        );
        assert!(toml::from_str::<FileConfig>("[tts]\nengine = \"sapi\"").is_err());
        assert!(toml::from_str::<FileConfig>("[sip]\nlisten_on = []").is_err());
    }
}
