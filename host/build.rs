//! Builds the wasm side of the repository — the reference plugins embedded in
//! the binary and the test plugins the integration tests load — from source,
//! with the ordinary `cargo build` of the host.
//!
//! The plugins are a separate cargo workspace (`plugins/`) for the
//! `wasm32-wasip2` target, built by a nested cargo into its own target dir.
//! Their directory is exported to the host crate as `WASMTP_PLUGIN_DIR`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
/// The reference plugins embedded in the binary (plugin/builtin.rs).
const BUILTINS: [&str; 10] = [
    "sink",
    "debugging",
    "mailbox",
    "proxy",
    "queue",
    "greylist",
    "ratelimit",
    "webhook",
    "mailauth",
    "dnsbl",
];

fn main() {
    let host_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = host_dir.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    // OUT_DIR is target/<profile>/build/<pkg>-<hash>/out; keep the wasm build
    // beside it so it is reused across host rebuilds and `cargo clean` clears it.
    let target_dir = out_dir.ancestors().nth(3).unwrap().join("wasm-plugins");

    for watched in [
        "wit",
        "plugins/Cargo.toml",
        "plugins/Cargo.lock",
        "plugins/sink",
        "plugins/debugging",
        "plugins/mailbox",
        "plugins/proxy",
        "plugins/queue",
        "plugins/greylist",
        "plugins/ratelimit",
        "plugins/webhook",
        "plugins/mailauth",
        "plugins/dnsbl",
        "plugins/sdk",
        "tests/plugins",
    ] {
        println!("cargo::rerun-if-changed={}", root.join(watched).display());
    }

    ensure_target_installed();

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(root.join("plugins/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // Only the components the host embeds and the tests load; the SDK and
    // examples are built as their dependents need them.
    for package in BUILTINS
        .iter()
        .map(|b| b.to_string())
        .chain(test_plugins(&root.join("tests/plugins")))
    {
        cmd.args(["-p", &package]);
    }
    // The outer build's flags and target settings are for the host, not for wasm.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the wasm plugins: {e}"));
    if !status.success() {
        panic!("building the wasm plugins in plugins/ failed (see the cargo output above)");
    }

    let wasm_dir = target_dir.join(TARGET).join("release");
    for builtin in BUILTINS {
        let file = wasm_dir.join(format!("{builtin}.wasm"));
        assert!(
            file.exists(),
            "the wasm build did not produce {}",
            file.display()
        );
    }
    println!("cargo::rustc-env=WASMTP_PLUGIN_DIR={}", wasm_dir.display());
}

/// The package names of the test plugins: each directory of `tests/plugins`
/// with a Cargo.toml.
fn test_plugins(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("Cargo.toml")).ok())
        .filter_map(|manifest| {
            let line = manifest
                .lines()
                .find(|l| l.trim_start().starts_with("name"))?;
            Some(line.split('"').nth(1)?.to_owned())
        })
        .collect();
    names.sort();
    names
}

/// The plugins need the wasm32-wasip2 standard library. Install it through
/// rustup when it is missing, or stop with one sentence saying how.
fn ensure_target_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = |root: &Path| root.join("lib/rustlib").join(TARGET).exists();
    if sysroot.as_deref().is_some_and(installed) {
        return;
    }
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .is_ok_and(|s| s.success());
    if !added || !sysroot.as_deref().is_some_and(installed) {
        panic!(
            "the Rust target {TARGET} is not installed and could not be added; \
                run `rustup target add {TARGET}` and build again"
        );
    }
}
