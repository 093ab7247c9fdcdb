//! The seam between an IVR and the call it drives.
//!
//! The host side of the WIT imports ([`super::host`]) does the bookkeeping that is the same for
//! every call (step labels, the trace, the outcome, CPU accounting) and hands the media work to
//! a [`CallChannel`]: on a real call that is the SIP dialog and its RTP stream, in `simulate` and
//! the test harness it is a scripted caller on a virtual clock. The engine never knows which.

use super::host::wit::{CallError, Destination, GatherOptions, GatherResult, LogLevel, Prompt};
use crate::tree::{LoweredDestination, LoweredPrompt};
use async_trait::async_trait;
use serde::Serialize;
use std::collections::BTreeMap;

/// The media side of one call.
#[async_trait]
pub trait CallChannel: Send {
    /// Milliseconds since the call started, on this channel's clock (virtual in `simulate`).
    fn now_ms(&self) -> u64;

    /// Plays prompts to the end; keys pressed meanwhile are kept for the next gather.
    async fn play(&mut self, prompts: &[Prompt]) -> Result<(), CallError>;

    /// Plays the prompts and collects keys as the options say.
    async fn gather(&mut self, options: &GatherOptions) -> Result<GatherResult, CallError>;

    /// Transfers the call to a destination outside the runtime (never `Destination::Ivr`,
    /// which the engine handles itself).
    async fn transfer(
        &mut self,
        to: &Destination,
        context: &[(String, String)],
    ) -> Result<(), CallError>;

    /// Plays the goodbye and ends the call.
    async fn hang_up(&mut self, goodbye: &[Prompt]);

    /// Puts the caller on the do-not-call list (durably, first), plays the goodbye and ends
    /// the call. When the caller could not be listed it returns why, having ended the call
    /// *without* the goodbye: the goodbye tells the caller they were removed, which would be
    /// a lie.
    async fn suppress(&mut self, goodbye: &[Prompt]) -> Result<(), String>;
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Outcome {
    /// The IVR transferred the call.
    Transfer {
        /// Where to.
        destination: LoweredDestination,
        /// The context sent along.
        context: BTreeMap<String, String>,
    },
    /// The IVR hung up (or returned without ending the call).
    Hangup,
    /// The IVR put the caller on the do-not-call list and hung up.
    Suppress,
    /// The caller hung up first.
    CallerHangup,
    /// The runtime hung up: the caller sent no RTP for `[calls] rtp_timeout_s`.
    MediaTimeout,
    /// The runtime hung up: the call reached `[calls] max_duration_s`.
    MaxDuration,
    /// The IVR failed (trap, CPU or memory limit, error returned); the call was hung up.
    Error {
        /// What went wrong.
        message: String,
    },
}

impl Outcome {
    /// A short name for metrics and records: `transfer`, `hangup`, ...
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Transfer { .. } => "transfer",
            Outcome::Hangup => "hangup",
            Outcome::Suppress => "suppress",
            Outcome::CallerHangup => "caller-hangup",
            Outcome::MediaTimeout => "media-timeout",
            Outcome::MaxDuration => "max-duration",
            Outcome::Error { .. } => "error",
        }
    }
}

/// What a gather came back with, in trace form.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GatherView {
    /// A complete entry.
    Digits(String),
    /// An entry cut short by the inter-digit timeout.
    Partial(String),
    /// No key.
    Timeout,
    /// The call ended while gathering.
    HungUp,
    /// The request was refused.
    Error(String),
}

impl GatherView {
    /// A short name for metrics: `digits`, `partial`, `timeout`, `hung-up`, `error`.
    pub fn label(&self) -> &'static str {
        match self {
            GatherView::Digits(_) => "digits",
            GatherView::Partial(_) => "partial",
            GatherView::Timeout => "timeout",
            GatherView::HungUp => "hung-up",
            GatherView::Error(_) => "error",
        }
    }
}

/// One thing that happened on the call, as `simulate --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum TraceEvent {
    /// An IVR started handling the call (the first one, or a sub-menu).
    Enter {
        /// Call time in ms.
        at_ms: u64,
        /// The IVR's name.
        ivr: String,
        /// Its version.
        version: String,
    },
    /// The IVR labelled a step.
    Step {
        /// Call time in ms.
        at_ms: u64,
        /// The label as it appears in the path.
        name: String,
    },
    /// Prompts played.
    Play {
        /// Call time in ms.
        at_ms: u64,
        /// What was played.
        prompts: Vec<LoweredPrompt>,
    },
    /// A gather and its result.
    Gather {
        /// Call time in ms when it started.
        at_ms: u64,
        /// The prompts.
        prompts: Vec<LoweredPrompt>,
        /// Keys per entry.
        max_digits: u8,
        /// Terminator keys.
        terminators: String,
        /// First-key timeout.
        timeout_ms: u32,
        /// What came back.
        result: GatherView,
    },
    /// A transfer and whether it worked.
    Transfer {
        /// Call time in ms.
        at_ms: u64,
        /// Where to.
        to: LoweredDestination,
        /// Context sent along.
        context: BTreeMap<String, String>,
        /// `ok`, or why not.
        result: String,
    },
    /// The IVR hung up.
    Hangup {
        /// Call time in ms.
        at_ms: u64,
        /// The goodbye.
        goodbye: Vec<LoweredPrompt>,
    },
    /// The IVR suppressed the caller.
    Suppress {
        /// Call time in ms.
        at_ms: u64,
        /// The goodbye.
        goodbye: Vec<LoweredPrompt>,
    },
    /// A log line from the IVR.
    Log {
        /// Call time in ms.
        at_ms: u64,
        /// Severity.
        level: &'static str,
        /// Text.
        message: String,
    },
    /// The IVR failed.
    Error {
        /// Call time in ms.
        at_ms: u64,
        /// What went wrong.
        message: String,
    },
}

