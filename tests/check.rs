//! `wasmtp check --config FILE`: a deployable config exits 0 (binding
//! nothing); a bad one exits 2 and names every problem with file, key and
//! reason.

#[path = "harness/mod.rs"]
mod harness;

use std::net::TcpListener;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use harness::{plugin_path, run_wasmtp};

fn check(dir: &Path, toml: &str) -> (Output, String) {
    let file = dir.join("wasmtp.toml");
    std::fs::write(&file, toml).unwrap();
    let file = file.to_str().unwrap().to_owned();
    (
        run_wasmtp(&["check", "--config", &file], Duration::from_secs(120)),
        file,
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_deployable_config_passes_without_binding_anything() {
    let dir = tempfile::tempdir().unwrap();
    // The listener's port is taken: check binds nothing, so it passes.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let every = plugin_path("every_hook.wasm");
    let (out, file) = check(
        dir.path(),
        &format!(
            r#"
        [server]
        metrics = "127.0.0.1:0"
        [[listener]]
        address = "{}"
        plugins = ["every", "inbox"]
        [[listener]]
        address = "127.0.0.1:0"
        tenants = ["acme"]
        [tenant.acme]
        plugins = ["every"]
        domains = ["acme.example"]
        [plugin.every]
        component = {every:?}
        args = ["one", "two"]
        [plugin.inbox]
        component = "mailbox"
        args = ["Maildir"]
        "#,
            taken.local_addr().unwrap()
        ),
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let said = text(&out.stdout);
    assert!(
        said.starts_with(&format!(
            "{file}: deployable: 2 listener(s), 3 plugin(s) (every, inbox, acme/every)"
        )),
        "{said}"
    );
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn a_config_error_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let (out, file) = check(
        dir.path(),
        "[[listener]]\naddress = \"127.0.0.1:25\"\nplugin = \"sink\"\nsise = 10\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let said = text(&out.stderr);
    assert!(
        said.starts_with(&format!(
            "{file}:4:1: listener[0].sise: unknown field `sise`"
        )),
        "{said}"
    );
    assert!(
        said.ends_with(&format!(
            "wasmtp check: {file} is not deployable: 1 problem\n"
        )),
        "{said}"
    );

    let (out, _) = check(
        dir.path(),
        "[server]\nshutdown_grace = -1\n[[listener]]\naddress = \"127.0.0.1:25\"\nplugin = \"sink\"\n",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .contains(": server.shutdown_grace: -1 is not a positive number of seconds"),
        "{}",
        text(&out.stderr)
    );

    let missing = dir.path().join("missing.toml");
    let out = run_wasmtp(
        &["check", "--config", missing.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot read the file"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn every_plugin_problem_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.wasm"),
        b"\0asm\x0d\0\x01\0 not really",
    )
    .unwrap();
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let every = plugin_path("every_hook.wasm");
    let (out, file) = check(
        dir.path(),
        &format!(
            r#"
        [[listener]]
        address = "127.0.0.1:0"
        plugins = ["broken", "every", "fine"]
        [[listener]]
        address = "127.0.0.1:0"
        plugins = ["core", "inbox"]
        [plugin.broken]
        component = "broken.wasm"
        [plugin.core]
        component = "core.wasm"
        [plugin.every]
        component = {every:?}
        args = ["refuse"]
        [plugin.fine]
        component = "sink"
        [plugin.inbox]
        component = "mailbox"
        args = ["one", "two"]
        "#
        ),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let said = text(&out.stderr);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines.len(), 5, "{said}");
    assert!(
        lines[0].starts_with(&format!(
            "{file}: plugin.broken.component: plugin `broken`: "
        )) && lines[0].contains("is not a valid WebAssembly component"),
        "{said}"
    );
    assert_eq!(
        lines[1],
        format!(
            "{file}: plugin.every.args: plugin `every`: every-hook: refusing arguments as asked"
        )
    );
    assert!(
        lines[2].starts_with(&format!("{file}: plugin.core.component: plugin `core`: "))
            && lines[2].contains("is a core WebAssembly module, not a component"),
        "{said}"
    );
    assert_eq!(
        lines[3],
        format!(
            "{file}: plugin.inbox.args: plugin `inbox`: Too many arguments for Mailbox handler"
        )
    );
    assert_eq!(
        lines[4],
        format!("wasmtp check: {file} is not deployable: 4 problems")
    );
}

#[test]
fn the_example_configs_are_deployable() {
    let dir = tempfile::tempdir().unwrap();
    for example in ["examples/systemd/wasmtp.toml", "examples/haproxy/node.toml"] {
        // Their state and cache directories, moved under a temporary one.
        let toml = std::fs::read_to_string(harness::repo_root().join(example))
            .unwrap()
            .replace("/var/lib/wasmtp", dir.path().join("lib").to_str().unwrap())
            .replace(
                "/var/cache/wasmtp",
                dir.path().join("cache").to_str().unwrap(),
            );
        let (out, _) = check(dir.path(), &toml);
        assert!(out.status.success(), "{example}: {}", text(&out.stderr));
    }
}
