"""The CloudNativePG CRDs as the API server uses them: pruning, defaulting and validation of custom resources.

The CRD files (devkube/crds, vendored from CloudNativePG v1.30.0, or $CNPG_CRDS_DIR) are parsed once per process and
cached. For each written object the server, like kube-apiserver, (1) prunes fields the structural schema does not
declare (reporting them for fieldValidation), (2) drops nulls of non-nullable fields and applies `default`s, (3)
validates against the `openAPIV3Schema` (type, required, enum, minimum/maximum, exclusive bounds,
minLength/maxLength, pattern, minItems/maxItems, min/maxProperties, format date-time/byte, x-kubernetes-int-or-
string, anyOf/allOf/oneOf/not, x-kubernetes-list-type set/map uniqueness) and (4) evaluates `x-kubernetes-
validations` with cel.py (cel-expr-python); transition rules (using `oldSelf`) run only on updates where the old
value exists at the same path, correlated through object properties, map values and list-type=map keys, as the real
server does. Not modelled: validation ratcheting (1.30+ tolerates unchanged invalid fields on update),
`messageExpression`, CEL cost limits, `reason`/`fieldPath` on rules (none in these CRDs), CNPG's admission webhooks.
"""

from __future__ import annotations

import base64
import binascii
import copy
import os
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from . import cel
from .errors import FieldError, invalid, not_supported, required

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - the C loader ships with the PyYAML wheels
    from yaml import SafeLoader as _Loader

Schema = dict[str, Any]


