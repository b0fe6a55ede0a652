"""Object storage and the registry semantics of kube-apiserver, independent of HTTP.

Resource versions come from one counter (like etcd's revision). Creates set uid, creationTimestamp,
resourceVersion and, for custom resources, generation; updates keep the system fields, bump generation when
anything but metadata (and status, for kinds with the status subresource) changes, and skip no-op writes.
Deletes honour finalizers (deletionTimestamp instead of removal) and propagationPolicy: Background and
Foreground delete dependents whose ownerReferences name the owner's uid (when no other owner is alive), Orphan
removes those references. The garbage collector runs synchronously, so a test sees the end state at once.
Listeners are called after every stored change (the sandbox operator wakes on them).
"""

from __future__ import annotations

import base64
import binascii
import builtins
import copy
import random
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import errors as E
from .patch import PatchError, json_patch, merge_patch
from .schema import CrdVersion, apply_defaults, load_crds, prune, validate_custom_resource
from .selectors import label_key_problems, label_value_problems

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    """One served resource: where it lives in the URL space and how its objects behave."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: tuple[str, ...] = ()
    crd: CrdVersion | None = None
    short_names: tuple[str, ...] = ()
    # events.k8s.io/v1 events are a second view of the core events.
    storage: tuple[str, str] | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return self.storage or (self.group, self.plural)

    @property
    def status_subresource(self) -> bool:
        return "status" in self.subresources

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def singular(self) -> str:
        return self.kind.lower()


CORE_RESOURCES = (
    Resource("", "v1", "namespaces", "Namespace", namespaced=False, subresources=("status",), short_names=("ns",)),
    Resource("", "v1", "pods", "Pod", subresources=("status", "log"), short_names=("po",)),
    Resource("", "v1", "secrets", "Secret"),
    Resource("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    Resource("", "v1", "events", "Event", short_names=("ev",)),
    Resource(
        "", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", subresources=("status",), short_names=("pvc",)
    ),
    Resource("", "v1", "services", "Service", subresources=("status",), short_names=("svc",)),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    Resource("events.k8s.io", "v1", "events", "Event", short_names=("ev",), storage=("", "events")),
)

SECRET_FIELDS = {"apiVersion", "kind", "metadata", "data", "stringData", "type", "immutable"}
OBJECT_META_FIELDS = {
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
}
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and "
    "end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
CONFIG_KEY_MSG = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
    "'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
)
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
        obj["metadata"] = meta
    return meta


@dataclass
class WriteResult:
    """What a write returns: HTTP code, body, and `Warning` header texts."""

    code: int
    body: Obj
    warnings: list[str] = field(default_factory=list)


class Store:
    """All objects of one test API server, guarded by one lock (handlers and fixture helpers share it)."""

    def __init__(self, crd_directory: str | None = None) -> None:
        self.lock = threading.RLock()
        self.resources: dict[tuple[str, str], Resource] = {}
        for res in CORE_RESOURCES:
            self.resources[(res.group, res.plural)] = res
        for crd in load_crds(crd_directory):
            subs = tuple(s for s, on in (("status", crd.status_subresource), ("scale", crd.scale is not None)) if on)
            self.resources[(crd.group, crd.plural)] = Resource(
                crd.group, crd.version, crd.plural, crd.kind, crd.namespaced, subs, crd, crd.short_names
            )
        self.objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}
        self.revision = 1000
        self.writes = 0
        # Who is writing, for managedFields; the HTTP layer sets these per request (under the lock).
        self.manager = "kubeapi-test"
        self.operation = "Update"
        # Duplicate-field findings of the request body (from the JSON decoder), reported by fieldValidation.
        self.decode_problems: builtins.list[str] = []
        # Called (under the lock, in the writer's thread) after every stored change, seeding included: the
        # sandbox operator wakes on it instead of polling.
        self.listeners: builtins.list[Callable[[], None]] = []

    def _wrote(self) -> None:
        self.writes += 1
        self._changed()

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    # ------------------------------------------------------------ lookup

    def resource(self, group: str, version: str, plural: str) -> Resource | None:
        res = self.resources.get((group, plural))
        if res is None or res.version != version:
            return None
        return res

    def resource_for(self, api_version: str, kind_or_plural: str) -> Resource:
        group = api_version.rpartition("/")[0]
        wanted = kind_or_plural.lower()
        for res in self.resources.values():
            if res.group == group and wanted in (res.plural, res.kind.lower()):
                return res
        raise KeyError(f"no resource {kind_or_plural!r} in {api_version!r}")

    def _bucket(self, res: Resource) -> dict[tuple[str, str], Obj]:
        return self.objects.setdefault(res.key, {})

    def _next_rv(self) -> str:
        self.revision += 1
        return str(self.revision)

    def namespace_exists(self, name: str) -> bool:
        return ("", name) in self.objects.get(("", "namespaces"), {})

    def find(self, res: Resource, namespace: str | None, name: str) -> Obj | None:
        return self._bucket(res).get((namespace or "", name))

    def get(self, res: Resource, namespace: str | None, name: str) -> Obj:
        obj = self.find(res, namespace, name)
        if obj is None:
            raise E.not_found(res.plural, res.group, name)
        return self.present(res, obj)

    def list(self, res: Resource, namespace: str | None) -> list[Obj]:
        items = [o for (ns, _), o in sorted(self._bucket(res).items()) if namespace is None or ns == namespace]
        return [self.present(res, o) for o in items]

    def present(self, res: Resource, obj: Obj) -> Obj:
        """A copy as the client sees it: custom resources get their defaults applied on read, as in the API."""
        out = copy.deepcopy(obj)
        if res.crd is not None:
            apply_defaults(out, res.crd.schema)
        if res.storage is not None and res.group == "events.k8s.io":
            return event_to_events_v1(out)
        return out

    # ------------------------------------------------------------ seeding (bypasses validation)

    def seed(self, obj: Obj) -> Obj:
        api_version, kind = obj.get("apiVersion", "v1"), obj.get("kind", "")
        res = self.resource_for(api_version, kind)
        obj = copy.deepcopy(obj)
        obj.setdefault("apiVersion", res.api_version)
        obj.setdefault("kind", res.kind)
        meta = _meta(obj)
        if "name" not in meta:
            raise ValueError("seeded objects need metadata.name")
        if res.namespaced:
            meta.setdefault("namespace", "default")
        else:
            meta.pop("namespace", None)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now_rfc3339())
        if res.crd is not None:
            meta.setdefault("generation", 1)
        meta["resourceVersion"] = self._next_rv()
        self._bucket(res)[(meta.get("namespace", ""), meta["name"])] = obj
        self._changed()
        return copy.deepcopy(obj)

    # ------------------------------------------------------------ admission: decode, prune, default, validate

    def _decode(self, res: Resource, obj: Any, field_validation: str) -> builtins.list[str]:
        """Unknown-field handling: Strict fails with 400, Warn/default returns warnings, Ignore is silent."""
        if not isinstance(obj, dict):
            raise E.bad_request(f"couldn't get version/kind; json parse error: expected an object, got {obj!r}")
        unknown: builtins.list[str] = []
        meta = obj.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise E.bad_request(
                f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: metadata must be an object'
            )
        problem = _meta_type_problem(meta or {}) or _top_type_problem(res, obj)
        if problem:
            raise E.bad_request(
                f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: json: cannot unmarshal '
                f"{problem}"
            )
        for key in list(meta or {}):
            if key not in OBJECT_META_FIELDS:
                unknown.append(f"metadata.{key}")
                del meta[key]  # type: ignore[union-attr]
        if res.crd is not None:
            body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
            prune(body, res.crd.schema, "", unknown)
            for key in list(obj):
                if key not in ("apiVersion", "kind", "metadata") and key not in body:
                    del obj[key]
        elif res.plural == "secrets":
            for key in list(obj):
                if key not in SECRET_FIELDS:
                    unknown.append(key)
                    del obj[key]
        unknown.sort()
        # Duplicates come first, in document order, then unknown fields: the order kube-apiserver reports them.
        problems = [*self.decode_problems, *(f'unknown field "{u}"' for u in unknown)]
        self.decode_problems = []  # reported once, also when a patch re-enters through update
        if not problems:
            return []
        if field_validation == "Strict":
            raise E.bad_request("strict decoding error: " + ", ".join(problems))
        if field_validation == "Ignore":
            return []
        return problems

    def _check_type(self, res: Resource, obj: Obj) -> None:
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if res.crd is not None and not kind:
            raise E.bad_request("Object 'Kind' is missing in '" + _compact(obj) + "'")
        if api_version and api_version != res.api_version:
            raise E.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({res.api_version})"
            )
        if kind and kind != res.kind:
            raise E.bad_request(f"the kind in the data ({kind}) does not match the expected kind ({res.kind})")
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind

    def _validate(self, res: Resource, obj: Obj, old: Obj | None) -> None:
        errs = validate_object_meta(res, obj, old)
        if res.crd is not None:
            apply_defaults(obj, res.crd.schema)
            errs += validate_custom_resource(obj, res.crd.schema, old)
        elif res.plural == "secrets":
            errs += validate_secret(obj, old)
        if errs:
            raise E.invalid_object(res.kind, res.group, _meta(obj).get("name", ""), errs)

    # ------------------------------------------------------------ writes

    def create(
        self, res: Resource, namespace: str | None, body: Any, dry_run: bool, field_validation: str
    ) -> WriteResult:
        self._check_writable(res)
        warnings = self._decode(res, body, field_validation)
        obj: Obj = body
        self._check_type(res, obj)
        # NamespaceLifecycle admission runs before validation, so a missing namespace wins over a 422.
        if res.namespaced and not self.namespace_exists(namespace or ""):
            raise E.not_found("namespaces", "", namespace or "")
        if res.namespaced and self.namespace_terminating(namespace or ""):
            who = f'{E.qualified(res.plural, res.group)} "{_meta(obj).get("name", "")}"'
            raise E.ApiError(
                403,
                "Forbidden",
                f"{who} is forbidden: unable to create new content in namespace {namespace} because it is being "
                "terminated",
                {"name": _meta(obj).get("name", ""), "group": res.group, "kind": res.plural}
                if res.group
                else {"name": _meta(obj).get("name", ""), "kind": res.plural},
            )
        meta = _meta(obj)
        if res.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise E.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choices(_GENERATE_ALPHABET, k=5))
        for system in (
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "generation",
            "managedFields",
        ):
            meta.pop(system, None)
        if res.status_subresource and res.crd is not None:
            obj.pop("status", None)
        if res.plural == "secrets":
            normalise_secret(obj)
        self._validate(res, obj, None)
        if self.find(res, namespace, meta["name"]) is not None:
            raise E.already_exists(res.plural, res.group, meta["name"])
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if res.crd is not None:
            meta["generation"] = 1
        meta["managedFields"] = [self._managed_entry(res, obj, "")]
        if not dry_run:
            meta["resourceVersion"] = self._next_rv()
            self._bucket(res)[(namespace or "", meta["name"])] = copy.deepcopy(obj)
            self._wrote()
        return WriteResult(201, self.present(res, obj), warnings)

    def update(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        body: Any,
        subresource: str,
        dry_run: bool,
        field_validation: str,
        require_rv: bool = True,
    ) -> WriteResult:
        self._check_writable(res)
        warnings = self._decode(res, body, field_validation)
        obj: Obj = body
        self._check_type(res, obj)
        meta = _meta(obj)
        if meta.get("name", "") != name:
            raise E.bad_request(
                f"the name of the object ({meta.get('name', '')}) does not match the name on the URL ({name})"
            )
        if res.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise E.bad_request("the namespace of the provided object does not match the namespace sent on the request")
        current = self.find(res, namespace, name)
        if current is None:
            raise E.not_found(res.plural, res.group, name)
        rv = meta.get("resourceVersion")
        if not rv and require_rv and res.crd is not None:
            raise E.invalid_object(
                res.kind,
                res.group,
                name,
                [E.invalid("metadata.resourceVersion", E.GoRaw("0x0"), "must be specified for an update")],
            )
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise E.conflict(res.plural, res.group, name, E.MODIFIED)
        old = copy.deepcopy(current)
        if res.crd is not None:
            apply_defaults(old, res.crd.schema)
        if subresource == "status":
            # The status endpoint changes status only; everything else is taken from the stored object.
            new = copy.deepcopy(old)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
            obj = new
        elif res.status_subresource:
            if "status" in old:
                obj["status"] = copy.deepcopy(old["status"])
            else:
                obj.pop("status", None)
        meta = _meta(obj)
        old_meta = old["metadata"]
        for system in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "generateName",
        ):
            if system in old_meta:
                meta[system] = old_meta[system]
            else:
                meta.pop(system, None)
        meta.pop("selfLink", None)
        meta.pop("managedFields", None)
        if res.plural == "secrets":
            normalise_secret(obj)
        self._validate(res, obj, old)
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise E.invalid_object(
                    res.kind,
                    res.group,
                    name,
                    [
                        E.forbidden_field(
                            "metadata.finalizers", "no new finalizers can be added if the object is being deleted"
                        )
                    ],
                )
        meta["resourceVersion"] = old_meta["resourceVersion"]
        meta["managedFields"] = copy.deepcopy(old_meta.get("managedFields", []))
        if _strip_for_compare(obj) == _strip_for_compare(old):
            return WriteResult(200, self.present(res, current), warnings)
        if res.crd is not None and _spec_part(obj, res) != _spec_part(old, res):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        entry = self._managed_entry(res, obj, subresource)
        meta["managedFields"] = [
            e
            for e in meta["managedFields"]
            if (e.get("manager"), e.get("operation"), e.get("subresource", ""))
            != (entry["manager"], entry["operation"], subresource)
        ] + [entry]
        if dry_run:
            return WriteResult(200, self.present(res, obj), warnings)
        meta["resourceVersion"] = self._next_rv()
        self._bucket(res)[(namespace or "", name)] = copy.deepcopy(obj)
        self._wrote()
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(res, namespace or "", name, "Background")
        return WriteResult(200, self.present(res, obj), warnings)

    def _managed_entry(self, res: Resource, obj: Obj, subresource: str) -> Obj:
        """A managedFields entry shaped like the real one; its field set is the whole object (not per-manager)."""
        if subresource == "status":
            fields = {"f:status": _fields_v1(obj.get("status"))}
        else:
            fields = {
                f"f:{k}": _fields_v1(v)
                for k, v in obj.items()
                if k not in ("apiVersion", "kind", "metadata") and not (k == "status" and res.status_subresource)
            }
            meta = {
                f"f:{k}": _fields_v1(v)
                for k, v in obj["metadata"].items()
                if k in ("labels", "annotations", "finalizers", "ownerReferences", "generateName")
            }
            if meta:
                fields["f:metadata"] = meta
        entry: Obj = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": res.api_version,
            "time": now_rfc3339(),
            "fieldsType": "FieldsV1",
            "fieldsV1": fields,
        }
        if subresource:
            entry["subresource"] = subresource
        return entry

    def patch(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        patch: Any,
        content_type: str,
        subresource: str,
        dry_run: bool,
        field_validation: str,
    ) -> WriteResult:
        self._check_writable(res)
        current = self.find(res, namespace, name)
        if content_type == "application/apply-patch+yaml":
            if not isinstance(patch, dict):
                raise E.bad_request("error decoding YAML: apply patch must be an object")
            if current is None:
                if subresource:
                    raise E.not_found(res.plural, res.group, name)
                patch.setdefault("metadata", {}).setdefault("name", name)
                return self.create(res, namespace, patch, dry_run, field_validation)
        if current is None:
            raise E.not_found(res.plural, res.group, name)
        base = self.present(res, current) if res.storage is None else copy.deepcopy(current)
        try:
            if content_type == "application/json-patch+json":
                patched = json_patch(base, patch)
            else:
                if not isinstance(patch, dict):
                    raise E.bad_request("json: cannot unmarshal array into Go value of type map[string]interface {}")
                patched = merge_patch(base, patch)
        except PatchError as exc:
            raise E.ApiError(422, "Invalid", str(exc)) from exc
        if not isinstance(patched, dict):
            raise E.bad_request("the patch produced something other than an object")
        # The patched object keeps the stored resourceVersion, so only a patch that sets another one conflicts.
        return self.update(res, namespace, name, patched, subresource, dry_run, field_validation, require_rv=False)

    def delete(self, res: Resource, namespace: str | None, name: str, options: Obj, dry_run: bool) -> WriteResult:
        self._check_writable(res)
        current = self.find(res, namespace, name)
        if current is None:
            raise E.not_found(res.plural, res.group, name)
        meta = current["metadata"]
        problem = _delete_options_problem(options)
        if problem:
            raise E.bad_request(f'DeleteOptions in version "v1" cannot be handled as a DeleteOptions: {problem}')
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != meta.get("uid"):
            raise E.conflict(
                res.plural,
                res.group,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta.get('uid')}",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
            raise E.conflict(
                res.plural,
                res.group,
                name,
                f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                f"ResourceVersion in object meta: {meta.get('resourceVersion')}",
            )
        policy = options.get("propagationPolicy") or ("Orphan" if options.get("orphanDependents") else "Background")
        if policy not in ("Background", "Foreground", "Orphan"):
            raise E.invalid_object(
                "DeleteOptions",
                "",
                "",
                [E.not_supported("propagationPolicy", policy, ["Foreground", "Background", "Orphan", "nil"])],
            )
        if res.plural == "namespaces" and not res.group:
            return self._delete_namespace(res, current, dry_run)
        finalizers = list(meta.get("finalizers") or [])
        pending = bool(finalizers) or policy == "Foreground"
        if dry_run:
            if pending:
                preview = copy.deepcopy(current)
                preview["metadata"].setdefault("deletionTimestamp", now_rfc3339())
                return WriteResult(200, self.present(res, preview))
            return WriteResult(200, self._deleted_status(res, current))
        if not pending:
            self._remove(res, namespace or "", name, policy)
            return WriteResult(200, self._deleted_status(res, current))
        self._mark_deleting(res, current, policy)
        response = self.present(res, current)
        if policy == "Foreground":
            self._collect(res, current, "Foreground")
            rest = [f for f in current["metadata"].get("finalizers", []) if f != "foregroundDeletion"]
            if rest:
                current["metadata"]["finalizers"] = rest
                current["metadata"]["resourceVersion"] = self._next_rv()
            else:
                self._remove(res, namespace or "", name, "Background")
        # kube-apiserver answers 200 with the object for a pending deletion; 202 only for the legacy
        # orphanDependents=false request (a choice it keeps for old clients).
        return WriteResult(202 if options.get("orphanDependents") is False else 200, response)

    def _delete_namespace(self, res: Resource, namespace: Obj, dry_run: bool) -> WriteResult:
        """Namespace deletion, with the namespace controller's work done at once: the namespace turns Terminating,
        its objects are deleted (those with finalizers are only marked), and it goes once it is empty."""
        name = namespace["metadata"]["name"]
        if dry_run:
            preview = copy.deepcopy(namespace)
            preview["metadata"].setdefault("deletionTimestamp", now_rfc3339())
            preview.setdefault("status", {})["phase"] = "Terminating"
            return WriteResult(200, preview)
        namespace["metadata"].setdefault("deletionTimestamp", now_rfc3339())
        namespace.setdefault("status", {})["phase"] = "Terminating"
        namespace["metadata"]["resourceVersion"] = self._next_rv()
        self._wrote()
        response = copy.deepcopy(namespace)
        for key, bucket in list(self.objects.items()):
            dep_res = self.resources.get(key)
            if dep_res is None or not dep_res.namespaced:
                continue
            for (ns, obj_name), obj in list(bucket.items()):
                if ns != name:
                    continue
                if obj["metadata"].get("finalizers"):
                    if not obj["metadata"].get("deletionTimestamp"):
                        self._mark_deleting(dep_res, obj, "Background")
                else:
                    self._remove(dep_res, ns, obj_name, "Background")
        if self._namespace_empty(name) and self.find(res, None, name) is not None:
            self._remove(res, "", name, "Background")
        return WriteResult(200, response)

    def _namespace_empty(self, name: str) -> bool:
        return not any(ns == name for bucket in self.objects.values() for (ns, _) in bucket)

    def namespace_terminating(self, name: str) -> bool:
        namespace = self.objects.get(("", "namespaces"), {}).get(("", name))
        return bool(namespace and namespace["metadata"].get("deletionTimestamp"))

    def _deleted_status(self, res: Resource, obj: Obj) -> Obj:
        if not res.group and res.plural in _RETURN_DELETED:
            return self.present(res, obj)
        details: Obj = {"name": obj["metadata"]["name"]}
        if res.group:
            details["group"] = res.group
        details["kind"] = res.plural
        details["uid"] = obj["metadata"].get("uid")
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def _mark_deleting(self, res: Resource, obj: Obj, policy: str) -> None:
        meta = obj["metadata"]
        if not meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = now_rfc3339()
            meta["deletionGracePeriodSeconds"] = 0
            if res.crd is not None:
                meta["generation"] = int(meta.get("generation", 1)) + 1
        if policy == "Foreground" and "foregroundDeletion" not in meta.setdefault("finalizers", []):
            meta["finalizers"].append("foregroundDeletion")
        meta["resourceVersion"] = self._next_rv()
        self._wrote()

    def _remove(self, res: Resource, namespace: str, name: str, policy: str) -> None:
        obj = self._bucket(res).pop((namespace, name), None)
        if obj is None:
            return
        self._wrote()
        self._collect(res, obj, policy)
        if namespace and self.namespace_terminating(namespace) and self._namespace_empty(namespace):
            self._remove(self.resources[("", "namespaces")], "", namespace, "Background")

    def _collect(self, owner_res: Resource, owner: Obj, policy: str) -> None:
        """The garbage collector, run at once: act on every object whose ownerReferences name this owner."""
        uid = owner["metadata"].get("uid")
        alive = {o["metadata"].get("uid") for bucket in self.objects.values() for o in bucket.values()}
        alive.discard(uid)
        for res_key, bucket in list(self.objects.items()):
            dep_res = self.resources.get(res_key)
            if dep_res is None:
                continue
            for (ns, name), dep in list(bucket.items()):
                refs = dep["metadata"].get("ownerReferences") or []
                if not any(r.get("uid") == uid for r in refs):
                    continue
                if owner_res.namespaced and ns != owner["metadata"].get("namespace"):
                    continue
                if policy == "Orphan":
                    dep["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                    if not dep["metadata"]["ownerReferences"]:
                        del dep["metadata"]["ownerReferences"]
                    dep["metadata"]["resourceVersion"] = self._next_rv()
                    self._wrote()
                elif not any(r.get("uid") in alive for r in refs if r.get("uid") != uid):
                    if dep["metadata"].get("finalizers") or policy == "Foreground":
                        self._mark_deleting(dep_res, dep, "Background")
                        if not dep["metadata"].get("finalizers"):
                            self._remove(dep_res, ns, name, policy)
                    else:
                        self._remove(dep_res, ns, name, policy)

    def _check_writable(self, res: Resource) -> None:
        if res.storage is not None:
            raise E.method_not_allowed()


# Built-in storages with ReturnDeletedObject: their DELETE answers with the object, not a Status.
_RETURN_DELETED = {"pods", "services", "serviceaccounts", "persistentvolumeclaims", "namespaces"}
_META_STRINGS = (
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
)
_REF_STRINGS = ("apiVersion", "kind", "name", "uid")


def _meta_type_problem(meta: Obj) -> str:
    """Where ObjectMeta JSON does not fit its Go types (the decoder's 400); nulls count as absent."""
    for key in [k for k, v in meta.items() if v is None]:
        del meta[key]
    for key in _META_STRINGS:
        if key in meta and not isinstance(meta[key], str):
            return f"into Go struct field ObjectMeta.metadata.{key} of type string"
    for key in ("generation", "deletionGracePeriodSeconds"):
        if key in meta and (not isinstance(meta[key], int) or isinstance(meta[key], bool)):
            return f"into Go struct field ObjectMeta.metadata.{key} of type int64"
    for key in ("labels", "annotations"):
        values = meta.get(key, {})
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            return f"into Go struct field ObjectMeta.metadata.{key} of type map[string]string"
    finalizers = meta.get("finalizers", [])
    if not isinstance(finalizers, list) or not all(isinstance(f, str) for f in finalizers):
        return "into Go struct field ObjectMeta.metadata.finalizers of type []string"
    refs = meta.get("ownerReferences", [])
    if not isinstance(refs, list):
        return "into Go struct field ObjectMeta.metadata.ownerReferences of type []v1.OwnerReference"
    for ref in refs:
        if not isinstance(ref, dict):
            return "into Go value of type v1.OwnerReference"
        for key in _REF_STRINGS:
            if key in ref and not isinstance(ref[key], str):
                return f"into Go struct field OwnerReference.metadata.ownerReferences.{key} of type string"
        for key in ("controller", "blockOwnerDeletion"):
            if key in ref and ref[key] is not None and not isinstance(ref[key], bool):
                return f"into Go struct field OwnerReference.metadata.ownerReferences.{key} of type bool"
    if not isinstance(meta.get("managedFields", []), list):
        return "into Go struct field ObjectMeta.metadata.managedFields of type []v1.ManagedFieldsEntry"
    return ""


def _delete_options_problem(options: Obj) -> str:
    checks: list[tuple[str, type | tuple[type, ...]]] = [
        ("preconditions", dict),
        ("propagationPolicy", str),
        ("dryRun", list),
        ("gracePeriodSeconds", int),
        ("orphanDependents", bool),
    ]
    for key, wanted in checks:
        if options.get(key) is not None and not isinstance(options[key], wanted):
            return f"json: cannot unmarshal into Go struct field DeleteOptions.{key}"
    pre = options.get("preconditions") or {}
    for key in ("uid", "resourceVersion"):
        if pre.get(key) is not None and not isinstance(pre[key], str):
            return f"json: cannot unmarshal into Go struct field Preconditions.preconditions.{key} of type string"
    return ""


def _top_type_problem(res: Resource, obj: Obj) -> str:
    for key in ("apiVersion", "kind"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            return f"into Go struct field {res.kind}.{key} of type string"
    if res.plural == "secrets":
        if obj.get("type") is not None and not isinstance(obj["type"], str):
            return "into Go struct field Secret.type of type v1.SecretType"
        if obj.get("immutable") is not None and not isinstance(obj["immutable"], bool):
            return "into Go struct field Secret.immutable of type bool"
        string_data = obj.get("stringData") or {}
        if not isinstance(string_data, dict) or not all(isinstance(v, str) for v in string_data.values()):
            return "into Go struct field Secret.stringData of type map[string]string"
    return ""


def _compact(obj: Obj) -> str:
    import json

    return json.dumps(obj, separators=(",", ":"))


def _strip_for_compare(obj: Obj) -> Obj:
    out = copy.deepcopy(obj)
    out["metadata"].pop("resourceVersion", None)
    out["metadata"].pop("managedFields", None)
    return out


def _fields_v1(value: Any) -> Obj:
    if isinstance(value, dict) and value:
        return {".": {}, **{f"f:{k}": _fields_v1(v) for k, v in value.items()}}
    return {}


def _spec_part(obj: Obj, res: Resource) -> Obj:
    skip = {"metadata", "status"} if res.status_subresource else {"metadata"}
    return {k: v for k, v in obj.items() if k not in skip}


def validate_object_meta(res: Resource, obj: Obj, old: Obj | None) -> list[E.FieldError]:
    """ObjectMeta rules: name format per kind, labels, annotations keys, ownerReferences fields."""
    meta = _meta(obj)
    errs: list[E.FieldError] = []
    name = meta.get("name")
    if not name:
        errs.append(E.required("metadata.name", "name or generateName is required"))
    elif old is None:
        if res.plural == "namespaces":
            if len(name) > 63:
                errs.append(E.invalid("metadata.name", name, "must be no more than 63 characters"))
            if not _LABEL.match(name):
                errs.append(E.invalid("metadata.name", name, LABEL_MSG))
        else:
            if len(name) > 253:
                errs.append(E.invalid("metadata.name", name, "must be no more than 253 characters"))
            if not _SUBDOMAIN.match(name):
                errs.append(E.invalid("metadata.name", name, SUBDOMAIN_MSG))
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        errs.append(E.FieldError("type_invalid", "metadata.labels", "string", "must be a map"))
        labels = {}
    for key, value in labels.items():
        for problem in label_key_problems(key):
            errs.append(E.invalid("metadata.labels", key, problem))
        if not isinstance(value, str):
            errs.append(E.FieldError("type_invalid", f"metadata.labels.{key}", value, "must be a string"))
            continue
        for problem in label_value_problems(value):
            errs.append(E.invalid("metadata.labels", value, problem))
    annotations = meta.get("annotations") or {}
    for key in annotations:
        for problem in label_key_problems(key):
            errs.append(E.invalid("metadata.annotations", key, problem))
    if sum(len(k) + len(v) for k, v in annotations.items()) > 256 * 1024:
        errs.append(E.FieldError("too_long", "metadata.annotations", "", "may not be more than 262144 bytes"))
    for i, ref in enumerate(meta.get("ownerReferences") or []):
        where = f"metadata.ownerReferences[{i}]"
        for needed in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(needed):
                errs.append(E.invalid(f"{where}.{needed}", "", f"{needed} must not be empty"))
    return errs


def normalise_secret(obj: Obj) -> None:
    """stringData is write-only: merged into data (base64) before validation, as the real API does."""
    data = obj.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise E.bad_request('Secret in version "v1" cannot be handled as a Secret: data must be an object')
    for value in data.values():
        if not isinstance(value, str):
            raise E.bad_request(
                f'Secret in version "v1" cannot be handled as a Secret: json: cannot unmarshal '
                f"{type(value).__name__} into Go struct field Secret.data of type []uint8"
            )
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise E.bad_request(
                f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data at input byte 0 ({exc})'
            ) from exc
    for key, value in (obj.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    if data or "data" in obj:
        obj["data"] = data
    obj.setdefault("type", "Opaque")


def validate_secret(obj: Obj, old: Obj | None) -> list[E.FieldError]:
    errs: list[E.FieldError] = []
    data = obj.get("data") or {}
    for key in data:
        if not _CONFIG_KEY.match(key) or key in (".", ".."):
            errs.append(E.invalid(f"data[{key}]", key, CONFIG_KEY_MSG))
    size = sum(len(base64.b64decode(v)) for v in data.values())
    if size > 1024 * 1024:
        errs.append(E.FieldError("too_long", "data", "", "may not be more than 1048576 bytes"))
    kind = obj.get("type", "Opaque")
    if kind == "kubernetes.io/basic-auth" and "username" not in data and "password" not in data:
        # The real rule: either key may be empty, but at least one of them must be present.
        errs.append(E.required("data[username]"))
        errs.append(E.required("data[password]"))
    if kind == "kubernetes.io/tls":
        for key in ("tls.crt", "tls.key"):
            if key not in data:
                errs.append(E.required(f"data[{key}]"))
    if kind == "kubernetes.io/service-account-token":
        annotations = obj["metadata"].get("annotations") or {}
        if "kubernetes.io/service-account.name" not in annotations:
            errs.append(E.required("metadata.annotations[kubernetes.io/service-account.name]"))
    if old is not None:
        if old.get("type", "Opaque") != kind:
            errs.append(E.invalid("type", kind, "field is immutable"))
        if old.get("immutable"):
            if obj.get("data") != old.get("data"):
                errs.append(E.forbidden_field("data", "field is immutable when `immutable` is set"))
            if not obj.get("immutable"):
                errs.append(E.forbidden_field("immutable", "field is immutable when `immutable` is set"))
    return errs


def event_to_events_v1(event: Obj) -> Obj:
    """The events.k8s.io/v1 shape of a core v1 Event (same storage, renamed fields)."""
    out: Obj = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": event.get("metadata", {})}
    renames = {
        "involvedObject": "regarding",
        "message": "note",
        "source": "deprecatedSource",
        "firstTimestamp": "deprecatedFirstTimestamp",
        "lastTimestamp": "deprecatedLastTimestamp",
        "count": "deprecatedCount",
    }
    for key, value in event.items():
        if key in ("apiVersion", "kind", "metadata"):
            continue
        out[renames.get(key, key)] = value
    source = event.get("source") or {}
    out["reportingController"] = event.get("reportingComponent") or source.get("component", "")
    out["reportingInstance"] = event.get("reportingInstance") or source.get("host", "")
    out.pop("reportingComponent", None)
    if not out.get("eventTime"):
        out["eventTime"] = None
    return out
