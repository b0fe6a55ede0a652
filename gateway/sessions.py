"""The session table and the routing of one session's messages between its SSE streams and its upstream channel.

A `Session` holds a `Channel` to its upstream (its own process or socket in session mode, a lease on the shared
pool in pool mode: gateway.pool), the requests in flight (`Pending`) and its SSE `Stream`s. Each upstream line's
envelope (id, method, params.progressToken) is read by `gateway.envelope` (its top-level members, payloads not
decoded) and the line is forwarded as the same bytes; only a tools/list result filtered for the caller is
re-serialized.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, Protocol

from gateway import metrics
from gateway.audit import record_tool_call
from gateway.config import GatewayConfig
from gateway.envelope import Envelope, LineHandler, read_envelope
from gateway.jsonrpc import INTERNAL_ERROR, error_bytes, json_bytes, progress_token, tool_call_facts
from gateway.logging import get_logger, session_tag
from gateway.pool import Pool
from gateway.security import Principal
from gateway.sse import GET_STREAM, Stream, event_frame, priming_frame
from gateway.upstream import Upstream, UpstreamError, connect_socket, spawn_process

log = get_logger("sessions")

RETIRED_STREAMS_KEPT = 32
RETIRED_BYTES_KEPT = 4 * 1024 * 1024
OUTBOX_LIMIT = 4 * 1024 * 1024
"""Bytes queued for one slow SSE connection before the upstream is paused."""
SESSION_CLOSING_ERRORS = {
    "oversized": "upstream message exceeds MAX_MESSAGE_BYTES",
    "shutdown": "gateway shutting down",
    "client_delete": "session deleted",
    "idle_timeout": "session idle timeout",
    "error": "upstream failed",
}
ResultFilter = Callable[[dict[str, Any]], dict[str, Any]]
"""Rewrites a decoded upstream response for the caller (the authenticator's tools/list filter)."""


class Channel(Protocol):
    """What a session needs from its upstream: `gateway.upstream.Upstream` or a `gateway.pool.Lease`."""

    log_context: dict[str, Any]

    @property
    def pid(self) -> int | None: ...

    def start(self, on_message: LineHandler, on_close: Callable[[str], None]) -> None: ...

    def forward(self, messages: list[dict[str, Any]], raw: bytes | None) -> None:
        """Client messages (already checked) for the upstream; `raw` is their body when it can go as it is."""

    async def drain(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    async def close(self, reason: str = "closed") -> None: ...

    def exit_description(self) -> str: ...


class Pending:
    """A client request forwarded upstream and not yet answered."""

    __slots__ = ("arg_names", "filter", "method", "principal", "progress_token", "started", "stream", "timer", "tool")

    def __init__(self, method: str, stream: Stream, principal: Principal | None) -> None:
        self.method = method
        self.stream = stream
        self.principal = principal
        self.started = time.perf_counter()
        self.progress_token: Any = None
        self.tool: str | None = None
        self.arg_names: list[str] = []
        self.filter: ResultFilter | None = None
        self.timer: asyncio.TimerHandle | None = None
        """Fires at REQUEST_TIMEOUT if the upstream has not answered by then."""


class Session:
    """One MCP session: an upstream channel, requests in flight, SSE streams."""

    def __init__(self, manager: SessionManager, session_id: str, upstream: Channel, subject: str | None) -> None:
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
        return priming_frame(eid, self.manager.config.sse_retry_ms)

    def deliver(self, stream: Stream, payload: bytes) -> None:
        """Send one JSON-RPC message (bytes, possibly ending in a newline) as an SSE event on `stream`."""
        if stream.json_mode:
            stream.events.append((0, payload))
            stream.wake()
            return
        seq, eid = self.next_event_id(stream)
        stream.push(seq, event_frame(eid, payload))
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

    def register(
        self,
        msg: dict[str, Any],
        stream: Stream,
        principal: Principal | None,
        result_filter: ResultFilter | None = None,
    ) -> Pending:
        """Track a client request (checked by the transport) until its answer, its timeout or its cancellation."""
        msg_id = msg["id"]
        method = msg["method"]
        pending = Pending(method, stream, principal)
        pending.filter = result_filter
        token = progress_token(msg.get("params"))
        if token is not None:
            pending.progress_token = token
            self.progress[token] = pending
        if method == "tools/call":
            pending.tool, pending.arg_names = tool_call_facts(msg)
        self.pending[msg_id] = pending
        stream.open_requests += 1
        timeout = self.manager.config.request_timeout
        if timeout > 0:
            pending.timer = self._loop.call_later(timeout, self._timed_out, msg_id, pending)
        return pending

    def forward(self, messages: list[dict[str, Any]], raw: bytes | None) -> None:
        """Pass client messages upstream; a notifications/cancelled also ends the cancelled request's stream."""
        self.upstream.forward(messages, raw)
        for msg in messages:
            if msg.get("method") == "notifications/cancelled":
                params = msg.get("params")
                if isinstance(params, dict) and isinstance(params.get("requestId"), (str, int)):
                    self.cancel(params["requestId"])

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
        self.upstream.forward([cancelled], None)
        text = f"Request timed out: the upstream server sent no answer within REQUEST_TIMEOUT ({timeout} s)"
        self.deliver(pending.stream, error_bytes(msg_id, INTERNAL_ERROR, text))
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

    def on_upstream_message(self, line: bytes, envelope: Envelope | None = None) -> None:
        """Route one upstream line (with its envelope when the pool has read it already): a response to its
        request's stream, anything else to the best stream."""
        if envelope is None:
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
                metrics.learn_tools(result.get("tools"))
                if pending.filter is not None and envelope.message is not None:
                    line = json_bytes(pending.filter(envelope.message))
            elif method == "initialize" and isinstance(result, dict):
                version = result.get("protocolVersion")
                self.protocol_version = version if isinstance(version, str) else None
        except Exception:
            # A bug here (or in the authenticator's filter) must not leave the client waiting, nor pass on an
            # answer that was meant to be filtered.
            log.exception("upstream_response_failed", session=self.tag, method=method[:100])
            text = "Internal error: the gateway could not process the upstream server's answer"
            line = error_bytes(msg_id, INTERNAL_ERROR, text)
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
        elapsed_ms = (time.perf_counter() - pending.started) * 1000.0
        record_tool_call(pending.principal, pending.tool or "", pending.arg_names, outcome, elapsed_ms, self.tag)

    def on_upstream_closed(self, reason: str) -> None:
        """The upstream ended (exit, crash, oversized line): fail what is in flight and end the session."""
        if self.closed:
            return
        if reason == "oversized":
            self.manager.end_session(self, "error", upstream_reason=reason)
        else:
            message = self.upstream.exit_description()
            self.manager.end_session(self, "upstream_exit", upstream_reason=reason, message=message)

    def fail(self, msg_id: Any, message: str) -> None:
        """Answer one request in flight with an error (its upstream went away); the session goes on."""
        pending = self.pending.pop(msg_id, None)
        if pending is None:
            return
        self._forget(pending)
        self._audit(pending, "failed")
        self.deliver(pending.stream, error_bytes(msg_id, INTERNAL_ERROR, message))
        self._request_done(pending.stream)

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
                    self.deliver(item.stream, error_bytes(msg_id, INTERNAL_ERROR, message))
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


class SessionLimit(Exception):
    """No room for another session (MAX_SESSIONS reached or draining)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SessionManager:
    """Creates, finds, reaps and closes sessions; owns the warm pool and every per-session upstream."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.sessions: dict[str, Session] = {}
        self.draining = False
        self._creating = 0
        self._warm: deque[Upstream] = deque()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refill_task: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None
        self.pool = Pool(config) if config.upstream_mode == "pool" else None
        """Pool mode: the shared upstreams every session leases; None in session mode."""

    # --- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap_loop(), name="session-reaper")
        if self.pool is not None:
            await self.pool.start()
        self._schedule_refill()

    def ready(self) -> bool:
        """Whether new sessions can be served (pool mode: whether the pool can serve)."""
        return self.pool is None or self.pool.ready()

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
        while self._warm:
            self._spawn_task(self._warm.popleft().close("shutdown"))
        metrics.WARM_POOL_SIZE.set(0)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self.pool is not None:
            await self.pool.close()

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- sessions -----------------------------------------------------------------------------------------

    def get(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)

    def _admit(self) -> None:
        if self.draining:
            metrics.SESSIONS_REJECTED.labels("draining").inc()
            raise SessionLimit("draining")
        if len(self.sessions) + self._creating >= self.config.max_sessions:
            metrics.SESSIONS_REJECTED.labels("max_sessions").inc()
            raise SessionLimit("max_sessions")

    async def create(self, subject: str | None) -> Session:
        """Open an upstream channel and register a new session; raises SessionLimit/UpstreamError."""
        self._admit()
        self._creating += 1
        try:
            channel = await self._open_channel()
        finally:
            self._creating -= 1
        if self.draining:
            self._spawn_task(channel.close("shutdown"))
            metrics.SESSIONS_REJECTED.labels("draining").inc()
            raise SessionLimit("draining")
        session_id = secrets.token_urlsafe(32)
        session = Session(self, session_id, channel, subject)
        self.sessions[session_id] = session
        channel.start(session.on_upstream_message, session.on_upstream_closed)
        metrics.SESSIONS_OPENED.inc()
        metrics.SESSIONS_ACTIVE.set(len(self.sessions))
        log.info("session_opened", session=session.tag, upstream_pid=channel.pid)
        return session

    async def _open_channel(self) -> Channel:
        """The new session's own upstream (a warm one, or one started now), or its lease on the pool."""
        if self.pool is not None:
            return self.pool.lease()
        upstream = self._take_warm()
        if upstream is None:
            try:
                upstream = await self._open_upstream()
            except UpstreamError:
                metrics.SESSIONS_REJECTED.labels("upstream_error").inc()
                raise
        self._schedule_refill()
        return upstream

    async def _open_upstream(self) -> Upstream:
        if self.config.upstream_socket:
            return await connect_socket(self.config.upstream_socket, max_message_bytes=self.config.max_message_bytes)
        return await spawn_process(self.config.upstream_command, max_message_bytes=self.config.max_message_bytes)

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
        while self._warm:
            upstream = self._warm.popleft()
            metrics.WARM_POOL_SIZE.set(len(self._warm))
            if upstream.alive:
                return upstream
            self._spawn_task(upstream.close("closed"))
        return None

    def _schedule_refill(self) -> None:
        if self.config.warm_pool_size <= 0 or self.draining or self.pool is not None:
            return
        if self._refill_task is None or self._refill_task.done():
            self._refill_task = asyncio.get_running_loop().create_task(self._refill(), name="warm-pool-refill")

    async def _refill(self) -> None:
        failures = 0
        while not self.draining and len(self._warm) < self.config.warm_pool_size:
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
            self._warm.append(upstream)
            metrics.WARM_POOL_SIZE.set(len(self._warm))
