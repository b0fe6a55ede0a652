"""devkube/cel.py evaluates CEL as the specification defines it, and every rule of the CNPG CRDs as Kubernetes does.

The specification's own conformance cases (tests/data/cel-spec, see its README) run one test each; the few that
need what the sandbox never binds (protobuf messages) are listed below with the reason, and counted, so that a new
one cannot slip in unnoticed.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest

from devkube import cel
from devkube.schema import load_crds
from tests.cel_spec import DATA, Case, Unrepresentable, bindings, cel_equal, expectation, read_cases

CASES = [case for path in sorted(DATA.glob("*.textproto")) for case in read_cases(path)]

PROTOBUF = "protobuf messages, wrappers and enums: rules bind JSON values, never messages"
NOT_SUPPORTED = {
    "fields/qualified_identifier_resolution/qualified_identifier_resolution_unchecked": (
        "dotted variable names resolved by longest prefix without the type checker: rules bind only self and oldSelf"
    ),
    "fields/qualified_identifier_resolution/map_value_repeat_key_heterogeneous": (
        "cel-cpp accepts a map literal whose keys are equal across int and uint ({0: 1, 0u: 2}) instead of failing;"
        " JSON object keys are strings, so a rule cannot meet it"
    ),
}
_MESSAGE_NAMES = re.compile(r"TestAllTypes|GlobalEnum|google\.protobuf\.|cel\.expr\.conformance")


def not_supported(case: Case) -> str | None:
    """Why a case is outside what devkube evaluates, or None when it must pass."""
    if case.id in NOT_SUPPORTED:
        return NOT_SUPPORTED[case.id]
    described = case.expr + repr(case.raw.get("type_env")) + repr(case.raw.get("bindings"))
    if "container" in case.raw or _MESSAGE_NAMES.search(described):
        return PROTOBUF
    try:
        expectation(case)
        bindings(case)
    except Unrepresentable:
        return PROTOBUF
    return None


SUPPORTED = [case for case in CASES if not_supported(case) is None]


@pytest.mark.parametrize("case", SUPPORTED, ids=lambda case: case.id)
def test_conformance_case(case: Case) -> None:
    kind, expected = expectation(case)
    variables = bindings(case)
    if kind == "error":
        with pytest.raises(cel.CelError):
            cel.evaluate_expression(case.expr, variables, check=case.checked)
        return
    actual = cel.evaluate_expression(case.expr, variables, check=case.checked)
    assert cel_equal(actual, expected), f"{case.expr!r} gave {actual!r}, the specification says {expected!r}"


def test_cases_outside_support_are_listed_with_a_reason() -> None:
    reasons = Counter(reason for case in CASES if (reason := not_supported(case)) is not None)
    assert reasons == {PROTOBUF: 98, **dict.fromkeys(NOT_SUPPORTED.values(), 1)}
    assert set(NOT_SUPPORTED) <= {case.id for case in CASES}, "a listed case no longer exists in the data"
    assert len(SUPPORTED) == 1000


def test_the_vendored_cases_cover_what_the_rules_use() -> None:
    ids = {case.id for case in SUPPORTED}
    for needed in (
        "integer_math/int64_math/divide_positive_negative",
        "integer_math/int64_math/mod_negative_positive",
        "integer_math/int64_math/divide_zero",
        "integer_math/int64_math/mod_zero",
        "integer_math/int64_math/int64_overflow_positive",
        "integer_math/int64_math/int64_overflow_mul_negative",
        "integer_math/int64_math/uint64_overflow_negative",
        "integer_math/uint64_math/divide_zero",
        "basic/self_eval_nonzeroish/self_eval_int_hex_negative",
        "basic/self_eval_nonzeroish/self_eval_uint_hex",
        "basic/self_eval_nonzeroish/self_eval_bytes_invalid_utf8",
        "logic/OR/error_left",
        "logic/AND/error_right",
        "conversions/int/double_range",
        "conversions/double/uint_range",
        "conversions/uint/int_neg",
    ):
        assert needed in ids
    sections = {f"{case.file}/{case.section}" for case in SUPPORTED}
    for section in (
        "parse/string_literals", "parse/bytes_literals", "string/starts_with", "string/ends_with", "string/contains",
        "string/matches", "string/size", "comparisons/eq_literal", "comparisons/ne_literal", "comparisons/gt_literal",
        "comparisons/in_list_literal", "comparisons/in_map_literal", "logic/NOT", "logic/conditional", "fields/map_has",
        "macros/all", "macros/exists", "macros/exists_one", "macros/map", "macros/filter", "conversions/double",
        "conversions/string", "lists/size", "lists/in", "lists/index", "fp_math/fp_math",
    ):  # fmt: skip
        assert section in sections


# ---------------------------------------------------------------- what the issue reported


@pytest.mark.parametrize(
    "expr",
    ["-7 / 2 == -3", "-7 % 2 == -1", "7 / -2 == -3", "7 % -2 == 1", "0x10 == 16", "0xFFu == 255u", "3u + 4u == 7u"],
)
def test_integer_arithmetic_truncates_and_reads_hex_and_uint_literals(expr: str) -> None:
    assert cel.evaluate_expression(expr, {}) is True


def test_uint_results_stay_uint() -> None:
    assert cel.evaluate_expression("3u + 4u", {}) == 7
    assert isinstance(cel.evaluate_expression("3u + 4u", {}), cel.UInt)
    assert not isinstance(cel.evaluate_expression("3 + 4", {}), cel.UInt)


@pytest.mark.parametrize(
    ("rule", "value", "message"),
    [
        ("self / 0 == 1", 7, "divide by zero"),
        ("self % 0 == 1", 7, "modulus by zero"),
        ("int(self) == 1", "x", "cannot convert string to int"),
        ("self + 1 > 0", 2**63 - 1, "integer overflow"),
        ("self.name == 'a'", {}, "no such key: name"),
        ("self[3] == 1", [1], "index"),
        ("self > 0", "text", "No matching overloads"),
    ],
)
def test_evaluation_errors_are_cel_errors(rule: str, value: Any, message: str) -> None:
    with pytest.raises(cel.CelError, match=re.escape(message)):
        cel.evaluate(rule, value)


@pytest.mark.parametrize(
    "value",
    ["\ud800", 2**64, -(2**63) - 1, {"nested": ["\udfff"]}],
    ids=["lone-surrogate", "int-above-uint64", "int-below-int64", "nested-surrogate"],
)
def test_json_values_the_runtime_cannot_hold_are_cel_errors(value: Any) -> None:
    with pytest.raises(cel.CelError):
        cel.evaluate("self == self", value)


def test_a_rule_that_does_not_compile_is_a_cel_error() -> None:
    with pytest.raises(cel.CelError, match="compilation failed"):
        cel.compile_rule("self.")
    with pytest.raises(cel.CelError, match="undeclared reference to 'quantity'"):
        cel.compile_rule("quantity(self) > quantity('1Gi')")


def test_logic_absorbs_errors_on_either_side() -> None:
    assert cel.evaluate("true || self / 0 == 1", 1) is True
    assert cel.evaluate("self / 0 == 1 || true", 1) is True
    assert cel.evaluate("false && self / 0 == 1", 1) is False
    assert cel.evaluate("self / 0 == 1 && false", 1) is False
    with pytest.raises(cel.CelError, match="divide by zero"):
        cel.evaluate("self / 0 == 1 || false", 1)


def test_macros_absorb_errors_when_the_result_is_decided() -> None:
    assert cel.evaluate("self.all(e, 6 / (2 - e) == 6)", [1, 2, 3]) is False
    assert cel.evaluate("self.exists(e, 6 / (2 - e) == 6)", [1, 2, 3]) is True


def test_strings_count_code_points() -> None:
    assert cel.evaluate("self.size() == 5", "πέντε") is True


# ---------------------------------------------------------------- every rule of the CNPG CRDs


def _crd_rules() -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found.update(rule["rule"] for rule in node.get("x-kubernetes-validations", []))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for crd in load_crds():
        walk(crd.schema)
    return found


_MISSING = cel._MISSING
_IMAGE = "!(has(self.imageCatalogRef) && has(self.imageName))"
_UNIQUE_KEY = "self.all(e, self.filter(f, f.key==e.key).size() == 1)"
_UNIQUE_MAJOR = "self.all(e, self.filter(f, f.major==e.major).size() == 1)"
_SYNC = (
    "!(has(self.syncReplicaElectionConstraint) && self.syncReplicaElectionConstraint.enabled && has(self.synchronous)"
    " && ((has(self.synchronous.podFailureDomainKeys) && self.synchronous.podFailureDomainKeys.size() > 0) ||"
    " (has(self.synchronous.nodeFailureDomainKeys) && self.synchronous.nodeFailureDomainKeys.size() > 0)))"
)
_DOMAINS = (
    "!(has(self.podFailureDomainKeys) && self.podFailureDomainKeys.size() > 0 && has(self.nodeFailureDomainKeys)"
    " && self.nodeFailureDomainKeys.size() > 0)"
)
_DURABILITY = (
    "self.dataDurability!='preferred' || ((!has(self.standbyNamesPre) || self.standbyNamesPre.size()==0) &&"
    " (!has(self.standbyNamesPost) || self.standbyNamesPost.size()==0))"
)
_PUBLICATION_TARGET = "(has(self.allTables) && !has(self.objects)) || (!has(self.allTables) && has(self.objects))"
_PUBLICATION_OBJECT = "(has(self.tablesInSchema) && !has(self.table)) || (!has(self.tablesInSchema) && has(self.table))"
_PUBLICATION_COLUMNS = (
    "!(self.exists(o, has(o.table) && has(o.table.columns)) && self.exists(o, has(o.tablesInSchema)))"
)
_CATALOG = [{"key": "a", "major": 16}, {"key": "b", "major": 17}]
_SYNC_KEYS = {"podFailureDomainKeys": ["zone"]}

# Each CNPG rule with a value it accepts and one it refuses (or that is an evaluation error, as in Kubernetes).
RULE_CASES: list[tuple[str, Any, Any, bool | str]] = [
    ("oldSelf == self", {"cluster": {"name": "a"}}, {"cluster": {"name": "a"}}, True),
    ("oldSelf == self", {"cluster": {"name": "b"}}, {"cluster": {"name": "a"}}, False),
    ("self == oldSelf", "one", "one", True),
    ("self == oldSelf", "two", "one", False),
    ("self == oldSelf", 5, 5.0, True),
    ("self.name == oldSelf.name", {"name": "r"}, {"name": "r"}, True),
    ("self.name == oldSelf.name", {"name": "s"}, {"name": "r"}, False),
    (_IMAGE, {"imageName": "pg"}, _MISSING, True),
    (_IMAGE, {"imageName": "pg", "imageCatalogRef": {}}, _MISSING, False),
    ("!(has(self.image) && has(self.imageCatalogRef))", {"image": "pgb"}, _MISSING, True),
    ("!(has(self.image) && has(self.imageCatalogRef))", {"image": "pgb", "imageCatalogRef": {}}, _MISSING, False),
    (_DOMAINS, {"podFailureDomainKeys": ["zone"], "nodeFailureDomainKeys": []}, _MISSING, True),
    (_DOMAINS, {"podFailureDomainKeys": ["zone"], "nodeFailureDomainKeys": ["host"]}, _MISSING, False),
    (_SYNC, {"syncReplicaElectionConstraint": {"enabled": False}, "synchronous": _SYNC_KEYS}, _MISSING, True),
    (_SYNC, {"syncReplicaElectionConstraint": {"enabled": True}, "synchronous": _SYNC_KEYS}, _MISSING, False),
    ("!has(self.builtinLocale) || self.localeProvider == 'builtin'", {}, _MISSING, True),
    ("!has(self.builtinLocale) || self.localeProvider == 'builtin'", {"builtinLocale": "C"}, _MISSING,
     "no such key: localeProvider"),
    ("!has(self.icuLocale) || self.localeProvider == 'icu'", {"icuLocale": "en", "localeProvider": "icu"}, _MISSING,
     True),
    ("!has(self.icuLocale) || self.localeProvider == 'icu'", {"icuLocale": "en", "localeProvider": "libc"}, _MISSING,
     False),
    ("!has(self.icuRules) || self.localeProvider == 'icu'", {"localeProvider": "libc"}, _MISSING, True),
    ("!has(self.icuRules) || self.localeProvider == 'icu'", {"icuRules": "&a", "localeProvider": "libc"}, _MISSING,
     False),
    ("self > 0", 1, _MISSING, True),
    ("self > 0", 0, _MISSING, False),
    ("self.apiGroup == 'postgresql.cnpg.io'", {"apiGroup": "postgresql.cnpg.io"}, _MISSING, True),
    ("self.apiGroup == 'postgresql.cnpg.io'", {"apiGroup": "apps"}, _MISSING, False),
    (_DURABILITY, {"dataDurability": "preferred"}, _MISSING, True),
    (_DURABILITY, {"dataDurability": "preferred", "standbyNamesPre": ["a"]}, _MISSING, False),
    ("self.kind == 'ImageCatalog' || self.kind == 'ClusterImageCatalog'", {"kind": "ClusterImageCatalog"}, _MISSING,
     True),
    ("self.kind == 'ImageCatalog' || self.kind == 'ClusterImageCatalog'", {"kind": "ConfigMap"}, _MISSING, False),
    (_UNIQUE_KEY, _CATALOG, _MISSING, True),
    (_UNIQUE_KEY, [*_CATALOG, {"key": "a", "major": 18}], _MISSING, False),
    (_UNIQUE_MAJOR, _CATALOG, _MISSING, True),
    (_UNIQUE_MAJOR, [*_CATALOG, {"key": "c", "major": 17}], _MISSING, False),
    ("self != ''", "app", _MISSING, True),
    ("self != ''", "", _MISSING, False),
    ("self != 'postgres'", "app", _MISSING, True),
    ("self != 'postgres'", "postgres", _MISSING, False),
    ("self != 'template0'", "template", _MISSING, True),
    ("self != 'template0'", "template0", _MISSING, False),
    ("self != 'template1'", "template", _MISSING, True),
    ("self != 'template1'", "template1", _MISSING, False),
    ("!has(self.clientCertificate) || !self.clientCertificate.enabled || self.login",
     {"clientCertificate": {"enabled": True}, "login": True}, _MISSING, True),
    ("!has(self.clientCertificate) || !self.clientCertificate.enabled || self.login",
     {"clientCertificate": {"enabled": True}, "login": False}, _MISSING, False),
    ("!has(self.ensure) || self.ensure != 'absent'", {"ensure": "present"}, _MISSING, True),
    ("!has(self.ensure) || self.ensure != 'absent'", {"ensure": "absent"}, _MISSING, False),
    ("!has(self.passwordSecret) || !has(self.disablePassword) || !self.disablePassword",
     {"passwordSecret": {"name": "s"}, "disablePassword": False}, _MISSING, True),
    ("!has(self.passwordSecret) || !has(self.disablePassword) || !self.disablePassword",
     {"passwordSecret": {"name": "s"}, "disablePassword": True}, _MISSING, False),
    ("!self.name.startsWith('cnpg_')", {"name": "app"}, _MISSING, True),
    ("!self.name.startsWith('cnpg_')", {"name": "cnpg_x"}, _MISSING, False),
    ("!self.name.startsWith('pg_')", {"name": "app_pg_"}, _MISSING, True),
    ("!self.name.startsWith('pg_')", {"name": "pg_monitor"}, _MISSING, False),
    ("self.name != 'postgres'", {"name": "app"}, _MISSING, True),
    ("self.name != 'postgres'", {"name": "postgres"}, _MISSING, False),
    ("self.name != 'streaming_replica'", {"name": "app"}, _MISSING, True),
    ("self.name != 'streaming_replica'", {"name": "streaming_replica"}, _MISSING, False),
    ("self.name.size() != 0", {"name": "é"}, _MISSING, True),
    ("self.name.size() != 0", {"name": ""}, _MISSING, False),
    (_PUBLICATION_TARGET, {"allTables": True}, _MISSING, True),
    (_PUBLICATION_TARGET, {"allTables": True, "objects": []}, _MISSING, False),
    (_PUBLICATION_OBJECT, {"table": {"name": "t"}}, _MISSING, True),
    (_PUBLICATION_OBJECT, {}, _MISSING, False),
    (_PUBLICATION_COLUMNS, [{"table": {"name": "t", "columns": ["a"]}}], _MISSING, True),
    (_PUBLICATION_COLUMNS, [{"table": {"name": "t", "columns": ["a"]}}, {"tablesInSchema": "s"}], _MISSING, False),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "value", "old", "expected"), RULE_CASES)
def test_cnpg_rule(rule: str, value: Any, old: Any, expected: bool | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(cel.CelError, match=re.escape(expected)):
            cel.evaluate(rule, value, old)
        return
    assert cel.evaluate(rule, value, old) is expected


def test_every_cnpg_rule_is_accepted_and_refused_above() -> None:
    rules = _crd_rules()
    assert len(rules) >= 30
    outcomes: dict[str, set[bool | str]] = {rule: set() for rule in rules}
    for rule, _, _, expected in RULE_CASES:
        outcomes[rule].add(expected is True)
    assert {rule for rule, seen in outcomes.items() if seen != {True, False}} == set()
