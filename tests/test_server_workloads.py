"""Instance, log, event, backup, pooler, database and role tools, through the MCP SDK client on kube_api."""

import base64
from typing import Any

from tests.test_server_helpers import (
    CNPG,
    cluster,
    fails,
    kube_fixture,  # noqa: F401 - registers the `kube` fixture
    mcp_client,
    ok,
    pod,
    query_of,
    seed_cluster_with_pods,
    text,
    writes,
)


# -- instances, logs, events -------------------------------------------------------------------------------
async def test_list_instances_shows_role_readiness_node_and_restarts(kube: Any) -> None:
    seed_cluster_with_pods(kube, "pg", instances=2)
    kube.seed(pod("pg", 3, ready=False, node="node-b", restarts=4))
    job = pod("pg", 1)
    job["metadata"]["name"] = "pg-1-initdb-abcde"
    job["metadata"]["labels"]["cnpg.io/jobRole"] = "initdb"
    kube.seed(job)
    kube.seed(pod("other", 1))
    async with mcp_client(kube) as client:
        result = await client.call_tool("list_instances", {"cluster": "pg"})
    rows = {r["name"]: r for r in result.structured_content["instances"]}
    assert set(rows) == {"pg-1", "pg-2", "pg-3"}
    assert rows["pg-1"]["role"] == "primary" and rows["pg-2"]["role"] == "replica"
    assert rows["pg-1"]["ready"] is True and rows["pg-1"]["node"] == "node-a"
    assert rows["pg-3"]["ready"] is False and rows["pg-3"]["restarts"] == 4 and rows["pg-3"]["node"] == "node-b"
    lists = [q for m, p, q, *_ in kube.requests if p.endswith("/pods") and m == "GET"]
    assert query_of(lists[0])["labelSelector"] == ["cnpg.io/cluster=pg"]


async def test_list_instances_of_a_missing_cluster_is_an_error(kube: Any) -> None:
    async with mcp_client(kube) as client:
        assert "404" in await fails(client, "list_instances", cluster="ghost")


async def test_instance_logs_are_tailed_and_bounded(kube: Any) -> None:
    seed_cluster_with_pods(kube, "pg", instances=1)
    kube.set_pod_log("default", "pg-1", "\n".join(f"line {i} " + "x" * 40 for i in range(2000)), container="postgres")
    async with mcp_client(kube, "--max-output-chars", "2000") as client:
        body = await ok(client, "get_instance_logs", cluster="pg", instance="pg-1", tail_lines=1000)
        short = await ok(client, "get_instance_logs", cluster="pg", instance="pg-1", tail_lines=2)
    assert len(body) <= 2000 and "truncated" in body and "line 1999" in body
    assert "line 1998" in short and "line 1997" not in short
    logs = [q for m, p, q, *_ in kube.requests if p.endswith("/log")]
    assert query_of(logs[-1])["tailLines"] == ["2"] and query_of(logs[-1])["container"] == ["postgres"]


async def test_logs_of_a_pod_outside_the_cluster_are_refused(kube: Any) -> None:
    kube.seed(pod("other", 1))
    async with mcp_client(kube) as client:
        assert "not an instance of cluster pg" in await fails(client, "get_instance_logs", cluster="pg",
                                                              instance="other-1")
    assert not [r for r in kube.requests if r[1].endswith("/log")]


async def test_forbidden_logs_name_the_pods_log_permission(kube: Any) -> None:
    seed_cluster_with_pods(kube, "pg", instances=1)
    kube.forbid("get", "", "pods/log")
    async with mcp_client(kube) as client:
        body = await fails(client, "get_instance_logs", cluster="pg", instance="pg-1")
    assert "verb 'get' on resource 'pods/log'" in body and "core" in body


