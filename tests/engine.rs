//! The engine with real components built from `guests/` and `tests/components/`: isolation,
//! misbehaving guests, hot reload, sub-menus and the compile cache.

mod common;

use async_trait::async_trait;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::oneshot;
use wasm_ivr::engine::channel::CallChannel;
use wasm_ivr::engine::folder::Folder;
use wasm_ivr::engine::registry::LoadContext;
use wasm_ivr::engine::wit::{CallError, Destination, GatherOptions, GatherResult, Prompt};
use wasm_ivr::engine::{IvrEngine, LoadedIvr, Outcome, Registry, TraceEvent};
use wasm_ivr::simulate::{
    ScriptedCaller, SimulationOptions, SimulationReport, parse_script, simulate,
};
use wasm_ivr::tree::{LoweredDestination, LoweredPrompt};

const SEED: &str = include_str!("../examples/plumber-qualifier/plumber-qualifier.json");

async fn run(
    engine: &Arc<IvrEngine>,
    registry: &Arc<Registry>,
    ivr: Arc<LoadedIvr>,
    keys: &str,
) -> SimulationReport {
    let script = parse_script(keys).expect("script");
    simulate(
        engine,
        registry.clone(),
        ivr,
        script,
        &SimulationOptions::default(),
    )
    .await
}

fn load_component(
    engine: &IvrEngine,
    registry: &Registry,
    dir: &Path,
    name: &str,
    settings: &str,
) -> Arc<LoadedIvr> {
    let path = common::install_testbed(dir, name, settings);
    registry.insert(
        engine
            .load_path(&path, &LoadContext::default())
            .expect("load component"),
    )
}

fn load_seed(engine: &IvrEngine, registry: &Registry) -> Arc<LoadedIvr> {
    let ivr = engine
        .load_tree(
            "plumber-qualifier",
            Path::new("seed.json"),
            SEED,
            &LoadContext::default(),
        )
        .expect("seed loads");
    registry.insert(ivr)
}

fn error_message(report: &SimulationReport) -> &str {
    match &report.outcome {
        Outcome::Error { message } => message,
        other => panic!("expected an error outcome, got {other:?}"),
    }
}

#[tokio::test]
async fn seed_tree_walks_to_transfer_suppress_and_replays_on_timeout() {
    let engine = common::engine();
    let registry = Arc::new(Registry::new());
    let seed = load_seed(&engine, &registry);

    let report = run(&engine, &registry, seed.clone(), "1 1 1").await;
    assert_eq!(
        report.path,
        ["welcome", "has_license", "service_area", "transfer_ai"]
    );
    assert!(matches!(
        report.outcome,
        Outcome::Transfer {
            destination: LoweredDestination::Default,
            ..
        }
    ));

    let report = run(&engine, &registry, seed.clone(), "9").await;
    assert_eq!(report.path, ["welcome", "dnc"]);
    assert_eq!(report.outcome, Outcome::Suppress);

    let report = run(&engine, &registry, seed.clone(), "timeout 1 2").await;
    assert_eq!(
        report.path,
        ["welcome", "welcome", "has_license", "unqualified"]
    );
    assert_eq!(report.outcome, Outcome::Hangup);
    let goodbye = report.events.iter().find_map(|e| match e {
        TraceEvent::Hangup { goodbye, .. } => Some(goodbye.clone()),
        _ => None,
    });
    assert_eq!(
        goodbye,
        Some(vec![LoweredPrompt::File("not_qualified.wav".into())])
    );

    // Silence forever: three replays are tolerated, the fourth miss hangs up.
    let report = run(
        &engine,
        &registry,
        seed.clone(),
        "timeout timeout timeout timeout timeout",
    )
    .await;
    assert_eq!(report.path, ["welcome"; 4]);
    assert_eq!(report.outcome, Outcome::Hangup);

    // The caller hangs up mid-menu.
    let report = run(&engine, &registry, seed, "1 hangup").await;
    assert_eq!(report.outcome, Outcome::CallerHangup);
}

