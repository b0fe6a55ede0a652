"""Session table and message routing between the HTTP side and each session's upstream.

A `Session` owns one `Upstream`, the requests in flight (`Pending`) and its SSE `Stream`s. Each upstream line's
envelope (id, method, params.progressToken) is read by `gateway.envelope` (a small line is parsed, a large one read
from its ends) and the line is forwarded as the same bytes; only a tools/list result filtered by the authenticator
is re-serialized.

Streams are logical: a request stream lives until its responses are delivered and may be attached to several HTTP
connections in turn (the POST that opened it, then GETs resuming with Last-Event-ID). Event ids are
"<stream>-<seq>" with a session-wide sequence, so they are unique within the session and name their stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from gateway import metrics
from gateway.config import GatewayConfig
from gateway.envelope import Envelope, read_envelope
from gateway.logging import get_logger, log_later, session_tag
from gateway.security import Authenticator, Principal
from gateway.upstream import Upstream, UpstreamError, connect_socket, spawn_process

log = get_logger("sessions")
audit_log = get_logger("audit")

HANDSHAKE_VERSIONS: tuple[str, ...] = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
PRIMING_FROM = HANDSHAKE_VERSIONS.index("2025-11-25")
GET_STREAM = 0
RETIRED_STREAMS_KEPT = 32
RETIRED_BYTES_KEPT = 4 * 1024 * 1024
OUTBOX_LIMIT = 4 * 1024 * 1024
"""Bytes queued for one slow SSE connection before the upstream is paused."""
MAX_KNOWN_TOOLS = 1000
INTERNAL_ERROR = -32603
"""The code of every error the gateway answers for the upstream: it exited, timed out, or the session ended."""
SESSION_CLOSING_ERRORS = {
    "oversized": "upstream message exceeds MAX_MESSAGE_BYTES",
    "shutdown": "gateway shutting down",
    "client_delete": "session deleted",
    "idle_timeout": "session idle timeout",
    "error": "upstream failed",
}


def supports_priming(version: str | None) -> bool:
    """The 2025-11-25 priming event (id + empty data) confuses older clients, so only send it to newer ones."""
    return version in HANDSHAKE_VERSIONS and HANDSHAKE_VERSIONS.index(version) >= PRIMING_FROM


def error_message(msg_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": msg_id, "error": error}


def json_bytes(obj: Any) -> bytes:
    """Compact UTF-8 JSON, as the gateway writes its own messages."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate (a client's id "\\ud800" is valid JSON) has no UTF-8 form; as an escape it goes back
        # exactly as the client wrote it.
        return json.dumps(obj, separators=(",", ":")).encode()


class Stream:
    """One SSE stream of a session: its replay buffer and the connection currently draining it, if any."""

    __slots__ = (
        "attached",
        "bytes",
        "delivered_seq",
        "events",
        "finished",
        "json_mode",
        "open_requests",
        "outbox",
        "outbox_bytes",
        "sid",
        "waiter",
    )

    def __init__(self, sid: int, replay: int, *, json_mode: bool = False) -> None:
        self.sid = sid
        # A JSON reply needs every response of its batch, so only SSE streams cap what they keep.
        self.events: deque[tuple[int, bytes]] = deque(maxlen=None if json_mode else replay)
        self.outbox: deque[tuple[int, bytes]] = deque()
        self.outbox_bytes = 0
        self.attached: object | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.open_requests = 0
        self.finished = False
        self.json_mode = json_mode
        self.delivered_seq = 0
        self.bytes = 0
        """Bytes ever pushed: an upper bound of what the replay buffer holds."""

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def push(self, seq: int, frame: bytes) -> None:
        self.events.append((seq, frame))
        self.bytes += len(frame)
        if self.attached is not None:
            self.outbox.append((seq, frame))
            self.outbox_bytes += len(frame)
            self.wake()

    def attach(self, token: object, after_seq: int | None) -> None:
        """Make `token`'s connection the reader; queue buffered events newer than `after_seq` (None: undelivered)."""
        if self.attached is not None and self.attached is not token:
            self.wake()  # the previous connection notices it was replaced and ends
        self.attached = token
        start = self.delivered_seq if after_seq is None else after_seq
        self.outbox = deque(item for item in self.events if item[0] > start)
        self.outbox_bytes = sum(len(frame) for _, frame in self.outbox)

    def detach(self, token: object) -> None:
        if self.attached is token:
            self.attached = None
            self.outbox.clear()
            self.outbox_bytes = 0

    def take_outbox(self) -> deque[tuple[int, bytes]]:
        """Everything queued for the connection; the caller writes it."""
        frames, self.outbox = self.outbox, deque()
        self.outbox_bytes = 0
        return frames

    def finish(self) -> None:
        self.finished = True
        self.wake()


