"""Cluster tools: list, status, create, scale, storage, parameters, switchover, restart, hibernation, delete."""

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from server.kube import CLUSTERS
from server.registry import Deps, Registry
from server.tools.common import (
    AllNamespaces,
    ClusterName,
    Confirm,
    DryRun,
    InputError,
    LabelSelector,
    Namespace,
    ToolOutput,
    age,
    meta,
    now_rfc3339,
    parse_quantity,
    require_confirm,
    require_dns_label,
    require_pg_identifier,
    spec,
    status,
    strip_noise,
    table,
)
from server.tools.instances import instance_pod

HIBERNATION_ANNOTATION = "cnpg.io/hibernation"
RESTART_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
FENCED_ANNOTATION = "cnpg.io/fencedInstances"
PHASE_SWITCHOVER = "Switchover in progress"
PHASE_HEALTHY = "Cluster in healthy state"

# Parameters the operator owns: CloudNativePG rejects or overrides them, so refusing early saves a confusing error.
OPERATOR_MANAGED_PARAMETERS = frozenset({
    "allow_system_table_mods", "archive_cleanup_command", "archive_command", "archive_mode", "bonjour",
    "bonjour_name", "cluster_name", "config_file", "data_directory", "data_sync_retry", "event_source",
    "external_pid_file", "hba_file", "hot_standby", "ident_file", "jit_provider", "listen_addresses",
    "log_destination", "log_directory", "log_file_mode", "log_filename", "log_rotation_age", "log_rotation_size",
    "log_truncate_on_rotation", "logging_collector", "port", "primary_conninfo", "primary_slot_name",
    "promote_trigger_file", "recovery_end_command", "recovery_min_apply_delay", "recovery_target",
    "recovery_target_action", "recovery_target_inclusive", "recovery_target_lsn", "recovery_target_name",
    "recovery_target_time", "recovery_target_timeline", "recovery_target_xid", "restart_after_crash",
    "restore_command", "shared_preload_libraries", "ssl", "ssl_ca_file", "ssl_cert_file", "ssl_crl_file",
    "ssl_dh_params_file", "ssl_ecdh_curve", "ssl_key_file", "ssl_passphrase_command",
    "ssl_passphrase_command_supports_reload", "ssl_prefer_server_ciphers", "stats_temp_directory",
    "synchronous_standby_names", "syslog_facility", "syslog_ident", "syslog_sequence_numbers",
    "syslog_split_messages", "unix_socket_directories", "unix_socket_group", "unix_socket_permissions",
    "wal_level", "wal_log_hints",
})


def cluster_row(obj: dict[str, Any]) -> dict[str, Any]:
    st = status(obj)
    return {
        "namespace": meta(obj).get("namespace"),
        "name": meta(obj).get("name"),
        "phase": st.get("phase") or "(not reported)",
        "instances": spec(obj).get("instances"),
        "readyInstances": st.get("readyInstances", 0),
        "primary": st.get("currentPrimary") or "",
        "age": age(meta(obj).get("creationTimestamp")),
    }


def configured_backup_methods(cluster: dict[str, Any]) -> list[str]:
    """Backup methods this cluster can run, from its spec (not from wishful thinking)."""
    sp = spec(cluster)
    backup = sp.get("backup") or {}
    methods = []
    if backup.get("barmanObjectStore"):
        methods.append("barmanObjectStore")
    if backup.get("volumeSnapshot"):
        methods.append("volumeSnapshot")
    if any(p.get("enabled", True) and p.get("isWALArchiver") for p in sp.get("plugins") or []):
        methods.append("plugin")
    return methods


