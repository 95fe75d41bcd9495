"""aiosmtpd handlers that mirror wasmtp's test plugins, for differential tests.

`python3 -m aiosmtpd -c aiosmtpd_handlers.Trap` with this directory on
PYTHONPATH (the Rust harness puts it there).
"""


class Trap:
    """Fails in handle_RCPT and handle_DATA, as tests/plugins/trap does,
    and has no handle_exception: aiosmtpd then answers
    `500 Error: (RuntimeError) trap` and the session goes on."""

    @classmethod
    def from_cli(cls, parser, *args):
        if args:
            parser.error("Trap handler does not accept arguments")
        return cls()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        raise RuntimeError("trap")

    async def handle_DATA(self, server, session, envelope):
        raise RuntimeError("trap")
