"""Gateway settings: one frozen dataclass built from the environment and command-line flags (flags win).

Every setting, the auth layer's included, has an environment variable, a flag and one parser for both
(gateway.settings); `build_parser` documents them, the README's tables list them. A bad value raises
`ConfigError` naming the variable and the flag, whichever carried it.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.auth.config import AUTH_SETTINGS, AuthConfig, build_auth_config
from gateway.errors import ConfigError
from gateway.settings import (
    MCP_PATH,
    PUBLIC_URL,
    Setting,
    add_flags,
    boolean,
    choice,
    command,
    host,
    integer,
    optional_text,
    origins,
    read_settings,
    seconds,
    secret_file,
    text,
)

MIB = 1024 * 1024
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
UPSTREAM_MODES = ("session", "pool")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything the gateway needs to run; built once by `load_config`."""

    host: str = "127.0.0.1"
    port: int = 3000
    mcp_path: str = "/mcp"
    upstream_command: tuple[str, ...] = ("cnpg-mcp-server",)
    upstream_socket: str | None = None
    upstream_mode: str = "session"
    """session: one upstream per MCP session; pool: sessions share POOL_MIN..POOL_MAX long-lived upstreams."""
    pool_min: int = 1
    pool_max: int = 8
    pool_idle_timeout: float = 300.0
    pool_recycle_after: int = 0
    pool_queue_timeout: float = 30.0
    request_state_key_file: str | None = None
    """File holding the secret that seals 2026-07-28 requestState; the same on every replica."""
    allowed_origins: frozenset[str] = frozenset()
    """Exact origins ("scheme://host[:port]") allowed besides loopback origins, which are always allowed."""
    session_idle_timeout: float = 1800.0
    max_sessions: int = 100
    warm_pool_size: int = 0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    service_name: str = "cnpg-mcp-server"
    shutdown_grace: float = 30.0
    request_timeout: float = 600.0
    """Seconds a request may wait for its upstream answer before the client gets an error (0 = no limit)."""
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


GATEWAY_SETTINGS: tuple[Setting, ...] = (
    Setting("host", "HOST", "--host", host, "Address to listen on (default 127.0.0.1)."),
    Setting("port", "PORT", "--port", integer(1, 65535), "TCP port of the MCP endpoint (default 3000)."),
    MCP_PATH,
    Setting(
        "upstream_command",
        "UPSTREAM_COMMAND",
        "--upstream-command",
        command,
        "Command started for each upstream (per session, or per pooled process), shell-quoted: "
        '"CMD ARGS" (default cnpg-mcp-server).',
    ),
    Setting(
        "upstream_socket",
        "UPSTREAM_SOCKET",
        "--upstream-socket",
        optional_text,
        "Unix socket connected for each upstream (per session, or per pooled process) instead of spawning a "
        "process (e.g. served by socat UNIX-LISTEN:PATH,fork,mode=600 EXEC:cnpg-mcp-server).",
    ),
    Setting(
        "upstream_mode",
        "UPSTREAM_MODE",
        "--upstream-mode",
        choice(UPSTREAM_MODES),
        "session: one upstream process (or socket connection) per MCP session; pool: every session shares a "
        "bounded pool of long-lived upstreams, for servers that keep no per-session state (default session).",
    ),
    Setting(
        "pool_min",
        "POOL_MIN",
        "--pool-min",
        integer(0),
        "Pool mode: upstream processes kept running even when idle; started with the gateway (default 1).",
    ),
    Setting(
        "pool_max",
        "POOL_MAX",
        "--pool-max",
        integer(1),
        "Pool mode: most upstream processes at once; requests wait for a free one beyond that (default 8).",
    ),
    Setting(
        "pool_idle_timeout",
        "POOL_IDLE_TIMEOUT",
        "--pool-idle-timeout",
        seconds(allow_zero=False),
        "Pool mode: seconds a process beyond POOL_MIN may stay idle before it is stopped (default 300).",
    ),
    Setting(
        "pool_recycle_after",
        "POOL_RECYCLE_AFTER",
        "--pool-recycle-after",
        integer(0),
        "Pool mode: replace a process after this many requests, once its last one is answered; 0 never (default 0).",
    ),
    Setting(
        "pool_queue_timeout",
        "POOL_QUEUE_TIMEOUT",
        "--pool-queue-timeout",
        seconds(allow_zero=True),
        "Pool mode: seconds a request may wait for a free process before it is answered with a server-busy "
        "error; 0 waits up to REQUEST_TIMEOUT (default 30).",
    ),
    Setting(
        "request_state_key_file",
        "REQUEST_STATE_KEY_FILE",
        "--request-state-key-file",
        secret_file,
        "Pool mode, MCP 2026-07-28: file with the secret (at least 16 bytes) that seals requestState of "
        "input-required results; give every replica the same one (default: a key per gateway process).",
    ),
    Setting(
        "allowed_origins",
        "ALLOWED_ORIGINS",
        "--allowed-origins",
        origins,
        "Comma-separated origins allowed to call the MCP endpoint; loopback origins and the PUBLIC_URL origin "
        "are always allowed. Requests without an Origin header are allowed.",
    ),
    Setting(
        "session_idle_timeout",
        "SESSION_IDLE_TIMEOUT",
        "--session-idle-timeout",
        seconds(allow_zero=False),
        "Seconds without traffic after which a session and its upstream are closed (default 1800).",
    ),
    Setting("max_sessions", "MAX_SESSIONS", "--max-sessions", integer(1), "Most sessions open at once (default 100)."),
    Setting(
        "warm_pool_size",
        "WARM_POOL_SIZE",
        "--warm-pool-size",
        integer(0),
        "Upstream processes started ahead of time to speed up initialize (default 0).",
    ),
    Setting(
        "metrics_host", "METRICS_HOST", "--metrics-host", host, "Address of the Prometheus endpoint (default HOST)."
    ),
    Setting(
        "metrics_port",
        "METRICS_PORT",
        "--metrics-port",
        integer(0, 65535),
        "Port of the Prometheus /metrics endpoint; 0 disables it (default 9464).",
    ),
    Setting(
        "service_name", "SERVICE_NAME", "--service-name", text, "Name reported by /health (default cnpg-mcp-server)."
    ),
    Setting(
        "shutdown_grace",
        "SHUTDOWN_GRACE",
        "--shutdown-grace",
        seconds(allow_zero=True),
        "Seconds in-flight calls may take to finish after SIGTERM (default 30).",
    ),
    Setting(
        "request_timeout",
        "REQUEST_TIMEOUT",
        "--request-timeout",
        seconds(allow_zero=True),
        "Seconds a request may wait for the upstream's answer; then the client gets a JSON-RPC error and the "
        "upstream notifications/cancelled; 0 disables it (default 600).",
    ),
    Setting(
        "max_body_bytes",
        "MAX_BODY_BYTES",
        "--max-body-bytes",
        integer(1),
        "Largest accepted HTTP request body in bytes; larger gets 413 (default 4 MiB).",
    ),
    Setting(
        "max_message_bytes",
        "MAX_MESSAGE_BYTES",
        "--max-message-bytes",
        integer(1024),
        "Largest JSON line accepted from an upstream in bytes, at least 1024; beyond it the session ends "
        "(default 16 MiB).",
    ),
    Setting(
        "log_level",
        "LOG_LEVEL",
        "--log-level",
        choice(LOG_LEVELS),
        "debug, info, warning, error or critical (default info).",
    ),
    Setting(
        "sse_keepalive",
        "SSE_KEEPALIVE",
        "--sse-keepalive",
        seconds(allow_zero=False),
        "Seconds between keep-alive comments on idle SSE streams (default 15).",
    ),
    Setting(
        "sse_retry_ms",
        "SSE_RETRY_MS",
        "--sse-retry-ms",
        integer(0),
        "Reconnection delay in milliseconds advertised to clients in the SSE retry field (default 1000).",
    ),
    Setting(
        "sse_close_after",
        "SSE_CLOSE_AFTER",
        "--sse-close-after",
        seconds(allow_zero=True),
        "Close a request's SSE stream after this many seconds without its response, so the client polls by "
        "resuming with Last-Event-ID; 0 keeps streams open (default 0).",
    ),
    Setting(
        "replay_buffer",
        "SSE_REPLAY_BUFFER",
        "--sse-replay-buffer",
        integer(1),
        "SSE events kept per stream for Last-Event-ID resumption (default 256).",
    ),
    PUBLIC_URL,
    Setting(
        "allow_insecure",
        "ALLOW_INSECURE",
        "--allow-insecure",
        boolean,
        "Allow listening on a non-loopback address without authentication; the flag alone means true (default false).",
        switch=True,
    ),
)
"""The gateway's settings; MCP_PATH and PUBLIC_URL are read by the auth layer too."""

