//! The engine and linker every plugin shares.
//!
//! Settings chosen from measurements (DESIGN.md, decision 11): the pooling
//! allocator with copy-on-write memory images makes the per-session instance
//! cheap; component-model async (`concurrency_support`) is left off because it
//! made plain calls several times slower; epoch interruption lets a hook that
//! runs long yield to tokio every tick and be stopped at its deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::Host_;
use super::host::HostState;
use super::loaded::PluginError;

/// How often the engine's epoch advances: the granularity of hook deadlines
/// and how long a busy plugin runs before it yields its tokio worker.
/// At 10 ms, four spinning plugins on two cores held each worker for whole
/// ticks and other sessions waited behind them (bench `tenant-isolation`);
/// 1 ms keeps that wait short, for an atomic increment a millisecond.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Ticks without any plugin code running before the epoch thread sleeps.
/// Long enough that a server under load never parks and wakes it per call
/// (the wake is a system call); short enough that an idle server makes no
/// wake-ups at all.
const IDLE_TICKS: u32 = 100;

/// The epoch thread: advances the engine's epoch every [`EPOCH_TICK`] while
/// plugin code may run, and sleeps when none has for [`IDLE_TICKS`].
pub struct EpochTicker {
    /// Instantiations and hook calls in progress.
    running: Arc<AtomicUsize>,
    thread: std::thread::Thread,
}

impl EpochTicker {
    fn start(engine: &Engine) -> std::io::Result<EpochTicker> {
        let ticker = engine.weak();
        let running = Arc::new(AtomicUsize::new(0));
        let busy = running.clone();
        let thread = std::thread::Builder::new()
            .name("wasmtp-epoch".into())
            .spawn(move || {
                let mut idle: u32 = 0;
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    idle = if busy.load(Ordering::Acquire) == 0 {
                        idle.saturating_add(1)
                    } else {
                        0
                    };
                    if idle >= IDLE_TICKS {
                        // Woken by `EpochTicker::running` (then `busy` resets
                        // `idle`); the timeout lets the thread end soon after
                        // the engine is dropped.
                        std::thread::park_timeout(Duration::from_secs(1));
                    } else {
                        std::thread::sleep(EPOCH_TICK);
                    }
                }
            })?;
        Ok(EpochTicker {
            running,
            thread: thread.thread().clone(),
        })
    }

    /// Plugin code is about to run: the epoch must advance until the
    /// returned guard is dropped. (Unparking a thread that is not parked
    /// is an atomic swap, no system call.)
    pub fn running(&self) -> Running {
        self.running.fetch_add(1, Ordering::AcqRel);
        self.thread.unpark();
        Running(self.running.clone())
    }
}

/// Keeps the epoch advancing while plugin code may run.
pub struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Linear memory a finished instance's slot keeps resident for the next
/// instance of the same plugin. The pages the instance wrote, up to this
/// much, are reset by copying the memory image back (found with Linux's
/// PAGEMAP_SCAN); past it, the rest is given back to the kernel with
/// `madvise`, and the next instance faults every such page in again. Each
/// of those faults on a copy-on-write page flushes the TLB of every CPU the
/// server runs on (an inter-processor interrupt): with 64 KiB, the
/// JavaScript example's ~124 KiB a session cost it 31 faults and a
/// `madvise`, and 60 % of its CPU with a connection per message went to
/// the kernel. 1 MiB covers a QuickJS session and most of a CPython one
/// (BENCHMARKS.md, "Profile of a fresh instance"); an idle slot holds at
/// most what its last instance wrote, up to this.
const KEEP_RESIDENT: usize = 1 << 20;

/// Settings of the engine, from the `[server]` section of the config.
#[derive(Clone, Debug)]
pub struct RuntimeSettings {
    /// The most plugin instances alive at once (pooling allocator slots).
    pub max_instances: u32,
    /// Keep compiled plugins in wasmtime's on-disk cache.
    pub compile_cache: bool,
    /// Where that cache lives; wasmtime's default (`~/.cache/wasmtime`) if unset.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Count instructions ("fuel") so plugins can be given a deterministic
    /// budget per hook. Off by default: it costs every plugin some speed.
    pub fuel: bool,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            max_instances: 1000,
            compile_cache: true,
            cache_dir: None,
            fuel: false,
        }
    }
}

