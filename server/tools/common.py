"""Shared pieces of the tools: parameter types, input validation, quantities, cron, and result formatting."""

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import Field

from server.names import validate_dns_label, validate_object_name


class InputError(Exception):
    """The caller's input is wrong; the message says why and how to fix it. Nothing was changed."""


@dataclass
class ToolOutput:
    """What a tool returns: concise text for the assistant, and optional structured data."""

    text: str
    data: dict[str, Any] | None = None
    is_error: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


# -- parameter types (their descriptions become the JSON Schema the assistant reads) ---------------------------
Namespace = Annotated[
    str | None,
    Field(description="Kubernetes namespace. Omit to use the server's default namespace. Must be in the allow-list."),
]
ClusterName = Annotated[str, Field(description="Name of the CloudNativePG Cluster.", min_length=1, max_length=253)]
ObjectName = Annotated[str, Field(description="Name of the Kubernetes object.", min_length=1, max_length=253)]
DryRun = Annotated[
    bool,
    Field(
        description="When true, ask the Kubernetes API for a server-side dry run (dryRun=All): the request is "
        "validated and the object the API would store is returned, but nothing is written."
    ),
]
Confirm = Annotated[
    str,
    Field(description="Safety check: must be exactly the name of the object to delete, or the call is refused."),
]
LabelSelector = Annotated[
    str | None, Field(description="Optional Kubernetes label selector, e.g. 'team=payments,env!=dev'.")
]
AllNamespaces = Annotated[
    bool, Field(description="List across every allowed namespace instead of one namespace.")
]

_PG_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def require_dns_label(what: str, value: str) -> str:
    problem = validate_dns_label(value)
    if problem:
        raise InputError(f"Invalid {what} {value!r}: {problem}.")
    return value


def require_object_name(what: str, value: str) -> str:
    """Object names: DNS-1123 subdomain (lower case, digits, '-', '.')."""
    problem = validate_object_name(value)
    if problem:
        raise InputError(f"Invalid {what} {value!r}: {problem}.")
    return value


def require_pg_identifier(what: str, value: str) -> str:
    if not _PG_IDENTIFIER.match(value):
        raise InputError(
            f"Invalid {what} {value!r}: use a plain PostgreSQL identifier (letters, digits, '_' or '$', starting "
            "with a letter or '_', at most 63 characters)."
        )
    return value


def require_confirm(kind: str, name: str, confirm: str) -> None:
    if confirm != name:
        raise InputError(
            f"Refused: deleting {kind} '{name}' requires confirm='{name}' (got {confirm!r}). Nothing was changed."
        )


# -- quantities ----------------------------------------------------------------------------------------------
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1), "k": Decimal(10**3),
            "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12), "P": Decimal(10**15),
            "E": Decimal(10**18)}
_QUANTITY = re.compile(
    r"^([+]?[0-9]+(?:\.[0-9]*)?|[+]?\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)


def parse_quantity(value: str) -> Decimal:
    """Parse a Kubernetes resource quantity ('10Gi', '500M', '1.5Ti', '1e9') into a number of base units."""
    text = (value or "").strip()
    match = _QUANTITY.match(text)
    if not match:
        raise InputError(
            f"Invalid quantity {value!r}: use a Kubernetes quantity such as '10Gi', '500Mi' or '1Ti'."
        )
    number_text, suffix = match.group(1), match.group(2) or ""
    try:
        number = Decimal(number_text)
    except InvalidOperation:
        raise InputError(f"Invalid quantity {value!r}.") from None
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if len(suffix) > 1 and suffix[0] in "eE":  # an exponent; a lone "E" is the exa suffix
        return number * (Decimal(10) ** int(suffix[1:]))
    return number * _DECIMAL[suffix]


# -- cron (CloudNativePG schedules have six fields: seconds first) ---------------------------------------------
_CRON_FIELDS = (
    ("seconds", 0, 59, None),
    ("minutes", 0, 59, None),
    ("hours", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    ("day of week", 0, 6, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)
_CRON_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def _cron_value(token: str, low: int, high: int, names: tuple[str, ...] | None, field_name: str) -> int:
    upper = token.upper()
    if names and upper in names:
        return names.index(upper) + (low if field_name == "month" else 0)
    if not token.isdigit():
        raise InputError(f"cron {field_name}: {token!r} is not a number")
    value = int(token)
    if not low <= value <= high:
        raise InputError(f"cron {field_name}: {value} is outside {low}-{high}")
    return value


def validate_cron(schedule: str) -> str:
    """Check a CloudNativePG schedule: six fields (seconds minutes hours day-of-month month day-of-week)."""
    text = schedule.strip()
    if text in _CRON_DESCRIPTORS or re.fullmatch(r"@every\s+\S+", text):
        return text
    fields = text.split()
    if len(fields) != 6:
        hint = " (this looks like a 5-field Kubernetes CronJob schedule; prepend the seconds, e.g. '0 ' + it)" if (
            len(fields) == 5
        ) else ""
        raise InputError(
            f"Invalid schedule {schedule!r}: CloudNativePG needs 6 cron fields "
            f"'second minute hour day-of-month month day-of-week', got {len(fields)}{hint}. "
            "Example: '0 0 2 * * *' = every day at 02:00:00."
        )
    try:
        for token, (field_name, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
            for part in token.split(","):
                if not part:
                    raise InputError(f"cron {field_name}: empty list element")
                base, _, step = part.partition("/")
                if step and (not step.isdigit() or int(step) == 0):
                    raise InputError(f"cron {field_name}: step {step!r} must be a positive number")
                if base in ("*", "?"):
                    continue
                start, dash, end = base.partition("-")
                first = _cron_value(start, low, high, names, field_name)
                if dash:
                    last = _cron_value(end, low, high, names, field_name)
                    if last < first:
                        raise InputError(f"cron {field_name}: range {base!r} runs backwards")
    except InputError as exc:
        raise InputError(f"Invalid schedule {schedule!r}: {exc}.") from None
    return text


# -- formatting ----------------------------------------------------------------------------------------------
def age(timestamp: str | None, now: datetime | None = None) -> str:
    """'3d4h', '12m' ... from an RFC 3339 timestamp; '?' if absent or unparsable."""
    if not timestamp:
        return "?"
    try:
        when = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "?"
    seconds = int(((now or datetime.now(UTC)) - when).total_seconds())
    if seconds < 0:
        seconds = 0
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain aligned text table; small and readable by people and models alike."""
    if not rows:
        return ""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    value = obj.get("metadata")
    return value if isinstance(value, dict) else {}


def spec(obj: dict[str, Any]) -> dict[str, Any]:
    value = obj.get("spec")
    return value if isinstance(value, dict) else {}


def status(obj: dict[str, Any]) -> dict[str, Any]:
    value = obj.get("status")
    return value if isinstance(value, dict) else {}


def cluster_of(obj: dict[str, Any]) -> str | None:
    """The cluster a CNPG object (Backup, ScheduledBackup, Pooler, Database, DatabaseRole) names in spec.cluster."""
    ref = spec(obj).get("cluster")
    name = ref.get("name") if isinstance(ref, dict) else None
    return name if isinstance(name, str) else None


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def strip_noise(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop managedFields: bulky and useless to a reader of a dry-run or created object."""
    result = dict(obj)
    metadata = dict(meta(obj))
    metadata.pop("managedFields", None)
    if metadata:
        result["metadata"] = metadata
    return result
