"""The stdio side: one upstream MCP server per session, newline-delimited JSON both ways.

An `Upstream` is either a child process (stdin/stdout pipes, stderr to the log) or a Unix-socket connection.
Lines are split in the transport's data callback and handed to the session synchronously: no reader task and no
task switch per message. The `Upstream` owns its process, pipes and socket, and `close()` releases all of them:
stdin EOF, then SIGTERM to the process group, then SIGKILL; the child is always reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from gateway import metrics
from gateway.jsonrpc import json_bytes
from gateway.logging import get_logger

log = get_logger("upstream")

STDERR_LINE_MAX = 2000
"""Longer stderr lines are truncated before logging."""
STDERR_LINES_PER_SECOND = 50
"""A chatty upstream cannot flood the log: beyond this rate lines are counted, not logged."""
EARLY_LINES_MAX = 100
"""Lines an upstream may send before its session is attached (a warm process should send none)."""
EXIT_AFTER_EOF = 2.0
TERM_GRACE = 3.0
STDERR_TAIL_LINES = 20
"""stderr lines kept (rate-limited ones too) and logged when an upstream exits by itself."""
STDERR_DRAIN = 0.5
"""Seconds to wait after an exit for the rest of its stderr (a grandchild may hold the pipe open)."""

MessageHandler = Callable[[bytes], None]
CloseHandler = Callable[[str], None]


class UpstreamError(Exception):
    """The upstream could not be started or reached; the message says why."""


class _StderrLog:
    """Logs an upstream's stderr line by line: truncated, rate-limited, never unbounded in memory."""

    def __init__(self, context: dict[str, Any]) -> None:
        self.context = context
        self.pending = bytearray()
        self.window_start = time.monotonic()
        self.in_window = 0
        self.suppressed = 0
        self.tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        """The last lines, for the log line at an exit: the cause of a crash is usually there."""

    def feed(self, data: bytes) -> None:
        pending = self.pending
        pending += data
        start = 0
        while True:
            newline = pending.find(b"\n", start)
            if newline < 0:
                break
            self._line(bytes(pending[start:newline]))
            start = newline + 1
        if start:
            del pending[:start]
        if len(pending) > STDERR_LINE_MAX:
            self._line(bytes(pending))
            pending.clear()

    def _line(self, raw: bytes) -> None:
        if not raw.strip():
            return
        text = raw[:STDERR_LINE_MAX].decode("utf-8", "replace").rstrip("\r")
        self.tail.append(text)
        now = time.monotonic()
        if now - self.window_start >= 1.0:
            self.flush()
            self.window_start, self.in_window = now, 0
        if self.in_window >= STDERR_LINES_PER_SECOND:
            if self.suppressed == 0:
                log.warning("upstream_stderr_rate_limited", lines_per_second=STDERR_LINES_PER_SECOND, **self.context)
            self.suppressed += 1
            return
        self.in_window += 1
        log.info("upstream_stderr", line=text, truncated=len(raw) > STDERR_LINE_MAX, **self.context)

    def flush(self) -> None:
        if self.suppressed:
            log.warning("upstream_stderr_suppressed", lines=self.suppressed, **self.context)
            self.suppressed = 0

    def close(self) -> None:
        if self.pending.strip():
            self._line(bytes(self.pending))
        self.pending.clear()
        self.flush()


