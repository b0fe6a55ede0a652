"""Role tools: the DatabaseRole custom resource, with server-generated passwords kept in owned Secrets.

A password is generated here, written only to a `kubernetes.io/basic-auth` Secret that carries an ownerReference
to its DatabaseRole, and never appears in a tool result. Deleting a role removes exactly that role and the one
Secret it owns (ownership is verified by the owner's uid), nothing else.
"""

import base64
import secrets
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from server.kube import CLUSTERS, DATABASE_ROLES, SECRETS, KubeError
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

MANAGED_BY = "cnpg-mcp"
ROLE_LABEL = "cnpg-mcp.io/databaserole"
PASSWORD_BYTES = 24  # 32 URL-safe characters

OptBool = Annotated[bool | None, Field(description="Leave unset to keep the current value.")]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret_name_for(role_object: str) -> str:
    return f"{role_object}-password"


def owned_by(secret: dict[str, Any], role: dict[str, Any]) -> bool:
    """True only if the Secret names this very DatabaseRole (kind, name and uid) as its owner."""
    uid = meta(role).get("uid")
    if not uid:
        return False
    return any(
        ref.get("kind") == "DatabaseRole" and ref.get("name") == meta(role).get("name") and ref.get("uid") == uid
        for ref in meta(secret).get("ownerReferences") or []
    )


def _check_valid_until(value: str | None) -> None:
    if value is None:
        return
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"Invalid valid_until {value!r}: use RFC 3339, e.g. '2027-01-01T00:00:00Z'.") from None


