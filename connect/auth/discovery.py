"""Where to look for OAuth metadata: the discovery URL lists MCP clients use (RFC 9728, RFC 8414, OIDC).

The same order as the MCP SDK's client, without importing the SDK: importing `mcp` loads the whole SDK (server
included), about a second and a half of start-up that the client-credentials mode does not need.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def protected_resource_metadata_urls(challenge_url: str | None, server_url: str) -> list[str]:
    """The 401's `resource_metadata`, then the path-based and the root well-known URLs (RFC 9728, SEP-985)."""
    urls = [challenge_url] if challenge_url else []
    path = urlsplit(server_url).path
    if path and path != "/":
        urls.append(f"{_origin(server_url)}/.well-known/oauth-protected-resource{path}")
    urls.append(f"{_origin(server_url)}/.well-known/oauth-protected-resource")
    return urls


def authorization_server_metadata_urls(auth_server: str | None, server_url: str) -> list[str]:
    """RFC 8414 and OpenID discovery URLs for an issuer; without one, the 2025-03-26 fallback on the server."""
    if not auth_server:
        return [f"{_origin(server_url)}/.well-known/oauth-authorization-server"]
    base, path = _origin(auth_server), urlsplit(auth_server).path.rstrip("/")
    if path:
        return [
            f"{base}/.well-known/oauth-authorization-server{path}",
            f"{base}/.well-known/openid-configuration{path}",
            f"{base}{path}/.well-known/openid-configuration",
        ]
    return [f"{base}/.well-known/oauth-authorization-server", f"{base}/.well-known/openid-configuration"]


def canonical_resource(server_url: str) -> str:
    """The RFC 8707 resource for a server URL: lower-case scheme and host, no fragment."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower(), fragment=""))
