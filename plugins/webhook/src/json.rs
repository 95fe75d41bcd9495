//! A streaming JSON writer: values go straight to an [`Out`], so a large
//! text body or attachment is never held whole in memory.

/// Where the bytes go.
pub trait Out {
    fn put(&mut self, bytes: &[u8]) -> Result<(), String>;
}

pub struct Json<'a> {
    out: &'a mut dyn Out,
    /// Per open container: whether a value was written in it yet.
    first: Vec<bool>,
    /// A key was just written: the next value needs no comma.
    after_key: bool,
}

impl<'a> Json<'a> {
    pub fn new(out: &'a mut dyn Out) -> Json<'a> {
        Json {
            out,
            first: Vec::new(),
            after_key: false,
        }
    }

    /// The separator before a value (or key).
    fn sep(&mut self) -> Result<(), String> {
        if self.after_key {
            self.after_key = false;
            return Ok(());
        }
        if let Some(first) = self.first.last_mut() {
            if !*first {
                self.out.put(b",")?;
            }
            *first = false;
        }
        Ok(())
    }

    pub fn raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.out.put(bytes)
    }

    pub fn begin_object(&mut self) -> Result<(), String> {
        self.sep()?;
        self.first.push(true);
        self.out.put(b"{")
    }

    pub fn end_object(&mut self) -> Result<(), String> {
        self.first.pop();
        self.out.put(b"}")
    }

    pub fn begin_array(&mut self) -> Result<(), String> {
        self.sep()?;
        self.first.push(true);
        self.out.put(b"[")
    }

    pub fn end_array(&mut self) -> Result<(), String> {
        self.first.pop();
        self.out.put(b"]")
    }

    pub fn key(&mut self, key: &str) -> Result<(), String> {
        self.sep()?;
        self.out.put(b"\"")?;
        self.string_bytes(key.as_bytes())?;
        self.out.put(b"\":")?;
        self.after_key = true;
        Ok(())
    }

    pub fn string(&mut self, s: &str) -> Result<(), String> {
        self.begin_string()?;
        self.string_bytes(s.as_bytes())?;
        self.end_string()
    }

    pub fn opt_string(&mut self, s: Option<&str>) -> Result<(), String> {
        match s {
            Some(s) => self.string(s),
            None => self.null(),
        }
    }

    pub fn strings(&mut self, list: &[String]) -> Result<(), String> {
        self.begin_array()?;
        for s in list {
            self.string(s)?;
        }
        self.end_array()
    }

    pub fn begin_string(&mut self) -> Result<(), String> {
        self.sep()?;
        self.out.put(b"\"")
    }

    pub fn end_string(&mut self) -> Result<(), String> {
        self.out.put(b"\"")
    }

    /// The inside of a string, from UTF-8 bytes that may end (and begin)
    /// inside a character: only ASCII is escaped, so chunks concatenate.
    pub fn string_bytes(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escape: Option<&[u8]> = match b {
                b'"' => Some(b"\\\""),
                b'\\' => Some(b"\\\\"),
                b'\n' => Some(b"\\n"),
                b'\r' => Some(b"\\r"),
                b'\t' => Some(b"\\t"),
                0..=0x1f | 0x7f => None,
                _ => continue,
            };
            self.out.put(&bytes[start..i])?;
            match escape {
                Some(e) => self.out.put(e)?,
                None => self.out.put(format!("\\u{b:04x}").as_bytes())?,
            }
            start = i + 1;
        }
        self.out.put(&bytes[start..])
    }

    pub fn number(&mut self, n: impl Into<u64>) -> Result<(), String> {
        self.sep()?;
        self.out.put(n.into().to_string().as_bytes())
    }

    pub fn bool(&mut self, b: bool) -> Result<(), String> {
        self.sep()?;
        self.out.put(if b { b"true" } else { b"false" })
    }

    pub fn null(&mut self) -> Result<(), String> {
        self.sep()?;
        self.out.put(b"null")
    }
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
