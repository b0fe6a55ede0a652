"""What the token modes share: expiry with an early renewal margin, challenge parsing, error wording."""

from __future__ import annotations

import re
import time

import httpx2

from connect.errors import ConnectError

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def challenge_params(response: httpx2.Response) -> dict[str, str]:
    """Parameters of a Bearer `WWW-Authenticate` challenge (error, scope, resource_metadata...)."""
    header = response.headers.get("www-authenticate", "")
    if not header.lower().startswith("bearer"):
        return {}
    return {m[1].lower(): (m[2] if m[2] else m[3]) for m in _PARAM.finditer(header[6:])}


def renew_at(expires_in: float | None, margin: float, now: float | None = None) -> float | None:
    """When to renew a token that lives `expires_in` seconds: `margin` early, at most a fifth of its life early."""
    if expires_in is None:
        return None
    now = time.time() if now is None else now
    return now + expires_in - min(margin, expires_in / 5)


def union_scope(first: str | None, second: str | None) -> str | None:
    """Both scope lists, order kept, no duplicates."""
    words: list[str] = []
    for scope in (first, second):
        for word in (scope or "").split():
            if word not in words:
                words.append(word)
    return " ".join(words) or None


def idp_unreachable(url: str, exc: Exception) -> ConnectError:
    host = httpx2.URL(url).host
    return ConnectError("idp_unreachable", f"cannot reach the identity provider at {host}: {type(exc).__name__}")


def token_refused(status: int, body: bytes) -> ConnectError:
    """One line for a refused token request: the OAuth error code and description, never the request."""
    error, description = "", ""
    try:
        import json

        doc = json.loads(body)
        error = str(doc.get("error", ""))[:80]
        description = str(doc.get("error_description", ""))[:200]
    except ValueError:
        pass
    if error == "invalid_client" or status == 401:
        hint = "the identity provider refused the client credentials (check the client ID and secret or key)"
        return ConnectError("bad_client_credentials", f"{hint}: {error or status} {description}".strip())
    return ConnectError("token_refused", f"token request refused ({status} {error}): {description}".strip())
