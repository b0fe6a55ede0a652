"""Pool mode (UPSTREAM_MODE=pool): sessions share a bounded set of server processes, and nothing crosses sessions.

The gateway runs in-process with a test authenticator (header X-Test-User names the principal) in front of
tests/stdio_server.py. Its `tagged` tool logs, reports progress, samples and elicits, each message naming the tag
the caller chose, so every message can be traced to the session that must receive it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway import metrics
from gateway.app import create_app
from gateway.config import GatewayConfig
from tests.fixtures.gateway import HeaderAuthenticator, McpHttp, as_user, messages, read_sse

UPSTREAM = (sys.executable, "-m", "tests.stdio_server")
WAIT = 60.0
EXITS = "mcp_gateway_pool_process_exits_total"
EVERY_CAPABILITY = {"sampling": {}, "elicitation": {}, "roots": {"listChanged": True}}


async def start_pool(**settings: Any) -> TestServer:
    config = GatewayConfig(upstream_command=UPSTREAM, metrics_port=0, upstream_mode="pool", **settings)
    server = TestServer(create_app(config, authenticator=HeaderAuthenticator()), host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
async def pool2() -> AsyncIterator[TestServer]:
    """A pool of at most two processes, so six sessions must share them."""
    server = await start_pool(pool_min=1, pool_max=2)
    try:
        yield server
    finally:
        await server.close()


async def call_answering(client: McpHttp, name: str, arguments: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    """Call a tool with progress token "t" (the same in every session) and request id 7 (likewise), answer the
    server's sampling and elicitation requests with `tag`, and return every message the call's stream carried."""
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments, "_meta": {"progressToken": "t"}},
    }
    seen: list[dict[str, Any]] = []
    async with client.http.post(client.url, json=body, headers=client.headers()) as response:
        assert response.status == 200, await response.text()
        while True:
            events = await read_sse(response, limit=1)
            if not events:
                break
            if not events[0].data:
                continue
            message = events[0].json()
            seen.append(message)
            if message.get("method") == "sampling/createMessage":
                result = {"role": "assistant", "content": {"type": "text", "text": tag}, "model": "m"}
                await client_answer(client, message["id"], result)
            elif message.get("method") == "elicitation/create":
                await client_answer(client, message["id"], {"action": "accept", "content": {"tag": tag}})
            elif message.get("id") == 7 and "method" not in message:
                break
    return seen


async def client_answer(client: McpHttp, msg_id: Any, result: dict[str, Any]) -> None:
    body = {"jsonrpc": "2.0", "id": msg_id, "result": result}
    async with client.http.post(client.url, json=body, headers=client.headers()) as response:
        assert response.status == 202, await response.text()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (up to WAIT seconds) until `condition()` holds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    """A sample of the session partition's pool metrics."""
    return metrics.REGISTRY.get_sample_value(name, {"partition": "session", **(labels or {})}) or 0.0


async def test_concurrent_sessions_of_two_principals_each_get_only_their_own_messages(
    pool2: TestServer, http: aiohttp.ClientSession
) -> None:
    clients = {f"{user}-{n}": as_user(http, pool2, user) for user in ("alice", "bob") for n in range(3)}
    for client in clients.values():
        await client.initialize(EVERY_CAPABILITY)
        assert (await client.request("logging/setLevel", {"level": "debug"}))["result"] == {}
    dropped_before = sum(sample("mcp_gateway_pool_dropped_messages_total", {"kind": k}) for k in ("notification",))

    async def run(tag: str, client: McpHttp) -> tuple[str, list[dict[str, Any]]]:
        messages: list[dict[str, Any]] = []
        for _ in range(2):
            messages += await call_answering(client, "tagged", {"tag": tag}, tag)
        return tag, messages

    with_timeout = asyncio.wait_for(asyncio.gather(*(run(tag, c) for tag, c in clients.items())), WAIT)
    for tag, received in await with_timeout:
        kinds = [m.get("method", "response") for m in received]
        assert sorted(kinds) == sorted(
            ["notifications/message", "notifications/progress", "notifications/progress", "sampling/createMessage"] * 2
            + ["elicitation/create", "response"] * 2
        ), (tag, kinds)
        for message in received:
            text = str(message)
            assert tag in text, (tag, message)
            others = [other for other in clients if other != tag and f"'{other} " in text]
            assert not others, (tag, message)
            if message.get("method") == "notifications/progress":
                assert message["params"]["progressToken"] == "t"
        results = [m for m in received if "result" in m]
        assert [r["result"]["content"][0]["text"] for r in results] == [f"{tag} done: sampled={tag} elicited={tag}"] * 2
        assert all(r["id"] == 7 for r in results)
    assert sum(sample("mcp_gateway_pool_dropped_messages_total", {"kind": k}) for k in ("notification",)) == (
        dropped_before
    )
    assert sample("mcp_gateway_pool_processes") <= 2


