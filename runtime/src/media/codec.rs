//! G.711 PCMU (μ-law) and PCMA (A-law): the two codecs every SIP peer supports.
//!
//! The companding itself comes from `audio-codec-algorithms`: its encoders are checked upstream
//! against the ITU-T G.191 reference tools for all 65 536 inputs and its decoder tables were
//! generated with them, it has no dependencies and forbids `unsafe` and panics. This module only
//! adds what the runtime needs around it: a [`Codec`] enum tied to the RTP payload types, the
//! codecs' silence bytes, and slice helpers.

use audio_codec_algorithms::{decode_alaw, decode_ulaw, encode_alaw, encode_ulaw};
use thiserror::Error;

/// Samples per second of every G.711 stream (and of everything else in `media`).
pub const SAMPLE_RATE: u32 = 8000;

/// Samples (and, for G.711, payload bytes) in one 20 ms frame: the packetisation the runtime sends.
pub const FRAME_SAMPLES: usize = 160;

/// One of the two G.711 laws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// μ-law, RTP static payload type 0 (North America, Japan).
    Pcmu,
    /// A-law, RTP static payload type 8 (the rest of the world).
    Pcma,
}

/// Errors from the slice helpers (programming errors, but reported rather than panicking).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    /// The output slice cannot hold one output value per input value.
    #[error("output buffer too small: {needed} values needed, {got} available")]
    BufferTooSmall {
        /// Values the input needs.
        needed: usize,
        /// Length of the output slice given.
        got: usize,
    },
}

impl Codec {
    /// The static RTP payload type (RFC 3551): 0 for PCMU, 8 for PCMA.
    pub const fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The codec for a static payload type, `None` for anything else.
    pub const fn from_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// The SDP encoding name (`a=rtpmap:0 PCMU/8000`).
    pub const fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The byte that encodes a zero sample: 0xFF for μ-law, 0xD5 for A-law.
    ///
    /// Used to pad the last frame of a prompt and to send silence; a zero *byte* would be a
    /// full-scale click in either law.
    pub const fn silence_byte(self) -> u8 {
        match self {
            Codec::Pcmu => 0xFF,
            Codec::Pcma => 0xD5,
        }
    }

    /// Encodes one 16-bit linear sample.
    #[inline]
    pub fn encode_sample(self, sample: i16) -> u8 {
        match self {
            Codec::Pcmu => encode_ulaw(sample),
            Codec::Pcma => encode_alaw(sample),
        }
    }

    /// Decodes one byte to a 16-bit linear sample.
    #[inline]
    pub fn decode_sample(self, byte: u8) -> i16 {
        match self {
            Codec::Pcmu => decode_ulaw(byte),
            Codec::Pcma => decode_alaw(byte),
        }
    }

    /// Encodes `pcm` into the start of `out`; returns the number of bytes written (`pcm.len()`).
    pub fn encode(self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        let got = out.len();
        let out = out.get_mut(..pcm.len()).ok_or(CodecError::BufferTooSmall {
            needed: pcm.len(),
            got,
        })?;
        // One match per slice, not per sample, so the inner loops stay branch-free.
        match self {
            Codec::Pcmu => out
                .iter_mut()
                .zip(pcm)
                .for_each(|(o, &s)| *o = encode_ulaw(s)),
            Codec::Pcma => out
                .iter_mut()
                .zip(pcm)
                .for_each(|(o, &s)| *o = encode_alaw(s)),
        }
        Ok(pcm.len())
    }

