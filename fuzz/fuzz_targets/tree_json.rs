//! The tree JSON parser and validator (no audio folder: the draft rules). Invariants: no panic;
//! a tree that validates without errors has a lowered form, and one with errors has none.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasm_ivr::tree::source::{ValidateOptions, check_text};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let checked = check_text("fuzz.json", text, &ValidateOptions::default());
    let has_errors = checked.errors().next().is_some();
    assert_eq!(checked.lowered.is_some(), !has_errors);
});
