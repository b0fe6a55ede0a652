"""Server configuration: one frozen dataclass built from the environment and command-line flags."""

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from server.names import validate_dns_label

DEFAULT_PG_MAJOR = 17
DEFAULT_IMAGE_REPOSITORY = "ghcr.io/cloudnative-pg/postgresql"
DEFAULT_MAX_OUTPUT_CHARS = 20_000
DEFAULT_REQUEST_TIMEOUT = 30.0

# Each entry: (environment variable, flag, help). `--help` prints this table so it documents every variable.
VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("KUBECONFIG", "--kubeconfig", "Path of the kubeconfig file (colon-separated list allowed). Without it the "
     "in-cluster service account is used when running in a pod, else ~/.kube/config. When none can be used the "
     "server still starts, warns on stderr and answers every tool call with the cause."),
    ("CNPG_KUBE_CONTEXT", "--context", "Kubeconfig context to use (default: the current context)."),
    ("CNPG_NAMESPACES", "--namespaces", "Comma-separated allow-list of namespaces the tools may touch. Default: the "
     "current namespace (in-cluster namespace file or the kubeconfig context). '*' = every namespace RBAC allows."),
    ("CNPG_READ_ONLY", "--read-only", "true/false. When true, write tools are not listed and are refused if called."),
    ("CNPG_DEFAULT_IMAGE", "--default-image", "PostgreSQL operand image for new clusters when the caller gives "
     "neither an image nor a major version (default: ghcr.io/cloudnative-pg/postgresql:<default major>)."),
    ("CNPG_DEFAULT_PG_MAJOR", "--default-pg-major", f"Default PostgreSQL major version for new clusters "
     f"(default {DEFAULT_PG_MAJOR})."),
    ("CNPG_MAX_OUTPUT_CHARS", "--max-output-chars", f"Maximum characters in one tool result; longer results are "
     f"cut and say 'truncated' (default {DEFAULT_MAX_OUTPUT_CHARS})."),
    ("CNPG_REQUEST_TIMEOUT", "--request-timeout", f"Seconds to wait for one Kubernetes API call "
     f"(default {DEFAULT_REQUEST_TIMEOUT:g})."),
)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the variable."""


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs to know before it talks to Kubernetes."""

    kubeconfig: str | None = None
    context: str | None = None
    # None = "the current namespace", resolved once the Kubernetes configuration is loaded.
    namespaces: tuple[str, ...] | None = None
    all_namespaces: bool = False
    read_only: bool = False
    default_image: str | None = None
    default_pg_major: int = DEFAULT_PG_MAJOR
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT

    def image_for(self, major: int | None) -> str:
        """The operand image for a new cluster: an explicit major wins, then the configured image, then the default."""
        if major is not None:
            return f"{DEFAULT_IMAGE_REPOSITORY}:{major}"
        if self.default_image:
            return self.default_image
        return f"{DEFAULT_IMAGE_REPOSITORY}:{self.default_pg_major}"


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _parse_int(name: str, raw: str, minimum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _parse_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {raw!r}")
    return value


def _parse_namespaces(name: str, raw: str) -> tuple[tuple[str, ...] | None, bool]:
    items = [part.strip() for part in raw.split(",") if part.strip()]
    if not items:
        return None, False
    if "*" in items:
        if len(items) > 1:
            raise ConfigError(f"{name}: '*' cannot be combined with other namespaces")
        return None, True
    for item in items:
        problem = validate_dns_label(item)
        if problem:
            raise ConfigError(f"{name}: {item!r} is not a valid namespace name ({problem})")
    return tuple(dict.fromkeys(items)), False


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser; every flag mirrors an environment variable, and flags win."""
    epilog = "Environment variables (flags override them):\n" + "\n".join(
        f"  {env:<24} {flag:<20} {text}" for env, flag, text in VARIABLES
    )
    parser = argparse.ArgumentParser(
        prog="cnpg-mcp-server",
        description="MCP server (stdio) that operates CloudNativePG clusters through the Kubernetes API.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--kubeconfig", help="kubeconfig path (env KUBECONFIG)")
    parser.add_argument("--context", help="kubeconfig context (env CNPG_KUBE_CONTEXT)")
    parser.add_argument("--namespaces", help="namespace allow-list, comma-separated, or '*' (env CNPG_NAMESPACES)")
    parser.add_argument(
        "--read-only", action="store_const", const="true", default=None, help="hide and refuse write tools"
    )
    parser.add_argument("--default-image", help="operand image for new clusters (env CNPG_DEFAULT_IMAGE)")
    parser.add_argument("--default-pg-major", help="default PostgreSQL major (env CNPG_DEFAULT_PG_MAJOR)")
    parser.add_argument("--max-output-chars", help="bound on one tool result (env CNPG_MAX_OUTPUT_CHARS)")
    parser.add_argument("--request-timeout", help="seconds per Kubernetes call (env CNPG_REQUEST_TIMEOUT)")
    return parser


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> ServerConfig:
    """Build the configuration from flags (first) and environment; raises ConfigError naming the variable."""
    environ = os.environ if env is None else env
    args = build_parser().parse_args(list(argv) if argv is not None else [])

    def pick(flag_value: str | None, var: str) -> tuple[str, str | None]:
        if flag_value is not None:
            return var, flag_value
        return var, environ.get(var)

    _, kubeconfig = pick(args.kubeconfig, "KUBECONFIG")
    _, context = pick(args.context, "CNPG_KUBE_CONTEXT")
    namespaces: tuple[str, ...] | None = None
    all_namespaces = False
    var, raw = pick(args.namespaces, "CNPG_NAMESPACES")
    if raw is not None:
        namespaces, all_namespaces = _parse_namespaces(var, raw)
    var, raw = pick(args.read_only, "CNPG_READ_ONLY")
    read_only = _parse_bool(var, raw) if raw is not None else False
    _, default_image = pick(args.default_image, "CNPG_DEFAULT_IMAGE")
    var, raw = pick(args.default_pg_major, "CNPG_DEFAULT_PG_MAJOR")
    default_pg_major = _parse_int(var, raw, 13) if raw else DEFAULT_PG_MAJOR
    var, raw = pick(args.max_output_chars, "CNPG_MAX_OUTPUT_CHARS")
    max_output_chars = _parse_int(var, raw, 500) if raw else DEFAULT_MAX_OUTPUT_CHARS
    var, raw = pick(args.request_timeout, "CNPG_REQUEST_TIMEOUT")
    request_timeout = _parse_float(var, raw) if raw else DEFAULT_REQUEST_TIMEOUT
    return ServerConfig(
        kubeconfig=kubeconfig or None,
        context=context or None,
        namespaces=namespaces,
        all_namespaces=all_namespaces,
        read_only=read_only,
        default_image=(default_image or "").strip() or None,
        default_pg_major=default_pg_major,
        max_output_chars=max_output_chars,
        request_timeout=request_timeout,
    )
