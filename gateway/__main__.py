"""`cnpg-mcp-gateway`: read the config, serve the MCP endpoint and metrics, drain cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from gateway.app import STATE_KEY, create_app, create_metrics_app
from gateway.config import GatewayConfig, load_config
from gateway.errors import ConfigError
from gateway.logging import configure_logging, flush_logs, get_logger

log = get_logger("main")


async def serve(config: GatewayConfig) -> int:
    """Run until SIGTERM/SIGINT, then: stop accepting, let in-flight calls finish, close every upstream."""
    app = create_app(config)
    state = app[STATE_KEY]
    # handler_cancellation: a client hanging up ends its handler, which frees its SSE stream for resumption.
    # Header limits leave room for the largest bearer token the auth layer accepts, so it (not aiohttp's
    # parser) answers an oversized token, with a proper 401.
    field_limit = 8190
    if config.auth is not None:
        field_limit = max(field_limit, config.auth.max_token_bytes + 1024)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=5.0,
        max_field_size=field_limit,
        max_line_size=field_limit,
    )
    await runner.setup()
    metrics_runner: web.AppRunner | None = None
    try:
        site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
        await site.start()
        if config.metrics_port:
            metrics_runner = web.AppRunner(create_metrics_app(), access_log=None)
            await metrics_runner.setup()
            await web.TCPSite(metrics_runner, config.metrics_host, config.metrics_port, reuse_address=True).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        state.serving = True
        log.info(
            "gateway_started",
            host=config.host,
            port=config.port,
            mcp_path=config.mcp_path,
            metrics_port=config.metrics_port,
            upstream="socket" if config.upstream_socket else "process",
            upstream_mode=config.upstream_mode,
            auth=config.auth is not None,
            pid=os.getpid(),
        )
        await stop.wait()
        log.info("gateway_draining", grace_seconds=config.shutdown_grace)
        state.draining = True
        await state.manager.drain(config.shutdown_grace)
    finally:
        await runner.cleanup()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
    log.info("gateway_stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load_config(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as exc:
        print(f"cnpg-mcp-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    if config.auth is None:
        log.warning(
            "insecure_mode",
            message="authentication is OFF (OIDC_ISSUER unset): anyone who can reach this port can use the MCP server",
            host=config.host,
        )
    try:
        return asyncio.run(serve(config))
    except OSError as exc:
        log.error("gateway_failed", error=str(exc))
        return 1
    finally:
        flush_logs()


if __name__ == "__main__":
    sys.exit(main())
