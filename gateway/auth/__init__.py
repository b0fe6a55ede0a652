"""OIDC bearer-token authentication for the gateway.

`build_authenticator(load_auth_config(env))` gives the `gateway.security.Authenticator` the transport uses.
"""

from __future__ import annotations

from gateway.auth.authenticator import OidcAuthenticator
from gateway.auth.config import AuthConfig, load_auth_config
from gateway.security import Authenticator

__all__ = ["AuthConfig", "OidcAuthenticator", "build_authenticator", "load_auth_config"]


def build_authenticator(cfg: AuthConfig) -> Authenticator:
    """The OIDC authenticator for `cfg`; call start() on startup and close() on shutdown."""
    return OidcAuthenticator(cfg)