pub struct Runtime {
    pub engine: Engine,
    pub linker: Linker<HostState>,
    /// Whether the engine counts fuel (stores must then be given some).
    pub fuel: bool,
    pub ticker: EpochTicker,
    /// The store behind the `kv` and `queue` capabilities, when the server
    /// opened one (`server::start`, when a plugin is granted either);
    /// without it their calls are `unavailable`. One per process: a reload
    /// keeps it.
    pub store: std::sync::OnceLock<crate::store::Store>,
    /// The resolver and verifier the plugins loaded next get (`[dns]`,
    /// `[auth]`); see [`Runtime::configure_services`].
    services: std::sync::Mutex<Option<Arc<crate::capability::Services>>>,
}

impl Runtime {
    pub fn new(settings: &RuntimeSettings) -> Result<Arc<Runtime>, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.memory_init_cow(true);
        config.consume_fuel(settings.fuel);

        let slots = settings.max_instances.max(1);
        let mut pool = PoolingAllocationConfig::new();
        // A component is several core instances: 9 for a QuickJS plugin,
        // 14 for a CPython one (componentize-py links libc, libpython and
        // adapters), 1 to 3 for Rust. The bound is on metadata allocated
        // on demand, so room for 16 each costs nothing until used, and
        // `max_plugin_instances` sessions fit whatever the language.
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(16))
            .total_memories(slots.saturating_mul(2))
            .total_tables(slots.saturating_mul(4))
            .total_stacks(slots)
            .max_core_instances_per_component(64)
            .max_memories_per_component(4)
            .max_tables_per_component(32)
            .max_component_instance_size(4 << 20)
            .max_core_instance_size(4 << 20)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(16 << 10)
            .pagemap_scan(wasmtime::Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));

        if settings.compile_cache {
            // Keyed by the component's bytes and the engine's settings, so an
            // unchanged plugin is not compiled again by a restart or reload.
            let mut cache_config = wasmtime::CacheConfig::new();
            if let Some(dir) = &settings.cache_dir {
                cache_config.with_directory(dir);
            }
            match wasmtime::Cache::new(cache_config) {
                Ok(cache) => {
                    config.cache(Some(cache));
                }
                Err(e) => tracing::warn!("compiled-plugin cache disabled: {e:#}"),
            }
        }

        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        Host_::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        // wasi:http's types and outgoing handler; the loader lets only a
        // plugin granted `http` import the handler (capability::http).
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;

        let ticker = EpochTicker::start(&engine)
            .map_err(|e| PluginError::Engine(format!("cannot start the epoch thread: {e}")))?;

        Ok(Arc::new(Runtime {
            engine,
            linker,
            fuel: settings.fuel,
            ticker,
            store: std::sync::OnceLock::new(),
            services: std::sync::Mutex::new(None),
        }))
    }

    /// Sets the `[dns]`, `[auth]` and `[http]` of the plugins loaded from now on. The
    /// resolver (and its cache) is kept when `[dns]` did not change, so a
    /// reload does not cost a cold cache.
    pub fn configure_services(
        &self,
        dns: &crate::capability::dns::DnsSettings,
        auth: &crate::capability::mail_auth::MailAuthSettings,
        http: &crate::capability::http::HttpSettings,
    ) {
        let mut current = self.services.lock().unwrap_or_else(|e| e.into_inner());
        let resolver = match current.as_ref() {
            Some(s) if s.dns_settings == *dns => Arc::clone(s.mail_auth.dns()),
            _ => Arc::new(crate::capability::dns::Dns::new(dns)),
        };
        *current = Some(Arc::new(crate::capability::Services::new(
            dns.clone(),
            resolver,
            auth.clone(),
            http.clone(),
        )));
    }

    /// The services for a plugin being loaded (the defaults if none were set).
    pub fn services(&self) -> Arc<crate::capability::Services> {
        let mut current = self.services.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(current.get_or_insert_with(|| {
            let dns = crate::capability::dns::DnsSettings::default();
            let resolver = Arc::new(crate::capability::dns::Dns::new(&dns));
            Arc::new(crate::capability::Services::new(
                dns,
                resolver,
                Default::default(),
                Default::default(),
            ))
        }))
    }
}