async def test_cluster_events_put_warnings_first(kube: Any) -> None:
    def event(name: str, obj: str, kind: str, etype: str, reason: str, when: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": "default"},
                "involvedObject": {"kind": kind, "name": obj, "namespace": "default"}, "type": etype,
                "reason": reason, "message": f"{reason} happened", "lastTimestamp": when, "count": 1}
    kube.seed(event("e1", "pg", "Cluster", "Normal", "CreatingInstance", "2026-01-01T00:03:00Z"))
    kube.seed(event("e2", "pg-2", "Pod", "Warning", "BackOff", "2026-01-01T00:01:00Z"))
    kube.seed(event("e3", "pg-1", "Pod", "Normal", "Started", "2026-01-01T00:02:00Z"))
    kube.seed(event("e4", "pgx-1", "Pod", "Warning", "Unrelated", "2026-01-01T00:04:00Z"))
    async with mcp_client(kube) as client:
        result = await client.call_tool("get_cluster_events", {"cluster": "pg"})
    reasons = [e["reason"] for e in result.structured_content["events"]]
    assert reasons == ["BackOff", "CreatingInstance", "Started"]


# -- backups ---------------------------------------------------------------------------------------------
async def test_create_backup_uses_the_configured_method(kube: Any) -> None:
    kube.seed(cluster("pg", barman=True))
    async with mcp_client(kube) as client:
        body = await ok(client, "create_backup", cluster="pg", name="pg-manual")
        listed = await ok(client, "list_backups", cluster="pg")
        detail = await ok(client, "get_backup", name="pg-manual")
    stored = kube.get(CNPG, "backups", "default", "pg-manual")
    assert stored["spec"] == {"cluster": {"name": "pg"}, "method": "barmanObjectStore"}
    assert "barmanObjectStore" in body and "pg-manual" in listed and "Backup default/pg-manual" in detail


async def test_create_backup_refuses_a_method_the_cluster_lacks(kube: Any) -> None:
    kube.seed(cluster("pg", barman=True))
    kube.seed(cluster("bare"))
    before = writes(kube)
    async with mcp_client(kube) as client:
        wrong = await fails(client, "create_backup", cluster="pg", method="volumeSnapshot")
        none = await fails(client, "create_backup", cluster="bare")
    assert "not configured for method 'volumeSnapshot'" in wrong and "barmanObjectStore" in wrong
    assert "no backup configuration" in none
    assert writes(kube) == before


async def test_create_backup_with_plugin_and_snapshot(kube: Any) -> None:
    kube.seed(cluster("pg", plugin=True, snapshot=True))
    async with mcp_client(kube) as client:
        assert "several" in await fails(client, "create_backup", cluster="pg")
        await ok(client, "create_backup", cluster="pg", method="plugin", name="b-plugin")
        await ok(client, "create_backup", cluster="pg", method="volumeSnapshot", name="b-snap", dry_run=True)
    plugin_backup = kube.get(CNPG, "backups", "default", "b-plugin")
    assert plugin_backup["spec"]["pluginConfiguration"] == {"name": "barman-cloud.cloudnative-pg.io"}
    assert kube.get(CNPG, "backups", "default", "b-snap") is None


async def test_scheduled_backup_lifecycle(kube: Any) -> None:
    kube.seed(cluster("pg", barman=True))
    async with mcp_client(kube) as client:
        await ok(client, "create_scheduled_backup", name="nightly", cluster="pg", schedule="0 0 2 * * *")
        await ok(client, "suspend_scheduled_backup", name="nightly")
        assert kube.get(CNPG, "scheduledbackups", "default", "nightly")["spec"]["suspend"] is True
        listed = await ok(client, "list_scheduled_backups")
        await ok(client, "resume_scheduled_backup", name="nightly")
        assert kube.get(CNPG, "scheduledbackups", "default", "nightly")["spec"]["suspend"] is False
        assert "confirm" in await fails(client, "delete_scheduled_backup", name="nightly", confirm="nope")
        await ok(client, "delete_scheduled_backup", name="nightly", confirm="nightly")
    assert "0 0 2 * * *" in listed
    assert kube.get(CNPG, "scheduledbackups", "default", "nightly") is None


