//! The host side of the WIT contract: what each import does, and how one IVR runs on a call.
//!
//! Each call (and each sub-menu IVR within it) gets a fresh [`wasmtime::Store`] holding a
//! [`CallState`], instantiated from the IVR's cached [`wit::IvrPre`]. The call itself — the
//! channel, the trace, the outcome, the CPU meter — lives in a [`CallContext`] that moves from
//! store to store when an IVR enters a sub-menu, so the whole call shares one of each.

use super::IvrEngine;
use super::channel::{
    CallChannel, CallTrace, Outcome, TraceEvent, destination_view, gather_view, level_name,
    prompts_view,
};
use super::guest_log::GuestLog;
use super::registry::{LoadedIvr, Registry};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{HasSelf, ResourceTable};
use wasmtime::{Store, StoreContextMut, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Bindings generated from `wit/ivr.wit`.
#[allow(missing_docs)] // generated; the WIT file documents every item
pub mod wit {
    wasmtime::component::bindgen!({
        world: "ivr",
        path: "../wit",
        imports: { default: async },
        exports: { default: async },
    });

    // `self::`: in doctest builds `wasm_ivr` is also this crate's own name.
    pub use self::wasm_ivr::ivr::types::{
        CallError, Destination, GatherOptions, GatherResult, LogLevel, Prompt, Speech,
        TransferFailure,
    };
}

use wit::{CallError, CallInfo, Destination, GatherOptions, GatherResult, LogLevel, Prompt};

/// How deep sub-menus may nest (an IVR entering an IVR entering ...), so a cycle of IVRs that
/// enter each other ends instead of exhausting the stack.
pub const MAX_IVR_DEPTH: u8 = 8;

/// Guest CPU time for the whole call: the CPU time of the thread running the guest, counted
/// only while guest code runs (not while it waits on the caller) and only inside the polls of
/// its own call. Time the thread spends descheduled, or running other calls, is not charged, so
/// a loaded machine does not push a healthy guest over its budget; a looping guest still burns
/// its own CPU and is stopped.
///
/// A handle: clones share one meter, so the poll wrapper ([`metered`]) and the epoch callback
/// (which sees the meter through the store) account into the same total.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    budget: Duration,
    state: Arc<Mutex<MeterState>>,
}

#[derive(Debug, Default)]
struct MeterState {
    spent: Duration,
    /// Guest code is running (between `resume` and `pause`), as opposed to waiting in a host
    /// import.
    running: bool,
    /// Thread CPU clock when the current measured slice began, on the thread polling now.
    slice_start: Option<Duration>,
    /// Nested polls of metered futures (a sub-menu IVR runs inside its parent's poll): only the
    /// outermost opens and closes slices.
    polls: u32,
}

/// The calling thread's CPU time. A thread's clock cannot be unreadable on Linux; should it
/// ever be, `rustix` reports zero and the guest is charged nothing for that slice (the wall
/// clock limits of the call still apply).
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

impl MeterState {
    fn close_slice(&mut self) {
        if let Some(start) = self.slice_start.take() {
            self.spent += thread_cpu().saturating_sub(start);
        }
    }
}

impl CpuMeter {
    /// A meter with this budget.
    pub fn new(budget: Duration) -> Self {
        CpuMeter {
            budget,
            state: Arc::new(Mutex::new(MeterState::default())),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut MeterState) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }

    /// Guest code starts (or continues after a host import): charge from now, on this thread.
    fn resume(&self) {
        self.with(|s| {
            s.running = true;
            if s.slice_start.is_none() {
                s.slice_start = Some(thread_cpu());
            }
        });
    }

    /// Guest code stops (a host import is about to wait): charge up to now.
    fn pause(&self) {
        self.with(|s| {
            s.close_slice();
            s.running = false;
        });
    }

    /// A poll of the call's future begins on this thread.
    fn poll_started(&self) {
        self.with(|s| {
            s.polls += 1;
            if s.polls == 1 && s.running && s.slice_start.is_none() {
                s.slice_start = Some(thread_cpu());
            }
        });
    }

