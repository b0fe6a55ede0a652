"""OIDC through the real gateway: challenges, session binding, per-tool scopes, readiness, and the MCP SDK's own
OAuth client discovering, registering (DCR), authorizing (code + PKCE) and calling a tool given only the URL."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from tests.fixtures.idp import ISSUED_TOKENS, SECRETS, DevIdp, metric, parse_challenge, start_gateway

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


@pytest.fixture
def gateway(gateway_factory: Any, idp: DevIdp) -> Any:
    return start_gateway(gateway_factory, idp)


def token_for(idp: DevIdp, gateway: Any, scope: str = "openid cnpg:read cnpg:write", **kw: Any) -> str:
    return idp.token(scope=scope, resource=gateway.mcp_url, **kw)


async def post(gateway: Any, body: Any, token: str | None = None, session: str | None = None) -> tuple[int, Any, Any]:
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if session is not None:
        headers["Mcp-Session-Id"] = session
    async with aiohttp.ClientSession() as http, http.post(gateway.mcp_url, json=body, headers=headers) as resp:
        text = await resp.text()
        payload: Any = None
        if resp.content_type == "application/json" and text:
            payload = json.loads(text)
        elif resp.content_type == "text/event-stream":
            data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:") and line[5:].strip()]
            payload = json.loads(data[-1]) if data else None
        return resp.status, resp.headers, payload


async def metrics_text(gateway: Any) -> str:
    async with aiohttp.ClientSession() as http, http.get(gateway.metrics_url) as resp:
        return await resp.text()


@asynccontextmanager
async def bearer_client(gateway: Any, token: str) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30.0, read=60.0))
    async with http, Client(streamable_http_client(gateway.mcp_url, http_client=http), mode="legacy") as client:
        yield client


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


# Challenges and discovery ---------------------------------------------------------------------------------------


async def test_unauthenticated_request_gets_401_pointing_at_metadata(gateway: Any, idp: DevIdp) -> None:
    status, headers, body = await post(gateway, INIT)
    assert status == 401
    assert body["error_description"] == "Missing Authorization header"
    scheme, params = parse_challenge(headers["WWW-Authenticate"])
    assert scheme == "Bearer"
    assert params["resource_metadata"] == f"{gateway.base_url}/.well-known/oauth-protected-resource/mcp"
    async with aiohttp.ClientSession() as http, http.get(params["resource_metadata"]) as resp:
        doc = await resp.json()
    assert doc["resource"] == gateway.mcp_url
    assert doc["authorization_servers"] == [idp.issuer]


async def test_bad_tokens_through_the_gateway_are_401_with_reason_metrics(gateway: Any, idp: DevIdp) -> None:
    wrong_aud = idp.token(resource="http://127.0.0.1:1/mcp")
    status, headers, body = await post(gateway, INIT, token=wrong_aud)
    assert status == 401
    assert body == {"error": "invalid_token", "error_description": "Invalid audience"}
    assert parse_challenge(headers["WWW-Authenticate"])[1]["error"] == "invalid_token"
    text = await metrics_text(gateway)
    assert metric(text, "mcp_gateway_auth_results_total", result="failure", reason="invalid_audience") == 1
    assert metric(text, "mcp_gateway_auth_results_total", result="failure", reason="missing_header") == 0
    log = gateway.logs()
    assert "Authentication failed" in log and "invalid_audience" in log


async def test_an_oversized_token_is_refused_by_the_auth_layer_not_the_http_parser(gateway: Any, idp: DevIdp) -> None:
    from tests.fixtures.idp import Minter

    # Just over MAX_TOKEN_BYTES (8192): within what the HTTP layer must let through to the auth layer.
    token = Minter(idp, audience=gateway.mcp_url).signed(padding="x" * 5900)
    assert 8192 < len(token) < 9000
    status, _, body = await post(gateway, INIT, token=token)
    assert status == 401
    assert body == {"error": "invalid_token", "error_description": "Token exceeds 8192 bytes"}


async def test_a_custom_mcp_path_is_the_protected_resource(gateway_factory: Any, idp: DevIdp) -> None:
    from tests.fixtures.idp import free_port

    port = free_port()
    resource = f"http://127.0.0.1:{port}/v1/mcp"
    gateway = start_gateway(gateway_factory, idp, PORT=str(port), MCP_PATH="/v1/mcp", OIDC_AUDIENCE=resource)
    assert gateway.mcp_url == resource
    status, headers, _ = await post(gateway, INIT)
    assert status == 401
    metadata_url = parse_challenge(headers["WWW-Authenticate"])[1]["resource_metadata"]
    assert metadata_url == f"{gateway.base_url}/.well-known/oauth-protected-resource/v1/mcp"
    async with aiohttp.ClientSession() as http, http.get(metadata_url) as resp:
        assert (await resp.json())["resource"] == resource
    assert (await post(gateway, INIT, token=idp.token(resource=resource)))[0] == 200


async def test_gateway_metadata_documents(gateway: Any, idp: DevIdp) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.base_url + "/.well-known/oauth-authorization-server") as resp:
            assert resp.status == 200
            mirrored = await resp.json()
        async with http.get(gateway.base_url + "/.well-known/oauth-protected-resource") as resp:
            prm = await resp.json()
    assert mirrored["issuer"] == idp.issuer
    assert prm["scopes_supported"] == ["cnpg:read", "cnpg:write", "openid"]


# Refusals through the gateway: status, challenge, body, metric and log line say the same reason ---------------


async def assert_refusal(gateway: Any, reason: str, status: int, error: str | None, response: Any) -> None:
    """The gateway's answer and its /metrics and log agree with each other and with the expected status and error."""
    from prometheus_client.parser import text_string_to_metric_families

    got_status, headers, body = response
    assert got_status == status, body
    scheme, params = parse_challenge(headers["WWW-Authenticate"])
    assert scheme == "Bearer"
    assert params.get("error") == body.get("error") == error, (params, body)
    assert params["resource_metadata"] == f"{gateway.base_url}/.well-known/oauth-protected-resource/mcp"
    assert ("Retry-After" in headers) == (status == 503)
    families = {f.name: f for f in text_string_to_metric_families(await metrics_text(gateway))}
    failures = {
        s.labels["reason"]: s.value
        for s in families["mcp_gateway_auth_results"].samples
        if s.name == "mcp_gateway_auth_results_total" and s.labels["result"] == "failure"
    }
    assert failures == {reason: 1.0}, failures
    lines = [json.loads(line) for line in gateway.logs().splitlines() if line.startswith("{")]
    refusals = [e for e in lines if e.get("reason") == reason]
    assert len(refusals) == 1, refusals
    assert refusals[0]["detail"] == body["error_description"]
    assert refusals[0]["level"] == ("info" if reason == "missing_header" else "warning")


