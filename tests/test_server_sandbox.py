"""Against the sandbox (kubeconfig context `cnpg-mcp-sandbox`) the server says that nothing is deployed; against
any other context it never does."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import Client

from server.app import create_server
from server.config import load_config
from server.kube import connect
from tests.test_server_helpers import cluster, kube_fixture, ok  # noqa: F401 - registers the `kube` fixture

SANDBOX = "cnpg-mcp-sandbox"
FIRST_LINE = ("SANDBOX: simulated cluster in the cnpg-mcp sandbox, nothing is deployed; state lives in memory and is "
              "lost when scripts/run stops.")


def write_kubeconfig(kube_api: Any, path: Path, current: str, names: tuple[str, ...]) -> Path:
    """A kubeconfig with one context per name, each with a cluster and user of that name, all pointing at kube_api."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": {"server": kube_api.url}} for n in names],
        "users": [{"name": n, "user": {"token": kube_api.token}} for n in names],
        "contexts": [{"name": n, "context": {"cluster": n, "user": n, "namespace": "default"}} for n in names],
        "current-context": current,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@asynccontextmanager
async def client_for(kubeconfig: Path, *flags: str) -> AsyncIterator[Client]:
    config = load_config(["--kubeconfig", str(kubeconfig), *flags], env={})
    kube_client = connect(config)
    try:
        async with Client(create_server(config, kube_client), raise_exceptions=False) as client:
            yield client
    finally:
        kube_client.close()


async def everything_a_reader_sees(client: Client) -> dict[str, str]:
    status = await client.call_tool("get_cluster_status", {"name": "pg"})
    resource = await client.read_resource("cnpg://clusters/default/pg")
    return {
        "instructions": client.instructions or "",
        "get_cluster_status": await ok(client, "get_cluster_status", name="pg"),
        "status_data": str(status.structured_content),
        "list_clusters": await ok(client, "list_clusters"),
        "empty_list": await ok(client, "list_clusters", namespace="prod"),
        "resource": "\n".join(getattr(c, "text", "") for c in resource.contents),
    }


async def test_the_sandbox_context_says_nothing_is_deployed(kube: Any, tmp_path: Path) -> None:
    kube.seed(cluster("pg"))
    kubeconfig = write_kubeconfig(kube, tmp_path / "sandbox-kubeconfig", SANDBOX, (SANDBOX,))
    async with client_for(kubeconfig, "--namespaces", "default,prod") as client:
        seen = await everything_a_reader_sees(client)
    assert seen["instructions"].splitlines()[0] == FIRST_LINE
    assert seen["get_cluster_status"].splitlines()[0] == FIRST_LINE
    assert seen["get_cluster_status"].splitlines()[1].startswith("Cluster default/pg")
    assert "nothing is deployed" in seen["status_data"]
    assert FIRST_LINE in seen["list_clusters"].splitlines() and "pg" in seen["list_clusters"]
    assert FIRST_LINE in seen["empty_list"].splitlines() and "No clusters in namespace 'prod'" in seen["empty_list"]
    assert seen["resource"].splitlines()[0] == FIRST_LINE


@pytest.mark.parametrize(
    ("current", "flags"),
    [("test", ()), (SANDBOX, ("--context", "test"))],
    ids=["another-current-context", "sandbox-present-but-another-chosen"],
)
async def test_any_other_context_has_no_sandbox_text(
    kube: Any, tmp_path: Path, current: str, flags: tuple[str, ...]
) -> None:
    kube.seed(cluster("pg"))
    kubeconfig = write_kubeconfig(kube, tmp_path / "kubeconfig", current, ("test", SANDBOX))
    async with client_for(kubeconfig, "--namespaces", "default,prod", *flags) as client:
        seen = await everything_a_reader_sees(client)
    assert seen["get_cluster_status"].startswith("Cluster default/pg")
    for where, body in seen.items():
        assert "SANDBOX" not in body.upper() and "nothing is deployed" not in body, where


async def test_the_sandbox_context_chosen_by_flag_counts(kube: Any, tmp_path: Path) -> None:
    kube.seed(cluster("pg"))
    kubeconfig = write_kubeconfig(kube, tmp_path / "kubeconfig", "test", ("test", SANDBOX))
    async with client_for(kubeconfig, "--context", SANDBOX) as client:
        status = await ok(client, "get_cluster_status", name="pg")
    assert status.splitlines()[0] == FIRST_LINE


async def test_the_fixture_kubeconfig_is_not_the_sandbox(kube: Any) -> None:
    kube.seed(cluster("pg"))
    async with client_for(kube.kubeconfig_path, "--namespaces", "default,prod") as client:
        seen = await everything_a_reader_sees(client)
    assert not any("SANDBOX" in body.upper() for body in seen.values())
