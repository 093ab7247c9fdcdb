//! Admission of new work by source address: how many calls, un-ACKed ("half-open") calls and
//! server transactions one source may hold, and which sources are the operator's own trunks.
//!
//! The caps exist so that one source cannot take what others need: a flood of INVITEs that are
//! never ACKed would otherwise hold call slots (and, in the server, RTP ports) until timer H,
//! and a flood of requests would fill the transaction table. A request past a cap is answered
//! with a stateless 503 by the core: no transaction, no call, nothing remembered.
//!
//! Trusted sources (the carrier's SBCs) skip the per-source caps — all calls arrive from them,
//! so a per-source cap would be a cap on the whole service — and stay bounded by the totals
//! (`Config::max_calls`, [`Limits::half_open`], `Config::max_transactions`). Only they may
//! assert the caller's identity (P-Asserted-Identity).
//!
//! This is pure bookkeeping (no clock, no I/O), kept up to date by the core as calls and
//! transactions come and go.

use std::collections::HashMap;
use std::net::IpAddr;

use super::CallHandle;

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
        match (self.network, ip.to_canonical()) {
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

/// The admission caps of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Un-ACKed inbound calls (INVITE received, our 2xx not yet acknowledged) from all sources
    /// together; past it new INVITEs get a stateless 503. Keeps room in `max_calls` for calls
    /// that are really up.
    pub half_open: usize,
    /// Un-ACKed inbound calls from one untrusted source address.
    pub half_open_per_source: usize,
    /// Live inbound calls from one untrusted source address.
    pub calls_per_source: usize,
    /// Live server transactions of one untrusted source address.
    pub transactions_per_source: usize,
    /// The operator's own trunks: exempt from the per-source caps, and the only sources whose
    /// P-Asserted-Identity is believed.
    pub trusted: Vec<Cidr>,
}

impl Limits {
    /// The default caps for an endpoint of `max_calls` calls and `max_transactions`
    /// transactions: half of the calls may be half-open, one untrusted source may hold an
    /// eighth of them half-open and half of them in all, and a fiftieth of the transactions.
    pub fn for_capacity(max_calls: usize, max_transactions: usize) -> Self {
        Limits {
            half_open: (max_calls / 2).max(1),
            half_open_per_source: (max_calls / 8).max(1),
            calls_per_source: (max_calls / 2).max(1),
            transactions_per_source: (max_transactions / 50).max(16),
            trusted: Vec::new(),
        }
    }

    /// Whether `ip` is one of the operator's trunks.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }
}

/// Which cap refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// [`Limits::half_open`].
    HalfOpen,
    /// [`Limits::half_open_per_source`].
    HalfOpenPerSource,
    /// [`Limits::calls_per_source`].
    CallsPerSource,
    /// [`Limits::transactions_per_source`].
    TransactionsPerSource,
}

impl Refusal {
    /// A short description for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::HalfOpen => "half-open calls",
            Refusal::HalfOpenPerSource => "half-open calls of this source",
            Refusal::CallsPerSource => "calls of this source",
            Refusal::TransactionsPerSource => "transactions of this source",
        }
    }
}

/// What one source holds now.
#[derive(Debug, Default, Clone, Copy)]
struct Load {
    calls: usize,
    half_open: usize,
    transactions: usize,
}

impl Load {
    fn is_empty(&self) -> bool {
        self.calls == 0 && self.half_open == 0 && self.transactions == 0
    }
}

/// The counts the caps are checked against. A source with nothing live has no entry, so the
/// table is bounded by the live calls and transactions (themselves capped).
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    loads: HashMap<IpAddr, Load>,
    /// Inbound calls: their source and whether they are still half-open.
    calls: HashMap<CallHandle, (IpAddr, bool)>,
    half_open: usize,
}

impl Ledger {
    /// Whether a new call from `ip` fits.
    pub fn admit_call(&self, limits: &Limits, ip: IpAddr) -> Result<(), Refusal> {
        let ip = ip.to_canonical();
        if self.half_open >= limits.half_open {
            return Err(Refusal::HalfOpen);
        }
        if limits.is_trusted(ip) {
            return Ok(());
        }
        let load = self.loads.get(&ip).copied().unwrap_or_default();
        if load.half_open >= limits.half_open_per_source {
            return Err(Refusal::HalfOpenPerSource);
        }
        if load.calls >= limits.calls_per_source {
            return Err(Refusal::CallsPerSource);
        }
        Ok(())
    }

    /// Whether a new server transaction for `ip` fits.
    pub fn admit_transaction(&self, limits: &Limits, ip: IpAddr) -> Result<(), Refusal> {
        let ip = ip.to_canonical();
        if limits.is_trusted(ip) {
            return Ok(());
        }
        let held = self.loads.get(&ip).map_or(0, |l| l.transactions);
        if held >= limits.transactions_per_source {
            return Err(Refusal::TransactionsPerSource);
        }
        Ok(())
    }

    /// An inbound call from `ip` began (half-open until [`Ledger::call_confirmed`]).
    pub fn call_started(&mut self, call: CallHandle, ip: IpAddr) {
        let ip = ip.to_canonical();
        if self.calls.insert(call, (ip, true)).is_some() {
            return;
        }
        let load = self.loads.entry(ip).or_default();
        load.calls += 1;
        load.half_open += 1;
        self.half_open += 1;
    }