/// Everything one call did: the steps in order and every event.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallTrace {
    /// The step labels in order (for trees, the node names). Steps of a sub-menu IVR are
    /// prefixed with its name: `sales/menu`.
    pub path: Vec<String>,
    /// Every key entry the caller completed, in order.
    pub digits: Vec<String>,
    /// Every event.
    pub events: Vec<TraceEvent>,
}

impl CallTrace {
    /// Bounds a trace so an IVR that loops through steps cannot grow memory without limit.
    pub const MAX_EVENTS: usize = 10_000;

    pub(crate) fn push(&mut self, event: TraceEvent) {
        if self.events.len() < Self::MAX_EVENTS {
            self.events.push(event);
        }
    }

    pub(crate) fn step(&mut self, at_ms: u64, name: String) {
        if self.path.len() < Self::MAX_EVENTS {
            self.path.push(name.clone());
        }
        self.push(TraceEvent::Step { at_ms, name });
    }
}

/// The trace form of a prompt.
pub fn prompt_view(prompt: &Prompt) -> LoweredPrompt {
    match prompt {
        Prompt::File(name) => LoweredPrompt::File(name.clone()),
        Prompt::Say(speech) => LoweredPrompt::Say {
            text: speech.text.clone(),
            voice: speech.voice.clone(),
        },
        Prompt::Silence(ms) => LoweredPrompt::Silence(*ms),
    }
}

/// The trace form of a list of prompts.
pub fn prompts_view(prompts: &[Prompt]) -> Vec<LoweredPrompt> {
    prompts.iter().map(prompt_view).collect()
}

/// The trace form of a destination.
pub fn destination_view(to: &Destination) -> LoweredDestination {
    match to {
        Destination::SipUri(uri) => LoweredDestination::Uri(uri.clone()),
        Destination::External(n) => LoweredDestination::External(n.clone()),
        Destination::Internal(n) => LoweredDestination::Internal(n.clone()),
        Destination::Ivr(n) => LoweredDestination::Ivr(n.clone()),
        Destination::Default => LoweredDestination::Default,
    }
}

/// The trace form of a gather's result.
pub fn gather_view(result: &Result<GatherResult, CallError>) -> GatherView {
    match result {
        Ok(GatherResult::Digits(d)) => GatherView::Digits(d.clone()),
        Ok(GatherResult::Partial(d)) => GatherView::Partial(d.clone()),
        Ok(GatherResult::Timeout) => GatherView::Timeout,
        Err(CallError::HungUp) => GatherView::HungUp,
        Err(other) => GatherView::Error(format!("{other:?}")),
    }
}

/// The name of a log level.
pub fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

/// A finished call as the simulator prints it and `serve --call-traces` writes it.
#[derive(Debug, Clone, Serialize)]
pub struct CallReport {
    /// The call's id.
    pub call_id: String,
    /// The number dialled.
    pub did: String,
    /// The caller.
    pub caller: String,
    /// The IVR that answered.
    pub ivr: String,
    /// Its version.
    pub version: String,
    /// Step labels in order.
    pub path: Vec<String>,
    /// Key entries in order.
    pub digits: Vec<String>,
    /// Every event.
    pub events: Vec<TraceEvent>,
    /// How the call ended.
    pub outcome: Outcome,
    /// Call length in ms on the channel's clock (virtual in `simulate`), from answer.
    pub duration_ms: u64,
    /// Guest CPU time, in µs.
    pub guest_cpu_us: u64,
}

impl CallReport {
    /// The report of a finished call.
    pub fn new(ivr: &super::LoadedIvr, call: super::CallContext) -> Self {
        CallReport {
            call_id: call.info.call_id,
            did: call.info.did,
            caller: call.info.caller,
            ivr: ivr.name.clone(),
            version: ivr.version.clone(),
            path: call.trace.path,
            digits: call.trace.digits,
            events: call.trace.events,
            outcome: call.ended.unwrap_or(Outcome::Hangup),
            duration_ms: call.channel.now_ms(),
            guest_cpu_us: u64::try_from(call.cpu.used().as_micros()).unwrap_or(u64::MAX),
        }
    }
}