#[tokio::test]
async fn each_call_gets_a_fresh_instance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = common::engine();
    let registry = Arc::new(Registry::new());
    let counter = load_component(
        &engine,
        &registry,
        dir.path(),
        "counter",
        "mode = \"counter\"",
    );
    for _ in 0..3 {
        let report = run(&engine, &registry, counter.clone(), "").await;
        assert_eq!(
            report.path,
            ["counter", "count-1"],
            "state leaked between calls"
        );
        assert_eq!(report.outcome, Outcome::Hangup);
    }
}

/// Runs a misbehaving guest and a healthy seed call side by side on one thread: the bad guest
/// must end only its own call, with a clear reason.
async fn misbehaving_guest_ends_only_its_own_call(mode: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = common::engine();
    let registry = Arc::new(Registry::new());
    let bad = load_component(
        &engine,
        &registry,
        dir.path(),
        mode,
        &format!("mode = \"{mode}\""),
    );
    let seed = load_seed(&engine, &registry);
    let (bad_report, good_report) = tokio::join!(
        run(&engine, &registry, bad, ""),
        run(&engine, &registry, seed, "1 1 1"),
    );
    assert_eq!(
        good_report.path,
        ["welcome", "has_license", "service_area", "transfer_ai"]
    );
    assert!(matches!(good_report.outcome, Outcome::Transfer { .. }));
    assert_eq!(bad_report.path, [mode]);
    error_message(&bad_report).to_owned()
}

#[tokio::test(flavor = "current_thread")]
async fn trapping_guest_ends_its_own_call() {
    let message = misbehaving_guest_ends_only_its_own_call("trap").await;
    assert!(message.contains("trapped"), "{message}");
}

#[tokio::test(flavor = "current_thread")]
async fn looping_guest_is_stopped_by_its_cpu_budget() {
    let message = misbehaving_guest_ends_only_its_own_call("loop").await;
    assert!(message.contains("CPU budget"), "{message}");
}

#[tokio::test(flavor = "current_thread")]
async fn memory_hungry_guest_is_stopped_by_its_memory_cap() {
    let message = misbehaving_guest_ends_only_its_own_call("oom").await;
    assert!(
        message.contains("ran out of memory (cap 16 MiB)"),
        "{message}"
    );
}

#[tokio::test]
async fn guest_returning_an_error_ends_the_call_as_an_error() {
    let message = misbehaving_guest_ends_only_its_own_call("error").await;
    assert!(message.contains("deliberate failure"), "{message}");
}

#[tokio::test]
async fn guest_output_does_not_disturb_the_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = common::engine();
    let registry = Arc::new(Registry::new());
    let printer = load_component(&engine, &registry, dir.path(), "print", "mode = \"print\"");
    let report = run(&engine, &registry, printer, "").await;
    assert_eq!(report.outcome, Outcome::Hangup);
}

#[tokio::test]
async fn component_enters_a_tree_sub_menu_and_comes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("billing.json"),
        r#"{ "name": "Billing", "nodes": {
              "menu": { "say": "Press star to go back", "gather": { "*": "back", "1": "agent" } },
              "back": { "action": "return" },
              "agent": { "action": "transfer", "to": { "internal": "200" } } } }"#,
    )
    .expect("write tree");
    let engine = common::engine();
    let registry = Arc::new(Registry::lazy(
        dir.path().to_owned(),
        LoadContext::default(),
        engine.clone(),
    ));
    let main = load_component(
        &engine,
        &registry,
        dir.path(),
        "main",
        "mode = \"sub\"\nsub = \"billing\"",
    );

    let report = run(&engine, &registry, main.clone(), "*").await;
    assert_eq!(report.path, ["sub", "billing/menu", "billing/back", "back"]);
    assert_eq!(report.outcome, Outcome::Hangup);

    // The sub-menu ends the call itself: the parent does not go on.
    let report = run(&engine, &registry, main.clone(), "1").await;
    assert_eq!(report.path, ["sub", "billing/menu", "billing/agent"]);
    assert!(matches!(
        report.outcome,
        Outcome::Transfer { destination: LoweredDestination::Internal(ref e), .. } if e == "200"
    ));

    // An unknown sub-menu is a failed transfer the parent sees as an error.
    let missing = load_component(
        &engine,
        &registry,
        dir.path(),
        "broken",
        "mode = \"sub\"\nsub = \"nope\"",
    );
    let report = run(&engine, &registry, missing, "").await;
    assert!(
        error_message(&report).contains("no IVR named 'nope'"),
        "{report:?}"
    );
}

