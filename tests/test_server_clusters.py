"""Cluster tools of the CNPG MCP server, driven through the MCP SDK client against the kube_api fake."""

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
    writes,
)

WRITE_TOOLS = {
    "create_cluster", "scale_cluster", "resize_cluster_storage", "update_cluster_parameters", "switchover_cluster",
    "restart_cluster", "hibernate_cluster", "wake_cluster", "delete_cluster", "create_backup",
    "create_scheduled_backup", "suspend_scheduled_backup", "resume_scheduled_backup", "delete_scheduled_backup",
    "create_pooler", "delete_pooler", "create_database", "delete_database", "create_role", "update_role",
    "delete_role",
}


def get(kube_api: Any, name: str, namespace: str = "default") -> dict[str, Any]:
    return kube_api.get(CNPG, "clusters", namespace, name)


async def test_every_tool_has_annotations_schema_and_description(kube: Any) -> None:
    async with mcp_client(kube) as client:
        tools = (await client.list_tools()).tools
    names = {t.name for t in tools}
    assert WRITE_TOOLS <= names
    for tool in tools:
        assert tool.description and len(tool.description) > 20, tool.name
        assert tool.input_schema["type"] == "object"
        for prop, schema in tool.input_schema["properties"].items():
            assert schema.get("description"), (tool.name, prop)
        ann = tool.annotations
        assert ann is not None and ann.open_world_hint is False, tool.name
        assert ann.read_only_hint is (tool.name not in WRITE_TOOLS), tool.name
        if tool.name.startswith("delete_"):
            assert ann.destructive_hint is True
            assert "confirm" in tool.input_schema["required"]
    scale = next(t for t in tools if t.name == "scale_cluster")
    assert scale.input_schema["properties"]["instances"]["minimum"] == 1
    pooler = next(t for t in tools if t.name == "create_pooler")
    assert pooler.input_schema["properties"]["pool_mode"]["enum"] == ["session", "transaction"]


async def test_list_clusters_shows_phase_ready_and_primary(kube: Any) -> None:
    kube.seed(cluster("alpha"))
    kube.seed(cluster("beta", instances=2))
    async with mcp_client(kube) as client:
        result = await client.call_tool("list_clusters", {})
    assert not result.is_error
    body = result.content[0].text
    assert "alpha" in body and "beta" in body and "Cluster in healthy state" in body and "alpha-1" in body
    assert {c["name"] for c in result.structured_content["clusters"]} == {"alpha", "beta"}


async def test_list_clusters_with_label_selector_sends_it(kube: Any) -> None:
    async with mcp_client(kube) as client:
        assert "No clusters" in await ok(client, "list_clusters", label_selector="team=payments")
    lists = [q for m, p, q, *_ in kube.requests if m == "GET" and p.endswith("/clusters")]
    assert query_of(lists[-1])["labelSelector"] == ["team=payments"]


async def test_get_cluster_status_reports_primary_backups_archiving_certificates(kube: Any) -> None:
    kube.seed(cluster("pg", barman=True))
    async with mcp_client(kube) as client:
        body = await ok(client, "get_cluster_status", name="pg")
    assert "Phase: Cluster in healthy state" in body
    assert "current pg-1, target pg-1" in body
    assert "barmanObjectStore" in body
    assert "Continuous archiving: working" in body
    assert "pg-ca 2027-01-01" in body


async def test_missing_cluster_is_a_tool_error_with_http_status(kube: Any) -> None:
    async with mcp_client(kube) as client:
        body = await fails(client, "get_cluster_status", name="nope")
    assert "404" in body and "NotFound" in body


