"""Bearer token verification against the real dev IdP: every rule, its error text, status and reason metric."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.fixtures.idp import (
    TEST_RESOURCE,
    AuthApp,
    DevIdp,
    Minter,
    auth_env,
    local_metrics,
    metric,
    parse_challenge,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def app(auth_app_factory: Any, idp: DevIdp) -> AuthApp:
    return await auth_app_factory(auth_env(idp))  # type: ignore[no-any-return]


def failures(reason: str) -> float:
    return metric(local_metrics(), "mcp_gateway_auth_results_total", result="failure", reason=reason)


async def refused(app: AuthApp, token: str | None, reason: str, text: str, status: int = 401, **kw: Any) -> Any:
    """Send `token`, expect a refusal with `text`, one more `reason` in the metric, and a parseable challenge."""
    before = failures(reason)
    resp = await app.get(token=token, **kw)
    body = await resp.json()
    assert resp.status == status, body
    assert body["error_description"] == text
    assert failures(reason) == before + 1
    scheme, params = parse_challenge(resp.headers["WWW-Authenticate"])
    assert scheme == "Bearer"
    assert params["resource_metadata"] == f"{app.url}/.well-known/oauth-protected-resource/mcp"
    return params


# The good path --------------------------------------------------------------------------------------------------


async def test_rs256_token_from_the_idp_is_accepted(app: AuthApp, idp: DevIdp) -> None:
    before = metric(local_metrics(), "mcp_gateway_auth_results_total", result="success", reason="ok")
    resp = await app.get(token=idp.token(alg="RS256"))
    assert resp.status == 200
    assert await resp.json() == {
        "subject": f"{idp.issuer}|{idp.client_id}",
        "client_id": idp.client_id,
        "scopes": ["cnpg:read", "cnpg:write", "openid"],
    }
    assert metric(local_metrics(), "mcp_gateway_auth_results_total", result="success", reason="ok") == before + 1


async def test_es256_token_from_the_idp_is_accepted(app: AuthApp, idp: DevIdp) -> None:
    resp = await app.get(token=idp.token(alg="ES256"))
    assert resp.status == 200


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer", "bEaReR"])
async def test_bearer_scheme_is_case_insensitive(app: AuthApp, idp: DevIdp, scheme: str) -> None:
    resp = await app.get(headers={"Authorization": f"{scheme} {idp.token()}"})
    assert resp.status == 200


async def test_repeat_requests_are_answered_from_the_verified_token_cache(app: AuthApp, idp: DevIdp) -> None:
    token = idp.token()
    count = "mcp_gateway_auth_verify_duration_seconds_count"
    before_cached = metric(local_metrics(), count, cached="true")
    before_full = metric(local_metrics(), count, cached="false")
    for _ in range(3):
        assert (await app.get(token=token)).status == 200
    assert metric(local_metrics(), count, cached="false") == before_full + 1
    assert metric(local_metrics(), count, cached="true") == before_cached + 2


async def test_a_token_without_sub_is_bound_to_its_client(app: AuthApp, minter: Minter, idp: DevIdp) -> None:
    resp = await app.get(token=minter.signed(sub=None, client_id="robot"))
    assert (await resp.json())["subject"] == f"{idp.issuer}|robot"


async def test_azp_stands_in_for_client_id(app: AuthApp, minter: Minter, idp: DevIdp) -> None:
    resp = await app.get(token=minter.signed(sub=None, client_id=None, azp="robot-azp"))
    assert (await resp.json())["subject"] == f"{idp.issuer}|robot-azp"


async def test_an_audience_list_containing_ours_is_accepted(app: AuthApp, minter: Minter) -> None:
    resp = await app.get(token=minter.signed(aud=["https://other.example", TEST_RESOURCE]))
    assert resp.status == 200


async def test_any_configured_audience_is_accepted(auth_app_factory: Any, idp: DevIdp, minter: Minter) -> None:
    app = await auth_app_factory(auth_env(idp, OIDC_AUDIENCE=f"https://second.example/mcp, {TEST_RESOURCE}"))
    assert (await app.get(token=minter.signed(aud="https://second.example/mcp"))).status == 200
    assert (await app.get(token=minter.signed())).status == 200


async def test_scp_list_is_read_as_scopes(app: AuthApp, minter: Minter) -> None:
    resp = await app.get(token=minter.signed(scope=None, scp=["openid", "cnpg:read"]))
    assert (await resp.json())["scopes"] == ["cnpg:read", "openid"]


async def test_scp_string_is_read_as_scopes(app: AuthApp, minter: Minter) -> None:
    resp = await app.get(token=minter.signed(scope=None, scp="openid cnpg:write"))
    assert (await resp.json())["scopes"] == ["cnpg:write", "openid"]


async def test_expiry_within_leeway_is_accepted(app: AuthApp, minter: Minter) -> None:
    assert (await app.get(token=minter.signed(exp=int(time.time()) - 5))).status == 200


async def test_nbf_within_leeway_is_accepted(app: AuthApp, minter: Minter) -> None:
    assert (await app.get(token=minter.signed(nbf=int(time.time()) + 5))).status == 200


async def test_a_token_without_kid_is_accepted_when_the_key_set_has_one_key(
    auth_app_factory: Any, idp: DevIdp, minter: Minter
) -> None:
    # With only RS256 allowed, the IdP's ES256 key is unusable: one key is left.
    app = await auth_app_factory(auth_env(idp, OIDC_ALGORITHMS="RS256"))
    assert (await app.get(token=minter.signed(headers={"kid": None}))).status == 200


# Missing or malformed credentials ------------------------------------------------------------------------------


async def test_missing_header_is_401_with_a_bare_challenge(app: AuthApp) -> None:
    params = await refused(app, None, "missing_header", "Missing Authorization header")
    assert "error" not in params  # RFC 6750 section 3.1: no error code when no credentials were sent
    assert params["scope"] == "openid"


async def test_a_missing_header_body_does_not_claim_an_invalid_token(app: AuthApp) -> None:
    resp = await app.get()
    assert await resp.json() == {"error_description": "Missing Authorization header"}


async def test_token_in_query_string_is_a_400_invalid_request(app: AuthApp, idp: DevIdp) -> None:
    token = idp.token()
    text = "Access tokens in the query string are not accepted"
    params = await refused(app, token, "invalid_request", text, 400, params={"access_token": token})
    assert params["error"] == "invalid_request"


async def test_basic_scheme_is_refused_like_missing_credentials(app: AuthApp) -> None:
    params = await refused(
        app, None, "unsupported_scheme", "Authorization scheme must be Bearer", headers={"Authorization": "Basic eDp5"}
    )
    assert "error" not in params  # RFC 6750 section 3.1: "attempted using an unsupported authentication method"


async def test_empty_bearer_is_a_400_invalid_request(app: AuthApp) -> None:
    await refused(app, None, "invalid_request", "Bearer token is empty", 400, headers={"Authorization": "Bearer   "})


async def test_two_authorization_headers_are_a_400_invalid_request(app: AuthApp, idp: DevIdp) -> None:
    from multidict import CIMultiDict

    token = idp.token()
    headers = CIMultiDict([("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")])
    await refused(app, None, "invalid_request", "More than one Authorization header", 400, headers=headers)


@pytest.mark.parametrize(
    "garbage", ["not-a-jwt", "a.b", "a.b.c.d", "eyJ!.x.y", "e30.e30.", "////.////.////", "W10.e30.abc", "e30=.e30.x"]
)
async def test_garbage_is_malformed(app: AuthApp, garbage: str) -> None:
    before = failures("malformed")
    resp = await app.get(token=garbage)
    assert resp.status == 401
    assert failures("malformed") == before + 1


async def test_oversized_token_is_refused_before_parsing(app: AuthApp, minter: Minter) -> None:
    token = minter.signed(padding="x" * 9000)
    await refused(app, token, "token_too_large", "Token exceeds 8192 bytes")


async def test_max_token_bytes_is_configurable(auth_app_factory: Any, idp: DevIdp) -> None:
    app = await auth_app_factory(auth_env(idp, MAX_TOKEN_BYTES="512"))
    await refused(app, idp.token(), "token_too_large", "Token exceeds 512 bytes")


# Algorithms and keys ------------------------------------------------------------------------------------------


async def test_alg_none_is_refused(app: AuthApp, minter: Minter) -> None:
    await refused(app, minter.unsigned(), "disallowed_alg", "Token algorithm is not allowed")


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
async def test_hmac_keyed_with_the_public_key_is_refused(app: AuthApp, minter: Minter, alg: str) -> None:
    await refused(app, minter.hmac_with_public_key(alg), "disallowed_alg", "Token algorithm is not allowed")


async def test_algorithm_outside_the_allow_list_is_refused(auth_app_factory: Any, idp: DevIdp) -> None:
    app = await auth_app_factory(auth_env(idp, OIDC_ALGORITHMS="ES256"))
    await refused(app, idp.token(alg="RS256"), "disallowed_alg", "Token algorithm is not allowed")
    assert (await app.get(token=idp.token(alg="ES256"))).status == 200


async def test_algorithm_must_match_the_key_type(app: AuthApp, minter: Minter, idp: DevIdp) -> None:
    # An RS256 signature that names the IdP's EC key: the key cannot verify RS256, whatever the signature.
    es_kid, _ = idp.signing_key("ES256")
    token = minter.foreign(alg="RS256", kid=es_kid)
    await refused(app, token, "disallowed_alg", "Token algorithm does not match its key")


async def test_unknown_kid_is_refused(app: AuthApp, minter: Minter) -> None:
    await refused(app, minter.foreign(kid="nobody-knows-me"), "unknown_kid", "Token signing key is not known")


async def test_missing_kid_is_refused_when_the_key_set_has_several_keys(app: AuthApp, minter: Minter) -> None:
    await refused(
        app,
        minter.signed(headers={"kid": None}),
        "unknown_kid",
        "Token has no kid and the key set has more than one key",
    )


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
async def test_bad_signature_is_refused(app: AuthApp, minter: Minter, alg: str) -> None:
    params = await refused(app, minter.forged_with_kid(alg), "bad_signature", "Token verification failed")
    assert params["error"] == "invalid_token"
    assert params["error_description"] == "Token verification failed"


async def test_tampered_payload_is_refused(app: AuthApp, idp: DevIdp, minter: Minter) -> None:
    header, _, signature = idp.token().split(".")
    other_payload = minter.signed(sub="admin").split(".")[1]
    await refused(app, f"{header}.{other_payload}.{signature}", "bad_signature", "Token verification failed")


# Claims -------------------------------------------------------------------------------------------------------


async def test_wrong_issuer_is_refused(app: AuthApp, minter: Minter) -> None:
    await refused(app, minter.signed(iss="https://evil.example"), "invalid_issuer", "Invalid issuer")


async def test_wrong_audience_is_refused(app: AuthApp, minter: Minter) -> None:
    await refused(app, minter.signed(aud="https://other.example/mcp"), "invalid_audience", "Invalid audience")


async def test_idp_token_for_another_resource_is_refused(app: AuthApp, idp: DevIdp) -> None:
    token = idp.token(resource="http://127.0.0.1:1/mcp")
    await refused(app, token, "invalid_audience", "Invalid audience")


async def test_expired_token_is_refused(app: AuthApp, minter: Minter) -> None:
    await refused(app, minter.signed(exp=int(time.time()) - 120), "expired", "Token has expired")


async def test_future_nbf_is_refused(app: AuthApp, minter: Minter) -> None:
    await refused(app, minter.signed(nbf=int(time.time()) + 600), "not_yet_valid", "Token is not yet valid")


@pytest.mark.parametrize("claim", ["exp", "iss", "aud"])
async def test_required_claims(app: AuthApp, minter: Minter, claim: str) -> None:
    absent: dict[str, Any] = {claim: None}
    await refused(app, minter.signed(**absent), "missing_claim", f"Token lacks the {claim} claim")


async def test_a_token_naming_no_subject_or_client_is_refused(app: AuthApp, minter: Minter) -> None:
    await refused(app, minter.signed(sub=None, client_id=None), "missing_claim", "Token lacks the sub claim")


async def test_a_cached_token_stops_working_when_it_expires(auth_app_factory: Any, idp: DevIdp, minter: Minter) -> None:
    app = await auth_app_factory(auth_env(idp, OIDC_LEEWAY="0"))
    exp = int(time.time()) + 4
    token = minter.signed(exp=exp)
    assert (await app.get(token=token)).status == 200  # verified and cached
    await asyncio.sleep(exp - time.time() + 1.1)
    await refused(app, token, "expired", "Token has expired")


# Scopes -------------------------------------------------------------------------------------------------------


async def test_missing_required_scope_is_403_insufficient_scope(app: AuthApp, idp: DevIdp) -> None:
    params = await refused(
        app, idp.token(scope="cnpg:read"), "insufficient_scope", "Token lacks required scope: openid", status=403
    )
    assert params["error"] == "insufficient_scope"
    assert params["scope"] == "openid"


async def test_required_scopes_are_configurable(auth_app_factory: Any, idp: DevIdp) -> None:
    app = await auth_app_factory(auth_env(idp, OIDC_SCOPE="openid cnpg:write"))
    params = await refused(
        app, idp.token(scope="openid cnpg:read"), "insufficient_scope", "Token lacks required scope: cnpg:write", 403
    )
    assert params["scope"] == "cnpg:write openid"
    assert (await app.get(token=idp.token(scope="openid cnpg:write"))).status == 200


async def test_response_body_is_json_error(app: AuthApp, minter: Minter) -> None:
    resp = await app.get(token=minter.signed(iss="https://evil.example"))
    assert await resp.json() == {"error": "invalid_token", "error_description": "Invalid issuer"}


# Logs ---------------------------------------------------------------------------------------------------------


async def test_a_refusal_is_logged_with_its_reason_and_token_facts_but_never_the_token(
    app: AuthApp, minter: Minter
) -> None:
    import structlog

    token = minter.signed(iss="https://evil.example")
    with structlog.testing.capture_logs() as logs:
        assert (await app.get(token=token)).status == 401
    entry = next(e for e in logs if e["event"] == "Authentication failed")
    assert entry["reason"] == "invalid_issuer"
    assert entry["client"] == "127.0.0.1"
    assert entry["alg"] == "RS256" and entry["kid"] == minter.idp.signing_key("RS256")[0]
    assert entry["iss"] == "https://evil.example" and entry["aud"] == TEST_RESOURCE
    assert entry["log_level"] == "warning"
    rendered = repr(logs)
    assert token not in rendered and token.split(".")[2] not in rendered and token.split(".")[1] not in rendered
