"""Upstream envelopes: a line is routed from its top-level members without decoding its payload, and agrees with a
full parse; ids are replaced with the payload copied byte for byte."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.envelope import read_envelope
from gateway.jsonrpc import json_bytes, json_loads
from tests.fixtures.gateway import McpHttp, StartGateway, messages, read_sse

ODD = f"{sys.executable} -S {Path(__file__).parent / 'upstreams' / 'odd_server.py'}"
LARGE = 64 * 1024
BIG_TEXT = 'a text with "quotes", a backslash \\, unicode é and a fake member "isError": true\n' * (LARGE // 40)


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
def test_large_responses_are_routed_without_decoding_their_result(order: str, spaced: bool, msg_id: Any) -> None:
    for result in RESULTS:
        line = serialize({"jsonrpc": "2.0", "id": msg_id, "result": result}, order, spaced)
        assert len(line) >= LARGE
        envelope = read_envelope(line)
        assert envelope is not None and envelope.message is None, "a large result must not be decoded"
        assert observed(line) == truth(line)
        assert envelope.message is None, "isError must be read without decoding the whole result"
    error = {"code": -32000, "message": "failed", "data": BIG_TEXT}
    line = serialize({"jsonrpc": "2.0", "id": msg_id, "error": error}, order, spaced)
    assert observed(line) == truth(line) and read_envelope(line).message is None  # type: ignore[union-attr]


@pytest.mark.parametrize("order", ["python", "typescript"])
@pytest.mark.parametrize("spaced", [False, True])
def test_large_requests_and_notifications_are_routed_without_decoding_their_params(order: str, spaced: bool) -> None:
    for message in (
        {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": BIG_TEXT}},
        {"jsonrpc": "2.0", "id": "s-1", "method": "sampling/createMessage", "params": {"messages": [BIG_TEXT]}},
        {"jsonrpc": "2.0", "id": 9, "method": 'odd/"name"', "params": {"text": BIG_TEXT}},
    ):
        line = serialize(message, order, spaced)
        assert observed(line) == truth(line)
        assert read_envelope(line).message is None  # type: ignore[union-attr]


def test_unusual_shapes_agree_with_a_full_parse() -> None:
    nested = {"content": [], "structuredContent": {"isError": False, "text": BIG_TEXT}, "isError": True}
    cases = [
        # isError twice: only the result's own counts.
        {"jsonrpc": "2.0", "id": 1, "result": nested},
        {"jsonrpc": "2.0", "id": 1, "result": {**nested, "isError": False}},
        # isError first in the result.
        {"jsonrpc": "2.0", "id": 2, "result": {"isError": True, "content": [{"type": "text", "text": BIG_TEXT}]}},
        # members in an order no SDK writes, and one JSON-RPC does not define.
        {"id": 3, "result": {"content": [{"type": "text", "text": BIG_TEXT}]}, "jsonrpc": "2.0", "extra": 1},
        # an id that is not an integer or a string; results that are not objects.
        {"jsonrpc": "2.0", "id": 1.5, "result": {"text": BIG_TEXT}},
        {"jsonrpc": "2.0", "id": 4, "result": [BIG_TEXT, {"isError": True}]},
        {"jsonrpc": "2.0", "id": 5, "result": None},
        # an error whose data claims isError.
        {"jsonrpc": "2.0", "id": 6, "error": {"code": 1, "message": "m", "data": {"isError": False}}},
        # isError written with an escape is the same member.
        {"jsonrpc": "2.0", "id": 7, "result": {"content": [], "is\\u0045rror": True}},
        {"jsonrpc": "2.0", "id": 8, "result": {"content": []}},
    ]
    for message in cases:
        line = json.dumps(message).encode().replace(b"\\\\u0045", b"\\u0045") + b"\n"
        envelope = read_envelope(line)
        assert envelope is not None
        seen = (envelope.id, envelope.method, envelope.error, envelope.result_is_error())
        assert seen == truth(line)


def test_small_lines_are_read_the_same_way() -> None:
    line = b'{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}\n'
    envelope = read_envelope(line)
    assert envelope is not None and envelope.message is None
    assert observed(line) == truth(line) == (1, None, False, True)
    assert envelope.full() == json.loads(line) and envelope.message is not None


@pytest.mark.parametrize("order", ["python", "typescript"])
@pytest.mark.parametrize("spaced", [False, True])
def test_a_new_id_leaves_the_payload_byte_for_byte(order: str, spaced: bool) -> None:
    for message in (
        {"jsonrpc": "2.0", "id": 17, "result": RESULTS[1]},
        {"jsonrpc": "2.0", "id": 17, "error": {"code": -32000, "message": "failed", "data": BIG_TEXT}},
        {"jsonrpc": "2.0", "id": 17, "method": "sampling/createMessage", "params": {"messages": [BIG_TEXT]}},
    ):
        line = serialize(message, order, spaced)
        envelope = read_envelope(line)
        assert envelope is not None
        for new_id in ("client-1", 0, 'quoted "id" é', "\ud800"):
            rewritten = envelope.with_id(new_id)
            assert json.loads(rewritten) == {**message, "id": new_id}
            payload = next(k for k in ("result", "error", "params") if k in message)
            separators = (", ", ": ") if spaced else (",", ":")
            assert json.dumps(message[payload], separators=separators).encode() in rewritten
    extra = read_envelope(b'{"jsonrpc":"2.0","id":1,"result":{},"extra":[1]}')
    assert extra is not None and json.loads(extra.with_id(2)) == {"jsonrpc": "2.0", "id": 2, "result": {}}


def test_lone_surrogate_escapes_are_read_and_written() -> None:
    """Valid JSON that has no UTF-8 form: an id (or a payload) holding a lone surrogate, written as an escape."""
    line = b'{"jsonrpc":"2.0","id":"\\ud800","result":{"content":[{"type":"text","text":"\\udc80"}],"isError":true}}'
    envelope = read_envelope(line)
    assert envelope is not None
    assert observed(line) == truth(line) == ("\ud800", None, False, True)
    assert json.loads(envelope.with_id(3)) == {**json.loads(line), "id": 3}
    assert json_bytes({"id": "\ud800"}) == b'{"id":"\\ud800"}'
    assert json_bytes({"id": "é"}) == '{"id":"é"}'.encode()
    assert json_loads(b'"\\ud800"') == "\ud800"
    small = read_envelope(b'{"jsonrpc":"2.0","id":5,"result":{"text":"\\udc80","isError":true}}')
    assert small is not None and small.result_is_error() is True


def test_lines_that_are_not_json_objects() -> None:
    with pytest.raises(ValueError):
        read_envelope(b"not json\n")
    with pytest.raises(ValueError):
        read_envelope(b'{"jsonrpc":"2.0","id":1,"result":' + b"[" * 100_000 + b"]" * 100_000 + b"}")  # too deep
    with pytest.raises(ValueError):
        read_envelope(b'{"jsonrpc":"2.0","id":1,"result":"' + b"x" * LARGE)  # truncated
    with pytest.raises(ValueError):
        read_envelope(b'{"jsonrpc":"2.0","id":1,"result":{"text":"a"}, "extra": [1,}')  # broken where not routed
    with pytest.raises(ValueError):
        json_loads(b"{")
    assert read_envelope(b"[1, 2, 3]\n") is None
    assert read_envelope(b"[" * 100_000 + b"]" * 100_000) is None  # not an object: not read further
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
