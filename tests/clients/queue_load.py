#!/usr/bin/env python3
"""Send messages from many smtplib clients at once, each client message
after message, until SECONDS pass or the server is gone (a refused
connection); print what every message got, as JSON, for tests/queue.rs to
hold against the queue.

Usage: queue_load.py HOST PORT [--clients N] [--seconds S] [--size BYTES]

Output (stdout, one JSON object):

    {"messages": [{"message_id": "<...>", "code": 250, "text": "2.0.0 Ok: queued as ID"}, ...]}

`code` is the reply to the content, or to the first command refused; 0 when
the connection closed (or was reset) before a reply.
"""

import argparse
import json
import smtplib
import threading
import time


def message(msgid, size):
    body = ("x" * 76 + "\r\n") * max(1, size // 78)
    return (
        "From: <load@example.com>\r\n"
        "To: <inbox@example.com>\r\n"
        f"Subject: queue {msgid}\r\n"
        f"Message-ID: {msgid}\r\n"
        "\r\n" + body
    ).encode()


class Load:
    def __init__(self, host, port, seconds, size):
        self.host, self.port, self.size = host, port, size
        self.deadline = time.time() + seconds
        self.lock = threading.Lock()
        self.messages = []
        self.counter = 0
        self.gone = False

    def next_id(self, client):
        with self.lock:
            self.counter += 1
            return f"<{self.counter}.c{client}.queue@example.com>"

    def record(self, msgid, code, text):
        with self.lock:
            self.messages.append({"message_id": msgid, "code": code, "text": text})

    def client(self, number):
        while time.time() < self.deadline and not self.gone:
            try:
                smtp = smtplib.SMTP(self.host, self.port, timeout=30)
                smtp.ehlo("load.example")
            except (ConnectionRefusedError, ConnectionResetError):
                self.gone = True
                return
            except (smtplib.SMTPException, OSError):
                time.sleep(0.05)
                continue
            try:
                while time.time() < self.deadline:
                    msgid = self.next_id(number)
                    if not self.send(smtp, msgid):
                        break
            finally:
                try:
                    smtp.close()
                except OSError:
                    pass

    def send(self, smtp, msgid):
        """One transaction; False when the connection is no longer usable."""
        try:
            code, text = smtp.mail("load@example.com")
            if code == 250:
                code, text = smtp.rcpt("inbox@example.com")
            if code == 250:
                code, text = smtp.data(message(msgid, self.size))
            else:
                smtp.rset()
            self.record(msgid, code, text.decode(errors="replace"))
            return True
        except smtplib.SMTPDataError as e:
            self.record(msgid, e.smtp_code, e.smtp_error.decode(errors="replace"))
            return True
        except (smtplib.SMTPException, OSError):
            self.record(msgid, 0, "")
            return False


def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--size", type=int, default=1024)
    a = p.parse_args()
    load = Load(a.host, a.port, a.seconds, a.size)
    threads = [threading.Thread(target=load.client, args=(n,)) for n in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"messages": load.messages}))


if __name__ == "__main__":
    main()