SETTINGS: tuple[Setting, ...] = GATEWAY_SETTINGS + AUTH_SETTINGS
"""Every setting of `cnpg-mcp-gateway`, each an environment variable and a flag."""

_GATEWAY_FIELDS = frozenset(s.name for s in GATEWAY_SETTINGS)

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_loopback_host(name: str) -> bool:
    """True for names and addresses that only reach this machine."""
    name = name.strip().lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def build_parser() -> argparse.ArgumentParser:
    """The command line; every flag names its environment variable in the help text."""
    parser = argparse.ArgumentParser(
        prog="cnpg-mcp-gateway",
        description="Streamable HTTP gateway in front of a stdio MCP server: one server process (or Unix socket "
        "connection) per MCP session, or a shared pool of them (--upstream-mode pool). "
        "Every setting is a flag and the environment variable shown; flags win.",
    )
    add_flags(parser.add_argument_group("gateway settings (docs/gateway.md)"), GATEWAY_SETTINGS)
    add_flags(
        parser.add_argument_group(
            "authentication settings (OIDC, docs/auth.md)",
            "OIDC bearer-token authentication is on when OIDC_ISSUER is set; without it the gateway runs in "
            "insecure mode and only listens on loopback unless ALLOW_INSECURE=true. PUBLIC_URL and MCP_PATH "
            "above name the protected resource.",
        ),
        AUTH_SETTINGS,
    )
    return parser


def load_config(argv: Sequence[str] | None, env: Mapping[str, str]) -> GatewayConfig:
    """Build the config from flags and environment; raises `ConfigError` naming the offending setting."""
    flags = build_parser().parse_args(list(argv) if argv is not None else [])
    values = read_settings(SETTINGS, flags, env)
    gateway = {name: value for name, value in values.items() if name in _GATEWAY_FIELDS}
    if "metrics_host" not in gateway and "host" in gateway:
        gateway["metrics_host"] = gateway["host"]
    config = GatewayConfig(**gateway, auth=build_auth_config(values))
    if config.pool_min > config.pool_max:
        raise ConfigError(f"POOL_MIN ({config.pool_min}) must not exceed POOL_MAX ({config.pool_max})")
    if config.auth is None and not config.allow_insecure and not is_loopback_host(config.host):
        raise ConfigError(
            f"HOST={config.host} is not a loopback address and authentication is off (OIDC_ISSUER unset); "
            "configure OIDC or set ALLOW_INSECURE=true"
        )
    return config
