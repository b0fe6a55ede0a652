"""Structured logging: one JSON object per line on stdout, via structlog.

Nothing here ever logs headers; callers pass only the fields they mean to publish. Session ids are logged as a
short hash (`session_tag`) so a log reader can correlate lines without being able to hijack a session.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from typing import Any

import structlog
from aiohttp.http_exceptions import HttpProcessingError

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


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
    numeric = _LEVELS.get(level, logging.INFO)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=structlog.processors.JSONRenderer(),
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
