//! `routes.toml` and `wasm-ivr.toml`: the folder's route table and the server's settings file
//! format. Invariant: no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = wasm_ivr::engine::registry::parse_routes(text);
    let _ = toml::from_str::<wasm_ivr::config::FileConfig>(text);
});
