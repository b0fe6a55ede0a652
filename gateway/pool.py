"""Pool mode: a bounded set of long-lived upstream processes shared by every session.

Each process is started and initialized once, by the gateway; a client's initialize is answered from that result.

The isolation rule: a process serves one session at a time, from the moment it is given a request of that session
until the last request of that session in flight on it is answered. Every response, notification and
server-to-client request a process sends is therefore owned by the one session it serves at that moment; one sent
while it serves nobody has no certain owner and is dropped, logged and counted. A process that had a request
abandoned (cancelled, timed out, or whose session ended) may still be working on it, so it serves no other session:
it is stopped once its session's other requests are answered, and replaced on demand. docs/gateway.md explains the
rule.

Because of the rule, the ids in flight on a process are all its owner's, which the session layer keeps unique, so
client requests go to processes as the client sent them, byte for byte, and responses come back unchanged: no id or
progress token is rewritten. Only server-to-client requests get ids of the gateway's (a session may hold two
processes, whose own ids could be equal), and the client's answers get the process's id back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway import metrics
from gateway.config import GatewayConfig
from gateway.envelope import Envelope, LineHandler, read_envelope
from gateway.jsonrpc import (
    HANDSHAKE_VERSIONS,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    LATEST_VERSION,
    METHOD_NOT_FOUND,
    SERVER_BUSY,
    error_bytes,
    is_id,
    json_bytes,
)
from gateway.logging import get_logger
from gateway.upstream import Upstream, UpstreamError, connect_socket, spawn_process

log = get_logger("pool")

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
DEFAULT_LOG_LEVEL = "info"
"""What a session that never sent logging/setLevel receives: the processes themselves are set to debug."""
GATEWAY_CLIENT_CAPABILITIES: dict[str, Any] = {"sampling": {}, "elicitation": {}, "roots": {"listChanged": True}}
"""What the gateway tells each process it may ask; a session whose client did not declare one is refused by the
gateway on the client's behalf."""
SERVER_REQUEST_CAPABILITY = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}
REFUSED_METHODS = {
    "resources/subscribe": "resource subscriptions",
    "resources/unsubscribe": "resource subscriptions",
    "tasks/get": "tasks",
    "tasks/list": "tasks",
    "tasks/result": "tasks",
    "tasks/cancel": "tasks",
}
"""Requests a shared process cannot serve per session: refused rather than shared with other sessions."""
ANSWERED_BY_GATEWAY = frozenset({"initialize", "ping", "logging/setLevel", *REFUSED_METHODS})
"""Client requests the gateway answers itself; every other one goes to a process."""
DROPPED_CLIENT_NOTIFICATIONS = frozenset(
    {"notifications/initialized", "notifications/roots/list_changed", "notifications/progress"}
)
"""The gateway initialized each process itself; a roots change of one session cannot be told to a shared process."""
FAIR_SHARE_SECONDS = 1.0
"""While sessions wait for a process, one that has held its process this long queues its next request behind them."""
INIT_TIMEOUT = 60.0
"""Seconds a new process has to answer the gateway's initialize."""
GATEWAY_VERSION = "1.0"
RESTART_BACKOFF_MAX = 30.0


class Queued:
    """A client request waiting for a process."""

    __slots__ = ("client_id", "done", "enqueued", "lease", "line", "method", "timer")

    def __init__(self, lease: Lease, client_id: Any, method: str, line: bytes) -> None:
        self.lease = lease
        self.client_id = client_id
        self.method = method
        self.line = line
        self.enqueued = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None
        self.done = False
        """Sent, refused or abandoned: the pool's queue skips it."""


class PoolProcess:
    """One long-lived upstream and what it is doing."""

    def __init__(self, number: int, upstream: Upstream) -> None:
        self.number = number
        self.upstream = upstream
        self.owner: Lease | None = None
        self.inflight: set[Any] = set()
        """The ids of the owner's requests this process has not answered yet."""
        self.own: dict[int, asyncio.Future[dict[str, Any]]] = {}
        """The gateway's own requests (initialize, logging/setLevel) awaiting their answer."""
        self.ready = False
        self.exited = False
        self.retiring: str | None = None
        """Why the process is to be stopped once its session's requests are answered (recycled, abandoned)."""
        self.served = 0
        self.leased_at = 0.0
        self.idle_since = time.monotonic()
        self.paused = False

    @property
    def usable(self) -> bool:
        return self.ready and not self.exited and self.retiring is None


