//! DTMF from all three places a caller's key press can arrive:
//!
//! - [`TelephoneEvent`] / [`Rfc4733Receiver`]: RFC 4733 telephone-events in RTP (the normal case),
//!   reported on the first packet of a press and de-duplicated by RTP timestamp;
//!   [`OutgoingEvent`] builds the packets to send a digit onwards;
//! - [`parse_sip_info`]: SIP INFO bodies (`application/dtmf-relay`, `application/dtmf`);
//! - [`InbandDetector`]: tones inside the G.711 audio, found with the Goertzel algorithm.
//!
//! [`super::digits::DigitMerger`] turns the three into one stream per call.

use std::fmt;
use std::time::Duration;

use thiserror::Error;

use super::codec::{Codec, FRAME_SAMPLES, SAMPLE_RATE};

/// One DTMF key: `0-9 * # A B C D`, stored as its RFC 4733 event code (0-15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digit(u8);

/// The keys in RFC 4733 event-code order.
const DIGIT_CHARS: [char; 16] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D',
];

impl Digit {
    /// All sixteen digits, in event-code order.
    pub fn all() -> impl Iterator<Item = Digit> {
        (0..16).map(Digit)
    }

    /// The digit for an RFC 4733 event code; `None` above 15 (flash-hook, modem tones, ...).
    pub const fn from_event(code: u8) -> Option<Digit> {
        if code < 16 { Some(Digit(code)) } else { None }
    }

    /// The digit for a key character (`a`-`d` accepted in lower case).
    pub fn from_char(c: char) -> Option<Digit> {
        let upper = c.to_ascii_uppercase();
        DIGIT_CHARS
            .iter()
            .position(|&k| k == upper)
            .map(|i| Digit(i as u8))
    }

    /// The RFC 4733 event code (0-15).
    pub const fn event(self) -> u8 {
        self.0
    }

    /// The key character: `0-9`, `*`, `#`, `A-D`.
    pub const fn as_char(self) -> char {
        DIGIT_CHARS[(self.0 & 0x0F) as usize]
    }
}

impl fmt::Display for Digit {
    /// Writes the key character.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_char())
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 4733 telephone-events
// ---------------------------------------------------------------------------------------------

/// Why a telephone-event payload was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TelephoneEventError {
    /// The payload is shorter than the 4-byte event block.
    #[error("telephone-event payload is {0} bytes, at least 4 are needed")]
    TooShort(usize),
}

/// One RFC 4733 §2.3 event block: event code, end bit, volume, duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code; 0-15 are the DTMF keys.
    pub event: u8,
    /// The E bit: this packet ends the event (senders repeat the end packet three times).
    pub end: bool,
    /// Power level in -dBm0 (0-63; larger is quieter).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units (samples at 8 kHz).
    pub duration: u16,
}

impl TelephoneEvent {
    /// Size of one event block in bytes.
    pub const LEN: usize = 4;

