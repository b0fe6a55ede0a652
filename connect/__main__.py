"""CLI: read the settings, build the token handling and the HTTP client, run the stdio bridge or the proxy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

import httpx2

from connect.auth import build_auth
from connect.config import Settings, load_settings
from connect.errors import ConnectError

log = logging.getLogger("connect")


def setup_logging(level: str) -> None:
    """Logs go to stderr only: stdout carries the protocol in stdio mode."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("cnpg-mcp-connect %(levelname)s %(message)s"))
    root = logging.getLogger("connect")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # Libraries below us would log request URLs with query strings (authorization codes): keep them quiet.
    for name in ("httpx2", "httpcore", "mcp", "aiohttp"):
        logging.getLogger(name).setLevel(logging.WARNING if level == "debug" else logging.ERROR)


async def run(settings: Settings) -> int:
    auth = build_auth(settings)
    timeout = httpx2.Timeout(settings.timeout, read=None)
    try:
        async with httpx2.AsyncClient(auth=auth, timeout=timeout, follow_redirects=False) as http:
            if settings.listen:
                from connect.proxy import run_proxy

                task = asyncio.ensure_future(run_proxy(settings.url, http, *settings.listen))
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, task.cancel)
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return 0
            from connect.bridge import run_bridge

            return await run_bridge(settings.url, http)
    finally:
        close = getattr(auth, "close", None)
        if close is not None:
            close()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except ConnectError as exc:
        print(f"cnpg-mcp-connect: {exc.message}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    log.info("%s", settings.describe())
    try:
        return asyncio.run(run(settings))
    except ConnectError as exc:
        log.error("%s", exc.message)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
