"""Measure the figures docs/deploy.md sizes the pod from, with the processes the deployment runs: socat with
cnpg-mcp-server on a Unix socket (Dockerfile.server) and the gateway in pool mode on that socket.

Starts the sandbox cluster, socat, and the gateway (auth off, loopback, UPSTREAM_MODE=pool,
POOL_MIN=POOL_MAX=POOL so every pooled connection and its server process exists), then opens SESSIONS MCP sessions
that each initialize and call list_clusters (WORKERS at a time, so every server process serves calls) and keep
their session. Reads VmRSS from /proc: the gateway idle (pool started, no session) and with every session open,
each server process and each socat child behind the listener, and the listener itself. Also reports the
list_clusters latency through the gateway. Run from the repository root:

    .venv/bin/python deploy/measure_memory.py [--sessions 1000] [--pool 8] [--workers 8]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
           "MCP-Protocol-Version": "2025-11-25"}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError(pid)


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the direct children of pid."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append((int(entry), cmdline))
    return found


def behind_socat(listener: int) -> tuple[list[int], list[int]]:
    """(socat children, cnpg-mcp-server processes) below the socat listener: fork makes a socat child per
    connection, which execs nothing itself but starts the server as its own child."""
    forks = [pid for pid, _ in children(listener)]
    servers = [pid for fork in forks for pid, cmd in children(fork) if "cnpg-mcp-server" in cmd]
    return forks, servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(url: str, body: dict[str, object], session: str | None = None) -> tuple[str | None, str]:
    headers = dict(HEADERS, **({"Mcp-Session-Id": session} if session else {}))
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=120) as resp:
        return resp.headers.get("Mcp-Session-Id"), resp.read().decode()


def open_session(url: str) -> float:
    """initialize, notifications/initialized, list_clusters; the session stays open. Returns the call's seconds."""
    sid, _ = post(url, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "m", "version": "1"}}})
    post(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
    started = time.monotonic()
    _, answer = post(url, {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                           "params": {"name": "list_clusters", "arguments": {}}}, sid)
    assert '"result"' in answer and '"isError":true' not in answer.replace(" ", ""), answer[:300]
    return time.monotonic() - started


def pool_processes(text: str) -> float:
    """The session pool's process count in a /metrics page."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mcp_gateway_pool_processes" and sample.labels.get("partition") == "session":
                return sample.value
    return 0.0


def wait_until(check: object, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"measure_memory: no {what} after {timeout} s")


def mib(kib: float) -> float:
    return round(kib / 1024, 1)


def main(sessions: int, pool: int, workers: int) -> None:
    with tempfile.TemporaryDirectory(prefix="cnpg-measure-") as tmp:
        kubeconfig, sock = Path(tmp) / "kubeconfig", Path(tmp) / "mcp.sock"
        procs: list[subprocess.Popen[bytes]] = []
        try:
            sandbox = subprocess.Popen([str(BIN / "python"), "-m", "devkube", "--port", "0", "--kubeconfig",
                                        str(kubeconfig)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
            procs.append(sandbox)
            assert sandbox.stdout is not None
            sandbox.stdout.readline()
            # Dockerfile.server's entrypoint, with this machine's socket path and the venv's server.
            server_env = dict(os.environ, KUBECONFIG=str(kubeconfig), PATH=f"{BIN}:{os.environ['PATH']}")
            listener = subprocess.Popen(["socat", f"UNIX-LISTEN:{sock},fork,mode=600,unlink-early",
                                         "EXEC:cnpg-mcp-server"], env=server_env, stdin=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
            procs.append(listener)
            wait_until(sock.is_socket, "socket")
            port, metrics = free_port(), free_port()
            env = dict(os.environ, PORT=str(port), METRICS_PORT=str(metrics), UPSTREAM_MODE="pool",
                       POOL_MIN=str(pool), POOL_MAX=str(pool), MAX_SESSIONS=str(sessions + 5), LOG_LEVEL="warning")
            gateway = subprocess.Popen([str(BIN / "cnpg-mcp-gateway"), "--upstream-socket", str(sock)], env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(gateway)
            url = f"http://127.0.0.1:{port}/mcp"

            def pool_started() -> bool:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as resp:
                    text = resp.read().decode()
                return pool_processes(text) == pool

            wait_until(pool_started, f"{pool} pooled processes", timeout=300)
            time.sleep(2)
            idle = rss_kib(gateway.pid)
            with ThreadPoolExecutor(workers) as executor:
                latencies = list(executor.map(lambda _: open_session(url), range(sessions)))
            time.sleep(2)
            loaded = rss_kib(gateway.pid)
            forks, servers = behind_socat(listener.pid)
            server_rss = [rss_kib(pid) for pid in servers]
            fork_rss = [rss_kib(pid) for pid in forks]
            print(json.dumps({
                "sessions": sessions,
                "pool": pool,
                "gateway_idle_mib": mib(idle),
                "gateway_loaded_mib": mib(loaded),
                "gateway_per_session_kib": round((loaded - idle) / sessions, 1),
                "server_processes": len(servers),
                "server_rss_mib_max": mib(max(server_rss)),
                "server_rss_mib_mean": mib(statistics.mean(server_rss)),
                "socat_listener_mib": mib(rss_kib(listener.pid)),
                "socat_child_mib_max": mib(max(fork_rss)),
                "list_clusters_ms_p50": round(statistics.median(latencies) * 1000, 1),
                "list_clusters_ms_p95": round(statistics.quantiles(latencies, n=20)[-1] * 1000, 1),
            }))
        finally:
            for proc in reversed(procs):
                proc.terminate()
                proc.wait(timeout=60)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--pool", type=int, default=8, help="POOL_MIN and POOL_MAX")
    parser.add_argument("--workers", type=int, default=8, help="sessions opened at once")
    args = parser.parse_args()
    main(args.sessions, args.pool, args.workers)
