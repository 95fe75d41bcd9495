"""aiosmtpd handlers that mirror wasmtp's test plugins, for differential tests.

`python3 -m aiosmtpd -c aiosmtpd_handlers.Trap` with this directory on
PYTHONPATH (the Rust harness puts it there).
"""


class Trap:
    """Fails as tests/plugins/trap does: in handle_RCPT when the address
    contains `trap`, and always in handle_DATA. It has no handle_exception,
    so aiosmtpd answers `500 Error: (RuntimeError) trap` and the session
    goes on."""

    @classmethod
    def from_cli(cls, parser, *args):
        if args:
            parser.error("Trap handler does not accept arguments")
        return cls()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if "trap" in address:
            raise RuntimeError("trap")
        # What aiosmtpd does without the hook.
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raise RuntimeError("trap")
