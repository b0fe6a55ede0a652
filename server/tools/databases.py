"""Database tools: the Database custom resource (a PostgreSQL database managed declaratively)."""

from typing import Annotated, Any, Literal

from pydantic import Field

from server.kube import CLUSTERS, DATABASES
from server.registry import Registry
from server.tools.common import (
    AllNamespaces,
    ClusterName,
    Confirm,
    DryRun,
    Namespace,
    ObjectName,
    ToolOutput,
    cluster_of,
    meta,
    require_confirm,
    require_dns_label,
    require_object_name,
    require_pg_identifier,
    spec,
    status,
    strip_noise,
    table,
)

RECLAIM_EXPLANATION = {
    "retain": "databaseReclaimPolicy is 'retain': the PostgreSQL database {db} and all its data STAY in cluster "
              "{cluster}; only the Kubernetes Database object is removed (the database becomes unmanaged).",
    "delete": "databaseReclaimPolicy is 'delete': the operator DROPS the PostgreSQL database {db} in cluster "
              "{cluster}; its data is gone.",
}


def register(r: Registry) -> None:
    deps = r.deps
    kube = deps.kube

    @r.tool(title="List databases", write=False)
    async def list_databases(
        namespace: Namespace = None,
        cluster: Annotated[str | None, Field(description="Only databases of this cluster.")] = None,
        all_namespaces: AllNamespaces = False,
    ) -> ToolOutput:
        """List Database objects with cluster, PostgreSQL name, owner, reclaim policy and applied state."""
        rows: list[dict[str, Any]] = []
        for scope in deps.scopes(namespace, all_namespaces):
            for d in await kube.list(DATABASES, scope):
                sp = spec(d)
                if cluster is not None and cluster_of(d) != cluster:
                    continue
                rows.append({
                    "namespace": meta(d).get("namespace"), "name": meta(d).get("name"),
                    "cluster": cluster_of(d), "database": sp.get("name"),
                    "owner": sp.get("owner"), "ensure": sp.get("ensure") or "present",
                    "reclaimPolicy": sp.get("databaseReclaimPolicy") or "retain",
                    "applied": status(d).get("applied"), "message": status(d).get("message") or "",
                })
        if not rows:
            return ToolOutput("No Database objects found.", {"databases": []})
        text = table(["NAMESPACE", "NAME", "CLUSTER", "DATABASE", "OWNER", "RECLAIM", "APPLIED", "MESSAGE"],
                     [[x["namespace"], x["name"], x["cluster"], x["database"], x["owner"], x["reclaimPolicy"],
                       str(x["applied"]), x["message"][:60]] for x in rows])
        return ToolOutput(text, {"databases": rows})

    @r.tool(title="Create database", write=True, destructive=False, idempotent=False)
    async def create_database(
        name: Annotated[str, Field(description="Name of the Database object (DNS name).")],
        cluster: ClusterName,
        owner: Annotated[str, Field(description="Owner role of the database (must exist in PostgreSQL).")],
        database: Annotated[str | None, Field(description="PostgreSQL database name; default: the object name "
                                              "with '-' replaced by '_'.")] = None,
        namespace: Namespace = None,
        encoding: Annotated[str | None, Field(description="Character set, e.g. 'UTF8'.")] = None,
        locale: Annotated[str | None, Field(description="Locale, e.g. 'en_US.UTF-8'.")] = None,
        extensions: Annotated[list[str] | None, Field(description="Extensions to install, e.g. ['pg_trgm'].")] = None,
        reclaim_policy: Annotated[Literal["retain", "delete"], Field(
            description="What deleting the object does later: 'retain' keeps the PostgreSQL database, 'delete' "
            "drops it.")] = "retain",
        dry_run: DryRun = False,
    ) -> ToolOutput:
        """Create a Database object: the operator creates the PostgreSQL database in the cluster."""
        ns = deps.namespace(namespace)
        require_object_name("database object name", name)
        require_dns_label("cluster name", cluster)
        db = require_pg_identifier("database", database or name.replace("-", "_").replace(".", "_"))
        require_pg_identifier("owner", owner)
        await kube.get(CLUSTERS, ns, cluster)
        body_spec: dict[str, Any] = {"cluster": {"name": cluster}, "name": db, "owner": owner,
                                     "databaseReclaimPolicy": reclaim_policy}
        if encoding:
            body_spec["encoding"] = encoding
        if locale:
            body_spec["locale"] = locale
        if extensions:
            body_spec["extensions"] = [{"name": require_pg_identifier("extension", e), "ensure": "present"}
                                       for e in extensions]
        body = {"apiVersion": DATABASES.api_version, "kind": "Database", "metadata": {"name": name, "namespace": ns},
                "spec": body_spec}
        created = await kube.create(DATABASES, ns, body, dry_run=dry_run)
        prefix = "Dry run (dryRun=All): nothing was written. Would create" if dry_run else "Created"
        return ToolOutput(f"{prefix} Database {ns}/{name}: PostgreSQL database {db} owned by {owner} in cluster "
                          f"{cluster} (reclaim policy {reclaim_policy}).",
                          {"dryRun": dry_run, "object": strip_noise(created)})

    @r.tool(title="Delete database", write=True, destructive=True, idempotent=False)
    async def delete_database(
        name: ObjectName, confirm: Confirm, namespace: Namespace = None, dry_run: DryRun = False
    ) -> ToolOutput:
        """Delete one Database object (requires confirm equal to its name), honouring its databaseReclaimPolicy:
        'retain' keeps the PostgreSQL database, 'delete' drops it. The result says which."""
        ns = deps.namespace(namespace)
        require_confirm("database", name, confirm)
        obj = await kube.get(DATABASES, ns, name)
        sp = spec(obj)
        policy = sp.get("databaseReclaimPolicy") or "retain"
        explanation = RECLAIM_EXPLANATION.get(policy, RECLAIM_EXPLANATION["retain"]).format(
            db=sp.get("name"), cluster=cluster_of(obj))
        await kube.delete(DATABASES, ns, name, uid=meta(obj).get("uid"), dry_run=dry_run)
        prefix = "Dry run (dryRun=All): nothing was written. Would delete" if dry_run else "Deleted"
        pending = None if dry_run else await kube.pending_deletion(DATABASES, ns, name, meta(obj).get("uid"))
        return ToolOutput(f"{prefix} Database object {ns}/{name}. {explanation}" + (f" {pending}" if pending else ""),
                          {"deleted": not dry_run, "dryRun": dry_run, "reclaimPolicy": policy,
                           "pending": bool(pending)})