    /// The poll ends: whatever ran since it began on this thread is charged; the time until the
    /// next poll (other tasks, another thread) is not.
    fn poll_ended(&self) {
        self.with(|s| {
            s.polls = s.polls.saturating_sub(1);
            if s.polls == 0 {
                s.close_slice();
            }
        });
    }

    /// Guest CPU time used so far (read on the thread running the guest, as the epoch callback
    /// does, to include the current slice).
    pub fn used(&self) -> Duration {
        self.with(|s| {
            s.spent
                + s.slice_start
                    .map(|start| thread_cpu().saturating_sub(start))
                    .unwrap_or_default()
        })
    }

    fn exceeded(&self) -> bool {
        self.used() > self.budget
    }
}

/// Runs `future` with each of its polls metered by `meter` (see [`CpuMeter`]).
async fn metered<F: std::future::Future>(meter: CpuMeter, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        meter.poll_started();
        let polled = future.as_mut().poll(cx);
        meter.poll_ended();
        polled
    })
    .await
}

/// The call as the imports see it; shared by every IVR that runs on the call.
pub struct CallContext {
    /// The media side.
    pub channel: Box<dyn CallChannel>,
    /// What happened so far.
    pub trace: CallTrace,
    /// The call's details; `ivr` and `version` are set per IVR.
    pub info: CallInfo,
    /// Set once the call has ended, by the IVR or the caller.
    pub ended: Option<Outcome>,
    /// Guest CPU time.
    pub cpu: CpuMeter,
    /// Where sub-menu IVRs are looked up.
    pub registry: Arc<Registry>,
}

impl CallContext {
    /// A call about to start on `channel`, with a fresh trace and CPU meter.
    pub fn new(
        channel: Box<dyn CallChannel>,
        info: CallInfo,
        registry: Arc<Registry>,
        cpu_budget: Duration,
    ) -> Self {
        CallContext {
            channel,
            trace: CallTrace::default(),
            info,
            ended: None,
            cpu: CpuMeter::new(cpu_budget),
            registry,
        }
    }

    fn now(&self) -> u64 {
        self.channel.now_ms()
    }

    /// Records that the caller hung up, unless the call had already ended otherwise.
    fn note_result<T>(&mut self, result: &Result<T, CallError>) {
        if matches!(result, Err(CallError::HungUp)) && self.ended.is_none() {
            self.ended = Some(Outcome::CallerHangup);
        }
    }
}

/// Caps a guest's linear memory and remembers whether the cap was hit, so the log can say why
/// the guest died.
struct MemoryCap {
    max_bytes: usize,
    hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_bytes;
        self.hit |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// What a [`Store`] holds for one IVR on one call.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: MemoryCap,
    ivr: Arc<LoadedIvr>,
    depth: u8,
    /// None only while a sub-menu IVR has the call.
    call: Option<CallContext>,
    engine: Arc<IvrEngine>,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl CallState {
    /// The call, unless it has ended (then every import answers `hung-up`).
    fn live_call(&mut self) -> Result<&mut CallContext, CallError> {
        match self.call.as_mut() {
            Some(call) if call.ended.is_none() => Ok(call),
            _ => Err(CallError::HungUp),
        }
    }

    fn step_label(&self, name: &str) -> String {
        if self.depth == 0 {
            name.to_owned()
        } else {
            format!("{}/{name}", self.ivr.name)
        }
    }
}

impl wit::wasm_ivr::ivr::types::Host for CallState {}

impl wit::wasm_ivr::ivr::config::Host for CallState {
    async fn get(&mut self) -> String {
        self.ivr.config.clone()
    }
}

impl wit::wasm_ivr::ivr::call::Host for CallState {
    async fn info(&mut self) -> CallInfo {
        let mut info = match &self.call {
            Some(call) => call.info.clone(),
            None => empty_info(),
        };
        info.ivr = self.ivr.name.clone();
        info.version = self.ivr.version.clone();
        info
    }

