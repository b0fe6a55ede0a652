"""The declared RBAC table: every (API group, resource, verb) the tools use, and the manifest generated from it.

`python -m server.permissions` prints k8s/rbac.yaml; a test checks the file matches and that every API call the
tools make during the test run is covered by this table.
"""

from dataclasses import dataclass

import yaml

CNPG = "postgresql.cnpg.io"
CORE = ""

SERVICE_ACCOUNT = "cnpg-mcp-server"
SERVER_NAMESPACE = "cnpg-mcp"
ROLE_NAME = "cnpg-mcp-server"
READONLY_ROLE_NAME = "cnpg-mcp-server-readonly"
READ_VERBS = frozenset({"get", "list"})


@dataclass(frozen=True)
class Permission:
    group: str
    resource: str
    verb: str
    why: str


PERMISSIONS: tuple[Permission, ...] = (
    Permission(CNPG, "clusters", "get", "get_cluster_status, and every cluster tool checks the cluster first"),
    Permission(CNPG, "clusters", "list", "list_clusters"),
    Permission(CNPG, "clusters", "create", "create_cluster"),
    Permission(CNPG, "clusters", "patch", "scale, resize storage, parameters, restart, hibernate, wake"),
    Permission(CNPG, "clusters", "delete", "delete_cluster"),
    Permission(CNPG, "clusters/status", "patch", "switchover_cluster (status.targetPrimary)"),
    Permission(CNPG, "backups", "get", "get_backup"),
    Permission(CNPG, "backups", "list", "list_backups"),
    Permission(CNPG, "backups", "create", "create_backup"),
    Permission(CNPG, "scheduledbackups", "get", "suspend/resume/delete scheduled backups"),
    Permission(CNPG, "scheduledbackups", "list", "list_scheduled_backups"),
    Permission(CNPG, "scheduledbackups", "create", "create_scheduled_backup"),
    Permission(CNPG, "scheduledbackups", "patch", "suspend_scheduled_backup, resume_scheduled_backup"),
    Permission(CNPG, "scheduledbackups", "delete", "delete_scheduled_backup"),
    Permission(CNPG, "poolers", "get", "delete_pooler checks the pooler first"),
    Permission(CNPG, "poolers", "list", "list_poolers"),
    Permission(CNPG, "poolers", "create", "create_pooler"),
    Permission(CNPG, "poolers", "delete", "delete_pooler"),
    Permission(CNPG, "databases", "get", "delete_database reads the reclaim policy"),
    Permission(CNPG, "databases", "list", "list_databases"),
    Permission(CNPG, "databases", "create", "create_database"),
    Permission(CNPG, "databases", "delete", "delete_database"),
    Permission(CNPG, "databaseroles", "get", "update_role, delete_role"),
    Permission(CNPG, "databaseroles", "list", "list_roles"),
    Permission(CNPG, "databaseroles", "create", "create_role"),
    Permission(CNPG, "databaseroles", "patch", "update_role, delete_role (reclaim policy)"),
    Permission(CNPG, "databaseroles", "delete", "delete_role"),
    Permission(CORE, "pods", "get", "switchover target and log checks"),
    Permission(CORE, "pods", "list", "list_instances"),
    Permission(CORE, "pods/log", "get", "get_instance_logs"),
    Permission(CORE, "secrets", "get", "role password Secrets: existence and ownership checks"),
    Permission(CORE, "secrets", "create", "create_role, update_role (password Secret)"),
    Permission(CORE, "secrets", "patch", "update_role (password rotation)"),
    Permission(CORE, "secrets", "delete", "delete_role (only the Secret the role owns)"),
    Permission(CORE, "events", "list", "get_cluster_events"),
)


def allowed(group: str, resource: str, verb: str) -> bool:
    return any(p.group == group and p.resource == resource and p.verb == verb for p in PERMISSIONS)


def _rules(read_only: bool) -> list[dict[str, object]]:
    grouped: dict[tuple[str, str], list[str]] = {}
    for p in PERMISSIONS:
        if read_only and p.verb not in READ_VERBS:
            continue
        verbs = grouped.setdefault((p.group, p.resource), [])
        if p.verb not in verbs:
            verbs.append(p.verb)
    return [{"apiGroups": [group], "resources": [resource], "verbs": verbs}
            for (group, resource), verbs in grouped.items()]


def rbac_documents(bind_namespaces: tuple[str, ...] = ("default",)) -> list[dict[str, object]]:
    """ServiceAccount, the full and read-only ClusterRoles, and one RoleBinding per namespace the server manages."""
    docs: list[dict[str, object]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": SERVICE_ACCOUNT, "namespace": SERVER_NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": ROLE_NAME}, "rules": _rules(read_only=False)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": READONLY_ROLE_NAME}, "rules": _rules(read_only=True)},
    ]
    for namespace in bind_namespaces:
        docs.append({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ROLE_NAME},
            "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": SERVER_NAMESPACE}],
        })
    return docs


HEADER = """\
# Generated by `python -m server.permissions` from server/permissions.py; do not edit by hand.
# The ClusterRoles only grant what the CNPG MCP server's tools use. Bind the full role (or the read-only one,
# for CNPG_READ_ONLY=true) with one RoleBinding per namespace in CNPG_NAMESPACES; for CNPG_NAMESPACES='*'
# use a ClusterRoleBinding instead.
"""


def render_rbac_yaml() -> str:
    return HEADER + "---\n" + "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in rbac_documents())


if __name__ == "__main__":
    print(render_rbac_yaml(), end="")
