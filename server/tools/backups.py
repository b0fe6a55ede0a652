"""Backup tools: on-demand backups and scheduled backups."""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from server.kube import BACKUPS, CLUSTERS, SCHEDULED_BACKUPS
from server.registry import Registry
from server.tools.clusters import configured_backup_methods
from server.tools.common import (
    AllNamespaces,
    ClusterName,
    Confirm,
    DryRun,
    InputError,
    Namespace,
    ObjectName,
    ToolOutput,
    age,
    cluster_of,
    meta,
    require_confirm,
    require_dns_label,
    require_object_name,
    spec,
    status,
    strip_noise,
    table,
    validate_cron,
)

BackupMethod = Literal["barmanObjectStore", "volumeSnapshot", "plugin"]
MethodParam = Annotated[
    BackupMethod | None,
    Field(description="Backup method. Omit to use the only method the cluster is configured for; it must be one "
          "the cluster supports (barmanObjectStore needs spec.backup.barmanObjectStore, volumeSnapshot needs "
          "spec.backup.volumeSnapshot, plugin needs a WAL-archiver plugin)."),
]
TargetParam = Annotated[
    Literal["primary", "prefer-standby"] | None,
    Field(description="Which instance runs the backup; omit for the cluster's default."),
]


def choose_method(cluster: dict[str, Any], method: str | None) -> tuple[str, dict[str, Any]]:
    """Pick a backup method the cluster supports and the extra spec it needs; refuse with the reason otherwise."""
    name = meta(cluster).get("name")
    supported = configured_backup_methods(cluster)
    if not supported:
        raise InputError(
            f"Refused: cluster {name} has no backup configuration (no spec.backup.barmanObjectStore, "
            "spec.backup.volumeSnapshot or WAL-archiver plugin). Configure one first."
        )
    if method is None:
        if len(supported) > 1:
            raise InputError(f"Cluster {name} supports several backup methods ({', '.join(supported)}); "
                             "choose one with method.")
        method = supported[0]
    if method not in supported:
        raise InputError(
            f"Refused: cluster {name} is not configured for method '{method}'; it supports: {', '.join(supported)}."
        )
    extra: dict[str, Any] = {}
    if method == "plugin":
        plugin = next(p for p in spec(cluster).get("plugins") or [] if p.get("isWALArchiver"))
        extra["pluginConfiguration"] = {"name": plugin["name"]}
    return method, extra


def backup_row(obj: dict[str, Any]) -> dict[str, Any]:
    st = status(obj)
    return {
        "namespace": meta(obj).get("namespace"),
        "name": meta(obj).get("name"),
        "cluster": cluster_of(obj),
        "method": spec(obj).get("method") or st.get("method") or "barmanObjectStore",
        "phase": st.get("phase") or "(pending)",
        "startedAt": st.get("startedAt") or "",
        "stoppedAt": st.get("stoppedAt") or "",
        "error": st.get("error") or "",
        "age": age(meta(obj).get("creationTimestamp")),
    }


