//! One POST through `wasi:http/outgoing-handler`, the body written as it
//! is generated. The host checks the URL against the plugin's grant and
//! bounds the wait by the hook's deadline; every failure comes back here
//! as an error value.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

use crate::json::Out;

/// The most of the application's answer that is read.
const MAX_ANSWER: usize = 64 << 10;
/// The most a redirect is followed (307 and 308 only: they keep the POST;
/// the host refuses any target outside the grant).
const MAX_REDIRECTS: usize = 3;

#[derive(Clone, Debug)]
pub struct Url {
    https: bool,
    authority: String,
    path_with_query: String,
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, String> {
        let (https, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("`{text}` is not an https:// or http:// URL"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("`{text}`: no host, or a user name"));
        }
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(Url {
            https,
            authority: authority.to_owned(),
            path_with_query: path,
        })
    }

    /// A `Location` resolved against this URL.
    fn join(&self, location: &str) -> Result<Url, String> {
        if location.starts_with("http://") || location.starts_with("https://") {
            Url::parse(location)
        } else if location.starts_with('/') {
            Ok(Url {
                path_with_query: location.to_owned(),
                ..self.clone()
            })
        } else {
            Err(format!("a redirect to `{location}`"))
        }
    }
}

/// POST to `url` with `headers` and the body `write` produces (it is
/// called once per attempt); the status and up to 64 KiB of the answer.
pub fn post(
    url: &Url,
    headers: &[(String, String)],
    write: &mut dyn FnMut(&mut dyn Out) -> Result<(), String>,
) -> Result<(u16, Vec<u8>), String> {
    let mut url = url.clone();
    for _ in 0..=MAX_REDIRECTS {
        let (status, location, body) = attempt(&url, headers, write)?;
        match (status, location) {
            (307 | 308, Some(location)) => url = url.join(&location)?,
            _ => return Ok((status, body)),
        }
    }
    Err("too many redirects".into())
}

fn attempt(
    url: &Url,
    headers: &[(String, String)],
    write: &mut dyn FnMut(&mut dyn Out) -> Result<(), String>,
) -> Result<(u16, Option<String>, Vec<u8>), String> {
    let fields: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    let fields = Fields::from_list(&fields).map_err(|e| format!("a request header: {e:?}"))?;
    let request = OutgoingRequest::new(fields);
    let _ = request.set_method(&Method::Post);
    let _ = request.set_scheme(Some(&if url.https {
        Scheme::Https
    } else {
        Scheme::Http
    }));
    let _ = request.set_authority(Some(&url.authority));
    let _ = request.set_path_with_query(Some(&url.path_with_query));
    let body = request.body().map_err(|()| "no request body".to_owned())?;
    let stream = body
        .write()
        .map_err(|()| "no request body stream".to_owned())?;
    // Sent first, so that the host reads the body as it is written.
    let future = outgoing_handler::handle(request, None).map_err(|e| describe(&e))?;
    let mut writer = Writer {
        stream: &stream,
        buf: Vec::with_capacity(BUF),
    };
    let written = write(&mut writer).and_then(|()| writer.flush());
    drop(stream);
    let finished = OutgoingBody::finish(body, None).map_err(|e| describe(&e));
    // The response may say why the body could not be written (a refusal).
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(describe(&e)),
        Some(Err(())) | None => return Err("no response".into()),
    };
    written?;
    finished?;
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let mut answer = Vec::new();
    if let Ok(incoming) = response.consume()
        && let Ok(stream) = incoming.stream()
    {
        loop {
            match stream.blocking_read(16 << 10) {
                Ok(chunk) => {
                    let room = MAX_ANSWER - answer.len();
                    answer.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if answer.len() >= MAX_ANSWER {
                        break;
                    }
                }
                Err(StreamError::Closed) => break,
                // A body cut short (the size bound, the deadline): the
                // status stands, the answer is what arrived.
                Err(StreamError::LastOperationFailed(_)) => break,
            }
        }
    }
    Ok((status, location, answer))
}

fn describe(e: &ErrorCode) -> String {
    format!("{e:?}")
}

const BUF: usize = 64 << 10;

/// The request body's stream, written in the sizes
/// `blocking-write-and-flush` takes.
struct Writer<'a> {
    stream: &'a wasip2::io::streams::OutputStream,
    buf: Vec<u8>,
}

impl Writer<'_> {
    fn flush(&mut self) -> Result<(), String> {
        for piece in self.buf.chunks(4096) {
            self.stream
                .blocking_write_and_flush(piece)
                .map_err(|e| match e {
                    StreamError::Closed => "the connection closed while sending".to_owned(),
                    StreamError::LastOperationFailed(e) => {
                        match wasip2::http::types::http_error_code(&e) {
                            Some(code) => describe(&code),
                            None => e.to_debug_string(),
                        }
                    }
                })?;
        }
        self.buf.clear();
        Ok(())
    }
}

impl Out for Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= BUF {
            self.flush()?;
        }
        Ok(())
    }
}