async def test_no_token_through_the_gateway(gateway: Any) -> None:
    await assert_refusal(gateway, "missing_header", 401, None, await post(gateway, INIT))


async def test_an_expired_token_through_the_gateway(gateway: Any, idp: DevIdp) -> None:
    import time

    from tests.fixtures.idp import Minter

    expired = Minter(idp, audience=gateway.mcp_url).signed(exp=int(time.time()) - 3600)
    await assert_refusal(gateway, "expired", 401, "invalid_token", await post(gateway, INIT, token=expired))


async def test_a_token_for_another_audience_through_the_gateway(gateway: Any, idp: DevIdp) -> None:
    wrong_aud = idp.token(resource="http://127.0.0.1:1/mcp")
    await assert_refusal(gateway, "invalid_audience", 401, "invalid_token", await post(gateway, INIT, token=wrong_aud))


async def test_a_token_without_the_required_scope_through_the_gateway(gateway: Any, idp: DevIdp) -> None:
    token = token_for(idp, gateway, scope="cnpg:read")
    response = await post(gateway, INIT, token=token)
    await assert_refusal(gateway, "insufficient_scope", 403, "insufficient_scope", response)
    assert parse_challenge(response[1]["WWW-Authenticate"])[1]["scope"] == "openid"


async def test_keys_never_loaded_through_the_gateway(gateway_factory: Any, idp_factory: Any) -> None:
    idp: DevIdp = idp_factory()
    token = idp.token(resource="http://127.0.0.1:9/mcp")
    idp.stop()
    gateway = start_gateway(gateway_factory, idp, wait_ready=False, OIDC_AUDIENCE="http://127.0.0.1:9/mcp")
    response = await post(gateway, INIT, token=token)
    await assert_refusal(gateway, "jwks_unavailable", 503, "temporarily_unavailable", response)
    assert int(response[1]["Retry-After"]) > 0


# An authenticated session ---------------------------------------------------------------------------------------