async def test_bad_cron_is_refused(kube: Any) -> None:
    kube.seed(cluster("pg", barman=True))
    async with mcp_client(kube) as client:
        five = await fails(client, "create_scheduled_backup", name="n", cluster="pg", schedule="0 2 * * *")
        out_of_range = await fails(client, "create_scheduled_backup", name="n", cluster="pg", schedule="0 0 25 * * *")
        junk = await fails(client, "create_scheduled_backup", name="n", cluster="pg", schedule="every night")
    assert "6 cron fields" in five and "5-field" in five
    assert "hours" in out_of_range and "0-23" in out_of_range
    assert "Invalid schedule" in junk
    assert not [r for r in kube.requests if r[0] == "POST"]


# -- poolers and databases --------------------------------------------------------------------------------
async def test_pooler_create_list_delete(kube: Any) -> None:
    kube.seed(cluster("pg"))
    async with mcp_client(kube) as client:
        await ok(client, "create_pooler", name="pg-pooler-rw", cluster="pg", type="rw", instances=2,
                 pool_mode="transaction", parameters={"max_client_conn": "500"})
        listed = await ok(client, "list_poolers", cluster="pg")
        assert "collide" in await fails(client, "create_pooler", name="pg", cluster="pg")
        await ok(client, "delete_pooler", name="pg-pooler-rw", confirm="pg-pooler-rw")
    assert "transaction" in listed
    assert kube.get(CNPG, "poolers", "default", "pg-pooler-rw") is None


async def test_pooler_with_invalid_pool_mode_is_rejected(kube: Any) -> None:
    kube.seed(cluster("pg"))
    async with mcp_client(kube) as client:
        assert "pool_mode" in await fails(client, "create_pooler", name="p", cluster="pg", pool_mode="statement")


async def test_database_create_and_delete_explains_reclaim_policy(kube: Any) -> None:
    kube.seed(cluster("pg"))
    async with mcp_client(kube) as client:
        await ok(client, "create_database", name="shop", cluster="pg", owner="app", encoding="UTF8",
                 extensions=["pg_trgm"])
        await ok(client, "create_database", name="scratch", cluster="pg", owner="app", reclaim_policy="delete")
        listed = await ok(client, "list_databases")
        kept = await ok(client, "delete_database", name="shop", confirm="shop")
        dropped = await ok(client, "delete_database", name="scratch", confirm="scratch")
    assert "shop" in listed and "scratch" in listed
    assert "'retain'" in kept and "STAY" in kept
    assert "'delete'" in dropped and "DROPS" in dropped
    assert kube.list(CNPG, "databases", "default") == []


async def test_database_with_unknown_cluster_fails_cleanly(kube: Any) -> None:
    async with mcp_client(kube) as client:
        assert "404" in await fails(client, "create_database", name="shop", cluster="ghost", owner="app")


# -- roles -----------------------------------------------------------------------------------------------
def secret_password(kube_api: Any, name: str) -> str:
    secret = kube_api.get("v1", "secrets", "default", name)
    return base64.b64decode(secret["data"]["password"]).decode()


async def test_create_role_stores_password_in_an_owned_basic_auth_secret_never_shown(kube: Any) -> None:
    kube.seed(cluster("pg"))
    async with mcp_client(kube) as client:
        result = await client.call_tool("create_role", {"name": "reporting", "cluster": "pg", "createdb": True})
        listed = await client.call_tool("list_roles", {})
    role = kube.get(CNPG, "databaseroles", "default", "reporting")
    secret = kube.get("v1", "secrets", "default", "reporting-password")
    password = secret_password(kube, "reporting-password")
    assert role["spec"]["name"] == "reporting" and role["spec"]["passwordSecret"] == {"name": "reporting-password"}
    assert secret["type"] == "kubernetes.io/basic-auth"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == role["metadata"]["uid"]
    assert len(password) >= 24
    for res in (result, listed):
        assert not res.is_error
        assert password not in text(res) and password not in str(res.structured_content)


