//! `wasmtp:smtp/notes`: a small key → value map per transaction, shared by
//! the plugins of a chain and tenants' chains (Haraka's
//! `transaction.notes`). Bounded, so a plugin can't make the host hold much
//! for it; a call past a bound stores nothing and says why.

use crate::plugin::bindings::wasmtp::smtp::notes::{self, Error};
use crate::plugin::host::HostState;

/// The longest key, in bytes.
pub const MAX_KEY: usize = 128;
/// The longest value, in bytes.
pub const MAX_VALUE: usize = 16 << 10;
/// The most notes in one transaction.
pub const MAX_NOTES: usize = 128;
/// The most bytes of keys and values in one transaction.
pub const MAX_BYTES: usize = 64 << 10;

/// One transaction's notes, in the order their keys were first set.
#[derive(Clone, Debug, Default)]
pub struct Notes {
    entries: Vec<(String, String)>,
    bytes: usize,
}

impl Notes {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, key: String, value: String) -> Result<(), Error> {
        check_key(&key)?;
        if value.len() > MAX_VALUE {
            return Err(Error::Invalid(format!(
                "the value is {} bytes; at most {MAX_VALUE}",
                value.len()
            )));
        }
        let existing = self.entries.iter().position(|(k, _)| *k == key);
        let freed = existing.map_or(0, |i| self.entries[i].0.len() + self.entries[i].1.len());
        let bytes = self.bytes - freed + key.len() + value.len();
        if bytes > MAX_BYTES {
            return Err(Error::Budget(format!(
                "the transaction's notes would hold {bytes} bytes; at most {MAX_BYTES}"
            )));
        }
        match existing {
            Some(i) => self.entries[i].1 = value,
            None if self.entries.len() >= MAX_NOTES => {
                return Err(Error::Budget(format!(
                    "the transaction already has {MAX_NOTES} notes"
                )));
            }
            None => self.entries.push((key, value)),
        }
        self.bytes = bytes;
        Ok(())
    }

    pub fn remove(&mut self, key: &str) -> bool {
        match self.entries.iter().position(|(k, _)| k == key) {
            Some(i) => {
                let (k, v) = self.entries.remove(i);
                self.bytes -= k.len() + v.len();
                true
            }
            None => false,
        }
    }

    pub fn keys(&self) -> Vec<String> {
        self.entries.iter().map(|(k, _)| k.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(Error::Invalid(format!(
            "a key is 1 to {MAX_KEY} bytes; this one is {}",
            key.len()
        )));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::Invalid(
            "a key is printable ASCII without spaces".into(),
        ));
    }
    Ok(())
}

impl notes::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        let shared = self.capabilities.shared.as_ref()?;
        shared.notes().get(&key).map(str::to_owned)
    }

    fn set(&mut self, key: String, value: String) -> Result<(), Error> {
        let Some(shared) = &self.capabilities.shared else {
            return Err(Error::Unavailable);
        };
        shared.notes().set(key, value)
    }

    fn remove(&mut self, key: String) -> bool {
        self.capabilities
            .shared
            .as_ref()
            .is_some_and(|s| s.notes().remove(&key))
    }

    fn keys(&mut self) -> Vec<String> {
        self.capabilities
            .shared
            .as_ref()
            .map_or_else(Vec::new, |s| s.notes().keys())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_refuse_and_store_nothing() {
        let mut n = Notes::default();
        n.set("score".into(), "7.5".into()).unwrap();
        assert!(matches!(
            n.set(String::new(), "x".into()),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            n.set("a b".into(), "x".into()),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            n.set("k\n".into(), "x".into()),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            n.set("x".repeat(MAX_KEY + 1), "x".into()),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            n.set("big".into(), "x".repeat(MAX_VALUE + 1)),
            Err(Error::Invalid(_))
        ));
        assert_eq!(n.keys(), ["score"]);
        // Total bytes: four values of 16 KiB don't fit with the keys.
        for i in 0..3 {
            n.set(format!("v{i}"), "x".repeat(MAX_VALUE)).unwrap();
        }
        assert!(matches!(
            n.set("v3".into(), "x".repeat(MAX_VALUE)),
            Err(Error::Budget(_))
        ));
        assert_eq!(n.len(), 4);
        // Replacing a value frees its bytes first.
        n.set("v0".into(), "small".into()).unwrap();
        n.set("v3".into(), "x".repeat(MAX_VALUE)).unwrap();
        assert!(n.remove("v3"));
        assert!(!n.remove("v3"));
        // Count.
        let mut n = Notes::default();
        for i in 0..MAX_NOTES {
            n.set(format!("k{i}"), String::new()).unwrap();
        }
        assert!(matches!(
            n.set("one-more".into(), String::new()),
            Err(Error::Budget(_))
        ));
        n.set("k0".into(), "replaced".into()).unwrap();
        assert_eq!(n.get("k0"), Some("replaced"));
        assert_eq!(n.keys().first().map(String::as_str), Some("k0"));
    }
}
