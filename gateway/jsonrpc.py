"""JSON-RPC 2.0 as MCP uses it: protocol revisions, error codes, envelope checks, error objects, compact bytes.

Client messages are checked here once (`invalid_envelope`); upstream lines are read by `gateway.envelope`.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from gateway import metrics

HANDSHAKE_VERSIONS: tuple[str, ...] = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
"""MCP revisions with the initialize handshake, oldest first."""
LATEST_VERSION = HANDSHAKE_VERSIONS[-1]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
"""Also the code of every error the gateway answers for the upstream: it exited, timed out, or the session ended."""
SERVER_BUSY = -32000
SESSION_NOT_FOUND = -32001

KNOWN_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
        "server/discover",
        "tasks/get",
        "tasks/list",
        "tasks/result",
        "tasks/cancel",
    }
)


def method_label(method: str | None) -> str:
    """Bounded label for metrics: known MCP methods by name, anything else 'other'."""
    if method is None:
        return metrics.OTHER
    return method if method in KNOWN_METHODS else metrics.OTHER


def is_id(value: Any) -> bool:
    """A usable JSON-RPC id: a string or an integer (not a boolean)."""
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def error_message(msg_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": msg_id, "error": error}


_encode = msgspec.json.Encoder().encode


def json_bytes(obj: Any) -> bytes:
    """Compact UTF-8 JSON, as the gateway writes its own messages."""
    try:
        return _encode(obj)
    except UnicodeEncodeError:
        # A lone surrogate (a client's id "\\ud800" is valid JSON) has no UTF-8 form; as an escape it goes back
        # exactly as the client wrote it.
        return json.dumps(obj, separators=(",", ":")).encode()


def json_loads(data: bytes) -> Any:
    """Decode JSON; raises ValueError when `data` is not JSON (or is nested absurdly deep)."""
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        pass  # msgspec refuses lone surrogate escapes ("\\ud800"), which JSON allows: the stdlib reads them
    except RecursionError:
        raise ValueError("nested too deeply") from None
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def error_bytes(msg_id: Any, code: int, message: str, data: Any = None) -> bytes:
    return json_bytes(error_message(msg_id, code, message, data))


def invalid_envelope(msg: Any) -> str | None:
    """Why `msg` is not a JSON-RPC 2.0 request, notification or response; None when it is one."""
    if not isinstance(msg, dict):
        return "a JSON-RPC message must be an object"
    if msg.get("jsonrpc") != "2.0":
        return 'jsonrpc must be "2.0"'
    method = msg.get("method")
    if "id" in msg:
        msg_id = msg["id"]
        if isinstance(msg_id, bool) or not isinstance(msg_id, (str, int)):
            if method is not None or msg_id is not None:
                return "id must be a string or an integer"
    if method is not None:
        if not isinstance(method, str) or not method:
            return "method must be a non-empty string"
        params = msg.get("params")
        if params is not None and not isinstance(params, (dict, list)):
            return "params must be an object or an array"
        return None
    if "id" not in msg:
        return "a message needs a method or an id"
    if ("result" in msg) == ("error" in msg):
        return "a response needs exactly one of result and error"
    return None


def tool_call_facts(message: Any) -> tuple[str, list[str]]:
    """(tool name, sorted argument names) of a tools/call request; ("", []) where the params do not say."""
    params = message.get("params") if isinstance(message, dict) else None
    if not isinstance(params, dict):
        return "", []
    name = params.get("name")
    arguments = params.get("arguments")
    names = sorted(str(k) for k in arguments) if isinstance(arguments, dict) else []
    return (name if isinstance(name, str) else ""), names


def progress_token(params: Any) -> str | int | None:
    """params._meta.progressToken when it is a usable token."""
    if not isinstance(params, dict):
        return None
    meta = params.get("_meta")
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    return token if is_id(token) else None