async def test_role_password_rotation_changes_secret_without_showing_it(kube: Any) -> None:
    kube.seed(cluster("pg"))
    async with mcp_client(kube) as client:
        await ok(client, "create_role", name="app-user", cluster="pg")
        first = secret_password(kube, "app-user-password")
        result = await client.call_tool("update_role", {"name": "app-user", "rotate_password": True,
                                                        "connection_limit": 10})
    second = secret_password(kube, "app-user-password")
    assert not result.is_error and first != second
    assert second not in text(result) and first not in text(result)
    assert kube.get(CNPG, "databaseroles", "default", "app-user")["spec"]["connectionLimit"] == 10


async def test_delete_role_removes_exactly_its_role_and_secret(kube: Any) -> None:
    kube.seed(cluster("pg"))
    kube.seed({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unrelated", "namespace": "default"},
               "type": "Opaque", "data": {"k": base64.b64encode(b"v").decode()}})
    async with mcp_client(kube) as client:
        await ok(client, "create_role", name="alice", cluster="pg")
        await ok(client, "create_role", name="bob", cluster="pg")
        assert "confirm='alice'" in await fails(client, "delete_role", name="alice", confirm="bob")
        body = await ok(client, "delete_role", name="alice", confirm="alice")
    assert kube.get(CNPG, "databaseroles", "default", "alice") is None
    assert kube.get("v1", "secrets", "default", "alice-password") is None
    assert kube.get(CNPG, "databaseroles", "default", "bob") is not None
    assert kube.get("v1", "secrets", "default", "bob-password") is not None
    assert kube.get("v1", "secrets", "default", "unrelated") is not None
    assert "reclaimPolicy" in body or "drops PostgreSQL role alice" in body
    deleted = [p for m, p, *_ in kube.requests if m == "DELETE"]
    assert all(p.endswith(("/databaseroles/alice", "/secrets/alice-password")) for p in deleted)


async def test_delete_role_keeps_a_secret_it_does_not_own(kube: Any) -> None:
    kube.seed(cluster("pg"))
    kube.seed({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
               "metadata": {"name": "shared-creds", "namespace": "default"},
               "data": {"username": base64.b64encode(b"legacy").decode(),
                        "password": base64.b64encode(b"hunter2").decode()}})
    kube.seed({"apiVersion": CNPG, "kind": "DatabaseRole", "metadata": {"name": "legacy", "namespace": "default"},
               "spec": {"cluster": {"name": "pg"}, "name": "legacy", "passwordSecret": {"name": "shared-creds"},
                        "databaseRoleReclaimPolicy": "retain"}})
    async with mcp_client(kube) as client:
        body = await ok(client, "delete_role", name="legacy", confirm="legacy", drop_from_postgres=False)
    assert kube.get(CNPG, "databaseroles", "default", "legacy") is None
    assert kube.get("v1", "secrets", "default", "shared-creds") is not None
    assert "not owned by this role" in body and "STAYS" in body


async def test_create_role_refuses_to_take_over_an_existing_secret(kube: Any) -> None:
    kube.seed(cluster("pg"))
    kube.seed({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "carol-password", "namespace": "default"},
               "type": "Opaque", "data": {}})
    async with mcp_client(kube) as client:
        assert "already exists" in await fails(client, "create_role", name="carol", cluster="pg")
    assert kube.get(CNPG, "databaseroles", "default", "carol") is None


