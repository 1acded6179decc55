"""Every log line of the server in one format, the request id in each, and the access log.

``FHIRBOX_LOG_FORMAT`` picks the format of every line the process writes through ``logging``
(fhirbox's loggers, uvicorn's, the access log): ``text``, one line of ``key=value`` fields, or
``json``, one JSON object per line. ``logging_config`` is the ``dictConfig`` that ``fhirbox serve``
gives uvicorn, which applies it in the server process and again in each worker process.

Every line goes through one ``LineHandler``. The access log's lines made on the event loop's thread
wait up to ``FLUSH_AFTER`` seconds to be written together (one write for many requests); every other
record is written at once, after them, and so are the waiting lines when the app stops.

The pipeline sets ``request_id`` (a context variable) for the request it handles; ``RequestIdFilter``
copies it into every record logged meanwhile, so each line about a request names it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote_plus

import orjson

if TYPE_CHECKING:
    from fhirbox.http.request import Request

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

ACCESS_LOGGER = "fhirbox.access"
# The server's own announcements (listening, generated secrets): written whatever the log level.
SERVER_LOGGER = "fhirbox.server"

# Query parameters whose values are credentials: written as ``***`` in the access log.
SECRET_PARAMETERS = frozenset({"access_token", "token", "client_secret", "client_assertion", "refresh_token"})
_REDACTED = "***"
_SEPARATORS = re.compile(r"([&;])")


def redact_query(query: str) -> str:
    """``query`` with the values of ``SECRET_PARAMETERS`` replaced by ``***``.

    Names are compared after form-decoding (``acc%65ss_token`` is ``access_token``), matched without
    regard to case, and each pair is kept as sent otherwise. Nothing in ``query`` can make this fail.
    """
    if "=" not in query:
        return query
    # Split on ";" as well as "&": the server reads only "&", but a client that separates with ";"
    # still sent its secret, and it must not reach the log.
    parts = _SEPARATORS.split(query)
    for n in range(0, len(parts), 2):
        name, sep, _ = parts[n].partition("=")
        if sep and _parameter_name(name) in SECRET_PARAMETERS:
            parts[n] = f"{name}={_REDACTED}"
    return "".join(parts)


def _parameter_name(raw: str) -> str:
    if "%" not in raw and "+" not in raw:
        return raw.lower()
    # ``errors="replace"``: an undecodable name is some other name, never an exception.
    return unquote_plus(raw, errors="replace").strip().lower()


def access_path(path: str, query: str) -> str:
    """The request target as the access log writes it: path and redacted query, percent-encoded
    where the raw text could break a line (controls, spaces, quotes, non-ASCII)."""
    target = path if not query else f"{path}?{redact_query(query)}"
    if _SAFE_TARGET.fullmatch(target):
        return target
    return quote(target, safe="/?&=%:@!$'()*+,;-._~", errors="backslashreplace")


_SAFE_TARGET = re.compile(r"[A-Za-z0-9/?&=%:@!$'()*+,;._~-]*")


# The access log's fields, in order: remote address, method, path, status, bytes, duration, client id.
ACCESS_FIELDS = ("remote_addr", "method", "path", "status", "bytes", "duration_ms", "client_id")
AccessValues = tuple[str, str, str, int, int, float, str]


class AccessLog:
    """Writes one line per request to ``ACCESS_LOGGER`` once its response is sent."""

    def __init__(self) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)
        self.root = logging.getLogger()

    def write(self, request: Request, status: int, size: int, seconds: float) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        values: AccessValues = (
            request.client_addr or "-",
            request.method,
            access_path(request.path, request.query_string),
            status,
            size,
            round(seconds * 1000, 3),
            request.client_id or "-",
        )
        sink = self._sink()
        if sink is not None:
            # The line the handler would write for the record, made without the record: the usual
            # route (a LogRecord, filters, the handler's lock) costs more than the line itself.
            handler, formatter = sink
            handler.write(formatter.access_line(time.time(), request.request_id, values))
            return
        # A record made here and handed to the logger: ``logger.info`` would also walk the stack to
        # find its caller, which costs more than the rest of the line.
        record = logging.LogRecord(ACCESS_LOGGER, logging.INFO, "", 0, "request", None, None)
        record.fields = dict(zip(ACCESS_FIELDS, values, strict=True))
        record.request_id = request.request_id
        logger.handle(record)

    async def flush(self) -> None:
        """Write the lines still waiting (when the app stops: a worker may then die by a signal)."""
        sink = self._sink()
        if sink is not None:
            sink[0].flush()

    def _sink(self) -> tuple[LineHandler, LineFormatter] | None:
        """The handler and formatter an access record would reach, when they are the only ones: the
        server's own configuration (``logging_config``), with nothing added (a test's capture, say)."""
        if self.logger.filters:
            return None
        logger: logging.Logger | None = self.logger
        while logger is not None and logger is not self.root:
            if logger.handlers or not logger.propagate:
                return None
            logger = logger.parent
        handlers = self.root.handlers
        if len(handlers) != 1:
            return None
        handler = handlers[0]
        if type(handler) is not LineHandler or handler.level > logging.INFO:
            return None
        formatter = handler.formatter
        if not isinstance(formatter, LineFormatter):
            return None
        if any(type(f) is not RequestIdFilter for f in handler.filters):
            return None
        return handler, formatter


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (the request being handled, or None) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


class _Clock:
    """ISO 8601 UTC times with milliseconds; the date and time to the second formatted once a second."""

    __slots__ = ("prefix", "second")

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def iso(self, created: float) -> str:
        second = int(created)
        if second != self.second:
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self.second = second
        return f"{self.prefix}.{int((created - second) * 1000):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any] | None:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else None


class LineFormatter(logging.Formatter):
    """A record as one line (``line``, the format's own), and an access-log record's line made
    without the record (``access_line``)."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = _Clock()

    def format(self, record: logging.LogRecord) -> str:
        exception = self.formatException(record.exc_info) if record.exc_info else None
        return self.line(
            record.created,
            record.levelname,
            record.name,
            getattr(record, "request_id", None),
            record.getMessage(),
            _fields(record),
            exception,
        )

    def access_line(self, created: float, rid: str | None, values: AccessValues) -> str:
        """What ``format`` makes of an access-log record."""
        fields = dict(zip(ACCESS_FIELDS, values, strict=True))
        return self.line(created, "INFO", ACCESS_LOGGER, rid, "request", fields, None)

    def line(
        self,
        created: float,
        level: str,
        logger: str,
        rid: str | None,
        message: str,
        fields: dict[str, Any] | None,
        exception: str | None,
    ) -> str:
        raise NotImplementedError


class JsonFormatter(LineFormatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, ``request_id`` when
    there is one, the record's fields (the access log's), and ``exception`` with a traceback."""

    def line(
        self,
        created: float,
        level: str,
        logger: str,
        rid: str | None,
        message: str,
        fields: dict[str, Any] | None,
        exception: str | None,
    ) -> str:
        line: dict[str, Any] = {
            "time": self.clock.iso(created),
            "level": level,
            "logger": logger,
            "message": message,
        }
        if rid is not None:
            line["request_id"] = rid
        if fields:
            line.update(fields)
        if exception is not None:
            line["exception"] = exception
        return orjson.dumps(line, default=str).decode()


# A text value is written bare when it has none of: space, quote, equals sign, backslash, controls.
_BARE = re.compile(r"[^\s\"=\\\x00-\x1f\x7f]+")


def _text_value(value: Any) -> str:
    if type(value) is int or type(value) is float:
        return str(value)
    text = value if isinstance(value, str) else str(value)
    if _BARE.fullmatch(text):
        return text
    # JSON string escaping: quotes, backslashes, newlines and controls escaped; one line always.
    return orjson.dumps(text).decode()


def _add_fields(parts: list[str], fields: dict[str, Any]) -> None:
    bare = _BARE.fullmatch
    for key, value in fields.items():
        # Inline fast paths: the access log's values are mostly numbers and plain words.
        if type(value) is int or (type(value) is str and bare(value)):
            parts.append(f"{key}={value}")
        else:
            parts.append(f"{key}={_text_value(value)}")


class TextFormatter(LineFormatter):
    """One line of ``key=value`` fields: ``time level logger request_id message`` then the record's
    fields; a value with spaces, quotes or line breaks is quoted and escaped as a JSON string."""

    def access_line(self, created: float, rid: str | None, values: AccessValues) -> str:
        """What ``format`` makes of an access-log record."""
        addr, method, path, status, size, duration, client = values
        # Every text value non-empty and bare (the usual case): no value needs quoting, one f-string.
        if rid and _BARE.fullmatch(f"{rid}{addr}{method}{path}{client}"):
            return (
                f"time={self.clock.iso(created)} level=INFO logger={ACCESS_LOGGER} request_id={rid} "
                f"message=request remote_addr={addr} method={method} path={path} status={status} "
                f"bytes={size} duration_ms={duration} client_id={client}"
            )
        return super().access_line(created, rid, values)

    def line(
        self,
        created: float,
        level: str,
        logger: str,
        rid: str | None,
        message: str,
        fields: dict[str, Any] | None,
        exception: str | None,
    ) -> str:
        parts = [f"time={self.clock.iso(created)}", f"level={level}", f"logger={_text_value(logger)}"]
        if rid is not None:
            parts.append(f"request_id={_text_value(rid)}")
        parts.append(f"message={_text_value(message)}")
        if fields:
            _add_fields(parts, fields)
        if exception is not None:
            parts.append(f"exception={_text_value(exception)}")
        return " ".join(parts)


# An access-log line made on the event loop's thread waits at most this long, or until this many wait.
FLUSH_AFTER = 0.05
FLUSH_LINES = 256


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes formatted lines to a stream. Access-log lines (``write``) made on the event loop's
    thread wait to be written together: at most ``FLUSH_AFTER`` seconds, ``FLUSH_LINES`` lines, or
    until the app stops (``App.shutdown`` flushes). Every record (``emit``), and a line from any other
    thread or with no loop running, is written at once, after whatever waits."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._waiting: list[str] = []
        # The flush armed for the lines waiting on the event loop, if any.
        self._timer: asyncio.TimerHandle | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        # Written at once (after whatever waits): a record may be a process's last words, e.g. a
        # worker's before uvicorn re-raises the signal that stops it.
        with self.lock:  # type: ignore[union-attr]
            self._waiting.append(line)
        self.flush()

    def write(self, line: str) -> None:
        """Write an access-log ``line`` (one line, no newline) soon, with the lines made around it."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self.lock:  # type: ignore[union-attr]
            self._waiting.append(line)
            if loop is not None and len(self._waiting) < FLUSH_LINES:
                # One timer for many lines: flushing at the end of every turn of the loop costs the
                # loop a turn of its own each time.
                if self._timer is None:
                    self._timer = loop.call_later(FLUSH_AFTER, self.flush)
                return
        self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            # A timer still armed fires later and finds nothing (cancelling is for its loop's thread).
            waiting, self._waiting, self._timer = self._waiting, [], None
            try:
                if waiting:
                    self.stream.write("\n".join(waiting) + "\n")
                self.stream.flush()
            except Exception:  # a closed or broken stream: logging must not take the server down
                return


FORMATTERS: dict[str, type[logging.Formatter]] = {"text": TextFormatter, "json": JsonFormatter}


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of a server process: every logger to one stderr handler
    in ``log_format``; the access log and the server's announcements at INFO whatever ``level``."""
    handler = {
        "class": "fhirbox.logs.LineHandler",
        "stream": "ext://sys.stderr",
        "formatter": "line",
        "filters": ["request_id"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"line": {"()": FORMATTERS[log_format]}},
        "handlers": {"line": handler},
        "root": {"handlers": ["line"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "level": level.upper(), "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level.upper(), "propagate": True},
            # The access log is fhirbox's own (ACCESS_LOGGER); uvicorn's is never written.
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            ACCESS_LOGGER: {"level": "INFO"},
            SERVER_LOGGER: {"level": "INFO"},
        },
    }


def configure(log_format: str, level: str) -> None:
    """Apply ``logging_config`` to this process (the ``serve`` command before uvicorn starts)."""
    import logging.config

    logging.config.dictConfig(logging_config(log_format, level))
    logging.captureWarnings(True)
    # No format shows them, and each record would look them up (the access log makes one a request).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
