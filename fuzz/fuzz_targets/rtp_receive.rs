//! The RTP receive path: a sequence of packets (split on `00 ff 00 ff`) through the receiver,
//! telephone-events through the RFC 4733 receiver, audio through the in-band detector.
//! Invariant: no panic, whatever the headers, extensions, padding or payloads say.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasm_ivr::media::dtmf::{InbandDetector, Rfc4733Receiver};
use wasm_ivr::media::rtp::{RtpPayload, RtpReceiver};

fuzz_target!(|data: &[u8]| {
    let mut receiver = RtpReceiver::new(Some(101));
    let mut events = Rfc4733Receiver::new();
    let mut inband = InbandDetector::new();
    let marker: &[u8] = &[0x00, 0xff, 0x00, 0xff];
    let mut rest = data;
    loop {
        let (packet, next) = match rest.windows(4).position(|w| w == marker) {
            Some(at) => (&rest[..at], Some(&rest[at + 4..])),
            None => (rest, None),
        };
        if let Ok(received) = receiver.receive(packet) {
            match received.payload {
                RtpPayload::TelephoneEvent { payload } => {
                    let _ = events.on_packet(received.timestamp, payload);
                }
                RtpPayload::Audio { codec, payload } => {
                    inband.feed_g711(codec, payload, |_| {});
                }
                _ => {}
            }
        }
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
});