class Lease:
    """A session's handle on the pool; implements `gateway.sessions.Channel`."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.log_context: dict[str, Any] = {}
        self.on_message: LineHandler = _nowhere
        """The session's handler: a line for the client, with its envelope when the pool has read it."""
        self.queued: list[Queued] = []
        self.processes: set[PoolProcess] = set()
        self.asks: dict[int, tuple[PoolProcess, Any]] = {}
        """Server-to-client requests by the id the client sees: the process that asked and its own id."""
        self.level = DEFAULT_LOG_LEVEL
        self.capabilities: dict[str, Any] = {}
        self.closed = False

    # --- Channel ------------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return None

    def start(self, on_message: LineHandler, on_close: Callable[[str], None]) -> None:
        self.on_message = on_message

    def forward(self, messages: list[dict[str, Any]], raw: bytes | None) -> None:
        if raw is not None and len(messages) == 1:
            self.pool.from_client(self, messages[0], raw)
            return
        for message in messages:
            self.pool.from_client(self, message)

    async def drain(self) -> None:
        for upstream in [p.upstream for p in self.processes if p.upstream.backed_up]:
            await upstream.drain()

    def pause_reading(self) -> None:
        for process in self.processes:
            process.paused = True
            process.upstream.pause_reading()

    def resume_reading(self) -> None:
        for process in self.processes:
            if process.paused:
                process.paused = False
                process.upstream.resume_reading()

    async def close(self, reason: str = "closed") -> None:
        self.pool.end_lease(self)

    def exit_description(self) -> str:
        return "upstream server process exited; its stderr is in the gateway log"

    # --- replies from the gateway itself ------------------------------------------------------------------

    def reply(self, msg_id: Any, result: dict[str, Any]) -> None:
        self.on_message(json_bytes({"jsonrpc": "2.0", "id": msg_id, "result": result}), None)

    def refuse(self, msg_id: Any, code: int, message: str) -> None:
        self.on_message(error_bytes(msg_id, code, message), None)


