//! Who may talk to the SIP endpoints, and how much: a source ACL and a per-source request
//! rate limit with a temporary ban. Checked before a datagram reaches the SIP core, so refused
//! traffic costs no transaction state.
//!
//! Memory stays bounded under a flood from many addresses: the table of sources is capped and
//! swept of idle entries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What to do with a source outside the ACL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclAction {
    /// Answer 403 Forbidden (statelessly).
    #[default]
    Reject,
    /// Send nothing.
    Drop,
}

/// An address block: `127.0.0.0/8`, `::1/128`, or a bare address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr.trim().parse().map_err(|e| format!("'{s}': {e}"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|e| format!("'{s}': {e}"))?,
            None => max,
        };
        if prefix > max {
            return Err(format!("'{s}': prefix longer than {max}"));
        }
        Ok(Cidr { network, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is inside the block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The guard's settings.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Sources allowed; empty allows everyone.
    pub allow: Vec<Cidr>,
    /// What happens to the rest.
    pub acl_action: AclAction,
    /// Requests per second allowed per source address (0 turns the limit off).
    pub rate_limit: u32,
    /// How long a source that exceeds the rate is ignored.
    pub ban: Duration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            allow: Vec::new(),
            acl_action: AclAction::Reject,
            rate_limit: 500,
            ban: Duration::from_secs(60),
        }
    }
}

/// The verdict on one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Pass,
    /// Answer 403.
    Forbid,
    /// Ignore it.
    Drop,
}

struct Bucket {
    tokens: f64,
    last: Instant,
    banned_until: Option<Instant>,
}

/// Most sources tracked at once; past this, idle ones are swept and, failing that, new sources
/// share the verdict of the rate limit being off for them (they are not tracked).
const MAX_TRACKED: usize = 65_536;

/// The per-endpoint guard.
pub struct Guard {
    config: GuardConfig,
    sources: HashMap<IpAddr, Bucket>,
    last_sweep: Option<Instant>,
}

impl Guard {
    /// A guard with these settings.
    pub fn new(config: GuardConfig) -> Self {
        Guard {
            config,
            sources: HashMap::new(),
            last_sweep: None,
        }
    }

    /// The verdict for a datagram from `ip` at `now`.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        if !self.config.allow.is_empty() && !self.config.allow.iter().any(|c| c.contains(ip)) {
            return match self.config.acl_action {
                AclAction::Reject => Verdict::Forbid,
                AclAction::Drop => Verdict::Drop,
            };
        }
        if self.config.rate_limit == 0 {
            return Verdict::Pass;
        }
        self.sweep(now);
        let rate = f64::from(self.config.rate_limit);
        if self.sources.len() >= MAX_TRACKED && !self.sources.contains_key(&ip) {
            return Verdict::Pass;
        }
        let bucket = self.sources.entry(ip).or_insert(Bucket {
            tokens: rate * 2.0,
            last: now,
            banned_until: None,
        });
        if let Some(until) = bucket.banned_until {
            if now < until {
                return Verdict::Drop;
            }
            bucket.banned_until = None;
            bucket.tokens = rate * 2.0;
        }
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.last).as_secs_f64() * rate).min(rate * 2.0);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Verdict::Pass
        } else {
            bucket.banned_until = Some(now + self.config.ban);
            tracing::warn!(source = %ip, ban_s = self.config.ban.as_secs(), "SIP request rate exceeded; source banned");
            Verdict::Drop
        }
    }

    /// Sources tracked now.
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(10))
        {
            return;
        }
        self.last_sweep = Some(now);
        let idle = Duration::from_secs(60);
        self.sources.retain(|_, b| {
            b.banned_until.is_some_and(|until| until > now) || now.duration_since(b.last) < idle
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks() {
        let lo: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(lo.contains("127.1.2.3".parse().unwrap()));
        assert!(!lo.contains("10.0.0.1".parse().unwrap()));
        assert!(lo.contains("::ffff:127.0.0.1".parse().unwrap()));
        let v6: Cidr = "::1/128".parse().unwrap();
        assert!(v6.contains("::1".parse().unwrap()));
        assert!(!v6.contains("::2".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        let any: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn acl_rejects_or_drops_outsiders() {
        let mut guard = Guard::new(GuardConfig {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            ..GuardConfig::default()
        });
        let now = Instant::now();
        assert_eq!(
            guard.check("127.0.0.1".parse().unwrap(), now),
            Verdict::Pass
        );
        assert_eq!(
            guard.check("192.0.2.7".parse().unwrap(), now),
            Verdict::Forbid
        );
        guard.config.acl_action = AclAction::Drop;
        assert_eq!(
            guard.check("192.0.2.7".parse().unwrap(), now),
            Verdict::Drop
        );
    }

    #[test]
    fn a_flood_is_banned_for_a_while_and_others_pass() {
        let mut guard = Guard::new(GuardConfig {
            rate_limit: 10,
            ban: Duration::from_secs(5),
            ..GuardConfig::default()
        });
        let start = Instant::now();
        let flooder: IpAddr = "127.0.0.9".parse().unwrap();
        let passed = (0..100)
            .filter(|_| guard.check(flooder, start) == Verdict::Pass)
            .count();
        assert_eq!(passed, 20, "a burst of twice the rate passes, then the ban");
        assert_eq!(
            guard.check(flooder, start + Duration::from_secs(4)),
            Verdict::Drop
        );
        assert_eq!(
            guard.check("127.0.0.1".parse().unwrap(), start),
            Verdict::Pass
        );
        assert_eq!(
            guard.check(flooder, start + Duration::from_secs(6)),
            Verdict::Pass
        );
        // A steady rate under the limit never trips it.
        let calm: IpAddr = "127.0.0.2".parse().unwrap();
        for i in 0..200u64 {
            assert_eq!(
                guard.check(calm, start + Duration::from_millis(i * 150)),
                Verdict::Pass
            );
        }
    }
}