async def test_create_cluster_dry_run_writes_nothing_and_returns_the_object(kube: Any) -> None:
    before = writes(kube)
    async with mcp_client(kube) as client:
        body = await ok(client, "create_cluster", name="fresh", instances=2, storage_size="5Gi", postgres_major=16,
                        database="shop", owner="shop_owner", parameters={"max_connections": "200"}, dry_run=True)
    assert writes(kube) == before
    posts = [(p, q) for m, p, q, *_ in kube.requests if m == "POST"]
    assert posts and all(query_of(q).get("dryRun") == ["All"] for _, q in posts)
    assert "Dry run" in body and '"instances": 2' in body and "postgresql:16" in body
    assert kube.list(CNPG, "clusters", "default") == []


async def test_create_cluster_stores_a_valid_cluster(kube: Any) -> None:
    async with mcp_client(kube) as client:
        body = await ok(client, "create_cluster", name="fresh", instances=3, storage_size="10Gi",
                        storage_class="fast", cpu="500m", memory="1Gi", database="app", owner="app")
    stored = get(kube, "fresh")
    assert "Created Cluster default/fresh" in body
    assert stored["spec"]["instances"] == 3
    assert stored["spec"]["storage"]["size"] == "10Gi" and stored["spec"]["storage"]["storageClass"] == "fast"
    assert stored["spec"]["resources"]["limits"] == {"cpu": "500m", "memory": "1Gi"}
    assert stored["spec"]["bootstrap"]["initdb"] == {"database": "app", "owner": "app"}
    assert stored["spec"]["imageName"].endswith(":17")


async def test_create_cluster_uses_configured_default_image(kube: Any) -> None:
    async with mcp_client(kube, "--default-image", "registry.local/pg:17.2") as client:
        await ok(client, "create_cluster", name="img")
    assert get(kube, "img")["spec"]["imageName"] == "registry.local/pg:17.2"


async def test_create_existing_cluster_is_a_conflict(kube: Any) -> None:
    kube.seed(cluster("pg"))
    async with mcp_client(kube) as client:
        body = await fails(client, "create_cluster", name="pg")
    assert "409" in body and "AlreadyExists" in body


async def test_create_cluster_rejects_bad_input_without_calling_the_api(kube: Any) -> None:
    async with mcp_client(kube) as client:
        assert "Invalid name 'Bad_Name'" in await fails(client, "create_cluster", name="Bad_Name")
        assert "Invalid cluster name" in await fails(client, "create_cluster", name="has.dot")
        assert "either image or postgres_major" in await fails(
            client, "create_cluster", name="x", image="a:1", postgres_major=16)
        assert "Invalid quantity" in await fails(client, "create_cluster", name="x", storage_size="ten gigs")
        assert "operator" in await fails(client, "create_cluster", name="x", parameters={"port": "5433"})
        assert await fails(client, "create_cluster", name="x", instances=0)
    assert not [r for r in kube.requests if r[0] == "POST"]


async def test_scale_cluster_merge_patches_instances(kube: Any) -> None:
    kube.seed(cluster("pg"))
    async with mcp_client(kube) as client:
        body = await ok(client, "scale_cluster", name="pg", instances=5)
        assert "already has 5" in await ok(client, "scale_cluster", name="pg", instances=5)
    assert "3 -> 5" in body
    assert get(kube, "pg")["spec"]["instances"] == 5
    patches = [r for r in kube.requests if r[0] == "PATCH"]
    assert len(patches) == 1 and patches[0][3].startswith("application/merge-patch+json")


async def test_scale_to_zero_is_refused_by_the_schema(kube: Any) -> None:
    kube.seed(cluster("pg"))
    async with mcp_client(kube) as client:
        body = await fails(client, "scale_cluster", name="pg", instances=0)
    assert "instances" in body
    assert get(kube, "pg")["spec"]["instances"] == 3


async def test_resize_storage_grows(kube: Any) -> None:
    kube.seed(cluster("pg", size="1Gi"))
    async with mcp_client(kube) as client:
        body = await ok(client, "resize_cluster_storage", name="pg", size="2048Mi")
    assert "1Gi -> 2048Mi" in body
    assert get(kube, "pg")["spec"]["storage"]["size"] == "2048Mi"


