//! Edge hardening, honest failure and bounded state: suppress with a failing store, caps on
//! queues, caches and records, the guest CPU budget under load.

mod common;

use common::sipp::{self, CallDir, Server, ServerOptions, Sipp, Step};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasm_ivr::engine::registry::LoadContext;
use wasm_ivr::engine::{EngineSettings, IvrEngine, LoadedIvr, Outcome, Registry};
use wasm_ivr::simulate::{SimulationOptions, SimulationReport, parse_script, simulate};
use wasm_ivr::store::{CallRecord, SqliteStore, Store};

// ---------------------------------------------------------------------------------------------
// The guest CPU budget counts the guest's own CPU time
// ---------------------------------------------------------------------------------------------

fn cpu_engine(budget: Duration) -> Arc<IvrEngine> {
    IvrEngine::new(EngineSettings {
        max_instances: 32,
        memory_limit_bytes: 16 << 20,
        cpu_budget: budget,
        cache_dir: None,
        pooling: true,
    })
    .expect("engine")
}

fn load_testbed(
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

async fn run(
    engine: &Arc<IvrEngine>,
    registry: &Arc<Registry>,
    ivr: Arc<LoadedIvr>,
) -> SimulationReport {
    simulate(
        engine,
        registry.clone(),
        ivr,
        parse_script("").expect("script"),
        &SimulationOptions::default(),
    )
    .await
}

/// Burner threads that keep every core busy until dropped.
struct Burners {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Burners {
    fn start(n: usize) -> Burners {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..10_000 {
                            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                        }
                    }
                })
            })
            .collect();
        Burners { stop, threads }
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Healthy guests that each burn a real share of their budget, many at once on two runtime
/// threads while burner threads load every core: each is charged its own CPU, so none is
/// killed, although each call's wall time is several budgets long. A looping guest in the same
/// crowd is still stopped by the budget. (Charged by wall time, as before, the healthy calls
/// were killed here.)
#[test]
fn a_healthy_guest_keeps_its_budget_next_to_a_busy_machine_and_a_loop_is_still_stopped() {
    const BUDGET: Duration = Duration::from_millis(600);
    const CALLS: usize = 12;
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // Calibrate on this machine: how much work fits in a third of the budget, measured
        // with the process's CPU clock (everything the process did meanwhile, so at least the
        // guest's own CPU). That also checks the meter against an independent clock: it
        // charges the guest real CPU, not more than the process used.
        let probe_engine = cpu_engine(Duration::from_secs(120));
        let probe_registry = Arc::new(Registry::new());
        const PROBE: u64 = 60_000_000;
        let probe = load_testbed(
            &probe_engine,
            &probe_registry,
            dir.path(),
            "probe",
            &format!("mode = \"burn\"\niterations = {PROBE}"),
        );
        let process_cpu = || {
            let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
            Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
        };
        let before = process_cpu();
        let report = run(&probe_engine, &probe_registry, probe).await;
        let probe_process = process_cpu().saturating_sub(before);
        assert_eq!(report.outcome, Outcome::Hangup, "{:?}", report.outcome);
        let probe_guest = Duration::from_micros(report.guest_cpu_us);
        eprintln!("probe: {PROBE} iterations: guest {probe_guest:?}, process {probe_process:?}");
        assert!(
            probe_guest <= probe_process + Duration::from_millis(5)
                && probe_guest >= probe_process / 2,
            "the meter charged {probe_guest:?}; the process used {probe_process:?}"
        );
        let iterations = ((PROBE as f64) * (BUDGET.as_secs_f64() / 3.0)
            / probe_process.as_secs_f64().max(1e-3)) as u64;
        eprintln!("{iterations} iterations per healthy call");

        let engine = cpu_engine(BUDGET);
        let registry = Arc::new(Registry::new());
        let healthy = load_testbed(
            &engine,
            &registry,
            dir.path(),
            "healthy",
            &format!("mode = \"burn\"\niterations = {iterations}"),
        );
        let looping = load_testbed(&engine, &registry, dir.path(), "loop", "mode = \"loop\"");

        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let burners = Burners::start(2 * cores);
        let started = Instant::now();
        let mut calls = Vec::new();
        for _ in 0..CALLS {
            let (engine, registry, ivr) = (engine.clone(), registry.clone(), healthy.clone());
            calls.push(tokio::spawn(
                async move { run(&engine, &registry, ivr).await },
            ));
        }
        let (engine2, registry2) = (engine.clone(), registry.clone());
        let looped = tokio::spawn(async move { run(&engine2, &registry2, looping).await });
        let deadline = Duration::from_secs(180);
        let mut reports = Vec::new();
        for call in calls {
            let report = tokio::time::timeout(deadline, call)
                .await
                .expect("a healthy call finishes")
                .expect("call task");
            reports.push(report);
        }
        let looped = tokio::time::timeout(deadline, looped)
            .await
            .expect("the looping call is stopped")
            .expect("call task");
        let wall = started.elapsed();
        drop(burners);
        let charged: Vec<u64> = reports.iter().map(|r| r.guest_cpu_us / 1000).collect();
        eprintln!("{CALLS} calls under load in {wall:?}; charged ms: {charged:?}");

        for report in &reports {
            assert_eq!(
                report.outcome,
                Outcome::Hangup,
                "a healthy guest was killed under load (wall {wall:?}): {:?}",
                report.outcome
            );
            assert_eq!(report.path, ["burn", "burned"]);
            let cpu = Duration::from_micros(report.guest_cpu_us);
            assert!(
                cpu > Duration::ZERO && cpu < BUDGET,
                "charged {cpu:?} of a {BUDGET:?} budget"
            );
        }
        // The point of the test: the crowd made the calls take longer than their budget in
        // wall time. Without this the machine was not loaded enough to tell the meters apart.
        assert!(
            wall > BUDGET * 2,
            "the load test was not loaded: {CALLS} calls took {wall:?}"
        );
        match &looped.outcome {
            Outcome::Error { message } => {
                assert!(message.contains("CPU budget"), "{message}")
            }
            other => panic!("the looping guest was not stopped: {other:?}"),
        }
        assert!(
            Duration::from_micros(looped.guest_cpu_us) >= BUDGET,
            "stopped after {}µs of its own CPU",
            looped.guest_cpu_us
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Honest failure: suppress and the do-not-call lookup with a failing store
// ---------------------------------------------------------------------------------------------

/// The transfer-desk fixture's DID (`9` → `opt_out`: suppress with a 4.6 s goodbye).
const DESK_DID: &str = "+15005550150";
const CALLER: &str = "+14155550123";

/// Marks files immutable (`chattr +i`): even root's writes to them fail, on open descriptors
/// too, as on a filesystem that went read-only. Cleared again when dropped.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(paths: &[PathBuf]) -> Immutable {
        for path in paths {
            let status = Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .expect("run chattr (e2fsprogs)");
            assert!(status.success(), "chattr +i {} failed", path.display());
        }
        Immutable(paths.to_vec())
    }

    fn clear(&mut self) {
        for path in self.0.drain(..) {
            let _ = Command::new("chattr").arg("-i").arg(&path).status();
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        self.clear();
    }
}

fn wait_for(what: &str, server: &Server, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metrics(server: &Server) -> String {
    let port = server.http_port.expect("the HTTP API is on");
    ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .expect("GET /metrics")
        .body_mut()
        .read_to_string()
        .expect("metrics text")
}

/// The `rtp_sent=N` of the server's "call ended" line for `call_id`.
fn rtp_sent(server: &Server, call_id: &str) -> u64 {
    let log = std::fs::read_to_string(&server.log_path).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("call ended") && l.contains(call_id))
        .find_map(|l| {
            let at = l.find("rtp_sent=")? + "rtp_sent=".len();
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no `call ended` line for {call_id}\n{}", server.log()))
}

fn press_9() -> Vec<Step> {
    vec![Step::Pause(700), Step::Info('9'), Step::AwaitBye(20_000)]
}

/// 5. The store refuses writes (its files immutable: what a filesystem gone read-only does)
///    while a caller presses 9 to opt out. The write is retried, then the failure is reported:
///    the goodbye that says "you have been removed" is not played, the call ends as `error`
///    (trace, record, metric, log), and the caller is not on the list. Once the store takes
///    writes again, the record is written and the next opt-out works, goodbye and all.
#[test]
fn suppress_with_a_failing_store_is_reported_and_the_goodbye_is_withheld() {
    let _serial = sipp::serial();
    let dir = CallDir::fixture("transfers");
    let store = dir.logs.join("wasm-ivr.db");
    let server = Server::start(
        &dir,
        &ServerOptions {
            store: Some(store.clone()),
            http: true,
            ..ServerOptions::default()
        },
    );
    let wal = PathBuf::from(format!("{}-wal", store.display()));
    wait_for(
        "the store's WAL file exists",
        &server,
        Duration::from_secs(10),
        || wal.exists(),
    );
    let mut broken = Immutable::set(&[store.clone(), wal]);

    let caller = Sipp::call(&dir, "suppress-broken-store", DESK_DID, &press_9())
        .caller(CALLER)
        .timeout(60)
        .spawn(&server);
    let failure_line = "suppress failed, goodbye withheld";
    wait_for(
        "the suppress failure is logged",
        &server,
        Duration::from_secs(45),
        || std::fs::read_to_string(&server.log_path).is_ok_and(|l| l.contains(failure_line)),
    );
    // The store recovers (the call's record is retried for a few seconds).
    broken.clear();
    let run = caller.wait();
    run.assert_success(&server);
    assert_eq!(run.requests("BYE").len(), 1, "one BYE\n{}", run.report());

    let trace = server.trace(&run.call_id);
    assert_eq!(trace.path(), ["menu", "opt_out"], "{}", trace.pretty());
    assert_eq!(trace.outcome(), "error", "{}", trace.pretty());
    assert!(
        trace.events("suppress").is_empty(),
        "no goodbye: {}",
        trace.pretty()
    );
    assert!(
        trace.events("error").iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains(failure_line))),
        "{}",
        trace.pretty()
    );
    // The goodbye alone is 4.6 s, 230 frames; the whole call sent fewer.
    let failed_rtp = rtp_sent(&server, &run.call_id);
    assert!(
        failed_rtp < 230,
        "sent {failed_rtp} RTP packets: the goodbye played?"
    );

    let text = metrics(&server);
    assert!(
        text.contains("wasm_ivr_store_errors_total{op=\"dnc-add\"} 1"),
        "{text}"
    );
    let log = std::fs::read_to_string(&server.log_path).unwrap_or_default();
    assert!(
        log.contains("retrying"),
        "the write was retried\n{}",
        server.log()
    );

    let reader = SqliteStore::open(&store).expect("open the store");
    assert!(!reader.dnc_contains(CALLER).expect("lookup"), "not listed");
    let mut record = None;
    wait_for(
        "the record is written",
        &server,
        Duration::from_secs(20),
        || {
            record = reader.call(&run.call_id).expect("read records");
            record.is_some()
        },
    );
    let record = record.expect("a record");
    assert_eq!(record.outcome, "error");
    assert!(
        record
            .detail
            .as_deref()
            .is_some_and(|d| d.contains(failure_line)),
        "{record:?}"
    );

    // The same server, the store writable again: the opt-out works and the goodbye plays.
    let again = Sipp::call(&dir, "suppress-store-back", DESK_DID, &press_9())
        .caller(CALLER)
        .timeout(60)
        .run(&server);
    again.assert_success(&server);
    let trace = server.trace(&again.call_id);
    assert_eq!(trace.outcome(), "suppress", "{}", trace.pretty());
    assert!(reader.dnc_contains(CALLER).expect("lookup"), "listed now");
    let played_rtp = rtp_sent(&server, &again.call_id);
    assert!(
        played_rtp >= 230,
        "the goodbye played this time: {played_rtp} packets"
    );
}

/// A do-not-call lookup that fails is visible: logged, counted, and the IVR is told the list
/// could not be checked (`X-IVR-DNC-Lookup: failed`), not that the caller is not listed; a
/// caller cannot fake that header.
#[test]
fn a_failing_dnc_lookup_is_visible_not_silently_not_listed() {
    let _serial = sipp::serial();
    let dir = CallDir::empty_with_audio();
    common::install_testbed(&dir.ivrs, "dnc-check", "mode = \"dnc\"");
    const DID: &str = "+15005550177";
    std::fs::write(
        dir.ivrs.join("routes.toml"),
        format!("\"{DID}\" = \"dnc-check\"\n"),
    )
    .expect("routes");
    let store = dir.logs.join("wasm-ivr.db");
    let server = Server::start(
        &dir,
        &ServerOptions {
            store: Some(store.clone()),
            http: true,
            ..ServerOptions::default()
        },
    );
    let call = |name: &str| {
        let run = Sipp::call(&dir, name, DID, &[Step::AwaitBye(20_000)])
            .caller(CALLER)
            .invite_header("X-IVR-DNC-Lookup: failed")
            .timeout(60)
            .run(&server);
        run.assert_success(&server);
        server.trace(&run.call_id).path()
    };
    assert_eq!(
        call("dnc-healthy"),
        ["dnc", "not-listed"],
        "the caller's header is dropped"
    );
    let writer = SqliteStore::open(&store).expect("open the store");
    writer.dnc_add(CALLER, "test").expect("list the caller");
    assert_eq!(call("dnc-listed"), ["dnc", "listed"]);

    // The list becomes unreadable (a store whose table is gone: a botched restore).
    drop(writer);
    let conn = rusqlite::Connection::open(&store).expect("open");
    conn.execute_batch("ALTER TABLE dnc RENAME TO dnc_moved")
        .expect("rename the table");
    assert_eq!(call("dnc-broken"), ["dnc", "lookup-failed"]);
    let log = std::fs::read_to_string(&server.log_path).unwrap_or_default();
    assert!(
        log.contains("do-not-call lookup failed"),
        "{}",
        server.log()
    );
    let text = metrics(&server);
    assert!(
        text.contains("wasm_ivr_store_errors_total{op=\"dnc-lookup\"} 1"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Bounded state: call records and trace files
// ---------------------------------------------------------------------------------------------

fn old_record(i: u64, ended_at_ms: i64) -> CallRecord {
    CallRecord {
        call_id: format!("old-{i}"),
        caller: CALLER.into(),
        did: DESK_DID.into(),
        ivr: "transfer-desk".into(),
        version: "abc".into(),
        path: vec!["menu".into()],
        digits: Vec::new(),
        outcome: "hangup".into(),
        destination: None,
        detail: None,
        started_at_ms: ended_at_ms - 1_000,
        answered_at_ms: None,
        ended_at_ms,
    }
}

/// 6. Retention at start: records older than `records_keep_days` go, then all but the newest
///    `records_max`; trace files beyond `traces_keep` go, oldest first. The settings come
///    from the `[calls]` section.
#[test]
fn call_records_and_traces_are_pruned_to_the_retention_settings() {
    let _serial = sipp::serial();
    let dir = CallDir::fixture("transfers");
    let store_path = dir.logs.join("wasm-ivr.db");
    let now = i64::try_from(wasm_ivr::time::unix_ms()).expect("now");
    {
        let store = SqliteStore::open(&store_path).expect("store");
        // 5 records from 40 days ago, 12 recent ones.
        for i in 0..5 {
            store
                .record_call(&old_record(i, now - 40 * 86_400_000))
                .expect("record");
        }
        for i in 5..17 {
            store
                .record_call(&old_record(i, now - 60_000 + i as i64))
                .expect("record");
        }
    }
    for i in 0..30 {
        let path = dir.traces.join(format!("old-{i:02}.json"));
        std::fs::write(&path, "{}").expect("trace");
        let at = std::time::SystemTime::now() - Duration::from_secs(3_600 - i);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(at))
            .expect("set mtime");
    }
    let config = dir.logs.join("wasm-ivr.toml");
    std::fs::write(
        &config,
        "[calls]\nrecords_keep_days = 30\nrecords_max = 8\ntraces_keep = 10\n",
    )
    .expect("config");
    let server = Server::start(
        &dir,
        &ServerOptions {
            store: Some(store_path.clone()),
            config: Some(config),
            http: true,
            ..ServerOptions::default()
        },
    );
    let store = SqliteStore::open(&store_path).expect("store");
    let ids = || -> Vec<String> {
        let mut ids: Vec<String> = store
            .calls(&Default::default())
            .expect("records")
            .into_iter()
            .map(|r| r.call_id)
            .collect();
        ids.sort();
        ids
    };
    wait_for("records pruned", &server, Duration::from_secs(20), || {
        ids().len() == 8
    });
    let mut expected: Vec<String> = (9..17).map(|i| format!("old-{i}")).collect();
    expected.sort();
    assert_eq!(ids(), expected, "the newest 8 recent records stay");
    let traces = || {
        let mut names: Vec<String> = sipp::trace_files(&dir.traces)
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        names
    };
    wait_for("traces pruned", &server, Duration::from_secs(20), || {
        traces().len() == 10
    });
    let expected: Vec<String> = (20..30).map(|i| format!("old-{i:02}.json")).collect();
    assert_eq!(traces(), expected, "the newest 10 traces stay");
    let text = metrics(&server);
    assert!(
        text.contains("wasm_ivr_pruned_total{what=\"records\"} 9"),
        "{text}"
    );
    assert!(
        text.contains("wasm_ivr_pruned_total{what=\"traces\"} 20"),
        "{text}"
    );
}
