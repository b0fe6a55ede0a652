"""Pool mode: a bounded set of long-lived upstream processes shared by every session.

Each process is started and initialized once, by the gateway; a client's initialize is answered from that result.
Client requests are dispatched to processes with their ids (and progress tokens) replaced by gateway-wide unique
ones, so every response comes back to exactly the request that caused it.

The isolation rule: a process serves one session at a time, from the moment it is given a request of that session
until the last request of that session in flight on it is answered. Every notification and server-to-client request
a process sends is therefore owned by the one session it serves at that moment; one sent while it serves nobody has
no certain owner and is dropped, logged and counted. A process that had a request abandoned (cancelled, timed out, or
whose session ended) may still be working on it, so it serves no other session: it is stopped once its session's
other requests are answered, and replaced on demand. docs/gateway.md explains the rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway import metrics
from gateway.config import GatewayConfig
from gateway.envelope import Envelope, read_envelope
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


class Route:
    """A client request dispatched (or queued) to the pool."""

    __slots__ = (
        "client_id",
        "client_token",
        "done",
        "enqueued",
        "gid",
        "lease",
        "line",
        "method",
        "process",
        "timer",
        "token",
    )

    def __init__(self, lease: Lease, client_id: Any, gid: int, method: str) -> None:
        self.lease = lease
        self.client_id = client_id
        self.gid = gid
        self.method = method
        self.token: str | None = None
        """The progress token the process sees, when the client sent one (`client_token`)."""
        self.client_token: Any = None
        self.line = b""
        self.process: PoolProcess | None = None
        self.enqueued = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.done = False


class PoolProcess:
    """One long-lived upstream and what it is doing."""

    def __init__(self, number: int, upstream: Upstream) -> None:
        self.number = number
        self.upstream = upstream
        self.owner: Lease | None = None
        self.routes: dict[int, Route] = {}
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
        self.on_message: Callable[[bytes], None] = _nowhere
        self.requests: dict[Any, Route] = {}
        self.queued: list[Route] = []
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

    def start(self, on_message: Callable[[bytes], None], on_close: Callable[[str], None]) -> None:
        self.on_message = on_message

    def forward(self, messages: list[dict[str, Any]], raw: bytes | None) -> None:
        for message in messages:
            self.pool.from_client(self, message)

    async def drain(self) -> None:
        for process in list(self.processes):
            await process.upstream.drain()

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
        self.on_message(json_bytes({"jsonrpc": "2.0", "id": msg_id, "result": result}))

    def refuse(self, msg_id: Any, code: int, message: str) -> None:
        self.on_message(error_bytes(msg_id, code, message))


class Pool:
    """Starts, initializes, dispatches to, replaces and stops the shared upstream processes."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.processes: list[PoolProcess] = []
        self.starting = 0
        self.queue: deque[Route] = deque()
        self.tokens: dict[str, Route] = {}
        self.init_result: dict[str, Any] | None = None
        self._init_waiters: list[Callable[[str | None], None]] = []
        self._ids = itertools.count(1)
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
        self._gauges()
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
            route = self.queue.popleft()
            if not route.done:
                self._finish(route)
                route.lease.refuse(route.client_id, SERVER_BUSY, "gateway shutting down")
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
        leases = {id(route.lease) for route in self.queue if not route.done}
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
            started = process
            upstream.start(lambda line: self._from_process(started, line), lambda why: self._exited(started, why))
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
        metrics.POOL_PROCESS_EXITS.labels("start_failed").inc()
        if process is not None:
            self._stop(process, "start_failed", count=False)
        if not any(p.usable for p in self.processes) and self.starting == 0:
            # Nothing can serve what waits now: answer it rather than let it wait for a retry that may fail too.
            self._wake_init_waiters(self.last_error)
            while self.queue:
                route = self.queue.popleft()
                if not route.done:
                    self._finish(route)
                    text = f"Bad Gateway: cannot start the upstream server: {self.last_error}"
                    route.lease.refuse(route.client_id, INTERNAL_ERROR, text)

    def _stop(self, process: PoolProcess, reason: str, *, count: bool = True) -> None:
        """Take the process out of the pool and close it in the background (stdin EOF first: a clean exit)."""
        if process in self.processes:
            self.processes.remove(process)
            if count:
                metrics.POOL_PROCESS_EXITS.labels(reason).inc()
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
                metrics.POOL_PROCESS_EXITS.labels("oversized" if reason == "oversized" else "crashed").inc()
        self._fail_own(process, process.upstream.exit_description())
        if reason == "oversized":
            text = "upstream message exceeds MAX_MESSAGE_BYTES; the server process was replaced"
        else:
            text = process.upstream.exit_description() + "; the gateway replaced it"
        for route in list(process.routes.values()):
            self._finish(route)
            route.lease.refuse(route.client_id, INTERNAL_ERROR, text)
        process.routes.clear()
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
                idle = [p for p in self.processes if p.owner is None and p.usable and not p.routes]
                spare = len(self.processes) - self.minimum
                for process in sorted(idle, key=lambda p: p.idle_since):
                    if spare <= 0 or now - process.idle_since < self.config.pool_idle_timeout:
                        break
                    self._stop(process, "idle")
                    spare -= 1
                self._fill()
            except Exception:  # a bug here must not end the pool's upkeep
                log.exception("pool_maintenance_failed")

    def _gauges(self) -> None:
        """Let the pool gauges read this pool when /metrics is scraped: nothing to set on the request path."""
        metrics.POOL_PROCESSES.set_function(lambda: len(self.processes))
        metrics.POOL_BUSY.set_function(lambda: sum(1 for p in self.processes if p.owner is not None))
        metrics.POOL_QUEUED.set_function(lambda: sum(1 for r in self.queue if not r.done))

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

    def from_client(self, lease: Lease, message: dict[str, Any]) -> None:
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
        elif method in REFUSED_METHODS:
            what = REFUSED_METHODS[method]
            text = (
                f"Method not available: {method}. This gateway shares server processes between sessions "
                f"(UPSTREAM_MODE=pool), so {what} cannot be kept per session"
            )
            lease.refuse(msg_id, METHOD_NOT_FOUND, text)
        else:
            self._dispatch(lease, message)

    def _dispatch(self, lease: Lease, message: dict[str, Any]) -> None:
        route = Route(lease, message["id"], next(self._ids), str(message["method"]))
        outgoing = {**message, "id": route.gid}
        params = message.get("params")
        if isinstance(params, dict) and isinstance(params.get("_meta"), dict):
            token = params["_meta"].get("progressToken")
            if is_id(token):
                route.token = f"gw-{route.gid}"
                route.client_token = token
                self.tokens[route.token] = route
                outgoing["params"] = {**params, "_meta": {**params["_meta"], "progressToken": route.token}}
        route.line = json_bytes(outgoing)
        lease.requests[route.client_id] = route
        process = self._process_for(lease)
        if process is not None:
            self._send(process, route)
            return
        route.enqueued = time.monotonic()
        timeout = self.config.pool_queue_timeout
        if timeout > 0:
            route.timer = asyncio.get_running_loop().call_later(timeout, self._queue_timed_out, route)
        self.queue.append(route)
        lease.queued.append(route)
        if len(self.processes) + self.starting < self.config.pool_max:
            self._fill()

    def _process_for(self, lease: Lease) -> PoolProcess | None:
        """A process this request may go to now without breaking the rule, or None (it waits)."""
        if lease.queued:
            return None  # keep the session's order
        now = time.monotonic()
        for process in lease.processes:
            if process.usable and not (self._someone_waits() and now - process.leased_at > FAIR_SHARE_SECONDS):
                return process
        if self._someone_waits():
            return None  # first come, first served
        for process in self.processes:
            if process.owner is None and process.usable:
                self._lease_to(process, lease)
                return process
        return None

    def _someone_waits(self) -> bool:
        while self.queue and self.queue[0].done:
            self.queue.popleft()
        return bool(self.queue)

    def _lease_to(self, process: PoolProcess, lease: Lease) -> None:
        process.owner = lease
        process.leased_at = time.monotonic()
        lease.processes.add(process)

    def _send(self, process: PoolProcess, route: Route) -> None:
        route.process = process
        process.routes[route.gid] = route
        process.served += 1
        metrics.POOL_DISPATCHES.inc()
        recycle = self.config.pool_recycle_after
        if recycle and process.served >= recycle and process.retiring is None:
            process.retiring = "recycled"
        process.upstream.send(route.line)
        route.line = b""

    def _queue_timed_out(self, route: Route) -> None:
        if route.done or route.process is not None:
            return
        self._finish(route)
        metrics.POOL_REJECTED.labels("queue_timeout").inc()
        waited = f"{self.config.pool_queue_timeout:g}"
        log.warning("pool_queue_timeout", seconds=waited, method=route.method[:100], **route.lease.log_context)
        text = f"Server busy: no upstream server process was free within POOL_QUEUE_TIMEOUT ({waited} s); try again"
        route.lease.refuse(route.client_id, SERVER_BUSY, text)

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
        route = lease.requests.get(request_id) if is_id(request_id) else None
        if route is None:
            return
        self._abandon(route, params.get("reason") if isinstance(params, dict) else None)

    def _abandon(self, route: Route, reason: Any = None) -> None:
        """The request's answer is no longer wanted. If a process has it, tell it to stop, and retire the process:
        it may still be working on it, so it must not serve another session."""
        process = route.process
        self._finish(route)
        if process is None or process.exited:
            return
        params: dict[str, Any] = {"requestId": route.gid}
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
        for route in list(lease.requests.values()):
            self._abandon(route, "session ended")
        for process, original in lease.asks.values():
            if not process.exited:
                process.upstream.send(error_bytes(original, INTERNAL_ERROR, "the client's session has ended"))
        lease.asks.clear()
        for process in list(lease.processes):
            self._maybe_release(process)

    def _finish(self, route: Route) -> None:
        """Forget the route everywhere; its process may be free afterwards."""
        if route.done:
            return
        route.done = True
        if route.timer is not None:
            route.timer.cancel()
            route.timer = None
        lease = route.lease
        if lease.requests.get(route.client_id) is route:
            del lease.requests[route.client_id]
        if route.token is not None:
            self.tokens.pop(route.token, None)
        if route.process is not None:
            route.process.routes.pop(route.gid, None)
        elif route.enqueued:
            with contextlib.suppress(ValueError):
                lease.queued.remove(route)

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
            self._notification(process, envelope, line)

    def _response(self, process: PoolProcess, envelope: Envelope) -> None:
        gid = envelope.id
        future = process.own.pop(gid, None) if isinstance(gid, int) else None
        if future is not None:
            message = envelope.full() or {}
            if isinstance(message.get("result"), dict):
                future.set_result(message["result"])
            else:
                future.set_exception(UpstreamError(f"the upstream server refused: {_error_text(message)}"))
            return
        route = process.routes.get(gid) if isinstance(gid, int) else None
        if route is None:
            self._dropped("response", None, "no request in flight has this id", process)
            return
        lease = route.lease
        self._finish(route)
        try:
            line = envelope.with_id(route.client_id)
        except ValueError:
            line = error_bytes(route.client_id, INTERNAL_ERROR, "the upstream server's answer is not valid JSON")
        lease.on_message(line)
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
        owner.on_message(line)

    def _notification(self, process: PoolProcess, envelope: Envelope, line: bytes) -> None:
        owner = process.owner
        method = envelope.method or ""
        if method == "notifications/progress":
            message = envelope.full() or {}
            params = message.get("params")
            token = params.get("progressToken") if isinstance(params, dict) else None
            route = self.tokens.get(token) if isinstance(token, str) else None
            if route is None or route.process is not process or route.lease is not owner:
                self._dropped("notification", owner, method, process)
                return
            assert isinstance(params, dict)
            line = json_bytes({**message, "params": {**params, "progressToken": route.client_token}})
        elif owner is None or owner.closed:
            self._dropped("notification", None, method, process)
            return
        elif method == "notifications/message":
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
            line = json_bytes({**message, "params": {**params, "requestId": ask}})
        assert owner is not None
        owner.on_message(line)

    def _dropped(self, kind: str, lease: Lease | None, what: str, process: PoolProcess | None = None) -> None:
        metrics.POOL_DROPPED.labels(kind).inc()
        context = dict(lease.log_context) if lease is not None else {}
        if process is not None:
            context.update(process.upstream.log_context)
        log.warning("pool_message_dropped", kind=kind, what=what[:100], **context)

    # --- handing processes over ---------------------------------------------------------------------------

    def _maybe_release(self, process: PoolProcess) -> None:
        """When the owner has nothing left in flight on it, the process is free (or stopped, if retiring)."""
        if process.routes:
            return
        if process.retiring is not None:
            self._stop(process, process.retiring)
            return
        self._release(process)
        if process.usable:
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
            for route in waiting:
                if route.timer is not None:
                    route.timer.cancel()
                    route.timer = None
                metrics.POOL_QUEUE_WAIT.observe(time.monotonic() - route.enqueued)
                self._send(process, route)
            return


def _error_text(message: dict[str, Any]) -> str:
    error = message.get("error")
    if isinstance(error, dict):
        return str(error.get("message", ""))[:200]
    return "an answer without a result"


def _nowhere(line: bytes) -> None:
    pass
