"""Server-sent events, parsed from a byte stream (the HTML living standard's rules, the parts MCP uses)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass


@dataclass
class Event:
    """One dispatched event. `id` is None when the event set none; `data` may be empty (a priming event)."""

    data: str = ""
    id: str | None = None
    retry: int | None = None
    event: str = "message"


async def events(chunks: AsyncIterable[bytes]) -> AsyncIterator[Event]:
    """Events from raw chunks; a trailing event without its blank line is dropped, as the standard says."""
    buffer = b""
    data: list[str] = []
    current = Event()
    seen = False
    async for chunk in chunks:
        buffer += chunk
        while True:
            cut = _line_end(buffer)
            if cut is None:
                break
            end, skip = cut
            line = buffer[:end].decode("utf-8", errors="replace")
            buffer = buffer[end + skip :]
            if not line:
                if seen:
                    current.data = "\n".join(data)
                    yield current
                current, data, seen = Event(), [], False
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                data.append(value)
                seen = True
            elif name == "id" and "\0" not in value:
                current.id = value
                seen = True
            elif name == "retry" and value.isdigit():
                current.retry = int(value)
                seen = True
            elif name == "event":
                current.event = value or "message"
                seen = True


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
