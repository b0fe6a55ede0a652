"""Pooler tools: PgBouncer poolers in front of a cluster."""

from typing import Annotated, Any, Literal

from pydantic import Field

from server.kube import CLUSTERS, POOLERS, KubeError
from server.registry import Registry
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
    spec,
    status,
    strip_noise,
    table,
)


def register(r: Registry) -> None:
    deps = r.deps
    kube = deps.kube

    @r.tool(title="List poolers", write=False)
    async def list_poolers(
        namespace: Namespace = None,
        cluster: Annotated[str | None, Field(description="Only poolers of this cluster.")] = None,
        all_namespaces: AllNamespaces = False,
    ) -> ToolOutput:
        """List PgBouncer Pooler objects with cluster, type (rw/ro), pool mode and instances."""
        rows: list[dict[str, Any]] = []
        for scope in deps.scopes(namespace, all_namespaces):
            for p in await kube.list(POOLERS, scope):
                if cluster is not None and cluster_of(p) != cluster:
                    continue
                rows.append({
                    "namespace": meta(p).get("namespace"), "name": meta(p).get("name"),
                    "cluster": cluster_of(p), "type": spec(p).get("type") or "rw",
                    "poolMode": (spec(p).get("pgbouncer") or {}).get("poolMode") or "session",
                    "instances": spec(p).get("instances", 1), "ready": status(p).get("instances", 0),
                    "age": age(meta(p).get("creationTimestamp")),
                })
        if not rows:
            return ToolOutput("No poolers found.", {"poolers": []})
        text = table(["NAMESPACE", "NAME", "CLUSTER", "TYPE", "POOL MODE", "INSTANCES", "AGE"],
                     [[x["namespace"], x["name"], x["cluster"], x["type"], x["poolMode"],
                       f"{x['ready']}/{x['instances']}", x["age"]] for x in rows])
        return ToolOutput(text, {"poolers": rows})

    @r.tool(title="Create pooler", write=True, destructive=False, idempotent=False)
    async def create_pooler(
        name: Annotated[str, Field(description="Pooler name (DNS label); must differ from every cluster name.")],
        cluster: ClusterName,
        namespace: Namespace = None,
        type: Annotated[Literal["rw", "ro"], Field(description="'rw' routes to the primary, 'ro' to replicas.")] = "rw",
        instances: Annotated[int, Field(description="Number of PgBouncer pods.", ge=1, le=20)] = 1,
        pool_mode: Annotated[Literal["session", "transaction"], Field(description="PgBouncer pool mode.")] = "session",
        parameters: Annotated[dict[str, str] | None, Field(description="PgBouncer parameters, e.g. "
                                                           "{'max_client_conn': '1000'}.")] = None,
        dry_run: DryRun = False,
    ) -> ToolOutput:
        """Create a PgBouncer Pooler for a cluster."""
        ns = deps.namespace(namespace)
        require_dns_label("pooler name", name)
        require_dns_label("cluster name", cluster)
        await kube.get(CLUSTERS, ns, cluster)
        try:
            await kube.get(CLUSTERS, ns, name)
        except KubeError as exc:
            if exc.status != 404:
                raise
        else:
            raise InputError(f"Refused: a pooler cannot be named like a cluster ({name} is a cluster in {ns}); "
                             "their services would collide.")
        pgbouncer: dict[str, Any] = {"poolMode": pool_mode}
        if parameters:
            pgbouncer["parameters"] = {k: str(v) for k, v in parameters.items()}
        body = {"apiVersion": POOLERS.api_version, "kind": "Pooler", "metadata": {"name": name, "namespace": ns},
                "spec": {"cluster": {"name": cluster}, "type": type, "instances": instances, "pgbouncer": pgbouncer}}
        created = await kube.create(POOLERS, ns, body, dry_run=dry_run)
        prefix = "Dry run (dryRun=All): nothing was written. Would create" if dry_run else "Created"
        return ToolOutput(f"{prefix} Pooler {ns}/{name} ({type}, {pool_mode} mode, {instances} instance(s)) for "
                          f"cluster {cluster}. Applications connect to the service named {name}.",
                          {"dryRun": dry_run, "object": strip_noise(created)})

    @r.tool(title="Delete pooler", write=True, destructive=True, idempotent=False)
    async def delete_pooler(
        name: ObjectName, confirm: Confirm, namespace: Namespace = None, dry_run: DryRun = False
    ) -> ToolOutput:
        """Delete one Pooler (requires confirm equal to its name); clients using its service lose connectivity."""
        ns = deps.namespace(namespace)
        require_confirm("pooler", name, confirm)
        obj = await kube.get(POOLERS, ns, name)
        await kube.delete(POOLERS, ns, name, uid=meta(obj).get("uid"), dry_run=dry_run)
        prefix = "Dry run (dryRun=All): nothing was written. Would delete" if dry_run else "Deleted"
        pending = None if dry_run else await kube.pending_deletion(POOLERS, ns, name, meta(obj).get("uid"))
        return ToolOutput(f"{prefix} Pooler {ns}/{name}." + (f" {pending}" if pending else ""),
                          {"deleted": not dry_run, "dryRun": dry_run, "pending": bool(pending)})
