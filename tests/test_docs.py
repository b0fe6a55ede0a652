"""The README stays true to the code: every setting `--help` names and every tool the server registers is in it."""

import re
import subprocess
from pathlib import Path

import pytest
from kubernetes import client

from server.app import create_server
from server.config import load_config
from server.kube import Kube

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def help_env_names(command: str) -> set[str]:
    text = subprocess.run([command, "--help"], capture_output=True, text=True, check=True, timeout=60).stdout
    table = set(re.findall(r"^  ([A-Z][A-Z0-9_]{3,}) ", text, re.M))
    # argparse wraps "[env NAME]" across lines: join the words before matching.
    return table | set(re.findall(r"\benv ([A-Z][A-Z0-9_]+)", " ".join(text.split())))


@pytest.mark.parametrize("command", ["cnpg-mcp-gateway", "cnpg-mcp-server"])
def test_every_setting_in_help_is_in_the_readme(command: str) -> None:
    names = help_env_names(command)
    assert len(names) >= 8, names
    missing = sorted(name for name in names if f"`{name}`" not in README)
    assert not missing, f"{command} --help names settings the README lacks: {missing}"


def test_every_auth_setting_is_in_the_readme() -> None:
    source = (ROOT / "gateway" / "auth" / "config.py").read_text()
    names = set(re.findall(r'"([A-Z]+_[A-Z0-9_]+)"', source))
    assert {"OIDC_ISSUER", "OIDC_AUDIENCE"} <= names
    missing = sorted(name for name in names if f"`{name}`" not in README)
    assert not missing, missing


@pytest.mark.parametrize("document", ["README.md", "docs/server.md"])
def test_every_tool_has_one_line(document: str) -> None:
    kube_client = Kube(client.ApiClient(), "default")
    try:
        server = create_server(load_config([], env={}), kube_client)
    finally:
        kube_client.close()
    lines = (ROOT / document).read_text().splitlines()
    assert len(server.tool_table) >= 30
    for tool in server.tool_table:
        assert sum(line.startswith(f"| `{tool.name}` |") for line in lines) == 1, tool.name
