"""cnpg-mcp-connect, part by part and in process: settings, the SSE parser, the --listen proxy's Host and Origin
checks, and when tokens are renewed. No IdP, no gateway: fake endpoints are httpx2 mock transports.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import httpx2
import pytest
from aiohttp.test_utils import TestServer

from connect import sse
from connect.__main__ import main
from connect.auth import build_auth
from connect.auth.client_credentials import ClientCredentialsAuth
from connect.auth.discovery import (
    authorization_server_metadata_urls,
    canonical_resource,
    protected_resource_metadata_urls,
)
from connect.auth.token_file import TokenFileAuth
from connect.auth.tokens import renew_at
from connect.config import Settings, build_parser, load_settings
from connect.errors import ConfigError
from connect.proxy import build_proxy

ROOT = Path(__file__).resolve().parent.parent
URL = "https://mcp.example.com/mcp"
DOCS = ROOT / "docs" / "connect.md"


def settings(*argv: str, **env: str) -> Settings:
    return load_settings(list(argv), env)


def refused(*argv: str, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(list(argv), env)
    return info.value.message


# Settings ----------------------------------------------------------------------------------------------------


def documented_settings() -> list[tuple[str, str | None]]:
    """(variable, flag or None) for every row of the settings table in docs/connect.md."""
    rows = re.findall(r"^\| `(MCP_[A-Z_]+)` \| (.+?) \|", DOCS.read_text(), flags=re.M)
    found = [(var, (re.findall(r"`(--[a-z-]+)`", flag) or [None])[0]) for var, flag in rows]
    assert len(found) >= 20, "the settings table in docs/connect.md was not found"
    return found


def test_defaults_with_only_a_url() -> None:
    got = settings(URL, HOME="/home/u")
    assert (got.url, got.listen, got.auth, got.client_auth) == (URL, None, "authorization-code", "none")
    assert (got.refresh_margin, got.timeout, got.log_level, got.redirect_port) == (60.0, 30.0, "info", 0)
    assert (got.no_browser, got.auto_authorize, got.client_name) == (False, False, "cnpg-mcp-connect")
    assert got.token_cache.parent == Path("/home/u/.cache/cnpg-mcp-connect")
    assert got.token_cache.name.startswith("tokens-") and got.token_cache.suffix == ".json"
    assert (got.scope, got.resource, got.omit_resource, got.audience, got.token_endpoint) == (
        None, None, False, None, None,
    )  # fmt: skip


def test_the_token_cache_is_per_endpoint_and_follows_xdg_cache_home() -> None:
    one = settings(URL, XDG_CACHE_HOME="/x").token_cache
    other = settings("https://other.example.com/mcp", XDG_CACHE_HOME="/x").token_cache
    assert one.parent == Path("/x/cnpg-mcp-connect") and one != other


# Every documented setting, with a good value and what it becomes. Each is tried from the environment and from its
# flag; both must give the same settings.
GOOD: dict[str, tuple[str, Callable[[Settings], Any], Any]] = {
    "MCP_UPSTREAM": ("http://127.0.0.1:8080/mcp", lambda s: s.url, "http://127.0.0.1:8080/mcp"),
    "MCP_LISTEN": ("[::1]:0", lambda s: s.listen, ("::1", 0)),
    "MCP_AUTH": ("none", lambda s: s.auth, "none"),
    "MCP_TOKEN_FILE": ("/run/token", lambda s: (s.auth, s.token_file), ("token-file", Path("/run/token"))),
    "MCP_CLIENT_ID": ("desktop", lambda s: s.client_id, "desktop"),
    "MCP_CLIENT_AUTH": ("post", lambda s: s.client_auth, "post"),
    "MCP_PRIVATE_KEY_FILE": (__file__, lambda s: (s.private_key_file, s.client_auth),
                             (Path(__file__), "private_key_jwt")),
    "MCP_CLIENT_SECRET_FILE": (__file__, lambda s: s.client_secret is not None, True),
    "MCP_PRIVATE_KEY_ALG": ("ES384", lambda s: s.private_key_alg, "ES384"),
    "MCP_TOKEN_ENDPOINT": ("https://idp.example.com/token", lambda s: s.token_endpoint, "https://idp.example.com/token"),
    "MCP_SCOPE": ("openid cnpg:read", lambda s: s.scope, "openid cnpg:read"),
    "MCP_RESOURCE": ("https://mcp.example.com", lambda s: (s.resource, s.omit_resource),
                     ("https://mcp.example.com", False)),
    "MCP_AUDIENCE": ("https://api.example.com", lambda s: s.audience, "https://api.example.com"),
    "MCP_TOKEN_CACHE": ("/tmp/t.json", lambda s: s.token_cache, Path("/tmp/t.json")),
    "MCP_REDIRECT_PORT": ("8765", lambda s: s.redirect_port, 8765),
    "MCP_CLIENT_METADATA_URL": ("https://app.example.com/client.json", lambda s: s.client_metadata_url,
                                "https://app.example.com/client.json"),
    "MCP_CLIENT_NAME": ("My desktop", lambda s: s.client_name, "My desktop"),
    "MCP_REFRESH_MARGIN": ("2.5", lambda s: s.refresh_margin, 2.5),
    "MCP_TIMEOUT": ("7", lambda s: s.timeout, 7.0),
    "MCP_LOG_LEVEL": ("DEBUG", lambda s: s.log_level, "debug"),
}  # fmt: skip


@pytest.mark.parametrize("var", sorted(GOOD))
def test_a_setting_means_the_same_from_the_environment_or_its_flag(var: str) -> None:
    flags = dict(documented_settings())
    value, read, expected = GOOD[var]
    base = {} if var == "MCP_UPSTREAM" else {"MCP_UPSTREAM": URL}
    from_env = settings(**base, **{var: value})
    from_flag = settings(flags[var] or "", value, **base)  # type: ignore[arg-type]
    assert read(from_env) == expected
    assert read(from_flag) == expected
    assert from_env == from_flag


def test_flags_win_over_the_environment() -> None:
    got = settings("--scope", "flag", "--timeout", "3", "--url", URL, MCP_SCOPE="env", MCP_TIMEOUT="9",
                   MCP_UPSTREAM="https://env.example.com/mcp")  # fmt: skip
    assert (got.scope, got.timeout, got.url) == ("flag", 3.0, URL)


def test_the_url_may_be_the_first_argument_or_a_flag() -> None:
    assert settings(URL).url == settings("--url", URL).url == settings(MCP_UPSTREAM=URL).url == URL


@pytest.mark.parametrize("value", ["http://127.0.0.1:3000/mcp", "http://localhost/mcp", "http://[::1]:9/mcp"])
def test_plain_http_is_fine_for_loopback(value: str) -> None:
    assert settings(value).url == value


def test_every_documented_variable_is_read_and_every_flag_exists() -> None:
    options = {option for action in build_parser()._actions for option in action.option_strings}
    documented = documented_settings()
    for var, flag in documented:
        if flag is not None:
            assert flag in options, f"{flag} ({var}) is documented but not accepted"
    source = (ROOT / "connect" / "config.py").read_text()
    for var, _ in documented:
        assert f'"{var}"' in source or var == "MCP_CONNECT_AUTO_AUTHORIZE", f"{var} is documented but not read"
    undocumented = options - {flag for _, flag in documented} - {"-h", "--help"}
    assert not undocumented, f"flags missing from docs/connect.md: {undocumented}"


def test_no_flag_takes_a_secret() -> None:
    for action in build_parser()._actions:
        for option in action.option_strings:
            assert "secret" not in option or option.endswith("-file"), option


def test_the_secret_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    from_env = settings(URL, MCP_CLIENT_ID="ci", MCP_CLIENT_SECRET="s3cret-env")
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cret-file\n")
    from_file = settings(URL, MCP_CLIENT_ID="ci", MCP_CLIENT_SECRET_FILE=str(secret_file))
    from_flag_file = settings(URL, "--client-secret-file", str(secret_file), MCP_CLIENT_ID="ci")
    assert from_env.client_secret == "s3cret-env" and from_env.auth == "client-credentials"
    assert from_file.client_secret == from_flag_file.client_secret == "s3cret-file"
    assert from_env.client_auth == "basic"
    for got in (from_env, from_file):
        assert "s3cret" not in repr(got) and "s3cret" not in got.describe()


@pytest.mark.parametrize("argv", [["--client-secret", "hunter2"], ["--client-secret=hunter2"], ["--secret", "hunter2"]])
def test_a_secret_on_the_command_line_is_refused_without_echoing_it(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([URL, *argv]) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err
    assert err.count("\n") == 1 and err.startswith("cnpg-mcp-connect: unknown option --")
    assert "never a flag" in err


def test_mode_inference(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("not checked here")
    assert settings(URL, MCP_TOKEN_FILE="/t", MCP_CLIENT_ID="c", MCP_CLIENT_SECRET="s").auth == "token-file"
    with_key = settings(URL, MCP_CLIENT_ID="c", MCP_PRIVATE_KEY_FILE=str(key))
    assert (with_key.auth, with_key.client_auth, with_key.private_key_file) == (
        "client-credentials", "private_key_jwt", key,
    )  # fmt: skip
    assert settings(URL, MCP_CLIENT_ID="c").auth == "authorization-code"  # a pre-registered public client
    confidential = settings(URL, MCP_AUTH="authorization-code", MCP_CLIENT_ID="c", MCP_CLIENT_SECRET="s")
    assert confidential.client_auth == "basic"
    assert settings(URL, MCP_RESOURCE="none").omit_resource is True


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("", False),
    ],
)
def test_booleans(value: str, expected: bool) -> None:
    got = settings(URL, MCP_NO_BROWSER=value, MCP_CONNECT_AUTO_AUTHORIZE=value)
    assert (got.no_browser, got.auto_authorize) == (expected, expected)
    assert settings(URL, "--no-browser", MCP_NO_BROWSER="0").no_browser is True


BAD: list[tuple[list[str], dict[str, str], str]] = [
    ([], {}, "no upstream"),
    (["ftp://example.com/mcp"], {}, "MCP_UPSTREAM must be an http(s) URL"),
    (["http://mcp.example.com/mcp"], {}, "MCP_UPSTREAM must use https for a non-loopback host"),
    (["https://user:pw@mcp.example.com/mcp"], {}, "must not carry credentials"),
    ([URL, "--listen", "0.0.0.0:8080"], {}, "MCP_LISTEN must be a loopback address"),
    ([URL, "--listen", "192.168.1.2:8080"], {}, "MCP_LISTEN must be a loopback address"),
    ([URL], {"MCP_LISTEN": "evil.example.com:80"}, "MCP_LISTEN must be a loopback address"),
    ([URL, "--listen", "8080"], {}, "MCP_LISTEN must be HOST:PORT"),
    ([URL, "--listen", "127.0.0.1:http"], {}, "MCP_LISTEN port must be a port number"),
    ([URL, "--listen", "127.0.0.1:65536"], {}, "MCP_LISTEN port must be a port from 0 to 65535"),
    ([URL, "--auth", "magic"], {}, "MCP_AUTH must be one of"),
    ([URL], {"MCP_AUTH": "magic"}, "MCP_AUTH must be one of"),
    ([URL, "--auth", "token-file"], {}, "MCP_AUTH=token-file needs MCP_TOKEN_FILE"),
    ([URL, "--auth", "client-credentials"], {}, "client credentials need MCP_CLIENT_ID"),
    ([URL, "--auth", "client-credentials", "--client-id", "c"], {}, "need MCP_CLIENT_SECRET or MCP_CLIENT_SECRET_FILE"),
    ([URL, "--client-id", "c", "--client-auth", "private_key_jwt", "--auth", "client-credentials"], {},
     "private_key_jwt needs MCP_PRIVATE_KEY_FILE"),
    ([URL, "--client-id", "c", "--private-key-file", "/nonexistent/key.pem"], {}, "is not a file"),
    ([URL, "--client-auth", "jwt"], {}, "MCP_CLIENT_AUTH must be one of"),
    ([URL], {"MCP_CLIENT_SECRET": "a", "MCP_CLIENT_SECRET_FILE": "/b"}, "not both"),
    ([URL], {"MCP_CLIENT_ID": "c", "MCP_CLIENT_SECRET_FILE": "/nonexistent/secret"},
     "cannot read MCP_CLIENT_SECRET_FILE"),
    ([URL, "--token-endpoint", "http://idp.example.com/token"], {}, "MCP_TOKEN_ENDPOINT must use https"),
    ([URL, "--resource", "urn:x"], {}, "MCP_RESOURCE must be an http(s) URL"),
    ([URL, "--client-metadata-url", "http://app.example.com/c.json"], {}, "MCP_CLIENT_METADATA_URL must be an https"),
    ([URL, "--redirect-port", "abc"], {}, "MCP_REDIRECT_PORT must be a port number"),
    ([URL, "--redirect-port", "1.5"], {}, "MCP_REDIRECT_PORT must be a port number"),
    ([URL], {"MCP_REDIRECT_PORT": "70000"}, "MCP_REDIRECT_PORT must be a port from 0 to 65535"),
    ([URL], {"MCP_NO_BROWSER": "maybe"}, "MCP_NO_BROWSER must be true or false"),
    ([URL], {"MCP_CONNECT_AUTO_AUTHORIZE": "2"}, "MCP_CONNECT_AUTO_AUTHORIZE must be true or false"),
    ([URL, "--refresh-margin", "soon"], {}, "MCP_REFRESH_MARGIN must be a number of seconds"),
    ([URL], {"MCP_REFRESH_MARGIN": "-1"}, "MCP_REFRESH_MARGIN must be a non-negative number"),
    ([URL, "--timeout", "0"], {}, "MCP_TIMEOUT must be a positive number"),
    ([URL], {"MCP_TIMEOUT": "nan"}, "MCP_TIMEOUT must be a positive number"),
    ([URL, "--log-level", "verbose"], {}, "MCP_LOG_LEVEL must be one of"),
    ([URL, "--url"], {}, "expected one argument"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "env", "message"), BAD, ids=[m for _, _, m in BAD])
def test_a_bad_value_is_one_line_and_exit_status_2(
    argv: list[str], env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    for name in [n for n in os.environ if n.startswith("MCP_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert message in refused(*argv, **env)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("cnpg-mcp-connect: "), captured.err
    assert message in captured.err


def test_a_secret_file_that_is_empty_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "secret"
    empty.write_text("\n")
    assert "is empty" in refused(URL, MCP_CLIENT_ID="c", MCP_CLIENT_SECRET_FILE=str(empty))


def test_the_command_line_help_names_every_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for var, flag in documented_settings():
        if flag is not None:
            assert f"env {var}" in text, var


# The SSE parser ----------------------------------------------------------------------------------------------


async def parse(chunks: Iterable[bytes]) -> list[sse.Event]:
    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return [event async for event in sse.events(source())]


STREAM = (
    b": a comment, then a priming event\n"
    b"id: 0-1\nretry: 2500\ndata:\n\n"
    b'event: message\nid: 0-2\ndata: {"a": 1}\n\n'
    b"data: first line\r\ndata:second line\r\ndata:  indented\r\n\r\n"
    b":keep-alive\r\r"
    b"id: 0-3\revent: custom\rdata: caf\xc3\xa9 \xe2\x9c\x93\r\r"
    b"data\nid\n\n"
    b"retry: soon\nid: bad\x00id\nunknown: field\ndata: after ignored fields\n\n"
)
EXPECTED = [
    sse.Event(data="", id="0-1", retry=2500),
    sse.Event(data='{"a": 1}', id="0-2"),
    sse.Event(data="first line\nsecond line\n indented"),
    sse.Event(data="café ✓", id="0-3", event="custom"),
    sse.Event(data="", id=""),
    sse.Event(data="after ignored fields"),
]


async def test_sse_fields_multiline_data_comments_and_every_line_ending() -> None:
    assert await parse([STREAM]) == EXPECTED


async def test_sse_split_at_every_byte_boundary_gives_the_same_events() -> None:
    for cut in range(len(STREAM) + 1):
        assert await parse([STREAM[:cut], STREAM[cut:]]) == EXPECTED, f"split at byte {cut}"
    assert await parse([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


async def test_sse_split_into_three_parts_anywhere_gives_the_same_events() -> None:
    sample = b"id: 7\r\ndata: x\xc3\xa9\r\n\r\ndata: y\r\n\r\n"
    want = [sse.Event(data="xé", id="7"), sse.Event(data="y")]
    for first in range(len(sample)):
        for second in range(first, len(sample) + 1):
            assert await parse([sample[:first], sample[first:second], sample[second:]]) == want


async def test_sse_a_truncated_stream_keeps_the_complete_events_and_drops_the_partial_one() -> None:
    whole = b"id: 1\ndata: complete\n\nid: 2\ndata: cut off"
    assert await parse([whole]) == [sse.Event(data="complete", id="1")]
    assert await parse([whole + b"\n"]) == [sse.Event(data="complete", id="1")]  # no blank line: not dispatched
    assert await parse([b"data: x\r"]) == []  # a lone CR at the end may be half of a CRLF
    assert await parse([]) == []


async def test_sse_a_crlf_split_between_chunks_is_one_line_end() -> None:
    assert await parse([b"data: a\r", b"\n\r", b"\n"]) == [sse.Event(data="a")]
    assert await parse([b"data: a\r", b"\r"]) == [sse.Event(data="a")]


# The --listen proxy's Host and Origin checks -------------------------------------------------------------------


class Streamed(httpx2.AsyncByteStream):
    """A body that arrives as a stream, as from a real server (a mock's `json=` body counts as already read)."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.body


class Recorder:
    """A fake upstream that records what reaches it."""

    def __init__(self) -> None:
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {}}).encode()
        headers = {"Content-Type": "application/json", "Mcp-Session-Id": "s1"}
        return httpx2.Response(200, stream=Streamed(body), headers=headers)


