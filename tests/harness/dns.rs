//! A real authoritative DNS server for tests: NLnet Labs' NSD (Debian's
//! `nsd`), started unprivileged on a free loopback port in a temporary
//! directory, serving the zones a test writes, and stopped at the end.
//!
//! ```ignore
//! let dns = DnsServer::start(&[Zone::new("example.test", "@ TXT \"v=spf1 -all\"")]);
//! // point wasmtp's `[dns] nameservers` at dns.addr()
//! assert_eq!(dns.queries(), 0);
//! ```
//!
//! Include it with `#[path = "harness/dns.rs"] mod dns;`. A test binary
//! that shares one server between its tests keeps it in a `OnceLock`
//! ([`DnsServer::shared`]); since Rust never drops statics, the server is
//! started under a small shell that kills it when the test process's end
//! of a pipe closes, however the process ends. A server a test owns is
//! stopped on drop (or earlier with [`DnsServer::stop`], to test what a dead
//! server costs).
//!
//! The query counts come from NSD's own statistics (`nsd-control
//! stats_noreset`), so a test can prove that a lookup sent no packet.

#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where Debian installs NSD (`.ci/run` installs the package).
const NSD: &str = "/usr/sbin/nsd";
const NSD_CONTROL: &str = "/usr/sbin/nsd-control";

/// One zone: its origin and its records, in zone-file syntax relative to
/// the origin. The SOA and NS records are added by the fixture.
#[derive(Clone, Debug)]
pub struct Zone {
    pub origin: String,
    pub records: String,
}

impl Zone {
    pub fn new(origin: &str, records: &str) -> Zone {
        Zone {
            origin: origin.trim_end_matches('.').to_owned(),
            records: records.to_owned(),
        }
    }

    fn file_text(&self) -> String {
        format!(
            "$ORIGIN {origin}.\n$TTL 300\n\
             @ IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 300\n\
             @ IN NS ns.{origin}.\n\
             {records}\n",
            origin = self.origin,
            records = self.records
        )
    }

    fn file_name(&self) -> String {
        format!("{}.zone", self.origin)
    }
}

/// A running NSD.
pub struct DnsServer {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    child: Option<Child>,
    /// Held open: when it closes (this process ends), the shell kills NSD.
    keeper: Option<ChildStdin>,
}

/// Whether NSD is installed; tests that need it say so when it is not.
pub fn nsd_available() -> bool {
    Path::new(NSD).is_file() && Path::new(NSD_CONTROL).is_file()
}

