//! In-process microbenchmarks through the wasmtp library: what instantiating
//! a plugin for a session costs (with the engine exactly as the server
//! configures it: pooling allocator, copy-on-write images), and Mailbox's
//! Maildir writes against a native Rust writer doing the same syncs.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use wasmtime::Store;

use wasmtp::config;
use wasmtp::plugin::host::HostState;
use wasmtp::plugin::instance::Live;
use wasmtp::plugin::loaded::{Limits, Source};
use wasmtp::plugin::runtime::RuntimeSettings;
use wasmtp::plugin::{Chain, Plugin, PluginSpec, Runtime, SessionPlugin, builtin};
use wasmtp::smtp::envelope::{Envelope, Peer, SessionInfo};
use wasmtp::smtp::spool::Content;

use crate::load;

/// p50 and p99 of one measured step, in microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Quantiles {
    pub p50_us: f64,
    pub p99_us: f64,
}

pub fn quantiles(mut samples: Vec<u32>) -> Quantiles {
    samples.sort_unstable();
    Quantiles {
        p50_us: load::percentile(&samples, 0.5) / 1000.0,
        p99_us: load::percentile(&samples, 0.99) / 1000.0,
    }
}

pub(crate) fn nanos(t: Instant) -> u32 {
    t.elapsed().as_nanos().min(u32::MAX as u128) as u32
}

/// Instantiation figures for one plugin.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Instantiation {
    pub plugin: String,
    pub iterations: usize,
    /// `Live::start`: the server's own per-session start (WASI context,
    /// store, instantiate from the `InstancePre`, `setup.init` if exported).
    pub live_start: Quantiles,
    /// Dropping that instance (its pooling slot is reset and returned).
    pub drop: Quantiles,
    /// The steps of `live_start`, timed one by one.
    pub wasi_ctx: Quantiles,
    pub store_new: Quantiles,
    pub instantiate: Quantiles,
    /// A whole session's plugin use: `SessionPlugin::new`, one hook call
    /// (lazily instantiating), drop.
    pub session_one_call: Quantiles,
    /// The hook called in `session_one_call`.
    pub hook: String,
    /// One more call of that hook on a live instance (what every message
    /// costs on a reused connection).
    pub call_live: Quantiles,
    /// Of which: converting the session and envelope to their WIT records
    /// (the host side; lowering them into guest memory is in the call).
    pub convert: Quantiles,
}

pub(crate) fn session_info(id: u64) -> SessionInfo {
    SessionInfo {
        id,
        listener: "bench".into(),
        server_hostname: "bench.example".into(),
        peer: Peer::Ip("127.0.0.1:40000".parse().unwrap()),
        host_name: Some("client.bench.example".into()),
        extended_smtp: true,
        lmtp: false,
        tls: None,
        authenticated: false,
        auth_identity: None,
        proxy: None,
    }
}

pub(crate) fn envelope() -> Envelope {
    Envelope {
        mail_from: Some(load::SENDER.into()),
        rcpt_tos: vec![load::RECIPIENT.into()],
        rcpt_options: vec![Vec::new()],
        ..Envelope::default()
    }
}

pub(crate) async fn load_plugin(
    runtime: &Arc<Runtime>,
    name: &str,
    source: Source,
    args: Vec<String>,
    base: &Path,
) -> Result<Arc<Plugin>> {
    let spec = match source {
        Source::Builtin(b) => {
            config::builtin_spec(b.name, args, base).map_err(anyhow::Error::msg)?
        }
        Source::File(path) => PluginSpec {
            name: name.into(),
            source: Source::File(path),
            args,
            grants: Default::default(),
            limits: Limits::default(),
            on_failure: Default::default(),
            reuse: None,
        },
    };
    Plugin::load(runtime, spec)
        .await
        .with_context(|| format!("loading {name}"))
}