def describe_cluster(obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The status summary used by get_cluster_status and the cluster resource."""
    md, sp, st = meta(obj), spec(obj), status(obj)
    annotations = md.get("annotations") or {}
    lines = [f"Cluster {md.get('namespace')}/{md.get('name')} (age {age(md.get('creationTimestamp'))})"]
    phase = st.get("phase") or "(not reported by the operator yet)"
    reason = st.get("phaseReason")
    lines.append(f"Phase: {phase}" + (f" - {reason}" if reason else ""))
    if annotations.get(HIBERNATION_ANNOTATION) == "on":
        lines.append("Hibernation: ON (pods are stopped, data volumes kept; use wake_cluster to resume)")
    instance_names = st.get("instanceNames") or []
    lines.append(
        f"Instances: {sp.get('instances')} desired, {st.get('instances', 0)} present, "
        f"{st.get('readyInstances', 0)} ready" + (f" ({', '.join(instance_names)})" if instance_names else "")
    )
    for state, names in sorted((st.get("instancesStatus") or {}).items()):
        lines.append(f"  {state}: {', '.join(names)}")
    current, target = st.get("currentPrimary"), st.get("targetPrimary")
    primary_line = f"Primary: current {current or '?'}, target {target or '?'}"
    if current and target and current != target:
        primary_line += " (a switchover or failover is in progress)"
    lines.append(primary_line)
    lines.append(f"Image: {st.get('image') or sp.get('imageName') or '(operator default)'}")
    storage = sp.get("storage") or {}
    lines.append(
        f"Storage: {storage.get('size', '?')}"
        + (f" class {storage['storageClass']}" if storage.get("storageClass") else " (default storage class)")
    )
    if sp.get("walStorage"):
        lines.append(f"WAL storage: {sp['walStorage'].get('size', '?')}")
    params = ((sp.get("postgresql") or {}).get("parameters")) or {}
    if params:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
        lines.append(f"PostgreSQL parameters: {shown}")
    methods = configured_backup_methods(obj)
    lines.append(f"Backup methods configured: {', '.join(methods) if methods else 'none'}")
    lines.append(f"Last successful backup: {st.get('lastSuccessfulBackup') or 'none recorded'}")
    if st.get("lastFailedBackup"):
        lines.append(f"Last failed backup: {st['lastFailedBackup']}")
    if st.get("firstRecoverabilityPoint"):
        lines.append(f"First recoverability point: {st['firstRecoverabilityPoint']}")
    conditions = [c for c in st.get("conditions") or [] if isinstance(c, dict)]
    archiving = next((c for c in conditions if c.get("type") == "ContinuousArchiving"), None)
    if archiving:
        lines.append(
            f"Continuous archiving: {'working' if archiving.get('status') == 'True' else 'FAILING'}"
            f" ({archiving.get('reason', '')}: {archiving.get('message', '')})"
        )
    else:
        lines.append("Continuous archiving: not reported")
    expirations = (st.get("certificates") or {}).get("expirations") or {}
    if expirations:
        soonest = sorted(expirations.items(), key=lambda kv: kv[1])
        lines.append("Certificates expire: " + ", ".join(f"{k} {v}" for k, v in soonest))
    if conditions:
        lines.append("Conditions:")
        for c in conditions:
            lines.append(f"  {c.get('type')}={c.get('status')} {c.get('reason', '')}: {c.get('message', '')}".rstrip())
    data = {
        **cluster_row(obj),
        "phaseReason": reason,
        "currentPrimary": current,
        "targetPrimary": target,
        "instanceNames": instance_names,
        "image": st.get("image") or sp.get("imageName"),
        "storage": storage,
        "backupMethods": methods,
        "lastSuccessfulBackup": st.get("lastSuccessfulBackup"),
        "conditions": conditions,
        "certificateExpirations": expirations,
        "hibernated": annotations.get(HIBERNATION_ANNOTATION) == "on",
    }
    return "\n".join(lines), data


def as_json(obj: dict[str, Any]) -> str:
    return json.dumps(strip_noise(obj), indent=2, sort_keys=False, default=str)


def with_sandbox_note(deps: Deps, text: str) -> str:
    """`text` with the sandbox note as its first line when the server runs against the sandbox."""
    return f"{deps.sandbox_note}.\n{text}" if deps.sandbox_note else text


async def get_cluster(deps: Deps, namespace: str, name: str) -> dict[str, Any]:
    return await deps.kube.get(CLUSTERS, namespace, name)


def _dry(dry_run: bool) -> str:
    return "Dry run (dryRun=All): nothing was written. " if dry_run else ""


def register(r: Registry) -> None:
    deps = r.deps
    kube = deps.kube
    config = deps.config

    @r.tool(title="List clusters", write=False)
    async def list_clusters(
        namespace: Namespace = None, label_selector: LabelSelector = None, all_namespaces: AllNamespaces = False
    ) -> ToolOutput:
        """List CloudNativePG clusters with phase, ready instances, current primary and age."""
        rows: list[dict[str, Any]] = []
        for scope in deps.scopes(namespace, all_namespaces):
            rows.extend(cluster_row(c) for c in await kube.list(CLUSTERS, scope, label_selector=label_selector))
        data: dict[str, Any] = {"clusters": rows}
        if deps.sandbox_note:
            data["sandbox"] = deps.sandbox_note
        if not rows:
            where = "any allowed namespace" if all_namespaces else f"namespace '{deps.namespace(namespace)}'"
            return ToolOutput(with_sandbox_note(deps, f"No clusters in {where}."), data)
        text = table(
            ["NAMESPACE", "NAME", "PHASE", "READY", "PRIMARY", "AGE"],
            [[c["namespace"], c["name"], c["phase"], f"{c['readyInstances']}/{c['instances']}", c["primary"], c["age"]]
             for c in rows],
        )
        return ToolOutput(with_sandbox_note(deps, text), data)

    @r.tool(title="Get cluster status", write=False)
    async def get_cluster_status(name: ClusterName, namespace: Namespace = None) -> ToolOutput:
        """Status of one cluster: phase and reason, instances, current/target primary, conditions, storage, image,
        backups, continuous archiving and certificate expiry."""
        ns = deps.namespace(namespace)
        text, data = describe_cluster(await get_cluster(deps, ns, name))
        if deps.sandbox_note:
            data["sandbox"] = deps.sandbox_note
        return ToolOutput(with_sandbox_note(deps, text), data)

    @r.tool(title="Create cluster", write=True, destructive=False, idempotent=False)
    async def create_cluster(
        name: Annotated[str, Field(description="Name of the new cluster (DNS label, at most 50 characters).")],
        namespace: Namespace = None,
        instances: Annotated[int, Field(description="Number of PostgreSQL instances (1 primary + replicas).",
                                        ge=1, le=20)] = 3,
        storage_size: Annotated[str, Field(description="Data volume size per instance, e.g. '10Gi'.")] = "1Gi",
        storage_class: Annotated[str | None, Field(description="StorageClass; omit for the default class.")] = None,
        image: Annotated[str | None, Field(description="Full operand image; excludes postgres_major.")] = None,
        postgres_major: Annotated[int | None, Field(description="PostgreSQL major version (uses the community "
                                                    "image for it); excludes image.", ge=13, le=19)] = None,
        cpu: Annotated[str | None, Field(description="CPU request and limit per instance, e.g. '500m' or '2'.")] = None,
        memory: Annotated[str | None, Field(description="Memory request and limit per instance, e.g. '1Gi'.")] = None,
        database: Annotated[str | None, Field(description="Application database created at bootstrap "
                                              "(initdb); default 'app'.")] = None,
        owner: Annotated[str | None, Field(description="Owner role of the application database; default: the "
                                           "database name.")] = None,
        parameters: Annotated[dict[str, str] | None, Field(description="PostgreSQL parameters, e.g. "
                                                           "{'max_connections': '200'}.")] = None,
        dry_run: DryRun = False,
    ) -> ToolOutput:
        """Create a CloudNativePG cluster. Use dry_run=true first: the API validates it and returns the object it
        would store, writing nothing."""
        ns = deps.namespace(namespace)
        require_dns_label("cluster name", name)
        if len(name) > 50:
            raise InputError(f"Invalid cluster name {name!r}: at most 50 characters (instance names add suffixes).")
        if image and postgres_major is not None:
            raise InputError("Give either image or postgres_major, not both.")
        if parse_quantity(storage_size) <= 0:
            raise InputError(f"storage_size must be positive, got {storage_size!r}.")
        body_spec: dict[str, Any] = {
            "instances": instances,
            "imageName": image or config.image_for(postgres_major),
            "storage": {"size": storage_size},
        }
        if storage_class:
            body_spec["storage"]["storageClass"] = storage_class
        if cpu or memory:
            resources: dict[str, dict[str, str]] = {"requests": {}, "limits": {}}
            for key, value in (("cpu", cpu), ("memory", memory)):
                if value:
                    if parse_quantity(value) <= 0:
                        raise InputError(f"{key} must be positive, got {value!r}.")
                    resources["requests"][key] = value
                    resources["limits"][key] = value
            body_spec["resources"] = resources
        if database or owner:
            db = require_pg_identifier("database", database or "app")
            body_spec["bootstrap"] = {"initdb": {"database": db, "owner": require_pg_identifier("owner", owner or db)}}
        if parameters:
            bad = sorted(set(parameters) & OPERATOR_MANAGED_PARAMETERS)
            if bad:
                raise InputError(f"Refused: parameters managed by the operator cannot be set: {', '.join(bad)}.")
            body_spec["postgresql"] = {"parameters": {k: str(v) for k, v in parameters.items()}}
        body = {"apiVersion": CLUSTERS.api_version, "kind": "Cluster",
                "metadata": {"name": name, "namespace": ns}, "spec": body_spec}
        created = await kube.create(CLUSTERS, ns, body, dry_run=dry_run)
        if dry_run:
            text = (f"{_dry(True)}The API accepted Cluster {ns}/{name}. Object it would store:\n{as_json(created)}")
        else:
            text = (f"Created Cluster {ns}/{name}: {instances} instance(s), {storage_size} storage, image "
                    f"{body_spec['imageName']}. The operator now bootstraps it; follow with get_cluster_status.")
        return ToolOutput(text, {"dryRun": dry_run, "object": strip_noise(created)})

    @r.tool(title="Scale cluster", write=True, destructive=False, idempotent=True)
    async def scale_cluster(
        name: ClusterName,
        instances: Annotated[int, Field(description="New total number of instances (>= 1).", ge=1, le=20)],
        namespace: Namespace = None,
        dry_run: DryRun = False,
    ) -> ToolOutput:
        """Change the number of instances of a cluster (merge patch of spec.instances)."""
        ns = deps.namespace(namespace)
        cluster = await get_cluster(deps, ns, name)
        current = spec(cluster).get("instances")
        if current == instances:
            return ToolOutput(f"Cluster {ns}/{name} already has {instances} instance(s); nothing to change.",
                              {"changed": False, "instances": instances})
        await kube.patch(CLUSTERS, ns, name, {"spec": {"instances": instances}}, dry_run=dry_run)
        note = " Warning: with 1 instance there is no replica and no high availability." if instances == 1 else ""
        return ToolOutput(f"{_dry(dry_run)}Cluster {ns}/{name}: instances {current} -> {instances}.{note}",
                          {"changed": not dry_run, "from": current, "to": instances, "dryRun": dry_run})

    @r.tool(title="Resize cluster storage", write=True, destructive=False, idempotent=True)
    async def resize_cluster_storage(
        name: ClusterName,
        size: Annotated[str, Field(description="New volume size, e.g. '20Gi'. Must be larger than the current one.")],
        namespace: Namespace = None,
        volume: Annotated[Literal["data", "wal"], Field(description="Which volume: 'data' (spec.storage) or 'wal' "
                                                        "(spec.walStorage).")] = "data",
        dry_run: DryRun = False,
    ) -> ToolOutput:
        """Grow the data (or WAL) volumes of a cluster. Shrinking is refused: PVCs cannot shrink."""
        ns = deps.namespace(namespace)
        new = parse_quantity(size)
        cluster = await get_cluster(deps, ns, name)
        key = "storage" if volume == "data" else "walStorage"
        section = spec(cluster).get(key)
        if not section:
            raise InputError(f"Cluster {ns}/{name} has no spec.{key}; there is no {volume} volume to resize.")
        current_text = str(section.get("size") or "")
        if not current_text:
            raise InputError(f"Cluster {ns}/{name} spec.{key}.size is not set (PVC template in use); resize refused.")
        current = parse_quantity(current_text)
        if new < current:
            raise InputError(
                f"Refused: {size} is smaller than the current {volume} size {current_text}. Kubernetes volumes can "
                "only grow; nothing was changed."
            )
        if new == current:
            return ToolOutput(f"Cluster {ns}/{name} {volume} size is already {current_text}; nothing to change.",
                              {"changed": False})
        await kube.patch(CLUSTERS, ns, name, {"spec": {key: {"size": size}}}, dry_run=dry_run)
        return ToolOutput(
            f"{_dry(dry_run)}Cluster {ns}/{name} {volume} volume: {current_text} -> {size}. The operator expands the "
            "PVCs; the storage class must allow volume expansion.",
            {"changed": not dry_run, "from": current_text, "to": size, "dryRun": dry_run},
        )

    @r.tool(title="Update PostgreSQL parameters", write=True, destructive=False, idempotent=True)
    async def update_cluster_parameters(
        name: ClusterName,
        parameters: Annotated[dict[str, str] | None, Field(description="Parameters to set, e.g. "
                                                           "{'work_mem': '16MB'}.")] = None,
        remove: Annotated[list[str] | None, Field(description="Parameters to remove (back to defaults).")] = None,
        namespace: Namespace = None,
        dry_run: DryRun = False,
    ) -> ToolOutput:
        """Set or remove PostgreSQL parameters (spec.postgresql.parameters). The operator reloads, or restarts the
        instances when a parameter needs it."""
        ns = deps.namespace(namespace)
        parameters = parameters or {}
        remove = remove or []
        if not parameters and not remove:
            raise InputError("Nothing to do: give parameters to set and/or names to remove.")
        bad = sorted((set(parameters) | set(remove)) & OPERATOR_MANAGED_PARAMETERS)
        if bad:
            raise InputError(f"Refused: parameters managed by the operator cannot be changed: {', '.join(bad)}.")
        both = sorted(set(parameters) & set(remove))
        if both:
            raise InputError(f"A parameter cannot be both set and removed: {', '.join(both)}.")
        cluster = await get_cluster(deps, ns, name)
        existing = ((spec(cluster).get("postgresql") or {}).get("parameters")) or {}
        patch: dict[str, Any] = {k: str(v) for k, v in parameters.items()}
        patch.update({k: None for k in remove})
        await kube.patch(CLUSTERS, ns, name, {"spec": {"postgresql": {"parameters": patch}}}, dry_run=dry_run)
        changes = [f"{k}: {existing.get(k, '(default)')} -> {v}" for k, v in parameters.items()]
        changes += [f"{k}: {existing.get(k, '(default)')} -> (removed)" for k in remove]
        return ToolOutput(f"{_dry(dry_run)}Cluster {ns}/{name} parameters:\n" + "\n".join(f"  {c}" for c in changes),
                          {"changes": changes, "dryRun": dry_run})

    @r.tool(title="Switchover primary", write=True, destructive=True, idempotent=True)
    async def switchover_cluster(
        name: ClusterName,
        target_instance: Annotated[str, Field(description="Instance (pod) to promote, e.g. 'pg-main-2'.")],
        namespace: Namespace = None,
    ) -> ToolOutput:
        """Promote a replica to primary (planned switchover), as `kubectl cnpg promote` does: sets
        status.targetPrimary through the status subresource. Connections to the old primary are dropped."""
        ns = deps.namespace(namespace)
        cluster = await get_cluster(deps, ns, name)
        st = status(cluster)
        if st.get("targetPrimary") == target_instance:
            return ToolOutput(f"{target_instance} is already the (target) primary of {ns}/{name}; nothing to do.",
                              {"changed": False})
        if st.get("currentPrimary") and st.get("targetPrimary") and st["currentPrimary"] != st["targetPrimary"]:
            raise InputError(
                f"Refused: cluster {ns}/{name} is already changing primary ({st['currentPrimary']} -> "
                f"{st['targetPrimary']}); wait for it to finish."
            )
        fenced = (meta(cluster).get("annotations") or {}).get(FENCED_ANNOTATION) or "[]"
        try:
            fenced_list = json.loads(fenced)
        except ValueError:
            fenced_list = []
        if target_instance in fenced_list or "*" in fenced_list:
            raise InputError(f"Refused: {target_instance} is fenced and cannot be promoted.")
        pod = await instance_pod(kube, ns, name, target_instance)
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in status(pod).get("conditions") or [])
        if not ready:
            raise InputError(f"Refused: instance {target_instance} is not ready; promoting it could cause downtime.")
        timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        conditions = [c for c in st.get("conditions") or [] if isinstance(c, dict) and c.get("type") != "Ready"]
        conditions.append({"type": "Ready", "status": "False", "reason": "ClusterIsNotReady",
                           "message": "Cluster Is Not Ready", "lastTransitionTime": now_rfc3339()})
        body = {
            # The resourceVersion makes this an optimistic-lock update: a concurrent change gives 409, not a race.
            "metadata": {"resourceVersion": meta(cluster).get("resourceVersion")},
            "status": {
                "targetPrimary": target_instance,
                "targetPrimaryTimestamp": timestamp,
                "phase": PHASE_SWITCHOVER,
                "phaseReason": f"Switching over to {target_instance}",
                "conditions": conditions,
            },
        }
        await kube.patch(CLUSTERS, ns, name, body, subresource="status")
        return ToolOutput(
            f"Switchover requested: {st.get('currentPrimary') or '?'} -> {target_instance} in cluster {ns}/{name}. "
            "The operator demotes the old primary and promotes the target; follow with get_cluster_status.",
            {"changed": True, "from": st.get("currentPrimary"), "to": target_instance},
        )

    @r.tool(title="Rolling restart", write=True, destructive=True, idempotent=False)
    async def restart_cluster(name: ClusterName, namespace: Namespace = None) -> ToolOutput:
        """Rolling restart of every instance (replicas first, then a switchover or restart of the primary), via the
        kubectl.kubernetes.io/restartedAt annotation as `kubectl cnpg restart` does."""
        ns = deps.namespace(namespace)
        cluster = await get_cluster(deps, ns, name)
        if (meta(cluster).get("annotations") or {}).get(HIBERNATION_ANNOTATION) == "on":
            raise InputError(f"Refused: cluster {ns}/{name} is hibernated; wake it first.")
        when = now_rfc3339()
        await kube.patch(CLUSTERS, ns, name, {"metadata": {"annotations": {RESTART_ANNOTATION: when}}})
        return ToolOutput(f"Rolling restart of cluster {ns}/{name} requested at {when}.", {"restartedAt": when})

    async def set_hibernation(name: str, namespace: str | None, value: str) -> ToolOutput:
        ns = deps.namespace(namespace)
        cluster = await get_cluster(deps, ns, name)
        current = (meta(cluster).get("annotations") or {}).get(HIBERNATION_ANNOTATION, "off")
        if current == value:
            state = "hibernated" if value == "on" else "awake"
            return ToolOutput(f"Cluster {ns}/{name} is already {state}; nothing to change.", {"changed": False})
        await kube.patch(CLUSTERS, ns, name, {"metadata": {"annotations": {HIBERNATION_ANNOTATION: value}}})
        if value == "on":
            text = (f"Hibernation requested for cluster {ns}/{name}: the operator shuts PostgreSQL down and removes "
                    "the pods; the data volumes are kept. Use wake_cluster to resume.")
        else:
            text = f"Wake-up requested for cluster {ns}/{name}: the operator recreates the pods on the kept volumes."
        return ToolOutput(text, {"changed": True, "hibernation": value})

    @r.tool(title="Hibernate cluster", write=True, destructive=True, idempotent=True)
    async def hibernate_cluster(name: ClusterName, namespace: Namespace = None) -> ToolOutput:
        """Hibernate a cluster (annotation cnpg.io/hibernation=on): PostgreSQL stops, pods go away, volumes stay."""
        return await set_hibernation(name, namespace, "on")

    @r.tool(title="Wake cluster", write=True, destructive=False, idempotent=True)
    async def wake_cluster(name: ClusterName, namespace: Namespace = None) -> ToolOutput:
        """Wake a hibernated cluster (annotation cnpg.io/hibernation=off)."""
        return await set_hibernation(name, namespace, "off")

    @r.tool(title="Delete cluster", write=True, destructive=True, idempotent=False)
    async def delete_cluster(
        name: ClusterName, confirm: Confirm, namespace: Namespace = None, dry_run: DryRun = False
    ) -> ToolOutput:
        """Delete one cluster, its pods and its volumes (data is lost; object-store backups remain). Requires
        confirm equal to the cluster name. dry_run=true checks it without deleting."""
        ns = deps.namespace(namespace)
        require_confirm("cluster", name, confirm)
        cluster = await get_cluster(deps, ns, name)
        uid = meta(cluster).get("uid")
        await kube.delete(CLUSTERS, ns, name, uid=uid, dry_run=dry_run)
        if dry_run:
            return ToolOutput(f"{_dry(True)}Deleting Cluster {ns}/{name} would be accepted; it would remove its pods "
                              "and PVCs (all data on them).", {"deleted": False, "dryRun": True})
        pending = await kube.pending_deletion(CLUSTERS, ns, name, uid)
        return ToolOutput(f"Deleted Cluster {ns}/{name} (uid {uid}). The operator's owned pods, PVCs and services "
                          "are garbage-collected; backups in object storage are not touched."
                          + (f" {pending}" if pending else ""),
                          {"deleted": True, "uid": uid, "pending": bool(pending)})
