"""MCP 2026-07-28 (the stateless protocol) through the gateway in pool mode, beside the session-based versions.

Real gateways, real upstream processes (tests/stdio_server.py, cnpg-mcp-server on the test Kubernetes API), the
Python SDK client pinned to 2026-07-28 and in auto mode, OIDC on where the rule is about callers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sys
from collections.abc import AsyncIterator, Sequence
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
from multidict import CIMultiDict

from gateway.param_headers import ToolSchemas, check_param_headers, declared_headers
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


async def post(
    url: str, message: dict[str, Any], token: str | None = None, *, also: Sequence[tuple[str, str]] = (), **headers: str
) -> tuple[int, Any]:
    """One 2026-07-28 POST with the routing headers its body calls for (overridable), `also` added as they are (a
    header twice, say), and its JSON answer."""
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
    all_headers = CIMultiDict(sent)
    for name, value in also:
        all_headers.add(name, value)
    async with aiohttp.ClientSession() as http, http.post(url, json=message, headers=all_headers) as resp:
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


# --- Mcp-Param-* headers: test_param_headers mirrors region (string), priority (integer) and verbose (boolean) ------


@pytest.fixture(scope="module")
def plain_pool(module_gateway_factory: StartGateway) -> RunningGateway:
    """A pool gateway with auth off: the Mcp-Param-* checks are the same for every caller."""
    return module_gateway_factory(upstream_command=UPSTREAM, env=POOL)


def b64(value: str) -> str:
    return "=?base64?" + base64.b64encode(value.encode()).decode() + "?="


def with_params(msg_id: int = 1, **arguments: Any) -> dict[str, Any]:
    return call("test_param_headers", msg_id, arguments=arguments)


async def test_param_headers_that_agree_with_the_arguments_are_accepted(plain_pool: RunningGateway) -> None:
    url = plain_pool.mcp_url
    arguments: dict[str, Any] = {"region": "eu-west-1", "priority": 3, "verbose": False, "query": "unmirrored"}
    status, reply = await post(
        url, with_params(**arguments), Mcp_Param_Region="eu-west-1", mcp_param_priority="3", MCP_PARAM_VERBOSE="false"
    )
    assert status == 200 and json.loads(reply["result"]["content"][0]["text"]) == arguments
    # Base64 for what a header cannot carry, whitespace around a value, an integer written as 3.0, null = absent.
    status, reply = await post(
        url,
        with_params(region=" Zürich\n", priority=3, verbose=None),
        also=[("Mcp-Param-Region", b64(" Zürich\n")), ("Mcp-Param-Priority", "  3.0 ")],
    )
    assert status == 200, reply
    # The SDK client mirrors the arguments itself, from the tools/list it made.
    async with connect(url, None, MODERN) as client:
        await client.list_tools()
        result = await client.call_tool("test_param_headers", {"region": "日本", "priority": 7, "verbose": True})
    assert json.loads(text_of(result)) == {"region": "日本", "priority": 7, "verbose": True}


REFUSED: dict[str, tuple[dict[str, Any], list[tuple[str, str]], str]] = {
    "value differs": ({"region": "eu"}, [("Mcp-Param-Region", "us")], "does not match"),
    "header missing": ({"region": "eu"}, [], "is missing"),
    "argument absent": ({"region": "eu"}, [("Mcp-Param-Region", "eu"), ("Mcp-Param-Priority", "1")], "no 'priority'"),
    "argument null": (
        {"region": "eu", "verbose": None},
        [("Mcp-Param-Region", "eu"), ("Mcp-Param-Verbose", "true")],
        "no 'verbose'",
    ),
    "integer differs": (
        {"region": "eu", "priority": 3},
        [("Mcp-Param-Region", "eu"), ("Mcp-Param-Priority", "4")],
        "does not match",
    ),
    "boolean case": (
        {"region": "eu", "verbose": True},
        [("Mcp-Param-Region", "eu"), ("Mcp-Param-Verbose", "True")],
        "does not match",
    ),
    "base64 padding": ({"region": "Hello"}, [("Mcp-Param-Region", "=?base64?SGVsbG8?=")], "not valid"),
    "base64 characters": ({"region": "Hello"}, [("Mcp-Param-Region", "=?base64?SGVs!!!bG8=?=")], "not valid"),
    "header twice": ({"region": "eu"}, [("Mcp-Param-Region", "eu"), ("Mcp-Param-Region", "eu")], "more than once"),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_param_headers_that_disagree_are_refused_with_400_and_32020(
    plain_pool: RunningGateway, case: str
) -> None:
    arguments, headers, words = REFUSED[case]
    status, reply = await post(plain_pool.mcp_url, with_params(**arguments), also=headers)
    assert (status, reply["error"]["code"]) == (400, -32020), reply
    assert words in reply["error"]["message"]


def test_a_header_value_with_characters_no_header_may_carry_is_refused() -> None:
    mirrored, problem = declared_headers(
        {"type": "object", "properties": {"q": {"type": "string", "x-mcp-header": "Q"}}}
    )
    assert problem is None
    assert "characters" in str(check_param_headers(mirrored, {"q": "héllo"}, CIMultiDict({"Mcp-Param-Q": "héllo"})))
    assert check_param_headers(mirrored, {"q": "héllo"}, CIMultiDict({"Mcp-Param-Q": b64("héllo")})) is None


@pytest.mark.parametrize(
    "schema",
    [
        {"properties": {"a": {"type": "number", "x-mcp-header": "A"}}},
        {"properties": {"a": {"type": "string", "x-mcp-header": "A B"}}},
        {"properties": {"a": {"type": "string", "x-mcp-header": "A"}, "b": {"type": "string", "x-mcp-header": "a"}}},
        {"properties": {"a": {"type": "array", "items": {"type": "string", "x-mcp-header": "A"}}}},
        {"anyOf": [{"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}]},
    ],
    ids=["number", "not a token", "repeated", "under items", "under anyOf"],
)
def test_a_schema_that_breaks_the_x_mcp_header_rules_declares_nothing(schema: dict[str, Any]) -> None:
    mirrored, problem = declared_headers({"type": "object", **schema})
    assert mirrored == () and problem


async def test_tools_are_listed_only_when_a_call_names_one_not_seen_or_a_header_not_declared() -> None:
    asked: list[str] = []
    now = [0.0]
    tools = [{"name": "plain", "inputSchema": {"type": "object"}}]

    async def ask(method: str, params: dict[str, Any]) -> dict[str, Any]:
        asked.append(method)
        return {"tools": tools}

    schemas = ToolSchemas(ask, clock=lambda: now[0])
    schemas.learn(tools)
    for _ in range(3):
        assert await schemas.declared("plain", frozenset()) == ()
    assert asked == []
    # A tool not seen lists them once, and not again within the interval, however many calls come at once.
    await asyncio.gather(*(schemas.declared("other", frozenset()) for _ in range(5)))
    await schemas.declared("other", frozenset())
    assert asked == ["tools/list"]
    # A renamed header: the call's header is not in the known schema, so the tools are listed again.
    tools = [{"name": "plain", "inputSchema": {"properties": {"r": {"type": "string", "x-mcp-header": "Zone"}}}}]
    now[0] += 11
    assert [m.header for m in await schemas.declared("plain", frozenset({"mcp-param-zone"}))] == ["Mcp-Param-Zone"]
    # tools/list_changed forgets them all; the next call lists at once.
    schemas.forget()
    await schemas.declared("plain", frozenset())
    assert asked == ["tools/list"] * 3
    await schemas.close()


async def test_a_tool_that_declares_no_param_headers_costs_no_listing_per_call(gateway_factory: StartGateway) -> None:
    gateway = gateway_factory(upstream_command=UPSTREAM, env=POOL)
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": META}}
    assert (await post(gateway.mcp_url, listing))[0] == 200  # the gateway learns the schemas passing through

    async def dispatched() -> float:
        """Requests sent to pool processes, over every partition."""
        async with aiohttp.ClientSession() as http, http.get(gateway.metrics_url) as resp:
            found = re.findall(r"^mcp_gateway_pool_dispatches_total(?:\{[^}]*\})? (\S+)$", await resp.text(), re.M)
        assert found
        return sum(float(value) for value in found)

    before = await dispatched()
    for msg_id in range(3):
        status, reply = await post(gateway.mcp_url, call("echo", msg_id, arguments={"text": "hi"}))
        assert status == 200 and reply["result"]["content"][0]["text"] == "hi"
    assert await dispatched() == before + 3  # the calls, and no tools/list beside them
    # A header the tool does not declare is not the gateway's business (it lists once, then lets it through).
    status, _ = await post(gateway.mcp_url, call("echo", 9, arguments={"text": "hi"}), Mcp_Param_Other="x")
    assert status == 200