#[tokio::test]
async fn failed_transfer_is_reported_to_the_ivr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = common::engine();
    let registry = Arc::new(Registry::new());
    let menu = load_component(
        &engine,
        &registry,
        dir.path(),
        "menu",
        "mode = \"menu\"\ntarget = \"sip:agent@127.0.0.1\"",
    );
    let options = SimulationOptions {
        transfer: wasm_ivr::simulate::TransferBehaviour::Fail(
            wasm_ivr::simulate::TransferFailureKind::Busy,
        ),
        ..SimulationOptions::default()
    };
    let report = simulate(
        &engine,
        registry.clone(),
        menu,
        parse_script("1").expect("script"),
        &options,
    )
    .await;
    assert_eq!(report.path, ["menu", "transfer-failed"]);
    assert_eq!(report.outcome, Outcome::Hangup);
}

/// A caller that waits at its first gather until released, so a test can change the folder
/// while the call is in progress.
struct HeldCaller {
    inner: ScriptedCaller,
    release: Option<oneshot::Receiver<()>>,
    reached_gather: Option<oneshot::Sender<()>>,
}

#[async_trait]
impl CallChannel for HeldCaller {
    fn now_ms(&self) -> u64 {
        self.inner.now_ms()
    }
    async fn play(&mut self, prompts: &[Prompt]) -> Result<(), CallError> {
        self.inner.play(prompts).await
    }
    async fn gather(&mut self, options: &GatherOptions) -> Result<GatherResult, CallError> {
        if let (Some(reached), Some(release)) = (self.reached_gather.take(), self.release.take()) {
            let _ = reached.send(());
            let _ = release.await;
        }
        self.inner.gather(options).await
    }
    async fn transfer(
        &mut self,
        to: &Destination,
        context: &[(String, String)],
    ) -> Result<(), CallError> {
        self.inner.transfer(to, context).await
    }
    async fn hang_up(&mut self, goodbye: &[Prompt]) {
        self.inner.hang_up(goodbye).await
    }
    async fn suppress(&mut self, goodbye: &[Prompt]) -> Result<(), String> {
        self.inner.suppress(goodbye).await
    }
}

