//! RTP for one call: a sender that numbers and stamps outgoing packets, and a receiver that
//! parses incoming ones and sorts audio from telephone-events.
//!
//! Both are plain state machines over byte slices (packets are built and parsed with
//! `rtp-rs`): no sockets, no clocks. The sender writes into a caller-provided buffer, so
//! playout allocates nothing per packet.

use rand::random;
use rtp_rs::{RtpPacketBuildError, RtpPacketBuilder, RtpReader, Seq};
use thiserror::Error;

use super::codec::Codec;
use super::dtmf::TelephoneEvent;

/// Length of an RTP header without CSRCs or extensions (all the sender writes).
pub const RTP_HEADER_LEN: usize = 12;

/// A receive buffer size that holds any RTP packet on a 1500-byte MTU path.
pub const MAX_PACKET_LEN: usize = 1500;

/// Errors from building or parsing RTP packets.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RtpError {
    /// The output buffer cannot hold the packet.
    #[error("RTP buffer too small: {needed} bytes needed, {got} available")]
    BufferTooSmall {
        /// Bytes the packet needs.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// Payload types are 7 bits.
    #[error("invalid RTP payload type {0} (must be 0-127)")]
    InvalidPayloadType(u8),
    /// The datagram is not a well-formed RTP version 2 packet.
    #[error("malformed RTP packet: {0}")]
    Malformed(String),
}

/// The sending side of one call's RTP stream (RFC 3550 §5.1).
///
/// SSRC, first sequence number and first timestamp are random (RFC 3550 §5.1 asks for random
/// starts so a known-plaintext attack on SRTP and stream confusion are harder). Each audio
/// packet advances the sequence number by one and the timestamp by its sample count (160 for
/// a 20 ms G.711 frame). After a pause in sending ([`RtpSender::skip`]) the timestamp jumps by
/// the silent time and the next audio packet carries the marker bit, as does the very first.
#[derive(Debug, Clone)]
pub struct RtpSender {
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    payload_type: u8,
    marker_pending: bool,
}

impl RtpSender {
    /// A sender for audio with `payload_type` (0 for PCMU, 8 for PCMA), random SSRC, sequence
    /// number and timestamp.
    pub fn new(payload_type: u8) -> Result<RtpSender, RtpError> {
        RtpSender::with_initial(payload_type, random(), random(), random())
    }

    /// A sender with chosen initial values (for tests and for resuming a stream).
    pub fn with_initial(
        payload_type: u8,
        ssrc: u32,
        sequence: u16,
        timestamp: u32,
    ) -> Result<RtpSender, RtpError> {
        check_pt(payload_type)?;
        Ok(RtpSender {
            ssrc,
            sequence,
            timestamp,
            payload_type,
            marker_pending: true,
        })
    }

    /// Our SSRC (goes in RTCP and, if ever needed, in SDP `a=ssrc`).
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The sequence number the next packet will carry.
    pub fn next_sequence(&self) -> u16 {
        self.sequence
    }

    /// The timestamp the next audio packet will carry; also the start time to give a
    /// telephone-event sent now.
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    /// The audio payload type.
    pub fn payload_type(&self) -> u8 {
        self.payload_type
    }

    /// Changes the audio payload type (after a re-INVITE picked another codec).
    pub fn set_payload_type(&mut self, payload_type: u8) -> Result<(), RtpError> {
        self.payload_type = check_pt(payload_type)?;
        Ok(())
    }

    /// Marks the next audio packet as the start of a talkspurt.
    pub fn start_talkspurt(&mut self) {
        self.marker_pending = true;
    }

    /// Lets `samples` of time pass without sending (silence suppression, a DTMF event that
    /// replaced the audio): the timestamp moves on and the next audio packet is marked.
    pub fn skip(&mut self, samples: u32) {
        self.timestamp = self.timestamp.wrapping_add(samples);
        self.marker_pending = true;
    }

