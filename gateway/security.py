"""The contract between the HTTP transport and the authentication layer.

The transport (mcp_http.py) knows nothing about OIDC: it asks an `Authenticator` who the caller is, whether a
JSON-RPC message may be forwarded, and how to filter a result. `gateway.auth` provides the OIDC implementation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    subject: str
    """Stable identity used to bind sessions: issuer and subject, e.g. ``"https://idp.example|user-1"``."""
    client_id: str | None
    scopes: frozenset[str]
    expires_at: float
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False)


class AuthRejection(Exception):
    """A refusal that is ready to send: status, headers (WWW-Authenticate, Retry-After) and a JSON body.

    The OIDC layer makes all of them from one row of its table of reasons (`gateway.auth.refusals`), so the
    transport sends them as they are.
    """

    def __init__(self, status: int, reason: str, body: Mapping[str, str], headers: Mapping[str, str]) -> None:
        super().__init__(body.get("error_description", reason))
        self.status = status
        self.reason = reason
        self.headers: dict[str, str] = dict(headers)
        self._body: dict[str, str] = dict(body)

    def body(self) -> dict[str, str]:
        return dict(self._body)


class Authenticator(Protocol):
    """What the transport needs from an authentication layer."""

    async def start(self) -> None:
        """Begin key discovery and refresh; must not block until the IdP answers."""

    async def close(self) -> None:
        """Stop background work and close HTTP clients."""

    def is_ready(self) -> bool:
        """True once signing keys are loaded (drives /ready)."""

    def routes(self) -> list[web.RouteDef]:
        """Unauthenticated routes this layer serves (OAuth metadata documents)."""

    async def authenticate(self, request: web.Request) -> Principal:
        """Return the caller or raise `AuthRejection`."""

    def authorize_message(
        self, principal: Principal, message: Mapping[str, Any], request: web.Request | None = None
    ) -> None:
        """Raise `AuthRejection` (403 insufficient_scope) when the caller may not send this JSON-RPC request.

        `request` is the HTTP request carrying it, for the URLs a refusal names.
        """

    def filter_result(self, principal: Principal, method: str, message: dict[str, Any]) -> dict[str, Any]:
        """Return the upstream response to a request of `method`, filtered for the caller (tools/list)."""
