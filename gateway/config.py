"""Gateway settings: one frozen dataclass built from the environment and command-line flags (flags win).

Every setting has an environment variable and a flag; `build_parser` documents both, and docs/gateway.md lists
them. Validation errors raise `ConfigError` naming the variable so an operator knows what to fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gateway.auth.config import AuthConfig, load_auth_config
from gateway.errors import ConfigError

MIB = 1024 * 1024
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything the gateway needs to run; built once by `load_config`."""

    host: str = "127.0.0.1"
    port: int = 3000
    mcp_path: str = "/mcp"
    upstream_command: tuple[str, ...] = ("cnpg-mcp-server",)
    upstream_socket: str | None = None
    allowed_origins: frozenset[str] = frozenset()
    """Exact origins ("scheme://host[:port]") allowed besides loopback origins, which are always allowed."""
    session_idle_timeout: float = 1800.0
    max_sessions: int = 100
    warm_pool_size: int = 0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    service_name: str = "cnpg-mcp-server"
    shutdown_grace: float = 30.0
    max_body_bytes: int = 4 * MIB
    max_message_bytes: int = 16 * MIB
    log_level: str = "info"
    sse_keepalive: float = 15.0
    sse_retry_ms: int = 1000
    sse_close_after: float = 0.0
    """Close a request's SSE stream after this many seconds without its response (0 = never); clients resume."""
    replay_buffer: int = 256
    public_url: str | None = None
    allow_insecure: bool = False
    auth: AuthConfig | None = None

    @property
    def public_origin(self) -> str | None:
        if not self.public_url:
            return None
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}".lower()

    @property
    def public_host(self) -> str | None:
        if not self.public_url:
            return None
        return urlsplit(self.public_url).netloc.lower()


# name, env var, flag, kind, help. Kind drives parsing and validation.
_SETTINGS: tuple[tuple[str, str, str, str, str], ...] = (
    ("host", "HOST", "--host", "str", "Address to listen on (default 127.0.0.1)."),
    ("port", "PORT", "--port", "port", "TCP port of the MCP endpoint (default 3000)."),
    ("mcp_path", "MCP_PATH", "--mcp-path", "path", "URL path of the MCP endpoint (default /mcp)."),
    (
        "upstream_command",
        "UPSTREAM_COMMAND",
        "--upstream-command",
        "command",
        'Command started once per session, shell-quoted: "CMD ARGS" (default cnpg-mcp-server).',
    ),
    (
        "upstream_socket",
        "UPSTREAM_SOCKET",
        "--upstream-socket",
        "str",
        "Unix socket connected once per session instead of spawning a process "
        "(e.g. served by socat UNIX-LISTEN:PATH,fork,mode=600 EXEC:cnpg-mcp-server).",
    ),
    (
        "allowed_origins",
        "ALLOWED_ORIGINS",
        "--allowed-origins",
        "origins",
        "Comma-separated origins allowed to call the MCP endpoint; loopback origins and the PUBLIC_URL origin "
        "are always allowed. Requests without an Origin header are allowed.",
    ),
    (
        "session_idle_timeout",
        "SESSION_IDLE_TIMEOUT",
        "--session-idle-timeout",
        "seconds",
        "Seconds without traffic after which a session and its upstream are closed (default 1800).",
    ),
    ("max_sessions", "MAX_SESSIONS", "--max-sessions", "count", "Most sessions open at once (default 100)."),
    (
        "warm_pool_size",
        "WARM_POOL_SIZE",
        "--warm-pool-size",
        "count0",
        "Upstream processes started ahead of time to speed up initialize (default 0).",
    ),
    ("metrics_host", "METRICS_HOST", "--metrics-host", "str", "Address of the Prometheus endpoint (default HOST)."),
    (
        "metrics_port",
        "METRICS_PORT",
        "--metrics-port",
        "port0",
        "Port of the Prometheus /metrics endpoint; 0 disables it (default 9464).",
    ),
    ("service_name", "SERVICE_NAME", "--service-name", "str", "Name reported by /health (default cnpg-mcp-server)."),
    (
        "shutdown_grace",
        "SHUTDOWN_GRACE",
        "--shutdown-grace",
        "seconds0",
        "Seconds in-flight calls may take to finish after SIGTERM (default 30).",
    ),
    (
        "max_body_bytes",
        "MAX_BODY_BYTES",
        "--max-body-bytes",
        "count",
        "Largest accepted HTTP request body in bytes; larger gets 413 (default 4 MiB).",
    ),
    (
        "max_message_bytes",
        "MAX_MESSAGE_BYTES",
        "--max-message-bytes",
        "count",
        "Largest JSON line accepted from an upstream in bytes; beyond it the session ends (default 16 MiB).",
    ),
    ("log_level", "LOG_LEVEL", "--log-level", "loglevel", "debug, info, warning, error or critical (default info)."),
    (
        "sse_keepalive",
        "SSE_KEEPALIVE",
        "--sse-keepalive",
        "seconds",
        "Seconds between keep-alive comments on idle SSE streams (default 15).",
    ),
    (
        "sse_retry_ms",
        "SSE_RETRY_MS",
        "--sse-retry-ms",
        "count0",
        "Reconnection delay in milliseconds advertised to clients in the SSE retry field (default 1000).",
    ),
    (
        "sse_close_after",
        "SSE_CLOSE_AFTER",
        "--sse-close-after",
        "seconds0",
        "Close a request's SSE stream after this many seconds without its response, so the client polls by "
        "resuming with Last-Event-ID; 0 keeps streams open (default 0).",
    ),
    (
        "replay_buffer",
        "SSE_REPLAY_BUFFER",
        "--sse-replay-buffer",
        "count",
        "SSE events kept per stream for Last-Event-ID resumption (default 256).",
    ),
    (
        "public_url",
        "PUBLIC_URL",
        "--public-url",
        "url",
        "External URL of the gateway (e.g. https://mcp.example.com); its origin is always allowed.",
    ),
    (
        "allow_insecure",
        "ALLOW_INSECURE",
        "--allow-insecure",
        "bool",
        "Allow listening on a non-loopback address without authentication (default false).",
    ),
)

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_loopback_host(host: str) -> bool:
    """True for names and addresses that only reach this machine."""
    host = host.strip().lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build_parser() -> argparse.ArgumentParser:
    """The command line; every flag names its environment variable in the help text."""
    parser = argparse.ArgumentParser(
        prog="cnpg-mcp-gateway",
        description="Streamable HTTP gateway: one stdio MCP server process (or Unix socket) per MCP session. "
        "Each flag can also be set with the environment variable shown; flags win. OIDC authentication is "
        "configured with OIDC_* variables (see docs/gateway.md); without OIDC_ISSUER the gateway runs in "
        "insecure mode and only listens on loopback unless ALLOW_INSECURE=true.",
    )
    for name, env, flag, kind, text in _SETTINGS:
        if kind == "bool":
            parser.add_argument(
                flag, dest=name, action="store_const", const="true", default=None, help=f"{text} [env {env}]"
            )
        else:
            parser.add_argument(flag, dest=name, metavar=env, default=None, help=f"{text} [env {env}]")
    return parser


