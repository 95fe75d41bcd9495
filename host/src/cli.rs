//! The command line, familiar to aiosmtpd users:
//! `wasmtp [-l HOST:PORT] [-s SIZE] [-u] [-d] [-c PLUGIN [ARGS...]]`, or
//! `wasmtp --config FILE`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, Parser};

use crate::config::{self, Config, ConfigError, DEFAULT_SIZE, ListenerConfig, ListenerOptions};
use crate::plugin::host::Grants;
use crate::plugin::loaded::{FailurePolicy, Limits, Source};
use crate::plugin::runtime::RuntimeSettings;
use crate::plugin::{PluginSpec, builtin};

const DEFAULT_HOST: &str = "localhost";
const DEFAULT_PORT: u16 = 8025;

/// An SMTP server whose handlers are WebAssembly component plugins.
///
/// With no arguments it serves the Debugging plugin on localhost:8025, as
/// aiosmtpd does. Built-in plugins: sink, debugging [stdout|stderr],
/// mailbox MAILDIR, proxy HOST PORT, queue [STATE_DIR], greylist, ratelimit,
/// webhook URL, mailauth [spf=strict ...], dnsbl ZONE... [mode=tag]; or give
/// the path of a .wasm component.
#[derive(Debug, Parser)]
#[command(
    name = "wasmtp",
    version,
    about,
    max_term_width = 100,
    after_help = "For plugin authors: `wasmtp plugin inspect FILE`, `wasmtp plugin test FILE --transcript T` (see `wasmtp plugin --help`).\nFor operators: `wasmtp check --config FILE` (is this config deployable?)."
)]
pub struct Cli {
    /// Accepted for compatibility with aiosmtpd; wasmtp never changes its user.
    #[arg(short = 'n', long = "nosetuid")]
    pub nosetuid: bool,

    /// The plugin: a built-in name (sink, debugging, mailbox, proxy, queue, greylist, ratelimit, webhook, mailauth, dnsbl) or the path
    /// of a WebAssembly component. Arguments after it are the plugin's.
    #[arg(
        short = 'c',
        long = "class",
        value_name = "PLUGIN",
        default_value = "debugging"
    )]
    pub plugin: String,

    /// The largest message accepted, in bytes (RFC 1870 SIZE); 0 for no limit.
    #[arg(short = 's', long = "size", value_name = "SIZE")]
    pub size: Option<u64>,

    /// Enable the SMTPUTF8 extension (RFC 6531).
    #[arg(short = 'u', long = "smtputf8")]
    pub smtputf8: bool,

    /// More log output; repeat for more (-dd).
    #[arg(short = 'd', long = "debug", action = ArgAction::Count)]
    pub debug: u8,

    /// How log lines are written: `text`, or `json` (one object a line);
    /// overrides `[server] log_format`.
    #[arg(long = "log-format", value_name = "FORMAT", value_enum)]
    pub log_format: Option<crate::logging::LogFormat>,

    /// Where to listen. Without a port, 8025; with only `:PORT`, localhost.
    #[arg(short = 'l', long = "listen", value_name = "[HOST][:PORT]")]
    pub listen: Option<String>,

    /// The host name in the greeting and EHLO reply (default: this machine's).
    #[arg(long = "hostname", value_name = "NAME")]
    pub hostname: Option<String>,

    /// Seconds of client silence before the connection is closed.
    #[arg(short = 't', long = "timeout", value_name = "SECONDS")]
    pub timeout: Option<f64>,

    /// Offer STARTTLS with this certificate chain (PEM); needs --tlskey.
    #[arg(long = "tlscert", value_name = "FILE", requires = "tlskey")]
    pub tlscert: Option<PathBuf>,

    /// The private key (PEM) of --tlscert.
    #[arg(long = "tlskey", value_name = "FILE", requires = "tlscert")]
    pub tlskey: Option<PathBuf>,

    /// With --tlscert: do not require STARTTLS before other commands
    /// (by default only NOOP, EHLO, STARTTLS and QUIT are served before it).
    #[arg(long = "no-requiretls")]
    pub no_requiretls: bool,

    /// Speak TLS from the first byte (SMTPS) with this certificate chain
    /// (PEM); needs --smtpskey.
    #[arg(
        long = "smtpscert",
        value_name = "FILE",
        requires = "smtpskey",
        conflicts_with = "tlscert"
    )]
    pub smtpscert: Option<PathBuf>,

    /// The private key (PEM) of --smtpscert.
    #[arg(long = "smtpskey", value_name = "FILE", requires = "smtpscert")]
    pub smtpskey: Option<PathBuf>,

    /// Serve what this TOML file says instead (listeners, plugins, grants).
    #[arg(long = "config", value_name = "FILE", conflicts_with_all = ["plugin", "size", "smtputf8", "listen", "hostname", "timeout", "args", "tlscert", "smtpscert", "no_requiretls"])]
    pub config: Option<PathBuf>,

    /// Arguments for the plugin (aiosmtpd's CLASSARGS).
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
}

