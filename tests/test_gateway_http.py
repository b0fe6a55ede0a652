"""Streamable HTTP rules at the gateway's MCP endpoint: statuses, headers, JSON-RPC error bodies, SSE framing.

One gateway (tiny echo upstream) serves the whole module; each test opens its own MCP session.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from tests.fixtures.gateway import (
    ACCEPT_BOTH,
    ECHO_UPSTREAM,
    McpHttp,
    RunningGateway,
    StartGateway,
    messages,
    read_sse,
)

BODY_LIMIT = 65536


@pytest.fixture(scope="module")
def gw(module_gateway_factory: StartGateway) -> RunningGateway:
    return module_gateway_factory(
        upstream_command=ECHO_UPSTREAM,
        env={
            "MAX_BODY_BYTES": str(BODY_LIMIT),
            "ALLOWED_ORIGINS": "https://app.example.com",
            "SSE_KEEPALIVE": "0.3",
        },
    )


def call_body(msg_id: Any = 1, name: str = "echo", arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": msg_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments or {"text": "hi"}},
    }


async def post_raw(
    http: aiohttp.ClientSession, url: str, data: bytes | str, headers: dict[str, str]
) -> tuple[int, dict[str, str], Any]:
    async with http.post(url, data=data, headers=headers) as response:
        text = await response.text()
        body = json.loads(text) if text and response.content_type == "application/json" else text
        return response.status, dict(response.headers), body


# --- health and readiness ---------------------------------------------------------------------------------


async def test_health_names_the_service(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    async with http.get(gw.base_url + "/health") as response:
        assert response.status == 200
        assert await response.json() == {"status": "healthy", "service": "cnpg-mcp-server"}


async def test_ready_when_serving(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    async with http.get(gw.base_url + "/ready") as response:
        assert response.status == 200


# --- initialize and sessions ------------------------------------------------------------------------------


async def test_initialize_returns_a_random_visible_ascii_session_id(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    first, second = McpHttp(http, gw.mcp_url), McpHttp(http, gw.mcp_url)
    result = await first.initialize()
    await second.initialize()
    assert result["result"]["protocolVersion"] == "2025-11-25"
    assert first.session_id and second.session_id and first.session_id != second.session_id
    assert re.fullmatch(r"[\x21-\x7e]{32,}", first.session_id)


async def test_initialize_answers_on_an_sse_stream_by_default(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    body = McpHttp(http, gw.mcp_url)
    async with http.post(
        gw.mcp_url,
        json={"jsonrpc": "2.0", "id": 7, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}},
        headers=body.headers(),
    ) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        assert "Mcp-Session-Id" in response.headers
        found = messages(await read_sse(response, until_id=7))
    assert found[-1]["result"]["protocolVersion"] == "2025-06-18"


async def test_request_without_session_id_is_400(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    status, _, body = await post_raw(http, gw.mcp_url, json.dumps(call_body()), McpHttp(http, gw.mcp_url).headers())
    assert status == 400
    assert body["error"]["code"] == -32600


async def test_unknown_session_is_404(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    headers = McpHttp(http, gw.mcp_url).headers(**{"Mcp-Session-Id": "no-such-session"})
    status, _, body = await post_raw(http, gw.mcp_url, json.dumps(call_body()), headers)
    assert status == 404
    assert body["jsonrpc"] == "2.0" and "error" in body


async def test_initialize_with_a_session_id_is_400(client: McpHttp) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    status, _, reply = await post_raw(client.http, client.url, json.dumps(body), client.headers())
    assert status == 400
    assert reply["error"]["code"] == -32600


async def test_delete_ends_the_session_then_404(client: McpHttp) -> None:
    assert await client.delete() == 204
    status, _, _ = await post_raw(client.http, client.url, json.dumps(call_body()), client.headers())
    assert status == 404
    assert await client.delete() == 404


async def test_server_discover_in_session_mode_says_2026_is_unsupported_so_clients_fall_back(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    # Session mode serves no 2026-07-28 (it needs the pool): the unsupported-version error lists what is served.
    body = {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {}}
    headers = McpHttp(http, gw.mcp_url).headers(**{"MCP-Protocol-Version": "2026-07-28"})
    status, _, reply = await post_raw(http, gw.mcp_url, json.dumps(body), headers)
    assert status == 400
    assert reply["id"] == 1
    assert reply["error"]["code"] == -32022
    assert reply["error"]["data"] == {"supported": list(HANDSHAKE_PROTOCOL_VERSIONS), "requested": "2026-07-28"}


async def test_the_mcp_sdk_client_connects_lists_and_calls(gw: RunningGateway) -> None:
    from mcp.client import Client

    async with Client(gw.mcp_url) as sdk:
        assert sdk.protocol_version == "2025-11-25"
        tools = await sdk.list_tools()
        assert "echo" in {tool.name for tool in tools.tools}
        result = await sdk.call_tool("echo", {"text": "through the gateway"})
        assert result.content[0].text == "through the gateway"  # type: ignore[union-attr]


# --- message rules ----------------------------------------------------------------------------------------


async def test_request_gets_its_response(client: McpHttp) -> None:
    reply = await client.call_tool("echo", {"text": "hello"})
    assert reply["result"]["content"][0]["text"] == "hello"


async def test_malformed_json_is_400_parse_error(client: McpHttp) -> None:
    status, _, body = await post_raw(client.http, client.url, "{not json", client.headers())
    assert status == 400
    assert body == {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": body["error"]["message"]}}


@pytest.mark.parametrize(
    "payload",
    [
        {"jsonrpc": "1.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"},
        {"jsonrpc": "2.0", "id": 1, "method": 5},
        {"jsonrpc": "2.0"},
        {"jsonrpc": "2.0", "id": 1, "result": {}, "error": {"code": 1, "message": "x"}},
        [],
        "ping",
    ],
)
async def test_invalid_jsonrpc_is_400_invalid_request(client: McpHttp, payload: Any) -> None:
    status, _, body = await post_raw(client.http, client.url, json.dumps(payload), client.headers())
    assert status == 400
    assert body["error"]["code"] == -32600


async def test_wrong_content_type_is_415(client: McpHttp) -> None:
    headers = client.headers(**{"Content-Type": "text/plain"})
    status, _, body = await post_raw(client.http, client.url, json.dumps(call_body()), headers)
    assert status == 415
    assert body["error"]["code"] == -32600


@pytest.mark.parametrize("accept", ["application/json", "text/event-stream", "text/html", ""])
async def test_post_accept_must_list_json_and_sse_or_406(client: McpHttp, accept: str) -> None:
    status, _, body = await post_raw(client.http, client.url, json.dumps(call_body()), client.headers(Accept=accept))
    assert status == 406
    assert body["error"]["code"] == -32600


async def test_body_over_the_limit_is_413(client: McpHttp) -> None:
    big = call_body(arguments={"text": "x" * (BODY_LIMIT + 10)})
    status, _, body = await post_raw(client.http, client.url, json.dumps(big), client.headers())
    assert status == 413
    assert body["error"]["code"] == -32600


async def test_chunked_body_over_the_limit_is_413(client: McpHttp) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b" " * (BODY_LIMIT // 2)
        yield json.dumps(call_body()).encode()

    async with client.http.post(client.url, data=chunks(), headers=client.headers()) as response:
        assert response.status == 413


async def test_unsupported_protocol_version_header_is_400(client: McpHttp) -> None:
    headers = client.headers(**{"MCP-Protocol-Version": "1999-01-01"})
    status, _, body = await post_raw(client.http, client.url, json.dumps(call_body()), headers)
    assert status == 400
    assert body["error"]["code"] == -32600


async def test_missing_protocol_version_header_is_accepted(client: McpHttp) -> None:
    headers = client.headers()
    del headers["MCP-Protocol-Version"]
    async with client.http.post(client.url, json=call_body(5), headers=headers) as response:
        assert response.status == 200
        assert messages(await read_sse(response, until_id=5))[-1]["id"] == 5


async def test_notification_is_202_without_body(client: McpHttp) -> None:
    body = {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}
    status, _, text = await post_raw(client.http, client.url, json.dumps(body), client.headers())
    assert (status, text) == (202, "")


async def test_client_response_is_202(client: McpHttp) -> None:
    body = {"jsonrpc": "2.0", "id": "server-request-1", "result": {}}
    status, _, text = await post_raw(client.http, client.url, json.dumps(body), client.headers())
    assert (status, text) == (202, "")


async def test_request_id_in_flight_cannot_be_reused(client: McpHttp) -> None:
    async with client.http.post(
        client.url, json=call_body(9, "sleep", {"seconds": 1}), headers=client.headers()
    ) as slow:
        assert slow.status == 200
        status, _, body = await post_raw(client.http, client.url, json.dumps(call_body(9)), client.headers())
        assert status == 400
        assert body["error"]["code"] == -32600
        assert messages(await read_sse(slow, until_id=9))[-1]["result"]["content"][0]["text"] == "slept"


async def test_batches_are_refused_after_2025_03_26(client: McpHttp) -> None:
    batch = [call_body(1), call_body(2)]
    status, _, body = await post_raw(client.http, client.url, json.dumps(batch), client.headers())
    assert status == 400
    assert body["error"]["code"] == -32600


async def test_batches_work_for_2025_03_26_sessions(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    old = McpHttp(http, gw.mcp_url, version="2025-03-26")
    await old.initialize()
    batch = [call_body(1, arguments={"text": "a"}), call_body(2, arguments={"text": "b"})]
    async with http.post(gw.mcp_url, json=batch, headers=old.headers()) as response:
        assert response.status == 200
        replies = messages(await read_sse(response))
    assert sorted(r["result"]["content"][0]["text"] for r in replies) == ["a", "b"]


async def test_batch_as_json_array_when_client_prefers_json(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    old = McpHttp(http, gw.mcp_url, version="2025-03-26")
    await old.initialize()
    batch = [call_body(1, arguments={"text": "a"}), {"jsonrpc": "2.0", "method": "notifications/x"}]
    headers = old.headers(Accept="application/json, text/event-stream;q=0.5")
    async with http.post(gw.mcp_url, json=batch, headers=headers) as response:
        assert response.content_type == "application/json"
        replies = await response.json()
    assert [r["id"] for r in replies] == [1]


async def test_single_json_response_when_client_prefers_json(client: McpHttp) -> None:
    headers = client.headers(Accept="application/json, text/event-stream;q=0.1")
    async with client.http.post(client.url, json=call_body(3), headers=headers) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert (await response.json())["result"]["content"][0]["text"] == "hi"


@pytest.mark.parametrize("method", ["PUT", "PATCH", "HEAD", "TRACE", "PROPFIND"])
async def test_other_http_methods_are_405_with_allow(client: McpHttp, method: str) -> None:
    async with client.http.request(method, client.url, data="{}", headers=client.headers()) as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET, POST, DELETE, OPTIONS"


# --- ids and bodies the gateway cannot simply echo or read ------------------------------------------------

LONE_SURROGATE_ID = '"\\ud800"'
"""A JSON string holding one UTF-16 surrogate: valid JSON, but it has no UTF-8 form."""


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("ping", {"Mcp-Session-Id": ""}),  # no session
        ("ping", {"MCP-Protocol-Version": "1999-01-01"}),  # a version the gateway does not speak
        ("ping", {"Mcp-Session-Id": "no-such-session"}),  # unknown session
        ("server/discover", {"Mcp-Session-Id": ""}),  # the stateless probe
    ],
)
async def test_a_lone_surrogate_id_is_echoed_in_the_gateways_own_errors(
    client: McpHttp, method: str, headers: dict[str, str]
) -> None:
    body = '{"jsonrpc":"2.0","id":' + LONE_SURROGATE_ID + ',"method":"' + method + '"}'
    request_headers = {k: v for k, v in client.headers(**headers).items() if v}
    async with client.http.post(client.url, data=body, headers=request_headers) as response:
        assert response.status in (200, 400, 404)
        raw = await response.read()
    assert raw.isascii(), "the id is sent back as a JSON escape, the way the client sent it"
    assert json.loads(raw)["id"] == "\ud800"


async def test_a_lone_surrogate_id_reaches_the_upstream_and_back(client: McpHttp) -> None:
    body = '{"jsonrpc":"2.0","id":' + LONE_SURROGATE_ID + ',"method":"ping"}'
    async with client.http.post(client.url, data=body, headers=client.headers()) as response:
        assert response.status == 200
        found = messages(await read_sse(response, until_id="\ud800"))
    assert found[-1] == {"jsonrpc": "2.0", "id": "\ud800", "result": {}}


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_does_not_match_its_content_encoding_is_400(client: McpHttp, encoding: str) -> None:
    headers = client.headers(**{"Content-Encoding": encoding})
    status, _, body = await post_raw(client.http, client.url, json.dumps(call_body()), headers)
    assert status == 400
    assert body["error"]["code"] == -32700
    assert (await client.call_tool("echo", {"text": "still here"}))["result"]["content"][0]["text"] == "still here"


async def test_a_gzip_body_is_read(client: McpHttp) -> None:
    headers = client.headers(**{"Content-Encoding": "gzip"})
    async with client.http.post(
        client.url, data=gzip.compress(json.dumps(call_body(61)).encode()), headers=headers
    ) as response:
        assert response.status == 200
        assert messages(await read_sse(response, until_id=61))[-1]["result"]["content"][0]["text"] == "hi"


# --- Origin and Host ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["https://evil.example.com", "null", "http://localhost.evil.com"])
async def test_foreign_origin_is_403(client: McpHttp, origin: str) -> None:
    status, _, body = await post_raw(client.http, client.url, json.dumps(call_body()), client.headers(Origin=origin))
    assert status == 403
    assert "error" in body


@pytest.mark.parametrize("origin", ["http://localhost:6274", "http://127.0.0.1", "https://app.example.com"])
async def test_loopback_and_configured_origins_are_allowed(client: McpHttp, origin: str) -> None:
    async with client.http.post(client.url, json=call_body(4), headers=client.headers(Origin=origin)) as response:
        assert response.status == 200


async def test_foreign_host_header_is_403_on_loopback(client: McpHttp) -> None:
    headers = client.headers(Host="evil.example.com")
    status, _, _ = await post_raw(client.http, client.url, json.dumps(call_body()), headers)
    assert status == 403


async def test_initialize_from_a_foreign_origin_is_403(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    headers = McpHttp(http, gw.mcp_url).headers(Origin="http://evil.example.com")
    status, response_headers, _ = await post_raw(http, gw.mcp_url, json.dumps(body), headers)
    assert status == 403
    assert "Mcp-Session-Id" not in response_headers


# --- SSE framing -------------------------------------------------------------------------------------------


async def test_priming_event_comes_first_with_id_retry_and_empty_data(client: McpHttp) -> None:
    async with client.http.post(client.url, json=call_body(11), headers=client.headers()) as response:
        events = await read_sse(response, until_id=11)
    assert events[0].id and events[0].data == "" and events[0].retry is not None
    assert events[-1].json()["id"] == 11


async def test_no_priming_event_for_2025_06_18_sessions(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    older = McpHttp(http, gw.mcp_url, version="2025-06-18")
    await older.initialize()
    async with http.post(gw.mcp_url, json=call_body(12), headers=older.headers()) as response:
        events = await read_sse(response, until_id=12)
    assert all(event.data for event in events)


async def test_event_ids_are_unique_and_name_their_stream(client: McpHttp) -> None:
    seen: list[str] = []
    for msg_id in (21, 22, 23):
        async with client.http.post(client.url, json=call_body(msg_id), headers=client.headers()) as response:
            seen += [event.id for event in await read_sse(response, until_id=msg_id) if event.id]
    assert len(seen) == len(set(seen)) == 6
    streams = {event_id.split("-")[0] for event_id in seen}
    assert len(streams) == 3


async def test_get_stream_needs_accept_event_stream(client: McpHttp) -> None:
    async with client.http.get(client.url, headers=client.headers(Accept="application/json")) as response:
        assert response.status == 406


async def test_get_stream_without_session_is_400(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    async with http.get(gw.mcp_url, headers={"Accept": "text/event-stream"}) as response:
        assert response.status == 400


async def test_second_get_stream_is_409(client: McpHttp) -> None:
    headers = client.headers(Accept="text/event-stream")
    async with client.http.get(client.url, headers=headers) as first:
        assert first.status == 200
        assert first.content_type == "text/event-stream"
        async with client.http.get(client.url, headers=headers) as second:
            assert second.status == 409


async def test_idle_streams_get_keepalive_comments(client: McpHttp) -> None:
    async with client.http.get(client.url, headers=client.headers(Accept="text/event-stream")) as response:
        line = b""
        while not line.startswith(b":"):
            line = await asyncio.wait_for(response.content.readline(), 10)
        assert line.startswith(b": keepalive")


async def test_get_stream_closed_by_the_client_can_be_reopened(client: McpHttp) -> None:
    headers = client.headers(Accept="text/event-stream")
    async with client.http.get(client.url, headers=headers) as first:
        assert first.status == 200
    for _ in range(50):
        async with client.http.get(client.url, headers=headers) as again:
            if again.status == 200:
                return
        await asyncio.sleep(0.1)
    pytest.fail("the GET stream stayed taken after the client closed it")


async def test_accept_wildcards_count(client: McpHttp) -> None:
    async with client.http.post(client.url, json=call_body(31), headers=client.headers(Accept="*/*")) as response:
        assert response.status == 200


async def test_headers_are_case_insensitive(client: McpHttp) -> None:
    headers = {
        "content-type": "application/json; charset=utf-8",
        "accept": ACCEPT_BOTH,
        "mcp-session-id": client.session_id or "",
        "mcp-protocol-version": "2025-11-25",
    }
    async with client.http.post(client.url, json=call_body(32), headers=headers) as response:
        assert response.status == 200


async def test_absurdly_deep_json_is_400_parse_error(client: McpHttp) -> None:
    status, _, body = await post_raw(client.http, client.url, "[" * 60000, client.headers())
    assert status == 400
    assert body["error"]["code"] == -32700


@pytest.mark.parametrize("odd", [{"a": 1}, [1, 2], 1.5, None, True])
async def test_odd_progress_tokens_and_cancel_ids_do_not_break_the_session(client: McpHttp, odd: Any) -> None:
    body = call_body(41)
    body["params"]["_meta"] = {"progressToken": odd}
    async with client.http.post(client.url, json=body, headers=client.headers()) as response:
        assert response.status == 200
        assert messages(await read_sse(response, until_id=41))[-1]["id"] == 41
    assert await client.notify("notifications/cancelled", {"requestId": odd}) == 202
    assert (await client.call_tool("echo", {"text": "fine"}))["result"]["content"][0]["text"] == "fine"


async def test_cors_preflight_from_an_allowed_origin(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    headers = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, mcp-session-id",
    }
    async with http.options(gw.mcp_url, headers=headers) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
        assert "Mcp-Session-Id" in response.headers["Access-Control-Allow-Headers"]


async def test_cors_preflight_allows_the_mcp_param_headers_a_page_asks_for(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    headers = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, mcp-param-region, Mcp-Param-Bad Name, x-other",
    }
    async with http.options(gw.mcp_url, headers=headers) as response:
        assert response.status == 204
        allowed = [name.strip().lower() for name in response.headers["Access-Control-Allow-Headers"].split(",")]
        assert "mcp-param-region" in allowed and "mcp-method" in allowed
        assert not [name for name in allowed if name.startswith("mcp-param-bad") or name == "x-other"]
        assert response.headers["Vary"] == "Access-Control-Request-Headers, Origin"


async def test_cors_preflight_from_a_foreign_origin_is_403(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    headers = {"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"}
    async with http.options(gw.mcp_url, headers=headers) as response:
        assert response.status == 403
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_browser_pages_from_allowed_origins_can_read_the_session_id(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    headers = McpHttp(http, gw.mcp_url).headers(Origin="https://app.example.com")
    async with http.post(gw.mcp_url, json=body, headers=headers) as response:
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        assert "Mcp-Session-Id" in response.headers["Access-Control-Expose-Headers"]


async def test_no_cors_headers_without_an_origin(client: McpHttp) -> None:
    async with client.http.post(client.url, json=call_body(51), headers=client.headers()) as response:
        assert "Access-Control-Allow-Origin" not in response.headers
