"""A simulated CloudNativePG 1.30 operator for the sandbox: objects behave as they do in a cluster.

It runs as a task on the sandbox server's event loop. Every stored change wakes it (Store.listeners); it then
makes at most one step per cluster, backup and schedule, and keeps stepping every `step_seconds` while
anything is still moving, so a person (or a test with a short step) sees the phases one after another. At rest
it sleeps until the next write or the next scheduled backup: no polling.

What it models, as far as the cnpg-mcp-server tools can observe it (names, phases, reasons, labels, events and
conditions are CNPG's own):
- Cluster: secrets (-app, -superuser when enabled, -ca, -server, -replication), services (-rw, -ro, -r), one
  PVC per instance (and a -wal PVC with walStorage), instance Pods `<cluster>-<serial>` with the CNPG labels;
  "Setting up primary", "Creating a new replica", "Waiting for the instances to become active", "Cluster in
  healthy state"; status instances, readyInstances, instanceNames, instancesStatus, currentPrimary,
  targetPrimary, latestGeneratedNode, certificates, services, conditions (Ready, ContinuousArchiving,
  LastBackupSucceeded, cnpg.io/hibernation).
- Scaling (highest serial removed first, never the primary), switchover (status.targetPrimary, as
  `kubectl cnpg promote`), failover when the primary Pod is deleted, recreation of deleted Pods, rolling restart
  (`kubectl.kubernetes.io/restartedAt`: replicas recreated, primary restarted in place), parameter changes
  (reload, or "Applying configuration" and a rolling restart for parameters that need one), volume growth
  (PVC requests, then capacity), hibernation (`cnpg.io/hibernation`: primary Pod deleted first, PVCs kept).
- Backup: pending for an unknown cluster, failed with CNPG's message when the cluster cannot run it, else
  started then completed with backupId, WAL range and LSNs; the cluster's lastSuccessfulBackup and
  firstRecoverabilityPoint. ScheduledBackup: six-field cron, immediate backups, owner references, status times.
- Pooler: status.instances and its Service (Deployments are not served). Database and DatabaseRole: applied
  with their finalizers, released on deletion.
- Pod logs: instance-manager JSON lines (level, ts, logger, msg, logging_pod, record) as pods start, promote,
  restart, reload, checkpoint and back up.
Deletion cascades through owner references (the store's garbage collector); Backups are not owned by the
Cluster, so they stay, as in CNPG. Nothing here touches a real PostgreSQL: no data exists anywhere.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
import secrets
import time
import traceback
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from . import errors as E
from .server import KubeApiServer
from .store import Obj, Resource

logger = logging.getLogger("devkube.operator")

GROUP = "postgresql.cnpg.io"
API_VERSION = f"{GROUP}/v1"
OPERATOR_VERSION = "1.30.0"
OPERATOR_IMAGE = f"ghcr.io/cloudnative-pg/cloudnative-pg:{OPERATOR_VERSION}"
DEFAULT_IMAGE = "ghcr.io/cloudnative-pg/postgresql:18.1-system-trixie"
FIELD_MANAGER = "manager"  # controller-runtime's default field owner, as in a real CNPG install
MERGE = "application/merge-patch+json"

PHASE_FIRST_PRIMARY = "Setting up primary"
PHASE_CREATING_REPLICA = "Creating a new replica"
PHASE_WAITING = "Waiting for the instances to become active"
PHASE_HEALTHY = "Cluster in healthy state"
PHASE_SWITCHOVER = "Switchover in progress"
PHASE_FAILOVER = "Failing over"
PHASE_UPGRADE = "Upgrading cluster"
PHASE_PRIMARY_RESTART = "Primary instance is being restarted in-place"
PHASE_APPLYING = "Applying configuration"

HIBERNATION = "cnpg.io/hibernation"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
PENDING_FAILOVER = "pending"
REASON_RESTART_ANNOTATION = "cluster has been explicitly restarted via annotation"
REASON_RESTART_CONFIG = "Postgres needs a restart to apply some configuration changes"

# Parameters PostgreSQL applies only at server start (context "postmaster"); others take a reload.
RESTART_PARAMETERS = frozenset({
    "autovacuum_max_workers", "dynamic_shared_memory_type", "huge_page_size", "huge_pages",
    "max_connections", "max_files_per_process", "max_locks_per_transaction", "max_logical_replication_workers",
    "max_pred_locks_per_transaction", "max_prepared_transactions", "max_replication_slots", "max_wal_senders",
    "max_worker_processes", "min_dynamic_shared_memory", "old_snapshot_threshold", "shared_buffers",
    "shared_memory_type", "superuser_reserved_connections", "reserved_connections", "track_commit_timestamp",
    "wal_buffers", "wal_decode_buffer_size", "io_method", "io_workers", "io_max_concurrency",
})


def _now() -> datetime:
    return datetime.now(UTC)


def _rfc3339(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _go_time(when: datetime) -> str:
    """time.Time's String(), which CNPG puts in event messages and certificate expirations."""
    return when.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _serial(instance: str) -> int:
    tail = instance.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _labels(obj: Obj) -> dict[str, str]:
    labels: dict[str, str] = obj["metadata"].get("labels") or {}
    return labels


def _annotations(obj: Obj) -> dict[str, str]:
    annotations: dict[str, str] = obj["metadata"].get("annotations") or {}
    return annotations


def _owner(obj: Obj, controller: bool = True) -> Obj:
    ref: Obj = {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
    }
    if controller:
        ref.update({"controller": True, "blockOwnerDeletion": True})
    return ref