    /// Writes one audio packet carrying `payload` (G.711: one byte per sample) into `buf` and
    /// returns its length. Nothing changes if it fails.
    pub fn write_audio(&mut self, payload: &[u8], buf: &mut [u8]) -> Result<usize, RtpError> {
        let len = build(
            RtpPacketBuilder::new()
                .payload_type(self.payload_type)
                .ssrc(self.ssrc)
                .sequence(Seq::from(self.sequence))
                .timestamp(self.timestamp)
                .marked(self.marker_pending)
                .payload(payload),
            buf,
        )?;
        self.sequence = self.sequence.wrapping_add(1);
        // G.711 payload bytes are samples; a payload over 4 GiB cannot exist in a datagram.
        self.timestamp = self.timestamp.wrapping_add(payload.len() as u32);
        self.marker_pending = false;
        Ok(len)
    }

    /// Writes one telephone-event packet (RFC 4733) on the same SSRC and sequence space.
    ///
    /// `event_timestamp` is the event's start (take [`RtpSender::timestamp`] when the event
    /// begins; every packet of the event repeats it) and `marker` is set on its first packet.
    /// The audio timestamp does not move: call [`RtpSender::skip`] with the event's duration
    /// when it is over.
    pub fn write_event(
        &mut self,
        event_payload_type: u8,
        event: &TelephoneEvent,
        marker: bool,
        event_timestamp: u32,
        buf: &mut [u8],
    ) -> Result<usize, RtpError> {
        check_pt(event_payload_type)?;
        let payload = event.to_bytes();
        let len = build(
            RtpPacketBuilder::new()
                .payload_type(event_payload_type)
                .ssrc(self.ssrc)
                .sequence(Seq::from(self.sequence))
                .timestamp(event_timestamp)
                .marked(marker)
                .payload(&payload),
            buf,
        )?;
        self.sequence = self.sequence.wrapping_add(1);
        Ok(len)
    }
}

fn check_pt(pt: u8) -> Result<u8, RtpError> {
    if pt > 127 {
        Err(RtpError::InvalidPayloadType(pt))
    } else {
        Ok(pt)
    }
}

fn build(builder: RtpPacketBuilder<'_>, buf: &mut [u8]) -> Result<usize, RtpError> {
    builder.build_into(buf).map_err(|e| match e {
        RtpPacketBuildError::BufferTooSmall => RtpError::BufferTooSmall {
            needed: builder.target_length(),
            got: buf.len(),
        },
        RtpPacketBuildError::PayloadTypeInvalid => RtpError::InvalidPayloadType(0xFF),
        // The sender never adds header extensions.
        other => RtpError::Malformed(format!("{other:?}")),
    })
}

/// The SSRC of a datagram that looks like RTP (version 2, a whole fixed header), read without
/// parsing the rest: enough to decide whose packet it is before any state changes.
pub fn rtp_ssrc(packet: &[u8]) -> Option<u32> {
    if packet.len() < RTP_HEADER_LEN || packet[0] >> 6 != 2 {
        return None;
    }
    let bytes: [u8; 4] = packet.get(8..12)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// Whether an RTP-looking datagram is RTCP multiplexed on the RTP port (RFC 5761 §4: the
/// second byte, read as an RTCP packet type, is 192-223).
pub fn is_rtcp(packet: &[u8]) -> bool {
    packet.get(1).is_some_and(|pt| (192..=223).contains(pt))
}

/// What a received packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpPayload<'a> {
    /// G.711 audio: decode it, feed the in-band detector, record it.
    Audio {
        /// The law, from the static payload type.
        codec: Codec,
        /// The encoded samples.
        payload: &'a [u8],
    },
    /// An RFC 4733 telephone-event (the negotiated dynamic payload type): give it to
    /// [`super::dtmf::Rfc4733Receiver`] with the packet's timestamp.
    TelephoneEvent {
        /// The event block(s).
        payload: &'a [u8],
    },
    /// Anything else (comfort noise, a codec we did not offer, RTCP on a muxed port):
    /// ignored by the runtime.
    Other {
        /// The payload type seen.
        payload_type: u8,
    },
}

