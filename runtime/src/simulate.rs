//! The offline simulator: runs any IVR against a scripted caller on a virtual clock.
//!
//! The script is whitespace-separated tokens, one per gather: keys (`1`, `123#`, `*`),
//! `timeout` (the caller presses nothing), or `hangup` (the caller hangs up). When the script
//! runs out the caller hangs up, so an IVR that loops forever on silence still ends. Keys left
//! over after an entry completes stay buffered as type-ahead for the next gather, as they
//! would on a phone.
//!
//! Nothing here touches the network or the wall clock: prompts take their real length (read
//! from the WAV header) on the virtual clock, so a whole call runs in milliseconds. The same
//! engine runs real calls; only the [`CallChannel`] differs.

use crate::engine::channel::{CallChannel, Outcome, TraceEvent};
use crate::engine::host::CallContext;
use crate::engine::wit::{
    CallError, CallInfo, Destination, GatherOptions, GatherResult, Prompt, TransferFailure,
};
use crate::engine::{CallReport, IvrEngine, LoadedIvr, Registry};
use async_trait::async_trait;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

/// How long the simulated caller takes per key of a token, in ms.
const KEY_INTERVAL_MS: u64 = 250;
/// How long simulated TTS takes per character of text, in ms (about 15 characters a second).
const SPEECH_MS_PER_CHAR: u64 = 65;

/// One thing the simulated caller does at a gather.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptToken {
    /// Presses these keys, in order.
    Keys(String),
    /// Presses nothing until the gather times out.
    Timeout,
    /// Hangs up.
    Hangup,
}

/// A script token that is not keys, `timeout` or `hangup`.
#[derive(Debug, thiserror::Error)]
#[error("bad script token '{token}': use keys (0-9 * #), 'timeout' or 'hangup'")]
pub struct ScriptError {
    /// The offending token.
    pub token: String,
}

/// Parses a caller script: `"1 1 1"`, `"timeout 1 2"`, `"123# hangup"`.
pub fn parse_script(script: &str) -> Result<Vec<ScriptToken>, ScriptError> {
    script
        .split_whitespace()
        .map(|token| match token.to_ascii_lowercase().as_str() {
            "timeout" => Ok(ScriptToken::Timeout),
            "hangup" => Ok(ScriptToken::Hangup),
            _ if token.chars().all(crate::tree::source::is_key) => {
                Ok(ScriptToken::Keys(token.to_owned()))
            }
            _ => Err(ScriptError {
                token: token.to_owned(),
            }),
        })
        .collect()
}

/// What a simulated transfer does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TransferBehaviour {
    /// Every transfer succeeds.
    #[default]
    Succeed,
    /// Every transfer fails this way.
    Fail(TransferFailureKind),
}

/// The failure a simulated transfer reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransferFailureKind {
    /// 486 Busy Here.
    Busy,
    /// Nobody answered.
    NoAnswer,
    /// 403 from the far end.
    Rejected,
    /// Could not be reached.
    Unreachable,
}

/// Options for one simulated call.
#[derive(Debug, Clone, Default)]
pub struct SimulationOptions {
    /// The caller's number.
    pub caller: String,
    /// The number dialled.
    pub did: String,
    /// Where prompt files are read for their length; missing files are a `bad-request`.
    pub audio_dir: Option<PathBuf>,
    /// What transfers do.
    pub transfer: TransferBehaviour,
    /// Whether the caller is on the do-not-call list.
    pub caller_on_dnc_list: bool,
    /// Call start, ms since the Unix epoch.
    pub started_at_ms: u64,
}

/// The caller side of a simulated call.
pub struct ScriptedCaller {
    clock_ms: u64,
    script: VecDeque<ScriptToken>,
    type_ahead: VecDeque<char>,
    audio_dir: Option<PathBuf>,
    transfer: TransferBehaviour,
    ended: bool,
}

impl ScriptedCaller {
    /// A caller that will follow `script`.
    pub fn new(script: Vec<ScriptToken>, options: &SimulationOptions) -> Self {
        ScriptedCaller {
            clock_ms: 0,
            script: script.into(),
            type_ahead: VecDeque::new(),
            audio_dir: options.audio_dir.clone(),
            transfer: options.transfer.clone(),
            ended: false,
        }
    }