async def test_role_creation_is_rolled_back_when_the_secret_cannot_be_created(kube: Any) -> None:
    kube.seed(cluster("pg"))
    kube.forbid("create", "", "secrets")
    async with mcp_client(kube) as client:
        body = await fails(client, "create_role", name="dave", cluster="pg")
    assert "rolled back" in body and "verb 'create' on resource 'secrets'" in body
    assert kube.get(CNPG, "databaseroles", "default", "dave") is None


async def test_create_role_dry_run_writes_nothing(kube: Any) -> None:
    kube.seed(cluster("pg"))
    before = writes(kube)
    async with mcp_client(kube) as client:
        body = await ok(client, "create_role", name="erin", cluster="pg", dry_run=True)
    assert "Dry run" in body and writes(kube) == before
    assert all(query_of(q).get("dryRun") == ["All"] for m, _, q, *_ in kube.requests if m != "GET")


async def test_delete_role_drops_it_in_postgres_before_deleting_the_object(kube: Any) -> None:
    kube.seed(cluster("pg"))
    async with mcp_client(kube) as client:
        await ok(client, "create_role", name="frank", cluster="pg")
        assert kube.get(CNPG, "databaseroles", "default", "frank")["spec"]["databaseRoleReclaimPolicy"] == "retain"
        kube.clear_requests()
        body = await ok(client, "delete_role", name="frank", confirm="frank")
    writes_seen = [(m, p.rsplit("/", 2)[-2:]) for m, p, *_ in kube.requests if m != "GET"]
    assert writes_seen == [("PATCH", ["databaseroles", "frank"]), ("DELETE", ["databaseroles", "frank"]),
                           ("DELETE", ["secrets", "frank-password"])]
    assert "drops PostgreSQL role frank" in body


async def test_delete_role_reports_an_object_held_by_finalizers(kube: Any) -> None:
    kube.seed(cluster("pg"))
    kube.seed({"apiVersion": CNPG, "kind": "DatabaseRole",
               "metadata": {"name": "gina", "namespace": "default", "finalizers": ["cnpg.io/deleteDatabaseRole"]},
               "spec": {"cluster": {"name": "pg"}, "name": "gina"}})
    async with mcp_client(kube) as client:
        body = await ok(client, "delete_role", name="gina", confirm="gina")
    remaining = kube.get(CNPG, "databaseroles", "default", "gina")
    assert remaining["metadata"].get("deletionTimestamp")
    assert "still exists until the operator finishes (finalizers: cnpg.io/deleteDatabaseRole)" in body


async def test_failed_role_delete_restores_the_reclaim_policy(kube: Any) -> None:
    kube.seed(cluster("pg"))
    kube.seed({"apiVersion": CNPG, "kind": "DatabaseRole", "metadata": {"name": "hank", "namespace": "default"},
               "spec": {"cluster": {"name": "pg"}, "name": "hank", "databaseRoleReclaimPolicy": "retain"}})
    kube.forbid("delete", "postgresql.cnpg.io", "databaseroles")
    async with mcp_client(kube) as client:
        body = await fails(client, "delete_role", name="hank", confirm="hank")
    assert "restored to 'retain'" in body and "verb 'delete'" in body
    assert kube.get(CNPG, "databaseroles", "default", "hank")["spec"]["databaseRoleReclaimPolicy"] == "retain"


async def test_delete_database_held_by_a_finalizer_says_so(kube: Any) -> None:
    kube.seed(cluster("pg"))
    kube.seed({"apiVersion": CNPG, "kind": "Database",
               "metadata": {"name": "held", "namespace": "default", "finalizers": ["cnpg.io/deleteDatabase"]},
               "spec": {"cluster": {"name": "pg"}, "name": "held", "owner": "app", "databaseReclaimPolicy": "delete"}})
    async with mcp_client(kube) as client:
        result = await client.call_tool("delete_database", {"name": "held", "confirm": "held"})
    assert not result.is_error and result.structured_content["pending"] is True
    assert "marked for deletion" in text(result) and "cnpg.io/deleteDatabase" in text(result)
