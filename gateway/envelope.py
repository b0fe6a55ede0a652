"""The JSON-RPC envelope of an upstream message: its top-level members, read in one pass without decoding payloads.

Routing an upstream line needs only its top-level members: `id`, `method`, and for a response whether it is an
error. msgspec reads them into a struct in one pass over the line, which also checks that the whole line is JSON;
`params` and `error` are kept as their JSON text (`msgspec.Raw`), not decoded. The audit line of a `tools/call`
also needs `result.isError`, so the same pass reads that one member of an object result and skips the rest. A
tool's big result or a long log notification therefore costs one scan and no Python objects. Pool mode gives a
server-to-client request an id of its own: the message is encoded again with its payloads copied as received.

msgspec refuses one thing JSON allows, a lone surrogate escape such as `"\\ud800"` (a client may use one as its id,
and session mode forwards it as it is); such a line is decoded by the stdlib instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from gateway.jsonrpc import json_bytes, json_loads

_ABSENT = msgspec.Raw()
"""A member the line does not have."""


class _ResultFlags(msgspec.Struct):
    """The one member of an object result the gateway reads; the others are skipped, not decoded."""

    isError: Any = None


class _Members(msgspec.Struct):
    """The top-level members of a JSON-RPC message as routing needs them. Other members are skipped (their JSON is
    still checked)."""

    id: Any = None
    method: Any = None
    params: msgspec.Raw = _ABSENT
    result: _ResultFlags | list[Any] | str | int | float | bool | msgspec.UnsetType | None = msgspec.UNSET
    """An object result as its flags; any other JSON value a result may be (rare) is decoded."""
    error: msgspec.Raw = _ABSENT


class _Payloads(msgspec.Struct, omit_defaults=True):
    """The members of a JSON-RPC message, payloads as their JSON text, to encode it again with another id. Other
    members are left out: JSON-RPC defines none."""

    jsonrpc: Any = None
    id: Any = None
    method: Any = None
    params: msgspec.Raw = _ABSENT
    result: msgspec.Raw = _ABSENT
    error: msgspec.Raw = _ABSENT


_read_members = msgspec.json.Decoder(_Members).decode
_read_payloads = msgspec.json.Decoder(_Payloads).decode
_encode = msgspec.json.Encoder().encode


@dataclass(slots=True)
class Envelope:
    """What routing needs from one upstream message."""

    id: Any
    """The JSON-RPC id, or None (a notification)."""
    method: str | None
    """Set for requests and notifications; None for responses."""
    error: bool
    """A response with an `error` member."""
    line: bytes
    members: _Members | None
    """The top-level members as read by msgspec; None when the stdlib decoded the line (`message` is then set)."""
    message: dict[str, Any] | None = None
    """The whole decoded message, once something needed it (`full`)."""

    def result_is_error(self) -> bool:
        """`result.isError is true` (tools/call outcome), as read with the envelope."""
        if self.error:
            return True
        members = self.members
        if members is not None:
            flags = members.result
            return isinstance(flags, _ResultFlags) and flags.isError is True
        message = self.full()
        result = message.get("result") if message is not None else None
        return isinstance(result, dict) and result.get("isError") is True

    def full(self) -> dict[str, Any] | None:
        """The whole decoded message (decoded now if only the envelope was read); None if it is not an object."""
        if self.message is None:
            try:
                decoded = json_loads(self.line)
            except ValueError:
                return None
            self.message = decoded if isinstance(decoded, dict) else None
        return self.message

    def with_id(self, new_id: Any) -> bytes:
        """The message with its id replaced by `new_id`, its payloads copied as received."""
        if self.members is not None:
            # Read again, payloads as their text (the line is known to be JSON). The id is encoded on its own: a lone
            # surrogate id has no UTF-8 form and goes as an escape.
            payloads = _read_payloads(self.line)
            return _encode(msgspec.structs.replace(payloads, id=msgspec.Raw(json_bytes(new_id))))
        message = self.full()
        if message is None:
            raise ValueError("not a JSON object")
        return json_bytes({**message, "id": new_id})


def read_envelope(line: bytes) -> Envelope | None:
    """The envelope of one upstream line. Raises ValueError for an object that is not valid JSON (or not JSON at
    all); None for a line that starts as another JSON value (an array, a number), which is not read further."""
    try:
        members = _read_members(line)
    except msgspec.ValidationError:  # not an object, or a result msgspec will not hold (a number out of range)
        return _read_whole(line) if line.lstrip()[:1] == b"{" else None
    except msgspec.DecodeError:
        return _read_whole(line)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    method = members.method if isinstance(members.method, str) else None
    return Envelope(members.id, method, bool(members.error) and method is None, line, members)


def _read_whole(line: bytes) -> Envelope | None:
    """A line msgspec refused: not JSON (ValueError), or JSON with a lone surrogate escape, which the stdlib reads."""
    try:
        message = json.loads(line)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(message, dict):
        return None
    method = message.get("method")
    method = method if isinstance(method, str) else None
    return Envelope(message.get("id"), method, "error" in message and method is None, line, None, message)


class LineHandler(Protocol):
    """Takes one upstream line, with its envelope when the caller has read it already (else it reads it)."""

    def __call__(self, line: bytes, envelope: Envelope | None = None, /) -> None: ...
