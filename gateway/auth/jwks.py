"""Discovery and the signing-key cache.

One `KeySource` per gateway. A background task discovers the JWKS URI (unless OIDC_JWKS_URI is set), loads the key
set and refreshes it before its Cache-Control lifetime ends, retrying with exponential backoff while the IdP is
unreachable. The last good key set is kept through any outage: a failed fetch never empties the cache.

Tokens naming an unknown `kid` may trigger a refetch (a rotation the cache has not seen yet), at most once per
`unknown_kid_refetch_interval`; concurrent callers share one in-flight fetch (single-flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import jwt
import structlog
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from gateway.auth.config import AuthConfig
from gateway.metrics import JWKS_FETCHES, JWKS_KEYS_LOADED

log = structlog.get_logger(component="auth.jwks")

_MAX_DOCUMENT_BYTES = 512 * 1024
_MIN_RSA_BITS = 2048
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)

# Which JWS algorithms a key of each type (and curve) may verify.
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGS = {"P-256": frozenset({"ES256"}), "P-384": frozenset({"ES384"}), "P-521": frozenset({"ES512"})}
_OKP_ALGS = {"Ed25519": frozenset({"EdDSA"}), "Ed448": frozenset({"EdDSA"})}


class FetchError(Exception):
    """Discovery or JWKS retrieval failed; the message is safe to log (no response bodies, no credentials)."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A verification key with the algorithms it may be used with."""

    kid: str | None
    key: Any
    algorithms: frozenset[str]


@dataclass(frozen=True, slots=True)
class KeySet:
    keys: Mapping[str | None, SigningKey]
    ttl: float


def discovery_urls(issuer: str) -> list[str]:
    """OpenID Connect discovery first, then RFC 8414 (path-inserted form, and the appended form some IdPs use)."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    oidc = urlunsplit((parts.scheme, parts.netloc, path + "/.well-known/openid-configuration", "", ""))
    rfc8414 = urlunsplit((parts.scheme, parts.netloc, "/.well-known/oauth-authorization-server" + path, "", ""))
    urls = [oidc, rfc8414]
    if path:
        urls.append(urlunsplit((parts.scheme, parts.netloc, path + "/.well-known/oauth-authorization-server", "", "")))
    return urls


def _usable_algorithms(jwk: Mapping[str, Any], allowed: frozenset[str]) -> frozenset[str]:
    kty = jwk.get("kty")
    if kty == "RSA":
        algs = _RSA_ALGS
    elif kty == "EC":
        algs = _EC_ALGS.get(str(jwk.get("crv")), frozenset())
    elif kty == "OKP":
        algs = _OKP_ALGS.get(str(jwk.get("crv")), frozenset())
    else:
        # "oct" and anything unknown: a symmetric key published in a JWKS is public, never a verifier.
        return frozenset()
    declared = jwk.get("alg")
    if declared is not None:
        algs = algs & {declared}
    return algs & allowed


def parse_jwks(document: Any, allowed: frozenset[str]) -> dict[str | None, SigningKey]:
    """Turn a JWKS document into usable verification keys; unusable entries are skipped, not fatal."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise FetchError("JWKS document has no 'keys' list")
    keys: dict[str | None, SigningKey] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        ops = entry.get("key_ops")
        if isinstance(ops, list) and "verify" not in ops:
            continue
        kid = entry.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        algs = _usable_algorithms(entry, allowed)
        if not algs:
            continue
        try:
            key = jwt.PyJWK(dict(entry), algorithm=sorted(algs)[0]).key
        except Exception:  # a malformed entry (missing or bad members) is skipped, whatever PyJWT raises for it
            continue
        if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            key = key.public_key()  # a JWKS should never carry private parts; use only the public half
        if isinstance(key, ed448.Ed448PrivateKey):
            key = key.public_key()
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < _MIN_RSA_BITS:
            continue
        if kid in keys:
            continue  # duplicate kid: keep the first, as most verifiers do
        keys[kid] = SigningKey(kid=kid, key=key, algorithms=algs)
    # A key without kid is only unambiguous when it is the only key.
    if None in keys and len(keys) > 1:
        del keys[None]
    return keys


def max_age(cache_control: str | None, default: float, low: float, high: float) -> float:
    """Lifetime from Cache-Control, clamped to [low, high]; no-store/no-cache mean "as short as allowed"."""
    if not cache_control:
        return default
    lowered = cache_control.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return low
    match = _MAX_AGE.search(cache_control)
    if not match:
        return default
    return float(min(max(int(match.group(1)), low), high))


