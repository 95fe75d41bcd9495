#!/usr/bin/env python3
"""The Mailbox walk-through at the end of the seed's handlers.rst, runnable.

Usage: mailbox_walkthrough.py HOST PORT MAILDIR

Sends the walk-through's three messages over one smtplib connection to a
server storing mail in MAILDIR (`wasmtp -c mailbox MAILDIR`, or
`python3 -m aiosmtpd -n -c aiosmtpd.handlers.Mailbox MAILDIR`), then opens
the Maildir, sorts the messages by Message-ID and prints, for each,

    <Message-ID> <From> <To>
      X-Peer: ('127.0.0.1', 43210)
      X-MailFrom: anne@example.com
      X-RcptTo: bart@example.com

Exits with status 1 and says why when anything differs from what aiosmtpd's
Mailbox handler stores: a message missing or extra, a header that is not
what was sent, an X-Peer that is not this client's address as aiosmtpd
writes it (Python's repr of the (host, port) tuple).
"""

import mailbox
import smtplib
import sys
from operator import itemgetter

# (envelope sender, envelope recipients, message), as in the seed, with the
# addresses the seed's copy lost put back. The third message has two
# recipients, so that X-RcptTo shows how a list is joined.
MESSAGES = [
    ("anne@example.com", ["bart@example.com"], """\
From: Anne Person <anne@example.com>
To: Bart Person <bart@example.com>
Subject: A test
Message-ID: <ant@example.com>

Hi Bart, this is Anne.
"""),
    ("cate@example.com", ["dave@example.com"], """\
From: Cate Person <cate@example.com>
To: Dave Person <dave@example.com>
Subject: A test
Message-ID: <bee@example.com>

Hi Dave, this is Cate.
"""),
    ("elle@example.com", ["fred@example.com", "gwen@example.com"], """\
From: Elle Person <elle@example.com>
To: Fred Person <fred@example.com>
Subject: A test
Message-ID: <cat@example.com>

Hi Fred, this is Elle.
"""),
]


def fail(why):
    print(f"mailbox_walkthrough: {why}", file=sys.stderr)
    sys.exit(1)


def main(argv):
    if len(argv) != 4:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    host, port, maildir_path = argv[1], int(argv[2]), argv[3]

    client = smtplib.SMTP(host, port, timeout=30)
    peer = repr(client.sock.getsockname()[:2])
    for sender, recipients, message in MESSAGES:
        refused = client.sendmail(sender, recipients, message)
        if refused:
            fail(f"recipients refused: {refused}")
    client.quit()

    try:
        maildir = mailbox.Maildir(maildir_path, create=False)
        files = {key: maildir.get_bytes(key) for key in maildir.keys()}
    except mailbox.NoSuchMailboxError:
        fail(f"there is no Maildir at {maildir_path}")
    if len(files) != len(MESSAGES):
        fail(f"{len(files)} messages in {maildir_path}, expected {len(MESSAGES)}")

    problems = []
    for key, raw in sorted(files.items()):
        # Python's mailbox module (so aiosmtpd's Mailbox) writes LF only.
        if b"\r" in raw:
            problems.append(f"{key}: a CR in the file; aiosmtpd's Mailbox stores LF line endings")
    messages = sorted(maildir, key=itemgetter("message-id"))
    for message, (sender, recipients, text) in zip(messages, MESSAGES):
        print(message["Message-ID"], message["From"], message["To"])
        for header in ("X-Peer", "X-MailFrom", "X-RcptTo"):
            print(f"  {header}: {message[header]}")
        sent = mailbox.Message(text)
        for header in ("Message-ID", "From", "To", "Subject"):
            if message[header] != sent[header]:
                problems.append(f"{sent['Message-ID']}: {header} is {message[header]!r}, sent {sent[header]!r}")
        expected = {"X-Peer": peer, "X-MailFrom": sender, "X-RcptTo": ", ".join(recipients)}
        for header, value in expected.items():
            if message.get_all(header) != [value]:
                problems.append(f"{sent['Message-ID']}: {header} is {message.get_all(header)!r}, expected [{value!r}]")
        if message.get_payload() != sent.get_payload():
            problems.append(f"{sent['Message-ID']}: body is {message.get_payload()!r}, sent {sent.get_payload()!r}")
    if problems:
        fail("\n  ".join(["the Maildir is not what was sent:"] + problems))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
