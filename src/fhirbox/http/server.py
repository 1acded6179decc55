"""How fhirbox serves HTTP: uvicorn's httptools protocol with every connection bounded.

``BoundedHttpToolsProtocol`` is uvicorn's ``HttpToolsProtocol`` plus limits the application never has to
think about:

* a request head (request line and header fields) over ``MAX_HEAD_BYTES`` or with more than
  ``MAX_HEAD_FIELDS`` fields is answered 431 and the connection closed, before the application sees it.
  The bytes are counted as they arrive, before httptools gets them, so a huge head costs at most
  ``MAX_HEAD_BYTES`` of parsing (httptools joins the pieces of a header value with ``+=``, quadratic in
  the number of reads);
* a connection that has not sent a complete head ``FHIRBOX_HEADER_TIMEOUT`` seconds after it opened or
  after the first byte of its next request arrived is closed; idle keep-alive connections close after
  ``FHIRBOX_KEEPALIVE_TIMEOUT`` (uvicorn's own keep-alive timer);
* a server process holds at most ``FHIRBOX_MAX_CONNECTIONS`` connections; further ones are closed as
  soon as they are accepted.

The per-request cost is a few counters and a clock read: the head deadline is one timer per connection
that, when it fires, re-arms itself for the current head's deadline instead of a timer per request.

Two savings per request: a response's head is held until its body is written and both go out in one
write (``OneWrite``: one system call and one TCP segment instead of two); and a request whose whole body
had arrived by the time the application starts is marked so (``BODY_RECEIVED`` in the scope's
extensions), so reading it needs no body deadline.

``uvicorn.run(http=PROTOCOL)`` names the class by import string, so worker processes import it too; each
process reads the limits from the ``FHIRBOX_*`` environment (``fhirbox serve`` exports its settings).
"""

from __future__ import annotations

import asyncio
import functools
import resource
import secrets
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from fhirbox.http.errors import operation_outcome
from fhirbox.http.formats import dump_json
from fhirbox.http.request import BODY_RECEIVED
from fhirbox.settings import Settings

PROTOCOL = "fhirbox.http.server:BoundedHttpToolsProtocol"

MAX_HEAD_BYTES = 16 * 1024
MAX_HEAD_FIELDS = 100

