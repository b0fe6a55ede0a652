"""client_credentials: a machine identity with a secret (basic or post) or a private key (private_key_jwt).

The token endpoint is configured, or discovered the way MCP clients discover it: the 401's `resource_metadata`
(or the well-known protected resource metadata URLs), then the authorization server's metadata. A token is
renewed before it expires and once after a 401; a 403 `insufficient_scope` asks for the named scopes once.
"""

from __future__ import annotations

import base64
import logging
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx2
import jwt

from connect.auth.discovery import (
    authorization_server_metadata_urls,
    canonical_resource,
    protected_resource_metadata_urls,
)
from connect.auth.tokens import challenge_params, renew_at, token_refused, union_scope
from connect.config import Settings
from connect.errors import ConnectError

log = logging.getLogger("connect.auth")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class _Discovered:
    token_endpoint: str
    issuer: str | None
    resource: str | None


def _default_alg(key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {256: "ES256", 384: "ES384", 521: "ES512"}.get(key.curve.key_size, "ES256")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    return "RS256"


class ClientCredentialsAuth(httpx2.Auth):
    """httpx2 auth for the client_credentials grant (RFC 6749 §4.4, RFC 7523 for private_key_jwt)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client_id = settings.client_id or ""
        self.scope = settings.scope
        self._discovered: _Discovered | None = None
        if settings.token_endpoint:
            self._discovered = _Discovered(settings.token_endpoint, None, settings.resource)
        self._token: str | None = None
        self._renew_at: float | None = None
        self._lock = anyio.Lock()
        self._key: Any = None
        if settings.client_auth == "private_key_jwt" and settings.private_key_file:
            self._key = self._load_key(settings.private_key_file)
        self.tokens_issued = 0

    @staticmethod
    def _load_key(path: Path) -> Any:
        from cryptography.hazmat.primitives import serialization

        try:
            return serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConnectError("bad_private_key", f"cannot load the private key {path}: {type(exc).__name__}") from None

    def _valid(self) -> bool:
        return self._token is not None and (self._renew_at is None or time.time() < self._renew_at)

    # Discovery ------------------------------------------------------------------------------------------------

    async def _get_json(self, url: str, response: httpx2.Response) -> dict[str, Any] | None:
        if response.status_code != 200:
            return None
        try:
            doc = response.json()
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

    # Token request --------------------------------------------------------------------------------------------

    def _token_request(self, found: _Discovered) -> httpx2.Request:
        form: dict[str, str] = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        if not self.settings.omit_resource and found.resource:
            form["resource"] = found.resource
        if self.settings.audience:
            form["audience"] = self.settings.audience
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        method = self.settings.client_auth
        secret = self.settings.client_secret or ""
        if method == "basic":
            pair = f"{quote(self.client_id, safe='')}:{quote(secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif method == "post":
            form["client_id"] = self.client_id
            form["client_secret"] = secret
        elif method == "private_key_jwt":
            now = int(time.time())
            claims = {
                "iss": self.client_id,
                "sub": self.client_id,
                "aud": found.issuer or found.token_endpoint,
                "iat": now,
                "exp": now + 300,
                "jti": str(uuid.uuid4()),
            }
            alg = self.settings.private_key_alg or _default_alg(self._key)
            form["client_id"] = self.client_id
            form["client_assertion_type"] = ASSERTION_TYPE
            form["client_assertion"] = jwt.encode(claims, self._key, algorithm=alg)
        else:
            form["client_id"] = self.client_id
        return httpx2.Request("POST", found.token_endpoint, data=form, headers=headers)

    def _take_token(self, response: httpx2.Response) -> None:
        if response.status_code != 200:
            raise token_refused(response.status_code, response.content)
        try:
            body = response.json()
            token = str(body["access_token"])
        except (ValueError, KeyError, TypeError):
            raise ConnectError("token_refused", "the token endpoint answered without an access_token") from None
        expires_in = body.get("expires_in")
        self._token = token
        self._renew_at = renew_at(float(expires_in), self.settings.refresh_margin) if expires_in else None
        self.tokens_issued += 1
        log.info("got an access token (client_credentials), expires in %ss", expires_in if expires_in else "?")

    # The flow -------------------------------------------------------------------------------------------------

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        async with self._lock:
            if not self._valid() and self._discovered is not None:
                async for step in self._fetch_token(None):
                    step_response = yield step
                    await self._feed(step_response)
            token = self._token
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        response = yield request

        params = challenge_params(response)
        step_up = response.status_code == 403 and params.get("error") == "insufficient_scope"
        if response.status_code != 401 and not step_up:
            return
        await response.aread()
        async with self._lock:
            if step_up:
                wanted = union_scope(self.scope, params.get("scope"))
                if wanted == self.scope:
                    log.warning("the server wants scopes this client already asked for (403 insufficient_scope)")
                    return
                log.info("the server asks for more scopes; requesting %s", wanted)
                self.scope = wanted
            if self._token == token or step_up or token is None:
                self._token = None
                async for step in self._fetch_token(response):
                    step_response = yield step
                    await self._feed(step_response)
            retry_token = self._token
        if retry_token:
            request.headers["Authorization"] = f"Bearer {retry_token}"
            yield request

    # `_fetch_token` yields the requests of discovery and the token request; the answers come back through
    # `_feed`, which leaves the state for the generator's next step.

    _last: httpx2.Response | None = None

    async def _feed(self, response: httpx2.Response) -> None:
        await response.aread()
        self._last = response

    async def _fetch_token(self, challenge: httpx2.Response | None) -> AsyncGenerator[httpx2.Request, None]:
        if self._discovered is None:
            async for step in self._discover(challenge):
                yield step
        assert self._discovered is not None
        found = self._discovered
        yield self._token_request(found)
        assert self._last is not None
        self._take_token(self._last)

    async def _discover(self, challenge: httpx2.Response | None) -> AsyncGenerator[httpx2.Request, None]:
        server_url = self.settings.url
        metadata_url = challenge_params(challenge).get("resource_metadata") if challenge is not None else None
        resource: str | None = self.settings.resource
        auth_server: str | None = None
        for url in protected_resource_metadata_urls(metadata_url, server_url):
            yield httpx2.Request("GET", url, headers={"Accept": "application/json"})
            assert self._last is not None
            doc = await self._get_json(url, self._last)
            if doc and doc.get("authorization_servers"):
                auth_server = str(doc["authorization_servers"][0])
                resource = resource or (str(doc["resource"]) if doc.get("resource") else None)
                break
        if auth_server is None:
            problem = f"{server_url} publishes no protected resource metadata; set MCP_TOKEN_ENDPOINT"
            raise ConnectError("discovery", problem)
        for url in authorization_server_metadata_urls(auth_server, server_url):
            yield httpx2.Request("GET", url, headers={"Accept": "application/json"})
            assert self._last is not None
            doc = await self._get_json(url, self._last)
            if doc and doc.get("token_endpoint"):
                self._discovered = _Discovered(
                    token_endpoint=str(doc["token_endpoint"]),
                    issuer=str(doc.get("issuer") or auth_server),
                    resource=resource or canonical_resource(server_url),
                )
                return
        raise ConnectError("discovery", f"no authorization server metadata found for {auth_server}")
