"""Driver for the conformance suite's client scenarios: an MCP client that talks stdio to `cnpg-mcp-connect`.

The suite runs `python -m tests.conformance_client_driver URL` with MCP_CONFORMANCE_SCENARIO (and, for some
scenarios, MCP_CONFORMANCE_CONTEXT) set. The driver starts `python -m connect --url URL` with the settings a user
would give for that case and speaks stdio MCP to it; the helper does every HTTP request,
every SSE stream and all of OAuth. The authorization-code scenarios run headless through the helper's
MCP_CONNECT_AUTO_AUTHORIZE test mode (the suite's authorization server approves by itself).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = str(Path(__file__).resolve().parent.parent)
CIMD_URL = "https://conformance-test.local/client-metadata.json"
WAIT = 60.0


def defaults_from(schema: dict[str, Any], content: dict[str, Any]) -> dict[str, Any]:
    """What a host application does for SEP-1034: fill omitted fields with the schema's defaults."""
    filled = dict(content)
    for name, prop in (schema.get("properties") or {}).items():
        if name not in filled and isinstance(prop, dict) and "default" in prop:
            filled[name] = prop["default"]
    return filled


class StdioClient:
    """A minimal MCP client on a child's stdin/stdout (the SDK's would do; this one starts faster): requests with
    ids, answers to the server's elicitation and ping requests, notifications ignored. `received` keeps every message
    the child sent, in order, for tests that check nothing unexpected reached the client."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.next_id = 0
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.received: list[dict[str, Any]] = []
        self.reader = asyncio.create_task(self._read())

    async def _write(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        await self.process.stdin.drain()

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            message = json.loads(line)
            self.received.append(message)
            if "method" in message and "id" in message:
                await self._answer(message)
            elif "id" in message and message["id"] in self.waiting:
                self.waiting.pop(message["id"]).set_result(message)

    async def _answer(self, request: dict[str, Any]) -> None:
        if request["method"] == "elicitation/create":
            schema = request.get("params", {}).get("requestedSchema") or {}
            result: dict[str, Any] = {"action": "accept", "content": defaults_from(schema, {})}
        else:
            result = {}
        await self._write({"jsonrpc": "2.0", "id": request["id"], "result": result})

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[self.next_id] = future
        await self._write({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        answer = await asyncio.wait_for(future, WAIT)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return dict(answer["result"])

    async def notify(self, method: str) -> None:
        await self._write({"jsonrpc": "2.0", "method": method})


def helper_env(scenario: str, workdir: Path) -> dict[str, str]:
    """The settings a user would give cnpg-mcp-connect for this scenario."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_")}
    env["MCP_LOG_LEVEL"] = "debug"
    if not scenario.startswith("auth/"):
        env["MCP_AUTH"] = "none"
        return env
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    env["MCP_TOKEN_CACHE"] = str(workdir / "tokens.json")
    if scenario in ("auth/client-credentials-basic", "auth/client-credentials-jwt"):
        env["MCP_AUTH"] = "client-credentials"
        env["MCP_CLIENT_ID"] = context["client_id"]
        if "private_key_pem" in context:
            key = workdir / "client-key.pem"
            key.write_text(context["private_key_pem"])
            key.chmod(0o600)
            env["MCP_PRIVATE_KEY_FILE"] = str(key)
            env["MCP_CLIENT_AUTH"] = "private_key_jwt"
            env["MCP_PRIVATE_KEY_ALG"] = context.get("signing_algorithm") or "ES256"
        else:
            secret = workdir / "client-secret"
            secret.write_text(context["client_secret"])
            env["MCP_CLIENT_SECRET_FILE"] = str(secret)
            env["MCP_CLIENT_AUTH"] = "basic"
        return env
    env["MCP_AUTH"] = "authorization-code"
    env["MCP_CONNECT_AUTO_AUTHORIZE"] = "1"
    env["MCP_NO_BROWSER"] = "1"
    if scenario == "auth/pre-registration":
        env["MCP_CLIENT_ID"] = context["client_id"]
        env["MCP_CLIENT_SECRET"] = context["client_secret"]
    else:
        env["MCP_CLIENT_METADATA_URL"] = CIMD_URL
    return env


async def run(url: str, scenario: str) -> None:
    with tempfile.TemporaryDirectory(prefix="connect-conformance-") as tmp:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "connect", "--url", url, env=helper_env(scenario, Path(tmp)),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )  # fmt: skip
        client = StdioClient(process)
        try:
            capabilities = {"elicitation": {"form": {}}} if scenario.startswith("elicitation") else {}
            await client.request("initialize", {
                "protocolVersion": "2025-11-25", "capabilities": capabilities,
                "clientInfo": {"name": "cnpg-mcp-connect-conformance-driver", "version": "1.0"},
            })  # fmt: skip
            await client.notify("notifications/initialized")
            names = [tool["name"] for tool in (await client.request("tools/list", {}))["tools"]]
            if scenario == "tools_call":
                await client.request("tools/call", {"name": "add_numbers", "arguments": {"a": 2, "b": 3}})
            elif scenario == "sse-retry":
                await client.request("tools/call", {"name": "test_reconnection", "arguments": {}})
            elif scenario.startswith("elicitation"):
                await client.request("tools/call", {"name": "test_client_elicitation_defaults", "arguments": {}})
            elif scenario.startswith("auth/") and "test-tool" in names:
                await client.request("tools/call", {"name": "test-tool", "arguments": {}})
        finally:
            assert process.stdin is not None
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
            client.reader.cancel()


def main() -> int:
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    if len(sys.argv) < 2 or not scenario:
        print("usage: MCP_CONFORMANCE_SCENARIO=NAME conformance_client_driver URL", file=sys.stderr)
        return 2
    asyncio.run(run(sys.argv[-1], scenario))
    return 0


if __name__ == "__main__":
    sys.exit(main())