async def test_resize_storage_refuses_to_shrink_with_reason(kube: Any) -> None:
    kube.seed(cluster("pg", size="10Gi"))
    before = writes(kube)
    async with mcp_client(kube) as client:
        body = await fails(client, "resize_cluster_storage", name="pg", size="9000Mi")
        same = await ok(client, "resize_cluster_storage", name="pg", size="10240Mi")
    assert "smaller than the current data size 10Gi" in body and "only grow" in body
    assert "already" in same
    assert writes(kube) == before
    assert get(kube, "pg")["spec"]["storage"]["size"] == "10Gi"


async def test_update_parameters_sets_and_removes(kube: Any) -> None:
    obj = cluster("pg")
    obj["spec"]["postgresql"] = {"parameters": {"work_mem": "4MB", "max_connections": "100"}}
    kube.seed(obj)
    async with mcp_client(kube) as client:
        body = await ok(client, "update_cluster_parameters", name="pg", parameters={"work_mem": "16MB"},
                        remove=["max_connections"])
        refused = await fails(client, "update_cluster_parameters", name="pg", parameters={"wal_level": "minimal"})
    assert "work_mem: 4MB -> 16MB" in body and "max_connections: 100 -> (removed)" in body
    assert get(kube, "pg")["spec"]["postgresql"]["parameters"] == {"work_mem": "16MB"}
    assert "wal_level" in refused


async def test_switchover_sets_target_primary_through_status_subresource(kube: Any) -> None:
    seed_cluster_with_pods(kube, "pg")
    async with mcp_client(kube) as client:
        body = await ok(client, "switchover_cluster", name="pg", target_instance="pg-2")
    st = get(kube, "pg")["status"]
    assert st["targetPrimary"] == "pg-2" and st["currentPrimary"] == "pg-1"
    assert st["phase"] == "Switchover in progress" and st["phaseReason"] == "Switching over to pg-2"
    assert "pg-1 -> pg-2" in body
    status_patches = [r for r in kube.requests if r[0] == "PATCH"]
    assert [p for _, p, *_ in status_patches] == ["/apis/postgresql.cnpg.io/v1/namespaces/default/clusters/pg/status"]


async def test_switchover_refuses_unknown_or_unready_instances(kube: Any) -> None:
    seed_cluster_with_pods(kube, "pg")
    kube.seed(pod("pg", 9, ready=False))
    async with mcp_client(kube) as client:
        assert "does not exist" in await fails(client, "switchover_cluster", name="pg", target_instance="pg-7")
        assert "not ready" in await fails(client, "switchover_cluster", name="pg", target_instance="pg-9")
        assert "already" in await ok(client, "switchover_cluster", name="pg", target_instance="pg-1")
    assert get(kube, "pg")["status"]["targetPrimary"] == "pg-1"


async def test_restart_sets_the_restarted_at_annotation(kube: Any) -> None:
    kube.seed(cluster("pg"))
    async with mcp_client(kube) as client:
        await ok(client, "restart_cluster", name="pg")
    assert "kubectl.kubernetes.io/restartedAt" in get(kube, "pg")["metadata"]["annotations"]


async def test_hibernate_and_wake_toggle_the_annotation(kube: Any) -> None:
    kube.seed(cluster("pg"))
    async with mcp_client(kube) as client:
        await ok(client, "hibernate_cluster", name="pg")
        assert get(kube, "pg")["metadata"]["annotations"]["cnpg.io/hibernation"] == "on"
        assert "hibernated" in await fails(client, "restart_cluster", name="pg")
        assert "already" in await ok(client, "hibernate_cluster", name="pg")
        await ok(client, "wake_cluster", name="pg")
    assert get(kube, "pg")["metadata"]["annotations"]["cnpg.io/hibernation"] == "off"


