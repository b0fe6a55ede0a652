"""The official conformance suite's client scenarios, with `cnpg-mcp-connect` as the client's transport.

For each scenario the suite starts its test server and runs tests/conformance_client_driver.py, which speaks stdio
MCP to `python -m connect --url URL`; the helper does all HTTP, SSE and OAuth. Scenarios run a few at a time (the
suite's own `--suite` runs them all at once, too many Python processes for a 2-core machine). A scenario fails
when any of its checks is FAILURE; the expected failures below carry their reason and must keep failing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DRIVER = f"{sys.executable} -m tests.conformance_client_driver"

SCENARIOS = [
    "initialize", "tools_call", "sse-retry", "elicitation-sep1034-client-defaults",
    "auth/metadata-default", "auth/metadata-var1", "auth/metadata-var2", "auth/metadata-var3", "auth/basic-cimd",
    "auth/scope-from-www-authenticate", "auth/scope-from-scopes-supported", "auth/scope-omitted-when-undefined",
    "auth/scope-step-up", "auth/scope-retry-limit", "auth/token-endpoint-auth-basic", "auth/token-endpoint-auth-post",
    "auth/token-endpoint-auth-none", "auth/pre-registration",
    "auth/client-credentials-basic", "auth/client-credentials-jwt",
    "auth/2025-03-26-oauth-metadata-backcompat", "auth/2025-03-26-oauth-endpoint-fallback",
]  # fmt: skip

EXPECTED_FAILURES = {
    "auth/2025-03-26-oauth-metadata-backcompat": (
        "the suite's server publishes authorization server metadata whose issuer is not the server's origin; the "
        "MCP SDK's OAuth client (which the helper uses) refuses it, as RFC 8414 §3.3 requires"
    ),
}


def run_scenario(scenario: str, output: Path) -> tuple[str, list[dict[str, Any]], str]:
    conformance = shutil.which("conformance")
    assert conformance, "the conformance CLI is not on PATH (tests/conftest.py adds tools/node/node_modules/.bin)"
    out = output / scenario.replace("/", "-")
    completed = subprocess.run(
        [conformance, "client", "--command", DRIVER, "--scenario", scenario, "--timeout", "60000", "-o", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    checks: list[dict[str, Any]] = []
    for path in out.rglob("checks.json"):
        checks += json.loads(path.read_text())
    return scenario, checks, completed.stdout[-3000:] + completed.stderr[-2000:]


@pytest.mark.timeout(300)
def test_client_scenarios_pass_through_cnpg_mcp_connect(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda s: run_scenario(s, tmp_path), SCENARIOS))
    failing: dict[str, list[str]] = {}
    for scenario, checks, output in results:
        assert checks, f"{scenario}: no checks recorded\n{output}"
        failures = [
            f"{c['id']}: {c.get('errorMessage') or c.get('description')}" for c in checks if c["status"] == "FAILURE"
        ]
        print(f"{scenario}: {sum(c['status'] == 'SUCCESS' for c in checks)} passed, {len(failures)} failed")
        if failures:
            failing[scenario] = failures
    unexpected = {name: why for name, why in failing.items() if name not in EXPECTED_FAILURES}
    assert not unexpected, json.dumps(unexpected, indent=1)
    stale = sorted(set(EXPECTED_FAILURES) - set(failing))
    assert not stale, f"expected failures that now pass; remove them: {stale}"
