"""Token modes: each is an `httpx2.Auth` the upstream client and the local proxy share.

`build_auth(settings)` picks the mode; `none` sends no token at all.
"""

from __future__ import annotations

import httpx2

from connect.config import Settings


def build_auth(settings: Settings) -> httpx2.Auth | None:
    """The auth for `settings.auth`, or None."""
    if settings.auth == "token-file":
        from connect.auth.token_file import TokenFileAuth

        assert settings.token_file is not None
        return TokenFileAuth(settings.token_file)
    if settings.auth == "client-credentials":
        from connect.auth.client_credentials import ClientCredentialsAuth

        return ClientCredentialsAuth(settings)
    if settings.auth == "authorization-code":
        from connect.auth.authorization_code import AuthorizationCodeAuth

        return AuthorizationCodeAuth(settings)
    return None