class Pending:
    """A client request forwarded upstream and not yet answered."""

    __slots__ = ("arg_names", "method", "principal", "progress_token", "started", "stream", "timer", "tool")

    def __init__(self, method: str, stream: Stream, principal: Principal | None) -> None:
        self.method = method
        self.stream = stream
        self.principal = principal
        self.started = time.perf_counter()
        self.progress_token: Any = None
        self.tool: str | None = None
        self.arg_names: list[str] = []
        self.timer: asyncio.TimerHandle | None = None
        """Fires at REQUEST_TIMEOUT if the upstream has not answered by then."""


class Session:
    """One MCP session: an upstream, requests in flight, SSE streams."""

    def __init__(self, manager: SessionManager, session_id: str, upstream: Upstream, subject: str | None) -> None:
        self.manager = manager
        self.id = session_id
        self.tag = session_tag(session_id) or ""
        self.upstream = upstream
        self.subject = subject
        self.protocol_version: str | None = None
        self.pending: dict[Any, Pending] = {}
        self.progress: dict[Any, Pending] = {}
        self.streams: dict[int, Stream] = {}
        self.retired: OrderedDict[int, Stream] = OrderedDict()
        self.retired_bytes = 0
        self.pressured: set[Stream] = set()
        self.get_stream = Stream(GET_STREAM, manager.config.replay_buffer)
        self._next_sid = 1
        self._seq = 0
        self.last_activity = time.monotonic()
        self.closed = False
        self.close_reason: str | None = None
        self.close_message = "session ended"
        """What requests still in flight were told when the session ended."""
        self._loop = asyncio.get_running_loop()
        upstream.log_context["session"] = self.tag

    # --- streams -------------------------------------------------------------------------------------------

    def new_stream(self, *, json_mode: bool = False) -> Stream:
        stream = Stream(self._next_sid, self.manager.config.replay_buffer, json_mode=json_mode)
        self._next_sid += 1
        self.streams[stream.sid] = stream
        return stream

    def retire(self, stream: Stream) -> None:
        """Keep a finished stream briefly (bounded in count and bytes) so a client can still resume it."""
        if self.streams.pop(stream.sid, None) is None or stream.json_mode:
            return
        self.retired[stream.sid] = stream
        self.retired_bytes += stream.bytes
        while self.retired and (len(self.retired) > RETIRED_STREAMS_KEPT or self.retired_bytes > RETIRED_BYTES_KEPT):
            _, evicted = self.retired.popitem(last=False)
            self.retired_bytes -= evicted.bytes

    def find_stream(self, sid: int) -> Stream | None:
        if sid == GET_STREAM:
            return self.get_stream
        return self.streams.get(sid) or self.retired.get(sid)

    def next_event_id(self, stream: Stream) -> tuple[int, bytes]:
        self._seq += 1
        return self._seq, f"{stream.sid}-{self._seq}".encode()

    def priming_frame(self, stream: Stream) -> bytes:
        """An event with an id and empty data, so the client can resume even before the first message."""
        seq, eid = self.next_event_id(stream)
        stream.delivered_seq = max(stream.delivered_seq, seq)
        retry = self.manager.config.sse_retry_ms
        return b"id: " + eid + b"\nretry: " + str(retry).encode() + b"\ndata: \n\n"

    def deliver(self, stream: Stream, payload: bytes) -> None:
        """Send one JSON-RPC message (bytes, possibly ending in a newline) as an SSE event on `stream`."""
        if stream.json_mode:
            stream.events.append((0, payload))
            stream.wake()
            return
        seq, eid = self.next_event_id(stream)
        # One copy of the payload, however large: the frame is joined from its parts.
        data = memoryview(payload)[:-1] if payload.endswith(b"\n") else payload
        stream.push(seq, b"".join((b"id: ", eid, b"\ndata: ", data, b"\n\n")))
        if stream.outbox_bytes > OUTBOX_LIMIT and stream not in self.pressured:
            # A slow client: stop reading the upstream (its writes block) rather than buffer without bound.
            self.pressured.add(stream)
            self.upstream.pause_reading()

    def relieve(self, stream: Stream) -> None:
        """The connection caught up (or left): read the upstream again once no stream is backed up."""
        if stream in self.pressured and stream.outbox_bytes <= OUTBOX_LIMIT:
            self.pressured.discard(stream)
            if not self.pressured:
                self.upstream.resume_reading()

    # --- client -> upstream -------------------------------------------------------------------------------

    def register(self, msg_id: Any, method: str, params: Any, stream: Stream, principal: Principal | None) -> Pending:
        pending = Pending(method, stream, principal)
        if isinstance(params, dict):
            meta = params.get("_meta")
            if isinstance(meta, dict):
                token = meta.get("progressToken")
                if isinstance(token, (str, int)):
                    pending.progress_token = token
                    self.progress[token] = pending
            if method == "tools/call":
                name = params.get("name")
                pending.tool = name if isinstance(name, str) else ""
                arguments = params.get("arguments")
                if isinstance(arguments, dict):
                    pending.arg_names = sorted(str(k) for k in arguments)
        self.pending[msg_id] = pending
        stream.open_requests += 1
        timeout = self.manager.config.request_timeout
        if timeout > 0:
            pending.timer = self._loop.call_later(timeout, self._timed_out, msg_id, pending)
        return pending

    def cancel(self, msg_id: Any) -> None:
        """The client cancelled a request: the upstream will not answer it, so end its stream without a response."""
        pending = self.pending.pop(msg_id, None)
        if pending is None:
            return
        self._forget(pending)
        self._audit(pending, "cancelled")
        self._request_done(pending.stream)

    def _timed_out(self, msg_id: Any, pending: Pending) -> None:
        """REQUEST_TIMEOUT passed without an answer: tell the client, and tell the upstream to stop working on it."""
        if self.pending.get(msg_id) is not pending:
            return
        del self.pending[msg_id]
        self._forget(pending)
        timeout = f"{self.manager.config.request_timeout:g}"
        log.warning("upstream_request_timeout", session=self.tag, method=pending.method[:100], seconds=timeout)
        self._audit(pending, "timeout")
        reason = f"no answer within REQUEST_TIMEOUT ({timeout} s)"
        cancelled = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": msg_id, "reason": reason},
        }
        self.upstream.send(json_bytes(cancelled))
        text = f"Request timed out: the upstream server sent no answer within REQUEST_TIMEOUT ({timeout} s)"
        self.deliver(pending.stream, json_bytes(error_message(msg_id, INTERNAL_ERROR, text)))
        self._request_done(pending.stream)
        if pending.method == "initialize":
            # A session whose handshake never finished is of no use to anyone.
            self.manager.close_later(self, "error")

    def _forget(self, pending: Pending) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        if pending.progress_token is not None:
            self.progress.pop(pending.progress_token, None)

    def _request_done(self, stream: Stream) -> None:
        stream.open_requests -= 1
        if stream.open_requests <= 0:
            stream.finish()
            if stream.attached is None:
                # No SSE connection is reading it (the client hung up), or it is a JSON reply whose handler holds
                # its own reference: either way the session's table need not keep it open.
                self.retire(stream)

    # --- upstream -> client -------------------------------------------------------------------------------

    def on_upstream_message(self, line: bytes) -> None:
        """Route one upstream line: a response to its request's stream, anything else to the best stream."""
        try:
            envelope = read_envelope(line)
        except ValueError:
            log.warning("upstream_invalid_json", session=self.tag, size=len(line))
            return
        if envelope is None:
            log.warning("upstream_unexpected_message", session=self.tag)
            return
        method = envelope.method
        if method is None:
            self._on_response(envelope, line)
            return
        target: Stream | None = None
        if method == "notifications/progress":
            message = envelope.full()
            params = message.get("params") if message is not None else None
            if isinstance(params, dict):
                token = params.get("progressToken")
                owner = self.progress.get(token) if isinstance(token, (str, int)) else None
                if owner is not None:
                    target = owner.stream
        if target is None and len(self.pending) == 1:
            # With exactly one request in flight, a server request or notification almost surely belongs to it.
            target = next(iter(self.pending.values())).stream
        if target is None or target.json_mode or target.finished:
            target = self.get_stream
        self.deliver(target, line)

    def _on_response(self, envelope: Envelope, line: bytes) -> None:
        msg_id = envelope.id
        pending = self.pending.pop(msg_id, None) if isinstance(msg_id, (str, int)) else None
        if pending is None:
            log.warning("upstream_response_unmatched", session=self.tag)
            return
        self._forget(pending)
        self.last_activity = time.monotonic()  # a long call must not leave the session looking idle at its end
        method = pending.method
        result: Any = None
        try:
            if method in ("tools/list", "initialize"):
                # The only answers whose result the gateway reads: these are decoded whatever their size.
                message = envelope.full()
                result = message.get("result") if message is not None else None
            if method == "tools/list" and isinstance(result, dict):
                self.manager.learn_tools(result.get("tools"))
                auth = self.manager.authenticator
                if auth is not None and pending.principal is not None and envelope.message is not None:
                    line = json_bytes(auth.filter_result(pending.principal, method, envelope.message))
            elif method == "initialize" and isinstance(result, dict):
                version = result.get("protocolVersion")
                self.protocol_version = version if isinstance(version, str) else None
        except Exception:
            # A bug here (or in the authenticator's filter) must not leave the client waiting, nor pass on an
            # answer that was meant to be filtered.
            log.exception("upstream_response_failed", session=self.tag, method=method[:100])
            text = "Internal error: the gateway could not process the upstream server's answer"
            line = json_bytes(error_message(msg_id, INTERNAL_ERROR, text))
            result = None
        self.deliver(pending.stream, line)
        self._request_done(pending.stream)
        if method == "tools/call":
            self._audit(pending, "error" if envelope.result_is_error() else "success")
        if method == "initialize" and not isinstance(result, dict):
            # A refused handshake leaves nothing to talk to; end the session once the error is on its way.
            self.manager.close_later(self, "error")

    def _audit(self, pending: Pending, outcome: str) -> None:
        if pending.method != "tools/call":
            return
        record_tool_call(
            self.manager,
            pending.principal,
            pending.tool or "",
            pending.arg_names,
            outcome,
            (time.perf_counter() - pending.started) * 1000.0,
            self.tag,
        )

    def on_upstream_closed(self, reason: str) -> None:
        """The upstream ended (exit, crash, oversized line): fail what is in flight and end the session."""
        if self.closed:
            return
        if reason == "oversized":
            self.manager.end_session(self, "error", upstream_reason=reason)
        else:
            message = self.upstream.exit_description()
            self.manager.end_session(self, "upstream_exit", upstream_reason=reason, message=message)

    def fail_all(self, message: str) -> None:
        """Answer every request in flight with an error carrying `message`, then end every stream."""
        pending, self.pending = self.pending, {}
        self.progress.clear()
        try:
            for msg_id, item in pending.items():
                try:
                    if item.timer is not None:
                        item.timer.cancel()
                    self._audit(item, "failed")
                    self.deliver(item.stream, json_bytes(error_message(msg_id, INTERNAL_ERROR, message)))
                    self._request_done(item.stream)
                except Exception:
                    log.exception("session_fail_request_failed", session=self.tag)
        finally:
            # Every client stream ends, whatever happened above: none may wait for an answer that cannot come.
            for stream in list(self.streams.values()):
                stream.finish()
            self.get_stream.finish()

    @property
    def busy(self) -> bool:
        if self.pending or self.get_stream.attached is not None:
            return True
        return any(s.attached is not None for s in self.streams.values())


