"""Authentication settings read from the environment (OIDC_* and friends).

Auth is on when OIDC_ISSUER is set; every other variable is validated here and a bad value raises `ConfigError`
naming the variable, so the gateway refuses to start rather than run with a half-understood policy.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.errors import ConfigError

SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
"""Asymmetric JWS algorithms only: `none` and the HMAC family can never be enabled (a public key is not a secret)."""

DEFAULT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
DEFAULT_SCOPE = "openid"
DEFAULT_LEEWAY = 30
DEFAULT_MAX_TOKEN_BYTES = 8192
MIN_MAX_TOKEN_BYTES = 256
MAX_MAX_TOKEN_BYTES = 65536
MAX_LEEWAY = 300

# A scope token per RFC 6749 section 3.3: printable ASCII without space, double quote or backslash.
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")


@dataclass(frozen=True, slots=True)
class ToolScopeRule:
    """Tools whose name matches `pattern` (an fnmatch glob, case-sensitive) need every scope in `scopes`."""

    pattern: str
    scopes: frozenset[str]

    def matches(self, tool: str) -> bool:
        return fnmatch.fnmatchcase(tool, self.pattern)


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Everything the OIDC layer needs; built once from the environment."""

    issuer: str
    audiences: tuple[str, ...]
    jwks_uri: str | None = None
    dcr_proxy_url: str | None = None
    required_scopes: frozenset[str] = frozenset({DEFAULT_SCOPE})
    public_url: str | None = None
    mcp_path: str = "/mcp"
    """Path of the MCP endpoint: the protected resource is PUBLIC_URL + mcp_path."""
    leeway: int = DEFAULT_LEEWAY
    tool_scopes: tuple[ToolScopeRule, ...] = ()
    algorithms: frozenset[str] = frozenset(DEFAULT_ALGORITHMS)
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES
    # Tunables below are not read from the environment; tests shorten them.
    jwks_default_ttl: float = 300.0
    """Key set lifetime when the JWKS response carries no usable Cache-Control max-age."""
    jwks_min_ttl: float = 60.0
    jwks_max_ttl: float = 86400.0
    unknown_kid_refetch_interval: float = 10.0
    """At most one JWKS refetch per this many seconds is triggered by tokens naming an unknown `kid`."""
    retry_initial: float = 0.5
    retry_max: float = 30.0
    http_timeout: float = 5.0
    metadata_ttl: float = 300.0
    token_cache_size: int = 10000

    def scopes_for_tool(self, tool: str) -> frozenset[str]:
        """Scopes needed to call `tool`: the first matching TOOL_SCOPES rule wins, no match needs nothing extra."""
        for rule in self.tool_scopes:
            if rule.matches(tool):
                return rule.scopes
        return frozenset()

    def all_scopes(self) -> list[str]:
        """Every scope this resource understands (for scopes_supported), sorted for stable documents."""
        scopes = set(self.required_scopes)
        for rule in self.tool_scopes:
            scopes |= rule.scopes
        return sorted(scopes)


def _url(env: Mapping[str, str], name: str, *, required: bool = False) -> str | None:
    value = env.get(name, "").strip()
    if not value:
        if required:
            raise ConfigError(f"{name} is required")
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} must be an absolute http(s) URL, got {value!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"{name} must not carry a query or fragment")
    if "@" in parts.netloc:
        # URLs are logged (discovery failures); credentials never belong in them.
        raise ConfigError(f"{name} must not contain credentials")
    return value


