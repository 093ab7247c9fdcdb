//! SDP: parse an offer, answer it, and parse our own answer back. Invariants: no panic; an
//! answer we build always parses and offers exactly one audio stream on our address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr};
use wasm_ivr::sip::sdp;

fuzz_target!(|data: &[u8]| {
    let Ok(offer) = sdp::parse(data) else {
        return;
    };
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if let Ok(answer) = sdp::answer(&offer, local, 20_000) {
        let ours = sdp::parse(&answer.sdp).expect("our own answer parses");
        assert!(!ours.media.is_empty(), "our answer has media");
    }
    let _ = sdp::with_origin_version(data, 2);
});
