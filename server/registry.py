"""The tool registry: what every tool module needs to register its tools. Tools import this module (and
`common`, `kube`, `config`), never `app`; `app` imports the tools and builds the server, so imports run one way.

It wraps every tool so failures become isError results, and enforces the namespace allow-list, the object-name
checks, read-only mode and the output bound in one place.
"""

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations

from server.config import ServerConfig
from server.kube import Kube, KubeError
from server.names import validate_dns_label
from server.tools.common import InputError, ToolOutput, require_object_name

logger = logging.getLogger("server")

F = TypeVar("F", bound=Callable[..., Awaitable[ToolOutput]])

# Arguments that name Kubernetes objects: checked once here, before any tool code or API call sees them.
OBJECT_NAME_ARGUMENTS = ("name", "cluster", "instance", "target_instance")


def check_object_names(arguments: dict[str, Any]) -> None:
    """Refuse a call whose object-name arguments are not valid Kubernetes names (InputError says which)."""
    for key in OBJECT_NAME_ARGUMENTS:
        value = arguments.get(key)
        if isinstance(value, str):
            require_object_name(key.replace("_", " "), value)


@dataclass(frozen=True)
class ToolInfo:
    name: str
    write: bool
    destructive: bool
    idempotent: bool


# Said wherever a reader could take the sandbox for a real cluster: instructions, list_clusters, cluster status.
SANDBOX_NOTE = (
    "SANDBOX: simulated cluster in the cnpg-mcp sandbox, nothing is deployed; state lives in memory and is lost "
    "when scripts/run stops"
)


class Deps:
    """What tools need: the configuration, the Kubernetes client, and the namespace policy."""

    def __init__(self, config: ServerConfig, kube: Kube) -> None:
        self.config = config
        self.kube = kube
        # None against a real cluster, so no sandbox text can appear there.
        self.sandbox_note: str | None = SANDBOX_NOTE if kube.sandbox else None
        self.default_namespace = (config.namespaces[0] if config.namespaces else None) or kube.default_namespace
        if config.all_namespaces:
            self.allowed: tuple[str, ...] | None = None
        else:
            self.allowed = config.namespaces or (kube.default_namespace,)
            if config.namespaces and kube.default_namespace in config.namespaces:
                self.default_namespace = kube.default_namespace

    def namespace(self, namespace: str | None) -> str:
        """Resolve an optional namespace argument and check it against the allow-list."""
        chosen = namespace or self.default_namespace
        problem = validate_dns_label(chosen)
        if problem:
            raise InputError(f"Invalid namespace {chosen!r}: {problem}.")
        if self.allowed is not None and chosen not in self.allowed:
            raise InputError(
                f"Refused: namespace '{chosen}' is not in this server's allow-list "
                f"({', '.join(self.allowed)}). Set CNPG_NAMESPACES to change it."
            )
        return chosen

    def scopes(self, namespace: str | None, all_namespaces: bool) -> list[str | None]:
        """Namespaces a list tool should query; [None] means one cluster-wide list."""
        if not all_namespaces:
            return [self.namespace(namespace)]
        if self.allowed is None:
            return [None]
        return list(self.allowed)


def bound(text: str, limit: int) -> str:
    """Cut `text` to `limit` characters and say so, so an assistant knows it saw only part of it."""
    if len(text) <= limit:
        return text
    note = f"\n... [truncated: output was {len(text)} characters, limit {limit}; narrow the request]"
    return text[: max(0, limit - len(note))] + note


def error_result(text: str, limit: int) -> CallToolResult:
    """A tool result with isError set, bounded like every other result."""
    return CallToolResult(content=[TextContent(type="text", text=bound(text, limit))], is_error=True)


class CnpgServer(MCPServer[Any]):
    """MCPServer that refuses write tools in read-only mode with a clear reason instead of 'unknown tool', and
    answers every tool call with the cause when no cluster is configured."""

    def __init__(self, *args: Any, refused_tools: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused_tools: dict[str, str] = refused_tools or {}
        self.max_output_chars = 20_000
        # Every registered tool with its safety class, including the ones read-only mode hides (docs and tests).
        self.tool_table: list[ToolInfo] = []
        # Why there is no Kubernetes connection, when there is none (what is missing and how to fix it).
        self.no_cluster: str | None = None

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        # Before argument checks: without a cluster no answer but the cause is useful.
        if self.no_cluster is not None and any(tool.name == name for tool in self.tool_table):
            return error_result(self.no_cluster, self.max_output_chars)
        if name in self.refused_tools:
            return error_result(self.refused_tools[name], self.max_output_chars)
        return await super().call_tool(name, arguments, context)


class Registry:
    """Registers tools on the server with annotations, error mapping, read-only filtering and output bounds."""

    def __init__(self, server: CnpgServer, deps: Deps) -> None:
        self.server = server
        self.deps = deps
        self.tools: list[ToolInfo] = []

    def tool(
        self, *, title: str, write: bool, destructive: bool = False, idempotent: bool = False
    ) -> Callable[[F], F]:
        limit = self.deps.config.max_output_chars

        def decorator(fn: F) -> F:
            name = fn.__name__
            self.tools.append(ToolInfo(name, write, destructive, idempotent))
            if write and self.deps.config.read_only:
                self.server.refused_tools[name] = (
                    f"Refused: '{name}' changes the cluster and this server runs in read-only mode "
                    "(CNPG_READ_ONLY=true). Nothing was changed."
                )
                return fn

            @functools.wraps(fn)
            async def wrapper(**kwargs: Any) -> CallToolResult:
                try:
                    check_object_names(kwargs)
                    output = await fn(**kwargs)
                except InputError as exc:
                    return error_result(str(exc), limit)
                except KubeError as exc:
                    return error_result(exc.describe(), limit)
                except Exception as exc:  # boundary: a bug must become a tool error, never a protocol error
                    logger.exception("tool %s failed unexpectedly", name)
                    text = f"Internal error in {name}: {type(exc).__name__}. Nothing more is known."
                    return error_result(text, limit)
                return render(output, limit)

            self.server.add_tool(
                wrapper,
                name=name,
                title=title,
                annotations=ToolAnnotations(
                    title=title,
                    read_only_hint=not write,
                    destructive_hint=destructive if write else False,
                    idempotent_hint=idempotent if write else True,
                    open_world_hint=False,
                ),
                structured_output=False,
            )
            return fn

        return decorator


def render(output: ToolOutput, limit: int) -> CallToolResult:
    """A tool's output as a result: bounded text, and the structured data when it fits within the bound."""
    text = bound(output.text, limit)
    structured: dict[str, Any] | None = None
    if output.data is not None and len(json.dumps(output.data, default=str)) <= limit:
        structured = output.data
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=structured, is_error=output.is_error
    )