impl DnsServer {
    /// Starts NSD serving `zones` on `127.0.0.1:<free port>` (UDP and TCP),
    /// and waits until it answers.
    pub fn start(zones: &[Zone]) -> DnsServer {
        assert!(
            nsd_available(),
            "NSD is not installed ({NSD}); `apt-get install nsd` (.ci/run does)"
        );
        let mut last_error = String::new();
        // The free port is free when chosen; another process may take it
        // before NSD binds it, so try a few.
        for _ in 0..5 {
            match DnsServer::try_start(zones) {
                Ok(server) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("cannot start NSD: {last_error}");
    }

    /// The server shared by all tests of this binary, started on first use
    /// with the zones `zones()` returns.
    pub fn shared(zones: fn() -> Vec<Zone>) -> &'static DnsServer {
        static SHARED: OnceLock<DnsServer> = OnceLock::new();
        SHARED.get_or_init(|| DnsServer::start(&zones()))
    }

    fn try_start(zones: &[Zone]) -> Result<DnsServer, String> {
        let dir = tempfile::Builder::new()
            .prefix("wasmtp-nsd-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let port = free_udp_and_tcp_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let conf = write_config(dir.path(), port, zones);
        let mut child = Command::new("sh")
            .args([
                "-c",
                "\"$0\" -d -c \"$1\" & pid=$!; read _; kill $pid; wait $pid",
            ])
            .arg(NSD)
            .arg(&conf)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {NSD}: {e}"))?;
        let keeper = child.stdin.take();
        let mut server = DnsServer {
            dir,
            addr,
            child: Some(child),
            keeper,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if server.control(&["status"]).is_ok() && server.answers() {
                return Ok(server);
            }
            if let Some(child) = &mut server.child
                && let Ok(Some(status)) = child.try_wait()
            {
                let log =
                    std::fs::read_to_string(server.dir.path().join("nsd.log")).unwrap_or_default();
                return Err(format!("NSD exited ({status}) on port {port}:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("NSD did not answer on {addr} within 10 s"))
    }

    /// Where it listens, UDP and TCP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The queries it has answered so far (`num.queries`).
    pub fn queries(&self) -> u64 {
        self.stat("num.queries")
    }

    /// One counter of `nsd-control stats_noreset`: `num.queries`,
    /// `num.type.TXT`, `num.rcode.NXDOMAIN`, ...
    pub fn stat(&self, key: &str) -> u64 {
        let stats = self
            .control(&["stats_noreset"])
            .unwrap_or_else(|e| panic!("nsd-control stats_noreset: {e}"));
        stats
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {key} in NSD's statistics:\n{stats}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Replaces the records of one of its zones and reloads it.
    pub fn update_zone(&self, zone: &Zone) {
        std::fs::write(self.dir.path().join(zone.file_name()), zone.file_text()).unwrap();
        self.control(&["reload", &zone.origin])
            .unwrap_or_else(|e| panic!("nsd-control reload: {e}"));
    }

    /// Stops it now; lookups then get no answer (ICMP port unreachable).
    pub fn stop(&mut self) {
        drop(self.keeper.take());
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    fn control(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new(NSD_CONTROL)
            .arg("-c")
            .arg(self.dir.path().join("nsd.conf"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {NSD_CONTROL}: {e}"))?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(text)
        } else {
            Err(format!("{text}{}", String::from_utf8_lossy(&output.stderr)))
        }
    }

    /// Whether a query for the root SOA gets any answer (NSD refuses it,
    /// which is an answer).
    fn answers(&self) -> bool {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        // id 0x5753, RD, one question: `.` SOA IN
        let query = [
            0x57, 0x53, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 1,
        ];
        let mut buf = [0u8; 512];
        socket.send_to(&query, self.addr).is_ok() && socket.recv(&mut buf).is_ok()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A UDP socket on loopback that receives queries and never answers: a
/// nameserver that costs its clients their whole timeout.
pub struct SilentServer {
    socket: UdpSocket,
}

impl SilentServer {
    pub fn start() -> SilentServer {
        SilentServer {
            socket: UdpSocket::bind("127.0.0.1:0").unwrap(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }
}

fn free_udp_and_tcp_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0");
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn write_config(dir: &Path, port: u16, zones: &[Zone]) -> PathBuf {
    let d = dir.display();
    let mut conf = format!(
        "server:\n\
         \x20   ip-address: 127.0.0.1@{port}\n\
         \x20   port: {port}\n\
         \x20   username: \"\"\n\
         \x20   chroot: \"\"\n\
         \x20   zonesdir: \"{d}\"\n\
         \x20   pidfile: \"{d}/nsd.pid\"\n\
         \x20   database: \"\"\n\
         \x20   zonelistfile: \"{d}/zone.list\"\n\
         \x20   xfrdfile: \"{d}/xfrd.state\"\n\
         \x20   xfrdir: \"{d}\"\n\
         \x20   logfile: \"{d}/nsd.log\"\n\
         \x20   server-count: 1\n\
         \x20   verbosity: 1\n\
         \x20   hide-version: yes\n\
         \x20   reuseport: no\n\
         remote-control:\n\
         \x20   control-enable: yes\n\
         \x20   control-interface: \"{d}/nsd.ctl\"\n"
    );
    for zone in zones {
        std::fs::write(dir.join(zone.file_name()), zone.file_text()).unwrap();
        conf.push_str(&format!(
            "zone:\n    name: \"{}\"\n    zonefile: \"{}\"\n",
            zone.origin,
            zone.file_name()
        ));
    }
    let path = dir.join("nsd.conf");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(conf.as_bytes()).unwrap();
    path
}