def _scopes(name: str, raw: str) -> frozenset[str]:
    scopes = raw.replace(",", " ").split()
    for scope in scopes:
        if not _SCOPE_TOKEN.match(scope):
            raise ConfigError(f"{name}: {scope!r} is not a valid scope token")
    return frozenset(scopes)


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def parse_tool_scopes(raw: str) -> tuple[ToolScopeRule, ...]:
    """Parse TOOL_SCOPES.

    Two spellings, both ordered (first match wins):
    - ``list_*=cnpg:read get_*=cnpg:read *=cnpg:write``: whitespace-separated ``glob=scope[,scope...]`` rules;
    - a JSON object ``{"list_*": "cnpg:read", "*": ["cnpg:write"]}`` (value a scope string or a list of scopes).
    """
    raw = raw.strip()
    if not raw:
        return ()
    pairs: list[tuple[str, str | list[str]]] = []
    if raw.startswith("{"):
        try:
            decoded = json.loads(raw, object_pairs_hook=list)
        except ValueError as exc:
            raise ConfigError(f"TOOL_SCOPES is not valid JSON: {exc}") from None
        if not isinstance(decoded, list):
            raise ConfigError("TOOL_SCOPES JSON must be an object")
        for pattern, value in decoded:
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                pairs.append((pattern, value))
            elif isinstance(value, str):
                pairs.append((pattern, value))
            else:
                raise ConfigError(f"TOOL_SCOPES: the value for {pattern!r} must be a scope string or a list of them")
    else:
        for item in raw.split():
            pattern, sep, scopes = item.partition("=")
            if not sep:
                raise ConfigError(f"TOOL_SCOPES: {item!r} is not of the form pattern=scope[,scope...]")
            pairs.append((pattern, scopes))
    rules: list[ToolScopeRule] = []
    for pattern, value in pairs:
        if not pattern or any(c.isspace() for c in pattern):
            raise ConfigError(f"TOOL_SCOPES: {pattern!r} is not a valid tool name pattern")
        rule_scopes = _scopes("TOOL_SCOPES", " ".join(value) if isinstance(value, list) else value)
        if not rule_scopes:
            raise ConfigError(f"TOOL_SCOPES: the rule for {pattern!r} names no scope")
        rules.append(ToolScopeRule(pattern=pattern, scopes=rule_scopes))
    return tuple(rules)


def load_auth_config(env: Mapping[str, str]) -> AuthConfig | None:
    """Build the auth settings, or None when OIDC_ISSUER is unset (insecure mode)."""
    issuer = env.get("OIDC_ISSUER", "").strip()
    if not issuer:
        return None
    _url(env, "OIDC_ISSUER", required=True)

    audiences = tuple(a.strip() for a in env.get("OIDC_AUDIENCE", "").split(",") if a.strip())
    if not audiences:
        raise ConfigError("OIDC_AUDIENCE is required when OIDC_ISSUER is set (comma-separated list allowed)")

    raw_algs = env.get("OIDC_ALGORITHMS", "").replace(",", " ").split()
    algorithms = frozenset(raw_algs or DEFAULT_ALGORITHMS)
    bad = sorted(a for a in algorithms if a not in SUPPORTED_ALGORITHMS)
    if bad:
        raise ConfigError(
            f"OIDC_ALGORITHMS: {', '.join(bad)} not allowed; choose from {' '.join(sorted(SUPPORTED_ALGORITHMS))}"
        )

    scope_raw = env.get("OIDC_SCOPE")
    required_scopes = _scopes("OIDC_SCOPE", DEFAULT_SCOPE if scope_raw is None else scope_raw)

    public_url = _url(env, "PUBLIC_URL")
    mcp_path = env.get("MCP_PATH", "").strip() or "/mcp"
    if not mcp_path.startswith("/") or any(c.isspace() or c in "?#" for c in mcp_path):
        raise ConfigError(f"MCP_PATH must be a URL path starting with '/', got {mcp_path!r}")
    return AuthConfig(
        issuer=issuer,
        audiences=audiences,
        jwks_uri=_url(env, "OIDC_JWKS_URI"),
        dcr_proxy_url=_url(env, "DCR_PROXY_URL"),
        required_scopes=required_scopes,
        public_url=public_url.rstrip("/") if public_url else None,
        mcp_path=mcp_path.rstrip("/") or "/",
        leeway=_int(env, "OIDC_LEEWAY", DEFAULT_LEEWAY, 0, MAX_LEEWAY),
        tool_scopes=parse_tool_scopes(env.get("TOOL_SCOPES", "")),
        algorithms=algorithms,
        max_token_bytes=_int(env, "MAX_TOKEN_BYTES", DEFAULT_MAX_TOKEN_BYTES, MIN_MAX_TOKEN_BYTES, MAX_MAX_TOKEN_BYTES),
    )
