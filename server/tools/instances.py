"""Instance tools: the PostgreSQL pods of a cluster, and their logs."""

from typing import Annotated, Any

from pydantic import Field

from server.kube import CLUSTERS, PODS, Kube, KubeError
from server.registry import Registry
from server.tools.common import (
    ClusterName,
    InputError,
    Namespace,
    ToolOutput,
    age,
    meta,
    require_dns_label,
    status,
    table,
)

# Pods labelled for a cluster that are not PostgreSQL instances (bootstrap jobs, poolers).
_NON_INSTANCE_LABELS = ("cnpg.io/jobRole", "cnpg.io/poolerName")
# The log endpoint may return a lot; this caps what is fetched before the tail is cut to the output bound.
_MAX_LOG_BYTES = 2_000_000


def instance_role(pod: dict[str, Any]) -> str:
    labels = meta(pod).get("labels") or {}
    return str(labels.get("cnpg.io/instanceRole") or labels.get("role") or "unknown")


def instance_row(pod: dict[str, Any]) -> dict[str, Any]:
    st = status(pod)
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])
    restarts = sum(int(c.get("restartCount") or 0) for c in st.get("containerStatuses") or [])
    return {
        "name": meta(pod).get("name"),
        "role": instance_role(pod),
        "ready": ready,
        "phase": st.get("phase") or "?",
        "node": (pod.get("spec") or {}).get("nodeName") or "",
        "restarts": restarts,
        "age": age(meta(pod).get("creationTimestamp")),
    }


async def instance_pod(kube: Kube, namespace: str, cluster: str, instance: str) -> dict[str, Any]:
    """The pod of one instance of `cluster`; a missing pod or one of another cluster is an input error."""
    try:
        pod = await kube.get(PODS, namespace, instance)
    except KubeError as exc:
        if exc.status == 404:
            raise InputError(f"Refused: instance {instance} does not exist in namespace {namespace}; "
                             "list_instances shows the instances.") from None
        raise
    if (meta(pod).get("labels") or {}).get("cnpg.io/cluster") != cluster:
        raise InputError(f"Refused: pod {instance} is not an instance of cluster {cluster}.")
    return pod


def register(r: Registry) -> None:
    deps = r.deps
    kube = deps.kube

    async def cluster_pods(ns: str, cluster: str) -> list[dict[str, Any]]:
        pods = await kube.list(PODS, ns, label_selector=f"cnpg.io/cluster={cluster}")
        return [p for p in pods if not any(k in (meta(p).get("labels") or {}) for k in _NON_INSTANCE_LABELS)]

    @r.tool(title="List instances", write=False)
    async def list_instances(cluster: ClusterName, namespace: Namespace = None) -> ToolOutput:
        """List the PostgreSQL instances (pods labelled cnpg.io/cluster=<cluster>) with role (primary/replica),
        readiness, node, restarts and age."""
        ns = deps.namespace(namespace)
        require_dns_label("cluster name", cluster)
        rows = sorted((instance_row(p) for p in await cluster_pods(ns, cluster)), key=lambda row: str(row["name"]))
        if not rows:
            # Distinguish "no such cluster" from "cluster without pods" (hibernated, still bootstrapping).
            await kube.get(CLUSTERS, ns, cluster)
            return ToolOutput(f"Cluster {ns}/{cluster} has no instance pods (hibernated or still starting?).",
                              {"instances": []})
        text = table(
            ["NAME", "ROLE", "READY", "PHASE", "NODE", "RESTARTS", "AGE"],
            [[str(x["name"]), x["role"], "yes" if x["ready"] else "NO", x["phase"], x["node"], str(x["restarts"]),
              x["age"]] for x in rows],
        )
        return ToolOutput(text, {"instances": rows})

    @r.tool(title="Instance logs", write=False)
    async def get_instance_logs(
        cluster: ClusterName,
        instance: Annotated[str, Field(description="Instance (pod) name, e.g. 'pg-main-1'.", min_length=1)],
        namespace: Namespace = None,
        tail_lines: Annotated[int, Field(description="Number of most recent lines.", ge=1, le=10000)] = 200,
        since_seconds: Annotated[int | None, Field(description="Only lines newer than this many seconds.",
                                                   ge=1)] = None,
        container: Annotated[str, Field(description="Container name.")] = "postgres",
        previous: Annotated[bool, Field(description="Logs of the previous (crashed) container.")] = False,
    ) -> ToolOutput:
        """Recent log lines of one instance of a cluster (bounded; the newest lines are kept)."""
        ns = deps.namespace(namespace)
        require_dns_label("instance name", instance)
        await instance_pod(kube, ns, cluster, instance)
        text = await kube.pod_log(ns, instance, container=container, tail_lines=tail_lines,
                                  since_seconds=since_seconds, limit_bytes=_MAX_LOG_BYTES, previous=previous)
        budget = deps.config.max_output_chars - 200
        header = f"Logs of {ns}/{instance} (container {container}, last {tail_lines} lines):\n"
        if len(text) > budget:
            header = (f"Logs of {ns}/{instance} (container {container}) [truncated: showing the last {budget} of "
                      f"{len(text)} characters]:\n")
            text = text[-budget:]
        return ToolOutput(header + (text if text else "(no log lines)"))
