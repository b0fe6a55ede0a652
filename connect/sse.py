"""Server-sent events, parsed from a byte stream (the HTML living standard's rules, the parts MCP uses)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field


@dataclass
class Event:
    """One dispatched event. `id` is None when the event set none; `data` may be empty (a priming event)."""

    data: str = ""
    id: str | None = None
    retry: int | None = None
    event: str = "message"


@dataclass
class _Builder:
    """The event being read: fields accumulate until a blank line dispatches it."""

    event: Event = field(default_factory=Event)
    data: list[str] = field(default_factory=list)
    seen: bool = False

    def line(self, raw: bytes) -> Event | None:
        """Take one line (without its ending); return the event a blank line completes."""
        line = raw.decode("utf-8", errors="replace")
        if not line:
            done = self.event if self.seen else None
            if done is not None:
                done.data = "\n".join(self.data)
            self.event, self.data, self.seen = Event(), [], False
            return done
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self.data.append(value)
        elif name == "id" and "\0" not in value:
            self.event.id = value
        elif name == "retry" and value.isdigit():
            self.event.retry = int(value)
        elif name == "event":
            self.event.event = value or "message"
        else:
            return None
        self.seen = True
        return None


async def events(chunks: AsyncIterable[bytes]) -> AsyncIterator[Event]:
    """Events from raw chunks; a trailing event without its blank line is dropped, as the standard says."""
    buffer = b""
    builder = _Builder()
    async for chunk in chunks:
        buffer += chunk
        while (cut := _line_end(buffer)) is not None:
            end, skip = cut
            event = builder.line(buffer[:end])
            buffer = buffer[end + skip :]
            if event is not None:
                yield event
    if buffer.endswith(b"\r"):  # the stream ended, so its last CR was a whole line ending, not half a CRLF
        event = builder.line(buffer[:-1])
        if event is not None:
            yield event


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """Index and length of the first line ending (CRLF, LF or CR), or None."""
    lf = buffer.find(b"\n")
    cr = buffer.find(b"\r")
    if cr == -1 and lf == -1:
        return None
    if cr != -1 and (lf == -1 or cr < lf):
        if cr + 1 == len(buffer):
            return None  # a CR at the end may be the first half of CRLF
        return cr, 2 if buffer[cr + 1 : cr + 2] == b"\n" else 1
    return lf, 1