async def test_valid_token_reaches_the_upstream_and_the_call_is_audited(gateway: Any, idp: DevIdp) -> None:
    async with bearer_client(gateway, token_for(idp, gateway)) as client:
        result = await client.call_tool("echo", {"text": "through auth"})
        assert text_of(result) == "through auth"
    audit = [json.loads(line) for line in gateway.logs().splitlines() if '"tool_call"' in line]
    assert any(
        e["tool"] == "echo" and e["subject"] == f"{idp.issuer}|{idp.client_id}" and e["outcome"] == "success"
        for e in audit
    ), audit
    text = await metrics_text(gateway)
    assert metric(text, "mcp_gateway_auth_results_total", result="success", reason="ok") >= 2


async def test_a_session_belongs_to_the_subject_that_opened_it(gateway: Any, idp: DevIdp) -> None:
    owner = token_for(idp, gateway)
    other = idp.register_client(token_endpoint_auth_method="client_secret_basic")
    intruder = idp.token(other["client_id"], other["client_secret"], resource=gateway.mcp_url)
    status, headers, _ = await post(gateway, INIT, token=owner)
    assert status == 200
    session = headers["Mcp-Session-Id"]
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    assert (await post(gateway, ping, token=intruder, session=session))[0] == 404
    assert (await post(gateway, ping, token=owner, session=session))[0] == 200
    # A second token for the same client is the same subject.
    assert (await post(gateway, ping, token=token_for(idp, gateway, alg="ES256"), session=session))[0] == 200


# Per-tool scopes ----------------------------------------------------------------------------------------------


async def test_tools_list_is_filtered_by_the_callers_scopes(gateway: Any, idp: DevIdp) -> None:
    async with bearer_client(gateway, token_for(idp, gateway, scope="openid cnpg:read")) as reader:
        names = {t.name for t in (await reader.list_tools()).tools}
    async with bearer_client(gateway, token_for(idp, gateway)) as writer:
        all_names = {t.name for t in (await writer.list_tools()).tools}
    assert "whoami" in names and "echo" not in names and not any(n.startswith("test_") for n in names)
    assert {"whoami", "echo", "test_simple_text"} <= all_names


async def test_calling_a_tool_without_its_scope_is_a_403_step_up_challenge(gateway: Any, idp: DevIdp) -> None:
    reader = token_for(idp, gateway, scope="openid cnpg:read")
    status, headers, _ = await post(gateway, INIT, token=reader)
    session = headers["Mcp-Session-Id"]
    await post(gateway, {"jsonrpc": "2.0", "method": "notifications/initialized"}, token=reader, session=session)
    await post(gateway, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, token=reader, session=session)
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}}}
    status, headers, body = await post(gateway, call, token=reader, session=session)
    assert status == 403
    assert body == {"error": "insufficient_scope", "error_description": "Tool echo requires scope: cnpg:write"}
    _, params = parse_challenge(headers["WWW-Authenticate"])
    assert params["error"] == "insufficient_scope"
    assert "cnpg:write" in params["scope"].split()
    status, _, body = await post(gateway, {**call, "params": {"name": "whoami", "arguments": {}}}, reader, session)
    assert status == 200 and "result" in body
    text = await metrics_text(gateway)
    assert metric(text, "mcp_gateway_authz_denials_total", tool="echo") == 1
    assert metric(text, "mcp_gateway_tool_calls_total", tool="echo", outcome="denied") == 1
    assert any('"denied"' in line and '"echo"' in line for line in gateway.logs().splitlines())


# Readiness and IdP outages ------------------------------------------------------------------------------------


async def test_gateway_is_not_ready_until_the_idp_is_up(gateway_factory: Any, idp_factory: Any) -> None:
    idp: DevIdp = idp_factory(start=False)
    gateway = start_gateway(gateway_factory, idp, wait_ready=False)
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.base_url + "/ready") as resp:
            assert resp.status == 503
        idp.start()
        for _ in range(600):
            async with http.get(gateway.base_url + "/ready") as resp:
                if resp.status == 200:
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("gateway never became ready")
    assert "Failed to discover JWKS URI" in gateway.logs()
    async with bearer_client(gateway, token_for(idp, gateway)) as client:
        assert text_of(await client.call_tool("echo", {"text": "ready"})) == "ready"


async def test_idp_outage_never_turns_into_a_5xx(gateway_factory: Any, idp_factory: Any) -> None:
    idp: DevIdp = idp_factory()
    gateway = start_gateway(gateway_factory, idp)
    token = token_for(idp, gateway)
    idp.rotate()
    rotated = token_for(idp, gateway)  # signed by a key the gateway has not fetched yet
    idp.stop()
    assert (await post(gateway, INIT, token=token))[0] == 200
    status, _, body = await post(gateway, INIT, token=rotated)
    assert status == 401 and body["error_description"] == "Token signing key is not known"
    idp.start()
    # Recovery needs no restart of the gateway: its key refresh retries with backoff after the failed fetch.
    for _ in range(300):
        status, _, body = await post(gateway, INIT, token=rotated)
        assert status in (200, 401), body
        if status == 200:
            break
        await asyncio.sleep(0.1)
    assert status == 200


