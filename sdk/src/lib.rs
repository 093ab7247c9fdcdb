//! The Rust SDK for writing wasm-ivr IVRs.
//!
//! An IVR is a WebAssembly component that handles one call: it plays prompts, gathers keys and
//! ends the call by transferring it, hanging up or suppressing the caller. This crate wraps the
//! WIT contract (`wit/ivr.wit`) in a small Rust API:
//!
//! - [`Ivr`] is the trait you implement, and [`export_ivr!`] exports it as the component's
//!   `handle-call`;
//! - [`play`], [`Gather`], [`transfer`], [`hangup`], [`suppress`] drive the call;
//! - [`step`] labels where the caller is (traces, call records, per-step metrics);
//! - [`config`] / [`config_as`] read the IVR's settings, [`info`] the call's details.
//!
//! ```no_run
//! use wasm_ivr_sdk::{self as ivr, CallError, CallInfo, Destination, GatherResult, Ivr};
//!
//! struct Hello;
//!
//! impl Ivr for Hello {
//!     fn handle_call(_call: CallInfo) -> Result<(), String> {
//!         ivr::step("menu");
//!         let choice = ivr::Gather::new()
//!             .prompt(ivr::file("menu.wav"))
//!             .timeout_ms(4000)
//!             .run();
//!         match choice {
//!             Ok(GatherResult::Digits(d)) if d == "1" => {
//!                 let _ = ivr::transfer(&Destination::Default, &[("reason", "sales")]);
//!             }
//!             Err(CallError::HungUp) => return Ok(()),
//!             _ => ivr::hangup(&[ivr::say("Goodbye.")]),
//!         }
//!         Ok(())
//!     }
//! }
//!
//! ivr::export_ivr!(Hello);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release`; the `.wasm` in
//! `target/wasm32-wasip2/release/` is the component to drop into the runtime's IVR folder.

#![allow(unsafe_code)] // wit-bindgen's generated glue is unsafe by nature; our own code is not.

/// The raw bindings generated from `wit/ivr.wit`, for what the wrapper does not cover.
#[allow(missing_docs, clippy::too_many_arguments)] // generated; the WIT file documents every item
pub mod bindings {
    wit_bindgen::generate!({
        world: "ivr",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_ivr_world",
        default_bindings_module: "wasm_ivr_sdk::bindings",
        generate_all,
    });
}

use bindings::wasm_ivr::ivr::call as host;
pub use bindings::wasm_ivr::ivr::types::{
    CallError, CallInfo, Destination, GatherOptions, GatherResult, LogLevel, Prompt, Speech,
    TransferFailure,
};

/// What an IVR implements: handle one call from answer to end.
pub trait Ivr {
    /// Handles the call. Return `Err` with a reason when the IVR cannot go on; the runtime logs
    /// it and ends the call. Returning `Ok` without ending the call hangs up (or, in a sub-menu,
    /// returns the caller to the IVR that entered this one).
    fn handle_call(call: CallInfo) -> Result<(), String>;
}

/// Exports a type implementing [`Ivr`] as the component's `handle-call`.
///
/// ```ignore
/// wasm_ivr_sdk::export_ivr!(MyIvr);
/// ```
#[macro_export]
macro_rules! export_ivr {
    ($ty:ident) => {
        const _: () = {
            struct __WasmIvrExport;
            impl $crate::bindings::Guest for __WasmIvrExport {
                fn handle_call(
                    info: $crate::CallInfo,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    <$ty as $crate::Ivr>::handle_call(info)
                }
            }
            $crate::bindings::__export_ivr_world!(__WasmIvrExport);
        };
    };
}

/// A prompt that plays a file from the runtime's audio folder, e.g. `file("welcome.wav")`.
pub fn file(name: impl Into<String>) -> Prompt {
    Prompt::File(name.into())
}

/// A prompt spoken by the runtime's TTS engine in the default voice.
pub fn say(text: impl Into<String>) -> Prompt {
    Prompt::Say(Speech {
        text: text.into(),
        voice: None,
    })
}

/// A prompt spoken by the runtime's TTS engine in the named voice.
pub fn say_with_voice(text: impl Into<String>, voice: impl Into<String>) -> Prompt {
    Prompt::Say(Speech {
        text: text.into(),
        voice: Some(voice.into()),
    })
}

/// A prompt of silence, in milliseconds.
pub fn silence(ms: u32) -> Prompt {
    Prompt::Silence(ms)
}

/// The details of the call being handled (caller, DID, headers, ...).
pub fn info() -> CallInfo {
    host::info()
}

/// Labels the step the caller is in; the label appears in traces, call records and metrics.
///
/// ```no_run
/// wasm_ivr_sdk::step("pin-entry");
/// ```
pub fn step(name: &str) {
    host::step(name)
}

/// Plays prompts to the caller and waits for them to finish.
///
/// ```no_run
/// use wasm_ivr_sdk as ivr;
/// ivr::play(&[ivr::file("hours.wav"), ivr::silence(500)])?;
/// # Ok::<(), ivr::CallError>(())
/// ```
pub fn play(prompts: &[Prompt]) -> Result<(), CallError> {
    host::play(prompts)
}

