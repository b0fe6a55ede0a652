"""The remote side of the bridge: MCP streamable HTTP, as a client.

Messages go out unchanged as POST bodies; answers come back as JSON or SSE and are handed to `deliver` unchanged.
Besides the plain protocol this keeps a session alive for a long-running stdio client:
- a dropped SSE stream is resumed with GET + `Last-Event-ID` after the server's `retry` delay;
- the standalone GET stream (server-initiated requests and notifications) is reopened when it ends;
- a 404 for the session (the server forgot it) starts a new session by replaying the client's `initialize`,
  then resends the message, so the client on stdin never notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2

from connect import sse
from connect.auth.tokens import challenge_params
from connect.errors import ConnectError

log = logging.getLogger("connect.upstream")

Deliver = Callable[[Any], Awaitable[None]]
DEFAULT_RETRY_MS = 1000
RESUME_ATTEMPTS = 5
ACCEPT = "application/json, text/event-stream"
ERROR_CODE = -32000


def request_ids(message: Any) -> list[Any]:
    """Ids of the requests (not notifications or responses) in a message or batch."""
    items = message if isinstance(message, list) else [message]
    return [m["id"] for m in items if isinstance(m, dict) and "method" in m and m.get("id") is not None]


def error_response(msg_id: Any, text: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "error": {"code": ERROR_CODE, "message": text}}


def explain(exc: BaseException, upstream_host: str) -> ConnectError:
    """One line for anything that went wrong on the way to the server or the identity provider."""
    if isinstance(exc, ConnectError):
        return exc
    if isinstance(exc, httpx2.TransportError):
        try:
            host = exc.request.url.host
        except RuntimeError:
            host = upstream_host
        if host != upstream_host:
            problem = f"cannot reach the identity provider at {host}: {type(exc).__name__}"
            return ConnectError("idp_unreachable", problem)
        return ConnectError("upstream_unreachable", f"cannot reach the MCP server at {host}: {type(exc).__name__}")
    name = type(exc).__name__
    if name.startswith("OAuth"):
        return ConnectError("oauth", f"sign-in failed: {str(exc).splitlines()[0][:300] if str(exc) else name}")
    return ConnectError("internal", f"{name}: {str(exc)[:300]}")


class Upstream:
    """One MCP session on the remote endpoint, reopened when it is lost."""

    def __init__(self, url: str, http: httpx2.AsyncClient, deliver: Deliver) -> None:
        self.url = url
        self.http = http
        self.deliver = deliver
        self.host = httpx2.URL(url).host
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self._initialize: dict[str, Any] | None = None
        self._initialized_sent = False
        self._reinit_count = 0
        self._reinit_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self.sessions_started = 0

    # Sending --------------------------------------------------------------------------------------------------

    def _headers(self, accept: str = ACCEPT) -> dict[str, str]:
        headers = {"Accept": accept}
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        if self.protocol_version:
            headers["MCP-Protocol-Version"] = self.protocol_version
        return headers

    async def _open(
        self, method: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> httpx2.Response:
        all_headers = self._headers() if headers is None else headers
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        request = self.http.build_request(method, self.url, content=body, headers=all_headers)
        return await self.http.send(request, stream=True)

    async def send(self, message: Any, accepted: asyncio.Event | None = None) -> None:
        """POST one message (or batch) and route what comes back; errors become JSON-RPC errors for requests."""
        is_init = isinstance(message, dict) and message.get("method") == "initialize"
        if is_init:
            self._initialize = message
            self.session_id = None
            self.protocol_version = None
        try:
            await self._post(message, is_init, accepted)
        except Exception as exc:  # every failure reaches the client as one line
            problem = explain(exc, self.host)
            log.error("%s", problem.message)
            for msg_id in request_ids(message):
                await self.deliver(error_response(msg_id, problem.message))
        finally:
            if accepted is not None:
                accepted.set()

    async def _post(self, message: Any, is_init: bool, accepted: asyncio.Event | None) -> None:
        body = json.dumps(message, separators=(",", ":")).encode()
        stale_session = self.session_id
        response = await self._open("POST", body)
        if response.status_code == 404 and stale_session and not is_init and self._initialize is not None:
            await response.aclose()
            await self._new_session(stale_session)
            response = await self._open("POST", body)
        if accepted is not None:
            accepted.set()
        await self._route(response, message, is_init)
        initialized = isinstance(message, dict) and message.get("method") == "notifications/initialized"
        if initialized and 200 <= response.status_code < 300:
            self._initialized_sent = True
            self._start_listener()

    async def _route(self, response: httpx2.Response, message: Any, is_init: bool) -> None:
        ids = request_ids(message)
        status = response.status_code
        if status in (202, 204) or (200 <= status < 300 and not ids and not response.headers.get("content-type")):
            await response.aclose()
            return
        if status >= 400:
            text = await self._refusal(response)
            log.error("%s", text)
            for msg_id in ids:
                await self.deliver(error_response(msg_id, text))
            return
        if is_init:
            self._adopt_session(response)
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "text/event-stream":
            consume = self._consume(response, set(ids), on_message=self._watch_init if is_init else None)
            if is_init:
                await consume  # the session must exist before anything else is sent
            else:
                self._spawn(consume)
            return
        raw = await response.aread()
        await response.aclose()
        if not raw.strip():
            return
        try:
            answer = json.loads(raw)
        except ValueError:
            for msg_id in ids:
                await self.deliver(error_response(msg_id, "the MCP server sent a body that is not JSON"))
            return
        if is_init:
            await self._watch_init(answer)
        await self.deliver(answer)

    async def _refusal(self, response: httpx2.Response) -> str:
        status = response.status_code
        params = challenge_params(response)
        with contextlib.suppress(httpx2.HTTPError):
            await response.aread()
        await response.aclose()
        if status == 403:
            scope = f", needs scope {params['scope']}" if params.get("scope") else ""
            return f"the MCP server refused the request (403 {params.get('error', 'forbidden')}{scope})"
        if status == 401:
            return f"the MCP server refused the token (401 {params.get('error', 'unauthorized')})"
        if status == 404:
            return "the MCP server does not know this session (404)"
        return f"the MCP server answered HTTP {status}"

    def _adopt_session(self, response: httpx2.Response) -> None:
        session = response.headers.get("mcp-session-id")
        self.session_id = session or None
        self.sessions_started += 1

    async def _watch_init(self, answer: Any) -> None:
        if isinstance(answer, dict) and isinstance(answer.get("result"), dict):
            version = answer["result"].get("protocolVersion")
            if isinstance(version, str):
                self.protocol_version = version

    # Receiving ------------------------------------------------------------------------------------------------

    async def _consume(self, response: httpx2.Response, pending: set[Any], on_message: Deliver | None = None) -> None:
        """Deliver a request's SSE stream; when it drops before every response came, resume it with GET."""
        last_id: str | None = None
        retry_ms = DEFAULT_RETRY_MS
        attempts = 0
        while True:
            try:
                async for event in sse.events(response.aiter_bytes()):
                    if event.retry is not None:
                        retry_ms = event.retry
                    if event.id is not None:
                        last_id = event.id
                    if not event.data:
                        continue
                    attempts = 0
                    await self._dispatch(event.data, pending, on_message)
                    if not pending and response.request.method == "GET":
                        break
            except httpx2.HTTPError as exc:
                log.info("stream dropped (%s)", type(exc).__name__)
            finally:
                await response.aclose()
            if not pending:
                return
            if last_id is None or attempts >= RESUME_ATTEMPTS:
                problem = "the MCP server closed the stream before answering"
                log.error("%s", problem)
                for msg_id in pending:
                    await self.deliver(error_response(msg_id, problem))
                return
            attempts += 1
            log.debug("the stream ended before its response; resuming it in %d ms", retry_ms)
            await asyncio.sleep(retry_ms / 1000)
            headers = self._headers("text/event-stream")
            headers["Last-Event-ID"] = last_id
            response = await self._resume(headers)
            if response.status_code in (404, 405):
                attempts = RESUME_ATTEMPTS

    async def _resume(self, headers: dict[str, str]) -> httpx2.Response:
        """GET the stream again; a failure is an empty finished stream, so the caller's loop just tries again."""
        try:
            response = await self._open("GET", headers=headers)
        except httpx2.HTTPError as exc:
            log.info("resuming the stream failed (%s)", type(exc).__name__)
            return httpx2.Response(502, content=b"", request=httpx2.Request("GET", self.url))
        if response.status_code != 200:
            await response.aclose()
            return httpx2.Response(response.status_code, content=b"", request=httpx2.Request("GET", self.url))
        return response

    async def _dispatch(self, data: str, pending: set[Any], on_message: Deliver | None) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("dropped an SSE event that is not JSON")
            return
        items = message if isinstance(message, list) else [message]
        for item in items:
            if isinstance(item, dict) and "method" not in item:
                pending.discard(item.get("id"))
        if on_message is not None:
            await on_message(message)
        await self.deliver(message)

    def _start_listener(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        """The standalone GET stream, reopened (with Last-Event-ID) whenever it ends; a 405 means none exists."""
        last_id: str | None = None
        retry_ms = DEFAULT_RETRY_MS
        failures = 0
        while self.session_id is not None or self._initialized_sent:
            headers = self._headers("text/event-stream")
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            try:
                response = await self._open("GET", headers=headers)
            except httpx2.HTTPError as exc:
                failures += 1
                log.info("the server stream could not be opened (%s)", type(exc).__name__)
                await asyncio.sleep(min(30.0, retry_ms / 1000 * 2**failures))
                continue
            if response.status_code != 200:
                await response.aclose()
                if response.status_code not in (429, 502, 503, 504):
                    log.debug("no server stream (HTTP %s)", response.status_code)
                    return
                failures += 1
                await asyncio.sleep(min(30.0, retry_ms / 1000 * 2**failures))
                continue
            failures = 0
            try:
                async for event in sse.events(response.aiter_bytes()):
                    if event.retry is not None:
                        retry_ms = event.retry
                    if event.id is not None:
                        last_id = event.id
                    if event.data:
                        await self._dispatch(event.data, set(), None)
            except httpx2.HTTPError as exc:
                log.info("server stream dropped (%s)", type(exc).__name__)
            finally:
                await response.aclose()
            await asyncio.sleep(retry_ms / 1000)

    # Sessions -------------------------------------------------------------------------------------------------

    async def _new_session(self, stale: str) -> None:
        """Open a new session with the client's own initialize (a private id) and initialized notification."""
        async with self._reinit_lock:
            if self.session_id != stale:
                return  # another message already did it
            assert self._initialize is not None
            self._reinit_count += 1
            log.warning("the MCP server lost the session (404); starting a new one")
            if self._listener is not None:
                self._listener.cancel()
            self.session_id = None
            self.protocol_version = None
            init = dict(self._initialize, id=f"cnpg-mcp-connect-reinit-{self._reinit_count}")
            answers: list[Any] = []

            async def keep(message: Any) -> None:
                answers.append(message)

            saved, self.deliver = self.deliver, keep
            try:
                response = await self._open("POST", json.dumps(init).encode())
                if response.status_code >= 400:
                    raise ConnectError("session", await self._refusal(response))
                await self._route(response, init, is_init=True)
            finally:
                self.deliver = saved
            if not any(isinstance(a, dict) and "result" in a for a in answers):
                raise ConnectError("session", "the MCP server refused a new session")
            note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
            response = await self._open("POST", note)
            await response.aclose()
            if self._initialized_sent:
                self._start_listener()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """End the session (DELETE, best effort) and every stream task."""
        tasks = list(self._tasks)
        if self._listener is not None:
            tasks.append(self._listener)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.session_id:
            with contextlib.suppress(Exception):
                response = await asyncio.wait_for(self._open("DELETE", headers=self._headers()), 5)
                await response.aclose()
            self.session_id = None