    /// Parses the first event block of a payload (extra bytes, such as padding, are ignored).
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, TelephoneEventError> {
        let b: &[u8; 4] = payload
            .first_chunk()
            .ok_or(TelephoneEventError::TooShort(payload.len()))?;
        Ok(TelephoneEvent {
            event: b[0],
            end: b[1] & 0x80 != 0,
            // Bit 6 is reserved (R): ignored on receipt as the RFC asks.
            volume: b[1] & 0x3F,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// The 4-byte wire form (the reserved bit is sent as 0, volume is capped at 63).
    pub fn to_bytes(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (if self.end { 0x80 } else { 0 }) | self.volume.min(63),
            d[0],
            d[1],
        ]
    }

    /// The key, when the event is a DTMF event.
    pub fn digit(&self) -> Option<Digit> {
        Digit::from_event(self.event)
    }
}

/// How many recent event timestamps are remembered to recognise retransmissions.
const RECENT_EVENTS: usize = 8;

/// Turns received telephone-event packets into one digit per key press.
///
/// A press is identified by its RTP timestamp (RFC 4733 §2.5.1: every packet of one event
/// carries the event's start time). The digit is reported on the first packet seen for a new
/// timestamp — so barge-in does not wait for the end of the key press — and never again for
/// that timestamp: progress updates, the three end packets and late retransmissions are all
/// recognised. A new timestamp is a new press, even for the same key. The one exception is an
/// event longer than the 16-bit duration field (~8 s), which RFC 4733 §2.5.1.3 continues in
/// a new segment with a new timestamp: that is recognised and not reported again.
#[derive(Debug, Clone, Default)]
pub struct Rfc4733Receiver {
    /// Ring of recently seen event timestamps.
    recent: [Option<u32>; RECENT_EVENTS],
    next_slot: usize,
    /// The latest event: (timestamp, event code, ended, duration).
    last: Option<(u32, u8, bool, u16)>,
}

impl Rfc4733Receiver {
    /// A receiver that has seen nothing yet.
    pub fn new() -> Rfc4733Receiver {
        Rfc4733Receiver::default()
    }

    /// Forgets all seen events (after an SSRC change or re-negotiation).
    pub fn reset(&mut self) {
        *self = Rfc4733Receiver::default();
    }

    /// Handles one telephone-event packet: its RTP timestamp and payload. Returns the digit
    /// when this packet starts a new key press.
    pub fn on_packet(
        &mut self,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<Option<Digit>, TelephoneEventError> {
        let ev = TelephoneEvent::parse(payload)?;
        let Some(digit) = ev.digit() else {
            // Not a key (flash-hook, fax tones...): nothing for an IVR to collect.
            return Ok(None);
        };
        if self.recent.contains(&Some(timestamp)) {
            if let Some(last) = self.last.as_mut().filter(|l| l.0 == timestamp) {
                last.2 |= ev.end;
                last.3 = last.3.max(ev.duration);
            }
            return Ok(None);
        }
        let continues_long_event = self.last.is_some_and(|(ts, code, ended, duration)| {
            // A new segment starts where the previous (maximal) one stopped.
            let delta = timestamp.wrapping_sub(ts);
            code == ev.event
                && !ended
                && duration >= u16::MAX - 2 * FRAME_SAMPLES as u16
                && delta >= u32::from(duration) - 2 * FRAME_SAMPLES as u32
                && delta <= u32::from(u16::MAX) + 2 * FRAME_SAMPLES as u32
        });
        self.recent[self.next_slot] = Some(timestamp);
        self.next_slot = (self.next_slot + 1) % RECENT_EVENTS;
        self.last = Some((timestamp, ev.event, ev.end, ev.duration));
        Ok(if continues_long_event {
            None
        } else {
            Some(digit)
        })
    }
}

/// The packets to send one digit as RFC 4733 events, one per packetisation interval.
///
/// Every packet carries the same RTP timestamp (the event start, chosen by the RTP sender);
/// the first is marked; the duration grows by one interval per packet; the final packet has
/// the E bit and is sent three times (RFC 4733 §2.5.1.4).
#[derive(Debug, Clone)]
pub struct OutgoingEvent {
    digit: Digit,
    volume: u8,
    total: u16,
    step: u16,
    sent: u16,
    end_packets_sent: u8,
}

impl OutgoingEvent {
    /// Number of times the final (E bit) packet is sent.
    pub const END_REPEATS: u8 = 3;

    /// A digit lasting `duration` (clamped to 20 ms ..= ~8 s), at `volume` -dBm0 (10 is
    /// typical), with one packet every 20 ms.
    pub fn new(digit: Digit, duration: Duration, volume: u8) -> OutgoingEvent {
        let samples = duration.as_millis().saturating_mul(u128::from(SAMPLE_RATE)) / 1000;
        let step = FRAME_SAMPLES as u16;
        OutgoingEvent {
            digit,
            volume: volume.min(63),
            total: samples.clamp(u128::from(step), u128::from(u16::MAX)) as u16,
            step,
            sent: 0,
            end_packets_sent: 0,
        }
    }

    /// The event's length in RTP timestamp units, for advancing the audio clock afterwards.
    pub fn duration_samples(&self) -> u32 {
        u32::from(self.total)
    }

    /// The next payload and whether its RTP marker bit must be set; `None` when done.
    pub fn next_packet(&mut self) -> Option<(TelephoneEvent, bool)> {
        let first = self.sent == 0;
        if self.sent < self.total {
            self.sent = self.sent.saturating_add(self.step).min(self.total);
        } else if self.end_packets_sent >= Self::END_REPEATS {
            return None;
        }
        let end = self.sent >= self.total;
        if end {
            self.end_packets_sent += 1;
        }
        Some((
            TelephoneEvent {
                event: self.digit.event(),
                end,
                volume: self.volume,
                duration: self.sent,
            },
            first,
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// SIP INFO
// ---------------------------------------------------------------------------------------------

/// A digit carried by a SIP INFO request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoDigit {
    /// The key.
    pub digit: Digit,
    /// The `Duration=` field of `application/dtmf-relay`, when present.
    pub duration: Option<Duration>,
}

/// Why a SIP INFO body did not yield a digit.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SipInfoError {
    /// The Content-Type is not a DTMF type (the INFO is for something else).
    #[error("INFO content type {0:?} does not carry DTMF")]
    NotDtmf(String),
    /// The body is not UTF-8 text.
    #[error("INFO DTMF body is not text")]
    NotText,
    /// `application/dtmf-relay` without a `Signal=` line.
    #[error("INFO dtmf-relay body has no Signal= line")]
    MissingSignal,
    /// The signal is not one key (`0-9 * # A-D`, or the event codes 10-15).
    #[error("INFO DTMF signal {0:?} is not a key")]
    BadSignal(String),
    /// The `Duration=` value is not a number of milliseconds.
    #[error("INFO dtmf-relay Duration {0:?} is not a number of milliseconds")]
    BadDuration(String),
}

/// Reads a digit from a SIP INFO body, given the request's Content-Type header value.
///
/// `application/dtmf-relay` is `Signal=5\r\nDuration=160\r\n` (keys and values are trimmed and
/// matched case-insensitively, `\n` line ends accepted, unknown lines ignored);
/// `application/dtmf` is the key alone. Some gateways send `*` and `#` as their event codes
/// 10 and 11: accepted.
pub fn parse_sip_info(content_type: &str, body: &[u8]) -> Result<InfoDigit, SipInfoError> {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let text = std::str::from_utf8(body).map_err(|_| SipInfoError::NotText)?;
    match mime.as_str() {
        "application/dtmf-relay" => {
            let mut signal = None;
            let mut duration = None;
            for line in text.lines() {
                let Some((key, value)) = line.split_once('=') else {
                    continue;
                };
                let value = value.trim();
                match key.trim().to_ascii_lowercase().as_str() {
                    "signal" => signal = Some(parse_signal(value)?),
                    "duration" => {
                        let ms: u64 = value
                            .parse()
                            .map_err(|_| SipInfoError::BadDuration(value.to_owned()))?;
                        duration = Some(Duration::from_millis(ms));
                    }
                    _ => {}
                }
            }
            Ok(InfoDigit {
                digit: signal.ok_or(SipInfoError::MissingSignal)?,
                duration,
            })
        }
        "application/dtmf" => Ok(InfoDigit {
            digit: parse_signal(text.trim())?,
            duration: None,
        }),
        _ => Err(SipInfoError::NotDtmf(content_type.trim().to_owned())),
    }
}

fn parse_signal(value: &str) -> Result<Digit, SipInfoError> {
    let bad = || SipInfoError::BadSignal(value.to_owned());
    let mut chars = value.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Digit::from_char(c).ok_or_else(bad),
        _ => match value.parse::<u8>() {
            Ok(code @ 10..=15) => Digit::from_event(code).ok_or_else(bad),
            _ => Err(bad()),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// In-band detection (Goertzel)
// ---------------------------------------------------------------------------------------------

/// Samples per analysis window (20 ms: 50 Hz bins, enough to separate the rows, 73 Hz apart,
/// once Hann-windowed).
const WINDOW: usize = 160;
/// A new window is analysed every 10 ms (half-overlapping windows).
const HOP: usize = 80;
/// Consecutive good windows that start a digit. Any 40 ms tone covers two consecutive windows
/// completely; a 20 ms tone can never fill two windows 80 samples apart to the ~85 % the
/// steadiness check demands.
const ONSET_WINDOWS: u8 = 2;
/// Consecutive windows without the digit that end it. A 10 ms drop-out inside a tone spoils
/// at most three windows; any 40 ms pause spoils at least five.
const RELEASE_WINDOWS: u8 = 4;
/// Row (low group) frequencies, Hz.
const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
/// Column (high group) frequencies, Hz.
const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
/// Side bins sit at ±5 %: a tone nearer a side bin than the centre is more than 2.5 % off —
/// between the ±1.5 % that must be accepted and the ±3.5 % that must be rejected.
const SIDE: f32 = 0.05;
/// Normal twist: the row may be up to 8 dB weaker than the column.
const NORMAL_TWIST: f32 = 6.309_573; // 10^(8/10)
/// Reverse twist: the column may be up to 4 dB weaker than the row.
const REVERSE_TWIST: f32 = 2.511_886; // 10^(4/10)
/// Minimum power per tone (a sine of amplitude ~300 of 32 767, about -38 dBm0 in G.711).
const MIN_TONE_POWER: f32 = 300.0 * 300.0 / 2.0;
/// The two tones must carry this share of the window's power: speech, music and noise spread
/// their power over many frequencies.
const MIN_PURITY: f32 = 0.6;
/// The best row (column) must beat the others in its group by this power ratio (6 dB).
const GROUP_DOMINANCE: f32 = 4.0;
/// Each quarter window must hold this share of the average quarter's energy: the tone must be
/// steady across the window, which rejects windows a tone only partly covers and speech onsets.
const MIN_QUARTER_SHARE: f32 = 0.55;

/// Bins analysed per window: centre, low side and high side for each of the eight tones.
const BINS: usize = 24;

/// An in-band DTMF detector for one call's received audio (8 kHz linear samples).
///
/// Feed it every received frame in order. Every 10 ms it analyses the last 20 ms through a
/// Hann window (whose low side lobes keep a strong column tone from distorting the row
/// measurement, which a rectangular window does by several dB) with Goertzel filters at the
/// eight DTMF frequencies and at ±5 % around each. A window is good for a digit when: both
/// tones are above the level floor; the twist is within 8 dB (row weaker) / 4 dB (column
/// weaker); each tone is nearer its nominal frequency than a side bin (so within ±2.5 %,
/// between the ±1.5 % to accept and the ±3.5 % to reject); each tone beats the rest of its
/// group by 6 dB; the two tones carry ≥ 60 % of the power (speech and noise do not); and the
/// energy is steady across the window's quarters. Two consecutive good windows report the
/// digit, once; four windows without it end the tone, after which the same or another digit
/// can be reported again.
#[derive(Debug, Clone)]
pub struct InbandDetector {
    /// Goertzel coefficients 2·cos(ω) for the 24 bins.
    coeffs: [f32; BINS],
    /// Hann window.
    window: [f32; WINDOW],
    /// The current window, oldest sample first; `buf[HOP..fill]` is the part still filling.
    buf: [f32; WINDOW],
    fill: usize,
    /// The digit of the current run of good windows and its length.
    run: Option<(Digit, u8)>,
    /// The digit already reported and still sounding.
    active: Option<Digit>,
    /// Consecutive windows without the active digit.
    misses: u8,
}

impl Default for InbandDetector {
    fn default() -> Self {
        InbandDetector::new()
    }
}

impl InbandDetector {
    /// A detector for 8 kHz audio.
    pub fn new() -> InbandDetector {
        let mut coeffs = [0.0; BINS];
        for (i, &f) in ROWS.iter().chain(COLS.iter()).enumerate() {
            for (j, freq) in [f, f * (1.0 - SIDE), f * (1.0 + SIDE)]
                .into_iter()
                .enumerate()
            {
                let w = std::f32::consts::TAU * freq / SAMPLE_RATE as f32;
                coeffs[i * 3 + j] = 2.0 * w.cos();
            }
        }
        let mut window = [0.0; WINDOW];
        for (n, w) in window.iter_mut().enumerate() {
            *w = 0.5 - 0.5 * (std::f32::consts::TAU * n as f32 / WINDOW as f32).cos();
        }
        InbandDetector {
            coeffs,
            window,
            buf: [0.0; WINDOW],
            // The first window is the first HOP samples after HOP samples of silence.
            fill: HOP,
            run: None,
            active: None,
            misses: 0,
        }
    }

    /// Forgets all audio and tone state (for example after a hold or a codec change).
    pub fn reset(&mut self) {
        *self = InbandDetector::new();
    }

    /// Feeds linear samples (any length; normally one 160-sample frame) and calls `on_digit`
    /// for each digit that starts in them.
    pub fn feed(&mut self, samples: &[i16], mut on_digit: impl FnMut(Digit)) {
        for &s in samples {
            self.buf[self.fill] = f32::from(s);
            self.fill += 1;
            if self.fill == WINDOW {
                let result = self.analyse();
                // Keep the newest half: it is the first half of the next window.
                self.buf.copy_within(HOP.., 0);
                self.fill = WINDOW - HOP;
                if let Some(d) = self.step(result) {
                    on_digit(d);
                }
            }
        }
    }

    /// Decodes a G.711 payload and feeds it.
    pub fn feed_g711(&mut self, codec: Codec, payload: &[u8], mut on_digit: impl FnMut(Digit)) {
        let mut pcm = [0i16; FRAME_SAMPLES];
        for chunk in payload.chunks(FRAME_SAMPLES) {
            let out = &mut pcm[..chunk.len()];
            for (o, &b) in out.iter_mut().zip(chunk) {
                *o = codec.decode_sample(b);
            }
            self.feed(out, &mut on_digit);
        }
    }

    /// The timing state machine: one window's result in, a new digit out.
    fn step(&mut self, result: Option<Digit>) -> Option<Digit> {
        if let Some(active) = self.active {
            if result == Some(active) {
                self.misses = 0;
            } else {
                self.misses += 1;
                if self.misses >= RELEASE_WINDOWS {
                    self.active = None;
                    self.misses = 0;
                }
            }
            // While a digit sounds (or is releasing), nothing new can start: a new digit
            // needs a gap.
            self.run = None;
            return None;
        }
        self.run = match (result, self.run) {
            (Some(d), Some((r, n))) if d == r => Some((d, n.saturating_add(1))),
            (Some(d), _) => Some((d, 1)),
            (None, _) => None,
        };
        match self.run {
            Some((d, n)) if n >= ONSET_WINDOWS => {
                self.active = Some(d);
                self.misses = 0;
                self.run = None;
                Some(d)
            }
            _ => None,
        }
    }

    /// Classifies the current window: the digit it holds, if it passes every check.
    fn analyse(&self) -> Option<Digit> {
        let x = &self.buf;
        // Steadiness and total energy.
        let mut quarters = [0.0f32; 4];
        for (i, &v) in x.iter().enumerate() {
            quarters[i * 4 / WINDOW] += v * v;
        }
        let energy: f32 = quarters.iter().sum();
        let mean_quarter = energy / 4.0;
        if energy <= 0.0
            || quarters
                .iter()
                .any(|&q| q < MIN_QUARTER_SHARE * mean_quarter)
        {
            return None;
        }

        // All 24 Goertzel filters in one pass over the windowed samples.
        let mut s1 = [0.0f32; BINS];
        let mut s2 = [0.0f32; BINS];
        for (&v, &w) in x.iter().zip(&self.window) {
            let v = v * w;
            for k in 0..BINS {
                let s0 = v + self.coeffs[k] * s1[k] - s2[k];
                s2[k] = s1[k];
                s1[k] = s0;
            }
        }
        // Tone power estimate: a sine of amplitude A at the bin frequency gives A²/2
        // (the Hann window's coherent gain is 1/2, hence the sum of the window is N/2).
        let gain = WINDOW as f32 / 2.0;
        let norm = 2.0 / (gain * gain);
        let mut power = [0.0f32; BINS];
        for k in 0..BINS {
            power[k] = (s1[k] * s1[k] + s2[k] * s2[k] - self.coeffs[k] * s1[k] * s2[k]) * norm;
        }
        let centre = |tone: usize| power[tone * 3];

        // The strongest tone of a group, if it dominates the other three.
        let best = |group: [usize; 4]| -> Option<usize> {
            let top = group
                .into_iter()
                .max_by(|&a, &b| centre(a).total_cmp(&centre(b)))?;
            let second = group
                .into_iter()
                .filter(|&t| t != top)
                .map(centre)
                .fold(0.0f32, f32::max);
            (centre(top) >= GROUP_DOMINANCE * second).then_some(top)
        };
        let row = best([0, 1, 2, 3])?;
        let col = best([4, 5, 6, 7])?;
        let (pr, pc) = (centre(row), centre(col));
        if pr < MIN_TONE_POWER || pc < MIN_TONE_POWER {
            return None;
        }
        if pc > pr * NORMAL_TWIST || pr > pc * REVERSE_TWIST {
            return None;
        }
        for tone in [row, col] {
            if centre(tone) < power[tone * 3 + 1] || centre(tone) < power[tone * 3 + 2] {
                return None; // nearer a side bin: off frequency
            }
        }
        let total_power = energy / WINDOW as f32;
        if pr + pc < MIN_PURITY * total_power {
            return None;
        }
        Digit::from_event(KEYPAD[row][col - 4])
    }
}

/// Event codes by (row, column) on the keypad.
const KEYPAD: [[u8; 4]; 4] = [
    [1, 2, 3, 12],   // 1 2 3 A
    [4, 5, 6, 13],   // 4 5 6 B
    [7, 8, 9, 14],   // 7 8 9 C
    [10, 0, 11, 15], // * 0 # D
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::f64::consts::TAU;

    // --- digits and RFC 4733 ---

    #[test]
    fn digit_mapping() {
        let s: String = Digit::all().map(|d| d.as_char()).collect();
        assert_eq!(s, "0123456789*#ABCD");
        assert_eq!(Digit::from_char('*').unwrap().event(), 10);
        assert_eq!(Digit::from_char('#').unwrap().event(), 11);
        assert_eq!(Digit::from_char('d').unwrap().event(), 15);
        assert_eq!(Digit::from_char('E'), None);
        assert_eq!(Digit::from_event(16), None);
        assert_eq!(Digit::from_event(11).unwrap().to_string(), "#");
    }

    #[test]
    fn telephone_event_parse_and_build() {
        // Event 5, E bit set, volume 10, duration 800.
        let ev = TelephoneEvent::parse(&[5, 0x8A, 0x03, 0x20]).unwrap();
        assert_eq!(
            ev,
            TelephoneEvent {
                event: 5,
                end: true,
                volume: 10,
                duration: 800
            }
        );
        assert_eq!(ev.to_bytes(), [5, 0x8A, 0x03, 0x20]);
        // The reserved bit is ignored on receipt.
        assert_eq!(
            TelephoneEvent::parse(&[11, 0x4A, 0, 160]).unwrap().volume,
            10
        );
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3]),
            Err(TelephoneEventError::TooShort(3))
        );
        assert_eq!(ev.digit(), Digit::from_char('5'));
    }

    fn pkt(event: u8, end: bool, duration: u16) -> [u8; 4] {
        TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        }
        .to_bytes()
    }

    #[test]
    fn one_digit_per_press_reported_on_first_packet() {
        let mut rx = Rfc4733Receiver::new();
        let ts = 1_000;
        // Start, updates, three end packets, then a late retransmission.
        assert_eq!(
            rx.on_packet(ts, &pkt(1, false, 0)).unwrap(),
            Digit::from_char('1')
        );
        for d in [160, 320, 480] {
            assert_eq!(rx.on_packet(ts, &pkt(1, false, d)).unwrap(), None);
        }
        for _ in 0..3 {
            assert_eq!(rx.on_packet(ts, &pkt(1, true, 640)).unwrap(), None);
        }
        // Same key again: a new timestamp is a new press.
        assert_eq!(
            rx.on_packet(ts + 2000, &pkt(1, false, 160)).unwrap(),
            Digit::from_char('1')
        );
        assert_eq!(rx.on_packet(ts + 2000, &pkt(1, true, 800)).unwrap(), None);
        // A late retransmission of the first press is still recognised.
        assert_eq!(rx.on_packet(ts, &pkt(1, true, 640)).unwrap(), None);
        // Lost start packets: the first end packet reports the press.
        assert_eq!(
            rx.on_packet(ts + 4000, &pkt(11, true, 800)).unwrap(),
            Digit::from_char('#')
        );
        assert_eq!(rx.on_packet(ts + 4000, &pkt(11, true, 800)).unwrap(), None);
        // Non-DTMF events (16 = flash) are ignored, and short payloads are errors.
        assert_eq!(rx.on_packet(ts + 6000, &pkt(16, false, 160)).unwrap(), None);
        assert!(rx.on_packet(ts + 6000, &[1, 2]).is_err());
    }

    #[test]
    fn the_sip_tester_pcap_pattern() {
        // dtmf_2833_*.pcap: 10 packets, same timestamp, the last three with E.
        let mut rx = Rfc4733Receiver::new();
        let mut got = Vec::new();
        for i in 0..10u16 {
            let end = i >= 7;
            if let Some(d) = rx
                .on_packet(0xFFFF_FF00, &pkt(10, end, (i.min(7) + 1) * 160))
                .unwrap()
            {
                got.push(d);
            }
        }
        assert_eq!(got, vec![Digit::from_char('*').unwrap()]);
    }

    #[test]
    fn long_event_segments_are_one_press() {
        let mut rx = Rfc4733Receiver::new();
        assert!(rx.on_packet(5000, &pkt(3, false, 160)).unwrap().is_some());
        assert_eq!(rx.on_packet(5000, &pkt(3, false, u16::MAX)).unwrap(), None);
        // RFC 4733 §2.5.1.3: the next segment starts where the previous one ended.
        let next = 5000u32.wrapping_add(u32::from(u16::MAX));
        assert_eq!(rx.on_packet(next, &pkt(3, false, 160)).unwrap(), None);
        assert_eq!(rx.on_packet(next, &pkt(3, true, 4000)).unwrap(), None);
    }

    #[test]
    fn outgoing_event_packets() {
        let mut ev = OutgoingEvent::new(
            Digit::from_char('7').unwrap(),
            Duration::from_millis(100),
            10,
        );
        assert_eq!(ev.duration_samples(), 800);
        let mut packets = Vec::new();
        while let Some(p) = ev.next_packet() {
            packets.push(p);
        }
        let durations: Vec<u16> = packets.iter().map(|(e, _)| e.duration).collect();
        assert_eq!(durations, [160, 320, 480, 640, 800, 800, 800]);
        let ends: Vec<bool> = packets.iter().map(|(e, _)| e.end).collect();
        assert_eq!(ends, [false, false, false, false, true, true, true]);
        let marks: Vec<bool> = packets.iter().map(|(_, m)| *m).collect();
        assert_eq!(marks, [true, false, false, false, false, false, false]);
        assert!(packets.iter().all(|(e, _)| e.event == 7 && e.volume == 10));

        // Round trip through the receiver: exactly one digit.
        let mut rx = Rfc4733Receiver::new();
        let mut ev = OutgoingEvent::new(
            Digit::from_char('7').unwrap(),
            Duration::from_millis(100),
            10,
        );
        let mut digits = 0;
        while let Some((e, _)) = ev.next_packet() {
            digits += rx.on_packet(42, &e.to_bytes()).unwrap().iter().count();
        }
        assert_eq!(digits, 1);
    }

    // --- SIP INFO ---

    #[test]
    fn sip_info_bodies() {
        let d = parse_sip_info("application/dtmf-relay", b"Signal=1\r\nDuration=160\r\n").unwrap();
        assert_eq!(d.digit, Digit::from_char('1').unwrap());
        assert_eq!(d.duration, Some(Duration::from_millis(160)));
        let d = parse_sip_info(
            "Application/DTMF-Relay; charset=utf-8",
            b"signal= #\nduration = 250",
        )
        .unwrap();
        assert_eq!(d.digit.as_char(), '#');
        let d = parse_sip_info("application/dtmf-relay", b"Signal=10\r\n").unwrap();
        assert_eq!((d.digit.as_char(), d.duration), ('*', None));
        assert_eq!(
            parse_sip_info("application/dtmf", b"5\r\n")
                .unwrap()
                .digit
                .as_char(),
            '5'
        );
        assert_eq!(
            parse_sip_info("application/dtmf", b"b")
                .unwrap()
                .digit
                .as_char(),
            'B'
        );
        assert_eq!(
            parse_sip_info("application/dtmf", b"11")
                .unwrap()
                .digit
                .as_char(),
            '#'
        );

        assert_eq!(
            parse_sip_info("application/dtmf-relay", b"Duration=160\r\n"),
            Err(SipInfoError::MissingSignal)
        );
        assert_eq!(
            parse_sip_info("application/dtmf-relay", b"Signal=X\r\n"),
            Err(SipInfoError::BadSignal("X".into()))
        );
        assert_eq!(
            parse_sip_info("application/dtmf-relay", b"Signal=\r\n"),
            Err(SipInfoError::BadSignal(String::new()))
        );
        assert_eq!(
            parse_sip_info("application/dtmf-relay", b"Signal=1\r\nDuration=long\r\n"),
            Err(SipInfoError::BadDuration("long".into()))
        );
        assert_eq!(
            parse_sip_info("application/dtmf", b"12 3"),
            Err(SipInfoError::BadSignal("12 3".into()))
        );
        assert_eq!(
            parse_sip_info("application/dtmf", b""),
            Err(SipInfoError::BadSignal(String::new()))
        );
        assert_eq!(
            parse_sip_info("application/dtmf", &[0xFF, 0xFE]),
            Err(SipInfoError::NotText)
        );
        assert_eq!(
            parse_sip_info("application/sdp", b"v=0"),
            Err(SipInfoError::NotDtmf("application/sdp".into()))
        );
    }

    // --- in-band ---

    /// Nominal (row, column) frequencies of a digit.
    fn freqs(d: Digit) -> (f64, f64) {
        for (r, row) in KEYPAD.iter().enumerate() {
            for (c, &code) in row.iter().enumerate() {
                if code == d.event() {
                    return (f64::from(ROWS[r]), f64::from(COLS[c]));
                }
            }
        }
        unreachable!()
    }

    /// Appends `ms` of a two-tone signal; amplitudes are per tone, in linear units.
    fn tone(out: &mut Vec<i16>, fr: f64, fc: f64, ar: f64, ac: f64, ms: usize) {
        let start = out.len();
        for i in 0..ms * 8 {
            let t = (start + i) as f64 / 8000.0;
            let v = ar * (TAU * fr * t).sin() + ac * (TAU * fc * t + 0.7).sin();
            out.push(v.round().clamp(-32768.0, 32767.0) as i16);
        }
    }

    fn silence(out: &mut Vec<i16>, samples: usize) {
        out.extend(std::iter::repeat_n(0, samples));
    }

    /// Runs the detector frame by frame (160 samples) and collects the digits.
    fn detect(signal: &[i16]) -> String {
        let mut det = InbandDetector::new();
        let mut got = String::new();
        for frame in signal.chunks(FRAME_SAMPLES) {
            det.feed(frame, |d| got.push(d.as_char()));
        }
        // Flush with silence so a tone at the very end is complete.
        det.feed(&[0; 480], |d| got.push(d.as_char()));
        got
    }

    /// ~-10 dBm0 per tone in μ-law terms.
    const AMP: f64 = 7000.0;

    fn single(
        d: Digit,
        scale_r: f64,
        scale_c: f64,
        ar: f64,
        ac: f64,
        ms: usize,
        offset: usize,
    ) -> String {
        let (fr, fc) = freqs(d);
        let mut s = Vec::new();
        silence(&mut s, offset);
        tone(&mut s, fr * scale_r, fc * scale_c, ar, ac, ms);
        silence(&mut s, 400);
        detect(&s)
    }

    #[test]
    fn all_sixteen_digits_at_40ms_any_alignment() {
        for d in Digit::all() {
            for offset in 0..WINDOW {
                assert_eq!(
                    single(d, 1.0, 1.0, AMP, AMP, 40, offset),
                    d.to_string(),
                    "{d} offset {offset}"
                );
            }
        }
    }

    #[test]
    fn twenty_ms_tones_are_rejected() {
        for d in Digit::all() {
            for offset in 0..WINDOW {
                assert_eq!(
                    single(d, 1.0, 1.0, AMP, AMP, 20, offset),
                    "",
                    "{d} offset {offset}"
                );
            }
        }
    }

    #[test]
    fn frequency_deviation() {
        for d in Digit::all() {
            for s in [1.015, 1.012, 0.985, 0.988] {
                assert_eq!(single(d, s, s, AMP, AMP, 60, 33), d.to_string(), "{d} x{s}");
                // One tone off, the other exact.
                assert_eq!(
                    single(d, s, 1.0, AMP, AMP, 60, 33),
                    d.to_string(),
                    "{d} row x{s}"
                );
                assert_eq!(
                    single(d, 1.0, s, AMP, AMP, 60, 33),
                    d.to_string(),
                    "{d} col x{s}"
                );
            }
            for s in [1.035, 1.05, 0.965, 0.95] {
                assert_eq!(single(d, s, s, AMP, AMP, 60, 33), "", "{d} x{s}");
                assert_eq!(single(d, s, 1.0, AMP, AMP, 60, 33), "", "{d} row x{s}");
                assert_eq!(single(d, 1.0, s, AMP, AMP, 60, 33), "", "{d} col x{s}");
            }
        }
    }

    fn db(x: f64) -> f64 {
        10f64.powf(x / 20.0)
    }

    #[test]
    fn twist_limits() {
        for d in Digit::all() {
            for offset in [5, 45] {
                // Normal twist: row weaker by up to 8 dB.
                let row = |level| single(d, 1.0, 1.0, AMP / db(level), AMP, 60, offset);
                assert_eq!(row(7.5), d.to_string(), "{d} row -7.5 dB");
                assert_eq!(row(8.5), "", "{d} row -8.5 dB");
                // Reverse twist: column weaker by up to 4 dB.
                let col = |level| single(d, 1.0, 1.0, AMP, AMP / db(level), 60, offset);
                assert_eq!(col(3.5), d.to_string(), "{d} col -3.5 dB");
                assert_eq!(col(4.5), "", "{d} col -4.5 dB");
            }
        }
    }

    #[test]
    fn repeated_digit_after_50ms_gap_is_two_digits() {
        for d in Digit::all() {
            let (fr, fc) = freqs(d);
            for offset in [0, 40, 90] {
                let mut s = Vec::new();
                silence(&mut s, offset);
                tone(&mut s, fr, fc, AMP, AMP, 50);
                silence(&mut s, 400); // 50 ms
                tone(&mut s, fr, fc, AMP, AMP, 50);
                assert_eq!(detect(&s), format!("{d}{d}"), "{d} offset {offset}");
            }
        }
    }

    #[test]
    fn long_tone_and_short_dropout_are_one_digit() {
        let mut s = Vec::new();
        tone(&mut s, 852.0, 1477.0, AMP, AMP, 500);
        silence(&mut s, 80); // 10 ms drop-out
        tone(&mut s, 852.0, 1477.0, AMP, AMP, 200);
        assert_eq!(detect(&s), "9");
    }

    #[test]
    fn sequence_of_digits_through_g711() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let mut s = Vec::new();
            for c in "0123456789*#ABCD".chars() {
                let (fr, fc) = freqs(Digit::from_char(c).unwrap());
                tone(&mut s, fr, fc, 3000.0, 3000.0, 70);
                silence(&mut s, 480);
            }
            let mut enc = vec![0u8; s.len()];
            codec.encode(&s, &mut enc).unwrap();
            let mut det = InbandDetector::new();
            let mut got = String::new();
            for frame in enc.chunks(FRAME_SAMPLES) {
                det.feed_g711(codec, frame, |d| got.push(d.as_char()));
            }
            assert_eq!(got, "0123456789*#ABCD", "{codec:?}");
        }
    }

    /// A small deterministic PRNG for test noise (xorshift).
    fn noise(seed: &mut u64) -> f64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    #[test]
    fn noise_silence_and_speech_yield_nothing() {
        assert_eq!(detect(&[0; 16000]), "");
        let mut seed = 0x2545F4914F6CDD1D;
        for amp in [100.0, 3000.0, 20000.0] {
            let s: Vec<i16> = (0..16000)
                .map(|_| (amp * noise(&mut seed)) as i16)
                .collect();
            assert_eq!(detect(&s), "", "white noise {amp}");
        }
        // Voiced-speech-like: a gliding 110-190 Hz fundamental with 1/k harmonics, syllabic
        // amplitude modulation.
        let mut phase = 0.0f64;
        let s: Vec<i16> = (0..24000)
            .map(|i| {
                let t = i as f64 / 8000.0;
                let f0 = 150.0 + 40.0 * (TAU * 0.7 * t).sin();
                phase += TAU * f0 / 8000.0;
                let env = 0.5 + 0.5 * (TAU * 4.0 * t).sin().abs();
                let v: f64 = (1..30).map(|k| (k as f64 * phase).sin() / k as f64).sum();
                (6000.0 * env * v) as i16
            })
            .collect();
        assert_eq!(detect(&s), "", "speech-like");
        // Two tones from the same group are not a digit; a single tone is not a digit.
        let mut s = Vec::new();
        tone(&mut s, 697.0, 770.0, AMP, AMP, 100);
        tone(&mut s, 1209.0, 1336.0, AMP, AMP, 100);
        tone(&mut s, 1000.0, 1000.0, AMP, 0.0, 100);
        assert_eq!(detect(&s), "");
        // Too quiet.
        assert_eq!(
            single(
                Digit::from_char('5').unwrap(),
                1.0,
                1.0,
                150.0,
                150.0,
                100,
                0
            ),
            ""
        );
    }

    #[test]
    fn tone_in_moderate_noise_is_detected() {
        let mut seed = 7;
        let mut s = Vec::new();
        tone(&mut s, 770.0, 1336.0, AMP, AMP, 80);
        let s: Vec<i16> = s
            .iter()
            .map(|&v| (f64::from(v) + 300.0 * noise(&mut seed)) as i16)
            .collect();
        assert_eq!(detect(&s), "5");
    }

    #[test]
    #[allow(clippy::print_stdout)]
    fn rough_timing() {
        // Rough, debug-build numbers printed with --nocapture; not an assertion.
        let mut s = Vec::new();
        tone(&mut s, 941.0, 1209.0, AMP, AMP, 2000);
        let mut det = InbandDetector::new();
        let start = std::time::Instant::now();
        let mut n = 0;
        for _ in 0..10 {
            for frame in s.chunks_exact(FRAME_SAMPLES) {
                det.feed(frame, |_| {});
                n += 1;
            }
        }
        let per = start.elapsed() / n;
        println!("rough: in-band detector {per:?} per 160-sample frame ({n} frames)");
    }
}
