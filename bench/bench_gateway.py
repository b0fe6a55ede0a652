"""Gateway overhead benchmark: tools/call latency and throughput through the gateway vs straight over stdio.

The same upstream (tests/upstreams/echo_server.py, stdlib only) serves both paths, and both are driven by a client
that costs as little as it can (a pipe per session for stdio; one keep-alive HTTP/1.1 connection per session, written
and parsed by hand, for the gateway), so the figures show what the gateway adds rather than what a client library
costs. Each scenario runs both paths in alternating rounds (--rounds), so a change in what else the machine is doing
weighs on both alike.

Scenarios, each for direct stdio and through the gateway:
  - 1 session, closed loop: the next call goes out as soon as the answer is in.
  - 8 sessions, closed loop: the same for 8 sessions at once. On a small machine this saturates the CPU, and
    then latency is sessions / throughput (Little's law): it measures throughput, not the path's delay.
  - 8 sessions, open loop: calls arrive at random (Poisson) at a fixed total rate the machine can carry; this is
    the latency a session sees while 8 are active.
  - 1 session, large answers: a tool that answers with 1 MB and 10 MB of text.
Then where the CPU goes in the 8-session closed loop (gateway, client, upstreams; the gateway again without its
per-request and audit log lines; a bare aiohttp handler for comparison), and session setup time with and without
the warm pool.

Run: .venv/bin/python bench/bench_gateway.py [--seconds S] [--rates 400,2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = [sys.executable, "-S", str(ROOT / "tests" / "upstreams" / "echo_server.py")]
GATEWAY = [str(Path(sys.executable).parent / "cnpg-mcp-gateway")]
INIT_PARAMS = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
GOAL_P50_MS = 0.5
GOAL_P99_MS = 2.0
BARE_AIOHTTP = """
import sys
from aiohttp import web
BODY = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"benchmark payload"}]}}'
async def handle(request):
    await request.read()
    return web.Response(body=BODY, content_type="application/json")
app = web.Application()
app.router.add_post("/mcp", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


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


def call_body(msg_id: int, size: int = 0) -> bytes:
    """A tools/call of `echo`, or of `big` (an answer of `size` bytes) when size is given."""
    if size:
        params: dict[str, object] = {"name": "big", "arguments": {"size": size}}
    else:
        params = {"name": "echo", "arguments": {"text": "benchmark payload"}}
    return json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": "tools/call", "params": params}).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return [int(p) for p in children.read().split()]


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- sessions -----------------------------------------------------------------------------------------------


class StdioSession:
    """One upstream process driven over its pipes, as an MCP host would."""

    async def open(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *UPSTREAM, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=16 * 1024 * 1024
        )
        assert self.proc.stdin and self.proc.stdout
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT_PARAMS}
        self.stdin.write(json.dumps(init).encode() + b"\n")
        await self.stdout.readline()
        self.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')

    async def call(self, body: bytes) -> bytes:
        self.stdin.write(body + b"\n")
        return await self.stdout.readline()

    async def close(self) -> None:
        self.stdin.close()
        await self.proc.wait()


class HttpSession:
    """One MCP session over one keep-alive HTTP/1.1 connection, written and parsed by hand to cost little."""

    def __init__(self, port: int, *, mcp: bool = True) -> None:
        self.port = port
        self.mcp = mcp
        self.headers = dict(HEADERS)

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        if not self.mcp:
            return
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT_PARAMS}
        received, _ = await self.post(json.dumps(init).encode())
        self.headers["Mcp-Session-Id"] = received["mcp-session-id"]
        self.headers["MCP-Protocol-Version"] = "2025-11-25"
        await self.post(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')

    async def call(self, body: bytes) -> bytes:
        return (await self.post(body))[1]

    async def post(self, body: bytes) -> tuple[dict[str, str], bytes]:
        head = "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
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
        while True:  # chunked: a stream that was still open when its headers went out
            size = int((await self.reader.readuntil(b"\r\n"))[:-2], 16)
            chunk = await self.reader.readexactly(size + 2)
            if size == 0:
                return received, payload
            payload += chunk[:-2]

    async def close(self) -> None:
        if self.mcp:
            self.writer.write(
                f"DELETE /mcp HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nMcp-Session-Id: "
                f"{self.headers['Mcp-Session-Id']}\r\nContent-Length: 0\r\n\r\n".encode()
            )
            await self.reader.readuntil(b"\r\n\r\n")
        self.writer.close()
        await self.writer.wait_closed()


Session = StdioSession | HttpSession


# --- load ---------------------------------------------------------------------------------------------------


async def closed_loop(session: Session, calls: int, latencies: list[float], size: int = 0) -> None:
    for msg_id in range(1, calls + 1):
        body = call_body(msg_id, size)
        started = time.perf_counter()
        answer = await session.call(body)
        latencies.append(time.perf_counter() - started)
        assert len(answer) > size and (size or b"benchmark payload" in answer), answer[:200]


async def open_loop(session: Session, rate: float, seconds: float, latencies: list[float], seed: int) -> None:
    """Calls arrive at random at `rate` per second; a call that is due while one is running goes right after it."""
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    due = loop.time() + rng.uniform(0, 2 / rate)
    end = due + seconds
    msg_id = 0
    while due < end:
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        msg_id += 1
        body = call_body(msg_id)
        started = time.perf_counter()
        answer = await session.call(body)
        latencies.append(time.perf_counter() - started)
        assert b"benchmark payload" in answer, answer[:200]
        due += rng.expovariate(rate)


Drive = Callable[[Session, list[float], int], Awaitable[None]]


async def measure(make: Callable[[], Session], sessions: int, drive: Drive, latencies: list[float]) -> float:
    """Open the sessions, warm them up, drive them; adds to `latencies` and returns the seconds driving took."""
    opened = [make() for _ in range(sessions)]
    await asyncio.gather(*(s.open() for s in opened))
    warm: list[float] = []
    await asyncio.gather(*(closed_loop(s, 20, warm) for s in opened))
    started = time.perf_counter()
    await asyncio.gather(*(drive(s, latencies, i) for i, s in enumerate(opened)))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(s.close() for s in opened))
    return elapsed


