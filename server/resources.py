"""MCP resources: each cluster's status, addressed by a URI template."""

from mcp.server.mcpserver.exceptions import ResourceError

from server.kube import KubeError
from server.registry import CnpgServer, Deps, bound
from server.tools.clusters import describe_cluster, get_cluster, with_sandbox_note
from server.tools.common import InputError

CLUSTER_STATUS_URI = "cnpg://clusters/{namespace}/{name}"


def register(server: CnpgServer, deps: Deps) -> None:
    @server.resource(
        CLUSTER_STATUS_URI,
        name="cluster-status",
        title="CloudNativePG cluster status",
        description="Status summary of one cluster: phase, instances, primary, backups, archiving, conditions.",
        mime_type="text/plain",
    )
    async def cluster_status(namespace: str, name: str) -> str:
        try:
            ns = deps.namespace(namespace)
            text, _ = describe_cluster(await get_cluster(deps, ns, name))
            text = with_sandbox_note(deps, text)
        except InputError as exc:
            raise ResourceError(str(exc)) from None
        except KubeError as exc:
            raise ResourceError(exc.describe()) from None
        return bound(text, deps.config.max_output_chars)