    async fn step(&mut self, name: String) {
        let label = self.step_label(&name);
        if let Some(call) = self.call.as_mut() {
            crate::metrics::metrics().step(&call.info.call_id, &self.ivr.name, &label);
            let at = call.now();
            call.trace.step(at, label);
        }
    }

    async fn play(&mut self, prompts: Vec<Prompt>) -> Result<(), CallError> {
        let call = self.live_call()?;
        let at = call.now();
        call.trace.push(TraceEvent::Play {
            at_ms: at,
            prompts: prompts_view(&prompts),
        });
        call.cpu.pause();
        let result = call.channel.play(&prompts).await;
        call.cpu.resume();
        call.note_result(&result);
        result
    }

    async fn gather(&mut self, options: GatherOptions) -> Result<GatherResult, CallError> {
        let ivr = self.ivr.clone();
        let call = self.live_call()?;
        let at = call.now();
        let result = if options.max_digits == 0 {
            Err(CallError::BadRequest(
                "max-digits must be at least 1".into(),
            ))
        } else if let Some(bad) = options
            .terminators
            .chars()
            .find(|c| !crate::tree::source::is_key(*c))
        {
            Err(CallError::BadRequest(format!(
                "terminator '{bad}' is not a key"
            )))
        } else {
            call.cpu.pause();
            let result = call.channel.gather(&options).await;
            call.cpu.resume();
            result
        };
        call.note_result(&result);
        if let Ok(GatherResult::Digits(d) | GatherResult::Partial(d)) = &result {
            call.trace.digits.push(d.clone());
        }
        let view = gather_view(&result);
        let metrics = crate::metrics::metrics();
        metrics.gather(&ivr.name, view.label());
        // A tree's gather node knows its keys: an entry that matches none is an invalid key.
        if let (Ok(GatherResult::Digits(d) | GatherResult::Partial(d)), Some(nodes), Some(node)) =
            (&result, &ivr.gather_keys, call.trace.path.last())
        {
            let node = node.rsplit('/').next().unwrap_or(node);
            if nodes.get(node).is_some_and(|keys| !keys.contains(d)) {
                metrics.invalid_key(&ivr.name, node);
            }
        }
        call.trace.push(TraceEvent::Gather {
            at_ms: at,
            prompts: prompts_view(&options.prompts),
            max_digits: options.max_digits,
            terminators: options.terminators.clone(),
            timeout_ms: options.first_digit_timeout_ms,
            result: view,
        });
        result
    }

    async fn transfer(
        &mut self,
        to: Destination,
        context: Vec<(String, String)>,
    ) -> Result<(), CallError> {
        if let Destination::Ivr(name) = &to {
            return self.enter_sub_ivr(name, context).await;
        }
        let call = self.live_call()?;
        let at = call.now();
        // What the destination sees: where the caller went and what they pressed, then the
        // IVR's own context.
        let mut sent = vec![
            ("X-IVR-Path".to_owned(), call.trace.path.join(",")),
            ("X-IVR-Digits".to_owned(), call.trace.digits.join(",")),
        ];
        sent.extend(context.iter().cloned());
        call.cpu.pause();
        let result = call.channel.transfer(&to, &sent).await;
        call.cpu.resume();
        call.note_result(&result);
        let context: BTreeMap<String, String> = context.into_iter().collect();
        call.trace.push(TraceEvent::Transfer {
            at_ms: at,
            to: destination_view(&to),
            context: context.clone(),
            result: match &result {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("{e:?}"),
            },
        });
        if result.is_ok() {
            call.ended = Some(Outcome::Transfer {
                destination: destination_view(&to),
                context,
            });
        }
        result
    }

    async fn hangup(&mut self, goodbye: Vec<Prompt>) {
        let Ok(call) = self.live_call() else { return };
        let at = call.now();
        call.trace.push(TraceEvent::Hangup {
            at_ms: at,
            goodbye: prompts_view(&goodbye),
        });
        call.ended = Some(Outcome::Hangup);
        call.cpu.pause();
        call.channel.hang_up(&goodbye).await;
        call.cpu.resume();
    }

