"""Discovery and the signing-key cache: readiness, rotation, IdP outages, single-flight refetch, lifetimes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
import structlog
from aiohttp import web

from gateway.auth.jwks import discovery_urls, max_age, parse_jwks
from tests.fixtures.idp import AuthApp, DevIdp, Minter, auth_env, free_port, local_metrics, metric

pytestmark = pytest.mark.timeout(150)

FAST = {"retry_initial": 0.05, "retry_max": 0.5}


def fetches(outcome: str = "success") -> float:
    return metric(local_metrics(), "mcp_gateway_jwks_fetches_total", outcome=outcome)


async def eventually(check: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.05)


# Discovery and readiness ---------------------------------------------------------------------------------------


async def test_not_ready_until_the_idp_answers_then_ready_without_a_restart(
    auth_app_factory: Any, idp_factory: Any
) -> None:
    idp: DevIdp = idp_factory(start=False)
    with structlog.testing.capture_logs() as logs:
        app: AuthApp = await auth_app_factory(auth_env(idp), wait_ready=False, **FAST)
        await eventually(lambda: any(e["event"] == "Failed to discover JWKS URI" for e in logs))
    assert not app.authenticator.is_ready()
    assert (await app.get("/ready")).status == 503
    idp.start()
    await eventually(app.authenticator.is_ready)
    assert (await app.get(token=idp.token())).status == 200


async def test_requests_before_keys_load_get_503_not_a_crash(auth_app_factory: Any, idp_factory: Any) -> None:
    idp: DevIdp = idp_factory()
    token = idp.token()
    idp.stop()
    app = await auth_app_factory(auth_env(idp), wait_ready=False, **FAST)
    before = metric(local_metrics(), "mcp_gateway_auth_results_total", result="failure", reason="jwks_unavailable")
    resp = await app.get(token=token)
    assert resp.status == 503
    assert resp.headers["Retry-After"]
    assert (await resp.json())["error_description"] == "Signing keys are not available yet"
    after = metric(local_metrics(), "mcp_gateway_auth_results_total", result="failure", reason="jwks_unavailable")
    assert after == before + 1


async def test_discovery_document_with_another_issuer_is_not_trusted(auth_app_factory: Any, idp: DevIdp) -> None:
    with structlog.testing.capture_logs() as logs:
        app = await auth_app_factory(auth_env(idp, OIDC_ISSUER=idp.issuer + "/"), wait_ready=False, **FAST)
        await eventually(lambda: sum(e["event"] == "Failed to discover JWKS URI" for e in logs) >= 2)
    assert not app.authenticator.is_ready()
    failure = next(e for e in logs if e["event"] == "Failed to discover JWKS URI")
    assert "expected OIDC_ISSUER" in " ".join(failure["errors"])


async def test_oidc_jwks_uri_skips_discovery(auth_app_factory: Any, idp: DevIdp) -> None:
    # Discovery would fail (issuer mismatch) but keys come from the configured URI.
    app = await auth_app_factory(auth_env(idp, OIDC_ISSUER=idp.issuer + "/", OIDC_JWKS_URI=idp.jwks_uri), **FAST)
    assert app.authenticator.is_ready()


async def test_rfc8414_metadata_is_used_when_openid_configuration_is_absent(auth_app_factory: Any, idp: DevIdp) -> None:
    # An authorization server that only publishes RFC 8414 metadata, with its keys at the dev IdP's JWKS URI.
    port = free_port()
    issuer = f"http://127.0.0.1:{port}/tenant"

    async def metadata(_request: web.Request) -> web.Response:
        return web.json_response({"issuer": issuer, "jwks_uri": idp.jwks_uri, "token_endpoint": f"{issuer}/token"})

    as_app = web.Application()
    as_app.add_routes([web.get("/.well-known/oauth-authorization-server/tenant", metadata)])
    runner = web.AppRunner(as_app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        app = await auth_app_factory(auth_env(idp, OIDC_ISSUER=issuer), **FAST)
        assert app.authenticator.keys.jwks_uri == idp.jwks_uri
    finally:
        await runner.cleanup()


def test_discovery_urls() -> None:
    assert discovery_urls("https://idp.example") == [
        "https://idp.example/.well-known/openid-configuration",
        "https://idp.example/.well-known/oauth-authorization-server",
    ]
    assert discovery_urls("https://idp.example/realms/x/") == [
        "https://idp.example/realms/x/.well-known/openid-configuration",
        "https://idp.example/.well-known/oauth-authorization-server/realms/x",
        "https://idp.example/realms/x/.well-known/oauth-authorization-server",
    ]


# Rotation ------------------------------------------------------------------------------------------------------


async def test_rotation_new_key_verifies_after_one_refetch_and_old_tokens_keep_working(
    auth_app_factory: Any, idp_factory: Any
) -> None:
    idp: DevIdp = idp_factory()
    app = await auth_app_factory(auth_env(idp), unknown_kid_refetch_interval=0.0)
    old_token = idp.token()
    assert (await app.get(token=old_token)).status == 200

    idp.rotate()
    new_token = idp.token()
    before = fetches()
    assert (await app.get(token=new_token)).status == 200
    assert fetches() == before + 1
    assert (await app.get(token=idp.token(alg="ES256"))).status == 200  # the new ES256 key came in the same fetch
    assert fetches() == before + 1
    assert (await app.get(token=old_token)).status == 200


async def test_a_retired_key_stops_verifying_even_for_cached_tokens(
    auth_app_factory: Any, idp_factory: Any, tmp_path: Any
) -> None:
    idp: DevIdp = idp_factory()
    app = await auth_app_factory(auth_env(idp), unknown_kid_refetch_interval=0.0)
    old_kid, _ = idp.signing_key("RS256")
    old_token = idp.token()
    assert (await app.get(token=old_token)).status == 200  # now in the verified-token cache
    idp.rotate()
    idp.retire(old_kid)
    assert (await app.get(token=idp.token())).status == 200  # the unknown new kid triggers a refetch
    resp = await app.get(token=old_token)
    assert resp.status == 401
    assert (await resp.json())["error_description"] == "Token signing key is not known"


async def test_keys_are_refreshed_before_they_expire(auth_app_factory: Any, idp_factory: Any) -> None:
    idp: DevIdp = idp_factory()
    # No refetch on unknown kid: only the background refresh can pick up the rotation.
    app = await auth_app_factory(
        auth_env(idp), unknown_kid_refetch_interval=1e9, jwks_default_ttl=1.0, jwks_min_ttl=0.5, **FAST
    )
    idp.rotate()
    new_kid, _ = idp.signing_key("RS256")
    await eventually(lambda: app.authenticator.keys.lookup(new_kid) is not None)
    assert (await app.get(token=idp.token())).status == 200


# Outages -------------------------------------------------------------------------------------------------------


async def test_idp_outage_cached_keys_keep_working_and_unknown_kid_is_401(
    auth_app_factory: Any, idp_factory: Any
) -> None:
    idp: DevIdp = idp_factory()
    app = await auth_app_factory(auth_env(idp), unknown_kid_refetch_interval=0.0, **FAST)
    minter = Minter(idp)
    idp.stop()

    # Never seen before, signed by a cached key: verified without the IdP.
    assert (await app.get(token=minter.signed())).status == 200
    assert (await app.get(token=minter.signed(alg="ES256"))).status == 200

    errors_before = fetches("error")
    resp = await app.get(token=minter.foreign(kid="rotated-while-down"))
    assert resp.status == 401
    assert (await resp.json())["error_description"] == "Token signing key is not known"
    assert fetches("error") == errors_before + 1
    assert app.authenticator.is_ready()  # the last good keys are kept

    idp.start(rotate=True)
    assert (await app.get(token=idp.token())).status == 200  # recovery: the new key is fetched


# Single-flight and rate limit ---------------------------------------------------------------------------------


async def test_concurrent_unknown_kid_requests_share_one_fetch(auth_app_factory: Any, idp_factory: Any) -> None:
    idp: DevIdp = idp_factory()
    app = await auth_app_factory(auth_env(idp), unknown_kid_refetch_interval=0.0)
    idp.rotate()
    token = idp.token()
    before = fetches()
    responses = await asyncio.gather(*(app.get(token=token) for _ in range(25)))
    assert [r.status for r in responses] == [200] * 25
    assert fetches() == before + 1


async def test_unknown_kid_refetches_are_rate_limited(auth_app_factory: Any, idp: DevIdp, minter: Minter) -> None:
    app = await auth_app_factory(auth_env(idp), unknown_kid_refetch_interval=60.0)
    before = fetches()
    results = await asyncio.gather(*(app.get(token=minter.foreign(kid=f"spray-{i}")) for i in range(20)))
    for i in range(5):
        results.append(await app.get(token=minter.foreign(kid=f"again-{i}")))
    assert {r.status for r in results} == {401}
    assert fetches() == before + 1


# Parsing -------------------------------------------------------------------------------------------------------

ALLOWED = frozenset({"RS256", "ES256", "EdDSA", "PS256"})


def test_symmetric_encryption_and_weak_keys_are_never_loaded(idp: DevIdp) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    public = [
        {k: v for k, v in jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi")} for jwk in idp.private_jwks()
    ]
    weak = RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 1024).public_key(), as_dict=True)
    keys = parse_jwks(
        {
            "keys": [
                {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
                {**public[0], "kid": "enc", "use": "enc"},
                {**weak, "kid": "weak"},
                {**public[0], "kid": "verify-not-allowed", "key_ops": ["encrypt"]},
                "not-a-key",
                *public,
            ]
        },
        ALLOWED,
    )
    assert sorted(k for k in keys if k) == sorted(j["kid"] for j in public)


def test_declared_alg_narrows_what_a_key_verifies(idp: DevIdp) -> None:
    keys = parse_jwks({"keys": [j for j in idp.private_jwks()]}, ALLOWED)
    rs_kid, _ = idp.signing_key("RS256")
    assert keys[rs_kid].algorithms == frozenset({"RS256"})  # not PS256, though the key type could


def test_private_parts_in_a_jwks_are_ignored(idp: DevIdp) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    keys = parse_jwks({"keys": idp.private_jwks()}, ALLOWED)
    assert all(isinstance(k.key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) for k in keys.values())


def test_a_jwks_without_keys_list_is_an_error() -> None:
    from gateway.auth.jwks import FetchError

    with pytest.raises(FetchError):
        parse_jwks({"nokeys": []}, ALLOWED)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, 300.0),
        ("public, max-age=600", 600.0),
        ("max-age=5", 60.0),
        ("max-age=99999999", 86400.0),
        ("no-store", 60.0),
        ("private, no-cache", 60.0),
        ('max-age="120"', 120.0),
        ("s-maxage=10", 300.0),
    ],
)
def test_cache_control_lifetime_is_clamped(header: str | None, expected: float) -> None:
    assert max_age(header, 300.0, 60.0, 86400.0) == expected


# Documents arriving in pieces, and oversized ones ---------------------------------------------------------------


async def serve_jwks(document: bytes) -> tuple[web.AppRunner, str]:
    """A JWKS endpoint that streams `document` in small pieces with pauses, as a slow network would."""

    async def jwks(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for i in range(0, len(document), 1000):
            await resp.write(document[i : i + 1000])
            await asyncio.sleep(0.001)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.add_routes([web.get("/jwks", jwks)])
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/jwks"


async def test_a_large_jwks_arriving_in_pieces_is_read_whole(auth_app_factory: Any, idp: DevIdp) -> None:
    import json

    public = [{k: v for k, v in j.items() if k not in ("d", "p", "q", "dp", "dq", "qi")} for j in idp.private_jwks()]
    filler = [{**public[0], "kid": f"filler-{i}"} for i in range(60)]
    document = json.dumps({"keys": [*filler, *public]}).encode()
    assert len(document) > 20000
    runner, uri = await serve_jwks(document)
    try:
        app = await auth_app_factory(auth_env(idp, OIDC_JWKS_URI=uri), **FAST)
        assert (await app.get(token=idp.token())).status == 200
    finally:
        await runner.cleanup()


async def test_an_oversized_jwks_is_refused(auth_app_factory: Any, idp: DevIdp) -> None:
    runner, uri = await serve_jwks(b'{"keys": [], "padding": "' + b"x" * 600_000 + b'"}')
    try:
        with structlog.testing.capture_logs() as logs:
            app = await auth_app_factory(auth_env(idp, OIDC_JWKS_URI=uri), wait_ready=False, **FAST)
            await eventually(lambda: any(e["event"] == "Failed to fetch JWKS" for e in logs))
        assert not app.authenticator.is_ready()
        assert "too large" in next(e for e in logs if e["event"] == "Failed to fetch JWKS")["error"]
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("issuer", "warned"),
    [
        ("http://idp.internal:9400", True),
        ("http://10.0.0.1", True),
        ("http://127.0.0.1:9400", False),
        ("http://localhost:9400", False),
        ("http://[::1]:9400", False),
        ("https://idp.example", False),
    ],
)
def test_a_plain_http_issuer_off_loopback_is_warned_about(issuer: str, warned: bool) -> None:
    # The check only: starting an authenticator for these issuers would send traffic off this machine.
    from gateway.auth.authenticator import plain_http_off_loopback

    assert plain_http_off_loopback(issuer) is warned


def test_malformed_key_entries_are_skipped(idp: DevIdp) -> None:
    public = [{k: v for k, v in j.items() if k not in ("d", "p", "q", "dp", "dq", "qi")} for j in idp.private_jwks()]
    broken = [
        {"kty": "RSA", "kid": "no-modulus", "e": "AQAB"},
        {"kty": "RSA", "kid": "bad-modulus", "n": 42, "e": "AQAB"},
        {"kty": "EC", "kid": "no-point", "crv": "P-256"},
        {"kty": "EC", "kid": "bad-point", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
        {"kty": "OKP", "kid": "bad-okp", "crv": "Ed25519", "x": "!!"},
        {"kty": "RSA", "kid": 7, **{k: v for k, v in public[0].items() if k in ("n", "e")}},
    ]
    keys = parse_jwks({"keys": [*broken, *public]}, ALLOWED)
    assert sorted(k for k in keys if k) == sorted(j["kid"] for j in public)


# Every allowed algorithm against a key of the right type ------------------------------------------------------


async def test_algorithms_are_matched_to_key_types(auth_app_factory: Any, idp: DevIdp, minter: Minter) -> None:
    import json

    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

    rsa_key = rsa.generate_private_key(65537, 2048)
    p384_key = ec.generate_private_key(ec.SECP384R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    jwks = {
        "keys": [
            {**RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True), "kid": "rsa-any"},  # no alg: RS* and PS*
            {**ECAlgorithm.to_jwk(p384_key.public_key(), as_dict=True), "kid": "p384"},
            {**OKPAlgorithm.to_jwk(ed_key.public_key(), as_dict=True), "kid": "ed"},
        ]
    }
    runner, uri = await serve_jwks(json.dumps(jwks).encode())
    try:
        app = await auth_app_factory(
            auth_env(idp, OIDC_JWKS_URI=uri, OIDC_ALGORITHMS="RS256 RS384 PS256 ES256 ES384 EdDSA"), **FAST
        )

        async def status(key: Any, alg: str, kid: str) -> int | str:
            """200, or the refusal's description."""
            token = jwt.encode(minter.claims(), key, algorithm=alg, headers={"kid": kid})
            resp = await app.get(token=token)
            return 200 if resp.status == 200 else str((await resp.json())["error_description"])

        assert await status(rsa_key, "RS256", "rsa-any") == 200
        assert await status(rsa_key, "RS384", "rsa-any") == 200
        assert await status(rsa_key, "PS256", "rsa-any") == 200
        assert await status(p384_key, "ES384", "p384") == 200
        assert await status(ed_key, "EdDSA", "ed") == 200
        assert await status(rsa_key, "RS512", "rsa-any") == "Token algorithm is not allowed"
        p256_key = ec.generate_private_key(ec.SECP256R1())
        assert await status(p256_key, "ES256", "p384") == "Token algorithm does not match its key"
        assert await status(ed_key, "EdDSA", "rsa-any") == "Token algorithm does not match its key"
    finally:
        await runner.cleanup()
