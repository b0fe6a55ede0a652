"""Authentication settings (OIDC_* and friends): each an environment variable and a flag, one parser for both.

Auth is on when OIDC_ISSUER is set. A bad value raises `ConfigError` naming the variable and the flag, so the
gateway refuses to start rather than run with a half-understood policy. gateway/config.py reads these settings
together with its own; `load_auth_config` reads them from an environment alone (tests, benchmarks).
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import ConfigError
from gateway.settings import MCP_PATH, PUBLIC_URL, Setting, integer, read_settings, url

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
    """Everything the OIDC layer needs; built once from the settings (`build_auth_config`)."""

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
    # Tunables below are not settings; tests shorten them.
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


def parse_scopes(raw: str) -> frozenset[str]:
    """Scope tokens separated by spaces or commas; empty means none."""
    scopes = raw.replace(",", " ").split()
    for scope in scopes:
        if not _SCOPE_TOKEN.match(scope):
            raise ConfigError(f"{scope!r} is not a valid scope token")
    return frozenset(scopes)


def parse_audiences(raw: str) -> tuple[str, ...]:
    """Comma-separated audiences, in order."""
    return tuple(a.strip() for a in raw.split(",") if a.strip())


def parse_algorithms(raw: str) -> frozenset[str]:
    """JWS algorithm names separated by spaces or commas; only asymmetric ones."""
    algorithms = frozenset(raw.replace(",", " ").split())
    if not algorithms:
        raise ConfigError(f"must name at least one of {' '.join(sorted(SUPPORTED_ALGORITHMS))}")
    bad = sorted(a for a in algorithms if a not in SUPPORTED_ALGORITHMS)
    if bad:
        raise ConfigError(f"{', '.join(bad)} not allowed; choose from {' '.join(sorted(SUPPORTED_ALGORITHMS))}")
    return algorithms


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
            raise ConfigError(f"is not valid JSON: {exc}") from None
        if not isinstance(decoded, list):
            raise ConfigError("JSON must be an object")
        for pattern, value in decoded:
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                pairs.append((pattern, value))
            elif isinstance(value, str):
                pairs.append((pattern, value))
            else:
                raise ConfigError(f"the value for {pattern!r} must be a scope string or a list of them")
    else:
        for item in raw.split():
            pattern, sep, scopes = item.partition("=")
            if not sep:
                raise ConfigError(f"{item!r} is not of the form pattern=scope[,scope...]")
            pairs.append((pattern, scopes))
    rules: list[ToolScopeRule] = []
    for pattern, value in pairs:
        if not pattern or any(c.isspace() for c in pattern):
            raise ConfigError(f"{pattern!r} is not a valid tool name pattern")
        rule_scopes = parse_scopes(" ".join(value) if isinstance(value, list) else value)
        if not rule_scopes:
            raise ConfigError(f"the rule for {pattern!r} names no scope")
        rules.append(ToolScopeRule(pattern=pattern, scopes=rule_scopes))
    return tuple(rules)


AUTH_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "issuer",
        "OIDC_ISSUER",
        "--oidc-issuer",
        url,
        "Issuer URL; turns authentication on. Tokens' iss must equal it exactly (default unset: auth off).",
    ),
    Setting(
        "audiences",
        "OIDC_AUDIENCE",
        "--oidc-audience",
        parse_audiences,
        "Accepted aud values, comma-separated; required with OIDC_ISSUER. With RFC 8707 resource indicators this "
        "is PUBLIC_URL + MCP_PATH.",
    ),
    Setting("jwks_uri", "OIDC_JWKS_URI", "--oidc-jwks-uri", url, "Key set URL; skips discovery for keys."),
    Setting(
        "required_scopes",
        "OIDC_SCOPE",
        "--oidc-scope",
        parse_scopes,
        f"Scopes every token must carry, space-separated; empty means none (default {DEFAULT_SCOPE}).",
    ),
    Setting(
        "tool_scopes",
        "TOOL_SCOPES",
        "--tool-scopes",
        parse_tool_scopes,
        "Extra scopes per tool, first match wins: 'list_*=cnpg:read *=cnpg:write' or an ordered JSON object.",
    ),
    Setting(
        "algorithms",
        "OIDC_ALGORITHMS",
        "--oidc-algorithms",
        parse_algorithms,
        f"Allowed JWS algorithms, asymmetric only (default {' '.join(DEFAULT_ALGORITHMS)}).",
    ),
    Setting(
        "leeway",
        "OIDC_LEEWAY",
        "--oidc-leeway",
        integer(0, MAX_LEEWAY),
        f"Clock skew in seconds for exp, nbf and iat, 0 to {MAX_LEEWAY} (default {DEFAULT_LEEWAY}).",
    ),
    Setting(
        "max_token_bytes",
        "MAX_TOKEN_BYTES",
        "--max-token-bytes",
        integer(MIN_MAX_TOKEN_BYTES, MAX_MAX_TOKEN_BYTES),
        f"Longer tokens are refused before parsing, {MIN_MAX_TOKEN_BYTES} to {MAX_MAX_TOKEN_BYTES} "
        f"(default {DEFAULT_MAX_TOKEN_BYTES}).",
    ),
    Setting(
        "dcr_proxy_url",
        "DCR_PROXY_URL",
        "--dcr-proxy-url",
        url,
        "Registration endpoint advertised in the mirrored authorization server metadata instead of the IdP's.",
    ),
)
"""The auth layer's own settings; it also reads PUBLIC_URL and MCP_PATH (gateway.settings)."""

_FIELDS = frozenset(s.name for s in AUTH_SETTINGS) | {PUBLIC_URL.name, MCP_PATH.name}


def build_auth_config(values: Mapping[str, Any]) -> AuthConfig | None:
    """The auth settings from parsed values (field name -> value), or None when no issuer is set (insecure mode)."""
    if not values.get("issuer"):
        return None
    if not values.get("audiences"):
        raise ConfigError(
            "OIDC_AUDIENCE (--oidc-audience): required when OIDC_ISSUER is set (comma-separated list allowed)"
        )
    return AuthConfig(**{name: value for name, value in values.items() if name in _FIELDS})


def load_auth_config(env: Mapping[str, str]) -> AuthConfig | None:
    """The auth settings from environment variables alone, parsed as the gateway parses them."""
    return build_auth_config(read_settings((*AUTH_SETTINGS, PUBLIC_URL, MCP_PATH), None, env))
