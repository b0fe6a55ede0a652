"""The dev IdP itself: what the gateway and the tests rely on it to issue."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import jwt

from tests.fixtures.idp import TEST_RESOURCE, DevIdp


def discovery(idp: DevIdp) -> dict[str, Any]:
    with urllib.request.urlopen(f"{idp.issuer}/.well-known/openid-configuration", timeout=10) as resp:
        return dict(json.load(resp))


def test_discovery_names_the_issuer_keys_and_registration(idp: DevIdp) -> None:
    doc = discovery(idp)
    assert doc["issuer"] == idp.issuer
    assert doc["jwks_uri"] == idp.jwks_uri
    assert doc["registration_endpoint"] == f"{idp.issuer}/reg"
    assert {"client_credentials", "authorization_code", "refresh_token"} <= set(doc["grant_types_supported"])
    assert doc["code_challenge_methods_supported"] == ["S256"]


def test_client_credentials_tokens_are_rfc9068_jwts_for_the_resource(idp: DevIdp) -> None:
    token = idp.token(scope="openid cnpg:read")
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["typ"] == "at+jwt" and header["alg"] == "RS256" and header["kid"] in idp.kids()
    assert claims["iss"] == idp.issuer
    assert claims["aud"] == TEST_RESOURCE
    assert claims["sub"] == claims["client_id"] == idp.client_id
    assert claims["scope"] == "openid cnpg:read"
    assert claims["exp"] > claims["iat"]


def test_es256_tokens_on_request(idp: DevIdp) -> None:
    header = jwt.get_unverified_header(idp.token(alg="ES256"))
    assert header["alg"] == "ES256" and header["kid"].startswith("es256-")


def test_a_token_request_without_resource_gets_the_first_configured_resource(idp: DevIdp) -> None:
    claims = jwt.decode(idp.token(resource=None), options={"verify_signature": False})
    assert claims["aud"] == TEST_RESOURCE


def test_unknown_resources_and_bad_secrets_are_refused(idp: DevIdp) -> None:
    status, body = idp.token_response(resource="https://elsewhere.example/mcp")
    assert (status, body["error"]) == (400, "invalid_target")
    status, body = idp.token_response(secret="wrong")
    assert (status, body["error"]) == (401, "invalid_client")


def test_registered_clients_get_tokens(idp: DevIdp) -> None:
    client = idp.register_client(token_endpoint_auth_method="client_secret_basic")
    token = idp.token(client["client_id"], client["client_secret"])
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == client["client_id"]


def test_keys_survive_a_restart_and_rotation_adds_keys(idp_factory: Any) -> None:
    idp: DevIdp = idp_factory()
    kids = idp.kids()
    assert len(kids) == 2
    idp.restart()
    assert idp.kids() == kids
    rotated = idp.rotate()
    assert len(rotated) == 4 and rotated[2:] == kids
    assert jwt.get_unverified_header(idp.token())["kid"] == rotated[0]