async def run(make: Callable[[], Session], sessions: int, drive: Drive) -> dict[str, float]:
    latencies: list[float] = []
    elapsed = await measure(make, sessions, drive, latencies)
    return summary(latencies, elapsed)


async def run_both(
    make_a: Callable[[], Session], make_b: Callable[[], Session], sessions: int, drive: Drive, rounds: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Both paths in alternating rounds (a b, b a, ...), so a change in the machine's load hits both alike."""
    latencies: tuple[list[float], list[float]] = ([], [])
    elapsed = [0.0, 0.0]
    makers = (make_a, make_b)
    for round_ in range(rounds):
        for which in (0, 1) if round_ % 2 == 0 else (1, 0):
            elapsed[which] += await measure(makers[which], sessions, drive, latencies[which])
    return summary(latencies[0], elapsed[0]), summary(latencies[1], elapsed[1])


# --- processes ----------------------------------------------------------------------------------------------


class Server:
    """A server process on a free port (the gateway, or the bare aiohttp app for comparison)."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, *, port_argument: bool = False) -> None:
        """`argv` learns its port from PORT, or from a last argument when `port_argument` is set."""
        self.port = free_port()
        full_env = dict(os.environ, PORT=str(self.port), METRICS_PORT="0", LOG_LEVEL="info")
        full_env["UPSTREAM_COMMAND"] = " ".join(UPSTREAM)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [*argv, str(self.port)] if port_argument else argv,
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def wait_listening(self) -> None:
        for _ in range(300):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                await asyncio.sleep(0.3)  # the gateway's /ready follows its listener within milliseconds
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.proc.args} did not listen")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


async def cpu_per_call(server: Server, sessions: int, calls: int, mcp: bool = True) -> dict[str, float]:
    """Closed loop through `server`; CPU microseconds per call of the server, this client, and the upstreams."""
    opened = [HttpSession(server.port, mcp=mcp) for _ in range(sessions)]
    await asyncio.gather(*(s.open() for s in opened))
    upstreams = child_pids(server.proc.pid)
    before = (cpu_seconds(server.proc.pid), own_cpu_seconds(), sum(cpu_seconds(p) for p in upstreams))
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(closed_loop(s, calls, latencies) for s in opened))
    elapsed = time.perf_counter() - started
    after = (cpu_seconds(server.proc.pid), own_cpu_seconds(), sum(cpu_seconds(p) for p in upstreams))
    await asyncio.gather(*(s.close() for s in opened))
    total = sessions * calls
    server_us, client_us, upstream_us = ((a - b) / total * 1e6 for a, b in zip(after, before, strict=True))
    return {"server_us": server_us, "client_us": client_us, "upstreams_us": upstream_us, **summary(latencies, elapsed)}


async def bench_setup(port: int, count: int, pause: float) -> dict[str, float]:
    times: list[float] = []
    for _ in range(count):
        await asyncio.sleep(pause)  # lets the warm pool refill, and is the same for both runs
        session = HttpSession(port)
        started = time.perf_counter()
        await session.open()
        times.append(time.perf_counter() - started)
        await session.close()
    return {"p50_ms": percentile(times, 0.5) * 1000, "p99_ms": percentile(times, 0.99) * 1000}


def show(label: str, figures: dict[str, float]) -> None:
    cells = "  ".join(f"{key}={value:9.3f}" for key, value in figures.items())
    print(f"{label:<46} {cells}", flush=True)


def compare(label: str, direct: dict[str, float], through: dict[str, float], *, goal: bool = True) -> dict[str, float]:
    added = {
        "added_p50_ms": through["p50_ms"] - direct["p50_ms"],
        "added_p99_ms": through["p99_ms"] - direct["p99_ms"],
        "throughput_ratio": through["calls_per_s"] / direct["calls_per_s"],
    }
    verdict = "met" if added["added_p50_ms"] <= GOAL_P50_MS and added["added_p99_ms"] <= GOAL_P99_MS else "NOT met"
    show(f"  gateway - stdio, {label}", added)
    if goal:
        print(f"  {'':<44} goal (added p50 <= {GOAL_P50_MS} ms, p99 <= {GOAL_P99_MS} ms): {verdict}", flush=True)
    return added


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="calls per session, 1-session closed loop (8: /4)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each open-loop run")
    parser.add_argument("--rates", default="400,2000", help="total calls/s of the 8-session open-loop runs")
    parser.add_argument("--large-calls", type=int, default=20, help="calls of the 1 MB and 10 MB answer runs")
    parser.add_argument("--setups", type=int, default=30, help="sessions opened for the setup-time figures")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per scenario (the totals are split)")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, upstream: {' '.join(UPSTREAM[1:])}", flush=True)

    gateway = Server(GATEWAY)
    try:
        await gateway.wait_listening()

        def through() -> Session:
            return HttpSession(gateway.port)

        async def scenario(label: str, sessions: int, drive: Drive, goal: bool = True) -> None:
            direct, via = await run_both(StdioSession, through, sessions, drive, args.rounds)
            show(f"direct stdio, {label}", direct)
            show(f"gateway, {label}", via)
            compare(label, direct, via, goal=goal)

        calls = max(1, args.calls // args.rounds)
        seconds = args.seconds / args.rounds
        await scenario("1 session closed loop", 1, lambda s, lat, _: closed_loop(s, calls, lat))
        await scenario("8 sessions closed loop", 8, lambda s, lat, _: closed_loop(s, max(1, calls // 4), lat))
        for rate in rates:
            await scenario(
                f"8 sessions open loop {rate:.0f}/s",
                8,
                lambda s, lat, i, rate=rate: open_loop(s, rate / 8, seconds, lat, seed=i),
            )

        for size in (1_000_000, 10_000_000):
            await scenario(
                f"1 session, {size // 1_000_000} MB answers",
                1,
                lambda s, lat, _, size=size: closed_loop(s, max(1, args.large_calls // args.rounds), lat, size),
                goal=False,
            )

        print("where the CPU goes, 8 sessions closed loop (microseconds of CPU per call):", flush=True)
        figures = await cpu_per_call(gateway, 8, args.calls // 4)
        show("  through the gateway", figures)
        quiet = Server(GATEWAY, {"LOG_LEVEL": "warning"})
        try:
            await quiet.wait_listening()
            show("  through the gateway, LOG_LEVEL=warning", await cpu_per_call(quiet, 8, args.calls // 4))
        finally:
            quiet.stop()
        bare = Server([sys.executable, "-c", BARE_AIOHTTP], port_argument=True)
        try:
            await bare.wait_listening()
            bare_figures = await cpu_per_call(bare, 8, args.calls // 4, mcp=False)
        finally:
            bare.stop()
        show("  bare aiohttp handler, no upstream", bare_figures)
        direct = await run(StdioSession, 8, lambda s, lat, _: closed_loop(s, args.calls // 4, lat))
        # Little's law: with 8 calls always in flight, latency = 8 / throughput. For the goal's p50 the machine
        # must complete this many calls per second, which leaves this much CPU per call for everything.
        needed = 8 / ((direct["p50_ms"] + GOAL_P50_MS) / 1000)
        budget = (os.cpu_count() or 1) / needed * 1e6
        left = budget - figures["client_us"] - figures["upstreams_us"]
        print(
            f"  the 8-session closed-loop goal needs {needed:,.0f} calls/s: {budget:.0f} us of CPU per call for "
            f"client, gateway and upstream together, so {left:.0f} us for the gateway; it uses "
            f"{figures['server_us']:.0f} us, and a bare aiohttp handler {bare_figures['server_us']:.0f} us",
            flush=True,
        )

        show("session setup, no warm pool", await bench_setup(gateway.port, args.setups, 0.2))
    finally:
        gateway.stop()

    warm = Server(GATEWAY, {"WARM_POOL_SIZE": "2"})
    try:
        await warm.wait_listening()
        await asyncio.sleep(1.0)
        show("session setup, WARM_POOL_SIZE=2", await bench_setup(warm.port, args.setups, 0.2))
    finally:
        warm.stop()


if __name__ == "__main__":
    asyncio.run(main())
