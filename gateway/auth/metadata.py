"""OAuth metadata documents the gateway serves without authentication.

- RFC 9728 protected resource metadata at /.well-known/oauth-protected-resource/mcp (the path-inserted form for the
  /mcp resource, or whatever MCP_PATH is) and at /.well-known/oauth-protected-resource (clients that try the root).
- RFC 8414 authorization server metadata at /.well-known/oauth-authorization-server: the IdP's own document,
  mirrored for clients from the 2025-03-26 MCP era that look for it on the MCP server's origin. The issuer is never
  rewritten (clients must check it against the token issuer); only registration_endpoint (DCR_PROXY_URL) and
  scopes_supported are adjusted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.auth.config import AuthConfig
from gateway.auth.jwks import KeySource

PRM_PATH = "/.well-known/oauth-protected-resource"
AS_PATH = "/.well-known/oauth-authorization-server"


def base_url(cfg: AuthConfig, request: web.BaseRequest | None) -> str:
    """PUBLIC_URL, or else the origin the request reached us on (fine for local runs; set PUBLIC_URL behind a proxy)."""
    if cfg.public_url:
        return cfg.public_url
    if request is not None:
        return f"{request.scheme}://{request.host}"
    return ""


def resource_metadata_url(cfg: AuthConfig, base: str) -> str:
    """RFC 9728 section 3.1: the well-known path with the resource's path appended."""
    return f"{base}{PRM_PATH}{_suffix(cfg)}"


def _suffix(cfg: AuthConfig) -> str:
    return "" if cfg.mcp_path == "/" else cfg.mcp_path


def protected_resource_metadata(cfg: AuthConfig, base: str) -> dict[str, Any]:
    return {
        "resource": f"{base}{_suffix(cfg) or '/'}",
        "authorization_servers": [cfg.issuer],
        "scopes_supported": cfg.all_scopes(),
        "bearer_methods_supported": ["header"],
        "resource_signing_alg_values_supported": sorted(cfg.algorithms),
        "resource_name": "cnpg-mcp",
    }


def authorization_server_metadata(cfg: AuthConfig, idp: dict[str, Any]) -> dict[str, Any]:
    doc = dict(idp)
    if cfg.dcr_proxy_url:
        doc["registration_endpoint"] = cfg.dcr_proxy_url
    supported = doc.get("scopes_supported")
    scopes = set(supported) if isinstance(supported, list) else set()
    doc["scopes_supported"] = sorted(scopes | set(cfg.all_scopes()))
    return doc


_CACHE_HEADERS = {"Cache-Control": "public, max-age=300"}


def metadata_routes(cfg: AuthConfig, keys: KeySource) -> list[web.RouteDef]:
    def prm_handler() -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            doc = protected_resource_metadata(cfg, base_url(cfg, request))
            return web.json_response(doc, headers=_CACHE_HEADERS)

        return handler

    async def as_handler(request: web.Request) -> web.Response:
        idp = await keys.metadata()
        if idp is None:
            return web.json_response(
                {"error": "temporarily_unavailable", "error_description": "Authorization server metadata unavailable"},
                status=503,
                headers={"Retry-After": "5"},
            )
        return web.json_response(authorization_server_metadata(cfg, idp), headers=_CACHE_HEADERS)

    routes = [web.get(PRM_PATH, prm_handler()), web.get(AS_PATH, as_handler)]
    if _suffix(cfg):
        routes.insert(0, web.get(f"{PRM_PATH}{cfg.mcp_path}", prm_handler()))
    return routes
