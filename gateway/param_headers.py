"""MCP 2026-07-28 `Mcp-Param-*` headers: the tool arguments each input schema mirrors into headers, and the check.

A tool's input schema may mark a property with `x-mcp-header: Region`; a client then sends that argument's value
in the `Mcp-Param-Region` header too, so load balancers and proxies can route on it without reading the body. The
server that reads the body must refuse (400, -32020) a call whose header and argument disagree, or whose argument
is present while its header is missing, or whose header value is malformed: otherwise a component that trusts the
header and the server that runs the body would act on different values.

The stdio upstream never sees HTTP headers, so the gateway checks them. It learns each tool's declarations from the
`tools/list` results the upstream returns to clients, and lists the tools itself (one request, its pages followed)
when a call names a tool it has not seen or carries an `Mcp-Param-*` header the tool's known schema does not
declare: the second is how a renamed header is noticed. A tool whose schema declares nothing costs a dictionary
lookup per call. A stale schema heals itself: its refusal makes a conforming client list the tools again (which
the gateway learns from) and retry, and a `notifications/tools/list_changed` the upstream sends forgets them all.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from multidict import MultiMapping

from gateway.logging import get_logger

log = get_logger("param_headers")

PREFIX = "mcp-param-"
"""Header names are compared case-insensitively: this is the lowercase prefix of every parameter header."""
ANNOTATION = "x-mcp-header"
MIRRORED_TYPES = frozenset({"string", "integer", "boolean"})
"""The only property types the annotation may sit on (`number` is excluded by the spec)."""
RELIST_INTERVAL = 10.0
"""Seconds between two listings the gateway asks for itself, so calls to unknown tools cannot flood the upstream."""
LIST_PAGES = 50
"""Most `tools/list` pages one listing follows before it gives up on a cursor that never ends."""
SENTINEL_PREFIX = "=?base64?"
SENTINEL_SUFFIX = "?="

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""RFC 9110 field-name token: what an `x-mcp-header` value must be."""
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e]*")
"""Characters a header value may carry as sent (anything else must travel Base64-encoded)."""
_DECIMAL = re.compile(r"-?[0-9]+(?:\.0+)?")
"""An integer as a header may write it; `42.0` equals `42` (the spec asks for a numeric comparison)."""

# JSON Schema keywords whose value is a subschema, a list of them or a map of them. Only `properties` keeps a
# property statically reachable; an annotation reached through any other keyword makes the tool invalid. Keywords
# that hold instance data (`const`, `enum`, `default`, `examples`) are not schemas and are not searched.
_ONE_SCHEMA = frozenset(
    {
        "items",
        "additionalItems",
        "contains",
        "unevaluatedItems",
        "additionalProperties",
        "unevaluatedProperties",
        "propertyNames",
        "not",
        "if",
        "then",
        "else",
        "contentSchema",
    }
)
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items"})
_SCHEMA_MAPS = frozenset({"$defs", "definitions", "patternProperties", "dependentSchemas", "dependencies"})


def decode_header_value(value: str | None) -> str | None:
    """An `Mcp-Name`/`Mcp-Param-*` value: as sent, or the UTF-8 inside `=?base64?...?=`; None when that is broken.

    Only the exact lowercase markers make a value encoded; `=?BASE64?...?=` or a value missing either marker is
    taken literally. Padding must be right and the encoding canonical, as the client's encoder writes it.
    """
    if value is None:
        return None
    if len(value) < len(SENTINEL_PREFIX) + len(SENTINEL_SUFFIX) or not (
        value.startswith(SENTINEL_PREFIX) and value.endswith(SENTINEL_SUFFIX)
    ):
        return value
    payload = value[len(SENTINEL_PREFIX) : -len(SENTINEL_SUFFIX)]
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None
    if base64.b64encode(raw).decode("ascii") != payload:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None


@dataclass(frozen=True, slots=True)
class Mirrored:
    """One argument a tool mirrors into a header."""

    path: tuple[str, ...]
    """The chain of `properties` keys from the schema root to the argument."""
    header: str
    """`Mcp-Param-<annotation>`, as the schema spells it (for messages; lookups ignore case)."""
    kind: str
    """The property's type: `string`, `integer` or `boolean`."""


NOTHING: tuple[Mirrored, ...] = ()


