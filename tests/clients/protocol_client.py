#!/usr/bin/env python3
"""Python's smtplib against wasmtp's TLS, AUTH and LMTP, for tests/tls.rs,
tests/auth.rs and tests/lmtp.rs.

Usage:
    protocol_client.py starttls HOST PORT [--login USER PASS]
    protocol_client.py smtps HOST PORT [--login USER PASS]
    protocol_client.py lmtp HOST PORT|unix:/PATH RCPT...

Prints one line per reply, tab-separated, for the tests to read:

    STARTTLS    220    Ready to start TLS
    TLS         TLSv1.3    TLS_AES_256_GCM_SHA384
    AUTH        235    2.7.0 Authentication successful
    DATA        250    2.0.0 ...
    NOOP        250    peer=... tls=...
    LMTP        bart@example.com    250    2.0.0 <bart@example.com> delivered

Certificates are not verified: the tests make a throwaway one each run.
"""

import smtplib
import ssl
import sys

MESSAGE = b"From: anne@example.com\r\nTo: bart@example.com\r\nSubject: protocol\r\n\r\nHello over TLS.\r\n"


def context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def show(what, code, text):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    print(f"{what}\t{code}\t{text.splitlines()[0] if text else ''}", flush=True)


def dialog(client, login):
    code, text = client.ehlo("client.example")
    show("EHLO", code, text.decode().splitlines()[-1])
    cipher = client.sock.cipher()
    print(f"TLS\t{cipher[1]}\t{cipher[0]}", flush=True)
    if login:
        try:
            code, text = client.login(*login)
        except smtplib.SMTPAuthenticationError as e:
            code, text = e.smtp_code, e.smtp_error
        show("AUTH", code, text)
    code, text = client.mail("anne@example.com")
    show("MAIL", code, text)
    code, text = client.rcpt("bart@example.com")
    show("RCPT", code, text)
    code, text = client.data(MESSAGE)
    show("DATA", code, text)
    code, text = client.docmd("NOOP", "whoami")
    show("NOOP", code, text)
    code, text = client.quit()
    show("QUIT", code, text)


def main(argv):
    mode, host, port, rest = argv[1], argv[2], argv[3], argv[4:]
    login = None
    if rest[:1] == ["--login"]:
        login = (rest[1], rest[2])
    if mode == "starttls":
        client = smtplib.SMTP(host, int(port), timeout=10)
        code, text = client.ehlo("client.example")
        show("EHLO", code, text.decode().splitlines()[-1])
        code, text = client.starttls(context=context())
        show("STARTTLS", code, text)
        dialog(client, login)
    elif mode == "smtps":
        client = smtplib.SMTP_SSL(host, int(port), timeout=10, context=context())
        dialog(client, login)
    elif mode == "lmtp":
        if port.startswith("unix:"):
            client = smtplib.LMTP(port[len("unix:"):], timeout=10)
        else:
            client = smtplib.LMTP(host, int(port), timeout=10)
        code, text = client.ehlo("client.example")  # LMTP sends LHLO
        show("LHLO", code, text.decode().splitlines()[0])
        code, text = client.mail("anne@example.com")
        show("MAIL", code, text)
        accepted = []
        for rcpt in rest:
            code, text = client.rcpt(rcpt)
            show("RCPT", code, text)
            if code == 250:
                accepted.append(rcpt)
        # smtplib's data() reads the first reply; LMTP sends one per
        # accepted recipient (RFC 2033 4.2), so read the others after it.
        code, text = client.data(MESSAGE)
        print(f"LMTP\t{accepted[0]}\t{code}\t{text.decode()}", flush=True)
        for rcpt in accepted[1:]:
            code, text = client.getreply()
            print(f"LMTP\t{rcpt}\t{code}\t{text.decode()}", flush=True)
        code, text = client.quit()
        show("QUIT", code, text)
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv)
