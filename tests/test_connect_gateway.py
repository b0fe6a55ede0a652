"""cnpg-mcp-connect against the real dev IdP and the real gateway, with tokens that live 3 seconds.

Each long test keeps one client working across four token lifetimes: over stdio with client_credentials (asking
for too few scopes first, so the gateway's 403 insufficient_scope makes it step up), through the --listen proxy,
and with the authorization-code flow run headless (the dev IdP approves by itself); and an authorization-code
client whose cached, unexpired token the gateway refuses renews it with the refresh token instead of signing in
again. Those clients share one IdP and one gateway and run at the same time (fixture `clients`), as several users
would, so their waits for tokens to expire overlap; each test then checks its own client. Logs must hold no secret
or token.

Without auth, against a gateway that restarts, a client on stdio keeps working on a new session and never sees an
error; a request's SSE stream the gateway closes early is resumed with Last-Event-ID, nothing lost or repeated.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.conformance_client_driver import StdioClient
from tests.fixtures.gateway import ECHO_UPSTREAM, RunningGateway, StartGateway, free_port
from tests.fixtures.idp import IDP_SCRIPT, NODE, start_gateway

pytestmark = pytest.mark.timeout(120)
TTL = 3
ROOT = Path(__file__).resolve().parent.parent
INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}


@dataclass
class ShortLivedIdp:
    issuer: str
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def short_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShortLivedIdp]:
    """The dev IdP issuing access tokens that live TTL seconds."""
    tmp_path = tmp_path_factory.mktemp("idp")
    port = free_port()
    ready = tmp_path / "idp-ready.json"
    with ready.open("wb") as out, (tmp_path / "idp.log").open("wb") as log:
        process = subprocess.Popen(
            [str(NODE), str(IDP_SCRIPT), "--port", str(port), "--ttl", str(TTL), "--resource", "http://127.0.0.1:*",
             "--keys-file", str(tmp_path / "keys.json")],
            stdout=out, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while not ready.read_text().endswith("\n"):
        assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "idp.log").read_text()
        time.sleep(0.05)
    try:
        yield ShortLivedIdp(json.loads(ready.read_text())["issuer"], process)
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def auth_gateway(short_idp: ShortLivedIdp, module_gateway_factory: StartGateway) -> RunningGateway:
    gateway: RunningGateway = start_gateway(module_gateway_factory, short_idp)  # type: ignore[arg-type]
    return gateway


def register(idp: ShortLivedIdp, **metadata: Any) -> dict[str, Any]:
    doc = {"grant_types": ["client_credentials"], "response_types": [], "redirect_uris": [], **metadata}
    response = httpx2.post(f"{idp.issuer}/reg", json=doc, timeout=15)
    assert response.status_code == 201, response.text
    return dict(response.json())


def helper_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_")}
    env.update({"MCP_LOG_LEVEL": "info", "MCP_REFRESH_MARGIN": "1", **settings})
    return env


def client_credentials_env(idp: ShortLivedIdp, tmp_path: Path, **settings: str) -> tuple[dict[str, str], str]:
    client = register(idp)
    secret_file = tmp_path / "secret"
    secret_file.write_text(client["client_secret"])
    env = helper_env(MCP_CLIENT_ID=client["client_id"], MCP_CLIENT_SECRET_FILE=str(secret_file), **settings)
    return env, str(client["client_secret"])


Call = Callable[[str], Awaitable[str]]


async def echo_over_time(call: Call, rounds: int = 4) -> None:
    """Echo calls TTL apart, so each one falls in a new token lifetime."""
    for n in range(rounds):
        if n:
            await asyncio.sleep(TTL)
        text = await call(f"round {n}")
        assert text == f"round {n}"


def assert_no_secret(log: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in log
    assert "eyJ" not in log, "a JWT reached the helper's log"


async def run_stdio(
    env: dict[str, str], url: str, stderr_path: Path, script: Callable[[StdioClient, Call], Awaitable[None]]
) -> StdioClient:
    """Start `python -m connect --url URL` on stdio, initialize, run `script`, close stdin; it must exit 0."""
    with stderr_path.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "connect", "--url", url, env=env, cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
        )  # fmt: skip
    client = StdioClient(process)
    try:
        await client.request("initialize", INIT)
        await client.notify("notifications/initialized")

        async def call(text: str) -> str:
            result = await client.request("tools/call", {"name": "echo", "arguments": {"text": text}})
            return str(result["content"][0]["text"])

        await script(client, call)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        await asyncio.wait_for(process.wait(), 15)
        client.reader.cancel()
    assert process.returncode == 0, f"the helper exited with {process.returncode}; its log: {stderr_path}"
    return client


async def over_time(client: StdioClient, call: Call) -> None:
    await echo_over_time(call)


async def once(client: StdioClient, call: Call) -> None:
    assert await call("once") == "once"


# The long client runs, started together ------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a client run left behind: its logs, and the secrets that must not be in them."""

    logs: list[str]
    secrets: list[str] = field(default_factory=list)
    cache: Path | None = None


