//! wasm-ivr: a self-hosted IVR runtime. Callers dial a DID, the runtime answers, and an IVR — a
//! WebAssembly component, or a JSON menu tree run by the built-in tree guest — drives the call
//! through the WIT contract in `wit/ivr.wit`.
//!
//! How the pieces fit, following a call:
//! - [`engine::folder`] loads the IVR folder (`NAME.json`, `NAME.wasm`, `routes.toml`) into the
//!   [`engine::Registry`] and hot-reloads it; [`tree`] validates and lowers JSON trees on the way.
//! - A call picks its IVR from the registry by DID and runs it with [`engine::IvrEngine::run_call`]:
//!   a fresh instance per call, whose imports ([`engine::host`]) act on a
//!   [`engine::CallChannel`].
//! - [`simulate`] is a channel with a scripted caller on a virtual clock: `wasm-ivr simulate`
//!   and IVR authors' tests run the same engine with no network.
//! - [`server`] is the real thing: SIP endpoints on the sans-IO [`sip`] core, RTP media on the
//!   [`media`] primitives, one task per call running its IVR on an RTP-backed channel.
//! - [`cli`] is the `wasm-ivr` command line.

pub mod api;
pub mod cli;
pub mod config;
pub mod engine;
pub mod media;
pub mod metrics;
pub mod scaffold;
pub mod server;
pub mod simulate;
pub mod sip;
pub mod store;
pub mod time;
pub mod tree;
pub mod tts;
