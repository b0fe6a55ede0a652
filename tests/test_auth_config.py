"""Auth settings from the environment: defaults, every variable, and errors that name the variable."""

from __future__ import annotations

import pytest

from gateway.auth.config import DEFAULT_ALGORITHMS, AuthConfig, load_auth_config, parse_tool_scopes
from gateway.errors import ConfigError

BASE = {"OIDC_ISSUER": "https://idp.example", "OIDC_AUDIENCE": "https://mcp.example/mcp"}


def load(**env: str) -> AuthConfig:
    cfg = load_auth_config({**BASE, **env})
    assert cfg is not None
    return cfg


def test_auth_is_off_without_oidc_issuer() -> None:
    assert load_auth_config({}) is None
    assert load_auth_config({"OIDC_ISSUER": "  ", "OIDC_AUDIENCE": "x"}) is None


def test_defaults() -> None:
    cfg = load()
    assert cfg.issuer == "https://idp.example"
    assert cfg.audiences == ("https://mcp.example/mcp",)
    assert cfg.required_scopes == frozenset({"openid"})
    assert cfg.algorithms == frozenset(DEFAULT_ALGORITHMS)
    assert cfg.leeway == 30
    assert cfg.max_token_bytes == 8192
    assert cfg.jwks_uri is None and cfg.dcr_proxy_url is None and cfg.public_url is None
    assert cfg.tool_scopes == ()


def test_the_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        load().issuer = "https://other"  # type: ignore[misc]


def test_missing_audience_names_oidc_audience() -> None:
    with pytest.raises(ConfigError, match="OIDC_AUDIENCE"):
        load_auth_config({"OIDC_ISSUER": "https://idp.example"})
    with pytest.raises(ConfigError, match="OIDC_AUDIENCE"):
        load(OIDC_AUDIENCE=" , ")


def test_audience_list() -> None:
    assert load(OIDC_AUDIENCE="a, b ,c").audiences == ("a", "b", "c")


@pytest.mark.parametrize("name", ["OIDC_ISSUER", "OIDC_JWKS_URI", "DCR_PROXY_URL", "PUBLIC_URL"])
@pytest.mark.parametrize("value", ["ftp://x", "not a url", "https://", "https://x/?q=1", "https://u:p@x"])
def test_urls_are_validated(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load(**{name: value})


def test_urls_are_kept() -> None:
    cfg = load(OIDC_JWKS_URI="https://idp.example/keys", DCR_PROXY_URL="https://dcr.example/reg",
               PUBLIC_URL="https://mcp.example/")  # fmt: skip
    assert cfg.jwks_uri == "https://idp.example/keys"
    assert cfg.dcr_proxy_url == "https://dcr.example/reg"
    assert cfg.public_url == "https://mcp.example"


def test_scopes_are_space_separated_and_may_be_empty() -> None:
    assert load(OIDC_SCOPE="openid  cnpg:read").required_scopes == frozenset({"openid", "cnpg:read"})
    assert load(OIDC_SCOPE="").required_scopes == frozenset()


def test_invalid_scope_token_names_oidc_scope() -> None:
    with pytest.raises(ConfigError, match="OIDC_SCOPE"):
        load(OIDC_SCOPE='openid "quoted"')


@pytest.mark.parametrize("bad", ["none", "HS256", "HS512", "RS256 none", "foo"])
def test_symmetric_and_none_algorithms_can_never_be_enabled(bad: str) -> None:
    with pytest.raises(ConfigError, match="OIDC_ALGORITHMS"):
        load(OIDC_ALGORITHMS=bad)


def test_algorithm_allow_list() -> None:
    assert load(OIDC_ALGORITHMS="ES256, EdDSA").algorithms == frozenset({"ES256", "EdDSA"})


@pytest.mark.parametrize(("name", "bad"), [("OIDC_LEEWAY", "x"), ("OIDC_LEEWAY", "-1"), ("OIDC_LEEWAY", "301"),
                                           ("MAX_TOKEN_BYTES", "10"), ("MAX_TOKEN_BYTES", "70000"),
                                           ("MAX_TOKEN_BYTES", "1e3")])  # fmt: skip
def test_integers_are_range_checked(name: str, bad: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load(**{name: bad})


def test_integers() -> None:
    cfg = load(OIDC_LEEWAY="0", MAX_TOKEN_BYTES="4096")
    assert (cfg.leeway, cfg.max_token_bytes) == (0, 4096)


def test_tool_scopes_pattern_syntax_first_match_wins() -> None:
    cfg = load(TOOL_SCOPES="list_*=cnpg:read get_*=cnpg:read delete_*=cnpg:write,cnpg:admin *=cnpg:write")
    assert cfg.scopes_for_tool("list_clusters") == frozenset({"cnpg:read"})
    assert cfg.scopes_for_tool("get_cluster") == frozenset({"cnpg:read"})
    assert cfg.scopes_for_tool("delete_cluster") == frozenset({"cnpg:write", "cnpg:admin"})
    assert cfg.scopes_for_tool("create_cluster") == frozenset({"cnpg:write"})
    assert cfg.all_scopes() == ["cnpg:admin", "cnpg:read", "cnpg:write", "openid"]


def test_tool_scopes_json_syntax() -> None:
    rules = parse_tool_scopes('{"list_*": "cnpg:read", "*": ["cnpg:write", "cnpg:admin"]}')
    assert [(r.pattern, r.scopes) for r in rules] == [
        ("list_*", frozenset({"cnpg:read"})),
        ("*", frozenset({"cnpg:write", "cnpg:admin"})),
    ]


def test_tools_matching_no_rule_need_no_extra_scope() -> None:
    assert load(TOOL_SCOPES="list_*=cnpg:read").scopes_for_tool("delete_cluster") == frozenset()


def test_tool_patterns_are_case_sensitive() -> None:
    assert load(TOOL_SCOPES="list_*=cnpg:read").scopes_for_tool("LIST_clusters") == frozenset()


@pytest.mark.parametrize("bad", ["list_*", "=cnpg:read", "list_*=", '{"a": 1}', "{not json", '["a"]',
                                 'list_*=cnpg:"x"'])  # fmt: skip
def test_bad_tool_scopes_name_the_variable(bad: str) -> None:
    with pytest.raises(ConfigError, match="TOOL_SCOPES"):
        load(TOOL_SCOPES=bad)


def test_mcp_path_sets_the_protected_resource_path() -> None:
    assert load().mcp_path == "/mcp"
    assert load(MCP_PATH="/v1/mcp/").mcp_path == "/v1/mcp"


@pytest.mark.parametrize("bad", ["mcp", "/a b", "/mcp?x=1"])
def test_bad_mcp_path_names_the_variable(bad: str) -> None:
    with pytest.raises(ConfigError, match="MCP_PATH"):
        load(MCP_PATH=bad)