/// Where a packet's sequence number falls relative to the stream so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqOrder {
    /// The first packet of this SSRC.
    First,
    /// The next expected packet.
    InOrder,
    /// Newer than expected: `lost` packets are missing in between (or still on their way).
    Gap {
        /// Number of skipped sequence numbers.
        lost: u16,
    },
    /// Older than the newest seen: a duplicate or a reordered packet. Audio can be dropped;
    /// telephone-events are still worth reading (they are de-duplicated by timestamp).
    Late,
    /// A jump too large to be loss (the sender restarted its numbering): tracking restarted.
    Restart,
}

/// One parsed incoming packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedPacket<'a> {
    /// The sender's SSRC.
    pub ssrc: u32,
    /// The packet's sequence number.
    pub sequence: u16,
    /// The packet's RTP timestamp.
    pub timestamp: u32,
    /// The marker bit (start of talkspurt, or first packet of a telephone-event).
    pub marker: bool,
    /// Where the sequence number falls.
    pub order: SeqOrder,
    /// The classified payload.
    pub payload: RtpPayload<'a>,
}

/// Counters for the call record and for diagnosing one-way audio.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtpStats {
    /// Packets accepted.
    pub received: u64,
    /// Sequence numbers skipped (an estimate: late arrivals are not subtracted).
    pub lost: u64,
    /// Duplicates and reordered packets.
    pub late: u64,
    /// Times the remote SSRC changed.
    pub ssrc_changes: u32,
}

/// A forward jump larger than this is a restart, not loss (RFC 3550 A.1 uses 3000).
const MAX_DROPOUT: u16 = 3000;
/// A backward jump larger than this is a restart, not reordering (RFC 3550 A.1 uses 100).
const MAX_MISORDER: u16 = 100;

/// The receiving side of one call's RTP stream.
///
/// Latches onto the remote SSRC (a new SSRC restarts sequence tracking: carriers switch
/// media servers mid-call), tracks the highest sequence number with wrap-around, and sorts
/// payloads: PT 0/8 audio, the negotiated telephone-event PT, everything else.
#[derive(Debug, Clone)]
pub struct RtpReceiver {
    telephone_event_pt: Option<u8>,
    /// (remote SSRC, highest sequence number seen).
    remote: Option<(u32, u16)>,
    stats: RtpStats,
}

impl RtpReceiver {
    /// A receiver; `telephone_event_pt` is the payload type SDP negotiated for
    /// `telephone-event/8000` (usually 101), `None` if it was not negotiated.
    pub fn new(telephone_event_pt: Option<u8>) -> RtpReceiver {
        RtpReceiver {
            telephone_event_pt,
            remote: None,
            stats: RtpStats::default(),
        }
    }

    /// Changes the telephone-event payload type (after a re-INVITE).
    pub fn set_telephone_event_pt(&mut self, pt: Option<u8>) {
        self.telephone_event_pt = pt;
    }

    /// The SSRC of the stream being received.
    pub fn remote_ssrc(&self) -> Option<u32> {
        self.remote.map(|(ssrc, _)| ssrc)
    }

    /// Counters so far.
    pub fn stats(&self) -> RtpStats {
        self.stats
    }