class Upstream(asyncio.SubprocessProtocol, asyncio.Protocol):
    """A framed JSON-lines channel to one MCP server; create with `spawn_process` or `connect_socket`."""

    def __init__(self, *, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self.log_context: dict[str, Any] = {}
        self.close_reason: str | None = None
        self.process: asyncio.SubprocessTransport | None = None
        self._socket: asyncio.Transport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._parts: list[bytes] = []
        """Pieces of a line not yet ended by a newline."""
        self._parts_size = 0
        self._early: list[bytes] = []
        self._on_message: MessageHandler | None = None
        self._on_close: CloseHandler | None = None
        self._stderr = _StderrLog(self.log_context)
        loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[None] = loop.create_future()
        self._stderr_closed: asyncio.Future[None] = loop.create_future()
        self._closed = asyncio.Event()
        self._closing = False
        self._killed = False
        self._signalled = False
        """The gateway sent the process a signal (so an exit by signal is not the process's own doing)."""
        self._paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._end_task: asyncio.Task[None] | None = None

    # --- identity and state -------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.process.get_pid() if self.process is not None else None

    @property
    def alive(self) -> bool:
        return not self._closing and not self._exited.done()

    # --- protocol callbacks (process) ---------------------------------------------------------------------

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self._feed(data)
        else:
            self._stderr.feed(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self._ended("closed")
        elif fd == 2 and not self._stderr_closed.done():
            self._stderr_closed.set_result(None)

    def process_exited(self) -> None:
        if not self._exited.done():
            self._exited.set_result(None)
        self._ended("closed")

    # --- protocol callbacks (socket) ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._feed(data)

    def eof_received(self) -> bool | None:
        self._ended("closed")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._socket is not None and not self._exited.done():
            self._exited.set_result(None)
        self._ended("closed")
        self._wake_drain()

    # --- flow control -------------------------------------------------------------------------------------

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_drain()

    def _wake_drain(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def backed_up(self) -> bool:
        """Whether writes wait for the upstream to read (`drain` would wait)."""
        return self._paused and not self._closing

    async def drain(self) -> None:
        """Wait while the upstream is not keeping up, so one session cannot buffer without bound."""
        if not self.backed_up:
            return
        waiter = self._drain_waiter
        if waiter is None or waiter.done():
            waiter = self._drain_waiter = asyncio.get_running_loop().create_future()
        # Shielded: several handlers may wait on it, and one client hanging up must not cancel it for the rest.
        await asyncio.shield(waiter)

    def pause_reading(self) -> None:
        """Stop reading the upstream's output (its writes block) until `resume_reading`: backpressure."""
        transport = self._reading_transport()
        if transport is not None:
            transport.pause_reading()

    def resume_reading(self) -> None:
        transport = self._reading_transport()
        if transport is not None:
            transport.resume_reading()

    def _reading_transport(self) -> asyncio.ReadTransport | None:
        if self._socket is not None:
            transport: Any = self._socket
        elif self.process is not None:
            transport = self.process.get_pipe_transport(1)
        else:
            return None
        if transport is None or transport.is_closing():
            return None
        assert isinstance(transport, asyncio.ReadTransport)
        return transport

    # --- messages -----------------------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        if self._end_task is not None:
            return  # ended (e.g. an oversized line): nothing more is delivered
        if not self._parts and data.endswith(b"\n") and data.count(b"\n") == 1:
            # The common case: exactly one whole message; no copying.
            if len(data) > self.max_message_bytes:
                self._ended("oversized")
            elif len(data) > 1:
                self._deliver(data)
            return
        # Only the new bytes are searched for a newline, and a line that arrived in pieces is joined once.
        start = 0
        while self._end_task is None:
            newline = data.find(b"\n", start)
            if newline < 0:
                break
            size = self._parts_size + newline + 1 - start
            if size > self.max_message_bytes:
                self._ended("oversized")
                return
            if self._parts:
                self._parts.append(data[start : newline + 1])
                line = b"".join(self._parts)
                self._parts.clear()
                self._parts_size = 0
            else:
                line = data[start : newline + 1]
            if size > 1:
                self._deliver(line)
            start = newline + 1
        if start < len(data) and self._end_task is None:
            rest = data[start:] if start else data
            self._parts.append(rest)
            self._parts_size += len(rest)
            if self._parts_size > self.max_message_bytes:
                self._ended("oversized")

    def _deliver(self, line: bytes) -> None:
        handler = self._on_message
        if handler is None:
            if len(self._early) < EARLY_LINES_MAX:
                self._early.append(line)
            return
        try:
            handler(line)
        except Exception:
            log.exception("upstream_message_handler_failed", **self.log_context)

    def start(self, on_message: MessageHandler, on_close: CloseHandler) -> None:
        """Begin delivering lines to `on_message`; `on_close(reason)` runs once when the channel ends."""
        self._on_message = on_message
        self._on_close = on_close
        early, self._early = self._early, []
        for line in early:
            self._deliver(line)
        if self._end_task is not None and self._closed.is_set():
            self._notify_close()

    def send(self, line: bytes) -> None:
        """Queue one JSON message (without newline) for the upstream."""
        if b"\n" in line or b"\r" in line:
            # Raw newlines can only be insignificant whitespace in valid JSON; the framing needs one line.
            line = line.replace(b"\r", b" ").replace(b"\n", b" ")
        writer = self._stdin if self._stdin is not None else self._socket
        if writer is None or writer.is_closing() or self._closing:
            return
        writer.write(line + b"\n")

    def forward(self, messages: list[dict[str, Any]], raw: bytes | None) -> None:
        """Client messages for this upstream: `raw` (their body as received) when given, else each one encoded."""
        if raw is not None:
            self.send(raw)
            return
        for message in messages:
            self.send(json_bytes(message))

    # --- ending -------------------------------------------------------------------------------------------

    def _ended(self, reason: str) -> None:
        """The channel ended by itself (EOF, exit, oversized line): close the rest once, in the background."""
        if self._closing or self._end_task is not None:
            return
        if reason == "oversized":
            self._parts.clear()
            self._parts_size = 0
            log.warning("upstream_message_too_large", limit=self.max_message_bytes, **self.log_context)
        self._end_task = asyncio.get_running_loop().create_task(self._shutdown(reason, initiated=False))

    async def close(self, reason: str = "closed") -> None:
        """End the channel and release everything it owns; safe to call more than once."""
        await self._shutdown(reason, initiated=True)

    async def _shutdown(self, reason: str, *, initiated: bool) -> None:
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self._wake_drain()
        try:
            await self._terminate(EXIT_AFTER_EOF if initiated else 0.5)
        finally:
            # Whatever failed above, the channel counts as closed and its session hears of it.
            try:
                exit_reason = self._exit_reason(reason)
                self.close_reason = exit_reason if reason == "closed" else reason
                metrics.UPSTREAM_EXITS.labels(exit_reason).inc()
                self._stderr.close()
                if not initiated:
                    self._log_exit()
            finally:
                self._closed.set()
                self._notify_close()

    def exit_description(self) -> str:
        """How the upstream ended, for the client: the exit status or signal, never its stderr (it may hold secrets)."""
        if self.process is None:
            return "upstream server connection closed"
        code = self.process.get_returncode()
        if self._signalled:
            what = "upstream server process closed its output and was stopped by the gateway"
        elif code is None:
            what = "upstream server process exited"
        elif code < 0:
            what = f"upstream server process was killed by signal {-code}{_signal_name(-code)}"
        else:
            what = f"upstream server process exited with status {code}"
        return f"{what}; its stderr is in the gateway log"

    def _log_exit(self) -> None:
        """One line when an upstream ends by itself: how, and the last stderr lines, which usually say why."""
        fields: dict[str, Any] = {"reason": self.close_reason}
        code = self.process.get_returncode() if self.process is not None else None
        if code is not None and code >= 0:
            fields["status"] = code
        elif code is not None:
            fields["signal"] = -code
        log.warning("upstream_exited", stderr_tail=list(self._stderr.tail), **fields, **self.log_context)

    def _notify_close(self) -> None:
        callback, self._on_close = self._on_close, None
        if callback is not None:
            try:
                callback(self.close_reason or "closed")
            except Exception:
                log.exception("upstream_close_callback_failed", **self.log_context)

    def _exit_reason(self, reason: str) -> str:
        if self.process is None:
            return "closed"
        if self._killed:
            return "killed"
        code = self.process.get_returncode()
        if code is None:
            return reason
        if code == 0:
            return "exit_zero"
        return "signal" if code < 0 else "exit_nonzero"

    async def _terminate(self, wait_eof: float) -> None:
        """For a process: stdin EOF, wait, SIGTERM to its group, wait, SIGKILL; then reap and close the pipes."""
        if self._socket is not None:
            self._socket.close()
            return
        if self._stdin is not None:
            self._stdin.close()
        if self.process is None:
            return
        if not await self._wait_exit(wait_eof):
            self._signal(signal.SIGTERM)
            if not await self._wait_exit(TERM_GRACE):
                self._killed = True
                self._signal(signal.SIGKILL)
                await self._wait_exit(30.0)
        if self._exited.done():
            # The last stderr lines (often the reason for an exit) may still be in the pipe.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._stderr_closed), STDERR_DRAIN)
        # Closing the subprocess transport closes any pipe still open; the child watcher has reaped the process.
        self.process.close()

    async def _wait_exit(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(asyncio.shield(self._exited), seconds)
            return True
        except TimeoutError:
            return False

    def _signal(self, sig: signal.Signals) -> None:
        process = self.process
        if process is None or process.get_returncode() is not None:
            return
        pid = process.get_pid()
        self._signalled = True
        try:
            # The child leads its own process group, so wrappers (sh -c, socat EXEC) die with it.
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)


def _signal_name(number: int) -> str:
    try:
        return f" ({signal.Signals(number).name})"
    except ValueError:
        return ""


async def spawn_process(argv: Sequence[str], *, max_message_bytes: int) -> Upstream:
    """Start the upstream command with pipes on stdin/stdout/stderr, in its own process group."""
    loop = asyncio.get_running_loop()
    upstream = Upstream(max_message_bytes=max_message_bytes)
    started = time.perf_counter()
    try:
        transport, _ = await loop.subprocess_exec(
            lambda: upstream,
            *argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        raise UpstreamError(f"cannot start upstream command {argv[0]!r}: {exc.strerror or exc}") from None
    metrics.UPSTREAM_SPAWN_DURATION.observe(time.perf_counter() - started)
    upstream.process = transport
    stdin = transport.get_pipe_transport(0)
    assert isinstance(stdin, asyncio.WriteTransport)
    upstream._stdin = stdin
    upstream.log_context["upstream_pid"] = transport.get_pid()
    return upstream


async def connect_socket(path: str, *, max_message_bytes: int) -> Upstream:
    """Connect one Unix-socket stream to the upstream, e.g. a socat listener that forks a server per connection."""
    loop = asyncio.get_running_loop()
    upstream = Upstream(max_message_bytes=max_message_bytes)
    started = time.perf_counter()
    try:
        transport, _ = await loop.create_unix_connection(lambda: upstream, path)
    except OSError as exc:
        raise UpstreamError(f"cannot connect to upstream socket {path!r}: {exc.strerror or exc}") from None
    metrics.UPSTREAM_SPAWN_DURATION.observe(time.perf_counter() - started)
    upstream._socket = transport
    return upstream
