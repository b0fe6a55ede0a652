"""The README's main command, `scripts/run`, used as a new user uses it.

Each test starts the script in a clean environment (PATH without the venv, HOME without a kubeconfig, ports from
the environment), watches every process it starts, and checks what the user sees: the banner, the exact token line
it prints, the README's curl exchange, a cluster's lifecycle through the gateway with auth on, and a clean stop.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.fixtures.gateway import free_port
from tests.fixtures.idp import ISSUED_TOKENS, LOG_FILES, SECRETS
from tests.test_server_helpers import ok

ROOT = Path(__file__).resolve().parent.parent
CLEAN_PATH = "/usr/bin:/bin"
STARTUP_TIMEOUT = 90.0


# Watching processes ------------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[19])


class ProcessWatch(threading.Thread):
    """Samples every process on the machine every few ms while a test runs: records the script's descendants
    (pid and start time, so a reused pid is not mistaken for one of them) and every command line seen."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="process-watch")
        self.root: int | None = None
        self.descendants: dict[int, int] = {}
        self.cmdlines: set[str] = set()
        """Every command line seen on the machine (a secret must be in none of them)."""
        self.started: set[str] = set()
        """Command lines of the script's descendants."""
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            time.sleep(0.005)

    def sample(self) -> None:
        parents: dict[int, tuple[int, int]] = {}
        cmdlines: dict[int, str] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            stat = _stat(pid)
            if stat is None:
                continue
            parents[pid] = stat
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline:
                cmdlines[pid] = cmdline.replace(b"\0", b" ").decode(errors="replace")
                self.cmdlines.add(cmdlines[pid])
        if self.root is None:
            return
        known = {self.root} | set(self.descendants)
        changed = True
        while changed:
            changed = False
            for pid, (ppid, start) in parents.items():
                if ppid in known and pid not in known:
                    known.add(pid)
                    self.descendants[pid] = start
                    changed = True
        self.started.update(cmdlines[pid] for pid in known if pid in cmdlines)

    def alive(self) -> list[str]:
        """Descendants still running (same pid and start time), with their command lines."""
        left = []
        for pid, start in self.descendants.items():
            stat = _stat(pid)
            if stat is not None and stat[1] == start:
                try:
                    left.append(f"{pid}: " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
                except OSError:
                    continue
        return left

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def port_is_free(port: int) -> bool:
    """Nobody listens on it (connections in TIME_WAIT do not count, as for any server restarting there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# The script ---------------------------------------------------------------------------------------------------


@dataclass
class RunScript:
    """One `scripts/run` process in a clean environment, with its ports, state directory and output."""

    tmp: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    idp_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    watch: ProcessWatch = field(default_factory=ProcessWatch)

    def __post_init__(self) -> None:
        self.home = self.tmp / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.state = self.tmp / "state"
        self.out_path = self.tmp / "run.out"
        LOG_FILES.extend([self.out_path, self.state / "idp.log", self.state / "sandbox.log"])

    @property
    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "PATH": CLEAN_PATH,
            "PORT": str(self.port),
            "IDP_PORT": str(self.idp_port),
            "METRICS_PORT": str(self.metrics_port),
            "CNPG_MCP_STATE_DIR": str(self.state),
            **self.extra_env,
        }

    @property
    def mcp_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        self.watch.start()
        with self.out_path.open("wb") as out:
            self.process = subprocess.Popen(
                [str(ROOT / "scripts" / "run"), *self.args], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self.env, cwd=self.tmp, start_new_session=True,
            )  # fmt: skip
        self.watch.root = self.process.pid

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_for_banner(self) -> str:
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            text = self.output()
            if "cnpg-mcp is running" in text and "The README shows" in text:
                return text
            assert self.process.poll() is None, f"scripts/run exited {self.process.returncode}:\n{text}"
            time.sleep(0.1)
        raise TimeoutError(self.output())

    def token_line(self) -> str:
        match = re.search(r"^  (TOKEN=\$\(curl .*)$", self.output(), re.M)
        assert match, self.output()
        return match.group(1)

    def shell(self, script: str, timeout: float = 60) -> str:
        """Run bash in the same clean environment, as the user's second terminal."""
        completed = subprocess.run(
            ["/bin/bash", "-c", script], capture_output=True, text=True, env=self.env, cwd=self.tmp, timeout=timeout
        )
        assert completed.returncode == 0, completed.stderr + completed.stdout
        return completed.stdout

    def token(self) -> str:
        token = self.shell(self.token_line() + '\nprintf "%s" "$TOKEN"')
        assert token.count(".") == 2, "not a JWT"
        ISSUED_TOKENS.add(token)
        return token

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the script's own pid only (not its group), as `kill` or a process manager would."""
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.watch.sample()
            self.watch.stop()

    def kill_everything(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        for line in self.watch.alive():
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        self.watch.stop()


@pytest.fixture
def run_script(tmp_path: Path) -> Iterator[Any]:
    scripts: list[RunScript] = []

    def make(**kwargs: Any) -> RunScript:
        script = RunScript(tmp_path / f"run{len(scripts)}", **kwargs)
        scripts.append(script)
        script.start()
        return script

    yield make
    for script in scripts:
        script.kill_everything()


def assert_clean_exit(script: RunScript, code: int, expected: int) -> None:
    assert code == expected, script.output()
    deadline = time.monotonic() + 5
    while script.watch.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not script.watch.alive(), f"left running after scripts/run exited: {script.watch.alive()}"
    for port in (script.port, script.idp_port, script.metrics_port):
        assert port_is_free(port), f"port {port} still taken"


# MCP helpers --------------------------------------------------------------------------------------------------


async def wait_for(client: Client, tool: str, predicate: Any, **arguments: Any) -> str:
    """Call `tool` until its answer satisfies `predicate` (the sandbox operator steps about once a second)."""
    deadline = time.monotonic() + 60
    while True:
        answer = await ok(client, tool, **arguments)
        if predicate(answer):
            return answer
        assert time.monotonic() < deadline, f"{tool} never satisfied the condition; last answer:\n{answer}"
        await asyncio.sleep(0.5)


def readme_curl_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Talk to it with curl") :]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "README has no curl block under 'Talk to it with curl'"
    return match.group(1)


# Tests --------------------------------------------------------------------------------------------------------


async def test_a_new_user_runs_the_product_without_a_cluster_and_manages_one_end_to_end(run_script: Any) -> None:
    script: RunScript = run_script()
    banner = script.wait_for_banner()
    assert "SANDBOX" in banner and "nothing is deployed" in banner
    secret = (script.state / "dev-client-secret").read_text().strip()
    SECRETS.add(secret)
    assert secret not in banner
    assert (script.state.stat().st_mode & 0o777) == 0o700
    # The requestState key is made for the user, private, so the gateway does not warn of a key of its own.
    key = script.state / "request-state.key"
    assert (key.stat().st_mode & 0o777) == 0o600 and len(key.read_bytes().strip()) >= 32
    SECRETS.add(key.read_text().strip())

    async with httpx2.AsyncClient(timeout=30.0) as http:
        anonymous = await http.post(script.mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                                    headers={"Accept": "application/json, text/event-stream"})
    assert anonymous.status_code == 401
    assert "resource_metadata=" in anonymous.headers["www-authenticate"]

    # The README's curl exchange, as written, with this run's ports and state directory.
    block = readme_curl_block()
    for default, actual in (("127.0.0.1:3000", f"127.0.0.1:{script.port}"),
                            ("127.0.0.1:9400", f"127.0.0.1:{script.idp_port}"), (".run/", f"{script.state}/")):
        assert default in block
        block = block.replace(default, actual)
    exchange = script.shell("set -euo pipefail\n" + block)
    answers = {m["id"]: m for m in (json.loads(line[6:]) for line in exchange.splitlines()
                                    if line.startswith("data: {"))}
    assert answers[1]["result"]["serverInfo"]["name"] == "cnpg-mcp-server", exchange
    assert "SANDBOX" in answers[1]["result"]["instructions"]
    assert answers[2]["result"]["isError"] is False and "Created Cluster default/demo" in exchange, exchange
    assert answers[3]["result"]["isError"] is False
    assert "SANDBOX" in answers[3]["result"]["content"][0]["text"]

    # The token from the exact line the banner prints; then a whole lifecycle through the gateway.
    token = script.token()
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30.0, read=60.0))
    async with http, Client(streamable_http_client(script.mcp_url, http_client=http)) as client:
        await wait_for(client, "get_cluster_status", lambda s: "Cluster in healthy state" in s, name="demo")
        instances = await ok(client, "list_instances", cluster="demo")
        assert "primary" in instances and instances.count("replica") == 2, instances

        await ok(client, "scale_cluster", name="demo", instances=2)
        await wait_for(client, "list_instances", lambda s: "demo-3" not in s and "demo-2" in s, cluster="demo")
        await wait_for(client, "get_cluster_status", lambda s: "Cluster in healthy state" in s, name="demo")

        backups = await ok(client, "list_backups")
        assert "no backups" in backups.lower(), backups

        await ok(client, "delete_cluster", name="demo", confirm="demo")
        await wait_for(client, "list_clusters", lambda s: "demo" not in s)

    code = script.stop(signal.SIGTERM)
    assert_clean_exit(script, code, 143)
    assert not (script.state / "sandbox-kubeconfig").exists()
    assert "request_state_key_ephemeral" not in script.out_path.read_text()
    leaked = [c for c in script.watch.cmdlines if secret in c or token in c]
    assert not leaked, f"a secret or token was in a process's arguments: {[c[:80] for c in leaked]}"
    assert any("devkube" in c for c in script.watch.started), "the sandbox never started"


