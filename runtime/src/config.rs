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
//!
//! [store]
//! path = "wasm-ivr.db"               # SQLite: do-not-call list, call records
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
        assert!(toml::from_str::<FileConfig>("[sip]\nlisten_on = []").is_err());
    }
}