/// Measure instantiation of `plugin` `iterations` times.
async fn instantiation(plugin: &Arc<Plugin>, iterations: usize) -> Result<Instantiation> {
    let warm = iterations / 10 + 10;
    let (mut start, mut dropped) = (
        Vec::with_capacity(iterations),
        Vec::with_capacity(iterations),
    );
    for i in 0..warm + iterations {
        let t = Instant::now();
        let live = Live::start(plugin, i as u64)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let started = nanos(t);
        let t = Instant::now();
        drop(live);
        if i >= warm {
            start.push(started);
            dropped.push(nanos(t));
        }
    }

    // The same steps one by one (what `Live::start` does, setup aside).
    let (mut wasi, mut store_new, mut inst) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..warm + iterations {
        let t = Instant::now();
        let ctx = plugin
            .grants
            .wasi_ctx()
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let t_wasi = nanos(t);
        let t = Instant::now();
        let state = HostState::new(plugin, ctx, i as u64);
        let mut store = Store::new(&plugin.runtime.engine, state);
        store.limiter(|state| &mut state.memory);
        store.epoch_deadline_callback(|_| Ok(wasmtime::UpdateDeadline::Yield(1)));
        store.set_epoch_deadline(1);
        let t_store = nanos(t);
        let t = Instant::now();
        let instance = plugin
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let t_inst = nanos(t);
        let _ = instance;
        drop(store);
        if i >= warm {
            wasi.push(t_wasi);
            store_new.push(t_store);
            inst.push(t_inst);
        }
    }

    // A session that reaches one exported hook (only for plugins whose hook
    // does no I/O: Debugging prints, Mailbox writes a file).
    if matches!(&*plugin.name, "debugging" | "mailbox") {
        return Ok(Instantiation {
            plugin: plugin.name.to_string(),
            iterations,
            live_start: quantiles(start),
            drop: quantiles(dropped),
            wasi_ctx: quantiles(wasi),
            store_new: quantiles(store_new),
            instantiate: quantiles(inst),
            ..Instantiation::default()
        });
    }
    let (info, env) = (session_info(1), envelope());
    let content = Arc::new(Content::from(load::message(1024)));
    let hook = if plugin.hooks.has(wasmtp::plugin::Hook::Data) {
        "data"
    } else {
        "noop"
    };
    let chain = Arc::new(Chain::of("bench", vec![plugin.clone()]));
    let mut session = Vec::with_capacity(iterations);
    for i in 0..warm + iterations {
        let t = Instant::now();
        let mut sp = SessionPlugin::new(chain.clone(), i as u64);
        let reply = if hook == "data" {
            sp.data(&info, &env, content.clone()).await
        } else {
            sp.noop(&info, &env, "").await
        };
        drop(sp);
        let elapsed = nanos(t);
        anyhow::ensure!(reply.is_ok(), "the {hook} hook failed: {reply:?}");
        if i >= warm {
            session.push(elapsed);
        }
    }

    // Calls on one live instance, and the conversions each call makes.
    let mut sp = SessionPlugin::new(chain.clone(), 1);
    let (mut live_calls, mut converts) = (
        Vec::with_capacity(iterations),
        Vec::with_capacity(iterations),
    );
    for i in 0..warm + iterations {
        let t = Instant::now();
        let reply = if hook == "data" {
            sp.data(&info, &env, content.clone()).await
        } else {
            sp.noop(&info, &env, "").await
        };
        let elapsed = nanos(t);
        anyhow::ensure!(reply.is_ok(), "the {hook} hook failed: {reply:?}");
        let t = Instant::now();
        let converted = (
            wasmtp::plugin::convert::session(&info),
            wasmtp::plugin::convert::envelope(&env),
        );
        let c = nanos(t);
        drop(converted);
        if i >= warm {
            live_calls.push(elapsed);
            converts.push(c);
        }
    }

    Ok(Instantiation {
        plugin: plugin.name.to_string(),
        iterations,
        live_start: quantiles(start),
        drop: quantiles(dropped),
        wasi_ctx: quantiles(wasi),
        store_new: quantiles(store_new),
        instantiate: quantiles(inst),
        session_one_call: quantiles(session),
        hook: hook.into(),
        call_live: quantiles(live_calls),
        convert: quantiles(converts),
    })
}

/// The example policy (`examples/`: a recipient allowlist and a header
/// check, the same in every language) built by `bench/run` into
/// `$BENCH_EXAMPLES`, when it could be: `(name, component)`.
fn examples() -> Vec<(String, std::path::PathBuf)> {
    let Some(dir) = std::env::var_os("BENCH_EXAMPLES").map(std::path::PathBuf::from) else {
        return Vec::new();
    };
    ["rust", "javascript", "python"]
        .iter()
        .map(|lang| {
            (
                format!("{lang} example"),
                dir.join(format!("{lang}_policy.wasm")),
            )
        })
        .filter(|(_, path)| path.is_file())
        .collect()
}

