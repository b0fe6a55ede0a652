"""compose.yaml: valid against the Compose Specification schema, ports on 127.0.0.1 only, metrics internal,
start order by health, the dev client's secret from .env (never in a command), the monitoring files mounted."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import yaml

from tests.test_deploy_files import ROOT, compose, compose_raw, compose_volumes, final_stage

SCHEMA = ROOT / "tests" / "data" / "compose-spec" / "compose-spec.json"
ENV = {"DEV_CLIENTS": "cnpg-dev:x", "GRAFANA_ADMIN_PASSWORD": "x"}


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(compose(ENV))


def test_schema_check_can_fail() -> None:
    broken = compose(ENV)
    broken["services"]["gateway"]["depends_on"]["server"]["condition"] = "service_ready"
    try:
        jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(broken)
    except jsonschema.ValidationError:
        return
    raise AssertionError("an unknown depends_on condition passed")


def test_every_published_port_is_on_loopback_and_metrics_are_not_published() -> None:
    services = compose(ENV)["services"]
    published = [(name, port) for name, svc in services.items() for port in svc.get("ports", [])]
    assert published and all(port.startswith("127.0.0.1:") for _, port in published)
    assert not any(port.endswith(":9464") for _, port in published)
    assert "9464" in services["gateway"]["expose"]


def test_services_start_in_order_of_health() -> None:
    services = compose(ENV)["services"]
    order = {
        "server": "sandbox",
        "gateway": "server",
        "idp": "gateway",
        "prometheus": "gateway",
        "grafana": "prometheus",
    }
    for service, dependency in order.items():
        assert services[service]["depends_on"][dependency]["condition"] == "service_healthy"
        has_check = "healthcheck" in services[dependency] or final_stage("Dockerfile.gateway").healthcheck
        assert has_check, dependency


def test_the_dev_client_secret_comes_from_the_env_file_and_never_from_a_command() -> None:
    raw = compose_raw()
    assert raw["secrets"]["dev_clients"] == {"environment": "DEV_CLIENTS"}
    assert "dev_clients" in raw["services"]["idp"]["secrets"]
    assert "DEV_CLIENTS" not in json.dumps({k: v.get("command") for k, v in raw["services"].items()})
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert example["DEV_CLIENTS"].startswith("cnpg-dev:replace")
    ignored = subprocess.run(["git", "check-ignore", ".env"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert ignored.returncode == 0, ".env must be git-ignored"


def test_one_gateway_runs_so_no_request_state_key_needs_sharing() -> None:
    # docs/deploy.md: compose sets no REQUEST_STATE_KEY_FILE because one gateway serves every request, so each
    # requestState comes back to the gateway that sealed it. Several gateways would need one shared key file.
    gateway = compose(ENV)["services"]["gateway"]
    assert gateway.get("scale", 1) == 1 and gateway.get("deploy", {}).get("replicas", 1) == 1


def test_the_server_reads_a_host_kubeconfig_read_only_or_the_sandbox() -> None:
    sandbox = compose_volumes(compose(ENV)["services"]["server"])
    assert sandbox["/kube"] == "sandbox-kubeconfig:ro".split(":")[0]
    mine = compose({**ENV, "KUBECONFIG_DIR": "/home/me/.kube"})["services"]["server"]
    assert "/home/me/.kube:/kube:ro" in mine["volumes"]


def test_prometheus_config_is_valid_and_loads_the_alert_rules(tmp_path: Path) -> None:
    prometheus = compose(ENV)["services"]["prometheus"]
    mounts = {t: s for t, s in compose_volumes(prometheus).items()}
    config = yaml.safe_load((ROOT / mounts["/etc/prometheus/prometheus.yml"]).read_text())
    local = {target: str(ROOT / source) for target, source in mounts.items() if source.startswith("./")}
    config["rule_files"] = [local[f] for f in config["rule_files"]]
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["gateway:9464"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and "SUCCESS" in result.stdout + result.stderr, result.stdout + result.stderr


def test_grafana_gets_the_datasource_and_the_dashboard_the_cluster_gets() -> None:
    grafana = compose(ENV)["services"]["grafana"]
    mounts = compose_volumes(grafana)
    provider = yaml.safe_load((ROOT / mounts["/etc/grafana/provisioning/dashboards/cnpg-mcp.yaml"]).read_text())
    folder = provider["providers"][0]["options"]["path"]
    assert (ROOT / mounts[folder] / "cnpg-mcp.json").is_file()
    assert mounts[folder] == "./k8s/base/dashboards"
    datasource = yaml.safe_load((ROOT / mounts["/etc/grafana/provisioning/datasources/cnpg-mcp.yaml"]).read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
