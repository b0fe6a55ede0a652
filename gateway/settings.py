"""Settings as data: each has an environment variable, a flag and one parser that reads both.

A flag is taken as a raw string and goes through the same parser as the environment value, so a value is accepted
or refused, with the same message, whatever its source. Parsers raise `ConfigError` saying what is wrong;
`Setting.parse` puts the variable and the flag in front. The gateway (gateway/config.py) and the auth layer
(gateway/auth/config.py) declare their settings with these parsers; PUBLIC_URL and MCP_PATH, which both read, are
declared here.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gateway.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: the config field it fills, its environment variable, its flag, its parser and its help."""

    name: str
    env: str
    flag: str
    parser: Callable[[str], Any]
    help: str
    switch: bool = False
    """The flag may be given without a value, meaning "true" (`--allow-insecure`)."""

    def parse(self, raw: str) -> Any:
        """The value of `raw`, from the environment or the flag alike; `ConfigError` names both."""
        try:
            return self.parser(raw)
        except ConfigError as exc:
            raise ConfigError(f"{self.env} ({self.flag}): {exc}") from None


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, settings: Iterable[Setting]) -> None:
    """One flag per setting; its value stays a raw string (None when absent) for `read_settings` to parse."""
    for s in settings:
        text = f"{s.help} [env {s.env}]"
        if s.switch:
            parser.add_argument(s.flag, dest=s.name, metavar=s.env, nargs="?", const="true", default=None, help=text)
        else:
            parser.add_argument(s.flag, dest=s.name, metavar=s.env, default=None, help=text)


def read_settings(
    settings: Iterable[Setting], flags: argparse.Namespace | None, env: Mapping[str, str]
) -> dict[str, Any]:
    """Parsed values by field name, for the settings given by flag (first) or environment; absent ones are left out."""
    values: dict[str, Any] = {}
    for s in settings:
        raw = getattr(flags, s.name, None) if flags is not None else None
        if raw is None:
            raw = env.get(s.env)
        if raw is not None:
            values[s.name] = s.parse(raw)
    return values


# Parsers: one per kind of value ----------------------------------------------------------------------------------


def text(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ConfigError("must not be empty")
    return value


def optional_text(raw: str) -> str | None:
    return raw.strip() or None


def secret_file(raw: str) -> str | None:
    """A file holding a secret of at least 16 bytes (surrounding whitespace ignored); empty means unset. Read here so
    that a missing or short file is a configuration error at start, not a failure on the first request."""
    path = raw.strip()
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            secret = handle.read().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(secret) < 16:
        raise ConfigError(f"{path} must hold a secret of at least 16 bytes")
    return path


def host(raw: str) -> str:
    value = raw.strip()
    if not value.strip("[]"):
        raise ConfigError("must not be empty")
    return value


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """Whole numbers from `low` to `high` (no upper bound when None)."""

    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(f"must be an integer, got {raw!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"between {low} and {high}"
            raise ConfigError(f"must be {bound}, got {value}")
        return value

    return parse


def seconds(*, allow_zero: bool) -> Callable[[str], float]:
    """A finite number of seconds, positive (or also zero)."""

    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigError(f"must be a number of seconds, got {raw!r}") from None
        if value != value or value in (float("inf"), float("-inf")) or value < 0 or (value == 0 and not allow_zero):
            raise ConfigError(f"must be a {'non-negative' if allow_zero else 'positive'} number, got {raw!r}")
        return value

    return parse


def boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"must be true or false, got {raw!r}")


def choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ConfigError(f"must be one of {', '.join(options)}, got {raw!r}")
        return value

    return parse


def command(raw: str) -> tuple[str, ...]:
    """A shell-quoted command line, split with shlex."""
    try:
        argv = tuple(shlex.split(raw))
    except ValueError as exc:
        raise ConfigError(f"is not a valid shell-quoted command: {exc}") from None
    if not argv:
        raise ConfigError("must not be empty")
    return argv


def url(raw: str) -> str | None:
    """An absolute http(s) URL without credentials, query or fragment; empty means unset (None)."""
    value = raw.strip()
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"must be an absolute http(s) URL, got {raw!r}")
    if "@" in parts.netloc:
        # URLs are logged (discovery failures, startup); credentials never belong in them.
        raise ConfigError("must not contain credentials")
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        raise ConfigError(f"must not carry a query or fragment, got {raw!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise ConfigError(f"has an invalid port, got {raw!r}") from None
    if not parts.hostname or any(c.isspace() for c in value):
        raise ConfigError(f"must be an absolute http(s) URL, got {raw!r}")
    return value


def base_url(raw: str) -> str | None:
    """A URL as `url()` accepts it, without trailing slashes (paths are appended to it)."""
    value = url(raw)
    return value.rstrip("/") if value else None


def origins(raw: str) -> frozenset[str]:
    """Comma-separated origins (`scheme://host[:port]`), lower-cased; empty means none."""
    found: set[str] = set()
    for item in raw.split(","):
        if not item.strip():
            continue
        value = url(item)
        parts = urlsplit(value or "")
        if parts.path not in ("", "/"):
            raise ConfigError(f"entries must be origins like https://app.example.com, got {item.strip()!r}")
        found.add(f"{parts.scheme}://{parts.netloc}".lower())
    return frozenset(found)


def url_path(raw: str) -> str:
    """An absolute URL path without query, fragment or whitespace; trailing slashes dropped."""
    path = raw.strip()
    if not path.startswith("/") or any(c.isspace() or c in "?#" for c in path):
        raise ConfigError(f"must be a URL path starting with '/' (no query or fragment), got {raw!r}")
    return path.rstrip("/") or "/"


# Read by both the gateway and the auth layer ------------------------------------------------------------------------

MCP_PATH = Setting("mcp_path", "MCP_PATH", "--mcp-path", url_path, "URL path of the MCP endpoint (default /mcp).")
PUBLIC_URL = Setting(
    "public_url",
    "PUBLIC_URL",
    "--public-url",
    base_url,
    "External URL of the gateway (e.g. https://mcp.example.com): its origin is always allowed, and the auth "
    "layer names it in metadata and challenges (default: the request's own origin).",
)