/// Instantiation figures for the reference plugins, the noop test plugin,
/// and the example policy in each language `bench/run` could build.
pub fn instantiation_all(
    wasm_dir: &Path,
    scratch: &Path,
    iterations: usize,
) -> Result<Vec<Instantiation>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let runtime = Runtime::new(&RuntimeSettings::default())?;
        let maildir = scratch.join("micro-instantiate-maildir");
        let mut out = Vec::new();
        let mut plugins = vec![
            (
                "sink".to_owned(),
                Source::Builtin(builtin::find("sink").unwrap()),
                vec![],
            ),
            (
                "noop".to_owned(),
                Source::File(wasm_dir.join("noop.wasm")),
                vec![],
            ),
            (
                "debugging".to_owned(),
                Source::Builtin(builtin::find("debugging").unwrap()),
                vec!["stderr".to_owned()],
            ),
            (
                "mailbox".to_owned(),
                Source::Builtin(builtin::find("mailbox").unwrap()),
                vec![maildir.to_string_lossy().into_owned()],
            ),
        ];
        // The examples' allowlist: the benchmark's envelope passes it.
        for (name, path) in examples() {
            plugins.push((name, Source::File(path), vec!["example.com".to_owned()]));
        }
        for (name, source, args) in plugins {
            let plugin = load_plugin(&runtime, &name, source, args, scratch).await?;
            let mut figures = instantiation(
                &plugin,
                if matches!(&*name, "sink" | "noop") {
                    iterations
                } else {
                    iterations / 10
                },
            )
            .await?;
            figures.plugin = name;
            out.push(figures);
        }
        let _ = fs::remove_dir_all(maildir);
        Ok(out)
    })
}

/// Mailbox against a native writer, per 1 KiB message.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MaildirFigures {
    pub messages: usize,
    /// The Mailbox plugin's data hook, called in process (the instance
    /// already started): header rewrite, write, fsync, rename — through WASI.
    pub plugin: Quantiles,
    /// The same plugin with wasmtime-wasi's default file calls: each one a
    /// hop through tokio's `spawn_blocking` pool and back (what the server
    /// did before it ran a granted plugin's file calls in place).
    pub plugin_via_pool: Quantiles,
    /// The same steps in native Rust, with the same file and directory
    /// calls and the same fsync.
    pub native: Quantiles,
}

/// Time `messages` deliveries of a 1 KiB message by the Mailbox plugin and
/// by the native writer, alternating between the two.
pub fn maildir(scratch: &Path, messages: usize) -> Result<MaildirFigures> {
    // The server's kind of runtime, and a task on one of its workers as a
    // session is: the plugin's hook calls go through `block_in_place` there.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let scratch = scratch.to_path_buf();
    rt.block_on(async move { tokio::spawn(maildir_on_worker(scratch, messages)).await? })
}

async fn maildir_on_worker(scratch: std::path::PathBuf, messages: usize) -> Result<MaildirFigures> {
    {
        let runtime = Runtime::new(&RuntimeSettings::default())?;
        let (plugin_dir, native_dir) = (
            scratch.join("micro-maildir-plugin"),
            scratch.join("micro-maildir-native"),
        );
        fs::create_dir_all(&native_dir)?;
        let plugin = load_plugin(
            &runtime,
            "mailbox",
            Source::Builtin(builtin::find("mailbox").unwrap()),
            vec![plugin_dir.to_string_lossy().into_owned()],
            &scratch,
        )
        .await?;
        let (info, env) = (session_info(7), envelope());
        let bytes = load::message(1024)[..1024].to_vec();
        let content = Arc::new(Content::from(bytes.clone()));
        let mut via_pool = ViaPool::start(&plugin, &plugin_dir).await?;
        let mut session = SessionPlugin::new(Arc::new(Chain::of("bench", vec![plugin])), 7);
        let (mut wasm, mut wasm_via_pool, mut native) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..messages + 5 {
            let t = Instant::now();
            let reply = session.data(&info, &env, content.clone()).await;
            let w = nanos(t);
            anyhow::ensure!(
                matches!(reply, Ok(None)),
                "Mailbox did not deliver: {reply:?}"
            );
            let t = Instant::now();
            let reply = via_pool.data(&info, &env, content.clone()).await?;
            let o = nanos(t);
            anyhow::ensure!(
                reply.is_none(),
                "Mailbox (via the pool) did not deliver: {reply:?}"
            );
            let t = Instant::now();
            native_deliver(&native_dir, &info, &env, &bytes)?;
            let n = nanos(t);
            if i >= 5 {
                wasm.push(w);
                wasm_via_pool.push(o);
                native.push(n);
            }
        }
        let delivered = fs::read_dir(plugin_dir.join("new"))?.count();
        anyhow::ensure!(
            delivered == 2 * (messages + 5),
            "Mailbox stored {delivered} messages, not {}",
            2 * (messages + 5)
        );
        let _ = fs::remove_dir_all(&plugin_dir);
        let _ = fs::remove_dir_all(&native_dir);
        Ok(MaildirFigures {
            messages,
            plugin: quantiles(wasm),
            plugin_via_pool: quantiles(wasm_via_pool),
            native: quantiles(native),
        })
    }
}

