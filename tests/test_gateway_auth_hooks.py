"""The transport's use of gateway.security.Authenticator, proven with a small in-test authenticator.

The real OIDC layer is tested in the auth helper's tests; here the gateway app runs in-process (aiohttp
TestServer) with a real upstream process, and the fake records what the transport asked it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway import metrics
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.security import AuthRejection, Principal
from tests.fixtures.gateway import ROOT, McpHttp, as_user

ECHO = (sys.executable, "-S", str(ROOT / "tests" / "upstreams" / "echo_server.py"))


class FakeAuthenticator:
    """Callers name themselves in X-Test-User; only "admin" may call `crash` or see it listed."""

    def __init__(self) -> None:
        self.ready = True
        self.calls: list[str] = []

    async def start(self) -> None:
        self.calls.append("start")

    async def close(self) -> None:
        self.calls.append("close")

    def is_ready(self) -> bool:
        return self.ready

    def routes(self) -> list[web.RouteDef]:
        async def metadata(_: web.Request) -> web.Response:
            return web.json_response({"resource": "test"})

        return [web.get("/.well-known/oauth-protected-resource", metadata)]

    async def authenticate(self, request: web.Request) -> Principal:
        user = request.headers.get("X-Test-User")
        if not user:
            raise AuthRejection(
                401, "missing_header", {"error_description": "no credentials"}, {"WWW-Authenticate": 'Bearer realm="t"'}
            )
        return Principal(subject=f"test|{user}", client_id="cli-1", scopes=frozenset(), expires_at=time.time() + 60)

    def authorize_message(
        self, principal: Principal, message: Mapping[str, Any], request: web.Request | None = None
    ) -> None:
        self.calls.append(f"authorize:{message.get('method')}")
        params = message.get("params") or {}
        if (
            message.get("method") == "tools/call"
            and params.get("name") == "crash"
            and principal.subject != "test|admin"
        ):
            raise AuthRejection(
                403,
                "insufficient_scope",
                {"error": "insufficient_scope", "error_description": "admin only"},
                {"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
            )

    def filter_result(self, principal: Principal, method: str, message: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(f"filter:{method}")
        if principal.subject != "test|admin":
            tools = message["result"]["tools"]
            message["result"]["tools"] = [tool for tool in tools if tool["name"] != "crash"]
        return message


@pytest.fixture
def fake() -> FakeAuthenticator:
    return FakeAuthenticator()


@pytest.fixture
async def server(fake: FakeAuthenticator) -> AsyncIterator[TestServer]:
    config = GatewayConfig(upstream_command=ECHO, metrics_port=0)
    app = create_app(config, authenticator=fake)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    try:
        yield test_server
    finally:
        await test_server.close()


async def test_requests_without_credentials_get_the_authenticators_rejection(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    anonymous = McpHttp(http, str(server.make_url("/mcp")))
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    async with http.post(anonymous.url, json=body, headers=anonymous.headers()) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="t"'
        assert await response.json() == {"error_description": "no credentials"}


async def test_a_session_answers_only_its_subject(server: TestServer, http: aiohttp.ClientSession) -> None:
    alice = as_user(http, server, "alice")
    await alice.initialize()
    mallory = as_user(http, server, "mallory")
    mallory.session_id = alice.session_id
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    async with http.post(mallory.url, json=body, headers=mallory.headers()) as response:
        assert response.status == 404
    assert await mallory.delete() == 404
    assert (await alice.request("ping"))["result"] == {}


async def test_a_denied_request_is_403_and_never_reaches_the_upstream(
    server: TestServer, http: aiohttp.ClientSession, fake: FakeAuthenticator
) -> None:
    denied_before = (
        metrics.REGISTRY.get_sample_value("mcp_gateway_tool_calls_total", {"tool": "other", "outcome": "denied"}) or 0.0
    )
    alice = as_user(http, server, "alice")
    await alice.initialize()
    body = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "crash", "arguments": {}}}
    async with http.post(alice.url, json=body, headers=alice.headers()) as response:
        assert response.status == 403
        assert "insufficient_scope" in response.headers["WWW-Authenticate"]
        assert (await response.json())["error"] == "insufficient_scope"
    assert "authorize:tools/call" in fake.calls
    # Had the call been forwarded, the upstream would have exited and taken the session with it.
    assert (await alice.call_tool("echo", {"text": "still here"}))["result"]["content"][0]["text"] == "still here"
    denied_after = metrics.REGISTRY.get_sample_value(
        "mcp_gateway_tool_calls_total", {"tool": "other", "outcome": "denied"}
    )
    assert denied_after == denied_before + 1


async def test_tools_list_results_pass_through_filter_result(
    server: TestServer, http: aiohttp.ClientSession, fake: FakeAuthenticator
) -> None:
    alice, admin = as_user(http, server, "alice"), as_user(http, server, "admin")
    await alice.initialize()
    await admin.initialize()
    alice_tools = {tool["name"] for tool in (await alice.request("tools/list"))["result"]["tools"]}
    admin_tools = {tool["name"] for tool in (await admin.request("tools/list"))["result"]["tools"]}
    assert "crash" in admin_tools and "crash" not in alice_tools
    assert "echo" in alice_tools
    assert fake.calls.count("filter:tools/list") == 2


async def test_authenticator_routes_are_served_without_credentials(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(server.make_url("/.well-known/oauth-protected-resource")) as response:
        assert response.status == 200
        assert await response.json() == {"resource": "test"}


async def test_health_needs_no_credentials(server: TestServer, http: aiohttp.ClientSession) -> None:
    async with http.get(server.make_url("/health")) as response:
        assert response.status == 200


async def test_readiness_follows_the_authenticator(
    fake: FakeAuthenticator, server: TestServer, http: aiohttp.ClientSession
) -> None:
    from gateway.app import STATE_KEY

    server.app[STATE_KEY].serving = True
    async with http.get(server.make_url("/ready")) as response:
        assert response.status == 200
    fake.ready = False
    async with http.get(server.make_url("/ready")) as response:
        assert response.status == 503


async def test_authenticator_is_started_and_closed_with_the_app(fake: FakeAuthenticator) -> None:
    config = GatewayConfig(upstream_command=ECHO, metrics_port=0)
    async with TestServer(create_app(config, authenticator=fake), host="127.0.0.1"):
        assert fake.calls == ["start"]
    assert fake.calls == ["start", "close"]
