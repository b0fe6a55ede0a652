"""Every Prometheus metric the gateway exports, in one registry.

Label values come from closed sets (reasons, outcomes, known MCP methods, tool names the upstream listed) so a
client cannot grow the series count; no label ever carries a subject, a session id or a token.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_VERIFY_BUCKETS = (0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.01)

# Sessions and upstream processes.
SESSIONS_ACTIVE = Gauge("mcp_gateway_sessions_active", "MCP sessions currently open.", registry=REGISTRY)
SESSIONS_OPENED = Counter("mcp_gateway_sessions_opened_total", "MCP sessions opened.", registry=REGISTRY)
SESSIONS_CLOSED = Counter(
    "mcp_gateway_sessions_closed_total",
    "MCP sessions closed, by reason (client_delete, idle_timeout, upstream_exit, shutdown, error).",
    ["reason"],
    registry=REGISTRY,
)
SESSIONS_REJECTED = Counter(
    "mcp_gateway_sessions_rejected_total", "Session creations refused, by reason.", ["reason"], registry=REGISTRY
)
REQUESTS = Counter(
    "mcp_gateway_requests_total",
    "HTTP requests on the MCP endpoint, by MCP method and HTTP status.",
    ["mcp_method", "status"],
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "mcp_gateway_request_duration_seconds",
    "Time to answer an MCP HTTP request (to the first byte for streams), by MCP method.",
    ["mcp_method"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
UPSTREAM_SPAWN_DURATION = Histogram(
    "mcp_gateway_upstream_spawn_duration_seconds",
    "Time to start an upstream process or connect its socket.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
UPSTREAM_EXITS = Counter(
    "mcp_gateway_upstream_exits_total",
    "Upstream processes or connections that ended, by reason (closed, exit_zero, exit_nonzero, signal, killed).",
    ["reason"],
    registry=REGISTRY,
)
WARM_POOL_SIZE = Gauge("mcp_gateway_warm_pool_size", "Pre-started upstream processes waiting.", registry=REGISTRY)

# Pool mode (UPSTREAM_MODE=pool). `partition` is `session` for the processes that serve MCP sessions and `stateless`
# for those that serve MCP 2026-07-28 requests (gateway/stateless.py); the two never share a process.
POOL_QUEUE_WAIT = Histogram(
    "mcp_gateway_pool_queue_wait_seconds",
    "Time a request waited for a free pool process (requests that found one at once are not observed).",
    ["partition"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
POOL_PROCESS_EXITS = Counter(
    "mcp_gateway_pool_process_exits_total",
    "Pool processes that left the pool, by reason (crashed, oversized, idle, recycled, abandoned, start_failed, "
    "shutdown).",
    ["partition", "reason"],
    registry=REGISTRY,
)
POOL_REJECTED = Counter(
    "mcp_gateway_pool_rejected_total",
    "Requests the pool answered with an error instead of serving, by reason (queue_timeout).",
    ["partition", "reason"],
    registry=REGISTRY,
)
POOL_DROPPED = Counter(
    "mcp_gateway_pool_dropped_messages_total",
    "Messages not delivered because their owner was not certain, by kind (notification, server_request, response, "
    "client_answer).",
    ["partition", "kind"],
    registry=REGISTRY,
)


class PoolFigures(Protocol):
    """What a pool tells /metrics when it is scraped: nothing is set on the request path."""

    partition: str
    dispatched: int

    def figures(self) -> tuple[int, int, int]:
        """(processes, processes serving a session now, requests waiting for a process)."""
        ...


class _PoolCollector(Collector):
    """The pool gauges and the dispatch counter, read from each partition's pool at scrape time."""

    def __init__(self) -> None:
        self.pools: dict[str, PoolFigures] = {}

    def collect(self) -> Iterator[Metric]:
        labels = ["partition"]
        processes = GaugeMetricFamily("mcp_gateway_pool_processes", "Upstream processes in the pool.", labels=labels)
        busy = GaugeMetricFamily(
            "mcp_gateway_pool_busy_processes", "Pool processes serving a session's requests right now.", labels=labels
        )
        queued = GaugeMetricFamily(
            "mcp_gateway_pool_queued_requests", "Requests waiting for a free pool process.", labels=labels
        )
        dispatches = CounterMetricFamily(
            "mcp_gateway_pool_dispatches", "Client requests sent to a pool process.", labels=labels
        )
        for partition, pool in sorted(self.pools.items()):
            count, serving, waiting = pool.figures()
            processes.add_metric([partition], count)
            busy.add_metric([partition], serving)
            queued.add_metric([partition], waiting)
            dispatches.add_metric([partition], pool.dispatched)
        yield from (processes, busy, queued, dispatches)


_POOLS = _PoolCollector()
REGISTRY.register(_POOLS)


def watch_pool(pool: PoolFigures) -> None:
    """Export `pool`'s figures under its partition label (a later pool of the same partition replaces it)."""
    _POOLS.pools[pool.partition] = pool


# Tool calls (counted whether or not auth is on).
TOOL_CALLS = Counter(
    "mcp_gateway_tool_calls_total",
    "tools/call requests, by tool and outcome (success, error, denied, failed, cancelled, timeout).",
    ["tool", "outcome"],
    registry=REGISTRY,
)

# Authentication and authorization.
AUTH_RESULTS = Counter(
    "mcp_gateway_auth_results_total",
    "Authentication results: result is success or failure, reason is ok or a closed failure reason.",
    ["result", "reason"],
    registry=REGISTRY,
)
AUTHZ_DENIALS = Counter(
    "mcp_gateway_authz_denials_total", "tools/call refused for missing scope, by tool.", ["tool"], registry=REGISTRY
)
JWKS_FETCHES = Counter(
    "mcp_gateway_jwks_fetches_total",
    "JWKS and discovery fetches, by outcome (success, not_modified, error).",
    ["outcome"],
    registry=REGISTRY,
)
JWKS_KEYS_LOADED = Gauge("mcp_gateway_jwks_keys_loaded", "Signing keys currently usable.", registry=REGISTRY)
AUTH_VERIFY_DURATION = Histogram(
    "mcp_gateway_auth_verify_duration_seconds",
    "Token verification time, by whether the verified-token cache answered.",
    ["cached"],
    buckets=_VERIFY_BUCKETS,
    registry=REGISTRY,
)

OTHER = "other"
"""Label value for anything outside a closed set."""

MAX_KNOWN_TOOLS = 1000
_known_tools: set[str] = set()


def learn_tools(tools: object) -> None:
    """Remember tool names an upstream listed (a tools/list result's `tools`): the only values a tool label takes."""
    if not isinstance(tools, list):
        return
    for tool in tools:
        if len(_known_tools) >= MAX_KNOWN_TOOLS:
            return
        name = tool.get("name") if isinstance(tool, dict) else None
        if isinstance(name, str):
            _known_tools.add(name)


def tool_label(name: str) -> str:
    """The tool label for `name`: itself when an upstream listed it, else "other"."""
    return name if name in _known_tools else OTHER
