"""`--listen` mode: a loopback HTTP proxy that adds a fresh token to every request to the remote endpoint.

Bodies stream through unchanged both ways (SSE included). Because the proxy holds a credential, it only answers
requests whose Host is its own loopback address and whose Origin, when present, is a loopback origin: a web page
in the user's browser cannot use it (DNS rebinding, cross-site POSTs).
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import httpx2
from aiohttp import web

from connect.upstream import explain

log = logging.getLogger("connect.proxy")

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length", "authorization", "accept-encoding", "content-encoding",
}  # fmt: skip
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _loopback_authority(value: str, port: int) -> bool:
    parts = urlsplit(f"//{value}")
    try:
        return parts.hostname in LOOPBACK_HOSTS and parts.port == port
    except ValueError:
        return False


def _loopback_origin(origin: str) -> bool:
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.hostname in LOOPBACK_HOSTS


def build_proxy(url: str, http: httpx2.AsyncClient, port_of: list[int]) -> web.Application:
    """The proxy application; `port_of[0]` is the bound port (known only after binding a port 0)."""
    upstream_host = httpx2.URL(url).host

    async def forward(request: web.Request) -> web.StreamResponse:
        if not _loopback_authority(request.headers.get("Host", ""), port_of[0]):
            return web.json_response({"error": "forbidden_host"}, status=403)
        origin = request.headers.get("Origin")
        if origin and not _loopback_origin(origin):
            return web.json_response({"error": "forbidden_origin"}, status=403)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "origin"}
        body = await request.read() if request.can_read_body else None
        outgoing = http.build_request(request.method, url, headers=headers, content=body, params=request.query)
        try:
            answer = await http.send(outgoing, stream=True)
        except Exception as exc:  # a refused secret, an unreachable IdP or server: one line, 502
            problem = explain(exc, upstream_host)
            log.error("%s", problem.message)
            return web.json_response({"error": problem.reason, "error_description": problem.message}, status=502)
        reply = web.StreamResponse(status=answer.status_code)
        for name, value in answer.headers.multi_items():
            if name.lower() not in HOP_BY_HOP:
                reply.headers.add(name, value)
        try:
            await reply.prepare(request)
            async for chunk in answer.aiter_raw():
                await reply.write(chunk)
            await reply.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the local client went away; closing the upstream response below ends that request too
        except httpx2.HTTPError as exc:
            log.info("upstream stream ended (%s)", type(exc).__name__)
        finally:
            await answer.aclose()
        return reply

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


async def run_proxy(url: str, http: httpx2.AsyncClient, host: str, port: int) -> int:
    """Serve until cancelled (SIGINT/SIGTERM)."""
    port_of = [port]
    runner = web.AppRunner(build_proxy(url, http, port_of), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = getattr(site._server, "sockets", None)
    if sockets:
        port_of[0] = sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    log.info("proxy listening on http://%s:%d/mcp -> %s", shown, port_of[0], url)
    print(f"cnpg-mcp-connect: listening on http://{shown}:{port_of[0]}/mcp", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
    return 0
