"""Server-sent events: framing, event ids, a stream's replay buffer, and the one wait-for-data loop.

Streams are logical: a request stream lives until its responses are delivered and may be attached to several HTTP
connections in turn (the POST that opened it, then GETs resuming with Last-Event-ID). Event ids are
"<stream>-<seq>" with a session-wide sequence, so they are unique within the session and name their stream.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque

from gateway.jsonrpc import HANDSHAKE_VERSIONS

GET_STREAM = 0
"""The stream id of a session's standalone GET stream."""
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEPALIVE = b": keepalive\n\n"
EVENT_ID = re.compile(r"([0-9]{1,18})-([0-9]{1,18})")
"""An SSE event id the gateway made, "<stream>-<seq>": ASCII digits only (str.isdigit() also takes "²")."""
PRIMING_FROM = HANDSHAKE_VERSIONS.index("2025-11-25")


def supports_priming(version: str | None) -> bool:
    """The 2025-11-25 priming event (id + empty data) confuses older clients, so only send it to newer ones."""
    return version in HANDSHAKE_VERSIONS and HANDSHAKE_VERSIONS.index(version) >= PRIMING_FROM


def event_frame(event_id: bytes, payload: bytes) -> bytes:
    """One SSE event carrying a JSON-RPC message (bytes, possibly ending in a newline); one copy of the payload."""
    data = memoryview(payload)[:-1] if payload.endswith(b"\n") else payload
    return b"".join((b"id: ", event_id, b"\ndata: ", data, b"\n\n"))


def priming_frame(event_id: bytes, retry_ms: int) -> bytes:
    """An event with an id and empty data, so the client can resume even before the first message."""
    return b"id: " + event_id + b"\nretry: " + str(retry_ms).encode() + b"\ndata: \n\n"


def retry_frame(retry_ms: int) -> bytes:
    return b"retry: " + str(retry_ms).encode() + b"\n\n"


class Stream:
    """One SSE stream of a session: its replay buffer and the connection currently draining it, if any."""

    __slots__ = (
        "attached",
        "bytes",
        "delivered_seq",
        "events",
        "finished",
        "json_mode",
        "open_requests",
        "outbox",
        "outbox_bytes",
        "sid",
        "waiter",
    )

    def __init__(self, sid: int, replay: int, *, json_mode: bool = False) -> None:
        self.sid = sid
        # A JSON reply needs every response of its batch, so only SSE streams cap what they keep.
        self.events: deque[tuple[int, bytes]] = deque(maxlen=None if json_mode else replay)
        self.outbox: deque[tuple[int, bytes]] = deque()
        self.outbox_bytes = 0
        self.attached: object | None = None
        self.waiter: asyncio.Future[bool] | None = None
        self.open_requests = 0
        self.finished = False
        self.json_mode = json_mode
        self.delivered_seq = 0
        self.bytes = 0
        """Bytes ever pushed: an upper bound of what the replay buffer holds."""

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(False)

    async def wait(self, seconds: float | None = None) -> bool:
        """Until the stream has news (an event, its end, another reader); True if `seconds` passed first."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self.waiter = waiter
        handle = loop.call_later(seconds, _expire, waiter) if seconds is not None else None
        try:
            return await waiter
        finally:
            if handle is not None:
                handle.cancel()
            self.waiter = None

    def push(self, seq: int, frame: bytes) -> None:
        self.events.append((seq, frame))
        self.bytes += len(frame)
        if self.attached is not None:
            self.outbox.append((seq, frame))
            self.outbox_bytes += len(frame)
            self.wake()

    def attach(self, token: object, after_seq: int | None) -> None:
        """Make `token`'s connection the reader; queue buffered events newer than `after_seq` (None: undelivered)."""
        if self.attached is not None and self.attached is not token:
            self.wake()  # the previous connection notices it was replaced and ends
        self.attached = token
        start = self.delivered_seq if after_seq is None else after_seq
        self.outbox = deque(item for item in self.events if item[0] > start)
        self.outbox_bytes = sum(len(frame) for _, frame in self.outbox)

    def detach(self, token: object) -> None:
        if self.attached is token:
            self.attached = None
            self.outbox.clear()
            self.outbox_bytes = 0

    def take_outbox(self) -> deque[tuple[int, bytes]]:
        """Everything queued for the connection; the caller writes it."""
        frames, self.outbox = self.outbox, deque()
        self.outbox_bytes = 0
        return frames

    def finish(self) -> None:
        self.finished = True
        self.wake()


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(True)