def _schema_positions(root: Any) -> Iterator[tuple[tuple[str, ...] | None, dict[str, Any]]]:
    """Every subschema of `root` with its `properties` path, or None when it is reached through anything else."""
    stack: list[tuple[tuple[str, ...] | None, Any]] = [((), root)]
    while stack:
        path, schema = stack.pop()
        if not isinstance(schema, dict):
            continue
        yield path, schema
        for key, value in schema.items():
            if key == "properties" and isinstance(value, dict):
                stack.extend((None if path is None else (*path, name), sub) for name, sub in value.items())
            elif key in _SCHEMA_LISTS and isinstance(value, list):
                stack.extend((None, sub) for sub in value)
            elif key in _SCHEMA_MAPS and isinstance(value, dict):
                stack.extend((None, sub) for sub in value.values())
            elif key in _ONE_SCHEMA:
                stack.append((None, value))


def declared_headers(input_schema: Any) -> tuple[tuple[Mirrored, ...], str | None]:
    """The arguments `input_schema` mirrors into headers, and why its annotations break the spec's rules (or None).

    A tool with a broken annotation declares nothing here: conforming clients drop such a tool from their listing,
    so they never call it with parameter headers.
    """
    mirrored: list[Mirrored] = []
    seen: set[str] = set()
    for path, schema in _schema_positions(input_schema):
        if ANNOTATION not in schema:
            continue
        if not path:
            return NOTHING, f"{ANNOTATION} at the schema root or off a chain of `properties` keys"
        where = ".".join(path)
        name = schema[ANNOTATION]
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            return NOTHING, f"{ANNOTATION} of {where!r} is not an HTTP field-name token"
        kind = schema.get("type")
        if kind not in MIRRORED_TYPES:
            return NOTHING, f"{ANNOTATION} on {where!r}, whose type is not string, integer or boolean"
        if name.lower() in seen:
            return NOTHING, f"{ANNOTATION} {name!r} on {where!r} repeats another property's header"
        seen.add(name.lower())
        mirrored.append(Mirrored(path=path, header=f"Mcp-Param-{name}", kind=str(kind)))
    return tuple(sorted(mirrored, key=lambda m: m.path)), None


def sent_param_headers(names: Iterable[str]) -> frozenset[str]:
    """The `Mcp-Param-*` header names of a request, lowercase."""
    return frozenset(lower for name in names if (lower := name.lower()).startswith(PREFIX))


def preflight_param_headers(requested: str, most: int = 64) -> list[str]:
    """The `Mcp-Param-*` names a CORS preflight's Access-Control-Request-Headers asks for (valid names, at most
    `most`): a browser page may send the headers a tool declares, whatever their names."""
    names = (name.strip() for name in requested.split(","))
    return [name for name in names if name.lower().startswith(PREFIX) and _TOKEN.fullmatch(name)][:most]