    async fn suppress(&mut self, goodbye: Vec<Prompt>) {
        let Ok(call) = self.live_call() else { return };
        let at = call.now();
        call.cpu.pause();
        let result = call.channel.suppress(&goodbye).await;
        call.cpu.resume();
        call.ended = Some(match result {
            Ok(()) => {
                call.trace.push(TraceEvent::Suppress {
                    at_ms: at,
                    goodbye: prompts_view(&goodbye),
                });
                Outcome::Suppress
            }
            Err(message) => {
                // The goodbye says "you have been removed"; it was not played (see
                // `CallChannel::suppress`), and the call ends as an error, not a suppress.
                let message = format!("suppress failed, goodbye withheld: {message}");
                tracing::error!(call_id = %call.info.call_id, "{message}");
                call.trace.push(TraceEvent::Error {
                    at_ms: at,
                    message: message.clone(),
                });
                Outcome::Error { message }
            }
        });
    }

    async fn log(&mut self, level: LogLevel, message: String) {
        let ivr = self.ivr.name.clone();
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let message: String = message.chars().take(4096).collect();
        let call_id = &call.info.call_id;
        match level {
            LogLevel::Debug => tracing::debug!(%call_id, %ivr, "{message}"),
            LogLevel::Info => tracing::info!(%call_id, %ivr, "{message}"),
            LogLevel::Warn => tracing::warn!(%call_id, %ivr, "{message}"),
            LogLevel::Error => tracing::error!(%call_id, %ivr, "{message}"),
        }
        let at = call.now();
        call.trace.push(TraceEvent::Log {
            at_ms: at,
            level: level_name(level),
            message,
        });
    }
}

impl CallState {
    /// Runs another IVR on this call as a sub-menu. The call moves into the sub-IVR's store
    /// and comes back when it returns; if it ended the call, this IVR sees `hung-up`.
    async fn enter_sub_ivr(
        &mut self,
        name: &str,
        context: Vec<(String, String)>,
    ) -> Result<(), CallError> {
        let depth = self.depth;
        let call = self.live_call()?;
        let failure = |why: String| {
            Err(CallError::TransferFailed(
                wit::TransferFailure::Unreachable(why),
            ))
        };
        if depth + 1 >= MAX_IVR_DEPTH {
            return failure(format!("sub-menus nest deeper than {MAX_IVR_DEPTH}"));
        }
        // Loading (even compiling, on first use in `simulate`) is the runtime's work, not the
        // guest's: it does not count against the call's CPU budget.
        call.cpu.pause();
        let found = call.registry.get(name);
        call.cpu.resume();
        let Some(sub) = found else {
            return failure(format!("no IVR named '{name}' is loaded"));
        };
        let at = call.now();
        call.trace.push(TraceEvent::Transfer {
            at_ms: at,
            to: destination_view(&Destination::Ivr(name.to_owned())),
            context: context.into_iter().collect(),
            result: "entered".to_owned(),
        });
        let Some(call) = self.call.take() else {
            return Err(CallError::HungUp);
        };
        let (call, result) = Box::pin(run_ivr(&self.engine, sub, call, self.depth + 1)).await;
        self.call = Some(call);
        let call = self.live_call()?;
        if let Err(message) = result {
            // The sub-menu failed, not the call: tell the parent, which may go on.
            return failure(format!("IVR '{name}' failed: {message}"));
        }
        let _ = call;
        Ok(())
    }
}

fn empty_info() -> CallInfo {
    CallInfo {
        call_id: String::new(),
        caller: String::new(),
        did: String::new(),
        ivr: String::new(),
        version: String::new(),
        caller_on_dnc_list: false,
        started_at_ms: 0,
        headers: Vec::new(),
    }
}

/// Runs one IVR on the call until its `handle-call` returns, in a fresh store. Returns the call
/// back with the IVR's result: `Err` carries a readable reason (trap, limit, error returned).
pub(crate) async fn run_ivr(
    engine: &Arc<IvrEngine>,
    ivr: Arc<LoadedIvr>,
    mut call: CallContext,
    depth: u8,
) -> (CallContext, Result<(), String>) {
    let started = Instant::now();
    call.info.ivr = ivr.name.clone();
    call.info.version = ivr.version.clone();
    let at = call.now();
    call.trace.push(TraceEvent::Enter {
        at_ms: at,
        ivr: ivr.name.clone(),
        version: ivr.version.clone(),
    });
    let info = call.info.clone();
    let call_id: Arc<str> = Arc::from(info.call_id.as_str());
    let stdout = GuestLog::new(call_id.clone(), ivr.name.clone(), "stdout");
    let stderr = GuestLog::new(call_id.clone(), ivr.name.clone(), "stderr");
    let wasi = WasiCtxBuilder::new()
        .stdout(stdout)
        .stderr(stderr)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build();
    let state = CallState {
        wasi,
        table: ResourceTable::new(),
        memory: MemoryCap {
            max_bytes: engine.settings().memory_limit_bytes,
            hit: false,
        },
        ivr: ivr.clone(),
        depth,
        call: Some(call),
        engine: engine.clone(),
    };
    let mut store = Store::new(engine.wasmtime(), state);
    store.limiter(|s| &mut s.memory);
    store.epoch_deadline_callback(check_cpu_budget);
    store.set_epoch_deadline(1);

    let result = invoke(&mut store, &ivr, &info).await;
    let state = store.into_data();
    let mut call = match state.call {
        Some(call) => call,
        // The context is only absent while a sub-menu holds it, and that has returned by now.
        None => unreachable_call(),
    };
    call.cpu.pause();
    let result = result.map_err(|e| {
        let message = describe_failure(&e, state.memory.hit, &call.cpu, engine);
        tracing::warn!(call_id = %info.call_id, ivr = %ivr.name, version = %ivr.version, "IVR failed: {message}");
        let at = call.now();
        call.trace.push(TraceEvent::Error {
            at_ms: at,
            message: message.clone(),
        });
        message
    });
    tracing::debug!(call_id = %info.call_id, ivr = %ivr.name, elapsed = ?started.elapsed(), "IVR returned");
    (call, result)
}

/// A call context cannot be lost (see `enter_sub_ivr`); should it ever be, the call is treated
/// as ended rather than panicking.
fn unreachable_call() -> CallContext {
    unreachable!("the call context always returns to its store")
}

enum Failure {
    Wasmtime(wasmtime::Error),
    Returned(String),
}

async fn invoke(
    store: &mut Store<CallState>,
    ivr: &LoadedIvr,
    info: &CallInfo,
) -> Result<(), Failure> {
    let started = Instant::now();
    let instance = ivr
        .pre
        .instantiate_async(&mut *store)
        .await
        .map_err(Failure::Wasmtime)?;
    crate::metrics::metrics()
        .instantiated(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
    let meter = match store.data().call.as_ref() {
        Some(call) => {
            call.cpu.resume();
            call.cpu.clone()
        }
        None => CpuMeter::new(Duration::ZERO),
    };
    let returned = metered(meter, instance.call_handle_call(&mut *store, info))
        .await
        .map_err(Failure::Wasmtime)?;
    if let Some(call) = store.data_mut().call.as_mut() {
        call.cpu.pause();
    }
    returned.map_err(Failure::Returned)
}

fn describe_failure(
    failure: &Failure,
    memory_cap_hit: bool,
    cpu: &CpuMeter,
    engine: &IvrEngine,
) -> String {
    match failure {
        Failure::Returned(reason) => format!("the IVR returned an error: {reason}"),
        Failure::Wasmtime(e) => {
            if e.downcast_ref::<CpuBudgetExceeded>().is_some() {
                format!(
                    "the IVR used more than its CPU budget of {:?} (used {:?})",
                    engine.settings().cpu_budget,
                    cpu.used()
                )
            } else if memory_cap_hit {
                format!(
                    "the IVR ran out of memory (cap {} MiB): {}",
                    engine.settings().memory_limit_bytes >> 20,
                    root_cause(e)
                )
            } else if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
                format!("the IVR trapped: {trap}")
            } else {
                format!("the IVR failed: {}", root_cause(e))
            }
        }
    }
}

fn root_cause(e: &wasmtime::Error) -> String {
    format!("{e:#}")
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Raised from the epoch callback when a call's guest code has run past its CPU budget.
#[derive(Debug, thiserror::Error)]
#[error("CPU budget exceeded")]
struct CpuBudgetExceeded;

/// Called by wasmtime at each epoch tick while guest code runs: end the guest if the call is
/// over budget, otherwise yield to the executor so one busy guest cannot starve other calls.
fn check_cpu_budget(ctx: StoreContextMut<'_, CallState>) -> wasmtime::Result<UpdateDeadline> {
    match ctx.data().call.as_ref() {
        Some(call) if call.cpu.exceeded() => Err(wasmtime::Error::new(CpuBudgetExceeded)),
        _ => Ok(UpdateDeadline::Yield(1)),
    }
}

/// Runs a whole call: the IVR, then whatever ending the IVR left out (a hangup when it just
/// returned or failed). Returns the finished call.
pub(crate) async fn run_call(
    engine: &Arc<IvrEngine>,
    ivr: Arc<LoadedIvr>,
    call: CallContext,
) -> CallContext {
    let (mut call, result) = run_ivr(engine, ivr, call, 0).await;
    if call.ended.is_none() {
        call.ended = Some(match &result {
            Ok(()) => Outcome::Hangup,
            Err(message) => Outcome::Error {
                message: message.clone(),
            },
        });
        call.channel.hang_up(&[]).await;
    } else if let (Err(message), Some(Outcome::Hangup | Outcome::CallerHangup)) =
        (&result, &call.ended)
    {
        // A guest that failed after the call ended still counts as failed in the record.
        tracing::debug!(call_id = %call.info.call_id, "IVR failed after the call ended: {message}");
    }
    call
}

/// Adds the IVR world's imports (ours and WASI's) to a linker.
pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<CallState>,
) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wit::Ivr::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}

