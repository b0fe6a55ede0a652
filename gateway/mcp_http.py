"""MCP streamable HTTP (2025-11-25, also serving 2025-06-18 and 2025-03-26 clients): POST, GET, DELETE; 2026-07-28
requests (no session) go to gateway/stateless.py.

The transport checks the HTTP rules (Origin/Host, Accept, Content-Type, body size, session id, protocol version),
asks the authenticator who is calling and whether each request may pass, and hands JSON-RPC messages to the
session. Only the envelope is read (jsonrpc, id, method, params); the body goes upstream as received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiohttp import web

from gateway.audit import record_tool_call
from gateway.config import GatewayConfig, is_loopback_host
from gateway.jsonrpc import (
    HANDSHAKE_VERSIONS,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    SERVER_BUSY,
    SESSION_NOT_FOUND,
    error_message,
    invalid_envelope,
    json_bytes,
    tool_call_facts,
)
from gateway.logging import get_logger
from gateway.param_headers import preflight_param_headers
from gateway.security import Authenticator, AuthRejection, Principal
from gateway.sessions import ResultFilter, Session, SessionLimit, SessionManager
from gateway.sse import EVENT_ID, GET_STREAM, KEEPALIVE, SSE_HEADERS, Stream, retry_frame, supports_priming
from gateway.stateless import StatelessService, wants_stateless
from gateway.upstream import UpstreamError

log = get_logger("http")
SESSION_HEADER = "Mcp-Session-Id"
MCP_METHOD = web.RequestKey("mcp_method", str)
"""What the request log and metrics call this request: a JSON-RPC method, "batch", "response", "GET", "DELETE"."""
SESSION_TAG = web.RequestKey("session_tag", str)
SESSION = web.RequestKey("session", Session)
"""The session a request belongs to, once known: ended if the request fails in an unexpected way."""
PREPARED = web.RequestKey("prepared", web.StreamResponse)
"""A stream whose headers are sent: after an unexpected error it is ended rather than replaced."""
ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
VERSION_HEADER = "MCP-Protocol-Version"
DEFAULT_VERSION = "2025-03-26"
"""Assumed when a client sends no MCP-Protocol-Version header (the spec's backwards-compatibility rule)."""
EXPOSED_HEADERS = "Mcp-Session-Id, MCP-Protocol-Version, WWW-Authenticate, Retry-After"
PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "GET, POST, DELETE",
    "Access-Control-Allow-Headers": (
        "Content-Type, Accept, Authorization, Mcp-Session-Id, MCP-Protocol-Version, Mcp-Method, Mcp-Name, Last-Event-ID"
    ),
    "Access-Control-Max-Age": "600",
}
COALESCE_SECONDS = 0.005


def preflight_headers(request: web.Request) -> dict[str, str]:
    """A CORS preflight's answer: the fixed MCP headers, plus the `Mcp-Param-*` headers the browser asks to send
    (MCP 2026-07-28 tools name their own)."""
    params = preflight_param_headers(request.headers.get("Access-Control-Request-Headers", ""))
    if not params:
        return PREFLIGHT_HEADERS
    allowed = PREFLIGHT_HEADERS["Access-Control-Allow-Headers"] + ", " + ", ".join(params)
    return {**PREFLIGHT_HEADERS, "Access-Control-Allow-Headers": allowed, "Vary": "Access-Control-Request-Headers"}


def json_error(
    status: int,
    code: int,
    message: str,
    msg_id: Any = None,
    *,
    headers: dict[str, str] | None = None,
    data: Any = None,
) -> web.Response:
    return web.Response(
        status=status,
        body=json_bytes(error_message(msg_id, code, message, data)),
        content_type="application/json",
        headers=headers,
    )


def refusal(exc: AuthRejection, status: int | None = None) -> web.Response:
    """The authenticator's refusal as a response (`status` overrides its own, e.g. 403 for a denied message)."""
    return web.Response(
        status=status or exc.status, headers=exc.headers, body=json_bytes(exc.body()), content_type="application/json"
    )


