#!/usr/bin/env python3
"""Send N messages of a given size over one SMTP connection, with smtplib,
and print every reply.

Usage: smtplib_send.py HOST PORT [--count N] [--size BYTES] [--from ADDR]
                       [--to ADDR]... [--helo] [--smtputf8]

Output, one line per command, tab-separated, for tests to read:

    EHLO    250    mx.wasmtp.test
    MAIL    250    OK
    RCPT    250    OK
    DATA    250    OK
    QUIT    221    Bye

(`DATA` is the reply to the message, after the 354; only the first line of
a multi-line reply is shown.) Each message is exactly BYTES bytes as
smtplib sends it (CRLF line endings, before dot-stuffing), with a unique
Message-ID `<N.smtplib_send@example.com>`. Exits 0 when every message was
accepted (250 to MAIL, to at least one RCPT, and to DATA), else 1.
"""

import argparse
import smtplib
import sys


def make_message(number, size, sender, recipients):
    """A message of exactly `size` bytes (or just its header, if larger)."""
    head = (
        f"From: <{sender}>\r\n"
        f"To: {', '.join(f'<{r}>' for r in recipients)}\r\n"
        f"Subject: message {number}\r\n"
        f"Message-ID: <{number}.smtplib_send@example.com>\r\n"
        "\r\n"
    ).encode()
    body = bytearray()
    left = size - len(head)
    while left > 0:
        # Lines of up to 78 characters + CRLF; never starting with a dot.
        if left <= 2:
            body += b"x" * left
            break
        n = min(78, left - 2)
        body += b"x" * n + b"\r\n"
        left -= n + 2
    return head + bytes(body)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--size", type=int, default=1024, help="bytes per message")
    parser.add_argument("--from", dest="sender", default="anne@example.com")
    parser.add_argument("--to", dest="recipients", action="append")
    parser.add_argument("--helo", action="store_true", help="HELO instead of EHLO")
    parser.add_argument("--smtputf8", action="store_true", help="MAIL with SMTPUTF8")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    recipients = args.recipients or ["bart@example.com"]

    def show(verb, code, text):
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        first = text.splitlines()[0] if text else ""
        print(f"{verb}\t{code}\t{first}", flush=True)

    ok = True
    client = smtplib.SMTP(args.host, args.port, timeout=args.timeout)
    code, text = client.helo() if args.helo else client.ehlo()
    show("HELO" if args.helo else "EHLO", code, text)
    for number in range(1, args.count + 1):
        message = make_message(number, args.size, args.sender, recipients)
        options = []
        if not args.helo and client.has_extn("size"):
            options.append(f"SIZE={len(message)}")
        if args.smtputf8:
            options.append("SMTPUTF8")
        code, text = client.mail(args.sender, options)
        show("MAIL", code, text)
        if code != 250:
            ok = False
            client.rset()
            continue
        accepted = 0
        for rcpt in recipients:
            code, text = client.rcpt(rcpt)
            show("RCPT", code, text)
            accepted += code in (250, 251)
        if not accepted:
            ok = False
            client.rset()
            continue
        try:
            code, text = client.data(message)
        except smtplib.SMTPDataError as e:
            code, text = e.smtp_code, e.smtp_error
        show("DATA", code, text)
        ok = ok and code == 250
    code, text = client.docmd("QUIT")
    show("QUIT", code, text)
    client.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
