"""The gateway's log writer: lines made on the event loop are written shortly after, together; none are lost."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import signal
import time
from typing import Any

import aiohttp

from gateway.logging import FLUSH_DELAY, LineWriter, _add_timestamp
from tests.fixtures.gateway import ECHO_UPSTREAM, McpHttp, StartGateway


class CountingStream(io.StringIO):
    """A text stream that counts its write calls."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_off_the_event_loop_every_line_is_written_at_once() -> None:
    stream = CountingStream()
    writer = LineWriter(stream)
    writer.msg('{"event": "one"}')
    assert stream.getvalue() == '{"event": "one"}\n'
    writer.msg('{"event": "two"}')
    assert stream.getvalue().splitlines() == ['{"event": "one"}', '{"event": "two"}']
    assert stream.writes == 2


async def test_on_the_event_loop_a_burst_is_one_write_shortly_after() -> None:
    stream = CountingStream()
    writer = LineWriter(stream)
    for n in range(50):
        writer.msg(json.dumps({"n": n}))
    assert stream.getvalue() == ""  # nothing yet: the response this line describes goes out first
    await asyncio.sleep(FLUSH_DELAY * 4)
    assert [json.loads(line)["n"] for line in stream.getvalue().splitlines()] == list(range(50))
    assert stream.writes == 1


def test_a_line_left_by_a_stopped_loop_goes_out_with_the_next_one() -> None:
    stream = CountingStream()
    writer = LineWriter(stream)

    async def log_and_stop() -> None:
        writer.msg("made on a loop that stops before its flush runs")

    asyncio.run(log_and_stop())
    writer.msg("made after the loop")
    assert stream.getvalue().splitlines() == ["made on a loop that stops before its flush runs", "made after the loop"]


async def test_a_new_loop_gets_its_own_flush() -> None:
    stream = CountingStream()
    writer = LineWriter(stream)

    def on_another_loop() -> None:
        async def log() -> None:
            writer.msg("first loop")

        asyncio.run(log())  # ends before the flush it scheduled

    await asyncio.get_running_loop().run_in_executor(None, on_another_loop)
    writer.msg("second loop")
    await asyncio.sleep(FLUSH_DELAY * 4)
    assert stream.getvalue().splitlines() == ["first loop", "second loop"]


def test_deferred_lines_keep_their_place_and_the_time_of_their_event() -> None:
    stream = CountingStream()
    writer = LineWriter(stream)

    def emit(event: str, **fields: Any) -> None:  # what a structlog logger does: render, then write
        writer.write_line(json.dumps({"event": event, "at": fields["timestamp"], "n": fields["n"]}))

    async def log() -> float:
        writer.write_line(json.dumps({"event": "made at once"}))
        writer.defer(emit, "deferred", {"n": 1})
        deferred_by = time.time()
        writer.write_line(json.dumps({"event": "made at once, later"}))
        await asyncio.sleep(FLUSH_DELAY * 4)
        return deferred_by

    deferred_by = asyncio.run(log())
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["made at once", "deferred", "made at once, later"]
    assert lines[1]["at"] <= deferred_by, "the time is when the event happened, not when the line was written"
    assert stream.writes == 1


def test_a_deferred_line_that_cannot_be_rendered_costs_no_other_line() -> None:
    stream = CountingStream()
    writer = LineWriter(stream)

    def broken(event: str, **fields: Any) -> None:
        raise TypeError("cannot render")

    async def log() -> None:
        writer.write_line("before")
        writer.defer(broken, "broken", {})
        writer.write_line("after")
        await asyncio.sleep(FLUSH_DELAY * 4)

    asyncio.run(log())
    lines = stream.getvalue().splitlines()
    assert lines[0] == "before" and lines[2] == "after"
    assert json.loads(lines[1])["event"] == "log_line_failed"


def test_timestamps_are_utc_iso_8601_with_microseconds() -> None:
    assert _add_timestamp(None, "info", {"timestamp": 1764000000.25})["timestamp"] == "2025-11-24T16:00:00.250000Z"
    stamped = _add_timestamp(None, "info", {})["timestamp"]
    moment = datetime.datetime.fromisoformat(stamped.replace("Z", "+00:00"))
    assert abs(moment.timestamp() - time.time()) < 5


def test_a_closed_stream_does_not_break_logging() -> None:
    stream = CountingStream()
    writer = LineWriter(stream)
    stream.close()
    writer.msg("nowhere to go")  # must not raise: a request handler is logging


async def test_lines_made_during_shutdown_reach_the_log(
    gateway_factory: StartGateway, http: aiohttp.ClientSession
) -> None:
    gw = gateway_factory(upstream_command=ECHO_UPSTREAM)
    client = McpHttp(http, gw.mcp_url)
    await client.initialize()
    assert (await client.call_tool("echo", {"text": "hi"}))["result"]["content"][0]["text"] == "hi"
    gw.process.send_signal(signal.SIGTERM)
    assert await asyncio.get_running_loop().run_in_executor(None, gw.process.wait, 30) == 0
    events = [json.loads(line)["event"] for line in gw.logs().splitlines() if line.startswith("{")]
    # The last request's lines, the shutdown's own lines, and the session it closed are all there, in order.
    assert events.index("tool_call") < events.index("gateway_draining") < events.index("gateway_stopped")
    assert "http_request" in events and events.count("session_closed") == 1
    assert events[-1] == "gateway_stopped"
