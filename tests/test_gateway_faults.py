"""Faults and limits: upstream crashes, oversized lines, session limits, idle reaping, drain on SIGTERM, leaks.

Each test starts its own gateway (tiny echo upstream) because each one ends sessions, processes or the gateway.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fixtures.gateway import ECHO_UPSTREAM, McpHttp, StartGateway, messages, read_sse


def children(pid: int) -> set[int]:
    """Pids whose parent is `pid` (zombies included: a zombie is a leak too)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.add(int(entry.name))
    return found


def exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def eventually(check: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    assert check(), "condition not reached in time"


def call(msg_id: int, name: str, arguments: dict[str, object] | None = None) -> dict[str, object]:
    return {
        "jsonrpc": "2.0",
        "id": msg_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments or {}},
    }


async def upstream_pid(client: McpHttp) -> int:
    reply = await client.call_tool("pid")
    return int(reply["result"]["content"][0]["text"])


async def test_upstream_killed_mid_call_fails_the_call_then_404_then_reinitialize(
    gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command=ECHO_UPSTREAM)
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    pid = await upstream_pid(client)
    async with http.post(gw.mcp_url, json=call(50, "sleep", {"seconds": 30}), headers=client.headers()) as response:
        assert response.status == 200
        await asyncio.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        reply = messages(await read_sse(response, until_id=50))[-1]
    assert reply["error"]["code"] == -32603
    assert reply["error"]["message"] == (
        "upstream server process was killed by signal 9 (SIGKILL); its stderr is in the gateway log"
    )
    async with http.post(gw.mcp_url, json=call(51, "echo"), headers=client.headers()) as after:
        assert after.status == 404
    again = McpHttp(http, gw.mcp_url)
    await again.initialize()
    assert (await again.call_tool("echo", {"text": "back"}))["result"]["content"][0]["text"] == "back"
    await eventually(lambda: pid not in children(gw.process.pid))


async def test_upstream_exiting_by_itself_ends_the_session(
    gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command=ECHO_UPSTREAM)
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    reply = await client.call_tool("crash")
    assert reply["error"]["code"] == -32603
    assert reply["error"]["message"] == "upstream server process exited with status 3; its stderr is in the gateway log"
    async with http.post(gw.mcp_url, json=call(2, "echo"), headers=client.headers()) as after:
        assert after.status == 404
    await eventually(lambda: not children(gw.process.pid))


async def test_upstream_line_over_the_limit_is_a_jsonrpc_error_and_ends_the_session(
    gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command=ECHO_UPSTREAM, env={"MAX_MESSAGE_BYTES": "65536"})
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    assert (await client.call_tool("big", {"size": 30000}))["result"]["content"][0]["text"] == "x" * 30000
    reply = await client.call_tool("big", {"size": 200000})
    assert reply["error"]["code"] == -32603
    assert "MAX_MESSAGE_BYTES" in reply["error"]["message"]
    async with http.post(gw.mcp_url, json=call(3, "echo"), headers=client.headers()) as after:
        assert after.status == 404
    await eventually(lambda: not children(gw.process.pid))


async def test_large_messages_under_the_default_limit_pass(
    gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command=ECHO_UPSTREAM)
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    reply = await client.call_tool("big", {"size": 8 * 1024 * 1024})
    assert len(reply["result"]["content"][0]["text"]) == 8 * 1024 * 1024


async def test_max_sessions_answers_503_with_retry_after(
    gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command=ECHO_UPSTREAM, env={"MAX_SESSIONS": "2"})
    first, second, third = (McpHttp(http, gw.mcp_url) for _ in range(3))
    await first.initialize()
    await second.initialize()
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    async with http.post(gw.mcp_url, json=body, headers=third.headers()) as response:
        assert response.status == 503
        assert int(response.headers["Retry-After"]) > 0
        assert (await response.json())["error"]["code"] == -32000
    assert await first.delete() == 204
    await third.initialize()


async def test_idle_sessions_are_reaped(gateway_factory: StartGateway, http: aiohttp.ClientSession) -> None:
    gw = gateway_factory(upstream_command=ECHO_UPSTREAM, env={"SESSION_IDLE_TIMEOUT": "0.5"})
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    await eventually(lambda: not children(gw.process.pid))
    async with http.post(gw.mcp_url, json=call(1, "echo"), headers=client.headers()) as response:
        assert response.status == 404


