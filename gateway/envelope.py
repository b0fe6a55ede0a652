"""The JSON-RPC envelope of an upstream message, read without decoding a large payload.

Routing an upstream line needs only its top-level members: `id`, `method`, and for a response whether it is an
error. The audit line of a `tools/call` also needs `result.isError`. A small line is parsed with `json.loads`,
which checks the JSON too. A large one is read from its two ends and forwarded as received, without decoding what
lies between; this is a tool's big result or a long log notification. The MCP SDKs write members in a fixed
order:
- Python: `{"jsonrpc": "2.0", "id": 1, "result": {...}}`;
- TypeScript: `{"result": {...}, "jsonrpc": "2.0", "id": 1}`.
Either way the envelope sits in the first or the last few dozen bytes.

A large line whose ends match neither shape is parsed like a small one. So is the answer to a request whose result
the gateway reads (`initialize`, `tools/list`). In a valid JSON text a quote that follows `{` or `,` outside a
string always opens a member name, so a member matched at the very start or end of the line is a top-level member.
A large line that is not valid JSON may be forwarded unparsed: it is the upstream's own broken answer, and the
gateway keeps routing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from gateway.jsonrpc import json_bytes

ENVELOPE_ONLY_BYTES = 64 * 1024
"""Lines at least this long are read from their ends; shorter ones are parsed whole."""

_WS = rb"[ \t\r\n]*"
_STR = rb'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"'
_ID = rb"(-?(?:0|[1-9][0-9]{0,17})|" + _STR + rb")"
_VERSION = rb'"jsonrpc"' + _WS + rb":" + _WS + rb'"2\.0"'

# Python SDK shapes: {"jsonrpc":"2.0","id":ID,"result"|"error": ...} and {"jsonrpc":"2.0"[,"id":ID],"method":M, ...}
_HEAD_RESPONSE = re.compile(
    rb"\{" + _WS + _VERSION + _WS + rb"," + _WS + rb'"id"' + _WS + rb":" + _WS + _ID + _WS + rb"," + _WS
    + rb'"(result|error)"' + _WS + rb":"
)  # fmt: skip
_HEAD_METHOD = re.compile(
    rb"\{" + _WS + _VERSION + _WS + rb"," + _WS + rb'(?:"id"' + _WS + rb":" + _WS + _ID + _WS + rb"," + _WS
    + rb')?"method"' + _WS + rb":" + _WS + rb"(" + _STR + rb")" + _WS + rb"[,}]"
)  # fmt: skip
# TypeScript SDK shapes: {"result"|"error": ..., "jsonrpc":"2.0","id":ID}
# and {"method":M, ..., "jsonrpc":"2.0"[,"id":ID]}
_HEAD_RESULT_FIRST = re.compile(rb"\{" + _WS + rb'"(result|error)"' + _WS + rb":")
_HEAD_METHOD_FIRST = re.compile(rb"\{" + _WS + rb'"method"' + _WS + rb":" + _WS + rb"(" + _STR + rb")" + _WS + rb",")
_TAIL = re.compile(
    rb"," + _WS + _VERSION + _WS + rb"(?:," + _WS + rb'"id"' + _WS + rb":" + _WS + _ID + _WS + rb")?\}" + _WS + rb"\Z"
)  # fmt: skip
_TAIL_WINDOW = 600
"""Bytes searched for the TypeScript tail (an id string is at most a few hundred bytes)."""
_IS_ERROR_LAST = re.compile(rb'"isError"' + _WS + rb":" + _WS + rb"(true|false)" + _WS + rb"\}" + _WS + rb"\Z")


@dataclass(slots=True)
class Envelope:
    """What routing needs from one upstream message."""

    id: Any
    """The JSON-RPC id, or None (a notification)."""
    method: str | None
    """Set for requests and notifications; None for responses."""
    error: bool
    """A response with an `error` member."""
    message: dict[str, Any] | None
    """The whole decoded message when it was parsed; None when only the ends were read."""
    line: bytes
    is_error_hint: bool | None = None
    """For an unparsed result: whether `result.isError` is true, when the ends tell; None when they do not."""
    id_span: tuple[int, int] | None = None
    """Where the id's JSON text lies in `line`, when only the ends were read (the pool rewrites it there)."""

    def result_is_error(self) -> bool:
        """`result.isError is true` (tools/call outcome); decodes the line only when its ends cannot tell."""
        if self.error:
            return True
        if self.message is None and self.is_error_hint is not None:
            return self.is_error_hint
        message = self.full()
        result = message.get("result") if message is not None else None
        return isinstance(result, dict) and result.get("isError") is True

    def full(self) -> dict[str, Any] | None:
        """The decoded message (parsed now if only the ends were read); None if the line is not valid JSON."""
        if self.message is None:
            try:
                decoded = json.loads(self.line)
            except (ValueError, RecursionError):
                return None
            self.message = decoded if isinstance(decoded, dict) else None
        return self.message

    def with_id(self, new_id: Any) -> bytes:
        """The line with its id replaced by `new_id` (the rest as received when only the ends were read)."""
        if self.message is None and self.id_span is not None:
            start, end = self.id_span
            return b"".join((self.line[:start], json_bytes(new_id), self.line[end:]))
        message = self.full()
        if message is None:
            raise ValueError("not a JSON object")
        return json_bytes({**message, "id": new_id})