_TOO_LARGE_BODY = dump_json(
    operation_outcome(
        "too-long",
        f"Request head is over {MAX_HEAD_BYTES} bytes or {MAX_HEAD_FIELDS} header fields",
    )
)
_UNPARSABLE_BODY = dump_json(
    operation_outcome(
        "invalid",
        "Invalid HTTP request: not HTTP/1.1 as RFC 9112 writes it (percent-encode what a request"
        " target may not hold raw; one Content-Length, or chunked)",
    )
)
_UNPARSABLE_TAIL = (
    b"content-type: application/json\r\n"
    b"content-length: " + str(len(_UNPARSABLE_BODY)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _UNPARSABLE_BODY
)
_TOO_LARGE_TAIL = (
    b"content-type: application/json\r\n"
    b"content-length: " + str(len(_TOO_LARGE_BODY)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _TOO_LARGE_BODY
)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout: int
    keepalive_timeout: int
    max_connections: int


@functools.cache
def process_limits() -> ConnectionLimits:
    """This process's limits, read once from the environment."""
    settings = Settings.from_env()
    return ConnectionLimits(settings.header_timeout, settings.keepalive_timeout, settings.max_connections)


def raise_open_file_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit (inherited by worker processes);
    return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # an unlimited hard limit that the kernel caps lower (macOS)
            pass
    return soft


def _unparsed_request_id() -> str:
    """The id of a request answered before the application saw it (400, 431): random, as the
    pipeline's ids are unique per process, never taken from a head that could not be read."""
    return f"h-{secrets.token_hex(8)}"


class HeadTooLarge(Exception):
    """Raised in a parser callback to stop parsing a head with too many fields: answered 431."""


class OneWrite:
    """The transport a request's response is written to: its first write (uvicorn writes the status
    line and headers alone) is held and sent with the next (the body), or when the response is complete
    (``flush``: a HEAD response, whose body uvicorn never writes)."""

    __slots__ = ("head", "started", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.head: bytes | None = None
        self.started = False

    def write(self, data: bytes) -> None:
        if not self.started:
            if data.startswith(b"HTTP/1.1 100 "):  # the interim answer to Expect: 100-continue
                self.transport.write(data)
                return
            self.started = True
            self.head = data
            return
        head = self.head
        if head is not None:
            self.head = None
            data = head + data
        self.transport.write(data)

    def flush(self) -> None:
        if self.head is not None:
            head, self.head = self.head, None
            self.transport.write(head)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded heads, a head deadline and a connection cap."""

    # Slots keep uvicorn's ~28 instance attributes in a key-sharing instance dict: past 30 keys CPython
    # 3.11 falls back to a plain dict and every attribute access of the protocol gets slower (without
    # them the protocol's per-request cost grew by 5.1% instead of 3.2%: docs/decisions.md).
    __slots__ = (
        "head_bytes",
        "head_since",
        "head_timer",
        "header_timeout",
        "max_connections",
        "reading_head",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = process_limits()
        self.timeout_keep_alive = limits.keepalive_timeout
        self.header_timeout = limits.header_timeout
        self.max_connections = limits.max_connections
        # Reading a head: from the connection's start, and again once a request's message is complete.
        self.reading_head = True
        # Bytes received of the current head (counted while reading_head).
        self.head_bytes = 0
        # When the current head began (connection made, or first byte of the next request); None when
        # no head is pending: a request is in flight, or the connection idles between requests.
        self.head_since: float | None = None
        self.head_timer: asyncio.TimerHandle | None = None

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        if len(self.connections) >= self.max_connections:
            self.transport = transport
            transport.close()
            return
        super().connection_made(transport)
        self.head_since = self.loop.time()
        self.head_timer = self.loop.call_later(self.header_timeout, self._head_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        super().connection_lost(exc)

    def _head_deadline(self) -> None:
        """Close the connection if its pending head is overdue; otherwise wait for the next deadline."""
        self.head_timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self.head_since is None:
            deadline = now + self.header_timeout
        else:
            deadline = self.head_since + self.header_timeout
            if now >= deadline:
                self.transport.close()
                return
        self.head_timer = self.loop.call_at(deadline, self._head_deadline)

    def data_received(self, data: bytes) -> None:
        if self.reading_head:
            if self.head_since is None:
                self.head_since = self.loop.time()
            room = MAX_HEAD_BYTES - self.head_bytes
            self.head_bytes += len(data)
            if len(data) > room:
                # Only the bytes within the limit reach the parser; the head must end among them.
                if room > 0 and not self._feed(data[:room]):
                    return
                if self.head_since is not None:  # still pending: the head is over the limit
                    self._refuse_head()
                    return
                # The head ended in time; the rest is a body or the next (pipelined) head.
                self.data_received(data[room:])
                return
        # A pipelined head that starts in the same read as the previous request's body is counted from
        # the next read on: the bound then exceeds MAX_HEAD_BYTES by at most one read, still linear.
        self._feed(data)

    def _feed(self, data: bytes) -> bool:
        """uvicorn's ``data_received``, with a head refused as 431; False when the connection ends."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                self._refuse_head()
                return False
            self._invalid_request()
            return False
        except httptools.HttpParserError:
            self._invalid_request()
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        return True

    def _invalid_request(self) -> None:
        self.send_400_response("Invalid HTTP request received.")

    def send_400_response(self, msg: str) -> None:
        """uvicorn's 400 for what httptools cannot parse, as an OperationOutcome, with an
        ``X-Request-Id`` and a log line naming it (the application never sees such a request)."""
        request_id = _unparsed_request_id()
        self.logger.warning(msg, extra={"request_id": request_id})
        self._close_with(400, request_id, _UNPARSABLE_TAIL)

    def _refuse_head(self) -> None:
        self.reading_head = False
        request_id = _unparsed_request_id()
        self.logger.warning("Request head too large: 431", extra={"request_id": request_id})
        self._close_with(431, request_id, _TOO_LARGE_TAIL)

    def _close_with(self, status: int, request_id: str, tail: bytes) -> None:
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([b"x-request-id: ", request_id.encode(), b"\r\n", tail])
        self.transport.write(b"".join(content))
        self.transport.close()

    # Parser callbacks
    def on_headers_complete(self) -> None:
        # Counted here, not per field: within MAX_HEAD_BYTES a head has at most a few thousand fields.
        if len(self.headers) > MAX_HEAD_FIELDS:
            raise HeadTooLarge
        self.reading_head = False
        self.head_since = None
        cycle = self.cycle
        HttpToolsProtocol.on_headers_complete(self)  # not super(): per request, and cheaper
        if self.cycle is not cycle:  # a request to answer (not an upgrade)
            writer = OneWrite(self.transport)
            self.cycle.transport = writer  # type: ignore[assignment]
            # This cycle's own end flushes this cycle's writer: with pipelining, ``self.cycle`` may
            # already be the next request's when it ends.
            self.cycle.on_response = functools.partial(self._response_complete, writer)

    def on_message_complete(self) -> None:
        self.reading_head = True
        self.head_bytes = 0
        if self.cycle is not None:
            extensions: dict[str, object] = self.cycle.scope.setdefault("extensions", {})  # type: ignore[assignment]
            extensions[BODY_RECEIVED] = True
        HttpToolsProtocol.on_message_complete(self)

    def _response_complete(self, writer: OneWrite) -> None:
        # Whatever the response held back goes out before uvicorn may close the connection or start
        # the next pipelined request.
        writer.flush()
        HttpToolsProtocol.on_response_complete(self)