    /// Parses one datagram. The result borrows the payload from `packet`.
    pub fn receive<'a>(&mut self, packet: &'a [u8]) -> Result<ReceivedPacket<'a>, RtpError> {
        let reader = RtpReader::new(packet).map_err(|e| RtpError::Malformed(format!("{e:?}")))?;
        let ssrc = reader.ssrc();
        let sequence = u16::from(reader.sequence_number());
        let order = match self.remote {
            Some((known, max)) if known == ssrc => {
                let ahead = sequence.wrapping_sub(max);
                let behind = max.wrapping_sub(sequence);
                if ahead == 0 {
                    SeqOrder::Late
                } else if ahead == 1 {
                    SeqOrder::InOrder
                } else if ahead < MAX_DROPOUT {
                    SeqOrder::Gap { lost: ahead - 1 }
                } else if behind <= MAX_MISORDER {
                    SeqOrder::Late
                } else {
                    SeqOrder::Restart
                }
            }
            Some(_) => {
                self.stats.ssrc_changes += 1;
                SeqOrder::First
            }
            None => SeqOrder::First,
        };
        match order {
            SeqOrder::Late => self.stats.late += 1,
            SeqOrder::Gap { lost } => self.stats.lost += u64::from(lost),
            _ => {}
        }
        if order != SeqOrder::Late {
            self.remote = Some((ssrc, sequence));
        }
        self.stats.received += 1;

        let payload_type = reader.payload_type();
        let body = reader.payload();
        let payload = if Some(payload_type) == self.telephone_event_pt {
            RtpPayload::TelephoneEvent { payload: body }
        } else if let Some(codec) = Codec::from_payload_type(payload_type) {
            RtpPayload::Audio {
                codec,
                payload: body,
            }
        } else {
            RtpPayload::Other { payload_type }
        };
        Ok(ReceivedPacket {
            ssrc,
            sequence,
            timestamp: reader.timestamp(),
            marker: reader.mark(),
            order,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::media::dtmf::{Digit, OutgoingEvent, Rfc4733Receiver};
    use std::time::Duration;

    #[test]
    fn ssrc_and_rtcp_are_read_from_the_header() {
        let mut tx = RtpSender::with_initial(0, 0xDEAD_BEEF, 1, 1).unwrap();
        let mut buf = [0u8; 200];
        let n = tx.write_audio(&[0xFF; 160], &mut buf).unwrap();
        assert_eq!(rtp_ssrc(&buf[..n]), Some(0xDEAD_BEEF));
        assert!(!is_rtcp(&buf[..n]));
        assert_eq!(rtp_ssrc(&buf[..11]), None);
        assert_eq!(rtp_ssrc(b"INVITE sip:x SIP/2.0"), None);
        // A receiver report (PT 201) on a muxed port.
        let rr = [0x81, 201, 0, 7, 1, 2, 3, 4, 0, 0, 0, 0];
        assert!(is_rtcp(&rr));
    }

    #[test]
    fn sender_numbers_and_stamps_packets() {
        let mut tx = RtpSender::with_initial(0, 0xDEAD_BEEF, 65534, u32::MAX - 100).unwrap();
        let mut buf = [0u8; 200];
        let frame = [0xFFu8; 160];
        let mut seen = Vec::new();
        for _ in 0..3 {
            let n = tx.write_audio(&frame, &mut buf).unwrap();
            assert_eq!(n, RTP_HEADER_LEN + 160);
            let r = RtpReader::new(&buf[..n]).unwrap();
            assert_eq!(
                (r.ssrc(), r.payload_type(), r.payload()),
                (0xDEAD_BEEF, 0, &frame[..])
            );
            seen.push((u16::from(r.sequence_number()), r.timestamp(), r.mark()));
        }
        // Sequence and timestamp wrap; only the first packet is marked.
        assert_eq!(
            seen,
            [
                (65534, u32::MAX - 100, true),
                (65535, 59, false),
                (0, 219, false)
            ]
        );
        // 100 ms of silence: timestamp jumps 800, next packet marked, sequence continuous.
        tx.skip(800);
        let n = tx.write_audio(&frame, &mut buf).unwrap();
        let r = RtpReader::new(&buf[..n]).unwrap();
        assert_eq!(
            (u16::from(r.sequence_number()), r.timestamp(), r.mark()),
            (1, 1179, true)
        );
        tx.start_talkspurt();
        let n = tx.write_audio(&frame, &mut buf).unwrap();
        assert!(RtpReader::new(&buf[..n]).unwrap().mark());
    }

    #[test]
    fn sender_errors_leave_state_unchanged() {
        let mut tx = RtpSender::with_initial(8, 1, 10, 1000).unwrap();
        let e = tx.write_audio(&[0xD5; 160], &mut [0u8; 100]).unwrap_err();
        assert_eq!(
            e,
            RtpError::BufferTooSmall {
                needed: 172,
                got: 100
            }
        );
        assert_eq!((tx.next_sequence(), tx.timestamp()), (10, 1000));
        assert_eq!(
            RtpSender::new(128).unwrap_err(),
            RtpError::InvalidPayloadType(128)
        );
        assert!(tx.set_payload_type(200).is_err());
        assert_eq!(tx.payload_type(), 8);
    }

    #[test]
    fn random_starts() {
        let a = RtpSender::new(0).unwrap();
        let b = RtpSender::new(0).unwrap();
        // 2^-80 chance of a false failure.
        assert!(
            (a.ssrc(), a.next_sequence(), a.timestamp())
                != (b.ssrc(), b.next_sequence(), b.timestamp())
        );
    }

    #[test]
    fn dtmf_out_and_back_in() {
        let mut tx = RtpSender::with_initial(0, 77, 100, 8000).unwrap();
        let mut rx = RtpReceiver::new(Some(101));
        let mut dtmf = Rfc4733Receiver::new();
        let mut buf = [0u8; MAX_PACKET_LEN];
        let mut digits = Vec::new();

        let n = tx.write_audio(&[0xFF; 160], &mut buf).unwrap();
        assert!(matches!(
            rx.receive(&buf[..n]).unwrap().payload,
            RtpPayload::Audio { .. }
        ));

        let start = tx.timestamp();
        let mut ev = OutgoingEvent::new(
            Digit::from_char('#').unwrap(),
            Duration::from_millis(80),
            10,
        );
        while let Some((e, marker)) = ev.next_packet() {
            let n = tx.write_event(101, &e, marker, start, &mut buf).unwrap();
            let p = rx.receive(&buf[..n]).unwrap();
            assert_eq!(
                (p.timestamp, p.marker, p.order),
                (start, marker, SeqOrder::InOrder)
            );
            let RtpPayload::TelephoneEvent { payload } = p.payload else {
                panic!("not an event: {p:?}");
            };
            digits.extend(dtmf.on_packet(p.timestamp, payload).unwrap());
        }
        assert_eq!(digits, [Digit::from_char('#').unwrap()]);
        tx.skip(ev.duration_samples());
        let n = tx.write_audio(&[0xFF; 160], &mut buf).unwrap();
        let p = rx.receive(&buf[..n]).unwrap();
        assert_eq!((p.timestamp, p.marker), (start + 640, true));
        assert_eq!(rx.stats().lost, 0);
    }

    fn packet(pt: u8, ssrc: u32, seq: u16, payload: &[u8]) -> Vec<u8> {
        RtpPacketBuilder::new()
            .payload_type(pt)
            .ssrc(ssrc)
            .sequence(Seq::from(seq))
            .timestamp(u32::from(seq) * 160)
            .payload(payload)
            .build()
            .unwrap()
    }

    #[test]
    fn receiver_classifies_payloads() {
        let mut rx = RtpReceiver::new(Some(101));
        let p = packet(0, 5, 1, &[1, 2]);
        assert_eq!(
            rx.receive(&p).unwrap().payload,
            RtpPayload::Audio {
                codec: Codec::Pcmu,
                payload: &[1, 2]
            }
        );
        let p = packet(8, 5, 2, &[3]);
        assert_eq!(
            rx.receive(&p).unwrap().payload,
            RtpPayload::Audio {
                codec: Codec::Pcma,
                payload: &[3]
            }
        );
        let p = packet(101, 5, 3, &[1, 0, 0, 160]);
        assert_eq!(
            rx.receive(&p).unwrap().payload,
            RtpPayload::TelephoneEvent {
                payload: &[1, 0, 0, 160]
            }
        );
        let p = packet(13, 5, 4, &[0x40]); // comfort noise
        assert_eq!(
            rx.receive(&p).unwrap().payload,
            RtpPayload::Other { payload_type: 13 }
        );
        rx.set_telephone_event_pt(Some(96));
        let p = packet(101, 5, 5, &[1, 0, 0, 160]);
        assert_eq!(
            rx.receive(&p).unwrap().payload,
            RtpPayload::Other { payload_type: 101 }
        );

        // Padding is not payload.
        let padded = RtpPacketBuilder::new()
            .payload_type(0)
            .ssrc(5)
            .sequence(Seq::from(6))
            .padded(rtp_rs::Pad::round_to(4))
            .payload(&[9, 9, 9])
            .build()
            .unwrap();
        assert_eq!(padded.len(), 16);
        assert_eq!(
            rx.receive(&padded).unwrap().payload,
            RtpPayload::Audio {
                codec: Codec::Pcmu,
                payload: &[9, 9, 9]
            }
        );
    }

    #[test]
    fn receiver_tracks_sequence_and_ssrc() {
        let mut rx = RtpReceiver::new(Some(101));
        let orders: Vec<SeqOrder> = [65533u16, 65534, 65535, 0, 3, 1, 3, 60000]
            .iter()
            .map(|&s| rx.receive(&packet(0, 9, s, &[0xFF])).unwrap().order)
            .collect();
        assert_eq!(
            orders,
            [
                SeqOrder::First,
                SeqOrder::InOrder,
                SeqOrder::InOrder,
                SeqOrder::InOrder, // wrapped
                SeqOrder::Gap { lost: 2 },
                SeqOrder::Late, // reordered
                SeqOrder::Late, // duplicate
                SeqOrder::Restart,
            ]
        );
        assert_eq!(rx.remote_ssrc(), Some(9));
        // A new SSRC restarts tracking.
        assert_eq!(
            rx.receive(&packet(0, 10, 5, &[0xFF])).unwrap().order,
            SeqOrder::First
        );
        assert_eq!(
            rx.receive(&packet(0, 10, 6, &[0xFF])).unwrap().order,
            SeqOrder::InOrder
        );
        assert_eq!(
            rx.stats(),
            RtpStats {
                received: 10,
                lost: 2,
                late: 2,
                ssrc_changes: 1
            }
        );
    }

    #[test]
    fn receiver_rejects_garbage() {
        let mut rx = RtpReceiver::new(None);
        assert!(matches!(
            rx.receive(&[0x80, 0, 0]),
            Err(RtpError::Malformed(_))
        ));
        let mut p = packet(0, 1, 1, &[1]);
        p[0] = 0x40; // version 1
        assert!(matches!(rx.receive(&p), Err(RtpError::Malformed(_))));
        let mut p = packet(0, 1, 1, &[1]);
        p[0] |= 0x0F; // 15 CSRCs that are not there
        assert!(matches!(rx.receive(&p), Err(RtpError::Malformed(_))));
        let mut p = packet(0, 1, 1, &[1, 2, 3, 0]);
        p[0] |= 0x20; // padding flag with a zero padding length
        assert!(matches!(rx.receive(&p), Err(RtpError::Malformed(_))));
        assert_eq!(rx.stats().received, 0);
    }

    #[test]
    #[allow(clippy::print_stdout)]
    fn rough_timing() {
        // Rough, debug-build numbers printed with --nocapture; not an assertion.
        let mut tx = RtpSender::with_initial(0, 1, 0, 0).unwrap();
        let mut rx = RtpReceiver::new(Some(101));
        let mut buf = [0u8; MAX_PACKET_LEN];
        let frame = [0xFFu8; 160];
        let n = 100_000u32;
        let start = std::time::Instant::now();
        let mut total = 0;
        for _ in 0..n {
            total += tx.write_audio(&frame, &mut buf).unwrap();
        }
        let build = start.elapsed() / n;
        let start = std::time::Instant::now();
        for _ in 0..n {
            total += rx.receive(&buf[..172]).unwrap().sequence as usize;
        }
        let parse = start.elapsed() / n;
        println!("rough: RTP build {build:?}/packet, parse+classify {parse:?}/packet ({total})");
    }
}
