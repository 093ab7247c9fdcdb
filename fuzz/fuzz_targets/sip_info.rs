//! SIP INFO DTMF bodies (`application/dtmf-relay`, `application/dtmf`): the first byte picks
//! the content type. Invariant: no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasm_ivr::media::dtmf::parse_sip_info;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let content_type = match kind % 4 {
        0 => "application/dtmf-relay",
        1 => "application/dtmf",
        2 => "Application/DTMF-Relay; charset=utf-8",
        _ => "text/plain",
    };
    let _ = parse_sip_info(content_type, body);
});