    /// Decodes `payload` into the start of `out`; returns the number of samples written.
    pub fn decode(self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let got = out.len();
        let out = out
            .get_mut(..payload.len())
            .ok_or(CodecError::BufferTooSmall {
                needed: payload.len(),
                got,
            })?;
        match self {
            Codec::Pcmu => out
                .iter_mut()
                .zip(payload)
                .for_each(|(o, &b)| *o = decode_ulaw(b)),
            Codec::Pcma => out
                .iter_mut()
                .zip(payload)
                .for_each(|(o, &b)| *o = decode_alaw(b)),
        }
        Ok(payload.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn known_vectors() {
        // Silence: the classic values every G.711 implementation agrees on.
        assert_eq!(Codec::Pcmu.encode_sample(0), 0xFF);
        assert_eq!(Codec::Pcma.encode_sample(0), 0xD5);
        assert_eq!(Codec::Pcmu.decode_sample(0xFF), 0);
        assert_eq!(Codec::Pcmu.decode_sample(0x7F), 0); // μ-law's "negative zero"
        assert_eq!(Codec::Pcma.decode_sample(0xD5), 8); // A-law has no zero: smallest step is ±8
        assert_eq!(Codec::Pcma.decode_sample(0x55), -8);
        // Full scale (G.191 decoder outputs).
        assert_eq!(Codec::Pcmu.decode_sample(0x80), 32124);
        assert_eq!(Codec::Pcmu.decode_sample(0x00), -32124);
        assert_eq!(Codec::Pcma.decode_sample(0xAA), 32256);
        assert_eq!(Codec::Pcma.decode_sample(0x2A), -32256);
        assert_eq!(Codec::Pcmu.encode_sample(i16::MAX), 0x80);
        assert_eq!(Codec::Pcmu.encode_sample(i16::MIN), 0x00);
        assert_eq!(Codec::Pcma.encode_sample(i16::MAX), 0xAA);
        assert_eq!(Codec::Pcma.encode_sample(i16::MIN), 0x2A);
        assert_eq!(Codec::Pcmu.silence_byte(), Codec::Pcmu.encode_sample(0));
        assert_eq!(Codec::Pcma.silence_byte(), Codec::Pcma.encode_sample(0));
    }

    #[test]
    fn every_code_word_round_trips() {
        // decode → encode is the identity on code words (except μ-law's two zeros).
        for codec in [Codec::Pcmu, Codec::Pcma] {
            for b in 0..=255u8 {
                let again = codec.encode_sample(codec.decode_sample(b));
                if codec == Codec::Pcmu && b == 0x7F {
                    assert_eq!(again, 0xFF);
                } else {
                    assert_eq!(again, b, "{codec:?} {b:#04x}");
                }
            }
        }
    }

    #[test]
    fn round_trip_error_is_bounded_by_the_segment_step() {
        // Quantisation error of a companding law: at most half a step of the segment the
        // sample falls in; steps double per segment, so the bound is relative (~1/32 of the
        // magnitude) above a small absolute floor.
        for codec in [Codec::Pcmu, Codec::Pcma] {
            for s in i16::MIN..=i16::MAX {
                let back = codec.decode_sample(codec.encode_sample(s));
                let err = (i32::from(s) - i32::from(back)).abs();
                let mag = i32::from(s).abs();
                // The top segment saturates at ±32124 (μ) / ±32256 (A).
                let bound = 16
                    .max(mag / 32 + 8)
                    .max(if mag > 31_000 { mag - 31_000 } else { 0 });
                assert!(
                    err <= bound,
                    "{codec:?}: {s} -> {back} (err {err}, bound {bound})"
                );
            }
        }
    }

    #[test]
    fn monotonic() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let mut prev = i16::MIN;
            for s in (i16::MIN..=i16::MAX).step_by(7) {
                let back = codec.decode_sample(codec.encode_sample(s));
                assert!(back >= prev, "{codec:?} not monotonic at {s}");
                prev = back;
            }
        }
    }

    #[test]
    fn slices_and_payload_types() {
        let pcm = [0i16, 1000, -1000, 32767];
        let mut enc = [0u8; 4];
        assert_eq!(Codec::Pcma.encode(&pcm, &mut enc).unwrap(), 4);
        let mut dec = [0i16; 8];
        assert_eq!(Codec::Pcma.decode(&enc, &mut dec).unwrap(), 4);
        assert_eq!(dec[1], 1008);
        assert_eq!(
            Codec::Pcmu.encode(&pcm, &mut [0u8; 3]),
            Err(CodecError::BufferTooSmall { needed: 4, got: 3 })
        );
        assert_eq!(Codec::from_payload_type(0), Some(Codec::Pcmu));
        assert_eq!(Codec::from_payload_type(8), Some(Codec::Pcma));
        assert_eq!(Codec::from_payload_type(101), None);
        assert_eq!(Codec::Pcma.payload_type(), 8);
        assert_eq!(Codec::Pcmu.name(), "PCMU");
    }
}