async def test_a_session_with_a_call_in_flight_is_not_idle(
    gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command=ECHO_UPSTREAM, env={"SESSION_IDLE_TIMEOUT": "0.3"})
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    reply = await client.call_tool("sleep", {"seconds": 1.5})
    assert reply["result"]["content"][0]["text"] == "slept"


async def test_unstartable_upstream_is_502(gateway_factory: StartGateway, http: aiohttp.ClientSession) -> None:
    gw = gateway_factory(upstream_command="/nonexistent/mcp-server --flag")
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    async with http.post(gw.mcp_url, json=body, headers=McpHttp(http, gw.mcp_url).headers()) as response:
        assert response.status == 502
        reply = await response.json()
    assert reply["id"] == 0 and reply["error"]["code"] == -32603


async def test_sigterm_lets_the_call_in_flight_finish_then_reaps_every_child(
    gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command=ECHO_UPSTREAM, env={"SHUTDOWN_GRACE": "20"})
    busy, idle = McpHttp(http, gw.mcp_url), McpHttp(http, gw.mcp_url)
    await busy.initialize()
    await idle.initialize()
    pids = children(gw.process.pid)
    assert len(pids) == 2
    async with http.post(gw.mcp_url, json=call(7, "sleep", {"seconds": 1.5}), headers=busy.headers()) as response:
        await asyncio.sleep(0.3)
        gw.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        async with http.get(gw.base_url + "/ready") as ready:
            assert ready.status == 503
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
        async with http.post(gw.mcp_url, json=init, headers=McpHttp(http, gw.mcp_url).headers()) as refused:
            assert refused.status == 503
        reply = messages(await read_sse(response, until_id=7))[-1]
    assert reply["result"]["content"][0]["text"] == "slept"
    assert await asyncio.to_thread(gw.process.wait, 30) == 0
    for pid in pids:
        assert not exists(pid), f"upstream {pid} outlived the gateway"


async def test_sigterm_grace_is_bounded(gateway_factory: StartGateway, http: aiohttp.ClientSession) -> None:
    gw = gateway_factory(upstream_command=ECHO_UPSTREAM, env={"SHUTDOWN_GRACE": "0.5"})
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    async with http.post(gw.mcp_url, json=call(8, "sleep", {"seconds": 60}), headers=client.headers()) as response:
        await asyncio.sleep(0.2)
        started = time.monotonic()
        gw.process.send_signal(signal.SIGTERM)
        reply = messages(await read_sse(response, until_id=8))[-1]
    assert reply["error"]["code"] == -32603
    assert await asyncio.to_thread(gw.process.wait, 30) == 0
    assert time.monotonic() - started < 25


async def test_stubborn_upstream_is_killed(gateway_factory: StartGateway, http: aiohttp.ClientSession) -> None:
    """An upstream that ignores stdin EOF and SIGTERM still ends (SIGKILL) when its session does."""
    script = Path(__file__).parent / "upstreams" / "stubborn_server.py"
    gw = gateway_factory(upstream_command=f"{sys.executable} -S {script}")
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    (pid,) = children(gw.process.pid)
    assert await client.delete() == 204
    await eventually(lambda: not exists(pid), within=30)


async def test_stderr_of_the_upstream_is_logged_truncated_and_rate_limited(
    gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command=ECHO_UPSTREAM)
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    await client.call_tool("stderr", {"lines": 500, "width": 5000})
    await eventually(lambda: "upstream_stderr_rate_limited" in gw.logs())
    logged = [line for line in gw.logs().splitlines() if '"upstream_stderr"' in line]
    assert 0 < len(logged) <= 60
    assert all(len(line) < 2600 for line in logged)