class Pool:
    """Starts, initializes, dispatches to, replaces and stops the shared upstream processes."""

    partition = "session"
    """The `partition` label of this pool's metrics."""

    def __init__(self, config: GatewayConfig) -> None:
        self.dispatched = 0
        """Client requests sent to a process (`mcp_gateway_pool_dispatches_total`)."""
        self.config = config
        self.processes: list[PoolProcess] = []
        self.starting = 0
        self.queue: deque[Queued] = deque()
        self.init_result: dict[str, Any] | None = None
        self._init_waiters: list[Callable[[str | None], None]] = []
        self._ids = itertools.count(1)
        """Ids of the gateway's own requests to a process (initialize), sent before it serves anyone."""
        self._numbers = itertools.count(1)
        self._asks = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._maintainer: asyncio.Task[None] | None = None
        self._failures = 0
        self._retry_at = 0.0
        self.last_error: str | None = None
        self.closing = False

    @property
    def minimum(self) -> int:
        """Processes kept even when idle (POOL_MIN)."""
        return self.config.pool_min

    # --- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        metrics.watch_pool(self)
        self._maintainer = asyncio.get_running_loop().create_task(self._maintain(), name="pool-maintainer")
        self._fill()

    def ready(self) -> bool:
        """Whether the pool can serve: a process is ready, or (POOL_MIN=0) the last start did not fail."""
        if self.closing:
            return False
        if any(p.usable for p in self.processes):
            return True
        return self.minimum == 0 and self._failures == 0

    async def close(self) -> None:
        """Refuse what waits, stop every process (stdin EOF, then signals), wait for all of it."""
        self.closing = True
        if self._maintainer is not None:
            self._maintainer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._maintainer
        while self.queue:
            queued = self.queue.popleft()
            if not queued.done:
                self._unqueue(queued)
                queued.lease.refuse(queued.client_id, SERVER_BUSY, "gateway shutting down")
        self._wake_init_waiters("gateway shutting down")
        for process in list(self.processes):
            self._stop(process, "shutdown")
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def lease(self) -> Lease:
        return Lease(self)

    # --- processes ----------------------------------------------------------------------------------------

    def _fill(self) -> None:
        """Start processes up to POOL_MIN, and more (up to POOL_MAX) while requests wait."""
        if self.closing or time.monotonic() < self._retry_at:
            return
        live = len(self.processes) + self.starting
        wanted = max(self.minimum, min(self.config.pool_max, live + self._waiting_leases()))
        if self.init_result is None and self._init_waiters:
            wanted = max(wanted, 1)
        for _ in range(min(wanted, self.config.pool_max) - live):
            self.starting += 1
            self._spawn_task(self._start_process())

    def _waiting_leases(self) -> int:
        """Sessions waiting for a process, beyond the processes now starting."""
        leases = {id(queued.lease) for queued in self.queue if not queued.done}
        return max(0, len(leases) - self.starting)

    async def _start_process(self) -> None:
        number = next(self._numbers)
        process: PoolProcess | None = None
        try:
            upstream = await self._open()
            if self.closing:
                self.starting -= 1
                await upstream.close("shutdown")
                return
            process = PoolProcess(number, upstream)
            upstream.log_context["pool_process"] = number
            self.processes.append(process)
            upstream.start(functools.partial(self._from_process, process), functools.partial(self._exited, process))
            await self._initialize(process)
        except Exception as exc:  # UpstreamError, a refused or unanswered initialize, or a bug
            self.starting -= 1
            if self.closing:
                if process is not None:
                    self._stop(process, "shutdown")
                return
            self._start_failed(process, exc)
            return
        self.starting -= 1
        self._failures = 0
        self.last_error = None
        process.ready = True
        process.idle_since = time.monotonic()
        log.info("pool_process_ready", pool_process=number, upstream_pid=process.upstream.pid)
        self._wake_init_waiters(None)
        self._assign_idle(process)

    async def _open(self) -> Upstream:
        limit = self.config.max_message_bytes
        if self.config.upstream_socket:
            return await connect_socket(self.config.upstream_socket, max_message_bytes=limit)
        return await spawn_process(self.config.upstream_command, max_message_bytes=limit)

    async def _initialize(self, process: PoolProcess) -> None:
        params = {
            "protocolVersion": LATEST_VERSION,
            "capabilities": GATEWAY_CLIENT_CAPABILITIES,
            "clientInfo": {"name": "cnpg-mcp-gateway", "version": GATEWAY_VERSION},
        }
        result = await asyncio.wait_for(self._ask(process, "initialize", params), INIT_TIMEOUT)
        if not isinstance(result.get("capabilities"), dict) or not isinstance(result.get("protocolVersion"), str):
            raise UpstreamError("the upstream server's initialize result lacks capabilities or protocolVersion")
        process.upstream.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
        if self.init_result is None:
            self.init_result = result
        elif result.get("protocolVersion") != self.init_result.get("protocolVersion"):
            log.warning("pool_process_version_differs", pool_process=process.number)
        if "logging" in result["capabilities"]:
            # Every message comes to the gateway, which passes each session what its own level lets through.
            try:
                await asyncio.wait_for(self._ask(process, "logging/setLevel", {"level": "debug"}), INIT_TIMEOUT)
            except UpstreamError as exc:  # it keeps its own level; sessions still filter below it
                log.warning("pool_process_set_level_refused", error=str(exc), **process.upstream.log_context)

    def _ask(self, process: PoolProcess, method: str, params: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        gid = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        process.own[gid] = future
        process.upstream.send(json_bytes({"jsonrpc": "2.0", "id": gid, "method": method, "params": params}))
        return future

    def _start_failed(self, process: PoolProcess | None, exc: Exception) -> None:
        self._failures += 1
        self._retry_at = time.monotonic() + min(RESTART_BACKOFF_MAX, 0.25 * 2 ** min(self._failures, 10))
        self.last_error = str(exc) or type(exc).__name__
        log.warning("pool_process_start_failed", error=self.last_error, failures=self._failures)
        metrics.POOL_PROCESS_EXITS.labels(self.partition, "start_failed").inc()
        if process is not None:
            self._stop(process, "start_failed", count=False)
        if not any(p.usable for p in self.processes) and self.starting == 0:
            # Nothing can serve what waits now: answer it rather than let it wait for a retry that may fail too.
            self._wake_init_waiters(self.last_error)
            while self.queue:
                queued = self.queue.popleft()
                if not queued.done:
                    self._unqueue(queued)
                    text = f"Bad Gateway: cannot start the upstream server: {self.last_error}"
                    queued.lease.refuse(queued.client_id, INTERNAL_ERROR, text)

    def _stop(self, process: PoolProcess, reason: str, *, count: bool = True) -> None:
        """Take the process out of the pool and close it in the background (stdin EOF first: a clean exit)."""
        if process in self.processes:
            self.processes.remove(process)
            if count:
                metrics.POOL_PROCESS_EXITS.labels(self.partition, reason).inc()
            log.info("pool_process_stopped", pool_process=process.number, reason=reason)
        process.exited = True
        process.ready = False
        self._fail_own(process, f"the gateway stopped the process ({reason})")
        self._release(process)
        self._spawn_task(process.upstream.close(reason))

    def _exited(self, process: PoolProcess, reason: str) -> None:
        """The process ended by itself: its requests in flight get an error; everyone else goes on."""
        if process.exited:
            return
        was_ready, process.ready, process.exited = process.ready, False, True
        if process in self.processes:
            self.processes.remove(process)
            if was_ready:  # one that never got ready is counted as start_failed
                metrics.POOL_PROCESS_EXITS.labels(
                    self.partition, "oversized" if reason == "oversized" else "crashed"
                ).inc()
        self._fail_own(process, process.upstream.exit_description())
        if reason == "oversized":
            text = "upstream message exceeds MAX_MESSAGE_BYTES; the server process was replaced"
        else:
            text = process.upstream.exit_description() + "; the gateway replaced it"
        owner, inflight, process.inflight = process.owner, process.inflight, set()
        if owner is not None:
            for msg_id in inflight:
                owner.refuse(msg_id, INTERNAL_ERROR, text)
        self._release(process)
        self._fill()

    @staticmethod
    def _fail_own(process: PoolProcess, text: str) -> None:
        own, process.own = process.own, {}
        for future in own.values():
            if not future.done():
                future.set_exception(UpstreamError(text))

    async def _maintain(self) -> None:
        """Once a second: stop processes idle past POOL_IDLE_TIMEOUT (down to POOL_MIN), start what is missing."""
        while True:
            await asyncio.sleep(1.0)
            try:
                now = time.monotonic()
                idle = [p for p in self.processes if p.owner is None and p.usable and not p.inflight]
                spare = len(self.processes) - self.minimum
                for process in sorted(idle, key=lambda p: p.idle_since):
                    if spare <= 0 or now - process.idle_since < self.config.pool_idle_timeout:
                        break
                    self._stop(process, "idle")
                    spare -= 1
                self._fill()
            except Exception:  # a bug here must not end the pool's upkeep
                log.exception("pool_maintenance_failed")

    def figures(self) -> tuple[int, int, int]:
        """(processes, processes serving a session now, requests waiting): the pool gauges, read at scrape time."""
        busy = sum(1 for p in self.processes if p.owner is not None)
        return len(self.processes), busy, sum(1 for queued in self.queue if not queued.done)

    # --- initialize ---------------------------------------------------------------------------------------

    def _initialize_session(self, lease: Lease, message: dict[str, Any]) -> None:
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        capabilities = params.get("capabilities")
        lease.capabilities = capabilities if isinstance(capabilities, dict) else {}
        msg_id = message["id"]
        if self.init_result is not None:
            lease.reply(msg_id, self._session_result(params.get("protocolVersion")))
            return

        def answer(error: str | None) -> None:
            if error is not None or self.init_result is None:
                lease.refuse(msg_id, INTERNAL_ERROR, f"Bad Gateway: cannot start the upstream server: {error}")
            else:
                lease.reply(msg_id, self._session_result(params.get("protocolVersion")))

        self._init_waiters.append(answer)
        self._fill()

    def _wake_init_waiters(self, error: str | None) -> None:
        waiters, self._init_waiters = self._init_waiters, []
        for answer in waiters:
            answer(error)

    def _session_result(self, requested: Any) -> dict[str, Any]:
        """The processes' initialize result for one client: its version if the processes speak it, and only the
        capabilities the pool can give per session."""
        assert self.init_result is not None
        result = dict(self.init_result)
        spoken = str(result["protocolVersion"])
        versions = [v for v in HANDSHAKE_VERSIONS if v <= spoken]
        result["protocolVersion"] = requested if requested in versions else spoken
        capabilities = dict(result["capabilities"])
        capabilities.pop("tasks", None)
        resources = capabilities.get("resources")
        if isinstance(resources, dict) and "subscribe" in resources:
            capabilities["resources"] = {k: v for k, v in resources.items() if k != "subscribe"}
        result["capabilities"] = capabilities
        return result

    # --- client -> process --------------------------------------------------------------------------------

    def from_client(self, lease: Lease, message: dict[str, Any], raw: bytes | None = None) -> None:
        """One client message. `raw` is its body as received, sent on as it is when the message goes to a process."""
        method = message.get("method")
        if method is None:
            self._client_answer(lease, message)
            return
        if "id" not in message:
            if method == "notifications/cancelled":
                self._client_cancel(lease, message)
            elif method not in DROPPED_CLIENT_NOTIFICATIONS:
                log.info("pool_client_notification_dropped", method=method[:100], **lease.log_context)
            return
        if method not in ANSWERED_BY_GATEWAY:
            self._dispatch(lease, message, raw)
            return
        msg_id = message["id"]
        if method == "initialize":
            self._initialize_session(lease, message)
        elif method == "ping":
            lease.reply(msg_id, {})
        elif method == "logging/setLevel":
            params = message.get("params")
            level = params.get("level") if isinstance(params, dict) else None
            if level not in LOG_LEVELS:
                lease.refuse(msg_id, INVALID_PARAMS, f"Invalid params: level must be one of {', '.join(LOG_LEVELS)}")
            else:
                lease.level = str(level)
                lease.reply(msg_id, {})
        else:
            what = REFUSED_METHODS[method]
            text = (
                f"Method not available: {method}. This gateway shares server processes between sessions "
                f"(UPSTREAM_MODE=pool), so {what} cannot be kept per session"
            )
            lease.refuse(msg_id, METHOD_NOT_FOUND, text)

    def _dispatch(self, lease: Lease, message: dict[str, Any], raw: bytes | None) -> None:
        line = raw if raw is not None else json_bytes(message)
        process = self._process_for(lease)
        if process is not None:
            self._send(process, message["id"], line)
            return
        queued = Queued(lease, message["id"], str(message["method"]), line)
        timeout = self.config.pool_queue_timeout
        if timeout > 0:
            queued.timer = asyncio.get_running_loop().call_later(timeout, self._queue_timed_out, queued)
        self.queue.append(queued)
        lease.queued.append(queued)
        if len(self.processes) + self.starting < self.config.pool_max:
            self._fill()

    def _process_for(self, lease: Lease) -> PoolProcess | None:
        """A process this request may go to now without breaking the rule, or None (it waits)."""
        if lease.queued:
            return None  # keep the session's order
        waiting = self._someone_waits()
        if lease.processes:
            now = time.monotonic() if waiting else 0.0
            for process in lease.processes:
                if process.usable and not (waiting and now - process.leased_at > FAIR_SHARE_SECONDS):
                    return process
        if waiting:
            return None  # first come, first served
        # The first free process in start order: load gathers on the oldest processes, so the newest go idle and
        # the pool can shrink.
        for process in self.processes:
            if process.owner is None and process.usable:
                self._lease_to(process, lease)
                return process
        return None

    def _someone_waits(self) -> bool:
        queue = self.queue
        while queue and queue[0].done:
            queue.popleft()
        return bool(queue)

    def _lease_to(self, process: PoolProcess, lease: Lease) -> None:
        process.owner = lease
        process.leased_at = time.monotonic()
        lease.processes.add(process)

    def _send(self, process: PoolProcess, msg_id: Any, line: bytes) -> None:
        process.inflight.add(msg_id)
        process.served += 1
        self.dispatched += 1
        recycle = self.config.pool_recycle_after
        if recycle and process.served >= recycle and process.retiring is None:
            process.retiring = "recycled"
        process.upstream.send(line)

    def _queue_timed_out(self, queued: Queued) -> None:
        if queued.done:
            return
        self._unqueue(queued)
        metrics.POOL_REJECTED.labels(self.partition, "queue_timeout").inc()
        waited = f"{self.config.pool_queue_timeout:g}"
        log.warning("pool_queue_timeout", seconds=waited, method=queued.method[:100], **queued.lease.log_context)
        text = f"Server busy: no upstream server process was free within POOL_QUEUE_TIMEOUT ({waited} s); try again"
        queued.lease.refuse(queued.client_id, SERVER_BUSY, text)

    def _unqueue(self, queued: Queued) -> None:
        """Forget a waiting request: sent, refused or abandoned. The pool's queue skips it from now on."""
        if queued.done:
            return
        queued.done = True
        queued.line = b""
        if queued.timer is not None:
            queued.timer.cancel()
            queued.timer = None
        with contextlib.suppress(ValueError):
            queued.lease.queued.remove(queued)

    def _client_answer(self, lease: Lease, message: dict[str, Any]) -> None:
        """A client's answer to a server-to-client request goes back to the process that asked, with its id."""
        ask = message.get("id")
        found = lease.asks.pop(ask, None) if isinstance(ask, int) else None
        if found is None:
            self._dropped("client_answer", lease, "no such server request")
            return
        process, original = found
        if not process.exited:
            process.upstream.send(json_bytes({**message, "id": original}))

    def _client_cancel(self, lease: Lease, message: dict[str, Any]) -> None:
        params = message.get("params")
        request_id = params.get("requestId") if isinstance(params, dict) else None
        if not is_id(request_id):
            return
        reason = params.get("reason") if isinstance(params, dict) else None
        for process in list(lease.processes):
            if request_id in process.inflight:
                self._abandon(process, request_id, reason)
                return
        for queued in lease.queued:
            if queued.client_id == request_id:
                self._unqueue(queued)
                return

    def _abandon(self, process: PoolProcess, msg_id: Any, reason: Any = None) -> None:
        """The answer to `msg_id` is no longer wanted. Tell the process to stop, and retire it: it may still be
        working on the request, so it must not serve another session."""
        process.inflight.discard(msg_id)
        if process.exited:
            return
        params: dict[str, Any] = {"requestId": msg_id}
        if isinstance(reason, str):
            params["reason"] = reason
        process.upstream.send(json_bytes({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}))
        if process.retiring is None:
            process.retiring = "abandoned"
        self._maybe_release(process)

    def end_lease(self, lease: Lease) -> None:
        """The session ended: abandon what it has in flight, refuse what its processes still ask it."""
        if lease.closed:
            return
        lease.closed = True
        for queued in list(lease.queued):
            self._unqueue(queued)
        for process, original in lease.asks.values():
            if not process.exited:
                process.upstream.send(error_bytes(original, INTERNAL_ERROR, "the client's session has ended"))
        lease.asks.clear()
        for process in list(lease.processes):
            if process.inflight:
                for msg_id in list(process.inflight):
                    self._abandon(process, msg_id, "session ended")  # the last one stops the process
            else:
                self._maybe_release(process)

    # --- process -> client --------------------------------------------------------------------------------

    def _from_process(self, process: PoolProcess, line: bytes) -> None:
        try:
            envelope = read_envelope(line)
        except ValueError:
            log.warning("upstream_invalid_json", size=len(line), **process.upstream.log_context)
            return
        if envelope is None:
            log.warning("upstream_unexpected_message", **process.upstream.log_context)
            return
        if envelope.method is None:
            self._response(process, envelope)
        elif envelope.id is not None:
            self._server_request(process, envelope)
        else:
            self._notification(process, envelope)

    def _response(self, process: PoolProcess, envelope: Envelope) -> None:
        msg_id = envelope.id
        if process.own:
            future = process.own.pop(msg_id, None) if isinstance(msg_id, int) else None
            if future is not None:
                message = envelope.full() or {}
                if isinstance(message.get("result"), dict):
                    future.set_result(message["result"])
                else:
                    future.set_exception(UpstreamError(f"the upstream server refused: {_error_text(message)}"))
                return
        owner = process.owner
        if owner is None or not is_id(msg_id) or msg_id not in process.inflight:
            self._dropped("response", None, "no request in flight has this id", process)
            return
        process.inflight.discard(msg_id)
        owner.on_message(envelope.line, envelope)
        if not process.inflight:
            self._maybe_release(process)

    def _server_request(self, process: PoolProcess, envelope: Envelope) -> None:
        owner = process.owner
        method = envelope.method or ""
        if owner is None or owner.closed:
            self._dropped("server_request", None, method, process)
            process.upstream.send(error_bytes(envelope.id, INTERNAL_ERROR, "no client session is waiting on this"))
            return
        capability = SERVER_REQUEST_CAPABILITY.get(method)
        if capability is not None and capability not in owner.capabilities:
            text = f"the client does not support {capability}"
            process.upstream.send(error_bytes(envelope.id, METHOD_NOT_FOUND, text))
            return
        ask = next(self._asks)
        owner.asks[ask] = (process, envelope.id)
        try:
            line = envelope.with_id(ask)
        except ValueError:
            owner.asks.pop(ask, None)
            return
        owner.on_message(line, None)

    def _notification(self, process: PoolProcess, envelope: Envelope) -> None:
        owner = process.owner
        method = envelope.method or ""
        if owner is None or owner.closed:
            self._dropped("notification", None, method, process)
            return
        if method == "notifications/message":
            message = envelope.full() or {}
            params = message.get("params")
            level = params.get("level") if isinstance(params, dict) else None
            if level in LOG_LEVELS and LOG_LEVELS.index(str(level)) < LOG_LEVELS.index(owner.level):
                return  # below the session's logging/setLevel
        elif method == "notifications/cancelled":
            message = envelope.full() or {}
            params = message.get("params")
            asked = params.get("requestId") if isinstance(params, dict) else None
            ask = next((k for k, v in owner.asks.items() if v == (process, asked)), None)
            if ask is None:
                return
            assert isinstance(params, dict)
            owner.on_message(json_bytes({**message, "params": {**params, "requestId": ask}}), None)
            return
        owner.on_message(envelope.line, envelope)

    def _dropped(self, kind: str, lease: Lease | None, what: str, process: PoolProcess | None = None) -> None:
        metrics.POOL_DROPPED.labels(self.partition, kind).inc()
        context = dict(lease.log_context) if lease is not None else {}
        if process is not None:
            context.update(process.upstream.log_context)
        log.warning("pool_message_dropped", kind=kind, what=what[:100], **context)

    # --- handing processes over ---------------------------------------------------------------------------

    def _maybe_release(self, process: PoolProcess) -> None:
        """When the owner has nothing left in flight on it, the process is free (or stopped, if retiring)."""
        if process.inflight:
            return
        if process.retiring is not None:
            self._stop(process, process.retiring)
            return
        self._release(process)
        if process.usable and self.queue:
            self._assign_idle(process)

    def _release(self, process: PoolProcess) -> None:
        owner = process.owner
        if owner is None:
            return
        process.owner = None
        process.idle_since = time.monotonic()
        owner.processes.discard(process)
        if process.paused:
            process.paused = False
            process.upstream.resume_reading()

    def _assign_idle(self, process: PoolProcess) -> None:
        """Give a free process to the session that has waited longest, with all its waiting requests."""
        if process.owner is not None or not process.usable:
            return
        while self.queue:
            head = self.queue.popleft()
            if head.done:
                continue
            lease = head.lease
            self._lease_to(process, lease)
            waiting, lease.queued = lease.queued, []
            now = time.monotonic()
            wait = metrics.POOL_QUEUE_WAIT.labels(self.partition)
            for queued in waiting:
                wait.observe(now - queued.enqueued)
                line = queued.line
                self._unqueue(queued)
                self._send(process, queued.client_id, line)
            return


def _error_text(message: dict[str, Any]) -> str:
    error = message.get("error")
    if isinstance(error, dict):
        return str(error.get("message", ""))[:200]
    return "an answer without a result"


def _nowhere(line: bytes, envelope: Envelope | None = None, /) -> None:
    pass