def read_envelope(line: bytes) -> Envelope | None:
    """The envelope of one upstream line; None when it is JSON but not an object. Raises ValueError if not JSON."""
    if len(line) >= ENVELOPE_ONLY_BYTES:
        envelope = _from_ends(line)
        if envelope is not None:
            return envelope
    try:
        message = json.loads(line)
    except RecursionError:  # absurdly deep nesting
        raise ValueError("nested too deeply") from None
    if not isinstance(message, dict):
        return None
    method = message.get("method")
    return Envelope(
        id=message.get("id"),
        method=method if isinstance(method, str) else None,
        error="error" in message and method is None,
        message=message,
        line=line,
    )


def _from_ends(line: bytes) -> Envelope | None:
    body_end = len(line.rstrip())
    if line[body_end - 1 : body_end] != b"}":
        return None
    match = _HEAD_RESPONSE.match(line)
    if match is not None:
        msg_id = json.loads(match.group(1))
        is_error = match.group(2) == b"error"
        hint = None if is_error else _is_error_at(line, body_end - 1)
        return Envelope(msg_id, None, is_error, None, line, hint, match.span(1))
    match = _HEAD_METHOD.match(line)
    if match is not None:
        has_id = match.group(1) is not None
        msg_id = json.loads(match.group(1)) if has_id else None
        span = match.span(1) if has_id else None
        return Envelope(msg_id, json.loads(match.group(2)), False, None, line, None, span)
    tail = _TAIL.search(line, max(0, body_end - _TAIL_WINDOW))
    if tail is None:
        return None
    has_id = tail.group(1) is not None
    msg_id = json.loads(tail.group(1)) if has_id else None
    span = tail.span(1) if has_id else None
    match = _HEAD_RESULT_FIRST.match(line)
    if match is not None and has_id:
        is_error = match.group(1) == b"error"
        hint = None if is_error else _is_error_at(line, tail.start())
        return Envelope(msg_id, None, is_error, None, line, hint, span)
    match = _HEAD_METHOD_FIRST.match(line)
    if match is not None:
        return Envelope(msg_id, json.loads(match.group(1)), False, None, line, None, span)
    return None


def _is_error_at(line: bytes, result_end: int) -> bool | None:
    """Whether the result object that ends just before `result_end` says isError, if its text tells for sure.

    No `"isError"` anywhere means no such member; one occurrence that is the result's last member tells its value.
    Anything else (nested objects with that name, an unusual order) is left to a full parse.
    """
    count = line.count(b'"isError"')
    if count == 0:
        return False
    if count > 1:
        return None
    match = _IS_ERROR_LAST.search(line, max(0, result_end - 64), result_end)
    if match is None:
        return None
    return match.group(1) == b"true"
