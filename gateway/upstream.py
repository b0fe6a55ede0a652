"""The stdio side: one upstream MCP server per session, newline-delimited JSON both ways.

An `Upstream` is either a child process (stdin/stdout pipes, stderr to the log) or a Unix-socket connection.
It owns its process, pipes, socket and tasks, and `close()` releases all of them: stdin EOF, then SIGTERM to the
process group, then SIGKILL, and the child is always reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

from gateway import metrics
from gateway.logging import get_logger

log = get_logger("upstream")

STDERR_LINE_MAX = 2000
"""Longer stderr lines are truncated before logging."""
STDERR_LINES_PER_SECOND = 50
"""A chatty upstream cannot flood the log: beyond this rate lines are counted, not logged."""
_DRAIN_ABOVE = 1024 * 1024

MessageHandler = Callable[[bytes], None]
CloseHandler = Callable[[str], None]


class UpstreamError(Exception):
    """The upstream could not be started or reached; the message says why."""


class Upstream:
    """A framed JSON-lines channel to one MCP server; create with `spawn_process` or `connect_socket`."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        process: asyncio.subprocess.Process | None,
        label: str,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.process = process
        self.label = label
        self._on_message: MessageHandler | None = None
        self._on_close: CloseHandler | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._exit_task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._closing = False
        self._killed = False
        self.close_reason: str | None = None
        self.log_context: dict[str, Any] = {}

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        if self._closing or self._closed.is_set():
            return False
        return self.process is None or self.process.returncode is None

    def start(self, on_message: MessageHandler, on_close: CloseHandler) -> None:
        """Begin delivering lines to `on_message`; `on_close(reason)` runs once when the channel ends."""
        self._on_message = on_message
        self._on_close = on_close
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop(), name=f"upstream-read-{self.label}")

    def send(self, line: bytes) -> None:
        """Queue one JSON message (without newline) for the upstream."""
        if b"\n" in line or b"\r" in line:
            # Raw newlines can only be insignificant whitespace in valid JSON; the framing needs one line.
            line = line.replace(b"\r", b" ").replace(b"\n", b" ")
        if self._writer.is_closing():
            return
        self._writer.write(line + b"\n")

    async def drain(self) -> None:
        """Wait when the upstream is not keeping up, so one session cannot buffer without bound."""
        transport = self._writer.transport
        if transport.get_write_buffer_size() > _DRAIN_ABOVE and not self._writer.is_closing():
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()

    async def _read_loop(self) -> None:
        reason = "closed"
        reader = self._reader
        on_message = self._on_message
        assert on_message is not None
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    if exc.partial.strip():
                        on_message(exc.partial)
                    break
                except asyncio.LimitOverrunError:
                    reason = "oversized"
                    break
                if len(line) > 1:
                    on_message(line)
        except (ConnectionError, OSError):
            reason = "closed"
        except Exception:
            log.exception("upstream_reader_failed", **self.log_context)
            reason = "error"
        finally:
            # Runs on its own task so close() may await it without awaiting itself.
            if reason == "oversized":
                log.warning("upstream_message_too_large", **self.log_context)
            if not self._closing:
                self._exit_task = asyncio.get_running_loop().create_task(self._shutdown(reason, initiated=False))

    async def _shutdown(self, reason: str, *, initiated: bool) -> None:
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            await self._terminate(wait_eof=2.0 if initiated else 0.5)
        finally:
            exit_reason = self._exit_reason(reason)
            self.close_reason = exit_reason if reason == "closed" else reason
            metrics.UPSTREAM_EXITS.labels(exit_reason).inc()
            self._closed.set()
            if self._on_close is not None:
                callback, self._on_close = self._on_close, None
                try:
                    callback(self.close_reason)
                except Exception:
                    log.exception("upstream_close_callback_failed", **self.log_context)

    def _exit_reason(self, reason: str) -> str:
        if self.process is None:
            return "closed"
        code = self.process.returncode
        if self._killed:
            return "killed"
        if code is None:
            return reason
        if code == 0:
            return "exit_zero"
        return "signal" if code < 0 else "exit_nonzero"

    async def _terminate(self, wait_eof: float) -> None:
        """Close the channel; for a process: EOF, SIGTERM to its group, SIGKILL; then reap and close pipes."""
        writer = self._writer
        with contextlib.suppress(Exception):
            writer.close()
        proc = self.process
        if proc is not None:
            if not await _wait_exit(proc, wait_eof):
                self._signal(signal.SIGTERM)
                if not await _wait_exit(proc, 3.0):
                    self._killed = True
                    self._signal(signal.SIGKILL)
                    await _wait_exit(proc, 10.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 2.0)
        current = asyncio.current_task()
        for task in (self._read_task, self._stderr_task):
            if task is not None and task is not current and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if proc is not None:
            transport = getattr(proc, "_transport", None)
            if transport is not None:
                # Closing the subprocess transport closes any pipe still open; the process is already reaped.
                transport.close()

    def _signal(self, sig: signal.Signals) -> None:
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        try:
            # The child leads its own process group, so wrappers (sh -c, socat EXEC) die with it.
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    async def close(self, reason: str = "closed") -> None:
        """End the channel and release everything it owns; safe to call more than once."""
        await self._shutdown(reason, initiated=True)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def start_stderr_logging(self) -> None:
        if self.process is None or self.process.stderr is None or self._stderr_task is not None:
            return
        self._stderr_task = asyncio.get_running_loop().create_task(
            _log_stderr(self.process.stderr, self.log_context), name=f"upstream-stderr-{self.label}"
        )


