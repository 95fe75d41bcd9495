//! Hot swap: SIGHUP reloads the config and its plugins as a new generation.
//! New connections get the new generation, sessions in progress finish on
//! theirs, and a reload that fails keeps the running one — proven under load.

#[path = "harness/mod.rs"]
mod harness;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{Client, Process, WASMTP, listening_addrs, plugin_path};

/// A server on a config file the test rewrites between reloads.
struct Reloadable {
    process: Process,
    addr: SocketAddr,
    config: PathBuf,
    dir: tempfile::TempDir,
}

impl Reloadable {
    fn start(version: &str) -> Reloadable {
        let dir = tempfile::tempdir().unwrap();
        // Two copies of the policy, so reloads swap the component file too.
        for copy in ["a.wasm", "b.wasm"] {
            std::fs::copy(plugin_path("versioned.wasm"), dir.path().join(copy)).unwrap();
        }
        let config = dir.path().join("wasmtp.toml");
        write_config(&config, "a.wasm", version);
        let mut command = Command::new(WASMTP);
        command
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1");
        let mut process = Process::spawn("wasmtp", command);
        let log = process.wait_for_stderr("listening on", Duration::from_secs(30));
        let addr = listening_addrs(&log)[0];
        Reloadable {
            process,
            addr,
            config,
            dir,
        }
    }

    /// Rewrite the config and send SIGHUP; wait until the server has logged
    /// the outcome (`reloaded` or `reload refused`) `n` times in all.
    fn reload(&mut self, component: &str, version: &str, n: usize) {
        write_config(&self.config, component, version);
        self.hup_and_wait(n);
    }

    fn hup_and_wait(&mut self, n: usize) {
        self.process.signal("HUP");
        let deadline = Instant::now() + Duration::from_secs(20);
        while outcomes(&self.process.stderr()) < n {
            if Instant::now() > deadline {
                self.process.fail(&format!("reload {n} did not finish"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn outcomes(log: &str) -> usize {
    log.matches("reloaded in").count() + log.matches("reload refused").count()
}

fn write_config(path: &Path, component: &str, version: &str) {
    let toml = format!(
        "[server]\nhostname = \"mx.wasmtp.test\"\n\n[[listener]]\nname = \"in\"\naddress = \"127.0.0.1:0\"\nplugin = \"policy\"\n\n[plugin.policy]\ncomponent = \"{component}\"\nargs = [\"{version}\"]\n"
    );
    // Write then rename, as a deployment tool would: a reload never reads a
    // half-written file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, toml).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The version label at the end of a `versioned` reply.
fn version_of(reply: &harness::Reply) -> String {
    reply
        .text()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// MAIL, RCPT, DATA; the versions that answered RCPT and DATA.
fn transaction(c: &mut Client) -> Result<(String, String), String> {
    let mail = c.cmd("MAIL FROM:<anne@example.com>");
    if mail.code != 250 {
        return Err(format!("MAIL got {mail}"));
    }
    let rcpt = c.cmd("RCPT TO:<bart@example.com>");
    if rcpt.code != 250 {
        return Err(format!("RCPT got {rcpt}"));
    }
    let data = c.cmd("DATA");
    if data.code != 354 {
        return Err(format!("DATA got {data}"));
    }
    c.send_raw(b"Subject: swap\r\n\r\nunder load\r\n.\r\n");
    let done = c.read_reply();
    if done.code != 250 {
        return Err(format!("end of DATA got {done}"));
    }
    Ok((version_of(&rcpt), version_of(&done)))
}

#[test]
fn twenty_reloads_under_load_drop_nothing() {
    let mut server = Reloadable::start("v0");
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let results: Arc<Mutex<Vec<Result<(String, String), String>>>> = Arc::default();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (stop, results) = (stop.clone(), results.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // A few transactions per connection, then a new one.
                    let mut c = Client::after_ehlo(addr);
                    let mut session_version = None;
                    for _ in 0..3 {
                        let result = transaction(&mut c);
                        if let Ok((rcpt, data)) = &result {
                            // One session, one generation.
                            let v = session_version.get_or_insert_with(|| rcpt.clone());
                            if v != rcpt || v != data {
                                results
                                    .lock()
                                    .unwrap()
                                    .push(Err(format!("session on {v} answered by {rcpt}/{data}")));
                            }
                        }
                        results.lock().unwrap().push(result);
                    }
                    c.cmd("QUIT");
                }
            })
        })
        .collect();

    for i in 1..=20 {
        std::thread::sleep(Duration::from_millis(40));
        let component = if i % 2 == 0 { "a.wasm" } else { "b.wasm" };
        server.reload(component, &format!("v{i}"), i);
    }
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }

    let log = server.process.stderr();
    assert_eq!(log.matches("reloaded in").count(), 20, "{log}");
    assert!(!log.contains("reload refused"), "{log}");
    let results = results.lock().unwrap();
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} transactions failed: {failures:?}",
        failures.len(),
        results.len()
    );
    let mut versions: Vec<&str> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|(rcpt, data)| {
            assert_eq!(rcpt, data, "one transaction, one version");
            rcpt.as_str()
        })
        .collect();
    versions.sort();
    versions.dedup();
    assert!(
        versions.len() >= 10,
        "only {versions:?} answered across 20 reloads"
    );
    assert!(
        versions.contains(&"v20"),
        "the last generation served: {versions:?}"
    );
    println!(
        "{} transactions, {} versions answered",
        results.len(),
        versions.len()
    );
}

