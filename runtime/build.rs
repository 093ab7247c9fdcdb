//! Builds the built-in tree guest (`guests/tree`) for `wasm32-wasip2` and puts it in OUT_DIR,
//! where `engine::TREE_GUEST` embeds it, so the `wasm-ivr` binary is self-contained.
//!
//! Set `WASM_IVR_TREE_GUEST=/path/to/ivr_tree_guest.wasm` to embed a prebuilt guest instead.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dest = out_dir.join("ivr_tree_guest.wasm");
    println!("cargo:rerun-if-env-changed=WASM_IVR_TREE_GUEST");
    if let Some(prebuilt) = std::env::var_os("WASM_IVR_TREE_GUEST") {
        println!("cargo:rerun-if-changed={}", Path::new(&prebuilt).display());
        std::fs::copy(&prebuilt, &dest).expect("copy WASM_IVR_TREE_GUEST");
        return;
    }

    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest_dir
        .parent()
        .expect("runtime/ sits in the workspace")
        .to_path_buf();
    for input in [
        "guests/tree",
        "sdk",
        "wit",
        "runtime/src/tree/lowered.rs",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(input).display());
    }
    // A target directory of its own: the outer cargo holds a lock on the main one.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("guests");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&root)
        .args([
            "build",
            "--quiet",
            "--profile",
            "guest",
            "--target",
            "wasm32-wasip2",
        ])
        .args(["-p", "ivr-tree-guest", "--target-dir"])
        .arg(&target_dir);
    // The outer build's settings (clippy's wrapper, coverage flags, jobserver) are not for the
    // guest build.
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_LLVM_COV",
    ] {
        command.env_remove(var);
    }
    let status = command.status().expect("run cargo to build guests/tree");
    if !status.success() {
        panic!(
            "building guests/tree for wasm32-wasip2 failed. Is the target installed? \
             Run `rustup target add wasm32-wasip2` (scripts/setup.sh does it)."
        );
    }
    let built = target_dir.join("wasm32-wasip2/guest/ivr_tree_guest.wasm");
    std::fs::copy(&built, &dest).expect("copy the built tree guest");
}
