"""Shared pytest configuration: fixtures live in tests/fixtures/, one module per real component."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE_BIN = ROOT / "tools" / "node" / "node_modules" / ".bin"
# Tests spawn console scripts (cnpg-mcp-server, cnpg-mcp-gateway) and the project's Node 22.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), str(NODE_BIN), os.environ.get("PATH", "")])

pytest_plugins = [
    "tests.fixtures.gateway",
    "tests.fixtures.idp",
    "tests.fixtures.kubeapi",
]