def crd_dir() -> Path:
    """Where the CRD files are: $CNPG_CRDS_DIR, else the copy vendored beside this module (devkube/crds)."""
    env = os.environ.get("CNPG_CRDS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "crds"


@dataclass(frozen=True)
class CrdVersion:
    """One served version of a CRD, with what the server needs to handle its objects."""

    group: str
    version: str
    kind: str
    list_kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    namespaced: bool
    schema: Schema
    status_subresource: bool
    scale: dict[str, str] | None


def load_crds(directory: str | None = None) -> tuple[CrdVersion, ...]:
    """Parse every CRD file once per process (the C YAML loader reads all of them in a fraction of a second)."""
    return _load_crds(str(Path(directory) if directory else crd_dir()))


@cache
def _load_crds(directory: str) -> tuple[CrdVersion, ...]:
    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(f"CRD directory {path} not found (set CNPG_CRDS_DIR)")
    out: list[CrdVersion] = []
    for file in sorted(path.glob("*.yaml")):
        with file.open() as fh:
            doc = yaml.load(fh, Loader=_Loader)
        if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        names = spec["names"]
        for ver in spec["versions"]:
            if not ver.get("served", False):
                continue
            sub = ver.get("subresources") or {}
            out.append(
                CrdVersion(
                    group=spec["group"],
                    version=ver["name"],
                    kind=names["kind"],
                    list_kind=names.get("listKind", names["kind"] + "List"),
                    plural=names["plural"],
                    singular=names.get("singular", names["kind"].lower()),
                    short_names=tuple(names.get("shortNames", ())),
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    schema=ver["schema"]["openAPIV3Schema"],
                    status_subresource="status" in sub,
                    scale=sub.get("scale"),
                )
            )
    return tuple(out)


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ---------------------------------------------------------------- pruning


def prune(value: Any, schema: Schema, path: str, unknown: list[str]) -> Any:
    """Drop undeclared fields in place (recording their paths) and return the value."""
    if isinstance(value, dict) and (schema.get("type") == "object" or "properties" in schema):
        props: dict[str, Schema] = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        embedded = schema.get("x-kubernetes-embedded-resource", False)
        for key in list(value):
            sub = props.get(key)
            if sub is not None:
                prune(value[key], sub, _child(path, key), unknown)
            elif isinstance(extra, dict):
                prune(value[key], extra, _child(path, key), unknown)
            elif extra is True or preserve or (embedded and key in ("apiVersion", "kind", "metadata")):
                continue
            else:
                unknown.append(_child(path, key))
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            prune(item, schema["items"], f"{path}[{i}]", unknown)
    return value


# ---------------------------------------------------------------- defaulting


def apply_defaults(value: Any, schema: Schema) -> Any:
    """Drop nulls of non-nullable properties, then fill `default`s where a property is missing."""
    if isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties") or {}
        for key, sub in props.items():
            if key in value and value[key] is None and not sub.get("nullable", False):
                del value[key]
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                apply_defaults(value[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in list(value):
                if key not in props:
                    apply_defaults(value[key], extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(item, schema["items"])
    return value


# ---------------------------------------------------------------- validation

_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for python_type, name in _TYPE_NAMES.items():  # bool before int: bool is an int subclass
        if isinstance(value, python_type):
            return name
    return type(value).__name__


def _type_ok(value: Any, wanted: str) -> bool:
    actual = _json_type(value)
    if wanted == "number":
        return actual in ("integer", "number")
    if wanted == "integer" and isinstance(value, float) and value.is_integer():
        return True
    return actual == wanted


def _fmt_number(n: Any) -> str:
    if isinstance(n, float) and n.is_integer():
        return str(int(n))
    return str(n)


_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _format_ok(value: str, fmt: str) -> bool:
    if fmt in ("date-time", "datetime"):
        if not _DATE_TIME.match(value):
            return False
        try:
            datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
        except ValueError:
            return False
        return True
    if fmt == "byte":
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return False
        return True
    return True


class Validator:
    """Validates one object against a structural schema, collecting `FieldError`s like kube-openapi."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def validate(self, value: Any, schema: Schema, path: str) -> None:
        """Structural validation only; CEL rules run in a second pass (`check_rules`) like the real server."""
        before = len(self.errors)
        self._schema(value, schema, path)
        if len(self.errors) == before:
            self._children(value, schema, path)

    def _schema(self, value: Any, schema: Schema, path: str) -> None:
        name = path or "body"
        if value is None:
            if not schema.get("nullable", False) and ("type" in schema or schema.get("x-kubernetes-int-or-string")):
                wanted = schema.get("type", "string")
                self.errors.append(
                    FieldError("type_invalid", path, "null", f'{name} in body must be of type {wanted}: "null"')
                )
            return
        if schema.get("x-kubernetes-int-or-string"):
            if not (isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))):
                self.errors.append(
                    FieldError(
                        "type_invalid",
                        path,
                        _json_type(value),
                        f'{name} in body must be of type integer,string: "{_json_type(value)}"',
                    )
                )
                return
        elif "type" in schema and not _type_ok(value, schema["type"]):
            self.errors.append(
                FieldError(
                    "type_invalid",
                    path,
                    _json_type(value),
                    f'{name} in body must be of type {schema["type"]}: "{_json_type(value)}"',
                )
            )
            return
        self._keywords(value, schema, path, name)
        for combinator in ("allOf", "anyOf", "oneOf", "not"):
            if combinator in schema:
                self._combinator(combinator, value, schema[combinator], path, name)

    def _keywords(self, value: Any, schema: Schema, path: str, name: str) -> None:
        errs = self.errors
        if "enum" in schema and value not in schema["enum"]:
            errs.append(not_supported(path, value, schema["enum"]))
        if isinstance(value, int | float) and not isinstance(value, bool):
            if "minimum" in schema:
                low = schema["minimum"]
                if schema.get("exclusiveMinimum") and value <= low:
                    errs.append(invalid(path, value, f"{name} in body should be greater than {_fmt_number(low)}"))
                elif value < low:
                    errs.append(
                        invalid(path, value, f"{name} in body should be greater than or equal to {_fmt_number(low)}")
                    )
            if "maximum" in schema:
                high = schema["maximum"]
                if schema.get("exclusiveMaximum") and value >= high:
                    errs.append(invalid(path, value, f"{name} in body should be less than {_fmt_number(high)}"))
                elif value > high:
                    errs.append(
                        invalid(path, value, f"{name} in body should be less than or equal to {_fmt_number(high)}")
                    )
            if "multipleOf" in schema and value % schema["multipleOf"] != 0:
                errs.append(
                    invalid(path, value, f"{name} in body should be a multiple of {_fmt_number(schema['multipleOf'])}")
                )
        if isinstance(value, str):
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                errs.append(FieldError("too_long", path, value, f"may not be more than {schema['maxLength']} bytes"))
            if "minLength" in schema and len(value) < schema["minLength"]:
                errs.append(invalid(path, value, f"{name} in body should be at least {schema['minLength']} chars long"))
            if "pattern" in schema and re.search(schema["pattern"], value) is None:
                errs.append(invalid(path, value, f"{name} in body should match '{schema['pattern']}'"))
            fmt = schema.get("format")
            if fmt and not _format_ok(value, fmt):
                errs.append(FieldError("type_invalid", path, value, f'{name} in body must be of type {fmt}: "{value}"'))
        if isinstance(value, list):
            if "maxItems" in schema and len(value) > schema["maxItems"]:
                errs.append(FieldError("too_many", path, len(value), f"must have at most {schema['maxItems']} items"))
            if "minItems" in schema and len(value) < schema["minItems"]:
                errs.append(
                    invalid(path, len(value), f"{name} in body should have at least {schema['minItems']} items")
                )
            self._list_type(value, schema, path)
        if isinstance(value, dict):
            for key in schema.get("required") or ():
                if key not in value:
                    errs.append(required(_child(path, key)))
            if "maxProperties" in schema and len(value) > schema["maxProperties"]:
                errs.append(
                    FieldError("too_many", path, len(value), f"must have at most {schema['maxProperties']} items")
                )
            if "minProperties" in schema and len(value) < schema["minProperties"]:
                errs.append(
                    invalid(
                        path, len(value), f"{name} in body should have at least {schema['minProperties']} properties"
                    )
                )

    def _list_type(self, value: list[Any], schema: Schema, path: str) -> None:
        kind = schema.get("x-kubernetes-list-type")
        if kind == "set":
            seen: list[Any] = []
            for i, item in enumerate(value):
                if item in seen:
                    self.errors.append(FieldError("duplicate", f"{path}[{i}]", item))
                seen.append(item)
        elif kind == "map":
            keys = schema.get("x-kubernetes-list-map-keys") or []
            seen_keys: list[tuple[Any, ...]] = []
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    continue
                key = tuple(item.get(k) for k in keys)
                if key in seen_keys:
                    shown = {k: item.get(k) for k in keys}
                    self.errors.append(FieldError("duplicate", f"{path}[{i}]", shown))
                seen_keys.append(key)

    def _combinator(self, which: str, value: Any, subs: Any, path: str, name: str) -> None:
        def passes(sub: Schema) -> bool:
            probe = Validator()
            probe._schema(value, sub, path)
            return not probe.errors

        if which == "not":
            if passes(subs):
                self.errors.append(invalid(path, value, f"{name} in body must not validate the schema (not)"))
        elif which == "allOf":
            for sub in subs:
                self._schema(value, sub, path)
        elif which == "anyOf":
            if not any(passes(sub) for sub in subs):
                self.errors.append(invalid(path, value, f"{name} in body must validate at least one schema (anyOf)"))
        elif which == "oneOf":
            if sum(passes(sub) for sub in subs) != 1:
                detail = f"{name} in body must validate one and only one schema (oneOf)"
                self.errors.append(invalid(path, value, detail))

    def _children(self, value: Any, schema: Schema, path: str) -> None:
        if isinstance(value, dict):
            props: dict[str, Schema] = schema.get("properties") or {}
            extra = schema.get("additionalProperties")
            for key, item in value.items():
                sub = props.get(key) or (extra if isinstance(extra, dict) else None)
                if sub is not None:
                    self.validate(item, sub, _child(path, key))
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                self.validate(item, schema["items"], f"{path}[{i}]")


def check_rules(value: Any, schema: Schema, path: str, old: Any, errors: list[FieldError]) -> None:
    """Evaluate `x-kubernetes-validations` children first, with `oldSelf` where the old value correlates."""
    if isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        old_dict = old if isinstance(old, dict) else {}
        for key, item in value.items():
            sub = props.get(key) or (extra if isinstance(extra, dict) else None)
            if sub is not None:
                check_rules(item, sub, _child(path, key), old_dict.get(key, cel._MISSING), errors)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        olds = _correlate_list(value, old, schema)
        for i, item in enumerate(value):
            check_rules(item, schema["items"], f"{path}[{i}]", olds[i], errors)
    for rule in schema.get("x-kubernetes-validations") or ():
        src = rule["rule"]
        transition = cel.uses_old_self(src)
        if transition and (old is cel._MISSING or rule.get("optionalOldSelf")):
            continue
        type_name = schema.get("type", "object" if isinstance(value, dict) else _json_type(value))
        try:
            ok = cel.evaluate(src, value, old) if transition else cel.evaluate(src, value)
        except cel.CelError as exc:
            errors.append(invalid(path, type_name, f"{exc} evaluating rule: {rule.get('message', src)}"))
            continue
        if ok is not True:
            message = rule.get("message") or f"failed rule: {src}"
            errors.append(FieldError("invalid", path, type_name, message, ratchets=not transition))


def _correlate_list(value: list[Any], old: Any, schema: Schema) -> list[Any]:
    """Old values for list items: only list-type=map lists correlate (by their keys)."""
    missing = [cel._MISSING] * len(value)
    if not isinstance(old, list) or schema.get("x-kubernetes-list-type") != "map":
        return missing
    keys = schema.get("x-kubernetes-list-map-keys") or []
    by_key = {tuple(o.get(k) for k in keys): o for o in old if isinstance(o, dict)}
    return [
        by_key.get(tuple(v.get(k) for k in keys), cel._MISSING) if isinstance(v, dict) else cel._MISSING for v in value
    ]


def validate_custom_resource(obj: dict[str, Any], schema: Schema, old: dict[str, Any] | None) -> list[FieldError]:
    """Schema, then list-type, then CEL errors for everything but metadata (checked by the object-meta rules)."""
    validator = Validator()
    props: dict[str, Schema] = schema.get("properties") or {}
    for key in schema.get("required") or ():
        if key not in obj:
            validator.errors.append(required(key))
    for key, sub in props.items():
        if key in ("metadata", "apiVersion", "kind") or key not in obj:
            continue
        validator.validate(obj[key], sub, key)
    errors = _ratchet(validator.errors, obj, old)
    # As in the CR strategy: type and enum failures block the CEL rules, reported by one extra error.
    if any(e.kind in ("type_invalid", "not_supported") for e in errors):
        errors.append(
            invalid(
                "<nil>",
                None,
                "some validation rules were not checked because the object was invalid; "
                "correct the existing errors to complete validation",
            )
        )
        return errors
    body = {k: v for k, v in obj.items() if k in props and k not in ("metadata", "apiVersion", "kind")}
    old_body: Any = cel._MISSING
    if old is not None:
        old_body = {k: v for k, v in old.items() if k in props and k not in ("metadata", "apiVersion", "kind")}
    root = {k: v for k, v in schema.items() if k != "x-kubernetes-validations"}
    rule_errors: list[FieldError] = []
    check_rules(body, root, "", old_body, rule_errors)
    return errors + _ratchet(rule_errors, obj, old)


def _ratchet(errors: list[FieldError], obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    """Validation ratcheting (GA in Kubernetes 1.33): on update, errors about values left unchanged are dropped.

    A missing required field ratchets when its parent object is unchanged. List items correlate by index here,
    which is slightly more lenient than the API's key-based correlation for list-type=map lists."""
    if old is None:
        return errors
    kept: list[FieldError] = []
    for err in errors:
        path = err.field
        if err.kind == "required":
            path = _parent_path(path)
        if err.ratchets and path not in ("", "<nil>"):
            new_value, old_value = _resolve(obj, path), _resolve(old, path)
            if new_value is not cel._MISSING and new_value == old_value:
                continue
        kept.append(err)
    return kept


def _parent_path(path: str) -> str:
    if path.endswith("]"):
        return path[: path.rindex("[")]
    return path.rpartition(".")[0]


def _resolve(node: Any, path: str) -> Any:
    """Follow a field path like `spec.a.b[0].c`; keys may contain dots (map keys), so match the longest key."""
    rest = path
    while rest:
        if rest.startswith("["):
            close = rest.index("]")
            index = rest[1:close]
            if not isinstance(node, list) or not index.isdigit() or int(index) >= len(node):
                return cel._MISSING
            node, rest = node[int(index)], rest[close + 1 :].removeprefix(".")
            continue
        if not isinstance(node, dict):
            return cel._MISSING
        match = ""
        for key in node:
            if rest == key or rest.startswith(key + ".") or rest.startswith(key + "["):
                if len(key) > len(match):
                    match = key
        if not match:
            return cel._MISSING
        node, rest = node[match], rest[len(match) :].removeprefix(".")
    return node
