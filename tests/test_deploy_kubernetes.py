"""k8s/: the kustomize base and the example overlay, rendered by kubectl's kustomize and checked as a cluster and
a security review would: Kubernetes schemas, the Prometheus Operator CRDs' schemas, checkov, and the properties
the deployment promises (Kubernetes credentials only in the server container, the requestState key only in the
gateway's, from one Secret the user creates with the documented command; hardening, probes, grace, RBAC from the
permission table, monitoring objects equal to the files compose uses)."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes.config import incluster_config

from deploy.render_rbac import TARGET as BASE_RBAC
from deploy.render_rbac import render as render_base_rbac
from gateway.settings import secret_file
from server.permissions import PERMISSIONS, READ_VERBS, READONLY_ROLE_NAME, ROLE_NAME
from tests.test_deploy_files import BIN, ROOT, container, created_secret, find, kustomize, secret_volume_files

CRD_DIR = ROOT / "tests" / "data" / "prometheus-operator-crds"
KUBERNETES_VERSION = "1.30"
TREES = ["k8s/base", "k8s/overlays/example"]


@pytest.fixture(scope="module", params=TREES)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return kustomize(request.param)


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def test_every_object_is_valid_against_the_kubernetes_or_crd_schema(rendered: list[dict[str, Any]]) -> None:
    custom = crd_schemas()
    kinds = set()
    for doc in rendered:
        kinds.add(doc["kind"])
        key = (doc["apiVersion"], doc["kind"])
        if key in custom:
            crd_validate(doc, custom[key])
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert kinds == {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "RoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "Ingress",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PrometheusRule",
    }


def test_crd_schema_check_can_fail() -> None:
    monitor = find(kustomize("k8s/base"), "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["interval"] = "every minute"
    with pytest.raises(jsonschema.ValidationError):
        crd_validate(monitor, crd_schemas()[("monitoring.coreos.com/v1", "ServiceMonitor")])


def crd_validate(doc: dict[str, Any], schema: dict[str, Any]) -> None:
    """Validate against a CRD's openAPIV3Schema. Its patterns are Go regular expressions (some start with flags
    such as `(?i)` mid-pattern, which Python's re refuses), so the schema itself is not checked as a JSON Schema
    document; each pattern is compiled only when a value it applies to is present."""
    jsonschema.Draft7Validator(schema).validate(doc)


def test_checkov_passes_the_rendered_manifests_with_only_justified_skips(tmp_path: Path) -> None:
    for tree in TREES:
        result = subprocess.run(
            [str(BIN / "kubectl"), "kustomize", str(ROOT / tree)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        (tmp_path / (tree.replace("/", "_") + ".yaml")).write_text(result.stdout)
    report = checkov(["-d", str(tmp_path), "--framework", "kubernetes"])
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert report["summary"]["failed"] == 0, failed
    assert report["summary"]["passed"] > 100
    for check in report["results"]["skipped_checks"]:
        assert len(check["check_result"].get("suppress_comment", "")) > 40, check["check_id"]


def checkov(args: list[str]) -> dict[str, Any]:
    result = subprocess.run(
        [str(BIN / "checkov"), *args, "--output", "json", "--compact", "--skip-download"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(result.stdout)
    if isinstance(report, list):  # one report per framework
        report = report[0]
    found: dict[str, Any] = report
    return found


def test_pod_has_no_token_and_only_the_server_container_mounts_one(rendered: list[dict[str, Any]]) -> None:
    deployment = find(rendered, "Deployment", "cnpg-mcp")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    token_volumes = {
        v["name"]
        for v in pod["volumes"]
        if any("serviceAccountToken" in s for s in v.get("projected", {}).get("sources", []))
    }
    assert len(token_volumes) == 1
    where = {
        c["name"]: [m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] in token_volumes]
        for c in pod["containers"]
    }
    # The kubernetes client's in-cluster loader (which server/kube.py calls in a pod) reads exactly this path.
    token_dir = str(Path(incluster_config.SERVICE_TOKEN_FILENAME).parent)
    assert where == {"gateway": [], "server": [token_dir]}
    sources = next(v for v in pod["volumes"] if v["name"] in token_volumes)["projected"]["sources"]
    paths = {
        item["path"] for s in sources for item in (s.get("configMap") or s.get("downwardAPI") or {}).get("items", [])
    }
    paths |= {s["serviceAccountToken"]["path"] for s in sources if "serviceAccountToken" in s}
    assert {
        Path(incluster_config.SERVICE_TOKEN_FILENAME).name,
        Path(incluster_config.SERVICE_CERT_FILENAME).name,
        "namespace",
    } <= paths


def request_state_key(deployment: dict[str, Any]) -> tuple[PurePosixPath, dict[str, Any], dict[str, Any]]:
    """The file the gateway's REQUEST_STATE_KEY_FILE names, the gateway's volume mount it lies in, and its volume."""
    settings = {e["name"]: e for e in container(deployment, "gateway").get("env", [])}
    key_file = PurePosixPath(settings["REQUEST_STATE_KEY_FILE"]["value"])
    mounts = [m for m in container(deployment, "gateway")["volumeMounts"] if key_file.is_relative_to(m["mountPath"])]
    assert len(mounts) == 1, mounts
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    return key_file, mounts[0], volumes[mounts[0]["name"]]


def test_every_replica_reads_the_request_state_key_from_one_secret_mounted_in_the_gateway_only(
    rendered: list[dict[str, Any]],
) -> None:
    deployment = find(rendered, "Deployment", "cnpg-mcp")
    pod = deployment["spec"]["template"]["spec"]
    key_file, mount, volume = request_state_key(deployment)
    # Several replicas from one pod template, which names one Secret by a fixed name: every pod reads the same key.
    # The Secret is not rendered from the repository (no key in git); the user creates it (docs/deploy.md).
    assert deployment["spec"]["replicas"] >= 2
    source = volume["secret"]
    assert not [d for d in rendered if d["kind"] == "Secret"]
    # Not optional: without the Secret the pod does not start, rather than make a key of its own.
    assert source.get("optional", False) is False
    assert [item["path"] for item in source["items"]] == [str(key_file.relative_to(mount["mountPath"]))]
    assert mount.get("readOnly") is True and "subPath" not in mount
    # Read-only for root (the owner) and the pod's fsGroup, which is the gateway's group; nothing for others.
    assert stat.filemode(stat.S_IFREG | source["defaultMode"]) == "-r--r-----"
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    assert "runAsGroup" not in container(deployment, "gateway")["securityContext"]
    # The server container sees neither the key nor the setting.
    server = container(deployment, "server")
    assert mount["name"] not in {m["name"] for m in server["volumeMounts"]}
    assert "REQUEST_STATE_KEY_FILE" not in json.dumps(server)


def test_the_documented_command_makes_the_mounted_secret_with_a_new_random_key(tmp_path: Path) -> None:
    deployment = find(kustomize("k8s/base"), "Deployment", "cnpg-mcp")
    key_file, mount, volume = request_state_key(deployment)
    name = volume["secret"]["secretName"]
    first, second = created_secret(name), created_secret(name)
    assert first["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    files = [secret_volume_files(volume, {name: secret}) for secret in (first, second)]
    path = str(key_file.relative_to(mount["mountPath"]))
    assert set(files[0]) == {path}
    assert files[0][path] != files[1][path]
    # What the gateway checks at start (at least 16 bytes); the command makes 32 random bytes in base64.
    local = tmp_path / path
    local.write_bytes(files[0][path])
    assert secret_file(str(local)) == str(local)
    assert len(files[0][path].strip()) == 44


def test_both_containers_are_hardened_and_share_only_the_socket(rendered: list[dict[str, Any]]) -> None:
    deployment = find(rendered, "Deployment", "cnpg-mcp")
    pod = deployment["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["gateway", "server"]
    for item in pod["containers"]:
        ctx = item["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"]["drop"] == ["ALL"]
        assert ctx["seccompProfile"]["type"] == "RuntimeDefault"
        assert {"cpu", "memory"} <= set(item["resources"]["limits"]) and item["resources"]["requests"]
    mounts = [{m["name"] for m in c["volumeMounts"]} for c in pod["containers"]]
    shared = mounts[0] & mounts[1]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "mcp-socket" in shared and all("emptyDir" in volumes[n] for n in shared)


def test_probes_and_grace_outlast_the_gateway_drain(rendered: list[dict[str, Any]]) -> None:
    deployment = find(rendered, "Deployment", "cnpg-mcp")
    pod = deployment["spec"]["template"]["spec"]
    gateway, server = container(deployment, "gateway"), container(deployment, "server")
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    config = gateway_config(rendered)
    gateway_pause = float(gateway["lifecycle"]["preStop"]["exec"]["command"][-1].split("sleep(")[1].rstrip(")"))
    drain_ends = gateway_pause + float(config["SHUTDOWN_GRACE"])
    server_pause = float(server["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert drain_ends < server_pause < pod["terminationGracePeriodSeconds"]


def gateway_config(docs: list[dict[str, Any]]) -> dict[str, str]:
    deployment = find(docs, "Deployment", "cnpg-mcp")
    name = next(s["configMapRef"]["name"] for s in container(deployment, "gateway")["envFrom"] if "configMapRef" in s)
    data: dict[str, str] = find(docs, "ConfigMap", name)["data"]
    return data


def test_configmap_has_the_operator_facing_settings(rendered: list[dict[str, Any]]) -> None:
    config = gateway_config(rendered)
    assert {
        "OIDC_ISSUER",
        "OIDC_AUDIENCE",
        "OIDC_JWKS_URI",
        "DCR_PROXY_URL",
        "OIDC_SCOPE",
        "PUBLIC_URL",
        "TOOL_SCOPES",
    } <= set(config)
    assert config["OIDC_AUDIENCE"] == config["PUBLIC_URL"] + "/mcp"
    ingress = find(rendered, "Ingress")
    assert config["PUBLIC_URL"] == "https://" + ingress["spec"]["rules"][0]["host"]
    readme = (ROOT / "README.md").read_text()
    assert all(f"`{key}`" in readme for key in config), "every key is a documented setting"


def test_service_ingress_and_monitor_expose_the_right_ports(rendered: list[dict[str, Any]]) -> None:
    service = find(rendered, "Service")
    assert {(p["name"], p["port"]) for p in service["spec"]["ports"]} == {("http", 3000), ("metrics", 9464)}
    ingress = find(rendered, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert "cert-manager.io/cluster-issuer" in ingress["metadata"]["annotations"]
    assert ingress["spec"]["tls"][0]["hosts"] == [ingress["spec"]["rules"][0]["host"]]
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["name"] == "http"
    # Affinity: the key must be the same for a session's initialize (no Mcp-Session-Id yet) and its later requests.
    key = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/upstream-hash-by"]
    assert "mcp_session_id" not in key.lower() and "remote_addr" in key
    monitor = find(rendered, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    policy = find(rendered, "NetworkPolicy")
    assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} == {3000, 9464}
    assert find(rendered, "PodDisruptionBudget")["spec"]["selector"] == find(rendered, "Deployment")["spec"]["selector"]


def test_rbac_is_generated_from_the_permission_table_with_a_read_only_variant(rendered: list[dict[str, Any]]) -> None:
    assert BASE_RBAC.read_text() == render_base_rbac()
    roles = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "ClusterRole"}
    grants = {
        name: {
            (g, r, v)
            for rule in role["rules"]
            for g in rule["apiGroups"]
            for r in rule["resources"]
            for v in rule["verbs"]
        }
        for name, role in roles.items()
    }
    assert grants[ROLE_NAME] == {(p.group, p.resource, p.verb) for p in PERMISSIONS}
    assert grants[READONLY_ROLE_NAME] == {(p.group, p.resource, p.verb) for p in PERMISSIONS if p.verb in READ_VERBS}
    deployment = find(rendered, "Deployment")
    binding = find(rendered, "RoleBinding")
    account = find(rendered, "ServiceAccount")
    assert account["metadata"]["name"] == deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": deployment["metadata"]["namespace"],
        }
    ]


def test_overlay_binds_the_role_where_the_server_manages_clusters() -> None:
    docs = kustomize("k8s/overlays/example")
    server_config = find(
        docs,
        "ConfigMap",
        next(s["configMapRef"]["name"] for s in container(find(docs, "Deployment"), "server")["envFrom"]),
    )["data"]
    assert find(docs, "RoleBinding")["metadata"]["namespace"] == server_config["CNPG_NAMESPACES"]


def test_prometheus_rule_and_dashboard_are_the_files_compose_uses(rendered: list[dict[str, Any]]) -> None:
    rule = find(rendered, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((ROOT / "monitoring" / "alerts.yaml").read_text())
    dashboard = find(rendered, "ConfigMap", "cnpg-mcp-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"] == {"cnpg-mcp.json": (ROOT / "k8s" / "base" / "dashboards" / "cnpg-mcp.json").read_text()}


def test_sessions_alert_is_80_percent_of_max_sessions_in_the_configmap_and_compose() -> None:
    from tests.test_deploy_files import compose

    rules = yaml.safe_load((ROOT / "monitoring" / "alerts.yaml").read_text())["groups"][0]["rules"]
    expr = next(r["expr"] for r in rules if r["alert"] == "CnpgMcpSessionsNearMax")
    threshold = float(expr.split(">=")[1])
    compose_max = compose({"DEV_CLIENTS": "x:y", "GRAFANA_ADMIN_PASSWORD": "x"})["services"]["gateway"]["environment"]
    for max_sessions in (gateway_config(kustomize("k8s/base"))["MAX_SESSIONS"], compose_max["MAX_SESSIONS"]):
        assert threshold == 0.8 * int(max_sessions)


POOL_SETTINGS = ("UPSTREAM_MODE", "POOL_MIN", "POOL_MAX", "POOL_IDLE_TIMEOUT", "POOL_QUEUE_TIMEOUT", "MAX_SESSIONS")


def test_compose_and_start_http_run_the_gateway_in_pool_mode_as_the_configmap_does() -> None:
    import re

    from tests.test_deploy_files import compose

    configmap = {k: v for k, v in gateway_config(kustomize("k8s/base")).items() if k in POOL_SETTINGS}
    assert configmap["UPSTREAM_MODE"] == "pool" and set(configmap) == set(POOL_SETTINGS)
    assert 1 <= int(configmap["POOL_MIN"]) <= int(configmap["POOL_MAX"]) < int(configmap["MAX_SESSIONS"])
    env = compose({"DEV_CLIENTS": "x:y", "GRAFANA_ADMIN_PASSWORD": "x"})["services"]["gateway"]["environment"]
    assert {k: v for k, v in env.items() if k in POOL_SETTINGS} == configmap
    # start-http.sh's defaults (the rest are the gateway's own defaults, which the ConfigMap repeats).
    script = (ROOT / "scripts" / "start-http.sh").read_text()
    defaults = dict(re.findall(r"\b(\w+)=\$\{\1:-([^}]*)\}", script))
    assert {k: defaults[k] for k in ("UPSTREAM_MODE", "POOL_MIN", "POOL_MAX", "MAX_SESSIONS")} == {
        k: configmap[k] for k in ("UPSTREAM_MODE", "POOL_MIN", "POOL_MAX", "MAX_SESSIONS")
    }
