//! The harness on the `examples/rust-hours` IVR: business hours at pinned call times, the
//! after-hours PIN with retries, and the transfer context. Also a JSON tree, to show the same
//! API covers trees.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use wasm_ivr_testing::{Destination, IvrTest, TransferFailureKind};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root")
}

/// Builds `examples/rust-hours` for wasm32-wasip2 once per test process (in a target folder of
/// its own: the outer cargo holds the main one).
fn rust_hours() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let target_dir = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root().join("target"))
                .join("guests");
            let status = Command::new(env!("CARGO"))
                .current_dir(root())
                .args(["build", "--quiet", "--profile", "guest"])
                .args(["--target", "wasm32-wasip2", "-p", "rust-hours"])
                .arg("--target-dir")
                .arg(&target_dir)
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .status()
                .expect("run cargo");
            assert!(status.success(), "building examples/rust-hours failed");
            target_dir.join("wasm32-wasip2/guest/rust_hours.wasm")
        })
        .clone()
}

/// The example's own settings file.
fn settings() -> String {
    std::fs::read_to_string(root().join("examples/rust-hours/rust-hours.toml"))
        .expect("examples/rust-hours/rust-hours.toml")
}

const HOUR_MS: u64 = 3_600_000;
/// Monday 2026-01-05 00:00 UTC.
const MONDAY: u64 = 1_767_571_200_000;

fn hours_at(ms: u64) -> IvrTest {
    IvrTest::component(rust_hours())
        .settings(&settings())
        .caller("+14155550100")
        .started_at_ms(ms)
}

#[test]
fn office_hours_go_to_the_office_with_the_caller() {
    // Monday 14:00 UTC is 09:00 at UTC-5: open.
    hours_at(MONDAY + 14 * HOUR_MS)
        .run()
        .assert_path(&["welcome", "open"])
        .assert_outcome("transfer")
        .assert_transfer(&Destination::Internal("200".into()))
        .assert_context("caller", "+14155550100")
        .assert_context("reason", "office-hours");
}

#[test]
fn office_busy_hangs_up_politely() {
    hours_at(MONDAY + 14 * HOUR_MS)
        .transfer_fails(TransferFailureKind::Busy)
        .run()
        .assert_path(&["welcome", "open", "office-busy"])
        .assert_outcome("hangup");
}

#[test]
fn after_hours_a_valid_pin_reaches_on_call_with_the_account() {
    // Monday 12:00 UTC is 07:00 local: closed. Wrong PIN first, then the right one.
    let report = hours_at(MONDAY + 12 * HOUR_MS).keys("1111# 1234#").run();
    report
        .assert_path(&["welcome", "closed", "pin", "pin-wrong", "pin", "on-call"])
        .assert_transfer(&Destination::Uri("oncall@pbx.example.net".into()))
        .assert_context("account", "ACME-0042")
        .assert_context("caller", "+14155550100")
        .assert_context("pin-attempts", "2")
        .assert_context("reason", "after-hours-emergency");
}

#[test]
fn weekends_are_closed_all_day() {
    // Saturday 17:00 UTC is 12:00 local, but Saturday is closed.
    hours_at(MONDAY + (5 * 24 + 17) * HOUR_MS)
        .keys("9876#")
        .run()
        .assert_path(&["welcome", "closed", "pin", "on-call"])
        .assert_context("account", "ACME-0107");
}

#[test]
fn three_bad_pins_end_the_call() {
    hours_at(MONDAY + 2 * HOUR_MS)
        .keys("0000# timeout 12")
        .run()
        .assert_path(&[
            "welcome",
            "closed",
            "pin",
            "pin-wrong",
            "pin",
            "pin-wrong",
            "pin",
            "locked",
        ])
        .assert_outcome("hangup");
}

#[test]
fn caller_hanging_up_at_the_pin_prompt() {
    hours_at(MONDAY + 2 * HOUR_MS)
        .keys("hangup")
        .run()
        .assert_path(&["welcome", "closed", "pin"])
        .assert_outcome("caller-hangup");
}

#[test]
fn bad_settings_end_the_call_with_an_error() {
    let report = IvrTest::component(rust_hours())
        .settings("open_hour = \"nine\"")
        .run();
    report.assert_outcome("error").assert_path(&[]);
}

#[test]
fn the_same_harness_runs_json_trees() {
    IvrTest::tree(root().join("examples/plumber-qualifier/plumber-qualifier.json"))
        .keys("1 1 1")
        .run()
        .assert_path(&["welcome", "has_license", "service_area", "transfer_ai"])
        .assert_transfer(&Destination::Default);
}

#[test]
fn run_problems_are_errors_not_panics() {
    let missing = IvrTest::component("/nonexistent/menu.wasm").try_run();
    assert!(missing.is_err());
    let bad_script =
        IvrTest::tree(root().join("examples/plumber-qualifier/plumber-qualifier.json"))
            .keys("1 x")
            .try_run();
    assert!(
        bad_script
            .err()
            .is_some_and(|e| e.to_string().contains("bad script token 'x'"))
    );
}