fn first_gather_prompts(report_events: &[TraceEvent]) -> Vec<LoweredPrompt> {
    report_events
        .iter()
        .find_map(|e| match e {
            TraceEvent::Gather { prompts, .. } => Some(prompts.clone()),
            _ => None,
        })
        .expect("a gather")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_swaps_new_calls_while_a_call_in_progress_keeps_its_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let audio = dir.path().join("audio");
    std::fs::create_dir(&audio).expect("audio dir");
    for f in [
        "welcome.wav",
        "welcome2.wav",
        "license_check.wav",
        "area_check.wav",
        "not_qualified.wav",
        "wrong_area.wav",
    ] {
        std::fs::write(audio.join(f), b"").expect("prompt");
    }
    let tree_path = dir.path().join("plumber.json");
    std::fs::write(&tree_path, SEED).expect("write tree");
    std::fs::write(
        dir.path().join("routes.toml"),
        "\"+14155559876\" = \"plumber\"\n",
    )
    .expect("routes");

    let engine = common::engine();
    let registry = Arc::new(Registry::new());
    let mut folder = Folder::new(dir.path().to_owned(), audio.clone());
    let report = folder.sync(&engine, &registry);
    assert_eq!(report.loaded.len(), 1, "{report:?}");
    assert_eq!(report.routes.as_ref().map(|r| r.is_ok()), Some(true));
    let v1 = registry.route("+14155559876").expect("routed");
    assert_eq!(
        registry.route("14155559876").map(|i| i.version.clone()),
        Some(v1.version.clone())
    );

    // Call A starts on version 1 and is held at its first gather.
    let (reached_tx, reached_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    let held = HeldCaller {
        inner: ScriptedCaller::new(
            parse_script("1 2").expect("script"),
            &SimulationOptions::default(),
        ),
        release: Some(release_rx),
        reached_gather: Some(reached_tx),
    };
    let call_a = {
        let engine = engine.clone();
        let registry = registry.clone();
        let ivr = v1.clone();
        tokio::spawn(async move {
            let call = wasm_ivr::engine::CallContext::new(
                Box::new(held),
                wasm_ivr::simulate::call_info("call-a", &ivr, &SimulationOptions::default()),
                registry,
                engine.settings().cpu_budget,
            );
            engine.run_call(ivr, call).await
        })
    };
    reached_rx.await.expect("call A reached its gather");

    // Version 2 changes the welcome prompt.
    std::fs::write(
        &tree_path,
        SEED.replace("\"welcome.wav\"", "\"welcome2.wav\""),
    )
    .expect("edit");
    let report = folder.sync(&engine, &registry);
    assert_eq!(report.loaded.len(), 1, "{report:?}");
    let v2 = registry.route("+14155559876").expect("routed");
    assert_ne!(v1.version, v2.version);

    // A broken edit is refused and version 2 keeps serving.
    std::fs::write(&tree_path, "{ \"name\": \"x\", \"nodes\": { oops").expect("break");
    let report = folder.sync(&engine, &registry);
    assert!(
        report.loaded.is_empty() && report.failed.len() == 1,
        "{report:?}"
    );
    assert!(report.failed[0].1.contains("plumber.json:1:"), "{report:?}");
    let still = registry.route("+14155559876").expect("still routed");
    assert_eq!(still.version, v2.version);

    // A tree whose prompt is missing is refused too.
    std::fs::write(&tree_path, SEED.replace("\"welcome.wav\"", "\"nope.wav\"")).expect("edit");
    let report = folder.sync(&engine, &registry);
    assert!(
        report.failed[0].1.contains("missing audio file 'nope.wav'"),
        "{report:?}"
    );

    let call_b = run(
        &engine,
        &registry,
        registry.route("+14155559876").expect("routed"),
        "1 2",
    )
    .await;
    assert_eq!(call_b.version, v2.version);
    assert_eq!(
        first_gather_prompts(&call_b.events),
        [LoweredPrompt::File("welcome2.wav".into())]
    );

    release_tx.send(()).expect("release call A");
    let call_a = call_a.await.expect("call A");
    let entered = call_a.trace.events.iter().find_map(|e| match e {
        TraceEvent::Enter { version, .. } => Some(version.clone()),
        _ => None,
    });
    assert_eq!(entered, Some(v1.version.clone()), "call A kept its version");
    assert_eq!(
        first_gather_prompts(&call_a.trace.events),
        [LoweredPrompt::File("welcome.wav".into())]
    );
    assert_eq!(call_a.trace.path, ["welcome", "has_license", "unqualified"]);

    // Deleting the file unloads the IVR.
    std::fs::remove_file(&tree_path).expect("delete");
    let report = folder.sync(&engine, &registry);
    assert_eq!(report.unloaded, ["plumber"]);
    assert!(registry.route("+14155559876").is_none());
}

#[tokio::test]
async fn broken_component_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = common::engine();
    let path = dir.path().join("junk.wasm");
    std::fs::write(&path, b"\0asm\x0d\0\x01\0garbage").expect("write");
    let err = engine
        .load_path(&path, &LoadContext::default())
        .expect_err("junk refused");
    assert!(err.to_string().contains("junk.wasm"), "{err}");
    // A core module is not a component.
    std::fs::write(&path, b"\0asm\x01\0\0\0").expect("write");
    let err = engine
        .load_path(&path, &LoadContext::default())
        .expect_err("module refused");
    assert!(err.to_string().contains("junk.wasm"), "{err}");
}

