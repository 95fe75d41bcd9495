"""A Python test plugin: ``NOOP URL`` makes a GET of URL with
componentize-py's own HTTP client (``poll_loop.send``, asyncio over
``wasi:http``) and answers ``250 status=200 bytes=5``, or ``250
error=ErrorCode_HttpRequestDenied`` when the host refused the request.

CPython's ``urllib`` needs sockets, which componentize-py does not give
it; ``poll_loop`` is the client componentize-py generates for
``wasi:http``. It imports the HTTP types as ``wit_world.imports.types``,
a name this world's ``wasmtp:smtp/types`` takes (the bindings call the
HTTP ones ``wasi_http_types``), so that module is aliased first.
"""

import asyncio
import sys

import wit_world.imports
from wit_world.imports import wasi_http_types

sys.modules["wit_world.imports.types"] = wasi_http_types
wit_world.imports.types = wasi_http_types

import poll_loop  # noqa: E402
from componentize_py_types import Err  # noqa: E402
from wit_world import exports  # noqa: E402
from wit_world.imports.wasi_http_types import (  # noqa: E402
    Fields,
    Method_Get,
    OutgoingBody,
    OutgoingRequest,
    Scheme_Http,
    Scheme_Https,
)
from wit_world.imports.wasmtp_smtp_types import Reply  # noqa: E402


async def fetch(url: str) -> str:
    scheme, rest = url.split("://", 1)
    authority, _, path = rest.partition("/")
    request = OutgoingRequest(Fields.from_list([]))
    request.set_method(Method_Get())
    request.set_scheme(Scheme_Https() if scheme == "https" else Scheme_Http())
    request.set_authority(authority)
    request.set_path_with_query("/" + path)
    OutgoingBody.finish(request.body(), None)
    response = await poll_loop.send(request)
    status = response.status()
    stream = poll_loop.Stream(response.consume())
    size = 0
    while True:
        chunk = await stream.next()
        if chunk is None:
            break
        size += len(chunk)
    return f"status={status} bytes={size}"


class Noop(exports.Noop):
    def handle_noop(self, session, envelope, arg: str):
        loop = poll_loop.PollLoop()
        asyncio.set_event_loop(loop)
        try:
            line = loop.run_until_complete(fetch(arg.strip()))
        except Exception as e:  # wasi:http's error-code, raised by send
            while isinstance(e, Err):
                e = e.value
            line = "error=" + type(e).__name__
        return Reply(code=250, enhanced=None, lines=[line[:300]])
