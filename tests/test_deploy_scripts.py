"""The operator scripts: scripts/start-http.sh runs the server behind socat and the gateway on its socket in pool
mode as the images and the ConfigMap do, and scripts/test-inspector.sh drives the MCP Inspector CLI against it
over HTTP with a bearer token and over stdio, without the token ever appearing in a process's command line."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.gateway import free_port
from tests.fixtures.idp import LOG_FILES, DevIdp, metric
from tests.test_deploy_files import ROOT, final_stage

START = ROOT / "scripts" / "start-http.sh"
INSPECTOR = ROOT / "scripts" / "test-inspector.sh"


class ArgvWatch(threading.Thread):
    """Collects every command line on the machine every few milliseconds."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: set[str] = set()
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        self.seen.add(Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode())
                    except OSError:
                        continue
            time.sleep(0.005)


def test_start_http_runs_the_server_images_socat_address() -> None:
    entrypoint = final_stage("Dockerfile.server").entrypoint
    listen = entrypoint[1].replace("/run/mcp/mcp.sock", "$socket")
    script = START.read_text()
    assert f'"{listen}" {entrypoint[2]}' in script
    gateway = final_stage("Dockerfile.gateway")
    assert gateway.cmd == ["--upstream-socket", "/run/mcp/mcp.sock"]
    assert '.venv/bin/cnpg-mcp-gateway --upstream-socket "$socket"' in script


@pytest.fixture
def started(tmp_path: Path, idp: DevIdp, kube_api: Any) -> Any:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OIDC_ISSUER": idp.issuer, "OIDC_AUDIENCE": f"{public}/mcp",
           "PUBLIC_URL": public, "PORT": str(port), "METRICS_PORT": str(free_port()),
           "TOOL_SCOPES": "list_*=cnpg:read *=cnpg:write", "KUBECONFIG": str(kube_api.kubeconfig_path),
           "CNPG_KUBE_CONTEXT": "test", "CNPG_MCP_STATE_DIR": str(tmp_path / "state")}
    log = tmp_path / "start-http.log"
    LOG_FILES.append(log)
    with log.open("wb") as out:
        proc = subprocess.Popen([str(START)], env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{public}/ready", timeout=2)
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    yield public, env, tmp_path
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert not (tmp_path / "state" / "mcp.sock").exists()


def run_inspector(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run([str(INSPECTOR), *args], env=env, capture_output=True, text=True, timeout=180,
                            check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def assert_lists(output: str) -> None:
    for method in ("tools/list", "resources/list", "resources/templates/list", "prompts/list"):
        assert f"== {method}" in output
    assert '"name": "list_clusters"' in output
    assert "cnpg://clusters/{namespace}/{name}" in output
    assert '"name": "diagnose_cluster"' in output


def test_inspector_lists_through_the_gateway_with_a_token_nobody_sees_and_over_stdio(
    started: Any, idp: DevIdp
) -> None:
    public, env, tmp_path = started
    token = idp.token(scope="openid cnpg:read", resource=f"{public}/mcp")
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    watch = ArgvWatch()
    watch.start()
    try:
        over_http = run_inspector(["--transport", "http", "--url", f"{public}/mcp", "--token-file", str(token_file)],
                                  env)
    finally:
        watch.halt.set()
        watch.join(timeout=5)
    assert_lists(over_http)
    # Pool mode, as the images are configured: the Inspector's requests went to the pool's shared processes.
    with urllib.request.urlopen(f"http://127.0.0.1:{env['METRICS_PORT']}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert metric(text, "mcp_gateway_pool_dispatches_total", partition="session") > 0
    assert 1 <= metric(text, "mcp_gateway_pool_processes", partition="session") <= 8
    # The token's scope filters tools/list: a read-only token sees no write tool.
    assert '"name": "create_cluster"' not in over_http
    assert any("inspector" in c for c in watch.seen), "the watch saw the Inspector run"
    assert not [c for c in watch.seen if token in c]

    over_stdio = run_inspector(["--transport", "stdio"], env)
    assert_lists(over_stdio)
    assert '"name": "create_cluster"' in over_stdio
