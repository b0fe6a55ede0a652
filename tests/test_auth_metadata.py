"""OAuth metadata the gateway publishes: RFC 9728 protected resource metadata and the mirrored RFC 8414 document."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.idp import AuthApp, DevIdp, auth_env

pytestmark = pytest.mark.timeout(120)

TOOLS = "list_*=cnpg:read *=cnpg:write"


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"])
async def test_protected_resource_metadata(auth_app_factory: Any, idp: DevIdp, path: str) -> None:
    app: AuthApp = await auth_app_factory(auth_env(idp, TOOL_SCOPES=TOOLS))
    resp = await app.get(path)
    assert resp.status == 200
    doc = await resp.json()
    assert doc["resource"] == f"{app.url}/mcp"
    assert doc["authorization_servers"] == [idp.issuer]
    assert doc["scopes_supported"] == ["cnpg:read", "cnpg:write", "openid"]
    assert doc["bearer_methods_supported"] == ["header"]


async def test_public_url_sets_the_resource_and_the_challenge_link(auth_app_factory: Any, idp: DevIdp) -> None:
    app: AuthApp = await auth_app_factory(auth_env(idp, PUBLIC_URL="https://mcp.example.org/"))
    doc = await (await app.get("/.well-known/oauth-protected-resource/mcp")).json()
    assert doc["resource"] == "https://mcp.example.org/mcp"
    resp = await app.get()
    assert (
        'resource_metadata="https://mcp.example.org/.well-known/oauth-protected-resource/mcp"'
        in (resp.headers["WWW-Authenticate"])
    )


async def test_authorization_server_metadata_mirrors_the_idp(auth_app_factory: Any, idp: DevIdp) -> None:
    app: AuthApp = await auth_app_factory(auth_env(idp, TOOL_SCOPES=TOOLS))
    doc = await (await app.get("/.well-known/oauth-authorization-server")).json()
    idp_doc = await (await app.session.get(f"{idp.issuer}/.well-known/openid-configuration")).json()
    assert doc["issuer"] == idp.issuer  # never rewritten: clients compare it with the token's iss
    assert doc["token_endpoint"] == idp_doc["token_endpoint"]
    assert doc["authorization_endpoint"] == idp_doc["authorization_endpoint"]
    assert doc["registration_endpoint"] == idp_doc["registration_endpoint"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert {"openid", "cnpg:read", "cnpg:write"} <= set(doc["scopes_supported"])


async def test_dcr_proxy_url_replaces_the_registration_endpoint(auth_app_factory: Any, idp: DevIdp) -> None:
    app: AuthApp = await auth_app_factory(auth_env(idp, DCR_PROXY_URL="https://dcr.example.org/register"))
    doc = await (await app.get("/.well-known/oauth-authorization-server")).json()
    assert doc["registration_endpoint"] == "https://dcr.example.org/register"
    assert doc["issuer"] == idp.issuer


async def test_mirrored_metadata_is_served_from_cache_while_the_idp_is_down(
    auth_app_factory: Any, idp_factory: Any
) -> None:
    idp: DevIdp = idp_factory()
    app: AuthApp = await auth_app_factory(auth_env(idp), metadata_ttl=0.0)
    idp.stop()
    resp = await app.get("/.well-known/oauth-authorization-server")
    assert resp.status == 200
    assert (await resp.json())["issuer"] == idp.issuer


async def test_mirrored_metadata_is_503_when_never_fetched(auth_app_factory: Any, idp_factory: Any) -> None:
    idp: DevIdp = idp_factory(start=False)
    app: AuthApp = await auth_app_factory(auth_env(idp, OIDC_JWKS_URI=idp.jwks_uri), wait_ready=False)
    resp = await app.get("/.well-known/oauth-authorization-server")
    assert resp.status == 503
    assert (await resp.json())["error"] == "temporarily_unavailable"


async def test_metadata_needs_no_token(auth_app_factory: Any, idp: DevIdp) -> None:
    app: AuthApp = await auth_app_factory(auth_env(idp))
    for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-authorization-server"):
        assert (await app.get(path)).status == 200


async def test_the_resource_follows_mcp_path(auth_app_factory: Any, idp: DevIdp) -> None:
    app: AuthApp = await auth_app_factory(auth_env(idp, MCP_PATH="/v1/mcp"))
    doc = await (await app.get("/.well-known/oauth-protected-resource/v1/mcp")).json()
    assert doc["resource"] == f"{app.url}/v1/mcp"
    assert (await app.get("/.well-known/oauth-protected-resource/mcp")).status == 404
    resp = await app.get()
    assert (
        f'resource_metadata="{app.url}/.well-known/oauth-protected-resource/v1/mcp"' in resp.headers["WWW-Authenticate"]
    )
