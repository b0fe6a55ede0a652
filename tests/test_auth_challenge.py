"""WWW-Authenticate challenges parse back to what was meant, whatever the text (RFC 6750, RFC 9110 quoting)."""

from __future__ import annotations

import pytest

from gateway.auth.challenge import bearer_challenge, quote
from tests.fixtures.idp import parse_challenge

META = "https://mcp.example/.well-known/oauth-protected-resource/mcp"


def test_no_error_attributes_when_credentials_were_missing() -> None:
    scheme, params = parse_challenge(bearer_challenge(resource_metadata=META, scope="openid"))
    assert scheme == "Bearer"
    assert params == {"resource_metadata": META, "scope": "openid"}


def test_error_challenge_carries_all_attributes() -> None:
    header = bearer_challenge(
        resource_metadata=META, error="insufficient_scope", description="Needs cnpg:write", scope="openid cnpg:write"
    )
    _, params = parse_challenge(header)
    assert params == {
        "error": "insufficient_scope",
        "error_description": "Needs cnpg:write",
        "scope": "openid cnpg:write",
        "resource_metadata": META,
    }


def test_every_value_is_a_quoted_string() -> None:
    header = bearer_challenge(resource_metadata=META, error="invalid_token", description="x", scope="a b")
    assert header == (f'Bearer error="invalid_token", error_description="x", scope="a b", resource_metadata="{META}"')


@pytest.mark.parametrize(
    "hostile",
    ['say "hi"', "back\\slash", 'end\\"', "line\r\nInjected: yes", "tab\there", "caf\u00e9 \u2603", "\x00\x7f"],
)
def test_hostile_text_cannot_break_the_header(hostile: str) -> None:
    header = bearer_challenge(resource_metadata=META, error="invalid_token", description=hostile)
    assert "\r" not in header and "\n" not in header and "\x00" not in header
    assert header.isascii()
    _, params = parse_challenge(header)
    assert set(params) == {"error", "error_description", "resource_metadata"}
    # RFC 6750 section 3: error_description excludes '"' and '\\'; other characters survive.
    assert '"' not in params["error_description"] and "\\" not in params["error_description"]
    assert len(params["error_description"]) == len(hostile)


def test_quote_escapes_quote_and_backslash() -> None:
    assert quote('a"b\\c') == '"a\\"b\\\\c"'