/// Transfers the call; `context` travels with it as key/value pairs (SIP headers on real calls).
///
/// ```no_run
/// use wasm_ivr_sdk::{self as ivr, Destination};
/// ivr::transfer(&Destination::Internal("200".into()), &[("account", "42")])?;
/// # Ok::<(), ivr::CallError>(())
/// ```
pub fn transfer(to: &Destination, context: &[(&str, &str)]) -> Result<(), CallError> {
    let context: Vec<(String, String)> = context
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    host::transfer(to, &context)
}

/// Plays `goodbye` and ends the call.
///
/// ```no_run
/// wasm_ivr_sdk::hangup(&[wasm_ivr_sdk::say("Goodbye.")]);
/// ```
pub fn hangup(goodbye: &[Prompt]) {
    host::hangup(goodbye)
}

/// Puts the caller on the do-not-call list, plays `goodbye` and ends the call.
///
/// ```no_run
/// wasm_ivr_sdk::suppress(&[wasm_ivr_sdk::say("You will not be called again.")]);
/// ```
pub fn suppress(goodbye: &[Prompt]) {
    host::suppress(goodbye)
}

/// Writes a line to the runtime's log, tagged with the call.
///
/// ```no_run
/// wasm_ivr_sdk::log(wasm_ivr_sdk::LogLevel::Info, "caller chose sales");
/// ```
pub fn log(level: LogLevel, message: &str) {
    host::log(level, message)
}

/// The IVR's settings as JSON text (`{}` when it has none).
pub fn config() -> String {
    bindings::wasm_ivr::ivr::config::get()
}

/// The IVR's settings parsed into your own type.
///
/// ```no_run
/// #[derive(serde::Deserialize)]
/// struct Settings { open_hour: u8 }
/// let settings: Settings = wasm_ivr_sdk::config_as().map_err(|e| e.to_string())?;
/// # Ok::<(), String>(())
/// ```
#[cfg(feature = "json-config")]
pub fn config_as<T: serde::de::DeserializeOwned>() -> Result<T, serde_json::Error> {
    serde_json::from_str(&config())
}

/// Builds and runs a gather: prompts, then keys from the caller.
///
/// Defaults: one key, no terminator, 5 s for the first key, 3 s between keys, barge-in on,
/// type-ahead kept.
///
/// ```no_run
/// use wasm_ivr_sdk::{self as ivr, GatherResult};
/// let pin = ivr::Gather::new()
///     .prompt(ivr::say("Enter your PIN, then press hash."))
///     .max_digits(6)
///     .terminators("#")
///     .run()?;
/// # Ok::<(), ivr::CallError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Gather {
    options: GatherOptions,
}

impl Default for Gather {
    fn default() -> Self {
        Self::new()
    }
}

impl Gather {
    /// A gather with the defaults above and no prompts.
    pub fn new() -> Self {
        Gather {
            options: GatherOptions {
                prompts: Vec::new(),
                max_digits: 1,
                terminators: String::new(),
                first_digit_timeout_ms: 5000,
                inter_digit_timeout_ms: 3000,
                barge_in: true,
                type_ahead: true,
            },
        }
    }

    /// Adds a prompt to play before waiting for keys.
    pub fn prompt(mut self, prompt: Prompt) -> Self {
        self.options.prompts.push(prompt);
        self
    }

    /// Adds several prompts.
    pub fn prompts(mut self, prompts: impl IntoIterator<Item = Prompt>) -> Self {
        self.options.prompts.extend(prompts);
        self
    }

    /// How many keys complete the entry.
    pub fn max_digits(mut self, n: u8) -> Self {
        self.options.max_digits = n;
        self
    }

    /// Keys that end the entry early (e.g. `"#"`); not included in the result.
    pub fn terminators(mut self, keys: &str) -> Self {
        self.options.terminators = keys.to_owned();
        self
    }

    /// How long to wait for the first key after the prompts, in milliseconds.
    pub fn timeout_ms(mut self, ms: u32) -> Self {
        self.options.first_digit_timeout_ms = ms;
        self
    }

    /// How long to wait between keys, in milliseconds.
    pub fn inter_digit_timeout_ms(mut self, ms: u32) -> Self {
        self.options.inter_digit_timeout_ms = ms;
        self
    }

    /// Whether a key stops the prompts.
    pub fn barge_in(mut self, on: bool) -> Self {
        self.options.barge_in = on;
        self
    }

    /// Whether keys pressed before this gather count.
    pub fn type_ahead(mut self, on: bool) -> Self {
        self.options.type_ahead = on;
        self
    }

    /// The options as built, for the raw bindings.
    pub fn options(&self) -> &GatherOptions {
        &self.options
    }

    /// Plays the prompts and collects the keys.
    pub fn run(&self) -> Result<GatherResult, CallError> {
        host::gather(&self.options)
    }
}