class StaticToken(httpx2.Auth):
    def auth_flow(self, request: httpx2.Request) -> Iterator[httpx2.Request]:
        request.headers["Authorization"] = "Bearer the-token"
        yield request


@pytest.fixture
async def proxy() -> AsyncIterator[tuple[str, int, Recorder]]:
    upstream = Recorder()
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(upstream), auth=StaticToken()) as http:
        port_of = [0]
        server = TestServer(build_proxy(URL, http, port_of), host="127.0.0.1")
        await server.start_server()
        port_of[0] = server.port  # type: ignore[assignment]
        try:
            yield f"http://127.0.0.1:{server.port}/mcp", int(server.port or 0), upstream
        finally:
            await server.close()


async def post(url: str, **headers: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(url, json={"jsonrpc": "2.0"}, headers=headers) as answer:
        return answer.status, await answer.json(content_type=None)


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}"])
async def test_the_proxy_answers_its_own_loopback_host_and_adds_the_token(
    proxy: tuple[str, int, Recorder], host: str
) -> None:
    url, port, upstream = proxy
    status, body = await post(url, Host=host.format(port=port))
    assert status == 200 and body["result"] == {}
    [sent] = upstream.requests
    assert sent.headers["authorization"] == "Bearer the-token"
    assert str(sent.url) == URL


