"""Token in, verified `Principal` or a typed `AuthError` out.

Checks, in order: size, shape, header algorithm against the allow-list, `kid` against the key set (one refetch for
an unknown kid), algorithm against the key's type, signature, then exp/nbf/iat (with leeway), iss and aud (all via
PyJWT). A verified token is cached by the SHA-256 of its text until it expires, so a repeat request costs a hash and
a dictionary look-up; the cache entry is dropped when its key leaves the key set.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import jwt

from gateway.auth.config import AuthConfig
from gateway.auth.jwks import KeySource
from gateway.auth.refusals import REASONS
from gateway.security import Principal

# Base64url characters and dots: anything else cannot be a compact JWS, so it is refused before any parsing.
_COMPACT_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")

_DECODER = jwt.PyJWT(
    options={
        "require": ["exp", "iss", "aud"],
        "verify_signature": True,
        "verify_exp": True,
        "verify_nbf": True,
        "verify_iat": True,
        "verify_aud": True,
        "verify_iss": True,
    }
)


class AuthError(Exception):
    """Why a token was refused: `reason` names a row of `gateway.auth.refusals.REFUSALS`, `description` is shown
    to the caller."""

    def __init__(self, reason: str, description: str) -> None:
        assert reason in REASONS, reason
        super().__init__(description)
        self.reason = reason
        self.description = description


@dataclass(frozen=True, slots=True)
class _Cached:
    principal: Principal
    kid: str | None
    not_after: float


class TokenVerifier:
    """Verifies bearer tokens against the configured issuer, audiences and the key set."""

    def __init__(self, cfg: AuthConfig, keys: KeySource) -> None:
        self._cfg = cfg
        self._keys = keys
        self._audiences = list(cfg.audiences)
        self._cache: OrderedDict[bytes, _Cached] = OrderedDict()

    def cached(self, token: str) -> Principal | None:
        """The principal for a token verified before, if it is still valid and its key still listed."""
        digest = hashlib.sha256(token.encode()).digest()
        entry = self._cache.get(digest)
        if entry is None:
            return None
        if time.time() >= entry.not_after or not self._keys.has_key(entry.kid):
            del self._cache[digest]
            return None
        self._cache.move_to_end(digest)
        return entry.principal

    async def verify(self, token: str) -> Principal:
        """Verify `token` fully (no cache look-up) and remember the result."""
        cfg = self._cfg
        if len(token) > cfg.max_token_bytes:
            raise AuthError("token_too_large", f"Token exceeds {cfg.max_token_bytes} bytes")
        if not _COMPACT_JWS.match(token):
            raise AuthError("malformed", "Token is not a compact JWS")
        header = _header(token)

        alg = header.get("alg")
        if not isinstance(alg, str):
            raise AuthError("malformed", "Token header has no alg")
        if alg not in cfg.algorithms:
            raise AuthError("disallowed_alg", "Token algorithm is not allowed")
        if "crit" in header:
            # RFC 7515 section 4.1.11: we understand no extensions, so a critical one must be refused.
            raise AuthError("malformed", "Token header has unsupported critical parameters")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthError("malformed", "Token kid is not a string")

        key = self._keys.lookup(kid)
        if key is None:
            if not self._keys.is_ready():
                await self._keys.refetch_for_unknown_kid()
                if not self._keys.is_ready():
                    raise AuthError("jwks_unavailable", "Signing keys are not available yet")
            else:
                await self._keys.refetch_for_unknown_kid()
            key = self._keys.lookup(kid)
            if key is None:
                if kid is None:
                    raise AuthError("unknown_kid", "Token has no kid and the key set has more than one key")
                raise AuthError("unknown_kid", "Token signing key is not known")
        if alg not in key.algorithms:
            raise AuthError("disallowed_alg", "Token algorithm does not match its key")

        try:
            # `algorithms` comes from the header only after it passed the allow-list and matched the key's type,
            # which is what RFC 8725 section 3.1 asks for.
            claims: dict[str, Any] = _DECODER.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self._audiences,
                issuer=cfg.issuer,
                leeway=cfg.leeway,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("expired", "Token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("not_yet_valid", "Token is not yet valid") from None
        except jwt.InvalidIssuerError:
            raise AuthError("invalid_issuer", "Invalid issuer") from None
        except jwt.InvalidAudienceError:
            raise AuthError("invalid_audience", "Invalid audience") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError("missing_claim", f"Token lacks the {exc.claim} claim") from None
        except jwt.InvalidSignatureError:
            raise AuthError("bad_signature", "Token verification failed") from None
        except jwt.PyJWTError:
            raise AuthError("malformed", "Token verification failed") from None

        principal = self._principal(claims)
        self._remember(token, principal, kid)
        return principal

    def _principal(self, claims: dict[str, Any]) -> Principal:
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise AuthError("malformed", "Token exp is not a number")
        client_id = claims.get("client_id", claims.get("azp"))
        if client_id is not None and not isinstance(client_id, str):
            raise AuthError("malformed", "Token client_id is not a string")
        sub = claims.get("sub")
        if sub is not None and not isinstance(sub, str):
            raise AuthError("malformed", "Token sub is not a string")
        # Client-credentials tokens from some IdPs carry no sub; the client is then the caller.
        subject = sub or client_id
        if not subject:
            raise AuthError("missing_claim", "Token lacks the sub claim")
        return Principal(
            subject=f"{claims['iss']}|{subject}",
            client_id=client_id,
            scopes=_scopes(claims),
            expires_at=float(exp),
            claims=MappingProxyType(claims),
        )

    def _remember(self, token: str, principal: Principal, kid: str | None) -> None:
        digest = hashlib.sha256(token.encode()).digest()
        self._cache[digest] = _Cached(principal, kid, principal.expires_at + self._cfg.leeway)
        self._cache.move_to_end(digest)
        while len(self._cache) > self._cfg.token_cache_size:
            self._cache.popitem(last=False)


def _header(token: str) -> dict[str, Any]:
    """The JOSE header, only to choose the key and algorithm.

    Parsed here rather than with jwt.get_unverified_header, which re-validates every segment character by character
    (about 40 us for a typical token); PyJWT's decode below still checks the whole token strictly, header included.
    """
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error):
        raise AuthError("malformed", "Token header is not valid") from None
    if not isinstance(header, dict):
        raise AuthError("malformed", "Token header is not valid")
    return header


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    """Scopes from `scope` (RFC 9068, space-separated) or `scp` (a list or a string, as some IdPs send)."""
    raw = claims.get("scope", claims.get("scp"))
    if raw is None:
        return frozenset()
    if isinstance(raw, str):
        return frozenset(raw.split())
    if isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        return frozenset(raw)
    raise AuthError("malformed", "Token scope claim is not a string or a list of strings")
