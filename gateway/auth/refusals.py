"""Every way a request can be refused, in one table: reason -> status, challenge, body, metric label, log line.

The reasons are a closed set (the `reason` label of `mcp_gateway_auth_results_total`). A refusal is built only by
`refuse()`, which counts it, logs it and makes the `AuthRejection` from the same row, so the status, the
`WWW-Authenticate` header and the JSON body cannot disagree.

- 401 when credentials are missing or the token is not acceptable (RFC 6750 section 3.1). When no Bearer
  credentials were sent at all (no header, or another scheme) the challenge carries no `error` (RFC 6750 section
  3.1 asks for none), and neither does the body: it is just `{"error_description": ...}`, because claiming
  `invalid_token` for a token that was never sent would be untrue.
- 400 `invalid_request` only for a malformed request: a token in the query string, two Authorization headers, an
  empty Bearer value.
- 403 `insufficient_scope` for a valid token that lacks a scope; the challenge names the scopes to ask for.
- 503 `temporarily_unavailable` with `Retry-After` when no signing key was ever loaded: the token was not judged,
  so the client should retry, not re-authorize.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import structlog

from gateway.auth.challenge import bearer_challenge
from gateway.metrics import AUTH_RESULTS
from gateway.security import AuthRejection

log = structlog.get_logger(component="auth")

RETRY_AFTER_SECONDS = 5
"""Retry-After of a 503 while the key set is unavailable (the key source retries sooner, with backoff)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """How one reason is answered, counted and logged."""

    status: int
    error: str | None
    """RFC 6750 error code, in the challenge and the body alike; None when no credentials were sent."""
    event: str
    """The log line's event."""
    level: str
    """The log line's level: info for the normal first step of OAuth discovery, warning otherwise."""
    retry_after: int | None = None


_UNAUTHENTICATED = "Authentication failed"
_INVALID_TOKEN = Refusal(401, "invalid_token", _UNAUTHENTICATED, "warning")

REFUSALS: Mapping[str, Refusal] = MappingProxyType(
    {
        # No Bearer credentials: every MCP client's first request, the start of discovery.
        "missing_header": Refusal(401, None, _UNAUTHENTICATED, "info"),
        "unsupported_scheme": Refusal(401, None, _UNAUTHENTICATED, "warning"),
        "invalid_request": Refusal(400, "invalid_request", _UNAUTHENTICATED, "warning"),
        "malformed": _INVALID_TOKEN,
        "token_too_large": _INVALID_TOKEN,
        "disallowed_alg": _INVALID_TOKEN,
        "unknown_kid": _INVALID_TOKEN,
        "bad_signature": _INVALID_TOKEN,
        "expired": _INVALID_TOKEN,
        "not_yet_valid": _INVALID_TOKEN,
        "invalid_issuer": _INVALID_TOKEN,
        "invalid_audience": _INVALID_TOKEN,
        "missing_claim": _INVALID_TOKEN,
        "insufficient_scope": Refusal(403, "insufficient_scope", "Access denied", "warning"),
        "jwks_unavailable": Refusal(
            503, "temporarily_unavailable", _UNAUTHENTICATED, "warning", retry_after=RETRY_AFTER_SECONDS
        ),
    }
)

REASONS = frozenset(REFUSALS)
"""The closed set of failure reasons (metric label values); success is reason "ok"."""


def rejection(reason: str, description: str, *, resource_metadata: str, scope: str = "") -> AuthRejection:
    """The response for `reason`: status, challenge (with `scope` when given) and body from its row."""
    row = REFUSALS[reason]
    headers = {
        "WWW-Authenticate": bearer_challenge(
            resource_metadata=resource_metadata, error=row.error, description=description, scope=scope or None
        )
    }
    if row.retry_after is not None:
        headers["Retry-After"] = str(row.retry_after)
    body = {"error_description": description}
    if row.error is not None:
        body = {"error": row.error, **body}
    return AuthRejection(row.status, reason, body, headers)


def refuse(
    reason: str,
    description: str,
    *,
    resource_metadata: str,
    scope: str = "",
    subject: str | None = None,
    **log_fields: Any,
) -> AuthRejection:
    """Count and log a refusal, and return the response to raise.

    `log_fields` are facts an operator needs (client address, token header and claim names, the tool); callers
    never pass the token or the Authorization header.
    """
    row = REFUSALS[reason]
    AUTH_RESULTS.labels(result="failure", reason=reason).inc()
    if subject is not None:
        log_fields["subject"] = subject
    emit = log.info if row.level == "info" else log.warning
    emit(row.event, reason=reason, detail=description, **log_fields)
    return rejection(reason, description, resource_metadata=resource_metadata, scope=scope)
