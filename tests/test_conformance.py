"""The official MCP conformance suite's server scenarios, run through the gateway.

The suite (@modelcontextprotocol/conformance, a Node CLI) acts as an MCP client: it opens sessions on the
gateway's endpoint and checks what comes back from tests/stdio_server.py, which implements every fixture the
scenarios ask for. A scenario fails when any of its checks has status FAILURE. Scenarios that cannot pass
through a correct gateway are listed, with the reason, in tests/conformance_expected_failures.yaml and
documented in docs/conformance.md; an expected failure that starts passing fails the test too, so the list
stays honest.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.gateway import RunningGateway, StartGateway

ROOT = Path(__file__).resolve().parent.parent
EXPECTED_FAILURES = ROOT / "tests" / "conformance_expected_failures.yaml"
# One run of all scenarios takes seconds against a bare server; the budget covers a loaded 2-core machine.
SUITE_TIMEOUT = 150
# Result directories are named server-<scenario>-<ISO timestamp with ':' and '.' replaced by '-'>.
UPSTREAM = f"{sys.executable} -m tests.stdio_server"
# Polling mode: the gateway ends a request's SSE stream after 0.25 s without the response (test_reconnection
# answers after 0.5 s) and tells the client to come back 200 ms later with Last-Event-ID.
POLLING_ARGS = ["--sse-close-after", "0.25", "--sse-retry-ms", "200"]
POOL_REFUSED = {
    "resources-subscribe": "pool mode refuses resources/subscribe: a shared process cannot keep it per session",
    "resources-unsubscribe": "pool mode refuses resources/unsubscribe (the scenario subscribes first)",
}
"""Scenarios pool mode fails by design (docs/gateway.md, "Pool mode"); they pass in session mode."""
NEXT_CLI = ROOT / "tools" / "node" / "node_modules" / "conformance-next" / "dist" / "index.js"
"""The 2026-07-28 pre-release of the suite (tools/node/package.json: conformance-next), run by its path."""
PARAM_HEADER_CHECKS = {
    "sep-2243-server-decode-base64",
    "sep-2243-server-validate-param-match",
    "sep-2243-server-reject-invalid-param-chars",
    "sep-2243-server-reject-param-mismatch",
}
"""What http-custom-header-server-validation checks of the gateway's Mcp-Param-* validation: each must succeed, which
needs the test server's x-mcp-header tool (an untestable check is a failure, never skipped)."""
RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")


@dataclass
class SuiteResult:
    """Checks per scenario from one CLI run, and what the CLI printed."""

    checks: dict[str, list[dict[str, Any]]]
    output: str
    returncode: int
    expected: list[str] = field(default_factory=list)

    def failures(self, scenario: str) -> list[dict[str, Any]]:
        return [check for check in self.checks[scenario] if check["status"] == "FAILURE"]

    def warnings(self, scenario: str) -> list[dict[str, Any]]:
        return [check for check in self.checks[scenario] if check["status"] == "WARNING"]


def conformance_cli(next_release: bool = False) -> str:
    if next_release:
        return str(NEXT_CLI)
    path = shutil.which("conformance")
    assert path, "the conformance CLI is not on PATH (tests/conftest.py adds tools/node/node_modules/.bin)"
    return path


def server_scenarios(spec_version: str | None, next_release: bool = False) -> list[str]:
    """The scenario names the CLI will run, from `conformance list --server`."""
    command = [conformance_cli(next_release), "list", "--server"]
    if spec_version:
        command += ["--spec-version", spec_version]
    listing = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
    return re.findall(r"^\s+- (\S+)", listing, flags=re.MULTILINE)


def expected_failures() -> dict[str, str]:
    """Scenario -> reason, from tests/conformance_expected_failures.yaml when it exists."""
    if not EXPECTED_FAILURES.exists():
        return {}
    document = yaml.safe_load(EXPECTED_FAILURES.read_text()) or {}
    return {str(entry["scenario"]): str(entry["reason"]) for entry in document.get("server", [])}


def run_suite(url: str, output_dir: Path, spec_version: str | None = None, next_release: bool = False) -> SuiteResult:
    """Run every server scenario (``--suite all``, pending ones included) in one CLI invocation."""
    command = [conformance_cli(next_release), "server", "--url", url, "--suite", "all", "-o", str(output_dir)]
    if spec_version:
        command += ["--spec-version", spec_version]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=SUITE_TIMEOUT)
    checks: dict[str, list[dict[str, Any]]] = {}
    for result_dir in sorted(output_dir.iterdir()):
        match = RESULT_DIR.match(result_dir.name)
        if match and (result_dir / "checks.json").exists():
            checks[match["scenario"]] = json.loads((result_dir / "checks.json").read_text())
    return SuiteResult(checks=checks, output=completed.stdout + completed.stderr, returncode=completed.returncode)


