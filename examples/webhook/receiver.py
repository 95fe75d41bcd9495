#!/usr/bin/env python3
"""A receiver for wasmtp's `webhook` plugin, with Python's standard library
only: it checks the signature, and answers the SMTP client through its HTTP
status (docs/webhook.md).

    WEBHOOK_SECRET=s3cret python3 receiver.py 8025
    wasmtp -l 127.0.0.1:2525 -c webhook http://127.0.0.1:8025/inbound secret-env=WEBHOOK_SECRET

Every message is printed; a message to `nobody@...` is refused with the
application's own SMTP reply (the sender is told while connected).
"""

import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: How old a request may be, in seconds, before it is refused as a replay.
TOLERANCE = 300


def verify(secret: bytes, headers, body: bytes, now=None) -> bool:
    """True when `body` was signed with `secret` less than TOLERANCE
    seconds ago: `Wasmtp-Signature: v1=HEX` is HMAC-SHA256 of
    `TIMESTAMP.BODY`, TIMESTAMP being `Wasmtp-Timestamp`."""
    timestamp = headers.get("Wasmtp-Timestamp", "")
    signature = headers.get("Wasmtp-Signature", "")
    if not timestamp.isdigit():
        return False
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > TOLERANCE:
        return False
    expected = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    # Several signatures may be sent while a secret is rotated.
    offered = [s.strip()[3:] for s in signature.split(",") if s.strip().startswith("v1=")]
    return any(hmac.compare_digest(expected, s) for s in offered)


class Handler(BaseHTTPRequestHandler):
    secret = os.environ.get("WEBHOOK_SECRET", "").encode()

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if self.secret and not verify(self.secret, self.headers, body):
            # 401 is a 4xx: the sender is refused (550), not asked to retry.
            return self.answer(401, {"smtp": {"code": 550, "enhanced": "5.7.0",
                                               "message": "Bad signature"}})
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            # multipart/form-data: the raw message is in the `message` part.
            print(f"{self.headers['Wasmtp-Queue-Id']}: {length} bytes (multipart)")
            return self.answer(200, {})
        mail = json.loads(body)
        message = mail["message"]
        print(f"{mail['queue_id']}: from {mail['envelope']['mail_from']!r} "
              f"to {[r['address'] for r in mail['envelope']['recipients']]}: "
              f"{message.get('subject')!r}, {len(message.get('attachments', []))} attachment(s)")
        refused = {r["address"]: {"code": 550, "enhanced": "5.1.1", "message": "No such user here"}
                   for r in mail["envelope"]["recipients"]
                   if r["address"].lower().startswith("nobody@")}
        if refused and len(refused) == len(mail["envelope"]["recipients"]):
            return self.answer(422, {"smtp": next(iter(refused.values()))})
        # On LMTP each recipient gets its own answer.
        return self.answer(200, {"recipients": refused})

    def answer(self, status, document):
        payload = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8025
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
