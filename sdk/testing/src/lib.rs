//! Test harness for wasm-ivr IVRs: run an IVR against a scripted caller and assert where the
//! call went.
//!
//! It runs the same engine, host imports and virtual clock as `wasm-ivr simulate` (it calls
//! [`wasm_ivr::simulate::simulate`]), so a test sees exactly what the CLI prints. It works for
//! components written in any language (Rust, C, JavaScript, Python, ...) and for JSON trees.
//!
//! ```no_run
//! use wasm_ivr_testing::{Destination, IvrTest};
//!
//! // A component with settings given inline (instead of the NAME.toml beside it).
//! IvrTest::component("target/examples/rust-hours.wasm")
//!     .settings("open_hour = 0\nclose_hour = 24")
//!     .keys("")
//!     .run()
//!     .assert_path(&["welcome", "open"])
//!     .assert_transfer(&Destination::Internal("200".into()));
//!
//! // A JSON tree; sub-IVRs it enters are loaded from the same folder.
//! IvrTest::tree("examples/plumber-qualifier/plumber-qualifier.json")
//!     .keys("timeout 1 2")
//!     .run()
//!     .assert_path(&["welcome", "welcome", "has_license", "unqualified"])
//!     .assert_outcome("hangup");
//! ```
//!
//! Caller scripts are the CLI's `--keys`: one token per gather, keys (`1`, `1234#`, `*`),
//! `timeout` or `hangup`; when the script runs out the caller hangs up.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use wasm_ivr::engine::registry::{LoadContext, LoadError, ivr_name};
use wasm_ivr::engine::{EngineError, EngineSettings, IvrEngine, LoadedIvr, Registry};
use wasm_ivr::simulate::{self, ScriptError, SimulationOptions, TransferBehaviour};

pub use wasm_ivr::engine::{CallReport, Outcome, TraceEvent};
pub use wasm_ivr::simulate::TransferFailureKind;
/// Where a transfer went, as reports show it (`Internal("200")`, `Uri(..)`, `Default`, ...).
pub use wasm_ivr::tree::LoweredDestination as Destination;

