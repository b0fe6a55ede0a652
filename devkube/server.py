"""The HTTP face of the test Kubernetes API server: routing, authentication, RBAC, logs and discovery.

`KubeApiServer` runs an aiohttp application on 127.0.0.1 in a background thread with its own event loop, so the
tests' loop (and a server-under-test in a subprocess) can call it with the real `kubernetes` client. The
helpers used by tests (`seed`, `get`, `list`, `forbid`, `set_pod_log`, `requests`, `writes`, ...) are methods
here; tests/fixtures/kubeapi.py wraps the class in the `kube_api` fixture.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import json
import logging
import socket
import threading
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from aiohttp import web

from . import errors as E
from .selectors import parse_field_selector, parse_label_selector
from .store import Obj, Resource, Store, WriteResult

DEFAULT_TOKEN = "kubeapi-test-token"
TEST_GIT_VERSION = "v1.34.0-kubeapi-test"
# Lines kept per container log: a long-running sandbox must not grow without bound.
MAX_LOG_LINES = 5000
_WRITE_METHODS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
logger = logging.getLogger("devkube.api")
DEFAULT_USER = "system:serviceaccount:default:cnpg-mcp"
PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
)


class SeenRequest(NamedTuple):
    """One request as the server saw it (query values are the last given for each name)."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str


@dataclass
class _Target:
    res: Resource
    namespace: str | None
    name: str
    subresource: str


@dataclass
class _Fault:
    method: str | None
    path_contains: str | None
    code: int
    reason: str
    message: str
    remaining: int
    delay: float


