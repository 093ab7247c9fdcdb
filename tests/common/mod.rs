//! Shared helpers for the end-to-end tests: the workspace paths, test components built from
//! `tests/components/`, and an engine with tight limits.

#![allow(dead_code)] // each test binary uses a different subset

pub mod sipp;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use wasm_ivr::engine::{EngineSettings, IvrEngine};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("runtime/ is inside the workspace")
        .to_path_buf()
}

/// The `wasm-ivr` binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wasm-ivr"))
}

/// Builds a guest crate of the workspace for wasm32-wasip2 (once per test process) and
/// returns the component's path.
pub fn guest(package: &str) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<Vec<String>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("guests");
    let wasm = target_dir
        .join("wasm32-wasip2/guest")
        .join(format!("{}.wasm", package.replace('-', "_")));
    if !built.iter().any(|p| p == package) {
        let status = Command::new(env!("CARGO"))
            .current_dir(root())
            .args([
                "build",
                "--quiet",
                "--profile",
                "guest",
                "--target",
                "wasm32-wasip2",
                "-p",
            ])
            .arg(package)
            .arg("--target-dir")
            .arg(&target_dir)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("run cargo");
        assert!(status.success(), "building guest {package} failed");
        built.push(package.to_owned());
    }
    wasm
}

/// The test component (`tests/components/testbed`).
pub fn testbed() -> PathBuf {
    guest("ivr-testbed-guest")
}

/// An engine with tight limits so misbehaving guests fail fast, caching into `cache`.
pub fn engine_with_cache(cache: Option<PathBuf>) -> Arc<IvrEngine> {
    IvrEngine::new(EngineSettings {
        max_instances: 16,
        memory_limit_bytes: 16 << 20,
        cpu_budget: Duration::from_millis(300),
        cache_dir: cache,
        pooling: true,
    })
    .expect("engine")
}

/// An engine with tight limits and no compile cache.
pub fn engine() -> Arc<IvrEngine> {
    engine_with_cache(None)
}

/// Copies the testbed component into `dir` as `NAME.wasm` with settings `NAME.toml`.
pub fn install_testbed(dir: &Path, name: &str, settings: &str) -> PathBuf {
    let path = dir.join(format!("{name}.wasm"));
    std::fs::copy(testbed(), &path).expect("copy testbed");
    std::fs::write(dir.join(format!("{name}.toml")), settings).expect("write settings");
    path
}

/// Runs `wasm-ivr ARGS` to the end (killed after 30 s); returns (exit code, stdout, stderr).
pub fn run_wasm_ivr(args: &[&str]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(bin())
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("run wasm-ivr");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll wasm-ivr") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status,
        std::fs::read_to_string(out_path).unwrap_or_default(),
        std::fs::read_to_string(err_path).unwrap_or_default(),
    )
}
