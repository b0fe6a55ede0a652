"""Every cnpg-mcp-server tool, end to end, against the sandbox that `python -m devkube` runs.

The runner starts as a subprocess (its ready line, its private kubeconfig, its argv, its stop and its port-in-use
refusal are checked here too); `cnpg-mcp-server` then runs over stdio with the MCP SDK's client and
KUBECONFIG pointing at the sandbox. The scenario is an assistant's whole session: create a cluster, watch it
become healthy, scale, switch over, restart, change parameters and storage, back up, schedule, pool, manage
databases and roles, read events and logs, hibernate, wake and delete. The tool list comes from the server
itself, so a new tool without coverage here fails the test.
"""

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import CallToolResult

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = shutil.which("cnpg-mcp-server") or str(Path(sys.executable).parent / "cnpg-mcp-server")
GROUP, VERSION = "postgresql.cnpg.io", "v1"
HEALTHY = "Cluster in healthy state"
T = TypeVar("T")


@dataclass
class Sandbox:
    process: subprocess.Popen[str]
    url: str
    kubeconfig: Path
    ready_line: str


def start_runner(kubeconfig: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "devkube", "--kubeconfig", str(kubeconfig), *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def read_ready_line(process: subprocess.Popen[str], timeout: float = 60.0) -> str:
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], timeout)
    assert readable, "the sandbox printed no ready line"
    return process.stdout.readline()


def stop(process: subprocess.Popen[str]) -> tuple[int, float]:
    """SIGTERM, then the exit status and how long it took."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    finally:
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    return code, time.monotonic() - started


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    kubeconfig = tmp_path_factory.mktemp("sandbox") / "kubeconfig"
    process = start_runner(kubeconfig, "--port", "0", "--step-seconds", "0.05")
    try:
        line = read_ready_line(process)
        yield Sandbox(process, json.loads(line)["url"], kubeconfig, line)
    finally:
        if process.poll() is None:
            stop(process)


# ---------------------------------------------------------------- the runner


def test_the_runner_prints_one_json_ready_line(sandbox: Sandbox) -> None:
    ready = json.loads(sandbox.ready_line)
    assert ready == {"sandbox": "ready", "url": sandbox.url, "kubeconfig": str(sandbox.kubeconfig)}
    assert sandbox.url.startswith("http://127.0.0.1:") and sandbox.ready_line.endswith("\n")


def test_the_kubeconfig_is_private_and_names_the_sandbox_context(sandbox: Sandbox) -> None:
    assert sandbox.kubeconfig.stat().st_mode & 0o777 == 0o600
    _, current = k8s_config.list_kube_config_contexts(config_file=str(sandbox.kubeconfig))
    assert current["name"] == "cnpg-mcp-sandbox"
    assert current["context"] == {"cluster": "cnpg-mcp-sandbox", "user": "cnpg-mcp-sandbox", "namespace": "default"}
    api = k8s_config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    assert "sandbox" in k8s.VersionApi(api).get_code().git_version


def test_the_token_is_never_in_the_runners_argv_or_output(sandbox: Sandbox) -> None:
    import yaml

    token = yaml.safe_load(sandbox.kubeconfig.read_text())["users"][0]["user"]["token"]
    assert len(token) >= 32
    cmdline = Path(f"/proc/{sandbox.process.pid}/cmdline").read_bytes().decode()
    assert token not in cmdline and token not in sandbox.ready_line


def test_a_request_without_the_token_is_refused(sandbox: Sandbox) -> None:
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{sandbox.url}/api/v1/namespaces/default/pods", timeout=10)
    assert refused.value.code == 401


def test_a_port_in_use_is_refused_with_status_2_and_how_to_choose_another(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "devkube", "--port", str(port), "--kubeconfig", str(tmp_path / "kc")],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 2
    assert str(port) in result.stderr and "SANDBOX_PORT" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert not (tmp_path / "kc").exists()


def test_sigterm_stops_it_at_once_and_removes_only_its_kubeconfig(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    neighbour = tmp_path / "other-file"
    neighbour.write_text("kept")
    process = start_runner(kubeconfig, "--port", "0")
    read_ready_line(process)
    assert kubeconfig.exists()
    code, took = stop(process)
    assert code == 0 and took < 5
    assert not kubeconfig.exists() and neighbour.read_text() == "kept"


def test_help_documents_the_interface_and_that_state_is_in_memory_only() -> None:
    result = subprocess.run([sys.executable, "-m", "devkube", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    for flag in ("--port", "--kubeconfig", "--host", "--step-seconds", "--namespace", "SANDBOX_PORT", "SIGTERM"):
        assert flag in result.stdout
    assert "memory only" in result.stdout and "nothing is deployed" in result.stdout


# ---------------------------------------------------------------- every tool


def text(result: CallToolResult) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


class Session:
    """Calls tools, remembers which were called, and checks that none failed at the protocol level."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.covered: set[str] = set()

    async def call(self, tool: str, **arguments: Any) -> CallToolResult:
        self.covered.add(tool)
        result = await self.client.call_tool(tool, arguments)  # a protocol error would raise here
        assert isinstance(result, CallToolResult)
        return result

    async def ok(self, tool: str, **arguments: Any) -> tuple[str, dict[str, Any]]:
        result = await self.call(tool, **arguments)
        assert not result.is_error, f"{tool} failed: {text(result)}"
        return text(result), dict(result.structured_content or {})

    async def fails(self, tool: str, **arguments: Any) -> str:
        result = await self.call(tool, **arguments)
        assert result.is_error, f"{tool} unexpectedly succeeded: {text(result)}"
        return text(result)