    fn live(&self) -> Result<(), CallError> {
        if self.ended {
            Err(CallError::HungUp)
        } else {
            Ok(())
        }
    }

    /// The length of a prompt in ms, checking that a file prompt exists.
    fn prompt_ms(&self, prompt: &Prompt) -> Result<u64, CallError> {
        match prompt {
            Prompt::Silence(ms) => Ok(u64::from(*ms)),
            Prompt::Say(speech) => Ok(speech.text.chars().count() as u64 * SPEECH_MS_PER_CHAR),
            Prompt::File(name) => {
                let Some(dir) = &self.audio_dir else {
                    return Ok(0);
                };
                if name.contains(['/', '\\']) || name.starts_with('.') {
                    return Err(CallError::BadRequest(format!(
                        "bad audio file name '{name}'"
                    )));
                }
                let path = dir.join(name);
                if !path.is_file() {
                    return Err(CallError::BadRequest(format!("no audio file '{name}'")));
                }
                Ok(audio_length_ms(&path))
            }
        }
    }

    fn prompts_ms(&self, prompts: &[Prompt]) -> Result<u64, CallError> {
        prompts.iter().map(|p| self.prompt_ms(p)).sum()
    }
}

/// The playing time of an audio file: from the WAV header, or 16-bit 8 kHz for `.pcm`.
fn audio_length_ms(path: &std::path::Path) -> u64 {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("pcm"))
    {
        return std::fs::metadata(path).map(|m| m.len() / 16).unwrap_or(0);
    }
    match hound::WavReader::open(path) {
        Ok(reader) => {
            let spec = reader.spec();
            let frames = u64::from(reader.duration());
            frames * 1000 / u64::from(spec.sample_rate.max(1))
        }
        Err(_) => 0,
    }
}

#[async_trait]
impl CallChannel for ScriptedCaller {
    fn now_ms(&self) -> u64 {
        self.clock_ms
    }

    async fn play(&mut self, prompts: &[Prompt]) -> Result<(), CallError> {
        self.live()?;
        self.clock_ms += self.prompts_ms(prompts)?;
        Ok(())
    }

    async fn gather(&mut self, options: &GatherOptions) -> Result<GatherResult, CallError> {
        self.live()?;
        if !options.type_ahead {
            self.type_ahead.clear();
        }
        let prompt_ms = self.prompts_ms(&options.prompts)?;
        // Keys already waiting cut the prompt short when barge-in is on.
        let cut_short = options.barge_in && !self.type_ahead.is_empty();
        if !cut_short {
            self.clock_ms += prompt_ms;
        }
        let max = usize::from(options.max_digits.max(1));
        let mut entry = String::new();
        loop {
            if let Some(key) = self.type_ahead.pop_front() {
                if options.terminators.contains(key) {
                    return Ok(GatherResult::Digits(entry));
                }
                entry.push(key);
                if entry.chars().count() >= max {
                    return Ok(GatherResult::Digits(entry));
                }
                continue;
            }
            if !entry.is_empty() {
                self.clock_ms += u64::from(options.inter_digit_timeout_ms);
                return Ok(GatherResult::Partial(entry));
            }
            match self.script.pop_front() {
                Some(ScriptToken::Keys(keys)) => {
                    self.clock_ms += KEY_INTERVAL_MS * keys.chars().count() as u64;
                    self.type_ahead.extend(keys.chars());
                }
                Some(ScriptToken::Timeout) => {
                    self.clock_ms += u64::from(options.first_digit_timeout_ms);
                    return Ok(GatherResult::Timeout);
                }
                Some(ScriptToken::Hangup) | None => {
                    self.ended = true;
                    return Err(CallError::HungUp);
                }
            }
        }
    }

    async fn transfer(
        &mut self,
        _to: &Destination,
        _context: &[(String, String)],
    ) -> Result<(), CallError> {
        self.live()?;
        match &self.transfer {
            TransferBehaviour::Succeed => {
                self.ended = true;
                Ok(())
            }
            TransferBehaviour::Fail(kind) => {
                self.clock_ms += 1000;
                Err(CallError::TransferFailed(match kind {
                    TransferFailureKind::Busy => TransferFailure::Busy,
                    TransferFailureKind::NoAnswer => TransferFailure::NoAnswer,
                    TransferFailureKind::Rejected => TransferFailure::Rejected(403),
                    TransferFailureKind::Unreachable => {
                        TransferFailure::Unreachable("simulated".into())
                    }
                }))
            }
        }
    }

