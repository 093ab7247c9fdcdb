//! The WebAssembly side of the runtime: compiling IVRs, keeping them loaded, and running one
//! per call.
//!
//! - [`IvrEngine`] owns the wasmtime `Engine` (component model, async, pooling allocator, epoch
//!   interruption), the `Linker` with the WIT imports, the built-in tree guest, and an on-disk
//!   cache of compiled components.
//! - [`registry`] holds the loaded IVRs by name, each pre-instantiated once, and the DID routes;
//!   a reload swaps an entry atomically, so calls in progress keep the version they started with.
//! - [`folder`] loads an IVR folder into the registry and keeps it in sync as files change.
//! - [`host`] implements the imports and runs an IVR in a fresh store per call.
//! - [`channel`] is the seam to the media side: a real call or the offline simulator.
//!
//! Isolation: each call gets its own store and instance; a guest has no filesystem, network or
//! environment; its linear memory is capped; its CPU time is metered at every epoch tick and a
//! guest over budget is stopped. Any of these failures ends that one call.

pub mod channel;
pub mod folder;
mod guest_log;
pub mod host;
pub mod registry;

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use channel::{CallChannel, CallReport, CallTrace, Outcome, TraceEvent};
pub use host::{CallContext, CpuMeter, wit};
pub use registry::{IvrKind, LoadedIvr, Registry};

/// The built-in tree guest, built from `guests/tree` by `runtime/build.rs`.
pub static TREE_GUEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ivr_tree_guest.wasm"));

/// How often the epoch advances: the granularity of CPU accounting and of yielding.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Limits and knobs for running guests.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Guest instances that may exist at once (pooling slots); sizes the pool.
    pub max_instances: u32,
    /// Linear memory cap per instance, in bytes.
    pub memory_limit_bytes: usize,
    /// Guest CPU time allowed for a whole call.
    pub cpu_budget: Duration,
    /// Where compiled components are cached; None disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Use the pooling allocator (falls back to on-demand when the system refuses it).
    pub pooling: bool,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            max_instances: 1000,
            memory_limit_bytes: 64 << 20,
            cpu_budget: Duration::from_secs(2),
            cache_dir: default_cache_dir(),
            pooling: true,
        }
    }
}

/// `$XDG_CACHE_HOME/wasm-ivr`, else `$HOME/.cache/wasm-ivr`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("wasm-ivr"))
}

/// Errors from compiling and loading guests.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The wasmtime engine could not be set up.
    #[error("cannot set up the WebAssembly engine: {0}")]
    Setup(String),
    /// The bytes are not a valid component.
    #[error("not a valid WebAssembly component: {0}")]
    Compile(String),
    /// The component does not fit the IVR world (missing export, unknown imports).
    #[error("the component does not implement the wasm-ivr:ivr world: {0}")]
    World(String),
}

/// The shared engine: compiles components and runs calls.
pub struct IvrEngine {
    engine: Engine,
    linker: Linker<host::CallState>,
    tree_pre: wit::IvrPre<host::CallState>,
    settings: EngineSettings,
    pooling: bool,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for IvrEngine {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl IvrEngine {
    /// Sets up the engine, compiles the built-in tree guest and starts the epoch ticker.
    pub fn new(settings: EngineSettings) -> Result<Arc<Self>, EngineError> {
        let (engine, pooling) = if settings.pooling {
            match Engine::new(&wasm_config(&settings, true)) {
                Ok(engine) => (engine, true),
                Err(e) => {
                    tracing::warn!(
                        "pooling allocator unavailable ({e:#}); using on-demand allocation"
                    );
                    (new_engine(&settings, false)?, false)
                }
            }
        } else {
            (new_engine(&settings, false)?, false)
        };
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker).map_err(|e| EngineError::Setup(format!("{e:#}")))?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), stop_ticker.clone());