def register(r: Registry) -> None:
    deps = r.deps
    kube = deps.kube

    def secret_body(ns: str, name: str, cluster: str, role_name: str, role: dict[str, Any] | None) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": secret_name_for(name),
            "namespace": ns,
            "labels": {"app.kubernetes.io/managed-by": MANAGED_BY, ROLE_LABEL: name, "cnpg.io/cluster": cluster,
                       # Makes the operator notice password changes in this Secret.
                       "cnpg.io/reload": "true"},
        }
        if role is not None and meta(role).get("uid"):
            metadata["ownerReferences"] = [{"apiVersion": DATABASE_ROLES.api_version, "kind": "DatabaseRole",
                                            "name": name, "uid": meta(role)["uid"]}]
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth", "metadata": metadata,
                "data": {"username": _b64(role_name), "password": _b64(password)}}

    async def secret_if_exists(ns: str, name: str) -> dict[str, Any] | None:
        try:
            return await kube.get(SECRETS, ns, name)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    @r.tool(title="List roles", write=False)
    async def list_roles(
        namespace: Namespace = None,
        cluster: Annotated[str | None, Field(description="Only roles of this cluster.")] = None,
        all_namespaces: AllNamespaces = False,
    ) -> ToolOutput:
        """List DatabaseRole objects: PostgreSQL role name, cluster, attributes, reclaim policy, applied state and
        the name (never the content) of the password Secret."""
        rows: list[dict[str, Any]] = []
        for scope in deps.scopes(namespace, all_namespaces):
            for role in await kube.list(DATABASE_ROLES, scope):
                sp = spec(role)
                if cluster is not None and cluster_of(role) != cluster:
                    continue
                attrs = [a for a in ("login", "superuser", "createdb", "createrole", "replication", "bypassrls")
                         if sp.get(a)]
                rows.append({
                    "namespace": meta(role).get("namespace"), "name": meta(role).get("name"),
                    "cluster": cluster_of(role), "role": sp.get("name"),
                    "attributes": attrs, "ensure": sp.get("ensure") or "present",
                    "reclaimPolicy": sp.get("databaseRoleReclaimPolicy") or "retain",
                    "passwordSecret": (sp.get("passwordSecret") or {}).get("name"),
                    "applied": status(role).get("applied"), "message": status(role).get("message") or "",
                })
        if not rows:
            return ToolOutput("No DatabaseRole objects found.", {"roles": []})
        text = table(["NAMESPACE", "NAME", "CLUSTER", "ROLE", "ATTRIBUTES", "ENSURE", "RECLAIM", "SECRET", "APPLIED"],
                     [[x["namespace"], x["name"], x["cluster"], x["role"], ",".join(x["attributes"]) or "-",
                       x["ensure"], x["reclaimPolicy"], x["passwordSecret"] or "-", str(x["applied"])] for x in rows])
        return ToolOutput(text, {"roles": rows})

    @r.tool(title="Create role", write=True, destructive=False, idempotent=False)
    async def create_role(
        name: Annotated[str, Field(description="Name of the DatabaseRole object (DNS name).")],
        cluster: ClusterName,
        role_name: Annotated[str | None, Field(description="PostgreSQL role name; default: the object name with "
                                               "'-' replaced by '_'.")] = None,
        namespace: Namespace = None,
        login: Annotated[bool, Field(description="Role may log in.")] = True,
        superuser: Annotated[bool, Field(description="Superuser (avoid unless required).")] = False,
        createdb: Annotated[bool, Field(description="May create databases.")] = False,
        createrole: Annotated[bool, Field(description="May create roles.")] = False,
        inherit: Annotated[bool, Field(description="Inherits privileges of roles it is a member of.")] = True,
        replication: Annotated[bool, Field(description="Replication role.")] = False,
        bypassrls: Annotated[bool, Field(description="Bypasses row-level security.")] = False,
        connection_limit: Annotated[int, Field(description="Max concurrent connections; -1 = no limit.",
                                               ge=-1)] = -1,
        in_roles: Annotated[list[str] | None, Field(description="Existing roles to grant membership of.")] = None,
        valid_until: Annotated[str | None, Field(description="Password expiry, RFC 3339.")] = None,
        comment: Annotated[str | None, Field(description="Description of the role.")] = None,
        generate_password: Annotated[bool, Field(description="Generate a password and store it in a Secret owned "
                                                 "by the role (never returned).")] = True,
        reclaim_policy: Annotated[Literal["retain", "delete"], Field(
            description="What deleting the object by other means does in PostgreSQL: 'retain' (the CloudNativePG "
            "default) keeps the role, 'delete' drops it. delete_role drops it either way unless told not to."
        )] = "retain",
        dry_run: DryRun = False,
    ) -> ToolOutput:
        """Create a DatabaseRole. With generate_password the server creates a random password in a
        kubernetes.io/basic-auth Secret '<name>-password' owned by the role; the password is never shown."""
        ns = deps.namespace(namespace)
        require_object_name("role object name", name)
        require_dns_label("cluster name", cluster)
        pg_role = require_pg_identifier("role_name", role_name or name.replace("-", "_").replace(".", "_"))
        for member in in_roles or []:
            require_pg_identifier("in_roles entry", member)
        _check_valid_until(valid_until)
        await kube.get(CLUSTERS, ns, cluster)
        secret_name = secret_name_for(name)
        if generate_password and await secret_if_exists(ns, secret_name) is not None:
            raise InputError(f"Refused: Secret {ns}/{secret_name} already exists; it will not be taken over. "
                             "Choose another role object name or remove that Secret.")
        body_spec: dict[str, Any] = {
            "cluster": {"name": cluster}, "name": pg_role, "ensure": "present", "login": login,
            "superuser": superuser, "createdb": createdb, "createrole": createrole, "inherit": inherit,
            "replication": replication, "bypassrls": bypassrls, "connectionLimit": connection_limit,
            "databaseRoleReclaimPolicy": reclaim_policy,
        }
        if in_roles:
            body_spec["inRoles"] = list(in_roles)
        if valid_until:
            body_spec["validUntil"] = valid_until
        if comment:
            body_spec["comment"] = comment
        if generate_password:
            body_spec["passwordSecret"] = {"name": secret_name}
        body = {"apiVersion": DATABASE_ROLES.api_version, "kind": "DatabaseRole",
                "metadata": {"name": name, "namespace": ns}, "spec": body_spec}
        role = await kube.create(DATABASE_ROLES, ns, body, dry_run=dry_run)
        secret_note = ""
        if generate_password:
            try:
                await kube.create(SECRETS, ns, secret_body(ns, name, cluster, pg_role, role), dry_run=dry_run)
            except KubeError as exc:
                if not dry_run:
                    # Do not leave a role pointing at a Secret that does not exist.
                    await kube.delete(DATABASE_ROLES, ns, name, uid=meta(role).get("uid"))
                raise InputError(f"Creating the password Secret failed, so the DatabaseRole was rolled back.\n"
                                 f"{exc.describe()}") from None
            secret_note = (f" Password generated and stored in Secret {ns}/{secret_name} (type "
                           "kubernetes.io/basic-auth, owned by the role); it is not shown here.")
        prefix = "Dry run (dryRun=All): nothing was written. Would create" if dry_run else "Created"
        return ToolOutput(f"{prefix} DatabaseRole {ns}/{name}: PostgreSQL role {pg_role} in cluster {cluster}."
                          f"{secret_note}",
                          {"dryRun": dry_run, "passwordSecret": secret_name if generate_password else None,
                           "object": strip_noise(role)})

    @r.tool(title="Update role", write=True, destructive=False, idempotent=False)
    async def update_role(
        name: ObjectName,
        namespace: Namespace = None,
        login: OptBool = None,
        superuser: OptBool = None,
        createdb: OptBool = None,
        createrole: OptBool = None,
        inherit: OptBool = None,
        replication: OptBool = None,
        bypassrls: OptBool = None,
        connection_limit: Annotated[int | None, Field(description="Max connections; -1 = no limit.", ge=-1)] = None,
        in_roles: Annotated[list[str] | None, Field(description="Replace the role memberships with this list.")] = None,
        valid_until: Annotated[str | None, Field(description="Password expiry, RFC 3339.")] = None,
        comment: Annotated[str | None, Field(description="Description of the role.")] = None,
        rotate_password: Annotated[bool, Field(description="Generate a new password in the role's own Secret "
                                               "(never shown).")] = False,
        dry_run: DryRun = False,
    ) -> ToolOutput:
        """Change attributes of a DatabaseRole and/or rotate its server-managed password."""
        ns = deps.namespace(namespace)
        _check_valid_until(valid_until)
        for member in in_roles or []:
            require_pg_identifier("in_roles entry", member)
        role = await kube.get(DATABASE_ROLES, ns, name)
        changes: dict[str, Any] = {}
        for key, value in (("login", login), ("superuser", superuser), ("createdb", createdb),
                           ("createrole", createrole), ("inherit", inherit), ("replication", replication),
                           ("bypassrls", bypassrls), ("connectionLimit", connection_limit), ("inRoles", in_roles),
                           ("validUntil", valid_until), ("comment", comment)):
            if value is not None:
                changes[key] = value
        if not changes and not rotate_password:
            raise InputError("Nothing to change: give at least one attribute or rotate_password=true.")
        notes: list[str] = []
        sp = spec(role)
        if rotate_password:
            secret_name = (sp.get("passwordSecret") or {}).get("name")
            cluster = cluster_of(role) or ""
            if secret_name:
                secret = await secret_if_exists(ns, secret_name)
                if secret is None or not owned_by(secret, role):
                    raise InputError(f"Refused: Secret {ns}/{secret_name} is not owned by DatabaseRole {name}; "
                                     "this server only rotates passwords it manages.")
                new = secret_body(ns, name, cluster, str(sp.get("name")), role)
                await kube.patch(SECRETS, ns, secret_name, {"data": {"password": new["data"]["password"]}},
                                 dry_run=dry_run)
            else:
                secret_name = secret_name_for(name)
                if await secret_if_exists(ns, secret_name) is not None:
                    raise InputError(f"Refused: Secret {ns}/{secret_name} already exists and is not referenced by "
                                     "the role; it will not be taken over.")
                await kube.create(SECRETS, ns, secret_body(ns, name, cluster, str(sp.get("name")), role),
                                  dry_run=dry_run)
                changes["passwordSecret"] = {"name": secret_name}
            notes.append(f"new password stored in Secret {ns}/{secret_name} (not shown)")
        if changes:
            await kube.patch(DATABASE_ROLES, ns, name, {"spec": changes}, dry_run=dry_run)
            notes.insert(0, "changed " + ", ".join(f"{k}={v}" for k, v in changes.items() if k != "passwordSecret"))
        prefix = "Dry run (dryRun=All): nothing was written. Would update" if dry_run else "Updated"
        return ToolOutput(f"{prefix} DatabaseRole {ns}/{name}: " + "; ".join(n for n in notes if n.strip()) + ".",
                          {"dryRun": dry_run, "changed": sorted(changes), "passwordRotated": rotate_password})

    @r.tool(title="Delete role", write=True, destructive=True, idempotent=False)
    async def delete_role(
        name: ObjectName,
        confirm: Confirm,
        namespace: Namespace = None,
        drop_from_postgres: Annotated[bool, Field(
            description="true: set databaseRoleReclaimPolicy=delete first so the operator drops the role in "
            "PostgreSQL; false: honour the current policy ('retain' keeps the PostgreSQL role).")] = True,
        dry_run: DryRun = False,
    ) -> ToolOutput:
        """Delete exactly one DatabaseRole and the password Secret it owns (ownership verified by uid); nothing
        else. Requires confirm equal to the object name."""
        ns = deps.namespace(namespace)
        require_confirm("role", name, confirm)
        role = await kube.get(DATABASE_ROLES, ns, name)
        sp = spec(role)
        uid = meta(role).get("uid")
        pg_role = sp.get("name")
        cluster = cluster_of(role)
        secret_name = (sp.get("passwordSecret") or {}).get("name")
        secret = await secret_if_exists(ns, secret_name) if secret_name else None
        policy = sp.get("databaseRoleReclaimPolicy") or "retain"
        lines: list[str] = []
        original_policy = policy
        if drop_from_postgres and policy != "delete":
            await kube.patch(DATABASE_ROLES, ns, name, {"spec": {"databaseRoleReclaimPolicy": "delete"}},
                             dry_run=dry_run)
            policy = "delete"
            lines.append("Set databaseRoleReclaimPolicy=delete so the operator drops the role in PostgreSQL.")
        try:
            await kube.delete(DATABASE_ROLES, ns, name, uid=uid, dry_run=dry_run)
        except KubeError as exc:
            if policy == original_policy or dry_run:
                raise
            # Put the policy back so a failed delete leaves the role exactly as it was.
            try:
                await kube.patch(DATABASE_ROLES, ns, name, {"spec": {"databaseRoleReclaimPolicy": original_policy}})
                restored = f"its reclaim policy was restored to '{original_policy}'"
            except KubeError:
                restored = f"restoring its reclaim policy to '{original_policy}' ALSO failed; it is now 'delete'"
            raise InputError(f"Deleting DatabaseRole {ns}/{name} failed; {restored}. Nothing else was changed.\n"
                             f"{exc.describe()}") from None
        lines.append(f"Deleted DatabaseRole {ns}/{name} (uid {uid}).")
        if policy == "delete":
            lines.append(f"The operator drops PostgreSQL role {pg_role} in cluster {cluster}.")
        else:
            lines.append(f"Reclaim policy 'retain': PostgreSQL role {pg_role} STAYS in cluster {cluster} "
                         "(now unmanaged).")
        deleted_secret = None
        if secret is not None and owned_by(secret, role):
            try:
                await kube.delete(SECRETS, ns, str(secret_name), uid=meta(secret).get("uid"), dry_run=dry_run)
            except KubeError as exc:
                # The garbage collector may have removed it already, through its ownerReference to the role.
                if exc.status != 404:
                    raise
            deleted_secret = secret_name
            lines.append(f"Deleted its password Secret {ns}/{secret_name} (owned by this role).")
        elif secret is not None:
            lines.append(f"Kept Secret {ns}/{secret_name}: it is not owned by this role, so it was not touched.")
        lines.append("Nothing else was changed.")
        pending = None if dry_run else await kube.pending_deletion(DATABASE_ROLES, ns, name, uid)
        if pending:
            lines.append(pending)
        prefix = "Dry run (dryRun=All): nothing was written. Would do: " if dry_run else ""
        return ToolOutput(prefix + " ".join(lines),
                          {"dryRun": dry_run, "deletedRole": name, "deletedSecret": deleted_secret,
                           "reclaimPolicy": policy})
