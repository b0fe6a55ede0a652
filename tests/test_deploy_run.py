"""The deployment's commands, read from Dockerfile.*, compose.yaml and the rendered Kubernetes Deployment, run on
this machine: the server behind socat on a Unix socket, the gateway with --upstream-socket in pool mode as the
files configure it, the dev IdP and the sandbox cluster as compose starts them, and an MCP client's tool calls
through both with auth on. Many sessions then share at most POOL_MAX server processes, and the Kubernetes run
measures them against the containers' memory limits (docs/deploy.md, Sizing).

No container engine runs here, so what Docker and Kubernetes would provide is provided by hand and only that:
volumes become private temporary directories (the same directory for every container that mounts the same
volume), 0.0.0.0 becomes 127.0.0.1, container ports become free ports, and the image's programs are the venv's and
the project's Node. Everything else (programs, arguments, environment, socket path and mode) comes from the files.
In the Kubernetes run the server reaches the test Kubernetes API through a kubeconfig, because the in-cluster
loader needs the API server's TLS endpoint: test_deploy_kubernetes.py checks that the projected token is mounted
where that loader reads it. A secret volume holds what the kubelet would write from the Secret that the command in
docs/deploy.md makes (run with kubectl's --dry-run=client), so the gateway reads a real key file, and gateway
replicas started from the Deployment's environment open each other's MCP 2026-07-28 requestState.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

from tests.fixtures.gateway import RunningGateway, StartGateway, free_port
from tests.fixtures.idp import ISSUED_TOKENS, LOG_FILES, SECRETS, DevIdp
from tests.fixtures.idp import metric as parsed_metric
from tests.test_deploy_files import (
    IMAGE_PATHS,
    ROOT,
    compose,
    compose_environment,
    compose_volumes,
    container,
    created_secret,
    dockerfile_stages,
    effective_argv,
    final_stage,
    find,
    kustomize,
    localize_program,
    secret_volume_files,
    translate,
)
from tests.test_protocol_2026 import UPSTREAM, call, post
from tests.test_server_helpers import rbac_call

SOCKET_VOLUME = "/run/mcp"


@dataclass
class Stack:
    """Processes started from the deployment files, stopped (and reaped) at the end."""

    workdir: Path
    volumes: Path
    """Short, so socket paths stay under the 108 bytes a Unix socket address allows."""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    argv: dict[str, list[str]] = field(default_factory=dict)

    def volume(self, name: str) -> Path:
        path = self.volumes / name.strip("/").replace("/", "_")
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.workdir / f"{name}.log"
        LOG_FILES.append(log)
        full_env = {"PATH": os.environ["PATH"], "HOME": str(self.workdir), **env}
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,
            )
        self.processes[name], self.argv[name] = proc, argv
        return proc

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def wait_for(self, name: str, ready: Any, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if self.processes[name].poll() is not None:
                raise AssertionError(f"{name} exited ({self.processes[name].returncode}): {self.log(name)}")
            time.sleep(0.05)
        raise AssertionError(f"{name}: no {what} after {timeout} s: {self.log(name)}")

    def stop(self) -> None:
        for proc in reversed(list(self.processes.values())):
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=10)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    volumes = Path(tempfile.mkdtemp(prefix="cnpg-deploy-"))
    running = Stack(tmp_path, volumes)
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(volumes, ignore_errors=True)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def socket_accepts(path: Path) -> bool:
    if not path.is_socket():
        return False
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def client_credentials_token(token_url: str, client: str, secret: str, resource: str) -> str:
    basic = base64.b64encode(f"{client}:{secret}".encode()).decode()
    form = urllib.parse.urlencode(
        {"grant_type": "client_credentials", "scope": "openid cnpg:read cnpg:write", "resource": resource}
    ).encode()
    req = urllib.request.Request(token_url, data=form, headers={"Authorization": f"Basic {basic}"})
    with urllib.request.urlopen(req, timeout=15) as resp:
        token = str(json.loads(resp.read())["access_token"])
    ISSUED_TOKENS.add(token)
    return token


def text(result: CallToolResult) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


async def call_tools_through(mcp_url: str, token: str) -> None:
    """Anonymous requests are refused; with the token, a cluster is created and listed through gateway and server."""
    async with httpx2.AsyncClient(timeout=10.0) as anonymous:
        refused = await anonymous.post(
            mcp_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={"Accept": "application/json, text/event-stream"},
        )
    assert refused.status_code == 401 and "resource_metadata=" in refused.headers["www-authenticate"]
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30.0, read=60.0))
    async with http, Client(streamable_http_client(mcp_url, http_client=http)) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"list_clusters", "create_cluster"} <= tools
        created = await client.call_tool("create_cluster", {"name": "deployed", "instances": 1, "storage_size": "1Gi"})
        assert not created.is_error, text(created)
        listed = await client.call_tool("list_clusters", {})
        assert not listed.is_error and "deployed" in text(listed), text(listed)


def assert_socket_private(path: Path) -> None:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, oct(path.stat().st_mode)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError(pid)


def pooled_connections(listener: int) -> list[tuple[int, int]]:
    """(socat child, cnpg-mcp-server) pairs below the socat listener: socat's fork makes one child per connection,
    and that child starts the server (EXEC)."""
    pairs = []
    for fork, _ in children_of(listener):
        servers = [pid for pid, cmd in children_of(fork) if "cnpg-mcp-server" in cmd]
        assert len(servers) <= 1, servers
        pairs += [(fork, server) for server in servers]
    return pairs


def children_of(pid: int) -> list[tuple[int, str]]:
    return [(child, cmd) for child, cmd in descendants(pid) if parent_of(child) == pid]


def parent_of(pid: int) -> int:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(raw[raw.rindex(")") + 2 :].split()[1])


async def open_sessions(mcp_url: str, token: str, count: int) -> list[str]:
    """`count` MCP sessions (initialize, notifications/initialized) left open, as clients that never DELETE."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "sizing", "version": "1"},
        },
    }
    sessions = []
    async with httpx2.AsyncClient(headers=headers, timeout=30.0) as http:
        for _ in range(count):
            answer = await http.post(mcp_url, json=init)
            assert answer.status_code == 200, answer.text
            sid = answer.headers["mcp-session-id"]
            done = await http.post(
                mcp_url,
                json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                headers={"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"},
            )
            assert done.status_code == 202, done.text
            sessions.append(sid)
    return sessions


