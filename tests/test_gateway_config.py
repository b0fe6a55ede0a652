"""Gateway settings: environment and flags (flags win), validation errors that name the variable, exit code 2."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gateway.config import SETTINGS, GatewayConfig, build_parser, load_config
from gateway.errors import ConfigError

GATEWAY = str(Path(sys.executable).parent / "cnpg-mcp-gateway")


def test_defaults() -> None:
    config = load_config([], {})
    assert (config.host, config.port, config.mcp_path) == ("127.0.0.1", 3000, "/mcp")
    assert config.upstream_command == ("cnpg-mcp-server",)
    assert config.upstream_socket is None
    assert config.warm_pool_size == 0
    assert config.max_message_bytes >= 16 * 1024 * 1024
    assert config.service_name == "cnpg-mcp-server"
    assert config.auth is None


def test_environment_is_read() -> None:
    config = load_config(
        [],
        {
            "PORT": "8080",
            "MCP_PATH": "/api/mcp/",
            "UPSTREAM_COMMAND": "python -m 'my server' --flag",
            "ALLOWED_ORIGINS": "https://a.example.com, https://b.example.com:8443",
            "SESSION_IDLE_TIMEOUT": "60",
            "MAX_SESSIONS": "5",
            "WARM_POOL_SIZE": "2",
            "METRICS_PORT": "0",
            "PUBLIC_URL": "https://mcp.example.com/",
        },
    )
    assert config.port == 8080
    assert config.mcp_path == "/api/mcp"
    assert config.upstream_command == ("python", "-m", "my server", "--flag")
    assert config.allowed_origins == {"https://a.example.com", "https://b.example.com:8443"}
    assert (config.session_idle_timeout, config.max_sessions, config.warm_pool_size) == (60.0, 5, 2)
    assert config.metrics_port == 0
    assert config.public_origin == "https://mcp.example.com"


def test_flags_win_over_environment() -> None:
    config = load_config(["--port", "9000", "--upstream-socket", "/run/mcp.sock"], {"PORT": "8080"})
    assert config.port == 9000
    assert config.upstream_socket == "/run/mcp.sock"


def test_flags_for_path_and_public_url_reach_the_auth_settings() -> None:
    env = {"OIDC_ISSUER": "http://127.0.0.1:9/", "OIDC_AUDIENCE": "cnpg-mcp", "MCP_PATH": "/env-path"}
    config = load_config(["--mcp-path", "/flag-path", "--public-url", "https://mcp.example.com"], env)
    assert config.auth is not None
    assert config.auth.mcp_path == "/flag-path"
    assert config.auth.public_url == "https://mcp.example.com"


def test_config_is_frozen() -> None:
    config = GatewayConfig()
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PORT": "http"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"MAX_SESSIONS": "0"}, "MAX_SESSIONS"),
        ({"SESSION_IDLE_TIMEOUT": "-1"}, "SESSION_IDLE_TIMEOUT"),
        ({"ALLOWED_ORIGINS": "not-an-origin"}, "ALLOWED_ORIGINS"),
        ({"MCP_PATH": "mcp"}, "MCP_PATH"),
        ({"UPSTREAM_COMMAND": "   "}, "UPSTREAM_COMMAND"),
        ({"UPSTREAM_COMMAND": "python 'unterminated"}, "UPSTREAM_COMMAND"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"ALLOW_INSECURE": "maybe"}, "ALLOW_INSECURE"),
        ({"PUBLIC_URL": "mcp.example.com"}, "PUBLIC_URL"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_config([], env)


def test_non_loopback_host_without_auth_is_refused() -> None:
    with pytest.raises(ConfigError, match="HOST"):
        load_config([], {"HOST": "0.0.0.0"})


def test_allow_insecure_permits_a_non_loopback_host() -> None:
    assert load_config([], {"HOST": "0.0.0.0", "ALLOW_INSECURE": "true"}).host == "0.0.0.0"


def test_help_names_every_environment_variable() -> None:
    text = " ".join(build_parser().format_help().split())
    for variable in (
        "HOST", "PORT", "MCP_PATH", "UPSTREAM_COMMAND", "UPSTREAM_SOCKET", "ALLOWED_ORIGINS", "SESSION_IDLE_TIMEOUT",
        "MAX_SESSIONS", "WARM_POOL_SIZE", "METRICS_HOST", "METRICS_PORT", "SERVICE_NAME", "SHUTDOWN_GRACE",
        "MAX_BODY_BYTES", "MAX_MESSAGE_BYTES", "LOG_LEVEL", "SSE_KEEPALIVE", "SSE_RETRY_MS", "SSE_CLOSE_AFTER",
        "SSE_REPLAY_BUFFER", "PUBLIC_URL", "ALLOW_INSECURE", "OIDC_ISSUER", "OIDC_AUDIENCE", "OIDC_JWKS_URI",
        "OIDC_SCOPE", "TOOL_SCOPES", "OIDC_ALGORITHMS", "OIDC_LEEWAY", "MAX_TOKEN_BYTES", "DCR_PROXY_URL",
    ):  # fmt: skip
        assert f"[env {variable}]" in text, variable


def test_pool_min_above_pool_max_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"POOL_MIN \(3\) must not exceed POOL_MAX \(2\)"):
        load_config(["--pool-min", "3"], {"POOL_MAX": "2"})


def test_session_mode_is_the_default() -> None:
    assert load_config([], {}).upstream_mode == "session"
    assert load_config(["--upstream-mode", "pool"], {}).upstream_mode == "pool"


def test_help_sends_oidc_readers_to_the_auth_document() -> None:
    text = build_parser().format_help()
    auth_section = text[text.index("authentication settings") :]
    assert "docs/auth.md" in auth_section.splitlines()[0]
    assert "--oidc-issuer OIDC_ISSUER" in auth_section and "--tool-scopes TOOL_SCOPES" in auth_section
    assert "docs/gateway.md" not in auth_section


# One parser per setting: a value means the same, or is refused with the same message, from env or flag ----------

AUTH = {"OIDC_ISSUER": "https://idp.example", "OIDC_AUDIENCE": "https://mcp.example/mcp"}
# A request-state key file: the setting's parser reads it at start.
KEY_FILE = Path(tempfile.mkdtemp(prefix="cnpg-mcp-config-")) / "request-state-key"
KEY_FILE.write_text("0123456789abcdef0123456789abcdef\n")

# For every setting: a valid value other than the default, and a value its parser refuses (None: every text is
# valid, e.g. a socket path or a list of audiences).
SAMPLES: dict[str, tuple[str, str | None]] = {
    "HOST": ("0.0.0.0", "  "),
    "PORT": ("8080", "70000"),
    "MCP_PATH": ("/v1/mcp/", "/mcp?x#y"),
    "UPSTREAM_COMMAND": ("python -m 'my server'", "python 'unterminated"),
    "UPSTREAM_SOCKET": ("/run/mcp.sock", None),
    "UPSTREAM_MODE": ("pool", "together"),
    "POOL_MIN": ("0", "-1"),
    "POOL_MAX": ("2", "0"),
    "POOL_IDLE_TIMEOUT": ("60", "0"),
    "POOL_RECYCLE_AFTER": ("100", "-1"),
    "POOL_QUEUE_TIMEOUT": ("0", "nan"),
    "REQUEST_STATE_KEY_FILE": (str(KEY_FILE), str(KEY_FILE.parent / "missing")),
    "ALLOWED_ORIGINS": ("https://a.example.com, https://b.example.com:8443", "https://user:pw@app.example.com"),
    "SESSION_IDLE_TIMEOUT": ("60", "-1"),
    "MAX_SESSIONS": ("5", "0"),
    "WARM_POOL_SIZE": ("2", "-1"),
    "METRICS_HOST": ("0.0.0.0", "[]"),
    "METRICS_PORT": ("0", "65536"),
    "SERVICE_NAME": ("svc", " "),
    "SHUTDOWN_GRACE": ("0", "nan"),
    "REQUEST_TIMEOUT": ("30", "-1"),
    "MAX_BODY_BYTES": ("1024", "1e6"),
    "MAX_MESSAGE_BYTES": ("2048", "1000"),
    "LOG_LEVEL": ("debug", "loud"),
    "SSE_KEEPALIVE": ("2.5", "0"),
    "SSE_RETRY_MS": ("0", "x"),
    "SSE_CLOSE_AFTER": ("1", "inf"),
    "SSE_REPLAY_BUFFER": ("10", "0"),
    "PUBLIC_URL": ("https://mcp.example.com/", "https://user:pw@host"),
    "ALLOW_INSECURE": ("true", "maybe"),
    "OIDC_ISSUER": ("https://other-idp.example", "https://idp.example/?x=1"),
    "OIDC_AUDIENCE": ("a, b", None),
    "OIDC_JWKS_URI": ("https://idp.example/keys", "ftp://idp.example/keys"),
    "OIDC_SCOPE": ("", 'openid "quoted"'),
    "TOOL_SCOPES": ("list_*=cnpg:read *=cnpg:write", "list_*"),
    "OIDC_ALGORITHMS": ("ES256 EdDSA", "HS256"),
    "OIDC_LEEWAY": ("0", "301"),
    "MAX_TOKEN_BYTES": ("4096", "10"),
    "DCR_PROXY_URL": ("https://dcr.example/reg", "https://dcr.example/reg#frag"),
}


def test_every_setting_has_a_flag_and_samples() -> None:
    assert {s.env for s in SETTINGS} == set(SAMPLES)
    assert len({s.flag for s in SETTINGS}) == len(SETTINGS)
    assert all(s.flag.startswith("--") for s in SETTINGS)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_a_value_means_the_same_from_env_or_flag(setting) -> None:  # type: ignore[no-untyped-def]
    good, _ = SAMPLES[setting.env]
    from_flag = load_config([f"{setting.flag}={good}"], AUTH)
    from_env = load_config([], {**AUTH, setting.env: good})
    assert from_flag == from_env
    assert from_flag != load_config([], AUTH), "the sample should change the config"


@pytest.mark.parametrize("setting", [s for s in SETTINGS if SAMPLES[s.env][1] is not None], ids=lambda s: s.env)
def test_a_bad_value_is_refused_alike_from_env_or_flag(setting) -> None:  # type: ignore[no-untyped-def]
    bad = SAMPLES[setting.env][1]
    with pytest.raises(ConfigError) as from_flag:
        load_config([f"{setting.flag}={bad}"], AUTH)
    with pytest.raises(ConfigError) as from_env:
        load_config([], {**AUTH, setting.env: bad})
    assert str(from_flag.value) == str(from_env.value)
    assert str(from_env.value).startswith(f"{setting.env} ({setting.flag}): ")


def test_flags_get_the_url_and_path_checks_env_values_get() -> None:
    with pytest.raises(ConfigError, match="credentials"):
        load_config(["--public-url", "https://user:pw@host"], {})
    with pytest.raises(ConfigError, match="MCP_PATH"):
        load_config(["--mcp-path", "/mcp?x#y"], {})


def test_the_allow_insecure_flag_alone_means_true() -> None:
    assert load_config(["--allow-insecure", "--host", "0.0.0.0"], {}).allow_insecure is True
    assert load_config(["--allow-insecure=false"], {"ALLOW_INSECURE": "true"}).allow_insecure is False


def test_auth_settings_from_flags() -> None:
    config = load_config(
        ["--oidc-issuer", "https://idp.example", "--oidc-audience", "aud", "--tool-scopes", "*=cnpg:write"], {}
    )
    assert config.auth is not None
    assert (config.auth.issuer, config.auth.audiences) == ("https://idp.example", ("aud",))
    assert config.auth.scopes_for_tool("anything") == frozenset({"cnpg:write"})


def test_an_issuer_without_audience_is_refused_from_flags_too() -> None:
    with pytest.raises(ConfigError, match="OIDC_AUDIENCE"):
        load_config(["--oidc-issuer", "https://idp.example"], {})


def test_invalid_config_exits_2_with_the_variable_named() -> None:
    completed = subprocess.run(
        [GATEWAY], env={"PORT": "not-a-port", "PATH": ""}, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 2
    assert "PORT" in completed.stderr


def test_insecure_non_loopback_exits_2() -> None:
    completed = subprocess.run([GATEWAY, "--host", "0.0.0.0"], env={}, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2
    assert "ALLOW_INSECURE" in completed.stderr


def test_insecure_mode_logs_a_loud_warning(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    from tests.fixtures.gateway import ECHO_UPSTREAM

    gw = gateway_factory(upstream_command=ECHO_UPSTREAM)
    assert '"insecure_mode"' in gw.logs()
    assert '"level": "warning"' in gw.logs()


def test_a_request_state_key_file_that_is_missing_or_short_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"REQUEST_STATE_KEY_FILE.*cannot read .*missing"):
        load_config([], {"REQUEST_STATE_KEY_FILE": str(tmp_path / "missing")})
    short = tmp_path / "short"
    short.write_text("too short\n")
    with pytest.raises(ConfigError, match=r"at least 16 bytes"):
        load_config(["--request-state-key-file", str(short)], {})
