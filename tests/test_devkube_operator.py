"""The sandbox's simulated CNPG operator (devkube/operator.py), driven with the real kubernetes client.

Each test writes what a user or cnpg-mcp-server would write and reads back what CNPG 1.30 would show: phases in
order (from the operator's phase log), pods and their labels, the primary, volumes, services, secrets, events,
backups and logs.
"""

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from kubernetes import client

from devkube.operator import CronSchedule

GROUP, VERSION = "postgresql.cnpg.io", "v1"
HEALTHY = "Cluster in healthy state"
T = TypeVar("T")


class Api:
    """The kubernetes client objects a test needs, plus waits on the operator."""

    def __init__(self, sandbox: Any) -> None:
        self.sandbox = sandbox
        api_client = sandbox.api_client()
        self.co = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        kind = {"clusters": "Cluster", "backups": "Backup", "scheduledbackups": "ScheduledBackup",
                "poolers": "Pooler", "databases": "Database", "databaseroles": "DatabaseRole"}[plural]
        full = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, **body}
        created: dict[str, Any] = self.co.create_namespaced_custom_object(GROUP, VERSION, "default", plural, full)
        return created

    def get(self, plural: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.co.get_namespaced_custom_object(GROUP, VERSION, "default", plural, name)
        return obj

    def patch(self, plural: str, name: str, body: dict[str, Any]) -> None:
        self.co.patch_namespaced_custom_object(GROUP, VERSION, "default", plural, name, body)

    def status(self, name: str = "pg") -> dict[str, Any]:
        return self.get("clusters", name).get("status") or {}

    def pods(self, cluster: str = "pg") -> dict[str, Any]:
        items = self.core.list_namespaced_pod("default", label_selector=f"cnpg.io/cluster={cluster}").items
        return {p.metadata.name: p for p in items}

    def pvcs(self, cluster: str = "pg") -> dict[str, Any]:
        items = self.core.list_namespaced_persistent_volume_claim(
            "default", label_selector=f"cnpg.io/cluster={cluster}").items
        return {p.metadata.name: p for p in items}

    def events(self, name_prefix: str = "pg") -> list[Any]:
        """Events about objects whose name starts with `name_prefix`, oldest first (a list comes in name order, and
        event names end in random hex, so order by resourceVersion, which grows with every write)."""
        items = [e for e in self.core.list_namespaced_event("default").items
                 if e.involved_object.name.startswith(name_prefix)]
        return sorted(items, key=lambda e: int(e.metadata.resource_version))

    def settle(self, timeout: float = 15.0) -> None:
        """Wait until the operator has looked at every change and nothing moves any more."""
        deadline = time.monotonic() + timeout
        calm = 0
        while time.monotonic() < deadline:
            calm = calm + 1 if self.sandbox.operator.at_rest else 0
            if calm >= 3:
                return
            time.sleep(0.02)
        raise AssertionError("the operator did not come to rest")

    def healthy_cluster(self, name: str = "pg", instances: int = 3, **spec: Any) -> dict[str, Any]:
        self.create("clusters", {"metadata": {"name": name},
                                 "spec": {"instances": instances, "storage": {"size": "1Gi"}, **spec}})
        self.settle()
        status = self.status(name)
        assert status["phase"] == HEALTHY
        return status


def wait_for(check: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def phases(caplog: pytest.LogCaptureFixture, cluster: str = "pg") -> list[str]:
    """The phases the operator moved the cluster through, in order, from its log."""
    marker = f"Cluster default/{cluster} phase: "
    found = []
    for record in caplog.records:
        message = record.getMessage()
        if record.name == "devkube.operator" and message.startswith(marker):
            found.append(message[len(marker):].split(" (")[0])
    return found


def in_order(seen: list[str], expected: list[str]) -> bool:
    """`expected` appears in `seen` as a subsequence."""
    it = iter(seen)
    return all(any(phase == want for phase in it) for want in expected)


@pytest.fixture
def api(sandbox: Any, caplog: pytest.LogCaptureFixture) -> Api:
    caplog.set_level(logging.INFO, logger="devkube.operator")
    return Api(sandbox)


def role(pod: Any) -> str:
    return str(pod.metadata.labels.get("cnpg.io/instanceRole"))


def ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


# ---------------------------------------------------------------- cluster creation


def test_a_new_cluster_goes_through_the_bootstrap_phases_to_healthy(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    status = api.healthy_cluster()
    assert phases(caplog) == ["Setting up primary", "Creating a new replica", "Creating a new replica", HEALTHY]
    assert status["currentPrimary"] == status["targetPrimary"] == "pg-1"
    assert status["instances"] == status["readyInstances"] == 3
    assert status["instanceNames"] == ["pg-1", "pg-2", "pg-3"]
    assert status["instancesStatus"] == {"healthy": ["pg-1", "pg-2", "pg-3"]}
    assert status["latestGeneratedNode"] == 3
    assert (status["writeService"], status["readService"]) == ("pg-rw", "pg-r")
    assert set(status["certificates"]["expirations"]) == {"pg-ca", "pg-server", "pg-replication"}
    ready_condition = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready_condition["status"], ready_condition["reason"]) == ("True", "ClusterIsReady")


def test_instance_pods_carry_the_cnpg_labels_and_one_primary(api: Api) -> None:
    api.healthy_cluster()
    pods = api.pods()
    assert sorted(pods) == ["pg-1", "pg-2", "pg-3"]
    assert [role(pods[n]) for n in sorted(pods)] == ["primary", "replica", "replica"]
    for name, pod in pods.items():
        labels = pod.metadata.labels
        assert labels["cnpg.io/cluster"] == "pg" and labels["cnpg.io/instanceName"] == name
        assert labels["cnpg.io/podRole"] == "instance" and labels["role"] == labels["cnpg.io/instanceRole"]
        assert pod.status.phase == "Running" and ready(pod)
        assert pod.spec.containers[0].name == "postgres" and pod.spec.node_name
        assert pod.status.container_statuses[0].restart_count == 0
        assert pod.metadata.owner_references[0].kind == "Cluster"


def test_a_cluster_gets_its_volumes_services_and_secrets(api: Api) -> None:
    api.healthy_cluster(instances=2, walStorage={"size": "512Mi"}, enableSuperuserAccess=True)
    pvcs = api.pvcs()
    assert sorted(pvcs) == ["pg-1", "pg-1-wal", "pg-2", "pg-2-wal"]
    assert pvcs["pg-1-wal"].metadata.labels["cnpg.io/pvcRole"] == "PG_WAL"
    assert pvcs["pg-2"].spec.resources.requests["storage"] == "1Gi" and pvcs["pg-2"].status.phase == "Bound"
    services = {s.metadata.name: s for s in api.core.list_namespaced_service("default").items}
    assert services["pg-rw"].spec.selector["cnpg.io/instanceRole"] == "primary"
    assert services["pg-ro"].spec.selector["cnpg.io/instanceRole"] == "replica"
    assert services["pg-r"].spec.selector["cnpg.io/podRole"] == "instance"
    secrets = {s.metadata.name: s for s in api.core.list_namespaced_secret("default").items}
    assert secrets["pg-app"].type == "kubernetes.io/basic-auth" and "password" in secrets["pg-app"].data
    assert secrets["pg-superuser"].type == "kubernetes.io/basic-auth"
    assert secrets["pg-server"].type == "kubernetes.io/tls" and "pg-ca" in secrets


def test_no_superuser_secret_unless_enabled(api: Api) -> None:
    api.healthy_cluster(instances=1)
    names = {s.metadata.name for s in api.core.list_namespaced_secret("default").items}
    assert "pg-app" in names and "pg-superuser" not in names


def test_creation_is_reported_in_events_like_the_operator(api: Api) -> None:
    api.healthy_cluster()
    reasons = [(e.reason, e.message) for e in api.events()]
    assert ("CreatingInstance", "Primary instance (initdb)") in reasons
    assert ("CreatingInstance", "Creating instance pg-3") in reasons
    event = api.events()[0]
    assert event.involved_object.kind == "Cluster" and event.source.component == "cloudnative-pg"


def test_instances_log_instance_manager_json_lines(api: Api) -> None:
    api.healthy_cluster(instances=2)
    lines = [json.loads(line) for line in
             api.core.read_namespaced_pod_log("pg-2", "default", container="postgres").splitlines()]
    assert {"level", "ts", "logger", "msg", "logging_pod"} <= set(lines[0])
    assert any(line["msg"] == "Starting CloudNativePG Instance Manager" for line in lines)
    records = [line["record"]["message"] for line in lines if line["msg"] == "record"]
    assert "database system is ready to accept read-only connections" in records
    primary = api.core.read_namespaced_pod_log("pg-1", "default", container="postgres")
    assert "database system is ready to accept connections" in primary


# ---------------------------------------------------------------- scaling


def test_scaling_up_adds_replicas_with_new_serials(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    api.healthy_cluster(instances=1)
    api.patch("clusters", "pg", {"spec": {"instances": 3}})
    api.settle()
    pods = api.pods()
    assert sorted(pods) == ["pg-1", "pg-2", "pg-3"] and all(ready(p) for p in pods.values())
    assert in_order(phases(caplog), [HEALTHY, "Creating a new replica", "Creating a new replica", HEALTHY])
    assert api.status()["latestGeneratedNode"] == 3


def test_scaling_down_removes_the_highest_serial_and_its_volumes(api: Api) -> None:
    api.healthy_cluster(instances=3)
    api.patch("clusters", "pg", {"spec": {"instances": 2}})
    api.settle()
    assert sorted(api.pods()) == ["pg-1", "pg-2"] and sorted(api.pvcs()) == ["pg-1", "pg-2"]
    assert any(e.reason == "ScaleDown" and e.message == "Scaling down - removing instance: pg-3" for e in api.events())
    status = api.status()
    assert status["instances"] == 2 and status["instanceNames"] == ["pg-1", "pg-2"] and status["phase"] == HEALTHY


def test_scaling_down_never_removes_the_primary(api: Api) -> None:
    api.healthy_cluster(instances=3)
    api.co.patch_namespaced_custom_object_status(GROUP, VERSION, "default", "clusters", "pg",
                                                 {"status": {"targetPrimary": "pg-3"}})
    api.settle()
    api.patch("clusters", "pg", {"spec": {"instances": 1}})
    api.settle()
    assert sorted(api.pods()) == ["pg-3"] and role(api.pods()["pg-3"]) == "primary"


# ---------------------------------------------------------------- switchover, failover, pod deletion


def test_switchover_through_the_status_subresource_moves_the_primary(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    api.healthy_cluster()
    api.co.patch_namespaced_custom_object_status(GROUP, VERSION, "default", "clusters", "pg", {"status": {
        "targetPrimary": "pg-2", "phase": "Switchover in progress", "phaseReason": "Switching over to pg-2"}})
    api.settle()
    status = api.status()
    assert status["currentPrimary"] == status["targetPrimary"] == "pg-2"
    assert status["timelineID"] == 2 and status["phase"] == HEALTHY
    pods = api.pods()
    assert {n: role(p) for n, p in pods.items()} == {"pg-1": "replica", "pg-2": "primary", "pg-3": "replica"}
    assert all(ready(p) for p in pods.values())
    assert in_order(phases(caplog), [HEALTHY, HEALTHY])
    assert any(e.reason == "Switchover" for e in api.events())
    log = api.core.read_namespaced_pod_log("pg-2", "default", container="postgres")
    assert "Promoting instance" in log and "selected new timeline ID: 2" in log


def test_deleting_the_primary_pod_fails_over_to_a_replica(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    api.healthy_cluster()
    api.core.delete_namespaced_pod("pg-1", "default")
    api.settle()
    status = api.status()
    assert status["currentPrimary"] == "pg-2" and status["phase"] == HEALTHY
    pods = api.pods()
    assert sorted(pods) == ["pg-1", "pg-2", "pg-3"] and role(pods["pg-1"]) == "replica"
    assert role(pods["pg-2"]) == "primary"
    assert "Failing over" in phases(caplog)
    reasons = {e.reason for e in api.events()}
    assert {"FailingOver", "FailoverTarget"} <= reasons


def test_a_deleted_replica_pod_is_recreated_on_its_volume(api: Api) -> None:
    api.healthy_cluster()
    old_uid = api.pods()["pg-3"].metadata.uid
    api.core.delete_namespaced_pod("pg-3", "default")
    api.settle()
    pod = api.pods()["pg-3"]
    assert pod.metadata.uid != old_uid and ready(pod) and role(pod) == "replica"
    assert api.status()["currentPrimary"] == "pg-1"


def test_a_single_instance_primary_pod_is_recreated_in_place(api: Api) -> None:
    api.healthy_cluster(instances=1)
    api.core.delete_namespaced_pod("pg-1", "default")
    api.settle()
    pod = api.pods()["pg-1"]
    assert ready(pod) and role(pod) == "primary" and api.status()["phase"] == HEALTHY


# ---------------------------------------------------------------- restart, parameters, storage


def test_restart_annotation_restarts_replicas_then_the_primary_in_place(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    api.healthy_cluster()
    before = {n: p.metadata.uid for n, p in api.pods().items()}
    when = "2030-01-01T00:00:00Z"
    api.patch("clusters", "pg", {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": when}}})
    api.settle()
    pods = api.pods()
    assert pods["pg-2"].metadata.uid != before["pg-2"] and pods["pg-3"].metadata.uid != before["pg-3"]
    assert pods["pg-1"].metadata.uid == before["pg-1"]
    assert all(p.metadata.annotations["kubectl.kubernetes.io/restartedAt"] == when for p in pods.values())
    assert in_order(phases(caplog), ["Upgrading cluster", "Upgrading cluster",
                                     "Primary instance is being restarted in-place", HEALTHY])
    assert role(pods["pg-1"]) == "primary" and all(ready(p) for p in pods.values())


def test_a_parameter_needing_a_restart_applies_configuration_then_rolls(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    api.healthy_cluster(instances=2)
    api.patch("clusters", "pg", {"spec": {"postgresql": {"parameters": {"max_connections": "200"}}}})
    api.settle()
    assert in_order(phases(caplog), [HEALTHY, "Applying configuration", "Upgrading cluster",
                                     "Primary instance is being restarted in-place", HEALTHY])
    log = api.core.read_namespaced_pod_log("pg-1", "default", container="postgres")
    assert 'parameter \\"max_connections\\" changed to \\"200\\"' in log


def test_a_reloadable_parameter_is_applied_without_changing_the_phase(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    api.healthy_cluster(instances=2)
    seen = len(phases(caplog))
    api.patch("clusters", "pg", {"spec": {"postgresql": {"parameters": {"work_mem": "16MB"}}}})
    api.settle()
    assert phases(caplog)[seen:] == []
    assert "received SIGHUP" in api.core.read_namespaced_pod_log("pg-2", "default", container="postgres")


def test_growing_storage_resizes_every_volume(api: Api) -> None:
    api.healthy_cluster(instances=2)
    api.patch("clusters", "pg", {"spec": {"storage": {"size": "5Gi"}}})
    api.settle()
    for pvc in api.pvcs().values():
        assert pvc.spec.resources.requests["storage"] == "5Gi" and pvc.status.capacity["storage"] == "5Gi"
    assert any(e.reason == "FileSystemResizeSuccessful" for e in api.events())
    assert "resizingPVC" not in api.status()


# ---------------------------------------------------------------- hibernation


def test_hibernation_deletes_the_pods_and_keeps_the_volumes(api: Api) -> None:
    api.healthy_cluster()
    api.patch("clusters", "pg", {"metadata": {"annotations": {"cnpg.io/hibernation": "on"}}})
    api.settle()
    assert api.pods() == {} and sorted(api.pvcs()) == ["pg-1", "pg-2", "pg-3"]
    status = api.status()
    condition = next(c for c in status["conditions"] if c["type"] == "cnpg.io/hibernation")
    assert (condition["status"], condition["reason"], condition["message"]) == (
        "True", "Hibernated", "Cluster has been hibernated")
    assert status["instances"] == 0 and status["readyInstances"] == 0


def test_waking_recreates_the_pods_with_the_same_primary(api: Api) -> None:
    api.healthy_cluster()
    api.patch("clusters", "pg", {"metadata": {"annotations": {"cnpg.io/hibernation": "on"}}})
    api.settle()
    api.patch("clusters", "pg", {"metadata": {"annotations": {"cnpg.io/hibernation": "off"}}})
    api.settle()
    pods = api.pods()
    assert sorted(pods) == ["pg-1", "pg-2", "pg-3"] and role(pods["pg-1"]) == "primary"
    status = api.status()
    assert status["phase"] == HEALTHY and status["readyInstances"] == 3
    assert not any(c["type"] == "cnpg.io/hibernation" for c in status["conditions"])


# ---------------------------------------------------------------- backups

BARMAN = {"barmanObjectStore": {"destinationPath": "s3://backups/pg", "s3Credentials": {"inheritFromIAMRole": True}}}


def test_a_backup_starts_then_completes_and_the_cluster_records_it(api: Api) -> None:
    api.healthy_cluster(backup=BARMAN)
    api.create("backups", {"metadata": {"name": "b1"}, "spec": {"cluster": {"name": "pg"}}})
    api.settle()
    st = api.get("backups", "b1")["status"]
    assert st["phase"] == "completed" and st["method"] == "barmanObjectStore"
    assert st["startedAt"] <= st["stoppedAt"] and st["backupId"] and st["beginWal"] < st["endWal"]
    assert st["instanceID"]["podName"] == "pg-2"  # prefer-standby
    assert st["destinationPath"] == "s3://backups/pg" and st["serverName"] == "pg"
    cluster = api.status()
    assert cluster["lastSuccessfulBackup"] == st["stoppedAt"] and cluster["firstRecoverabilityPoint"]
    archiving = next(c for c in cluster["conditions"] if c["type"] == "ContinuousArchiving")
    assert archiving["status"] == "True"
    assert [e.reason for e in api.events("b1")] == ["Starting", "Completed"]


def test_a_backup_of_a_cluster_without_backup_section_fails_with_cnpg_message(api: Api) -> None:
    api.healthy_cluster(instances=1)
    api.create("backups", {"metadata": {"name": "b1"}, "spec": {"cluster": {"name": "pg"}}})
    api.settle()
    st = api.get("backups", "b1")["status"]
    assert st["phase"] == "failed"
    assert st["error"] == "cannot proceed with the backup as the cluster has no backup section"
    assert api.status()["lastFailedBackup"]


def test_a_backup_of_an_unknown_cluster_waits_pending(api: Api) -> None:
    api.create("backups", {"metadata": {"name": "b1"}, "spec": {"cluster": {"name": "ghost"}}})
    api.settle()
    assert api.get("backups", "b1")["status"]["phase"] == "pending"
    event = api.events("b1")[0]
    assert (event.type, event.reason, event.message) == (
        "Warning", "FindingCluster", "Unknown cluster ghost, will retry in 30 seconds")


def test_a_hibernated_cluster_cannot_be_backed_up(api: Api) -> None:
    api.healthy_cluster(instances=1, backup=BARMAN)
    api.patch("clusters", "pg", {"metadata": {"annotations": {"cnpg.io/hibernation": "on"}}})
    api.settle()
    api.create("backups", {"metadata": {"name": "b1"}, "spec": {"cluster": {"name": "pg"}}})
    api.settle()
    assert api.get("backups", "b1")["status"]["error"] == "cannot backup a hibernated cluster"


def test_an_immediate_scheduled_backup_creates_an_owned_backup(api: Api) -> None:
    api.healthy_cluster(instances=1, backup=BARMAN)
    api.create("scheduledbackups", {"metadata": {"name": "nightly"}, "spec": {
        "cluster": {"name": "pg"}, "schedule": "0 0 2 * * *", "immediate": True, "backupOwnerReference": "self"}})
    api.settle()
    backups = api.co.list_namespaced_custom_object(GROUP, VERSION, "default", "backups")["items"]
    assert len(backups) == 1
    backup = backups[0]
    assert backup["metadata"]["name"].startswith("nightly-")
    assert backup["metadata"]["labels"]["cnpg.io/scheduled-backup"] == "nightly"
    assert backup["metadata"]["labels"]["cnpg.io/immediateBackup"] == "true"
    assert backup["metadata"]["ownerReferences"][0]["kind"] == "ScheduledBackup"
    assert backup["status"]["phase"] == "completed"
    st = api.get("scheduledbackups", "nightly")["status"]
    assert st["lastScheduleTime"] and st["nextScheduleTime"].endswith("T02:00:00Z")


def test_a_schedule_fires_on_time_and_stops_when_suspended(api: Api) -> None:
    api.healthy_cluster(instances=1, backup=BARMAN)
    api.create("scheduledbackups", {"metadata": {"name": "often"}, "spec": {
        "cluster": {"name": "pg"}, "schedule": "* * * * * *"}})

    def backups() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = api.co.list_namespaced_custom_object(
            GROUP, VERSION, "default", "backups")["items"]
        return items

    wait_for(lambda: len(backups()) >= 2, timeout=10, what="two scheduled backups")
    api.patch("scheduledbackups", "often", {"spec": {"suspend": True}})
    api.settle()
    count = len(backups())
    time.sleep(1.5)
    assert len(backups()) == count
    assert all(b["metadata"]["labels"]["cnpg.io/immediateBackup"] == "false" for b in backups())


def test_deleting_a_scheduled_backup_deletes_the_backups_it_owns(api: Api) -> None:
    api.healthy_cluster(instances=1, backup=BARMAN)
    api.create("scheduledbackups", {"metadata": {"name": "nightly"}, "spec": {
        "cluster": {"name": "pg"}, "schedule": "0 0 2 * * *", "immediate": True, "backupOwnerReference": "self"}})
    api.settle()
    api.co.delete_namespaced_custom_object(GROUP, VERSION, "default", "scheduledbackups", "nightly")
    api.settle()
    assert api.co.list_namespaced_custom_object(GROUP, VERSION, "default", "backups")["items"] == []


@pytest.mark.parametrize(("schedule", "after", "expected"), [
    ("0 0 2 * * *", "2030-01-01T03:00:00", "2030-01-02T02:00:00"),
    ("30 */15 * * * *", "2030-01-01T00:14:00", "2030-01-01T00:15:30"),
    ("0 0 0 1 * *", "2030-01-15T00:00:00", "2030-02-01T00:00:00"),
    ("0 0 9 * * MON-FRI", "2030-01-04T10:00:00", "2030-01-07T09:00:00"),  # Friday -> Monday
    ("0 0 0 13 * 5", "2030-01-01T00:00:00", "2030-01-04T00:00:00"),  # day-of-month OR Friday
    ("@daily", "2030-01-01T12:00:00", "2030-01-02T00:00:00"),
    ("@every 1h30m", "2030-01-01T12:00:00", "2030-01-01T13:30:00"),
])
def test_cron_schedules_have_six_fields_with_seconds_first(schedule: str, after: str, expected: str) -> None:
    parsed = CronSchedule.parse(schedule)
    assert parsed is not None
    start = datetime.fromisoformat(after).replace(tzinfo=UTC)
    assert parsed.next(start) == datetime.fromisoformat(expected).replace(tzinfo=UTC)


@pytest.mark.parametrize("schedule", ["0 2 * * *", "61 * * * * *", "* * * * * * *", "@every soon", "*/0 * * * * *"])
def test_invalid_cron_schedules_are_not_parsed(schedule: str) -> None:
    assert CronSchedule.parse(schedule) is None


# ---------------------------------------------------------------- poolers, databases, roles


def test_a_pooler_reports_its_instances_and_gets_its_service(api: Api) -> None:
    api.healthy_cluster(instances=1)
    api.create("poolers", {"metadata": {"name": "pg-pooler"}, "spec": {
        "cluster": {"name": "pg"}, "instances": 2, "type": "rw", "pgbouncer": {"poolMode": "session"}}})
    api.settle()
    assert api.get("poolers", "pg-pooler")["status"]["instances"] == 2
    service = api.core.read_namespaced_service("pg-pooler", "default")
    assert service.spec.selector == {"cnpg.io/poolerName": "pg-pooler"}
    api.co.delete_namespaced_custom_object(GROUP, VERSION, "default", "poolers", "pg-pooler")
    names = {s.metadata.name for s in api.core.list_namespaced_service("default").items}
    assert "pg-pooler" not in names


def test_databases_and_roles_are_applied_and_released_on_deletion(api: Api) -> None:
    api.healthy_cluster(instances=1)
    api.create("databases", {"metadata": {"name": "db"}, "spec": {
        "cluster": {"name": "pg"}, "name": "shop", "owner": "app", "databaseReclaimPolicy": "delete"}})
    api.create("databaseroles", {"metadata": {"name": "alice"}, "spec": {
        "cluster": {"name": "pg"}, "name": "alice", "login": True}})
    api.settle()
    database, role_obj = api.get("databases", "db"), api.get("databaseroles", "alice")
    assert database["status"]["applied"] is True and role_obj["status"]["applied"] is True
    assert database["metadata"]["finalizers"] == ["cnpg.io/deleteDatabase"]
    assert role_obj["metadata"]["finalizers"] == ["cnpg.io/deleteRole"]
    api.co.delete_namespaced_custom_object(GROUP, VERSION, "default", "databases", "db")
    api.settle()
    assert api.co.list_namespaced_custom_object(GROUP, VERSION, "default", "databases")["items"] == []
    assert "DROP DATABASE shop" in api.core.read_namespaced_pod_log("pg-1", "default", container="postgres")


def test_a_database_of_a_missing_cluster_says_so(api: Api) -> None:
    api.create("databases", {"metadata": {"name": "db"}, "spec": {
        "cluster": {"name": "ghost"}, "name": "shop", "owner": "app"}})
    api.settle()
    status = api.get("databases", "db")["status"]
    assert status["applied"] is False and '"ghost" not found' in status["message"]


# ---------------------------------------------------------------- deletion


def test_deleting_a_cluster_cascades_but_backups_remain(api: Api) -> None:
    api.healthy_cluster(instances=2, backup=BARMAN)
    api.create("backups", {"metadata": {"name": "b1"}, "spec": {"cluster": {"name": "pg"}}})
    api.settle()
    api.co.delete_namespaced_custom_object(GROUP, VERSION, "default", "clusters", "pg")
    api.settle()
    assert api.pods() == {} and api.pvcs() == {}
    services = {s.metadata.name for s in api.core.list_namespaced_service("default").items}
    secrets = {s.metadata.name for s in api.core.list_namespaced_secret("default").items}
    assert not services & {"pg-rw", "pg-ro", "pg-r"} and not secrets & {"pg-app", "pg-ca", "pg-server"}
    assert api.get("backups", "b1")["status"]["phase"] == "completed"