def stdio_client_credentials(idp: ShortLivedIdp, gateway: RunningGateway, tmp_path: Path) -> Outcome:
    env, secret = client_credentials_env(idp, tmp_path, MCP_SCOPE="openid cnpg:read")
    asyncio.run(run_stdio(env, gateway.mcp_url, tmp_path / "connect.log", over_time))
    return Outcome([(tmp_path / "connect.log").read_text()], [secret])


def listen_proxy(idp: ShortLivedIdp, gateway: RunningGateway, tmp_path: Path) -> Outcome:
    env, secret = client_credentials_env(idp, tmp_path, MCP_SCOPE="openid cnpg:read cnpg:write")
    port = free_port()
    with (tmp_path / "proxy.log").open("wb") as err:
        proxy = subprocess.Popen(
            [sys.executable, "-m", "connect", "--url", gateway.mcp_url, "--listen", f"127.0.0.1:{port}"],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=err,
        )  # fmt: skip

    async def use() -> None:
        from mcp import Client

        async with Client(f"http://127.0.0.1:{port}/mcp", mode="legacy") as client:

            async def call(text: str) -> str:
                result = await client.call_tool("echo", {"text": text})
                return str(result.content[0].text)  # type: ignore[union-attr]

            await echo_over_time(call)
        async with httpx2.AsyncClient() as http:
            foreign = await http.post(f"http://127.0.0.1:{port}/mcp", json={}, headers={"Origin": "https://evil.test"})
            assert foreign.status_code == 403  # a web page cannot borrow the proxy's token

    try:
        assert proxy.stdout is not None
        assert b"listening" in proxy.stdout.readline()
        asyncio.run(use())
    finally:
        proxy.terminate()
        proxy.wait(15)
    return Outcome([(tmp_path / "proxy.log").read_text()], [secret])


def code_env(cache: Path) -> dict[str, str]:
    return helper_env(MCP_AUTH="authorization-code", MCP_CONNECT_AUTO_AUTHORIZE="1", MCP_NO_BROWSER="1",
                      MCP_TOKEN_CACHE=str(cache))  # fmt: skip


def authorization_code(idp: ShortLivedIdp, gateway: RunningGateway, tmp_path: Path) -> Outcome:
    cache = tmp_path / "cache" / "tokens.json"
    asyncio.run(run_stdio(code_env(cache), gateway.mcp_url, tmp_path / "connect.log", over_time))
    stored = json.loads(cache.read_text())
    return Outcome([(tmp_path / "connect.log").read_text()], [stored["tokens"]["refresh_token"]], cache)


def refused_unexpired_token(idp: ShortLivedIdp, gateway: RunningGateway, tmp_path: Path) -> Outcome:
    """Sign in once; then, as after a key rotation, the cached token is one the gateway refuses although it has an
    hour left; a new helper on that cache must renew it with the refresh token."""
    cache = tmp_path / "tokens.json"
    asyncio.run(run_stdio(code_env(cache), gateway.mcp_url, tmp_path / "first.log", once))
    stored = json.loads(cache.read_text())
    header, claims, signature = stored["tokens"]["access_token"].split(".")
    forged = base64.urlsafe_b64encode(bytes(reversed(base64.urlsafe_b64decode(signature + "==")))).rstrip(b"=")
    stored["tokens"].update(access_token=f"{header}.{claims}.{forged.decode()}", expires_in=3600)
    stored["expires_at"] = time.time() + 3600
    cache.write_text(json.dumps(stored))
    asyncio.run(run_stdio(code_env(cache), gateway.mcp_url, tmp_path / "second.log", once))
    logs = [(tmp_path / "first.log").read_text(), (tmp_path / "second.log").read_text()]
    return Outcome(logs, [stored["tokens"]["refresh_token"]], cache)


JOBS: dict[str, Callable[[ShortLivedIdp, RunningGateway, Path], Outcome]] = {
    "stdio": stdio_client_credentials,
    "listen": listen_proxy,
    "code": authorization_code,
    "refused": refused_unexpired_token,
}


@pytest.fixture(scope="module", autouse=True)
def clients(
    short_idp: ShortLivedIdp, auth_gateway: RunningGateway, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Outcome]]]:
    """Every long client run, started with the module, each in its own thread; the short tests run meanwhile, and
    the tests at the end of the module each wait for their own run."""
    with ThreadPoolExecutor(len(JOBS)) as pool:
        yield {
            name: pool.submit(job, short_idp, auth_gateway, tmp_path_factory.mktemp(name)) for name, job in JOBS.items()
        }