def register(r: Registry) -> None:
    deps = r.deps
    kube = deps.kube

    def by_cluster(items: list[dict[str, Any]], cluster: str | None) -> list[dict[str, Any]]:
        return [i for i in items if cluster is None or cluster_of(i) == cluster]

    @r.tool(title="List backups", write=False)
    async def list_backups(
        namespace: Namespace = None,
        cluster: Annotated[str | None, Field(description="Only backups of this cluster.")] = None,
        all_namespaces: AllNamespaces = False,
    ) -> ToolOutput:
        """List Backup objects with cluster, method, phase, start/stop time and error, newest first."""
        items: list[dict[str, Any]] = []
        for scope in deps.scopes(namespace, all_namespaces):
            items.extend(by_cluster(await kube.list(BACKUPS, scope), cluster))
        rows = sorted((backup_row(b) for b in items), key=lambda x: str(x["startedAt"] or x["age"]), reverse=True)
        if not rows:
            return ToolOutput("No backups found.", {"backups": []})
        text = table(["NAMESPACE", "NAME", "CLUSTER", "METHOD", "PHASE", "STARTED", "STOPPED", "ERROR"],
                     [[x["namespace"], x["name"], x["cluster"], x["method"], x["phase"], x["startedAt"],
                       x["stoppedAt"], x["error"][:80]] for x in rows])
        return ToolOutput(text, {"backups": rows})

    @r.tool(title="Get backup", write=False)
    async def get_backup(name: ObjectName, namespace: Namespace = None) -> ToolOutput:
        """Details of one Backup: cluster, method, phase, times, WAL range, destination and error."""
        ns = deps.namespace(namespace)
        obj = await kube.get(BACKUPS, ns, name)
        row = backup_row(obj)
        st = status(obj)
        lines = [f"Backup {ns}/{name} of cluster {row['cluster']}", f"Method: {row['method']}",
                 f"Phase: {row['phase']}", f"Started: {row['startedAt'] or '-'}", f"Stopped: {row['stoppedAt'] or '-'}"]
        for key in ("backupId", "instanceID", "beginWal", "endWal", "beginLSN", "endLSN", "destinationPath",
                    "serverName", "majorVersion"):
            if st.get(key):
                value = st[key] if not isinstance(st[key], dict) else st[key].get("podName", st[key])
                lines.append(f"{key}: {value}")
        if row["error"]:
            lines.append(f"Error: {row['error']}")
        return ToolOutput("\n".join(lines), {**row, "status": {k: v for k, v in st.items()
                                                                 if not k.endswith("Credentials")}})

    @r.tool(title="Create backup", write=True, destructive=False, idempotent=False)
    async def create_backup(
        cluster: ClusterName,
        namespace: Namespace = None,
        method: MethodParam = None,
        name: Annotated[str | None, Field(description="Backup object name; default <cluster>-ondemand-<time>.")] = None,
        target: TargetParam = None,
        dry_run: DryRun = False,
    ) -> ToolOutput:
        """Start an on-demand backup of a cluster with a method the cluster is configured for."""
        ns = deps.namespace(namespace)
        require_dns_label("cluster name", cluster)
        cluster_obj = await kube.get(CLUSTERS, ns, cluster)
        chosen, extra = choose_method(cluster_obj, method)
        backup_name = name or f"{cluster}-ondemand-{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}"
        require_object_name("backup name", backup_name)
        body_spec: dict[str, Any] = {"cluster": {"name": cluster}, "method": chosen, **extra}
        if target:
            body_spec["target"] = target
        body = {"apiVersion": BACKUPS.api_version, "kind": "Backup",
                "metadata": {"name": backup_name, "namespace": ns}, "spec": body_spec}
        created = await kube.create(BACKUPS, ns, body, dry_run=dry_run)
        prefix = "Dry run (dryRun=All): nothing was written. Would create" if dry_run else "Created"
        return ToolOutput(f"{prefix} Backup {ns}/{backup_name} of cluster {cluster} with method {chosen}. "
                          "Follow progress with get_backup.",
                          {"name": backup_name, "method": chosen, "dryRun": dry_run, "object": strip_noise(created)})

    @r.tool(title="List scheduled backups", write=False)
    async def list_scheduled_backups(
        namespace: Namespace = None,
        cluster: Annotated[str | None, Field(description="Only schedules of this cluster.")] = None,
        all_namespaces: AllNamespaces = False,
    ) -> ToolOutput:
        """List ScheduledBackup objects with cluster, schedule, method, suspended flag and last/next run."""
        items: list[dict[str, Any]] = []
        for scope in deps.scopes(namespace, all_namespaces):
            items.extend(by_cluster(await kube.list(SCHEDULED_BACKUPS, scope), cluster))
        rows: list[dict[str, Any]] = [{
            "namespace": meta(i).get("namespace"), "name": meta(i).get("name"),
            "cluster": cluster_of(i), "schedule": spec(i).get("schedule"),
            "method": spec(i).get("method") or "barmanObjectStore", "suspended": bool(spec(i).get("suspend")),
            "lastScheduleTime": status(i).get("lastScheduleTime") or "",
            "nextScheduleTime": status(i).get("nextScheduleTime") or "",
        } for i in items]
        if not rows:
            return ToolOutput("No scheduled backups found.", {"scheduledBackups": []})
        text = table(["NAMESPACE", "NAME", "CLUSTER", "SCHEDULE", "METHOD", "SUSPENDED", "LAST", "NEXT"],
                     [[x["namespace"], x["name"], x["cluster"], x["schedule"], x["method"],
                       "yes" if x["suspended"] else "no", x["lastScheduleTime"], x["nextScheduleTime"]] for x in rows])
        return ToolOutput(text, {"scheduledBackups": rows})

    @r.tool(title="Create scheduled backup", write=True, destructive=False, idempotent=False)
    async def create_scheduled_backup(
        name: ObjectName,
        cluster: ClusterName,
        schedule: Annotated[str, Field(description="Six-field cron with seconds first: 'second minute hour "
                                       "day-of-month month day-of-week', e.g. '0 0 2 * * *' = daily at 02:00.")],
        namespace: Namespace = None,
        method: MethodParam = None,
        immediate: Annotated[bool, Field(description="Also take a backup right after creation.")] = False,
        suspend: Annotated[bool, Field(description="Create it suspended.")] = False,
        backup_owner_reference: Annotated[Literal["none", "self", "cluster"], Field(
            description="Owner of the Backup objects it creates: 'self' (deleted with the schedule), 'cluster', "
            "or 'none'.")] = "self",
        target: TargetParam = None,
        dry_run: DryRun = False,
    ) -> ToolOutput:
        """Create a ScheduledBackup for a cluster (cron validated: CloudNativePG uses six fields with seconds)."""
        ns = deps.namespace(namespace)
        require_object_name("scheduled backup name", name)
        require_dns_label("cluster name", cluster)
        cron = validate_cron(schedule)
        cluster_obj = await kube.get(CLUSTERS, ns, cluster)
        chosen, extra = choose_method(cluster_obj, method)
        body_spec: dict[str, Any] = {"cluster": {"name": cluster}, "schedule": cron, "method": chosen,
                                     "immediate": immediate, "suspend": suspend,
                                     "backupOwnerReference": backup_owner_reference, **extra}
        if target:
            body_spec["target"] = target
        body = {"apiVersion": SCHEDULED_BACKUPS.api_version, "kind": "ScheduledBackup",
                "metadata": {"name": name, "namespace": ns}, "spec": body_spec}
        created = await kube.create(SCHEDULED_BACKUPS, ns, body, dry_run=dry_run)
        prefix = "Dry run (dryRun=All): nothing was written. Would create" if dry_run else "Created"
        return ToolOutput(f"{prefix} ScheduledBackup {ns}/{name} for cluster {cluster}: '{cron}' with method "
                          f"{chosen}{' (suspended)' if suspend else ''}.",
                          {"dryRun": dry_run, "object": strip_noise(created)})

    async def set_suspended(name: str, namespace: str | None, suspended: bool) -> ToolOutput:
        ns = deps.namespace(namespace)
        obj = await kube.get(SCHEDULED_BACKUPS, ns, name)
        if bool(spec(obj).get("suspend")) == suspended:
            state = "suspended" if suspended else "active"
            return ToolOutput(f"ScheduledBackup {ns}/{name} is already {state}; nothing to change.",
                              {"changed": False})
        await kube.patch(SCHEDULED_BACKUPS, ns, name, {"spec": {"suspend": suspended}})
        verb = "Suspended" if suspended else "Resumed"
        return ToolOutput(f"{verb} ScheduledBackup {ns}/{name}.", {"changed": True, "suspended": suspended})

    @r.tool(title="Suspend scheduled backup", write=True, destructive=False, idempotent=True)
    async def suspend_scheduled_backup(name: ObjectName, namespace: Namespace = None) -> ToolOutput:
        """Suspend a ScheduledBackup (spec.suspend=true); no new backups start until resumed."""
        return await set_suspended(name, namespace, True)

    @r.tool(title="Resume scheduled backup", write=True, destructive=False, idempotent=True)
    async def resume_scheduled_backup(name: ObjectName, namespace: Namespace = None) -> ToolOutput:
        """Resume a suspended ScheduledBackup (spec.suspend=false)."""
        return await set_suspended(name, namespace, False)

    @r.tool(title="Delete scheduled backup", write=True, destructive=True, idempotent=False)
    async def delete_scheduled_backup(
        name: ObjectName, confirm: Confirm, namespace: Namespace = None, dry_run: DryRun = False
    ) -> ToolOutput:
        """Delete one ScheduledBackup (requires confirm equal to its name). Backups it owns ('self') go with it."""
        ns = deps.namespace(namespace)
        require_confirm("scheduled backup", name, confirm)
        obj = await kube.get(SCHEDULED_BACKUPS, ns, name)
        await kube.delete(SCHEDULED_BACKUPS, ns, name, uid=meta(obj).get("uid"), dry_run=dry_run)
        owner = spec(obj).get("backupOwnerReference") or "none"
        note = (" Backup objects it created are owned by it and are deleted too." if owner == "self"
                else " Backup objects it created are kept.")
        prefix = "Dry run (dryRun=All): nothing was written. Would delete" if dry_run else "Deleted"
        pending = None if dry_run else await kube.pending_deletion(SCHEDULED_BACKUPS, ns, name, meta(obj).get("uid"))
        return ToolOutput(f"{prefix} ScheduledBackup {ns}/{name}.{note}" + (f" {pending}" if pending else ""),
                          {"deleted": not dry_run, "dryRun": dry_run, "pending": bool(pending)})