_TOOL_CALL_CHILDREN: dict[tuple[str, str], Any] = {}
"""Bounded like the label values: known tools (at most MAX_KNOWN_TOOLS, plus "other") times outcomes."""


def record_tool_call(
    manager: SessionManager,
    principal: Principal | None,
    tool: str,
    arg_names: list[str],
    outcome: str,
    duration_ms: float,
    session: str | None,
) -> None:
    """One audit line (made at the next log flush) and one metric sample per tools/call.

    Argument values never leave the gateway.
    """
    label = tool if tool in manager.known_tools else metrics.OTHER
    child = _TOOL_CALL_CHILDREN.get((label, outcome))
    if child is None:
        child = _TOOL_CALL_CHILDREN[(label, outcome)] = metrics.TOOL_CALLS.labels(label, outcome)
    child.inc()
    log_later(
        audit_log,
        "tool_call",
        subject=principal.subject if principal is not None else "anonymous",
        client_id=principal.client_id if principal is not None else None,
        tool=tool,
        arguments=arg_names,
        outcome=outcome,
        duration_ms=round(duration_ms, 3),
        session=session,
    )


class SessionLimit(Exception):
    """No room for another session (MAX_SESSIONS reached or draining)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SessionManager:
    """Creates, finds, reaps and closes sessions; owns the warm pool and every upstream."""

    def __init__(self, config: GatewayConfig, authenticator: Authenticator | None = None) -> None:
        self.config = config
        self.authenticator = authenticator
        self.sessions: dict[str, Session] = {}
        self.known_tools: set[str] = set()
        self.draining = False
        self._creating = 0
        self._pool: deque[Upstream] = deque()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refill_task: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._labels = 0
        self.on_drained: Callable[[], None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap_loop(), name="session-reaper")
        self._schedule_refill()

    async def drain(self, grace: float) -> None:
        """Refuse new work, give in-flight requests up to `grace` seconds, then close every session."""
        self.draining = True
        for session in list(self.sessions.values()):
            session.get_stream.finish()
        deadline = time.monotonic() + grace
        # Polling: the condition spans every session, and drain happens once per process lifetime.
        while time.monotonic() < deadline and any(s.pending for s in self.sessions.values()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await self.close()

    async def close(self) -> None:
        self.draining = True
        for task in (self._reaper, self._refill_task):
            if task is not None:
                task.cancel()
                # A task that died of a bug must not keep the sessions below from being closed.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for session in list(self.sessions.values()):
            self.end_session(session, "shutdown")
        while self._pool:
            self._spawn_task(self._pool.popleft().close("shutdown"))
        metrics.WARM_POOL_SIZE.set(0)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- sessions -----------------------------------------------------------------------------------------

    def get(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)

    async def create(self, subject: str | None) -> Session:
        """Start (or take from the pool) an upstream and register a new session; raises SessionLimit/UpstreamError."""
        if self.draining:
            metrics.SESSIONS_REJECTED.labels("draining").inc()
            raise SessionLimit("draining")
        if len(self.sessions) + self._creating >= self.config.max_sessions:
            metrics.SESSIONS_REJECTED.labels("max_sessions").inc()
            raise SessionLimit("max_sessions")
        self._creating += 1
        try:
            upstream = self._take_warm()
            if upstream is None:
                try:
                    upstream = await self._open_upstream()
                except UpstreamError:
                    metrics.SESSIONS_REJECTED.labels("upstream_error").inc()
                    raise
            self._schedule_refill()
        finally:
            self._creating -= 1
        if self.draining:
            self._spawn_task(upstream.close("shutdown"))
            metrics.SESSIONS_REJECTED.labels("draining").inc()
            raise SessionLimit("draining")
        session_id = secrets.token_urlsafe(32)
        session = Session(self, session_id, upstream, subject)
        self.sessions[session_id] = session
        upstream.start(session.on_upstream_message, session.on_upstream_closed)
        metrics.SESSIONS_OPENED.inc()
        metrics.SESSIONS_ACTIVE.set(len(self.sessions))
        log.info("session_opened", session=session.tag, upstream_pid=upstream.pid)
        return session

    async def _open_upstream(self) -> Upstream:
        self._labels += 1
        if self.config.upstream_socket:
            return await connect_socket(
                self.config.upstream_socket, max_message_bytes=self.config.max_message_bytes, label=str(self._labels)
            )
        return await spawn_process(
            self.config.upstream_command, max_message_bytes=self.config.max_message_bytes, label=str(self._labels)
        )

    def end_session(
        self, session: Session, reason: str, upstream_reason: str | None = None, message: str | None = None
    ) -> None:
        """Remove the session now; fail its in-flight requests; close its upstream in the background.

        `message` is what requests in flight are told (by default, one per reason). The upstream is closed even
        when failing the requests goes wrong.
        """
        if session.closed:
            return
        session.closed = True
        session.close_reason = reason
        self.sessions.pop(session.id, None)
        if message is None:
            key = upstream_reason if upstream_reason in SESSION_CLOSING_ERRORS else reason
            message = SESSION_CLOSING_ERRORS.get(key, "session ended")
        session.close_message = message
        try:
            session.fail_all(message)
            metrics.SESSIONS_CLOSED.labels(reason).inc()
            metrics.SESSIONS_ACTIVE.set(len(self.sessions))
            log.info("session_closed", session=session.tag, reason=reason, upstream=upstream_reason)
        except Exception:
            log.exception("session_end_failed", session=session.tag, reason=reason)
        finally:
            self._spawn_task(session.upstream.close(reason))

    def close_later(self, session: Session, reason: str) -> None:
        asyncio.get_running_loop().call_soon(self.end_session, session, reason)

    def learn_tools(self, tools: Any) -> None:
        """Remember tool names the upstream listed: the only values the tool metric label may take."""
        if not isinstance(tools, list):
            return
        for tool in tools:
            if len(self.known_tools) >= MAX_KNOWN_TOOLS:
                return
            if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                self.known_tools.add(tool["name"])

    async def _reap_loop(self) -> None:
        timeout = self.config.session_idle_timeout
        interval = min(max(timeout / 4, 0.05), 30.0)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                try:
                    if not session.busy and now - session.last_activity > timeout:
                        self.end_session(session, "idle_timeout")
                except Exception:  # one bad session must not stop the reaping of the others
                    log.exception("session_reap_failed", session=session.tag)

    # --- warm pool ----------------------------------------------------------------------------------------

    def _take_warm(self) -> Upstream | None:
        while self._pool:
            upstream = self._pool.popleft()
            metrics.WARM_POOL_SIZE.set(len(self._pool))
            if upstream.alive:
                return upstream
            self._spawn_task(upstream.close("closed"))
        return None

    def _schedule_refill(self) -> None:
        if self.config.warm_pool_size <= 0 or self.draining:
            return
        if self._refill_task is None or self._refill_task.done():
            self._refill_task = asyncio.get_running_loop().create_task(self._refill(), name="warm-pool-refill")

    async def _refill(self) -> None:
        failures = 0
        while not self.draining and len(self._pool) < self.config.warm_pool_size:
            try:
                upstream = await self._open_upstream()
            except Exception as exc:  # UpstreamError, or a bug: either way retry later rather than stop refilling
                failures += 1
                log.warning("warm_pool_spawn_failed", error=str(exc))
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))
                continue
            if self.draining:
                await upstream.close("shutdown")
                return
            self._pool.append(upstream)
            metrics.WARM_POOL_SIZE.set(len(self._pool))

    @property
    def pool_size(self) -> int:
        return len(self._pool)