@pytest.mark.parametrize(
    "host",
    ["evil.example.com:{port}", "evil.example.com", "127.0.0.1", "127.0.0.1:{other}",
     "127.0.0.1.evil.example.com:{port}", "localhost.evil.example.com:{port}", "0.0.0.0:{port}", "",
     "127.0.0.1:{port}@evil.example.com"],
)  # fmt: skip
async def test_the_proxy_refuses_a_foreign_host_dns_rebinding(proxy: tuple[str, int, Recorder], host: str) -> None:
    url, port, upstream = proxy
    status, body = await post(url, Host=host.format(port=port, other=port + 1))
    assert (status, body) == (403, {"error": "forbidden_host"})
    assert upstream.requests == []


@pytest.mark.parametrize(
    "origin", ["http://localhost:3000", "http://127.0.0.1", "https://[::1]:8443", "http://localhost:{port}"]
)
async def test_the_proxy_accepts_loopback_origins_and_does_not_forward_them(
    proxy: tuple[str, int, Recorder], origin: str
) -> None:
    url, port, upstream = proxy
    status, _ = await post(url, Origin=origin.format(port=port))
    assert status == 200
    assert "origin" not in upstream.requests[0].headers


@pytest.mark.parametrize(
    "origin", ["https://evil.example.com", "http://127.0.0.1.evil.example.com", "null", "file://", "http://localhost.evil.example.com:3000",
               "chrome-extension://abcdef"],
)  # fmt: skip
async def test_the_proxy_refuses_a_foreign_origin(proxy: tuple[str, int, Recorder], origin: str) -> None:
    url, _, upstream = proxy
    status, body = await post(url, Origin=origin)
    assert (status, body) == (403, {"error": "forbidden_origin"})
    assert upstream.requests == []


