//! IVRs written in Rust, C, JavaScript and Python, built from source by
//! `scripts/build-examples.sh` into `target/examples/`, run with `wasm-ivr simulate` as a user
//! would: every language's menu takes the exact path its keys lead to, and a JSON tree enters a
//! Python sub-menu and comes back. `wasm-ivr new` projects in every language build with their
//! `build.sh` and pass their `test.sh`. Real calls (SIPp, keys by SIP INFO, one at a time) reach
//! the Rust and JavaScript examples and the polyglot tree served by `wasm-ivr serve`.

mod common;

use common::sipp::{self, CallDir, Server, ServerOptions, Sipp, Step, Trace};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A built example, or a failure that says how to build it.
fn artifact(relative: &str) -> PathBuf {
    let path = common::root().join("target/examples").join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-examples.sh first (scripts/test.sh does)",
        path.display()
    );
    path
}

fn cache_dir() -> PathBuf {
    common::root().join("target/test-cache")
}

fn wasm_ivr(args: &[&str]) -> std::process::Output {
    Command::new(common::bin())
        .args(args)
        .current_dir(common::root())
        .env("WASM_IVR_CACHE_DIR", cache_dir())
        .output()
        .expect("run wasm-ivr")
}

/// Compiles every example into the compile cache once, before any call runs: compiling the
/// 18 MB Python component takes tens of seconds in a debug build, and tests running in parallel
/// would otherwise all compile it at once. `check` compiles through the same cache `simulate`
/// reads.
fn warm_cache() {
    static WARM: OnceLock<()> = OnceLock::new();
    WARM.get_or_init(|| {
        let files: Vec<PathBuf> = [
            "rust-hours.wasm",
            "c-menu.wasm",
            "js-menu.wasm",
            "python-menu.wasm",
            "polyglot/python-sub.wasm",
        ]
        .iter()
        .map(|f| artifact(f))
        .collect();
        let mut args = vec!["check"];
        args.extend(files.iter().map(|f| f.to_str().expect("utf-8 path")));
        let output = wasm_ivr(&args);
        assert!(
            output.status.success(),
            "wasm-ivr check on the examples failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

/// `wasm-ivr simulate PATH --keys KEYS --json [extra...]`: the step path and the outcome.
fn simulate(path: &Path, keys: &str, extra: &[&str]) -> (Vec<String>, Value) {
    warm_cache();
    let path = path.to_str().expect("utf-8 path");
    let mut args = vec!["simulate", path, "--keys", keys, "--json"];
    args.extend_from_slice(extra);
    let output = wasm_ivr(&args);
    assert!(
        output.status.success(),
        "wasm-ivr {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("simulate --json");
    let steps = report["path"]
        .as_array()
        .expect("path")
        .iter()
        .map(|v| v.as_str().expect("label").to_owned())
        .collect();
    (steps, report["outcome"].clone())
}

#[track_caller]
fn assert_call(path: &Path, keys: &str, extra: &[&str], steps: &[&str], outcome: Value) {
    let (actual_steps, actual_outcome) = simulate(path, keys, extra);
    assert_eq!(actual_steps, steps, "path for keys {keys:?} on {path:?}");
    assert_eq!(
        actual_outcome, outcome,
        "outcome for keys {keys:?} on {path:?}"
    );
}

// --- Rust ---------------------------------------------------------------------------------------

/// The Rust example in a folder of its own with these settings (hours picked so the test does
/// not depend on the time it runs: `simulate` starts calls at the real time).
fn rust_hours_with(dir: &Path, hours: &str) -> PathBuf {
    let wasm = dir.join("rust-hours.wasm");
    std::fs::copy(artifact("rust-hours.wasm"), &wasm).expect("copy rust-hours.wasm");
    let example =
        std::fs::read_to_string(common::root().join("examples/rust-hours/rust-hours.toml"))
            .expect("examples/rust-hours/rust-hours.toml");
    // Keep the example's PINs and destinations; replace its hours.
    let pins = example
        .split_once("[pins]")
        .map(|(_, pins)| pins)
        .expect("[pins] table");
    let settings = format!(
        "{hours}\noffice_extension = \"200\"\non_call = \"oncall@pbx.example.net\"\npin_attempts = 3\n[pins]{pins}"
    );
    std::fs::write(dir.join("rust-hours.toml"), settings).expect("write settings");
    wasm
}

const ALWAYS_OPEN: &str = "open_hour = 0\nclose_hour = 24\nclosed_days = []";
const ALWAYS_CLOSED: &str = "open_hour = 8\nclose_hour = 18\nclosed_days = [\"sun\", \"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\"]";

#[test]
fn rust_office_hours_transfer_with_the_caller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = rust_hours_with(dir.path(), ALWAYS_OPEN);
    assert_call(
        &wasm,
        "",
        &["--caller", "+14155550100"],
        &["welcome", "open"],
        json!({"action": "transfer", "destination": {"internal": "200"},
               "context": {"caller": "+14155550100", "reason": "office-hours"}}),
    );
    assert_call(
        &wasm,
        "",
        &["--transfer-fails", "busy"],
        &["welcome", "open", "office-busy"],
        json!({"action": "hangup"}),
    );
}

#[test]
fn rust_after_hours_pin_with_retries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = rust_hours_with(dir.path(), ALWAYS_CLOSED);
    assert_call(
        &wasm,
        "1111# 1234#",
        &[],
        &["welcome", "closed", "pin", "pin-wrong", "pin", "on-call"],
        json!({"action": "transfer", "destination": {"uri": "oncall@pbx.example.net"},
               "context": {"account": "ACME-0042", "caller": "+15550100",
                           "pin-attempts": "2", "reason": "after-hours-emergency"}}),
    );
    assert_call(
        &wasm,
        "0000# timeout 99",
        &[],
        &[
            "welcome",
            "closed",
            "pin",
            "pin-wrong",
            "pin",
            "pin-wrong",
            "pin",
            "locked",
        ],
        json!({"action": "hangup"}),
    );
}

// --- C ------------------------------------------------------------------------------------------

#[test]
fn c_menu_branches() {
    let wasm = artifact("c-menu.wasm");
    let context = |department: &str| json!({"caller": "+15550100", "department": department});
    assert_call(
        &wasm,
        "1",
        &[],
        &["menu", "appointments"],
        json!({"action": "transfer", "destination": {"internal": "101"},
               "context": context("appointments")}),
    );
    assert_call(
        &wasm,
        "3 2",
        &[],
        &["menu", "address", "menu", "prescriptions"],
        json!({"action": "transfer", "destination": {"uri": "refills@pharmacy.example.net"},
               "context": context("prescriptions")}),
    );
    assert_call(
        &wasm,
        "0",
        &[],
        &["menu", "reception"],
        json!({"action": "transfer", "destination": "default",
               "context": context("reception")}),
    );
    assert_call(
        &wasm,
        "1",
        &["--transfer-fails", "no-answer"],
        &["menu", "appointments", "busy"],
        json!({"action": "hangup"}),
    );
}

#[test]
fn c_menu_retries_invalid_keys_then_gives_up() {
    let wasm = artifact("c-menu.wasm");
    assert_call(
        &wasm,
        "7 1",
        &[],
        &["menu", "invalid", "menu", "appointments"],
        json!({"action": "transfer", "destination": {"internal": "101"},
               "context": {"caller": "+15550100", "department": "appointments"}}),
    );
    assert_call(
        &wasm,
        "timeout 9 timeout",
        &[],
        &["menu", "menu", "invalid", "menu", "goodbye"],
        json!({"action": "hangup"}),
    );
}

// --- JavaScript ---------------------------------------------------------------------------------

#[test]
fn js_menu_branches() {
    let wasm = artifact("js-menu.wasm");
    assert_call(
        &wasm,
        "1 4213#",
        &[],
        &["menu", "order-number", "order-status"],
        json!({"action": "hangup"}),
    );
    assert_call(
        &wasm,
        "3 2",
        &[],
        &["menu", "hours", "menu", "new-order"],
        json!({"action": "transfer", "destination": {"external": "15550123"},
               "context": {"caller": "+15550100", "intent": "new-order"}}),
    );
    assert_call(
        &wasm,
        "2",
        &["--transfer-fails", "busy"],
        &["menu", "new-order", "shop-busy"],
        json!({"action": "hangup"}),
    );
    assert_call(
        &wasm,
        "9",
        &[],
        &["menu", "opt-out"],
        json!({"action": "suppress"}),
    );
}

#[test]
fn js_menu_retries_then_gives_up() {
    let wasm = artifact("js-menu.wasm");
    assert_call(
        &wasm,
        "1 4 5 timeout 7",
        &[],
        &[
            "menu",
            "order-number",
            "order-unknown",
            "menu",
            "menu",
            "menu",
            "goodbye",
        ],
        json!({"action": "hangup"}),
    );
}

// --- Python -------------------------------------------------------------------------------------

#[test]
fn python_menu_branches() {
    let wasm = artifact("python-menu.wasm");
    assert_call(
        &wasm,
        "1 12345678# 3",
        &[],
        &["menu", "card", "renewed", "menu", "librarian"],
        json!({"action": "transfer", "destination": {"internal": "300"},
               "context": {"card": "12345678", "from": "python-menu"}}),
    );
    assert_call(
        &wasm,
        "2 8 *",
        &[],
        &["menu", "events", "menu", "menu", "back"],
        json!({"action": "hangup"}),
    );
    assert_call(
        &wasm,
        "9",
        &[],
        &["menu", "opt-out"],
        json!({"action": "suppress"}),
    );
    assert_call(
        &wasm,
        "timeout timeout timeout",
        &[],
        &["menu", "menu", "menu", "goodbye"],
        json!({"action": "hangup"}),
    );
}

// --- Polyglot: a JSON tree entering a Python sub-menu --------------------------------------------

#[test]
fn polyglot_tree_enters_the_python_sub_menu_and_comes_back() {
    let tree = artifact("polyglot/main.json");
    // 2 enters the Python menu; there 2 hears the events, * returns to the tree, # hangs up.
    assert_call(
        &tree,
        "2 2 * #",
        &[],
        &[
            "main",
            "library",
            "python-sub/menu",
            "python-sub/events",
            "python-sub/menu",
            "python-sub/back",
            "main",
            "goodbye",
        ],
        json!({"action": "hangup"}),
    );
    // The sub-menu can end the call itself: a transfer with its own settings (python-sub.toml).
    assert_call(
        &tree,
        "2 3",
        &[],
        &["main", "library", "python-sub/menu", "python-sub/librarian"],
        json!({"action": "transfer", "destination": {"internal": "310"},
               "context": {"from": "python-menu"}}),
    );
    assert_call(
        &tree,
        "1",
        &[],
        &["main", "council"],
        json!({"action": "transfer", "destination": {"internal": "100"},
               "context": {"department": "council"}}),
    );
}

// --- `wasm-ivr new`: a project per language that builds and passes its own test ----------------

/// Builds and tests one language's scaffold at a time: the builds (cargo, componentize-py) use
/// both cores on their own.
fn scaffold_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A toolchain `scripts/build-examples.sh` installed, or a failure that says how to get it.
fn tool(relative: &str) -> PathBuf {
    let path = common::root().join(relative);
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-examples.sh first (scripts/test.sh does)",
        path.display()
    );
    path
}

#[track_caller]
fn assert_ran(what: &str, output: &std::process::Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `wasm-ivr new NAME --lang LANG` in a temporary folder, then the project's `build.sh` with
/// the toolchains in `env`, then its `test.sh` (scripted calls through `wasm-ivr simulate`).
fn scaffold_builds_and_passes_its_test(lang: &str, env: &[(&str, PathBuf)]) {
    let _one_at_a_time = scaffold_lock();
    let parent = tempfile::tempdir().expect("tempdir");
    let name = format!("{lang}-scaffold");
    let output = Command::new(common::bin())
        .args(["new", &name, "--lang", lang, "--dir"])
        .arg(parent.path())
        .output()
        .expect("run wasm-ivr new");
    assert_ran("wasm-ivr new", &output);
    let project = parent.path().join(&name);
    for file in ["build.sh", "test.sh", "README.md", "wit/ivr.wit"] {
        assert!(project.join(file).is_file(), "{lang}: no {file}");
    }

    let script = |file: &str| {
        let mut command = Command::new(project.join(file));
        command
            .current_dir(&project)
            .env("WASM_IVR", common::bin())
            .env("WASM_IVR_CACHE_DIR", cache_dir())
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        for (key, value) in env {
            command.env(key, value);
        }
        command
            .output()
            .unwrap_or_else(|e| panic!("run {file}: {e}"))
    };
    assert_ran(&format!("{lang}: ./build.sh"), &script("build.sh"));
    let wasm = project.join(format!("{name}.wasm"));
    assert!(
        wasm.is_file(),
        "{lang}: build.sh wrote no {}",
        wasm.display()
    );

    let test = script("test.sh");
    assert_ran(&format!("{lang}: ./test.sh"), &test);
    let stdout = String::from_utf8_lossy(&test.stdout);
    assert!(
        stdout.contains("all calls passed") && !stdout.contains("FAIL"),
        "{lang}: test.sh said:\n{stdout}"
    );
    // The same project's test fails when the IVR goes elsewhere: it checks, not just runs.
    let wrong = std::fs::read_to_string(project.join("test.sh"))
        .expect("read test.sh")
        .replace(r#"'["menu","sales"]'"#, r#"'["menu","elsewhere"]'"#);
    std::fs::write(project.join("test.sh"), wrong).expect("write test.sh");
    let failing = script("test.sh");
    assert!(
        !failing.status.success(),
        "{lang}: test.sh passed with a wrong expected path:\n{}",
        String::from_utf8_lossy(&failing.stdout)
    );
}

#[test]
fn new_rust_project_builds_and_passes_its_test() {
    // A target folder of its own, kept between runs: the SDK's dependencies build once.
    scaffold_builds_and_passes_its_test(
        "rust",
        &[
            ("CARGO", PathBuf::from(env!("CARGO"))),
            ("CARGO_TARGET_DIR", common::root().join("target/scaffold")),
        ],
    );
}

#[test]
fn new_c_project_builds_and_passes_its_test() {
    scaffold_builds_and_passes_its_test(
        "c",
        &[
            ("WIT_BINDGEN", tool("target/tools/bin/wit-bindgen")),
            ("WASM_TOOLS", tool("target/tools/bin/wasm-tools")),
        ],
    );
}

#[test]
fn new_js_project_builds_and_passes_its_test() {
    // build.sh runs `npm install` in the project (componentize-qjs, pinned in package.json).
    scaffold_builds_and_passes_its_test("js", &[]);
}

#[test]
fn new_python_project_builds_and_passes_its_test() {
    scaffold_builds_and_passes_its_test(
        "python",
        &[(
            "COMPONENTIZE_PY",
            tool("target/py-venv/bin/componentize-py"),
        )],
    );
}

#[test]
fn new_refuses_an_existing_folder_and_writes_nothing() {
    let parent = tempfile::tempdir().expect("tempdir");
    let existing = parent.path().join("menu");
    std::fs::create_dir(&existing).expect("mkdir");
    std::fs::write(existing.join("app.js"), "// mine").expect("write");
    let output = Command::new(common::bin())
        .args(["new", "menu", "--lang", "js", "--dir"])
        .arg(parent.path())
        .output()
        .expect("run wasm-ivr new");
    assert!(!output.status.success(), "new into an existing folder");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
    let names: Vec<_> = std::fs::read_dir(&existing)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["app.js"], "nothing added");
    assert_eq!(
        std::fs::read_to_string(existing.join("app.js")).expect("read"),
        "// mine"
    );
    // A name that is not a valid IVR name creates nothing either.
    let output = Command::new(common::bin())
        .args(["new", "My Menu", "--lang", "c", "--dir"])
        .arg(parent.path())
        .output()
        .expect("run wasm-ivr new");
    assert!(!output.status.success());
    assert_eq!(
        std::fs::read_dir(parent.path()).expect("read dir").count(),
        1
    );
}

// --- Real calls: the examples served by `wasm-ivr serve`, SIPp callers, keys by SIP INFO --------

/// An IVR folder in a temporary directory: `routes.toml` sends `did` to `ivr`, and `files`
/// (paths under `target/examples/`) are copied in. The examples speak `say` prompts, which
/// the server renders with espeak-ng; `audio/` stays empty.
fn call_dir(did: &str, ivr: &str, files: &[&str]) -> CallDir {
    let tmp = tempfile::Builder::new()
        .prefix("wasm-ivr-lang-call-")
        .tempdir()
        .expect("tempdir");
    let ivrs = tmp.path().join("ivrs");
    let traces = tmp.path().join("traces");
    let logs = tmp.path().join("logs");
    for d in [&ivrs, &traces, &logs, &ivrs.join("audio")] {
        std::fs::create_dir_all(d).expect("create dir");
    }
    for file in files {
        let from = artifact(file);
        let name = from.file_name().expect("file name");
        std::fs::copy(&from, ivrs.join(name)).expect("copy example");
    }
    std::fs::write(ivrs.join("routes.toml"), format!("\"{did}\" = \"{ivr}\"\n"))
        .expect("write routes.toml");
    CallDir {
        tmp,
        ivrs,
        traces,
        logs,
    }
}

/// Keys by SIP INFO (`application/dtmf-relay`), `gap_ms` apart.
fn info_keys(keys: &str, gap_ms: u32) -> Vec<Step> {
    keys.chars()
        .flat_map(|key| [Step::Info(key), Step::Pause(gap_ms)])
        .collect()
}

#[track_caller]
fn assert_trace(trace: &Trace, path: &[&str], outcome: &str, server: &Server) {
    assert_eq!(
        trace.path(),
        path,
        "call path\n{}\n{}",
        trace.pretty(),
        server.log()
    );
    assert_eq!(
        trace.outcome(),
        outcome,
        "call outcome\n{}\n{}",
        trace.pretty(),
        server.log()
    );
}

/// Rust: after hours, the PIN typed by SIP INFO, then the blind transfer (REFER) to the on-call
/// engineer with the account in the context.
#[test]
fn sip_call_to_the_rust_example_pin_then_transfer() {
    warm_cache();
    let _serial = sipp::serial();
    let did = "+15005550301";
    let dir = call_dir(did, "rust-hours", &[]);
    rust_hours_with(&dir.ivrs, ALWAYS_CLOSED);
    let mut server = Server::start(&dir, &ServerOptions::default());
    let steps = [
        vec![Step::Pause(1000)],
        info_keys("1234#", 300),
        vec![
            Step::AwaitRefer {
                status: 202,
                ms: 30_000,
            },
            Step::Notify {
                sipfrag: "SIP/2.0 100 Trying".into(),
                terminated: false,
            },
            Step::Notify {
                sipfrag: "SIP/2.0 200 OK".into(),
                terminated: true,
            },
            Step::AwaitBye(10_000),
        ],
    ]
    .concat();
    let run = Sipp::call(&dir, "rust-hours-pin", did, &steps)
        .timeout(60)
        .run(&server);
    run.assert_success(&server);
    let refers = run.requests("REFER");
    assert_eq!(refers.len(), 1, "one REFER\n{}", run.report());
    assert!(
        refers[0]
            .header("Refer-To")
            .is_some_and(|to| to.contains("oncall@pbx.example.net")),
        "Refer-To\n{}",
        refers[0].text
    );
    let trace = server.trace(&run.call_id);
    assert_trace(
        &trace,
        &["welcome", "closed", "pin", "on-call"],
        "transfer",
        &server,
    );
    assert_eq!(
        trace.gather_results(),
        vec![json!({"digits": "1234"})],
        "{}",
        trace.pretty()
    );
    server.assert_running();
}

/// JavaScript: 1, then an order number ended by `#`, all by SIP INFO; the IVR says the order's
/// status and hangs up.
#[test]
fn sip_call_to_the_js_example_order_status() {
    warm_cache();
    let _serial = sipp::serial();
    let did = "+15005550302";
    let dir = call_dir(did, "js-menu", &["js-menu.wasm", "js-menu.toml"]);
    let mut server = Server::start(&dir, &ServerOptions::default());
    let steps = [
        vec![Step::Pause(1000), Step::Info('1'), Step::Pause(1500)],
        info_keys("4213#", 300),
        vec![Step::AwaitBye(30_000)],
    ]
    .concat();
    let run = Sipp::call(&dir, "js-menu-order", did, &steps)
        .timeout(60)
        .run(&server);
    run.assert_success(&server);
    assert_eq!(run.requests("BYE").len(), 1, "one BYE\n{}", run.report());
    let trace = server.trace(&run.call_id);
    assert_trace(
        &trace,
        &["menu", "order-number", "order-status"],
        "hangup",
        &server,
    );
    assert_eq!(
        trace.gather_results(),
        vec![json!({"digits": "1"}), json!({"digits": "4213"})],
        "{}",
        trace.pretty()
    );
    server.assert_running();
}

/// The polyglot tree over SIP: 2 enters the Python sub-menu, `*` returns to the tree, `#` hangs
/// up.
#[test]
fn sip_call_to_the_polyglot_tree_enters_python_and_comes_back() {
    warm_cache();
    let _serial = sipp::serial();
    let did = "+15005550303";
    let dir = call_dir(
        did,
        "main",
        &[
            "polyglot/main.json",
            "polyglot/python-sub.wasm",
            "polyglot/python-sub.toml",
        ],
    );
    let mut server = Server::start(&dir, &ServerOptions::default());
    let steps = [
        Step::Pause(1500),
        Step::Info('2'),
        Step::Pause(3000),
        Step::Info('*'),
        Step::Pause(3000),
        Step::Info('#'),
        Step::AwaitBye(30_000),
    ];
    let run = Sipp::call(&dir, "polyglot-sub", did, &steps)
        .timeout(60)
        .run(&server);
    run.assert_success(&server);
    let trace = server.trace(&run.call_id);
    assert_trace(
        &trace,
        &[
            "main",
            "library",
            "python-sub/menu",
            "python-sub/back",
            "main",
            "goodbye",
        ],
        "hangup",
        &server,
    );
    server.assert_running();
}
