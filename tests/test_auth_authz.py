"""Per-tool authorization (TOOL_SCOPES): tools/call step-up challenges and tools/list filtering."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.security import Principal
from tests.fixtures.idp import AuthApp, DevIdp, auth_env, local_metrics, metric, parse_challenge

pytestmark = pytest.mark.timeout(120)

TOOLS = "list_*=cnpg:read get_*=cnpg:read *=cnpg:write"


@pytest.fixture
async def app(auth_app_factory: Any, idp: DevIdp) -> AuthApp:
    return await auth_app_factory(auth_env(idp, TOOL_SCOPES=TOOLS))  # type: ignore[no-any-return]


def tools_list(*names: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 7, "result": {"tools": [{"name": n, "inputSchema": {}} for n in names]}}


def reader(idp: DevIdp) -> Principal:
    return Principal(subject=f"{idp.issuer}|r", client_id="r", scopes=frozenset({"openid", "cnpg:read"}), expires_at=0)


async def test_a_reader_may_call_read_tools(app: AuthApp, idp: DevIdp) -> None:
    resp = await app.call_tool(idp.token(scope="openid cnpg:read"), "list_clusters")
    assert resp.status == 200


async def test_a_reader_calling_a_write_tool_gets_a_step_up_challenge(app: AuthApp, idp: DevIdp) -> None:
    app.authenticator.filter_result(reader(idp), "tools/list", tools_list("delete_cluster"))  # makes the name known
    before = metric(local_metrics(), "mcp_gateway_authz_denials_total", tool="delete_cluster")
    resp = await app.call_tool(idp.token(scope="openid cnpg:read"), "delete_cluster")
    assert resp.status == 403
    assert await resp.json() == {
        "error": "insufficient_scope",
        "error_description": "Tool delete_cluster requires scope: cnpg:write",
    }
    _, params = parse_challenge(resp.headers["WWW-Authenticate"])
    assert params["error"] == "insufficient_scope"
    assert params["scope"] == "cnpg:read cnpg:write openid"  # what the client already has plus what it needs
    assert params["resource_metadata"] == f"{app.url}/.well-known/oauth-protected-resource/mcp"
    assert metric(local_metrics(), "mcp_gateway_authz_denials_total", tool="delete_cluster") == before + 1


async def test_a_writer_may_call_write_tools(app: AuthApp, idp: DevIdp) -> None:
    assert (await app.call_tool(idp.token(), "delete_cluster")).status == 200


async def test_tool_names_the_upstream_never_listed_are_counted_as_other(app: AuthApp, idp: DevIdp) -> None:
    before = metric(local_metrics(), "mcp_gateway_authz_denials_total", tool="other")
    for i in range(3):
        resp = await app.call_tool(idp.token(scope="openid cnpg:read"), f"made_up_{i}")
        assert resp.status == 403
    assert metric(local_metrics(), "mcp_gateway_authz_denials_total", tool="other") == before + 3
    assert "made_up_0" not in local_metrics()


async def test_tools_list_keeps_only_tools_the_caller_may_call(app: AuthApp, idp: DevIdp) -> None:
    response = tools_list("list_clusters", "get_cluster", "delete_cluster", "create_backup")
    filtered = app.authenticator.filter_result(reader(idp), "tools/list", response)
    assert [t["name"] for t in filtered["result"]["tools"]] == ["list_clusters", "get_cluster"]
    assert filtered["id"] == 7
    assert len(response["result"]["tools"]) == 4  # the upstream's message is not mutated


def test_other_results_pass_through_untouched(idp: DevIdp) -> None:
    from gateway.auth import build_authenticator, load_auth_config

    cfg = load_auth_config(auth_env(idp, TOOL_SCOPES=TOOLS))
    assert cfg is not None
    auth = build_authenticator(cfg)
    message = tools_list("delete_cluster")
    assert auth.filter_result(reader(idp), "resources/list", message) is message
    error = {"jsonrpc": "2.0", "id": 1, "error": {"code": -1, "message": "x"}}
    assert auth.filter_result(reader(idp), "tools/list", error) is error


def test_other_methods_are_not_restricted(idp: DevIdp) -> None:
    from gateway.auth import build_authenticator, load_auth_config

    cfg = load_auth_config(auth_env(idp, TOOL_SCOPES=TOOLS))
    assert cfg is not None
    auth = build_authenticator(cfg)
    for method in ("initialize", "tools/list", "resources/read", "ping"):
        auth.authorize_message(reader(idp), {"jsonrpc": "2.0", "id": 1, "method": method, "params": {}})


@pytest.mark.parametrize("params", [None, [], {"name": 42}, {}])
def test_malformed_tools_call_is_judged_by_the_catch_all_rule(idp: DevIdp, params: Any) -> None:
    from gateway.auth import build_authenticator, load_auth_config
    from gateway.security import AuthRejection

    cfg = load_auth_config(auth_env(idp, TOOL_SCOPES=TOOLS))
    assert cfg is not None
    auth = build_authenticator(cfg)
    with pytest.raises(AuthRejection) as info:
        auth.authorize_message(reader(idp), {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})
    assert info.value.status == 403


async def test_the_401_challenge_asks_for_every_scope_the_resource_uses(app: AuthApp) -> None:
    resp = await app.get()
    assert resp.status == 401
    _, params = parse_challenge(resp.headers["WWW-Authenticate"])
    assert params["scope"] == "cnpg:read cnpg:write openid"