async def test_a_thousand_sessions_leak_no_process_or_fd(
    gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command=ECHO_UPSTREAM, env={"MAX_SESSIONS": "1000"})
    pid = gw.process.pid
    warmup = McpHttp(http, gw.mcp_url)
    await warmup.initialize()
    await warmup.delete()
    await eventually(lambda: not children(pid))
    fds_before = fd_count(pid)

    async def cycle() -> None:
        client = McpHttp(http, gw.mcp_url)
        await client.initialize()
        assert await client.delete() == 204

    for _ in range(1000 // 8):
        await asyncio.gather(*(cycle() for _ in range(8)))
    await eventually(lambda: not children(pid), within=60)
    # The client's keep-alive connections to the gateway are fds too; close them before counting.
    await http.close()
    await eventually(lambda: fd_count(pid) <= fds_before, within=30)


async def test_warm_pool_processes_serve_new_sessions(
    gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command=ECHO_UPSTREAM, env={"WARM_POOL_SIZE": "2"})
    await eventually(lambda: len(children(gw.process.pid)) == 2)
    warm = children(gw.process.pid)
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    assert await upstream_pid(client) in warm
    # The pool refills in the background: one serving session plus two waiting processes.
    await eventually(lambda: len(children(gw.process.pid)) == 3)


async def test_warm_pool_replaces_a_process_that_died_while_waiting(
    gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command=ECHO_UPSTREAM, env={"WARM_POOL_SIZE": "1"})
    await eventually(lambda: len(children(gw.process.pid)) == 1)
    (dead,) = children(gw.process.pid)
    os.kill(dead, signal.SIGKILL)
    await asyncio.sleep(0.3)
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    assert await upstream_pid(client) != dead


async def test_unix_socket_upstream_through_socat(
    gateway_factory: StartGateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    sock = tmp_path / "upstream.sock"
    socat = await asyncio.create_subprocess_exec(
        "socat",
        f"UNIX-LISTEN:{sock},fork,mode=600",
        f"EXEC:{ECHO_UPSTREAM}",
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        await eventually(sock.exists)
        gw = gateway_factory(upstream_socket=str(sock))
        first, second = McpHttp(http, gw.mcp_url), McpHttp(http, gw.mcp_url)
        await first.initialize()
        await second.initialize()
        pid_first, pid_second = await upstream_pid(first), await upstream_pid(second)
        assert pid_first != pid_second, "each session gets its own connection and server"
        assert (await first.call_tool("echo", {"text": "via socket"}))["result"]["content"][0]["text"] == "via socket"
        assert not children(gw.process.pid), "socket mode spawns nothing"
        assert await first.delete() == 204
        await eventually(lambda: not exists(pid_first))
        assert exists(pid_second)
    finally:
        socat.terminate()
        await socat.wait()


async def test_unreachable_socket_is_502(
    gateway_factory: StartGateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gw = gateway_factory(upstream_socket=str(tmp_path / "nobody-listens.sock"))
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    async with http.post(gw.mcp_url, json=body, headers=McpHttp(http, gw.mcp_url).headers()) as response:
        assert response.status == 502


ODD = f"{sys.executable} -S {Path(__file__).parent / 'upstreams' / 'odd_server.py'}"


async def test_refused_initialize_reaches_the_client_and_ends_the_session(
    gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command=f"{ODD} refuse-init")
    client = McpHttp(http, gw.mcp_url)
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "1999-01-01"}}
    async with http.post(gw.mcp_url, json=body, headers=client.headers()) as response:
        client.session_id = response.headers["Mcp-Session-Id"]
        reply = messages(await read_sse(response, until_id=0))[-1]
    assert reply["error"]["code"] == -32602
    await eventually(lambda: not children(gw.process.pid))
    async with http.post(gw.mcp_url, json=call(1, "echo"), headers=client.headers()) as after:
        assert after.status == 404


async def test_upstream_closing_stdout_ends_the_session_and_its_process(
    gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command=f"{ODD} close-stdout")
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    (pid,) = children(gw.process.pid)
    reply = await client.call_tool("anything")
    assert reply["error"]["code"] == -32603
    await eventually(lambda: not exists(pid))


async def test_noise_from_the_upstream_is_ignored(gateway_factory: StartGateway, http: aiohttp.ClientSession) -> None:
    gw = gateway_factory(upstream_command=f"{ODD} garbage")
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    for _ in range(3):
        assert (await client.call_tool("anything"))["result"]["content"][0]["text"] == "ok"
    assert "upstream_invalid_json" in gw.logs()
    assert "upstream_response_unmatched" in gw.logs()


async def test_json_reply_to_initialize_carries_the_session_id(
    gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command=ECHO_UPSTREAM)
    client = McpHttp(http, gw.mcp_url)
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}}
    headers = client.headers(Accept="application/json;q=1, text/event-stream;q=0.2")
    async with http.post(gw.mcp_url, json=body, headers=headers) as response:
        assert response.content_type == "application/json"
        assert response.headers["Mcp-Session-Id"]
        assert (await response.json())["result"]["protocolVersion"] == "2025-06-18"


