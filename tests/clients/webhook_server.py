"""The HTTP server of tests/webhook.rs and tests/http.rs, on loopback:
records every request (whether its signature verifies, with the example
receiver's own `verify`, and what docs/webhook.schema.json finds wrong
with a JSON body) and answers by path:

  .../ok          200, empty JSON object
  .../reject      422 with its own SMTP reply (550 5.7.1)
  .../forbidden   403, no reply of its own
  .../fail        500
  .../hang        reads the request, then answers nothing for 60 s
  .../per-rcpt    200 with one refusal per recipient named nobody@
  .../big         200 with a 2 MiB body
  .../redirect-out  302 to the same server by its IP literal
  .../redirect-in   307 to .../ok on the same host
  anything else   200 `hello`

usage: webhook_server.py RECORD_DIR SECRET [CERT KEY]; prints `listening on PORT`.
"""

import json
import os
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples", "webhook"))
from receiver import verify  # noqa: E402

RECORD, SECRET = sys.argv[1], sys.argv[2].encode()

try:
    import jsonschema

    with open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "webhook.schema.json")) as f:
        VALIDATOR = jsonschema.Draft202012Validator(json.load(f))
except ImportError:  # tests/requirements.txt installs it
    VALIDATOR = None


def schema_errors(headers, body):
    """What docs/webhook.schema.json finds wrong with a JSON body."""
    if VALIDATOR is None:
        return ["jsonschema is not installed"]
    if headers.get("Content-Type", "").startswith("application/json") and body:
        try:
            document = json.loads(body)
        except ValueError as e:
            return [f"not JSON: {e}"]
        return [f"{list(e.absolute_path)}: {e.message}" for e in VALIDATOR.iter_errors(document)]
    return []
counter = [0]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def record(self, body):
        counter[0] += 1
        n = counter[0]
        with open(os.path.join(RECORD, f"{n}.body"), "wb") as f:
            f.write(body)
        meta = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "signature_ok": verify(SECRET, self.headers, body),
        }
        if self.command == "POST":
            meta["schema_errors"] = schema_errors(self.headers, body)
        tmp = os.path.join(RECORD, f"{n}.tmp")
        with open(tmp, "w") as f:
            json.dump(meta, f)
        os.rename(tmp, os.path.join(RECORD, f"{n}.json"))

    def send(self, status, body=b"", ctype="application/json", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self):
        length = int(self.headers.get("Content-Length", "0") or 0)
        body = self.rfile.read(length) if length else b""
        self.record(body)
        path = self.path.split("?")[0]
        if path.endswith("/ok"):
            self.send(200, b"{}")
        elif path.endswith("/reject"):
            self.send(422, json.dumps({"smtp": {"code": 550, "enhanced": "5.7.1",
                                                "message": "No such mailbox here"}}).encode())
        elif path.endswith("/forbidden"):
            self.send(403, b"forbidden", "text/plain")
        elif path.endswith("/fail"):
            self.send(500, b"oops", "text/plain")
        elif path.endswith("/hang"):
            time.sleep(60)
        elif path.endswith("/per-rcpt"):
            mail = json.loads(body)
            refused = {r["address"]: {"code": 550, "enhanced": "5.1.1", "message": "No such user"}
                       for r in mail["envelope"]["recipients"] if r["address"].startswith("nobody@")}
            self.send(200, json.dumps({"recipients": refused}).encode())
        elif path.endswith("/big"):
            self.send(200, b"x" * (2 << 20), "text/plain")
        elif path.endswith("/redirect-out"):
            port = self.server.server_address[1]
            self.send(302, extra=[("Location", f"{SCHEME}://127.0.0.1:{port}/inbound/ok")])
        elif path.endswith("/redirect-in"):
            target = f"{SCHEME}://{self.headers['Host']}{path[: -len('redirect-in')]}ok"
            self.send(307, extra=[("Location", target)])
        else:
            self.send(200, b"hello", "text/plain")

    do_GET = do_POST = do_PUT = handle_any


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
SCHEME = "http"
if len(sys.argv) > 4:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[3], sys.argv[4])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    SCHEME = "https"
print(f"listening on {server.server_address[1]}", flush=True)
server.serve_forever()
