"""Gateway overhead benchmark: tools/call latency and throughput through the gateway vs straight over stdio.

The same upstream (tests/upstreams/echo_server.py, stdlib only) serves both paths. Prints p50/p99 latency,
calls/s and the latency the gateway adds, for 1 and 8 concurrent sessions, plus session setup time with and
without the warm pool. Run: .venv/bin/python bench/bench_gateway.py [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = [sys.executable, "-S", str(ROOT / "tests" / "upstreams" / "echo_server.py")]
GATEWAY = [str(Path(sys.executable).parent / "cnpg-mcp-gateway")]
INIT_PARAMS = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(latencies: list[float], elapsed: float) -> dict[str, float]:
    return {
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "calls_per_s": len(latencies) / elapsed,
    }


def call_line(msg_id: int) -> bytes:
    params = {"name": "echo", "arguments": {"text": "benchmark payload"}}
    return json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": "tools/call", "params": params}).encode() + b"\n"


# --- direct stdio -------------------------------------------------------------------------------------------


async def stdio_worker(calls: int, latencies: list[float], pause: float = 0.0) -> None:
    proc = await asyncio.create_subprocess_exec(
        *UPSTREAM, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=16 * 1024 * 1024
    )
    assert proc.stdin and proc.stdout
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT_PARAMS}
    proc.stdin.write(json.dumps(init).encode() + b"\n")
    await proc.stdout.readline()
    for msg_id in range(1, calls + 1):
        started = time.perf_counter()
        proc.stdin.write(call_line(msg_id))
        line = await proc.stdout.readline()
        latencies.append(time.perf_counter() - started)
        assert b'"benchmark payload"' in line
        if pause:
            # Jittered so sessions do not fall into step and queue behind each other.
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))
    proc.stdin.close()
    await proc.wait()


async def bench_stdio(sessions: int, calls: int, pause: float = 0.0) -> dict[str, float]:
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(stdio_worker(calls, latencies, pause) for _ in range(sessions)))
    return summary(latencies, time.perf_counter() - started)


# --- through the gateway ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Gateway:
    def __init__(self, **env: str) -> None:
        self.port = free_port()
        full_env = dict(os.environ, PORT=str(self.port), METRICS_PORT="0", LOG_LEVEL="info")
        full_env["UPSTREAM_COMMAND"] = " ".join(UPSTREAM)
        full_env.update(env)
        self.proc = subprocess.Popen(GATEWAY, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}/mcp"

    async def wait_ready(self) -> None:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/ready") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError("gateway did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


async def open_session(http: aiohttp.ClientSession, url: str) -> dict[str, str]:
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT_PARAMS}
    async with http.post(url, json=init, headers=HEADERS) as response:
        await response.read()
        headers = dict(HEADERS, **{"Mcp-Session-Id": response.headers["Mcp-Session-Id"]})
    headers["MCP-Protocol-Version"] = "2025-11-25"
    async with http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers):
        pass
    return headers


async def gateway_worker(
    http: aiohttp.ClientSession, url: str, calls: int, latencies: list[float], accept: str | None, pause: float = 0.0
) -> None:
    headers = await open_session(http, url)
    if accept:
        headers["Accept"] = accept
    for msg_id in range(1, calls + 1):
        body = call_line(msg_id)[:-1]
        started = time.perf_counter()
        async with http.post(url, data=body, headers=headers) as response:
            payload = await response.read()
        latencies.append(time.perf_counter() - started)
        assert b'"benchmark payload"' in payload
        if pause:
            # Jittered so sessions do not fall into step and queue behind each other.
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))
    async with http.delete(url, headers=headers):
        pass


async def bench_gateway(
    url: str, sessions: int, calls: int, accept: str | None = None, pause: float = 0.0
) -> dict[str, float]:
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as http:
        # Warm up connections and code paths outside the measurement.
        await gateway_worker(http, url, 50, [], accept)
        started = time.perf_counter()
        await asyncio.gather(*(gateway_worker(http, url, calls, latencies, accept, pause) for _ in range(sessions)))
        return summary(latencies, time.perf_counter() - started)


async def bench_setup(url: str, count: int, pause: float) -> dict[str, float]:
    times: list[float] = []
    async with aiohttp.ClientSession() as http:
        for _ in range(count):
            await asyncio.sleep(pause)  # lets the warm pool refill, and is the same for both runs
            started = time.perf_counter()
            headers = await open_session(http, url)
            times.append(time.perf_counter() - started)
            async with http.delete(url, headers=headers):
                pass
    return {"p50_ms": percentile(times, 0.5) * 1000, "p99_ms": percentile(times, 0.99) * 1000}


class RawHttp:
    """A minimal keep-alive HTTP/1.1 client (one connection per session) so the client's own cost stays small.

    aiohttp's client spends about as much CPU per call as the gateway does; on a 2-core machine that CPU is taken
    from the gateway, so the closed-loop figures above overstate what the gateway adds.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[dict[str, str], bytes]:
        assert self.reader is not None and self.writer is not None
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.writer.write(
            f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode()
            + body
        )
        status_and_headers = await self.reader.readuntil(b"\r\n\r\n")
        lines = status_and_headers.decode().split("\r\n")
        received = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if "content-length" in received:
            return received, await self.reader.readexactly(int(received["content-length"]))
        payload = b""
        while True:  # chunked
            size = int((await self.reader.readuntil(b"\r\n"))[:-2], 16)
            chunk = await self.reader.readexactly(size + 2)
            if size == 0:
                return received, payload
            payload += chunk[:-2]

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def raw_worker(port: int, calls: int, latencies: list[float]) -> None:
    client = RawHttp(port)
    await client.connect()
    init = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT_PARAMS}).encode()
    received, _ = await client.post(init, HEADERS)
    headers = dict(HEADERS, **{"Mcp-Session-Id": received["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"})
    await client.post(b'{"jsonrpc":"2.0","method":"notifications/initialized"}', headers)
    for msg_id in range(1, calls + 1):
        body = call_line(msg_id)[:-1]
        started = time.perf_counter()
        _, payload = await client.post(body, headers)
        latencies.append(time.perf_counter() - started)
        assert b'"benchmark payload"' in payload
    await client.close()


async def bench_raw(port: int, sessions: int, calls: int) -> dict[str, float]:
    await raw_worker(port, 50, [])
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(raw_worker(port, calls, latencies) for _ in range(sessions)))
    return summary(latencies, time.perf_counter() - started)