async def eventually(check: Callable[[], Awaitable[T]], what: str, within: float = 20.0) -> T:
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await anyio.sleep(0.05)


class Kube:
    """Direct reads of the sandbox, for what the tools do not show (annotations, volumes)."""

    def __init__(self, kubeconfig: Path) -> None:
        api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
        self.co = k8s.CustomObjectsApi(api)
        self.core = k8s.CoreV1Api(api)

    def cluster(self, name: str = "pg") -> dict[str, Any]:
        obj: dict[str, Any] = self.co.get_namespaced_custom_object(GROUP, VERSION, "default", "clusters", name)
        return obj

    def pods(self, cluster: str = "pg") -> list[Any]:
        return list(self.core.list_namespaced_pod("default", label_selector=f"cnpg.io/cluster={cluster}").items)

    def settled(self, instances: int) -> bool:
        """Healthy, every instance ready, and each pod restarted as the cluster last asked."""
        cluster = self.cluster()
        wanted = (cluster["metadata"].get("annotations") or {}).get("kubectl.kubernetes.io/restartedAt")
        pods = self.pods()
        return (
            (cluster.get("status") or {}).get("phase") == HEALTHY
            and len(pods) == instances
            and all(any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or []) for p in pods)
            and all((p.metadata.annotations or {}).get("kubectl.kubernetes.io/restartedAt") == wanted for p in pods)
        )