/// Why a test run could not happen (as opposed to an assertion failing).
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// The caller script has a bad token.
    #[error(transparent)]
    Script(#[from] ScriptError),
    /// The IVR file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The IVR could not be loaded (invalid tree, component not fitting the world, bad settings).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The engine could not be set up.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The async runtime could not be started.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// `.settings(..)` was given for a JSON tree (settings are for components).
    #[error("{0}: settings apply to components; a tree carries its own")]
    SettingsOnTree(PathBuf),
    /// The file name gives no IVR name (it must be NAME.wasm or NAME.json).
    #[error("{0}: an IVR file is NAME.wasm or NAME.json")]
    BadName(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Component,
    Tree,
}

/// One simulated call to set up and run: which IVR, its settings, the caller's script.
///
/// ```no_run
/// use wasm_ivr_testing::IvrTest;
/// let report = IvrTest::component("ivrs/menu.wasm").keys("1 timeout 2").run();
/// report.assert_outcome("transfer");
/// ```
#[derive(Debug, Clone)]
pub struct IvrTest {
    kind: Kind,
    path: PathBuf,
    settings: Option<String>,
    keys: String,
    options: SimulationOptions,
    ivr_dir: Option<PathBuf>,
}

impl IvrTest {
    /// A test of a component (`NAME.wasm`). Its settings are `NAME.toml` beside it, unless
    /// [`IvrTest::settings`] gives them.
    ///
    /// ```no_run
    /// let test = wasm_ivr_testing::IvrTest::component("target/examples/c-menu.wasm");
    /// ```
    pub fn component(path: impl AsRef<Path>) -> Self {
        Self::new(Kind::Component, path.as_ref())
    }

    /// A test of a JSON tree (`NAME.json`), run by the built-in tree guest.
    ///
    /// ```no_run
    /// let test = wasm_ivr_testing::IvrTest::tree("examples/polyglot/main.json");
    /// ```
    pub fn tree(path: impl AsRef<Path>) -> Self {
        Self::new(Kind::Tree, path.as_ref())
    }

    fn new(kind: Kind, path: &Path) -> Self {
        let audio = parent_dir(path).join("audio");
        IvrTest {
            kind,
            path: path.to_owned(),
            settings: None,
            keys: String::new(),
            options: SimulationOptions {
                caller: "+15550100".to_owned(),
                did: "+15550199".to_owned(),
                audio_dir: Some(audio),
                transfer: TransferBehaviour::Succeed,
                caller_on_dnc_list: false,
                started_at_ms: now_ms(),
            },
            ivr_dir: None,
        }
    }

    /// The component's settings as TOML text (what `NAME.toml` would hold).
    ///
    /// ```no_run
    /// let test = wasm_ivr_testing::IvrTest::component("hours.wasm").settings("open_hour = 9");
    /// ```
    pub fn settings(mut self, toml: &str) -> Self {
        self.settings = Some(toml.to_owned());
        self
    }

    /// The caller's script: one token per gather (`"1 1234# timeout *"`).
    ///
    /// ```no_run
    /// let test = wasm_ivr_testing::IvrTest::component("menu.wasm").keys("9 timeout");
    /// ```
    pub fn keys(mut self, script: &str) -> Self {
        self.keys = script.to_owned();
        self
    }

    /// The caller's number (default `+15550100`).
    ///
    /// ```no_run
    /// let test = wasm_ivr_testing::IvrTest::component("menu.wasm").caller("+14155550100");
    /// ```
    pub fn caller(mut self, number: &str) -> Self {
        self.options.caller = number.to_owned();
        self
    }

    /// The number dialled (default `+15550199`).
    ///
    /// ```no_run
    /// let test = wasm_ivr_testing::IvrTest::component("menu.wasm").did("+15550101");
    /// ```
    pub fn did(mut self, number: &str) -> Self {
        self.options.did = number.to_owned();
        self
    }

    /// When the call starts, in ms since the Unix epoch (default: now). The IVR sees it as
    /// `call-info.started-at-ms`; pin it to test time-of-day logic.
    ///
    /// ```no_run
    /// // Monday 2026-01-05, 14:00 UTC.
    /// let test = wasm_ivr_testing::IvrTest::component("hours.wasm")
    ///     .started_at_ms(1_767_571_200_000 + 14 * 3_600_000);
    /// ```
    pub fn started_at_ms(mut self, ms: u64) -> Self {
        self.options.started_at_ms = ms;
        self
    }

    /// Makes every transfer fail this way, to exercise failure branches.
    ///
    /// ```no_run
    /// use wasm_ivr_testing::{IvrTest, TransferFailureKind};
    /// let test = IvrTest::component("menu.wasm").transfer_fails(TransferFailureKind::Busy);
    /// ```
    pub fn transfer_fails(mut self, kind: TransferFailureKind) -> Self {
        self.options.transfer = TransferBehaviour::Fail(kind);
        self
    }

    /// Whether the caller is on the do-not-call list (default no).
    ///
    /// ```no_run
    /// let test = wasm_ivr_testing::IvrTest::component("menu.wasm").caller_on_dnc(true);
    /// ```
    pub fn caller_on_dnc(mut self, on: bool) -> Self {
        self.options.caller_on_dnc_list = on;
        self
    }

    /// The audio folder that file prompts must exist in (default: `audio/` beside the IVR).
    ///
    /// ```no_run
    /// let test = wasm_ivr_testing::IvrTest::tree("menu.json").audio_dir("prompts");
    /// ```
    pub fn audio_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.options.audio_dir = Some(dir.as_ref().to_owned());
        self
    }

    /// The folder sub-menu IVRs (`"to": {"ivr": NAME}`) are loaded from (default: the IVR's own
    /// folder), as `NAME.wasm` (+ `NAME.toml`) or `NAME.json`.
    ///
    /// ```no_run
    /// let test = wasm_ivr_testing::IvrTest::tree("main.json").ivr_dir("target/examples/polyglot");
    /// ```
    pub fn ivr_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.ivr_dir = Some(dir.as_ref().to_owned());
        self
    }

    /// Loads the IVR (compiling it, through the compile cache) without running a call, so many
    /// calls can run on one load (see [`LoadedTest::run_keys`]).
    ///
    /// ```no_run
    /// let loaded = wasm_ivr_testing::IvrTest::component("menu.wasm").load()?;
    /// for _ in 0..10 {
    ///     loaded.run_keys("1")?.assert_outcome("transfer");
    /// }
    /// # Ok::<(), wasm_ivr_testing::TestError>(())
    /// ```
    pub fn load(&self) -> Result<LoadedTest, TestError> {
        let engine = shared_engine()?;
        let dir = self
            .ivr_dir
            .clone()
            .unwrap_or_else(|| parent_dir(&self.path));
        let context = LoadContext {
            audio_dir: self.options.audio_dir.clone(),
            known_ivrs: Some(names_in(&dir)),
        };
        let ivr = self.load_ivr(&engine, &context)?;
        let registry = Arc::new(Registry::lazy(dir.clone(), context.clone(), engine.clone()));
        preload_components(&engine, &registry, &dir, &context, &ivr.name);
        let ivr = registry.insert(ivr);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(TestError::Runtime)?;
        Ok(LoadedTest {
            engine,
            registry,
            ivr,
            runtime,
            options: self.options.clone(),
            keys: self.keys.clone(),
        })
    }

    fn load_ivr(&self, engine: &IvrEngine, context: &LoadContext) -> Result<LoadedIvr, TestError> {
        let name = ivr_name(&self.path).ok_or_else(|| TestError::BadName(self.path.clone()))?;
        let read_err = |source| TestError::Io {
            path: self.path.clone(),
            source,
        };
        match (self.kind, &self.settings) {
            (Kind::Tree, Some(_)) => Err(TestError::SettingsOnTree(self.path.clone())),
            (Kind::Tree, None) => {
                let text = std::fs::read_to_string(&self.path).map_err(read_err)?;
                Ok(engine.load_tree(&name, &self.path, &text, context)?)
            }
            (Kind::Component, None) => Ok(engine.load_path(&self.path, context)?),
            (Kind::Component, Some(toml)) => {
                let bytes = std::fs::read(&self.path).map_err(read_err)?;
                let settings_path = self.path.with_extension("toml");
                Ok(engine.load_component(
                    &name,
                    &self.path,
                    &bytes,
                    Some((settings_path.as_path(), toml.as_str())),
                )?)
            }
        }
    }

    /// Loads the IVR and runs one call with the script, or says why it could not.
    ///
    /// ```no_run
    /// let report = wasm_ivr_testing::IvrTest::component("menu.wasm").keys("1").try_run()?;
    /// println!("{}", report.trace());
    /// # Ok::<(), wasm_ivr_testing::TestError>(())
    /// ```
    pub fn try_run(&self) -> Result<Report, TestError> {
        self.load()?.run_keys(&self.keys)
    }

    /// Loads the IVR and runs one call with the script.
    ///
    /// # Panics
    ///
    /// When the run cannot happen (file missing, invalid IVR, bad script), with the reason; use
    /// [`IvrTest::try_run`] to handle that yourself.
    ///
    /// ```no_run
    /// wasm_ivr_testing::IvrTest::component("menu.wasm").keys("9").run().assert_outcome("suppress");
    /// ```
    pub fn run(&self) -> Report {
        match self.try_run() {
            Ok(report) => report,
            Err(e) => panic!("cannot run {}: {e}", self.path.display()),
        }
    }
}

