"""Prometheus for real (Debian's prometheus and promtool): the alert rules check and pass their unit tests, a real
Prometheus configured from compose's prometheus.yml scrapes a running gateway (in pool mode, as the deployment runs
it) and answers the auth-failure rate by reason after bad tokens and the pool's size, and every metric the rules
and the dashboard name is one the gateway exports."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from tests.fixtures.gateway import free_port
from tests.fixtures.idp import LOG_FILES, DevIdp, Minter
from tests.test_deploy_files import ROOT

MONITORING = ROOT / "monitoring"
DASHBOARD = ROOT / "k8s" / "base" / "dashboards" / "cnpg-mcp.json"
# PromQL words that are not metric names.
PROMQL_WORDS = {"sum", "by", "rate", "increase", "max", "min", "and", "or", "unless", "on", "histogram_quantile",
                "le", "label_values", "job", "instance", "reason", "result", "outcome", "tool", "mcp_method",
                "status", "cached", "humanize", "value", "labels", "kind"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, check=False)


def test_alert_rules_are_valid() -> None:
    result = promtool("check", "rules", str(MONITORING / "alerts.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_on_its_pattern_and_stays_quiet_on_normal_traffic() -> None:
    result = promtool("test", "rules", str(MONITORING / "alerts_test.yaml"))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
    alerts = {r["alert"] for g in yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"]
              for r in g["rules"]}
    tests = yaml.safe_load((MONITORING / "alerts_test.yaml").read_text())["tests"]
    fired = {c["alertname"] for t in tests for c in t["alert_rule_test"] if c["exp_alerts"]}
    quiet = {c["alertname"] for c in tests[0]["alert_rule_test"] if not c["exp_alerts"]}
    assert fired == alerts and quiet == alerts


def test_rule_unit_tests_can_fail(tmp_path: Path) -> None:
    rules = (MONITORING / "alerts.yaml").read_text().replace(") > 0.2", ") > 5")
    (tmp_path / "alerts.yaml").write_text(rules)
    (tmp_path / "alerts_test.yaml").write_text((MONITORING / "alerts_test.yaml").read_text())
    assert promtool("test", "rules", str(tmp_path / "alerts_test.yaml")).returncode != 0


def expressions() -> list[str]:
    rules = [r["expr"] for g in yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"]
             for r in g["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    variables = [v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)]
    return rules + panels + variables


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    return {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)
            if w not in PROMQL_WORDS and not w.startswith("$") and not re.fullmatch(r"\d+\w*", w)}


def exported(metrics_text: str) -> set[str]:
    """Sample names in the exposition, including those of metrics declared (# TYPE) but not yet observed."""
    names = {line.split("{")[0].split()[0] for line in metrics_text.splitlines() if line and not line.startswith("#")}
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            suffixes = {"histogram": ["_bucket", "_sum", "_count"], "summary": ["_sum", "_count"]}.get(kind, [""])
            names |= {name + suffix for suffix in suffixes}
    return names


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


def query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Any:
    """Start the real Prometheus with compose's prometheus.yml pointed at a local gateway's metrics port."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(metrics_port: int) -> str:
        config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(MONITORING / "alerts.yaml")]
        config["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{metrics_port}"]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = tmp_path / "prometheus.log"
        LOG_FILES.append(log)
        with log.open("wb") as out:
            procs.append(subprocess.Popen(
                ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/-/ready")
        return base

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=30)


async def test_real_prometheus_scrapes_the_gateway_and_sees_auth_failures_by_reason(
    gateway_factory: Any, idp: DevIdp, prometheus_for: Any
) -> None:
    # Pool mode, as compose.yaml and k8s/base/gateway.env run the gateway, so the pool's series exist.
    gw = gateway_factory(env={"OIDC_ISSUER": idp.issuer, "OIDC_AUDIENCE": "https://cnpg-mcp.test/mcp",
                              "UPSTREAM_MODE": "pool", "POOL_MIN": "2", "POOL_MAX": "4"})
    async with httpx2.AsyncClient(timeout=10.0) as http:
        live = (await http.get(gw.metrics_url)).text
    used = set().union(*(metric_names(e) for e in expressions()))
    assert {"mcp_gateway_pool_processes", "mcp_gateway_pool_rejected_total",
            "mcp_gateway_pool_process_exits_total", "mcp_gateway_pool_queue_wait_seconds_sum"} <= used
    missing = {name for name in used if name not in exported(live)}
    assert not missing, f"rules or dashboard name metrics the gateway does not export: {missing}"

    base = prometheus_for(gw.metrics_port)
    minter = Minter(idp)
    bad = {"bad_signature": minter.forged_with_kid(), "invalid_audience": minter.signed(aud="https://elsewhere/mcp"),
           "expired": minter.signed(exp=int(time.time()) - 3600)}
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    deadline = time.monotonic() + 40
    promql = 'sum by (reason) (rate(mcp_gateway_auth_results_total{result="failure"}[10s]))'
    seen: dict[str, float] = {}
    async with httpx2.AsyncClient(timeout=10.0) as http:
        while time.monotonic() < deadline:
            for token in bad.values():
                auth = {**headers, "Authorization": f"Bearer {token}"}
                answer = await http.post(gw.mcp_url, json=body, headers=auth)
                assert answer.status_code == 401
            seen = {r["metric"]["reason"]: float(r["value"][1]) for r in query(base, promql)}
            if all(seen.get(reason, 0) > 0 for reason in bad):
                break
            await asyncio.sleep(0.5)
    assert all(seen.get(reason, 0) > 0 for reason in bad), seen
    assert query(base, 'up{job="cnpg-mcp-gateway"}')[0]["value"][1] == "1"
    # The Pool processes panel's query: the gateway's POOL_MIN processes, scraped.
    pool = query(base, 'sum by (instance) (mcp_gateway_pool_processes{job=~".+"})')
    assert pool and float(pool[0]["value"][1]) == 2, pool
