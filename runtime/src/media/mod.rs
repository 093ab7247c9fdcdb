//! Media primitives: prompts, G.711, RTP, DTMF. All sans-IO: no sockets, no tokio, no clocks —
//! callers pass bytes, samples and `Instant`s in, and get bytes and digits out, so every piece
//! is tested with synthetic input and virtual time.
//!
//! # Sending: load → encode once → per-call RTP sender
//!
//! ```text
//! audio/NAME.wav|.pcm ──prompt::EncodedPrompt::load──▶ EncodedPrompt (8 kHz, PCMU + PCMA
//!                     (hound / G.711 WAV / raw PCM,      20 ms frames, Arc-shared by all calls)
//!                      mix to mono, rubato resample)          │ frames(codec)
//!                                                             ▼
//!                            per call: rtp::RtpSender::write_audio(frame, &mut buf) ─▶ socket
//!                                      (random SSRC/seq/ts, +160 per frame, marker after skip)
//! ```
//! A prompt is decoded, resampled and encoded once, when it is loaded; playing it is a
//! 160-byte copy into a packet buffer every 20 ms. The pacer that calls `write_audio` on
//! time lives with the call's media task; DTMF can be sent onwards with
//! [`dtmf::OutgoingEvent`] + [`rtp::RtpSender::write_event`].
//!
//! # Receiving: RTP / INFO / in-band → merger → one digit stream
//!
//! ```text
//! datagram ─rtp::RtpReceiver::receive─┬─ Audio{codec,payload} ─▶ dtmf::InbandDetector::feed_g711 ─┐
//!                                     │                          (skipped once the merger says   │
//!                                     │                           inband_suppressed())           │
//!                                     └─ TelephoneEvent ─▶ dtmf::Rfc4733Receiver::on_packet ─────┤
//! SIP INFO body ─▶ dtmf::parse_sip_info ──────────────────────────────────────────────────────────┤
//!                                                                                                 ▼
//!                                          digits::DigitMerger::push(source, digit, now) ─▶ gather
//! ```
//! Each source reports one digit per key press on its own (RFC 4733 keyed by RTP timestamp,
//! in-band by tone on/off); the merger removes the copies a carrier sends through two paths.
//!
//! # Modules
//! - [`codec`]: G.711 μ-law / A-law (`audio-codec-algorithms`, G.191-verified).
//! - [`prompt`]: prompt loading, resampling, pre-encoding.
//! - [`rtp`]: per-call RTP sender and receiver (`rtp-rs`).
//! - [`dtmf`]: RFC 4733 events, SIP INFO bodies, Goertzel in-band detector.
//! - [`digits`]: the per-call digit merger.
//! - [`library`]: the audio folder loaded once into shared, pre-encoded prompts (the one part
//!   that reads files).

pub mod codec;
pub mod digits;
pub mod dtmf;
pub mod library;
pub mod prompt;
pub mod rtp;
