"""MCP 2026-07-28, the stateless protocol: each POST is one self-contained request, served from a pool partition.

A 2026-07-28 request carries its protocol version and client capabilities in `params._meta`, and the routing headers
`MCP-Protocol-Version`, `Mcp-Method` and (for tools/call, prompts/get, resources/read) `Mcp-Name`, plus the
`Mcp-Param-*` headers a tool's input schema asks for (gateway/param_headers.py). There is no initialize handshake,
no `Mcp-Session-Id`, no GET stream and no resumption. The transport (gateway/mcp_http.py) has already authenticated
the caller; this module checks the request the way that version asks, authorizes it with the same rules as a
session's request, and hands it to `ModernPool`: pooled upstream processes whose era is 2026-07-28.

A stdio server built on the MCP 2.x SDK settles its era on the first request it reads: `initialize` makes it a
handshake-era process, a request carrying the 2026 `_meta` envelope makes it a 2026-07-28 process, for good. So the
two eras never share a process: the session pool (gateway/pool.py) initializes its processes, and `ModernPool` opens
each of its own with a `server/discover` probe. A probe that is refused or not answered means the upstream does not
speak 2026-07-28; the gateway then stops offering that version (version negotiation tells the truth).

Input-required results carry a `requestState` the client echoes on its retry. The gateway seals the upstream's state
(AES-GCM) together with the caller's subject, the method and the name, under a key shared by every replica
(REQUEST_STATE_KEY_FILE), so a retry may land on any replica and any process, and a state minted for one caller is
refused to another. The upstream processes must accept each other's states themselves (docs/gateway.md).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import itertools
import json
import os
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway import metrics
from gateway.audit import record_tool_call
from gateway.config import GatewayConfig
from gateway.envelope import Envelope, read_envelope
from gateway.errors import ConfigError
from gateway.jsonrpc import (
    HANDSHAKE_VERSIONS,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    SERVER_BUSY,
    error_bytes,
    json_bytes,
    tool_call_facts,
)
from gateway.logging import get_logger
from gateway.param_headers import ToolSchemas, check_param_headers, decode_header_value, sent_param_headers
from gateway.pool import GATEWAY_VERSION, Lease, Pool, PoolProcess
from gateway.security import Authenticator, AuthRejection, Principal
from gateway.upstream import UpstreamError

log = get_logger("stateless")

MODERN_VERSIONS: tuple[str, ...] = ("2026-07-28",)
"""MCP revisions without a handshake, where every request carries its version."""
PROTOCOL_VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_KEY = "io.modelcontextprotocol/clientInfo"
VERSION_HEADER = "MCP-Protocol-Version"
METHOD_HEADER = "Mcp-Method"
NAME_HEADER = "Mcp-Name"
ROUTING_HEADERS = (VERSION_HEADER, METHOD_HEADER, NAME_HEADER)
NAME_PARAMS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
"""Methods whose `Mcp-Name` header mirrors a body parameter."""

HEADER_MISMATCH = -32020
UNSUPPORTED_PROTOCOL_VERSION = -32022
ERROR_STATUS = {
    PARSE_ERROR: 400,
    INVALID_REQUEST: 400,
    INVALID_PARAMS: 400,
    HEADER_MISMATCH: 400,
    -32021: 400,  # a required client capability is missing
    UNSUPPORTED_PROTOCOL_VERSION: 400,
    METHOD_NOT_FOUND: 404,
}
"""HTTP status of a JSON-RPC error at 2026-07-28 (other codes, and results, are 200)."""

PROBE_TIMEOUT = 10.0
"""Seconds a new process has to answer the gateway's `server/discover` probe; silence means it speaks no 2026."""
STATE_PREFIX = "gw1."
STATE_AAD = b"cnpg-mcp-gateway/request-state/v1"
STATE_TTL = 600.0
"""Seconds a sealed requestState stays valid: an input-required exchange is a person answering a question."""
TOOLS_CHANGED = "notifications/tools/list_changed"
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEPALIVE_SECONDS = 15.0


def gateway_meta() -> dict[str, Any]:
    """The `_meta` envelope of the gateway's own requests to a 2026-07-28 process."""
    return {
        PROTOCOL_VERSION_KEY: MODERN_VERSIONS[-1],
        CLIENT_CAPABILITIES_KEY: {},
        CLIENT_INFO_KEY: {"name": "cnpg-mcp-gateway", "version": GATEWAY_VERSION},
    }


