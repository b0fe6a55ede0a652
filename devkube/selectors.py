"""Label and field selectors with the grammar and the error messages of the Kubernetes API."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import ApiError, bad_request

Predicate = Callable[[dict[str, Any]], bool]

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start "
    "and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for "
    "validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
NAME_PART_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


def label_key_problems(key: str) -> list[str]:
    """`validation.IsQualifiedName`: optional DNS-subdomain prefix, then a 63-character name part."""
    problems: list[str] = []
    prefix, _, name = key.rpartition("/")
    if "/" in key:
        if not prefix:
            problems.append("prefix part must be non-empty")
        elif len(prefix) > 253 or not _PREFIX.match(prefix):
            problems.append("prefix part a lowercase RFC 1123 subdomain must be valid")
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > 63:
        problems.append("name part must be no more than 63 characters")
    elif not _NAME_PART.match(name):
        problems.append(NAME_PART_MSG)
    return problems


def label_value_problems(value: str) -> list[str]:
    problems: list[str] = []
    if len(value) > 63:
        problems.append("must be no more than 63 characters")
    if not _LABEL_VALUE.match(value):
        problems.append(LABEL_VALUE_MSG)
    return problems


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


_SET_REQ = re.compile(r"^\s*(\S+?)\s+(in|notin)\s*\((.*)\)\s*$")
_EQ_REQ = re.compile(r"^\s*([^\s=!]+)\s*(==|=|!=)\s*(\S*)\s*$")
_EXISTS_REQ = re.compile(r"^\s*(!?)\s*([^\s=!(),]+)\s*$")


def parse_label_selector(text: str) -> Predicate:
    """`labels.Parse`: =, ==, !=, in, notin, exists and !exists requirements joined by commas (AND)."""
    requirements: list[tuple[str, str, frozenset[str]]] = []
    if not text.strip():
        return lambda obj: True
    for raw in _split_top_level(text):
        if not raw.strip():
            raise bad_request(f"unable to parse requirement: found '', expected: identifier in {text!r}")
        if m := _SET_REQ.match(raw):
            key, op = m.group(1), m.group(2)
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
        elif m := _EQ_REQ.match(raw):
            key, op, values = m.group(1), ("!=" if m.group(2) == "!=" else "="), frozenset([m.group(3)])
        elif m := _EXISTS_REQ.match(raw):
            key, op, values = m.group(2), ("!exists" if m.group(1) else "exists"), frozenset()
        else:
            raise bad_request(f"unable to parse requirement: invalid label selector: {raw.strip()!r}")
        _check_key(key)
        for value in values:
            _check_value(key, value)
        requirements.append((key, op, values))
    return lambda obj: all(_matches(_labels(obj), *req) for req in requirements)


def _matches(labels: dict[str, str], key: str, op: str, values: frozenset[str]) -> bool:
    if op == "exists":
        return key in labels
    if op == "!exists":
        return key not in labels
    if op in ("=", "in"):
        return labels.get(key) in values
    # != and notin also match objects without the label, as in Kubernetes.
    return labels.get(key) not in values


def _check_key(key: str) -> None:
    problems = label_key_problems(key)
    if problems:
        raise bad_request(f'unable to parse requirement: key: Invalid value: "{key}": {"; ".join(problems)}')


def _check_value(key: str, value: str) -> None:
    problems = label_value_problems(value)
    if problems:
        raise bad_request(
            f'unable to parse requirement: values[0][{key}]: Invalid value: "{value}": {"; ".join(problems)}'
        )


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


# Field selectors each resource supports, mapped to where the value lives in the object.
_COMMON = {"metadata.name": "metadata.name", "metadata.namespace": "metadata.namespace"}
FIELD_LABELS: dict[tuple[str, str], dict[str, str]] = {
    ("", "pods"): {
        **_COMMON,
        "spec.nodeName": "spec.nodeName",
        "spec.restartPolicy": "spec.restartPolicy",
        "spec.schedulerName": "spec.schedulerName",
        "spec.serviceAccountName": "spec.serviceAccountName",
        "spec.hostNetwork": "spec.hostNetwork",
        "status.phase": "status.phase",
        "status.podIP": "status.podIP",
        "status.nominatedNodeName": "status.nominatedNodeName",
    },
    ("", "events"): {
        **_COMMON,
        **{
            f"involvedObject.{f}": f"involvedObject.{f}"
            for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
        },
        "reason": "reason",
        "reportingComponent": "reportingComponent",
        "source": "source.component",
        "type": "type",
    },
    ("", "secrets"): {**_COMMON, "type": "type"},
    ("", "namespaces"): {**_COMMON, "status.phase": "status.phase"},
}
# events.k8s.io serves the same objects, renamed; its selectors accept the core names and `regarding.*`.
FIELD_LABELS[("events.k8s.io", "events")] = {
    **_COMMON,
    **{
        f"involvedObject.{f}": f"regarding.{f}"
        for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
    },
    "reason": "reason",
    "reportingComponent": "reportingController",
    "reportingController": "reportingController",
    "source": "deprecatedSource.component",
    "type": "type",
    **{
        f"regarding.{f}": f"regarding.{f}"
        for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
    },
}


def _lookup(obj: dict[str, Any], dotted: str) -> str:
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_field_selector(text: str, group: str, plural: str, is_custom: bool) -> Predicate:
    """`fields.ParseSelector` plus the per-resource field label check (400 for unsupported labels)."""
    supported = FIELD_LABELS.get((group, plural), _COMMON)
    checks: list[tuple[str, bool, str]] = []
    if not text.strip():
        return lambda obj: True
    for raw in text.split(","):
        m = re.match(r"^\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*$", raw)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{raw}'")
        label, op, value = m.groups()
        if label not in supported:
            if is_custom:
                raise bad_request(
                    f'"{label}" is not a known field selector: only "metadata.name", "metadata.namespace"'
                )
            raise bad_request(f"field label not supported: {label}")
        checks.append((supported[label], op == "!=", value))
    return lambda obj: all((_lookup(obj, where) == value) != negate for where, negate, value in checks)


__all__ = ["ApiError", "parse_field_selector", "parse_label_selector"]
