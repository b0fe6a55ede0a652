"""The official conformance suite's client scenarios, with `cnpg-mcp-connect` as the client's transport.

For each scenario the suite starts its test server and runs tests/conformance_client_driver.py, which speaks stdio
MCP to `python -m connect --url URL`; the helper does all HTTP, SSE and OAuth. A scenario fails when any of its
checks is FAILURE; the expected failures below carry their reason and must keep failing.

Time goes to process start-up: per scenario the suite's Node CLI (about 1 s of CPU), the driver and the helper
(about 2 s in authorization-code mode, most of it importing the MCP SDK's OAuth client). So three of the suite's
named suites run as one CLI each (their scenarios in parallel inside it), Node keeps its compile cache between
starts, and up to five scenarios run at once; the one scenario that measures the client's timing runs alone first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DRIVER = f"{sys.executable} -m tests.conformance_client_driver"

SUITES = {
    "sep-835": ["auth/scope-from-www-authenticate", "auth/scope-from-scopes-supported",
                "auth/scope-omitted-when-undefined", "auth/scope-step-up", "auth/scope-retry-limit"],
    "metadata": ["auth/metadata-default", "auth/metadata-var1", "auth/metadata-var2", "auth/metadata-var3"],
    "backcompat": ["auth/2025-03-26-oauth-metadata-backcompat", "auth/2025-03-26-oauth-endpoint-fallback"],
}  # fmt: skip
"""Small named suites of conformance 0.1.16 whose every scenario is one we run (the test checks they still are).
The `auth` suite would cover more in one CLI, but its 14 scenarios start at once: 28 Python processes, too many for
2 cores when the machine is busy (helpers then miss the driver's 60 s wait)."""

SINGLES = [
    "auth/basic-cimd", "auth/token-endpoint-auth-basic", "auth/token-endpoint-auth-post",
    "auth/token-endpoint-auth-none", "auth/pre-registration", "auth/client-credentials-basic",
    "auth/client-credentials-jwt", "initialize", "tools_call", "elicitation-sep1034-client-defaults",
]  # fmt: skip
AT_ONCE = 5
"""Scenarios running at the same time (a suite counts for each of its scenarios, and runs alone if larger)."""
ALONE = "sse-retry"
"""Run by itself first: its check that the client waits the server's `retry` delay (give or take 200 ms) is the
one a busy machine could break."""

SCENARIOS = sorted([ALONE, *SINGLES] + [s for scenarios in SUITES.values() for s in scenarios])

EXPECTED_FAILURES = {
    "auth/2025-03-26-oauth-metadata-backcompat": (
        "the suite's server publishes authorization server metadata whose issuer is not the server's origin; the "
        "MCP SDK's OAuth client (which the helper uses) refuses it, as RFC 8414 §3.3 requires"
    ),
}
RESULT_DIR = re.compile(r"^(?P<scenario>.+)-\d{4}-\d\d-\d\dT[\d-]+Z$")


class Slots:
    """A counting semaphore that takes several slots at once, first come first served: a suite waiting for all of
    its slots is not overtaken by the single scenarios queued after it."""

    def __init__(self, size: int) -> None:
        self.size = self.free = size
        self.changed = threading.Condition()
        self.queue: deque[object] = deque()

    @contextmanager
    def take(self, wanted: int) -> Iterator[None]:
        wanted, ticket = min(wanted, self.size), object()
        with self.changed:
            self.queue.append(ticket)
            self.changed.wait_for(lambda: self.queue[0] is ticket and self.free >= wanted)
            self.queue.popleft()
            self.free -= wanted
            self.changed.notify_all()
        try:
            yield
        finally:
            with self.changed:
                self.free += wanted
                self.changed.notify_all()


def run(kind: str, name: str, output: Path, env: dict[str, str]) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """One conformance CLI run (`--scenario` or `--suite`): the checks of each scenario it ran, and its output."""
    conformance = shutil.which("conformance")
    assert conformance, "the conformance CLI is not on PATH (tests/conftest.py adds tools/node/node_modules/.bin)"
    out = output / f"{kind}-{name.replace('/', '-')}"
    completed = subprocess.run(
        [conformance, "client", "--command", DRIVER, f"--{kind}", name, "--timeout", "120000", "-o", str(out)],
        capture_output=True, text=True, timeout=240, cwd=ROOT, env=env,
    )  # fmt: skip
    checks: dict[str, list[dict[str, Any]]] = {}
    for path in out.rglob("checks.json"):
        found = RESULT_DIR.match(path.parent.relative_to(out).as_posix())
        assert found, f"unexpected result directory {path.parent}"
        checks.setdefault(found["scenario"], []).extend(json.loads(path.read_text()))
    return checks, completed.stdout[-3000:] + completed.stderr[-2000:]


@pytest.mark.timeout(400)
def test_client_scenarios_pass_through_cnpg_mcp_connect(tmp_path: Path) -> None:
    env = dict(os.environ, NODE_COMPILE_CACHE=str(tmp_path / "node-compile-cache"))
    results = [(("scenario", ALONE), *run("scenario", ALONE, tmp_path, env))]
    # Largest first, each suite followed by singles that fill the slots it leaves free.
    runs = [("suite", "sep-835"), ("suite", "metadata"), ("scenario", SINGLES[0]), ("suite", "backcompat")]
    runs += [("scenario", name) for name in SINGLES[1:]]
    assert sorted(name for _, name in runs) == sorted([*SUITES, *SINGLES])
    slots = Slots(AT_ONCE)

    def bounded(kind: str, name: str) -> tuple[tuple[str, str], dict[str, list[dict[str, Any]]], str]:
        with slots.take(len(SUITES[name]) if kind == "suite" else 1):
            return (kind, name), *run(kind, name, tmp_path, env)

    with ThreadPoolExecutor(max_workers=AT_ONCE) as pool:
        results += pool.map(lambda r: bounded(*r), runs)
    checks: dict[str, list[dict[str, Any]]] = {}
    for (kind, name), found, output in results:
        expected = SUITES[name] if kind == "suite" else [name]
        assert sorted(found) == sorted(expected), f"{kind} {name} ran {sorted(found)}\n{output}"
        for scenario in expected:
            assert found[scenario], f"{scenario}: no checks recorded\n{output}"
        checks.update(found)
    assert sorted(checks) == SCENARIOS
    failing: dict[str, list[str]] = {}
    for scenario in SCENARIOS:
        failures = [
            f"{c['id']}: {c.get('errorMessage') or c.get('description')}"
            for c in checks[scenario]
            if c["status"] == "FAILURE"
        ]
        print(f"{scenario}: {sum(c['status'] == 'SUCCESS' for c in checks[scenario])} passed, {len(failures)} failed")
        if failures:
            failing[scenario] = failures
    unexpected = {name: why for name, why in failing.items() if name not in EXPECTED_FAILURES}
    assert not unexpected, json.dumps(unexpected, indent=1)
    stale = sorted(set(EXPECTED_FAILURES) - set(failing))
    assert not stale, f"expected failures that now pass; remove them: {stale}"