async def test_logging_set_level_filters_each_session_on_its_own(
    pool2: TestServer, http: aiohttp.ClientSession
) -> None:
    quiet, chatty = as_user(http, pool2, "alice"), as_user(http, pool2, "bob")
    for client in (quiet, chatty):
        await client.initialize(EVERY_CAPABILITY)
    assert (await quiet.request("logging/setLevel", {"level": "error"}))["result"] == {}
    assert (await chatty.request("logging/setLevel", {"level": "debug"}))["result"] == {}
    quiet_seen = await call_answering(quiet, "tagged", {"tag": "q"}, "q")
    chatty_seen = await call_answering(chatty, "tagged", {"tag": "c"}, "c")
    assert not [m for m in quiet_seen if m.get("method") == "notifications/message"]
    assert [m["params"]["data"] for m in chatty_seen if m.get("method") == "notifications/message"] == ["c log"]
    bad = await quiet.request("logging/setLevel", {"level": "loud"})
    assert bad["error"]["code"] == -32602


async def test_initialize_is_answered_from_the_pool_with_the_clients_version(
    pool2: TestServer, http: aiohttp.ClientSession
) -> None:
    old = as_user(http, pool2, "alice")
    old.version = "2025-03-26"
    result = (await old.initialize())["result"]
    assert result["protocolVersion"] == "2025-03-26"
    assert result["serverInfo"]["name"] == "cnpg-mcp-test-server"
    assert "subscribe" not in result["capabilities"]["resources"], "subscriptions cannot be kept per session"
    future = as_user(http, pool2, "bob")
    body = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": "2099-01-01", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    async with http.post(future.url, json=body, headers=future.headers()) as response:
        events = await read_sse(response, until_id=0)
    assert events[-1].json()["result"]["protocolVersion"] == "2025-11-25"


async def test_resource_subscriptions_are_refused_with_a_clear_error(
    pool2: TestServer, http: aiohttp.ClientSession
) -> None:
    client = as_user(http, pool2, "alice")
    await client.initialize()
    answer = await client.request("resources/subscribe", {"uri": "test://watched-resource"})
    assert answer["error"]["code"] == -32601
    assert "resource subscriptions cannot be kept per session" in answer["error"]["message"]
    assert "UPSTREAM_MODE=pool" in answer["error"]["message"]


async def test_a_crashed_process_fails_only_its_call_and_the_pool_replaces_it(
    pool2: TestServer, http: aiohttp.ClientSession
) -> None:
    crashed_before = sample("mcp_gateway_pool_process_exits_total", {"reason": "crashed"})
    alice, bob = as_user(http, pool2, "alice"), as_user(http, pool2, "bob")
    for client in (alice, bob):
        await client.initialize()
    slow = asyncio.ensure_future(alice.call_tool("slow", {"ms": 1500}))
    await asyncio.sleep(0.3)  # alice's call holds one process; bob's crash goes to the other
    crash = await asyncio.wait_for(bob.call_tool("crash", {"code": 7}), WAIT)
    assert crash["error"]["code"] == -32603
    assert "exited with status 7" in crash["error"]["message"]
    assert "stdio_server: crashing" not in str(crash), "stderr stays in the log"
    assert (await asyncio.wait_for(slow, WAIT))["result"]["content"][0]["text"] == "slept 1500 ms"
    # Bob's session survives its process, and the pool starts another.
    again = await asyncio.wait_for(bob.call_tool("echo", {"text": "still here"}), WAIT)
    assert again["result"]["content"][0]["text"] == "still here"
    assert sample("mcp_gateway_pool_process_exits_total", {"reason": "crashed"}) == crashed_before + 1