@pytest.mark.parametrize(
    "upstream",
    [
        f"sh -c 'sleep 1.5; exec {ECHO_UPSTREAM}'",  # the client leaves while the process starts
        "sleep 3600",  # the client leaves while waiting for the initialize result
    ],
)
async def test_a_client_leaving_during_initialize_leaves_no_session(
    gateway_factory: StartGateway, http: aiohttp.ClientSession, upstream: str
) -> None:
    gw = gateway_factory(upstream_command=upstream)
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    with pytest.raises(asyncio.TimeoutError):
        async with http.post(
            gw.mcp_url,
            json=body,
            headers=McpHttp(http, gw.mcp_url).headers(),
            timeout=aiohttp.ClientTimeout(total=0.5),
        ) as response:
            await response.read()
    await eventually(lambda: '"session_closed"' in gw.logs())
    await eventually(lambda: not children(gw.process.pid))


async def test_an_upstream_that_cannot_start_says_its_exit_status_and_keeps_its_stderr_in_the_log(
    gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command=f"{ODD} cannot-start")
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    async with http.post(gw.mcp_url, json=body, headers=McpHttp(http, gw.mcp_url).headers()) as response:
        # The exit may be seen before the initialize request is sent (502) or while it waits (its SSE stream).
        if response.status == 502:
            reply = await response.json()
        else:
            assert response.status == 200
            reply = messages(await read_sse(response, until_id=0))[-1]
    assert reply["id"] == 0
    assert reply["error"]["code"] == -32603
    assert "upstream server process exited with status 2" in reply["error"]["message"]
    assert "gateway log" in reply["error"]["message"]
    assert "SECRET" not in json.dumps(reply) and "Kubernetes" not in json.dumps(reply)
    await eventually(lambda: '"upstream_exited"' in gw.logs())
    (exited,) = [json.loads(line) for line in gw.logs().splitlines() if '"upstream_exited"' in line]
    assert exited["status"] == 2
    assert exited["stderr_tail"] == [
        "connecting with password=hunter2-SECRET",
        "fatal: cannot reach the Kubernetes API",
    ]
    await eventually(lambda: not children(gw.process.pid))


# --- request ids in flight -------------------------------------------------------------------------------------

SILENT = Path(__file__).parent / "upstreams" / "silent_server.py"
SURROGATE_ID = '"\\ud800"'
"""A JSON string holding one lone UTF-16 surrogate: a valid id with no UTF-8 form."""


def received(record: Path) -> list[dict[str, Any]]:
    """The messages a silent upstream recorded."""
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines() if line.strip()]


def sleep_call(raw_id: str, seconds: float = 30) -> str:
    """A tools/call of `sleep` with the id written as raw JSON text."""
    params = json.dumps({"name": "sleep", "arguments": {"seconds": seconds}})
    return '{"jsonrpc":"2.0","id":' + raw_id + ',"method":"tools/call","params":' + params + "}"


async def refused_duplicate(http: aiohttp.ClientSession, client: McpHttp, body: str) -> dict[str, Any]:
    async with http.post(client.url, data=body, headers=client.headers()) as second:
        assert second.status == 400
        refusal: dict[str, Any] = json.loads(await second.read())
    return refusal


