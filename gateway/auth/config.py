"""Authentication settings read from the environment (OIDC_* and friends).

Placeholder until the auth layer lands: without OIDC_ISSUER auth is off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AuthConfig:
    issuer: str
    audiences: tuple[str, ...]


def load_auth_config(env: Mapping[str, str]) -> AuthConfig | None:
    """Build the auth settings, or None when OIDC_ISSUER is unset (insecure mode)."""
    issuer = env.get("OIDC_ISSUER", "").strip()
    if not issuer:
        return None
    raise NotImplementedError("OIDC auth is not implemented yet")
