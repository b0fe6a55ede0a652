"""A minimal stdio MCP server with tools that exercise the gateway: echo, sleep, progress, ask, crash, big, ...

Standard library only and no package imports, so it starts in milliseconds (tests open hundreds of sessions).
Run as: python -S tests/upstreams/echo_server.py
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

SUPPORTED = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
TOOLS = [
    {"name": name, "description": text, "inputSchema": {"type": "object"}}
    for name, text in (
        ("echo", "Return the text argument."),
        ("sleep", "Sleep for `seconds`, then answer."),
        ("progress", "Send `steps` progress notifications, then answer."),
        ("ask", "Ask the client for a sampling/createMessage and return its answer."),
        ("notify", "Send a logging notification, then answer."),
        ("crash", "Exit immediately with status 3."),
        ("big", "Answer with a text of `size` bytes."),
        ("fail", "Answer with isError true."),
        ("stderr", "Write `lines` lines to stderr, then answer."),
        ("pid", "Answer with the process id."),
        ("line", "Answer with the request's line exactly as this server read it."),
        ("flood", "Send `count` logging notifications of `size` bytes, then answer with the seconds it took."),
    )
]

_out_lock = threading.Lock()
_waiting: dict[Any, tuple[threading.Event, list[Any]]] = {}
_counter = 0
_line = ""
"""The line being handled (for the `line` tool)."""


def send(msg: dict[str, Any]) -> None:
    data = json.dumps(msg, separators=(",", ":")) + "\n"
    with _out_lock:
        sys.stdout.write(data)
        sys.stdout.flush()


def text_result(msg_id: Any, text: str, is_error: bool = False) -> None:
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
    if is_error:
        result["isError"] = True
    send({"jsonrpc": "2.0", "id": msg_id, "result": result})


def server_request(method: str, params: dict[str, Any]) -> Any:
    global _counter
    with _out_lock:
        _counter += 1
        req_id = f"srv-{_counter}"
    event = threading.Event()
    box: list[Any] = []
    _waiting[req_id] = (event, box)
    send({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params})
    event.wait(60)
    return box[0] if box else None


def call_tool(msg_id: Any, params: dict[str, Any]) -> None:
    name = params.get("name")
    args = params.get("arguments") or {}
    token = (params.get("_meta") or {}).get("progressToken")
    if name == "echo":
        text_result(msg_id, str(args.get("text", "")))
    elif name == "sleep":
        time.sleep(float(args.get("seconds", 1)))
        text_result(msg_id, "slept")
    elif name == "progress":
        steps = int(args.get("steps", 3))
        for i in range(steps):
            if token is not None:
                send(
                    {
                        "jsonrpc": "2.0",
                        "method": "notifications/progress",
                        "params": {"progressToken": token, "progress": i + 1, "total": steps},
                    }
                )
            time.sleep(float(args.get("delay", 0.05)))
        text_result(msg_id, "done")
    elif name == "ask":
        answer = server_request(
            "sampling/createMessage",
            {"messages": [{"role": "user", "content": {"type": "text", "text": "question"}}], "maxTokens": 10},
        )
        text_result(msg_id, json.dumps(answer))
    elif name == "notify":
        send(
            {
                "jsonrpc": "2.0",
                "method": "notifications/message",
                "params": {"level": "info", "data": args.get("text", "hello")},
            }
        )
        time.sleep(float(args.get("delay", 0)))
        text_result(msg_id, "notified")
    elif name == "crash":
        os._exit(3)
    elif name == "big":
        text_result(msg_id, "x" * int(args.get("size", 1000)))
    elif name == "fail":
        text_result(msg_id, "it failed", is_error=True)
    elif name == "stderr":
        for i in range(int(args.get("lines", 1))):
            sys.stderr.write(f"stderr line {i} " + "y" * int(args.get("width", 10)) + "\n")
        sys.stderr.flush()
        text_result(msg_id, "written")
    elif name == "pid":
        text_result(msg_id, str(os.getpid()))
    elif name == "line":
        text_result(msg_id, _line)
    elif name == "flood":
        started = time.monotonic()
        filler = "z" * int(args.get("size", 100000))
        for index in range(int(args.get("count", 100))):
            send(
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/message",
                    "params": {"level": "info", "data": filler, "logger": str(index)},
                }
            )
        text_result(msg_id, str(time.monotonic() - started))
    else:
        send({"jsonrpc": "2.0", "id": msg_id, "error": {"code": -32602, "message": f"Unknown tool: {name}"}})


SLOW_TOOLS = {"sleep", "progress", "ask", "notify", "stderr", "flood"}


def handle(msg: dict[str, Any]) -> None:
    method = msg.get("method")
    msg_id = msg.get("id")
    if method is None:
        waiting = _waiting.pop(msg_id, None)
        if waiting is not None:
            waiting[1].append(msg.get("result", msg.get("error")))
            waiting[0].set()
        return
    if msg_id is None:
        return  # notifications need no answer
    params = msg.get("params") or {}
    if method == "initialize":
        requested = params.get("protocolVersion")
        version = requested if requested in SUPPORTED else SUPPORTED[-1]
        send(
            {
                "jsonrpc": "2.0",
                "id": msg_id,
                "result": {
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": True}, "logging": {}},
                    "serverInfo": {"name": "echo-upstream", "version": "1.0.0"},
                },
            }
        )
    elif method == "ping":
        send({"jsonrpc": "2.0", "id": msg_id, "result": {}})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": msg_id, "result": {"tools": TOOLS}})
    elif method == "tools/call":
        if params.get("name") in SLOW_TOOLS:
            threading.Thread(target=call_tool, args=(msg_id, params), daemon=True).start()
        else:
            call_tool(msg_id, params)
    else:
        send({"jsonrpc": "2.0", "id": msg_id, "error": {"code": -32601, "message": f"Method not found: {method}"}})


def main() -> None:
    global _line
    for line in sys.stdin:
        line = _line = line.rstrip("\n")
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            send({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}})
            continue
        if isinstance(msg, dict):
            handle(msg)


if __name__ == "__main__":
    main()