def _condition(conditions: list[Obj], type_: str, status: str, reason: str, message: str) -> list[Obj]:
    """meta.SetStatusCondition: replace the condition of that type, keeping lastTransitionTime if unchanged."""
    old = next((c for c in conditions if c.get("type") == type_), None)
    since = old["lastTransitionTime"] if old and old.get("status") == status else _rfc3339(_now())
    rest = [c for c in conditions if c.get("type") != type_]
    return [*rest, {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": since}]


def _wal_name(timeline: int, segment: int) -> str:
    return f"{timeline:08X}{segment // 256:08X}{segment % 256:08X}"


def _lsn(segment: int, offset: int) -> str:
    position = segment * 16 * 1024 * 1024 + offset
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


class Operator:
    """The simulated operator of one sandbox server. Create it before server.start(); it stops with the server."""

    def __init__(self, server: KubeApiServer, step_seconds: float = 1.0) -> None:
        self.server = server
        self.store = server.store
        self.step_seconds = step_seconds
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_pass = False
        self._wake_at: float | None = None
        # A change not yet looked at, and whether the last pass still had work: together, "at rest".
        self._dirty = False
        self._busy = False
        # What a real operator would read from PostgreSQL: kept here, per cluster uid.
        self._applied_parameters: dict[str, dict[str, str]] = {}
        self._pending_restart: dict[str, set[str]] = {}
        self._wal_segment: dict[str, int] = {}
        server.add_background(self.run)
        self.store.listeners.append(self._noticed)

    # ------------------------------------------------------------ the loop

    def _noticed(self) -> None:
        """A stored change: wake the loop, unless the change is the operator's own step."""
        if self._in_pass:
            return
        self._dirty = True
        if self._loop is None or self._wake is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:  # the loop is closing
            pass

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while True:
            self._wake.clear()
            self._busy = self._pass()
            if self._busy:
                await asyncio.sleep(self.step_seconds)
                continue
            timeout = None if self._wake_at is None else max(0.0, self._wake_at - time.time())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    def _pass(self) -> bool:
        """One step for everything that has work; True while anything is still moving."""
        with self.store.lock:
            self._in_pass = True
            self._dirty = False
            self.store.manager, self.store.operation = FIELD_MANAGER, "Update"
            self._wake_at = None
            busy = False
            try:
                for kind, step in (
                    ("clusters", self._cluster_step),
                    ("backups", self._backup_step),
                    ("scheduledbackups", self._scheduled_backup_step),
                    ("poolers", self._pooler_step),
                    ("databases", self._database_step),
                    ("databaseroles", self._role_step),
                ):
                    for obj in self._list(kind, group=GROUP):
                        try:
                            busy = step(obj) or busy
                        except E.ApiError as exc:
                            where = f"{kind} {obj['metadata'].get('namespace')}/{obj['metadata']['name']}"
                            if exc.code in (403, 404, 409):
                                # The namespace is terminating or an object just went: the next write retries.
                                logger.debug("operator step on %s: %s", where, exc.message)
                            else:  # the API refused what the simulation wrote: a bug in the simulation
                                self.server.internal_errors.append(f"operator step on {where}: {exc.status()}")
                                logger.warning("operator step on %s failed: %s", where, exc.message)
            except Exception:  # a bug in the simulation: surface it like the server's own internal errors
                self.server.internal_errors.append(f"operator: {traceback.format_exc()}")
                logger.exception("the sandbox operator failed")
                busy = False
            finally:
                self._in_pass = False
            return busy

    @property
    def at_rest(self) -> bool:
        """True when every change has been looked at and nothing is moving (scheduled backups may still fire)."""
        with self.store.lock:
            return self._loop is not None and not self._dirty and not self._busy

    # ------------------------------------------------------------ store access (under the lock)

    def _res(self, plural: str, group: str = "") -> Resource:
        return self.store.resources[(group, plural)]

    def _find(self, plural: str, namespace: str, name: str, group: str = "") -> Obj | None:
        res = self._res(plural, group)
        obj = self.store.find(res, namespace, name)
        return None if obj is None else self.store.present(res, obj)

    def _list(
        self, plural: str, namespace: str | None = None, group: str = "", labels: dict[str, str] | None = None
    ) -> list[Obj]:
        items = self.store.list(self._res(plural, group), namespace)
        wanted = labels or {}
        return [o for o in items if all(_labels(o).get(k) == v for k, v in wanted.items())]

    def _create(self, obj: Obj) -> Obj:
        res = self.store.resource_for(obj["apiVersion"], obj["kind"])
        self.store.decode_problems = []
        return self.store.create(res, obj["metadata"].get("namespace"), obj, False, "Strict").body

    def _patch(self, obj: Obj, patch: Obj, subresource: str = "") -> Obj:
        res = self.store.resource_for(obj["apiVersion"], obj["kind"])
        self.store.decode_problems = []
        meta = obj["metadata"]
        namespace, name = meta.get("namespace"), meta["name"]
        return self.store.patch(res, namespace, name, patch, MERGE, subresource, False, "Strict").body

    def _replace_status(self, obj: Obj, status: Obj) -> Obj:
        """Write the whole status (a PUT on /status), only when it changed."""
        if obj.get("status") == status:
            return obj
        res = self.store.resource_for(obj["apiVersion"], obj["kind"])
        body = copy.deepcopy(obj)
        body["status"] = status
        self.store.decode_problems = []
        meta = obj["metadata"]
        return self.store.update(res, meta.get("namespace"), meta["name"], body, "status", False, "Strict").body

    def _delete(self, obj: Obj) -> None:
        res = self.store.resource_for(obj.get("apiVersion", "v1"), obj.get("kind", ""))
        meta = obj["metadata"]
        if self.store.find(res, meta.get("namespace"), meta["name"]) is not None:
            self.store.delete(res, meta.get("namespace"), meta["name"], {"propagationPolicy": "Background"}, False)

    def _event(self, involved: Obj, type_: str, reason: str, message: str, component: str = "cloudnative-pg") -> None:
        meta = involved["metadata"]
        now = _rfc3339(_now())
        self._create({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", "v1"),
                "kind": involved.get("kind", ""),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": component,
            "reportingInstance": "",
        })

    # ------------------------------------------------------------ logs

    def _log(
        self, pod: Obj, msg: str, level: str = "info", logger_name: str = "instance-manager", **extra: Any
    ) -> None:
        name = pod["metadata"]["name"]
        line = {"level": level, "ts": _now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "logger": logger_name, "msg": msg,
                "logging_pod": name, **extra}
        text = json.dumps(line, separators=(",", ":"))
        self.server.append_pod_log(pod["metadata"]["namespace"], name, [text], "postgres")

    def _pg_log(self, pod: Obj, *messages: str, severity: str = "LOG", backend: str = "postmaster") -> None:
        """PostgreSQL's own log lines, as the instance manager forwards them (msg "record", csvlog fields)."""
        for message in messages:
            now = _now()
            self._log(pod, "record", logger_name="postgres", record={
                "log_time": now.strftime("%Y-%m-%d %H:%M:%S.") + f"{now.microsecond // 1000:03d} UTC",
                "process_id": str(20 + _serial(pod["metadata"]["name"])),
                "session_id": f"{int(now.timestamp()):x}.1b",
                "session_line_num": "1",
                "session_start_time": now.strftime("%Y-%m-%d %H:%M:%S UTC"),
                "transaction_id": "0",
                "error_severity": severity,
                "sql_state_code": "00000",
                "message": message,
                "backend_type": backend,
                "query_id": "0",
            })

    def _log_start(self, pod: Obj, cluster: Obj, primary: bool) -> None:
        image = cluster["spec"].get("imageName") or DEFAULT_IMAGE
        self._log(pod, "Starting CloudNativePG Instance Manager", version=OPERATOR_VERSION,
                  build={"Version": OPERATOR_VERSION, "Commit": "sandbox", "Date": "2025-01-01"})
        self._log(pod, "Checking for free disk space for WALs before starting PostgreSQL")
        self._log(pod, "Starting up instance", pgdata="/var/lib/postgresql/data/pgdata", image=image)
        self._pg_log(pod, "starting PostgreSQL (sandbox simulation) on x86_64-pc-linux-gnu",
                     'listening on IPv4 address "0.0.0.0", port 5432',
                     'listening on Unix socket "/controller/run/.s.PGSQL.5432"')
        if primary:
            self._pg_log(pod, "database system is ready to accept connections")
        else:
            self._pg_log(pod, "entering standby mode", "consistent recovery state reached",
                         "database system is ready to accept read-only connections")
            self._pg_log(pod, "started streaming WAL from primary", backend="walreceiver")

    # ------------------------------------------------------------ cluster: objects it owns

    def _instance_pods(self, cluster: Obj) -> list[Obj]:
        pods = self._list("pods", cluster["metadata"]["namespace"],
                          labels={"cnpg.io/cluster": cluster["metadata"]["name"], "cnpg.io/podRole": "instance"})
        return sorted(pods, key=lambda p: _serial(p["metadata"]["name"]))

    def _pvcs(self, cluster: Obj, role: str | None = None) -> list[Obj]:
        labels = {"cnpg.io/cluster": cluster["metadata"]["name"]}
        if role:
            labels["cnpg.io/pvcRole"] = role
        pvcs = self._list("persistentvolumeclaims", cluster["metadata"]["namespace"], labels=labels)
        return sorted(pvcs, key=lambda p: (_serial(_labels(p).get("cnpg.io/instanceName", "")), p["metadata"]["name"]))

    def _bootstrap_names(self, cluster: Obj) -> tuple[str, str]:
        initdb = ((cluster["spec"].get("bootstrap") or {}).get("initdb")) or {}
        database = initdb.get("database") or "app"
        return database, initdb.get("owner") or database

    def _create_cluster_objects(self, cluster: Obj) -> None:
        ns, name = cluster["metadata"]["namespace"], cluster["metadata"]["name"]
        owner = _owner(cluster)
        labels = {"cnpg.io/cluster": name}
        database, user = self._bootstrap_names(cluster)
        host = f"{name}-rw"

        def secret(suffix: str, kind: str, data: dict[str, str], extra: dict[str, str] | None = None) -> None:
            if self._find("secrets", ns, name + suffix) is None:
                metadata = {"name": name + suffix, "namespace": ns, "labels": {**labels, **(extra or {})},
                            "ownerReferences": [owner]}
                self._create({"apiVersion": "v1", "kind": "Secret", "type": kind, "metadata": metadata,
                              "stringData": data})

        def credentials(username: str, dbname: str) -> dict[str, str]:
            # A random value only: no PostgreSQL exists behind it.
            password = secrets.token_urlsafe(24)
            return {"username": username, "user": username, "password": password, "dbname": dbname, "host": host,
                    "port": "5432",
                    "uri": f"postgresql://{username}:{password}@{host}.{ns}:5432/{dbname}",
                    "jdbc-uri": f"jdbc:postgresql://{host}.{ns}:5432/{dbname}?password={password}&user={username}",
                    "pgpass": f"{host}:5432:{dbname}:{username}:{password}\n"}

        placeholder = "-----BEGIN {0}-----\nU2FuZGJveCBwbGFjZWhvbGRlcjsgbm90IGEgcmVhbCBrZXku\n-----END {0}-----\n"
        secret("-app", "kubernetes.io/basic-auth", credentials(user, database), {"cnpg.io/userType": "app"})
        if cluster["spec"].get("enableSuperuserAccess"):
            secret("-superuser", "kubernetes.io/basic-auth", credentials("postgres", "*"),
                   {"cnpg.io/userType": "superuser"})
        ca = {"ca.crt": placeholder.format("CERTIFICATE"), "ca.key": placeholder.format("EC PRIVATE KEY")}
        secret("-ca", "Opaque", ca, {"cnpg.io/reload": "true"})
        for suffix in ("-server", "-replication"):
            secret(suffix, "kubernetes.io/tls",
                   {"tls.crt": placeholder.format("CERTIFICATE"), "tls.key": placeholder.format("EC PRIVATE KEY")})
        for suffix, selector in (
            ("-rw", {"cnpg.io/cluster": name, "cnpg.io/instanceRole": "primary"}),
            ("-ro", {"cnpg.io/cluster": name, "cnpg.io/instanceRole": "replica"}),
            ("-r", {"cnpg.io/cluster": name, "cnpg.io/podRole": "instance"}),
        ):
            if self._find("services", ns, name + suffix) is None:
                self._create({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": name + suffix, "namespace": ns, "labels": {**labels},
                                 "annotations": {"cnpg.io/operatorVersion": OPERATOR_VERSION},
                                 "ownerReferences": [owner]},
                    "spec": {"type": "ClusterIP", "clusterIP": self._ip("10.96"), "selector": selector,
                             "ports": [{"name": "postgres", "port": 5432, "protocol": "TCP", "targetPort": 5432}]},
                    "status": {"loadBalancer": {}},
                })

    def _ip(self, prefix: str) -> str:
        return f"{prefix}.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 2}"

    def _create_pvcs(self, cluster: Obj, serial: int) -> None:
        ns, name = cluster["metadata"]["namespace"], cluster["metadata"]["name"]
        instance = f"{name}-{serial}"
        volumes = [("", "PG_DATA", cluster["spec"].get("storage") or {})]
        if cluster["spec"].get("walStorage"):
            volumes.append(("-wal", "PG_WAL", cluster["spec"]["walStorage"]))
        for suffix, role, storage in volumes:
            if self._find("persistentvolumeclaims", ns, instance + suffix) is not None:
                continue
            size = storage.get("size") or "1Gi"
            self._create({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": instance + suffix, "namespace": ns,
                    "labels": {"cnpg.io/cluster": name, "cnpg.io/instanceName": instance, "cnpg.io/pvcRole": role},
                    "annotations": {"cnpg.io/nodeSerial": str(serial), "cnpg.io/pvcStatus": "ready",
                                    "cnpg.io/operatorVersion": OPERATOR_VERSION},
                    "ownerReferences": [_owner(cluster)],
                },
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}},
                         "storageClassName": storage.get("storageClass") or "standard", "volumeMode": "Filesystem",
                         "volumeName": f"pvc-{uuid.uuid4()}"},
                "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": size}},
            })

    def _create_pod(self, cluster: Obj, serial: int, primary: bool) -> Obj:
        ns, name = cluster["metadata"]["namespace"], cluster["metadata"]["name"]
        instance = f"{name}-{serial}"
        role = "primary" if primary else "replica"
        image = cluster["spec"].get("imageName") or DEFAULT_IMAGE
        annotations = {"cnpg.io/nodeSerial": str(serial), "cnpg.io/operatorVersion": OPERATOR_VERSION}
        restarted = _annotations(cluster).get(RESTARTED_AT)
        if restarted:
            annotations[RESTARTED_AT] = restarted
        volumes: list[Obj] = [{"name": "pgdata", "persistentVolumeClaim": {"claimName": instance}}]
        if cluster["spec"].get("walStorage"):
            volumes.append({"name": "pg-wal", "persistentVolumeClaim": {"claimName": f"{instance}-wal"}})
        container: Obj = {
            "name": "postgres", "image": image, "command": ["/controller/manager", "instance", "run"],
            "ports": [{"name": "postgresql", "containerPort": 5432, "protocol": "TCP"},
                      {"name": "metrics", "containerPort": 9187, "protocol": "TCP"},
                      {"name": "status", "containerPort": 8000, "protocol": "TCP"}],
        }
        if cluster["spec"].get("resources"):
            container["resources"] = cluster["spec"]["resources"]
        pod = self._create({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": instance, "namespace": ns,
                "labels": {"cnpg.io/cluster": name, "cnpg.io/instanceName": instance, "cnpg.io/podRole": "instance",
                           "cnpg.io/instanceRole": role, "role": role},
                "annotations": annotations,
                "ownerReferences": [_owner(cluster)],
            },
            "spec": {
                "containers": [container],
                "initContainers": [{"name": "bootstrap-controller", "image": OPERATOR_IMAGE}],
                "nodeName": f"sandbox-node-{(serial - 1) % 3 + 1}",
                "hostname": instance, "subdomain": f"{name}-any", "serviceAccountName": name,
                "restartPolicy": "Always", "volumes": volumes,
            },
            "status": {
                "phase": "Pending", "qosClass": "BestEffort",
                "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": _rfc3339(_now())},
                               {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
                                "lastTransitionTime": _rfc3339(_now())}],
                "containerStatuses": [{"name": "postgres", "image": image, "imageID": "", "ready": False,
                                       "started": False, "restartCount": 0,
                                       "state": {"waiting": {"reason": "ContainerCreating"}}}],
            },
        })
        self.server.clear_pod_logs(ns, instance)
        self._log(pod, "Bootstrap controller: copying the instance manager", logger_name="setup")
        return pod

    def _set_pod_ready(self, pod: Obj, ready: bool) -> Obj:
        st = copy.deepcopy(pod.get("status") or {})
        now = _rfc3339(_now())
        statuses = st.get("containerStatuses") or [{"name": "postgres", "restartCount": 0}]
        for c in statuses:
            running = (c.get("state") or {}).get("running") or {"startedAt": now}
            c.update({"ready": ready, "started": True, "state": {"running": running},
                      "containerID": c.get("containerID") or f"containerd://{secrets.token_hex(32)}"})
        st.update({
            "phase": "Running", "containerStatuses": statuses,
            "hostIP": st.get("hostIP") or self._ip("172.18"), "podIP": st.get("podIP") or self._ip("10.244"),
            "startTime": st.get("startTime") or now,
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True" if ready else "False", "lastTransitionTime": now},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            ],
        })
        return self._replace_status(pod, st)

    def _set_role(self, pod: Obj, role: str) -> Obj:
        return self._patch(pod, {"metadata": {"labels": {"cnpg.io/instanceRole": role, "role": role}}})

    # ------------------------------------------------------------ cluster: one step

    def _cluster_step(self, cluster: Obj) -> bool:
        if cluster["metadata"].get("deletionTimestamp"):
            return False
        st: Obj = copy.deepcopy(cluster.get("status") or {})
        moved = self._cluster_action(cluster, st)
        current = self._find("clusters", cluster["metadata"]["namespace"], cluster["metadata"]["name"], GROUP)
        if current is not None:
            self._sync_cluster_status(current, st)
        return moved

    def _set_phase(self, cluster: Obj, st: Obj, phase: str, reason: str = "") -> None:
        if (st.get("phase"), st.get("phaseReason", "")) != (phase, reason):
            logger.info("Cluster %s/%s phase: %s%s", cluster["metadata"]["namespace"], cluster["metadata"]["name"],
                        phase, f" ({reason})" if reason else "")
        st["phase"] = phase
        st["phaseReason"] = reason
        if not reason:
            st.pop("phaseReason", None)

    def _cluster_action(self, cluster: Obj, st: Obj) -> bool:
        """Do the one thing a CNPG reconcile would do next; False when the cluster is at rest."""
        name = cluster["metadata"]["name"]
        uid = cluster["metadata"]["uid"]
        if not st.get("latestGeneratedNode"):
            return self._bootstrap(cluster, st)
        pods = {p["metadata"]["name"]: p for p in self._instance_pods(cluster)}
        data = [_labels(p)["cnpg.io/instanceName"] for p in self._pvcs(cluster, "PG_DATA")]
        current, target = st.get("currentPrimary", ""), st.get("targetPrimary", "")
        if self._hibernating(cluster, st):
            return self._hibernation_step(cluster, st, pods)
        # A primary change: demote the old primary, then promote the target once it is ready.
        if target and target != PENDING_FAILOVER and target != current and target in pods and _ready(pods[target]):
            old = pods.get(current)
            if old is not None and _labels(old).get("cnpg.io/instanceRole") == "primary":
                if st.get("phase") not in (PHASE_SWITCHOVER, PHASE_FAILOVER, PHASE_UPGRADE):
                    self._set_phase(cluster, st, PHASE_SWITCHOVER, f"Switching over to {target}")
                self._event(cluster, "Normal", "Switchover", f"Initiating switchover from {current} to {target}")
                self._log(old, "Demoting instance", currentPrimary=current, targetPrimary=target)
                self._pg_log(old, "received fast shutdown request", "shutting down", "database system is shut down")
                self._set_ready_and_role(old, False, "replica")
                return True
            self._promote(cluster, st, pods[target])
            return True
        pending = [p for p in pods.values() if not _ready(p)]
        if pending:
            pod = pending[0]
            pod_name = pod["metadata"]["name"]
            primary = pod_name == target and current != target
            self._set_pod_ready(pod, True)
            if primary:
                self._promote(cluster, st, self._find("pods", pod["metadata"]["namespace"], pod_name) or pod)
            else:
                started = (pod.get("status") or {}).get("phase") == "Pending"
                if started:
                    self._log_start(pod, cluster, primary=pod_name == current)
                else:
                    self._pg_log(pod, "database system is ready to accept "
                                 + ("connections" if pod_name == current else "read-only connections"))
            return True
        # The primary's Pod is gone: fail over to a ready replica (or recreate it when there is none).
        if current and current not in pods and current in data and target == current:
            if any(_ready(p) for p in pods.values()):
                self._event(cluster, "Normal", "FailingOver",
                            f"Current primary isn't healthy, initiating a failover from {current}")
                self._set_phase(cluster, st, PHASE_FAILOVER, f"Initiating a failover from {current}")
                st["targetPrimary"] = PENDING_FAILOVER
                st["targetPrimaryTimestamp"] = _now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                return True
        if target == PENDING_FAILOVER:
            candidates = [p for p in pods.values() if _ready(p)]
            if candidates:
                chosen = candidates[0]["metadata"]["name"]
                self._event(cluster, "Normal", "FailoverTarget", f"Failing over from {current} to {chosen}")
                self._set_phase(cluster, st, PHASE_FAILOVER, f"Failing over from {current} to {chosen}")
                st["targetPrimary"] = chosen
                st["targetPrimaryTimestamp"] = _now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                return True
        # A PVC without its Pod (deleted Pod, waking up): reattach, the primary first.
        missing = [i for i in data if i not in pods]
        if missing:
            instance = current if current in missing else missing[0]
            if st.get("phase") not in (PHASE_UPGRADE, PHASE_FAILOVER):
                self._set_phase(cluster, st, PHASE_WAITING, "Some instances are not yet active. Please wait.")
            self._create_pod(cluster, _serial(instance), primary=instance == current)
            return True
        desired = int(cluster["spec"].get("instances") or 1)
        if len(data) > desired:
            victims = [i for i in data if i != current] or data
            victim = max(victims, key=_serial)
            message = f"Scaling down - removing instance: {victim}"
            self._event(cluster, "Normal", "ScaleDown", message)
            for pvc in self._pvcs(cluster):
                if _labels(pvc).get("cnpg.io/instanceName") == victim:
                    self._delete(pvc)
            if victim in pods:
                self._delete(pods[victim])
                self.server.clear_pod_logs(cluster["metadata"]["namespace"], victim)
            self._pending_restart.get(uid, set()).discard(victim)
            return True
        if len(data) < desired:
            serial = int(st["latestGeneratedNode"]) + 1
            st["latestGeneratedNode"] = serial
            self._event(cluster, "Normal", "CreatingInstance", f"Creating instance {name}-{serial}")
            self._set_phase(cluster, st, PHASE_CREATING_REPLICA, f"Creating replica {name}-{serial}-join")
            self._create_pvcs(cluster, serial)
            self._create_pod(cluster, serial, primary=False)
            return True
        if self._apply_parameters(cluster, st, pods):
            return True
        if self._rollout_step(cluster, st, pods):
            return True
        if self._resize_step(cluster, st):
            return True
        if st.get("phase") != PHASE_HEALTHY:
            self._set_phase(cluster, st, PHASE_HEALTHY)
            return True
        return False

    def _set_ready_and_role(self, pod: Obj, ready: bool, role: str) -> None:
        pod = self._set_role(pod, role)
        self._set_pod_ready(pod, ready)

    def _bootstrap(self, cluster: Obj, st: Obj) -> bool:
        name = cluster["metadata"]["name"]
        first = f"{name}-1"
        self._create_cluster_objects(cluster)
        self._event(cluster, "Normal", "CreatingInstance", "Primary instance (initdb)")
        self._create_pvcs(cluster, 1)
        pod = self._create_pod(cluster, 1, primary=True)
        database, owner = self._bootstrap_names(cluster)
        self._log(pod, "Creating new data directory", logger_name="initdb", pgdata="/var/lib/postgresql/data/pgdata")
        self._log(pod, f"Creating application database {database} owned by {owner}", logger_name="initdb")
        now = _now()
        ns = cluster["metadata"]["namespace"]
        expiry = _go_time(now + timedelta(days=90))
        alt_names = [f"{name}{s}{d}" for s in ("-rw", "-r", "-ro") for d in ("", f".{ns}", f".{ns}.svc",
                                                                              f".{ns}.svc.cluster.local")]
        st.update({
            "latestGeneratedNode": 1,
            "targetPrimary": first,
            "targetPrimaryTimestamp": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "writeService": f"{name}-rw",
            "readService": f"{name}-r",
            "image": cluster["spec"].get("imageName") or DEFAULT_IMAGE,
            "timelineID": 1,
            "systemID": str(7_400_000_000_000_000_000 + secrets.randbelow(10**17)),
            "cloudNativePGCommitHash": "sandbox",
            "cloudNativePGOperatorHash": secrets.token_hex(32),
            "certificates": {
                "clientCASecret": f"{name}-ca", "serverCASecret": f"{name}-ca",
                "serverTLSSecret": f"{name}-server", "replicationTLSSecret": f"{name}-replication",
                "serverAltDNSNames": alt_names,
                "expirations": {f"{name}-ca": expiry, f"{name}-server": expiry, f"{name}-replication": expiry},
            },
        })
        self._set_phase(cluster, st, PHASE_FIRST_PRIMARY, f"Creating primary instance {first}")
        self._applied_parameters[cluster["metadata"]["uid"]] = dict(self._parameters(cluster))
        self._wal_segment[cluster["metadata"]["uid"]] = 2
        return True

    def _promote(self, cluster: Obj, st: Obj, pod: Obj) -> None:
        pod_name = pod["metadata"]["name"]
        previous = st.get("currentPrimary")
        pod = self._set_role(pod, "primary")
        if previous:
            st["timelineID"] = int(st.get("timelineID") or 1) + 1
            self._log(pod, "Promoting instance", previousPrimary=previous)
            self._pg_log(pod, "received promote request", "redo done", f"selected new timeline ID: {st['timelineID']}",
                         "archive recovery complete", "database system is ready to accept connections")
        else:
            self._log_start(pod, cluster, primary=True)
        st["currentPrimary"] = pod_name
        st["targetPrimary"] = pod_name
        st["currentPrimaryTimestamp"] = _now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        logger.info("Cluster %s/%s: primary is now %s", cluster["metadata"]["namespace"], cluster["metadata"]["name"],
                    pod_name)

    def _parameters(self, cluster: Obj) -> dict[str, str]:
        params: dict[str, str] = ((cluster["spec"].get("postgresql") or {}).get("parameters")) or {}
        return params

    def _apply_parameters(self, cluster: Obj, st: Obj, pods: dict[str, Obj]) -> bool:
        uid = cluster["metadata"]["uid"]
        wanted = self._parameters(cluster)
        applied = self._applied_parameters.setdefault(uid, dict(wanted))
        if applied == wanted:
            return False
        changed = sorted(set(applied) ^ set(wanted) | {k for k in wanted if applied.get(k) != wanted[k]})
        self._applied_parameters[uid] = dict(wanted)
        for pod in pods.values():
            self._log(pod, "Received configuration change, reloading", changed=changed)
            self._pg_log(pod, "received SIGHUP, reloading configuration files",
                         *(f'parameter "{k}" changed to "{wanted[k]}"' for k in changed if k in wanted))
        needs_restart = sorted(set(changed) & RESTART_PARAMETERS)
        if needs_restart:
            for pod in pods.values():
                self._pg_log(pod, *(f'parameter "{k}" cannot be changed without restarting the server'
                                    for k in needs_restart))
            self._pending_restart[uid] = set(pods)
            self._set_phase(cluster, st, PHASE_APPLYING, "PostgreSQL configuration changed")
        return True

    def _rollout_step(self, cluster: Obj, st: Obj, pods: dict[str, Obj]) -> bool:
        """Rolling restart, one instance per step: replicas (highest serial first), the primary last, in place."""
        uid = cluster["metadata"]["uid"]
        wanted = _annotations(cluster).get(RESTARTED_AT)
        stale = {n for n, p in pods.items() if wanted and _annotations(p).get(RESTARTED_AT) != wanted}
        pending = self._pending_restart.get(uid, set()) & set(pods)
        todo = stale | pending
        if not todo:
            self._pending_restart.pop(uid, None)
            return False
        current = st.get("currentPrimary", "")
        replicas = sorted((n for n in todo if n != current), key=_serial, reverse=True)
        instance = replicas[0] if replicas else current
        reason = REASON_RESTART_ANNOTATION if instance in stale else REASON_RESTART_CONFIG
        self._pending_restart.get(uid, set()).discard(instance)
        pod = pods[instance]
        if instance != current:
            self._set_phase(cluster, st, PHASE_UPGRADE, f"Restarting instance {instance}, because: {reason}")
            if instance in stale:
                # CNPG deletes the replica's Pod and creates it again on the same PVCs.
                self._delete(pod)
                self._create_pod(cluster, _serial(instance), primary=False)
                return True
        else:
            self._set_phase(cluster, st, PHASE_PRIMARY_RESTART, reason)
            if wanted:
                pod = self._patch(pod, {"metadata": {"annotations": {RESTARTED_AT: wanted}}})
        self._log(pod, "Restarting the instance", reason=reason)
        self._pg_log(pod, "received fast shutdown request", "database system is shut down")
        self._set_pod_ready(pod, False)
        return True

    def _resize_step(self, cluster: Obj, st: Obj) -> bool:
        sizes = {"PG_DATA": (cluster["spec"].get("storage") or {}).get("size"),
                 "PG_WAL": (cluster["spec"].get("walStorage") or {}).get("size")}
        grown: list[str] = []
        for pvc in self._pvcs(cluster):
            wanted = sizes.get(_labels(pvc).get("cnpg.io/pvcRole", ""))
            requested = pvc["spec"]["resources"]["requests"].get("storage")
            if wanted and requested != wanted:
                self._patch(pvc, {"spec": {"resources": {"requests": {"storage": wanted}}}})
                grown.append(pvc["metadata"]["name"])
        if grown:
            st["resizingPVC"] = grown
            return True
        resizing = st.pop("resizingPVC", None)
        if not resizing:
            return False
        for pvc in self._pvcs(cluster):
            if pvc["metadata"]["name"] in resizing:
                size = pvc["spec"]["resources"]["requests"]["storage"]
                self._replace_status(pvc, {**(pvc.get("status") or {}), "capacity": {"storage": size}})
                self._event(pvc, "Normal", "FileSystemResizeSuccessful",
                            f"MountVolume.NodeExpandVolume succeeded for volume \"{pvc['spec'].get('volumeName')}\" "
                            f"{pvc['metadata']['name']}", component="kubelet")
        return True

    # ------------------------------------------------------------ hibernation

    def _hibernating(self, cluster: Obj, st: Obj) -> bool:
        conditions = st.get("conditions") or []
        condition = next((c for c in conditions if c.get("type") == HIBERNATION), None)
        if _annotations(cluster).get(HIBERNATION) != "on":
            if condition is not None:
                st["conditions"] = [c for c in conditions if c.get("type") != HIBERNATION]
                logger.info("Cluster %s/%s: waking up", cluster["metadata"]["namespace"], cluster["metadata"]["name"])
            return False
        ongoing = condition is not None and condition.get("reason") in ("DeletingPods", "WaitingPodsDeletion",
                                                                          "Hibernated")
        if st.get("phase") != PHASE_HEALTHY and not ongoing:
            st["conditions"] = _condition(conditions, HIBERNATION, "False", "WaitingForHealthy",
                                          "Waiting for the cluster to be healthy before proceeding with hibernation")
            return False
        return True

    def _hibernation_step(self, cluster: Obj, st: Obj, pods: dict[str, Obj]) -> bool:
        conditions = st.get("conditions") or []
        if not pods:
            st["conditions"] = _condition(conditions, HIBERNATION, "True", "Hibernated", "Cluster has been hibernated")
            return False
        st["conditions"] = _condition(conditions, HIBERNATION, "False", "DeletingPods", "Hibernation is in progress")
        current = st.get("currentPrimary", "")
        pod = pods.get(current) or next(iter(pods.values()))
        self._log(pod, "Deleting Pod as requested by the hibernation procedure", logger_name="cluster")
        self._pg_log(pod, "received smart shutdown request", "database system is shut down")
        self._delete(pod)
        return True

    # ------------------------------------------------------------ cluster status

    def _sync_cluster_status(self, cluster: Obj, st: Obj) -> None:
        pods = self._instance_pods(cluster)
        pvcs = self._pvcs(cluster)
        ready = [p["metadata"]["name"] for p in pods if _ready(p)]
        active = [p["metadata"]["name"] for p in pods if not _ready(p)]
        st["instances"] = len(pods)
        st["readyInstances"] = len(ready)
        st["instanceNames"] = [_labels(p)["cnpg.io/instanceName"] for p in pvcs
                               if _labels(p).get("cnpg.io/pvcRole") == "PG_DATA"]
        by_status = {"healthy": ready, "replicating": active}
        st["instancesStatus"] = {k: v for k, v in by_status.items() if v}
        if not st["instancesStatus"]:
            st.pop("instancesStatus")
        st["pvcCount"] = len(pvcs)
        st["healthyPVC"] = [p["metadata"]["name"] for p in pvcs]
        if not st["healthyPVC"]:
            st.pop("healthyPVC")
        st["instancesReportedState"] = {
            p["metadata"]["name"]: {"isPrimary": p["metadata"]["name"] == st.get("currentPrimary"),
                                    "timeLineID": int(st.get("timelineID") or 1),
                                    "ip": (p.get("status") or {}).get("podIP", "")}
            for p in pods if _ready(p)
        }
        if not st["instancesReportedState"]:
            st.pop("instancesReportedState")
        nodes = {(p.get("spec") or {}).get("nodeName") for p in pods}
        st["topology"] = {"instances": {p["metadata"]["name"]: {} for p in pods}, "nodesUsed": len(nodes),
                          "successfullyExtracted": True}
        conditions = [c for c in st.get("conditions") or [] if c.get("type") != "ContinuousArchiving"]
        if st.get("phase") == PHASE_HEALTHY:
            conditions = _condition(conditions, "Ready", "True", "ClusterIsReady", "Cluster is Ready")
        else:
            conditions = _condition(conditions, "Ready", "False", "ClusterIsNotReady", "Cluster Is Not Ready")
        if _archiving(cluster) and st.get("currentPrimary") in ready:
            old = next((c for c in st.get("conditions") or [] if c.get("type") == "ContinuousArchiving"), None)
            conditions = _condition([*conditions, *([old] if old else [])], "ContinuousArchiving", "True",
                                    "ContinuousArchivingSuccess", "Continuous archiving is working")
        st["conditions"] = conditions
        self._replace_status(cluster, st)

    # ------------------------------------------------------------ backups

    def _backup_step(self, backup: Obj) -> bool:
        st: Obj = copy.deepcopy(backup.get("status") or {})
        phase = st.get("phase")
        if phase in ("completed", "failed") or backup["metadata"].get("deletionTimestamp"):
            return False
        ns = backup["metadata"]["namespace"]
        cluster_name = backup["spec"]["cluster"]["name"]
        method = backup["spec"].get("method") or "barmanObjectStore"
        cluster = self._find("clusters", ns, cluster_name, GROUP)
        if cluster is None:
            if phase != "pending":
                self._event(backup, "Warning", "FindingCluster",
                            f"Unknown cluster {cluster_name}, will retry in 30 seconds")
                self._replace_status(backup, {**st, "phase": "pending"})
            return False
        if not phase or phase == "pending":
            problem = _backup_problem(cluster, method)
            if problem is not None:
                reason, message = problem
                self._event(backup, "Warning", reason, message)
                self._replace_status(backup, {**st, "phase": "failed", "error": message, "method": method})
                self._record_backup(cluster, method, None, message)
                return True
            cst = cluster.get("status") or {}
            pods = {p["metadata"]["name"]: p for p in self._instance_pods(cluster) if _ready(p)}
            primary = cst.get("currentPrimary", "")
            target = backup["spec"].get("target") or ((cluster["spec"].get("backup") or {}).get("target")) or (
                "prefer-standby")
            replicas = sorted((n for n in pods if n != primary), key=_serial)
            chosen = replicas[0] if target == "prefer-standby" and replicas else primary
            if chosen not in pods:
                if phase != "pending":
                    self._event(backup, "Warning", "BackupPending", f"Backup target pod not ready: {chosen or '?'}")
                    self._replace_status(backup, {**st, "phase": "pending"})
                return False
            pod = pods[chosen]
            self._event(backup, "Normal", "Starting", f"Starting backup for cluster {cluster_name}")
            self._log(pod, "Starting backup", backupName=backup["metadata"]["name"], method=method)
            status: Obj = {"phase": "started", "method": method, "startedAt": _rfc3339(_now()),
                           "instanceID": {"podName": chosen,
                                          "ContainerID": ((pod.get("status") or {}).get("containerStatuses") or
                                                          [{}])[0].get("containerID", "")},
                           "online": True}
            if method == "barmanObjectStore":
                store = (cluster["spec"].get("backup") or {}).get("barmanObjectStore") or {}
                status["destinationPath"] = store.get("destinationPath", "")
                status["serverName"] = store.get("serverName") or cluster_name
            if method == "plugin":
                status["pluginMetadata"] = {}
            self._replace_status(backup, status)
            return True
        # Started: finish it.
        uid = cluster["metadata"]["uid"]
        segment = self._wal_segment.get(uid, 2) + 1
        self._wal_segment[uid] = segment + 2
        timeline = int((cluster.get("status") or {}).get("timelineID") or 1)
        stopped = _now()
        started = _parse_time(st.get("startedAt") or _rfc3339(stopped))
        st.update({"phase": "completed", "stoppedAt": _rfc3339(stopped),
                   "beginWal": _wal_name(timeline, segment), "endWal": _wal_name(timeline, segment + 1),
                   "beginLSN": _lsn(segment, 40), "endLSN": _lsn(segment + 1, 256),
                   "majorVersion": _major(cluster)})
        if st.get("method") == "barmanObjectStore":
            st["backupId"] = started.strftime("%Y%m%dT%H%M%S")
            st["backupName"] = f"backup-{started.strftime('%Y%m%d%H%M%S')}"
        elif st.get("method") == "volumeSnapshot":
            name = backup["metadata"]["name"]
            st["snapshotBackupStatus"] = {"elements": [{"name": name, "type": "PG_DATA"}]
                                          + ([{"name": f"{name}-wal", "type": "PG_WAL"}]
                                             if cluster["spec"].get("walStorage") else [])}
        else:
            st["backupId"] = started.strftime("%Y%m%dT%H%M%S")
        self._replace_status(backup, st)
        runner = self._find("pods", ns, (st.get("instanceID") or {}).get("podName", ""))
        if runner is not None:
            pod = runner
            self._pg_log(pod, "checkpoint starting: force wait", "checkpoint complete", backend="checkpointer")
            self._log(pod, "Backup completed", backupName=backup["metadata"]["name"], beginWal=st["beginWal"],
                      endWal=st["endWal"])
        self._event(backup, "Normal", "Completed", "Backup completed")
        self._record_backup(cluster, st["method"], stopped, None)
        return True

    def _record_backup(self, cluster: Obj, method: str, stopped: datetime | None, error: str | None) -> None:
        """The cluster side of a finished backup: last success or failure, first recoverability point."""
        st: Obj = copy.deepcopy(cluster.get("status") or {})
        conditions = st.get("conditions") or []
        if stopped is not None:
            when = _rfc3339(stopped)
            st["lastSuccessfulBackup"] = when
            st.setdefault("lastSuccessfulBackupByMethod", {})[method] = when
            st.setdefault("firstRecoverabilityPoint", when)
            st.setdefault("firstRecoverabilityPointByMethod", {}).setdefault(method, when)
            st["conditions"] = _condition(conditions, "LastBackupSucceeded", "True", "LastBackupSucceeded", "")
        else:
            st["lastFailedBackup"] = _rfc3339(_now())
            st["conditions"] = _condition(conditions, "LastBackupSucceeded", "False", "LastBackupFailed", error or "")
        self._replace_status(cluster, st)

    def _scheduled_backup_step(self, scheduled: Obj) -> bool:
        sp = scheduled["spec"]
        if sp.get("suspend") or scheduled["metadata"].get("deletionTimestamp"):
            return False
        schedule = CronSchedule.parse(sp.get("schedule", ""))
        if schedule is None:
            return False
        st: Obj = copy.deepcopy(scheduled.get("status") or {})
        now = _now().replace(microsecond=0)
        if not st.get("lastCheckTime"):
            if sp.get("immediate"):
                self._event(scheduled, "Normal", "BackupSchedule", f"Scheduled immediate backup now: {_go_time(now)}")
                self._schedule_backup(scheduled, st, now, now, schedule, immediate=True)
                return True
            self._replace_status(scheduled, {**st, "lastCheckTime": _rfc3339(now)})
            first = schedule.next(now)
            self._event(scheduled, "Normal", "BackupSchedule", f"Scheduled first backup by {_go_time(first)}")
            self._remember_wake(first)
            return False
        due = schedule.next(_parse_time(st["lastCheckTime"]))
        if now < due:
            self._remember_wake(due)
            return False
        children = self._list("backups", scheduled["metadata"]["namespace"], GROUP,
                              labels={"cnpg.io/scheduled-backup": scheduled["metadata"]["name"]})
        if any((b.get("status") or {}).get("phase") not in ("completed", "failed") for b in children):
            return False  # one backup at a time per schedule; a finishing backup wakes the operator again
        self._schedule_backup(scheduled, st, due, now, schedule, immediate=False)
        return True

    def _remember_wake(self, when: datetime) -> None:
        at = when.timestamp()
        self._wake_at = at if self._wake_at is None else min(self._wake_at, at)

    def _schedule_backup(self, scheduled: Obj, st: Obj, backup_time: datetime, now: datetime,
                         schedule: CronSchedule, immediate: bool) -> None:
        sp = scheduled["spec"]
        ns, name = scheduled["metadata"]["namespace"], scheduled["metadata"]["name"]
        cluster_name = sp["cluster"]["name"]
        meta: Obj = {"name": f"{name}-{backup_time.strftime('%Y%m%d%H%M%S')}", "namespace": ns,
                     "labels": {"cnpg.io/cluster": cluster_name, "cnpg.io/immediateBackup": str(immediate).lower(),
                                "cnpg.io/scheduled-backup": name}}
        owner = sp.get("backupOwnerReference") or "none"
        if owner == "self":
            meta["ownerReferences"] = [_owner(scheduled, controller=False)]
        elif owner == "cluster":
            cluster = self._find("clusters", ns, cluster_name, GROUP)
            if cluster is not None:
                meta["ownerReferences"] = [_owner(cluster, controller=False)]
        spec: Obj = {"cluster": {"name": cluster_name}, "method": sp.get("method") or "barmanObjectStore"}
        for key in ("target", "pluginConfiguration", "online", "onlineConfiguration"):
            if sp.get(key) is not None:
                spec[key] = sp[key]
        if self._find("backups", ns, meta["name"], GROUP) is None:
            self._create({"apiVersion": API_VERSION, "kind": "Backup", "metadata": meta, "spec": spec})
        following = schedule.next(now)
        self._replace_status(scheduled, {**st, "lastCheckTime": _rfc3339(now),
                                         "lastScheduleTime": _rfc3339(backup_time),
                                         "nextScheduleTime": _rfc3339(following)})
        self._event(scheduled, "Normal", "BackupSchedule", f"Next backup scheduled by {_go_time(following)}")
        self._remember_wake(following)

    # ------------------------------------------------------------ poolers, databases, roles

    def _pooler_step(self, pooler: Obj) -> bool:
        if pooler["metadata"].get("deletionTimestamp"):
            return False
        ns, name = pooler["metadata"]["namespace"], pooler["metadata"]["name"]
        moved = False
        if self._find("services", ns, name) is None:
            self._create({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": ns,
                             "labels": {"cnpg.io/poolerName": name, "cnpg.io/podRole": "pooler"},
                             "ownerReferences": [_owner(pooler)]},
                "spec": {"type": "ClusterIP", "clusterIP": self._ip("10.96"), "selector": {"cnpg.io/poolerName": name},
                         "ports": [{"name": "pgbouncer", "port": 5432, "protocol": "TCP", "targetPort": "pgbouncer"}]},
                "status": {"loadBalancer": {}},
            })
            moved = True
        st: Obj = copy.deepcopy(pooler.get("status") or {})
        cluster = pooler["spec"]["cluster"]["name"]
        wanted = {**st, "instances": int(pooler["spec"].get("instances") or 1),
                  "secrets": {"clientCA": {"name": f"{cluster}-ca"}, "serverCA": {"name": f"{cluster}-ca"},
                              "serverTLS": {"name": f"{cluster}-server"}, "pgBouncerSecrets": {}}}
        if st != wanted:
            self._replace_status(pooler, wanted)
            moved = True
        return moved

    def _database_step(self, database: Obj) -> bool:
        return self._managed_object_step(database, "cnpg.io/deleteDatabase", "databaseReclaimPolicy", "DATABASE")

    def _role_step(self, role: Obj) -> bool:
        return self._managed_object_step(role, "cnpg.io/deleteRole", "databaseRoleReclaimPolicy", "ROLE")

    def _managed_object_step(self, obj: Obj, finalizer: str, policy_key: str, what: str) -> bool:
        """Database and DatabaseRole, as the primary's instance manager reconciles them."""
        meta = obj["metadata"]
        ns = meta["namespace"]
        cluster = self._find("clusters", ns, obj["spec"]["cluster"]["name"], GROUP)
        primary = None
        if cluster is not None:
            current = (cluster.get("status") or {}).get("currentPrimary", "")
            pod = self._find("pods", ns, current) if current else None
            primary = pod if pod is not None and _ready(pod) else None
        finalizers = list(meta.get("finalizers") or [])
        if meta.get("deletionTimestamp"):
            if finalizer not in finalizers:
                return False
            if primary is None and cluster is not None:
                return False  # waits for a primary, as the real instance manager does
            if primary is not None:
                drop = obj["spec"].get(policy_key) == "delete"
                self._pg_log(primary, f"{'DROP' if drop else 'keeping'} {what} {obj['spec'].get('name')}"
                             + ("" if drop else " (reclaim policy retain)"), backend="client backend")
            self._patch(obj, {"metadata": {"finalizers": [f for f in finalizers if f != finalizer] or None}})
            return True
        if cluster is None:
            st = {"applied": False, "message": f'while fetching the cluster: clusters.{GROUP} '
                                               f'"{obj["spec"]["cluster"]["name"]}" not found'}
            if {k: (obj.get("status") or {}).get(k) for k in st} != st:
                self._replace_status(obj, {**(obj.get("status") or {}), **st})
            return False
        if primary is None:
            return False
        generation = int(meta.get("generation") or 1)
        if (obj.get("status") or {}).get("observedGeneration") == generation and finalizer in finalizers:
            return False
        if finalizer not in finalizers:
            obj = self._patch(obj, {"metadata": {"finalizers": [*finalizers, finalizer]}})
        verb = "CREATE" if not (obj.get("status") or {}).get("applied") else "ALTER"
        self._pg_log(primary, f"{verb} {what} {obj['spec'].get('name')}", backend="client backend")
        status: Obj = {"applied": True, "observedGeneration": generation}
        self._replace_status(obj, status)
        return True