    /// The call's 2xx was acknowledged: no longer half-open. Repeats are harmless.
    pub fn call_confirmed(&mut self, call: CallHandle) {
        let Some((ip, half_open)) = self.calls.get_mut(&call) else {
            return;
        };
        if !std::mem::take(half_open) {
            return;
        }
        let ip = *ip;
        self.half_open = self.half_open.saturating_sub(1);
        if let Some(load) = self.loads.get_mut(&ip) {
            load.half_open = load.half_open.saturating_sub(1);
        }
    }

    /// The call is gone. Calls never started here (outbound ones) are ignored.
    pub fn call_ended(&mut self, call: CallHandle) {
        let Some((ip, half_open)) = self.calls.remove(&call) else {
            return;
        };
        if half_open {
            self.half_open = self.half_open.saturating_sub(1);
        }
        self.update(ip, |load| {
            load.calls = load.calls.saturating_sub(1);
            if half_open {
                load.half_open = load.half_open.saturating_sub(1);
            }
        });
    }

    /// A server transaction for `ip` began.
    pub fn transaction_started(&mut self, ip: IpAddr) {
        self.loads
            .entry(ip.to_canonical())
            .or_default()
            .transactions += 1;
    }

    /// A server transaction for `ip` ended.
    pub fn transaction_ended(&mut self, ip: IpAddr) {
        self.update(ip.to_canonical(), |load| {
            load.transactions = load.transactions.saturating_sub(1);
        });
    }

    /// Un-ACKed inbound calls now.
    pub fn half_open(&self) -> usize {
        self.half_open
    }

    /// Sources holding something now.
    #[cfg(test)]
    pub fn sources(&self) -> usize {
        self.loads.len()
    }

    fn update(&mut self, ip: IpAddr, change: impl FnOnce(&mut Load)) {
        if let Some(load) = self.loads.get_mut(&ip) {
            change(load);
            if load.is_empty() {
                self.loads.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_blocks() {
        let lo: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(lo.contains(ip("127.1.2.3")));
        assert!(!lo.contains(ip("10.0.0.1")));
        assert!(lo.contains(ip("::ffff:127.0.0.1")));
        let v6: Cidr = "::1/128".parse().unwrap();
        assert!(v6.contains(ip("::1")));
        assert!(!v6.contains(ip("::2")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        let any: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains(ip("192.0.2.1")));
    }

    #[test]
    fn per_source_caps_spare_other_sources_and_trunks() {
        let mut limits = Limits::for_capacity(40, 100);
        limits.trusted = vec!["127.0.0.1/32".parse().unwrap()];
        assert_eq!(
            (limits.half_open, limits.half_open_per_source),
            (20, 5),
            "defaults for max_calls = 40"
        );
        let mut ledger = Ledger::default();
        let (flooder, other, trunk) = (ip("127.0.0.3"), ip("127.0.0.2"), ip("127.0.0.1"));
        for n in 0..5 {
            assert_eq!(ledger.admit_call(&limits, flooder), Ok(()));
            ledger.call_started(CallHandle(n), flooder);
        }
        assert_eq!(
            ledger.admit_call(&limits, flooder),
            Err(Refusal::HalfOpenPerSource)
        );
        assert_eq!(ledger.admit_call(&limits, other), Ok(()));
        // The trunk is held only by the total.
        for n in 5..20 {
            assert_eq!(ledger.admit_call(&limits, trunk), Ok(()));
            ledger.call_started(CallHandle(n), trunk);
        }
        assert_eq!(ledger.admit_call(&limits, trunk), Err(Refusal::HalfOpen));
        // ACKs free half-open room; the ended calls free everything.
        for n in 0..20 {
            ledger.call_confirmed(CallHandle(n));
            ledger.call_confirmed(CallHandle(n));
        }
        assert_eq!(ledger.half_open(), 0);
        assert_eq!(ledger.admit_call(&limits, flooder), Ok(()));
        for n in 0..20 {
            ledger.call_ended(CallHandle(n));
            ledger.call_ended(CallHandle(n));
        }
        assert_eq!(ledger.sources(), 0);
    }

    #[test]
    fn calls_and_transactions_per_source() {
        let limits = Limits {
            calls_per_source: 2,
            transactions_per_source: 3,
            ..Limits::for_capacity(100, 1000)
        };
        let mut ledger = Ledger::default();
        let a = ip("::ffff:192.0.2.1");
        ledger.call_started(CallHandle(1), a);
        ledger.call_confirmed(CallHandle(1));
        ledger.call_started(CallHandle(2), ip("192.0.2.1"));
        ledger.call_confirmed(CallHandle(2));
        assert_eq!(
            ledger.admit_call(&limits, a),
            Err(Refusal::CallsPerSource),
            "mapped and plain IPv4 are one source"
        );
        for _ in 0..3 {
            assert_eq!(ledger.admit_transaction(&limits, a), Ok(()));
            ledger.transaction_started(a);
        }
        assert_eq!(
            ledger.admit_transaction(&limits, a),
            Err(Refusal::TransactionsPerSource)
        );
        ledger.transaction_ended(a);
        assert_eq!(ledger.admit_transaction(&limits, a), Ok(()));
    }
}
