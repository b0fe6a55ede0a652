"""Structured logging: one JSON object per line on stdout, via structlog.

Nothing here ever logs headers; callers pass only the fields they mean to publish. Session ids are logged as a
short hash (`session_tag`) so a log reader can correlate lines without being able to hijack a session.

On the event loop, lines are written a few milliseconds after they are made, several in one write: a request's log
and audit lines then never delay its response, and a busy gateway makes one write call per burst instead of one per
line. Off the loop (start-up, shutdown, errors before the loop runs) every line is written at once.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import json
import logging
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from aiohttp.http_exceptions import HttpProcessingError

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


FLUSH_DELAY = 0.005
"""Seconds a line may wait on the event loop before it is written."""


class LineWriter:
    """Writes log lines to a text stream: batched shortly after on a running event loop, at once elsewhere.

    The queue holds finished lines and deferred ones (made at flush time); a flush writes them in queue order.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._queue: list[str | tuple[Any, str, dict[str, Any]]] = []
        self._rendered: list[str] = []
        self._flushing_thread: int | None = None
        self._lock = threading.Lock()
        self._scheduled_on: asyncio.AbstractEventLoop | None = None

    def write_line(self, line: str) -> None:
        if self._flushing_thread == threading.get_ident():
            self._rendered.append(line)  # a deferred line being made by flush()
            return
        with self._lock:
            self._queue.append(line)
        self._schedule()

    def defer(self, emit: Any, event: str, fields: dict[str, Any]) -> None:
        """Make a log line at the next flush: `emit(event, **fields)`, e.g. a bound logger's `info`.

        Lines on the request path are made this way, many at a time, which costs less CPU than one by one between
        requests. The event's time is taken now.
        """
        fields["timestamp"] = time.time()
        with self._lock:
            self._queue.append((emit, event, fields))
        self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._scheduled_on is not loop:
            # A flush scheduled on a loop that has since stopped will never run, so schedule on this one.
            self._scheduled_on = loop
            loop.call_later(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        with self._lock:
            self._scheduled_on = None
            if not self._queue:
                return
            queue, self._queue = self._queue, []
            rendered = self._rendered = []
            self._flushing_thread = threading.get_ident()
            try:
                for entry in queue:
                    if isinstance(entry, str):
                        rendered.append(entry)
                    else:
                        emit, event, fields = entry
                        try:
                            emit(event, **fields)  # renders through structlog into write_line, i.e. `rendered`
                        except Exception as exc:  # one line that cannot be rendered must not cost the batch
                            rendered.append(_ENCODER.encode({"event": "log_line_failed", "error": repr(exc)}))
            finally:
                self._flushing_thread = None
            if not rendered:
                return
            try:
                self.stream.write("\n".join(rendered) + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # stdout is gone (closed pipe): there is nowhere left to log to

    # structlog calls the method named after the level; every level goes to the same place.
    def msg(self, message: str) -> None:
        self.write_line(message)

    log = debug = info = warn = warning = error = err = critical = fatal = exception = failure = msg


class _WriterHandler(logging.Handler):
    """Sends stdlib log records (aiohttp, asyncio) through the same writer, so all lines keep their order."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.write_line(self.format(record))
        except Exception:
            self.handleError(record)


_ENCODER = json.JSONEncoder(default=repr)
_INFO_ON = True
_second: list[Any] = [-1, ""]
"""The last whole second formatted, and its text: most lines share their second with the line before."""


def _add_timestamp(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """ISO 8601 UTC time of the event: now, or when a deferred line's event happened (a float it carries)."""
    when = event_dict.get("timestamp")
    if not isinstance(when, float):
        when = time.time()
    second = int(when)
    if second != _second[0]:
        _second[0], _second[1] = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    event_dict["timestamp"] = f"{_second[1]}.{int((when - second) * 1_000_000):06d}Z"
    return event_dict


def log_later(logger: Any, event: str, **fields: Any) -> None:
    """An info line made at the next flush rather than now: for lines made for every request."""
    if _WRITER is None:
        logger.info(event, **fields)
    elif _INFO_ON:
        _WRITER.defer(logger.info, event, fields)


_WRITER: LineWriter | None = None


def _serialize(obj: Any, **_: Any) -> str:
    return _ENCODER.encode(obj)


def flush_logs() -> None:
    """Write every line still waiting (called at shutdown and at exit)."""
    if _WRITER is not None:
        _WRITER.flush()


class _RedactParserErrors(logging.Filter):
    """aiohttp's parser errors quote the offending header bytes (possibly a bearer token): log only the kind."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and isinstance(exc, HttpProcessingError):
            record.msg = f"bad HTTP request rejected: {type(exc).__name__}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def configure_logging(level: str = "info") -> None:
    """Send JSON lines to stdout at `level`; also routes stdlib logging (aiohttp, asyncio) through the same format."""
    global _WRITER, _INFO_ON
    numeric = _LEVELS.get(level, logging.INFO)
    _INFO_ON = numeric <= logging.INFO
    if _WRITER is None:
        atexit.register(flush_logs)
    else:
        _WRITER.flush()
    writer = _WRITER = LineWriter(sys.stdout)
    renderer = structlog.processors.JSONRenderer(serializer=_serialize)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            _add_timestamp,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *_: writer,
        cache_logger_on_first_use=True,
    )
    handler = _WriterHandler(writer)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                _add_timestamp,
                structlog.processors.format_exc_info,
            ],
        )
    )
    handler.addFilter(_RedactParserErrors())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))
    # aiohttp's access log would duplicate our request line and could carry headers.
    logging.getLogger("aiohttp.access").disabled = True


def get_logger(name: str) -> Any:
    """A structlog logger tagged with the component name."""
    return structlog.get_logger(component=name)


def session_tag(session_id: str | None) -> str | None:
    """First 12 hex digits of sha256(session id): correlates log lines without revealing the id."""
    if not session_id:
        return None
    return hashlib.sha256(session_id.encode()).hexdigest()[:12]
