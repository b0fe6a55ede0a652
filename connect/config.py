"""Settings of cnpg-mcp-connect: one frozen dataclass built from the environment and the command line.

Flags win over environment variables. Secrets are read from the environment or from files only, never from
flags, so they never appear in another process's argv (`ps`).
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NoReturn
from urllib.parse import urlsplit

from connect.errors import ConfigError

AuthMode = Literal["none", "token-file", "client-credentials", "authorization-code"]
ClientAuth = Literal["basic", "post", "private_key_jwt", "none"]

AUTH_MODES: tuple[AuthMode, ...] = ("none", "token-file", "client-credentials", "authorization-code")
CLIENT_AUTHS: tuple[ClientAuth, ...] = ("basic", "post", "private_key_jwt", "none")

AUTO_AUTHORIZE_ENV = "MCP_CONNECT_AUTO_AUTHORIZE"
"""For tests and automation only: fetch the authorization URL over HTTP instead of opening a browser."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the helper needs, already checked."""

    url: str
    listen: tuple[str, int] | None
    auth: AuthMode
    token_file: Path | None
    client_id: str | None
    client_secret: str | None = field(repr=False)  # never in a repr, a log line or a traceback
    client_auth: ClientAuth
    private_key_file: Path | None
    private_key_alg: str | None
    token_endpoint: str | None
    scope: str | None
    resource: str | None
    omit_resource: bool
    audience: str | None
    token_cache: Path
    redirect_port: int
    no_browser: bool
    auto_authorize: bool
    client_metadata_url: str | None
    client_name: str
    refresh_margin: float
    timeout: float
    log_level: str

    def describe(self) -> str:
        """One line about the setup for the log: never a secret."""
        where = f"listen {self.listen[0]}:{self.listen[1]}" if self.listen else "stdio"
        return f"{where} -> {self.url} (auth: {self.auth})"


# One parser per setting ---------------------------------------------------------------------------------------


def parse_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} must be an http(s) URL, got {value!r}")
    if parts.username or parts.password:
        raise ConfigError(f"{name} must not carry credentials in the URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(f"{name} must use https for a non-loopback host ({parts.hostname})")
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"MCP_LISTEN must be HOST:PORT, got {value!r}")
    port = parse_port("MCP_LISTEN port", port_text)
    host = host.strip("[]")
    if not _is_loopback(host):
        raise ConfigError(f"MCP_LISTEN must be a loopback address (the proxy adds your token), got {host!r}")
    return host, port


def parse_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def parse_seconds(name: str, value: str, *, allow_zero: bool = True) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        raise ConfigError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}")
    return number


def parse_port(name: str, value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a port number, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name} must be a port from 0 to 65535, got {port}")
    return port


def parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def read_secret_file(name: str, path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {name} {path}: {exc.strerror}") from None
    if not text:
        raise ConfigError(f"{name} {path} is empty")
    return text


def default_token_cache(url: str, env: Mapping[str, str]) -> Path:
    """A per-endpoint cache file under the user's cache directory."""
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path(env.get("HOME") or Path.home()) / ".cache"
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return base / "cnpg-mcp-connect" / f"tokens-{digest}.json"


# The command line ---------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as a ConfigError (one line, exit 2) instead of usage text."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cnpg-mcp-connect",
        allow_abbrev=False,  # else `--client-secret VALUE` would pass as `--client-secret-file`, a secret in argv
        description="Bridge an MCP client on stdio (or a local HTTP port) to a remote streamable HTTP MCP endpoint, "
        "getting and refreshing the OAuth token on the way. Secrets come from the environment or files only.",
    )
    add = parser.add_argument
    add("url_arg", nargs="?", metavar="URL", help="remote MCP endpoint (same as --url)")
    add("--url", help="remote MCP endpoint, https://host/mcp [env MCP_UPSTREAM]")
    add("--listen", help="serve a local HTTP proxy on HOST:PORT instead of stdio [env MCP_LISTEN]")
    add("--auth", help="none, token-file, client-credentials or authorization-code; default: inferred from the "
        "other settings [env MCP_AUTH]")  # fmt: skip
    add("--token-file", help="file holding a bearer token, re-read when it changes [env MCP_TOKEN_FILE]")
    add("--client-id", help="OAuth client ID [env MCP_CLIENT_ID]")
    add("--client-secret-file", help="file holding the client secret [env MCP_CLIENT_SECRET_FILE]")
    add("--client-auth", help="token endpoint client authentication: basic, post, private_key_jwt or none "
        "[env MCP_CLIENT_AUTH]")  # fmt: skip
    add("--private-key-file", help="PEM private key for private_key_jwt [env MCP_PRIVATE_KEY_FILE]")
    add("--private-key-alg", help="JWS algorithm for private_key_jwt (default from the key) [env MCP_PRIVATE_KEY_ALG]")
    add("--token-endpoint", help="token endpoint; skips discovery [env MCP_TOKEN_ENDPOINT]")
    add("--scope", help="scopes to ask for, space-separated [env MCP_SCOPE]")
    add("--resource", help="RFC 8707 resource; 'none' omits it [env MCP_RESOURCE]")
    add("--audience", help="audience parameter for IdPs that want one (Auth0) [env MCP_AUDIENCE]")
    add("--token-cache", help="token cache file of the authorization-code mode [env MCP_TOKEN_CACHE]")
    add("--redirect-port", help="loopback port for the authorization redirect, 0 = any [env MCP_REDIRECT_PORT]")
    add("--no-browser", action="store_true", default=None, help="print the authorization URL [env MCP_NO_BROWSER]")
    add("--client-metadata-url", help="HTTPS URL used as client ID where the server supports client ID "
        "metadata documents [env MCP_CLIENT_METADATA_URL]")  # fmt: skip
    add("--client-name", help="client name sent in dynamic registration [env MCP_CLIENT_NAME]")
    add("--refresh-margin", help="seconds before expiry to renew a token (capped at a fifth of its lifetime) "
        "[env MCP_REFRESH_MARGIN]")  # fmt: skip
    add("--timeout", help="seconds for connecting and for token requests [env MCP_TIMEOUT]")
    add("--log-level", help="debug, info, warning or error; logs go to stderr [env MCP_LOG_LEVEL]")
    return parser