def show(label: str, figures: dict[str, float]) -> None:
    cells = "  ".join(f"{key}={value:8.3f}" for key, value in figures.items())
    print(f"{label:<56} {cells}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000, help="calls per session for 1 session (8 sessions: /4)")
    parser.add_argument("--setups", type=int, default=30, help="sessions opened for the setup-time figures")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, upstream: {' '.join(UPSTREAM[1:])}")

    gateway = Gateway()
    try:
        await gateway.wait_ready()
        # Closed loop: every session calls again as soon as it has its answer (throughput, CPU-bound on small
        # machines). Paced: every session waits 10-30 ms between calls (latency at a load the machine can carry).
        runs = (
            ("1 session", 1, args.calls, 0.0),
            ("8 sessions closed loop", 8, args.calls // 4, 0.0),
            ("8 sessions paced 50/s each", 8, args.calls // 8, 0.02),
        )
        for label, sessions, calls, pause in runs:
            direct = await bench_stdio(sessions, calls, pause)
            show(f"direct stdio, {label}", direct)
            through = await bench_gateway(gateway.url, sessions, calls, pause=pause)
            show(f"gateway SSE, {label}", through)
            added = {
                "added_p50_ms": through["p50_ms"] - direct["p50_ms"],
                "added_p99_ms": through["p99_ms"] - direct["p99_ms"],
                "throughput_ratio": through["calls_per_s"] / direct["calls_per_s"],
            }
            show(f"  gateway - stdio, {label}", added)
        for sessions, calls in ((1, args.calls), (8, args.calls // 4)):
            direct = await bench_stdio(sessions, calls)
            through = await bench_raw(gateway.port, sessions, calls)
            show(f"gateway SSE, minimal client, {sessions} session(s)", through)
            show(
                f"  gateway - stdio, minimal client, {sessions} session(s)",
                {
                    "added_p50_ms": through["p50_ms"] - direct["p50_ms"],
                    "added_p99_ms": through["p99_ms"] - direct["p99_ms"],
                    "throughput_ratio": through["calls_per_s"] / direct["calls_per_s"],
                },
            )
        json_only = "application/json, text/event-stream;q=0.5"
        show("gateway JSON replies, 1 session", await bench_gateway(gateway.url, 1, args.calls, json_only))
        show("session setup, no warm pool", await bench_setup(gateway.url, args.setups, 0.2))
    finally:
        gateway.stop()

    warm = Gateway(WARM_POOL_SIZE="2")
    try:
        await warm.wait_ready()
        await asyncio.sleep(1.0)
        show("session setup, WARM_POOL_SIZE=2", await bench_setup(warm.url, args.setups, 0.2))
    finally:
        warm.stop()


if __name__ == "__main__":
    asyncio.run(main())
