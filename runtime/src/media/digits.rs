//! One de-duplicated digit stream per call, from the three DTMF sources.
//!
//! Carriers often deliver the same key press twice: as RFC 4733 events *and* as tones left in
//! the audio, or as RFC 4733 *and* SIP INFO. [`DigitMerger`] applies two rules:
//!
//! 1. **RFC 4733 wins over in-band.** From the first RFC 4733 digit on, in-band digits for the
//!    call are dropped (until [`DigitMerger::reset`], e.g. after a re-INVITE). A peer that
//!    relays keys as events relays all of them, so in-band detections could only be copies or
//!    talk-off; [`DigitMerger::inband_suppressed`] tells the media task it may stop running the
//!    Goertzel detector altogether.
//! 2. **Cross-source copies merge.** A digit equal to the last one emitted, from a *different*
//!    source, arriving within the merge window (100 ms by default) of it, is the same key press
//!    and is dropped. This covers the in-band detection that fires before the first RFC 4733
//!    packet arrives, and INFO sent alongside RFC 4733. Repeats from the *same* source are never
//!    merged: each source already reports one digit per press, so two quick `5`s from one
//!    source are two presses.

use std::time::{Duration, Instant};

use super::dtmf::Digit;

/// Most digits a call keeps waiting (in the media queue, in the type-ahead buffer): a caller
/// has no reason to be more than a few keys ahead, and a flood must not grow memory.
pub const MAX_PENDING_DIGITS: usize = 64;

/// Where a digit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigitSource {
    /// An RFC 4733 telephone-event in RTP.
    Rfc4733,
    /// A SIP INFO request (`application/dtmf-relay` or `application/dtmf`).
    SipInfo,
    /// A tone detected in the audio.
    Inband,
}

/// A digit accepted into the call's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergedDigit {
    /// The key.
    pub digit: Digit,
    /// The source that delivered it first.
    pub source: DigitSource,
    /// When it arrived.
    pub at: Instant,
}

/// Merges one call's digits from all sources into one stream (rules in the module docs).
#[derive(Debug, Clone)]
pub struct DigitMerger {
    window: Duration,
    rfc4733_seen: bool,
    last: Option<MergedDigit>,
}

impl Default for DigitMerger {
    fn default() -> Self {
        DigitMerger::new()
    }
}

impl DigitMerger {
    /// The default merge window.
    pub const DEFAULT_WINDOW: Duration = Duration::from_millis(100);

    /// A merger with the default 100 ms window.
    pub fn new() -> DigitMerger {
        DigitMerger::with_window(Self::DEFAULT_WINDOW)
    }

    /// A merger with another window (a carrier whose INFO lags its RTP needs more).
    pub fn with_window(window: Duration) -> DigitMerger {
        DigitMerger {
            window,
            rfc4733_seen: false,
            last: None,
        }
    }

    /// `true` once RFC 4733 digits are arriving: in-band digits are ignored from then on.
    pub fn inband_suppressed(&self) -> bool {
        self.rfc4733_seen
    }

    /// Forgets the sources seen (after a re-INVITE changed the media path).
    pub fn reset(&mut self) {
        self.rfc4733_seen = false;
        self.last = None;
    }

    /// Offers a digit from `source` that arrived at `at`; returns it if it belongs in the
    /// call's stream, `None` if it is a copy of one already delivered.
    pub fn push(&mut self, source: DigitSource, digit: Digit, at: Instant) -> Option<MergedDigit> {
        match source {
            DigitSource::Rfc4733 => self.rfc4733_seen = true,
            DigitSource::Inband if self.rfc4733_seen => return None,
            _ => {}
        }
        if let Some(last) = self.last
            && last.digit == digit
            && last.source != source
            && at.saturating_duration_since(last.at) <= self.window
        {
            return None;
        }
        let merged = MergedDigit { digit, source, at };
        self.last = Some(merged);
        Some(merged)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use DigitSource::*;

    fn d(c: char) -> Digit {
        Digit::from_char(c).unwrap()
    }

    /// Pushes (ms, source, key) events and returns the emitted keys with their sources.
    fn run(
        merger: &mut DigitMerger,
        events: &[(u64, DigitSource, char)],
    ) -> Vec<(char, DigitSource)> {
        let t0 = Instant::now();
        events
            .iter()
            .filter_map(|&(ms, src, key)| merger.push(src, d(key), t0 + Duration::from_millis(ms)))
            .map(|m| (m.digit.as_char(), m.source))
            .collect()
    }

    #[test]
    fn rfc4733_then_inband_copy_is_one_digit_and_inband_stays_off() {
        let mut m = DigitMerger::new();
        let out = run(
            &mut m,
            &[
                (0, Rfc4733, '1'),
                (40, Inband, '1'),
                (2000, Inband, '2'),
                (3000, Rfc4733, '3'),
            ],
        );
        assert_eq!(out, [('1', Rfc4733), ('3', Rfc4733)]);
        assert!(m.inband_suppressed());
    }

    #[test]
    fn inband_before_the_first_event_merges() {
        let mut m = DigitMerger::new();
        assert!(!m.inband_suppressed());
        let out = run(
            &mut m,
            &[(0, Inband, '5'), (30, Rfc4733, '5'), (500, Inband, '6')],
        );
        assert_eq!(out, [('5', Inband)]);
    }

    #[test]
    fn info_and_rfc4733_copies_merge_within_the_window_only() {
        let mut m = DigitMerger::new();
        let out = run(
            &mut m,
            &[
                (0, Rfc4733, '7'),
                (60, SipInfo, '7'),   // copy
                (1000, SipInfo, '8'), // INFO first this time
                (1090, Rfc4733, '8'), // copy
                (2000, Rfc4733, '9'),
                (2150, SipInfo, '9'), // too late to be a copy
            ],
        );
        assert_eq!(
            out,
            [
                ('7', Rfc4733),
                ('8', SipInfo),
                ('9', Rfc4733),
                ('9', SipInfo)
            ]
        );
        // A wider window for a lagging carrier.
        let mut m = DigitMerger::with_window(Duration::from_millis(300));
        let out = run(&mut m, &[(0, Rfc4733, '9'), (150, SipInfo, '9')]);
        assert_eq!(out, [('9', Rfc4733)]);
    }

    #[test]
    fn same_source_repeats_are_separate_presses() {
        let mut m = DigitMerger::new();
        let out = run(
            &mut m,
            &[(0, Rfc4733, '4'), (50, Rfc4733, '4'), (60, Inband, '4')],
        );
        assert_eq!(out, [('4', Rfc4733), ('4', Rfc4733)]);
        let mut m = DigitMerger::new();
        let out = run(
            &mut m,
            &[(0, Inband, '4'), (90, Inband, '4'), (95, SipInfo, '4')],
        );
        assert_eq!(out, [('4', Inband), ('4', Inband)]);
    }

    #[test]
    fn different_digits_always_pass_and_reset_reenables_inband() {
        let mut m = DigitMerger::new();
        let out = run(
            &mut m,
            &[(0, SipInfo, '1'), (10, Inband, '2'), (20, Rfc4733, '3')],
        );
        assert_eq!(out, [('1', SipInfo), ('2', Inband), ('3', Rfc4733)]);
        assert!(m.inband_suppressed());
        m.reset();
        assert!(!m.inband_suppressed());
        let out = run(&mut m, &[(0, Inband, '#')]);
        assert_eq!(out, [('#', Inband)]);
    }
}