def load_settings(argv: Sequence[str], env: Mapping[str, str]) -> Settings:
    """Parse flags and environment into Settings, or raise ConfigError naming the setting."""
    args, unknown = build_parser().parse_known_args(list(argv))
    if unknown:
        # Name the unknown options only: their values may be the secrets someone tried to pass as flags.
        names = sorted({word.split("=", 1)[0] for word in unknown if word.startswith("-")}) or ["an extra argument"]
        secretish = any("secret" in name for name in names)
        hint = " (secrets come from the environment or a file, never a flag)" if secretish else ""
        raise ConfigError(f"unknown option {', '.join(names)}{hint}")

    def pick(flag: str | None, var: str) -> str | None:
        if flag is not None:
            return flag
        value = env.get(var)
        return value if value else None

    url_text = pick(args.url or args.url_arg, "MCP_UPSTREAM")
    if not url_text:
        raise ConfigError("no upstream: pass --url https://host/mcp or set MCP_UPSTREAM")
    url = parse_url("MCP_UPSTREAM", url_text)

    listen_text = pick(args.listen, "MCP_LISTEN")
    listen = parse_listen(listen_text) if listen_text else None

    token_file_text = pick(args.token_file, "MCP_TOKEN_FILE")
    client_id = pick(args.client_id, "MCP_CLIENT_ID")
    secret_file = pick(args.client_secret_file, "MCP_CLIENT_SECRET_FILE")
    secret = env.get("MCP_CLIENT_SECRET") or None
    if secret and secret_file:
        raise ConfigError("set MCP_CLIENT_SECRET or MCP_CLIENT_SECRET_FILE, not both")
    if secret_file:
        secret = read_secret_file("MCP_CLIENT_SECRET_FILE", Path(secret_file))
    key_file_text = pick(args.private_key_file, "MCP_PRIVATE_KEY_FILE")

    auth_text = pick(args.auth, "MCP_AUTH")
    if auth_text:
        auth: AuthMode = parse_choice("MCP_AUTH", auth_text, AUTH_MODES)  # type: ignore[assignment]
    elif token_file_text:
        auth = "token-file"
    elif client_id and (secret or key_file_text):
        auth = "client-credentials"
    else:
        auth = "authorization-code"

    client_auth_text = pick(args.client_auth, "MCP_CLIENT_AUTH")
    if client_auth_text:
        client_auth: ClientAuth = parse_choice("MCP_CLIENT_AUTH", client_auth_text, CLIENT_AUTHS)  # type: ignore[assignment]
    elif key_file_text:
        client_auth = "private_key_jwt"
    elif auth == "authorization-code" and not secret:
        client_auth = "none"
    else:
        client_auth = "basic"

    if auth == "token-file" and not token_file_text:
        raise ConfigError("MCP_AUTH=token-file needs MCP_TOKEN_FILE")
    if auth == "client-credentials":
        if not client_id:
            raise ConfigError("client credentials need MCP_CLIENT_ID")
        if client_auth == "private_key_jwt" and not key_file_text:
            raise ConfigError("private_key_jwt needs MCP_PRIVATE_KEY_FILE")
        if client_auth in ("basic", "post") and not secret:
            raise ConfigError("client credentials need MCP_CLIENT_SECRET or MCP_CLIENT_SECRET_FILE")
    if client_auth == "private_key_jwt" and key_file_text and not Path(key_file_text).is_file():
        raise ConfigError(f"MCP_PRIVATE_KEY_FILE {key_file_text} is not a file")

    resource_text = pick(args.resource, "MCP_RESOURCE")
    omit_resource = resource_text == "none"
    resource = None if omit_resource or not resource_text else parse_url("MCP_RESOURCE", resource_text)
    token_endpoint_text = pick(args.token_endpoint, "MCP_TOKEN_ENDPOINT")
    metadata_url = pick(args.client_metadata_url, "MCP_CLIENT_METADATA_URL")
    if metadata_url and not metadata_url.startswith("https://"):
        raise ConfigError("MCP_CLIENT_METADATA_URL must be an https URL")

    cache_text = pick(args.token_cache, "MCP_TOKEN_CACHE")
    redirect_port = parse_port("MCP_REDIRECT_PORT", pick(args.redirect_port, "MCP_REDIRECT_PORT") or "0")
    no_browser = (
        args.no_browser if args.no_browser is not None else parse_bool("MCP_NO_BROWSER", env.get("MCP_NO_BROWSER", ""))
    )
    log_level = (pick(args.log_level, "MCP_LOG_LEVEL") or "info").lower()
    parse_choice("MCP_LOG_LEVEL", log_level, ("debug", "info", "warning", "error"))

    return Settings(
        url=url,
        listen=listen,
        auth=auth,
        token_file=Path(token_file_text) if token_file_text else None,
        client_id=client_id,
        client_secret=secret,
        client_auth=client_auth,
        private_key_file=Path(key_file_text) if key_file_text else None,
        private_key_alg=pick(args.private_key_alg, "MCP_PRIVATE_KEY_ALG"),
        token_endpoint=parse_url("MCP_TOKEN_ENDPOINT", token_endpoint_text) if token_endpoint_text else None,
        scope=pick(args.scope, "MCP_SCOPE"),
        resource=resource,
        omit_resource=omit_resource,
        audience=pick(args.audience, "MCP_AUDIENCE"),
        token_cache=Path(cache_text).expanduser() if cache_text else default_token_cache(url, env),
        redirect_port=redirect_port,
        no_browser=no_browser,
        auto_authorize=parse_bool(AUTO_AUTHORIZE_ENV, env.get(AUTO_AUTHORIZE_ENV, "")),
        client_metadata_url=metadata_url,
        client_name=pick(args.client_name, "MCP_CLIENT_NAME") or "cnpg-mcp-connect",
        refresh_margin=parse_seconds("MCP_REFRESH_MARGIN", pick(args.refresh_margin, "MCP_REFRESH_MARGIN") or "60"),
        timeout=parse_seconds("MCP_TIMEOUT", pick(args.timeout, "MCP_TIMEOUT") or "30", allow_zero=False),
        log_level=log_level,
    )
