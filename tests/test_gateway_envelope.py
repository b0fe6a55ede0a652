"""Upstream envelopes: a large line is routed from its ends without decoding its payload, and agrees with a parse."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.envelope import ENVELOPE_ONLY_BYTES, read_envelope
from tests.fixtures.gateway import McpHttp, StartGateway, messages, read_sse

ODD = f"{sys.executable} -S {Path(__file__).parent / 'upstreams' / 'odd_server.py'}"
BIG_TEXT = 'a text with "quotes", a backslash \\, unicode é and a fake member "isError": true\n' * (
    ENVELOPE_ONLY_BYTES // 40
)


def serialize(message: dict[str, Any], order: str, spaced: bool) -> bytes:
    """`message` as the Python SDK (jsonrpc, id, then the rest) or the TypeScript SDK (the rest, jsonrpc, id)."""
    rest = {k: v for k, v in message.items() if k not in ("jsonrpc", "id")}
    head = {"id": message["id"]} if "id" in message else {}
    ordered = {"jsonrpc": "2.0", **head, **rest} if order == "python" else {**rest, "jsonrpc": "2.0", **head}
    separators = (", ", ": ") if spaced else (",", ":")
    return json.dumps(ordered, separators=separators).encode() + b"\n"


def truth(line: bytes) -> tuple[Any, str | None, bool, bool]:
    """(id, method, error response, result.isError) from a full parse."""
    message = json.loads(line)
    result = message.get("result")
    is_error = "error" in message or (isinstance(result, dict) and result.get("isError") is True)
    return message.get("id"), message.get("method"), "error" in message, is_error


def observed(line: bytes) -> tuple[Any, str | None, bool, bool]:
    envelope = read_envelope(line)
    assert envelope is not None
    return envelope.id, envelope.method, envelope.error, envelope.result_is_error()


IDS = [7, 0, -3, 123456789012, "req-1", 'quoted "id" \\ é', ""]
RESULTS = [
    {"content": [{"type": "text", "text": BIG_TEXT}]},
    {"content": [{"type": "text", "text": BIG_TEXT}], "isError": True},
    {"content": [{"type": "text", "text": BIG_TEXT}], "isError": False},
    {"content": [{"type": "text", "text": BIG_TEXT}], "structuredContent": {"rows": [BIG_TEXT[:100]] * 3}},
]


@pytest.mark.parametrize("order", ["python", "typescript"])
@pytest.mark.parametrize("spaced", [False, True])
@pytest.mark.parametrize("msg_id", IDS)
def test_large_responses_are_read_from_their_ends(order: str, spaced: bool, msg_id: Any) -> None:
    for result in RESULTS:
        line = serialize({"jsonrpc": "2.0", "id": msg_id, "result": result}, order, spaced)
        assert len(line) >= ENVELOPE_ONLY_BYTES
        envelope = read_envelope(line)
        assert envelope is not None and envelope.message is None, "a large result must not be decoded"
        assert observed(line) == truth(line)
        assert envelope.message is None, "isError must be told from the line's end"
    error = {"code": -32000, "message": "failed", "data": BIG_TEXT}
    line = serialize({"jsonrpc": "2.0", "id": msg_id, "error": error}, order, spaced)
    assert observed(line) == truth(line) and read_envelope(line).message is None  # type: ignore[union-attr]


@pytest.mark.parametrize("order", ["python", "typescript"])
@pytest.mark.parametrize("spaced", [False, True])
def test_large_requests_and_notifications_are_read_from_their_ends(order: str, spaced: bool) -> None:
    for message in (
        {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": BIG_TEXT}},
        {"jsonrpc": "2.0", "id": "s-1", "method": "sampling/createMessage", "params": {"messages": [BIG_TEXT]}},
        {"jsonrpc": "2.0", "id": 9, "method": 'odd/"name"', "params": {"text": BIG_TEXT}},
    ):
        line = serialize(message, order, spaced)
        assert observed(line) == truth(line)
        assert read_envelope(line).message is None  # type: ignore[union-attr]


def test_lines_whose_ends_cannot_tell_are_parsed() -> None:
    nested = {"content": [], "structuredContent": {"isError": False, "text": BIG_TEXT}, "isError": True}
    cases = [
        # isError twice: the one at the end might not be the result's own.
        {"jsonrpc": "2.0", "id": 1, "result": nested},
        # isError not last in the result.
        {"jsonrpc": "2.0", "id": 2, "result": {"isError": True, "content": [{"type": "text", "text": BIG_TEXT}]}},
        # members in an order no SDK writes.
        {"id": 3, "result": {"content": [{"type": "text", "text": BIG_TEXT}]}, "jsonrpc": "2.0", "extra": 1},
        # an id that is not an integer or a string.
        {"jsonrpc": "2.0", "id": 1.5, "result": {"text": BIG_TEXT}},
    ]
    for message in cases:
        line = json.dumps(message).encode() + b"\n"
        envelope = read_envelope(line)
        assert envelope is not None
        seen = (envelope.id, envelope.method, envelope.error, envelope.result_is_error())
        assert seen == truth(line)
        assert envelope.message == message, "what the ends cannot tell is decoded from the whole line"


def test_small_lines_are_always_parsed() -> None:
    line = b'{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}\n'
    envelope = read_envelope(line)
    assert envelope is not None and envelope.message is not None
    assert observed(line) == truth(line) == (1, None, False, True)


def test_lines_that_are_not_json_objects() -> None:
    with pytest.raises(ValueError):
        read_envelope(b"not json\n")
    with pytest.raises(ValueError):
        read_envelope(b"[" * 100_000 + b"]" * 100_000)  # nesting too deep to parse
    with pytest.raises(ValueError):
        read_envelope(b'{"jsonrpc":"2.0","id":1,"result":"' + b"x" * ENVELOPE_ONLY_BYTES)  # truncated
    assert read_envelope(b"[1, 2, 3]\n") is None
    assert read_envelope(json.dumps([BIG_TEXT]).encode()) is None


@pytest.mark.parametrize("order", ["python", "typescript"])
async def test_large_answers_pass_the_gateway_intact_and_are_audited(
    order: str, gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command=f"{ODD} large")
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    for msg_id, (size, error) in enumerate([(300_000, False), (2_000_000, True), (100, True)], start=1):
        body = {
            "jsonrpc": "2.0",
            "id": msg_id,
            "method": "tools/call",
            "params": {"name": "big", "arguments": {"size": size, "error": error, "order": order, "spaced": error}},
        }
        async with http.post(gw.mcp_url, json=body, headers=client.headers()) as response:
            assert response.status == 200
            notification, answer = messages(await read_sse(response, until_id=msg_id))
        assert notification["method"] == "notifications/message"
        text = answer["result"]["content"][0]["text"]
        assert len(text) >= size and text == notification["params"]["data"]
        assert answer["result"].get("isError", False) is error
    audit = [json.loads(line) for line in gw.logs().splitlines() if '"tool_call"' in line]
    assert [entry["outcome"] for entry in audit] == ["success", "error", "error"]
