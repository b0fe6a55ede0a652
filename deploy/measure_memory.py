"""Measure the memory figures docs/deploy.md sizes the pod from: gateway RSS idle and per session, and the RSS of
one cnpg-mcp-server process after a tool call.

Starts the sandbox cluster, then the gateway (auth off, loopback, one upstream per session), opens SESSIONS MCP
sessions that each call list_clusters, and reads /proc/<pid>/status. Run from the repository root:

    .venv/bin/python deploy/measure_memory.py [SESSIONS]
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
           "MCP-Protocol-Version": "2025-11-25"}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError(pid)


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry))
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(url: str, body: dict[str, object], session: str | None = None) -> tuple[str | None, str]:
    headers = dict(HEADERS, **({"Mcp-Session-Id": session} if session else {}))
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.headers.get("Mcp-Session-Id"), resp.read().decode()


def main(sessions: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        sandbox = subprocess.Popen([str(BIN / "python"), "-m", "devkube", "--port", "0", "--kubeconfig",
                                    str(kubeconfig)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
        assert sandbox.stdout is not None
        sandbox.stdout.readline()
        port, metrics = free_port(), free_port()
        env = dict(os.environ, KUBECONFIG=str(kubeconfig), PORT=str(port), METRICS_PORT=str(metrics),
                   UPSTREAM_COMMAND=str(BIN / "cnpg-mcp-server"), MAX_SESSIONS=str(sessions + 5), LOG_LEVEL="warning")
        gateway = subprocess.Popen([str(BIN / "cnpg-mcp-gateway")], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/mcp"
        try:
            for _ in range(300):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            time.sleep(1)
            idle = rss_kib(gateway.pid)
            for n in range(sessions):
                sid, _ = post(url, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "m", "version": "1"}}})
                post(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
                post(url, {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                           "params": {"name": "list_clusters", "arguments": {}}}, sid)
                print(f"session {n + 1} open", file=sys.stderr)
            time.sleep(1)
            loaded = rss_kib(gateway.pid)
            servers = [rss_kib(pid) for pid in children(gateway.pid)]
            print(json.dumps({
                "sessions": sessions,
                "gateway_idle_mib": round(idle / 1024, 1),
                "gateway_loaded_mib": round(loaded / 1024, 1),
                "gateway_per_session_mib": round((loaded - idle) / 1024 / sessions, 2),
                "server_processes": len(servers),
                "server_rss_mib_max": round(max(servers) / 1024, 1),
                "server_rss_mib_mean": round(sum(servers) / len(servers) / 1024, 1),
            }))
        finally:
            gateway.terminate()
            gateway.wait(timeout=60)
            sandbox.terminate()
            sandbox.wait(timeout=30)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
