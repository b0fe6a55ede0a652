"""The audit line and the metric sample of each tools/call: who called which tool, with which argument names,
and how it ended. Argument values never leave the gateway."""

from __future__ import annotations

from typing import Any

from gateway import metrics
from gateway.logging import get_logger, log_later
from gateway.security import Principal

audit_log = get_logger("audit")

_TOOL_CALL_CHILDREN: dict[tuple[str, str], Any] = {}
"""Bounded like the label values: known tools (at most metrics.MAX_KNOWN_TOOLS, plus "other") times outcomes."""


def record_tool_call(
    principal: Principal | None,
    tool: str,
    arg_names: list[str],
    outcome: str,
    duration_ms: float,
    session: str | None,
) -> None:
    """One audit line (made at the next log flush) and one metric sample per tools/call."""
    label = metrics.tool_label(tool)
    child = _TOOL_CALL_CHILDREN.get((label, outcome))
    if child is None:
        child = _TOOL_CALL_CHILDREN[(label, outcome)] = metrics.TOOL_CALLS.labels(label, outcome)
    child.inc()
    log_later(
        audit_log,
        "tool_call",
        subject=principal.subject if principal is not None else "anonymous",
        client_id=principal.client_id if principal is not None else None,
        tool=tool,
        arguments=arg_names,
        outcome=outcome,
        duration_ms=round(duration_ms, 3),
        session=session,
    )