    async fn hang_up(&mut self, goodbye: &[Prompt]) {
        if !self.ended {
            self.clock_ms += self.prompts_ms(goodbye).unwrap_or(0);
            self.ended = true;
        }
    }

    async fn suppress(&mut self, goodbye: &[Prompt]) -> Result<(), String> {
        self.hang_up(goodbye).await;
        Ok(())
    }
}

/// The result of a simulated call: the same report a real call writes as its trace.
pub type SimulationReport = CallReport;

/// The call details a simulated call starts with.
pub fn call_info(call_id: &str, ivr: &LoadedIvr, options: &SimulationOptions) -> CallInfo {
    CallInfo {
        call_id: call_id.to_owned(),
        caller: options.caller.clone(),
        did: options.did.clone(),
        ivr: ivr.name.clone(),
        version: ivr.version.clone(),
        caller_on_dnc_list: options.caller_on_dnc_list,
        started_at_ms: options.started_at_ms,
        headers: Vec::new(),
    }
}

/// Runs one simulated call of `ivr` following `script`.
pub async fn simulate(
    engine: &Arc<IvrEngine>,
    registry: Arc<Registry>,
    ivr: Arc<LoadedIvr>,
    script: Vec<ScriptToken>,
    options: &SimulationOptions,
) -> SimulationReport {
    let caller = ScriptedCaller::new(script, options);
    let info = call_info(&format!("sim-{}", std::process::id()), &ivr, options);
    let call = CallContext::new(
        Box::new(caller),
        info,
        registry,
        engine.settings().cpu_budget,
    );
    let call = engine.run_call(ivr.clone(), call).await;
    CallReport::new(&ivr, call)
}

impl CallReport {
    /// A readable trace, one line per event.
    pub fn to_text(&self) -> String {
        use crate::tree::LoweredPrompt;
        let prompts = |ps: &[LoweredPrompt]| -> String {
            ps.iter()
                .map(|p| match p {
                    LoweredPrompt::File(f) => f.clone(),
                    LoweredPrompt::Say { text, .. } => format!("say \"{text}\""),
                    LoweredPrompt::Silence(ms) => format!("silence {ms}ms"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = String::new();
        for event in &self.events {
            let (at, line) = match event {
                TraceEvent::Enter {
                    at_ms,
                    ivr,
                    version,
                } => (at_ms, format!("enter IVR {ivr} ({version})")),
                TraceEvent::Step { at_ms, name } => (at_ms, format!("step {name}")),
                TraceEvent::Play { at_ms, prompts: p } => (at_ms, format!("play [{}]", prompts(p))),
                TraceEvent::Gather {
                    at_ms,
                    prompts: p,
                    max_digits,
                    result,
                    ..
                } => (
                    at_ms,
                    format!("gather [{}] max {max_digits} -> {result:?}", prompts(p)),
                ),
                TraceEvent::Transfer {
                    at_ms,
                    to,
                    context,
                    result,
                } => (at_ms, format!("transfer to {to:?} {context:?} -> {result}")),
                TraceEvent::Hangup { at_ms, goodbye } => {
                    (at_ms, format!("hangup [{}]", prompts(goodbye)))
                }
                TraceEvent::Suppress { at_ms, goodbye } => (
                    at_ms,
                    format!("suppress (do-not-call) [{}]", prompts(goodbye)),
                ),
                TraceEvent::Log {
                    at_ms,
                    level,
                    message,
                } => (at_ms, format!("log {level}: {message}")),
                TraceEvent::Error { at_ms, message } => (at_ms, format!("error: {message}")),
            };
            let _ = writeln!(out, "[{:>8.3}s] {line}", *at as f64 / 1000.0);
        }
        let _ = writeln!(out, "path: {}", self.path.join(" -> "));
        let outcome = match &self.outcome {
            Outcome::Transfer { destination, .. } => format!("transfer to {destination:?}"),
            Outcome::Error { message } => format!("error: {message}"),
            other => other.label().to_owned(),
        };
        let _ = writeln!(out, "outcome: {outcome}");
        out
    }
}
