"""Benchmark: bearer-token verification cost and tools/call latency with auth on and off.

    .venv/bin/python bench/bench_auth.py [--iterations 2000] [--calls 300]

Starts the real dev IdP (devidp/idp.mjs) and real gateways (cnpg-mcp-gateway in front of the stdlib echo upstream),
all on 127.0.0.1, and prints one JSON document. Figures are per request, measured on this machine with
time.perf_counter; the machine is shared, so read them as orders of magnitude.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import make_mocked_request

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.auth import load_auth_config  # noqa: E402
from gateway.auth.authenticator import OidcAuthenticator  # noqa: E402
from tests.fixtures.gateway import ECHO_UPSTREAM  # noqa: E402
from tests.fixtures.idp import DevIdp, free_port  # noqa: E402

INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}},
}
HEADERS = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}


def per_call_us(samples: list[float]) -> dict[str, float]:
    us = sorted(s * 1e6 for s in samples)
    return {
        "median_us": round(statistics.median(us), 2),
        "p95_us": round(us[int(len(us) * 0.95) - 1], 2),
        "mean_us": round(statistics.fmean(us), 2),
    }


async def bench_verify(idp: DevIdp, iterations: int) -> dict[str, Any]:
    audience = "https://cnpg-mcp.test/mcp"
    cfg = load_auth_config({"OIDC_ISSUER": idp.issuer, "OIDC_AUDIENCE": audience})
    assert cfg is not None
    auth = OidcAuthenticator(cfg)
    await auth.start()
    try:
        for _ in range(1500):
            if auth.is_ready():
                break
            await asyncio.sleep(0.02)
        else:
            raise RuntimeError("signing keys never loaded")
        results: dict[str, Any] = {}
        for alg in ("RS256", "ES256"):
            token = idp.token(alg=alg, resource=audience)
            request = make_mocked_request("POST", "/mcp", headers={"Authorization": f"Bearer {token}"})
            await auth.authenticate(request)  # warm up

            uncached: list[float] = []
            for _ in range(iterations):
                t0 = time.perf_counter()
                await auth.verifier.verify(token)
                uncached.append(time.perf_counter() - t0)
            cached: list[float] = []
            for _ in range(iterations):
                t0 = time.perf_counter()
                auth.verifier.cached(token)
                cached.append(time.perf_counter() - t0)
            # The whole per-request path the transport calls: header parsing, cache, scopes, metrics.
            request_path: list[float] = []
            for _ in range(iterations):
                t0 = time.perf_counter()
                await auth.authenticate(request)
                request_path.append(time.perf_counter() - t0)
            results[alg] = {
                "verify_uncached": per_call_us(uncached),
                "verify_cached": per_call_us(cached),
                "authenticate_cached": per_call_us(request_path),
            }
        return results
    finally:
        await auth.close()


def start_gateway(env_extra: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "METRICS_PORT": str(metrics_port),
        "UPSTREAM_COMMAND": ECHO_UPSTREAM,
        "LOG_LEVEL": "warning",
        **{k: v.replace("{port}", str(port)) for k, v in env_extra.items()},
    }
    script = Path(sys.executable).parent / "cnpg-mcp-gateway"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(script)], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/ready", timeout=2) as resp:
                if resp.status == 200:
                    return proc, base
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"gateway not ready: {log.read_text()[-2000:]}")


async def bench_tools_call(base: str, token: str | None, calls: int) -> dict[str, float]:
    headers = dict(HEADERS)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as http:
        async with http.post(base + "/mcp", json=INIT, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            session = resp.headers["Mcp-Session-Id"]
            await resp.read()
        headers["Mcp-Session-Id"] = session
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        async with http.post(base + "/mcp", json=note, headers=headers) as resp:
            await resp.read()
        samples: list[float] = []
        for i in range(calls + 20):
            body = {"jsonrpc": "2.0", "id": i + 1, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": "x"}}}  # fmt: skip
            t0 = time.perf_counter()
            async with http.post(base + "/mcp", json=body, headers=headers) as resp:
                await resp.read()
                assert resp.status == 200
            if i >= 20:  # warm-up excluded
                samples.append(time.perf_counter() - t0)
    us = per_call_us(samples)
    return {"median_ms": round(us["median_us"] / 1000, 3), "p95_ms": round(us["p95_us"] / 1000, 3)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        idp = DevIdp(workdir=Path(tmp) / "idp")
        idp.start()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            report: dict[str, Any] = {"verify": await bench_verify(idp, args.iterations)}
            off, off_base = start_gateway({}, Path(tmp) / "off.log")
            procs.append(off)
            on, on_base = start_gateway(
                {"OIDC_ISSUER": idp.issuer, "OIDC_AUDIENCE": "http://127.0.0.1:{port}/mcp"}, Path(tmp) / "on.log"
            )
            procs.append(on)
            token = idp.token(resource=on_base + "/mcp")
            report["tools_call"] = {
                "auth_off": await bench_tools_call(off_base, None, args.calls),
                "auth_on": await bench_tools_call(on_base, token, args.calls),
            }
            report["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
            print(json.dumps(report, indent=2))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
            idp.stop()


if __name__ == "__main__":
    asyncio.run(main())