def metric(metrics_url: str, name: str, **labels: str) -> float:
    """One sample of a live /metrics page (the sum of those with `labels`), parsed with prometheus_client."""
    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        return parsed_metric(resp.read().decode(), name, **labels)


async def assert_sessions_share_the_pool(
    mcp_url: str, metrics_url: str, token: str, listener: int, config: dict[str, str], count: int
) -> list[tuple[int, int]]:
    """Pool mode as configured: `count` more open sessions than POOL_MAX start no server process of their own."""
    assert config["UPSTREAM_MODE"] == "pool"
    pool_min, pool_max = int(config["POOL_MIN"]), int(config["POOL_MAX"])
    assert count > pool_max
    before = metric(metrics_url, "mcp_gateway_sessions_active")
    await open_sessions(mcp_url, token, count)
    assert metric(metrics_url, "mcp_gateway_sessions_active") == before + count
    pairs = pooled_connections(listener)
    session_processes = metric(metrics_url, "mcp_gateway_pool_processes", partition="session")
    assert pool_min <= session_processes <= pool_max, (pairs, pool_min, pool_max)
    # Besides the session pool, one connection serves the MCP 2026-07-28 partition: the SDK client that called a
    # tool before (auto mode) spoke 2026-07-28, and that partition started one process for it.
    assert metric(metrics_url, "mcp_gateway_pool_processes", partition="stateless") == 1
    assert len(pairs) == session_processes + 1, (pairs, session_processes)
    return pairs


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process below pid."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(raw[raw.rindex(")") + 2 :].split()[1])
    found, frontier = [], {pid}
    while frontier:
        children = {p for p, parent in parents.items() if parent in frontier}
        for child in children:
            try:
                found.append((child, Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()))
            except OSError:
                continue
        frontier = children
    return found


# Compose ------------------------------------------------------------------------------------------------------