def wants_stateless(headers: Mapping[str, str], message: Any) -> bool:
    """Whether a POST without `Mcp-Session-Id` is a 2026-era request (or claims an era the gateway must refuse).

    As in the SDK: a version header that names no handshake revision, or, without any version header, a request
    whose `_meta` carries the 2026 protocol-version key (then the missing header is the client's error to hear).
    """
    version = headers.get(VERSION_HEADER)
    if version is not None:
        return version not in HANDSHAKE_VERSIONS
    if not isinstance(message, dict) or message.get("method") == "initialize":
        return False
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and PROTOCOL_VERSION_KEY in meta


class Refusal(Exception):
    """A request refused before it reaches an upstream: a JSON-RPC error and the status that version gives it."""

    def __init__(self, code: int, message: str, data: Any = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.status = status if status is not None else ERROR_STATUS.get(code, 200)


def check_request(message: dict[str, Any], headers: Any, served: list[str]) -> None:
    """The 2026-07-28 checks, first failure wins: the `_meta` envelope, the routing headers against the body, the
    version. Raises `Refusal`."""
    for name in ROUTING_HEADERS:
        if len(headers.getall(name, ())) > 1:
            raise Refusal(HEADER_MISMATCH, f"{name} header appears more than once")
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict):
        raise Refusal(
            INVALID_PARAMS,
            f"params._meta must be an object carrying the required {PROTOCOL_VERSION_KEY!r} and "
            f"{CLIENT_CAPABILITIES_KEY!r} envelope keys",
        )
    missing = [key for key in (PROTOCOL_VERSION_KEY, CLIENT_CAPABILITIES_KEY) if key not in meta]
    if missing:
        raise Refusal(INVALID_PARAMS, f"params._meta is missing the required envelope key(s): {', '.join(missing)}")
    version = meta[PROTOCOL_VERSION_KEY]
    header = headers.get(VERSION_HEADER)
    if header is None or header.strip() != version:
        raise Refusal(HEADER_MISMATCH, "MCP-Protocol-Version header does not match the request envelope's version")
    method = message["method"]
    sent_method = headers.get(METHOD_HEADER)
    if sent_method is None or sent_method.strip() != method:
        raise Refusal(HEADER_MISMATCH, "Mcp-Method header does not match the request body's method")
    name_key = NAME_PARAMS.get(method)
    if name_key is not None and isinstance(params, dict) and params.get(name_key) is not None:
        sent_name = headers.get(NAME_HEADER)
        if decode_header_value(sent_name.strip() if sent_name is not None else None) != params[name_key]:
            raise Refusal(HEADER_MISMATCH, f"Mcp-Name header does not match the request body's {name_key!r} parameter")
    if not isinstance(version, str):
        raise Refusal(INVALID_PARAMS, "the protocol-version envelope value must be a string")
    if version not in served:
        raise Refusal(
            UNSUPPORTED_PROTOCOL_VERSION,
            "Unsupported protocol version",
            {"supported": served, "requested": version},
        )