def _media_q(accept: str) -> dict[str, float]:
    """Media ranges of an Accept header with their q-values."""
    ranges: dict[str, float] = {}
    for part in accept.split(","):
        fields = part.strip().split(";")
        media = fields[0].strip().lower()
        if not media:
            continue
        q = 1.0
        for param in fields[1:]:
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranges[media] = max(q, ranges.get(media, 0.0))
    return ranges


def _quality(ranges: dict[str, float], media: str) -> float:
    kind = media.split("/", 1)[0]
    for candidate in (media, f"{kind}/*", "*/*"):
        if candidate in ranges:
            return ranges[candidate]
    return 0.0


_ACCEPT_CACHE: dict[str, tuple[float, float]] = {}


def accept_qualities(accept: str) -> tuple[float, float]:
    """(q for application/json, q for text/event-stream); cached because clients send the same header each time."""
    cached = _ACCEPT_CACHE.get(accept)
    if cached is None:
        ranges = _media_q(accept)
        cached = (_quality(ranges, "application/json"), _quality(ranges, "text/event-stream"))
        if len(_ACCEPT_CACHE) < 256:
            _ACCEPT_CACHE[accept] = cached
    return cached


class McpTransport:
    """Handlers for the MCP endpoint; one instance per application."""

    def __init__(self, config: GatewayConfig, manager: SessionManager, authenticator: Authenticator | None) -> None:
        self.config = config
        self.manager = manager
        self.authenticator = authenticator
        self.stateless = StatelessService(config, authenticator)
        """MCP 2026-07-28 requests (pool mode); gateway/stateless.py."""
        # DNS rebinding threatens unauthenticated loopback servers; with auth a rebound page holds no token,
        # and a proxy in front may legitimately send its public Host.
        self._check_host = is_loopback_host(config.host) and config.auth is None
        allowed_hosts = set()
        if config.public_host:
            allowed_hosts.add(config.public_host)
        for origin in config.allowed_origins:
            allowed_hosts.add(origin.split("://", 1)[1])
        self._allowed_hosts = frozenset(allowed_hosts)
        origins = set(config.allowed_origins)
        if config.public_origin:
            origins.add(config.public_origin)
        self._allowed_origins = frozenset(origins)

    # --- entry point --------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The MCP endpoint. Whatever goes wrong inside, the client gets an answer and no session is left half-used."""
        try:
            return await self._handle(request)
        except web.HTTPException:
            raise  # aiohttp's own answers
        except ConnectionError:
            # The client went away (its streams stay resumable); there is nobody to answer.
            return web.Response(status=499)
        except Exception:
            return self._unexpected(request)

    def _unexpected(self, request: web.Request) -> web.StreamResponse:
        """A bug: log it with its stack (never the headers), end the request's session, answer a clean error."""
        log.exception(
            "unexpected_error",
            method=request.method,
            mcp_method=request.get(MCP_METHOD),
            session=request.get(SESSION_TAG),
        )
        if SESSION in request:
            message = "session ended by an internal error in the gateway"
            self.manager.end_session(request[SESSION], "error", message=message)
        if PREPARED in request:
            return request[PREPARED]  # its headers are out: aiohttp ends it; the session's end ended its stream
        return json_error(500, INTERNAL_ERROR, "Internal error in the gateway; the session, if any, has ended")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        rejection = self._check_origin(request)
        if rejection is not None:
            return rejection
        if request.method == "OPTIONS":
            # CORS preflight from an allowed origin (checked above): browsers send it without credentials.
            request[MCP_METHOD] = "OPTIONS"
            return web.Response(status=204, headers=preflight_headers(request))
        principal: Principal | None = None
        if self.authenticator is not None:
            try:
                principal = await self.authenticator.authenticate(request)
            except AuthRejection as exc:
                return refusal(exc)
        method = request.method
        if method == "POST":
            return await self._post(request, principal)
        if method == "GET":
            request[MCP_METHOD] = "GET"
            return await self._get(request, principal)
        if method == "DELETE":
            request[MCP_METHOD] = "DELETE"
            return self._delete(request, principal)
        return json_error(405, INVALID_REQUEST, "Method not allowed", headers={"Allow": ALLOWED_METHODS})

    def _check_origin(self, request: web.Request) -> web.Response | None:
        """Refuse browsers from foreign origins and, on loopback, foreign Host names (DNS rebinding)."""
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin):
            return json_error(403, INVALID_REQUEST, "Forbidden: origin not allowed")
        if self._check_host:
            host = request.headers.get("Host")
            if host is not None and not self._host_allowed(host):
                return json_error(403, INVALID_REQUEST, "Forbidden: host not allowed")
        return None

    async def add_cors_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """on_response_prepare hook: let a browser page from an allowed origin read MCP responses."""
        origin = request.headers.get("Origin")
        if origin is None or request.path != self.config.mcp_path or not self._origin_allowed(origin):
            return
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        vary = response.headers.get("Vary")
        response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"

    def _origin_allowed(self, origin: str) -> bool:
        origin = origin.strip().lower()
        if origin in self._allowed_origins:
            return True
        scheme, sep, rest = origin.partition("://")
        if not sep or scheme not in ("http", "https") or "/" in rest:
            return False
        return is_loopback_host(_host_only(rest))

    def _host_allowed(self, host: str) -> bool:
        host = host.strip().lower()
        return host in self._allowed_hosts or is_loopback_host(_host_only(host))

    def _session(self, request: web.Request, principal: Principal | None, msg_id: Any = None) -> Session | web.Response:
        """The session named by the request header, or the error response to send."""
        session_id = request.headers.get(SESSION_HEADER)
        if not session_id:
            return json_error(400, INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required", msg_id)
        session = self.manager.get(session_id)
        if session is None or (principal is not None and session.subject != principal.subject):
            # Another caller's session is reported exactly like an unknown one.
            return json_error(404, SESSION_NOT_FOUND, "Session not found", msg_id)
        request[SESSION_TAG] = session.tag
        request[SESSION] = session
        session.last_activity = time.monotonic()
        return session

    def _check_version(self, request: web.Request, msg_id: Any = None) -> web.Response | None:
        version = request.headers.get(VERSION_HEADER)
        if version is not None and version not in HANDSHAKE_VERSIONS:
            return json_error(
                400,
                INVALID_REQUEST,
                f"Bad Request: unsupported MCP-Protocol-Version {version[:40]!r}",
                msg_id,
                data={"supported": list(HANDSHAKE_VERSIONS)},
            )
        return None

    # --- POST ---------------------------------------------------------------------------------------------

    async def _post(self, request: web.Request, principal: Principal | None) -> web.StreamResponse:
        content_type = request.headers.get("Content-Type", "")
        if content_type.split(";", 1)[0].strip().lower() != "application/json":
            return json_error(415, INVALID_REQUEST, "Unsupported Media Type: Content-Type must be application/json")
        q_json, q_sse = accept_qualities(request.headers.get("Accept", ""))
        if q_json <= 0 or q_sse <= 0:
            return json_error(
                406, INVALID_REQUEST, "Not Acceptable: Accept must list application/json and text/event-stream"
            )
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return json_error(413, INVALID_REQUEST, f"Payload Too Large: the limit is {limit} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return json_error(413, INVALID_REQUEST, f"Payload Too Large: the limit is {limit} bytes")
        except web.RequestPayloadError:
            # A body that does not match its Content-Encoding (not gzip after all) or broken chunked framing. The
            # rest of the body is unreadable, so the connection ends with this answer: marking the body read keeps
            # aiohttp from trying to skip the rest of it after the response.
            request.content.feed_eof()
            refused = json_error(400, PARSE_ERROR, "Parse error: the body cannot be decoded")
            refused.force_close()
            return refused
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            return json_error(400, PARSE_ERROR, "Parse error: body is not valid JSON")
        batch = isinstance(data, list)
        messages: list[Any] = data if batch else [data]
        if not messages:
            return json_error(400, INVALID_REQUEST, "Invalid Request: empty batch")
        for msg in messages:
            problem = invalid_envelope(msg)
            if problem is not None:
                msg_id = msg.get("id") if isinstance(msg, dict) else None
                if isinstance(msg_id, bool) or not isinstance(msg_id, (str, int)):
                    msg_id = None
                return json_error(400, INVALID_REQUEST, f"Invalid Request: {problem}", msg_id)
        first = messages[0]
        first_method = first.get("method")
        request[MCP_METHOD] = "batch" if batch else (first_method if first_method is not None else "response")
        if SESSION_HEADER not in request.headers and wants_stateless(request.headers, None if batch else first):
            if self.manager.draining:
                return json_error(
                    503,
                    SERVER_BUSY,
                    "Service Unavailable: shutting down",
                    first.get("id"),
                    headers={"Retry-After": "5"},
                )
            return await self.stateless.handle(request, principal, messages, batch)
        if not batch and first_method == "initialize":
            return await self._initialize(request, principal, first, body)
        if not batch and first_method == "server/discover" and SESSION_HEADER not in request.headers:
            # The stateless 2026 probe: say "not here" so SDK clients fall back to the initialize handshake.
            return json_error(
                200,
                METHOD_NOT_FOUND,
                "Method not found: server/discover; this server uses initialize",
                first.get("id"),
                data={"supported": list(HANDSHAKE_VERSIONS)},
            )
        first_id = first.get("id") if not batch and first_method is not None else None
        bad_version = self._check_version(request, first_id)
        if bad_version is not None:
            return bad_version
        found = self._session(request, principal, first_id)
        if isinstance(found, web.Response):
            return found
        session = found
        if batch:
            if session.protocol_version != "2025-03-26":
                return json_error(400, INVALID_REQUEST, "Invalid Request: JSON-RPC batches need protocol 2025-03-26")
            if any(m.get("method") == "initialize" for m in messages):
                return json_error(400, INVALID_REQUEST, "Invalid Request: initialize cannot be batched")
        return await self._forward(request, session, principal, messages, body if not batch else None)

    async def _forward(
        self,
        request: web.Request,
        session: Session,
        principal: Principal | None,
        messages: list[dict[str, Any]],
        raw: bytes | None,
    ) -> web.StreamResponse:
        requests = [m for m in messages if "id" in m and m.get("method") is not None]
        if requests:
            if self.authenticator is not None and principal is not None:
                for msg in requests:
                    try:
                        self.authenticator.authorize_message(principal, msg, request)
                    except AuthRejection as exc:
                        if msg["method"] == "tools/call":
                            self._record_denied(session, principal, msg)
                        return refusal(exc, 403)
            if self.manager.draining:
                return json_error(
                    503,
                    SERVER_BUSY,
                    "Service Unavailable: shutting down",
                    requests[0]["id"],
                    headers={"Retry-After": "5"},
                )
            ids = [m["id"] for m in requests]
            if len(set(ids)) != len(ids) or any(i in session.pending for i in ids):
                return json_error(400, INVALID_REQUEST, "Invalid Request: request id already in use", ids[0])
        upstream = session.upstream
        if not requests:
            session.forward(messages, raw)
            await upstream.drain()
            return web.Response(status=202)
        q_json, q_sse = accept_qualities(request.headers.get("Accept", ""))
        stream = session.new_stream(json_mode=q_json > q_sse)
        for msg in requests:
            session.register(msg, stream, principal, self._result_filter(principal, msg["method"]))
        session.forward(messages, raw)
        await upstream.drain()
        if stream.json_mode:
            return await self._json_reply(session, stream, batch=raw is None)
        return await self._sse_reply(request, session, stream, initialize=False)

    def _result_filter(self, principal: Principal | None, method: str) -> ResultFilter | None:
        """The authenticator's filter of this request's answer, for the caller (tools/list only)."""
        auth = self.authenticator
        if auth is None or principal is None or method != "tools/list":
            return None
        return lambda message: auth.filter_result(principal, method, message)

    def _record_denied(self, session: Session, principal: Principal, msg: dict[str, Any]) -> None:
        """Audit line and TOOL_CALLS sample for a refused call (the auth layer counts AUTHZ_DENIALS itself)."""
        tool, args = tool_call_facts(msg)
        record_tool_call(principal, tool, args, "denied", 0.0, session.tag)

    async def _initialize(
        self, request: web.Request, principal: Principal | None, msg: dict[str, Any], raw: bytes
    ) -> web.StreamResponse:
        msg_id = msg.get("id")
        if "id" not in msg:
            return json_error(400, INVALID_REQUEST, "Invalid Request: initialize must be a request")
        if request.headers.get(SESSION_HEADER):
            return json_error(400, INVALID_REQUEST, "Bad Request: initialize must not carry Mcp-Session-Id", msg_id)
        bad_version = self._check_version(request, msg_id)
        if bad_version is not None:
            return bad_version
        if self.authenticator is not None and principal is not None:
            try:
                self.authenticator.authorize_message(principal, msg, request)
            except AuthRejection as exc:
                return refusal(exc, 403)
        creating = asyncio.ensure_future(self.manager.create(principal.subject if principal else None))
        try:
            # Shielded so a client hanging up mid-spawn cannot leave a half-started process; the finished
            # session is then ended, since nobody will ever learn its id.
            session = await asyncio.shield(creating)
        except asyncio.CancelledError:
            creating.add_done_callback(self._end_abandoned)
            raise
        except SessionLimit as exc:
            text = "shutting down" if exc.reason == "draining" else "too many sessions"
            return json_error(503, SERVER_BUSY, f"Service Unavailable: {text}", msg_id, headers={"Retry-After": "5"})
        except UpstreamError as exc:
            return json_error(502, INTERNAL_ERROR, f"Bad Gateway: {exc}", msg_id)
        request[SESSION_TAG] = session.tag
        request[SESSION] = session
        if session.closed:
            # The upstream ended before it was sent anything, e.g. a server that cannot start.
            return json_error(502, INTERNAL_ERROR, f"Bad Gateway: {session.close_message}", msg_id)
        q_json, q_sse = accept_qualities(request.headers.get("Accept", ""))
        stream = session.new_stream(json_mode=q_json > q_sse)
        session.register(msg, stream, principal)
        session.forward([msg], raw)
        try:
            if stream.json_mode:
                return await self._json_reply(session, stream, batch=False, session_id=session.id)
            return await self._sse_reply(request, session, stream, initialize=True)
        except BaseException:
            # The client left (or something broke) before it had the initialize result: the session is of no
            # use to anyone.
            self.manager.end_session(session, "error")
            raise

    def _end_abandoned(self, creating: asyncio.Future[Session]) -> None:
        if not creating.cancelled() and creating.exception() is None:
            self.manager.end_session(creating.result(), "error")

    # --- replies ------------------------------------------------------------------------------------------

    async def _json_reply(
        self, session: Session, stream: Stream, *, batch: bool, session_id: str | None = None
    ) -> web.Response:
        while not stream.finished:
            await stream.wait()
        session.retire(stream)
        payloads = [payload.rstrip(b"\n") for _, payload in stream.events]
        headers = {SESSION_HEADER: session_id} if session_id else None
        if not payloads:
            return web.Response(status=202, headers=headers)
        body = b"[" + b",".join(payloads) + b"]" if batch else payloads[0]
        return web.Response(status=200, body=body, content_type="application/json", headers=headers)

    async def _sse_reply(
        self, request: web.Request, session: Session, stream: Stream, *, initialize: bool
    ) -> web.StreamResponse:
        headers = dict(SSE_HEADERS)
        if initialize:
            headers[SESSION_HEADER] = session.id
        token = object()
        stream.attach(token, None)
        close_after = 0.0
        priming = b""
        if not initialize and supports_priming(session.protocol_version):
            # Allocated first so its id precedes every event of the stream.
            priming = session.priming_frame(stream)
            # Only a client holding an event id can resume, so only then may the stream be closed early.
            close_after = self.config.sse_close_after
        if not stream.finished:
            # A quick answer lets the whole stream leave as one response; a slow one delays the priming event by
            # this much at most.
            try:
                await stream.wait(COALESCE_SECONDS)
            except BaseException:
                stream.detach(token)  # the client left; the stream stays resumable
                raise
        if stream.finished and stream.attached is token:
            # Every event is known: one body with a Content-Length, so headers and events go out in one write.
            frames = stream.take_outbox()
            if frames:
                stream.delivered_seq = max(stream.delivered_seq, frames[-1][0])
            stream.detach(token)
            session.relieve(stream)
            session.retire(stream)
            return web.Response(status=200, headers=headers, body=b"".join([priming, *(frame for _, frame in frames)]))
        response = web.StreamResponse(status=200, headers=headers)
        try:
            await response.prepare(request)
        except BaseException:
            stream.detach(token)
            raise
        request[PREPARED] = response
        await self._pump(response, session, stream, token, close_after, first=priming)
        return response

    async def _pump(
        self,
        response: web.StreamResponse,
        session: Session,
        stream: Stream,
        token: object,
        close_after: float,
        *,
        first: bytes = b"",
    ) -> None:
        """Write `first`, then the stream's events, until it finishes, is replaced, or (polling) times out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + close_after if close_after > 0 and stream.sid != GET_STREAM else None
        keepalive = self.config.sse_keepalive
        try:
            if first:
                await response.write(first)
            while stream.attached is token:
                if stream.outbox:
                    frames = stream.take_outbox()
                    await response.write(frames[0][1] if len(frames) == 1 else b"".join(f for _, f in frames))
                    stream.delivered_seq = max(stream.delivered_seq, frames[-1][0])
                    session.relieve(stream)
                    continue
                if stream.finished:
                    break
                timeout = keepalive
                if deadline is not None:
                    timeout = min(timeout, deadline - loop.time())
                    if timeout <= 0:
                        # Polling: end this connection; the client resumes with Last-Event-ID after `retry`.
                        await response.write(retry_frame(self.config.sse_retry_ms))
                        break
                timed_out = await stream.wait(timeout)
                if timed_out and (deadline is None or loop.time() < deadline):
                    await response.write(KEEPALIVE)
        except (ConnectionError, RuntimeError):
            pass  # the client went away; the stream stays resumable
        finally:
            stream.detach(token)
            session.relieve(stream)
            if stream.finished and stream.sid != GET_STREAM:
                session.retire(stream)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()

    # --- GET ----------------------------------------------------------------------------------------------

    async def _get(self, request: web.Request, principal: Principal | None) -> web.StreamResponse:
        _, q_sse = accept_qualities(request.headers.get("Accept", ""))
        if q_sse <= 0:
            return json_error(406, INVALID_REQUEST, "Not Acceptable: Accept must list text/event-stream")
        bad_version = self._check_version(request)
        if bad_version is not None:
            return bad_version
        found = self._session(request, principal)
        if isinstance(found, web.Response):
            return found
        session = found
        last_event_id = request.headers.get("Last-Event-ID")
        after: int | None = None
        if last_event_id:
            stream = None
            match = EVENT_ID.fullmatch(last_event_id.strip())
            if match is not None:
                stream = session.find_stream(int(match[1]))
                after = int(match[2])
            if stream is not None and stream.json_mode:
                # A plain JSON reply has no event ids to resume from, and its POST handler is still reading it.
                stream = None
            if stream is None:
                return json_error(400, INVALID_REQUEST, "Bad Request: unknown or expired Last-Event-ID")
        else:
            stream = session.get_stream
            if stream.attached is not None:
                return json_error(409, INVALID_REQUEST, "Conflict: this session already has a GET stream")
        if stream.sid == GET_STREAM and (self.manager.draining or stream.finished):
            return json_error(503, SERVER_BUSY, "Service Unavailable: shutting down", headers={"Retry-After": "5"})
        response = web.StreamResponse(status=200, headers=SSE_HEADERS)
        await response.prepare(request)
        request[PREPARED] = response
        token = object()
        stream.attach(token, after)
        priming = b""
        if after is None and not stream.outbox and supports_priming(session.protocol_version):
            priming = session.priming_frame(stream)
        # A resumed stream stays open until its response: the client has already waited one polling interval.
        await self._pump(response, session, stream, token, 0.0, first=priming)
        return response

    # --- DELETE -------------------------------------------------------------------------------------------

    def _delete(self, request: web.Request, principal: Principal | None) -> web.Response:
        found = self._session(request, principal)
        if isinstance(found, web.Response):
            return found
        self.manager.end_session(found, "client_delete")
        return web.Response(status=204)


def _host_only(hostport: str) -> str:
    """The host part of "host[:port]" or "[v6]:port"."""
    if hostport.startswith("["):
        return hostport[: hostport.find("]") + 1] if "]" in hostport else hostport
    return hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 else hostport