async def test_compose_services_run_as_written_and_serve_a_tool_call_with_auth(stack: Stack) -> None:
    gateway_port, idp_port = free_port(), free_port()
    secret = secrets.token_urlsafe(24)
    SECRETS.add(secret)
    env_file = {
        "GATEWAY_PORT": str(gateway_port),
        "IDP_PORT": str(idp_port),
        "DEV_CLIENTS": f"cnpg-dev:{secret}",
        "GRAFANA_ADMIN_PASSWORD": "unused",
    }
    services = compose(env_file)["services"]

    # Named volumes: one directory each, shared by every service that mounts it.
    mounts: dict[str, dict[str, str]] = {}
    for name in ("sandbox", "server", "gateway", "idp"):
        mounts[name] = {target: str(stack.volume(source)) for target, source in compose_volumes(services[name]).items()}
    assert mounts["server"][SOCKET_VOLUME] == mounts["gateway"][SOCKET_VOLUME]
    assert mounts["server"]["/kube"] == mounts["sandbox"]["/kube"], "without KUBECONFIG_DIR the sandbox's kubeconfig"

    # sandbox: the image's sandbox target with compose's command; its --host is the service name.
    sandbox = dockerfile_stages("Dockerfile.server")["sandbox"]
    argv = effective_argv(sandbox, command=services["sandbox"]["command"])
    argv = [{"sandbox": "127.0.0.1", "8080": str(free_port())}.get(a, a) for a in argv]
    stack.start("sandbox", localize_program(translate(argv, mounts["sandbox"])), {})
    kubeconfig = Path(mounts["sandbox"]["/kube"]) / "config"
    stack.wait_for("sandbox", lambda: kubeconfig.exists() and kubeconfig.stat().st_size > 0, "kubeconfig")

    # server: the image's entrypoint (socat ... EXEC:cnpg-mcp-server) with compose's environment.
    server = final_stage("Dockerfile.server")
    assert "command" not in services["server"] and "entrypoint" not in services["server"]
    server_env = compose_environment(services["server"])
    assert server_env["KUBECONFIG"] == "/kube/config"
    argv = translate(effective_argv(server), mounts["server"])
    server_env = translate_env({**server.env, **server_env}, {**mounts["server"], **IMAGE_PATHS})
    stack.start("server", argv, server_env)
    sock = Path(mounts["server"][SOCKET_VOLUME]) / "mcp.sock"
    stack.wait_for("server", lambda: socket_accepts(sock), "socket")
    assert_socket_private(sock)

    # idp: the image's entrypoint with compose's command; the clients file is the compose secret from .env.
    idp_service = services["idp"]
    secret_name = idp_service["secrets"][0]
    secret_source = compose(env_file)["secrets"][secret_name]["environment"]
    secrets_dir = stack.volume("run-secrets")
    (secrets_dir / secret_name).write_text(env_file[secret_source] + "\n")
    idp_mounts = {**mounts["idp"], "/run/secrets": str(secrets_dir), "/app/devidp": str(ROOT / "devidp")}
    argv = effective_argv(final_stage("Dockerfile.idp"), command=idp_service["command"])
    argv = [{"0.0.0.0": "127.0.0.1"}.get(a, a) for a in argv]
    stack.start("idp", localize_program(translate(argv, idp_mounts)), compose_environment(idp_service))
    issuer = f"http://127.0.0.1:{idp_port}"
    stack.wait_for("idp", lambda: http_ok(f"{issuer}/.well-known/openid-configuration"), "discovery")

    # gateway: the image's entrypoint and environment, compose's command and environment.
    gateway_stage = final_stage("Dockerfile.gateway")
    gateway_env = translate_env({**gateway_stage.env, **compose_environment(services["gateway"])}, IMAGE_PATHS)
    assert gateway_env["OIDC_ISSUER"] == issuer
    published = {p.split(":")[-1]: p.split(":")[1] for p in services["gateway"]["ports"]}
    assert all(p.startswith("127.0.0.1:") for p in services["gateway"]["ports"])
    gateway_env.update(
        HOST="127.0.0.1", METRICS_HOST="127.0.0.1", PORT=published[gateway_env["PORT"]], METRICS_PORT=str(free_port())
    )
    argv = translate(effective_argv(gateway_stage, command=services["gateway"]["command"]), mounts["gateway"])
    assert argv[1:] == ["--upstream-socket", str(sock)]
    stack.start("gateway", localize_program(argv), gateway_env)
    base = f"http://127.0.0.1:{gateway_port}"
    stack.wait_for("gateway", lambda: http_ok(f"{base}/ready"), "/ready (keys loaded)")

    client_id, client_secret = env_file["DEV_CLIENTS"].split(":", 1)
    token = client_credentials_token(f"{issuer}/token", client_id, client_secret, gateway_env["OIDC_AUDIENCE"])
    await call_tools_through(f"{base}/mcp", token)
    assert "Created Cluster" in stack.log("sandbox") or "deployed" in stack.log("sandbox")
    metrics_url = f"http://127.0.0.1:{gateway_env['METRICS_PORT']}/metrics"
    await assert_sessions_share_the_pool(
        f"{base}/mcp", metrics_url, token, stack.processes["server"].pid, gateway_env, int(gateway_env["POOL_MAX"]) + 4
    )
    every_argv = " ".join(" ".join(a) for a in stack.argv.values())
    assert secret not in every_argv and token not in every_argv