/// An IVR loaded once, ready to run any number of simulated calls.
///
/// ```no_run
/// let loaded = wasm_ivr_testing::IvrTest::component("menu.wasm").load()?;
/// let report = loaded.run_keys("2 *")?;
/// # Ok::<(), wasm_ivr_testing::TestError>(())
/// ```
pub struct LoadedTest {
    engine: Arc<IvrEngine>,
    registry: Arc<Registry>,
    ivr: Arc<LoadedIvr>,
    runtime: tokio::runtime::Runtime,
    options: SimulationOptions,
    keys: String,
}

impl LoadedTest {
    /// Runs one call with the script given to [`IvrTest::keys`].
    ///
    /// ```no_run
    /// let loaded = wasm_ivr_testing::IvrTest::component("menu.wasm").keys("1").load()?;
    /// loaded.run()?.assert_outcome("transfer");
    /// # Ok::<(), wasm_ivr_testing::TestError>(())
    /// ```
    pub fn run(&self) -> Result<Report, TestError> {
        self.run_keys(&self.keys)
    }

    /// Runs one call with this script.
    ///
    /// ```no_run
    /// let loaded = wasm_ivr_testing::IvrTest::component("menu.wasm").load()?;
    /// loaded.run_keys("timeout timeout timeout")?.assert_outcome("hangup");
    /// # Ok::<(), wasm_ivr_testing::TestError>(())
    /// ```
    pub fn run_keys(&self, keys: &str) -> Result<Report, TestError> {
        let script = simulate::parse_script(keys)?;
        let report = self.runtime.block_on(simulate::simulate(
            &self.engine,
            self.registry.clone(),
            self.ivr.clone(),
            script,
            &self.options,
        ));
        Ok(Report { report })
    }