#[cfg(test)]
mod meter_tests {
    use super::*;

    /// Spins until this thread has used `cpu` of its own CPU time.
    fn spin(cpu: Duration) {
        let start = thread_cpu();
        let mut x = 0u64;
        while thread_cpu().saturating_sub(start) < cpu {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }

    #[test]
    fn the_meter_counts_this_threads_cpu_not_the_clock() {
        let meter = CpuMeter::new(Duration::from_millis(50));
        meter.resume();
        // Descheduled (asleep) for a while: wall time passes, no CPU is used.
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            meter.used() < Duration::from_millis(50),
            "{:?}",
            meter.used()
        );
        assert!(!meter.exceeded());
        spin(Duration::from_millis(80));
        assert!(
            meter.used() >= Duration::from_millis(80),
            "{:?}",
            meter.used()
        );
        assert!(meter.exceeded());
        meter.pause();
        let paused = meter.used();
        spin(Duration::from_millis(30));
        assert_eq!(meter.used(), paused, "nothing is charged while paused");
    }

    #[test]
    fn time_between_polls_is_not_charged() {
        let meter = CpuMeter::new(Duration::from_secs(10));
        meter.resume();
        meter.poll_started();
        spin(Duration::from_millis(20));
        meter.poll_ended();
        let after_poll = meter.used();
        assert!(after_poll >= Duration::from_millis(20), "{after_poll:?}");
        // Between polls the thread runs other tasks: their CPU is not this guest's.
        spin(Duration::from_millis(40));
        assert_eq!(meter.used(), after_poll);
        // A nested poll (a sub-menu) neither closes nor reopens the outer slice.
        meter.poll_started();
        meter.poll_started();
        spin(Duration::from_millis(10));
        meter.poll_ended();
        spin(Duration::from_millis(10));
        meter.poll_ended();
        assert!(meter.used() >= after_poll + Duration::from_millis(20));
    }
}