def _archiving(cluster: Obj) -> bool:
    sp = cluster["spec"]
    if ((sp.get("backup") or {}).get("barmanObjectStore")):
        return True
    return any(p.get("isWALArchiver") and p.get("enabled", True) for p in sp.get("plugins") or [])


def _major(cluster: Obj) -> int:
    image = cluster["spec"].get("imageName") or DEFAULT_IMAGE
    match = re.search(r":(\d+)", image)
    return int(match.group(1)) if match else 18


def _backup_problem(cluster: Obj, method: str) -> tuple[str, str] | None:
    """CNPG's prerequisite checks (backup_controller.go checkPrerequisites): event reason and error message."""
    sp = cluster["spec"]
    if _annotations(cluster).get(HIBERNATION) == "on":
        return "ClusterIsHibernated", "cannot backup a hibernated cluster"
    if method == "plugin":
        if not sp.get("plugins"):
            message = "cannot proceed with the backup as the cluster has no plugin configured"
            return "ClusterHasNoBackupExecutorPlugin", message
        return None
    backup = sp.get("backup")
    if not backup:
        return "ClusterHasBackupConfigured", "cannot proceed with the backup as the cluster has no backup section"
    if method == "volumeSnapshot" and not backup.get("volumeSnapshot"):
        return "ClusterHasNoVolumeSnapshotSection", "no volumeSnapshot section defined on the target cluster"
    if method == "barmanObjectStore" and not backup.get("barmanObjectStore"):
        return "ClusterHasNoBarmanSection", "no barmanObjectStore section defined on the target cluster"
    return None


