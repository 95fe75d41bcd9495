//! Mail authentication against Haraka: what the benchmark needs around the
//! servers — an authoritative DNS server (NLnet Labs' NSD) on loopback
//! serving the sender's zones (SPF, the DKIM key, DMARC, PTR and A for
//! iprev), an RSA-2048 key and a 10 KiB message signed with dkimpy as the
//! tests sign, and Haraka's configuration pointing Node's resolver at NSD.
//!
//! Every connection starts with a PROXY header naming [`CLIENT_IP`], so
//! both servers check a client that is neither loopback nor private (Haraka
//! skips SPF for those).

use std::io::Write;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::load::{self, Script};
use crate::peers::{AUTH_HOSTNAME, Tools};

/// The client both servers see (RFC 2544's benchmarking network).
pub const CLIENT_IP: &str = "198.18.0.10";
/// Its name: PTR and A agree (iprev passes), and its HELO's SPF passes.
pub const CLIENT_NAME: &str = "client.bench.example";
/// The sender's domain: SPF, the DKIM key (selector `rsa`), DMARC `p=reject`.
pub const DOMAIN: &str = "bench.example";
pub const SELECTOR: &str = "rsa";
/// The message size before the signature.
pub const MESSAGE_SIZE: usize = 10 * 1024;

/// NSD's programs: Debian's, or those `bench/run` extracted (`BENCH_NSD`).
fn nsd_program(name: &str) -> PathBuf {
    std::env::var_os("BENCH_NSD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
        .join("usr/sbin")
        .join(name)
}

/// A running NSD, stopped when dropped.
pub struct Nsd {
    dir: PathBuf,
    pub addr: SocketAddr,
    child: Child,
}

fn free_udp_and_tcp_port() -> Result<u16> {
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both UDP and TCP")
}

/// A TXT record of any length, in 255-byte strings.
fn txt(value: &str) -> String {
    value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Nsd {
    /// Serve the benchmark's zones, with `dkim_key` (`v=DKIM1; k=rsa; p=…`)
    /// at `rsa._domainkey.bench.example`.
    pub fn start(scratch: &Path, dkim_key: &str) -> Result<Nsd> {
        for path in [nsd_program("nsd"), nsd_program("nsd-control")] {
            if !path.is_file() {
                bail!(
                    "{} is missing (bench/run extracts Debian's nsd)",
                    path.display()
                );
            }
        }
        let dir = scratch.join("nsd");
        std::fs::create_dir_all(&dir)?;
        let port = free_udp_and_tcp_port()?;
        let zones = [
            // The parent, so that a walk up the tree ends in an NXDOMAIN
            // from a server, as from a real TLD.
            ("example".to_owned(), String::new()),
            (
                DOMAIN.to_owned(),
                format!(
                    "@ TXT \"v=spf1 ip4:{CLIENT_IP} -all\"\n\
                     @ A {CLIENT_IP}\n\
                     client A {CLIENT_IP}\n\
                     client TXT \"v=spf1 ip4:{CLIENT_IP} -all\"\n\
                     mx A 127.0.0.1\n\
                     _dmarc TXT \"v=DMARC1; p=reject\"\n\
                     {SELECTOR}._domainkey TXT ( {} )\n",
                    txt(dkim_key)
                ),
            ),
            (
                "18.198.in-addr.arpa".to_owned(),
                format!("10.0 PTR {CLIENT_NAME}.\n"),
            ),
        ];
        let d = dir.display();
        let mut conf = format!(
            "server:\n    ip-address: 127.0.0.1@{port}\n    port: {port}\n    username: \"\"\n\
             \x20   chroot: \"\"\n    zonesdir: \"{d}\"\n    pidfile: \"{d}/nsd.pid\"\n\
             \x20   database: \"\"\n    zonelistfile: \"{d}/zone.list\"\n\
             \x20   xfrdfile: \"{d}/xfrd.state\"\n    xfrdir: \"{d}\"\n    logfile: \"{d}/nsd.log\"\n\
             \x20   server-count: 1\n    verbosity: 1\n    hide-version: yes\n    reuseport: no\n\
             remote-control:\n    control-enable: yes\n    control-interface: \"{d}/nsd.ctl\"\n"
        );
        for (origin, records) in &zones {
            std::fs::write(
                dir.join(format!("{origin}.zone")),
                format!(
                    "$ORIGIN {origin}.\n$TTL 3600\n\
                     @ IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 3600\n\
                     @ IN NS ns.{origin}.\n{records}\n"
                ),
            )?;
            conf.push_str(&format!(
                "zone:\n    name: \"{origin}\"\n    zonefile: \"{origin}.zone\"\n"
            ));
        }
        let conf_path = dir.join("nsd.conf");
        std::fs::File::create(&conf_path)?.write_all(conf.as_bytes())?;
        let child = Command::new(nsd_program("nsd"))
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nsd")?;
        let mut nsd = Nsd {
            dir,
            addr: ([127, 0, 0, 1], port).into(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if nsd.queries().is_ok() {
                return Ok(nsd);
            }
            if let Some(status) = nsd.child.try_wait()? {
                let log = std::fs::read_to_string(nsd.dir.join("nsd.log")).unwrap_or_default();
                bail!("nsd exited ({status}):\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("nsd did not answer nsd-control within 10 s")
    }

    /// The queries NSD has answered so far (`nsd-control stats_noreset`,
    /// `num.queries`).
    pub fn queries(&self) -> Result<u64> {
        let out = Command::new(nsd_program("nsd-control"))
            .arg("-c")
            .arg(self.dir.join("nsd.conf"))
            .arg("stats_noreset")
            .stdin(Stdio::null())
            .output()
            .context("running nsd-control")?;
        if !out.status.success() {
            bail!(
                "nsd-control stats_noreset: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("num.queries="))
            .context("no num.queries in NSD's statistics")?
            .trim()
            .parse()
            .context("num.queries")
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        crate::peers::terminate(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An RSA-2048 key made by `tests/clients/dkim_sign.py keygen` in
/// `scratch/dkim`; its DNS record value.
pub fn keygen(tools: &Tools, scratch: &Path) -> Result<String> {
    let dir = scratch.join("dkim");
    let out = Command::new(&tools.python)
        .arg(crate::repo_root().join("tests/clients/dkim_sign.py"))
        .arg("keygen")
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .context("running dkim_sign.py keygen")?;
    if !out.status.success() {
        bail!(
            "dkim_sign.py keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("rsa "))
        .map(str::to_owned)
        .context("dkim_sign.py keygen printed no RSA record")
}

/// The benchmark's message of [`MESSAGE_SIZE`] bytes, DKIM-signed (RSA-2048,
/// relaxed/relaxed, d=bench.example) by `tests/clients/dkim_sign.py`; and
/// the client that sends it.
pub fn signed_script(tools: &Tools, scratch: &Path) -> Result<Arc<Script>> {
    let mut message = load::message(MESSAGE_SIZE);
    message.truncate(message.len() - 3); // the `.` line
    let mut child = Command::new(&tools.python)
        .arg(crate::repo_root().join("tests/clients/dkim_sign.py"))
        .arg("sign")
        .arg(scratch.join("dkim"))
        .args(["rsa", DOMAIN, SELECTOR, "relaxed/relaxed", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running dkim_sign.py sign")?;
    child.stdin.take().unwrap().write_all(&message)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "dkim_sign.py sign: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut signed = out.stdout;
    if !signed.starts_with(b"DKIM-Signature:") {
        bail!("dkim_sign.py sign wrote no DKIM-Signature first");
    }
    signed.extend_from_slice(b".\r\n");
    Ok(Arc::new(Script {
        proxy: Some(load::proxy_line(CLIENT_IP)),
        helo: CLIENT_NAME.to_owned(),
        mail_from: load::SENDER.to_owned(),
        rcpt_to: load::RECIPIENT.to_owned(),
        message: signed,
    }))
}

/// Haraka's directory for one server on `port`: `config/` (listening on
/// 127.0.0.1:PORT in one process, PROXY from loopback, the plugins) and
/// `plugins/bench_dns.js`, which points Node's resolver at `nameserver`
/// before any other plugin runs.
pub fn haraka_config(tools: &Tools, port: u16, nameserver: SocketAddr) -> Result<PathBuf> {
    let dir = tools.scratch.join(format!("haraka-{port}"));
    let config = dir.join("config");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&config)?;
    std::fs::create_dir_all(&plugins)?;
    // A file in config/ replaces the packaged one whole: start from the
    // packaged connection.ini and log.ini (log level `info`, as shipped).
    let packaged = tools.haraka.join("node_modules/Haraka/config");
    let connection = std::fs::read_to_string(packaged.join("connection.ini"))
        .context("Haraka's packaged config/connection.ini")?;
    if !connection.lines().any(|l| l.trim() == "hosts[] =") {
        bail!("Haraka's connection.ini has no `hosts[] =` line under [haproxy]");
    }
    let connection = connection
        .lines()
        .map(|l| {
            if l.trim() == "hosts[] =" {
                "hosts[] = 127.0.0.1"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let log = std::fs::read_to_string(packaged.join("log.ini"))
        .context("Haraka's packaged config/log.ini")?;
    let files = [
        // One process (no cluster), as one wasmtp process; the public
        // address given, so that nothing asks a STUN server for it.
        (
            config.join("smtp.ini"),
            format!("listen=127.0.0.1:{port}\nnodes=0\npublic_ip=127.0.0.1\n"),
        ),
        (config.join("me"), format!("{AUTH_HOSTNAME}\n")),
        (config.join("host_list"), format!("{DOMAIN}\n")),
        // PROXY headers accepted from the benchmark's client.
        (config.join("connection.ini"), connection + "\n"),
        (config.join("log.ini"), log),
        (
            config.join("plugins"),
            "bench_dns\nspf\ndkim\nrcpt_to.in_host_list\nqueue/discard\n".to_owned(),
        ),
        // Verification only.
        (
            config.join("dkim.ini"),
            "[sign]\nenabled = false\n\n[verify]\nenabled = true\n".to_owned(),
        ),
        (
            plugins.join("bench_dns.js"),
            format!(
                "// The benchmark's NSD answers every lookup (SPF, DKIM, the PTR).\n\
                 const dns = require('node:dns')\n\
                 exports.register = function () {{\n\
                 \x20 dns.setServers(['{nameserver}'])\n\
                 \x20 dns.promises.setServers(['{nameserver}'])\n\
                 }}\n"
            ),
        ),
    ];
    for (path, text) in files {
        std::fs::write(path, text)?;
    }
    Ok(dir)
}

/// Haraka's version, from its package.json.
pub fn haraka_versions(tools: &Tools) -> String {
    let version = |package: &str| -> String {
        std::fs::read_to_string(
            tools
                .haraka
                .join("node_modules")
                .join(package)
                .join("package.json"),
        )
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("version")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "missing".into())
    };
    let node = Command::new(&tools.node)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "Haraka {}, haraka-plugin-spf {}, haraka-plugin-dkim {}, on Node.js {node}",
        version("Haraka"),
        version("haraka-plugin-spf"),
        version("haraka-plugin-dkim")
    )
}

/// Haraka's directory for the policy part's server on `port`: the example
/// policy of `examples/` in Haraka's terms. `rcpt_to.in_host_list` accepts
/// the recipients of [`crate::peers::POLICY_ALLOWED_DOMAINS`] (Haraka
/// refuses any recipient no `rcpt` hook accepted), `plugins/spam_flag.js`
/// refuses a message whose header carries `X-Spam-Flag: YES` at
/// `data_post` with 550, `queue/discard` drops the rest. One process
/// (`nodes=0`); `connection.ini` and `log.ini` (level `info`) as packaged.
pub fn haraka_policy_config(tools: &Tools, port: u16) -> Result<PathBuf> {
    let dir = tools.scratch.join(format!("haraka-policy-{port}"));
    let config = dir.join("config");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&config)?;
    std::fs::create_dir_all(&plugins)?;
    let mut hosts = crate::peers::POLICY_ALLOWED_DOMAINS.join("\n");
    hosts.push('\n');
    // Without its own connection.ini and log.ini, a config directory gets
    // none (not the packaged ones): copy those as packaged.
    let packaged = tools.haraka.join("node_modules/Haraka/config");
    for name in ["connection.ini", "log.ini"] {
        std::fs::copy(packaged.join(name), config.join(name))
            .with_context(|| format!("Haraka's packaged config/{name}"))?;
    }
    let files = [
        (
            config.join("smtp.ini"),
            format!("listen=127.0.0.1:{port}\nnodes=0\npublic_ip=127.0.0.1\n"),
        ),
        (config.join("me"), format!("{AUTH_HOSTNAME}\n")),
        (config.join("host_list"), hosts),
        (
            config.join("plugins"),
            "rcpt_to.in_host_list\nspam_flag\nqueue/discard\n".to_owned(),
        ),
        (
            plugins.join("spam_flag.js"),
            "// The example policy's header check: refuse X-Spam-Flag: YES.\n\
             exports.hook_data_post = function (next, connection) {\n\
             \x20 const flag = connection.transaction.header.get('X-Spam-Flag')\n\
             \x20 if (flag.split('\\n').some((v) => v.trim().toLowerCase() === 'yes')) {\n\
             \x20   return next(DENY, 'message refused: X-Spam-Flag is YES')\n\
             \x20 }\n\
             \x20 next()\n\
             }\n"
            .to_owned(),
        ),
    ];
    for (path, text) in files {
        std::fs::write(path, text)?;
    }
    Ok(dir)
}