async def test_delete_requires_confirm_equal_to_the_name(kube: Any) -> None:
    kube.seed(cluster("pg"))
    kube.seed(cluster("pg-other"))
    async with mcp_client(kube) as client:
        body = await fails(client, "delete_cluster", name="pg", confirm="yes")
    assert "confirm='pg'" in body
    assert not [r for r in kube.requests if r[0] == "DELETE"]
    assert get(kube, "pg")


async def test_delete_dry_run_deletes_nothing(kube: Any) -> None:
    kube.seed(cluster("pg"))
    before = writes(kube)
    async with mcp_client(kube) as client:
        assert "Dry run" in await ok(client, "delete_cluster", name="pg", confirm="pg", dry_run=True)
    assert writes(kube) == before
    deletes = [q for m, _, q, *_ in kube.requests if m == "DELETE"]
    assert deletes and query_of(deletes[0]).get("dryRun") == ["All"]
    assert get(kube, "pg")


async def test_delete_removes_exactly_that_cluster(kube: Any) -> None:
    kube.seed(cluster("pg"))
    kube.seed(cluster("pg-other"))
    async with mcp_client(kube) as client:
        assert "Deleted Cluster default/pg" in await ok(client, "delete_cluster", name="pg", confirm="pg")
    assert [c["metadata"]["name"] for c in kube.list(CNPG, "clusters", "default")] == ["pg-other"]


async def test_forbidden_names_the_missing_permission(kube: Any) -> None:
    kube.seed(cluster("pg"))
    kube.forbid("patch", "postgresql.cnpg.io", "clusters")
    async with mcp_client(kube) as client:
        body = await fails(client, "scale_cluster", name="pg", instances=4)
    assert "403" in body and "Forbidden" in body
    assert "verb 'patch' on resource 'clusters' in API group postgresql.cnpg.io in namespace 'default'" in body


async def test_namespace_outside_the_allow_list_is_refused(kube: Any) -> None:
    kube.seed(cluster("pg", namespace="prod"))
    async with mcp_client(kube) as client:
        body = await fails(client, "get_cluster_status", name="pg", namespace="prod")
    assert "allow-list" in body
    assert not [r for r in kube.requests if "/namespaces/prod/" in r[1]]
    async with mcp_client(kube, "--namespaces", "default,prod") as client:
        assert "Cluster prod/pg" in await ok(client, "get_cluster_status", name="pg", namespace="prod")
        listed = await client.call_tool("list_clusters", {"all_namespaces": True})
    assert [c["namespace"] for c in listed.structured_content["clusters"]] == ["prod"]


async def test_read_only_mode_hides_and_refuses_write_tools(kube: Any) -> None:
    kube.seed(cluster("pg"))
    async with mcp_client(kube, env={"CNPG_READ_ONLY": "true"}) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        body = await fails(client, "delete_cluster", name="pg", confirm="pg")
        await ok(client, "get_cluster_status", name="pg")
    assert names and not names & WRITE_TOOLS
    assert "read-only" in body
    assert not [r for r in kube.requests if r[0] != "GET"]


async def test_long_output_is_bounded_and_says_truncated(kube: Any) -> None:
    for i in range(60):
        kube.seed(cluster(f"cluster-with-a-rather-long-name-{i:03d}"))
    async with mcp_client(kube, "--max-output-chars", "1000") as client:
        result = await client.call_tool("list_clusters", {})
    body = result.content[0].text
    assert not result.is_error and len(body) <= 1000 and "truncated" in body


async def test_cluster_status_resource_and_diagnose_prompt(kube: Any) -> None:
    kube.seed(cluster("pg"))
    async with mcp_client(kube) as client:
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["cnpg://clusters/{namespace}/{name}"]
        contents = (await client.read_resource("cnpg://clusters/default/pg")).contents
        prompt = await client.get_prompt("diagnose_cluster", {"name": "pg", "namespace": "default"})
    assert "Phase: Cluster in healthy state" in contents[0].text
    assert "get_cluster_events" in prompt.messages[0].content.text