    /// The loaded IVR's name and version (first 12 hex digits of its SHA-256).
    ///
    /// ```no_run
    /// let loaded = wasm_ivr_testing::IvrTest::component("menu.wasm").load()?;
    /// let (name, version) = loaded.ivr();
    /// # Ok::<(), wasm_ivr_testing::TestError>(())
    /// ```
    pub fn ivr(&self) -> (&str, &str) {
        (&self.ivr.name, &self.ivr.version)
    }

    /// How long loading took (reading, validating, compiling or loading the compile cache).
    ///
    /// ```no_run
    /// let loaded = wasm_ivr_testing::IvrTest::component("menu.wasm").load()?;
    /// println!("loaded in {:?}", loaded.load_time());
    /// # Ok::<(), wasm_ivr_testing::TestError>(())
    /// ```
    pub fn load_time(&self) -> std::time::Duration {
        self.ivr.load_time
    }
}

/// What a simulated call did, with assertions that print the whole trace when they fail.
///
/// ```no_run
/// use wasm_ivr_testing::{Destination, IvrTest};
/// IvrTest::component("menu.wasm")
///     .keys("3")
///     .run()
///     .assert_path(&["menu", "librarian"])
///     .assert_transfer(&Destination::Internal("300".into()))
///     .assert_context("from", "python-menu");
/// ```
#[derive(Debug, Clone)]
pub struct Report {
    report: CallReport,
}

impl Report {
    /// The step labels in order; steps inside a sub-menu IVR are prefixed `NAME/`.
    ///
    /// ```no_run
    /// let report = wasm_ivr_testing::IvrTest::component("menu.wasm").run();
    /// assert_eq!(report.path().first().map(String::as_str), Some("menu"));
    /// ```
    pub fn path(&self) -> &[String] {
        &self.report.path
    }

    /// How the call ended.
    ///
    /// ```no_run
    /// use wasm_ivr_testing::{IvrTest, Outcome};
    /// let report = IvrTest::component("menu.wasm").keys("9").run();
    /// assert_eq!(report.outcome(), &Outcome::Suppress);
    /// ```
    pub fn outcome(&self) -> &Outcome {
        &self.report.outcome
    }

    /// Every event of the call (steps, plays, gathers, transfers, logs, errors).
    ///
    /// ```no_run
    /// let report = wasm_ivr_testing::IvrTest::component("menu.wasm").run();
    /// println!("{} events", report.events().len());
    /// ```
    pub fn events(&self) -> &[TraceEvent] {
        &self.report.events
    }

    /// The whole report, as `wasm-ivr simulate --json` prints it.
    ///
    /// ```no_run
    /// let report = wasm_ivr_testing::IvrTest::component("menu.wasm").run();
    /// println!("{} ms on the virtual clock", report.call_report().duration_ms);
    /// ```
    pub fn call_report(&self) -> &CallReport {
        &self.report
    }

    /// The readable trace `wasm-ivr simulate` prints.
    ///
    /// ```no_run
    /// print!("{}", wasm_ivr_testing::IvrTest::component("menu.wasm").run().trace());
    /// ```
    pub fn trace(&self) -> String {
        self.report.to_text()
    }

