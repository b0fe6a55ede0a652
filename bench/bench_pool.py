"""Pool mode against session mode, in the same run: many sessions that never end, and throughput at 8 sessions.

1. Many sessions (--sessions, default 1,000) open at once: each initializes, calls a tool once and never sends
   DELETE, as the MCP Inspector CLI and mcp-remote do. The upstream is the real server (--upstream, default
   cnpg-mcp-server, 1.3-1.9 s to start). Figures: sessions served and refused, session setup time (initialize
   plus notifications/initialized, no warm pool; one at a time on an idle gateway, once the processes it starts by
   itself are up, and all at once), the most server processes seen, and the RSS of the gateway plus every process
   under it, while the sessions stay open.
2. Throughput at 8 sessions, closed loop, tools/call of `echo` on tests/upstreams/echo_server.py (starts in
   milliseconds, so the figure is the gateway's), in steady state: the 8 sessions call for --warmup seconds before
   the clock starts, so session mode's 8 processes and the pool's (grown from POOL_MIN=1 to 8) are all running when
   it is measured. The modes alternate round by round, each going first in every other round, so a drift in the
   machine's load weighs on both alike. Each mode's figures are medians over its rounds, and the throughput goal
   is the median of pool / session calls per second within each round. The gateway's and the upstream processes'
   CPU per call are printed too: on a shared machine they move less than calls/s.

Each figure is printed for session mode (MAX_SESSIONS as configured, default 100) beside pool mode (POOL_MIN=1,
POOL_MAX=8), with the pool's goals: at most 8 processes, at most 1 GiB RSS, setup p50 at most 5 ms, and pool
throughput at 8 sessions no lower than session mode's.

Run: .venv/bin/python bench/bench_pool.py [--sessions 1000] [--upstream "cnpg-mcp-server"] [--rounds 10]
     [--seconds 40] [--throughput-only]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gateway import ROOT, HttpSession, call_body, free_port, percentile

GATEWAY = str(Path(sys.executable).parent / "cnpg-mcp-gateway")
ECHO = f"{sys.executable} -S {ROOT / 'tests' / 'upstreams' / 'echo_server.py'}"
GiB = 1024**3


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/task/{current}/children") as children:
                kids = [int(p) for p in children.read().split()]
        except OSError:
            continue
        found += kids
        todo += kids
    return found


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Gateway:
    def __init__(self, upstream: str, env: dict[str, str]) -> None:
        self.port = free_port()
        full = dict(os.environ)
        full.update(
            {
                "PORT": str(self.port),
                "METRICS_PORT": "0",
                "LOG_LEVEL": "warning",
                "UPSTREAM_COMMAND": upstream,
                "SESSION_IDLE_TIMEOUT": "3600",
            }
        )
        full.update(env)
        self.process = subprocess.Popen([GATEWAY], env=full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                status = await reader.readline()
                writer.close()
                if b" 200 " in status:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise TimeoutError("gateway not ready")

    async def settle(self) -> None:
        """Wait until the processes the gateway starts by itself are up: the count unchanged for a second."""
        count, steady_since = -1, time.monotonic()
        deadline = steady_since + 60
        while time.monotonic() < deadline:
            current = self.footprint()[0]
            if current != count:
                count, steady_since = current, time.monotonic()
            elif time.monotonic() - steady_since >= 1.0:
                return
            await asyncio.sleep(0.1)

    def footprint(self) -> tuple[int, int]:
        """(server processes under the gateway, RSS of the gateway and all of them in bytes)."""
        pids = descendants(self.process.pid)
        return len(pids), rss_bytes(self.process.pid) + sum(rss_bytes(p) for p in pids)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def many_sessions(gateway: Gateway, count: int, tool: str) -> dict[str, Any]:
    setups: list[float] = []
    refused = 0
    most_processes, most_rss = 0, 0
    sessions: list[HttpSession] = []
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal most_processes, most_rss
        while not stop.is_set():
            processes, rss = gateway.footprint()
            most_processes, most_rss = max(most_processes, processes), max(most_rss, rss)
            await asyncio.sleep(0.2)

    async def one(n: int) -> None:
        nonlocal refused
        session = HttpSession(gateway.port)
        started = time.perf_counter()
        try:
            await session.open()
        except (KeyError, OSError, asyncio.IncompleteReadError):
            refused += 1  # 503 (MAX_SESSIONS) has no session id
            return
        setups.append(time.perf_counter() - started)
        sessions.append(session)
        body = json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {}}}
        ).encode()
        await session.call(body)

    watcher = asyncio.ensure_future(watch())
    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(count)))
    elapsed = time.perf_counter() - started
    await asyncio.sleep(0.5)  # every session still open, none deleted
    stop.set()
    await watcher
    processes, rss = gateway.footprint()
    for session in sessions:
        session.writer.close()  # the connection goes; the session stays (no DELETE)
    return {
        "served": len(setups),
        "refused": refused,
        "setup_p50_ms": percentile(setups, 0.5) * 1000 if setups else float("nan"),
        "setup_p99_ms": percentile(setups, 0.99) * 1000 if setups else float("nan"),
        "wall_s": elapsed,
        "processes_max": max(most_processes, processes),
        "rss_max_mib": max(most_rss, rss) / 2**20,
    }


async def sequential_setups(gateway: Gateway, count: int) -> float:
    """p50 of `count` session setups one at a time on an idle gateway (no warm pool), in ms; none deleted."""
    setups: list[float] = []
    for _ in range(count):
        session = HttpSession(gateway.port)
        started = time.perf_counter()
        await session.open()
        setups.append(time.perf_counter() - started)
        session.writer.close()
    return percentile(setups, 0.5) * 1000


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def throughput(gateway: Gateway, sessions: int, seconds: float, warmup: float) -> tuple[float, float, float, int]:
    """(calls per second, gateway CPU microseconds per call, upstream processes' CPU microseconds per call, server
    processes) of `sessions` in closed loop, measured after `warmup` seconds of the same."""
    clients = [HttpSession(gateway.port) for _ in range(sessions)]
    for client in clients:
        await client.open()
    calls = 0
    msg_ids = [0] * sessions

    async def loop(n: int, deadline: float) -> None:
        nonlocal calls
        while time.perf_counter() < deadline:
            msg_ids[n] += 1
            await clients[n].call(call_body(msg_ids[n]))
            calls += 1

    await asyncio.gather(*(loop(n, time.perf_counter() + warmup) for n in range(sessions)))
    calls = 0
    upstreams = descendants(gateway.process.pid)
    cpu = cpu_seconds(gateway.process.pid)
    upstream_cpu = sum(cpu_seconds(pid) for pid in upstreams)
    started = time.perf_counter()
    await asyncio.gather(*(loop(n, started + seconds) for n in range(sessions)))
    rate = calls / (time.perf_counter() - started)
    cpu_per_call = (cpu_seconds(gateway.process.pid) - cpu) / calls * 1e6
    upstream_per_call = (sum(cpu_seconds(pid) for pid in upstreams) - upstream_cpu) / calls * 1e6
    processes = gateway.footprint()[0]
    for client in clients:
        await client.close()
    return rate, cpu_per_call, upstream_per_call, processes


MODES = {
    "session": {"UPSTREAM_MODE": "session", "WARM_POOL_SIZE": "0"},
    "pool": {"UPSTREAM_MODE": "pool", "POOL_MIN": "1", "POOL_MAX": "8"},
}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--upstream", default=shlex.quote(str(Path(sys.executable).parent / "cnpg-mcp-server")))
    parser.add_argument("--tool", default="list_clusters", help="tool each session calls once")
    parser.add_argument("--max-sessions", type=int, default=2000, help="MAX_SESSIONS of the pool-mode gateway")
    parser.add_argument("--session-max-sessions", type=int, default=100, help="MAX_SESSIONS in session mode")
    parser.add_argument("--setups", type=int, default=10, help="sessions opened one at a time before the burst")
    parser.add_argument("--seconds", type=float, default=40.0, help="measured throughput time per mode, all rounds")
    parser.add_argument("--rounds", type=int, default=10, help="alternating throughput rounds per mode")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of calls before each throughput round")
    parser.add_argument("--throughput-only", action="store_true", help="skip the many-sessions part")
    args = parser.parse_args()

    figures: dict[str, dict[str, Any]] = {mode: {} for mode in MODES}
    for mode, env in MODES.items():
        if args.throughput_only:
            break
        limit = args.session_max_sessions if mode == "session" else args.max_sessions
        gateway = Gateway(args.upstream, {**env, "MAX_SESSIONS": str(limit)})
        try:
            await gateway.wait_ready()
            await gateway.settle()
            idle_setup = await sequential_setups(gateway, args.setups)
            figures[mode] = await many_sessions(gateway, args.sessions, args.tool)
            figures[mode]["idle_setup_p50_ms"] = idle_setup
            figures[mode]["max_sessions"] = limit
        finally:
            gateway.stop()
        print(f"{mode}: {figures[mode]}", flush=True)

    rates: dict[str, list[tuple[float, float, float, int]]] = {mode: [] for mode in MODES}
    order = list(MODES)
    for _ in range(args.rounds):
        for mode in order:
            gateway = Gateway(ECHO, MODES[mode])
            try:
                await gateway.wait_ready()
                rates[mode].append(await throughput(gateway, 8, args.seconds / args.rounds, args.warmup))
            finally:
                gateway.stop()
        order.reverse()  # each mode goes first in half the rounds: a drift in the machine's load hits both alike
    for mode in MODES:
        figures[mode]["calls_per_s_8"] = statistics.median(rate for rate, _, _, _ in rates[mode])
        figures[mode]["cpu_us_per_call_8"] = statistics.median(cpu for _, cpu, _, _ in rates[mode])
        figures[mode]["upstream_cpu_us_per_call_8"] = statistics.median(cpu for _, _, cpu, _ in rates[mode])
        figures[mode]["processes_8"] = max(processes for _, _, _, processes in rates[mode])
        rounds = [(round(rate), round(cpu), round(up)) for rate, cpu, up, _ in rates[mode]]
        print(f"{mode}, each round (calls/s, gateway CPU us per call, upstreams' CPU us per call): {rounds}")
    ratios = sorted(p[0] / s[0] for s, p in zip(rates["session"], rates["pool"], strict=True))
    print(f"pool / session calls per second, each round (sorted): {[round(r, 3) for r in ratios]}")
    ratio = statistics.median(ratios)

    session, pool = figures["session"], figures["pool"]
    print(f"\n{args.sessions} concurrent sessions that never DELETE; upstream {args.upstream}")
    print(f"{'figure':<38}{'session mode':>16}{'pool mode':>14}   goal (pool)")
    rows = [
        ("MAX_SESSIONS", "max_sessions", "{:.0f}", ""),
        ("sessions served", "served", "{:.0f}", f"{args.sessions}"),
        ("sessions refused", "refused", "{:.0f}", "0"),
        ("server processes (most seen)", "processes_max", "{:.0f}", "<= 8"),
        ("gateway + upstreams RSS (MiB, most)", "rss_max_mib", "{:.0f}", f"<= {GiB // 2**20}"),
        ("session setup p50, one at a time (ms)", "idle_setup_p50_ms", "{:.2f}", "<= 5"),
        ("session setup p50, all at once (ms)", "setup_p50_ms", "{:.2f}", ""),
        ("session setup p99, all at once (ms)", "setup_p99_ms", "{:.2f}", ""),
        ("wall time to open all (s)", "wall_s", "{:.1f}", ""),
        ("server processes at 8 sessions", "processes_8", "{:.0f}", ""),
        ("tools/call per s at 8 sessions (echo)", "calls_per_s_8", "{:.0f}", ""),
        ("gateway CPU per call, 8 sessions (us)", "cpu_us_per_call_8", "{:.0f}", ""),
        ("upstreams' CPU per call (us)", "upstream_cpu_us_per_call_8", "{:.0f}", ""),
    ]
    if args.throughput_only:
        rows = rows[-4:]
    for label, key, fmt, goal in rows:
        print(f"{label:<38}{fmt.format(session[key]):>16}{fmt.format(pool[key]):>14}   {goal}")
    print(f"{'pool / session calls per s, median':<38}{'':>16}{ratio:>14.3f}   >= 1 (rounds: {len(ratios)})")
    if args.throughput_only:
        print(f"\nthroughput goal {'met' if ratio >= 1.0 else 'NOT met'}")
        return
    met = (
        pool["processes_max"] <= 8
        and pool["rss_max_mib"] * 2**20 <= GiB
        and pool["idle_setup_p50_ms"] <= 5
        and ratio >= 1.0
        and pool["served"] == args.sessions
    )
    print(f"\ngoals {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    asyncio.run(main())
