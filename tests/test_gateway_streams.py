"""Server-to-client routing and SSE resumption: which stream each upstream message takes, and Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.fixtures.gateway import ECHO_UPSTREAM, McpHttp, RunningGateway, SseEvent, StartGateway, messages, read_sse


@pytest.fixture(scope="module")
def gw(module_gateway_factory: StartGateway) -> RunningGateway:
    return module_gateway_factory(upstream_command=ECHO_UPSTREAM)


def call(msg_id: Any, name: str, arguments: dict[str, Any] | None = None, token: Any = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": arguments or {}}
    if token is not None:
        params["_meta"] = {"progressToken": token}
    return {"jsonrpc": "2.0", "id": msg_id, "method": "tools/call", "params": params}


async def next_message(response: aiohttp.ClientResponse) -> dict[str, Any]:
    while True:
        (event,) = await asyncio.wait_for(read_sse(response, limit=1), 10)
        if event.data:
            message: dict[str, Any] = event.json()
            return message


async def test_progress_goes_to_the_request_stream_before_its_response(client: McpHttp) -> None:
    body = call(1, "progress", {"steps": 3, "delay": 0.01}, token="tok-1")
    async with client.http.post(client.url, json=body, headers=client.headers()) as response:
        found = messages(await read_sse(response, until_id=1))
    assert [m["params"]["progress"] for m in found[:-1]] == [1, 2, 3]
    assert all(m["params"]["progressToken"] == "tok-1" for m in found[:-1])
    assert found[-1]["id"] == 1


async def test_progress_follows_its_token_when_several_requests_are_pending(client: McpHttp) -> None:
    async with client.http.post(client.url, json=call(1, "sleep", {"seconds": 1}), headers=client.headers()) as slow:
        body = call(2, "progress", {"steps": 2, "delay": 0.01}, token=77)
        async with client.http.post(client.url, json=body, headers=client.headers()) as progress:
            found = messages(await read_sse(progress, until_id=2))
        slow_found = messages(await read_sse(slow, until_id=1))
    assert [m.get("method") for m in found] == ["notifications/progress", "notifications/progress", None]
    assert [m.get("id") for m in slow_found] == [1]


async def test_server_request_goes_to_the_pending_request_stream_and_the_answer_reaches_upstream(
    client: McpHttp,
) -> None:
    async with client.http.post(client.url, json=call(5, "ask"), headers=client.headers()) as response:
        server_request = await next_message(response)
        assert server_request["method"] == "sampling/createMessage"
        answer = {
            "jsonrpc": "2.0",
            "id": server_request["id"],
            "result": {"role": "assistant", "content": {"type": "text", "text": "forty-two"}, "model": "m"},
        }
        async with client.http.post(client.url, json=answer, headers=client.headers()) as posted:
            assert posted.status == 202
        reply = messages(await read_sse(response, until_id=5))[-1]
    assert json.loads(reply["result"]["content"][0]["text"])["content"]["text"] == "forty-two"


async def test_notification_with_several_requests_pending_goes_to_the_get_stream(client: McpHttp) -> None:
    async with client.http.get(client.url, headers=client.headers(Accept="text/event-stream")) as listen:
        assert listen.status == 200
        async with client.http.post(client.url, json=call(1, "sleep", {"seconds": 1}), headers=client.headers()):
            body = call(2, "notify", {"text": "to everyone", "delay": 0.2})
            async with client.http.post(client.url, json=body, headers=client.headers()) as notify:
                on_request_stream = messages(await read_sse(notify, until_id=2))
                on_get_stream = await next_message(listen)
    assert [m.get("id") for m in on_request_stream] == [2]
    assert on_get_stream["method"] == "notifications/message"
    assert on_get_stream["params"]["data"] == "to everyone"


async def test_get_stream_messages_are_buffered_until_a_get_stream_opens(client: McpHttp) -> None:
    async with client.http.post(client.url, json=call(1, "sleep", {"seconds": 0.5}), headers=client.headers()) as a:
        async with client.http.post(client.url, json=call(2, "notify", {"text": "later"}), headers=client.headers()):
            pass
        await read_sse(a, until_id=1)
    async with client.http.get(client.url, headers=client.headers(Accept="text/event-stream")) as listen:
        message = await next_message(listen)
    assert message["params"]["data"] == "later"


async def test_cancelled_request_ends_its_stream(client: McpHttp) -> None:
    async with client.http.post(client.url, json=call(9, "sleep", {"seconds": 30}), headers=client.headers()) as slow:
        await asyncio.sleep(0.1)
        status = await client.notify("notifications/cancelled", {"requestId": 9, "reason": "user"})
        assert status == 202
        found = messages(await asyncio.wait_for(read_sse(slow), 10))
    assert found == []


async def test_resuming_replays_only_the_events_after_last_event_id(client: McpHttp) -> None:
    body = call(3, "progress", {"steps": 5, "delay": 0.15}, token="t")
    async with client.http.post(client.url, json=body, headers=client.headers()) as response:
        first: list[SseEvent] = await read_sse(response, limit=2)  # priming event and progress 1
    assert first[1].json()["params"]["progress"] == 1
    headers = client.headers(Accept="text/event-stream", **{"Last-Event-ID": first[1].id or ""})
    async with client.http.get(client.url, headers=headers) as resumed:
        assert resumed.status == 200
        rest = await read_sse(resumed, until_id=3)
    found = messages(rest)
    assert [m["params"]["progress"] for m in found[:-1]] == [2, 3, 4, 5]
    assert found[-1]["id"] == 3
    assert all(event.id and event.id.split("-")[0] == first[1].id.split("-")[0] for event in rest)  # type: ignore[union-attr]


async def test_resuming_a_finished_stream_replays_its_response(client: McpHttp) -> None:
    async with client.http.post(client.url, json=call(4, "echo", {"text": "kept"}), headers=client.headers()) as r:
        events = await read_sse(r, until_id=4)
    priming = events[0]
    headers = client.headers(Accept="text/event-stream", **{"Last-Event-ID": priming.id or ""})
    async with client.http.get(client.url, headers=headers) as resumed:
        found = messages(await read_sse(resumed))
    assert [m["result"]["content"][0]["text"] for m in found] == ["kept"]


@pytest.mark.parametrize(
    "last_event_id",
    [
        "999-999",
        "garbage",
        "\u00b2-1",  # a superscript two: str.isdigit() says yes, int() says no
        "1-\u00b3",
        "\u0661-1",  # an Arabic-Indic one: int() would read it, but event ids are ASCII
        "1-" + "9" * 5000,  # more digits than int() converts
        "-1",
        "1--2",
    ],
)
async def test_unknown_last_event_id_is_400(client: McpHttp, last_event_id: str) -> None:
    headers = client.headers(Accept="text/event-stream", **{"Last-Event-ID": last_event_id})
    async with client.http.get(client.url, headers=headers) as response:
        assert response.status == 400


async def test_a_request_answered_as_plain_json_has_no_stream_to_resume(client: McpHttp) -> None:
    """Its events have no ids; a GET naming its stream must not take it over from the waiting POST."""
    headers = client.headers(Accept="application/json, text/event-stream;q=0.1")

    async def plain_json_call() -> dict[str, Any]:
        async with client.http.post(client.url, json=call(71, "sleep", {"seconds": 0.6}), headers=headers) as response:
            assert response.content_type == "application/json"
            reply: dict[str, Any] = await response.json()
            return reply

    pending = asyncio.create_task(plain_json_call())
    await asyncio.sleep(0.2)
    # Stream 1 answered initialize; this request's stream is the session's second.
    resume = client.headers(Accept="text/event-stream", **{"Last-Event-ID": "2-0"})
    async with client.http.get(client.url, headers=resume) as response:
        assert response.status == 400
    reply = await asyncio.wait_for(pending, 10)
    assert reply["result"]["content"][0]["text"] == "slept"


async def test_polling_closes_the_post_stream_and_the_client_resumes_with_get(
    gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command=ECHO_UPSTREAM, env={"SSE_CLOSE_AFTER": "0.3", "SSE_RETRY_MS": "250"})
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    async with http.post(gw.mcp_url, json=call(1, "sleep", {"seconds": 1.2}), headers=client.headers()) as response:
        events = await asyncio.wait_for(read_sse(response), 10)
    assert messages(events) == [], "the stream closed before the response"
    assert events[0].data == "" and events[0].retry == 250
    headers = client.headers(Accept="text/event-stream", **{"Last-Event-ID": events[0].id or ""})
    async with http.get(gw.mcp_url, headers=headers) as resumed:
        found = messages(await read_sse(resumed, until_id=1))
    assert found[-1]["result"]["content"][0]["text"] == "slept"


async def test_sdk_client_survives_polling(gateway_factory: StartGateway) -> None:
    from mcp.client import Client

    gw = gateway_factory(upstream_command=ECHO_UPSTREAM, env={"SSE_CLOSE_AFTER": "0.2", "SSE_RETRY_MS": "100"})
    async with Client(gw.mcp_url) as sdk:
        result = await sdk.call_tool("sleep", {"seconds": 0.8})
        assert result.content[0].text == "slept"  # type: ignore[union-attr]


@pytest.mark.parametrize("accept", ["application/json, text/event-stream", "application/json, text/event-stream;q=0.5"])
async def test_a_batch_larger_than_the_replay_buffer_gets_every_response(
    gateway_factory: StartGateway, http: aiohttp.ClientSession, accept: str
) -> None:
    gw = gateway_factory(upstream_command=ECHO_UPSTREAM, env={"SSE_REPLAY_BUFFER": "4"})
    client = McpHttp(http, gw.mcp_url, version="2025-03-26")
    await client.initialize()
    batch = [call(i, "echo", {"text": str(i)}) for i in range(12)]
    async with http.post(gw.mcp_url, json=batch, headers=client.headers(Accept=accept)) as response:
        if response.content_type == "application/json":
            replies = await response.json()
        else:
            replies = messages(await read_sse(response))
    assert sorted(r["id"] for r in replies) == list(range(12))


async def test_a_slow_client_pauses_the_upstream_instead_of_filling_gateway_memory(
    gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command=ECHO_UPSTREAM)
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    body = call(1, "flood", {"count": 400, "size": 100_000})  # 40 MB of notifications on the request stream
    async with http.post(gw.mcp_url, json=body, headers=client.headers()) as response:
        await read_sse(response, limit=3)
        await asyncio.sleep(2.0)  # the client stops reading; the upstream must block on its full pipe
        found = messages(await asyncio.wait_for(read_sse(response, until_id=1), 60))
    assert len(found) >= 390
    elapsed = float(found[-1]["result"]["content"][0]["text"])
    assert elapsed >= 1.5, "the upstream wrote everything while the client was not reading"