        let tree_component = compile_cached(&engine, &settings, TREE_GUEST)?;
        let tree_pre = pre_instantiate(&linker, &tree_component)?;
        Ok(Arc::new(IvrEngine {
            engine,
            linker,
            tree_pre,
            settings,
            pooling,
            stop_ticker,
        }))
    }

    /// The settings in force.
    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Whether the pooling allocator is in use.
    pub fn is_pooling(&self) -> bool {
        self.pooling
    }

    pub(crate) fn wasmtime(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn tree_pre(&self) -> wit::IvrPre<host::CallState> {
        self.tree_pre.clone()
    }

    /// Compiles (or loads from the cache) a component and pre-instantiates it against the IVR
    /// world, so each call only has to instantiate.
    pub fn prepare_component(
        &self,
        bytes: &[u8],
    ) -> Result<wit::IvrPre<host::CallState>, EngineError> {
        let component = compile_cached(&self.engine, &self.settings, bytes)?;
        pre_instantiate(&self.linker, &component)
    }

    /// Runs a call on `ivr` to its end and returns the finished call context (trace, outcome).
    pub async fn run_call(self: &Arc<Self>, ivr: Arc<LoadedIvr>, call: CallContext) -> CallContext {
        host::run_call(self, ivr, call).await
    }
}

fn new_engine(settings: &EngineSettings, pooling: bool) -> Result<Engine, EngineError> {
    Engine::new(&wasm_config(settings, pooling)).map_err(|e| EngineError::Setup(format!("{e:#}")))
}

fn wasm_config(settings: &EngineSettings, pooling: bool) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    // Memories are capped per instance, so reserving just that much keeps the pool's address
    // space proportional to the cap instead of 4 GiB + guard per slot.
    let reservation = settings.memory_limit_bytes.next_power_of_two() as u64;
    config.memory_reservation(reservation);
    config.memory_guard_size(64 << 10);
    if pooling {
        let instances = settings.max_instances.max(1);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(instances)
            // Guests built by componentize-py carry ~14 core instances; leave room.
            .total_core_instances(instances.saturating_mul(16))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(4))
            .total_stacks(instances)
            .max_core_instances_per_component(32)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_memory_size(settings.memory_limit_bytes)
            .table_elements(100_000);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

fn spawn_epoch_ticker(engine: Engine, stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the epoch ticker; CPU limits are not enforced: {e}");
    }
}

fn pre_instantiate(
    linker: &Linker<host::CallState>,
    component: &Component,
) -> Result<wit::IvrPre<host::CallState>, EngineError> {
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| EngineError::World(format!("{e:#}")))?;
    wit::IvrPre::new(pre).map_err(|e| EngineError::World(format!("{e:#}")))
}

/// The first 12 hex digits of the SHA-256 of `bytes`: IVR versions and cache keys.
pub fn content_version(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Compiles a component, through the on-disk cache when there is one. The cache key covers the
/// bytes and the engine's compatibility hash, so a different wasmtime or setting never loads
/// stale code.
fn compile_cached(
    engine: &Engine,
    settings: &EngineSettings,
    bytes: &[u8],
) -> Result<Component, EngineError> {
    let Some(dir) = &settings.cache_dir else {
        return Component::new(engine, bytes).map_err(|e| EngineError::Compile(format!("{e:#}")));
    };
    let path = cache_path(engine, dir, bytes);
    if path.is_file() {
        match load_precompiled(engine, &path) {
            Ok(component) => return Ok(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring unusable cache entry: {e:#}")
            }
        }
    }
    let compiled = engine
        .precompile_component(bytes)
        .map_err(|e| EngineError::Compile(format!("{e:#}")))?;
    if let Err(e) = write_atomically(&path, &compiled) {
        tracing::warn!(path = %path.display(), "cannot write the compile cache: {e}");
    }
    load_serialized(engine, &compiled)
}

fn cache_path(engine: &Engine, dir: &Path, bytes: &[u8]) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let full = Sha256::digest(bytes);
    let key: String = full.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{key}-{:016x}.cwasm", hasher.finish()))
}

/// Reads a cache entry into memory rather than mapping it: a mapped file that something
/// truncates later would fault (SIGBUS) in the middle of a call.
fn load_precompiled(engine: &Engine, path: &Path) -> Result<Component, EngineError> {
    let bytes = std::fs::read(path).map_err(|e| EngineError::Compile(e.to_string()))?;
    load_serialized(engine, &bytes)
}

#[allow(unsafe_code)]
fn load_serialized(engine: &Engine, compiled: &[u8]) -> Result<Component, EngineError> {
    // SAFETY: the bytes come from `precompile_component`, either just now or through the
    // runtime's own cache directory under a name that carries the engine's compatibility hash
    // (wasmtime also checks its own header and version before using them).
    unsafe { Component::deserialize(engine, compiled) }
        .map_err(|e| EngineError::Compile(format!("{e:#}")))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