def report(result: SuiteResult, scenarios: list[str], label: str) -> int:
    """Print the per-scenario outcome and return how many scenarios passed."""
    passed = [name for name in scenarios if name in result.checks and not result.failures(name)]
    succeeded = sum(check["status"] == "SUCCESS" for checks in result.checks.values() for check in checks)
    failed = sum(len(result.failures(name)) for name in result.checks)
    print(f"conformance ({label}): {len(passed)}/{len(scenarios)} scenarios passed")
    print(f"  checks: {succeeded} passed, {failed} failed")
    for name in scenarios:
        if name not in result.checks:
            print(f"  {name}: NO RESULT")
            continue
        for check in result.failures(name):
            print(f"  {name}: FAILURE {check['id']}: {check.get('errorMessage', '')}")
        for check in result.warnings(name):
            print(f"  {name}: warning {check['id']}: {check.get('errorMessage', '')}")
    return len(passed)


def assert_suite_passes(result: SuiteResult, scenarios: list[str], refused: dict[str, str] | None = None) -> None:
    allowed = {**expected_failures(), **(refused or {})}
    missing = [name for name in scenarios if name not in result.checks]
    assert not missing, f"scenarios without results: {missing}\n{result.output[-4000:]}"
    failing = {name for name in scenarios if result.failures(name)}
    unexpected = sorted(failing - allowed.keys())
    assert not unexpected, f"scenarios failing through the gateway: {unexpected}\n{result.output[-4000:]}"
    stale = sorted(name for name in allowed.keys() & set(scenarios) if name not in failing)
    assert not stale, f"expected failures that now pass; remove them from {EXPECTED_FAILURES.name}: {stale}"


@pytest.mark.timeout(SUITE_TIMEOUT + 30)
def test_all_server_scenarios_pass_through_a_polling_gateway(gateway_factory: StartGateway, tmp_path: Path) -> None:
    gateway = gateway_factory(upstream_command=UPSTREAM, args=POLLING_ARGS)
    scenarios = server_scenarios(None)
    assert len(scenarios) >= 30, f"the CLI listed too few server scenarios: {scenarios}"
    result = run_suite(gateway.mcp_url, tmp_path)
    report(result, scenarios, "all, polling gateway")
    assert_suite_passes(result, scenarios)
    # Priming event, retry field, and the call's result after resuming with Last-Event-ID: all SUCCESS.
    polling = {check["id"]: check["status"] for check in result.checks["server-sse-polling"]}
    assert not result.warnings("server-sse-polling"), polling
    assert polling.get("server-sse-disconnect-resume") == "SUCCESS", polling


@pytest.mark.timeout(SUITE_TIMEOUT + 30)
def test_spec_revision_2025_06_18_scenarios_pass_through_the_gateway(gateway: RunningGateway, tmp_path: Path) -> None:
    scenarios = server_scenarios("2025-06-18")
    assert scenarios, "the CLI listed no server scenarios for 2025-06-18"
    result = run_suite(gateway.mcp_url, tmp_path, spec_version="2025-06-18")
    assert set(result.checks) <= set(scenarios), "--spec-version did not restrict the run"
    report(result, scenarios, "2025-06-18")
    assert_suite_passes(result, scenarios)


@pytest.mark.timeout(SUITE_TIMEOUT + 30)
def test_all_server_scenarios_pass_through_a_polling_pool_gateway(
    gateway_factory: StartGateway, tmp_path: Path
) -> None:
    # Every session shares the pool's processes; only the subscription scenarios fail, by design.
    gateway = gateway_factory(upstream_command=UPSTREAM, args=POLLING_ARGS, env={"UPSTREAM_MODE": "pool"})
    scenarios = server_scenarios(None)
    result = run_suite(gateway.mcp_url, tmp_path)
    report(result, scenarios, "all, polling pool gateway")
    assert_suite_passes(result, scenarios, refused=POOL_REFUSED)
    for name in POOL_REFUSED:
        assert all("UPSTREAM_MODE=pool" in check.get("errorMessage", "") for check in result.failures(name)), name
    polling = {check["id"]: check["status"] for check in result.checks["server-sse-polling"]}
    assert polling.get("server-sse-disconnect-resume") == "SUCCESS", polling


@pytest.mark.timeout(SUITE_TIMEOUT + 30)
def test_spec_revision_2026_07_28_scenarios_pass_through_a_pool_gateway(
    gateway_factory: StartGateway, tmp_path: Path
) -> None:
    # The stateless protocol is served from the pool; processes share the test server's requestState key.
    env = {"UPSTREAM_MODE": "pool", "POOL_MAX": "4", "STDIO_SERVER_STATE_KEY": "conformance"}
    gateway = gateway_factory(upstream_command=UPSTREAM, env=env)
    scenarios = server_scenarios("2026-07-28", next_release=True)
    assert len(scenarios) >= 40 and "server-stateless" in scenarios, scenarios
    result = run_suite(gateway.mcp_url, tmp_path, spec_version="2026-07-28", next_release=True)
    passed = report(result, scenarios, "2026-07-28, pool gateway")
    assert_suite_passes(result, scenarios)
    assert passed == len(scenarios)
    custom = result.checks["http-custom-header-server-validation"]
    assert {check["id"] for check in custom if check["status"] == "SUCCESS"} >= PARAM_HEADER_CHECKS, custom
    assert all(check["status"] == "SUCCESS" for check in custom), custom
