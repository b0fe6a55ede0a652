"""cnpg-mcp-connect against the real dev IdP and the real gateway, with tokens that live 3 seconds.

Each test keeps one client working across several token expiries: over stdio with client_credentials (asking for
too few scopes first, so the gateway's 403 insufficient_scope makes it step up), through the --listen proxy, and
with the authorization-code flow run headless (the dev IdP approves by itself). Logs must hold no secret or token.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.conformance_client_driver import StdioClient
from tests.fixtures.gateway import StartGateway, free_port
from tests.fixtures.idp import IDP_SCRIPT, NODE, start_gateway

pytestmark = pytest.mark.timeout(120)
TTL = 3
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ShortLivedIdp:
    issuer: str
    process: subprocess.Popen[bytes]


@pytest.fixture
def short_idp(tmp_path: Path) -> Iterator[ShortLivedIdp]:
    """The dev IdP issuing access tokens that live TTL seconds."""
    port = free_port()
    ready = tmp_path / "idp-ready.json"
    with ready.open("wb") as out, (tmp_path / "idp.log").open("wb") as log:
        process = subprocess.Popen(
            [str(NODE), str(IDP_SCRIPT), "--port", str(port), "--ttl", str(TTL), "--resource", "http://127.0.0.1:*",
             "--keys-file", str(tmp_path / "keys.json")],
            stdout=out, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while not ready.read_text().endswith("\n"):
        assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "idp.log").read_text()
        time.sleep(0.05)
    try:
        yield ShortLivedIdp(json.loads(ready.read_text())["issuer"], process)
    finally:
        process.terminate()
        process.wait(10)


def register(idp: ShortLivedIdp, **metadata: Any) -> dict[str, Any]:
    doc = {"grant_types": ["client_credentials"], "response_types": [], "redirect_uris": [], **metadata}
    response = httpx2.post(f"{idp.issuer}/reg", json=doc, timeout=15)
    assert response.status_code == 201, response.text
    return dict(response.json())


def helper_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_")}
    env.update({"MCP_LOG_LEVEL": "info", "MCP_REFRESH_MARGIN": "1", **settings})
    return env


def client_credentials_env(idp: ShortLivedIdp, tmp_path: Path, **settings: str) -> tuple[dict[str, str], str]:
    client = register(idp)
    secret_file = tmp_path / "secret"
    secret_file.write_text(client["client_secret"])
    env = helper_env(tmp_path, MCP_CLIENT_ID=client["client_id"], MCP_CLIENT_SECRET_FILE=str(secret_file), **settings)
    return env, str(client["client_secret"])


async def echo_over_time(call: Any, rounds: int = 4) -> None:
    """Echo calls spread over more than three token lifetimes."""
    for n in range(rounds):
        text = await call(f"round {n}")
        assert text == f"round {n}"
        await asyncio.sleep(TTL)


def assert_no_secret(log: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in log
    assert "eyJ" not in log, "a JWT reached the helper's log"


async def run_stdio(env: dict[str, str], url: str, stderr_path: Path) -> None:
    with stderr_path.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "connect", "--url", url, env=env, cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
        )  # fmt: skip
    client = StdioClient(process)
    try:
        await client.request("initialize", {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"},
        })  # fmt: skip
        await client.notify("notifications/initialized")

        async def call(text: str) -> str:
            result = await client.request("tools/call", {"name": "echo", "arguments": {"text": text}})
            return str(result["content"][0]["text"])

        await echo_over_time(call)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        await asyncio.wait_for(process.wait(), 15)
        client.reader.cancel()
    assert process.returncode == 0


async def test_stdio_client_credentials_keeps_working_across_expiries_and_steps_up(
    short_idp: ShortLivedIdp, gateway_factory: StartGateway, tmp_path: Path
) -> None:
    gateway = start_gateway(gateway_factory, short_idp)  # type: ignore[arg-type]
    env, secret = client_credentials_env(short_idp, tmp_path, MCP_SCOPE="openid cnpg:read")
    await run_stdio(env, gateway.mcp_url, tmp_path / "connect.log")
    log = (tmp_path / "connect.log").read_text()
    assert "the server asks for more scopes" in log  # echo needs cnpg:write: 403 insufficient_scope, step-up
    assert log.count("got an access token") >= 4, log
    assert_no_secret(log, secret)


async def test_listen_proxy_keeps_working_across_expiries(
    short_idp: ShortLivedIdp, gateway_factory: StartGateway, tmp_path: Path
) -> None:
    gateway = start_gateway(gateway_factory, short_idp)  # type: ignore[arg-type]
    env, secret = client_credentials_env(short_idp, tmp_path, MCP_SCOPE="openid cnpg:read cnpg:write")
    port = free_port()
    with (tmp_path / "proxy.log").open("wb") as err:
        proxy = subprocess.Popen(  # noqa: ASYNC220 - started once, read line by line below
            [sys.executable, "-m", "connect", "--url", gateway.mcp_url, "--listen", f"127.0.0.1:{port}"],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=err,
        )  # fmt: skip
    try:
        assert proxy.stdout is not None
        assert b"listening" in proxy.stdout.readline()
        from mcp import Client

        async with Client(f"http://127.0.0.1:{port}/mcp", mode="legacy") as client:

            async def call(text: str) -> str:
                result = await client.call_tool("echo", {"text": text})
                return str(result.content[0].text)  # type: ignore[union-attr]

            await echo_over_time(call)
        async with httpx2.AsyncClient() as http:
            foreign = await http.post(f"http://127.0.0.1:{port}/mcp", json={}, headers={"Origin": "https://evil.test"})
            assert foreign.status_code == 403  # a web page cannot borrow the proxy's token
    finally:
        proxy.terminate()
        proxy.wait(15)
    log = (tmp_path / "proxy.log").read_text()
    assert log.count("got an access token") >= 4, log
    assert_no_secret(log, secret)


async def test_authorization_code_runs_headless_and_refreshes_across_expiries(
    short_idp: ShortLivedIdp, gateway_factory: StartGateway, tmp_path: Path
) -> None:
    gateway = start_gateway(gateway_factory, short_idp)  # type: ignore[arg-type]
    cache = tmp_path / "cache" / "tokens.json"
    env = helper_env(tmp_path, MCP_AUTH="authorization-code", MCP_CONNECT_AUTO_AUTHORIZE="1", MCP_NO_BROWSER="1",
                     MCP_TOKEN_CACHE=str(cache))  # fmt: skip
    await run_stdio(env, gateway.mcp_url, tmp_path / "connect.log")
    log = (tmp_path / "connect.log").read_text()
    assert log.count("signing in") == 1, log  # one authorization, then refresh tokens
    assert log.count("stored new tokens") >= 4, log
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    stored = json.loads(cache.read_text())
    assert stored["tokens"]["refresh_token"] and stored["client"]["client_id"]  # DCR, cached
    assert_no_secret(log, stored["tokens"]["refresh_token"])


def test_get_token_script_prints_only_a_token_the_gateway_accepts(
    short_idp: ShortLivedIdp, gateway_factory: StartGateway, tmp_path: Path
) -> None:
    gateway = start_gateway(gateway_factory, short_idp)  # type: ignore[arg-type]
    env, secret = client_credentials_env(short_idp, tmp_path, MCP_UPSTREAM=gateway.mcp_url, MCP_SCOPE="openid")
    script = [str(ROOT / "scripts" / "get-token.sh")]
    done = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert "\n" not in token and token.count(".") == 2 and not done.stderr
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}
    answer = httpx2.post(gateway.mcp_url, json=init, timeout=15, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    (tmp_path / "secret").write_text("wrong")
    refused = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and not refused.stdout
    assert "refused the client credentials" in refused.stderr and secret not in refused.stderr
