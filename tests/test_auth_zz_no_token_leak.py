"""No token or secret ever reaches a log.

Runs last among the auth tests (file name) so it sees every gateway and IdP log they wrote, and first drives a
debug-level gateway through every failure path itself, so it means something when run alone too.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fixtures.idp import ISSUED_TOKENS, LOG_FILES, SECRETS, DevIdp, Minter, start_gateway

pytestmark = pytest.mark.timeout(120)

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


def secret_fragments() -> set[str]:
    """Whole tokens and secrets, and each token's payload and signature on their own (a truncated token in a log
    is still a leak of the claims or the signature)."""
    fragments = set(SECRETS)
    for token in ISSUED_TOKENS:
        fragments.add(token)
        parts = token.split(".")
        fragments.update(p for p in parts[1:] if len(p) >= 24)
    return {f for f in fragments if len(f) >= 16}


def scan_logs(fragments: set[str]) -> int:
    """Fail on the first log holding a fragment; returns how many logs were read."""
    scanned = 0
    for path in dict.fromkeys(LOG_FILES):
        if not Path(path).exists():
            continue
        text = Path(path).read_text(errors="replace")
        scanned += 1
        leaked = [f[:12] + "..." for f in fragments if f in text]
        assert not leaked, f"{path} contains token material: {leaked}"
    return scanned


async def test_no_token_or_secret_appears_in_any_log(gateway_factory: Any, idp: DevIdp, minter: Minter) -> None:
    gateway = start_gateway(gateway_factory, idp, LOG_LEVEL="debug", MAX_TOKEN_BYTES="2048")
    good = idp.token(resource=gateway.mcp_url)
    reader = idp.token(scope="openid cnpg:read", resource=gateway.mcp_url)
    hostile = [
        minter.signed(aud="https://other.example"),
        minter.signed(iss="https://evil.example", aud=gateway.mcp_url),
        minter.signed(exp=int(time.time()) - 3600, aud=gateway.mcp_url),
        minter.signed(nbf=int(time.time()) + 3600, aud=gateway.mcp_url),
        minter.forged_with_kid(aud=gateway.mcp_url),
        minter.foreign(kid="unknown", aud=gateway.mcp_url),
        minter.unsigned(aud=gateway.mcp_url),
        minter.hmac_with_public_key(aud=gateway.mcp_url),
        minter.signed(aud=gateway.mcp_url, padding="p" * 3000),  # over MAX_TOKEN_BYTES
    ]
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
    async with aiohttp.ClientSession() as http:
        for token in [good, reader, *hostile]:
            async with http.post(gateway.mcp_url, json=INIT, headers={**headers, "Authorization": f"Bearer {token}"}):
                pass
        async with http.post(gateway.mcp_url, json=INIT, headers={**headers, "Authorization": f"Basic {good}"}):
            pass
        async with http.post(gateway.mcp_url, params={"access_token": good}, json=INIT, headers=headers):
            pass
        async with http.post(gateway.mcp_url, json=INIT, headers={**headers, "Authorization": f"Bearer {good}"}) as r:
            session = r.headers["Mcp-Session-Id"]
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}
        auth = {**headers, "Authorization": f"Bearer {reader}", "Mcp-Session-Id": session}
        async with http.post(gateway.mcp_url, json=call, headers=auth) as r:
            assert r.status in (403, 404)
    gateway.stop()

    fragments = secret_fragments()
    assert good in fragments and len(fragments) > 10
    assert scan_logs(fragments) >= 2  # at least this gateway's log and the IdP's
