//! What state costs: a PostgreSQL server for the `-pg` peers, started by
//! the benchmark in a temporary directory on a loopback port and stopped
//! at the end; and the key-value store's operation latency on both
//! engines, measured through the store API the host calls for a plugin.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use wasmtp::store::{BackendSettings, Store, StoreSettings};

use crate::micro::Quantiles;

/// A PostgreSQL server of the benchmark's own: Debian's binaries (or the
/// ones `bench/run` extracted), a fresh cluster in a temporary directory,
/// listening on 127.0.0.1 only. Running as root, `initdb` and `pg_ctl` run
/// as the `postgres` user through `runuser` (they refuse root). Stopped and
/// removed when dropped.
pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    user: Option<String>,
    pub port: u16,
    pub version: String,
    databases: AtomicU32,
}

/// The newest `/usr/lib/postgresql/*/bin` with `pg_ctl`, or `BENCH_PG_BIN`.
fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("BENCH_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (bench/run installs it)")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .context("no /usr/lib/postgresql/*/bin/pg_ctl (bench/run installs PostgreSQL)")
}

fn user_exists(name: &str) -> bool {
    Command::new("id")
        .arg("-u")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Postgres {
    pub fn start() -> Result<Postgres> {
        static N: AtomicU32 = AtomicU32::new(0);
        let bin = bin_dir()?;
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let user = root.then(|| {
            if user_exists("postgres") {
                "postgres".to_owned()
            } else {
                "nobody".to_owned()
            }
        });
        let dir = std::env::temp_dir().join(format!(
            "wasmtp-bench-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut pg = Postgres {
            dir,
            bin,
            user,
            port,
            version: String::new(),
            databases: AtomicU32::new(0),
        };
        if let Some(user) = &pg.user {
            let ok = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(&pg.dir)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                bail!("chown {user} {}", pg.dir.display());
            }
        }
        let data = pg.dir.join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--locale=C",
            ],
        )?;
        // The server's defaults (fsync on, synchronous_commit on), so a
        // commit is on disk before it returns.
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=300",
            pg.port,
            pg.dir.display()
        );
        pg.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                pg.dir.join("log").to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        )?;
        pg.version = pg.psql("SHOW server_version").unwrap_or_default();
        Ok(pg)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Run SQL as the superuser in database `postgres`.
    pub fn psql(&self, sql: &str) -> Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-tAc", sql])
            .stdin(Stdio::null())
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!("psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// A new, empty database; its connection string.
    pub fn database(&self) -> Result<String> {
        let name = format!("bench{}", self.databases.fetch_add(1, Ordering::Relaxed));
        self.psql(&format!("CREATE DATABASE {name}"))?;
        Ok(format!(
            "host=127.0.0.1 port={} user=postgres dbname={name}",
            self.port
        ))
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// The postmaster's process id (`postmaster.pid`'s first line).
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self
            .command("pg_ctl")
            .args(["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Latency of the key-value operations on one engine.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KvFigures {
    /// `sqlite` or `postgres`.
    pub backend: String,
    pub calls: usize,
    pub get: Quantiles,
    pub set: Quantiles,
    pub incr: Quantiles,
    pub cas: Quantiles,
    pub error: Option<String>,
}

/// `calls` rounds of get, set, incr and compare-and-set, one after the
/// other from one task (a plugin's calls are sequential), through
/// `wasmtp::store::Kv` — what the host's `kv` import calls after mapping
/// the namespace — on a two-worker runtime, as the server runs.
pub fn kv_latency(backend: BackendSettings, name: &str, calls: usize) -> Result<KvFigures> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let store = Store::open(&StoreSettings {
            backend,
            ..StoreSettings::default()
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let kv = store.kv.clone();
        let ns = "shared:bench";
        let ttl = Duration::from_secs(3600);
        let value = [b'v'; 32];
        let err = |e: wasmtp::store::StoreError| anyhow::anyhow!("{e}");
        // The keys exist before the timed rounds.
        for k in 0..100 {
            kv.set(ns, &format!("key{k}"), &value, ttl)
                .await
                .map_err(err)?;
        }
        let mut revision = kv.set(ns, "cas", &value, ttl).await.map_err(err)?;
        let warm = calls / 10;
        let (mut get, mut set, mut incr, mut cas) = (
            Vec::with_capacity(calls),
            Vec::with_capacity(calls),
            Vec::with_capacity(calls),
            Vec::with_capacity(calls),
        );
        let nanos = |t: Instant| t.elapsed().as_nanos().min(u32::MAX as u128) as u32;
        for i in 0..warm + calls {
            let key = format!("key{}", i % 100);
            let t = Instant::now();
            let got = kv.get(ns, &key).await.map_err(err)?;
            let g = nanos(t);
            if got.is_none() {
                bail!("get {key}: the key is missing");
            }
            let t = Instant::now();
            kv.set(ns, &key, &value, ttl).await.map_err(err)?;
            let s = nanos(t);
            let t = Instant::now();
            kv.incr(ns, &format!("counter{}", i % 100), 1, ttl)
                .await
                .map_err(err)?;
            let n = nanos(t);
            let t = Instant::now();
            revision = kv
                .cas(ns, "cas", &value, Some(revision), ttl)
                .await
                .map_err(err)?;
            let c = nanos(t);
            if i >= warm {
                get.push(g);
                set.push(s);
                incr.push(n);
                cas.push(c);
            }
        }
        let q = crate::micro::quantiles;
        Ok(KvFigures {
            backend: name.to_owned(),
            calls,
            get: q(get),
            set: q(set),
            incr: q(incr),
            cas: q(cas),
            error: None,
        })
    })
}