async def test_more_sessions_than_processes_wait_their_turn_and_all_finish(http: aiohttp.ClientSession) -> None:
    server = await start_pool(pool_min=1, pool_max=1)
    try:
        clients = [as_user(http, server, f"user{n}") for n in range(5)]
        for client in clients:
            await client.initialize()
        pids = await asyncio.wait_for(asyncio.gather(*(c.call_tool("whoami") for c in clients)), WAIT)
        assert len({p["result"]["content"][0]["text"] for p in pids}) == 1, "one process served all five"
        assert sample("mcp_gateway_pool_processes") == 1
    finally:
        await server.close()


async def test_a_request_waiting_past_pool_queue_timeout_gets_a_busy_error(http: aiohttp.ClientSession) -> None:
    server = await start_pool(pool_min=1, pool_max=1, pool_queue_timeout=0.3)
    try:
        holder, waiter = as_user(http, server, "alice"), as_user(http, server, "bob")
        for client in (holder, waiter):
            await client.initialize()
        before = sample("mcp_gateway_pool_rejected_total", {"reason": "queue_timeout"})
        slow = asyncio.ensure_future(holder.call_tool("slow", {"ms": 2000}))
        await asyncio.sleep(0.3)
        busy = await asyncio.wait_for(waiter.call_tool("echo", {"text": "x"}), WAIT)
        assert busy["error"]["code"] == -32000
        assert "POOL_QUEUE_TIMEOUT" in busy["error"]["message"]
        assert sample("mcp_gateway_pool_rejected_total", {"reason": "queue_timeout"}) == before + 1
        await asyncio.wait_for(slow, WAIT)
    finally:
        await server.close()


async def test_a_cancelled_request_retires_its_process(pool2: TestServer, http: aiohttp.ClientSession) -> None:
    before = sample("mcp_gateway_pool_process_exits_total", {"reason": "abandoned"})
    client = as_user(http, pool2, "alice")
    await client.initialize()
    first = (await client.call_tool("whoami"))["result"]["content"][0]["text"]
    call = asyncio.ensure_future(client.call_tool("slow", {"ms": 5000}))
    await asyncio.sleep(0.3)
    await client.notify("notifications/cancelled", {"requestId": client._next_id, "reason": "test"})
    with pytest.raises(AssertionError, match="no response"):
        await asyncio.wait_for(call, WAIT)
    # The process that had the cancelled call serves nobody else; the next call goes to another one.
    await until(lambda: sample(EXITS, {"reason": "abandoned"}) > before, "the process was not retired")
    second = (await client.call_tool("whoami"))["result"]["content"][0]["text"]
    assert second != first


@pytest.mark.parametrize("mode", ["session", "pool"])
async def test_a_request_reaches_the_process_byte_for_byte_and_its_answer_keeps_the_clients_id(
    mode: str, http: aiohttp.ClientSession
) -> None:
    """No id or progress token is rewritten in either mode: the process reads the client's body as sent (key order,
    spacing, a string id, a progress token), and the client gets the answer under its own id."""
    echo = (sys.executable, "-S", "-m", "tests.upstreams.echo_server")
    config = GatewayConfig(upstream_command=echo, metrics_port=0, upstream_mode=mode, pool_max=1)
    server = TestServer(create_app(config, authenticator=HeaderAuthenticator()), host="127.0.0.1")
    await server.start_server()
    try:
        clients = [as_user(http, server, user) for user in ("alice", "bob")]
        for client in clients:
            await client.initialize()
        for client in clients:
            body = (
                '{ "params" : {"_meta": {"progressToken": "same"}, "arguments":{}, "name":"line"},'
                '"id":"same-id", "method":"tools/call",  "jsonrpc":"2.0" }'
            )
            async with http.post(client.url, data=body, headers=client.headers()) as response:
                assert response.status == 200, await response.text()
                answers = [m for m in messages(await read_sse(response, until_id="same-id")) if "result" in m]
            assert [a["id"] for a in answers] == ["same-id"]
            assert answers[0]["result"]["content"][0]["text"] == body
    finally:
        await server.close()


