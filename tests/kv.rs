//! The `kv` capability through the real binary: the test plugin kv-probe
//! (`tests/plugins/kv-probe`) runs the key-value call each RCPT address
//! names, on SQLite in a temporary state directory and on a real PostgreSQL
//! started by the test (`harness/postgres.rs`).

#[path = "harness/mod.rs"]
mod harness;
#[path = "harness/postgres.rs"]
mod pg;

use std::time::Duration;

use harness::{Client, HOSTNAME, Server, plugin_path, run_wasmtp};

/// Two listeners: `a` serves kv-probe as plugin `alpha` (its own namespace
/// and the shared `common`), `b` as plugin `beta` (its own and `common`).
fn config(store: &str, alpha_grant: &str) -> String {
    let probe = plugin_path("kv_probe.wasm");
    format!(
        r#"
[server]
hostname = "{HOSTNAME}"

[store]
{store}
ttl_cap = 60

[[listener]]
name = "a"
address = "127.0.0.1:0"
plugin = "alpha"

[[listener]]
name = "b"
address = "127.0.0.1:0"
plugin = "beta"

[plugin.alpha]
component = "{probe}"
hook_timeout = 5
[plugin.alpha.grants]
{alpha_grant}

[plugin.beta]
component = "{probe}"
[plugin.beta.grants]
kv = ["common"]
"#,
        probe = probe.display()
    )
}

fn sqlite_store(dir: &std::path::Path) -> String {
    format!("backend = \"sqlite\"\npath = \"{}\"", dir.display())
}

fn postgres_store(url: &str) -> String {
    format!("backend = \"postgres\"\nurl = \"{url}\"\npool_size = 4")
}

/// One RCPT in a new session (so nothing carries over but the store).
fn call(addr: std::net::SocketAddr, op: &str) -> String {
    let mut c = Client::after_ehlo(addr);
    c.expect("MAIL FROM:<probe@example.com>", 250);
    let reply = c.cmd(&format!("RCPT TO:<{op}@kv.test>"));
    c.expect("QUIT", 221);
    format!("{} {}", reply.code, reply.text())
}

fn state_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wasmtp-kv-")
        .tempdir()
        .unwrap()
}