async def _wait_exit(proc: asyncio.subprocess.Process, seconds: float) -> bool:
    try:
        await asyncio.wait_for(proc.wait(), seconds)
        return True
    except TimeoutError:
        return False


async def _log_stderr(stream: asyncio.StreamReader, context: dict[str, Any]) -> None:
    """Log the upstream's stderr line by line: truncated, rate-limited, never unbounded."""
    pending = b""
    window_start = time.monotonic()
    in_window = 0
    suppressed = 0
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            break
        pending += chunk
        lines = pending.split(b"\n")
        pending = lines.pop()
        if len(pending) > STDERR_LINE_MAX:
            lines.append(pending)
            pending = b""
        for raw in lines:
            if not raw.strip():
                continue
            now = time.monotonic()
            if now - window_start >= 1.0:
                if suppressed:
                    log.warning("upstream_stderr_suppressed", lines=suppressed, **context)
                window_start, in_window, suppressed = now, 0, 0
            if in_window >= STDERR_LINES_PER_SECOND:
                if suppressed == 0:
                    log.warning("upstream_stderr_rate_limited", lines_per_second=STDERR_LINES_PER_SECOND, **context)
                suppressed += 1
                continue
            in_window += 1
            text = raw[:STDERR_LINE_MAX].decode("utf-8", "replace").rstrip("\r")
            log.info("upstream_stderr", line=text, truncated=len(raw) > STDERR_LINE_MAX, **context)
    if pending.strip():
        log.info("upstream_stderr", line=pending[:STDERR_LINE_MAX].decode("utf-8", "replace"), **context)
    if suppressed:
        log.warning("upstream_stderr_suppressed", lines=suppressed, **context)


async def spawn_process(argv: Sequence[str], *, max_message_bytes: int, label: str) -> Upstream:
    """Start the upstream command with pipes on stdin/stdout/stderr, in its own process group."""
    started = time.perf_counter()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=max_message_bytes,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        raise UpstreamError(f"cannot start upstream command {argv[0]!r}: {exc.strerror or exc}") from None
    metrics.UPSTREAM_SPAWN_DURATION.observe(time.perf_counter() - started)
    assert proc.stdin is not None and proc.stdout is not None
    writer = proc.stdin
    upstream = Upstream(proc.stdout, writer, process=proc, label=label)
    upstream.log_context = {"upstream_pid": proc.pid}
    upstream.start_stderr_logging()
    return upstream


async def connect_socket(path: str, *, max_message_bytes: int, label: str) -> Upstream:
    """Connect one Unix-socket stream to the upstream, e.g. a socat listener that forks a server per connection."""
    started = time.perf_counter()
    try:
        reader, writer = await asyncio.open_unix_connection(path, limit=max_message_bytes)
    except OSError as exc:
        raise UpstreamError(f"cannot connect to upstream socket {path!r}: {exc.strerror or exc}") from None
    metrics.UPSTREAM_SPAWN_DURATION.observe(time.perf_counter() - started)
    return Upstream(reader, writer, process=None, label=label)
