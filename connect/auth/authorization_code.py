"""Authorization code with PKCE, for a person at a desktop.

The MCP SDK's `OAuthClientProvider` does discovery, registration (DCR, a pre-registered client, or a client ID
metadata document), PKCE, the token exchange, refresh and step-up. This module gives it what runs on the user's
machine: a loopback redirect listener, the browser (or the printed URL), a 0600 token cache, and renewal a little
before expiry instead of after.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import time
import webbrowser
from collections.abc import AsyncGenerator
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx2
from aiohttp import web
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.oauth2 import OAuthContext
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthMetadata,
    OAuthToken,
    ProtectedResourceMetadata,
)
from pydantic import ValidationError

from connect.auth.tokens import renew_at
from connect.config import Settings
from connect.errors import ConnectError

log = logging.getLogger("connect.auth")

_METHODS = {"basic": "client_secret_basic", "post": "client_secret_post", "none": "none"}


class FileTokenStorage:
    """Tokens and the registered client in one JSON file, created 0600, replaced atomically."""

    def __init__(self, path: Path, preset_client: OAuthClientInformationFull | None = None) -> None:
        self.path = path
        self.preset_client = preset_client
        self.writes = 0

    def _load(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def _save(self, doc: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(doc, handle)
        os.replace(tmp, self.path)
        self.writes += 1

    def expires_at(self) -> float | None:
        value = self._load().get("expires_at")
        return float(value) if isinstance(value, int | float) else None

    async def get_tokens(self) -> OAuthToken | None:
        tokens = self._load().get("tokens")
        return OAuthToken.model_validate(tokens) if tokens else None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        doc = self._load()
        doc["tokens"] = tokens.model_dump(mode="json", exclude_none=True)
        doc["expires_at"] = time.time() + tokens.expires_in if tokens.expires_in else None
        self._save(doc)
        log.info("stored new tokens, access token expires in %ss", tokens.expires_in or "?")

    def discovery(self) -> dict[str, Any]:
        """What the last sign-in discovered (the authorization server's metadata and the resource's)."""
        found = self._load().get("discovery")
        return found if isinstance(found, dict) else {}

    def set_discovery(self, found: dict[str, Any]) -> None:
        doc = self._load()
        if doc.get("discovery") != found:
            doc["discovery"] = found
            self._save(doc)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        if self.preset_client is not None:
            return self.preset_client
        client = self._load().get("client")
        return OAuthClientInformationFull.model_validate(client) if client else None

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        if self.preset_client is not None:
            return
        doc = self._load()
        doc["client"] = client_info.model_dump(mode="json", exclude_none=True)
        self._save(doc)


class LoopbackRedirect:
    """The redirect URI's listener on 127.0.0.1 (RFC 8252 §7.3): started for a flow, stopped after it."""

    def __init__(self, port: int) -> None:
        # The port is taken now, so the redirect URI (registered once) stays valid for later sign-ins.
        self._sock: socket.socket | None = self._bind(port)
        self.port: int = self._sock.getsockname()[1]
        self.redirect_uri = f"http://127.0.0.1:{self.port}/callback"
        self._result: asyncio.Future[AuthorizationCodeResult] | None = None
        self._runner: web.AppRunner | None = None

    @staticmethod
    def _bind(port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            sock.close()
            raise ConnectError(
                "redirect_port", f"cannot listen on 127.0.0.1:{port} for the redirect: {exc.strerror}"
            ) from None
        return sock

    async def start(self) -> None:
        await self.stop()
        self._result = asyncio.get_running_loop().create_future()
        sock, self._sock = self._sock or self._bind(self.port), None  # the site closes it when it stops
        app = web.Application()
        app.router.add_get("/callback", self._callback)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def _callback(self, request: web.Request) -> web.Response:
        query = request.query
        if self._result is None or self._result.done():
            return web.Response(status=409, text="No authorization is in progress.\n")
        if "error" in query:
            error = query.get("error", "")[:80]
            self._result.set_exception(ConnectError("authorization_denied", f"authorization refused: {error}"))
            return web.Response(text="Authorization failed; you can close this window.\n")
        if "code" not in query:
            return web.Response(status=400, text="Missing code.\n")
        self._result.set_result(
            AuthorizationCodeResult(code=query["code"], state=query.get("state"), iss=query.get("iss"))
        )
        return web.Response(text="Signed in to the MCP server; you can close this window.\n")

    async def wait(self, seconds: float) -> AuthorizationCodeResult:
        assert self._result is not None
        try:
            return await asyncio.wait_for(self._result, seconds)
        except TimeoutError:
            raise ConnectError("authorization_timeout", "no authorization came back in time") from None
        finally:
            await self.stop()

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class _EarlyRenewalContext(OAuthContext):
    """Renews a token a little before it expires, and trusts the cached expiry time after a restart."""

    margin: float = 60.0

    def update_token_expiry(self, token: OAuthToken) -> None:
        self.token_expiry_time = renew_at(token.expires_in, self.margin)


class AuthorizationCodeAuth(OAuthClientProvider):
    """The SDK provider with the desktop parts filled in; `authorizations` counts browser round trips."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loopback = LoopbackRedirect(settings.redirect_port)
        preset = None
        if settings.client_id and not settings.client_metadata_url:
            preset = OAuthClientInformationFull(
                client_id=settings.client_id,
                client_secret=settings.client_secret,
                redirect_uris=[self.loopback.redirect_uri],  # type: ignore[list-item]
                token_endpoint_auth_method=_METHODS.get(settings.client_auth, "none"),
            )
        self.storage = FileTokenStorage(settings.token_cache, preset)
        metadata = OAuthClientMetadata(
            client_name=settings.client_name,
            redirect_uris=[self.loopback.redirect_uri],  # type: ignore[list-item]
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
            scope=settings.scope,
        )
        super().__init__(
            server_url=settings.url,
            client_metadata=metadata,
            storage=self.storage,
            redirect_handler=self._open,
            callback_handler=self._callback,
            client_metadata_url=settings.client_metadata_url,
        )
        context = _EarlyRenewalContext(**{f.name: getattr(self.context, f.name) for f in fields(self.context)})
        context.margin = settings.refresh_margin
        self.context = context
        self.authorizations = 0

    async def _initialize(self) -> None:
        await super()._initialize()
        expires_at = self.storage.expires_at()
        if self.context.current_tokens is not None and expires_at is not None:
            lifetime = self.context.current_tokens.expires_in or 0
            self.context.token_expiry_time = expires_at - min(self.settings.refresh_margin, lifetime / 5)
        # Without the discovered metadata the SDK would send a refresh to the MCP server's own /token (it discovers
        # only after a 401), and a restarted helper would need a new sign-in where the refresh token would do.
        found = self.storage.discovery()
        if found and self.context.oauth_metadata is None:
            try:
                self.context.oauth_metadata = OAuthMetadata.model_validate(found["authorization_server"])
                if found.get("protected_resource"):
                    resource = ProtectedResourceMetadata.model_validate(found["protected_resource"])
                    self.context.protected_resource_metadata = resource
                self.context.auth_server_url = found.get("auth_server_url")
            except (KeyError, ValidationError):
                log.info("ignoring the cached authorization server metadata (unreadable)")

    async def _handle_token_response(self, response: httpx2.Response) -> None:
        await super()._handle_token_response(response)
        if self.context.oauth_metadata is not None:
            resource = self.context.protected_resource_metadata
            self.storage.set_discovery({
                "authorization_server": self.context.oauth_metadata.model_dump(mode="json", exclude_none=True),
                "protected_resource": resource.model_dump(mode="json", exclude_none=True) if resource else None,
                "auth_server_url": self.context.auth_server_url,
            })  # fmt: skip

    async def _auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        """The SDK's flow, except that a 401 for a token we still hold is answered with the refresh token first;
        only when that fails (or the server refuses the new token too) does the SDK's sign-in run."""
        flow = super()._auth_flow(request)
        refreshed = False
        try:
            outgoing = await flow.__anext__()
            while True:
                response = yield outgoing
                if outgoing is request and response.status_code == 401 and not refreshed:
                    refreshed = True
                    # The SDK's flow is paused holding the context lock, so the tokens cannot change under us.
                    if self.context.can_refresh_token():
                        log.info("the server refused the access token (401); trying the refresh token")
                        refresh_response = yield await self._refresh_token()
                        if await self._handle_refresh_response(refresh_response):
                            self._add_auth_header(request)
                            response = yield request
                            if response.status_code != 401:
                                return
                        log.info("refreshing did not help; signing in again")
                outgoing = await flow.asend(response)
        except StopAsyncIteration:
            return
        finally:
            await flow.aclose()

    async def _open(self, url: str) -> None:
        self.authorizations += 1
        log.info("authorization %d: signing in", self.authorizations)
        await self.loopback.start()
        if self.settings.auto_authorize:
            await self._follow(url)
        elif self.settings.no_browser or not webbrowser.open(url):
            print(f"cnpg-mcp-connect: open this URL to sign in:\n{url}", file=sys.stderr, flush=True)
        else:
            log.info("opened the browser to sign in")

    async def _callback(self) -> AuthorizationCodeResult:
        timeout = 30.0 if self.settings.auto_authorize else 300.0
        return await self.loopback.wait(timeout)

    async def _follow(self, url: str) -> None:
        """Test and automation mode: follow the authorization redirects over HTTP, as a browser would, until the
        redirect URI; the authorization server must approve without a person (the dev IdP and the conformance
        suite's do)."""
        async with httpx2.AsyncClient(timeout=self.settings.timeout) as browser:
            for _ in range(20):
                try:
                    response = await browser.get(url)
                except httpx2.TransportError as exc:
                    problem = f"authorization request failed: {type(exc).__name__}"
                    raise ConnectError("idp_unreachable", problem) from None
                location = response.headers.get("location")
                if response.status_code not in (301, 302, 303, 307, 308) or not location:
                    if url.startswith(self.loopback.redirect_uri):
                        return
                    raise ConnectError("authorization_failed", f"authorization stopped at HTTP {response.status_code}")
                url = urljoin(url, location)
                # Hosts named "localhost" in a redirect URI resolve to the listener too.
                parts = urlsplit(url)
                if parts.hostname == "localhost" and parts.port == self.loopback.port:
                    url = url.replace("localhost", "127.0.0.1", 1)
        raise ConnectError("authorization_failed", "too many redirects during authorization")

    def close(self) -> None:
        self.loopback.close()