/// A Mailbox instance set up as `Live::start` does, except that its WASI
/// context sends every file call through tokio's blocking pool.
struct ViaPool {
    plugin: Arc<Plugin>,
    store: Store<HostState>,
    instance: wasmtime::component::Instance,
}

impl ViaPool {
    async fn start(plugin: &Arc<Plugin>, maildir: &Path) -> Result<ViaPool> {
        let err = |e: wasmtime::Error| anyhow::anyhow!("{e:#}");
        let mut b = wasmtime_wasi::WasiCtxBuilder::new();
        let dir = std::path::absolute(maildir)?;
        b.preopened_dir(
            &dir,
            dir.to_string_lossy(),
            wasmtime_wasi::FsPerms::ReadWrite,
        )
        .map_err(err)?;
        b.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        b.allow_blocking_current_thread(false);
        let state = HostState::new(plugin, b.build(), 8);
        let mut store = Store::new(&plugin.runtime.engine, state);
        store.limiter(|state| &mut state.memory);
        store.epoch_deadline_callback(|_| Ok(wasmtime::UpdateDeadline::Yield(1)));
        store.set_epoch_deadline(1);
        let instance = plugin
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(err)?;
        let setup = plugin
            .hooks
            .setup
            .as_ref()
            .context("Mailbox exports setup")?
            .load(&mut store, &instance)
            .map_err(err)?;
        setup
            .call_init(&mut store, &plugin.args)
            .await
            .map_err(err)?
            .map_err(anyhow::Error::msg)?;
        Ok(ViaPool {
            plugin: plugin.clone(),
            store,
            instance,
        })
    }

    async fn data(
        &mut self,
        info: &SessionInfo,
        env: &Envelope,
        content: Arc<Content>,
    ) -> Result<Option<wasmtp::plugin::bindings::types::Reply>> {
        let err = |e: wasmtime::Error| anyhow::anyhow!("{e:#}");
        self.store.data_mut().content = Some(Arc::new(
            wasmtp::capability::headers::MessageView::from(content),
        ));
        self.store.set_epoch_deadline(1);
        let guest = self
            .plugin
            .hooks
            .data
            .as_ref()
            .context("Mailbox exports data")?
            .load(&mut self.store, &self.instance)
            .map_err(err)?;
        let (s, e) = (
            wasmtp::plugin::convert::session(info),
            wasmtp::plugin::convert::envelope(env),
        );
        let reply = guest
            .call_handle_data(&mut self.store, &s, &e)
            .await
            .map_err(err);
        self.store.data_mut().content = None;
        reply
    }
}

/// What the Mailbox plugin does for one message, natively: make sure
/// `tmp`, `new`, `cur` exist, write the added headers and the message (line
/// ends as LF, as Python's mailbox writes them) to `tmp/`, fsync, rename
/// into `new/`.
fn native_deliver(
    maildir: &Path,
    session: &SessionInfo,
    envelope: &Envelope,
    content: &[u8],
) -> io::Result<()> {
    for dir in ["tmp", "new", "cur"] {
        match fs::create_dir(maildir.join(dir)) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!(
        "{}.M{}P{}Q{count}.bench",
        now.as_secs(),
        now.subsec_micros(),
        session.id
    );
    let tmp = maildir.join("tmp").join(&name);
    let file = File::options().write(true).create_new(true).open(&tmp)?;
    let mut out = BufWriter::with_capacity(64 << 10, file);
    let (address, port) = session.peer.address_and_port();
    writeln!(out, "X-Peer: ('{address}', {port})")?;
    writeln!(
        out,
        "X-MailFrom: {}",
        envelope.mail_from.as_deref().unwrap_or("")
    )?;
    writeln!(out, "X-RcptTo: {}", envelope.rcpt_tos.join(", "))?;
    for line in content.split_inclusive(|&b| b == b'\n') {
        let text = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"));
        match text {
            Some(text) => {
                out.write_all(text)?;
                out.write_all(b"\n")?;
            }
            None => out.write_all(line)?,
        }
    }
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    fs::rename(&tmp, maildir.join("new").join(&name))
}