/// Everything a plugin may do, and every refusal, on one backend.
fn conformance(store: &str) {
    let mut server = Server::start_config(&config(store, "kv = [\"common\"]"));
    let addrs = server.wait_for_listeners(2);
    let (a, b) = (addrs[0], addrs[1]);

    // State outlives the session.
    let set = call(a, "set+-+greeting+hello+30000");
    assert!(set.starts_with("250 ok rev="), "{set}");
    let got = call(a, "get+-+greeting");
    assert!(got.starts_with("250 ok value=hello rev="), "{got}");

    // Each plugin's own namespace is its own; `common` is shared.
    assert_eq!(call(b, "get+-+greeting"), "250 ok absent");
    assert!(call(a, "set+common+seen+yes+30000").starts_with("250 ok"));
    assert!(call(b, "get+common+seen").starts_with("250 ok value=yes"));

    // Compare-and-set: only one "create if absent" wins.
    let first = call(a, "cas+-+lock+mine+none+30000");
    assert!(first.starts_with("250 ok rev="), "{first}");
    assert_eq!(call(a, "cas+-+lock+theirs+none+30000"), "451 kv conflict");
    let rev = first.trim_start_matches("250 ok rev=");
    assert!(call(a, &format!("cas+-+lock+next+{rev}+30000")).starts_with("250 ok rev="));

    // Counters count across sessions and plugins sharing a namespace.
    assert_eq!(call(a, "incr+common+hits+1+30000"), "250 ok value=1");
    assert_eq!(call(b, "incr+common+hits+2+30000"), "250 ok value=3");

    // Bad input: clear errors, nothing stored.
    let big_key = call(a, "bigkey+-+30000");
    assert!(
        big_key.starts_with("451 kv invalid: a key is 1 to 512 bytes"),
        "{big_key}"
    );
    let big_value = call(a, "bigvalue+-+big+30000");
    assert!(
        big_value.starts_with("451 kv invalid: a value is at most 65536 bytes"),
        "{big_value}"
    );
    assert_eq!(call(a, "get+-+big"), "250 ok absent");
    let no_ttl = call(a, "set+-+nottl+v+0");
    assert!(
        no_ttl.starts_with("451 kv invalid: a TTL is mandatory"),
        "{no_ttl}"
    );
    assert_eq!(call(a, "get+-+nottl"), "250 ok absent");
    let past_cap = call(a, "set+-+long+v+61000");
    assert!(past_cap.contains("past the cap of 60 s"), "{past_cap}");
    assert_eq!(call(a, "get+-+long"), "250 ok absent");
    let denied = call(a, "set+secret+k+v+30000");
    assert!(
        denied.starts_with("451 kv denied: the namespace `secret` is not granted to this plugin"),
        "{denied}"
    );
    assert_eq!(call(a, "get+-+k"), "250 ok absent");
    assert!(call(b, "get+secret+k").starts_with("451 kv denied"));

    // Expiry: an expired key is never returned.
    assert!(call(a, "set+-+brief+v+300").starts_with("250 ok"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(call(a, "get+-+brief"), "250 ok absent");

    assert!(call(a, "del+-+greeting").ends_with("ok true"));
    assert_eq!(call(a, "get+-+greeting"), "250 ok absent");
    server.terminate();
}

#[test]
fn sqlite_backend() {
    let dir = state_dir();
    conformance(&sqlite_store(dir.path()));
    // The state is in the state directory, and a restarted server has it.
    assert!(dir.path().join("kv.sqlite").is_file());
    let mut server = Server::start_config(&config(&sqlite_store(dir.path()), "kv = true"));
    let addrs = server.wait_for_listeners(2);
    assert!(call(addrs[0], "get+-+lock").starts_with("250 ok value=next"));
    server.terminate();
}

#[test]
fn postgres_backend() {
    let url = pg::Postgres::shared().database();
    conformance(&postgres_store(&url));
}

/// PostgreSQL down: a kv call returns `unavailable` (the plugin chooses its
/// reply; nothing traps), the server goes on, and calls work again once the
/// database is back.
#[test]
fn postgres_down_is_unavailable() {
    let server_pg = pg::Postgres::start();
    let url = server_pg.url_of("postgres");
    let mut server = Server::start_config(&config(&postgres_store(&url), "kv = true"));
    let a = server.wait_for_listeners(2)[0];
    assert!(call(a, "set+-+k+v+30000").starts_with("250 ok"));
    server_pg.stop();
    let down = call(a, "get+-+k");
    assert!(down.starts_with("451 kv unavailable: "), "{down}");
    server_pg.resume();
    assert!(call(a, "get+-+k").starts_with("250 ok value=v"));
    server.terminate();
}

/// A component that imports `kv` without `grants.kv` is refused at load,
/// naming the grant.
#[test]
fn ungranted_import_is_refused_at_load() {
    let dir = state_dir();
    let file = dir.path().join("wasmtp.toml");
    std::fs::write(&file, config(&sqlite_store(dir.path()), "")).unwrap();
    let out = run_wasmtp(
        &["--config", file.to_str().unwrap()],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("plugin `alpha`: ")
            && stderr.contains(
                "imports wasmtp:smtp/kv@0.1.0, which needs `grants.kv` in [plugin.alpha.grants]"
            ),
        "{stderr}"
    );
    // And `wasmtp check` says the same.
    let out = run_wasmtp(
        &["check", "--config", file.to_str().unwrap()],
        Duration::from_secs(60),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success());
    assert!(text.contains("which needs `grants.kv`"), "{text}");
}
