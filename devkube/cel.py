"""CEL for the `x-kubernetes-validations` rules of the served CRDs, evaluated by cel-expr-python.

cel-expr-python (PyPI, Apache-2.0) binds cel-cpp, Google's C++ implementation of the CEL specification; this
module declares the variables, compiles each rule once and turns results and errors into Python values.

What is evaluated: the CEL standard definitions and macros, type-checked, with no extension library: int, uint,
double, string, bytes, bool, null, list and map values and literals (hex, `u` suffix, raw and triple-quoted
strings, escapes); 64-bit integer arithmetic with CEL's truncating `/` and `%`, overflow and division by zero being
errors; numeric comparison and equality across int, uint and double; `&&`, `||` and `? :` with CEL's commutative
error absorption (`true || 1/0 == 1` is true), also inside `all` and `exists`; `in`, indexing, field selection,
`has()`, `size()` (of a string in code points); `contains startsWith endsWith matches` (RE2); the macros `all
exists exists_one map filter`; the conversions `int uint double string bytes bool dyn type` with their range and
parse errors. tests/test_devkube_cel.py checks all of this against the CEL specification's own conformance cases
(tests/data/cel-spec, 1,000 cases) and every rule of the CNPG CRDs, accepted and refused.

Rules see `self` and `oldSelf` declared `dyn` and bound to the object's JSON values: an integer field holds an int,
a `number` field an int or a double, as the JSON has it. Kubernetes declares them with the schema's types, so it
refuses some ill-typed rules when the CRD is created, where the sandbox reports them when the rule runs.
Transition rules (with `oldSelf`) run only on updates where the old value exists (see schema.check_rules).

Every failure is a CelError, which the server reports against the rule as kube-apiserver does (`<error>
evaluating rule: <message>`): a rule that does not compile (`compilation failed: ...`), a value the runtime cannot
hold (a lone UTF-16 surrogate from a JSON escape, an integer beyond 64 bits) and an evaluation error (`no such key:
x`, `divide by zero`, `integer overflow`). No other exception leaves this module.

Not evaluated: Kubernetes' CEL libraries (`quantity`, `isQuantity`, `url`, `ip`, `cidr`, `format`, list, set and
regex functions, the strings extension): no CNPG 1.30 rule uses them, and a rule that did would not compile.
Protobuf messages, `messageExpression` and cost limits are not modelled either. The standard `timestamp` and
`duration` functions are there but outside the conformance cases checked.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from cel_expr_python import cel as _cel


class CelError(Exception):
    """A rule that cannot be compiled or that fails at evaluation (e.g. `no such key: x`)."""


class UInt(int):
    """A CEL `uint` result (`3u`), kept apart from `int` because CEL keeps them apart."""

    def __repr__(self) -> str:
        return f"{int(self)}u"


@dataclass(frozen=True)
class CelType:
    """A CEL type as a value (`type(1)` is `CelType("int")`)."""

    name: str


_MISSING = object()
_RULE_VARIABLES = frozenset(("self", "oldSelf"))
# cel-cpp prefixes messages with a status code; kube-apiserver runs cel-go, whose wording users know. The one
# message CNPG's rules produce in practice (a field read without has()) is reworded as cel-go says it.
_STATUS = re.compile(r"^[A-Z_]+: ")
_NO_SUCH_KEY = re.compile(r'^Key not found in map : "?(.*?)"?$')
_compile_lock = threading.Lock()


@cache
def _env(variables: frozenset[str]) -> Any:
    return _cel.NewEnv(variables={name: _cel.Type.DYN for name in variables})


@cache
def _compile(src: str, variables: frozenset[str], check: bool = True) -> Any:
    with _compile_lock:
        try:
            return _env(variables).compile(src, disable_check=not check)
        except RuntimeError as exc:
            raise CelError(f"compilation failed: {_STATUS.sub('', str(exc))}") from exc


def compile_rule(src: str) -> Any:
    """Compile a rule once (it is shared by every object of a kind); a CelError says why it does not compile."""
    return _compile(src, _RULE_VARIABLES)


def evaluate_expression(src: str, variables: Mapping[str, Any], *, check: bool = True) -> Any:
    """Evaluate any CEL expression with the given variables (JSON values); raises CelError on failure.

    `check=False` skips the type checker, so that type errors show at evaluation (as for `dyn` values).
    """
    program = _compile(src, frozenset(variables), check)
    return _run(program, variables)


def evaluate(rule: str, self_value: Any, old_value: Any = _MISSING) -> Any:
    """Evaluate `rule` with `self` (and `oldSelf` when given); raises CelError on failure."""
    data = {"self": self_value} if old_value is _MISSING else {"self": self_value, "oldSelf": old_value}
    return _run(compile_rule(rule), data)


def uses_old_self(rule: str) -> bool:
    """Transition rules run only on updates where the old value exists."""
    return re.search(r"\boldSelf\b", rule) is not None


def _run(program: Any, data: Mapping[str, Any]) -> Any:
    try:
        result = program.eval(data=data)
    except Exception as exc:  # the binding documents no exception types; a lone surrogate raises RuntimeError
        raise CelError(f"cannot bind the value: {exc}") from exc
    if result.type() == _cel.Type.ERROR:
        raise CelError(_message(str(result.value())))
    return _python(result)


def _message(text: str) -> str:
    text = _STATUS.sub("", text)
    missing = _NO_SUCH_KEY.match(text)
    return f"no such key: {missing.group(1)}" if missing else text


_TYPE_NAMES = {
    "BOOL": "bool", "INT": "int", "UINT": "uint", "DOUBLE": "double", "STRING": "string", "BYTES": "bytes",
    "NULL": "null_type", "LIST": "list", "MAP": "map", "TYPE": "type",
}  # fmt: skip


def _python(value: Any) -> Any:
    """A cel-expr-python value as plain Python: uint as UInt, bytes as bytes, types as CelType."""
    raw = value.value()
    if raw is True or raw is False:  # what every rule returns
        return raw
    kind = value.type()
    if kind == _cel.Type.UINT:
        return UInt(raw)
    if kind == _cel.Type.BYTES:
        return bytes(raw)
    if kind == _cel.Type.TYPE:
        name = raw.name()
        generic = name.split("<")[0]
        return CelType(_TYPE_NAMES.get(generic, name))
    if isinstance(raw, list):
        return [_python(item) for item in raw]
    if isinstance(raw, dict):
        return {key: _python(item) for key, item in raw.items()}
    return raw