def test_ctrl_c_to_the_script_alone_stops_everything_at_once(run_script: Any) -> None:
    script: RunScript = run_script()
    script.wait_for_banner()
    started = time.monotonic()
    code = script.stop(signal.SIGINT, timeout=15)
    assert time.monotonic() - started < 10
    assert_clean_exit(script, code, 130)


def test_a_taken_idp_port_is_one_clear_line_and_nothing_is_left_running(run_script: Any) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        script: RunScript = run_script(extra_env={"IDP_PORT": str(port)})
        script.idp_port = port
        assert script.process is not None
        code = script.process.wait(timeout=STARTUP_TIMEOUT)
        script.watch.sample()
        output = script.output()
        assert code != 0
        assert f"port {port}" in output and "already in use" in output and "IDP_PORT" in output, output
        assert "    at " not in output and "Traceback" not in output, output
        script.watch.stop()
        deadline = time.monotonic() + 5
        while script.watch.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not script.watch.alive()
        for other in (script.port, script.metrics_port):
            assert port_is_free(other)


def test_a_kubeconfig_that_does_not_exist_is_refused_before_anything_starts(run_script: Any, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "config"
    script: RunScript = run_script(extra_env={"KUBECONFIG": str(missing)})
    assert script.process is not None
    code = script.process.wait(timeout=STARTUP_TIMEOUT)
    assert code == 2
    assert str(missing) in script.output() and "--sandbox" in script.output()
    script.watch.stop()
    assert not any("idp.mjs" in c or "devkube" in c for c in script.watch.started), script.watch.started


async def test_with_a_kubeconfig_the_real_cluster_is_used_and_no_sandbox_starts(
    run_script: Any, kube_api: Any
) -> None:
    script: RunScript = run_script(extra_env={"KUBECONFIG": str(kube_api.kubeconfig_path)})
    banner = script.wait_for_banner()
    assert "SANDBOX" not in banner and str(kube_api.kubeconfig_path) in banner
    token = script.token()
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30.0, read=60.0))
    async with http, Client(streamable_http_client(script.mcp_url, http_client=http)) as client:
        listed = await ok(client, "list_clusters")
        assert "SANDBOX" not in listed
    assert any(r.path.endswith("/clusters") for r in kube_api.requests), "the server did not use the kubeconfig"

    from prometheus_client.parser import text_string_to_metric_families

    async with httpx2.AsyncClient(timeout=5.0) as http:
        metrics = await http.get(f"http://127.0.0.1:{script.metrics_port}/metrics")
    families = {family.name for family in text_string_to_metric_families(metrics.text)}
    assert {"mcp_gateway_sessions_active", "mcp_gateway_auth_results"} <= families
    code = script.stop()
    assert_clean_exit(script, code, 143)
    assert not any("devkube" in c for c in script.watch.started), script.watch.started
