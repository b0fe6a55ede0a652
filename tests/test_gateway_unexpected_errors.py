"""A bug inside the gateway costs the client one clean error, never a hung call or a leaked upstream process.

Bugs are planted through the one public seam that runs our code on the request path from the outside: an
authenticator (gateway.security.Authenticator) that raises where it should not. The app runs in-process (aiohttp
TestServer) with a real upstream process; log lines are captured with structlog's test helper.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.security import Principal
from tests.fixtures.gateway import ROOT, HeaderAuthenticator, McpHttp, messages, read_sse

ECHO = (sys.executable, "-S", str(ROOT / "tests" / "upstreams" / "echo_server.py"))
TOKEN = "tok-SECRET-4711"


class BuggyAuthenticator(HeaderAuthenticator):
    """Lets everyone in, then fails with a plain bug: on tools/call (authorize) or on tools/list (filter)."""

    async def authenticate(self, request: web.Request) -> Principal:
        return Principal(subject="test|user", client_id="cli", scopes=frozenset(), expires_at=time.time() + 60)

    def authorize_message(
        self, principal: Principal, message: Mapping[str, Any], request: web.Request | None = None
    ) -> None:
        if message.get("method") == "tools/call":
            raise RuntimeError("planted bug in authorize_message")

    def filter_result(self, principal: Principal, method: str, message: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("planted bug in filter_result")


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    app = create_app(GatewayConfig(upstream_command=ECHO, metrics_port=0), authenticator=BuggyAuthenticator())
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    try:
        yield test_server
    finally:
        await test_server.close()


@pytest.fixture
async def client(server: TestServer, http: aiohttp.ClientSession) -> McpHttp:
    mcp = McpHttp(http, str(server.make_url("/mcp")))
    original = mcp.headers

    def headers(**extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}", **original(**extra)}

    mcp.headers = headers  # type: ignore[method-assign]
    await mcp.initialize()
    return mcp


def upstream_pids() -> set[int]:
    """The echo upstream processes this test process started (the fixture's session has exactly one)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == os.getpid() and b"echo_server.py" in cmdline:
            found.add(int(entry))
    return found


async def eventually(check: Callable[[], bool], within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return check()


async def test_a_bug_while_handling_a_request_is_a_jsonrpc_error_and_releases_the_session(client: McpHttp) -> None:
    (pid,) = upstream_pids()
    body = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}
    with capture_logs() as logs:
        async with client.http.post(client.url, json=body, headers=client.headers()) as response:
            assert response.status == 500
            assert response.content_type == "application/json"
            reply = await response.json()
    assert reply["jsonrpc"] == "2.0"
    assert reply["error"]["code"] == -32603
    assert await eventually(lambda: pid not in upstream_pids()), "the session's upstream process was left running"
    async with client.http.post(
        client.url, json={"jsonrpc": "2.0", "id": 6, "method": "ping"}, headers=client.headers()
    ) as after:
        assert after.status == 404
    (logged,) = [line for line in logs if line["event"] == "unexpected_error"]
    assert logged["exc_info"] is True  # rendered as a stack trace by the gateway's log setup
    assert logged["mcp_method"] == "tools/call"
    assert TOKEN not in json.dumps(logs, default=repr)
    assert client.session_id and client.session_id not in json.dumps(logs, default=repr)


async def test_a_bug_while_routing_an_answer_is_a_jsonrpc_error_not_a_hung_call(client: McpHttp) -> None:
    with capture_logs() as logs:
        async with client.http.post(
            client.url, json={"jsonrpc": "2.0", "id": 7, "method": "tools/list"}, headers=client.headers()
        ) as response:
            assert response.status == 200
            found = messages(await asyncio.wait_for(read_sse(response, until_id=7), 10))
    (reply,) = [m for m in found if m.get("id") == 7]
    assert reply["error"]["code"] == -32603
    assert "result" not in reply, "an answer that could not be filtered must not pass unfiltered"
    assert any(line["event"] == "upstream_response_failed" for line in logs)
    assert (await client.request("ping"))["result"] == {}, "the session goes on"