    /// The context sent with the final transfer, if the call ended in one.
    ///
    /// ```no_run
    /// let report = wasm_ivr_testing::IvrTest::component("menu.wasm").keys("3").run();
    /// let context = report.transfer_context().expect("transferred");
    /// ```
    pub fn transfer_context(&self) -> Option<&BTreeMap<String, String>> {
        match &self.report.outcome {
            Outcome::Transfer { context, .. } => Some(context),
            _ => None,
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!("{what}\n--- call trace ---\n{}", self.trace())
    }

    /// Asserts the exact step path.
    ///
    /// # Panics
    ///
    /// When the path differs, showing both and the call's trace.
    ///
    /// ```no_run
    /// wasm_ivr_testing::IvrTest::component("menu.wasm")
    ///     .keys("2")
    ///     .run()
    ///     .assert_path(&["menu", "events", "menu"]);
    /// ```
    pub fn assert_path(&self, expected: &[&str]) -> &Self {
        if self.report.path != expected {
            self.fail(format!(
                "path mismatch\n  expected: {expected:?}\n    actual: {:?}",
                self.report.path
            ));
        }
        self
    }

    /// Asserts how the call ended, by label: `transfer`, `hangup`, `suppress`,
    /// `caller-hangup` or `error`.
    ///
    /// # Panics
    ///
    /// When the outcome differs, showing it and the call's trace.
    ///
    /// ```no_run
    /// wasm_ivr_testing::IvrTest::component("menu.wasm").keys("").run().assert_outcome("caller-hangup");
    /// ```
    pub fn assert_outcome(&self, label: &str) -> &Self {
        if self.report.outcome.label() != label {
            self.fail(format!(
                "outcome mismatch\n  expected: {label}\n    actual: {:?}",
                self.report.outcome
            ));
        }
        self
    }

    /// Asserts the call ended in a transfer to `to`.
    ///
    /// # Panics
    ///
    /// When it did not, showing the outcome and the call's trace.
    ///
    /// ```no_run
    /// use wasm_ivr_testing::{Destination, IvrTest};
    /// IvrTest::component("menu.wasm")
    ///     .keys("3")
    ///     .run()
    ///     .assert_transfer(&Destination::Internal("300".into()));
    /// ```
    pub fn assert_transfer(&self, to: &Destination) -> &Self {
        match &self.report.outcome {
            Outcome::Transfer { destination, .. } if destination == to => self,
            other => self.fail(format!(
                "expected a transfer to {to:?}\n    actual outcome: {other:?}"
            )),
        }
    }

    /// Asserts the final transfer carried `key = value` in its context.
    ///
    /// # Panics
    ///
    /// When the call did not end in a transfer or the context lacks the pair.
    ///
    /// ```no_run
    /// wasm_ivr_testing::IvrTest::component("hours.wasm")
    ///     .keys("1234#")
    ///     .run()
    ///     .assert_context("account", "ACME-0042");
    /// ```
    pub fn assert_context(&self, key: &str, value: &str) -> &Self {
        match self.transfer_context() {
            Some(context) if context.get(key).map(String::as_str) == Some(value) => self,
            Some(context) => self.fail(format!(
                "expected transfer context {key} = {value:?}\n    actual context: {context:?}"
            )),
            None => self.fail(format!(
                "expected a transfer with context {key} = {value:?}\n    actual outcome: {:?}",
                self.report.outcome
            )),
        }
    }
}

/// One engine per test process, like one `wasm-ivr simulate`: 16 instances, the default
/// memory and CPU limits, and the compile cache (`WASM_IVR_CACHE_DIR`, else the user cache).
fn shared_engine() -> Result<Arc<IvrEngine>, TestError> {
    static ENGINE: OnceLock<Arc<IvrEngine>> = OnceLock::new();
    if let Some(engine) = ENGINE.get() {
        return Ok(engine.clone());
    }
    let defaults = EngineSettings::default();
    let settings = EngineSettings {
        max_instances: 16,
        cache_dir: std::env::var_os("WASM_IVR_CACHE_DIR")
            .map(PathBuf::from)
            .or(defaults.cache_dir.clone()),
        ..defaults
    };
    let engine = IvrEngine::new(settings)?;
    // Two tests racing here both build an engine; one wins, the other is dropped.
    Ok(ENGINE.get_or_init(|| engine).clone())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Loads the other components of the folder up front, as `serve` does, so compiling a large
/// sub-menu (a Python one takes seconds) happens before the call instead of inside it, where
/// it would count against the call's CPU budget. Files that fail to load are left to the lazy
/// registry, which reports them when a call reaches them.
fn preload_components(
    engine: &IvrEngine,
    registry: &Registry,
    dir: &Path,
    context: &LoadContext,
    except: &str,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
        let is_component = path.extension().is_some_and(|e| e == "wasm");
        if !is_component || ivr_name(&path).as_deref() == Some(except) {
            continue;
        }
        if let Ok(ivr) = engine.load_path(&path, context) {
            registry.insert(ivr);
        }
    }
}

/// The IVR names in a folder (sub-menu references are checked against them).
fn names_in(dir: &Path) -> HashSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| ivr_name(&e.path()))
                .collect()
        })
        .unwrap_or_default()
}