async def test_a_request_id_already_in_flight_is_refused_and_not_forwarded(
    gateway_factory: StartGateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    record = tmp_path / "received.jsonl"
    gw = gateway_factory(upstream_command=f"{sys.executable} -S {SILENT} {record}")
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    async with http.post(gw.mcp_url, data=sleep_call("7"), headers=client.headers()) as first:
        assert first.status == 200
        refusal = await refused_duplicate(http, client, sleep_call("7"))
        assert refusal["id"] == 7
        assert refusal["error"]["code"] == -32600
        assert "already in use" in refusal["error"]["message"]
        await asyncio.sleep(0.2)
        assert [m.get("id") for m in received(record) if m.get("method") == "tools/call"] == [7]
        assert await client.delete() == 204
        assert messages(await asyncio.wait_for(read_sse(first, until_id=7), 10))[-1]["error"]["code"] == -32603


async def test_delete_after_a_refused_duplicate_ends_the_session_its_process_and_the_stream(
    gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command=ECHO_UPSTREAM)
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    pid = await upstream_pid(client)
    async with http.post(gw.mcp_url, data=sleep_call(SURROGATE_ID), headers=client.headers()) as first:
        assert first.status == 200
        refusal = await refused_duplicate(http, client, sleep_call(SURROGATE_ID))
        assert refusal["id"] == "\ud800" and refusal["error"]["code"] == -32600
        assert await client.delete() == 204
        reply = messages(await asyncio.wait_for(read_sse(first, until_id="\ud800"), 10))[-1]
    assert reply["error"] == {"code": -32603, "message": "session deleted"}
    await eventually(lambda: not exists(pid))
    async with http.post(gw.mcp_url, json=call(1, "echo"), headers=client.headers()) as after:
        assert after.status == 404


async def test_an_upstream_killed_after_a_refused_duplicate_ends_the_waiting_stream(
    gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command=ECHO_UPSTREAM)
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    pid = await upstream_pid(client)
    async with http.post(gw.mcp_url, data=sleep_call(SURROGATE_ID), headers=client.headers()) as first:
        assert first.status == 200
        await refused_duplicate(http, client, sleep_call(SURROGATE_ID))
        os.kill(pid, signal.SIGKILL)
        reply = messages(await asyncio.wait_for(read_sse(first, until_id="\ud800"), 10))[-1]
    assert "killed by signal 9" in reply["error"]["message"]
    await eventually(lambda: not children(gw.process.pid))


# --- requests the upstream never answers -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["silent", "wrong-id"])
async def test_an_unanswered_request_times_out_and_the_upstream_gets_notifications_cancelled(
    gateway_factory: StartGateway, http: aiohttp.ClientSession, tmp_path: Path, mode: str
) -> None:
    record = tmp_path / "received.jsonl"
    argument = "wrong-id" if mode == "wrong-id" else ""
    gw = gateway_factory(
        upstream_command=f"{sys.executable} -S {SILENT} {record} {argument}", env={"REQUEST_TIMEOUT": "0.5"}
    )
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    started = time.monotonic()
    async with http.post(gw.mcp_url, json=call(21, "anything", {"a": 1}), headers=client.headers()) as response:
        assert response.status == 200
        reply = messages(await asyncio.wait_for(read_sse(response, until_id=21), 10))[-1]
    assert 0.5 <= time.monotonic() - started < 5
    assert reply["error"]["code"] == -32603
    assert "REQUEST_TIMEOUT" in reply["error"]["message"]
    await eventually(lambda: any(m.get("method") == "notifications/cancelled" for m in received(record)))
    (cancelled,) = [m for m in received(record) if m.get("method") == "notifications/cancelled"]
    assert cancelled["params"]["requestId"] == 21
    assert "REQUEST_TIMEOUT" in cancelled["params"]["reason"]
    audit = [json.loads(line) for line in gw.logs().splitlines() if '"tool_call"' in line]
    assert [(a["tool"], a["outcome"]) for a in audit] == [("anything", "timeout")]
    assert await client.delete() == 204, "a timeout ends the request, not the session"


async def test_a_request_answered_in_time_is_not_cancelled(
    gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command=ECHO_UPSTREAM, env={"REQUEST_TIMEOUT": "2"})
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    for _ in range(3):
        assert (await client.call_tool("sleep", {"seconds": 0.8}))["result"]["content"][0]["text"] == "slept"


async def test_an_unanswered_initialize_times_out_and_ends_the_session(
    gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command="sleep 3600", env={"REQUEST_TIMEOUT": "0.5"})
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    async with http.post(gw.mcp_url, json=body, headers=McpHttp(http, gw.mcp_url).headers()) as response:
        assert response.status == 200
        reply = messages(await asyncio.wait_for(read_sse(response, until_id=0), 10))[-1]
    assert "REQUEST_TIMEOUT" in reply["error"]["message"]
    await eventually(lambda: not children(gw.process.pid))