class KeySource:
    """Owns the IdP HTTP client, the discovered metadata and the current key set."""

    def __init__(self, cfg: AuthConfig) -> None:
        self._cfg = cfg
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._jwks_uri: str | None = cfg.jwks_uri
        self._keyset: KeySet | None = None
        self._etag: str | None = None
        self._inflight: asyncio.Task[KeySet] | None = None
        self._last_kid_refetch = float("-inf")
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = float("-inf")
        self._metadata_inflight: asyncio.Task[dict[str, Any]] | None = None
        self._wake = asyncio.Event()

    # Lifecycle -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._cfg.http_timeout),
            headers={"Accept": "application/json"},
        )
        self._task = asyncio.create_task(self._run(), name="jwks-refresh")

    async def close(self) -> None:
        tasks = [t for t in (self._task, self._inflight, self._metadata_inflight) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = self._inflight = self._metadata_inflight = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # Queries ---------------------------------------------------------------------------------------------------

    def is_ready(self) -> bool:
        return self._keyset is not None and bool(self._keyset.keys)

    @property
    def jwks_uri(self) -> str | None:
        return self._jwks_uri

    def lookup(self, kid: str | None) -> SigningKey | None:
        """The key a token names; with no kid, the only key when the set has exactly one."""
        keyset = self._keyset
        if keyset is None:
            return None
        if kid is None:
            if len(keyset.keys) == 1:
                return next(iter(keyset.keys.values()))
            return None
        return keyset.keys.get(kid)

    def has_key(self, kid: str | None) -> bool:
        return self.lookup(kid) is not None

    async def refetch_for_unknown_kid(self) -> bool:
        """Refetch after a token named an unknown key; False when rate-limited or the fetch failed."""
        inflight = self._inflight
        if inflight is not None:
            try:
                await asyncio.shield(inflight)
            except FetchError:
                return False
            return True
        now = time.monotonic()
        if now - self._last_kid_refetch < self._cfg.unknown_kid_refetch_interval:
            return False
        self._last_kid_refetch = now
        try:
            await self.refresh()
            return True
        except FetchError:
            # The IdP is down or broken: let the background loop retry with backoff, so a rotation that
            # happened during the outage is picked up soon after the IdP returns, without any request paying.
            self._wake.set()
            return False

    async def refresh(self) -> KeySet:
        """Fetch the key set now, sharing a fetch already under way."""
        if self._inflight is None:
            task = asyncio.create_task(self._fetch_keys(), name="jwks-fetch")
            self._inflight = task
            task.add_done_callback(self._clear_inflight)
        return await asyncio.shield(self._inflight)

    def _clear_inflight(self, task: asyncio.Task[KeySet]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # mark retrieved: callers that were cancelled must not leave a warning behind

    async def metadata(self) -> dict[str, Any] | None:
        """The IdP's authorization server metadata, refetched after `metadata_ttl`; stale when the IdP is down."""
        if self._metadata is not None and time.monotonic() - self._metadata_at < self._cfg.metadata_ttl:
            return self._metadata
        if self._metadata_inflight is None:
            task = asyncio.create_task(self._discover(), name="oidc-discovery")
            self._metadata_inflight = task
            task.add_done_callback(self._clear_metadata_inflight)
        try:
            return await asyncio.shield(self._metadata_inflight)
        except FetchError:
            return self._metadata

    def _clear_metadata_inflight(self, task: asyncio.Task[dict[str, Any]]) -> None:
        if self._metadata_inflight is task:
            self._metadata_inflight = None
        if not task.cancelled():
            task.exception()

    # Background work -------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self._cfg.retry_initial
        while True:
            try:
                if self._jwks_uri is None:
                    await self.metadata()  # failures are logged there and retried below
                    if self._jwks_uri is None:
                        raise FetchError("no JWKS URI")
                keyset = await self.refresh()
                delay = self._cfg.retry_initial
                # Refresh before the lifetime ends so a rotation is picked up without any request paying for it.
                wait = max(keyset.ttl * 0.8, 1.0)
            except FetchError:
                wait = delay * (0.8 + 0.4 * random.random())
                delay = min(delay * 2, self._cfg.retry_max)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("JWKS refresh loop error")
                wait = delay
                delay = min(delay * 2, self._cfg.retry_max)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _get_json(self, url: str, headers: Mapping[str, str] | None = None) -> tuple[int, Any, Any]:
        if self._session is None:
            raise FetchError("key source is not started")
        try:
            async with self._session.get(url, headers=headers, allow_redirects=False) as resp:
                if resp.status == 304:
                    return 304, None, resp.headers
                if resp.status != 200:
                    raise FetchError(f"HTTP {resp.status} from {url}")
                # Read to the end (a single read() may return only the first chunk) but never past the limit.
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(65536):
                    size += len(chunk)
                    if size > _MAX_DOCUMENT_BYTES:
                        raise FetchError(f"document from {url} is too large")
                    chunks.append(chunk)
                body = b"".join(chunks)
                try:
                    return 200, json.loads(body), resp.headers
                except ValueError:
                    raise FetchError(f"document from {url} is not JSON") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FetchError(f"{type(exc).__name__} fetching {url}") from None

    async def _discover(self) -> dict[str, Any]:
        errors: list[str] = []
        for url in discovery_urls(self._cfg.issuer):
            try:
                _, doc, _ = await self._get_json(url)
            except FetchError as exc:
                JWKS_FETCHES.labels(outcome="error").inc()
                errors.append(str(exc))
                continue
            if not isinstance(doc, dict):
                JWKS_FETCHES.labels(outcome="error").inc()
                errors.append(f"{url} is not a JSON object")
                continue
            if doc.get("issuer") != self._cfg.issuer:
                # RFC 8414 section 3.3 / OIDC Discovery 4.3: a mismatching issuer means the document is not ours.
                JWKS_FETCHES.labels(outcome="error").inc()
                errors.append(f"{url} names issuer {str(doc.get('issuer'))[:200]!r}, expected OIDC_ISSUER")
                continue
            JWKS_FETCHES.labels(outcome="success").inc()
            jwks_uri = doc.get("jwks_uri")
            if self._cfg.jwks_uri is None:
                if not isinstance(jwks_uri, str) or urlsplit(jwks_uri).scheme not in ("http", "https"):
                    errors.append(f"{url} has no usable jwks_uri")
                    continue
                self._jwks_uri = jwks_uri
            self._metadata = doc
            self._metadata_at = time.monotonic()
            return doc
        log.warning("Failed to discover JWKS URI", issuer=self._cfg.issuer, errors=errors)
        raise FetchError("discovery failed")

    async def _fetch_keys(self) -> KeySet:
        uri = self._jwks_uri
        if uri is None:
            raise FetchError("no JWKS URI")
        cfg = self._cfg
        headers = {"If-None-Match": self._etag} if self._etag and self._keyset is not None else None
        try:
            status, doc, resp_headers = await self._get_json(uri, headers)
            ttl = max_age(resp_headers.get("Cache-Control"), cfg.jwks_default_ttl, cfg.jwks_min_ttl, cfg.jwks_max_ttl)
            if status == 304 and self._keyset is not None:
                JWKS_FETCHES.labels(outcome="not_modified").inc()
                keyset = KeySet(keys=self._keyset.keys, ttl=ttl)
            else:
                try:
                    keys = parse_jwks(doc, cfg.algorithms)
                except FetchError:
                    raise
                except Exception as exc:  # an IdP bug must become a failed fetch, never a 500 for a caller
                    raise FetchError(f"JWKS at {uri} could not be parsed ({type(exc).__name__})") from None
                if not keys:
                    raise FetchError(f"JWKS at {uri} has no usable signing key")
                JWKS_FETCHES.labels(outcome="success").inc()
                keyset = KeySet(keys=keys, ttl=ttl)
                self._etag = resp_headers.get("ETag")
        except FetchError as exc:
            JWKS_FETCHES.labels(outcome="error").inc()
            log.warning("Failed to fetch JWKS", jwks_uri=uri, error=str(exc), keeping_keys=self._keyset is not None)
            raise
        previous = self._keyset
        self._keyset = keyset
        JWKS_KEYS_LOADED.set(len(keyset.keys))
        if previous is None or set(previous.keys) != set(keyset.keys):
            log.info("JWKS loaded", jwks_uri=uri, kids=sorted(str(k) for k in keyset.keys), ttl=ttl)
        return keyset