class StateSeal:
    """Seals an upstream's `requestState` with who it was minted for; opens only what it sealed, for that caller."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, state: str, subject: str | None, method: str, name: Any) -> str:
        claims = {"s": state, "u": subject, "m": method, "n": name, "e": int(time.time() + STATE_TTL)}
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, json_bytes(claims), STATE_AAD)
        return STATE_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")

    def open(self, token: Any, subject: str | None, method: str, name: Any) -> str:
        """The upstream's own state, or `Refusal` (-32602) for a state this gateway did not seal for this request."""
        refused = Refusal(INVALID_PARAMS, "Invalid params: requestState is invalid, expired or not for this request")
        if not isinstance(token, str) or not token.startswith(STATE_PREFIX):
            raise refused
        body = token[len(STATE_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            claims = json.loads(self._aead.decrypt(raw[:12], raw[12:], STATE_AAD))
        except (binascii.Error, ValueError, InvalidTag):
            raise refused from None
        if (
            not isinstance(claims, dict)
            or claims.get("u") != subject
            or claims.get("m") != method
            or claims.get("n") != name
            or not isinstance(claims.get("e"), int)
            or claims["e"] < time.time()
            or not isinstance(claims.get("s"), str)
        ):
            raise refused
        return str(claims["s"])


def load_state_key(config: GatewayConfig) -> bytes:
    """REQUEST_STATE_KEY_FILE's secret (any length; hashed to 32 bytes), or a key held by this process only."""
    path = config.request_state_key_file
    if not path:
        log.warning(
            "request_state_key_ephemeral",
            detail="REQUEST_STATE_KEY_FILE unset: requestState sealed by this replica is refused by others",
        )
        return os.urandom(32)
    # The setting's parser checked the file at start; a file that changed since then fails here, loudly.
    with open(path, "rb") as handle:
        secret = handle.read().strip()
    if len(secret) < 16:
        raise ConfigError("REQUEST_STATE_KEY_FILE must hold a secret of at least 16 bytes")
    return hashlib.sha256(b"cnpg-mcp-gateway request-state key\x00" + secret).digest()


class ModernPool(Pool):
    """The 2026-07-28 partition of the pool: processes opened with a `server/discover` probe instead of initialize.

    Each request is a lease of its own, so a process serves one request at a time and every notification it sends
    meanwhile (progress, log messages the request asked for) belongs to that request.
    """

    partition = "stateless"

    def __init__(self, config: GatewayConfig) -> None:
        super().__init__(config)
        self.unsupported: str | None = None
        """Why the upstream does not speak 2026-07-28, once a probe said so; then nothing is started any more."""

    @property
    def minimum(self) -> int:
        """None kept idle: this partition starts on the first 2026-07-28 request (or server/discover) and shrinks
        back to nothing, so a gateway whose clients all use sessions runs at most POOL_MAX processes in all."""
        return 0

    def _fill(self) -> None:
        if self.unsupported is None:
            super()._fill()

    async def _initialize(self, process: PoolProcess) -> None:
        try:
            result = await asyncio.wait_for(
                self._ask(process, "server/discover", {"_meta": gateway_meta()}), PROBE_TIMEOUT
            )
        except (UpstreamError, TimeoutError) as exc:
            if not process.exited:
                self.unsupported = str(exc) or "no answer to server/discover"
                log.info("upstream_speaks_no_2026", reason=self.unsupported[:200])
            raise UpstreamError(f"server/discover probe failed: {exc}") from None
        versions = result.get("supportedVersions")
        if not isinstance(versions, list) or not any(v in MODERN_VERSIONS for v in versions):
            self.unsupported = "server/discover lists no 2026 version"
            raise UpstreamError(self.unsupported)
        if self.init_result is None:
            self.init_result = result

    def from_client(self, lease: Lease, message: dict[str, Any], raw: bytes | None = None) -> None:
        self._dispatch(lease, message, raw)

    def upstream_versions(self) -> list[str]:
        assert self.init_result is not None
        versions = self.init_result.get("supportedVersions") or []
        return [v for v in MODERN_VERSIONS if v in versions]

    async def known(self) -> bool:
        """Whether a process has answered the probe; waits for the first one (started on demand) if need be."""
        if self.init_result is not None or self.unsupported is not None:
            return self.init_result is not None
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[str | None] = loop.create_future()

        def wake(error: str | None) -> None:
            if not answered.done():
                answered.set_result(error)

        self._init_waiters.append(wake)
        self._fill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(answered), PROBE_TIMEOUT + 5)
        return self.init_result is not None


class StatelessService:
    """Serves 2026-07-28 requests: checks, authorization, the pool partition, sealed requestState, the reply."""

    def __init__(self, config: GatewayConfig, authenticator: Authenticator | None) -> None:
        self.config = config
        self.authenticator = authenticator
        self.pool: ModernPool | None = ModernPool(config) if config.upstream_mode == "pool" else None
        self.seal: StateSeal | None = None
        self.draining = False
        self.tool_schemas = ToolSchemas(self._ask)
        """Each tool's `Mcp-Param-*` headers, from the upstream's tools/list results."""
        self._own_ids = itertools.count(1)

    async def start(self) -> None:
        if self.pool is not None:
            self.seal = StateSeal(load_state_key(self.config))
            await self.pool.start()

    async def close(self) -> None:
        self.draining = True
        await self.tool_schemas.close()
        if self.pool is not None:
            await self.pool.close()

    async def served_versions(self) -> list[str]:
        """Every version the gateway serves now: the handshake ones, and 2026-07-28 when its upstream speaks it."""
        modern: list[str] = []
        if self.pool is not None and await self.pool.known():
            modern = self.pool.upstream_versions()
        return [*HANDSHAKE_VERSIONS, *modern]

    async def handle(
        self, request: web.Request, principal: Principal | None, messages: list[Any], batch: bool
    ) -> web.StreamResponse:
        """One 2026-era POST (envelopes already checked by the transport)."""
        if batch:
            return _error(None, Refusal(INVALID_REQUEST, "Body must be a single JSON-RPC request or notification"))
        message = messages[0]
        if message.get("method") is None:
            return _error(None, Refusal(INVALID_REQUEST, "Body must be a single JSON-RPC request or notification"))
        served = await self.served_versions()
        if "id" not in message:
            # No client notification means anything at this version (a client cancels by closing its stream).
            claimed = request.headers.get(VERSION_HEADER, "").strip()
            if claimed not in served:
                return _error(None, _unsupported(claimed, served))
            return web.Response(status=202)
        msg_id = message["id"]
        version = request.headers.get(VERSION_HEADER)
        if version is not None and version.strip() not in served and len(request.headers.getall(VERSION_HEADER)) == 1:
            # A version the gateway does not serve (2026-07-28 included, when its upstream cannot): said first, with
            # what is served, so a client falls back to a version listed there.
            return _error(msg_id, _unsupported(version.strip(), served))
        if message["method"] == "initialize":
            return _error(
                msg_id, Refusal(METHOD_NOT_FOUND, "Method not found: initialize does not exist at 2026-07-28")
            )
        try:
            check_request(message, request.headers, served)
        except Refusal as refused:
            return _error(msg_id, refused)
        if self.authenticator is not None and principal is not None:
            try:
                self.authenticator.authorize_message(principal, message, request)
            except AuthRejection as exc:
                if message["method"] == "tools/call":
                    tool, args = tool_call_facts(message)
                    record_tool_call(principal, tool, args, "denied", 0.0, None)
                return web.Response(
                    status=403, headers=exc.headers, body=json_bytes(exc.body()), content_type="application/json"
                )
        if self.draining or self.pool is None:
            return _error(msg_id, Refusal(SERVER_BUSY, "Service Unavailable: shutting down", status=503))
        subject = principal.subject if principal is not None else None
        method = str(message["method"])
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        assert isinstance(params, dict)
        name = params.get(NAME_PARAMS.get(method, ""))
        if method == "tools/call":
            problem = await self._param_header_problem(request, name, params.get("arguments"))
            if problem is not None:
                return _error(msg_id, Refusal(HEADER_MISMATCH, problem))
        if "requestState" in params:
            assert self.seal is not None
            try:
                state = self.seal.open(params["requestState"], subject, method, name)
            except Refusal as refused:
                return _error(msg_id, refused)
            message = {**message, "params": {**params, "requestState": state}}
        return await self._exchange(request, principal, message, name)

    async def _param_header_problem(self, request: web.Request, name: Any, arguments: Any) -> str | None:
        """Why a tools/call's `Mcp-Param-*` headers disagree with its arguments (gateway/param_headers.py), or None.

        A call with no arguments and no such header cannot disagree, and a known tool costs a lookup: only a tool
        not seen yet, or a header its schema does not declare, makes the gateway list the tools (rarely)."""
        if not isinstance(name, str) or not (arguments is None or isinstance(arguments, dict)):
            return None  # not a call the upstream will run; it says so itself
        sent = sent_param_headers(request.headers.keys())
        if not arguments and not sent:
            return None
        mirrored = await self.tool_schemas.declared(name, sent)
        return check_param_headers(mirrored, arguments or {}, request.headers)

    async def _ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """The result of a request the gateway itself sends to a 2026 process, on a lease of its own like a
        client's request (so the pool's isolation rule holds). Raises UpstreamError or TimeoutError."""
        assert self.pool is not None
        msg_id = f"gateway-{next(self._own_ids)}"
        answered: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        def on_line(line: bytes, envelope: Envelope | None = None, /) -> None:
            if answered.done():
                return
            if envelope is None:
                with contextlib.suppress(ValueError):
                    envelope = read_envelope(line)
            if envelope is not None and envelope.method is None and envelope.id == msg_id:
                answered.set_result(envelope.full() or {})

        lease = self.pool.lease()
        lease.start(on_line, lambda _: None)
        try:
            params = {**params, "_meta": gateway_meta()}
            lease.forward([{"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}], None)
            message = await asyncio.wait_for(answered, PROBE_TIMEOUT)
        finally:
            self.pool.end_lease(lease)
        result = message.get("result")
        if not isinstance(result, dict):
            error = message.get("error")
            text = error.get("message") if isinstance(error, dict) else None
            raise UpstreamError(f"the upstream server refused {method}: {str(text)[:200]}")
        return result

    async def _exchange(
        self, request: web.Request, principal: Principal | None, message: dict[str, Any], name: Any
    ) -> web.StreamResponse:
        assert self.pool is not None
        method = str(message["method"])
        envelopes: asyncio.Queue[Envelope | None] = asyncio.Queue()

        def on_line(line: bytes, envelope: Envelope | None = None, /) -> None:
            # The pool hands over the envelope it read to route the line; the gateway's own answers (a busy or
            # failed process) come without one and are read here.
            envelopes.put_nowait(envelope if envelope is not None else read_envelope(line))

        lease = self.pool.lease()
        lease.start(on_line, lambda _: None)
        started = time.perf_counter()
        tool, args = tool_call_facts(message) if method == "tools/call" else ("", [])
        response: web.StreamResponse | None = None
        outcome = "failed"
        try:
            lease.forward([message], None)
            while True:
                try:
                    envelope = await asyncio.wait_for(envelopes.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    # A slow answer: commit to a stream so proxies see traffic while the upstream works.
                    response = response or await _open_stream(request)
                    await response.write(b": keepalive\n\n")
                    continue
                if envelope is None or (envelope.method is not None and envelope.id is not None):
                    continue  # a server-to-client request: this version has none
                line = envelope.line
                if envelope.method is not None:
                    if envelope.method == TOOLS_CHANGED:
                        self.tool_schemas.forget()
                    response = response or await _open_stream(request)
                    await response.write(_event(line))
                    continue
                outcome = "error" if envelope.result_is_error() else "success"
                status, body = self._answer(principal, method, name, line)
                if response is None:
                    return web.Response(status=status, body=body, content_type="application/json")
                await response.write(_event(body))
                await response.write_eof()
                return response
        finally:
            self.pool.end_lease(lease)
            if method == "tools/call":
                record_tool_call(principal, tool, args, outcome, (time.perf_counter() - started) * 1000.0, None)

    def _answer(self, principal: Principal | None, method: str, name: Any, line: bytes) -> tuple[int, bytes]:
        """The upstream's response for the client: status by error code, the caller's tools, sealed requestState."""
        line = line.rstrip(b"\n")
        if method not in ("tools/list", "server/discover") and b'"requestState"' not in line and b'"error"' not in line:
            return 200, line
        try:
            message = json.loads(line)
        except ValueError:
            return 200, line
        error = message.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            return ERROR_STATUS.get(code, 200) if isinstance(code, int) else 200, line
        result = message.get("result")
        if not isinstance(result, dict):
            return 200, line
        if method == "tools/list":
            metrics.learn_tools(result.get("tools"))
            self.tool_schemas.learn(result.get("tools"))
            if self.authenticator is not None and principal is not None:
                message = self.authenticator.filter_result(principal, method, message)
                result = message.get("result")
                if isinstance(result, dict) and "cacheScope" in result:
                    # Filtered for this caller: no cache may hand it to another.
                    message["result"] = {**result, "cacheScope": "private"}
        elif method == "server/discover" and self.pool is not None:
            result["supportedVersions"] = [*HANDSHAKE_VERSIONS, *self.pool.upstream_versions()]
        state = result.get("requestState")
        if isinstance(state, str) and self.seal is not None:
            subject = principal.subject if principal is not None else None
            message["result"] = {**result, "requestState": self.seal.seal(state, subject, method, name)}
        return 200, json_bytes(message)


async def _open_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers=SSE_HEADERS)
    await response.prepare(request)
    return response


def _event(line: bytes) -> bytes:
    return b"event: message\ndata: " + line.rstrip(b"\n") + b"\n\n"


def _unsupported(version: str, served: list[str]) -> Refusal:
    return Refusal(
        UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version", {"supported": served, "requested": version}
    )


def _error(msg_id: Any, refused: Refusal) -> web.Response:
    body = error_bytes(msg_id, refused.code, refused.message, refused.data)
    headers = {"Retry-After": "5"} if refused.status == 503 else None
    return web.Response(status=refused.status, body=body, content_type="application/json", headers=headers)
