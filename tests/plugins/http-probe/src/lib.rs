//! http-probe: a test plugin for `wasi:http/outgoing-handler`. `NOOP URL`
//! makes a GET of URL and answers `250` with one line per request made:
//! `status=200 bytes=5`, `error=HttpRequestDenied`, or, when the body is
//! cut, `status=200 bytes=N body-error=...`. `NOOP follow URL` follows
//! redirects (up to 3), as an ordinary client does: each hop is a new
//! request the host checks against the grant. `NOOP parallel N URL` starts
//! N requests before waiting for any and counts the outcomes.

wit_bindgen::generate!({
    inline: r#"
        package wasmtp:http-probe;
        world probe {
            include wasmtp:smtp/plugin@0.1.0;
            export wasmtp:smtp/noop@0.1.0;
        }
    "#,
    path: "../../../wit",
    generate_all,
});

use exports::wasmtp::smtp::noop::Guest;
use wasip2::http::outgoing_handler::handle;
use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;
use wasmtp::smtp::types::{Envelope, Reply, Session};

struct Probe;

/// One GET: (the line to report, a Location to follow).
fn get(url: &str) -> (String, Option<String>) {
    let (https, rest) = match url.split_once("://") {
        Some(("https", rest)) => (true, rest),
        Some(("http", rest)) => (false, rest),
        _ => return (format!("bad-url={url}"), None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_method(&Method::Get);
    let _ = request.set_scheme(Some(&if https { Scheme::Https } else { Scheme::Http }));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    let body = request.body().unwrap();
    let future = match handle(request, None) {
        Ok(f) => f,
        Err(e) => return (format!("error={e:?}"), None),
    };
    OutgoingBody::finish(body, None).ok();
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(e))) => return (format!("error={e:?}"), None),
        _ => return ("error=no-response".into(), None),
    };
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let incoming = response.consume().unwrap();
    let stream = incoming.stream().unwrap();
    let mut bytes = 0usize;
    let mut cut = None;
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => bytes += chunk.len(),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                cut = Some(match wasip2::http::types::http_error_code(&e) {
                    Some(code) => format!("{code:?}"),
                    // wasmtime-wasi-http 48 gives body errors as text only.
                    None => e.to_debug_string().lines().next().unwrap_or("").to_owned(),
                });
                break;
            }
        }
    }
    let mut line = format!("status={status} bytes={bytes}");
    if let Some(e) = cut {
        line.push_str(&format!(" body-error={e}"));
    }
    (line, location.filter(|_| (300..400).contains(&status)))
}

/// N requests started before any is waited for: `ok=8 ConnectionLimitReached=1`.
fn parallel(n: usize, url: &str) -> String {
    let (authority, path) = url
        .split_once("://")
        .map(|(_, rest)| rest.split_at(rest.find('/').unwrap_or(rest.len())))
        .unwrap_or(("", ""));
    let mut futures = Vec::new();
    let mut refused = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..n {
        let request = OutgoingRequest::new(Fields::new());
        let _ = request.set_scheme(Some(&Scheme::Http));
        let _ = request.set_authority(Some(authority));
        let _ = request.set_path_with_query(Some(if path.is_empty() { "/" } else { path }));
        let body = request.body().unwrap();
        match handle(request, None) {
            Ok(f) => futures.push(f),
            Err(e) => *refused.entry(format!("{e:?}")).or_default() += 1,
        }
        OutgoingBody::finish(body, None).ok();
    }
    let mut ok = 0;
    for f in futures {
        f.subscribe().block();
        match f.get() {
            Some(Ok(Ok(_))) => ok += 1,
            Some(Ok(Err(e))) => *refused.entry(format!("{e:?}")).or_default() += 1,
            _ => *refused.entry("none".into()).or_default() += 1,
        }
    }
    let mut line = format!("ok={ok}");
    for (e, n) in refused {
        line.push_str(&format!(" {}={n}", e.replace("ErrorCode::", "")));
    }
    line
}

impl Guest for Probe {
    fn handle_noop(_: Session, _: Envelope, arg: String) -> Option<Reply> {
        if let Some(rest) = arg.strip_prefix("parallel ") {
            let (n, url) = rest.split_once(' ').unwrap_or(("1", rest));
            return Some(Reply {
                code: 250,
                enhanced: None,
                lines: vec![parallel(n.parse().unwrap_or(1), url.trim())],
            });
        }
        let (follow, mut url) = match arg.strip_prefix("follow ") {
            Some(url) => (true, url.trim().to_owned()),
            None => (false, arg.trim().to_owned()),
        };
        let mut lines = Vec::new();
        for _ in 0..4 {
            let (line, location) = get(&url);
            // Keep lines short and free of control characters.
            let line = line.replace("ErrorCode::", "");
            lines.push(line.chars().filter(|c| !c.is_control()).take(300).collect());
            match location {
                Some(next) if follow => url = next,
                _ => break,
            }
        }
        Some(Reply {
            code: 250,
            enhanced: None,
            lines,
        })
    }
}

export!(Probe);
