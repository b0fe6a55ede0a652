"""Failure behaviour of the CNPG MCP server: permissions, timeouts, responsiveness, namespaces, validation."""

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from server.tools.common import InputError, parse_quantity, validate_cron
from tests.test_server_helpers import (
    cluster,
    fails,
    kube_fixture,  # noqa: F401 - registers the `kube` fixture
    mcp_client,
    ok,
    seed_cluster_with_pods,
)

READ_CALLS = [
    ("list_clusters", {}),
    ("get_cluster_status", {"name": "pg"}),
    ("list_instances", {"cluster": "pg"}),
    ("get_instance_logs", {"cluster": "pg", "instance": "pg-1"}),
    ("list_backups", {}),
    ("get_backup", {"name": "b"}),
    ("list_scheduled_backups", {}),
    ("list_poolers", {}),
    ("list_databases", {}),
    ("list_roles", {}),
    ("get_cluster_events", {"cluster": "pg"}),
]


async def test_every_read_tool_reports_forbidden_with_the_missing_permission(kube: Any) -> None:
    seed_cluster_with_pods(kube, "pg", instances=1)
    kube.forbid("*", "*", "*")
    async with mcp_client(kube) as client:
        for tool, arguments in READ_CALLS:
            body = await fails(client, tool, **arguments)
            assert "HTTP 403 Forbidden" in body and "Missing RBAC permission: verb '" in body, (tool, body)
            assert "in namespace 'default'" in body, (tool, body)


def kubeconfig_pointing_at(source: Path, target: Path, port: int) -> Path:
    config = yaml.safe_load(source.read_text())
    config["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{port}"
    target.write_text(yaml.safe_dump(config))
    return target


async def test_a_hung_api_server_times_out_while_the_server_stays_responsive(kube: Any, tmp_path: Path) -> None:
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept the connection and never answer

    blackhole = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = blackhole.sockets[0].getsockname()[1]
    hung = kubeconfig_pointing_at(Path(kube.kubeconfig_path), tmp_path / "hung-kubeconfig", port)
    try:
        async with mcp_client(kube, "--kubeconfig", str(hung), "--request-timeout", "3") as client:
            results: list[Any] = []

            async def slow_call() -> None:
                results.append(await client.call_tool("list_clusters", {}))

            async with anyio.create_task_group() as tg:
                tg.start_soon(slow_call)
                await anyio.sleep(0.2)
                tools = await client.list_tools()  # answered while the Kubernetes call is stuck in its thread
                assert tools.tools and not results
            assert results[0].is_error and "unreachable" in results[0].content[0].text.lower()
    finally:
        for writer in held:
            writer.close()
        blackhole.close()
        await blackhole.wait_closed()


async def test_default_namespace_comes_from_the_kubeconfig_context(kube: Any, tmp_path: Path) -> None:
    kube.seed(cluster("pg", namespace="prod"))
    prod_config = kube.write_kubeconfig(tmp_path / "prod-kubeconfig", namespace="prod")
    async with mcp_client(kube, "--kubeconfig", str(prod_config)) as client:
        assert "Cluster prod/pg" in await ok(client, "get_cluster_status", name="pg")
        assert "allow-list (prod)" in await fails(client, "list_clusters", namespace="default")


async def test_all_namespaces_mode_lists_cluster_wide(kube: Any) -> None:
    kube.seed(cluster("a", namespace="default"))
    kube.seed(cluster("b", namespace="prod"))
    async with mcp_client(kube, "--namespaces", "*") as client:
        result = await client.call_tool("list_clusters", {"all_namespaces": True})
        assert "Cluster prod/b" in await ok(client, "get_cluster_status", name="b", namespace="prod")
    assert {(c["namespace"], c["name"]) for c in result.structured_content["clusters"]} == {
        ("default", "a"), ("prod", "b")}
    assert any(p == "/apis/postgresql.cnpg.io/v1/clusters" for _, p, *_ in kube.requests)


async def test_invalid_namespace_name_is_refused(kube: Any) -> None:
    async with mcp_client(kube, "--namespaces", "*") as client:
        assert "Invalid namespace" in await fails(client, "list_clusters", namespace="../secrets")
    assert not kube.requests


async def test_resource_outside_the_allow_list_is_an_error(kube: Any) -> None:
    kube.seed(cluster("pg", namespace="prod"))
    async with mcp_client(kube) as client:
        with pytest.raises(Exception, match="allow-list"):
            await client.read_resource("cnpg://clusters/prod/pg")


@pytest.mark.parametrize(
    ("text", "value"),
    [("1Gi", 2**30), ("500Mi", 500 * 2**20), ("1.5Ti", Decimal("1.5") * 2**40), ("10G", 10**10),
     ("100m", Decimal("0.1")), ("1e3", 1000), ("2E", 2 * 10**18), ("42", 42)],
)
def test_quantities_parse_like_kubernetes(text: str, value: Any) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "Gi", "1GB", "-1Gi", "1 Gi", "ten"])
def test_bad_quantities_are_refused(text: str) -> None:
    with pytest.raises(InputError):
        parse_quantity(text)


@pytest.mark.parametrize("schedule", ["0 0 2 * * *", "*/30 * * * * *", "0 15 3 * * MON-FRI", "0 0 0 1 JAN,JUL ?",
                                      "@daily", "@every 1h30m", "0 0,30 8-18/2 * * 1-5"])
def test_valid_six_field_schedules_pass(schedule: str) -> None:
    assert validate_cron(schedule) == schedule


@pytest.mark.parametrize("schedule", ["0 2 * * *", "60 * * * * *", "0 0 24 * * *", "0 0 0 0 * *", "0 0 0 * 13 *",
                                      "0 0 0 * * 7", "0 0 5-1 * * *", "0 */0 * * * *", "a b c d e f", "@often"])
def test_invalid_schedules_are_refused(schedule: str) -> None:
    with pytest.raises(InputError, match="Invalid schedule"):
        validate_cron(schedule)


async def test_object_names_are_validated_before_any_api_call(kube: Any) -> None:
    async with mcp_client(kube) as client:
        for tool, arguments in [("get_cluster_status", {"name": "../secrets"}),
                                ("list_instances", {"cluster": "PG"}),
                                ("get_instance_logs", {"cluster": "pg", "instance": "pg-1/../../x"}),
                                ("switchover_cluster", {"name": "pg", "target_instance": "pg 2"})]:
            assert "Invalid" in await fails(client, tool, **arguments), tool
    assert not kube.requests


async def test_a_stale_resource_version_is_a_conflict_naming_the_retry(kube: Any) -> None:
    from server.config import load_config
    from server.kube import CLUSTERS, KubeError, connect

    kube.seed(cluster("pg"))
    client = connect(load_config(["--kubeconfig", str(kube.kubeconfig_path)], env={}))
    try:
        stale = await client.get(CLUSTERS, "default", "pg")
        await client.patch(CLUSTERS, "default", "pg", {"spec": {"instances": 4}})
        body = {"metadata": {"resourceVersion": stale["metadata"]["resourceVersion"]},
                "status": {"targetPrimary": "pg-2"}}
        with pytest.raises(KubeError) as caught:
            await client.patch(CLUSTERS, "default", "pg", body, subresource="status")
    finally:
        client.close()
    assert caught.value.status == 409 and "re-read it and retry" in caught.value.describe()
    assert kube.get("postgresql.cnpg.io/v1", "clusters", "default", "pg")["status"]["targetPrimary"] == "pg-1"
