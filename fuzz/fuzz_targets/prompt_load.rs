//! The prompt loader (WAV at any rate, depth and channel count, G.711 WAV, raw PCM) with the
//! default limits. Invariants: no panic; a loaded prompt has the same number of whole frames in
//! both codecs and respects the duration limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasm_ivr::media::codec::Codec;
use wasm_ivr::media::prompt::{EncodedPrompt, PromptFormat, PromptLimits};

fuzz_target!(|data: &[u8]| {
    let limits = PromptLimits::default();
    for format in [PromptFormat::Wav, PromptFormat::RawPcm] {
        if let Ok(prompt) = EncodedPrompt::from_bytes("fuzz", format, data, &limits) {
            for codec in [Codec::Pcmu, Codec::Pcma] {
                assert_eq!(prompt.frames(codec).len(), prompt.frame_count());
            }
            let seconds = prompt.frame_count() as u64 / 50;
            assert!(seconds <= limits.max_duration.as_secs() + 1);
        }
    }
});
