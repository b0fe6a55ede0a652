"""The `cnpg-mcp-server` console script: stdio transport through the MCP SDK stdio client, CLI and config."""

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes.config import incluster_config
from mcp import Client
from mcp.client.stdio import StdioServerParameters

import server.kube
from server.config import VARIABLES, ConfigError, load_config
from server.kube import ClusterUnavailable
from tests.test_server_helpers import cluster, kube_fixture, text  # noqa: F401 - registers the `kube` fixture

SCRIPT = shutil.which("cnpg-mcp-server") or str(Path(sys.executable).parent / "cnpg-mcp-server")


async def test_stdio_server_answers_tools_over_the_sdk_stdio_client(kube: Any, tmp_path: Path) -> None:
    kube.seed(cluster("pg"))
    params = StdioServerParameters(
        command=SCRIPT, args=["--kubeconfig", str(kube.kubeconfig_path)],
        env={"CNPG_NAMESPACES": "default", "CNPG_READ_ONLY": "false", "HOME": str(tmp_path)},
    )
    async with Client(params, mode="legacy", read_timeout_seconds=60) as client:
        tools = (await client.list_tools()).tools
        status = await client.call_tool("get_cluster_status", {"name": "pg"})
        missing = await client.call_tool("get_cluster_status", {"name": "ghost"})
        scaled = await client.call_tool("scale_cluster", {"name": "pg", "instances": 4})
    assert len(tools) >= 30
    assert not status.is_error and "Cluster default/pg" in text(status)
    assert missing.is_error and "404" in text(missing) and "Traceback" not in text(missing)
    assert not scaled.is_error
    assert kube.get("postgresql.cnpg.io/v1", "clusters", "default", "pg")["spec"]["instances"] == 4


def test_python_dash_m_server_help_documents_every_variable() -> None:
    result = subprocess.run([sys.executable, "-m", "server", "--help"], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0
    for env, flag, _ in VARIABLES:
        assert env in result.stdout and flag in result.stdout


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CNPG_READ_ONLY": "maybe"}, "CNPG_READ_ONLY"),
        ({"CNPG_MAX_OUTPUT_CHARS": "ten"}, "CNPG_MAX_OUTPUT_CHARS"),
        ({"CNPG_MAX_OUTPUT_CHARS": "10"}, "CNPG_MAX_OUTPUT_CHARS"),
        ({"CNPG_NAMESPACES": "Prod_1"}, "CNPG_NAMESPACES"),
        ({"CNPG_NAMESPACES": "*,default"}, "CNPG_NAMESPACES"),
        ({"CNPG_DEFAULT_PG_MAJOR": "9"}, "CNPG_DEFAULT_PG_MAJOR"),
        ({"CNPG_REQUEST_TIMEOUT": "-1"}, "CNPG_REQUEST_TIMEOUT"),
    ],
)
def test_config_errors_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_config([], env=env)


def test_config_flags_override_environment() -> None:
    config = load_config(["--namespaces", "a,b", "--read-only", "--default-pg-major", "16"],
                         env={"CNPG_NAMESPACES": "c", "CNPG_DEFAULT_IMAGE": "img:1"})
    assert config.namespaces == ("a", "b") and config.read_only is True
    assert config.image_for(None) == "img:1" and config.image_for(15).endswith("postgresql:15")
    assert load_config([], env={"CNPG_NAMESPACES": "*"}).all_namespaces is True


def test_in_cluster_service_account_and_namespace_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token, cert, namespace = tmp_path / "token", tmp_path / "ca.crt", tmp_path / "namespace"
    token.write_text("sa-token")
    cert.write_text("not used until a TLS connection is made")
    namespace.write_text("prod\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(cert))
    monkeypatch.setattr(server.kube, "IN_CLUSTER_NAMESPACE_FILE", namespace)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    kube_client = server.kube.connect(load_config([], env={}))
    try:
        assert kube_client.default_namespace == "prod"
        assert kube_client.api_client.configuration.host == "https://10.0.0.1:443"
        assert kube_client.api_client.configuration.auth_settings()["BearerToken"]["value"].lower() == "bearer sa-token"
    finally:
        kube_client.close()
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "missing"))
    with pytest.raises(ClusterUnavailable, match="service account cannot be loaded") as caught:
        server.kube.connect(load_config([], env={}))
    assert caught.value.reason == "in_cluster_failed" and "service account token" in caught.value.describe()

