//! The `wasm-ivr` binary's `check`, `simulate` and `schema` commands, run as a user would.

mod common;

use serde_json::Value;
use std::process::{Command, Output};

fn wasm_ivr(args: &[&str]) -> Output {
    Command::new(common::bin())
        .args(args)
        .current_dir(common::root())
        .env(
            "WASM_IVR_CACHE_DIR",
            common::root().join("target/test-cache"),
        )
        .output()
        .expect("run wasm-ivr")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn simulate_json(path: &str, keys: &str) -> Value {
    let output = wasm_ivr(&["simulate", path, "--keys", keys, "--json"]);
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("simulate --json prints JSON")
}

const SEED: &str = "examples/plumber-qualifier/plumber-qualifier.json";

fn path_of(report: &Value) -> Vec<String> {
    report["path"]
        .as_array()
        .expect("path")
        .iter()
        .map(|v| v.as_str().expect("label").to_owned())
        .collect()
}

#[test]
fn check_accepts_the_examples() {
    let output = wasm_ivr(&["check", SEED]);
    assert!(
        output.status.success(),
        "{}\n{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout(&output).contains("1 file(s) checked: 0 error(s), 0 warning(s)"));
    let output = wasm_ivr(&["check", "examples/plumber-qualifier"]);
    assert!(output.status.success(), "{}", stdout(&output));
}

#[test]
fn check_lists_every_error_and_fails() {
    let dir = "tests/fixtures/broken";
    let output = wasm_ivr(&["check", dir]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let text = stdout(&output);
    for expected in [
        "unknown-node.json: node 'welcome': gather key '2' leads to unknown node 'support'",
        "bad-key.json: node 'welcome': bad key 'A': 'A' is not a key",
        "bad-key.json: node 'welcome': key '12' is 2 keys long but \"max_digits\" is 1",
        "missing-audio.json: node 'bye': missing audio file 'goodbye.wav'",
        "invalid-json.json:4:",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // The file that is fine apart from its audio folder passes with --no-audio-check.
    let output = wasm_ivr(&[
        "check",
        "--no-audio-check",
        "tests/fixtures/broken/missing-audio.json",
    ]);
    assert!(output.status.success(), "{}", stdout(&output));

    let output = wasm_ivr(&["check", "--json", "tests/fixtures/broken/unknown-node.json"]);
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(report["errors"], 1);
    assert_eq!(report["findings"][0]["node"], "welcome");
}

#[test]
fn simulate_seed_paths_as_specified() {
    let report = simulate_json(SEED, "1 1 1");
    assert_eq!(
        path_of(&report),
        ["welcome", "has_license", "service_area", "transfer_ai"]
    );
    assert_eq!(report["outcome"]["action"], "transfer");
    assert_eq!(report["outcome"]["destination"], "default");

    let report = simulate_json(SEED, "9");
    assert_eq!(report["outcome"]["action"], "suppress");

    let report = simulate_json(SEED, "timeout 1 2");
    assert_eq!(
        path_of(&report),
        ["welcome", "welcome", "has_license", "unqualified"]
    );
    assert_eq!(report["outcome"]["action"], "hangup");
    let kinds: Vec<&str> = report["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .filter(|t| *t != "step" && *t != "enter")
        .collect();
    assert_eq!(kinds, ["gather", "gather", "gather", "hangup"]);
    assert_eq!(
        report["events"]
            .as_array()
            .expect("events")
            .last()
            .expect("last")["goodbye"][0]["file"],
        "not_qualified.wav"
    );
    // The prompts' real lengths drive the virtual clock.
    assert!(
        report["duration_ms"].as_u64().expect("duration") > 5000,
        "{report}"
    );
}

#[test]
fn simulate_prints_a_readable_trace() {
    let output = wasm_ivr(&["simulate", SEED, "--keys", "1 2"]);
    assert!(output.status.success());
    let text = stdout(&output);
    assert!(
        text.contains("path: welcome -> has_license -> unqualified"),
        "{text}"
    );
    assert!(text.contains("outcome: hangup"), "{text}");
}

#[test]
fn simulate_refuses_bad_input_clearly() {
    let output = wasm_ivr(&["simulate", SEED, "--keys", "1 x"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad script token 'x'"));
    let output = wasm_ivr(&[
        "simulate",
        "tests/fixtures/broken/unknown-node.json",
        "--keys",
        "1",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown node 'support'"));
}

#[test]
fn simulate_runs_a_component() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = common::install_testbed(
        dir.path(),
        "menu",
        "mode = \"menu\"\ntarget = \"sip:agent@127.0.0.1\"",
    );
    let report = simulate_json(wasm.to_str().expect("utf-8"), "1");
    assert_eq!(path_of(&report), ["menu"]);
    assert_eq!(report["outcome"]["action"], "transfer");
    assert_eq!(
        report["outcome"]["destination"]["uri"],
        "sip:agent@127.0.0.1"
    );
    let output = wasm_ivr(&[
        "simulate",
        wasm.to_str().expect("utf-8"),
        "--keys",
        "1",
        "--json",
        "--transfer-fails",
        "busy",
    ]);
    let report: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(path_of(&report), ["menu", "transfer-failed"]);
}

#[test]
fn published_schema_matches_the_code() {
    let output = wasm_ivr(&["schema"]);
    assert!(output.status.success());
    let generated: Value = serde_json::from_slice(&output.stdout).expect("schema is JSON");
    let published: Value = serde_json::from_str(
        &std::fs::read_to_string(common::root().join("docs/tree.schema.json"))
            .expect("docs/tree.schema.json"),
    )
    .expect("published schema is JSON");
    assert_eq!(
        generated, published,
        "regenerate with: wasm-ivr schema > docs/tree.schema.json"
    );
}

#[test]
fn graph_draws_the_seed_tree_in_every_format() {
    let output = wasm_ivr(&["graph", SEED]);
    assert!(output.status.success(), "{output:?}");
    let mermaid = stdout(&output);
    assert!(
        mermaid.starts_with("flowchart TD") && mermaid.contains("-. \"timeout\" .->"),
        "{mermaid}"
    );
    let output = wasm_ivr(&["graph", SEED, "--format", "dot"]);
    assert!(stdout(&output).contains("\"service_area\" -> \"transfer_ai\" [label=\"1\"];"));
    let dir = tempfile::tempdir().expect("tempdir");
    let svg = dir.path().join("seed.svg");
    let output = wasm_ivr(&[
        "graph",
        SEED,
        "--format",
        "svg",
        "-o",
        svg.to_str().expect("utf-8"),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let drawn = std::fs::read_to_string(&svg).expect("svg written");
    assert!(
        drawn.contains("<svg") && drawn.contains("has_license"),
        "{drawn}"
    );
    let output = wasm_ivr(&["graph", "tests/fixtures/broken/unknown-node.json"]);
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn tts_lists_voices_and_renders_rachel_with_the_default_female_voice() {
    let output = wasm_ivr(&["tts", "--list-voices", "--json"]);
    assert!(output.status.success(), "{output:?}");
    let list: Value = serde_json::from_slice(&output.stdout).expect("--json prints JSON");
    assert_eq!(list["default"], "festival:cmu_us_slt_arctic_hts", "{list}");
    assert_eq!(list["female"], list["default"], "{list}");
    assert_eq!(list["male"], "flite:rms", "{list}");
    let table = stdout(&wasm_ivr(&["tts", "--list-voices"]));
    assert!(
        table.contains("festival:cmu_us_slt_arctic_hts") && table.contains("female"),
        "{table}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("goodbye.wav");
    let out_text = out.to_str().expect("utf-8 path");
    let output = wasm_ivr(&[
        "tts", "--text", "Goodbye.", "--voice", "rachel", "-o", out_text,
    ]);
    assert!(output.status.success(), "{output:?}");
    let reader = hound::WavReader::open(&out).expect("a WAV");
    assert_eq!(
        (reader.spec().sample_rate, reader.spec().channels),
        (8000, 1)
    );
    let output = wasm_ivr(&[
        "tts", "--text", "Goodbye.", "--voice", "nobody", "-o", out_text,
    ]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("unknown voice 'nobody'"),
        "{output:?}"
    );
}