impl Cli {
    /// The config the command line describes.
    pub fn config(&self) -> Result<Config, ConfigError> {
        if let Some(path) = &self.config {
            return Config::load(path);
        }
        let err = |key: &str, message: String| ConfigError {
            file: None,
            position: None,
            key: key.to_owned(),
            message,
        };
        let address = listen_address(self.listen.as_deref()).map_err(|m| err("--listen", m))?;
        // `-c queue [STATE_DIR]`: the argument is the store's, not the
        // plugin's (which takes none).
        let mut store = crate::store::StoreSettings::default();
        let mut args = self.args.clone();
        if builtin::find(&self.plugin).is_some_and(|b| b.name == "queue")
            && !self.plugin.contains('/')
        {
            match args.as_slice() {
                [] => {}
                [dir] => {
                    store.backend = crate::store::BackendSettings::Sqlite {
                        dir: std::path::absolute(dir).unwrap_or_else(|_| PathBuf::from(dir)),
                    };
                    args.clear();
                }
                _ => {
                    return Err(err(
                        "--class",
                        "queue takes one argument, the state directory".into(),
                    ));
                }
            }
        }
        let plugin = match builtin::find(&self.plugin) {
            Some(b) if !self.plugin.contains('/') => {
                config::builtin_spec(b.name, args, Path::new(".")).map_err(|m| err("--class", m))?
            }
            _ => {
                let path = PathBuf::from(&self.plugin);
                if !path.is_file() {
                    let builtins: Vec<&str> = builtin::BUILTINS.iter().map(|b| b.name).collect();
                    return Err(err(
                        "--class",
                        format!(
                            "`{}` is neither a built-in plugin ({}) nor a file",
                            self.plugin,
                            builtins.join(", ")
                        ),
                    ));
                }
                let name = path
                    .file_stem()
                    .map_or_else(|| self.plugin.clone(), |s| s.to_string_lossy().into_owned());
                PluginSpec {
                    name,
                    source: Source::File(path),
                    args: self.args.clone(),
                    grants: Grants::default(),
                    limits: Limits::default(),
                    on_failure: FailurePolicy::default(),
                    reuse: None,
                }
            }
        };
        let hostname = match &self.hostname {
            Some(h) if h.is_empty() || h.contains(char::is_whitespace) => {
                return Err(err("--hostname", format!("{h:?} is not a host name")));
            }
            Some(h) => h.clone(),
            None => config::system_hostname(),
        };
        let timeout = match self.timeout {
            Some(t) if !(t.is_finite() && t > 0.0) => {
                return Err(err(
                    "--timeout",
                    format!("{t} is not a positive number of seconds"),
                ));
            }
            Some(t) => Duration::from_secs_f64(t),
            None => Duration::from_secs_f64(config::DEFAULT_TIMEOUT_SECS),
        };
        let mut options = ListenerOptions::default();
        let certificate = match (&self.tlscert, &self.tlskey, &self.smtpscert, &self.smtpskey) {
            (Some(cert), Some(key), _, _) => Some(("--tlscert", cert, key)),
            (_, _, Some(cert), Some(key)) => Some(("--smtpscert", cert, key)),
            _ => None,
        };
        if let Some((flag, cert, key)) = certificate {
            let config =
                crate::tls::server_config(cert, key).map_err(|e| err(flag, e.to_string()))?;
            options.tls = Some(crate::tls::Tls {
                config,
                handshake_timeout: crate::tls::DEFAULT_HANDSHAKE_TIMEOUT,
            });
            options.implicit_tls = flag == "--smtpscert";
            // aiosmtpd's CLI: require_starttls unless --no-requiretls.
            options.require_starttls = !options.implicit_tls && !self.no_requiretls;
        }
        Ok(Config {
            file: None,
            runtime: RuntimeSettings::default(),
            dns: Default::default(),
            mail_auth: Default::default(),
            http: Default::default(),
            watch: false,
            listeners: vec![ListenerConfig {
                name: "default".into(),
                address,
                tenant: None,
                hostname,
                size: config::size_limit(self.size.unwrap_or(DEFAULT_SIZE)),
                smtputf8: self.smtputf8,
                timeout,
                plugins: vec![plugin],
                tenants: Vec::new(),
                options,
            }],
            metrics: None,
            log_format: None,
            shutdown_grace: None,
            store,
        })
    }
}

/// aiosmtpd's `-l [HOST][:PORT]`.
fn listen_address(listen: Option<&str>) -> Result<String, String> {
    let listen = listen.unwrap_or("");
    let (host, port) = if let Some(v6) = listen.strip_prefix('[') {
        let (host, rest) = v6
            .split_once(']')
            .ok_or_else(|| format!("`{listen}`: missing `]`"))?;
        (format!("[{host}]"), rest.strip_prefix(':').unwrap_or(rest))
    } else {
        match listen.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), port),
            None => (listen.to_owned(), ""),
        }
    };
    let host = if host.is_empty() {
        DEFAULT_HOST.to_owned()
    } else {
        host
    };
    let port = if port.is_empty() {
        DEFAULT_PORT
    } else {
        port.parse()
            .map_err(|_| format!("`{port}` is not a port number (0-65535)"))?
    };
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(listen_address(None).unwrap(), "localhost:8025");
        assert_eq!(listen_address(Some(":2525")).unwrap(), "localhost:2525");
        assert_eq!(listen_address(Some("0.0.0.0")).unwrap(), "0.0.0.0:8025");
        assert_eq!(listen_address(Some("127.0.0.1:0")).unwrap(), "127.0.0.1:0");
        assert_eq!(listen_address(Some("[::1]:25")).unwrap(), "[::1]:25");
        assert!(listen_address(Some("host:port")).is_err());
    }

    #[test]
    fn plugin_args_follow_the_plugin() {
        let cli =
            Cli::try_parse_from(["wasmtp", "-n", "-l", ":0", "-c", "mailbox", "/tmp/md"]).unwrap();
        assert_eq!(cli.plugin, "mailbox");
        assert_eq!(cli.args, ["/tmp/md"]);
        assert!(Cli::try_parse_from(["wasmtp", "--config", "x.toml", "-c", "sink"]).is_err());
    }
}
