"""aiohttp application factory: routes, the request-log middleware, and the lifetime of sessions and auth."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import metrics
from gateway.config import GatewayConfig
from gateway.jsonrpc import method_label
from gateway.logging import get_logger, log_later
from gateway.mcp_http import MCP_METHOD, SESSION_TAG, McpTransport
from gateway.security import Authenticator
from gateway.sessions import SessionManager

log = get_logger("http")


@dataclass(slots=True)
class GatewayState:
    """What the handlers share: settings, the session table, the authenticator and the serving state."""

    config: GatewayConfig
    manager: SessionManager
    authenticator: Authenticator | None
    serving: bool = False
    draining: bool = False

    def ready(self) -> bool:
        if not self.serving or self.draining:
            return False
        if not self.manager.ready():
            return False
        return self.authenticator is None or self.authenticator.is_ready()


STATE_KEY = web.AppKey("gateway_state", GatewayState)
_TRANSPORT_LABELS = frozenset({"GET", "DELETE", "OPTIONS", "batch", "response"})
"""Request labels that are not JSON-RPC methods."""


def build_authenticator(config: GatewayConfig) -> Authenticator | None:
    if config.auth is None:
        return None
    # Imported here so the gateway runs without the auth layer when auth is off.
    from gateway.auth import build_authenticator as build

    authenticator: Authenticator = build(config.auth)
    return authenticator


def create_app(config: GatewayConfig, authenticator: Authenticator | None = None) -> web.Application:
    """The MCP endpoint, /health, /ready and the authenticator's routes; sessions live as long as the app."""
    if authenticator is None:
        authenticator = build_authenticator(config)
    manager = SessionManager(config)
    state = GatewayState(config=config, manager=manager, authenticator=authenticator)
    transport = McpTransport(config, manager, authenticator)
    mcp_path = config.mcp_path

    # Labelled metric children by (method, status): label lookups cost more than the increments.
    metric_children: dict[tuple[str | None, int], tuple[Any, Any]] = {}

    @web.middleware
    async def request_log(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except BaseException:
            status = 499 if request.transport is None or request.transport.is_closing() else 500
            raise
        finally:
            elapsed = time.perf_counter() - started
            # Recorded on the next turn of the event loop: aiohttp writes a returned response right after this
            # middleware, and the client should not wait for our bookkeeping.
            asyncio.get_running_loop().call_soon(
                record,
                request.method,
                request.path,
                status,
                elapsed,
                request.get(MCP_METHOD),
                request.get(SESSION_TAG),
            )

    def record(
        method: str, path: str, status: int, elapsed: float, mcp_method: str | None, session: str | None
    ) -> None:
        """The request's metric samples and its log line."""
        if path == mcp_path:
            key = (mcp_method, status)
            children = metric_children.get(key)
            if children is None:
                label = mcp_method if mcp_method in _TRANSPORT_LABELS else method_label(mcp_method)
                children = (metrics.REQUESTS.labels(label, str(status)), metrics.REQUEST_DURATION.labels(label))
                if len(metric_children) < 1024:
                    metric_children[key] = children
            children[0].inc()
            children[1].observe(elapsed)
        log_later(
            log,
            "http_request",
            method=method,
            path=path,
            status=status,
            duration_ms=round(elapsed * 1000.0, 3),
            mcp_method=mcp_method[:100] if isinstance(mcp_method, str) else None,
            session=session,
        )

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "healthy", "service": config.service_name})

    async def ready(_: web.Request) -> web.Response:
        if state.ready():
            return web.json_response({"status": "ready", "service": config.service_name})
        if state.draining:
            reason = "draining"
        elif state.serving and not manager.ready():
            reason = "upstream_unavailable"
        else:
            reason = "starting"
        return web.json_response({"status": "not_ready", "reason": reason, "service": config.service_name}, status=503)

    async def lifetime(_: web.Application) -> AsyncIterator[None]:
        if authenticator is not None:
            await authenticator.start()
        await manager.start()
        await transport.stateless.start()
        yield
        await transport.stateless.close()
        await manager.close()
        if authenticator is not None:
            await authenticator.close()

    # client_max_size backs up the Content-Length check for chunked bodies.
    app = web.Application(middlewares=[request_log], client_max_size=config.max_body_bytes)
    app[STATE_KEY] = state
    app.router.add_route("*", mcp_path, transport.handle)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    if authenticator is not None:
        app.router.add_routes(authenticator.routes())
    app.cleanup_ctx.append(lifetime)
    app.on_response_prepare.append(transport.add_cors_headers)
    return app


def create_metrics_app() -> web.Application:
    """The separate Prometheus endpoint (its own port, so it can stay private)."""

    async def serve_metrics(_: web.Request) -> web.Response:
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", serve_metrics)
    return app