def _parse_bool(env: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{env} must be true or false, got {raw!r}")


def _parse_int(env: str, raw: str, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{env} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ConfigError(f"{env} must be {bound}, got {value}")
    return value


def _parse_seconds(env: str, raw: str, allow_zero: bool) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{env} must be a number of seconds, got {raw!r}") from None
    if value != value or value < 0 or (value == 0 and not allow_zero) or value == float("inf"):
        raise ConfigError(f"{env} must be a {'non-negative' if allow_zero else 'positive'} number, got {raw!r}")
    return value


def _parse_origin(env: str, raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"{env} entries must be origins like https://app.example.com, got {raw!r}")
    return f"{parts.scheme}://{parts.netloc}".lower()


def _convert(name: str, env: str, kind: str, raw: str) -> Any:
    parsers: dict[str, Callable[[], Any]] = {
        "str": lambda: raw.strip(),
        "port": lambda: _parse_int(env, raw, 1, 65535),
        "port0": lambda: _parse_int(env, raw, 0, 65535),
        "count": lambda: _parse_int(env, raw, 1),
        "count0": lambda: _parse_int(env, raw, 0),
        "seconds": lambda: _parse_seconds(env, raw, allow_zero=False),
        "seconds0": lambda: _parse_seconds(env, raw, allow_zero=True),
        "bool": lambda: _parse_bool(env, raw),
    }
    if kind in parsers:
        value = parsers[kind]()
        if kind == "str" and not value and name != "upstream_socket":
            raise ConfigError(f"{env} must not be empty")
        return value
    if kind == "path":
        path = raw.strip()
        if not path.startswith("/") or " " in path:
            raise ConfigError(f"{env} must be a URL path starting with '/', got {raw!r}")
        return path.rstrip("/") or "/"
    if kind == "command":
        try:
            argv = tuple(shlex.split(raw))
        except ValueError as exc:
            raise ConfigError(f"{env} is not a valid shell-quoted command: {exc}") from None
        if not argv:
            raise ConfigError(f"{env} must not be empty")
        return argv
    if kind == "origins":
        return frozenset(_parse_origin(env, item) for item in raw.split(",") if item.strip())
    if kind == "url":
        url = raw.strip()
        if not url:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{env} must be an absolute http(s) URL, got {raw!r}")
        return url.rstrip("/")
    if kind == "loglevel":
        level = raw.strip().lower()
        if level not in LOG_LEVELS:
            raise ConfigError(f"{env} must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
        return level
    raise AssertionError(f"unknown setting kind {kind}")


def load_config(argv: Sequence[str] | None, env: Mapping[str, str]) -> GatewayConfig:
    """Build the config from flags and environment; raises `ConfigError` naming the offending variable."""
    args = build_parser().parse_args(list(argv) if argv is not None else [])
    values: dict[str, Any] = {}
    for name, env_name, _flag, kind, _text in _SETTINGS:
        raw = getattr(args, name)
        if raw is None:
            raw = env.get(env_name)
        if raw is None:
            continue
        values[name] = _convert(name, env_name, kind, raw)
    if values.get("upstream_socket") == "":
        values["upstream_socket"] = None
    if "metrics_host" not in values and "host" in values:
        values["metrics_host"] = values["host"]
    if values.get("max_message_bytes", 16 * MIB) < 1024:
        raise ConfigError("MAX_MESSAGE_BYTES must be at least 1024")
    if values.get("host", "127.0.0.1").strip("[]") == "":
        raise ConfigError("HOST must not be empty")
    auth = load_auth_config(env)
    if auth is not None:
        # Flags may override MCP_PATH/PUBLIC_URL; the auth layer's metadata must name the same endpoint.
        auth = dataclasses.replace(
            auth,
            mcp_path=values.get("mcp_path", auth.mcp_path),
            public_url=values.get("public_url") or auth.public_url,
        )
    values["auth"] = auth
    config = GatewayConfig(**values)
    if config.auth is None and not config.allow_insecure and not is_loopback_host(config.host):
        raise ConfigError(
            f"HOST={config.host} is not a loopback address and authentication is off (OIDC_ISSUER unset); "
            "configure OIDC or set ALLOW_INSECURE=true"
        )
    return config
