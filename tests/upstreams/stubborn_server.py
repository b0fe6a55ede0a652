"""An upstream that answers initialize, then ignores stdin EOF and SIGTERM: only SIGKILL ends it."""

from __future__ import annotations

import json
import signal
import sys
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("method") == "initialize":
        result = {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "serverInfo": {"name": "stubborn", "version": "1"},
        }
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
        sys.stdout.flush()
while True:
    time.sleep(60)
