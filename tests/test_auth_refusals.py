"""One table of refusals: for every reason, the status, the challenge, the body, the metric label and the log line
agree, whether the refusal is built directly or caused by a real request against the real authenticator."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import structlog

from gateway.auth.refusals import REASONS, REFUSALS, refuse
from gateway.auth.verify import AuthError
from tests.fixtures.idp import AuthApp, DevIdp, Minter, auth_env, local_metrics, metric, parse_challenge

pytestmark = pytest.mark.timeout(120)

META = "https://mcp.example/.well-known/oauth-protected-resource/mcp"

# The specification: status and RFC 6750 error code of each reason (None: no credentials were sent).
EXPECTED: dict[str, tuple[int, str | None]] = {
    "missing_header": (401, None),
    "unsupported_scheme": (401, None),
    "invalid_request": (400, "invalid_request"),
    "malformed": (401, "invalid_token"),
    "token_too_large": (401, "invalid_token"),
    "disallowed_alg": (401, "invalid_token"),
    "unknown_kid": (401, "invalid_token"),
    "bad_signature": (401, "invalid_token"),
    "expired": (401, "invalid_token"),
    "not_yet_valid": (401, "invalid_token"),
    "invalid_issuer": (401, "invalid_token"),
    "invalid_audience": (401, "invalid_token"),
    "missing_claim": (401, "invalid_token"),
    "insufficient_scope": (403, "insufficient_scope"),
    "jwks_unavailable": (503, "temporarily_unavailable"),
}


def failures(reason: str) -> float:
    return metric(local_metrics(), "mcp_gateway_auth_results_total", result="failure", reason=reason)


def assert_agrees(
    reason: str,
    status: int,
    headers: Mapping[str, str],
    body: dict[str, Any],
    counted: float,
    logs: list[dict[str, Any]],
    *,
    secret: str | None = None,
) -> None:
    """Status, header (parsed), body, metric and log line all say `reason`, as the table and EXPECTED say."""
    row = REFUSALS[reason]
    want_status, want_error = EXPECTED[reason]
    assert (status, row.status) == (want_status, want_status), reason
    scheme, params = parse_challenge(headers["WWW-Authenticate"])
    assert scheme == "Bearer"
    assert params.get("error") == body.get("error") == want_error, (params, body)
    description = body["error_description"]
    assert set(body) == ({"error_description"} if want_error is None else {"error", "error_description"})
    if want_error is None:
        assert "error_description" not in params  # RFC 6750 section 3.1: no error information at all
    else:
        assert params["error_description"] == description
    assert params["resource_metadata"].endswith("/.well-known/oauth-protected-resource/mcp")
    if reason == "insufficient_scope":
        assert params["scope"]
    assert ("Retry-After" in headers) == (status == 503)
    if status == 503:
        assert int(headers["Retry-After"]) > 0
    assert counted == 1, f"{reason} counted {counted} times"
    lines = [e for e in logs if e.get("reason") == reason]
    assert len(lines) == 1, logs
    line = lines[0]
    assert (line["event"], line["log_level"], line["detail"]) == (row.event, row.level, description)
    if secret is not None:
        assert secret not in repr(logs)


def test_the_table_is_the_closed_set_of_reasons() -> None:
    assert set(REFUSALS) == set(EXPECTED) == REASONS
    with pytest.raises(AssertionError):
        AuthError("not_a_reason", "x")


def test_only_a_missing_token_is_logged_at_info() -> None:
    assert {reason for reason, row in REFUSALS.items() if row.level == "info"} == {"missing_header"}


@pytest.mark.parametrize("reason", sorted(EXPECTED))
def test_every_reason_built_from_the_table_agrees(reason: str) -> None:
    before = failures(reason)
    with structlog.testing.capture_logs() as logs:
        rejection = refuse(reason, "Something was wrong", resource_metadata=META, scope="openid cnpg:read")
    assert rejection.reason == reason
    assert_agrees(reason, rejection.status, rejection.headers, rejection.body(), failures(reason) - before, logs)


def test_the_subject_is_logged_when_known() -> None:
    with structlog.testing.capture_logs() as logs:
        refuse("insufficient_scope", "Tool x requires scope: y", resource_metadata=META, subject="iss|alice")
    assert logs[0]["subject"] == "iss|alice"


# Every reason caused by a real request ---------------------------------------------------------------------------

Request = Callable[[Minter, DevIdp], dict[str, Any]]

REQUESTS: dict[str, Request] = {
    "missing_header": lambda m, i: {},
    "unsupported_scheme": lambda m, i: {"headers": {"Authorization": "Basic eDp5"}},
    "invalid_request": lambda m, i: {"params": {"access_token": i.token()}},
    "malformed": lambda m, i: {"token": "not-a-jwt"},
    "token_too_large": lambda m, i: {"token": m.signed(padding="x" * 9000)},
    "disallowed_alg": lambda m, i: {"token": m.hmac_with_public_key()},
    "unknown_kid": lambda m, i: {"token": m.foreign()},
    "bad_signature": lambda m, i: {"token": m.forged_with_kid()},
    "expired": lambda m, i: {"token": m.signed(exp=int(time.time()) - 3600)},
    "not_yet_valid": lambda m, i: {"token": m.signed(nbf=int(time.time()) + 3600)},
    "invalid_issuer": lambda m, i: {"token": m.signed(iss="https://evil.example")},
    "invalid_audience": lambda m, i: {"token": m.signed(aud="https://other.example/mcp")},
    "missing_claim": lambda m, i: {"token": m.signed(exp=None)},
    "insufficient_scope": lambda m, i: {"token": m.signed(scope="cnpg:read")},
}


def test_every_reason_but_the_outage_has_a_request() -> None:
    assert set(REQUESTS) | {"jwks_unavailable"} == REASONS


@pytest.fixture
async def app(auth_app_factory: Any, idp: DevIdp) -> AuthApp:
    return await auth_app_factory(auth_env(idp))  # type: ignore[no-any-return]


@pytest.mark.parametrize("reason", sorted(REQUESTS))
async def test_every_reason_caused_by_a_request_agrees(app: AuthApp, minter: Minter, idp: DevIdp, reason: str) -> None:
    request = REQUESTS[reason](minter, idp)
    before = failures(reason)
    with structlog.testing.capture_logs() as logs:
        resp = await app.get(**request)
        body = await resp.json()
    secret = request.get("token") or request.get("params", {}).get("access_token")
    assert_agrees(reason, resp.status, resp.headers, body, failures(reason) - before, logs, secret=secret)


async def test_the_outage_reason_caused_by_a_request_agrees(auth_app_factory: Any, idp_factory: Any) -> None:
    idp: DevIdp = idp_factory()
    token = idp.token()
    idp.stop()
    app = await auth_app_factory(auth_env(idp), wait_ready=False, retry_initial=0.05, retry_max=0.5)
    before = failures("jwks_unavailable")
    with structlog.testing.capture_logs() as logs:
        resp = await app.get(token=token)
        body = await resp.json()
    assert_agrees("jwks_unavailable", resp.status, resp.headers, body, failures("jwks_unavailable") - before, logs)
    assert body["error_description"] == "Signing keys are not available yet"
