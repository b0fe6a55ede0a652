"""MCP 2026-07-28 (the stateless protocol) through the gateway in pool mode, beside the session-based versions.

Real gateways, real upstream processes (tests/stdio_server.py, cnpg-mcp-server on the test Kubernetes API), the
Python SDK client pinned to 2026-07-28 and in auto mode, OIDC on where the rule is about callers.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client

from tests.fixtures.gateway import ECHO_UPSTREAM, RunningGateway, StartGateway, free_port
from tests.fixtures.idp import DevIdp, start_gateway

UPSTREAM = f"{sys.executable} -m tests.stdio_server"
MODERN = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
    "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
}
POOL = {"UPSTREAM_MODE": "pool", "POOL_MIN": "1", "POOL_MAX": "3", "STDIO_SERVER_STATE_KEY": "shared-test-key"}


def pool_gateway(gateway_factory: StartGateway, idp: DevIdp) -> RunningGateway:
    gateway: RunningGateway = start_gateway(gateway_factory, idp, UPSTREAM_COMMAND=UPSTREAM, **POOL)
    return gateway


@asynccontextmanager
async def connect(url: str, token: str | None, mode: str, **options: Any) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=60.0))
    async with http, Client(streamable_http_client(url, http_client=http), mode=mode, **options) as client:
        yield client


async def post(url: str, message: dict[str, Any], token: str | None = None, **headers: str) -> tuple[int, Any]:
    """One 2026-07-28 POST with the routing headers its body calls for (overridable) and its JSON answer."""
    sent = {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": message["method"],
    }
    params = message.get("params") or {}
    if "name" in params:
        sent["Mcp-Name"] = params["name"]
    if token:
        sent["Authorization"] = f"Bearer {token}"
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    async with aiohttp.ClientSession() as http, http.post(url, json=message, headers=sent) as resp:
        return resp.status, await resp.json(content_type=None)


def call(name: str, msg_id: int = 1, **params: Any) -> dict[str, Any]:
    body = {"name": name, "arguments": {}, "_meta": META, **params}
    return {"jsonrpc": "2.0", "id": msg_id, "method": "tools/call", "params": body}


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


@pytest.mark.parametrize("mode", [MODERN, "auto"])
async def test_sdk_client_speaks_2026_through_the_pool_with_auth(
    gateway_factory: StartGateway, idp: DevIdp, mode: str
) -> None:
    gateway = pool_gateway(gateway_factory, idp)
    token = idp.token(resource=gateway.mcp_url)
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with connect(gateway.mcp_url, token, mode) as client:
        assert client.protocol_version == MODERN
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"test_simple_text", "whoami", "test_input_required_result_elicitation"} <= names
        simple = await client.call_tool("test_simple_text", {})
        assert text_of(simple) == "This is a simple text response for testing."
        await client.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)
        assert progress == [0.0, 50.0, 100.0]
    log = gateway.logs()
    # No session at all, and each call audited like a session's.
    assert '"mcp_method": "initialize"' not in log
    assert '"tool": "test_simple_text"' in log and '"event": "tool_call"' in log


async def test_input_required_rounds_complete_through_the_sdk_client(
    gateway_factory: StartGateway, idp: DevIdp
) -> None:
    gateway = pool_gateway(gateway_factory, idp)
    answers = iter([{"name": "Ada"}, {"color": "green"}])

    async def elicit(context: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
        return types.ElicitResult(action="accept", content=next(answers))

    async with connect(gateway.mcp_url, idp.token(resource=gateway.mcp_url), MODERN, elicitation_callback=elicit) as c:
        result = await c.call_tool("test_input_required_result_multi_round", {})
    assert text_of(result) == "Done: Ada likes green"


async def test_each_stateless_request_is_authorized_on_its_own(gateway_factory: StartGateway, idp: DevIdp) -> None:
    gateway = pool_gateway(gateway_factory, idp)
    reader = idp.token(scope="openid cnpg:read", resource=gateway.mcp_url)
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": META}}
    status, reply = await post(gateway.mcp_url, listing, reader)
    assert status == 200
    names = {tool["name"] for tool in reply["result"]["tools"]}
    assert "whoami" in names and not any(name.startswith("test_") for name in names)
    assert reply["result"]["cacheScope"] == "private"
    status, reply = await post(gateway.mcp_url, call("test_simple_text"), reader)
    assert status == 403 and reply["error"] == "insufficient_scope"
    status, _ = await post(gateway.mcp_url, call("whoami"))
    assert status == 401
    assert '"outcome": "denied"' in gateway.logs()


async def test_request_state_is_sealed_for_its_caller_and_request(gateway_factory: StartGateway, idp: DevIdp) -> None:
    gateway = pool_gateway(gateway_factory, idp)
    owner = idp.token(resource=gateway.mcp_url)
    other_client = idp.register_client(grant_types=["client_credentials"], scope="openid cnpg:read cnpg:write")
    other = idp.token(other_client["client_id"], other_client["client_secret"], resource=gateway.mcp_url)
    status, first = await post(gateway.mcp_url, call("test_input_required_result_request_state"), owner)
    assert status == 200 and first["result"]["resultType"] == "input_required"
    state = first["result"]["requestState"]
    responses = {"confirm": {"action": "accept", "content": {"ok": True}}}
    retry = call("test_input_required_result_request_state", 2, inputResponses=responses, requestState=state)
    # Another caller, another tool, a changed state: all refused before any upstream sees them.
    status, reply = await post(gateway.mcp_url, retry, other)
    assert (status, reply["error"]["code"]) == (400, -32602)
    elsewhere = call("test_input_required_result_tampered_state", 3, inputResponses=responses, requestState=state)
    status, reply = await post(gateway.mcp_url, elsewhere, owner, Mcp_Name="test_input_required_result_tampered_state")
    assert (status, reply["error"]["code"]) == (400, -32602)
    tampered = {**retry, "params": {**retry["params"], "requestState": state[:-2] + "AA"}}
    status, reply = await post(gateway.mcp_url, tampered, owner)
    assert (status, reply["error"]["code"]) == (400, -32602)
    status, reply = await post(gateway.mcp_url, retry, owner)
    assert status == 200 and "state-ok" in reply["result"]["content"][0]["text"]


async def test_http_rules_of_2026(gateway_factory: StartGateway, idp: DevIdp) -> None:
    gateway = pool_gateway(gateway_factory, idp)
    token = idp.token(resource=gateway.mcp_url)
    status, reply = await post(gateway.mcp_url, call("whoami"), token, Mcp_Name="echo")
    assert (status, reply["error"]["code"]) == (400, -32020)
    status, reply = await post(gateway.mcp_url, call("whoami"), token, Mcp_Method="tools/list")
    assert (status, reply["error"]["code"]) == (400, -32020)
    status, reply = await post(gateway.mcp_url, call("whoami"), token, MCP_Protocol_Version="2099-01-01")
    assert (status, reply["error"]["code"]) == (400, -32022)
    assert reply["error"]["data"] == {
        "supported": ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", MODERN],
        "requested": "2099-01-01",
    }
    no_meta = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    status, reply = await post(gateway.mcp_url, no_meta, token)
    assert (status, reply["error"]["code"]) == (400, -32602)
    unknown = {"jsonrpc": "2.0", "id": 1, "method": "no/such", "params": {"_meta": META}}
    status, reply = await post(gateway.mcp_url, unknown, token)
    assert (status, reply["error"]["code"]) == (404, -32601)
    discover = {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": META}}
    status, reply = await post(gateway.mcp_url, discover, token)
    assert status == 200 and MODERN in reply["result"]["supportedVersions"]


async def test_two_replicas_without_affinity_serve_one_client_alternately(
    gateway_factory: StartGateway, tmp_path: Path
) -> None:
    key_file = tmp_path / "request-state-key"
    key_file.write_text("a secret shared by both replicas\n")
    env = {**POOL, "REQUEST_STATE_KEY_FILE": str(key_file)}
    replicas = [gateway_factory(upstream_command=UPSTREAM, env=env) for _ in range(2)]
    ports = [replica.port for replica in replicas]
    served: list[int] = []

    class Alternate(httpx2.AsyncBaseTransport):
        """A load balancer with no affinity at all: each request goes to the next replica."""

        def __init__(self) -> None:
            self.inner = httpx2.AsyncHTTPTransport()

        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            port = ports[len(served) % 2]
            served.append(port)
            request.url = request.url.copy_with(port=port)
            return await self.inner.handle_async_request(request)

        async def aclose(self) -> None:
            await self.inner.aclose()

    answers = iter([{"name": "Ada"}, {"color": "blue"}])

    async def elicit(context: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
        return types.ElicitResult(action="accept", content=next(answers))

    http = httpx2.AsyncClient(transport=Alternate(), timeout=httpx2.Timeout(30.0, read=60.0))
    url = f"http://127.0.0.1:{free_port()}/mcp"  # the port is replaced on every request
    async with http, Client(streamable_http_client(url, http_client=http), elicitation_callback=elicit) as client:
        assert client.protocol_version == MODERN
        assert len((await client.list_tools()).tools) > 10
        result = await client.call_tool("test_input_required_result_multi_round", {})
        assert text_of(result) == "Done: Ada likes blue"
        for _ in range(4):
            assert text_of(await client.call_tool("test_simple_text", {})).startswith("This is a simple")
    assert set(served) == set(ports) and len(served) >= 8
    for replica in replicas:
        assert "Traceback" not in replica.logs()


async def test_cnpg_mcp_server_speaks_2026_through_the_gateway(
    gateway_factory: StartGateway, idp: DevIdp, kube_api: Any
) -> None:
    server = str(Path(sys.executable).parent / "cnpg-mcp-server")
    port = free_port()
    gateway = start_gateway(
        gateway_factory,
        idp,
        PORT=str(port),
        UPSTREAM_COMMAND=server,
        KUBECONFIG=str(kube_api.kubeconfig_path),
        TOOL_SCOPES="*=cnpg:read",
        **{k: v for k, v in POOL.items() if k != "STDIO_SERVER_STATE_KEY"},
    )
    for mode in (MODERN, "auto"):
        async with connect(gateway.mcp_url, idp.token(resource=gateway.mcp_url), mode) as client:
            assert client.protocol_version == MODERN
            tools = {tool.name for tool in (await client.list_tools()).tools}
            assert "list_clusters" in tools
            result = await client.call_tool("list_clusters", {"namespace": "default"})
            assert not result.is_error, text_of(result)
            assert json.dumps(result.model_dump(mode="json"))


async def test_an_upstream_that_does_not_speak_2026_is_never_offered_it(gateway_factory: StartGateway) -> None:
    # tests/upstreams/echo_server.py knows only the handshake versions: its server/discover probe fails, so the
    # gateway withdraws 2026-07-28 and says so in the version error, and an auto client falls back to initialize.
    gateway = gateway_factory(upstream_command=ECHO_UPSTREAM, env={"UPSTREAM_MODE": "pool", "POOL_MIN": "1"})
    for _ in range(2):  # before and after the probe has been made
        status, answer = await post(gateway.mcp_url, call("echo", text="hi"))
        assert status == 400, answer
        assert answer["error"]["code"] == -32022, answer
        assert MODERN not in answer["error"]["data"]["supported"]
        assert answer["error"]["data"]["requested"] == MODERN
    async with connect(gateway.mcp_url, None, "auto") as client:
        assert client.protocol_version != MODERN
        result = await client.call_tool("echo", {"text": "fell back"})
    assert "fell back" in text_of(result)
