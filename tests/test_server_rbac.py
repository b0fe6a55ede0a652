"""The declared RBAC table and k8s/rbac.yaml generated from it."""

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

from server.permissions import PERMISSIONS, READONLY_ROLE_NAME, ROLE_NAME, render_rbac_yaml
from tests.test_server_helpers import rbac_call, uncovered_calls

ROOT = Path(__file__).resolve().parent.parent


def test_rbac_yaml_matches_the_table() -> None:
    assert (ROOT / "k8s" / "rbac.yaml").read_text() == render_rbac_yaml()


def test_permissions_module_prints_the_manifest() -> None:
    result = subprocess.run([sys.executable, "-m", "server.permissions"], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0 and result.stdout == render_rbac_yaml()


def test_manifest_is_valid_kubernetes_and_grants_exactly_the_table() -> None:
    docs = [d for d in yaml.safe_load_all(render_rbac_yaml()) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    granted = {(g, r, v) for rule in roles[ROLE_NAME]["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    assert granted == {(p.group, p.resource, p.verb) for p in PERMISSIONS}
    read_only = {v for rule in roles[READONLY_ROLE_NAME]["rules"] for v in rule["verbs"]}
    assert read_only <= {"get", "list"}


def test_request_paths_map_to_rbac_verbs_and_resources() -> None:
    assert rbac_call("GET", "/apis/postgresql.cnpg.io/v1/namespaces/d/clusters") == (
        "list", "postgresql.cnpg.io", "clusters")
    assert rbac_call("PATCH", "/apis/postgresql.cnpg.io/v1/namespaces/d/clusters/pg/status") == (
        "patch", "postgresql.cnpg.io", "clusters/status")
    assert rbac_call("GET", "/api/v1/namespaces/d/pods/pg-1/log") == ("get", "", "pods/log")
    assert rbac_call("GET", "/apis/postgresql.cnpg.io/v1/clusters") == ("list", "postgresql.cnpg.io", "clusters")


def test_coverage_check_catches_an_undeclared_call() -> None:
    assert uncovered_calls([("GET", "/api/v1/namespaces/d/secrets", {}, "")]) == [("list", "", "secrets")]
    assert uncovered_calls([("DELETE", "/api/v1/namespaces/d/pods/pg-1", {}, "")]) == [("delete", "", "pods")]
    assert uncovered_calls([("GET", "/api/v1/namespaces/d/secrets/x", {}, "")]) == []
