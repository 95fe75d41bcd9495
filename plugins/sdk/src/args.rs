//! The plugin's arguments: what aiosmtpd's `from_cli(parser, *args)` gets.

use std::fmt::Display;
use std::str::FromStr;

/// The positional arguments given after `-c PLUGIN` (or in the config's
/// `args = [...]`), consumed front to back. Every error is one sentence, for
/// `init` to return as is: the server prints it and exits with status 2, as
/// argparse's `parser.error` does.
///
/// ```ignore
/// fn init(&mut self, mut args: Args) -> Result<(), String> {
///     self.host = args.required("the relay's host name")?;
///     self.port = args.parse_or("the relay's port", 25)?;
///     args.finish()
/// }
/// ```
#[derive(Clone, Debug, Default)]
pub struct Args {
    args: std::collections::VecDeque<String>,
}

impl Args {
    pub fn new(args: Vec<String>) -> Args {
        Args { args: args.into() }
    }

    /// The arguments not consumed yet.
    pub fn len(&self) -> usize {
        self.args.len()
    }

    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }

    /// The next argument, if any.
    pub fn next(&mut self) -> Option<String> {
        self.args.pop_front()
    }

    /// The next argument; `Err("missing argument: WHAT")` when there is none.
    pub fn required(&mut self, what: &str) -> Result<String, String> {
        self.next()
            .ok_or_else(|| format!("missing argument: {what}"))
    }

    /// The next argument parsed as `T`; an error names `what` and the value.
    pub fn parse<T: FromStr>(&mut self, what: &str) -> Result<T, String>
    where
        T::Err: Display,
    {
        let value = self.required(what)?;
        value
            .parse()
            .map_err(|e| format!("{what}: `{value}` is not valid: {e}"))
    }

    /// The next argument parsed as `T`, or `default` when there is none.
    pub fn parse_or<T: FromStr>(&mut self, what: &str, default: T) -> Result<T, String>
    where
        T::Err: Display,
    {
        if self.is_empty() {
            Ok(default)
        } else {
            self.parse(what)
        }
    }

    /// Removes `--name` wherever it is; true if it was there.
    pub fn flag(&mut self, name: &str) -> bool {
        let before = self.args.len();
        self.args.retain(|a| a != name);
        self.args.len() != before
    }

    /// Removes `--name VALUE` or `--name=VALUE` wherever it is, and returns
    /// the value (the last one, when given twice).
    pub fn option(&mut self, name: &str) -> Result<Option<String>, String> {
        let mut found = None;
        let mut i = 0;
        while i < self.args.len() {
            if self.args[i] == name {
                self.args.remove(i);
                found = Some(
                    self.args
                        .remove(i)
                        .ok_or_else(|| format!("{name} needs a value"))?,
                );
            } else if let Some(value) = self.args[i]
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix('='))
            {
                found = Some(value.to_owned());
                self.args.remove(i);
            } else {
                i += 1;
            }
        }
        Ok(found)
    }

    /// Removes `name=VALUE` wherever it is (Stalwart-style settings:
    /// `spf=strict`) and returns VALUE, the last one when given twice.
    pub fn setting(&mut self, name: &str) -> Option<String> {
        let prefix = format!("{name}=");
        let mut found = None;
        self.args.retain(|a| match a.strip_prefix(&prefix) {
            Some(value) => {
                found = Some(value.to_owned());
                false
            }
            None => true,
        });
        found
    }

    /// [`setting`](Args::setting) `name`, which must be one of `choices`;
    /// `default` when it is not given.
    pub fn choice(
        &mut self,
        name: &str,
        choices: &[&'static str],
        default: &'static str,
    ) -> Result<&'static str, String> {
        let Some(value) = self.setting(name) else {
            return Ok(default);
        };
        choices
            .iter()
            .find(|c| c.eq_ignore_ascii_case(&value))
            .copied()
            .ok_or_else(|| format!("{name}={value}: {name} is one of {}", choices.join(", ")))
    }

    /// Every argument not consumed yet.
    pub fn rest(self) -> Vec<String> {
        self.args.into()
    }

    /// `Ok` if every argument was consumed; else names the first extra one.
    pub fn finish(self) -> Result<(), String> {
        match self.args.front() {
            None => Ok(()),
            Some(extra) => Err(format!(
                "unexpected argument `{extra}` ({} too many)",
                self.args.len()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::new(list.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn positional_and_options() {
        let mut a = args(&[
            "relay.example",
            "--tls",
            "2525",
            "--timeout=5",
            "--name",
            "x",
        ]);
        assert!(a.flag("--tls"));
        assert_eq!(a.option("--timeout").unwrap().as_deref(), Some("5"));
        assert_eq!(a.option("--name").unwrap().as_deref(), Some("x"));
        assert_eq!(a.required("host").unwrap(), "relay.example");
        assert_eq!(a.parse::<u16>("port").unwrap(), 2525);
        assert_eq!(a.parse_or::<u16>("port", 25).unwrap(), 25);
        assert!(a.finish().is_ok());
    }

    #[test]
    fn errors_are_sentences() {
        assert_eq!(
            args(&[]).required("the Maildir").unwrap_err(),
            "missing argument: the Maildir"
        );
        assert_eq!(
            args(&["x"]).parse::<u16>("port").unwrap_err(),
            "port: `x` is not valid: invalid digit found in string"
        );
        assert_eq!(
            args(&["a", "b"]).finish().unwrap_err(),
            "unexpected argument `a` (2 too many)"
        );
        assert!(args(&["--name"]).option("--name").is_err());
    }

    #[test]
    fn settings_by_name_anywhere() {
        let mut a = args(&["spf=strict", "zen.example", "dkim=off", "spf=Relaxed"]);
        let modes = ["relaxed", "strict", "off"];
        assert_eq!(a.choice("spf", &modes, "off").unwrap(), "relaxed");
        assert_eq!(a.choice("dmarc", &modes, "relaxed").unwrap(), "relaxed");
        assert_eq!(a.setting("dkim").as_deref(), Some("off"));
        assert_eq!(a.setting("dkim"), None);
        assert_eq!(a.rest(), ["zen.example"]);
        assert_eq!(
            args(&["spf=loose"])
                .choice("spf", &modes, "relaxed")
                .unwrap_err(),
            "spf=loose: spf is one of relaxed, strict, off"
        );
    }
}
