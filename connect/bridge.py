"""stdio mode: newline-delimited JSON-RPC on stdin/stdout, each message forwarded to the remote endpoint."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

import httpx2

from connect.upstream import Upstream

log = logging.getLogger("connect.bridge")
MAX_LINE = 64 * 1024 * 1024
ORDER_WAIT = 0.5
"""Seconds a message waits for the previous one to be accepted by the server, so order is kept in the normal case
without a slow answer holding back the next message (an elicitation result, a cancellation)."""


class StdoutWriter:
    """Whole lines to stdout, one writer at a time, without blocking the event loop on a slow reader."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout)
        except (ValueError, OSError):
            return  # a regular file: plain blocking writes below
        self._writer = asyncio.StreamWriter(transport, protocol, None, loop)

    async def write(self, message: Any) -> None:
        line = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        async with self._lock:
            if self._writer is not None:
                self._writer.write(line)
                await self._writer.drain()
            else:
                sys.stdout.buffer.write(line)
                sys.stdout.buffer.flush()


async def stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def run_bridge(url: str, http: httpx2.AsyncClient) -> int:
    """Forward until stdin closes; then end the remote session."""
    out = StdoutWriter()
    await out.start()
    upstream = Upstream(url, http, out.write)
    reader = await stdin_reader()
    inflight: set[asyncio.Task[None]] = set()
    try:
        while True:
            try:
                line = await reader.readline()
            except ValueError:
                log.error("dropped a message longer than %d bytes", MAX_LINE)
                continue
            if not line:
                break
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except ValueError:
                await out.write({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}})
                continue
            if isinstance(message, dict) and message.get("method") == "initialize":
                await upstream.send(message)
                continue
            accepted = asyncio.Event()
            task = asyncio.create_task(upstream.send(message, accepted))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            try:
                await asyncio.wait_for(accepted.wait(), ORDER_WAIT)
            except TimeoutError:
                pass
        # stdin closed: let messages already sent finish briefly, then leave.
        if inflight:
            await asyncio.wait(inflight, timeout=5)
    finally:
        for task in inflight:
            task.cancel()
        await asyncio.gather(*inflight, return_exceptions=True)
        await upstream.close()
    return 0
