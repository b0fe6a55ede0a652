"""Dockerfile.gateway, Dockerfile.server, Dockerfile.idp and .dockerignore: hadolint and checkov clean, pinned
bases and dependencies, a fixed non-root user, no compilers in the final image, OCI labels, health checks."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import re
import subprocess

import pytest
from packaging.requirements import Requirement

from deploy.lock_requirements import LOCK, SANDBOX_LOCK, normalize
from tests.test_deploy_files import BIN, ROOT, dockerfile_stages, final_stage
from tests.test_deploy_kubernetes import checkov

DOCKERFILES = ["Dockerfile.gateway", "Dockerfile.server", "Dockerfile.idp"]


def test_hadolint_reports_nothing_and_ignores_no_rule() -> None:
    result = subprocess.run([str(BIN / "hadolint"), "--no-color", *DOCKERFILES], capture_output=True, text=True,
                            cwd=ROOT, timeout=60, check=False)
    assert result.returncode == 0 and result.stdout == "", result.stdout
    for name in DOCKERFILES:
        assert "hadolint ignore" not in (ROOT / name).read_text()


def test_hadolint_would_report_an_unpinned_package(tmp_path: object) -> None:
    text = (ROOT / "Dockerfile.server").read_text().replace("socat=1.7.4.4-2", "socat")
    result = subprocess.run([str(BIN / "hadolint"), "--no-color", "-"], input=text, capture_output=True, text=True,
                            timeout=60, check=False)
    assert "DL3008" in result.stdout


def test_checkov_passes_the_dockerfiles() -> None:
    report = checkov(["--framework", "dockerfile", *[f"--file={ROOT / n}" for n in DOCKERFILES]])
    assert report["summary"]["failed"] == 0, report["results"]["failed_checks"]
    assert report["summary"]["passed"] >= 60


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_are_pinned_non_root_labelled_and_without_compilers(name: str) -> None:
    stages = dockerfile_stages(name)
    final = final_stage(name)
    for stage in stages.values():
        # Pinned by version and by the digest of the image's index.
        assert re.fullmatch(
            r"(python:3\.11\.\d+-slim-bookworm|node:22\.\d+\.\d+-bookworm-slim)@sha256:[0-9a-f]{64}", stage.base
        ), stage.base
    assert final.user == "10001:10001"
    assert final.healthcheck and final.healthcheck.split()[-1] != "NONE"
    assert {"org.opencontainers.image.title", "org.opencontainers.image.version", "org.opencontainers.image.source",
            "org.opencontainers.image.licenses", "org.opencontainers.image.revision" if name != "Dockerfile.idp"
            else "org.opencontainers.image.description"} <= set(final.labels)
    runtime_runs = " ".join(final.runs + [r for s in stages.values() if s.name == "runtime" for r in s.runs])
    assert not re.search(r"\b(gcc|g\+\+|build-essential|make|clang|python3-dev)\b", runtime_runs)
    for stage in stages.values():
        for run in stage.runs:
            for spec in re.findall(r"apt-get install [^&]*", run):
                packages = [w for w in spec.split()[2:] if not w.startswith("-")]
                assert all("=" in p for p in packages), spec
            if "pip install" in run and "-r " not in run and "." not in run.split():
                assert "==" in run, run


def test_python_dependencies_come_from_a_complete_lock() -> None:
    """The lock pins every runtime requirement of the project, and every requirement of each pinned distribution
    that is installed here at the pinned version (the venv is shared and moves; regenerate the lock with
    `.venv/bin/python deploy/lock_requirements.py` after a dependency change)."""
    pins = dict(line.split("==") for line in LOCK.read_text().splitlines() if not line.startswith("#"))
    assert all(re.fullmatch(r"[a-z0-9-]+", name) and re.fullmatch(r"[\w.+-]+", v) for name, v in pins.items())
    for line in metadata.distribution("cnpg-mcp").requires or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            key = normalize(req.name)
            assert key in pins and req.specifier.contains(pins[key], prereleases=True), line
    for name, version in pins.items():
        dist = metadata.distribution(name)
        if dist.version != version:
            continue
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                assert normalize(req.name) in pins, f"{name} needs {req.name}, which the lock lacks"
    assert "cel-expr-python" in SANDBOX_LOCK.read_text() and "cel-expr-python" not in pins
    for name in ("Dockerfile.gateway", "Dockerfile.server"):
        runs = " ".join(r for s in dockerfile_stages(name).values() for r in s.runs)
        assert "--no-deps --only-binary=:all: -r deploy/requirements.lock" in runs
        assert "--no-deps --no-build-isolation ." in runs


def test_idp_image_installs_the_oidc_provider_version_the_tests_use() -> None:
    tested = json.loads((ROOT / "tools/node/package-lock.json").read_text())["packages"]["node_modules/oidc-provider"]
    image = json.loads((ROOT / "deploy/idp/package-lock.json").read_text())["packages"]["node_modules/oidc-provider"]
    assert image["version"] == tested["version"] and image["integrity"] == tested["integrity"]


def test_build_context_holds_only_what_the_images_copy() -> None:
    rules = [r for r in (ROOT / ".dockerignore").read_text().splitlines() if r and not r.startswith("#")]
    assert rules[0] == "*", "everything is excluded unless listed"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    for name in DOCKERFILES:
        for stage in dockerfile_stages(name).values():
            for copy in stage.copies:
                if copy.startswith("--from="):
                    continue
                for source in copy.split()[:-1]:
                    assert source in allowed or any(source.startswith(a + "/") for a in allowed), (name, source)
    assert not allowed & {".env", ".run", ".venv", "tests", "tools"}
