//! The Goertzel in-band detector on arbitrary 16-bit samples, in arbitrary frame sizes.
//! Invariants: no panic; at most one digit per 40 ms of audio (a tone needs that long).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasm_ivr::media::dtmf::InbandDetector;

fuzz_target!(|data: &[u8]| {
    let Some((&frame, bytes)) = data.split_first() else {
        return;
    };
    let samples: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    let mut detector = InbandDetector::new();
    let mut digits = 0usize;
    for chunk in samples.chunks(usize::from(frame) + 1) {
        detector.feed(chunk, |_| digits += 1);
    }
    assert!(
        digits <= samples.len() / 320 + 1,
        "{digits} digits from {} samples",
        samples.len()
    );
});