#[test]
fn a_session_finishes_on_the_generation_it_started_with() {
    let mut server = Reloadable::start("v0");
    let mut old = Client::after_ehlo(server.addr);
    assert_eq!(transaction(&mut old).unwrap(), ("v0".into(), "v0".into()));
    server.reload("b.wasm", "v1", 1);
    let mut new = Client::after_ehlo(server.addr);
    assert_eq!(transaction(&mut new).unwrap(), ("v1".into(), "v1".into()));
    assert_eq!(transaction(&mut old).unwrap(), ("v0".into(), "v0".into()));
}

#[test]
fn a_bad_reload_keeps_the_running_generation() {
    let mut server = Reloadable::start("v0");
    // A config error: the file, line, key and problem, and v0 goes on.
    std::fs::write(
        &server.config,
        "[[listener]]\nname = \"in\"\naddress = \"127.0.0.1:0\"\nplugin = \"policy\"\nsise = 1\n",
    )
    .unwrap();
    server.hup_and_wait(1);
    let log = server.process.stderr();
    assert!(
        log.contains("reload refused, still serving the running generation")
            && log.contains("wasmtp.toml:5:1: listener[0].sise: unknown field `sise`"),
        "{log}"
    );
    let mut c = Client::after_ehlo(server.addr);
    assert_eq!(transaction(&mut c).unwrap().0, "v0");

    // A component that is not one.
    std::fs::write(server.dir.path().join("broken.wasm"), "not wasm").unwrap();
    server.reload("broken.wasm", "v1", 2);
    assert!(
        server
            .process
            .stderr()
            .contains("broken.wasm is not a valid WebAssembly component")
    );
    // Arguments the plugin refuses.
    write_config(&server.config, "a.wasm", "v2\", \"extra");
    server.hup_and_wait(3);
    assert!(
        server
            .process
            .stderr()
            .contains("versioned takes one argument")
    );
    let mut c = Client::after_ehlo(server.addr);
    assert_eq!(transaction(&mut c).unwrap().0, "v0");

    // Fixed: the next reload goes through.
    server.reload("a.wasm", "v3", 4);
    let mut c = Client::after_ehlo(server.addr);
    assert_eq!(transaction(&mut c).unwrap().0, "v3");
}

#[test]
fn a_reload_cannot_move_listeners() {
    let mut server = Reloadable::start("v0");
    let moved =
        "[[listener]]\nname = \"elsewhere\"\naddress = \"127.0.0.1:0\"\nplugin = \"sink\"\n";
    std::fs::write(&server.config, moved).unwrap();
    server.hup_and_wait(1);
    assert!(
        server
            .process
            .stderr()
            .contains("listeners can't be added, removed, renamed or moved by a reload")
    );
}

#[test]
fn watch_reloads_when_a_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plugin_path("versioned.wasm"), dir.path().join("a.wasm")).unwrap();
    let config = dir.path().join("wasmtp.toml");
    let toml = |version: &str| {
        format!(
            "[server]\nhostname = \"mx.wasmtp.test\"\nwatch = true\n\n[[listener]]\nname = \"in\"\naddress = \"127.0.0.1:0\"\nplugin = \"policy\"\n\n[plugin.policy]\ncomponent = \"a.wasm\"\nargs = [\"{version}\"]\n"
        )
    };
    std::fs::write(&config, toml("v0")).unwrap();
    let mut command = Command::new(WASMTP);
    command
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    let mut process = Process::spawn("wasmtp", command);
    let addr =
        listening_addrs(&process.wait_for_stderr("listening on", Duration::from_secs(30)))[0];
    // A different size, so the change shows even within one mtime tick.
    std::fs::write(&config, toml("version-1")).unwrap();
    process.wait_for_stderr("reloaded in", Duration::from_secs(10));
    let mut c = Client::after_ehlo(addr);
    assert_eq!(transaction(&mut c).unwrap().0, "version-1");
}