_FAULT_DEFAULTS = {
    500: ("InternalError", "Internal error occurred: injected by the test"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    429: ("TooManyRequests", "the server has received too many requests and has asked us to try again later"),
    504: (
        "Timeout",
        "the server was unable to return a response in the time allotted, but may still be processing the request",
    ),
}


@dataclass
class _LogLine:
    time: datetime
    text: str


class KubeApiServer:
    """A faithful-enough kube-apiserver for core v1 basics and the CloudNativePG custom resources."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        user: str = DEFAULT_USER,
        crd_directory: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        git_version: str = TEST_GIT_VERSION,
        record_requests: bool = True,
    ) -> None:
        self.token = token
        self.user = user
        self.host = host
        self.port = port
        self.git_version = git_version
        # Tests read every request back; a long-running sandbox turns this off so memory stays flat.
        self.record_requests = record_requests
        # Coroutines run on the server's event loop for its lifetime (the sandbox operator), cancelled at stop.
        self._background: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.store = Store(crd_directory)
        self._forbidden: list[tuple[str, str, str, str | None]] = []
        self._requests: list[SeenRequest] = []
        self._faults: list[_Fault] = []
        # Unexpected exceptions in handlers; the fixture fails the test if any occurred.
        self.internal_errors: list[str] = []
        self._logs: dict[tuple[str, str, str | None, bool], list[_LogLine]] = {}
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.url = ""
        for ns in ("default", "prod"):
            self.add_namespace(ns)

    # ------------------------------------------------------------ lifetime

    def start(self) -> None:
        """Bind HOST:PORT (OSError when taken) and serve from a background thread until stop()."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        sock.listen(128)
        sock.setblocking(False)
        self._sock = sock
        self.url = f"http://{self.host}:{sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, name="kubeapi", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("test kube API server did not start")
        if self._startup_error is not None:
            raise RuntimeError("test kube API server failed to start") from self._startup_error

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        try:
            loop.run_until_complete(runner.setup())
            assert self._sock is not None
            loop.run_until_complete(web.SockSite(runner, self._sock).start())
        except BaseException as exc:  # reported to the starting thread
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._tasks = [loop.create_task(job()) for job in self._background]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            for task in self._tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def add_background(self, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `job()` as a task on the server's loop from start() to stop(); call before start()."""
        self._background.append(job)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=15)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> KubeApiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ test helpers

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig whose current context `test` points here with the bearer token and namespace."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": self.token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": namespace}}],
            "current-context": "test",
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def add_namespace(self, name: str, labels: dict[str, str] | None = None) -> Obj:
        meta: Obj = {"name": name, "labels": {"kubernetes.io/metadata.name": name, **(labels or {})}}
        return self.seed(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": meta,
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }
        )

    def seed(self, obj: Obj) -> Obj:
        """Store an object as given (no validation), filling uid, timestamps, resourceVersion, namespace."""
        with self.store.lock:
            return self.store.seed(obj)

    def get(self, api_version: str, kind_or_plural: str, namespace: str | None, name: str) -> Obj | None:
        """The stored object (defaults applied, as a client would read it) or None."""
        with self.store.lock:
            res = self.store.resource_for(api_version, kind_or_plural)
            obj = self.store.find(res, namespace if res.namespaced else None, name)
            return None if obj is None else self.store.present(res, obj)

    def list(self, api_version: str, plural: str, namespace: str | None = None) -> list[Obj]:
        with self.store.lock:
            res = self.store.resource_for(api_version, plural)
            return self.store.list(res, namespace)

    def forbid(self, verb: str, group: str, resource: str, namespace: str | None = None) -> None:
        """Deny `verb` on `resource` (e.g. "clusters", "pods/log"; "*" matches any) in one namespace or all."""
        with self.store.lock:
            self._forbidden.append((verb, group, resource, namespace))

    def allow_all(self) -> None:
        with self.store.lock:
            self._forbidden.clear()

    def set_pod_log(
        self,
        namespace: str,
        pod: str,
        text: str,
        container: str | None = None,
        *,
        previous: bool = False,
        times: builtins.list[datetime] | None = None,
    ) -> None:
        """The log a container returns; each line is stamped now unless `times` gives one per line."""
        lines = text.splitlines()
        stamp = datetime.now(UTC)
        if times is not None and len(times) != len(lines):
            raise ValueError("times needs one entry per line")
        entries = [_LogLine(times[i] if times else stamp, line) for i, line in enumerate(lines)]
        with self.store.lock:
            self._logs[(namespace, pod, container, previous)] = entries

    def append_pod_log(self, namespace: str, pod: str, lines: builtins.list[str], container: str | None = None) -> None:
        """Add lines, stamped now, to a container's current log; the oldest go past MAX_LOG_LINES."""
        stamp = datetime.now(UTC)
        with self.store.lock:
            entries = self._logs.setdefault((namespace, pod, container, False), [])
            entries.extend(_LogLine(stamp, line) for line in lines)
            del entries[:-MAX_LOG_LINES]

    def clear_pod_logs(self, namespace: str, pod: str) -> None:
        """Forget every log of a pod (it was deleted; a new pod of the same name starts empty)."""
        with self.store.lock:
            for key in [k for k in self._logs if k[0] == namespace and k[1] == pod]:
                del self._logs[key]

    def fail(
        self,
        code: int = 503,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        times: int = 1,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next `times` matching requests with an error Status (500, 503, 429 with Retry-After, 504...)."""
        default_reason, default_message = _FAULT_DEFAULTS.get(code, ("InternalError", "an error on the server"))
        with self.store.lock:
            self._faults.append(
                _Fault(method, path_contains, code, reason or default_reason, message or default_message, times, 0.0)
            )

    def delay(
        self, seconds: float, *, method: str | None = None, path_contains: str | None = None, times: int = 1
    ) -> None:
        """Hold the next `times` matching requests for `seconds` before serving them normally."""
        with self.store.lock:
            self._faults.append(_Fault(method, path_contains, 0, "", "", times, seconds))

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.remaining <= 0:
                continue
            if fault.method not in (None, method) or (fault.path_contains and fault.path_contains not in path):
                continue
            fault.remaining -= 1
            return fault
        return None

    @property
    def requests(self) -> builtins.list[SeenRequest]:
        with self.store.lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self.store.lock:
            self._requests.clear()

    def writes(self) -> int:
        """How many stored mutations API requests caused (seeding is not counted)."""
        with self.store.lock:
            return self.store.writes

    # ------------------------------------------------------------ HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        query = {k: v for k, v in request.query.items()}
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        body = await request.read() if request.can_read_body else b""
        with self.store.lock:
            if self.record_requests:
                self._requests.append(SeenRequest(request.method, request.path, query, content_type))
            fault = self._take_fault(request.method, request.path)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)  # the loop stays free: other requests are served meanwhile
        if fault is not None and fault.code:
            failure = E.ApiError(fault.code, fault.reason, fault.message)
            injected = _json_response(failure.status(), fault.code)
            if fault.code == 429:
                injected.headers["Retry-After"] = "1"
            return injected
        with self.store.lock:
            # managedFields name the writer: fieldManager, else the User-Agent up to its first "/", as the API does.
            agent = request.headers.get("User-Agent", "")
            self.store.manager = query.get("fieldManager") or agent.split("/")[0] or "unknown"
            self.store.operation = "Apply" if content_type == "application/apply-patch+yaml" else "Update"
            self.store.decode_problems = []
            response: web.StreamResponse
            try:
                self._authenticate(request)
                response = self._dispatch(request.method, request.path, query, content_type, body)
            except E.ApiError as exc:
                response = _json_response(exc.status(), exc.code)
            except Exception as exc:  # a bug in this test server: answer like the API would, and remember it
                self.internal_errors.append(f"{request.method} {request.path}: {traceback.format_exc()}")
                failure = E.ApiError(500, "InternalError", f"Internal error occurred: {exc!r}")
                response = _json_response(failure.status(), 500)
            if request.method in _WRITE_METHODS and logger.isEnabledFor(logging.INFO):
                logger.info("%s", self._describe_write(request.method, request.path, query, response))
            return response

    def _describe_write(self, method: str, path: str, query: dict[str, str], response: web.StreamResponse) -> str:
        """One log line for a write: verb, kind, namespace/name, status code (and dry run)."""
        kind, where = path, ""
        try:
            target = self._route([p for p in path.split("/") if p])
        except E.ApiError:
            target = None
        if target is not None:
            kind = target.res.kind + (f"/{target.subresource}" if target.subresource else "")
            name = target.name
            if not name and isinstance(response, web.Response) and response.body:
                try:
                    name = json.loads(bytes(response.body)).get("metadata", {}).get("name", "")  # type: ignore[arg-type]
                except (ValueError, TypeError, AttributeError):
                    name = ""
            where = f"{target.namespace}/{name}" if target.namespace else name
        dry = " (dry run)" if query.get("dryRun") == "All" else ""
        return f"{_WRITE_METHODS[method]} {kind} {where} -> {response.status}{dry}"

    def _authenticate(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.token:
            raise E.unauthorized()

    def _dispatch(
        self, method: str, path: str, query: dict[str, str], content_type: str, body: bytes
    ) -> web.StreamResponse:
        parts = [p for p in path.split("/") if p]
        discovery = self._discovery(parts)
        if discovery is not None:
            if method != "GET":
                raise E.method_not_allowed()
            return _json_response(discovery)
        target = self._route(parts)
        verb = _verb(method, target, query)
        self._authorize(verb, target)
        if target.subresource and target.subresource not in target.res.subresources:
            raise E.resource_not_found()
        if method == "GET":
            if not target.name:
                return self._list(target, query)
            if target.subresource == "log":
                return self._log(target, query)
            if target.subresource == "scale":
                return _json_response(self._scale(target))
            return _json_response(self.store.get(target.res, target.namespace, target.name))
        dry_run, field_validation = _write_options(method, content_type, query)
        if target.subresource == "log":
            raise E.method_not_allowed()
        if method == "POST":
            if target.name or target.subresource:
                raise E.method_not_allowed()
            result = self.store.create(
                target.res,
                target.namespace,
                _parse_body(body, content_type, target.res, self.store),
                dry_run,
                field_validation,
            )
        elif method == "PUT":
            if not target.name:
                raise E.method_not_allowed()
            if target.subresource == "scale":
                result = self._put_scale(target, _parse_body(body, content_type, target.res, self.store), dry_run)
            else:
                result = self.store.update(
                    target.res,
                    target.namespace,
                    target.name,
                    _parse_body(body, content_type, target.res, self.store),
                    target.subresource,
                    dry_run,
                    field_validation,
                )
        elif method == "PATCH":
            if not target.name:
                raise E.method_not_allowed()
            result = self._patch(target, content_type, body, dry_run, field_validation, query)
        elif method == "DELETE":
            if not target.name:
                raise E.method_not_allowed()  # deletecollection is not served
            if target.subresource:
                raise E.method_not_allowed()
            options = plain(_parse_json(body)) if body.strip() else {}
            if not isinstance(options, dict):
                raise E.bad_request("DeleteOptions must be an object")
            dry_run = dry_run or options.get("dryRun") == ["All"]
            if "propagationPolicy" in query:
                options["propagationPolicy"] = query["propagationPolicy"]
            result = self.store.delete(target.res, target.namespace, target.name, options, dry_run)
        else:
            raise E.method_not_allowed()
        return _write_response(result)

    def _route(self, parts: builtins.list[str]) -> _Target:
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise E.resource_not_found()
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces" and self.store.resource(group, version, rest[2]) is not None:
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise E.resource_not_found()
        res = self.store.resource(group, version, rest[0])
        if res is None:
            raise E.resource_not_found()
        if namespace is not None and not res.namespaced:
            raise E.resource_not_found()
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if res.namespaced and namespace is None and name:
            raise E.resource_not_found()
        return _Target(res, namespace, name, sub)

    def _authorize(self, verb: str, target: _Target) -> None:
        res = target.res
        full = f"{res.plural}/{target.subresource}" if target.subresource else res.plural
        for f_verb, f_group, f_resource, f_ns in self._forbidden:
            if f_verb not in ("*", verb) or f_group not in ("*", res.group):
                continue
            if f_resource not in ("*", full):
                continue
            if f_ns is not None and f_ns != target.namespace:
                continue
            raise E.forbidden(self.user, verb, res.plural, target.subresource, res.group, target.namespace, target.name)

    def _list(self, target: _Target, query: dict[str, str]) -> web.StreamResponse:
        if query.get("watch") in ("true", "1"):
            raise E.bad_request("watch is not supported by the test API server")
        res = target.res
        labels = parse_label_selector(query.get("labelSelector", ""))
        fields = parse_field_selector(query.get("fieldSelector", ""), res.group, res.plural, res.crd is not None)
        items = [o for o in self.store.list(res, target.namespace) if labels(o) and fields(o)]
        if res.crd is None and res.group != "events.k8s.io":
            # Typed lists of built-in kinds carry kind/apiVersion only on the list, like the real server.
            for item in items:
                item.pop("kind", None)
                item.pop("apiVersion", None)
        meta: Obj = {"resourceVersion": str(self.store.revision)}
        limit = _int_param(query, "limit", minimum=0, options="ListOptions") or 0
        start = int(query.get("continue") or 0) if (query.get("continue") or "").isdigit() else 0
        if query.get("continue") and not query["continue"].isdigit():
            raise E.ApiError(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent "
                "list result. You can start a new list without the continue parameter.",
            )
        if limit > 0:
            page = items[start : start + limit]
            if start + limit < len(items):
                meta["continue"] = str(start + limit)
                meta["remainingItemCount"] = len(items) - start - limit
            items = page
        return _json_response({"kind": res.list_kind, "apiVersion": res.api_version, "metadata": meta, "items": items})

    def _patch(
        self,
        target: _Target,
        content_type: str,
        body: bytes,
        dry_run: bool,
        field_validation: str,
        query: dict[str, str],
    ) -> WriteResult:
        res = target.res
        accepted = list(PATCH_TYPES)
        if res.crd is not None:
            accepted.remove("application/strategic-merge-patch+json")
        if content_type not in accepted:
            raise E.unsupported_media_type(accepted)
        if content_type == "application/apply-patch+yaml":
            try:
                patch = yaml.safe_load(body.decode() or "{}")
            except yaml.YAMLError as exc:
                raise E.bad_request(f"error decoding YAML: {exc}") from exc
        else:
            patch = _parse_json(body)
            if content_type == "application/json-patch+json":
                # Duplicates inside the patch document itself are lost by JSON patch, as in the API server.
                self.store.decode_problems = _json_patch_problems(patch)
            else:
                self.store.decode_problems = [f'duplicate field "{d}"' for d in duplicate_fields(patch)]
            patch = plain(patch)
        if target.subresource == "scale":
            if not isinstance(patch, dict) or content_type == "application/json-patch+json":
                raise E.bad_request("scale patches must be merge patches")
            scale = self._scale(target)
            replicas = (patch.get("spec") or {}).get("replicas", scale["spec"]["replicas"])
            return self._put_scale(target, {**scale, "spec": {"replicas": replicas}}, dry_run)
        return self.store.patch(
            res,
            target.namespace,
            target.name,
            patch,
            content_type,
            target.subresource,
            dry_run,
            field_validation,
        )

    # ------------------------------------------------------------ scale subresource (clusters, poolers)

    def _scale(self, target: _Target) -> Obj:
        res = target.res
        obj = self.store.get(res, target.namespace, target.name)
        scale = res.crd.scale if res.crd and res.crd.scale else {}
        meta = obj["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta
            },
            "spec": {"replicas": _dig(obj, scale.get("specReplicasPath", ".spec.replicas")) or 0},
            "status": {
                "replicas": _dig(obj, scale.get("statusReplicasPath", ".status.replicas")) or 0,
                "selector": _dig(obj, scale.get("labelSelectorPath", "")) or "",
            },
        }

    def _put_scale(self, target: _Target, body: Any, dry_run: bool) -> WriteResult:
        res = target.res
        if not isinstance(body, dict) or not isinstance((body.get("spec") or {}).get("replicas"), int):
            raise E.bad_request("Scale must have spec.replicas")
        current = self.store.get(res, target.namespace, target.name)
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise E.conflict(res.plural, res.group, target.name, E.MODIFIED)
        path = (res.crd.scale or {}).get("specReplicasPath", ".spec.replicas") if res.crd else ".spec.replicas"
        obj = copy.deepcopy(current)
        _set(obj, path, body["spec"]["replicas"])
        self.store.update(res, target.namespace, target.name, obj, "", dry_run, "Ignore")
        result = self._scale(target)
        if dry_run:
            result["spec"]["replicas"] = body["spec"]["replicas"]
        return WriteResult(200, result)

    # ------------------------------------------------------------ pods/log

    def _log(self, target: _Target, query: dict[str, str]) -> web.StreamResponse:
        pod = self.store.get(target.res, target.namespace, target.name)
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        init = [c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []]
        container = query.get("container") or None
        if container is None:
            default = (pod["metadata"].get("annotations") or {}).get("kubectl.kubernetes.io/default-container")
            if default:
                container = default
            elif len(containers) == 1:
                container = containers[0]
            elif len(containers) > 1:
                message = (
                    f"a container name must be specified for pod {target.name}, choose one of: [{' '.join(containers)}]"
                )
                if init:
                    message += f" or one of the init containers: [{' '.join(init)}]"
                raise E.bad_request(message)
        if container is not None and (containers or init) and container not in containers + init:
            raise E.bad_request(f"container {container} is not valid for pod {target.name}")
        previous = query.get("previous") in ("true", "1")
        ns = target.namespace or ""
        lines = self._logs.get((ns, target.name, container, previous))
        if lines is None:
            lines = self._logs.get((ns, target.name, None, previous))
        if lines is None and previous:
            raise E.bad_request(f'previous terminated container "{container}" in pod "{target.name}" not found')
        lines = list(lines or [])
        if query.get("sinceSeconds") and query.get("sinceTime"):
            raise E.invalid_object(
                "PodLogOptions",
                "",
                "",
                [E.forbidden_field("", "at most one of `sinceTime` or `sinceSeconds` may be specified")],
            )
        since = _int_param(query, "sinceSeconds", minimum=1)
        if since is not None:
            cutoff = datetime.now(UTC) - timedelta(seconds=since)
            lines = [ln for ln in lines if ln.time >= cutoff]
        if query.get("sinceTime"):
            cutoff = datetime.fromisoformat(query["sinceTime"].replace("Z", "+00:00"))
            lines = [ln for ln in lines if ln.time >= cutoff]
        tail = _int_param(query, "tailLines", minimum=0)
        if tail is not None:
            lines = lines[-tail:] if tail else []
        stamps = query.get("timestamps") in ("true", "1")
        text = "".join(
            (ln.time.strftime("%Y-%m-%dT%H:%M:%S.%f000Z") + " " if stamps else "") + ln.text + "\n" for ln in lines
        )
        data = text.encode()
        limit = _int_param(query, "limitBytes", minimum=1)
        if limit is not None:
            data = data[:limit]
        return web.Response(body=data, content_type="text/plain", charset="utf-8")

    # ------------------------------------------------------------ discovery

    def _discovery(self, parts: builtins.list[str]) -> Obj | None:
        if parts == ["version"]:
            # Every field kube-apiserver sends: the kubernetes client's VersionInfo model requires them.
            return {
                "major": "1",
                "minor": "34",
                "gitVersion": self.git_version,
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean",
                "buildDate": "2025-08-27T00:00:00Z",
                "goVersion": "go1.24.6",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        if parts == ["api"]:
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.url[7:]}],
            }
        if parts == ["apis"]:
            groups: dict[str, str] = {}
            for res in self.store.resources.values():
                if res.group:
                    groups[res.group] = res.version
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                        "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v},
                    }
                    for g, v in sorted(groups.items())
                ],
            }
        if parts == ["api", "v1"]:
            return self._resource_list("", "v1")
        if len(parts) == 3 and parts[0] == "apis":
            listing = self._resource_list(parts[1], parts[2])
            if not listing["resources"]:
                raise E.resource_not_found()
            return listing
        return None

    def _resource_list(self, group: str, version: str) -> Obj:
        resources: builtins.list[Obj] = []
        for res in self.store.resources.values():
            if res.group != group or res.version != version:
                continue
            verbs = ["get", "list"] if res.storage else ["create", "delete", "get", "list", "patch", "update"]
            entry: Obj = {
                "name": res.plural,
                "singularName": res.singular,
                "namespaced": res.namespaced,
                "kind": res.kind,
                "verbs": verbs,
            }
            if res.short_names:
                entry["shortNames"] = list(res.short_names)
            resources.append(entry)
            for sub in res.subresources:
                verbs = ["get"] if sub == "log" else ["get", "patch", "update"]
                kind = "Scale" if sub == "scale" else ("Pod" if sub == "log" else res.kind)
                resources.append(
                    {
                        "name": f"{res.plural}/{sub}",
                        "singularName": "",
                        "namespaced": res.namespaced,
                        "kind": kind,
                        "verbs": verbs,
                    }
                )
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def _verb(method: str, target: _Target, query: dict[str, str]) -> str:
    if method == "GET":
        if target.name:
            return "get"
        return "watch" if query.get("watch") in ("true", "1") else "list"
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if target.name else "deletecollection",
    }.get(method, method.lower())


_OPTIONS_KIND = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions", "DELETE": "DeleteOptions"}


def _write_options(method: str, content_type: str, query: dict[str, str]) -> tuple[bool, str]:
    """dryRun and fieldValidation, checked like the API's *Options validation (422 on the options kind)."""
    problems: list[E.FieldError] = []
    dry_run = query.get("dryRun", "")
    if dry_run not in ("", "All"):
        problems.append(E.not_supported("dryRun", dry_run, ["All"]))
    field_validation = query.get("fieldValidation", "")
    if field_validation not in ("", "Ignore", "Warn", "Strict"):
        problems.append(E.not_supported("fieldValidation", field_validation, ["", "Ignore", "Warn", "Strict"]))
    if method == "PATCH":
        if content_type == "application/apply-patch+yaml":
            if not query.get("fieldManager"):
                problems.append(E.required("fieldManager", "is required for apply patch"))
        elif "force" in query:
            problems.append(E.forbidden_field("force", "may not be specified for non-apply patch"))
    if problems:
        raise E.invalid_object(_OPTIONS_KIND.get(method, "Options"), "meta.k8s.io", "", problems)
    return dry_run == "All", field_validation or "Warn"


def _parse_body(body: bytes, content_type: str, res: Resource, store: Store) -> Any:
    """POST/PUT bodies: JSON (also when no type is given) or YAML; anything else is 415 as from the API."""
    if content_type in ("", "application/json", "*/*"):
        parsed = _parse_json(body)
        store.decode_problems = [f'duplicate field "{d}"' for d in duplicate_fields(parsed)]
        return plain(parsed)
    if content_type == "application/yaml":
        try:
            return yaml.safe_load(body.decode() or "null")
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            raise E.bad_request(f"error converting YAML to JSON: {exc}") from exc
    accepted = ["application/json", "application/yaml"]
    if res.crd is None:
        accepted.append("application/vnd.kubernetes.protobuf")
    raise E.unsupported_media_type(accepted)


class _JsonObject(dict[str, Any]):
    """A decoded JSON object that remembers keys given more than once (the last one wins, as in Go)."""

    duplicates: tuple[str, ...] = ()


def _object_pairs(pairs: builtins.list[tuple[str, Any]]) -> _JsonObject:
    obj = _JsonObject()
    duplicates: builtins.list[str] = []
    for key, value in pairs:
        if key in obj:
            duplicates.append(key)
        obj[key] = value
    obj.duplicates = tuple(duplicates)
    return obj


def plain(value: Any) -> Any:
    """Plain dicts and lists again, once duplicates have been read off."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode() or "null", object_pairs_hook=_object_pairs)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise E.bad_request(f"couldn't get version/kind; json parse error: {exc}") from exc


def duplicate_fields(value: Any, path: str = "") -> builtins.list[str]:
    """Paths of duplicated keys, parents before children, each object's in document order."""
    found: builtins.list[str] = []
    if isinstance(value, dict):
        for key in getattr(value, "duplicates", ()):
            found.append(f"{path}.{key}" if path else key)
        for key, item in value.items():
            found.extend(duplicate_fields(item, f"{path}.{key}" if path else key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found.extend(duplicate_fields(item, f"{path}[{i}]"))
    return found


def _json_patch_problems(ops: Any) -> builtins.list[str]:
    problems: builtins.list[str] = []
    if isinstance(ops, list):
        for i, op in enumerate(ops):
            if not isinstance(op, dict):
                continue
            problems.extend(
                f'json patch unknown field "[{i}].{k}"' for k in op if k not in ("op", "path", "value", "from")
            )
            problems.extend(f'json patch duplicate field "[{i}].{k}"' for k in getattr(op, "duplicates", ()))
    return problems


def _int_param(query: dict[str, str], name: str, minimum: int, options: str = "PodLogOptions") -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise E.bad_request(f'{name}: Invalid value: "{raw}": must be an integer') from exc
    if value < minimum:
        group = "meta.k8s.io" if options == "ListOptions" else ""
        raise E.invalid_object(
            options, group, "", [E.invalid(name, value, f"must be greater than or equal to {minimum}")]
        )
    return value


def _dig(obj: Obj, dotted: str) -> Any:
    value: Any = obj
    for part in [p for p in dotted.split(".") if p]:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _set(obj: Obj, dotted: str, value: Any) -> None:
    parts = [p for p in dotted.split(".") if p]
    node = obj
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _json_response(body: Obj, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    response = web.Response(text=json.dumps(body), status=status, content_type="application/json")
    for warning in warnings or ():
        response.headers.add("Warning", "299 - " + json.dumps(warning))
    return response


def _write_response(result: WriteResult) -> web.Response:
    return _json_response(result.body, result.code, result.warnings)
