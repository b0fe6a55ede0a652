"""Misbehaving upstreams, by mode (first argument):

refuse-init   answers initialize with a JSON-RPC error
close-stdout  answers initialize, then closes stdout on the first request but keeps running
garbage       before each answer writes a non-JSON line, a JSON array and a response to an unknown id
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
    if mode == "garbage":
        sys.stdout.write("this is not json\n")
        send([1, 2, 3])
        send({"jsonrpc": "2.0", "id": "nobody-asked", "result": {}})
    send({"jsonrpc": "2.0", "id": msg["id"], "result": {"content": [{"type": "text", "text": "ok"}]}})
