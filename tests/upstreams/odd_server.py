"""Misbehaving upstreams, by mode (first argument):

refuse-init   answers initialize with a JSON-RPC error
close-stdout  answers initialize, then closes stdout on the first request but keeps running
garbage       before each answer writes a non-JSON line, a JSON array and a response to an unknown id
cannot-start  writes a start-up failure quoting a secret to stderr and exits with status 2 without reading stdin
large         answers tools/call with a text of `size` bytes (and isError when `error` is true), after a logging
              notification of the same size; members in the order of the SDK named by `order` ("python" or
              "typescript"), with spaces after separators when `spaced` is true
"""

from __future__ import annotations

import json
import os
import sys
import time

mode = sys.argv[1]


def send(msg: object) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def send_large(msg_id: object, args: dict) -> None:
    text = 'log line with "quotes", a backslash \\ and unicode \u00e9\n' * (int(args["size"]) // 48 + 1)
    result: dict = {"content": [{"type": "text", "text": text}]}
    if args.get("error"):
        result["isError"] = True
    notification = {"method": "notifications/message", "params": {"level": "info", "data": text}}
    response = {"result": result, "id": msg_id}
    separators = (", ", ": ") if args.get("spaced") else (",", ":")
    for message in (notification, response):
        if args.get("order") == "typescript":
            ordered = {**message, "jsonrpc": "2.0"}
            if "id" in ordered:
                ordered["id"] = ordered.pop("id")
        else:
            ordered = {"jsonrpc": "2.0", **({"id": message["id"]} if "id" in message else {})}
            ordered.update((k, v) for k, v in message.items() if k != "id")
        sys.stdout.write(json.dumps(ordered, separators=separators) + "\n")
    sys.stdout.flush()


if mode == "cannot-start":
    # What a server that cannot start may print: its stderr can hold secrets, so it must stay in the gateway log.
    sys.stderr.write("connecting with password=hunter2-SECRET\n")
    sys.stderr.write("fatal: cannot reach the Kubernetes API\n")
    sys.stderr.flush()
    sys.exit(2)

for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue
    if msg["method"] == "initialize":
        if mode == "refuse-init":
            send({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32602, "message": "unsupported version"}})
            continue
        info = {"name": "odd", "version": "1"}
        send(
            {
                "jsonrpc": "2.0",
                "id": msg["id"],
                "result": {"protocolVersion": "2025-11-25", "capabilities": {}, "serverInfo": info},
            }
        )
        continue
    if mode == "close-stdout":
        os.close(1)
        time.sleep(3600)
    if mode == "large" and msg["method"] == "tools/call":
        send_large(msg["id"], msg["params"].get("arguments", {}))
        continue
    if mode == "garbage":
        sys.stdout.write("this is not json\n")
        send([1, 2, 3])
        send({"jsonrpc": "2.0", "id": "nobody-asked", "result": {}})
    send({"jsonrpc": "2.0", "id": msg["id"], "result": {"content": [{"type": "text", "text": "ok"}]}})
