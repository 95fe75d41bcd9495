"""DKIM and ARC signing for the tests, with dkimpy (tests/requirements.txt).

    dkim_sign.py keygen DIR
        Makes DIR/rsa.pem (RSA 2048) and DIR/ed25519.key (an Ed25519 seed),
        unless they exist, and prints their DNS TXT record values, one a line:
        `rsa v=DKIM1; k=rsa; p=...` and `ed25519 v=DKIM1; k=ed25519; p=...`.

    dkim_sign.py sign DIR KEY DOMAIN SELECTOR CANON LENGTH < message > signed
        Prepends a DKIM-Signature made with DIR's KEY (rsa | ed25519) for
        d=DOMAIN s=SELECTOR, canonicalization CANON (relaxed/simple...),
        with `l=` when LENGTH is `l`.

    dkim_sign.py arc DIR DOMAIN SELECTOR SRV_ID < message > sealed
        Adds an ARC set (RSA) for a message that carries an
        Authentication-Results of SRV_ID.

The keys are made at test time, never checked in.
"""

import base64
import os
import subprocess
import sys

import dkim
import nacl.signing


def keygen(directory):
    os.makedirs(directory, exist_ok=True)
    rsa = os.path.join(directory, "rsa.pem")
    if not os.path.exists(rsa):
        subprocess.run(
            ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", rsa],
            check=True, capture_output=True)
    public = subprocess.run(
        ["openssl", "pkey", "-in", rsa, "-pubout", "-outform", "DER"],
        check=True, capture_output=True).stdout
    print("rsa v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode())
    ed = os.path.join(directory, "ed25519.key")
    if not os.path.exists(ed):
        seed = nacl.signing.SigningKey.generate().encode()
        with open(ed, "wb") as f:
            f.write(base64.b64encode(seed))
    with open(ed, "rb") as f:
        seed = base64.b64decode(f.read())
    verify = nacl.signing.SigningKey(seed).verify_key.encode()
    print("ed25519 v=DKIM1; k=ed25519; p=" + base64.b64encode(verify).decode())


def private_key(directory, kind):
    if kind == "rsa":
        with open(os.path.join(directory, "rsa.pem"), "rb") as f:
            return f.read(), b"rsa-sha256"
    with open(os.path.join(directory, "ed25519.key"), "rb") as f:
        return f.read().strip(), b"ed25519-sha256"


def sign(directory, kind, domain, selector, canon, length):
    message = sys.stdin.buffer.read()
    key, algorithm = private_key(directory, kind)
    header, _, body = canon.partition("/")
    signature = dkim.sign(
        message, selector.encode(), domain.encode(), key,
        canonicalize=(header.encode(), (body or "simple").encode()),
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
        length=(length == "l"),
        signature_algorithm=algorithm)
    sys.stdout.buffer.write(signature + message)


def arc(directory, domain, selector, srv_id):
    message = sys.stdin.buffer.read()
    key, _ = private_key(directory, "rsa")
    headers = dkim.arc_sign(
        message, selector.encode(), domain.encode(), key, srv_id.encode(),
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    sys.stdout.buffer.write(b"".join(headers) + message)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"keygen": keygen, "sign": sign, "arc": arc}[command](*args)
