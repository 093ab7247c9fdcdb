//! The TCP stream framer: bytes in any split, messages and keep-alives out. Invariants: no
//! panic, no frame larger than the limit, and the framer never holds more than the limit plus
//! one push of bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasm_ivr::sip::stream::{Frame, StreamFramer};

const LIMIT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // The first byte picks how the stream is cut into reads.
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(cut % 64) + 1;
    let mut framer = StreamFramer::new(LIMIT);
    for piece in bytes.chunks(chunk) {
        framer.push(piece);
        loop {
            match framer.next_frame() {
                Ok(Some(Frame::Message(message))) => {
                    assert!(message.len() <= LIMIT, "a frame over the limit");
                }
                Ok(Some(Frame::KeepAlive)) => {}
                Ok(None) => break,
                // A broken stream: the connection would be closed here.
                Err(_) => return,
            }
        }
    }
});