# ---------------------------------------------------------------- cron (robfig/cron with seconds, as CNPG uses)

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_DESCRIPTORS = {
    "@yearly": "0 0 0 1 1 *", "@annually": "0 0 0 1 1 *", "@monthly": "0 0 0 1 * *", "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *", "@midnight": "0 0 0 * * *", "@hourly": "0 0 * * * *",
}
_BOUNDS = ((0, 59, None), (0, 59, None), (0, 23, None), (1, 31, None), (1, 12, _MONTHS), (0, 6, _DAYS))
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")


class CronSchedule:
    """A six-field cron schedule (seconds first) or `@every <duration>`, evaluated in UTC."""

    def __init__(self, fields: list[set[int]] | None, every: float | None, star_dom: bool, star_dow: bool) -> None:
        self.fields = fields
        self.every = every
        self.star_dom = star_dom
        self.star_dow = star_dow

    @classmethod
    def parse(cls, text: str) -> CronSchedule | None:
        text = text.strip()
        if text.startswith("@every "):
            spec = text[len("@every "):].strip()
            parts = _DURATION.findall(spec)
            if not parts or "".join(n + u for n, u in parts) != spec:
                return None
            scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
            seconds = sum(float(n) * scale[u] for n, u in parts)
            return cls(None, max(1.0, seconds), False, False) if seconds > 0 else None
        text = _DESCRIPTORS.get(text.lower(), text)
        tokens = text.split()
        if len(tokens) != 6:
            return None
        fields: list[set[int]] = []
        for token, (low, high, names) in zip(tokens, _BOUNDS, strict=True):
            values = _cron_field(token, low, high, names)
            if values is None:
                return None
            fields.append(values)
        star = [t in ("*", "?") for t in tokens]
        return cls(fields, None, star[3], star[5])

    def _day_matches(self, when: datetime) -> bool:
        assert self.fields is not None
        dom = when.day in self.fields[3]
        dow = (when.isoweekday() % 7) in self.fields[5]
        if self.star_dom or self.star_dow:
            return dom and dow
        return dom or dow

    def next(self, after: datetime) -> datetime:
        """The first activation strictly after `after` (whole seconds)."""
        after = after.replace(microsecond=0)
        if self.every is not None:
            return after + timedelta(seconds=int(self.every))
        assert self.fields is not None
        second, minute, hour, _, month, _ = self.fields
        t = after + timedelta(seconds=1)
        limit = after + timedelta(days=366 * 5)
        while t <= limit:
            if t.month not in month:
                t = (t.replace(day=1, hour=0, minute=0, second=0) + timedelta(days=32)).replace(day=1)
                continue
            if not self._day_matches(t):
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
                continue
            if t.hour not in hour:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
                continue
            if t.minute not in minute:
                t = t.replace(second=0) + timedelta(minutes=1)
                continue
            if t.second not in second:
                t += timedelta(seconds=1)
                continue
            return t
        return limit


def _cron_value(token: str, names: tuple[str, ...] | None, low: int) -> int | None:
    if token.isdigit():
        return int(token)
    if names and token.upper() in names:
        return names.index(token.upper()) + low
    return None


def _cron_field(token: str, low: int, high: int, names: tuple[str, ...] | None) -> set[int] | None:
    values: set[int] = set()
    for part in token.split(","):
        step = 1
        if "/" in part:
            part, _, step_text = part.partition("/")
            if not step_text.isdigit() or int(step_text) == 0:
                return None
            step = int(step_text)
        if part in ("*", "?"):
            start, end = low, high
        elif "-" in part:
            first, _, last = part.partition("-")
            a, b = _cron_value(first, names, low), _cron_value(last, names, low)
            if a is None or b is None:
                return None
            start, end = a, b
        else:
            value = _cron_value(part, names, low)
            if value is None:
                return None
            start, end = value, (high if step > 1 else value)
        if names is _DAYS and end == 7:
            end = 6 if start <= 6 else 0
            values.add(0)
        if start < low or end > high or start > end:
            return None
        values.update(range(start, end + 1, step))
    return values
