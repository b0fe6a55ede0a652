"""Shared pytest configuration: fixtures live in tests/fixtures/, one module per real component."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE_BIN = ROOT / "tools" / "node" / "node_modules" / ".bin"
# The project's Node 22 (and the npm CLIs the tests run) come first on PATH. The venv's bin does not go on PATH:
# a test that needs a console script names it by absolute path (`Path(sys.executable).parent / "cnpg-mcp-server"`),
# so nothing here can hide a program that finds another only through a PATH a user would not have.
os.environ["PATH"] = os.pathsep.join([str(NODE_BIN), os.environ.get("PATH", "")])

pytest_plugins = [
    "tests.fixtures.gateway",
    "tests.fixtures.idp",
    "tests.fixtures.kubeapi",
]