async def test_every_tool_works_end_to_end_against_the_sandbox(sandbox: Sandbox, tmp_path: Path) -> None:
    kube = Kube(sandbox.kubeconfig)
    params = StdioServerParameters(
        command=SCRIPT,
        env={"KUBECONFIG": str(sandbox.kubeconfig), "HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")},
    )
    async with Client(params, mode="legacy", read_timeout_seconds=60) as client:
        session = Session(client)
        listed = {tool.name for tool in (await client.list_tools()).tools}
        assert "SANDBOX" in (client.instructions or "")

        async def settled(instances: int) -> bool:
            return await anyio.to_thread.run_sync(kube.settled, instances)

        # Create: a dry run first, then the cluster, which the operator brings to a healthy state.
        dry, _ = await session.ok("create_cluster", name="pg", instances=3, dry_run=True)
        assert "Dry run" in dry
        await session.fails("get_cluster_status", name="pg")
        await session.ok("create_cluster", name="pg", instances=3, storage_size="1Gi")

        async def healthy_status() -> str:
            status, data = await session.ok("get_cluster_status", name="pg")
            return status if data.get("phase") == HEALTHY and data.get("readyInstances") == 3 else ""

        status = await eventually(healthy_status, "a healthy cluster")
        assert "SANDBOX" in status and "Primary: current pg-1, target pg-1" in status
        listing, data = await session.ok("list_clusters")
        assert [c["name"] for c in data["clusters"]] == ["pg"] and "3/3" in listing

        _, data = await session.ok("list_instances", cluster="pg")
        assert {i["name"]: i["role"] for i in data["instances"]} == {
            "pg-1": "primary", "pg-2": "replica", "pg-3": "replica"}
        assert all(i["ready"] for i in data["instances"])
        logs, _ = await session.ok("get_instance_logs", cluster="pg", instance="pg-1", tail_lines=100)
        assert "Starting CloudNativePG Instance Manager" in logs and "ready to accept connections" in logs

        # Scale up, then down: the highest serial goes.
        await session.ok("scale_cluster", name="pg", instances=4)
        await eventually(lambda: settled(4), "four ready instances")
        await session.ok("scale_cluster", name="pg", instances=3)
        await eventually(lambda: settled(3), "three instances again")
        _, data = await session.ok("list_instances", cluster="pg")
        assert sorted(i["name"] for i in data["instances"]) == ["pg-1", "pg-2", "pg-3"]

        # Switchover to a replica.
        await session.ok("switchover_cluster", name="pg", target_instance="pg-2")

        async def new_primary() -> bool:
            _, status_data = await session.ok("get_cluster_status", name="pg")
            return status_data.get("currentPrimary") == "pg-2" and status_data.get("phase") == HEALTHY

        await eventually(new_primary, "pg-2 as the primary")
        await eventually(lambda: settled(3), "a settled cluster after the switchover")
        _, data = await session.ok("list_instances", cluster="pg")
        assert {i["name"]: i["role"] for i in data["instances"]}["pg-2"] == "primary"

        # Rolling restart, parameters, storage.
        await session.ok("restart_cluster", name="pg")
        await eventually(lambda: settled(3), "a restarted cluster")
        await session.ok("update_cluster_parameters", name="pg", parameters={"max_connections": "150"})

        async def reloaded() -> bool:
            log, _ = await session.ok("get_instance_logs", cluster="pg", instance="pg-3", tail_lines=200)
            return '\\"max_connections\\" changed to \\"150\\"' in log

        await eventually(reloaded, "the new max_connections in the logs")
        await eventually(lambda: settled(3), "the cluster after the parameter change")
        await session.ok("resize_cluster_storage", name="pg", size="2Gi")

        async def grown() -> bool:
            pvcs = await anyio.to_thread.run_sync(
                lambda: kube.core.list_namespaced_persistent_volume_claim("default").items)
            return all(p.status.capacity["storage"] == "2Gi" for p in pvcs) and len(pvcs) == 3

        await eventually(grown, "grown volumes")

        # Backups: a method configured by the user (as with kubectl), then an on-demand backup that completes.
        await session.fails("create_backup", cluster="pg")
        await anyio.to_thread.run_sync(lambda: kube.co.patch_namespaced_custom_object(
            GROUP, VERSION, "default", "clusters", "pg",
            {"spec": {"backup": {"barmanObjectStore": {"destinationPath": "s3://backups/pg",
                                                       "s3Credentials": {"inheritFromIAMRole": True}}}}}))
        await session.ok("create_backup", cluster="pg", name="pg-backup-1")

        async def backup_done() -> str:
            detail, _ = await session.ok("get_backup", name="pg-backup-1")
            return detail if "Phase: completed" in detail else ""

        detail = await eventually(backup_done, "a completed backup")
        assert "beginWal:" in detail and "backupId:" in detail
        _, data = await session.ok("list_backups", cluster="pg")
        assert [b["phase"] for b in data["backups"]] == ["completed"]
        status, _ = await session.ok("get_cluster_status", name="pg")
        assert "Last successful backup: 20" in status and "First recoverability point:" in status

        # Scheduled backups.
        await session.ok("create_scheduled_backup", name="pg-nightly", cluster="pg", schedule="0 0 2 * * *",
                         immediate=True)

        async def scheduled() -> dict[str, Any]:
            _, listing_data = await session.ok("list_scheduled_backups", cluster="pg")
            rows = listing_data.get("scheduledBackups") or []
            return rows[0] if rows and rows[0]["nextScheduleTime"] else {}

        row = await eventually(scheduled, "the schedule's next run")
        assert row["nextScheduleTime"].endswith("T02:00:00Z") and row["lastScheduleTime"]
        _, data = await session.ok("suspend_scheduled_backup", name="pg-nightly")
        assert data["suspended"] is True
        _, data = await session.ok("resume_scheduled_backup", name="pg-nightly")
        assert data["suspended"] is False
        await session.ok("delete_scheduled_backup", name="pg-nightly", confirm="pg-nightly")
        _, data = await session.ok("list_scheduled_backups")
        assert data["scheduledBackups"] == []

        # Pooler.
        await session.ok("create_pooler", name="pg-pooler", cluster="pg", instances=2)

        async def pooler_ready() -> bool:
            _, pooler_data = await session.ok("list_poolers", cluster="pg")
            return [p["ready"] for p in pooler_data.get("poolers") or []] == [2]

        await eventually(pooler_ready, "the pooler's instances")
        await session.ok("delete_pooler", name="pg-pooler", confirm="pg-pooler")
        _, data = await session.ok("list_poolers")
        assert data["poolers"] == []

        # Databases and roles.
        await session.ok("create_database", name="shop", cluster="pg", owner="app")

        async def database_applied() -> bool:
            _, db_data = await session.ok("list_databases", cluster="pg")
            return [d["applied"] for d in db_data.get("databases") or []] == [True]

        await eventually(database_applied, "the database applied")
        await session.ok("delete_database", name="shop", confirm="shop")

        async def no_databases() -> bool:
            _, db_data = await session.ok("list_databases")
            return db_data.get("databases") == []

        await eventually(no_databases, "the database object released")
        _, data = await session.ok("create_role", name="alice", cluster="pg")
        assert data["passwordSecret"] == "alice-password"

        async def role_applied() -> bool:
            _, role_data = await session.ok("list_roles", cluster="pg")
            return [r["applied"] for r in role_data.get("roles") or []] == [True]

        await eventually(role_applied, "the role applied")
        update, _ = await session.ok("update_role", name="alice", createdb=True, rotate_password=True)
        assert "createdb=True" in update
        await eventually(role_applied, "the role change applied")
        await session.ok("delete_role", name="alice", confirm="alice")

        async def no_roles() -> bool:
            _, role_data = await session.ok("list_roles")
            return role_data.get("roles") == []

        await eventually(no_roles, "the role released")

        # Events.
        events, data = await session.ok("get_cluster_events", cluster="pg")
        reasons = {e["reason"] for e in data["events"]}
        assert {"CreatingInstance", "ScaleDown", "Switchover"} <= reasons and "Primary instance (initdb)" in events

        # Hibernate and wake.
        await session.ok("hibernate_cluster", name="pg")

        async def no_pods() -> bool:
            _, pods_data = await session.ok("list_instances", cluster="pg")
            return pods_data.get("instances") == []

        await eventually(no_pods, "hibernated pods gone")
        status, data = await session.ok("get_cluster_status", name="pg")
        assert data["hibernated"] is True and "Hibernation: ON" in status
        await session.ok("wake_cluster", name="pg")
        await eventually(lambda: settled(3), "the cluster awake")

        # Errors are tool results, never protocol errors.
        missing = await session.fails("get_cluster_status", name="ghost")
        assert "404" in missing and "Traceback" not in missing

        # Delete: dry run, then for real; the pods go with it.
        await session.ok("delete_cluster", name="pg", confirm="pg", dry_run=True)
        assert len(await anyio.to_thread.run_sync(kube.pods)) == 3
        await session.ok("delete_cluster", name="pg", confirm="pg")
        assert await anyio.to_thread.run_sync(kube.pods) == []
        gone = await session.fails("list_instances", cluster="pg")
        assert "404" in gone

    uncovered = sorted(listed - session.covered)
    assert not uncovered, f"tools the sandbox scenario does not call: {uncovered}"
    assert len(listed) >= 32
