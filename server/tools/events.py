"""Event tools: recent Kubernetes events of a cluster and its instances, warnings first."""

import re
from typing import Annotated, Any

from pydantic import Field

from server.kube import EVENTS
from server.registry import Registry
from server.tools.common import ClusterName, Namespace, ToolOutput, age, require_dns_label, table


def _when(event: dict[str, Any]) -> str:
    return str(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp")
               or (event.get("metadata") or {}).get("creationTimestamp") or "")


def register(r: Registry) -> None:
    deps = r.deps
    kube = deps.kube

    @r.tool(title="Cluster events", write=False)
    async def get_cluster_events(
        cluster: ClusterName,
        namespace: Namespace = None,
        limit: Annotated[int, Field(description="Maximum number of events.", ge=1, le=500)] = 50,
    ) -> ToolOutput:
        """Recent events of a cluster and its instances, PVCs and jobs: warnings first, then newest first."""
        ns = deps.namespace(namespace)
        require_dns_label("cluster name", cluster)
        # Instance pods and PVCs are <cluster>-<n>[-suffix]; jobs are <cluster>-<n>-<purpose>.
        pattern = re.compile(rf"^{re.escape(cluster)}(-\d+(-.*)?)?$")
        events = [e for e in await kube.list(EVENTS, ns)
                  if pattern.match(str((e.get("involvedObject") or {}).get("name") or ""))]
        events.sort(key=_when, reverse=True)
        events.sort(key=lambda e: e.get("type") != "Warning")  # stable: warnings first, each group newest first
        total = len(events)
        events = events[:limit]
        if not events:
            return ToolOutput(f"No events for cluster {ns}/{cluster} (events expire after about an hour).",
                              {"events": []})
        rows: list[dict[str, Any]] = [{
            "type": e.get("type") or "Normal", "reason": e.get("reason") or "",
            "object": f"{(e.get('involvedObject') or {}).get('kind')}/{(e.get('involvedObject') or {}).get('name')}",
            "message": (e.get("message") or "").strip(), "count": e.get("count") or 1, "age": age(_when(e) or None),
        } for e in events]
        text = table(["TYPE", "REASON", "OBJECT", "COUNT", "AGE", "MESSAGE"],
                     [[x["type"], x["reason"], x["object"], str(x["count"]), x["age"], x["message"][:200]]
                      for x in rows])
        if total > limit:
            text += f"\n({total - limit} older events not shown; raise limit to see them)"
        return ToolOutput(text, {"events": rows, "total": total})
