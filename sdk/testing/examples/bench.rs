//! Measures the example IVRs of every language: component size, load time with a cold compile
//! cache, and the wall time of a whole simulated call (fresh instance + the guest's run on the
//! virtual clock), p50/p99 over N calls.
//!
//! ```text
//! scripts/build-examples.sh
//! cargo run --release -p wasm-ivr-testing --example bench [-- CALLS]
//! ```
//!
//! Prints a Markdown table (the one in docs/BENCHMARKS.md, "Guests by language").

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasm_ivr_testing::IvrTest;

struct Case {
    label: &'static str,
    test: IvrTest,
    keys: &'static str,
    size_of: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let calls: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 500,
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let examples = root.join("target/examples");
    if !examples.join("python-menu.wasm").is_file() {
        return Err("target/examples is incomplete: run scripts/build-examples.sh first".into());
    }
    // A cold cache of our own, so "load" is a real compile.
    let cache = root.join("target/bench-cache");
    if cache.exists() {
        std::fs::remove_dir_all(&cache)?;
    }
    // Set before any other thread exists (the engine and its threads start at the first load).
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("WASM_IVR_CACHE_DIR", &cache)
    };
    // Each guest in a folder of its own: the harness loads the other components of an IVR's
    // folder up front (for sub-menus), which would fold their compile time into this one's.
    let stage = root.join("target/bench");
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    let staged = |name: &str, files: &[(&Path, &str)]| -> std::io::Result<PathBuf> {
        let dir = stage.join(name);
        std::fs::create_dir_all(&dir)?;
        for (from, to) in files {
            std::fs::copy(from, dir.join(to))?;
        }
        Ok(dir.join(files[0].1))
    };
    let component = |name: &str| -> std::io::Result<PathBuf> {
        let wasm = examples.join(format!("{name}.wasm"));
        let toml = examples.join(format!("{name}.toml"));
        let wasm_name = format!("{name}.wasm");
        let toml_name = format!("{name}.toml");
        let mut files = vec![(wasm.as_path(), wasm_name.as_str())];
        if toml.is_file() {
            files.push((toml.as_path(), toml_name.as_str()));
        }
        staged(name, &files)
    };
    let polyglot = examples.join("polyglot");
    let plumber = root.join("examples/plumber-qualifier/plumber-qualifier.json");
    // Monday 2026-01-05 03:00 UTC: closed for rust-hours (the PIN path).
    let night = 1_767_571_200_000 + 3 * 3_600_000;
    let cases = vec![
        Case {
            label: "JSON tree (built-in guest) `plumber-qualifier`",
            // No components beside it: run in place (its audio/ folder is there).
            test: IvrTest::tree(&plumber),
            keys: "1 1 1",
            size_of: plumber.clone(),
        },
        Case {
            label: "Rust (wasm-ivr-sdk) `rust-hours`",
            test: IvrTest::component(component("rust-hours")?).started_at_ms(night),
            keys: "1111# 1234#",
            size_of: examples.join("rust-hours.wasm"),
        },
        Case {
            label: "C (wit-bindgen c, clang 14) `c-menu`",
            test: IvrTest::component(component("c-menu")?),
            keys: "7 3 1",
            size_of: examples.join("c-menu.wasm"),
        },
        Case {
            label: "JavaScript (componentize-qjs) `js-menu`",
            test: IvrTest::component(component("js-menu")?),
            keys: "1 4213#",
            size_of: examples.join("js-menu.wasm"),
        },
        Case {
            label: "Python (componentize-py) `python-menu`",
            test: IvrTest::component(component("python-menu")?),
            keys: "2 1 12345678# 3",
            size_of: examples.join("python-menu.wasm"),
        },
        Case {
            label: "JSON tree → Python sub-menu `polyglot`",
            test: IvrTest::tree(staged(
                "polyglot",
                &[
                    (&polyglot.join("main.json"), "main.json"),
                    (&polyglot.join("python-sub.wasm"), "python-sub.wasm"),
                    (&polyglot.join("python-sub.toml"), "python-sub.toml"),
                ],
            )?),
            keys: "2 2 * #",
            size_of: polyglot.join("main.json"),
        },
    ];
    // Start the engine (it compiles the built-in tree guest) before timing any load.
    let started = Instant::now();
    IvrTest::tree(&plumber).load()?;
    println!(
        "engine start (cold cache): {}",
        human_time(started.elapsed())
    );

    println!("{calls} calls per guest, one at a time, release build\n");
    println!(
        "(polyglot: the sub-menu was compiled by the python-menu row; its load is the cache)\n"
    );
    println!("| guest | size | load (cold compile) | call p50 | call p99 | steps/call |");
    println!("|---|---|---|---|---|---|");
    for case in cases {
        let size = std::fs::metadata(&case.size_of)?.len();
        let started = Instant::now();
        let loaded = case.test.load()?;
        let load = started.elapsed();
        // One call to check the script does what it should before timing it.
        let first = loaded.run_keys(case.keys)?;
        let steps = first.path().len();
        let mut times = Vec::with_capacity(calls);
        for _ in 0..calls {
            let started = Instant::now();
            let report = loaded.run_keys(case.keys)?;
            times.push(started.elapsed());
            if report.path().len() != steps {
                return Err(format!("{}: the path changed between calls", case.label).into());
            }
        }
        times.sort();
        println!(
            "| {} | {} | {} | {} | {} | {steps} |",
            case.label,
            human_size(size),
            human_time(load),
            human_time(percentile(&times, 50)),
            human_time(percentile(&times, 99)),
        );
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = (sorted.len() * p).div_ceil(100).saturating_sub(1);
    sorted[index.min(sorted.len() - 1)]
}

fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KB", bytes as f64 / 1024.0)
    }
}

fn human_time(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}
