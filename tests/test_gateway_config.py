"""Gateway settings: environment and flags (flags win), validation errors that name the variable, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import GatewayConfig, build_parser, load_config
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
        "SSE_REPLAY_BUFFER", "PUBLIC_URL", "ALLOW_INSECURE",
    ):  # fmt: skip
        assert f"[env {variable}]" in text, variable


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
