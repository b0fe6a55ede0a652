"""Kubernetes access: the API client, typed resource descriptors, and one mapping from API failures to KubeError.

The `kubernetes` client is synchronous, so every call runs in a worker thread (anyio.to_thread) and the MCP
event loop stays responsive. Requests are made through the client's generic request path so that every call
names its RBAC verb, API group and resource up front: that is what a 403 message quotes back to the caller,
and what server/permissions.py declares.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio.to_thread
import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException

from server.config import ServerConfig

CNPG_GROUP = "postgresql.cnpg.io"
IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# The context, cluster and user name of the kubeconfig that the sandbox Kubernetes API (devkube, started by
# `scripts/run`) writes. Against it the server says that nothing is deployed.
SANDBOX_CONTEXT = "cnpg-mcp-sandbox"


@dataclass(frozen=True)
class ResourceType:
    """One Kubernetes resource type, enough to build its paths and name it in RBAC terms."""

    group: str  # "" for the core API group
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [prefix]
        if namespace is not None:
            parts.append(f"namespaces/{_quote(namespace)}")
        parts.append(self.plural)
        if name is not None:
            parts.append(_quote(name))
        if subresource is not None:
            parts.append(subresource)
        return "/".join(parts)


def _quote(segment: str) -> str:
    # Names are validated before they get here; quoting is a second line of defence against path tricks.
    from urllib.parse import quote

    return quote(segment, safe="")


CLUSTERS = ResourceType(CNPG_GROUP, "v1", "clusters", "Cluster")
BACKUPS = ResourceType(CNPG_GROUP, "v1", "backups", "Backup")
SCHEDULED_BACKUPS = ResourceType(CNPG_GROUP, "v1", "scheduledbackups", "ScheduledBackup")
POOLERS = ResourceType(CNPG_GROUP, "v1", "poolers", "Pooler")
DATABASES = ResourceType(CNPG_GROUP, "v1", "databases", "Database")
DATABASE_ROLES = ResourceType(CNPG_GROUP, "v1", "databaseroles", "DatabaseRole")
PODS = ResourceType("", "v1", "pods", "Pod")
SECRETS = ResourceType("", "v1", "secrets", "Secret")
EVENTS = ResourceType("", "v1", "events", "Event")


@dataclass(frozen=True)
class ApiCall:
    """What a request means in RBAC terms: quoted in errors and checked against the permissions table."""

    verb: str
    group: str
    resource: str  # plural, with "/subresource" when one is used
    namespace: str | None
    name: str | None = None


class KubeError(Exception):
    """A Kubernetes API call failed. `reason` is the API's Status reason (NotFound, Forbidden, ...)."""

    def __init__(self, status: int, reason: str, message: str, call: ApiCall, causes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.call = call
        self.causes = causes

    def describe(self) -> str:
        """A readable, single-paragraph explanation for the assistant (no traceback, no request body)."""
        call = self.call
        where = f" in namespace '{call.namespace}'" if call.namespace else ""
        if self.reason == "NoCluster":
            return self.message
        if self.status == 0:
            return f"Kubernetes API unreachable while trying to {call.verb} {call.resource}{where}: {self.message}"
        text = f"Kubernetes API error: HTTP {self.status} {self.reason}: {self.message}"
        if self.causes:
            text += "\nCauses:\n" + "\n".join(f"  - {cause}" for cause in self.causes)
        if self.status == 403:
            group = call.group or "core (\"\")"
            text += (
                f"\nMissing RBAC permission: verb '{call.verb}' on resource '{call.resource}' in API group {group}"
                f"{where if call.namespace else ' (cluster scope)'}. Grant it to the server's service account "
                "(see k8s/rbac.yaml) or ask a cluster administrator."
            )
        elif self.status == 404:
            text += "\nThe object does not exist (check the name and namespace; list tools show what exists)."
        elif self.status == 409:
            text += "\nConflict: the object already exists or was changed concurrently; re-read it and retry."
        elif self.status == 422:
            text += "\nThe API rejected the object as invalid; nothing was changed."
        return text


UnavailableReason = Literal["no_kubeconfig", "broken_kubeconfig", "unknown_context", "in_cluster_failed"]

_GENERAL_FIX = (
    "set KUBECONFIG (or --kubeconfig) to a working kubeconfig file, create ~/.kube/config, run the server in a "
    "Kubernetes pod with a service account, or use the project's sandbox (a simulated cluster) with "
    "`scripts/run --sandbox`; then restart the server"
)
_SPECIFIC_FIX: dict[str, str] = {
    "broken_kubeconfig": "repair that kubeconfig, or ",
    "unknown_context": "set CNPG_KUBE_CONTEXT (or --context) to one of its contexts, or ",
    "in_cluster_failed": "check the pod's service account token mount, or ",
}


class ClusterUnavailable(Exception):
    """No Kubernetes connection could be set up. `reason` is one of a closed set; `cause` says what is wrong."""

    def __init__(self, reason: UnavailableReason, cause: str) -> None:
        super().__init__(cause)
        self.reason = reason
        self.cause = cause

    def describe(self) -> str:
        """What is missing and how to fix it, in plain words (the start-up warning and every tool error)."""
        fix = _SPECIFIC_FIX.get(self.reason, "") + _GENERAL_FIX
        return f"No Kubernetes cluster is configured, so every tool call fails: {self.cause}.\nTo fix it: {fix}."


def _error_from_response(status: int, http_reason: str, body: bytes, call: ApiCall) -> KubeError:
    reason = http_reason or "Error"
    message = body.decode("utf-8", "replace").strip()[:2000] or http_reason
    causes: list[str] = []
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        parsed = None
    if isinstance(parsed, dict) and parsed.get("kind") == "Status":
        reason = str(parsed.get("reason") or reason)
        message = str(parsed.get("message") or message)
        details = parsed.get("details")
        if isinstance(details, dict):
            for cause in details.get("causes") or []:
                if isinstance(cause, dict):
                    field_name = cause.get("field")
                    text = str(cause.get("message") or cause.get("reason") or "")
                    causes.append(f"{field_name}: {text}" if field_name else text)
    return KubeError(status, reason, message, call, tuple(causes))


PatchType = Literal["merge", "json"]
_PATCH_CONTENT_TYPES = {"merge": "application/merge-patch+json", "json": "application/json-patch+json"}


@dataclass
class Kube:
    """The server's Kubernetes client. Methods are async; each request runs in a worker thread."""

    api_client: k8s_client.ApiClient | None  # None without a cluster: every call fails with `unavailable`
    default_namespace: str
    timeout: float = 30.0
    context: str | None = None  # the kubeconfig context in use; None in a pod or without a cluster
    unavailable: ClusterUnavailable | None = None
    _closed: bool = field(default=False, init=False)

    @classmethod
    def without_cluster(cls, cause: ClusterUnavailable, default_namespace: str = "default") -> "Kube":
        """A client that answers every call with `cause`, so the server can still start and say what is wrong."""
        return cls(api_client=None, default_namespace=default_namespace, unavailable=cause)

    @property
    def sandbox(self) -> bool:
        """True when the context in use is the one the sandbox Kubernetes API writes: nothing is deployed."""
        return self.context == SANDBOX_CONTEXT

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.api_client is not None:
                self.api_client.close()  # type: ignore[no-untyped-call]

    # -- generic request ---------------------------------------------------------------------------------------
    def _request_sync(
        self,
        method: str,
        path: str,
        call: ApiCall,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> bytes:
        if self.api_client is None:
            cause = self.unavailable.describe() if self.unavailable else "No Kubernetes cluster is configured."
            raise KubeError(0, "NoCluster", cause, call)
        headers = {"Accept": accept}
        if body is not None:
            # Every content type used here is JSON-based; the REST layer serialises the object itself.
            headers["Content-Type"] = content_type
        try:
            method_, url, headers_, _, _ = self.api_client.param_serialize(
                method, path, query_params=query or None, header_params=headers, auth_settings=["BearerToken"]
            )
            response = self.api_client.call_api(
                method_, url, header_params=headers_, body=body, _request_timeout=self.timeout
            )
            data: bytes = response.read() or b""  # type: ignore[no-untyped-call]
        except k8s_client.ApiException as exc:
            # The REST layer only raises ApiException itself for transport problems (TLS, bad arguments).
            if exc.status:
                return_body = exc.body.encode() if isinstance(exc.body, str) else (exc.body or b"")
                raise _error_from_response(exc.status, str(exc.reason or ""), return_body, call) from None
            raise KubeError(0, "Unreachable", str(exc.reason or exc), call) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeError(0, "Unreachable", f"{type(exc).__name__}: {exc}", call) from None
        if not 200 <= response.status < 300:
            raise _error_from_response(response.status, str(response.reason or ""), data, call)
        return data

    async def _request(self, *args: Any, **kwargs: Any) -> bytes:
        return await anyio.to_thread.run_sync(lambda: self._request_sync(*args, **kwargs))

    async def _json(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        data = await self._request(*args, **kwargs)
        if not data:
            return {}
        parsed = json.loads(data)
        return parsed if isinstance(parsed, dict) else {}

    # -- verbs -------------------------------------------------------------------------------------------------
    async def get(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        call = ApiCall("get", rt.group, rt.plural, namespace, name)
        return await self._json("GET", rt.path(namespace, name), call)

    async def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """List objects in one namespace, or in all namespaces when namespace is None."""
        call = ApiCall("list", rt.group, rt.plural, namespace)
        query: list[tuple[str, str]] = []
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        if limit:
            query.append(("limit", str(limit)))
        result = await self._json("GET", rt.path(namespace), call, query)
        items = result.get("items") or []
        return [item for item in items if isinstance(item, dict)]

    async def create(
        self, rt: ResourceType, namespace: str, body: dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        call = ApiCall("create", rt.group, rt.plural, namespace, body.get("metadata", {}).get("name"))
        query = [("dryRun", "All")] if dry_run else []
        return await self._json("POST", rt.path(namespace), call, query, body)

    async def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        *,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        resource = f"{rt.plural}/{subresource}" if subresource else rt.plural
        call = ApiCall("patch", rt.group, resource, namespace, name)
        query = [("dryRun", "All")] if dry_run else []
        path = rt.path(namespace, name, subresource)
        return await self._json("PATCH", path, call, query, body, content_type=_PATCH_CONTENT_TYPES[patch_type])

    async def delete(
        self, rt: ResourceType, namespace: str, name: str, *, uid: str | None = None, dry_run: bool = False
    ) -> dict[str, Any]:
        """Delete one object by name; with `uid`, only if it is still that very object (a precondition)."""
        call = ApiCall("delete", rt.group, rt.plural, namespace, name)
        query = [("dryRun", "All")] if dry_run else []
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid:
            options["preconditions"] = {"uid": uid}
        if dry_run:
            options["dryRun"] = ["All"]
        return await self._json("DELETE", rt.path(namespace, name), call, query, options)

    async def pending_deletion(self, rt: ResourceType, namespace: str, name: str, uid: str | None) -> str | None:
        """After a delete: None if the object is gone, else a sentence saying what still holds it."""
        try:
            obj = await self.get(rt, namespace, name)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        metadata = obj.get("metadata") or {}
        if uid and metadata.get("uid") != uid:
            return None  # a new object took the name; ours is gone
        finalizers = ", ".join(metadata.get("finalizers") or []) or "none"
        return (f"{rt.kind} {namespace}/{name} is marked for deletion and still exists until the operator "
                f"finishes (finalizers: {finalizers}).")

    async def pod_log(
        self,
        namespace: str,
        pod: str,
        *,
        container: str | None = None,
        tail_lines: int | None = None,
        since_seconds: int | None = None,
        limit_bytes: int | None = None,
        previous: bool = False,
    ) -> str:
        call = ApiCall("get", "", "pods/log", namespace, pod)
        query: list[tuple[str, str]] = []
        if container:
            query.append(("container", container))
        if tail_lines is not None:
            query.append(("tailLines", str(tail_lines)))
        if since_seconds is not None:
            query.append(("sinceSeconds", str(since_seconds)))
        if limit_bytes is not None:
            query.append(("limitBytes", str(limit_bytes)))
        if previous:
            query.append(("previous", "true"))
        data = await self._request("GET", PODS.path(namespace, pod, "log"), call, query, accept="text/plain, */*")
        return data.decode("utf-8", "replace")


def _kubeconfig_paths(kubeconfig: str | None) -> list[str]:
    """The files the kubernetes client reads: a colon-separated KUBECONFIG list, or ~/.kube/config."""
    raw = kubeconfig or "~/.kube/config"
    return [os.path.expanduser(part) for part in raw.split(os.pathsep) if part]


def _short(exc: Exception) -> str:
    # YAML errors span several lines with positions; the first two say what and where.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2]) or type(exc).__name__


def _load_kubeconfig(config: ServerConfig, configuration: k8s_client.Configuration) -> tuple[str, str]:
    """Load the kubeconfig into `configuration`; returns (context name, its namespace) or raises ClusterUnavailable."""
    paths = _kubeconfig_paths(config.kubeconfig)
    where = " and ".join(paths)
    if not any(os.path.isfile(path) for path in paths):
        if config.kubeconfig:
            cause = f"the kubeconfig {where} (from KUBECONFIG / --kubeconfig) does not exist"
        else:
            cause = f"there is no kubeconfig at {where} (KUBECONFIG is not set) and the server is not running in a pod"
        raise ClusterUnavailable("no_kubeconfig", cause)
    config_file = os.pathsep.join(paths)
    # The kubernetes loader raises many types on a malformed file (ConfigException, YAMLError, TypeError,
    # KeyError ...); each of them means the same thing here: this kubeconfig cannot be used.
    try:
        contexts, current = k8s_config.list_kube_config_contexts(config_file=config_file)  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise ClusterUnavailable("broken_kubeconfig", f"the kubeconfig {where} cannot be read: {_short(exc)}") from None
    names = [str(c.get("name")) for c in contexts or [] if isinstance(c, dict)]
    wanted = config.context or str((current or {}).get("name") or "")
    if wanted not in names:
        listed = ", ".join(names) or "none"
        source = "CNPG_KUBE_CONTEXT / --context" if config.context else "its current-context"
        raise ClusterUnavailable(
            "unknown_context", f"context {wanted!r} ({source}) is not in the kubeconfig {where} (contexts: {listed})"
        )
    try:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=config_file, context=wanted, client_configuration=configuration, persist_config=False
        )
    except Exception as exc:
        raise ClusterUnavailable(
            "broken_kubeconfig", f"context {wanted!r} of the kubeconfig {where} cannot be used: {_short(exc)}"
        ) from None
    chosen = next(c for c in contexts if isinstance(c, dict) and c.get("name") == wanted)
    namespace = (chosen.get("context") or {}).get("namespace")
    return wanted, str(namespace) if namespace else "default"


def connect(config: ServerConfig) -> Kube:
    """Load credentials (kubeconfig or in-cluster service account) and return a client.

    Raises ClusterUnavailable, saying what is missing and how to fix it, when neither can be used.
    """
    configuration = k8s_client.Configuration()
    context: str | None = None
    in_cluster = config.kubeconfig is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if in_cluster:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except ConfigException as exc:
            raise ClusterUnavailable(
                "in_cluster_failed", f"running in a pod, but its service account cannot be loaded: {exc}"
            ) from None
        try:
            namespace = IN_CLUSTER_NAMESPACE_FILE.read_text().strip() or "default"
        except OSError:
            namespace = "default"
    else:
        context, namespace = _load_kubeconfig(config, configuration)
    # The client library would otherwise retry failed connections three times with backoff; one try keeps
    # errors prompt, and writes must never be replayed behind the caller's back.
    configuration.retries = 0
    api_client = k8s_client.ApiClient(configuration)
    return Kube(api_client=api_client, default_namespace=namespace, timeout=config.request_timeout, context=context)
