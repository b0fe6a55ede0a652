"""Without a usable cluster the server still starts, says why once on stderr, and answers every tool call with it.

Each test runs `cnpg-mcp-server` through the MCP SDK stdio client with HOME set to an empty directory, so no
kubeconfig of the machine running the tests can leak in (the SDK passes only a few variables, never KUBECONFIG
or KUBERNETES_SERVICE_HOST, unless a test gives them).
"""

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, MCPError
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import CallToolResult

import server.kube
from server.app import create_server
from server.config import load_config
from server.kube import ClusterUnavailable, Kube
from tests.test_server_helpers import kube_fixture, text  # noqa: F401 - registers the `kube` fixture
from tests.test_server_stdio import SCRIPT

FIXES = ("KUBECONFIG", "~/.kube/config", "pod", "scripts/run --sandbox")


@dataclass
class Session:
    instructions: str
    tools: list[str]
    results: dict[str, CallToolResult]
    stderr: str


async def run_session(home: Path, *args: str, env: dict[str, str] | None = None) -> Session:
    """Start the server, list its tools and call every one of them with no arguments."""
    params = StdioServerParameters(command=SCRIPT, args=list(args), env={"HOME": str(home), **(env or {})})
    errlog_path = home.parent / f"{home.name}-stderr.txt"
    with errlog_path.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode="legacy", read_timeout_seconds=60) as client:
            instructions = client.instructions or ""
            tools = [tool.name for tool in (await client.list_tools()).tools]
            results = {}
            for name in tools:
                result = await client.call_tool(name, {})
                assert isinstance(result, CallToolResult)
                results[name] = result
    return Session(instructions, tools, results, errlog_path.read_text())


@pytest.fixture
def home(tmp_path: Path) -> Path:
    empty = tmp_path / "home"
    empty.mkdir()
    return empty


async def test_without_kubeconfig_the_server_starts_and_every_tool_call_says_why(home: Path) -> None:
    session = await run_session(home)
    assert session.instructions.splitlines()[0].startswith("NO CLUSTER CONFIGURED:")
    assert str(home / ".kube" / "config") in session.instructions.splitlines()[0]
    assert len(session.tools) >= 30 and "list_clusters" in session.tools
    for name, result in session.results.items():
        body = text(result)
        assert result.is_error, name
        assert body.startswith("No Kubernetes cluster is configured"), (name, body)
        assert str(home / ".kube" / "config") in body and all(fix in body for fix in FIXES), (name, body)
    assert session.stderr.count("warning") == 1, session.stderr
    assert "No Kubernetes cluster is configured" in session.stderr
    assert all(fix in session.stderr for fix in FIXES) and "Traceback" not in session.stderr


async def test_a_kubeconfig_that_is_not_yaml_is_named_with_its_problem(home: Path) -> None:
    broken = home.parent / "broken-kubeconfig"
    broken.write_text("clusters: [unclosed\n")
    session = await run_session(home, env={"KUBECONFIG": str(broken)})
    body = text(session.results["list_clusters"])
    assert session.results["list_clusters"].is_error
    assert f"the kubeconfig {broken} cannot be read" in body and "repair that kubeconfig" in body
    assert session.instructions.startswith("NO CLUSTER CONFIGURED:")
    assert "Traceback" not in session.stderr and f"{broken} cannot be read" in session.stderr


async def test_an_unknown_context_names_the_contexts_there_are(kube: Any, home: Path) -> None:
    session = await run_session(home, "--kubeconfig", str(kube.kubeconfig_path), "--context", "nowhere")
    body = text(session.results["get_cluster_status"])
    assert session.results["get_cluster_status"].is_error
    assert "context 'nowhere' (CNPG_KUBE_CONTEXT / --context) is not in the kubeconfig" in body
    assert "(contexts: test)" in body and "set CNPG_KUBE_CONTEXT (or --context) to one of its contexts" in body
    assert not kube.requests, "no API call without a usable context"


def test_a_plainly_invalid_setting_still_exits_with_status_2(home: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "CNPG_NAMESPACES": "Prod_1"}
    result = subprocess.run([SCRIPT], capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert "configuration error" in result.stderr and "CNPG_NAMESPACES" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_kubeconfig_path_that_does_not_exist_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    missing = tmp_path / "missing"
    with pytest.raises(ClusterUnavailable) as caught:
        server.kube.connect(load_config(["--kubeconfig", str(missing)], env={}))
    assert caught.value.reason == "no_kubeconfig"
    assert f"the kubeconfig {missing} (from KUBECONFIG / --kubeconfig) does not exist" in caught.value.describe()


def test_a_kubeconfig_without_a_current_context_is_broken_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    partial = tmp_path / "kubeconfig"
    partial.write_text("apiVersion: v1\nkind: Config\n")
    with pytest.raises(ClusterUnavailable) as caught:
        server.kube.connect(load_config(["--kubeconfig", str(partial)], env={}))
    assert caught.value.reason == "broken_kubeconfig" and "current-context" in caught.value.cause


async def test_the_cluster_resource_gives_the_same_cause() -> None:
    cause = ClusterUnavailable("no_kubeconfig", "there is no kubeconfig at /nowhere/config")
    mcp_server = create_server(load_config([], env={}), Kube.without_cluster(cause))
    async with Client(mcp_server, raise_exceptions=False) as client:
        with pytest.raises(MCPError) as caught:
            await client.read_resource("cnpg://clusters/default/pg")
    assert "No Kubernetes cluster is configured" in str(caught.value) and "/nowhere/config" in str(caught.value)