def translate_env(env: dict[str, str], mounts: dict[str, str]) -> dict[str, str]:
    return dict(zip(env, translate(list(env.values()), mounts), strict=True))


# Kubernetes ---------------------------------------------------------------------------------------------------


def created_secrets(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every Secret the pod's volumes name, as the command docs/deploy.md gives for it makes it."""
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    return {name: created_secret(name) for name in {v["secret"]["secretName"] for v in volumes if "secret" in v}}


def secret_values(secrets: dict[str, dict[str, Any]]) -> set[str]:
    """Every value the Secrets hold, as text: none may reach a command line or a log."""
    return {base64.b64decode(v).decode().strip() for s in secrets.values() for v in s.get("data", {}).values()}


def pod_mounts(
    stack: Stack, deployment: dict[str, Any], name: str, secrets: dict[str, dict[str, Any]], pod: str = "pod"
) -> dict[str, str]:
    """{mount path: directory here} of container `name` in one pod. emptyDir and projected volumes are directories
    of that pod; a secret volume holds the files the kubelet writes from `secrets`, with the volume's mode."""
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    out = {}
    for mount in container(deployment, name).get("volumeMounts", []):
        volume = volumes[mount["name"]]
        directory = stack.volume(f"{pod}-{mount['name']}")
        if "secret" in volume:
            for path, content in secret_volume_files(volume, secrets).items():
                target = directory / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.unlink(missing_ok=True)
                target.write_bytes(content)
                target.chmod(volume["secret"].get("defaultMode", 0o644))
        else:
            assert "emptyDir" in volume or "projected" in volume, volume
        out[mount["mountPath"]] = str(directory)
    return out


def container_env(docs: list[dict[str, Any]], deployment: dict[str, Any], name: str) -> dict[str, str]:
    """Container `name`'s environment as rendered: its ConfigMaps (envFrom), then its own `env` entries."""
    env: dict[str, str] = {}
    for source in container(deployment, name).get("envFrom", []):
        if "configMapRef" in source:
            env.update(find(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container(deployment, name).get("env", []):
        env[item["name"]] = item["value"]
    return env


async def test_kubernetes_pod_containers_run_as_rendered_and_serve_a_tool_call_with_auth(
    stack: Stack, idp: DevIdp, kube_api: Any
) -> None:
    docs = kustomize("k8s/base")
    deployment = find(docs, "Deployment", "cnpg-mcp")
    pod = deployment["spec"]["template"]["spec"]
    secrets = created_secrets(deployment)

    # server container: no command or args, so the image's entrypoint.
    server_spec = container(deployment, "server")
    server_stage = final_stage("Dockerfile.server")
    argv = effective_argv(server_stage, entrypoint=server_spec.get("command"), command=server_spec.get("args"))
    server_mounts = pod_mounts(stack, deployment, "server", secrets)
    server_env = translate_env({**server_stage.env, **container_env(docs, deployment, "server")}, IMAGE_PATHS)
    server_env.update(KUBECONFIG=str(kube_api.kubeconfig_path), CNPG_KUBE_CONTEXT="test")
    server_proc = stack.start("server", translate(argv, server_mounts), server_env)
    sock = Path(server_mounts[SOCKET_VOLUME]) / "mcp.sock"
    stack.wait_for("server", lambda: socket_accepts(sock), "socket")
    assert_socket_private(sock)

    # gateway container: the image's entrypoint with the Deployment's args, the ConfigMap's and its own environment
    # (REQUEST_STATE_KEY_FILE in its Secret volume); the OIDC values that name the example IdP and host point at the
    # dev IdP and this machine instead.
    gateway_spec = container(deployment, "gateway")
    gateway_stage = final_stage("Dockerfile.gateway")
    argv = effective_argv(gateway_stage, entrypoint=gateway_spec.get("command"), command=gateway_spec.get("args"))
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    gateway_mounts = pod_mounts(stack, deployment, "gateway", secrets)
    gateway_env = translate_env(
        {**gateway_stage.env, **container_env(docs, deployment, "gateway")}, {**IMAGE_PATHS, **gateway_mounts}
    )
    metrics_port = free_port()
    gateway_env.update(
        OIDC_ISSUER=idp.issuer,
        OIDC_AUDIENCE=f"{public}/mcp",
        PUBLIC_URL=public,
        HOST="127.0.0.1",
        METRICS_HOST="127.0.0.1",
        PORT=str(port),
        METRICS_PORT=str(metrics_port),
    )
    gateway_env = {k: v for k, v in gateway_env.items() if v != ""}
    argv = translate(argv, gateway_mounts)
    assert argv[1:] == ["--upstream-socket", str(sock)]
    gateway_proc = stack.start("gateway", localize_program(argv), gateway_env)
    probes = {gateway_spec["livenessProbe"]["httpGet"]["path"], gateway_spec["readinessProbe"]["httpGet"]["path"]}
    stack.wait_for("gateway", lambda: all(http_ok(public + p) for p in probes), f"probes {probes}")
    assert "request_state_key_ephemeral" not in stack.log("gateway"), "the gateway read the Secret's key"

    kube_api.clear_requests()
    token = idp.token(resource=f"{public}/mcp")
    await call_tools_through(f"{public}/mcp", token)

    # RBAC: every Kubernetes call the server made is granted by the rendered role, bound to the pod's account.
    role = find(docs, "ClusterRole", "cnpg-mcp-server")
    granted = {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }
    calls = {rbac_call(req.method, req.path) for req in kube_api.requests}
    assert calls and {(g, r, v) for v, g, r in calls} <= granted, calls
    binding = find(docs, "RoleBinding", "cnpg-mcp-server")
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]

    # Pool mode as the ConfigMap sets it, and sizing (docs/deploy.md): with SIZING_SESSIONS open sessions (far
    # more than POOL_MAX) the server container holds the socat listener plus at most POOL_MAX connections, each a
    # socat child and a cnpg-mcp-server, and the gateway's growth per session, MAX_SESSIONS times over, fits its
    # memory request (half its limit; the other half is for answers buffered to slow readers). Both are measured
    # here, after tool calls, with auth on.
    config = container_env(docs, deployment, "gateway")
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    gateway_idle = rss_mib(gateway_proc.pid)
    pairs = await assert_sessions_share_the_pool(
        f"{public}/mcp", metrics_url, token, server_proc.pid, config, SIZING_SESSIONS
    )
    await asyncio.sleep(1)
    gateway_loaded = rss_mib(gateway_proc.pid)
    per_connection = max(rss_mib(fork) + rss_mib(server) for fork, server in pairs)
    server_need = rss_mib(server_proc.pid) + int(config["POOL_MAX"]) * per_connection
    assert server_need <= mebibytes(server_spec["resources"]["limits"]["memory"]), (server_need, per_connection)
    per_session = max(0.0, gateway_loaded - gateway_idle) / SIZING_SESSIONS
    gateway_need = gateway_idle + int(config["MAX_SESSIONS"]) * per_session
    gateway_request = mebibytes(gateway_spec["resources"]["requests"]["memory"])
    assert gateway_need <= gateway_request, (gateway_idle, per_session, gateway_request)
    assert 2 * gateway_request <= mebibytes(gateway_spec["resources"]["limits"]["memory"])
    # The memory request is the limit for the server (never scheduled where POOL_MAX processes do not fit).
    assert server_spec["resources"]["requests"]["memory"] == server_spec["resources"]["limits"]["memory"]
    # The requestState key stays in its file: on no command line and in no log.
    every_argv = " ".join(" ".join(a) for a in stack.argv.values())
    for key in secret_values(secrets):
        assert all(key not in text for text in (every_argv, stack.log("gateway"), stack.log("server")))


SIZING_SESSIONS = 200
"""Sessions opened to measure the gateway's memory per session: enough that the growth is above RSS noise."""


def mebibytes(quantity: str) -> float:
    units = {"Mi": 1.0, "Gi": 1024.0}
    return float(quantity[:-2]) * units[quantity[-2:]]


async def test_kubernetes_gateway_replicas_open_each_others_request_state_with_the_secret_they_share(
    stack: Stack, gateway_factory: StartGateway, idp: DevIdp
) -> None:
    """A 2026-07-28 client is not pinned to a pod: an input-required retry sealed by one replica lands on another.
    Each replica is a gateway process with the rendered Deployment's environment and its own copy of the one Secret
    volume; a third pod given a Secret from another run of the documented command refuses the state, so it is the
    shared Secret that makes the second replica accept it. cnpg-mcp-server sends no input-required results, so the
    replicas' upstream is the test server (tests/stdio_server.py, as in test_protocol_2026.py), whose processes
    share their own key for the state inside."""
    docs = kustomize("k8s/base")
    deployment = find(docs, "Deployment", "cnpg-mcp")
    assert deployment["spec"]["replicas"] >= 2
    shared = created_secrets(deployment)
    # The address the Ingress gives every replica: the audience and public URL they all share.
    public = f"http://127.0.0.1:{free_port()}"

    def replica(pod: str, secrets: dict[str, dict[str, Any]]) -> RunningGateway:
        mounts = pod_mounts(stack, deployment, "gateway", secrets, pod)
        env = translate_env(container_env(docs, deployment, "gateway"), mounts)
        env.update(OIDC_ISSUER=idp.issuer, OIDC_AUDIENCE=f"{public}/mcp", PUBLIC_URL=public)
        env = {k: v for k, v in env.items() if v != ""}
        upstream = {"UPSTREAM_COMMAND": UPSTREAM, "STDIO_SERVER_STATE_KEY": "the upstream processes' own key"}
        # POOL_MIN=0: the session partition, which 2026-07-28 requests never use, starts no process (six fewer
        # process starts for this test); the 2026-07-28 partition starts on demand whatever POOL_MIN says.
        gateway = gateway_factory(env={**env, **upstream, "POOL_MIN": "0"})
        LOG_FILES.append(gateway.log_path)
        return gateway

    first, second = replica("replica-1", shared), replica("replica-2", shared)
    stranger = replica("other-secret", created_secrets(deployment))
    token = idp.token(resource=f"{public}/mcp")
    status, asked = await post(first.mcp_url, call("test_input_required_result_request_state"), token)
    assert status == 200 and asked["result"]["resultType"] == "input_required", asked
    responses = {"confirm": {"action": "accept", "content": {"ok": True}}}
    retry = call(
        "test_input_required_result_request_state",
        2,
        inputResponses=responses,
        requestState=asked["result"]["requestState"],
    )
    status, refused = await post(stranger.mcp_url, retry, token)
    assert (status, refused["error"]["code"]) == (400, -32602), refused
    status, answered = await post(second.mcp_url, retry, token)
    assert status == 200 and "state-ok" in answered["result"]["content"][0]["text"], answered
    keys = secret_values(shared)
    for gateway in (first, second, stranger):
        log = gateway.logs()
        assert "request_state_key_ephemeral" not in log and not any(key in log for key in keys)