# When tokens are renewed -------------------------------------------------------------------------------------


class Clock:
    """Stands in for the `time` module of the token code."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("connect.auth.tokens.time", fake)
    monkeypatch.setattr("connect.auth.client_credentials.time", fake)
    return fake


@pytest.mark.parametrize(
    ("expires_in", "margin", "early"), [(3600, 60, 60), (100, 60, 20), (3, 1, 0.6), (100, 0, 0), (3600, 600, 600)]
)
def test_renewal_is_margin_early_but_at_most_a_fifth_of_the_lifetime(
    expires_in: float, margin: float, early: float
) -> None:
    assert renew_at(expires_in, margin, now=500.0) == pytest.approx(500.0 + expires_in - early)


def test_a_token_without_expiry_is_never_renewed_early() -> None:
    assert renew_at(None, 60) is None


class FakeIdp:
    """A token endpoint and a resource server: tokens are tok-1, tok-2, ...; the resource takes `accepted` ones."""

    def __init__(self, expires_in: int | None = 100) -> None:
        self.expires_in = expires_in
        self.issued: list[dict[str, list[str]]] = []
        self.accepted: Callable[[str], bool] = lambda token: token == f"tok-{len(self.issued)}"
        self.challenge = 'Bearer error="invalid_token"'
        self.resource_calls: list[str] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/token":
            self.issued.append(parse_qs(request.content.decode()))
            body: dict[str, Any] = {"access_token": f"tok-{len(self.issued)}", "token_type": "Bearer"}
            if self.expires_in is not None:
                body["expires_in"] = self.expires_in
            return httpx2.Response(200, json=body)
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        self.resource_calls.append(token)
        if self.accepted(token):
            return httpx2.Response(200, json={"ok": True})
        return httpx2.Response(401, headers={"WWW-Authenticate": self.challenge})


def cc_settings(**changes: Any) -> Settings:
    base = settings(URL, MCP_CLIENT_ID="ci", MCP_CLIENT_SECRET="pw", MCP_TOKEN_ENDPOINT="https://idp.example.com/token",
                    MCP_REFRESH_MARGIN="60")  # fmt: skip
    return replace(base, **changes)


async def call(http: httpx2.AsyncClient) -> int:
    return (await http.get(URL)).status_code


async def test_client_credentials_reuses_a_token_until_its_renewal_time_then_renews(clock: Clock) -> None:
    idp = FakeIdp(expires_in=100)  # renewal 20 s early: a fifth of 100 s is less than the 60 s margin
    auth = ClientCredentialsAuth(cc_settings())
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(idp), auth=auth) as http:
        assert await call(http) == 200
        clock.now += 79.9
        assert await call(http) == 200
        assert len(idp.issued) == 1
        clock.now += 0.2
        assert await call(http) == 200
        assert len(idp.issued) == 2 and idp.resource_calls == ["tok-1", "tok-1", "tok-2"]
    form = idp.issued[0]
    assert form["grant_type"] == ["client_credentials"] and "client_secret" not in form  # basic: in the header


async def test_client_credentials_without_expiry_keeps_the_token_until_a_401(clock: Clock) -> None:
    idp = FakeIdp(expires_in=None)
    async with httpx2.AsyncClient(
        transport=httpx2.MockTransport(idp), auth=ClientCredentialsAuth(cc_settings())
    ) as http:
        assert await call(http) == 200
        clock.now += 10 * 365 * 86400
        assert await call(http) == 200
        assert len(idp.issued) == 1
        idp.accepted = lambda token: token == "tok-2"  # the server stops taking tok-1 (revoked, keys rotated)
        assert await call(http) == 200
        assert idp.resource_calls == ["tok-1", "tok-1", "tok-1", "tok-2"]


async def test_client_credentials_asks_once_after_a_401_and_does_not_loop(clock: Clock) -> None:
    idp = FakeIdp()
    idp.accepted = lambda token: False
    async with httpx2.AsyncClient(
        transport=httpx2.MockTransport(idp), auth=ClientCredentialsAuth(cc_settings())
    ) as http:
        assert await call(http) == 401
    assert len(idp.issued) == 2 and idp.resource_calls == ["tok-1", "tok-2"]


async def test_client_credentials_steps_up_once_on_insufficient_scope(clock: Clock) -> None:
    idp = FakeIdp()
    scopes: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/token":
            scopes.append(parse_qs(request.content.decode()).get("scope", [""])[0])
            return idp(request)
        if "cnpg:write" in scopes[-1]:
            return httpx2.Response(200, json={})
        challenge = 'Bearer error="insufficient_scope", scope="cnpg:read cnpg:write"'
        return httpx2.Response(403, headers={"WWW-Authenticate": challenge})

    auth = ClientCredentialsAuth(cc_settings(scope="openid cnpg:read"))
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler), auth=auth) as http:
        assert await call(http) == 200
        assert await call(http) == 200
    assert scopes == ["openid cnpg:read", "openid cnpg:read cnpg:write"]


async def test_token_file_is_reread_when_it_changes_and_once_after_a_401(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("file-1\n")
    seen: list[str] = []
    refused = {"file-1"}

    def handler(request: httpx2.Request) -> httpx2.Response:
        token = request.headers["authorization"].removeprefix("Bearer ")
        seen.append(token)
        if token == "file-2-longer":
            path.write_text("file-3\n")  # rotated while the request was on its way
            refused.add(token)
        return httpx2.Response(401 if token in refused and len(seen) > 1 else 200)

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler), auth=TokenFileAuth(path)) as http:
        assert await call(http) == 200
        assert await call(http) == 401  # refused, and the file has nothing newer: no retry
        path.write_text("file-2-longer\n")
        assert await call(http) == 200  # the changed file is read before the request; its 401 re-reads once
    assert seen == ["file-1", "file-1", "file-2-longer", "file-3"]


# Authorization code: renewal before expiry, and a 401 tries the refresh token before a new sign-in -------------


class FakeAuthorizationServer:
    """Protected resource metadata, authorization server metadata, a token endpoint and the MCP endpoint."""

    issuer = "https://idp.example.com"

    def __init__(self) -> None:
        self.grants: list[str] = []
        self.refresh_ok = True
        self.good = {"fresh-1"}
        self.counter = 0
        self.resource_tokens: list[str] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if path.startswith("/.well-known/oauth-protected-resource"):
            return httpx2.Response(200, json={"resource": URL, "authorization_servers": [self.issuer]})
        if path.startswith("/.well-known/oauth-authorization-server"):
            return httpx2.Response(200, json={
                "issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token", "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
            })  # fmt: skip
        if path == "/token" and request.url.host == "idp.example.com":
            grant = parse_qs(request.content.decode())["grant_type"][0]
            self.grants.append(grant)
            if grant == "refresh_token" and not self.refresh_ok:
                return httpx2.Response(400, json={"error": "invalid_grant"})
            self.counter += 1
            token = f"fresh-{self.counter}"
            self.good.add(token)
            return httpx2.Response(200, json={
                "access_token": token, "token_type": "Bearer", "expires_in": 3600, "refresh_token": f"r-{self.counter}",
            })  # fmt: skip
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        self.resource_tokens.append(token)
        if token in self.good:
            return httpx2.Response(200, json={"ok": True})
        metadata = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        return httpx2.Response(
            401, headers={"WWW-Authenticate": f'Bearer error="invalid_token", resource_metadata="{metadata}"'}
        )


def cached_sign_in(cache: Path, access_token: str, expires_in: int = 3600) -> None:
    """A token cache as a previous run left it: a client registration, what discovery found, and tokens that have
    not expired."""
    issuer = FakeAuthorizationServer.issuer
    cache.write_text(json.dumps({
        "discovery": {
            "authorization_server": {"issuer": issuer, "authorization_endpoint": f"{issuer}/authorize",
                                     "token_endpoint": f"{issuer}/token", "response_types_supported": ["code"]},
            "protected_resource": {"resource": URL, "authorization_servers": [issuer]},
            "auth_server_url": issuer,
        },
        "client": {"client_id": "registered", "redirect_uris": ["http://127.0.0.1:1/callback"],
                   "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"]},
        "tokens": {"access_token": access_token, "token_type": "Bearer", "expires_in": expires_in,
                   "refresh_token": "r-0"},
        "expires_at": time.time() + expires_in,
    }))  # fmt: skip


def code_settings(cache: Path) -> Settings:
    return settings(URL, MCP_TOKEN_CACHE=str(cache), MCP_NO_BROWSER="1", MCP_REFRESH_MARGIN="60")


async def test_authorization_code_a_401_for_an_unexpired_token_refreshes_instead_of_signing_in(tmp_path: Path) -> None:
    server = FakeAuthorizationServer()
    cached_sign_in(tmp_path / "tokens.json", "revoked-but-unexpired")
    auth = build_auth(code_settings(tmp_path / "tokens.json"))
    signed_in: list[str] = []

    async def no_browser(url: str) -> None:
        signed_in.append(url)
        raise AssertionError("a sign-in started although the refresh token works")

    auth.context.redirect_handler = no_browser  # type: ignore[union-attr]
    try:
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(server), auth=auth) as http:
            assert await call(http) == 200
            assert await call(http) == 200
    finally:
        auth.close()  # type: ignore[union-attr]
    assert server.grants == ["refresh_token"] and signed_in == []
    assert server.resource_tokens == ["revoked-but-unexpired", "fresh-1", "fresh-1"]
    stored = json.loads((tmp_path / "tokens.json").read_text())
    assert stored["tokens"]["access_token"] == "fresh-1" and stored["tokens"]["refresh_token"] == "r-1"


async def test_authorization_code_signs_in_when_the_refresh_token_is_refused(tmp_path: Path) -> None:
    server = FakeAuthorizationServer()
    server.refresh_ok = False
    cached_sign_in(tmp_path / "tokens.json", "revoked-but-unexpired")
    auth = build_auth(code_settings(tmp_path / "tokens.json"))
    from mcp.shared.auth import AuthorizationCodeResult

    states: list[str] = []

    async def browser(url: str) -> None:
        query = parse_qs(urlsplit(url).query)
        assert urlsplit(url).path == "/authorize" and query["code_challenge_method"] == ["S256"]
        states.append(query["state"][0])

    async def redirect() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code="the-code", state=states[-1])

    auth.context.redirect_handler = browser  # type: ignore[union-attr]
    auth.context.callback_handler = redirect  # type: ignore[union-attr]
    try:
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(server), auth=auth) as http:
            assert await call(http) == 200
    finally:
        auth.close()  # type: ignore[union-attr]
    assert server.grants == ["refresh_token", "authorization_code"] and len(states) == 1
    assert server.resource_tokens == ["revoked-but-unexpired", "fresh-1"]


async def test_authorization_code_keeps_what_discovery_found_so_a_new_process_can_refresh(tmp_path: Path) -> None:
    server = FakeAuthorizationServer()
    cache = tmp_path / "tokens.json"
    auth = build_auth(code_settings(cache))
    from mcp.shared.auth import AuthorizationCodeResult

    states: list[str] = []

    async def browser(url: str) -> None:
        states.append(parse_qs(urlsplit(url).query)["state"][0])

    async def redirect() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code="the-code", state=states[-1])

    auth.context.redirect_handler = browser  # type: ignore[union-attr]
    auth.context.callback_handler = redirect  # type: ignore[union-attr]
    auth.context.client_info = None  # type: ignore[union-attr]
    cached_sign_in(cache, "unused")
    doc = json.loads(cache.read_text())
    del doc["discovery"], doc["tokens"]  # a first run: a registered client, nothing discovered, no tokens yet
    cache.write_text(json.dumps(doc))
    try:
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(server), auth=auth) as http:
            assert await call(http) == 200
    finally:
        auth.close()  # type: ignore[union-attr]
    found = json.loads(cache.read_text())["discovery"]
    assert found["authorization_server"]["token_endpoint"] == "https://idp.example.com/token"
    assert found["protected_resource"]["resource"] == URL and found["auth_server_url"] == "https://idp.example.com"
    server.good.clear()  # the next process's cached token is refused: it refreshes at the discovered endpoint
    again = build_auth(code_settings(cache))

    async def no_browser(url: str) -> None:
        raise AssertionError("a second sign-in started although the refresh token works")

    again.context.redirect_handler = no_browser  # type: ignore[union-attr]
    try:
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(server), auth=again) as http:
            assert await call(http) == 200
    finally:
        again.close()  # type: ignore[union-attr]
    assert server.grants == ["authorization_code", "refresh_token"] and len(states) == 1
    assert server.resource_tokens[-2:] == ["fresh-1", "fresh-2"]


async def test_authorization_code_renews_with_the_refresh_token_a_margin_before_expiry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = FakeAuthorizationServer()
    server.good.add("cached")
    cached_sign_in(tmp_path / "tokens.json", "cached", expires_in=100)  # renewal 20 s before expiry
    auth = build_auth(code_settings(tmp_path / "tokens.json"))
    real_time = time.time
    try:
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(server), auth=auth) as http:
            monkeypatch.setattr(time, "time", lambda: real_time() + 79)
            assert await call(http) == 200
            assert server.grants == []
            monkeypatch.setattr(time, "time", lambda: real_time() + 81)
            assert await call(http) == 200
    finally:
        auth.close()  # type: ignore[union-attr]
    assert server.grants == ["refresh_token"] and server.resource_tokens == ["cached", "fresh-1"]


# Discovery URLs and start-up cost -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "server_url", [URL, "https://mcp.example.com", "https://mcp.example.com/", "https://MCP.example.com:8443/a/b/#frag"]
)
@pytest.mark.parametrize(
    "issuer", [None, "https://idp.example.com", "https://idp.example.com/", "https://idp.example.com/realms/x/"]
)
def test_discovery_urls_are_the_sdk_clients(server_url: str, issuer: str | None) -> None:
    from mcp.client.auth.utils import (
        build_oauth_authorization_server_metadata_discovery_urls,
        build_protected_resource_metadata_discovery_urls,
    )
    from mcp.shared.auth_utils import resource_url_from_server_url

    assert authorization_server_metadata_urls(issuer, server_url) == (
        build_oauth_authorization_server_metadata_discovery_urls(issuer, server_url)
    )
    for challenge in (None, "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"):
        assert protected_resource_metadata_urls(challenge, server_url) == (
            build_protected_resource_metadata_discovery_urls(challenge, server_url)
        )
    assert canonical_resource(server_url) == resource_url_from_server_url(server_url)


def test_only_the_authorization_code_mode_loads_the_mcp_sdk() -> None:
    check = (
        "import sys, connect.__main__, connect.bridge, connect.proxy, connect.auth.client_credentials, "
        "connect.auth.token_file; print(sorted({m.split('.')[0] for m in sys.modules} & {'mcp', 'pydantic'}))"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_basic_client_authentication_encodes_the_pair() -> None:
    auth = ClientCredentialsAuth(cc_settings(client_id="a:b", client_secret="p w"))
    assert auth._discovered is not None
    request = auth._token_request(auth._discovered)
    scheme, _, value = request.headers["authorization"].partition(" ")
    assert scheme == "Basic" and base64.b64decode(value).decode() == "a%3Ab:p%20w"