async def test_the_2026_partition_is_counted_apart_from_the_session_partition(
    pool2: TestServer, http: aiohttp.ClientSession
) -> None:
    """Every pool metric carries `partition`: a session's call counts in `session`, a 2026-07-28 call in `stateless`."""
    before = {p: sample("mcp_gateway_pool_dispatches_total", {"partition": p}) for p in ("session", "stateless")}
    client = as_user(http, pool2, "alice")
    await client.initialize()
    assert (await client.call_tool("echo", {"text": "old"}))["result"]["content"][0]["text"] == "old"
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
    }
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "new"}, "_meta": meta},
    }
    headers = {
        "X-Test-User": "bob",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "echo",
    }
    async with http.post(client.url, json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["result"]["content"][0]["text"] == "new"
    assert sample("mcp_gateway_pool_dispatches_total", {"partition": "session"}) == before["session"] + 1
    # The 2026 call, and any tools/list the gateway sent to learn the tool's Mcp-Param headers.
    assert sample("mcp_gateway_pool_dispatches_total", {"partition": "stateless"}) >= before["stateless"] + 1
    for partition in ("session", "stateless"):
        assert sample("mcp_gateway_pool_processes", {"partition": partition}) >= 1


async def test_the_pool_grows_under_load_and_shrinks_to_pool_min_when_idle(http: aiohttp.ClientSession) -> None:
    server = await start_pool(pool_min=1, pool_max=3, pool_idle_timeout=1.0)
    try:
        clients = [as_user(http, server, f"user{n}") for n in range(3)]
        for client in clients:
            await client.initialize()
        before = sample("mcp_gateway_pool_process_exits_total", {"reason": "idle"})
        # Three calls at once: two wait, so the pool starts two more processes for them.
        calls = asyncio.gather(*(c.call_tool("slow", {"ms": 3000}) for c in clients))
        await until(lambda: sample("mcp_gateway_pool_processes") == 3, "the pool did not grow")
        await asyncio.wait_for(calls, WAIT)
        # One session keeps calling at a low rate: it is served by the oldest process; the other two go idle.
        deadline = time.monotonic() + WAIT
        while sample("mcp_gateway_pool_processes") > 1:
            assert time.monotonic() < deadline, "the pool did not shrink"
            assert (await clients[0].call_tool("echo", {"text": "x"}))["result"]["content"][0]["text"] == "x"
            await asyncio.sleep(0.2)
        assert sample("mcp_gateway_pool_process_exits_total", {"reason": "idle"}) == before + 2
        for client in clients:
            assert (await client.call_tool("echo", {"text": "y"}))["result"]["content"][0]["text"] == "y"
    finally:
        await server.close()


async def test_ending_a_session_mid_call_retires_its_process_once(
    pool2: TestServer, http: aiohttp.ClientSession
) -> None:
    before = sample("mcp_gateway_pool_process_exits_total", {"reason": "abandoned"})
    alice, bob = as_user(http, pool2, "alice"), as_user(http, pool2, "bob")
    for client in (alice, bob):
        await client.initialize()
    first = (await alice.call_tool("whoami"))["result"]["content"][0]["text"]
    calls = [asyncio.ensure_future(alice.call_tool("slow", {"ms": 5000})) for _ in range(2)]
    await asyncio.sleep(0.3)
    assert await alice.delete() == 204
    for call in calls:
        answer = await asyncio.wait_for(call, WAIT)
        assert answer["error"]["message"]
    await until(lambda: sample(EXITS, {"reason": "abandoned"}) > before, "the process was not retired")
    await asyncio.sleep(0.2)
    # Two requests were abandoned on one process: it is stopped, and counted, once.
    assert sample("mcp_gateway_pool_process_exits_total", {"reason": "abandoned"}) == before + 1
    assert (await bob.call_tool("whoami"))["result"]["content"][0]["text"] != first
