"""What operators see: Prometheus metrics, one JSON log line per request, tool-call audit lines, no secrets."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.gateway import ECHO_UPSTREAM, McpHttp, RunningGateway, StartGateway


@pytest.fixture
def gw(gateway_factory: StartGateway) -> RunningGateway:
    return gateway_factory(upstream_command=ECHO_UPSTREAM)


async def scrape(
    http: aiohttp.ClientSession, gw: RunningGateway
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}."""
    async with http.get(gw.metrics_url) as response:
        assert response.status == 200
        text = await response.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def log_lines(gw: RunningGateway) -> list[dict[str, Any]]:
    lines = []
    for raw in gw.logs().splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            pass
    return lines


def wait_for_log(gw: RunningGateway, event: str, count: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        found = [line for line in log_lines(gw) if line.get("event") == event]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


async def test_tool_calls_are_counted_by_listed_tool_and_outcome(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    await client.call_tool("echo", {"text": "before the list"})
    await client.request("tools/list")
    await client.call_tool("echo", {"text": "a"})
    await client.call_tool("echo", {"text": "b"})
    await client.call_tool("fail")
    await client.call_tool("no-such-tool")
    samples = await scrape(http, gw)
    name = "mcp_gateway_tool_calls_total"
    assert sample(samples, name, tool="echo", outcome="success") == 2
    assert sample(samples, name, tool="fail", outcome="error") == 1
    assert sample(samples, name, tool="other", outcome="success") == 1, "unlisted names share one label"
    assert sample(samples, name, tool="other", outcome="error") == 1


async def test_session_and_request_metrics(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    first, second = McpHttp(http, gw.mcp_url), McpHttp(http, gw.mcp_url)
    await first.initialize()
    await second.initialize()
    await first.call_tool("echo")
    assert await second.delete() == 204
    samples = await scrape(http, gw)
    assert sample(samples, "mcp_gateway_sessions_active") == 1
    assert sample(samples, "mcp_gateway_sessions_opened_total") == 2
    assert sample(samples, "mcp_gateway_sessions_closed_total", reason="client_delete") == 1
    assert sample(samples, "mcp_gateway_requests_total", mcp_method="tools/call", status="200") == 1
    assert sample(samples, "mcp_gateway_requests_total", mcp_method="initialize", status="200") == 2
    assert sample(samples, "mcp_gateway_request_duration_seconds_count", mcp_method="tools/call") == 1
    assert sample(samples, "mcp_gateway_upstream_spawn_duration_seconds_count") == 2


async def test_failed_calls_and_upstream_exits_are_counted(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    await client.request("tools/list")
    await client.call_tool("crash")
    samples = await scrape(http, gw)
    assert sample(samples, "mcp_gateway_tool_calls_total", tool="crash", outcome="failed") == 1
    assert sample(samples, "mcp_gateway_sessions_closed_total", reason="upstream_exit") == 1
    assert sample(samples, "mcp_gateway_upstream_exits_total", reason="exit_nonzero") == 1


async def test_unknown_mcp_methods_share_one_label(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    for index in range(3):
        await client.request(f"made/up/{index}")
    samples = await scrape(http, gw)
    assert sample(samples, "mcp_gateway_requests_total", mcp_method="other", status="200") == 3


async def test_one_log_line_per_request_with_hashed_session_id(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()  # initialize + notifications/initialized
    await client.call_tool("echo")
    await client.delete()
    assert client.session_id
    lines = wait_for_log(gw, "http_request", 4)
    mcp_lines = [line for line in lines if line["path"] == "/mcp"]
    assert [line["mcp_method"] for line in mcp_lines] == [
        "initialize",
        "notifications/initialized",
        "tools/call",
        "DELETE",
    ]
    tag = hashlib.sha256(client.session_id.encode()).hexdigest()[:12]
    assert all(line["session"] == tag for line in mcp_lines)
    assert all({"method", "status", "duration_ms"} <= line.keys() for line in mcp_lines)
    assert client.session_id not in gw.logs()


async def test_audit_line_names_arguments_but_never_their_values(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    await client.call_tool("echo", {"text": "value-that-must-not-be-logged", "extra": 1})
    (audit,) = wait_for_log(gw, "tool_call")
    assert audit["subject"] == "anonymous"
    assert audit["tool"] == "echo"
    assert audit["arguments"] == ["extra", "text"]
    assert audit["outcome"] == "success"
    assert audit["duration_ms"] >= 0
    assert "value-that-must-not-be-logged" not in gw.logs()


async def test_headers_are_never_logged(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    headers = client.headers(Authorization="Bearer header-secret-123", Cookie="c=cookie-secret-456")
    async with http.post(gw.mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=headers) as r:
        assert r.status == 200
    async with http.get(gw.base_url + "/health", headers={"Authorization": "Bearer " + "t" * 9000}) as r:
        assert r.status in (400, 431)
    wait_for_log(gw, "http_request", 3)
    logs = gw.logs()
    assert "header-secret-123" not in logs
    assert "cookie-secret-456" not in logs
    assert "tttttttttt" not in logs


async def test_metrics_port_zero_disables_metrics(gateway_factory: StartGateway, http: aiohttp.ClientSession) -> None:
    gw = gateway_factory(upstream_command=ECHO_UPSTREAM, env={"METRICS_PORT": "0"})
    async with http.get(gw.base_url + "/metrics") as response:
        assert response.status == 404, "metrics are never served on the MCP port"
    assert "metrics_port" in gw.logs()