# Configuration errors -----------------------------------------------------------------------------------------


def test_oidc_issuer_without_audience_refuses_to_start(gateway_factory: Any, idp: DevIdp) -> None:
    with pytest.raises(RuntimeError) as info:
        gateway_factory(env={"OIDC_ISSUER": idp.issuer})
    assert "OIDC_AUDIENCE" in str(info.value)


def test_insecure_algorithms_refuse_to_start(gateway_factory: Any, idp: DevIdp) -> None:
    with pytest.raises(RuntimeError) as info:
        gateway_factory(env={"OIDC_ISSUER": idp.issuer, "OIDC_AUDIENCE": "x", "OIDC_ALGORITHMS": "RS256 HS256"})
    assert "OIDC_ALGORITHMS" in str(info.value)


def test_without_auth_a_public_address_is_refused(gateway_factory: Any) -> None:
    with pytest.raises(RuntimeError) as info:
        gateway_factory(env={"HOST": "0.0.0.0"})
    assert "OIDC_ISSUER" in str(info.value)


# The MCP SDK's OAuth client, headless -------------------------------------------------------------------------


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        ISSUED_TOKENS.add(tokens.access_token)
        if tokens.refresh_token:
            SECRETS.add(tokens.refresh_token)
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        if client_info.client_secret:
            SECRETS.add(client_info.client_secret)
        self.client = client_info


class HeadlessBrowser:
    """Follows the authorization redirects (the dev IdP logs in and consents by itself) up to our redirect URI."""

    def __init__(self, redirect_uri: str) -> None:
        self.redirect_uri = redirect_uri
        self.result: AuthorizationCodeResult | None = None
        self.visited: list[str] = []

    async def open(self, url: str) -> None:
        async with httpx2.AsyncClient(timeout=30.0) as browser:
            for _ in range(10):
                self.visited.append(url.split("?")[0])
                resp = await browser.get(url)
                assert resp.status_code in (302, 303), (resp.status_code, resp.text[:500])
                url = urllib.parse.urljoin(url, resp.headers["Location"])
                if url.startswith(self.redirect_uri):
                    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
                    assert "code" in query, query
                    self.result = AuthorizationCodeResult(code=query["code"], state=query.get("state"),
                                                          iss=query.get("iss"))  # fmt: skip
                    return
        raise AssertionError(f"never redirected back: {self.visited}")

    async def callback(self) -> AuthorizationCodeResult:
        assert self.result is not None
        return self.result


async def test_mcp_sdk_oauth_client_discovers_registers_authorizes_and_calls_a_tool(gateway: Any, idp: DevIdp) -> None:
    redirect_uri = "http://127.0.0.1:9/callback"  # never contacted: the browser stops at the redirect
    browser = HeadlessBrowser(redirect_uri)
    storage = MemoryStorage()
    provider = OAuthClientProvider(
        server_url=gateway.mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name="cnpg-mcp test client",
            redirect_uris=[redirect_uri],  # type: ignore[list-item]
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="client_secret_post",
        ),
        storage=storage,
        redirect_handler=browser.open,
        callback_handler=browser.callback,
    )
    http = httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(30.0, read=60.0))
    async with http, Client(streamable_http_client(gateway.mcp_url, http_client=http), mode="legacy") as client:
        result = await client.call_tool("echo", {"text": "hello from the sdk"})
        assert text_of(result) == "hello from the sdk"
        names = {t.name for t in (await client.list_tools()).tools}
        assert "echo" in names
    assert storage.client is not None and storage.client.client_id  # registered through DCR
    assert storage.tokens is not None
    assert f"{idp.issuer}/auth" in browser.visited  # went through the IdP's authorization endpoint
    import jwt

    claims = jwt.decode(storage.tokens.access_token, options={"verify_signature": False})
    assert claims["aud"] == gateway.mcp_url
    assert claims["sub"] == "dev-user"
    assert set(claims["scope"].split()) == {"openid", "cnpg:read", "cnpg:write"}
    audit = [json.loads(line) for line in gateway.logs().splitlines() if '"tool_call"' in line]
    assert any(e["subject"] == f"{idp.issuer}|dev-user" and e["tool"] == "echo" for e in audit)