def test_get_token_script_prints_only_a_token_the_gateway_accepts(
    short_idp: ShortLivedIdp, auth_gateway: RunningGateway, tmp_path: Path
) -> None:
    env, secret = client_credentials_env(short_idp, tmp_path, MCP_UPSTREAM=auth_gateway.mcp_url, MCP_SCOPE="openid")
    script = [str(ROOT / "scripts" / "get-token.sh")]
    done = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert "\n" not in token and token.count(".") == 2 and not done.stderr
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT}
    answer = httpx2.post(auth_gateway.mcp_url, json=init, timeout=15, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    (tmp_path / "secret").write_text("wrong")
    refused = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and not refused.stdout
    assert "refused the client credentials" in refused.stderr and secret not in refused.stderr


# Sessions and streams, auth off ------------------------------------------------------------------------------


def assert_only_answers(client: StdioClient, requests: int) -> None:
    """The client got one result for each of its requests (ids 1..n) and nothing else but notifications."""
    answers = [m for m in client.received if "id" in m and "method" not in m]
    assert [m["id"] for m in answers] == list(range(1, requests + 1)), client.received
    assert all("result" in m for m in answers), [m for m in answers if "result" not in m]


async def test_a_new_session_after_the_gateway_restarts_and_the_client_never_notices(
    gateway_factory: StartGateway, tmp_path: Path
) -> None:
    port = free_port()
    gateways = [gateway_factory(upstream_command=ECHO_UPSTREAM, env={"PORT": str(port)})]

    async def script(client: StdioClient, call: Call) -> None:
        assert await call("before") == "before"
        for restart in (1, 2):
            gateways[-1].stop()  # the session ends behind the helper's back
            gateways.append(gateway_factory(upstream_command=ECHO_UPSTREAM, env={"PORT": str(port)}))
            assert await call(f"after restart {restart}") == f"after restart {restart}"
            assert await call(f"again {restart}") == f"again {restart}"

    log_path = tmp_path / "connect.log"
    client = await run_stdio(helper_env(MCP_AUTH="none"), gateways[0].mcp_url, log_path, script)
    assert_only_answers(client, requests=6)  # initialize and five calls, no error, no second initialize result
    log = log_path.read_text()
    assert log.count("lost the session (404); starting a new one") == 2, log
    assert "ERROR" not in log, log
    for gateway in gateways[1:]:
        assert gateway.logs().count("session_opened") == 1  # the helper's new session, opened once


async def test_a_request_stream_closed_early_is_resumed_with_last_event_id(
    gateway_factory: StartGateway, tmp_path: Path
) -> None:
    gateway = gateway_factory(
        upstream_command=ECHO_UPSTREAM, env={"SSE_CLOSE_AFTER": "0.3", "SSE_RETRY_MS": "200"}
    )  # polling: the gateway ends a request's stream after 0.3 s; the helper resumes it after 200 ms

    async def script(client: StdioClient, call: Call) -> None:
        params = {"name": "progress", "arguments": {"steps": 8, "delay": 0.15}, "_meta": {"progressToken": "p"}}
        result = await client.request("tools/call", params)
        assert result["content"][0]["text"] == "done"

    log_path = tmp_path / "connect.log"
    client = await run_stdio(helper_env(MCP_AUTH="none", MCP_LOG_LEVEL="debug"), gateway.mcp_url, log_path, script)
    assert_only_answers(client, requests=2)
    progress = [m["params"]["progress"] for m in client.received if m.get("method") == "notifications/progress"]
    assert progress == list(range(1, 9))  # each once, in order: resumed after the last event seen, not replayed
    log = log_path.read_text()
    assert "the stream ended before its response; resuming it in 200 ms" in log, log
    assert "ERROR" not in log, log


# The long clients' results -----------------------------------------------------------------------------------


def test_stdio_client_credentials_keeps_working_across_expiries_and_steps_up(
    clients: dict[str, Future[Outcome]],
) -> None:
    outcome = clients["stdio"].result(timeout=100)
    [log] = outcome.logs
    assert "the server asks for more scopes" in log  # echo needs cnpg:write: 403 insufficient_scope, step-up
    assert log.count("got an access token") >= 4, log
    assert_no_secret(log, *outcome.secrets)


def test_listen_proxy_keeps_working_across_expiries(clients: dict[str, Future[Outcome]]) -> None:
    outcome = clients["listen"].result(timeout=100)
    [log] = outcome.logs
    assert log.count("got an access token") >= 4, log
    assert_no_secret(log, *outcome.secrets)


def test_authorization_code_runs_headless_and_refreshes_across_expiries(clients: dict[str, Future[Outcome]]) -> None:
    outcome = clients["code"].result(timeout=100)
    [log] = outcome.logs
    assert log.count("signing in") == 1, log  # one authorization, then refresh tokens
    assert log.count("stored new tokens") >= 4, log
    assert outcome.cache is not None and stat.S_IMODE(outcome.cache.stat().st_mode) == 0o600
    stored = json.loads(outcome.cache.read_text())
    assert stored["tokens"]["refresh_token"] and stored["client"]["client_id"]  # DCR, cached
    assert_no_secret(log, *outcome.secrets)


def test_authorization_code_answers_a_401_for_an_unexpired_token_with_the_refresh_token(
    clients: dict[str, Future[Outcome]],
) -> None:
    outcome = clients["refused"].result(timeout=100)
    first, second = outcome.logs
    assert first.count("signing in") == 1, first
    assert "trying the refresh token" in second, second
    assert "signing in" not in second, second  # no new authorization: the refresh token was enough
    assert "stored new tokens" in second, second  # the refreshed token (and more, if the call outlived it)
    assert_no_secret(first + second, *outcome.secrets)
