"""The README and docs/auth.md stay true to the code: every setting with its flag, as `--help` lists it, and every
tool the server registers."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client

from server.app import create_server
from server.config import load_config
from server.kube import Kube

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def help_text(command: str) -> str:
    path = Path(sys.executable).parent / command
    return subprocess.run([str(path), "--help"], capture_output=True, text=True, check=True, timeout=60).stdout


def help_env_names(command: str) -> set[str]:
    text = help_text(command)
    # The server lists "  NAME  --flag  text" in its epilog; every flag's help ends with "[env NAME]", which
    # argparse may wrap across lines: join the words before matching.
    table = set(re.findall(r"^  ([A-Z][A-Z0-9_]{3,}) +--", text, re.M))
    return table | set(re.findall(r"\[env ([A-Z][A-Z0-9_]+)\]", " ".join(text.split())))


def gateway_help_settings() -> set[tuple[str, str]]:
    """(variable, flag) pairs of `cnpg-mcp-gateway --help`: each flag's metavar is its variable."""
    text = " ".join(help_text("cnpg-mcp-gateway").split())
    pairs = set(re.findall(r"(--[a-z][a-z0-9-]+) \[?([A-Z][A-Z0-9_]+)\]?", text))
    return {(env, flag) for flag, env in pairs}


def table_rows(document: str, start: str, end: str) -> list[str]:
    text = (ROOT / document).read_text()
    section = text[text.index(start) : text.index(end)]
    return [line for line in section.splitlines() if line.startswith("| `")]


def settings_in(rows: list[str]) -> set[tuple[str, str]]:
    pairs = set()
    for row in rows:
        match = re.match(r"\| `([A-Z][A-Z0-9_]+)` `(--[a-z][a-z0-9-]+)` \|", row)
        assert match, f"a setting row without its flag: {row[:80]}"
        pairs.add((match.group(1), match.group(2)))
    return pairs


@pytest.mark.parametrize("command", ["cnpg-mcp-gateway", "cnpg-mcp-server"])
def test_every_setting_in_help_is_in_the_readme(command: str) -> None:
    names = help_env_names(command)
    assert len(names) >= 8, names
    missing = sorted(name for name in names if f"`{name}`" not in README)
    assert not missing, f"{command} --help names settings the README lacks: {missing}"


def test_the_readme_gateway_tables_match_help_setting_for_setting() -> None:
    rows = table_rows("README.md", "### Gateway (`cnpg-mcp-gateway`)", "### CNPG server")
    in_readme = settings_in(rows)
    in_help = gateway_help_settings()
    assert len(rows) == len(in_readme), "a setting appears twice in the README tables"
    assert not in_help - in_readme, f"--help settings the README lacks: {sorted(in_help - in_readme)}"
    assert not in_readme - in_help, f"README settings --help lacks: {sorted(in_readme - in_help)}"
    assert {env for env, _ in in_help} == help_env_names("cnpg-mcp-gateway"), "a flag without [env NAME]"


def test_every_setting_in_the_code_is_in_the_readme_with_its_flag() -> None:
    from gateway.config import SETTINGS

    rows = settings_in(table_rows("README.md", "### Gateway (`cnpg-mcp-gateway`)", "### CNPG server"))
    assert {(s.env, s.flag) for s in SETTINGS} == rows


def test_docs_auth_lists_every_auth_setting_with_its_flag() -> None:
    from gateway.auth.config import AUTH_SETTINGS

    rows = settings_in(table_rows("docs/auth.md", "## Configuration", "### TOOL_SCOPES"))
    assert {(s.env, s.flag) for s in AUTH_SETTINGS} <= rows
    assert rows <= gateway_help_settings()


def test_help_sends_oidc_readers_to_docs_auth() -> None:
    text = help_text("cnpg-mcp-gateway")
    auth = text[text.index("authentication settings") :]
    assert "docs/auth.md" in auth.splitlines()[0]
    assert (ROOT / "docs" / "auth.md").is_file()


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
