//! IVRs written in Rust, C, JavaScript and Python, built from source by
//! `scripts/build-examples.sh` into `target/examples/`, run with `wasm-ivr simulate` as a user
//! would: every language's menu takes the exact path its keys lead to, and a JSON tree enters a
//! Python sub-menu and comes back.

mod common;

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
               "context": {"department": "council", "digits": "1"}}),
    );
}
