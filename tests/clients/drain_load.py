#!/usr/bin/env python3
"""Keep a server busy with many smtplib clients, each sending message after
message over its connection, the content paced in chunks so that at any
moment many transactions are in DATA; until the server is gone (a refused
connection) or the time limit passes. Then print what happened to every
message, as JSON, for tests/drain.rs to hold against the Maildir.

Usage: drain_load.py HOST PORT [--clients N] [--limit SECONDS]

Output (stdout, one JSON object):

    {"messages": [{"id": "<...>", "outcome": "250" | "4xx:421" | "closed" | "5xx:554" | "error:...",
                   "data_start": UNIX_TIME or null, "replied": UNIX_TIME or null}, ...],
     "greeting_refusals": N}

A message's outcome is the first non-2xx/3xx reply of its transaction, or
the final reply to its content; "closed" when the connection closed (or was
reset) before a reply.
"""

import argparse
import json
import smtplib
import socket
import threading
import time

CHUNKS = 5
CHUNK_PAUSE = 0.03


def message(msgid):
    body = "".join(f"line {i} of a paced message\r\n" for i in range(40))
    return (
        "From: <load@example.com>\r\n"
        "To: <inbox@example.com>\r\n"
        f"Subject: drain {msgid}\r\n"
        f"Message-ID: {msgid}\r\n"
        "\r\n" + body
    ).encode()


class Load:
    def __init__(self, host, port, limit):
        self.host, self.port = host, port
        self.deadline = time.time() + limit
        self.lock = threading.Lock()
        self.messages = []
        self.greeting_refusals = 0
        self.counter = 0

    def next_id(self, client):
        with self.lock:
            self.counter += 1
            return f"<{self.counter}.c{client}.drain@example.com>"

    def record(self, entry):
        with self.lock:
            self.messages.append(entry)

    def client(self, number):
        while time.time() < self.deadline:
            try:
                smtp = smtplib.SMTP(self.host, self.port, timeout=30)
            except smtplib.SMTPConnectError as e:
                with self.lock:
                    self.greeting_refusals += 1
                time.sleep(0.02)
                continue
            except (ConnectionRefusedError, ConnectionResetError):
                return  # the server is gone
            except (smtplib.SMTPServerDisconnected, OSError):
                time.sleep(0.02)
                continue
            try:
                self.session(smtp, number)
            finally:
                smtp.close()

    def session(self, smtp, number):
        try:
            code, _ = smtp.ehlo("load.example")
        except (smtplib.SMTPServerDisconnected, OSError):
            return
        if code != 250:
            return
        for _ in range(5):
            if time.time() >= self.deadline:
                return
            msgid = self.next_id(number)
            entry = {"id": msgid, "outcome": None, "data_start": None, "replied": None}
            self.record(entry)
            try:
                outcome = self.transaction(smtp, msgid, entry)
            except (smtplib.SMTPServerDisconnected, OSError):
                outcome = "closed"
            entry["outcome"] = outcome
            if outcome != "250":
                return
        try:
            smtp.quit()
        except (smtplib.SMTPServerDisconnected, OSError):
            pass

    def transaction(self, smtp, msgid, entry):
        for command in ("MAIL FROM:<load@example.com>", "RCPT TO:<inbox@example.com>", "DATA"):
            code, _ = smtp.docmd(command)
            if code >= 400:
                return classify(code)
        entry["data_start"] = time.time()
        data = message(msgid)
        step = len(data) // CHUNKS + 1
        for i in range(0, len(data), step):
            smtp.send(data[i:i + step])
            time.sleep(CHUNK_PAUSE)
        smtp.send(b".\r\n")
        code, _ = smtp.getreply()
        entry["replied"] = time.time()
        return classify(code)


def classify(code):
    if code == -1:
        return "closed"
    if 200 <= code < 300:
        return "250" if code == 250 else f"2xx:{code}"
    if 400 <= code < 500:
        return f"4xx:{code}"
    return f"5xx:{code}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--limit", type=float, default=60)
    args = parser.parse_args()
    load = Load(args.host, args.port, args.limit)
    threads = [threading.Thread(target=load.client, args=(n,)) for n in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for entry in load.messages:
        if entry["outcome"] is None:
            entry["outcome"] = "error:unfinished"
    print(json.dumps({"messages": load.messages, "greeting_refusals": load.greeting_refusals}))


if __name__ == "__main__":
    main()