#[tokio::test]
async fn compiled_components_are_cached_and_a_bad_cache_entry_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let engine = common::engine_with_cache(Some(cache.clone()));
    let registry = Arc::new(Registry::new());
    let first = load_component(
        &engine,
        &registry,
        dir.path(),
        "counter",
        "mode = \"counter\"",
    );
    let entries: Vec<_> = std::fs::read_dir(&cache)
        .expect("cache dir")
        .filter_map(|e| e.ok())
        .collect();
    // The tree guest and the testbed component.
    assert_eq!(entries.len(), 2, "{entries:?}");
    let mtimes_after_first_load: std::collections::HashMap<_, _> = entries
        .iter()
        .map(|e| {
            let mtime = e.metadata().and_then(|m| m.modified()).expect("mtime");
            (e.path(), mtime)
        })
        .collect();

    // A fresh engine loads from the cache and runs.
    let engine2 = common::engine_with_cache(Some(cache.clone()));
    let again = engine2
        .load_path(&dir.path().join("counter.wasm"), &LoadContext::default())
        .expect("from cache");
    assert_eq!(again.version, first.version);
    let report = run(&engine2, &registry, Arc::new(again), "").await;
    assert_eq!(report.path, ["counter", "count-1"]);

    // That was a cache hit, not a second compile: the entry named by the component's SHA-256
    // was not rewritten, and with another component's compiled code under its name a fresh
    // engine runs that code instead of the .wasm's.
    use sha2::Digest;
    let wasm = std::fs::read(dir.path().join("counter.wasm")).expect("read counter.wasm");
    let key: String = sha2::Sha256::digest(&wasm)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (counter_entry, other_entry): (Vec<_>, Vec<_>) =
        entries.iter().map(|e| e.path()).partition(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&key))
        });
    assert_eq!(
        counter_entry.len(),
        1,
        "one entry for the testbed: {entries:?}"
    );
    assert_eq!(
        other_entry.len(),
        1,
        "one entry for the tree guest: {entries:?}"
    );
    let modified = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .expect("mtime")
    };
    assert_eq!(
        modified(&counter_entry[0]),
        mtimes_after_first_load[&counter_entry[0]],
        "loading from the cache must not rewrite the entry"
    );
    let genuine = std::fs::read(&counter_entry[0]).expect("read entry");
    std::fs::copy(&other_entry[0], &counter_entry[0]).expect("swap in the tree guest's code");
    let engine_swapped = common::engine_with_cache(Some(cache.clone()));
    let swapped = engine_swapped
        .load_path(&dir.path().join("counter.wasm"), &LoadContext::default())
        .expect("the tree guest's code loads under the testbed's name");
    let report = run(&engine_swapped, &registry, Arc::new(swapped), "").await;
    assert_ne!(
        report.path,
        ["counter", "count-1"],
        "the compiled code came from the cache entry, so the testbed's behaviour is gone"
    );
    std::fs::write(&counter_entry[0], genuine).expect("restore the entry");

    // Corrupt every entry: loading still works (recompiles) and rewrites the cache.
    for entry in std::fs::read_dir(&cache)
        .expect("cache dir")
        .filter_map(|e| e.ok())
    {
        std::fs::write(entry.path(), b"corrupt").expect("corrupt");
    }
    let engine3 = common::engine_with_cache(Some(cache.clone()));
    let loaded = engine3
        .load_path(&dir.path().join("counter.wasm"), &LoadContext::default())
        .expect("recompiled");
    let report = run(&engine3, &registry, Arc::new(loaded), "").await;
    assert_eq!(report.outcome, Outcome::Hangup);
}

#[tokio::test]
async fn invalid_keys_on_a_tree_are_counted_per_node() {
    let engine = common::engine();
    let registry = Arc::new(Registry::new());
    let seed = load_seed(&engine, &registry);
    // 5 is not on the welcome menu: the node replays, then 1 2 goes on.
    let report = run(&engine, &registry, seed, "5 1 2").await;
    assert_eq!(
        report.path,
        ["welcome", "welcome", "has_license", "unqualified"]
    );
    let text = wasm_ivr::metrics::metrics().render();
    assert!(
        text.contains("wasm_ivr_invalid_keys_total{ivr=\"plumber-qualifier\",node=\"welcome\"}"),
        "{text}"
    );
    assert!(
        !text.contains("node=\"has_license\"}"),
        "valid keys are not counted: {text}"
    );
}
