"""A scripted assistant session: the sequence a careful DBA assistant follows, end to end on kube_api."""

import base64
from typing import Any

from tests.test_server_helpers import (
    CNPG,
    fails,
    kube_fixture,  # noqa: F401 - registers the `kube` fixture
    mcp_client,
    ok,
    operator_reconciles,
    query_of,
    text,
    writes,
)


async def test_assistant_session_from_dry_run_to_confirmed_delete(kube: Any) -> None:
    async with mcp_client(kube) as client:
        # 1. Dry run first: validated by the API, nothing written.
        before = writes(kube)
        dry = await ok(client, "create_cluster", name="orders", instances=2, storage_size="2Gi", dry_run=True)
        assert "Dry run" in dry and writes(kube) == before
        # 2. The real create, then the operator brings it up.
        await ok(client, "create_cluster", name="orders", instances=2, storage_size="2Gi", database="orders",
                 owner="orders")
        # Backups need a configured method: the assistant would add it via the cluster spec; the test seeds it.
        stored = kube.get(CNPG, "clusters", "default", "orders")
        stored["spec"]["backup"] = {"barmanObjectStore": {"destinationPath": "s3://b/orders",
                                                          "s3Credentials": {"inheritFromIAMRole": True}}}
        kube.seed(stored)
        operator_reconciles(kube, "orders", 2)
        status = await ok(client, "get_cluster_status", name="orders")
        assert "Cluster in healthy state" in status and "barmanObjectStore" in status
        # 3. Scale out, and the operator follows.
        await ok(client, "scale_cluster", name="orders", instances=3)
        operator_reconciles(kube, "orders", 3)
        instances = await client.call_tool("list_instances", {"cluster": "orders"})
        assert [i["role"] for i in instances.structured_content["instances"]] == ["primary", "replica", "replica"]
        # 4. Backup, pooler, database, role.
        await ok(client, "create_backup", cluster="orders", name="orders-before-change")
        await ok(client, "create_pooler", name="orders-rw", cluster="orders", pool_mode="transaction")
        await ok(client, "create_database", name="orders-reporting", cluster="orders", owner="orders")
        created_role = await client.call_tool("create_role", {"name": "reporter", "cluster": "orders"})
        assert not created_role.is_error
        # 5. Switchover to a replica.
        await ok(client, "switchover_cluster", name="orders", target_instance="orders-2")
        assert kube.get(CNPG, "clusters", "default", "orders")["status"]["targetPrimary"] == "orders-2"
        # 6. Delete: refused without the right confirmation, dry run, then for real.
        assert "confirm='orders'" in await fails(client, "delete_cluster", name="orders", confirm="y")
        await ok(client, "delete_cluster", name="orders", confirm="orders", dry_run=True)
        assert kube.get(CNPG, "clusters", "default", "orders") is not None
        await ok(client, "delete_cluster", name="orders", confirm="orders")
        gone = await fails(client, "get_cluster_status", name="orders")
    assert kube.get(CNPG, "clusters", "default", "orders") is None and "404" in gone
    for method, _, query, *_ in kube.requests:
        if method in ("POST", "DELETE") and query_of(query).get("dryRun"):
            assert query_of(query)["dryRun"] == ["All"]
    secret = kube.get("v1", "secrets", "default", "reporter-password")
    password = base64.b64decode(secret["data"]["password"]).decode()
    assert password not in text(created_role) and password not in str(created_role.structured_content)


async def test_unreachable_api_is_a_tool_error_not_a_crash(kube: Any) -> None:
    async with mcp_client(kube, "--request-timeout", "5") as client:
        kube.stop()
        body = await fails(client, "list_clusters")
        again = await fails(client, "get_cluster_status", name="pg")
    assert "unreachable" in body.lower() and "unreachable" in again.lower()
