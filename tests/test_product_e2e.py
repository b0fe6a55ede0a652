"""The product end to end: an MCP client with an OIDC token, the gateway, one cnpg-mcp-server per session, and the
test Kubernetes API validating every object against the real CNPG CRDs.

The README's main command (`scripts/run`) has its own tests in tests/test_run_script.py.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

from tests.fixtures.gateway import free_port
from tests.fixtures.idp import DevIdp
from tests.test_server_helpers import CNPG, operator_reconciles

ROOT = Path(__file__).resolve().parent.parent
READ_SCOPES = "openid cnpg:read"
WRITE_SCOPES = "openid cnpg:read cnpg:write"
TOOL_SCOPES = "list_*=cnpg:read get_*=cnpg:read *=cnpg:write"


@pytest.fixture
def product(gateway_factory: Any, idp: DevIdp, kube_api: Any) -> Any:
    """The gateway with OIDC on, spawning the real cnpg-mcp-server against the test Kubernetes API."""
    # The audience is the gateway's own MCP URL, so the port is chosen here rather than by the fixture.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    return gateway_factory(
        upstream_command=str(Path(sys.executable).parent / "cnpg-mcp-server"),
        env={
            "PORT": str(port),
            "PUBLIC_URL": url,
            "OIDC_ISSUER": idp.issuer,
            "OIDC_AUDIENCE": f"{url}/mcp",
            "TOOL_SCOPES": TOOL_SCOPES,
            "KUBECONFIG": str(kube_api.kubeconfig_path),
        },
    )


@asynccontextmanager
async def connect(mcp_url: str, token: str) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30.0, read=60.0))
    async with http, Client(streamable_http_client(mcp_url, http_client=http)) as client:
        yield client


def text(result: CallToolResult) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


async def call(client: Client, tool: str, **arguments: Any) -> CallToolResult:
    result = await client.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    return result


async def test_an_assistant_runs_a_cluster_lifecycle_through_the_gateway(
    product: Any, idp: DevIdp, kube_api: Any
) -> None:
    token = idp.token(scope=WRITE_SCOPES, resource=product.mcp_url)
    async with connect(product.mcp_url, token) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"create_cluster", "delete_cluster", "list_clusters", "create_role"} <= names

        writes = kube_api.writes()
        dry = await call(client, "create_cluster", name="orders", instances=2, storage_size="2Gi", dry_run=True)
        assert not dry.is_error, text(dry)
        assert kube_api.writes() == writes and kube_api.get(CNPG, "clusters", "default", "orders") is None

        created = await call(client, "create_cluster", name="orders", instances=2, storage_size="2Gi")
        assert not created.is_error, text(created)
        operator_reconciles(kube_api, "orders", 2)
        status = await call(client, "get_cluster_status", name="orders")
        assert "Cluster in healthy state" in text(status)

        assert not (await call(client, "scale_cluster", name="orders", instances=3)).is_error
        assert kube_api.get(CNPG, "clusters", "default", "orders")["spec"]["instances"] == 3
        operator_reconciles(kube_api, "orders", 3)

        shrink = await call(client, "resize_cluster_storage", name="orders", size="1Gi")
        assert shrink.is_error and "can only grow" in text(shrink)

        role = await call(client, "create_role", name="reporter", cluster="orders")
        assert not role.is_error, text(role)
        secret = kube_api.get("v1", "secrets", "default", "reporter-password")
        password = base64.b64decode(secret["data"]["password"]).decode()
        assert password not in text(role) and password not in json.dumps(role.structured_content or {})

        switch = await call(client, "switchover_cluster", name="orders", target_instance="orders-2")
        assert not switch.is_error, text(switch)
        assert kube_api.get(CNPG, "clusters", "default", "orders")["status"]["targetPrimary"] == "orders-2"

        refused = await call(client, "delete_cluster", name="orders", confirm="yes")
        assert refused.is_error and kube_api.get(CNPG, "clusters", "default", "orders") is not None
        deleted = await call(client, "delete_cluster", name="orders", confirm="orders")
        assert not deleted.is_error, text(deleted)
    assert kube_api.get(CNPG, "clusters", "default", "orders") is None
    assert password not in product.logs()


async def test_a_read_only_token_sees_read_tools_and_is_challenged_on_writes(
    product: Any, idp: DevIdp, kube_api: Any
) -> None:
    token = idp.token(scope=READ_SCOPES, resource=product.mcp_url)
    async with connect(product.mcp_url, token) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "list_clusters" in names and "get_cluster_status" in names
        assert not names & {"create_cluster", "delete_cluster", "scale_cluster", "create_role"}
        listed = await call(client, "list_clusters")
        assert not listed.is_error, text(listed)

    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2025-11-25",
    }
    async with httpx2.AsyncClient(timeout=30.0) as http:
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
        response = await http.post(product.mcp_url, json=init, headers=headers)
        assert response.status_code == 200
        headers["Mcp-Session-Id"] = response.headers["mcp-session-id"]
        await http.post(product.mcp_url, headers=headers,
                        json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        writes = kube_api.writes()
        response = await http.post(product.mcp_url, headers=headers, json={
            "jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "create_cluster", "arguments": {"name": "x", "instances": 1, "storage_size": "1Gi"}}})
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and 'error="insufficient_scope"' in challenge and "cnpg:write" in challenge
    assert kube_api.writes() == writes
