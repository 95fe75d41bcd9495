"""An example wasmtp plugin in Python: a recipient allowlist and a header filter.

The same policy as examples/rust-plugin (and the JavaScript and C examples):

- arguments: the recipient domains (``example.com``) or addresses
  (``postmaster@example.org``) to accept; at least one;
- ``RCPT TO``: any other recipient gets ``550 5.1.1``;
- ``DATA``: a message whose headers carry ``X-Spam-Flag: YES`` gets
  ``550 5.7.1``; any other gets ``250 2.0.0 accepted by the python policy``.

componentize-py looks for one class per exported interface, named after it
(``Setup``, ``Rcpt``, ``Data``, ``Reuse``), in this module. The world
(wit/policy.wit) exports only these three hooks and ``reuse``: the server does
its default for every other command without calling the plugin.

One instance of the component serves one SMTP session, so module globals are
per-session state; ``init`` runs at the start of each instance. With
``instances = "reuse"`` an instance serves successive sessions, and
``Reuse.reset`` runs between them (below).
"""

from typing import List, Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import content, log
from wit_world.imports.types import Envelope, Reply, Session

# Lower-cased domains and addresses, from the arguments.
ALLOWED: List[str] = []

# How much of the content to ask the host for at a time.
CHUNK = 16 * 1024


class Setup(exports.Setup):
    def init(self, args: List[str]) -> None:
        if not args:
            # result<_, string>: raising Err(message) is the `error` case.
            raise Err("give at least one allowed recipient domain or address")
        ALLOWED[:] = [arg.lower() for arg in args]


class Rcpt(exports.Rcpt):
    def handle_rcpt(self, session: Session, envelope: Envelope, address: str, options: List[str]) -> Optional[Reply]:
        address = address.lower()
        domain = address.rpartition("@")[2]
        if address in ALLOWED or domain in ALLOWED:
            return None  # the default: 250 OK, and the recipient is recorded
        log.log(log.Level.INFO, f"refused recipient {address}")
        return Reply(550, "5.1.1", [f"<{address}>: recipient not allowed"])


def header_lines():
    """The lines of the header block, read from the host a chunk at a time;
    the body is never copied into the plugin."""
    offset, pending = 0, b""
    while True:
        chunk = content.read(offset, CHUNK)
        offset += len(chunk)
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            line = line.removesuffix(b"\r")
            if not line:
                return
            yield line
        if not chunk:
            if pending:
                yield pending
            return


class Data(exports.Data):
    def handle_data(self, session: Session, envelope: Envelope) -> Optional[Reply]:
        for line in header_lines():
            name, colon, value = line.partition(b":")
            if colon and name.strip().lower() == b"x-spam-flag" and value.strip().lower() == b"yes":
                return Reply(550, "5.7.1", ["message refused: X-Spam-Flag is YES"])
        return Reply(250, "2.0.0", ["accepted by the python policy"])


class Reuse(exports.Reuse):
    def reset(self) -> None:
        """Between two sessions of a reused instance (``instances = "reuse"``
        in the server's config). The policy keeps nothing about a session, so
        there is nothing to clear: ``ALLOWED`` comes from the arguments."""
