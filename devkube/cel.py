"""A small CEL evaluator for the `x-kubernetes-validations` rules that the CloudNativePG CRDs use.

Supported: literals (int, double, string, bool, null, lists), `self`/`oldSelf`, field selection, indexing,
`has()`, `size()`, `!`, unary `-`, `&&`/`||` with CEL's commutative error absorption, `? :`, comparisons,
`in`, `+ - * / %`, string methods `startsWith endsWith contains matches size`, the macros `all exists
exists_one filter map`, and `int() string() double()`.

Evaluated: every `x-kubernetes-validations` rule of the CNPG 1.30 CRDs (63 rules; tests/test_kubeapi.py checks
that each compiles), among them the immutability rules (`self == oldSelf`: Cluster serviceAccountName, Database
name/owner-side settings, Pooler and Database cluster references, Backup spec), reserved names (Database
postgres/template0/template1, DatabaseRole postgres/streaming_replica/pg_*/cnpg_*), mutual exclusions
(imageName/imageCatalogRef, localeProvider-dependent locale fields, synchronous failure-domain keys) and
uniqueness in image catalogs. Transition rules (with `oldSelf`) run only on updates where the old value exists.
Not supported (a `CelError` at parse time, reported as a rule error): map literals, optional types, timestamps
and durations, `messageExpression`, cost limits.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any


class CelError(Exception):
    """A rule that cannot be parsed or that fails at evaluation (e.g. `no such key: x`)."""


_TOKEN = re.compile(
    r"""\s*(?:
    (?P<num>\d+\.\d+|\d+)|
    (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|
    (?P<op>&&|\|\||==|!=|<=|>=|[-+*/%<>!?:().,\[\]])|
    (?P<id>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


def _tokens(src: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    src = src.rstrip()
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if not m or m.end() == pos:
            raise CelError(f"unexpected character at {pos} in {src!r}")
        pos = m.end()
        if m.group("num") is not None:
            text = m.group("num")
            out.append(("lit", float(text) if "." in text else int(text)))
        elif m.group("str") is not None:
            raw = m.group("str")[1:-1]
            out.append(("lit", re.sub(r"\\(.)", r"\1", raw)))
        elif m.group("op") is not None:
            out.append(("op", m.group("op")))
        else:
            name = m.group("id")
            if name in ("true", "false"):
                out.append(("lit", name == "true"))
            elif name == "null":
                out.append(("lit", None))
            elif name == "in":
                out.append(("op", "in"))
            else:
                out.append(("id", name))
    out.append(("end", None))
    return out


Node = tuple[Any, ...]
_MACROS = {"all", "exists", "exists_one", "filter", "map"}


class _Parser:
    def __init__(self, src: str) -> None:
        self.toks = _tokens(src)
        self.i = 0

    def peek(self) -> tuple[str, Any]:
        return self.toks[self.i]

    def take(self, value: str | None = None) -> tuple[str, Any]:
        tok = self.toks[self.i]
        if value is not None and tok != ("op", value):
            raise CelError(f"expected {value!r}, got {tok[1]!r}")
        self.i += 1
        return tok

    def at(self, value: str) -> bool:
        return self.peek() == ("op", value)

    def parse(self) -> Node:
        node = self.cond()
        if self.peek()[0] != "end":
            raise CelError(f"unexpected {self.peek()[1]!r}")
        return node

    def cond(self) -> Node:
        test = self.binary(0)
        if self.at("?"):
            self.take("?")
            yes = self.cond()
            self.take(":")
            return ("cond", test, yes, self.cond())
        return test

    _LEVELS = (("||",), ("&&",), ("==", "!=", "<", "<=", ">", ">=", "in"), ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek()[0] == "op" and self.peek()[1] in self._LEVELS[level]:
            op = self.take()[1]
            left = (op, left, self.binary(level + 1))
        return left

    def unary(self) -> Node:
        if self.at("!"):
            self.take()
            return ("not", self.unary())
        if self.at("-"):
            self.take()
            return ("neg", self.unary())
        return self.member()

    def args(self) -> list[Node]:
        self.take("(")
        out: list[Node] = []
        while not self.at(")"):
            out.append(self.cond())
            if not self.at(")"):
                self.take(",")
        self.take(")")
        return out

    def member(self) -> Node:
        node = self.primary()
        while True:
            if self.at("."):
                self.take()
                kind, name = self.take()
                if kind != "id":
                    raise CelError(f"expected a field name, got {name!r}")
                if self.at("("):
                    args = self.args()
                    if name in _MACROS:
                        if len(args) != 2 or args[0][0] != "ident":
                            raise CelError(f"malformed macro {name}")
                        node = ("macro", name, node, args[0][1], args[1])
                    else:
                        node = ("call", name, node, args)
                else:
                    node = ("select", node, name)
            elif self.at("["):
                self.take()
                index = self.cond()
                self.take("]")
                node = ("index", node, index)
            else:
                return node

    def primary(self) -> Node:
        kind, value = self.take()
        if kind == "lit":
            return ("lit", value)
        if kind == "id":
            if self.at("("):
                args = self.args()
                if value == "has":
                    if len(args) != 1 or args[0][0] != "select":
                        raise CelError("has() needs a field selection")
                    return ("has", args[0][1], args[0][2])
                return ("call", value, None, args)
            return ("ident", value)
        if (kind, value) == ("op", "("):
            node = self.cond()
            self.take(")")
            return node
        if (kind, value) == ("op", "["):
            items: list[Node] = []
            while not self.at("]"):
                items.append(self.cond())
                if not self.at("]"):
                    self.take(",")
            self.take("]")
            return ("list", items)
        raise CelError(f"unexpected {value!r}")


@cache
def compile_rule(src: str) -> Node:
    """Parse once; rules are shared by every object of a kind."""
    return _Parser(src).parse()


def _size(value: Any) -> int:
    if isinstance(value, str | list | dict):
        return len(value)
    raise CelError("no matching overload for 'size'")


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "==":
        return bool(_kind(a) == _kind(b) and a == b) or (_num(a) and _num(b) and a == b)
    if op == "!=":
        return not _compare("==", a, b)
    if not ((_num(a) and _num(b)) or (isinstance(a, str) and isinstance(b, str))):
        raise CelError(f"no matching overload for '{op}'")
    return bool({"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op])


def _kind(v: Any) -> str:
    """CEL type of a JSON value, so that equality never mixes types (1 == true is false in CEL)."""
    for python_type, name in (
        (bool, "bool"),
        (int, "int"),
        (float, "double"),
        (str, "string"),
        (list, "list"),
        (dict, "map"),
    ):
        if isinstance(v, python_type):
            return name
    return "null" if v is None else type(v).__name__


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_METHODS: dict[str, Callable[..., Any]] = {
    "startsWith": lambda s, p: s.startswith(p),
    "endsWith": lambda s, p: s.endswith(p),
    "contains": lambda s, p: p in s,
    "matches": lambda s, p: re.search(p, s) is not None,
    "size": _size,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "size": _size,
    "int": int,
    "double": float,
    "string": lambda v: v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v),
}


@dataclass
class _Eval:
    env: dict[str, Any]

    def run(self, node: Node) -> Any:
        op = node[0]
        if op == "lit":
            return node[1]
        if op == "ident":
            if node[1] not in self.env:
                raise CelError(f"undeclared reference to '{node[1]}'")
            return self.env[node[1]]
        if op == "list":
            return [self.run(n) for n in node[1]]
        if op == "select":
            target = self.run(node[1])
            if not isinstance(target, dict):
                raise CelError(f"no such key: {node[2]}")
            if node[2] not in target:
                raise CelError(f"no such key: {node[2]}")
            return target[node[2]]
        if op == "has":
            target = self.run(node[1])
            return isinstance(target, dict) and node[2] in target
        if op == "index":
            target, index = self.run(node[1]), self.run(node[2])
            try:
                return target[index]
            except (KeyError, IndexError, TypeError) as exc:
                raise CelError(f"no such key: {index}") from exc
        if op == "not":
            value = self.run(node[1])
            if not isinstance(value, bool):
                raise CelError("no matching overload for '!_'")
            return not value
        if op == "neg":
            return -self.run(node[1])
        if op in ("&&", "||"):
            return self.logical(op, node[1], node[2])
        if op == "cond":
            return self.run(node[2]) if self.truth(node[1]) else self.run(node[3])
        if op in ("==", "!=", "<", "<=", ">", ">="):
            return _compare(op, self.run(node[1]), self.run(node[2]))
        if op == "in":
            return self.run(node[1]) in self.run(node[2])
        if op in ("+", "-", "*", "/", "%"):
            a, b = self.run(node[1]), self.run(node[2])
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            if op == "*":
                return a * b
            if op == "/":
                return a // b if isinstance(a, int) and isinstance(b, int) else a / b
            return a % b
        if op == "call":
            name, target, args = node[1], node[2], [self.run(a) for a in node[3]]
            if target is None:
                if name not in _FUNCTIONS:
                    raise CelError(f"undeclared reference to '{name}'")
                return _FUNCTIONS[name](*args)
            if name not in _METHODS:
                raise CelError(f"found no matching overload for '{name}'")
            try:
                return _METHODS[name](self.run(target), *args)
            except (AttributeError, TypeError) as exc:
                raise CelError(f"found no matching overload for '{name}'") from exc
        if op == "macro":
            return self.macro(node[1], self.run(node[2]), node[3], node[4])
        raise CelError(f"unknown node {op}")

    def truth(self, node: Node) -> bool:
        value = self.run(node)
        if not isinstance(value, bool):
            raise CelError("no matching overload: condition is not a bool")
        return value

    def logical(self, op: str, left: Node, right: Node) -> bool:
        # CEL's && and || are commutative: an error on one side is absorbed when the other side decides.
        decisive = op == "||"
        try:
            if self.truth(left) == decisive:
                return decisive
            left_error: CelError | None = None
        except CelError as exc:
            left_error = exc
        if self.truth(right) == decisive:
            return decisive
        if left_error is not None:
            raise left_error
        return not decisive

    def macro(self, name: str, target: Any, var: str, body: Node) -> Any:
        items = list(target.keys()) if isinstance(target, dict) else target
        if not isinstance(items, list):
            raise CelError(f"no matching overload for '{name}'")

        def with_var(item: Any) -> Any:
            saved = self.env.get(var, _MISSING)
            self.env[var] = item
            try:
                return self.run(body)
            finally:
                if saved is _MISSING:
                    del self.env[var]
                else:
                    self.env[var] = saved

        if name == "map":
            return [with_var(i) for i in items]
        results = [with_var(i) for i in items]
        if any(not isinstance(r, bool) for r in results):
            raise CelError(f"no matching overload for '{name}'")
        if name == "all":
            return all(results)
        if name == "exists":
            return any(results)
        if name == "exists_one":
            return sum(results) == 1
        return [i for i, keep in zip(items, results, strict=True) if keep]


_MISSING = object()


def evaluate(rule: str, self_value: Any, old_value: Any = _MISSING) -> Any:
    """Evaluate `rule` with `self` (and `oldSelf` when given); raises CelError on failure."""
    env: dict[str, Any] = {"self": self_value}
    if old_value is not _MISSING:
        env["oldSelf"] = old_value
    return _Eval(env).run(compile_rule(rule))


def uses_old_self(rule: str) -> bool:
    """Transition rules run only on updates where the old value exists."""
    return re.search(r"\boldSelf\b", rule) is not None
