#!/usr/bin/env python3
"""An example consumer of wasmtp's durable queue: delivers each queued
message into a Maildir, through the `wasmtp queue` consumer protocol.

    consumer.py --wasmtp /usr/bin/wasmtp --config /etc/wasmtp/wasmtp.toml \
        --maildir /var/mail/inbox [--once] [--lease 60] [--wait 30] [--name NAME]

The protocol (README, "The queue: consumers"):
1. `wasmtp queue claim --consumer NAME --lease SECONDS` prints the next due
   message as one JSON object (id, attempt, mail_from, rcpt_to, facts,
   message in base64) and leases it to NAME, or prints nothing when no
   message is due (with `--wait SECONDS`, once none became due in that
   time: woken at once by a new message on PostgreSQL, so no polling);
2. deliver it;
3. `wasmtp queue ack ID ATTEMPT` once delivered (the message is removed), or
   `wasmtp queue release ID ATTEMPT --error TEXT` if not (it is offered again
   after a back-off, and dead-lettered after the last attempt).
A consumer that dies holding a lease loses it when the lease ends: the
message goes to the next consumer that claims. A message may so be delivered
twice (a consumer that delivered and died before its ack), never lost.
"""

import argparse
import base64
import json
import mailbox
import subprocess
import sys


def queue(args, *command):
    store = ["--config", args.config] if args.config else ["--state-dir", args.state_dir]
    return subprocess.run(
        [args.wasmtp, "queue", *command, *store],
        check=True, capture_output=True, text=True,
    ).stdout


def deliver(maildir, claimed):
    message = base64.b64decode(claimed["message"])
    headers = (
        f"X-Queue-Id: {claimed['id']}\r\n"
        f"X-MailFrom: {claimed['mail_from']}\r\n"
        f"X-RcptTo: {', '.join(claimed['rcpt_to'])}\r\n"
    ).encode()
    maildir.add(headers + message)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--wasmtp", default="wasmtp")
    p.add_argument("--config")
    p.add_argument("--state-dir")
    p.add_argument("--maildir", required=True)
    p.add_argument("--name", default="maildir-consumer")
    p.add_argument("--lease", type=float, default=60)
    p.add_argument("--wait", type=float, default=30, help="seconds a claim waits for a message")
    p.add_argument("--once", action="store_true", help="stop when no message is due")
    args = p.parse_args()
    box = mailbox.Maildir(args.maildir, create=True)
    while True:
        wait = "0" if args.once else str(args.wait)
        out = queue(args, "claim", "--consumer", args.name, "--lease", str(args.lease), "--wait", wait)
        if not out.strip():
            if args.once:
                return 0
            continue
        claimed = json.loads(out)
        attempt = str(claimed["attempt"])
        try:
            deliver(box, claimed)
        except Exception as e:  # noqa: BLE001 - any failure is a retry
            queue(args, "release", claimed["id"], attempt, "--error", str(e)[:500])
            continue
        queue(args, "ack", claimed["id"], attempt)
        print(f"delivered {claimed['id']}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
