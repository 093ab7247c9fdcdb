//! SIP datagrams through the whole sans-IO core: parser, transactions, dialogs, SDP.
//!
//! The input is one or more datagrams separated by the 4-byte marker `00 ff 00 ff`; datagram
//! N comes from 127.0.0.(1 + N % 3) and one second after the one before. Calls are answered
//! (so dialogs, 2xx retransmission and in-dialog requests are reached); afterwards the clock
//! runs past every timer. Invariants: no panic; every response goes to a source that sent a
//! datagram (never to a Via or Contact address); the core's tables empty once the timers ran.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use wasm_ivr::sip::{Config, Event, Input, Output, SipCore};

const MARKER: &[u8] = &[0x00, 0xff, 0x00, 0xff];

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(MARKER.len()).position(|w| w == MARKER) {
        parts.push(&rest[..at]);
        rest = &rest[at + MARKER.len()..];
    }
    parts.push(rest);
    parts
}

fn drain(core: &mut SipCore, now: Instant, sources: &[SocketAddr]) {
    let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060);
    while let Some(out) = core.poll_output() {
        match out {
            Output::Transmit(t) => {
                if t.data.starts_with(b"SIP/2.0 ") {
                    assert!(
                        sources.contains(&t.to),
                        "a response went to {} instead of a source",
                        t.to
                    );
                }
            }
            Output::Event(Event::IncomingCall(call)) => {
                let sdp = wasm_ivr::sip::sdp::offer(local.ip(), 20_000);
                // Refused when the offer has no common codec: that is an answer too.
                let _ = core.answer(now, call.call, sdp);
            }
            Output::Event(_) => {}
            Output::Timeout(_) => break,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060);
    let mut core = SipCore::new(Config::new(local));
    let start = Instant::now();
    let mut now = start;
    let mut sources = Vec::new();
    for (n, datagram) in split(data).into_iter().enumerate().take(64) {
        let from = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (n % 3) as u8)),
            5070,
        );
        if !sources.contains(&from) {
            sources.push(from);
        }
        core.handle_input(Input::Datagram {
            now,
            from,
            data: datagram,
        });
        drain(&mut core, now, &sources);
        now += Duration::from_secs(1);
    }
    // Let every timer fire: retransmissions, Timer H/J, the answer timeout (180 s).
    for _ in 0..40 {
        now += Duration::from_secs(10);
        core.handle_input(Input::Timeout(now));
        drain(&mut core, now, &sources);
    }
    assert_eq!(
        core.transaction_count(),
        0,
        "transactions left after every timer"
    );
});
