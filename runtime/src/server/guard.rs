//! Who may talk to the SIP endpoints, and how much: a source ACL, trusted trunks, and a
//! per-source rate limit on new work with a temporary ban. Checked before a datagram reaches
//! the SIP core, so refused traffic costs no transaction state.
//!
//! Only new work counts against the rate ([`Traffic`]): the ACK, BYE and INFO of calls in
//! progress do not, so a busy source is judged by its call rate, not by its calls' length.
//! Trusted sources (`[sip] trusted`, the operator's carriers) are never rate-limited or
//! banned: all calls arrive from them, and banning them would ban the service. Their load is
//! bounded by the SIP core's admission caps instead (`max_calls`, the half-open total).
//!
//! Memory stays bounded under a flood from many addresses: the table of sources is capped,
//! evicting the least recently seen source, and swept of idle entries.

use std::collections::{BTreeMap, HashMap};
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

pub use crate::sip::admission::Cidr;

/// The guard's settings.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Sources allowed; empty allows everyone.
    pub allow: Vec<Cidr>,
    /// What happens to the rest.
    pub acl_action: AclAction,
    /// New-work requests per second allowed per source address (0 turns the limit off). Only
    /// requests that can start something count: in-dialog methods and responses do not.
    pub rate_limit: u32,
    /// How long a source that exceeds the rate is ignored.
    pub ban: Duration,
    /// The operator's own carriers and SBCs: allowed even outside `allow`, never rate-limited
    /// or banned, exempt from the per-source caps, and the only sources whose
    /// P-Asserted-Identity is believed.
    pub trusted: Vec<Cidr>,
    /// Un-ACKed calls from all sources together; default half of `max_calls`.
    pub max_half_open: Option<usize>,
    /// Un-ACKed calls per untrusted source; default an eighth of `max_calls`.
    pub max_half_open_per_source: Option<usize>,
    /// Live calls per untrusted source; default half of `max_calls`.
    pub max_calls_per_source: Option<usize>,
    /// Live SIP transactions per untrusted source; default 2,000 (of 100,000 in all).
    pub max_transactions_per_source: Option<usize>,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            allow: Vec::new(),
            acl_action: AclAction::Reject,
            rate_limit: 500,
            ban: Duration::from_secs(60),
            trusted: Vec::new(),
            max_half_open: None,
            max_half_open_per_source: None,
            max_calls_per_source: None,
            max_transactions_per_source: None,
        }
    }
}

