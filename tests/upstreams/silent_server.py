"""An upstream that answers initialize, then never answers a request: it stays alive and says nothing.

Every line it receives is appended to the file named by the first argument, so a test can check what reached it
(a request forwarded or not, a notifications/cancelled). With the second argument `wrong-id` it does answer each
request, but under an id nobody asked for.
Run as: python -S tests/upstreams/silent_server.py RECORD_FILE [wrong-id]
"""

from __future__ import annotations

import json
import sys

record_path = sys.argv[1]
wrong_id = sys.argv[2:] == ["wrong-id"]


def send(msg: object) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


with open(record_path, "a", encoding="utf-8") as record:
    for line in sys.stdin:
        record.write(line if line.endswith("\n") else line + "\n")
        record.flush()
        msg = json.loads(line)
        if "id" not in msg or "method" not in msg:
            continue
        if msg["method"] == "initialize":
            info = {"name": "silent", "version": "1"}
            result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": info}
            send({"jsonrpc": "2.0", "id": msg["id"], "result": result})
        elif wrong_id:
            send({"jsonrpc": "2.0", "id": f"not-{msg['id']}", "result": {}})
