//! A test IVR for the engine's own tests. Its `NAME.toml` picks what it does:
//!
//! - `counter`: bumps a global counter and labels the step `count-N` (per-call isolation: every
//!   call must see `count-1`);
//! - `trap`: panics (a trap); `loop`: spins forever; `oom`: allocates until memory runs out;
//! - `error`: returns an error from `handle-call`;
//! - `print`: writes to stdout and stderr, then hangs up;
//! - `sub`: enters the IVR named by `sub` as a sub-menu, then labels `back` and hangs up;
//! - `menu`: a one-key menu: 1 → transfer to `target` (a SIP URI), anything else → hang up;
//! - `burn`: does `iterations` rounds of pure computation (a fixed amount of its own CPU
//!   work, whatever the machine's load), labels `burned`, hangs up;
//! - `dnc`: labels what it was told about the do-not-call list: `listed`, `not-listed`, or
//!   `lookup-failed` (the runtime's `X-IVR-DNC-Lookup: failed` header), then hangs up.

use std::sync::atomic::{AtomicU32, Ordering};
use wasm_ivr_sdk::{self as ivr, CallInfo, Destination, GatherResult, Ivr};

#[derive(serde::Deserialize)]
struct Settings {
    mode: String,
    #[serde(default)]
    sub: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    iterations: u64,
}

static CALLS: AtomicU32 = AtomicU32::new(0);

struct Testbed;

impl Ivr for Testbed {
    fn handle_call(call: CallInfo) -> Result<(), String> {
        let settings: Settings = ivr::config_as().map_err(|e| e.to_string())?;
        ivr::step(&settings.mode);
        match settings.mode.as_str() {
            "counter" => {
                let n = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
                ivr::step(&format!("count-{n}"));
                ivr::hangup(&[]);
            }
            "trap" => panic!("deliberate trap"),
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "error" => return Err("deliberate failure".into()),
            "print" => {
                println!("hello from the guest's stdout");
                eprintln!("hello from the guest's stderr");
                ivr::hangup(&[]);
            }
            "sub" => {
                ivr::transfer(
                    &Destination::Ivr(settings.sub.clone()),
                    &[("from", "testbed")],
                )
                .map_err(|e| format!("sub-menu: {e:?}"))?;
                ivr::step("back");
                ivr::hangup(&[]);
            }
            "menu" => {
                let choice = ivr::Gather::new().prompt(ivr::say("Press 1")).run();
                match choice {
                    Ok(GatherResult::Digits(d)) if d == "1" => {
                        if let Err(e) =
                            ivr::transfer(&Destination::SipUri(settings.target.clone()), &[])
                        {
                            ivr::step("transfer-failed");
                            ivr::log(ivr::LogLevel::Warn, &format!("{e:?}"));
                            ivr::hangup(&[]);
                        }
                    }
                    Ok(_) => ivr::hangup(&[]),
                    Err(_) => return Ok(()),
                }
            }
            "burn" => {
                let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
                for i in 0..settings.iterations {
                    x = std::hint::black_box(x.rotate_left(5) ^ i).wrapping_mul(31);
                }
                std::hint::black_box(x);
                ivr::step("burned");
                ivr::hangup(&[]);
            }
            "dnc" => {
                let failed = call.headers.iter().any(|(name, value)| {
                    name.eq_ignore_ascii_case("X-IVR-DNC-Lookup") && value == "failed"
                });
                ivr::step(match (failed, call.caller_on_dnc_list) {
                    (true, _) => "lookup-failed",
                    (false, true) => "listed",
                    (false, false) => "not-listed",
                });
                ivr::hangup(&[]);
            }
            other => return Err(format!("unknown mode '{other}'")),
        }
        Ok(())
    }
}

ivr::export_ivr!(Testbed);
