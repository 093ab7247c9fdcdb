//! RFC 3261 §17 timer values and the retransmission back-off shared by every state machine.
//!
//! Nothing here reads a clock: deadlines are computed from the `Instant` the caller passes in.

use std::time::{Duration, Instant};

/// The three base timers of RFC 3261 (Table 4); every other timer is derived from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate: first retransmission interval of requests and 2xx responses (default 500 ms).
    pub t1: Duration,
    /// Maximum retransmission interval for non-INVITE requests and INVITE responses (default 4 s).
    pub t2: Duration,
    /// Maximum time a message stays in the network (default 5 s).
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64·T1: timers B, F, H, J and L, and the give-up time for 2xx retransmissions (§13.3.1.4).
    pub fn t1x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// Timer B: how long an INVITE client transaction waits for any response (64·T1).
    pub fn timer_b(&self) -> Duration {
        self.t1x64()
    }

    /// Timer D: how long a completed INVITE client transaction absorbs retransmitted non-2xx
    /// finals (re-sending the ACK): at least 32 s on UDP, zero on a reliable transport.
    pub fn timer_d(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            Duration::from_secs(32).max(self.t1x64())
        }
    }

    /// Timer M (RFC 6026): how long an accepted INVITE client transaction keeps matching 2xx
    /// retransmissions so that each one is acknowledged again.
    pub fn timer_m(&self) -> Duration {
        self.t1x64()
    }

    /// Timer H: how long a server INVITE transaction waits for an ACK to a non-2xx final response.
    pub fn timer_h(&self) -> Duration {
        self.t1x64()
    }

    /// Timer I: how long a confirmed INVITE server transaction absorbs ACK retransmissions (UDP).
    pub fn timer_i(&self) -> Duration {
        self.t4
    }

    /// Timer J: how long a completed non-INVITE server transaction answers retransmissions (UDP).
    pub fn timer_j(&self) -> Duration {
        self.t1x64()
    }

    /// Timer F: how long a non-INVITE client transaction waits for a final response.
    pub fn timer_f(&self) -> Duration {
        self.t1x64()
    }

    /// Timer K: how long a completed non-INVITE client transaction absorbs response
    /// retransmissions: T4 on UDP, zero on a reliable transport.
    pub fn timer_k(&self, reliable: bool) -> Duration {
        if reliable { Duration::ZERO } else { self.t4 }
    }

    /// Timer L (RFC 6026): how long an accepted INVITE server transaction absorbs INVITE retransmissions.
    pub fn timer_l(&self) -> Duration {
        self.t1x64()
    }
}

/// A retransmission schedule that starts at T1 and doubles up to T2 (timers E and G, and the
/// 2xx retransmissions of §13.3.1.4, all share this shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// When the next retransmission is due.
    pub next: Instant,
    /// The interval that produced `next`; doubled (capped at T2) on every retransmission.
    pub interval: Duration,
}

impl Backoff {
    /// A schedule whose first retransmission is due T1 after `now`.
    pub fn start(now: Instant, timers: &TimerConfig) -> Self {
        Self {
            next: now + timers.t1,
            interval: timers.t1,
        }
    }

    /// Moves to the next retransmission after one was sent at `now`.
    pub fn advance(&mut self, now: Instant, timers: &TimerConfig) {
        self.interval = (self.interval.saturating_mul(2)).min(timers.t2);
        self.next = now + self.interval;
    }

    /// Moves to the next retransmission with no T2 cap (timer A of the INVITE client transaction
    /// doubles until timer B fires, §17.1.1.2).
    pub fn double(&mut self, now: Instant) {
        self.interval = self.interval.saturating_mul(2);
        self.next = now + self.interval;
    }

    /// Switches to a fixed T2 interval (non-INVITE client transaction in Proceeding, §17.1.2.2).
    pub fn at_t2(&mut self, now: Instant, timers: &TimerConfig) {
        self.interval = timers.t2;
        self.next = now + timers.t2;
    }
}

/// The earliest of two optional deadlines.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_t2() {
        let t = TimerConfig::default();
        let base = Instant::now();
        let mut b = Backoff::start(base, &t);
        let mut seen = vec![b.interval];
        let mut now = base;
        for _ in 0..5 {
            now = b.next;
            b.advance(now, &t);
            seen.push(b.interval);
        }
        let ms: Vec<u128> = seen.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(t.timer_h(), Duration::from_secs(32));
        assert!(now > base);
    }
}
