"""Reads the CEL specification's conformance test files (tests/data/cel-spec/*.textproto).

The files are protobuf text format (`SimpleTestFile` in cel-spec's simple.proto). This module parses that format
into plain dicts and turns the `cel.expr.Value` messages they hold into the Python values devkube/cel.py returns,
so the tests need no protobuf runtime and no generated code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devkube.cel import CelType, UInt

DATA = Path(__file__).parent / "data" / "cel-spec"

Message = dict[str, list[Any]]

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<comment>\#[^\n]*)|
    (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')|
    (?P<ext>\[[A-Za-z0-9_./]+\])|
    (?P<word>-?[A-Za-z0-9_.+-]+)|
    (?P<punct>[{}<>:\[\],;])
    )""",
    re.VERBOSE,
)
_SIMPLE_ESCAPES = {
    "a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, "'": 39, '"': 34, "?": 63,
}  # fmt: skip


def _unescape(body: str) -> bytes:
    """Text-format string escapes, giving the raw bytes (a string field is their UTF-8 decoding)."""
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out += ch.encode()
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[nxt])
            i += 2
        elif nxt in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[i + 1 :])
            assert digits is not None
            out.append(int(digits.group(), 8))
            i += 1 + len(digits.group())
        elif nxt in "xX":
            digits = re.match(r"[0-9A-Fa-f]{1,2}", body[i + 2 :])
            assert digits is not None
            out.append(int(digits.group(), 16))
            i += 2 + len(digits.group())
        elif nxt in "uU":
            width = 4 if nxt == "u" else 8
            out += chr(int(body[i + 2 : i + 2 + width], 16)).encode()
            i += 2 + width
        else:
            raise ValueError(f"unknown escape \\{nxt}")
    return bytes(out)


class _Reader:
    def __init__(self, text: str) -> None:
        self.toks: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                if text[pos:].strip() == "":
                    break
                raise ValueError(f"cannot read text proto at {text[pos : pos + 40]!r}")
            pos = m.end()
            kind = m.lastgroup
            assert kind is not None
            if kind != "comment":
                self.toks.append((kind, m.group(kind)))
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def message(self, close: str | None) -> Message:
        msg: Message = {}
        while True:
            tok = self.peek()
            if tok is None or tok == ("punct", close):
                if close is not None:
                    self.take()
                return msg
            if tok[1] in (",", ";"):
                self.take()
                continue
            name = self.take()[1]
            if self.peek() == ("punct", ":"):
                self.take()
            msg.setdefault(name, []).extend(self.values())

    def values(self) -> list[Any]:
        kind, text = self.take()
        if (kind, text) in (("punct", "{"), ("punct", "<")):
            return [self.message("}" if text == "{" else ">")]
        if (kind, text) == ("punct", "["):
            items: list[Any] = []
            while self.peek() != ("punct", "]"):
                if self.peek() == ("punct", ","):
                    self.take()
                    continue
                items.extend(self.values())
            self.take()
            return items
        if kind == "str":
            data = _unescape(text[1:-1])
            while self.peek() is not None and self.peek()[0] == "str":  # type: ignore[index]
                data += _unescape(self.take()[1][1:-1])
            return [data]
        return [text]


def parse_textproto(text: str) -> Message:
    """Protobuf text format as nested dicts: every field is a list; strings are bytes, other scalars their text."""
    return _Reader(text).message(None)


@dataclass
class Case:
    """One conformance test, `raw` being its `SimpleTest` message."""

    file: str
    section: str
    name: str
    expr: str
    raw: Message = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.file}/{self.section}/{self.name}"

    @property
    def checked(self) -> bool:
        """False where the case runs without the type checker (`disable_check`), to test evaluation errors."""
        return bool(_one(self.raw, "disable_check") != "true")


class Unrepresentable(Exception):
    """A value or test shape this reader does not translate (protobuf messages, unknowns...)."""


def _one(msg: Message, key: str, default: Any = None) -> Any:
    values = msg.get(key)
    return values[0] if values else default


def _text(value: bytes) -> str:
    return value.decode("utf-8")


def to_python(value: Message) -> Any:
    """A `cel.expr.Value` as the evaluator's Python value."""
    if len(value) != 1:
        raise Unrepresentable(f"value with fields {sorted(value)}")
    kind = next(iter(value))
    raw = value[kind][0]
    if kind == "null_value":
        return None
    if kind == "bool_value":
        return raw == "true"
    if kind == "int64_value":
        return int(raw, 0)
    if kind == "uint64_value":
        return UInt(int(raw, 0))
    if kind == "double_value":
        return float(raw)
    if kind == "string_value":
        return _text(raw)
    if kind == "bytes_value":
        return bytes(raw)
    if kind == "list_value":
        return [to_python(v) for v in raw.get("values", [])]
    if kind == "map_value":
        return {_key(to_python(e["key"][0])): to_python(e["value"][0]) for e in raw.get("entries", [])}
    if kind == "type_value":
        return CelType(_text(raw))
    raise Unrepresentable(kind)


def _key(value: Any) -> Any:
    if isinstance(value, list | dict):
        raise Unrepresentable("map key")
    return value


def read_cases(path: Path) -> Iterator[Case]:
    """Every test of one file, in file order."""
    doc = parse_textproto(path.read_text(encoding="utf-8"))
    file = _text(_one(doc, "name"))
    for section in doc.get("section", []):
        for test in section.get("test", []):
            yield Case(file, _text(_one(section, "name")), _text(_one(test, "name")), _text(_one(test, "expr")), test)


def expectation(case: Case) -> tuple[str, Any]:
    """("value", v) or ("error", [messages]); anything else is Unrepresentable."""
    test = case.raw
    for unsupported in ("typed_result", "unknown", "any_unknowns", "check_only"):
        if unsupported in test:
            raise Unrepresentable(unsupported)
    if "any_eval_errors" in test:
        msgs = [_text(e["message"][0]) for s in test["any_eval_errors"][0].get("errors", []) for e in s["errors"]]
        return "error", msgs
    if "eval_error" in test:
        return "error", [_text(e["message"][0]) for e in test["eval_error"][0].get("errors", [])]
    if "value" in test:
        return "value", to_python(test["value"][0])
    return "value", True


def bindings(case: Case) -> dict[str, Any]:
    """Variables of the test as Python values."""
    out: dict[str, Any] = {}
    for entry in case.raw.get("bindings", []):
        expr_value = entry["value"][0]
        if "value" not in expr_value:
            raise Unrepresentable("binding is not a plain value")
        out[_text(entry["key"][0])] = to_python(expr_value["value"][0])
    return out


def cel_equal(actual: Any, expected: Any) -> bool:
    """Equality as the conformance suite means it: same CEL type and value, maps unordered, NaN equal to NaN."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, UInt) != isinstance(actual, UInt):
        return False
    if isinstance(expected, float):
        return isinstance(actual, float) and (actual == expected or (math.isnan(actual) and math.isnan(expected)))
    if isinstance(expected, int):
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(cel_equal(a, e) for a, e in zip(actual, expected, strict=True))
        )
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and actual.keys() == expected.keys()
            and all(cel_equal(actual[k], v) for k, v in expected.items())
        )
    return type(actual) is type(expected) and bool(actual == expected)
