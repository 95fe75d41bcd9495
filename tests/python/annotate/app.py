"""A wasmtp test plugin in Python using the granted imports `notes` and
`headers` (tests/annotate.rs): proof that they work beyond Rust.

In `data` it reads the note `score` a plugin before it set, adds
`X-Python-Score: <score>` on top of the message, removes every
`X-Remove-Me` field, tries a note with an invalid key (the host answers
with an error value, raised as `Err`), and notes what it did in `python`
for the plugin after it.
"""

from typing import Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import headers, notes
from wit_world.imports.types import Envelope, Reply, Session


class Data(exports.Data):
    def handle_data(self, session: Session, envelope: Envelope) -> Optional[Reply]:
        score = notes.get("score")
        headers.add("X-Python-Score", score if score is not None else "none")
        removed = headers.remove("X-Remove-Me")
        try:
            notes.set("bad key", "x")
            refused = "nothing"
        except Err as e:
            # notes.Error_Invalid(value="a key is printable ASCII ...")
            refused = type(e.value).__name__
        notes.set("python", f"removed={removed} refused={refused}")
        return None