impl GuardConfig {
    /// The SIP core's admission caps for an endpoint of `max_calls` calls and
    /// `max_transactions` transactions: the settings given, the defaults for the rest.
    pub fn admission(
        &self,
        max_calls: usize,
        max_transactions: usize,
    ) -> crate::sip::admission::Limits {
        let defaults = crate::sip::admission::Limits::for_capacity(max_calls, max_transactions);
        crate::sip::admission::Limits {
            half_open: self.max_half_open.unwrap_or(defaults.half_open),
            half_open_per_source: self
                .max_half_open_per_source
                .unwrap_or(defaults.half_open_per_source),
            calls_per_source: self
                .max_calls_per_source
                .unwrap_or(defaults.calls_per_source),
            transactions_per_source: self
                .max_transactions_per_source
                .unwrap_or(defaults.transactions_per_source),
            trusted: self.trusted.clone(),
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
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

/// What a datagram asks of us, as far as the rate limit cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// Something that can start work: a new call, an out-of-dialog request, or anything that
    /// does not look like a request of a call in progress (garbage included).
    New,
    /// A request within a call (ACK, BYE, INFO, CANCEL, NOTIFY, PRACK, UPDATE) or a response:
    /// a busy trunk sends several per call, and they must not look like new-call rate. They
    /// stay bounded by the core's per-source transaction cap.
    InCall,
}

impl Traffic {
    /// Classifies a datagram by its first line only, so that the check stays cheaper than
    /// parsing.
    pub fn of(data: &[u8]) -> Traffic {
        const IN_CALL: [&[u8]; 8] = [
            b"SIP/2.0 ",
            b"ACK ",
            b"BYE ",
            b"INFO ",
            b"CANCEL ",
            b"NOTIFY ",
            b"PRACK ",
            b"UPDATE ",
        ];
        if IN_CALL.iter().any(|p| data.starts_with(p)) {
            Traffic::InCall
        } else {
            Traffic::New
        }
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
    banned_until: Option<Instant>,
    /// When it was last seen, in [`Sources::order`]'s numbering.
    seen: u64,
}

/// The tracked sources, with the order they were last seen in so that the least recently seen
/// can be found at once.
#[derive(Default)]
struct Sources {
    buckets: HashMap<IpAddr, Bucket>,
    order: BTreeMap<u64, IpAddr>,
    clock: u64,
}

impl Sources {
    /// The bucket of `ip`, marked as seen now; a new one (`fresh`) if it is not tracked, made
    /// room for by forgetting the least recently seen source.
    fn touch(&mut self, ip: IpAddr, fresh: impl FnOnce() -> Bucket) -> &mut Bucket {
        self.clock += 1;
        let seen = self.clock;
        if let Some(old) = self.buckets.get(&ip).map(|b| b.seen) {
            self.order.remove(&old);
        } else if self.buckets.len() >= MAX_TRACKED
            && let Some((_, oldest)) = self.order.pop_first()
        {
            self.buckets.remove(&oldest);
        }
        self.order.insert(seen, ip);
        let bucket = self.buckets.entry(ip).or_insert_with(fresh);
        bucket.seen = seen;
        bucket
    }

    fn retain(&mut self, mut keep: impl FnMut(&Bucket) -> bool) {
        let order = &mut self.order;
        self.buckets.retain(|_, b| {
            let kept = keep(b);
            if !kept {
                order.remove(&b.seen);
            }
            kept
        });
    }
}

/// Most sources tracked at once; past this the least recently seen source is forgotten. A
/// source that is still flooding keeps being seen, so it is never the one evicted.
const MAX_TRACKED: usize = 65_536;

/// The per-endpoint guard.
pub struct Guard {
    config: GuardConfig,
    sources: Sources,
    last_sweep: Option<Instant>,
}

impl Guard {
    /// A guard with these settings.
    pub fn new(config: GuardConfig) -> Self {
        Guard {
            config,
            sources: Sources::default(),
            last_sweep: None,
        }
    }

    /// The verdict for new work (a datagram of [`Traffic::New`], a TCP connection) from `ip`
    /// at `now`.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        self.check_traffic(ip, now, Traffic::New)
    }

    /// The verdict for a datagram of this kind from `ip` at `now`: the ACL for everyone, the
    /// rate for new work from untrusted sources, a ban for all of a banned source's traffic.
    pub fn check_traffic(&mut self, ip: IpAddr, now: Instant, traffic: Traffic) -> Verdict {
        if self.config.is_trusted(ip) {
            return Verdict::Pass;
        }
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
        let ip = ip.to_canonical();
        let rate = f64::from(self.config.rate_limit);
        if traffic == Traffic::InCall {
            // Only a ban applies; a source not tracked yet is not added by in-call traffic.
            return match self.sources.buckets.get(&ip) {
                Some(b) if b.banned_until.is_some_and(|until| now < until) => Verdict::Drop,
                _ => Verdict::Pass,
            };
        }
        let bucket = self.sources.touch(ip, || Bucket {
            tokens: rate * 2.0,
            last: now,
            banned_until: None,
            seen: 0,
        });
        if let Some(until) = bucket.banned_until {
            if now < until {
                return Verdict::Drop;
            }
            bucket.banned_until = None;
            bucket.tokens = rate * 2.0;
        }
        bucket.tokens = (bucket.tokens
            + now.saturating_duration_since(bucket.last).as_secs_f64() * rate)
            .min(rate * 2.0);
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
        self.sources.buckets.len()
    }

    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(10))
        {
            return;
        }
        self.last_sweep = Some(now);
        let idle = Duration::from_secs(60);
        self.sources.retain(|b| {
            b.banned_until.is_some_and(|until| until > now)
                || now.saturating_duration_since(b.last) < idle
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn trusted_trunks_are_never_banned_and_pass_the_acl() {
        let mut guard = Guard::new(GuardConfig {
            allow: vec!["10.0.0.0/8".parse().unwrap()],
            rate_limit: 10,
            trusted: vec!["127.0.0.1/32".parse().unwrap()],
            ..GuardConfig::default()
        });
        let start = Instant::now();
        let trunk: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..10_000 {
            assert_eq!(guard.check(trunk, start), Verdict::Pass);
        }
        assert_eq!(guard.tracked(), 0, "trusted sources cost no table entry");
        assert_eq!(
            guard.check("127.0.0.2".parse().unwrap(), start),
            Verdict::Forbid
        );
    }

    #[test]
    fn in_call_traffic_is_not_new_call_rate() {
        let mut guard = Guard::new(GuardConfig {
            rate_limit: 10,
            ..GuardConfig::default()
        });
        let start = Instant::now();
        let peer: IpAddr = "127.0.0.5".parse().unwrap();
        assert_eq!(Traffic::of(b"ACK sip:x SIP/2.0\r\n"), Traffic::InCall);
        assert_eq!(Traffic::of(b"BYE sip:x SIP/2.0\r\n"), Traffic::InCall);
        assert_eq!(Traffic::of(b"INFO sip:x SIP/2.0\r\n"), Traffic::InCall);
        assert_eq!(Traffic::of(b"SIP/2.0 200 OK\r\n"), Traffic::InCall);
        assert_eq!(Traffic::of(b"INVITE sip:x SIP/2.0\r\n"), Traffic::New);
        assert_eq!(Traffic::of(b"ACKNOWLEDGE"), Traffic::New);
        assert_eq!(Traffic::of(b"\x00garbage"), Traffic::New);
        for _ in 0..1_000 {
            assert_eq!(
                guard.check_traffic(peer, start, Traffic::InCall),
                Verdict::Pass
            );
        }
        let new = (0..100)
            .filter(|_| guard.check_traffic(peer, start, Traffic::New) == Verdict::Pass)
            .count();
        assert_eq!(new, 20, "the burst of new work is intact");
        assert_eq!(
            guard.check_traffic(peer, start, Traffic::InCall),
            Verdict::Drop,
            "a banned source is banned for everything"
        );
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_seen_instead_of_failing_open() {
        let mut guard = Guard::new(GuardConfig {
            rate_limit: 10,
            ..GuardConfig::default()
        });
        let start = Instant::now();
        let flooder: IpAddr = "192.0.2.1".parse().unwrap();
        let banned = (0..100)
            .filter(|_| guard.check(flooder, start) == Verdict::Drop)
            .count();
        assert!(banned > 0);
        // More sources than the table holds, all in the same instant (no sweep), the flooder
        // still sending among them.
        for n in 0..(MAX_TRACKED as u32 + 1_000) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            assert_eq!(guard.check(ip, start), Verdict::Pass);
            if n % 1_000 == 0 {
                assert_eq!(guard.check(flooder, start), Verdict::Drop);
            }
        }
        assert_eq!(guard.tracked(), MAX_TRACKED);
        assert_eq!(
            guard.check(flooder, start),
            Verdict::Drop,
            "the flooder is still banned"
        );
        // A new source past capacity is tracked (and limited), not waved through.
        let late: IpAddr = "198.51.100.7".parse().unwrap();
        let passed = (0..100)
            .filter(|_| guard.check(late, start) == Verdict::Pass)
            .count();
        assert_eq!(passed, 20);
    }
}
