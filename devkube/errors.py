"""Kubernetes `Status` failures with the message formats of kube-apiserver.

Every failure the test server returns is an `ApiError` carrying the exact `Status` body; handlers raise it and
the HTTP layer serialises it once. `FieldError` mirrors `k8s.io/apimachinery/pkg/util/validation/field.Error`
so that 422 messages and `details.causes` read like the real ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any


class ApiError(Exception):
    """A request failure: the HTTP code and the `Status` body the real API server would send."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(name: str = "", group: str = "", kind: str = "", **extra: Any) -> dict[str, Any]:
    # Go's omitempty: empty strings are left out of StatusDetails.
    out: dict[str, Any] = {}
    if name:
        out["name"] = name
    if group:
        out["group"] = group
    if kind:
        out["kind"] = kind
    out.update(extra)
    return out


def qualified(resource: str, group: str) -> str:
    """`clusters.postgresql.cnpg.io` for a group, bare `secrets` for the core group."""
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{qualified(resource, group)} "{name}" not found', _details(name, group, resource)
    )


def already_exists(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        409, "AlreadyExists", f'{qualified(resource, group)} "{name}" already exists', _details(name, group, resource)
    )


def conflict(resource: str, group: str, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(resource, group)} "{name}": {why}',
        _details(name, group, resource),
    )


MODIFIED = "the object has been modified; please apply your changes to the latest version and try again"


def forbidden(
    user: str, verb: str, resource: str, subresource: str, group: str, namespace: str | None, name: str
) -> ApiError:
    who = f'{qualified(resource, group)} "{name}"' if name else qualified(resource, group)
    full = f"{resource}/{subresource}" if subresource else resource
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    message = f'{who} is forbidden: User "{user}" cannot {verb} resource "{full}" in API group "{group}" {scope}'
    return ApiError(403, "Forbidden", message, _details(name, group, resource))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


def unsupported_media_type(accepted: list[str]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: {', '.join(accepted)}",
    )


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def resource_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


class GoRaw(str):
    """A bad value Go prints without quotes, e.g. the uint64 `0x0` of a missing resourceVersion."""


def _go_value(value: Any) -> str:
    """How `field.Error.ErrorBody` prints a bad value: `%v` for numbers and booleans, `%q` for strings."""
    if isinstance(value, GoRaw):
        return str(value)
    if value is None:
        return '"null"'  # Go substitutes the string "null" for nil, then quotes it
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(k)}:{_go_literal(v)}" for k, v in sorted(value.items()))
        return "map[string]interface {}{" + inner + "}"
    if isinstance(value, list):
        return "[]interface {}{" + ", ".join(_go_literal(v) for v in value) + "}"
    return str(value)


def _go_literal(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict | list):
        return _go_value(value)
    return _go_value(value)


# field.ErrorType: the name in `details.causes[].reason` and the text that starts the message body.
_ERROR_TYPES = {
    "required": ("FieldValueRequired", "Required value"),
    "invalid": ("FieldValueInvalid", "Invalid value"),
    "type_invalid": ("FieldValueTypeInvalid", "Invalid value"),
    "not_supported": ("FieldValueNotSupported", "Unsupported value"),
    "duplicate": ("FieldValueDuplicate", "Duplicate value"),
    "too_long": ("FieldValueTooLong", "Too long"),
    "too_many": ("FieldValueTooMany", "Too many"),
    "forbidden": ("FieldValueForbidden", "Forbidden"),
}

_OMIT = object()


@dataclass(frozen=True)
class FieldError:
    """One validation failure at a field path, printed like `field.Error`."""

    kind: str
    field: str
    value: Any = _OMIT
    detail: str = ""
    # Validation ratcheting: an error on a value an update left unchanged is dropped, except for transition rules.
    ratchets: bool = dataclass_field(default=True, compare=False)

    def body(self) -> str:
        text = _ERROR_TYPES[self.kind][1]
        if self.kind not in ("required", "forbidden", "too_long") and self.value is not _OMIT:
            text = f"{text}: {_go_value(self.value)}"
        if self.detail:
            text = f"{text}: {self.detail}"
        return text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"

    def cause(self) -> dict[str, Any]:
        return {"reason": _ERROR_TYPES[self.kind][0], "message": self.body(), "field": self.field}


def required(field: str, detail: str = "") -> FieldError:
    return FieldError("required", field, detail=detail)


def invalid(field: str, value: Any, detail: str) -> FieldError:
    return FieldError("invalid", field, value, detail)


def forbidden_field(field: str, detail: str) -> FieldError:
    return FieldError("forbidden", field, detail=detail)


def not_supported(field: str, value: Any, allowed: list[Any]) -> FieldError:
    shown = ", ".join(json.dumps(v) for v in allowed)
    return FieldError("not_supported", field, value, f"supported values: {shown}")


def invalid_object(kind: str, group: str, name: str, errors: list[FieldError]) -> ApiError:
    """`NewInvalid`: one error printed bare, several as `[a, b]` (duplicates dropped like utilerrors.Aggregate)."""
    group_kind = f"{kind}.{group}" if group else kind
    texts: list[str] = []
    for err in errors:
        if str(err) not in texts:
            texts.append(str(err))
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    return ApiError(
        422,
        "Invalid",
        f'{group_kind} "{name}" is invalid: {joined}',
        _details(name, group, kind, causes=[e.cause() for e in errors]),
    )