def _value_at(arguments: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = arguments
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _rendered(value: Any) -> str | None:
    """A body value as a client writes it into a header (JavaScript's `String()` for numbers), or None."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def _agrees(kind: str, value: Any, text: str) -> bool:
    if kind == "integer" and not isinstance(value, bool) and isinstance(value, int | float):
        if _DECIMAL.fullmatch(text) and (isinstance(value, int) or value.is_integer()):
            with contextlib.suppress(ValueError):  # more digits than int() takes: no integer we could hold
                return int(text.partition(".")[0]) == int(value)
            return False
    return _rendered(value) == text


def check_param_headers(
    mirrored: tuple[Mirrored, ...], arguments: Mapping[str, Any], headers: MultiMapping[str]
) -> str | None:
    """Why a tools/call's `Mcp-Param-*` headers disagree with its arguments, or None when they agree.

    `headers` is the request's case-insensitive multidict. For each mirrored argument, header and argument are both
    absent (`null` counts as absent) or both present and equal after decoding; the header appears once, and holds
    only characters a header may carry. Headers the schema does not declare are not the gateway's business.
    """
    for item in mirrored:
        sent = headers.getall(item.header, ())
        value = _value_at(arguments, item.path)
        argument = ".".join(item.path)
        if len(sent) > 1:
            return f"{item.header} header appears more than once"
        if value is None:
            if sent:
                return f"{item.header} header is present but the request body has no {argument!r} argument"
            continue
        if not sent:
            return f"{item.header} header is missing but the request body has the {argument!r} argument"
        raw = sent[0].strip(" \t")
        if not _FIELD_VALUE.fullmatch(raw):
            return f"{item.header} header contains characters a header value may not carry (Base64-encode it)"
        text = decode_header_value(raw)
        if text is None:
            return f"{item.header} header is not valid =?base64?...?= (bad characters, padding or UTF-8)"
        if not _agrees(item.kind, value, text):
            return f"{item.header} header does not match the request body's {argument!r} argument"
    return None


Ask = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""Sends one request to the upstream and returns its result (raises when there is none)."""


class ToolSchemas:
    """What each tool's input schema says about `Mcp-Param-*` headers, learnt from `tools/list` results.

    Owns the one listing task it may run at a time; `close` ends it.
    """

    def __init__(self, ask: Ask, clock: Callable[[], float] = time.monotonic) -> None:
        self._ask = ask
        self._clock = clock
        self._tools: dict[str, tuple[Mirrored, ...]] = {}
        self._invalid: set[str] = set()
        self._listing: asyncio.Task[None] | None = None
        self._listed_at = -math.inf
        self._generation = 0
        """Bumped by `forget`: a listing that started before it may describe the old tools, so it is not kept."""
        self._closed = False

    def learn(self, tools: Any) -> None:
        """Take the tools of a `tools/list` result (one page) as the current definitions of those tools."""
        if not isinstance(tools, list):
            return
        for tool in tools:
            if not isinstance(tool, dict) or not isinstance(name := tool.get("name"), str):
                continue
            mirrored, problem = declared_headers(tool.get("inputSchema"))
            self._tools[name] = mirrored
            if problem is None:
                self._invalid.discard(name)
            elif name not in self._invalid:
                self._invalid.add(name)
                log.warning("tool_param_headers_invalid", tool=name[:100], reason=problem[:200])

    def forget(self) -> None:
        """The upstream said its tools changed: nothing known holds, and the next call may list them at once."""
        self._tools.clear()
        self._invalid.clear()
        self._listed_at = -math.inf
        self._generation += 1

    def known(self, name: str) -> tuple[Mirrored, ...] | None:
        return self._tools.get(name)

    async def declared(self, name: str, sent: frozenset[str]) -> tuple[Mirrored, ...]:
        """The arguments tool `name` mirrors; lists the tools first when it is unknown or `sent` names a header its
        known schema does not declare (at most once per RELIST_INTERVAL)."""
        known = self._tools.get(name)
        if known is not None and sent <= {item.header.lower() for item in known}:
            return known
        await self._relist()
        return self._tools.get(name, NOTHING)

    async def _relist(self) -> None:
        if self._closed:
            return
        if self._listing is None or self._listing.done():
            now = self._clock()
            if now - self._listed_at < RELIST_INTERVAL:
                return
            self._listed_at = now
            self._listing = asyncio.get_running_loop().create_task(self._list(), name="tools-list-for-param-headers")
        listing = self._listing
        try:
            # Shielded: a client that goes away must not cancel the listing other calls wait for.
            await asyncio.shield(listing)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not listing.cancelled() or (current is not None and current.cancelling()):
                raise  # this call itself was cancelled
            # `close` ended the listing (shutdown): the call goes on with what is known.

    async def _list(self) -> None:
        generation = self._generation
        tools: list[Any] = []
        params: dict[str, Any] = {}
        try:
            for _ in range(LIST_PAGES):
                result = await self._ask("tools/list", params)
                page = result.get("tools")
                if isinstance(page, list):
                    tools.extend(page)
                cursor = result.get("nextCursor")
                if not isinstance(cursor, str) or not cursor:
                    break
                params = {"cursor": cursor}
            else:
                raise RuntimeError(f"tools/list gave a next cursor on each of {LIST_PAGES} pages")
        except Exception as exc:  # an unanswered, refused or endless listing: calls go on with what is known
            log.warning("param_headers_unchecked", reason=(str(exc) or type(exc).__name__)[:200])
            return
        if generation != self._generation:
            return
        self._tools.clear()
        self.learn(tools)
        log.debug("tools_listed_for_param_headers", tools=len(tools))

    async def close(self) -> None:
        """End the listing in progress, if any; none starts after this."""
        self._closed = True
        listing, self._listing = self._listing, None
        if listing is not None and not listing.done():
            listing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listing
