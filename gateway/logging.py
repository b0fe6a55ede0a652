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
    """Writes log lines to a text stream: batched shortly after on a running event loop, at once elsewhere."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._scheduled_on: asyncio.AbstractEventLoop | None = None

    def write_line(self, line: str) -> None:
        self._lines.append(line)
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
            if not self._lines:
                return
            lines, self._lines = self._lines, []
            try:
                self.stream.write("\n".join(lines) + "\n")
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
    global _WRITER
    numeric = _LEVELS.get(level, logging.INFO)
    if _WRITER is None:
        atexit.register(flush_logs)
    else:
        _WRITER.flush()
    writer = _WRITER = LineWriter(sys.stdout)
    renderer = structlog.processors.JSONRenderer(serializer=_serialize)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
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
                structlog.processors.TimeStamper(fmt="iso", utc=True),
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
