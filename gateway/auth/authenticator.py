"""The OIDC `Authenticator`: bearer extraction, verification and scope checks; refusals come from refusals.py."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import jwt
import structlog
from aiohttp import web

from gateway.auth.config import AuthConfig
from gateway.auth.jwks import KeySource
from gateway.auth.metadata import base_url, metadata_routes, resource_metadata_url
from gateway.auth.refusals import refuse
from gateway.auth.verify import AuthError, TokenVerifier
from gateway.metrics import AUTH_RESULTS, AUTH_VERIFY_DURATION, AUTHZ_DENIALS, learn_tools, tool_label
from gateway.security import Principal

log = structlog.get_logger(component="auth")

_LOG_FIELD_CHARS = 200


class OidcAuthenticator:
    """Implements `gateway.security.Authenticator` for JWT access tokens from one OIDC issuer."""

    def __init__(self, cfg: AuthConfig) -> None:
        self.cfg = cfg
        self.keys = KeySource(cfg)
        self.verifier = TokenVerifier(cfg, self.keys)
        self._required_scope = " ".join(sorted(cfg.required_scopes))
        # A 401 asks for every scope the resource uses, so a client that follows the challenge (as the MCP
        # scope-selection rules say) gets a token for all the tools its user may be granted; a 403 names
        # exactly what is missing.
        self._all_scopes = " ".join(cfg.all_scopes())

    async def start(self) -> None:
        if plain_http_off_loopback(self.cfg.issuer):
            # Allowed for compose networks and dev IdPs, but keys fetched over plain HTTP can be swapped in transit.
            log.warning("OIDC_ISSUER uses plain HTTP on a non-loopback host", issuer=self.cfg.issuer)
        await self.keys.start()

    async def close(self) -> None:
        await self.keys.close()

    def is_ready(self) -> bool:
        return self.keys.is_ready()

    def routes(self) -> list[web.RouteDef]:
        return metadata_routes(self.cfg, self.keys)

    # Authentication --------------------------------------------------------------------------------------------

    async def authenticate(self, request: web.Request) -> Principal:
        base = base_url(self.cfg, request)
        metadata = resource_metadata_url(self.cfg, base)
        started = time.perf_counter()
        token: str | None = None
        try:
            token = self._extract(request)
            principal = self.verifier.cached(token)
            cached = principal is not None
            if principal is None:
                principal = await self.verifier.verify(token)
        except AuthError as err:
            # A 401 asks for every scope the resource uses; see __init__.
            raise refuse(
                err.reason,
                err.description,
                resource_metadata=metadata,
                scope=self._all_scopes,
                client=request.remote,
                **_token_facts(token, err.reason),
            ) from None
        AUTH_VERIFY_DURATION.labels(cached="true" if cached else "false").observe(time.perf_counter() - started)
        missing = self.cfg.required_scopes - principal.scopes
        if missing:
            raise refuse(
                "insufficient_scope",
                f"Token lacks required scope: {' '.join(sorted(missing))}",
                resource_metadata=metadata,
                scope=self._required_scope,
                subject=principal.subject,
                client=request.remote,
            )
        AUTH_RESULTS.labels(result="success", reason="ok").inc()
        return principal

    def _extract(self, request: web.Request) -> str:
        if "access_token" in request.query:
            # RFC 6750 section 2.3 URIs end up in logs and caches; the gateway accepts the header method only.
            raise AuthError("invalid_request", "Access tokens in the query string are not accepted")
        values = request.headers.getall("Authorization", [])
        if not values:
            raise AuthError("missing_header", "Missing Authorization header")
        if len(values) > 1:
            raise AuthError("invalid_request", "More than one Authorization header")
        value = values[0]
        if len(value) > self.cfg.max_token_bytes + 16:
            raise AuthError("token_too_large", f"Token exceeds {self.cfg.max_token_bytes} bytes")
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise AuthError("unsupported_scheme", "Authorization scheme must be Bearer")
        token = token.strip()
        if not token:
            raise AuthError("invalid_request", "Bearer token is empty")
        return token

    # Authorization ---------------------------------------------------------------------------------------------

    def authorize_message(
        self, principal: Principal, message: Mapping[str, Any], request: web.Request | None = None
    ) -> None:
        if message.get("method") != "tools/call":
            return
        params = message.get("params")
        name = params.get("name") if isinstance(params, Mapping) else None
        tool = name if isinstance(name, str) else ""
        needed = self.cfg.scopes_for_tool(tool)
        missing = needed - principal.scopes
        if not missing:
            return
        AUTHZ_DENIALS.labels(tool=tool_label(tool)).inc()
        # Step-up: name everything the client should ask for next time (RFC 6750 section 3.1, MCP scope challenge).
        scope = " ".join(sorted(principal.scopes | needed | self.cfg.required_scopes))
        raise refuse(
            "insufficient_scope",
            f"Tool {tool[:_LOG_FIELD_CHARS]} requires scope: {' '.join(sorted(missing))}",
            resource_metadata=resource_metadata_url(self.cfg, self._base(request)),
            scope=scope,
            subject=principal.subject,
            tool=tool[:_LOG_FIELD_CHARS],
            missing=sorted(missing),
        )

    def filter_result(self, principal: Principal, method: str, message: dict[str, Any]) -> dict[str, Any]:
        if method != "tools/list":
            return message
        result = message.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
            return message
        kept: list[Any] = []
        learn_tools(result["tools"])
        for tool in result["tools"]:
            name = tool.get("name") if isinstance(tool, dict) else None
            if not isinstance(name, str):
                continue
            if self.cfg.scopes_for_tool(name) <= principal.scopes:
                kept.append(tool)
        return {**message, "result": {**result, "tools": kept}}

    def _base(self, request: web.Request | None) -> str:
        """PUBLIC_URL, else the origin of the request being refused (empty when there is none)."""
        if self.cfg.public_url:
            return self.cfg.public_url
        return base_url(self.cfg, request) if request is not None else ""


def plain_http_off_loopback(url: str) -> bool:
    """True for an http:// URL whose host is not a loopback name or address."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def _token_facts(token: str | None, reason: str) -> dict[str, Any]:
    """Header and claim names that help an operator read a refusal; never the token or its signature."""
    if token is None or reason == "token_too_large":
        return {}
    facts: dict[str, Any] = {}
    try:
        header = jwt.get_unverified_header(token)
        facts["alg"] = _short(header.get("alg"))
        facts["kid"] = _short(header.get("kid"))
        claims = jwt.decode(token, options={"verify_signature": False})
        facts["iss"] = _short(claims.get("iss"))
        facts["aud"] = _short(claims.get("aud"))
    except Exception:  # whatever a hostile token does to the parser, logging must not fail the request
        pass
    return facts


def _short(value: Any) -> Any:
    if isinstance(value, str):
        return value[:_LOG_FIELD_CHARS]
    if isinstance(value, list):
        return [_short(v) for v in value[:5]]
    return None if value is None else str(value)[:_LOG_FIELD_CHARS]
