"""Shared helpers for the CNPG MCP server tests: a real server on the kube_api fake, an SDK client, and objects.

Every test that uses the `kube` fixture also checks, at teardown, that each API call the server made is covered
by the declared RBAC table (server/permissions.py).
"""

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

import pytest
from mcp import Client
from mcp_types import CallToolResult

from server.app import create_server
from server.config import load_config
from server.kube import Kube, connect
from server.permissions import allowed
from server.registry import CnpgServer

CNPG = "postgresql.cnpg.io/v1"
_VERBS = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}


def rbac_call(method: str, path: str) -> tuple[str, str, str]:
    """(verb, group, resource) of one recorded request path, the way the API server's authorizer sees it."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if parts[0] == "api":
        group, rest = "", parts[2:]
    else:
        group, rest = parts[1], parts[3:]
    if rest and rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else None
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    verb = _VERBS.get(method) or ("get" if name else "list")
    return verb, group, resource


def query_of(query: Any) -> dict[str, list[str]]:
    if isinstance(query, dict):
        return {k: v if isinstance(v, list) else [v] for k, v in query.items()}
    return parse_qs(query or "")


def uncovered_calls(requests: list[Any]) -> list[tuple[str, str, str]]:
    missing = []
    for method, path, *_ in requests:
        if not path.startswith(("/api/", "/apis/")) or path.rstrip("/") in ("/api", "/apis"):
            continue
        call = rbac_call(method, path)
        if not allowed(call[1], call[2], call[0]):
            missing.append(call)
    return missing


@pytest.fixture(name="kube")
def kube_fixture(kube_api: Any) -> Iterator[Any]:
    """The kube_api fake, with the RBAC-coverage check on everything the server asked of it."""
    yield kube_api
    missing = uncovered_calls(list(kube_api.requests))
    assert not missing, f"API calls not declared in server/permissions.py: {missing}"


def build_server(kube_api: Any, *flags: str, env: dict[str, str] | None = None) -> tuple[CnpgServer, Kube]:
    config = load_config(["--kubeconfig", str(kube_api.kubeconfig_path), *flags], env=env or {})
    kube_client = connect(config)
    return create_server(config, kube_client), kube_client


@asynccontextmanager
async def mcp_client(kube_api: Any, *flags: str, env: dict[str, str] | None = None) -> AsyncIterator[Client]:
    """An MCP SDK client connected in-process to a server configured with the kube_api kubeconfig."""
    server, kube_client = build_server(kube_api, *flags, env=env)
    try:
        async with Client(server, raise_exceptions=False) as client:
            yield client
    finally:
        kube_client.close()


def text(result: CallToolResult) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


async def ok(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert not result.is_error, f"{tool} failed: {text(result)}"
    return text(result)


async def fails(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert result.is_error, f"{tool} unexpectedly succeeded: {text(result)}"
    return text(result)


def writes(kube_api: Any) -> Any:
    value = kube_api.writes()
    return json.dumps(value, sort_keys=True, default=str) if not isinstance(value, int) else value


# -- objects -------------------------------------------------------------------------------------------------
def cluster(name: str = "pg", namespace: str = "default", instances: int = 3, *, primary: str | None = None,
            barman: bool = False, snapshot: bool = False, plugin: bool = False, size: str = "1Gi",
            annotations: dict[str, str] | None = None) -> dict[str, Any]:
    primary = primary or f"{name}-1"
    spec: dict[str, Any] = {"instances": instances, "imageName": "ghcr.io/cloudnative-pg/postgresql:17",
                            "storage": {"size": size}}
    backup: dict[str, Any] = {}
    if barman:
        backup["barmanObjectStore"] = {"destinationPath": "s3://backups/pg",
                                       "s3Credentials": {"inheritFromIAMRole": True}}
    if snapshot:
        backup["volumeSnapshot"] = {"className": "csi-snapclass"}
    if backup:
        spec["backup"] = backup
    if plugin:
        spec["plugins"] = [{"name": "barman-cloud.cloudnative-pg.io", "isWALArchiver": True,
                            "parameters": {"barmanObjectName": "store"}}]
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        metadata["annotations"] = annotations
    names = [f"{name}-{i}" for i in range(1, instances + 1)]
    return {
        "apiVersion": CNPG, "kind": "Cluster", "metadata": metadata, "spec": spec,
        "status": {
            "phase": "Cluster in healthy state", "instances": instances, "readyInstances": instances,
            "currentPrimary": primary, "targetPrimary": primary, "instanceNames": names,
            "instancesStatus": {"healthy": names}, "image": "ghcr.io/cloudnative-pg/postgresql:17",
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "ClusterIsReady", "message": "Cluster is Ready",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "ContinuousArchiving", "status": "True", "reason": "ContinuousArchivingSuccess",
                 "message": "Continuous archiving is working", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            ],
            "certificates": {"expirations": {f"{name}-ca": "2027-01-01 00:00:00 +0000 UTC"}},
        },
    }


def pod(cluster_name: str, index: int, *, namespace: str = "default", role: str = "replica", ready: bool = True,
        node: str = "node-a", restarts: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{cluster_name}-{index}", "namespace": namespace,
                     "labels": {"cnpg.io/cluster": cluster_name, "cnpg.io/instanceRole": role, "role": role,
                                "cnpg.io/podRole": "instance"}},
        "spec": {"nodeName": node, "containers": [{"name": "postgres", "image": "postgres:17"}]},
        "status": {"phase": "Running",
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                   "containerStatuses": [{"name": "postgres", "ready": ready, "restartCount": restarts,
                                          "image": "postgres:17", "imageID": "", "started": True}]},
    }


def seed_cluster_with_pods(kube_api: Any, name: str = "pg", namespace: str = "default", **kwargs: Any) -> None:
    obj = cluster(name, namespace, **kwargs)
    kube_api.seed(obj)
    primary = obj["status"]["currentPrimary"]
    for i in range(1, obj["spec"]["instances"] + 1):
        pod_name = f"{name}-{i}"
        kube_api.seed(pod(name, i, namespace=namespace, role="primary" if pod_name == primary else "replica"))


def operator_reconciles(kube_api: Any, name: str, instances: int) -> None:
    """Play the operator's part for the fake: report the cluster healthy and create its instance pods."""
    obj = kube_api.get(CNPG, "clusters", "default", name)
    names = [f"{name}-{i}" for i in range(1, instances + 1)]
    obj["status"] = {"phase": "Cluster in healthy state", "instances": instances, "readyInstances": instances,
                     "currentPrimary": names[0], "targetPrimary": names[0], "instanceNames": names,
                     "instancesStatus": {"healthy": names}}
    kube_api.seed(obj)
    for i, pod_name in enumerate(names, start=1):
        if kube_api.get("v1", "pods", "default", pod_name) is None:
            kube_api.seed(pod(name, i, role="primary" if i == 1 else "replica"))
